"""The local backend: one Hugging Face causal LM with a peft LoRA adapter, on CPU or CUDA.

Implements :class:`evsys.schema.protocols.Backend` with Tinker's semantics:

- ``sample`` returns, for each sampled token, its log-probability under the current policy at
  temperature 1 (``log_softmax(logits)``), whatever the sampling temperature — what Tinker returns and
  what ``forward_backward`` computes, so ``exp(logp - sampler_logp)`` is 1 for on-policy tokens;
- ``topk_logprobs`` and ``compute_logprobs(base=True)`` run the same weights with the adapter disabled
  (the frozen base model), and send only the requested positions through the output head;
- ``forward_backward`` accumulates gradients of a raw-sum loss until ``optim_step`` (AdamW over the
  LoRA parameters only).

The parts: :mod:`.loading` (model, tokenizer, LoRA, checkpointing), :mod:`.engines` (the decode loops of
``sample``), :mod:`.scoring`, :mod:`.losses` and :mod:`.checkpoints`; this class composes them.
"""

from __future__ import annotations

import gc
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from evsys.backends.local import auto_settings, checkpoints, losses, scoring
from evsys.backends.local.cpu_features import detect as cpu_features
from evsys.backends.local.engines import DecodeRequest, EngineChoice
from evsys.backends.local.engines.fused_decoder import CALIBRATION_MESSAGES, int8_available, unsupported_reason
from evsys.backends.local.loading import (
    Policy,
    chunks,
    decoder_layers,
    enable_checkpointing,
    load_policy,
    pick_device,
    pick_dtype,
)
from evsys.backends.local.params import LocalBackendParams
from evsys.backends.local.resolve import progress, resolve_model_dir
from evsys.schema.errors import EvsysError
from evsys.schema.plugin_bases import BaseBackend
from evsys.schema.protocols import (
    BackendSetup,
    Datum,
    ForwardBackwardResult,
    LossName,
    Message,
    SampledSequence,
    TopKLogprobs,
)

__all__ = ["LocalBackend"]


