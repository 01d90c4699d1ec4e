"""evsys.logging: run callbacks.

- ``local_logger`` (:class:`evsys.logging.local.LocalLogger`): ``metrics.jsonl``, ``predictions/<benchmark>.jsonl``
  and ``summary.md`` in the run directory, each row flushed as it is written;
- ``console`` (:class:`evsys.logging.console.ConsoleProgress`): a progress line per step on stderr.
"""
