"""The local backend: one Hugging Face causal LM with a peft LoRA adapter, on CPU or CUDA.

Implements :class:`evsys.schema.protocols.Backend` with Tinker's semantics:

- ``sample`` returns, for each sampled token, its log-probability under the current policy at
  temperature 1 (``log_softmax(logits)``), whatever the sampling temperature — what Tinker returns and
  what ``forward_backward`` computes, so ``exp(logp - sampler_logp)`` is 1 for on-policy tokens;
- ``topk_logprobs`` and ``compute_logprobs(base=True)`` run the same weights with the adapter disabled
  (the frozen base model), and send only the requested positions through the output head;
- ``forward_backward`` accumulates gradients of a raw-sum loss until ``optim_step`` (AdamW over the
  LoRA parameters only).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from evsys.backends.local import auto_settings
from evsys.backends.local.cpu_features import detect as cpu_features
from evsys.backends.local.memory import release_freed_memory
from evsys.backends.local.params import LocalBackendParams
from evsys.backends.local.resolve import progress, resolve_model_dir
from evsys.backends.local.rollout import (
    CALIBRATION_MESSAGES,
    FusedDecoder,
    int8_available,
    sliding_window_reason,
    unsupported_reason,
)
from evsys.backends.local.sampling import inverse_cdf_sample
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import (
    BackendSetup,
    Datum,
    ForwardBackwardResult,
    LossName,
    Message,
    SampledSequence,
    TopKLogprobs,
)

TRAINING_STATE_FILE = "training_state.pt"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
_LOSSES = ("cross_entropy", "importance_sampling", "ppo")
_PPO_DEFAULTS = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}


def pick_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an :class:`EvsysError`."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise EvsysError(
            "backend.params.device is 'cuda' but torch sees no CUDA device (torch.cuda.is_available() is False)"
        )
    return torch.device(requested)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 on CPU."""
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]


