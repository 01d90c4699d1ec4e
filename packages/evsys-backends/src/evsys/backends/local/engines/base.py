"""The interface every rollout engine implements, and the sampling they share.

A rollout engine turns a batch of left-padded prompts into :class:`SampledSequence` rows. Engines differ
only in how they compute next-token logits (transformers' ``generate``, or EvSys' fused decoder); the
choice of each token, its logprob and the stop rules live in :class:`Decoding`, which every engine
drives, so two engines given the same logits draw the same tokens from the same seeded generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from evsys.backends.local.sampling import inverse_cdf_sample
from evsys.schema.protocols import SampledSequence


@dataclass(frozen=True)
class DecodeRequest:
    """One batch of rollouts: left-padded ``input_ids`` ``[B, W]`` with ``attention_mask`` (1 on prompt tokens).

    ``temperature`` 0 is greedy. A row ends at a token in ``eos_token_ids``, at the first of ``stops`` in its
    decoded text, or after ``max_tokens`` tokens. ``generator`` draws the sampled tokens (one uniform per
    unfinished row and step).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    max_tokens: int
    temperature: float
    generator: torch.Generator
    eos_token_ids: frozenset[int]
    stops: Sequence[str]


class RolloutEngine(Protocol):
    """A decode loop behind ``LocalBackend.sample``."""

    #: the name ``backend.params.rollout_engine`` selects it by
    name: str

    def refresh(self) -> None:
        """Re-read the live LoRA parameters (called before every ``sample``: optimizer steps change them)."""

    def decode(self, request: DecodeRequest) -> list[SampledSequence]:
        """The rollouts of ``request``: tokens, their logprobs at temperature 1, text and stop reason per row."""
        ...

    def close(self) -> None:
        """Free what the engine holds (copies of weights, caches)."""


class Decoding:
    """The state of one batch of rollouts, shared by all engines: token choice, logprobs and stop rules.

    Call :meth:`choose` with the logits ``[len(alive), V]`` of the rows still decoding (in :attr:`alive`
    order), then :meth:`advance` with the chosen tokens; :meth:`results` at the end.
    """

    def __init__(self, request: DecodeRequest, tokenizer: Any) -> None:
        self.request = request
        self.tokenizer = tokenizer
        batch = request.input_ids.shape[0]
        device = request.input_ids.device
        self.eos = torch.as_tensor(sorted(request.eos_token_ids), dtype=torch.long, device=device)
        self.stops = [s for s in request.stops if s]
        #: the original rows still decoding, in the order of the logits engines pass
        self.alive: list[int] = list(range(batch))
        self.generated: list[list[int]] = [[] for _ in range(batch)]
        self.logprobs: list[list[float]] = [[] for _ in range(batch)]
        self.texts: list[str | None] = [None] * batch
        self.reasons: list[str] = ["length"] * batch
        self.steps = 0

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token of every alive row from its float32 ``logits`` (greedy, or a seeded inverse-CDF draw
        at the request's temperature), recorded with its logprob at temperature 1."""
        temperature = self.request.temperature
        logp = torch.log_softmax(logits, dim=-1)
        if temperature == 0:
            tokens = logits.argmax(dim=-1)
        else:
            probs = logp.exp() if temperature == 1 else torch.softmax(logits / temperature, dim=-1)
            tokens = inverse_cdf_sample(probs, self.request.generator)
        chosen = logp.gather(1, tokens[:, None]).squeeze(1)
        for b, token, value in zip(self.alive, tokens.tolist(), chosen.tolist(), strict=True):
            self.generated[b].append(token)
            self.logprobs[b].append(value)
        self._last = tokens
        return tokens

    def advance(self) -> list[int]:
        """Apply the stop rules to the tokens just chosen; returns the positions (in the old :attr:`alive`
        order) of the rows that go on, and shrinks :attr:`alive` to them."""
        self.steps += 1
        tokens = self._last
        is_eos = torch.isin(tokens, self.eos).tolist() if len(self.eos) else [False] * len(self.alive)
        keep: list[int] = []
        for i, b in enumerate(self.alive):
            if is_eos[i]:
                self.reasons[b] = "stop"
                continue
            if self.stops:
                text = self.tokenizer.decode(self.generated[b], skip_special_tokens=True)
                cut = min((j for j in (text.find(s) for s in self.stops) if j >= 0), default=-1)
                if cut >= 0:
                    self.texts[b], self.reasons[b] = text[:cut], "stop"
                    continue
            keep.append(i)
        if self.steps >= self.request.max_tokens:
            keep = []
        self.alive = [self.alive[i] for i in keep]
        return keep

    def results(self) -> list[SampledSequence]:
        """One :class:`SampledSequence` per row: ``text`` is the completion without special tokens, cut
        before a stop string, without the final EOS."""
        out = []
        for b, tokens in enumerate(self.generated):
            text = self.texts[b]
            if text is None:
                body = tokens[:-1] if self.reasons[b] == "stop" else tokens
                text = self.tokenizer.decode(body, skip_special_tokens=True)
            out.append(SampledSequence(tokens=tokens, logprobs=self.logprobs[b], text=text, stop_reason=self.reasons[b]))  # type: ignore[arg-type]
        return out
