"""The resume point of a run: ``<run_dir>/checkpoints/latest``.

After the backend has written a checkpoint completely (the local backend writes a temporary
directory and renames it), the loop writes ``latest`` — a small JSON file — to a temporary name
and ``os.replace``-s it into place. So ``latest`` always names a complete checkpoint; a crash
while saving leaves the previous ``latest`` (and its checkpoint) untouched.

``latest`` holds what the backend checkpoint does not: the step, the path the backend returned
(a directory, or e.g. a ``tinker://`` URI), the final metrics so far, the algorithm's and the
callbacks' state (``local_logger``: how many bytes of each file the checkpoint covers), Python's
``random`` state, and the data order's inputs (the order itself is a pure function of the seed
and the step, so it is recomputed, not stored).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evsys.logging.jsonl_writer import write_text_atomic
from evsys.schema.errors import ConfigError, Location, Problem

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
FINAL_NAME = "final"
STATE_FORMAT = 1


def step_name(step: int) -> str:
    """``step_000010``: the name of the checkpoint after ``step`` steps."""
    return f"step_{step:06d}"


@dataclass
class ResumePoint:
    """Everything ``latest`` records about one complete checkpoint."""

    step: int
    name: str
    checkpoint: str
    completed: bool = False
    final_metrics: dict[str, float | None] = field(default_factory=dict)
    algorithm: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, int] = field(default_factory=dict)
    python_random: Any = None
    format: int = STATE_FORMAT


def latest_path(run_dir: Path) -> Path:
    """``<run_dir>/checkpoints/latest``."""
    return run_dir / CHECKPOINTS_DIR / LATEST_FILE


def python_random_state() -> list[Any]:
    """Python's global ``random`` state as JSON."""
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def restore_python_random(state: Any) -> None:
    """Undo :func:`python_random_state` (ignores a missing or malformed state)."""
    if isinstance(state, list) and len(state) == 3 and isinstance(state[1], list):
        random.setstate((state[0], tuple(state[1]), state[2]))


def write_latest(run_dir: Path, point: ResumePoint) -> None:
    """Point ``latest`` at ``point`` (atomically: a temporary file, fsync, ``os.replace``)."""
    try:
        text = json.dumps(asdict(point), allow_nan=True, indent=1)
    except (TypeError, ValueError) as exc:
        raise ConfigError(Problem(f"cannot record the resume point: the algorithm's or a callback's state is not JSON ({exc})")) from None
    write_text_atomic(latest_path(run_dir), text + "\n")


def read_latest(run_dir: Path) -> ResumePoint | None:
    """The resume point of ``run_dir``, or None when no checkpoint was completed."""
    path = latest_path(run_dir)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        point = ResumePoint(**{k: v for k, v in raw.items() if k in ResumePoint.__dataclass_fields__})
        point.step = int(point.step)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(Problem(f"the resume point is unreadable ({exc}); use --overwrite to start again", Location(str(path)))) from None
    if point.format != STATE_FORMAT:
        raise ConfigError(Problem(f"resume point format {point.format} is not supported (expected {STATE_FORMAT})", Location(str(path))))
    if "://" not in point.checkpoint and not Path(point.checkpoint).exists():
        raise ConfigError(
            Problem(f"the checkpoint it names is missing: {point.checkpoint}; use --overwrite to start again", Location(str(path)))
        )
    return point


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete half-written checkpoints (``checkpoints/.<name>.tmp-*``) a crash or kill left behind."""
    root = run_dir / CHECKPOINTS_DIR
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        if entry.name.startswith(".") and (".tmp-" in entry.name or ".old-" in entry.name):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
