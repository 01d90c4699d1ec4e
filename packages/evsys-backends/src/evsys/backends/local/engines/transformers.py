"""The default rollout engine: transformers' own ``generate``, for every architecture it loads.

``generate`` runs the model (LoRA adapter active) with its KV cache; a :class:`LogitsProcessor` hands each
step's raw logits to the shared :class:`~evsys.backends.local.engines.base.Decoding` (so the token choice,
its logprob at temperature 1 and the seeded draws are those of every other engine) and forces the chosen
token; a :class:`StoppingCriteria` applies EOS, stop strings and ``max_tokens`` through the same object.
``generate`` runs greedy (its argmax picks the forced token), with a generation config of its own, so the
model's ``generation_config`` (repetition penalty, top-k, ...) never changes a rollout.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from evsys.backends.local.engines.base import DecodeRequest, Decoding
from evsys.schema.protocols import SampledSequence


class _Choose(LogitsProcessor):
    """Replaces the scores of every unfinished row by a one-hot of the token :class:`Decoding` chose."""

    def __init__(self, decoding: Decoding) -> None:
        self.decoding = decoding

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        alive = self.decoding.alive
        forced = torch.full_like(scores, -torch.inf)
        if alive:
            index = torch.as_tensor(alive, dtype=torch.long, device=scores.device)
            tokens = self.decoding.choose(scores.index_select(0, index).float())
            forced[index, tokens] = 0.0
        return forced  # type: ignore[return-value]


class _Stop(StoppingCriteria):
    """Done for every row :class:`Decoding` no longer keeps alive."""

    def __init__(self, decoding: Decoding) -> None:
        self.decoding = decoding

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        self.decoding.advance()
        done = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.decoding.alive:
            done[torch.as_tensor(self.decoding.alive, dtype=torch.long, device=input_ids.device)] = False
        return done  # type: ignore[return-value]


class TransformersEngine:
    """Rollouts through ``causal_lm.generate`` (the peft-wrapped model's base, adapter active)."""

    name = "transformers"

    def __init__(self, causal_lm: Any, tokenizer: Any, pad_token_id: int, cache: str = "dynamic") -> None:
        self.causal_lm = causal_lm
        self.tokenizer = tokenizer
        self.pad_token_id = pad_token_id
        #: "dynamic" (grows per token) or "static" (preallocated for the batch's prompt + max_tokens; slower
        #: on CPU without torch.compile: docs/performance.md, "Rollout engines")
        self.cache = cache

    def refresh(self) -> None:
        """Nothing to re-read: ``generate`` runs the live peft modules."""

    def close(self) -> None:
        """Nothing held between batches."""

    @torch.inference_mode()
    def decode(self, request: DecodeRequest) -> list[SampledSequence]:
        """Rollouts of ``request`` through ``generate``; see the module docstring."""
        decoding = Decoding(request, self.tokenizer)
        config = GenerationConfig(
            max_new_tokens=request.max_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.pad_token_id,
            eos_token_id=None,
            use_cache=True,
            cache_implementation="static" if self.cache == "static" else None,
            return_dict_in_generate=False,
        )
        model = self.causal_lm
        saved = model.generation_config
        model.generation_config = GenerationConfig(pad_token_id=self.pad_token_id)  # no model defaults fill ours
        try:
            model.generate(
                input_ids=request.input_ids,
                attention_mask=request.attention_mask,
                generation_config=config,
                logits_processor=LogitsProcessorList([_Choose(decoding)]),
                stopping_criteria=StoppingCriteriaList([_Stop(decoding)]),
            )
        finally:
            model.generation_config = saved
        return decoding.results()
