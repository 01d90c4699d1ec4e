"""``tensorboard``: TensorBoard event files under the run directory (``evsys-logging[tensorboard]``).

Written with the ``tensorboard`` package's own event writer (no TensorFlow, no torch): every metric
is a scalar at its step (``train/...`` and ``<split>/<benchmark>/...`` tags, as in
``metrics.jsonl``), the resolved config is the text ``config`` and the final summary the text
``summary``. Each start writes a new event file that tells TensorBoard to drop the steps an earlier
file logged from this start's first step on (a resumed attempt's redone steps, an overwritten run's).
View with ``tensorboard --logdir <output_dir>``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from evsys.logging.params import TensorBoardParams
from evsys.logging.tracker import RunSummary, TrackerCallback
from evsys.schema.protocols import RunContext

#: the event files' folder inside the run directory when ``log_dir`` is not set
DEFAULT_SUBDIR = "tensorboard"


def _markdown_json(title: str, value: Any) -> str:
    return f"**{title}**\n\n```json\n{json.dumps(value, indent=2, ensure_ascii=False)}\n```"


class TensorBoardTracker(TrackerCallback):
    """Writes scalars, the config and the summary as TensorBoard events."""

    name = "tensorboard"

    def __init__(self, params: TensorBoardParams | None = None, **kwargs: Any) -> None:
        super().__init__(params or TensorBoardParams(), **kwargs)
        self.params: TensorBoardParams
        self.log_dir: Path | None = None
        self._writer: Any = None

    def start(self, context: RunContext, config: dict[str, Any]) -> None:
        """Open an event file in ``log_dir`` and write the config as text at the first step."""
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.log_dir = Path(self.params.log_dir) if self.params.log_dir else context.run_dir / DEFAULT_SUBDIR
        self._writer = EventFileWriter(str(self.log_dir), flush_secs=self.params.flush_secs)
        # TensorBoard discards the events of earlier files at steps >= a START session log's step: a
        # resumed run hides what the interrupted attempt logged after its checkpoint, and a run started
        # again with --overwrite hides the earlier run's steps
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=context.resumed_from_step + 1, session_log=start))
        self._text("config", _markdown_json("Resolved config", config), context.resumed_from_step)
        self._writer.flush()

    def _text(self, tag: str, text: str, step: int) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.text.summary_v2 import text_pb

        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=text_pb(tag, text)))

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """One event holding every metric of the row as a scalar at ``step``."""
        if not metrics:
            return
        from tensorboard.compat.proto import event_pb2, summary_pb2

        values = [summary_pb2.Summary.Value(tag=key, simple_value=value) for key, value in metrics.items()]
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=values)))

    def finish(self, summary: RunSummary) -> None:
        """Write the summary as text at the last step, then flush and close the event file."""
        if self._writer is None:
            return
        try:
            self._text("summary", _markdown_json(f"Run {summary.status}", summary.as_dict()), summary.last_step)
        finally:
            self._writer.close()
            self._writer = None
