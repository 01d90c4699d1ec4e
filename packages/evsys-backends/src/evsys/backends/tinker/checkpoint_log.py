"""``<run_dir>/tinker_checkpoints.jsonl``: every tinker:// checkpoint path a run saved or resumed from.

One JSON object a line (``time``, ``event`` ``save`` or ``load``, ``path``, ``model``, and for a save
its ``name`` and ``lora_rank``); a resume by name looks the name up here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger("evsys.backends.tinker")

CHECKPOINTS_FILE = "tinker_checkpoints.jsonl"


def record_checkpoint(run_dir: Path | None, row: Mapping[str, Any]) -> None:
    """Append ``row`` with the time to the run directory's file (logged instead when there is no run directory)."""
    if run_dir is None:
        logger.info("Tinker checkpoint %s (no run directory to record it in)", row.get("path"))
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    line = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **row}
    with (run_dir / CHECKPOINTS_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def checkpoint_rows(run_dir: Path | None) -> list[dict[str, Any]]:
    """The rows recorded in the run directory's file, oldest first ([] when there are none)."""
    if run_dir is None or not (run_dir / CHECKPOINTS_FILE).is_file():
        return []
    rows = []
    for line in (run_dir / CHECKPOINTS_FILE).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows
