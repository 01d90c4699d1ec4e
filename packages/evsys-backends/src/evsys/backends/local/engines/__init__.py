"""Rollout engines of the local backend: the decode loops behind ``sample``, and the choice between them.

- ``transformers`` (:mod:`.transformers`): transformers' ``generate``; every architecture it loads.
- ``fused`` (:mod:`.fused`): EvSys' fused decoder for Llama, Mistral and Qwen2, float or int8 base
  weights: on a CPU ~1.6x faster than ``generate`` at batch 8 with float weights, ~3x with int8
  (docs/performance.md, "Rollout engines").

``backend.params.rollout_engine: auto`` picks ``fused`` where the model supports it, else
``transformers``. All engines share :class:`~.base.Decoding`, so the same logits give the same tokens
and logprobs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from evsys.backends.local.engines.base import DecodeRequest, Decoding, RolloutEngine
from evsys.backends.local.engines.fused import FusedEngine
from evsys.backends.local.engines.transformers import TransformersEngine
from evsys.schema.errors import EvsysError

__all__ = ["DecodeRequest", "Decoding", "EngineChoice", "FusedEngine", "RolloutEngine", "TransformersEngine"]


class EngineChoice:
    """The engine each batch of rollouts runs on, from ``rollout_engine`` and ``rollout_weights``.

    ``transformers``: always the library engine. ``fused``: the fused engine, or an :class:`EvsysError`
    naming why the model cannot use it. ``auto``: the fused engine where the model supports it (per
    batch: a sliding window shorter than the batch's length falls back), else the library engine.
    ``rollout_weights: int8`` needs the fused engine, so it turns a fallback into an error too.
    """

    def __init__(
        self,
        causal_lm: Any,
        tokenizer: Any,
        pad_token_id: int,
        *,
        engine: str,
        weights: str,
        model_name: str,
        calibration: Callable[[], torch.Tensor] | None = None,
        peft_model: Any = None,
    ) -> None:
        if weights == "int8" and engine == "transformers":
            raise EvsysError(
                "backend.params.rollout_weights 'int8' needs rollout_engine 'auto' or 'fused', not 'transformers'"
            )
        self.strict = engine == "fused" or weights == "int8"
        self.model_name = model_name
        self.library = TransformersEngine(causal_lm, tokenizer, pad_token_id)
        #: the fused engine, unless this run decodes with the library engine only
        self.fused: FusedEngine | None = None
        if engine != "transformers":
            fused = FusedEngine(causal_lm, tokenizer, weights, calibration, peft_model)
            reason = fused.unsupported(1)  # the structure only: each batch checks its own length
            self._refuse(reason)
            self.fused = fused if reason is None else None

    def _refuse(self, reason: str | None) -> None:
        """Raise for ``reason`` when the settings need the fused engine; otherwise the library engine runs."""
        if reason is not None and self.strict:
            raise EvsysError(
                f"backend.params.rollout_engine 'fused' / rollout_weights 'int8' cannot run "
                f"'{self.model_name}': {reason}; use rollout_engine 'transformers' and rollout_weights 'model'"
            )

    def for_batch(self, total_length: int) -> RolloutEngine:
        """The engine for a batch of ``total_length`` positions (prompt width + max_tokens), LoRA refreshed."""
        engine: RolloutEngine = self.library
        if self.fused is not None:
            reason = self.fused.unsupported(total_length)
            self._refuse(reason)
            if reason is None:
                engine = self.fused
        engine.refresh()
        return engine

    def close(self) -> None:
        """Free every engine's buffers."""
        if self.fused is not None:
            self.fused.close()
        self.library.close()
