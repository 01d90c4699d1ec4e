"""Saving and loading the local backend's training state: the peft adapter, the optimizer, the RNG states."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from evsys.backends.local.loading import quiet_transformers
from evsys.schema.errors import EvsysError

TRAINING_STATE_FILE = "training_state.pt"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"


def save_checkpoint(
    root: Path, name: str, model: PeftModel, optimizer: torch.optim.Optimizer, generator: torch.Generator, step: int
) -> Path:
    """Write the adapter (a plain peft directory) plus ``training_state.pt`` (step, optimizer, RNG states) to
    ``root/name``, under a temporary name first, then renamed, so a crash never leaves a half checkpoint."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise EvsysError(f"checkpoint name must be a plain file name, got '{name}'")
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        with quiet_transformers():  # no 'Writing model shards' bar at every checkpoint
            model.save_pretrained(str(tmp), safe_serialization=True)
        state = {
            "format": 1,
            "step": step,
            "optimizer": optimizer.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "sampler": generator.get_state(),
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
    return target


def load_checkpoint(
    path: str,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    lora_rank: int,
    device: torch.device,
) -> int | None:
    """Restore what :func:`save_checkpoint` wrote; returns the saved step (None for a bare peft adapter
    directory, whose weights load while the optimizer stays fresh)."""
    directory = Path(path)
    weights = directory / ADAPTER_WEIGHTS_FILE
    if not weights.is_file() or not (directory / ADAPTER_CONFIG_FILE).is_file():
        raise EvsysError(f"'{path}' is not a local-backend checkpoint (no {ADAPTER_WEIGHTS_FILE} / {ADAPTER_CONFIG_FILE})")
    saved_config = json.loads((directory / ADAPTER_CONFIG_FILE).read_text())
    if int(saved_config.get("r", lora_rank)) != lora_rank:
        raise EvsysError(
            f"checkpoint '{path}' has LoRA rank {saved_config.get('r')}, but this run uses lora_rank {lora_rank}"
        )
    result = set_peft_model_state_dict(model, load_file(str(weights), device=str(device)))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing_lora = [k for k in (getattr(result, "missing_keys", []) or []) if "lora_" in k]
    if unexpected or missing_lora:
        raise EvsysError(
            f"checkpoint '{path}' does not match this model's adapter "
            f"(unexpected: {unexpected[:3]}, missing: {missing_lora[:3]}); were target_modules changed?"
        )
    step = None
    training_state = directory / TRAINING_STATE_FILE
    if training_state.is_file():
        state = torch.load(training_state, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        step = int(state.get("step", 0))
        rng = state.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if "sampler" in rng:
            generator.set_state(rng["sampler"])
    optimizer.zero_grad(set_to_none=True)
    return step
