"""Finding a checkpoint from what a user types: a run directory, a checkpoint directory, or a backend URI."""

from __future__ import annotations

import re
from pathlib import Path

from evsys.schema.errors import EvsysError

CHECKPOINTS_DIR = "checkpoints"
FINAL = "final"
_STEP = re.compile(r"^step_0*(\d+)$")


def is_checkpoint_dir(path: Path) -> bool:
    """A local-backend checkpoint: a peft adapter directory (``adapter_config.json``)."""
    return (path / "adapter_config.json").is_file()


def step_of(name: str) -> int | None:
    """``step_000010`` -> 10; None for any other name (e.g. ``final``)."""
    match = _STEP.match(name)
    return int(match.group(1)) if match else None


def find_checkpoint(path: str | Path, name: str | None = None) -> Path:
    """The checkpoint directory that ``path`` means.

    ``path`` is a checkpoint directory itself, or a run directory: then ``checkpoints/<name>``, by
    default ``checkpoints/final``, else the latest ``checkpoints/step_N``.
    """
    given = Path(path)
    if not given.exists():
        raise EvsysError(f"{given}: no such checkpoint or run directory")
    if name is None and is_checkpoint_dir(given):
        return given
    root = given / CHECKPOINTS_DIR
    if name is not None:
        candidate = root / name if root.is_dir() else given / name
        if not is_checkpoint_dir(candidate):
            available = ", ".join(sorted(p.name for p in root.iterdir() if is_checkpoint_dir(p))) if root.is_dir() else "none"
            raise EvsysError(f"{candidate}: not a checkpoint (checkpoints in {given}: {available or 'none'})")
        return candidate
    if root.is_dir():
        if is_checkpoint_dir(root / FINAL):
            return root / FINAL
        steps = sorted((s, p) for p in root.iterdir() if is_checkpoint_dir(p) and (s := step_of(p.name)) is not None)
        if steps:
            return steps[-1][1]
    raise EvsysError(
        f"{given}: neither a checkpoint directory (adapter_config.json) nor a run directory with {CHECKPOINTS_DIR}/"
    )