class LocalBackend(BaseBackend):
    """A LoRA-adapted Hugging Face causal LM on this machine, behind the EvSys Backend protocol.

    Built as ``LocalBackend(setup, params)``. ``setup.model_name`` is resolved by
    :func:`evsys.backends.local.resolve.resolve_model_dir` (a local directory, a cached hub id or the
    bundled ``smollm2-135m-instruct``); ``setup.seed`` seeds torch, so CPU runs are reproducible.
    """

    resolve_model = staticmethod(resolve_model_dir)

    def __init__(self, setup: BackendSetup, params: LocalBackendParams | None = None) -> None:
        self.setup = setup
        self.params = params or LocalBackendParams()
        self.device = pick_device(self.params.device)
        self.dtype = pick_dtype(self.params.dtype, self.device)
        self.model_dir = resolve_model_dir(setup.model_name, setup.model_revision)
        self._tmp_root: Path | None = None
        self._saved_any = False
        self._step = 0
        if self.params.rollout_weights == "int8" and not int8_available(self.device):
            raise EvsysError(
                f"backend.params.rollout_weights 'int8' needs torch's fbgemm/x86 int8 kernels on the CPU "
                f"(device here: {self.device.type}); use rollout_weights 'model'"
            )
        if self.params.cpu_threads is not None and self.device.type == "cpu":
            torch.set_num_threads(self.params.cpu_threads)
        self.policy: Policy = load_policy(setup, self.params, self.model_dir, self.device, self.dtype)
        self.model: PeftModel = self.policy.model
        self._tokenizer = self.policy.tokenizer
        self.eos_token_ids: frozenset[int] = self.policy.eos_token_ids
        self.pad_token_id: int = self.policy.pad_token_id
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self._optimizer = torch.optim.AdamW(self._trainable, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
        self._generator = torch.Generator(device=self.device).manual_seed(setup.seed)
        self._int8_bytes: int | None = None
        self._resolve_auto_settings()
        #: the rollout engines ``sample`` runs on (``params.rollout_engine``)
        self.engines = EngineChoice(
            self._causal_lm,
            self._tokenizer,
            self.pad_token_id,
            engine=self.params.rollout_engine,
            weights=self.rollout_weights,
            model_name=setup.model_name,
            calibration=self._calibration_ids,
            peft_model=self.model,
        )

    def _resolve_auto_settings(self) -> None:
        """Resolve ``rollout_weights`` and ``gradient_checkpointing`` (``auto``: per CPU and model, see
        :mod:`evsys.backends.local.auto_settings`), install checkpointing, log the choice in one line."""
        p = self.params
        #: the decoder layers (``gradient_checkpointing: auto`` switches them per batch)
        self._layers = layers = decoder_layers(self._causal_lm)
        auto_weights = p.rollout_weights == "auto" and p.rollout_engine != "transformers"
        unsupported = unsupported_reason(self._causal_lm) if auto_weights else None
        self._weights = auto_settings.resolve_rollout_weights(
            p.rollout_weights, device=self.device, engine=p.rollout_engine, features=cpu_features(), unsupported=unsupported
        )
        #: ``rollout_weights`` as resolved: ``model`` or ``int8``
        self.rollout_weights: str = self._weights.value
        per_layer = len(layers) if all(hasattr(layer, "gradient_checkpointing") for layer in layers) else 0
        self._checkpointing = auto_settings.resolve_checkpointing(p.gradient_checkpointing, self.rollout_weights, per_layer)
        if self._checkpointing.value == "auto":  # installed on every layer, switched on per batch
            enable_checkpointing(self._causal_lm, 0, self.setup.model_name)
        progress.info("%s", auto_settings.describe(self._weights, self._checkpointing))

    def resolved_settings(self) -> dict[str, Any]:
        """The ``auto`` settings as resolved: ``{name: {requested, value, reason}}``."""
        return {"rollout_weights": self._weights.as_json(), "gradient_checkpointing": self._checkpointing.as_json()}

    def _auto_checkpointing(self, micro_batches: list[Sequence[dict[str, torch.Tensor]]]) -> None:
        """``gradient_checkpointing: auto``: recompute the first layers whose kept activations, for the largest
        micro-batch, add up to the int8 rollout copy's size (none before that copy exists)."""
        if self._checkpointing.value != "auto":
            return
        layers = self._layers
        room = 0
        fused = self.engines.fused
        if fused is not None and fused.built and fused.weights == "int8":
            if self._int8_bytes is None:
                self._int8_bytes = auto_settings.int8_copy_bytes(self._causal_lm)
            room = self._int8_bytes
        tokens = max(len(c) * max(len(p["input"]) for p in c) for c in micro_batches)
        per_token = auto_settings.activation_bytes_per_token(self._causal_lm.config, self.dtype)
        auto_settings.set_checkpointed_layers(layers, auto_settings.auto_checkpoint_layers(tokens, len(layers), per_token, room))

    @property
    def _causal_lm(self) -> PreTrainedModel:
        """The wrapped ``*ForCausalLM`` (its linear layers carry the LoRA adapters)."""
        return self.policy.causal_lm

    def _calibration_ids(self) -> torch.Tensor:
        """The int8 copy's calibration text, as the model's chat (plain text without a chat template)."""
        try:
            ids = self.render_chat(list(CALIBRATION_MESSAGES), add_generation_prompt=False)
        except EvsysError:
            ids = self._tokenizer.encode(" ".join(m["content"] for m in CALIBRATION_MESSAGES))
        return torch.as_tensor([ids], dtype=torch.long, device=self.device)

    # ----------------------------------------------------------------- protocol: text

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer."""
        return self._tokenizer

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of ``messages`` rendered with the model's chat template."""
        if not getattr(self._tokenizer, "chat_template", None):
            raise EvsysError(f"model '{self.setup.model_name}' has no chat template; use a chat/instruct model")
        out: Any = self._tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
        )
        if isinstance(out, Mapping) or hasattr(out, "input_ids"):
            out = out["input_ids"]
        if hasattr(out, "tolist"):
            out = out.tolist()
        if out and isinstance(out[0], list):
            out = out[0]
        return [int(t) for t in out]

    # ----------------------------------------------------------------- protocol: sampling

    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        n: int = 1,
        max_tokens: int = 64,
        temperature: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[list[SampledSequence]]:
        """Sample ``n`` completions per prompt from the current policy (adapter on).

        Prompts are batched with left padding and decoded with a KV cache. ``temperature`` 0 is greedy.
        ``text`` is the decoded completion without special tokens. Each completion ends at an EOS
        token (kept in ``tokens``, not in ``text``; ``stop_reason`` "stop"), at the first stop string
        (``text`` cut before it; ``tokens`` end with the token that completed it; "stop"), or after
        ``max_tokens`` tokens ("length"). ``logprobs[i]`` is ``log p(tokens[i] | prompt, tokens[:i])``
        under the current policy at temperature 1 (Tinker's convention), whatever ``temperature`` is.
        ``seed`` makes a call reproducible; without it the backend's generator (seeded from
        ``setup.seed``) advances.
        """
        if n < 1 or max_tokens < 1:
            raise EvsysError(f"sample needs n >= 1 and max_tokens >= 1, got n={n}, max_tokens={max_tokens}")
        if temperature < 0:
            raise EvsysError(f"sample temperature must be >= 0, got {temperature}")
        if any(len(p) == 0 for p in prompts):
            raise EvsysError("sample got an empty prompt")
        rows = [list(p) for p in prompts for _ in range(n)]
        generator = self._generator
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        stops = [s for s in (stop or []) if s]
        flat: list[SampledSequence] = []
        self.policy.release_memory()  # the last backward's freed blocks are not resident under the rollout's peak
        for chunk in chunks(rows, self.params.micro_batch_size):
            request = self._request(chunk, max_tokens, temperature, stops, generator)
            flat.extend(self.engines.for_batch(request.input_ids.shape[1] + max_tokens).decode(request))
        self.policy.release_memory()
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _request(
        self, rows: Sequence[list[int]], max_tokens: int, temperature: float, stops: list[str], generator: torch.Generator
    ) -> DecodeRequest:
        """``rows`` left-padded into one decode request."""
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            input_ids[b, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
            mask[b, width - len(row) :] = 1
        return DecodeRequest(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_tokens=max_tokens,
            temperature=temperature,
            generator=generator,
            eos_token_ids=self.eos_token_ids,
            stops=stops,
        )

    # ----------------------------------------------------------------- protocol: teacher

    def topk_logprobs(
        self, sequences: Sequence[Sequence[int]], k: int, from_position: int | Sequence[int]
    ) -> list[TopKLogprobs]:
        """Top-k next-token logprobs under the frozen base model (the same weights, adapter disabled).

        For sequence ``s`` and each ``i`` in ``[from_position, len(s))``: the top-k of ``p(. | s[:i])``,
        from the hidden state at index ``i - 1``. Only those positions go through the output head.
        """
        return scoring.topk_logprobs(
            self.policy,
            sequences,
            k,
            from_position,
            micro_batch_size=self.params.micro_batch_size,
            logits_chunk_size=self.params.logits_chunk_size,
        )

    def compute_logprobs(
        self, sequences: Sequence[Sequence[int]], from_position: int | Sequence[int] = 1, base: bool = True
    ) -> list[list[float]]:
        """``log p(s[i] | s[:i])`` for ``i`` in ``[from_position, len(s))``: the exact logprob of each token
        under the frozen base model (``base=True``: adapter disabled) or the current policy (adapter on)."""
        return scoring.compute_logprobs(
            self.policy,
            sequences,
            from_position,
            base,
            micro_batch_size=self.params.micro_batch_size,
            logits_chunk_size=self.params.logits_chunk_size,
        )

    # ----------------------------------------------------------------- protocol: training

    def forward_backward(
        self, batch: Sequence[Datum], loss_fn: LossName, loss_fn_config: Mapping[str, float] | None = None
    ) -> ForwardBackwardResult:
        """Accumulate gradients of ``loss_fn`` summed over ``batch`` (Tinker's definitions; see
        :func:`evsys.backends.local.losses.forward_backward`). Gradients add up until :meth:`optim_step`."""
        return losses.forward_backward(
            self.policy,
            batch,
            loss_fn,
            loss_fn_config,
            micro_batch_size=self.params.micro_batch_size,
            logits_chunk_size=self.params.logits_chunk_size,
            lora_dropout=self.params.lora_dropout,
            before_chunks=self._auto_checkpointing,
        )

    def optim_step(
        self,
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.95,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        grad_clip: float | None = None,
    ) -> dict[str, float]:
        """One AdamW step over the LoRA parameters with the accumulated gradients, then clear them.

        Returns ``grad_norm`` (before clipping) and ``learning_rate``.
        """
        for group in self._optimizer.param_groups:
            group.update(lr=learning_rate, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
        grads = [p for p in self._trainable if p.grad is not None]
        if grads:
            max_norm = grad_clip if grad_clip is not None else math.inf
            norm = float(torch.nn.utils.clip_grad_norm_(grads, max_norm))
        else:
            norm = 0.0
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        self._step += 1
        return {"grad_norm": norm, "learning_rate": float(learning_rate)}

    # ----------------------------------------------------------------- protocol: checkpoints

    def _checkpoint_root(self) -> Path:
        if self.setup.run_dir is not None:
            return Path(self.setup.run_dir) / "checkpoints"
        if self._tmp_root is None:
            self._tmp_root = Path(tempfile.mkdtemp(prefix="evsys-local-"))
        return self._tmp_root / "checkpoints"

    def save_checkpoint(self, name: str) -> str:
        """Save the adapter (a plain peft directory) and the optimizer and RNG state; returns the directory.

        Written to ``<run_dir>/checkpoints/<name>/`` (a temporary directory when ``run_dir`` is None)
        under a temporary name first, then renamed, so a crash never leaves a half checkpoint.
        """
        target = checkpoints.save_checkpoint(
            self._checkpoint_root(), name, self.model, self._optimizer, self._generator, self._step
        )
        self._saved_any = True
        return str(target)

    def load_checkpoint(self, path: str) -> None:
        """Restore adapter weights, optimizer state and RNG state saved by :meth:`save_checkpoint`.

        A directory with only a peft adapter (no ``training_state.pt``) loads the weights and keeps a
        fresh optimizer.
        """
        step = checkpoints.load_checkpoint(
            path, self.model, self._optimizer, self._generator, self.setup.lora_rank, self.device
        )
        if step is not None:
            self._step = step

    def close(self) -> None:
        """Free the model and optimizer; remove the temporary checkpoint root if nothing was saved there."""
        if hasattr(self, "engines"):
            self.engines.close()
        for attr in ("engines", "model", "policy", "_optimizer", "_trainable"):
            if hasattr(self, attr):
                delattr(self, attr)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self._tmp_root is not None and not self._saved_any:
            shutil.rmtree(self._tmp_root, ignore_errors=True)

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
