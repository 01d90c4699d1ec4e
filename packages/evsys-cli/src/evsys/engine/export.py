"""Export a trained LoRA adapter: as a peft directory, or merged into a plain transformers model directory.

Works on checkpoints that are peft adapter directories (the local backend's
``<run_dir>/checkpoints/<name>/``, a peft adapter plus EvSys's optimizer state); the base model is
found by the backend that trained it (``Backend.resolve_model``), reached through the registry. ``merge_adapter`` loads the base model, folds the adapter into its
weights and saves a directory that ``AutoModelForCausalLM.from_pretrained`` loads with no peft
and no EvSys. torch, transformers and peft are imported only by the merge.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evsys.engine.rundir import read_snapshot
from evsys.schema.errors import EvsysError
from evsys.schema.plugins import default_registry
from evsys.schema.registry import PluginRegistry

ADAPTER_CONFIG = "adapter_config.json"
#: files of a checkpoint that make up a peft adapter directory (EvSys's training_state.pt stays behind)
ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.safetensors", "adapter_model.bin", "README.md")


def prepare_output(output: str | Path, *, overwrite: bool) -> Path:
    """Create ``output``; an existing non-empty directory is refused unless ``overwrite``."""
    target = Path(output)
    if target.exists() and not target.is_dir():
        raise EvsysError(f"{target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise EvsysError(f"{target}: directory is not empty; pass --overwrite to replace it")
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    return target


def adapter_base(checkpoint: Path) -> str:
    """The base model recorded in the adapter's config (``base_model_name_or_path``)."""
    try:
        config = json.loads((checkpoint / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvsysError(f"{checkpoint / ADAPTER_CONFIG}: cannot read the adapter config: {exc}") from None
    base = config.get("base_model_name_or_path")
    if not base:
        raise EvsysError(f"{checkpoint / ADAPTER_CONFIG}: no base_model_name_or_path; pass --base MODEL")
    return str(base)


def export_adapter(checkpoint: Path, output: str | Path, *, base: str | None = None, overwrite: bool = False) -> Path:
    """Copy the peft adapter files of ``checkpoint`` to ``output``; ``base`` rewrites ``base_model_name_or_path``."""
    target = prepare_output(output, overwrite=overwrite)
    for name in ADAPTER_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, target / name)
    if base is not None:
        config = json.loads((target / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = base
        (target / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return target


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars or deprecation chatter from transformers while loading and saving."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def trained_by(checkpoint: Path) -> str | None:
    """The backend kind of the run that wrote ``checkpoint`` (``<run_dir>/checkpoints/<name>``), from the
    run's ``resolved_config.json``; None for a checkpoint outside a run directory."""
    snapshot = read_snapshot(checkpoint.parent.parent) or {}
    kind = dict(dict(snapshot.get("config", {})).get("backend", {})).get("kind")
    return str(kind) if kind else None


def base_model_dir(base_name: str, checkpoint: Path, registry: PluginRegistry | None = None) -> str:
    """Where the base model is: resolved by the backend that trained the checkpoint (``Backend.resolve_model``:
    the local backend finds aliases, hub cache entries and the bundled model), else ``base_name`` as given."""
    kind = trained_by(checkpoint)
    if kind is None:
        return base_name
    backend_class = (registry or default_registry()).get("backend", kind).load()
    return str(backend_class.resolve_model(base_name, None))


def merge_adapter(
    checkpoint: Path, output: str | Path, *, base: str | None = None, overwrite: bool = False, registry: PluginRegistry | None = None
) -> Path:
    """Fold the adapter into the base model's weights and save a standard transformers model directory (plus tokenizer)."""
    base_name = base or adapter_base(checkpoint)
    base_dir = base_model_dir(base_name, checkpoint, registry)
    target = prepare_output(output, overwrite=overwrite)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        try:
            model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto")
        except Exception as exc:  # the user's base model, one line
            raise EvsysError(f"cannot load the base model '{base_name}' ({base_dir}): {exc}") from None
        try:
            merged = PeftModel.from_pretrained(model, str(checkpoint)).merge_and_unload()
        except Exception as exc:
            raise EvsysError(f"cannot apply the adapter {checkpoint} to '{base_name}': {exc}") from None
        merged.save_pretrained(target, safe_serialization=True)
        AutoTokenizer.from_pretrained(base_dir).save_pretrained(target)
    return target