def _output_cache(output: Any) -> Any:
    """The KV cache of a model output (``cache`` in transformers >= 5.24, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars or info chatter from transformers while loading."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _chunks(items: Sequence[Any], size: int | None) -> Iterator[Sequence[Any]]:
    step = size or max(len(items), 1)
    for start in range(0, len(items), step):
        yield items[start : start + step]


class TargetLogprobs(torch.autograd.Function):
    """``log_softmax(logits).gather(1, targets)`` holding one ``[P, V]`` buffer less than the two ops.

    ``log_softmax`` keeps its ``[P, V]`` output for the backward and ``gather``'s backward builds a
    ``[P, V]`` gradient before ``log_softmax``'s builds another; this keeps the logits and their
    log-sum-exp and builds the gradient ``scatter(g) - softmax * sum(g)`` in the logits' own buffer.
    It consumes ``logits``: the backward overwrites them, so pass a tensor nothing else reads (the
    output head's fresh result).
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        ctx.save_for_backward(logits, lse, targets)
        return logits.gather(1, targets) - lse

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, lse, targets = ctx.saved_tensors
        # the gradient is built in the saved logits' own buffer (the graph is never run backward twice)
        grad_logits = logits.sub_(lse).exp_().mul_(-grad.sum(dim=1, keepdim=True))
        return grad_logits.scatter_add_(1, targets, grad), None


class LocalBackend:
    """A LoRA-adapted Hugging Face causal LM on this machine, behind the EvSys Backend protocol.

    Built as ``LocalBackend(setup, params)``. ``setup.model_name`` is resolved by
    :func:`evsys.backends.local.resolve.resolve_model_dir` (a local directory, a cached hub id or the
    bundled ``smollm2-135m-instruct``); ``setup.seed`` seeds torch, so CPU runs are reproducible.
    """

    def __init__(self, setup: BackendSetup, params: LocalBackendParams | None = None) -> None:
        self.setup = setup
        self.params = params or LocalBackendParams()
        self.device = pick_device(self.params.device)
        self.dtype = pick_dtype(self.params.dtype, self.device)
        self.model_dir = resolve_model_dir(setup.model_name, setup.model_revision)
        self._tmp_root: Path | None = None
        self._saved_any = False
        self._step = 0
        self._fused: FusedDecoder | None = None
        self._int8_bytes: int | None = None
        if self.params.rollout_weights == "int8" and self.params.rollout_engine == "generic":
            raise EvsysError(
                "backend.params.rollout_weights 'int8' needs rollout_engine 'auto' or 'fused', not 'generic'"
            )
        if self.params.rollout_weights == "int8" and not int8_available(self.device):
            raise EvsysError(
                f"backend.params.rollout_weights 'int8' needs torch's fbgemm/x86 int8 kernels on the CPU "
                f"(device here: {self.device.type}); use rollout_weights 'model'"
            )
        if self.params.cpu_threads is not None and self.device.type == "cpu":
            torch.set_num_threads(self.params.cpu_threads)

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        except Exception as exc:  # a broken model directory is the user's, one line
            raise EvsysError(f"cannot load the tokenizer of '{setup.model_name}' ({self.model_dir}): {exc}") from None
        torch.manual_seed(setup.seed)
        load_kwargs: dict[str, Any] = {"dtype": self.dtype}
        if self.params.attn_implementation != "auto":
            load_kwargs["attn_implementation"] = self.params.attn_implementation
        try:
            with _quiet_transformers():
                base = AutoModelForCausalLM.from_pretrained(self.model_dir, **load_kwargs)
        except Exception as exc:
            raise EvsysError(f"cannot load model '{setup.model_name}' ({self.model_dir}): {exc}") from None
        base.to(self.device)
        base.config.use_cache = True
        target: list[str] | str = self.params.target_modules
        lora_config = LoraConfig(
            r=setup.lora_rank,
            lora_alpha=self.params.resolved_lora_alpha(),
            lora_dropout=self.params.lora_dropout,
            target_modules=target,
            bias="none",
            task_type="CAUSAL_LM",
        )
        try:
            with _quiet_transformers():
                self.model: PeftModel = get_peft_model(base, lora_config)
        except ValueError as exc:
            raise EvsysError(
                f"cannot put LoRA adapters on '{setup.model_name}' with target_modules={target!r}: {exc}; "
                "set backend.params.target_modules to this architecture's module names, or to 'all-linear'"
            ) from None
        self._resolve_auto_settings()
        self.model.eval()
        forward_params = inspect.signature(type(base).forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_params else "past_key_values"
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self._optimizer = torch.optim.AdamW(self._trainable, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
        self._generator = torch.Generator(device=self.device).manual_seed(setup.seed)
        eos = {
            self._tokenizer.eos_token_id,
            base.config.eos_token_id,
            getattr(base.generation_config, "eos_token_id", None),
        }
        flat: set[int] = set()
        for item in eos:
            if isinstance(item, int):
                flat.add(item)
            elif isinstance(item, (list, tuple)):
                flat.update(int(x) for x in item)
        self.eos_token_ids: frozenset[int] = frozenset(flat)
        pad = self._tokenizer.pad_token_id
        self.pad_token_id: int = pad if pad is not None else (min(flat) if flat else 0)

    # ----------------------------------------------------------------- model parts

    def _enable_checkpointing(self, layers: bool | int) -> None:
        """transformers' non-reentrant checkpointing on every decoder layer, or (an int N) on the first N."""
        decoder_layers = list(getattr(self._decoder, "layers", []))
        if layers is not True and layers > len(decoder_layers):
            raise EvsysError(
                f"backend.params.gradient_checkpointing {layers} exceeds the {len(decoder_layers)} decoder layers "
                f"of '{self.setup.model_name}'"
            )
        kwargs = {"use_reentrant": False}
        with _quiet_transformers():
            if hasattr(self._causal_lm, "activation_checkpointing_enable"):  # transformers >= 5.2x
                self._causal_lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                self._causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if layers is True:
            return
        if not all(hasattr(layer, "gradient_checkpointing") for layer in decoder_layers):
            raise EvsysError(
                f"backend.params.gradient_checkpointing {layers}: '{self.setup.model_name}' checkpoints all its layers "
                "or none (its layers are not transformers' GradientCheckpointingLayer); use true"
            )
        for layer in decoder_layers[layers:]:
            layer.gradient_checkpointing = False

    def _resolve_auto_settings(self) -> None:
        """Resolve ``rollout_weights`` and ``gradient_checkpointing`` (``auto``: per CPU and model, see
        :mod:`evsys.backends.local.auto_settings`), enable checkpointing, log the choice in one line."""
        p, layers = self.params, list(getattr(self._decoder, "layers", []))
        auto_weights = p.rollout_weights == "auto" and p.rollout_engine != "generic"
        unsupported = unsupported_reason(self._causal_lm) if auto_weights else None
        self._weights = auto_settings.resolve_rollout_weights(
            p.rollout_weights, device=self.device, engine=p.rollout_engine, features=cpu_features(), unsupported=unsupported
        )
        self.rollout_weights: str = self._weights.value
        per_layer = len(layers) if all(hasattr(layer, "gradient_checkpointing") for layer in layers) else 0
        self._checkpointing = auto_settings.resolve_checkpointing(p.gradient_checkpointing, self.rollout_weights, per_layer)
        if self._checkpointing.value == "auto":
            self._enable_checkpointing(0)  # installed on every layer, switched on per batch
        elif self._checkpointing.value:
            self._enable_checkpointing(self._checkpointing.value)
        progress.info("%s", auto_settings.describe(self._weights, self._checkpointing))

    def resolved_settings(self) -> dict[str, Any]:
        """The ``auto`` settings as resolved (resolved_config.json's ``backend_resolved``)."""
        return {"rollout_weights": self._weights.as_json(), "gradient_checkpointing": self._checkpointing.as_json()}

    def _auto_checkpointing(self, chunks: list[Sequence[dict[str, torch.Tensor]]]) -> None:
        """``gradient_checkpointing: auto``: recompute the first layers whose kept activations, for the largest
        micro-batch, add up to the int8 rollout copy's size (none before that copy exists)."""
        if self._checkpointing.value != "auto":
            return
        layers = list(self._decoder.layers)
        room = 0
        if self._fused is not None and self._fused.int8:
            if self._int8_bytes is None:
                self._int8_bytes = auto_settings.int8_copy_bytes(self._causal_lm)
            room = self._int8_bytes
        tokens = max(len(c) * max(len(p["input"]) for p in c) for c in chunks)
        per_token = auto_settings.activation_bytes_per_token(self._causal_lm.config, self.dtype)
        auto_settings.set_checkpointed_layers(layers, auto_settings.auto_checkpoint_layers(tokens, len(layers), per_token, room))

    @property
    def _causal_lm(self) -> PreTrainedModel:
        """The wrapped ``*ForCausalLM`` (its linear layers carry the LoRA adapters)."""
        return self.model.get_base_model()

    @property
    def _decoder(self) -> torch.nn.Module:
        return self._causal_lm.get_decoder()

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits for ``hidden`` ``[P, H]``: the output head plus any logit scaling the model applies."""
        logits = self._causal_lm.get_output_embeddings()(hidden).float()
        config = self._causal_lm.config
        scale = getattr(config, "logit_scale", None)
        if isinstance(scale, (int, float)) and scale != 1:
            logits = logits * scale
        softcap = getattr(config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    def _hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``[B, L, H]`` of right-padded ``input_ids`` (causal attention; pads only follow)."""
        return self._decoder(input_ids=input_ids, use_cache=False).last_hidden_state

    def _right_pad(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        return ids.to(self.device)

    def _release_memory(self) -> None:
        """Between phases on CPU: hand the heap pages the last phase freed back to the OS (~1 ms)."""
        if self.device.type == "cpu":
            release_freed_memory()

    def _rollout_decoder(self, total_length: int) -> FusedDecoder | None:
        """The fused decode path for a batch of ``total_length`` positions, or None for the generic loop."""
        if self.params.rollout_engine == "generic":
            return None
        if self._fused is None:
            reason = unsupported_reason(self._causal_lm, total_length)
        else:  # the model passed the structural checks when the decoder was built: only the length can fail
            reason = sliding_window_reason(self._causal_lm.config, total_length)
        if reason is not None:
            if self.params.rollout_engine == "fused" or self.params.rollout_weights == "int8":
                raise EvsysError(
                    f"backend.params.rollout_engine 'fused' / rollout_weights 'int8' cannot run "
                    f"'{self.setup.model_name}': {reason}; use rollout_engine 'generic' and rollout_weights 'model'"
                )
            return None
        if self._fused is None:
            calibration = None
            if self.rollout_weights == "int8":
                try:
                    ids = self.render_chat(list(CALIBRATION_MESSAGES), add_generation_prompt=False)
                except EvsysError:  # no chat template: the plain text
                    ids = self._tokenizer.encode(" ".join(m["content"] for m in CALIBRATION_MESSAGES))
                calibration = torch.as_tensor([ids], dtype=torch.long, device=self.device)
            # calibrated on the frozen base weights (adapter off), so a copy built after a resume is the same copy
            with torch.inference_mode(), self.model.disable_adapter():
                self._fused = FusedDecoder(self._causal_lm, self.rollout_weights, calibration)
            self._fused.refresh_lora()
        else:
            self._fused.refresh_lora()
        return self._fused

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
        token (kept in ``tokens``, not in ``text``; ``stop_reason`` "stop"), at the first stop string (``text`` cut before it; ``tokens`` end with the token that
        completed it; "stop"), or after ``max_tokens`` tokens ("length"). ``logprobs[i]`` is
        ``log p(tokens[i] | prompt, tokens[:i])`` under the current policy at temperature 1 (Tinker's
        convention), whatever ``temperature`` is. ``seed`` makes a call reproducible; without it the
        backend's generator (seeded from ``setup.seed``) advances.
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
        self._release_memory()  # the last backward's freed blocks are not resident under the rollout's peak
        for chunk in _chunks(rows, self.params.micro_batch_size):
            flat.extend(self._sample_batch(chunk, max_tokens, temperature, stops, generator))
        self._release_memory()
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    @torch.inference_mode()
    def _sample_batch(
        self,
        rows: Sequence[list[int]],
        max_tokens: int,
        temperature: float,
        stops: list[str],
        generator: torch.Generator,
    ) -> list[SampledSequence]:
        batch = len(rows)
        width = max(len(r) for r in rows)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((batch, width + max_tokens), dtype=torch.long)
        for b, row in enumerate(rows):
            input_ids[b, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
            mask[b, width - len(row) : width] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
        eos = torch.as_tensor(sorted(self.eos_token_ids), dtype=torch.long, device=self.device)

        decoder = self._rollout_decoder(width + max_tokens)
        if decoder is not None:
            logits = decoder.start(input_ids, mask[:, :width], positions, width + max_tokens)
        else:
            out = self._causal_lm(
                input_ids=input_ids,
                attention_mask=mask[:, :width],
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
            )
            cache = _output_cache(out)
            logits = out.logits[:, -1, :].float()
        next_position = positions[:, -1] + 1
        generated: list[list[int]] = [[] for _ in range(batch)]
        logprobs: list[list[float]] = [[] for _ in range(batch)]
        texts: list[str | None] = [None] * batch
        reasons: list[str] = ["length"] * batch
        rows_in_batch = list(range(batch))  # original row of each row of the (shrinking) decode batch
        for step in range(max_tokens):
            logp = torch.log_softmax(logits, dim=-1)
            if temperature == 0:
                tokens = logits.argmax(dim=-1)
            else:
                probs = logp.exp() if temperature == 1 else torch.softmax(logits / temperature, dim=-1)
                tokens = inverse_cdf_sample(probs, generator)
            chosen = logp.gather(1, tokens[:, None]).squeeze(1)
            is_eos = torch.isin(tokens, eos) if len(eos) else torch.zeros_like(tokens, dtype=torch.bool)
            token_list, logp_list, eos_list = tokens.tolist(), chosen.tolist(), is_eos.tolist()
            keep: list[int] = []
            for i, b in enumerate(rows_in_batch):
                generated[b].append(token_list[i])
                logprobs[b].append(logp_list[i])
                if eos_list[i]:
                    reasons[b] = "stop"
                    continue
                if stops:
                    text = self._tokenizer.decode(generated[b], skip_special_tokens=True)
                    cut = min((j for j in (text.find(s) for s in stops) if j >= 0), default=-1)
                    if cut >= 0:
                        texts[b], reasons[b] = text[:cut], "stop"
                        continue
                keep.append(i)
            if not keep or step == max_tokens - 1:
                break
            if len(keep) < len(rows_in_batch) and (decoder is not None or hasattr(cache, "batch_select_indices")):
                # drop finished rows from the batch and its KV cache: no compute on completed rollouts
                index = torch.as_tensor(keep, dtype=torch.long, device=self.device)
                if decoder is not None:
                    decoder.keep(index)
                else:
                    cache.batch_select_indices(index)
                tokens, mask, next_position = tokens[index], mask[index], next_position[index]
                rows_in_batch = [rows_in_batch[i] for i in keep]
            if decoder is not None:
                logits = decoder.step(tokens, next_position)
            else:
                mask[:, width + step] = 1
                out = self._causal_lm(
                    input_ids=tokens[:, None],
                    attention_mask=mask[:, : width + step + 1],
                    position_ids=next_position[:, None],
                    use_cache=True,
                    **{self._cache_kwarg: cache},
                )
                cache = _output_cache(out)
                logits = out.logits[:, -1, :].float()
            next_position = next_position + 1

        if decoder is not None:
            decoder.finish()
        results = []
        for b in range(batch):
            tokens_b = generated[b]
            text = texts[b]
            if text is None:
                body = tokens_b[:-1] if reasons[b] == "stop" else tokens_b
                text = self._tokenizer.decode(body, skip_special_tokens=True)
            results.append(SampledSequence(tokens=tokens_b, logprobs=logprobs[b], text=text, stop_reason=reasons[b]))  # type: ignore[arg-type]
        return results

    # ----------------------------------------------------------------- protocol: teacher

    def _starts(self, sequences: Sequence[Sequence[int]], from_position: int | Sequence[int], what: str) -> list[int]:
        """``from_position`` as one start per sequence, each checked to lie in ``[1, len(s)]``."""
        starts = (
            [int(from_position)] * len(sequences) if isinstance(from_position, int) else [int(x) for x in from_position]
        )
        if len(starts) != len(sequences):
            raise EvsysError(f"{what} got {len(starts)} from_position values for {len(sequences)} sequences")
        for s, start in zip(sequences, starts, strict=True):
            if not 1 <= start <= len(s):
                raise EvsysError(f"{what} from_position {start} is outside [1, {len(s)}] for a sequence of length {len(s)}")
        return starts

    def topk_logprobs(
        self, sequences: Sequence[Sequence[int]], k: int, from_position: int | Sequence[int]
    ) -> list[TopKLogprobs]:
        """Top-k next-token logprobs under the frozen base model (the same weights, adapter disabled).

        For sequence ``s`` and each ``i`` in ``[from_position, len(s))``: the top-k of ``p(. | s[:i])``,
        from the hidden state at index ``i - 1``. Only those positions go through the output head.
        """
        starts = self._starts(sequences, from_position, "topk_logprobs")
        vocab = self._causal_lm.get_output_embeddings().weight.shape[0]
        if not 1 <= k <= vocab:
            raise EvsysError(f"topk_logprobs k must be in [1, {vocab}], got {k}")
        results: list[TopKLogprobs] = [TopKLogprobs(token_ids=[], logprobs=[]) for _ in sequences]
        todo = [i for i, s in enumerate(sequences) if starts[i] < len(s)]
        for chunk in _chunks(todo, self.params.micro_batch_size):
            scored = self._score_batch([list(sequences[i]) for i in chunk], [starts[i] for i in chunk], k, base=True)
            for i, (ids, lps) in zip(chunk, scored, strict=True):
                results[i] = TopKLogprobs(token_ids=ids, logprobs=lps)
        self._release_memory()
        return results

    def compute_logprobs(
        self, sequences: Sequence[Sequence[int]], from_position: int | Sequence[int] = 1, base: bool = True
    ) -> list[list[float]]:
        """``log p(s[i] | s[:i])`` for ``i`` in ``[from_position, len(s))``: the exact logprob of each token
        under the frozen base model (``base=True``: adapter disabled) or the current policy (adapter on)."""
        starts = self._starts(sequences, from_position, "compute_logprobs")
        results: list[list[float]] = [[] for _ in sequences]
        todo = [i for i, s in enumerate(sequences) if starts[i] < len(s)]
        for chunk in _chunks(todo, self.params.micro_batch_size):
            scored = self._score_batch([list(sequences[i]) for i in chunk], [starts[i] for i in chunk], None, base=base)
            for i, values in zip(chunk, scored, strict=True):
                results[i] = values
        self._release_memory()
        return results

    @torch.inference_mode()
    def _score_batch(self, seqs: list[list[int]], starts: list[int], k: int | None, *, base: bool) -> list[Any]:
        """Per sequence, one row per position ``i`` in ``[start, len(s))`` of ``log p(. | s[:i])``: the
        top-k ``(ids, logprobs)`` when ``k`` is set, else the logprob of ``s[i]`` itself. The decoder runs
        once over ``s[:-1]``; only the requested positions go through the output head, in chunks."""
        with self.model.disable_adapter() if base else contextlib.nullcontext():
            hidden = self._hidden(self._right_pad([s[:-1] for s in seqs]))
            rows = torch.cat(
                [
                    torch.full((len(s) - st,), b, dtype=torch.long)
                    for b, (s, st) in enumerate(zip(seqs, starts, strict=True))
                ]
            ).to(self.device)
            cols = torch.cat([torch.arange(st - 1, len(s) - 1) for s, st in zip(seqs, starts, strict=True)]).to(
                self.device
            )
            targets = torch.cat([torch.as_tensor(s[st:], dtype=torch.long) for s, st in zip(seqs, starts, strict=True)])
            targets = targets.to(self.device)
            selected = hidden[rows, cols]
            del hidden
            ids_parts, lp_parts = [], []
            for start in range(0, selected.shape[0], self.params.logits_chunk_size):
                part = slice(start, start + self.params.logits_chunk_size)
                logits = self._head(selected[part])
                logp = logits.sub_(torch.logsumexp(logits, dim=-1, keepdim=True))  # log-softmax in place
                if k is None:
                    lp_parts.append(logp.gather(1, targets[part, None]).squeeze(1).cpu())
                else:
                    values, indices = logp.topk(k, dim=-1)
                    ids_parts.append(indices.cpu())
                    lp_parts.append(values.cpu())
        lps = torch.cat(lp_parts).tolist()
        ids = torch.cat(ids_parts).tolist() if k is not None else None
        out: list[Any] = []
        offset = 0
        for s, st in zip(seqs, starts, strict=True):
            count = len(s) - st
            rows_lp = lps[offset : offset + count]
            out.append(rows_lp if ids is None else (ids[offset : offset + count], rows_lp))
            offset += count
        return out

    # ----------------------------------------------------------------- protocol: training

    def forward_backward(
        self, batch: Sequence[Datum], loss_fn: LossName, loss_fn_config: Mapping[str, float] | None = None
    ) -> ForwardBackwardResult:
        """Accumulate gradients of ``loss_fn`` summed over ``batch`` (Tinker's definitions).

        ``cross_entropy``: ``-sum(w * log p(target))`` over ``(N,)`` or ``(N, K)`` targets and weights.
        ``importance_sampling``: ``-sum(exp(logp - sampler_logp) * advantage)``.
        ``ppo``: ``-sum(min(r * A, clip(r, clip_low_threshold, clip_high_threshold) * A))`` with
        ``r = exp(logp - sampler_logp)`` (defaults 0.8 and 1.2). As in Tinker, the RL losses take no
        weights: positions with a zero advantage contribute nothing. Gradients add up until
        :meth:`optim_step`. Returns the loss sum and metrics ``loss:sum``, ``tokens``, ``sequences``
        (and ``ratio:mean``, plus ``clip:fraction`` for ppo).
        """
        if loss_fn not in _LOSSES:
            raise EvsysError(f"unknown loss_fn '{loss_fn}'; the local backend supports: {', '.join(_LOSSES)}")
        config = dict(_PPO_DEFAULTS)
        config.update(loss_fn_config or {})
        prepared = [self._prepare(d, i, loss_fn) for i, d in enumerate(batch)]
        prepared = [p for p in prepared if p is not None]
        totals = {"loss": 0.0, "tokens": 0.0, "ratio": 0.0, "clipped": 0.0}
        if prepared:
            self._release_memory()  # what came before (e.g. a teacher pass) is not resident under the student's peak
            self._auto_checkpointing(list(_chunks(prepared, self.params.micro_batch_size)))
            with self._training_mode():
                for chunk in _chunks(prepared, self.params.micro_batch_size):
                    self._forward_backward_batch(chunk, loss_fn, config, totals)
        metrics = {"loss:sum": totals["loss"], "tokens": totals["tokens"], "sequences": float(len(batch))}
        if loss_fn != "cross_entropy" and totals["tokens"]:
            metrics["ratio:mean"] = totals["ratio"] / totals["tokens"]
            if loss_fn == "ppo":
                metrics["clip:fraction"] = totals["clipped"] / totals["tokens"]
        return ForwardBackwardResult(loss_sum=totals["loss"], metrics=metrics)

    def _prepare(self, datum: Datum, index: int, loss_fn: str) -> dict[str, torch.Tensor] | None:
        """Tensors of one datum, trimmed to the positions that carry loss; None when none do."""
        n = len(datum.input_tokens)
        where = f"batch[{index}]"
        if n == 0:
            raise EvsysError(f"{where}: input_tokens is empty")
        targets = torch.as_tensor(datum.target_tokens, dtype=torch.long)
        if targets.shape[0] != n or targets.dim() > 2:
            raise EvsysError(
                f"{where}: target_tokens must have shape (N,) or (N, K) with N={n}, got {tuple(targets.shape)}"
            )
        if targets.dim() == 1:
            targets = targets[:, None]
        if loss_fn == "cross_entropy":
            if datum.weights is None:
                raise EvsysError(f"{where}: loss 'cross_entropy' needs weights")
            weights = torch.as_tensor(datum.weights, dtype=torch.float32)
            if weights.dim() == 1:
                weights = weights[:, None]
            if weights.shape != targets.shape:
                raise EvsysError(
                    f"{where}: weights shape {tuple(weights.shape)} differs from target_tokens {tuple(targets.shape)}"
                )
            keep = (weights != 0).any(dim=1)
            extra = {"weights": weights}
        else:
            if datum.logprobs is None or datum.advantages is None:
                raise EvsysError(f"{where}: loss '{loss_fn}' needs the sampler's logprobs and advantages")
            if targets.shape[1] != 1:
                raise EvsysError(f"{where}: loss '{loss_fn}' needs (N,) target_tokens, got {tuple(targets.shape)}")
            sampler = torch.as_tensor(datum.logprobs, dtype=torch.float32)
            advantages = torch.as_tensor(datum.advantages, dtype=torch.float32)
            if sampler.shape != (n,) or advantages.shape != (n,):
                raise EvsysError(f"{where}: logprobs and advantages must have shape ({n},)")
            keep = advantages != 0
            extra = {"sampler": sampler, "advantages": advantages}
        positions = keep.nonzero().squeeze(1)
        if positions.numel() == 0:
            return None
        last = int(positions[-1]) + 1  # causal: later inputs cannot change these positions
        prepared = {"input": torch.as_tensor(list(datum.input_tokens[:last]), dtype=torch.long), "positions": positions}
        prepared["targets"] = targets[positions]
        prepared.update({key: value[positions] for key, value in extra.items()})
        return prepared

    def _forward_backward_batch(
        self,
        chunk: Sequence[dict[str, torch.Tensor]],
        loss_fn: str,
        config: Mapping[str, float],
        totals: dict[str, float],
    ) -> None:
        hidden = self._hidden(self._right_pad([p["input"].tolist() for p in chunk]))
        self._release_memory()  # the forward's temporaries, before the backward allocates its own
        rows = torch.cat([torch.full((len(p["positions"]),), b, dtype=torch.long) for b, p in enumerate(chunk)])
        cols = torch.cat([p["positions"] for p in chunk])
        selected = hidden[rows.to(self.device), cols.to(self.device)]
        # Cut the graph at the selected hidden states: the output head and log-softmax run in chunks,
        # each freed after its backward, then one backward through the decoder.
        detached = selected.detach().requires_grad_(True)
        merged = {
            key: torch.cat([p[key] for p in chunk]).to(self.device)
            for key in chunk[0]
            if key not in ("input", "positions")
        }
        size = self.params.logits_chunk_size
        for start in range(0, detached.shape[0], size):
            part = slice(start, start + size)
            target_logp = TargetLogprobs.apply(self._head(detached[part]), merged["targets"][part])
            if loss_fn == "cross_entropy":
                loss = -(merged["weights"][part] * target_logp).sum()
            else:
                ratio = torch.exp(target_logp.squeeze(1) - merged["sampler"][part])
                advantages = merged["advantages"][part]
                if loss_fn == "importance_sampling":
                    loss = -(ratio * advantages).sum()
                else:
                    low, high = float(config["clip_low_threshold"]), float(config["clip_high_threshold"])
                    clipped = torch.clamp(ratio, low, high)
                    loss = -torch.minimum(ratio * advantages, clipped * advantages).sum()
                    totals["clipped"] += float(((ratio < low) | (ratio > high)).sum())
                totals["ratio"] += float(ratio.detach().sum())
            loss.backward()
            totals["loss"] += float(loss.detach())
            totals["tokens"] += float(target_logp.shape[0])
        if detached.grad is not None and selected.requires_grad:
            selected.backward(detached.grad)

    @contextlib.contextmanager
    def _training_mode(self) -> Iterator[None]:
        """Eval mode everywhere (no base-model dropout) except LoRA dropout and checkpointed layers."""
        switched = []
        for name, module in self.model.named_modules():
            if (self.params.lora_dropout > 0 and "lora_dropout" in name and isinstance(module, torch.nn.Dropout)) or (
                getattr(module, "gradient_checkpointing", False) is True
            ):
                module.training = True
                switched.append(module)
        try:
            yield
        finally:
            for module in switched:
                module.training = False

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
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise EvsysError(f"checkpoint name must be a plain file name, got '{name}'")
        root = self._checkpoint_root()
        root.mkdir(parents=True, exist_ok=True)
        target = root / name
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            with _quiet_transformers():  # no 'Writing model shards' bar at every checkpoint
                self.model.save_pretrained(str(tmp), safe_serialization=True)
            state = {
                "format": 1,
                "step": self._step,
                "optimizer": self._optimizer.state_dict(),
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    "sampler": self._generator.get_state(),
                },
            }
            torch.save(state, tmp / TRAINING_STATE_FILE)
            tmp.chmod(0o755)
            if target.exists():
                old = root / f".{name}.old-{os.getpid()}"
                target.rename(old)
                tmp.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._saved_any = True
        return str(target)

    def load_checkpoint(self, path: str) -> None:
        """Restore adapter weights, optimizer state and RNG state saved by :meth:`save_checkpoint`.

        A directory with only a peft adapter (no ``training_state.pt``) loads the weights and keeps a
        fresh optimizer.
        """
        directory = Path(path)
        weights = directory / ADAPTER_WEIGHTS_FILE
        if not weights.is_file() or not (directory / ADAPTER_CONFIG_FILE).is_file():
            raise EvsysError(
                f"'{path}' is not a local-backend checkpoint (no {ADAPTER_WEIGHTS_FILE} / {ADAPTER_CONFIG_FILE})"
            )
        saved_config = json.loads((directory / ADAPTER_CONFIG_FILE).read_text())
        if int(saved_config.get("r", self.setup.lora_rank)) != self.setup.lora_rank:
            raise EvsysError(
                f"checkpoint '{path}' has LoRA rank {saved_config.get('r')}, but this run uses lora_rank {self.setup.lora_rank}"
            )
        state_dict = load_file(str(weights), device=str(self.device))
        result = set_peft_model_state_dict(self.model, state_dict)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        missing_lora = [k for k in (getattr(result, "missing_keys", []) or []) if "lora_" in k]
        if unexpected or missing_lora:
            raise EvsysError(
                f"checkpoint '{path}' does not match this model's adapter "
                f"(unexpected: {unexpected[:3]}, missing: {missing_lora[:3]}); were target_modules changed?"
            )
        training_state = directory / TRAINING_STATE_FILE
        if training_state.is_file():
            state = torch.load(training_state, map_location="cpu", weights_only=True)
            self._optimizer.load_state_dict(state["optimizer"])
            self._step = int(state.get("step", 0))
            rng = state.get("rng", {})
            if "torch" in rng:
                torch.set_rng_state(rng["torch"])
            if rng.get("cuda") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            if "sampler" in rng:
                self._generator.set_state(rng["sampler"])
        self._optimizer.zero_grad(set_to_none=True)

    def close(self) -> None:
        """Free the model and optimizer; remove the temporary checkpoint root if nothing was saved there."""
        self._fused = None
        for attr in ("model", "_optimizer", "_trainable"):
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
