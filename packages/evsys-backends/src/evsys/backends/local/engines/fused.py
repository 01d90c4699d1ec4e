"""The ``fused`` rollout engine: :class:`~evsys.backends.local.engines.fused_decoder.FusedDecoder` driven
by the shared :class:`~evsys.backends.local.engines.base.Decoding`.

Finished rows leave the batch and its KV cache after every step, so completed rollouts cost nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from evsys.backends.local.engines.base import DecodeRequest, Decoding
from evsys.backends.local.engines.fused_decoder import FusedDecoder, sliding_window_reason, unsupported_reason
from evsys.schema.protocols import SampledSequence


class FusedEngine:
    """Rollouts through EvSys' fused decoder (``weights`` ``"model"`` or ``"int8"``), built on first use."""

    name = "fused"

    def __init__(
        self,
        causal_lm: Any,
        tokenizer: Any,
        weights: str = "model",
        calibration: Callable[[], torch.Tensor] | None = None,
        peft_model: Any = None,
    ) -> None:
        self.causal_lm = causal_lm
        self.tokenizer = tokenizer
        #: the peft wrapper whose adapter is switched off while the int8 copy is calibrated
        self.peft_model = peft_model
        self.weights = weights
        #: the calibration ids ``[1, L]`` of the int8 copy, asked for once when it is built
        self.calibration = calibration
        self._decoder: FusedDecoder | None = None

    def unsupported(self, total_length: int | None = None) -> str | None:
        """Why this engine cannot decode ``total_length`` positions of this model (None when it can)."""
        if self._decoder is not None:  # the structural checks passed when it was built: only the length can fail
            return sliding_window_reason(self.causal_lm.config, total_length)
        return unsupported_reason(self.causal_lm, total_length)

    @property
    def decoder(self) -> FusedDecoder:
        """The fused decoder (built on first use: for int8, the quantized copy of the base weights)."""
        if self._decoder is None:
            calibration = self.calibration() if self.weights == "int8" and self.calibration is not None else None
            # calibrated on the frozen base weights (adapter off), so a copy built after a resume is the same copy
            with torch.inference_mode(), self._adapter_off():
                self._decoder = FusedDecoder(self.causal_lm, self.weights, calibration)
            self._decoder.refresh_lora()
        return self._decoder

    def _adapter_off(self) -> Any:
        """The peft model's ``disable_adapter()`` context (a no-op without one)."""
        return self.peft_model.disable_adapter() if self.peft_model is not None else contextlib.nullcontext()

    @property
    def built(self) -> bool:
        """Whether the decoder exists (it is built by the first rollout)."""
        return self._decoder is not None

    def refresh(self) -> None:
        """Re-read the live LoRA parameters into the decoder, when it exists."""
        if self._decoder is not None:
            self._decoder.refresh_lora()

    def close(self) -> None:
        """Drop the decoder (and any int8 copy)."""
        self._decoder = None

    @torch.inference_mode()
    def decode(self, request: DecodeRequest) -> list[SampledSequence]:
        """Prefill, then one fused step per token; finished rows leave the batch and the KV cache."""
        decoder = self.decoder
        input_ids, mask = request.input_ids, request.attention_mask
        width = input_ids.shape[1]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        decoding = Decoding(request, self.tokenizer)
        logits = decoder.start(input_ids, mask, positions, width + request.max_tokens)
        next_position = positions[:, -1] + 1
        try:
            while True:
                tokens = decoding.choose(logits)
                alive_before = len(decoding.alive)
                keep = decoding.advance()
                if not keep:
                    break
                if len(keep) < alive_before:
                    index = torch.as_tensor(keep, dtype=torch.long, device=input_ids.device)
                    decoder.keep(index)
                    tokens, next_position = tokens[index], next_position[index]
                logits = decoder.step(tokens, next_position)
                next_position = next_position + 1
        finally:
            decoder.finish()
        return decoding.results()
