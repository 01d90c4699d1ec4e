"""Fixtures of evsys-algorithms' tests: a scripted fake backend and a tiny random llama on disk."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from evsys.schema.plugin_bases import BaseBackend
from evsys.schema.protocols import Datum, ForwardBackwardResult, SampledSequence, TopKLogprobs


class CharTokenizer:
    """One token per character (ids = ord); enough of a tokenizer for the fake backend."""

    eos_token_id = 3

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(t) for t in token_ids if t >= 32 or t == 10)


class FakeBackend(BaseBackend):
    """A scripted Backend: chat rendering by a ChatML-like text template, canned samples and top-k.

    ``completions`` are the texts ``sample`` returns (cycled); ``topk_logprobs`` names ids
    ``token + j`` with ``k_logprobs``; ``compute_logprobs`` gives each token ``base_logprob(token)``
    (default ``log 0.5``, the fake top-1). Every call is recorded in ``calls``.
    """

    def __init__(
        self,
        completions: Sequence[str] = ("ok",),
        k_logprobs: Sequence[float] | None = None,
        base_logprob: Callable[[int], float] | None = None,
    ) -> None:
        self._tokenizer = CharTokenizer()
        self.completions = list(completions)
        self.k_logprobs = list(k_logprobs or [math.log(0.5), math.log(0.25), math.log(0.125)])
        self.base_logprob = base_logprob or (lambda token: math.log(0.5))
        self.calls: list[tuple[str, Any]] = []
        self.loss_sum = 6.0

    @property
    def tokenizer(self) -> CharTokenizer:
        return self._tokenizer

    def render_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> list[int]:
        text = "".join(f"<{m['role']}>{m['content']}|" for m in messages)
        if add_generation_prompt:
            text += "<assistant>"
        return self._tokenizer.encode(text)

    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        n: int = 1,
        max_tokens: int = 64,
        temperature: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[list[SampledSequence]]:
        self.calls.append(
            ("sample", {"prompts": [list(p) for p in prompts], "n": n, "max_tokens": max_tokens, "seed": seed})
        )
        out = []
        index = 0
        for _ in prompts:
            group = []
            for _ in range(n):
                text = self.completions[index % len(self.completions)]
                index += 1
                tokens = self._tokenizer.encode(text)[:max_tokens]
                group.append(
                    SampledSequence(tokens=tokens, logprobs=[-0.5] * len(tokens), text=text, stop_reason="stop")
                )
            out.append(group)
        return out

    def topk_logprobs(
        self, sequences: Sequence[Sequence[int]], k: int, from_position: int | Sequence[int]
    ) -> list[TopKLogprobs]:
        starts = [from_position] * len(sequences) if isinstance(from_position, int) else list(from_position)
        self.calls.append(
            ("topk_logprobs", {"sequences": [list(s) for s in sequences], "k": k, "from_position": starts})
        )
        result = []
        for seq, start in zip(sequences, starts, strict=True):
            ids = [[(seq[i] + j) % 128 for j in range(len(self.k_logprobs))][:k] for i in range(start, len(seq))]
            lps = [self.k_logprobs[:k] for _ in range(start, len(seq))]
            result.append(TopKLogprobs(token_ids=ids, logprobs=lps))
        return result

    def compute_logprobs(
        self, sequences: Sequence[Sequence[int]], from_position: int | Sequence[int] = 1, base: bool = True
    ) -> list[list[float]]:
        starts = [from_position] * len(sequences) if isinstance(from_position, int) else list(from_position)
        self.calls.append(
            ("compute_logprobs", {"sequences": [list(s) for s in sequences], "from_position": starts, "base": base})
        )
        return [[self.base_logprob(seq[i]) for i in range(start, len(seq))] for seq, start in zip(sequences, starts, strict=True)]

    def forward_backward(
        self, batch: Sequence[Datum], loss_fn: str, loss_fn_config: Mapping[str, float] | None = None
    ) -> ForwardBackwardResult:
        self.calls.append(("forward_backward", {"batch": list(batch), "loss_fn": loss_fn, "config": loss_fn_config}))
        return ForwardBackwardResult(loss_sum=self.loss_sum, metrics={"loss:sum": self.loss_sum})

    def optim_step(
        self,
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.95,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        grad_clip: float | None = None,
    ) -> dict[str, float]:
        self.calls.append(
            ("optim_step", {"learning_rate": learning_rate, "weight_decay": weight_decay, "grad_clip": grad_clip})
        )
        return {"grad_norm": 1.5}

    def save_checkpoint(self, name: str) -> str:
        return name

    def load_checkpoint(self, path: str) -> None:
        return None

    def close(self) -> None:
        return None

    def called(self, name: str) -> list[Any]:
        """The recorded arguments of every call to ``name``."""
        return [args for call, args in self.calls if call == name]


@pytest.fixture
def make_backend() -> type[FakeBackend]:
    """The scripted backend class: ``make_backend(completions=[...], k_logprobs=[...])``."""
    return FakeBackend


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a tiny random llama (2 layers, hidden 32) and its tokenizer; built offline."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from evsys.backends.local.testing import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama") / "model", tie_word_embeddings=True)
