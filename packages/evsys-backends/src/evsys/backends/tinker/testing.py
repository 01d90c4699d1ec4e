"""Testing helpers for the tinker backend (documented; not used by runs): a byte tokenizer, a simulated
backend, and :class:`SampleThenScore` (a backend without its own ``sample_and_score``).

    backend, service = simulated_backend(tmp_path)
    backend.sample([[11, 12]])
    service.training_clients[0].samplers[0].requests   # what the simulated service was asked
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evsys.backends.tinker.models import ModelLimits
from evsys.backends.tinker.renderers import HF_TEMPLATE
from evsys.backends.tinker.simulator import Faults, Latency, SimulatedService
from evsys.schema.plugin_bases import BaseBackend

BYTE_LIMITS = ModelLimits(vocab_size=300, context_length=512, max_lora_rank=32)
"""Limits that fit :class:`ByteTokenizer` (ids 1..265): a vocabulary of 300 and a 512-token window."""


class ByteTokenizer:
    """A byte-level tokenizer: id = byte + 10; 1 is BOS-like, 2 is EOS. Its chat template returns a
    ``BatchEncoding`` as transformers 5 may."""

    eos_token_id = 2

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Bytes of ``text`` plus 10."""
        return [b + 10 for b in text.encode("utf-8")]

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Inverse of :meth:`encode`; ids below 10 are special: dropped when asked, else shown as ``<id>``;
        ids above 265 (no byte) show as ``?``."""
        out = bytearray()
        for t in token_ids:
            if 10 <= t < 266:
                out.append(int(t) - 10)
            elif t >= 266:
                out.extend(b"?")
            elif not skip_special_tokens:
                out.extend(f"<{t}>".encode())
        return out.decode("utf-8", errors="replace")

    def apply_chat_template(
        self, messages: list[dict[str, str]], tokenize: bool = True, add_generation_prompt: bool = True, **_: Any
    ) -> Any:
        """``<role>: content\\n`` per message, then ``assistant: `` when asked; a BatchEncoding of ids."""
        from transformers import BatchEncoding

        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        if add_generation_prompt:
            text += "assistant: "
        ids = [1, *self.encode(text)]
        return BatchEncoding({"input_ids": ids, "attention_mask": [1] * len(ids)}) if tokenize else text


def simulated_backend(
    run_dir: Path | None = None,
    *,
    model: str = "Qwen/Qwen3.5-4B",
    lora_rank: int = 1,
    seed: int = 3,
    faults: Faults | None = None,
    limits: ModelLimits | None = BYTE_LIMITS,
    latency: Latency | None = None,
    tokenizer: Any = None,
    **params: Any,
) -> tuple[Any, SimulatedService]:
    """A ``TinkerBackend`` on a :class:`SimulatedService` (byte tokenizer and limits by default), and the service.

    The byte tokenizer stands for the Hugging Face tokenizer of ``get_tokenizer()``, so the backend renders
    through its chat template (``renderer='huggingface'`` unless ``params`` name one): small, readable ids
    for tests of the SDK mapping. The model's own ``tml-renderers`` renderer, as a run renders, is what
    ``TinkerBackend(BackendSetup(..., dry_run=True))`` uses, with the catalog's limits.
    """
    from evsys.backends.tinker.backend import TinkerBackend
    from evsys.backends.tinker.params import TinkerBackendParams
    from evsys.schema.protocols import BackendSetup

    service = SimulatedService(
        tokenizer=tokenizer if tokenizer is not None else ByteTokenizer(), faults=faults, limits=limits, seed=seed,
        latency=latency,
    )
    params.setdefault("renderer", HF_TEMPLATE)
    setup = BackendSetup(model_name=model, lora_rank=lora_rank, seed=seed, run_dir=run_dir)
    sleeps: list[float] = []
    backend = TinkerBackend(setup, TinkerBackendParams(**params), service_client=service, sleep=sleeps.append)
    backend.sleeps = sleeps  # type: ignore[attr-defined]
    return backend, service


class SampleThenScore(BaseBackend):
    """``backend`` with :class:`~evsys.schema.plugin_bases.BaseBackend`'s ``sample_and_score`` (the whole
    batch sampled, then scored in one call), for comparing a backend's own ``sample_and_score`` with it."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped backend's ``sample``."""
        return self._backend.sample(*args, **kwargs)

    def topk_logprobs(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped backend's ``topk_logprobs``."""
        return self._backend.topk_logprobs(*args, **kwargs)
