"""Loading the local backend's model: device, dtype, tokenizer, the peft LoRA wrap and activation checkpointing.

:func:`load_policy` returns a :class:`Policy`, the loaded model with the few views of it the other parts
share (decoder layers, hidden states, the output head as float32 logits).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from evsys.backends.local.memory import release_freed_memory
from evsys.backends.local.params import LocalBackendParams
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import BackendSetup


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


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars or info chatter from transformers while loading or saving."""
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


def decoder_layers(causal_lm: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's stack of decoder layers, found without knowing its attribute name (``layers``, ``h``, ...).

    The first ``ModuleList`` whose entries are of a class the model lists in ``_no_split_modules`` (the
    classes transformers keeps whole on one device: its decoder layers), or else whose entries are
    transformers' ``GradientCheckpointingLayer``; empty when there is none.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    names = set(getattr(causal_lm, "_no_split_modules", None) or ())
    fallback: list[torch.nn.Module] = []
    for module in causal_lm.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            if type(module[0]).__name__ in names:
                return list(module)
            if not fallback and isinstance(module[0], GradientCheckpointingLayer):
                fallback = list(module)
    return fallback


@dataclass
class Policy:
    """The loaded, LoRA-wrapped model and its tokenizer, with the views the backend's parts share."""

    model: PeftModel
    tokenizer: Any
    device: torch.device
    pad_token_id: int
    #: every token id that ends a rollout (the tokenizer's and the model's EOS ids)
    eos_token_ids: frozenset[int]

    @property
    def causal_lm(self) -> PreTrainedModel:
        """The wrapped ``*ForCausalLM`` (its linear layers carry the LoRA adapters)."""
        return self.model.get_base_model()

    @property
    def decoder(self) -> torch.nn.Module:
        """The model without its output head (returns hidden states)."""
        return self.causal_lm.get_decoder()

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits for ``hidden`` ``[P, H]``: the output head plus any logit scaling the model applies."""
        logits = self.causal_lm.get_output_embeddings()(hidden).float()
        config = self.causal_lm.config
        scale = getattr(config, "logit_scale", None)
        if isinstance(scale, (int, float)) and scale != 1:
            logits = logits * scale
        softcap = getattr(config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``[B, L, H]`` of right-padded ``input_ids`` (causal attention; pads only follow)."""
        return self.decoder(input_ids=input_ids, use_cache=False).last_hidden_state

    def right_pad(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """``rows`` as one ``[B, max_len]`` id tensor on the device, padded on the right."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        return ids.to(self.device)

    def release_memory(self) -> None:
        """Between phases on CPU: hand the heap pages the last phase freed back to the OS (~1 ms)."""
        if self.device.type == "cpu":
            release_freed_memory()

    @contextlib.contextmanager
    def training_mode(self, lora_dropout: float) -> Iterator[None]:
        """Eval mode everywhere (no base-model dropout) except LoRA dropout and checkpointed layers."""
        switched = []
        for name, module in self.model.named_modules():
            if (lora_dropout > 0 and "lora_dropout" in name and isinstance(module, torch.nn.Dropout)) or (
                getattr(module, "gradient_checkpointing", False) is True
            ):
                module.training = True
                switched.append(module)
        try:
            yield
        finally:
            for module in switched:
                module.training = False


def _eos_ids(tokenizer: Any, model: PreTrainedModel) -> frozenset[int]:
    eos = {tokenizer.eos_token_id, model.config.eos_token_id, getattr(model.generation_config, "eos_token_id", None)}
    flat: set[int] = set()
    for item in eos:
        if isinstance(item, int):
            flat.add(item)
        elif isinstance(item, (list, tuple)):
            flat.update(int(x) for x in item)
    return frozenset(flat)


def load_policy(
    setup: BackendSetup, params: LocalBackendParams, model_dir: Any, device: torch.device, dtype: torch.dtype
) -> Policy:
    """Tokenizer and model from ``model_dir``, on ``device`` in ``dtype``, wrapped with a fresh LoRA adapter
    (rank ``setup.lora_rank``), with ``params.gradient_checkpointing`` applied; in eval mode."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except Exception as exc:  # a broken model directory is the user's, one line
        raise EvsysError(f"cannot load the tokenizer of '{setup.model_name}' ({model_dir}): {exc}") from None
    torch.manual_seed(setup.seed)
    load_kwargs: dict[str, Any] = {"dtype": dtype}
    if params.attn_implementation != "auto":
        load_kwargs["attn_implementation"] = params.attn_implementation
    try:
        with quiet_transformers():
            base = AutoModelForCausalLM.from_pretrained(model_dir, **load_kwargs)
    except Exception as exc:
        raise EvsysError(f"cannot load model '{setup.model_name}' ({model_dir}): {exc}") from None
    base.to(device)
    base.config.use_cache = True
    target: list[str] | str = params.target_modules
    lora_config = LoraConfig(
        r=setup.lora_rank,
        lora_alpha=setup.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=target,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        with quiet_transformers():
            model: PeftModel = get_peft_model(base, lora_config)
    except ValueError as exc:
        raise EvsysError(
            f"cannot put LoRA adapters on '{setup.model_name}' with target_modules={target!r}: {exc}; "
            "set backend.params.target_modules to this architecture's module names, or to 'all-linear'"
        ) from None
    if params.gradient_checkpointing and params.gradient_checkpointing != "auto":  # auto: the backend resolves it
        enable_checkpointing(model.get_base_model(), params.gradient_checkpointing, setup.model_name)
    model.eval()
    eos = _eos_ids(tokenizer, base)
    pad = tokenizer.pad_token_id
    return Policy(
        model=model,
        tokenizer=tokenizer,
        device=device,
        pad_token_id=pad if pad is not None else (min(eos) if eos else 0),
        eos_token_ids=eos,
    )


def enable_checkpointing(causal_lm: PreTrainedModel, layers: bool | int, model_name: str) -> None:
    """transformers' non-reentrant checkpointing on every decoder layer, or (an int N) on the first N."""
    stack = decoder_layers(causal_lm)
    if layers is not True and layers > len(stack):
        raise EvsysError(
            f"backend.params.gradient_checkpointing {layers} exceeds the {len(stack)} decoder layers of '{model_name}'"
        )
    kwargs = {"use_reentrant": False}
    with quiet_transformers():
        if hasattr(causal_lm, "activation_checkpointing_enable"):  # transformers >= 5.2x
            causal_lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if layers is True:
        return
    if not all(hasattr(layer, "gradient_checkpointing") for layer in stack):
        raise EvsysError(
            f"backend.params.gradient_checkpointing {layers}: '{model_name}' checkpoints all its layers "
            "or none (its layers are not transformers' GradientCheckpointingLayer); use true"
        )
    for layer in stack[layers:]:
        layer.gradient_checkpointing = False


def chunks(items: Sequence[Any], size: int | None) -> Iterator[Sequence[Any]]:
    """``items`` in consecutive pieces of ``size`` (``params.micro_batch_size``; None: all at once)."""
    step = size or max(len(items), 1)
    for start in range(0, len(items), step):
        yield items[start : start + step]
