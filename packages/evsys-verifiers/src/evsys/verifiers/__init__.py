"""evsys.verifiers: verifier functions and kinds, benchmark tasks, pass@k metrics and scoring.

Installs standalone (``pip install evsys-verifiers``: no torch, no transformers). The public API,
imported lazily so ``import evsys.verifiers`` stays cheap::

    from evsys.verifiers import load_tasks, verify, score_tasks, compute_metric, pass_at_k

    tasks = load_tasks("tasks.jsonl")
    print(verify("Berlin.", tasks[0]))                       # Verification(score=1.0, passed=True, ...)
    result = score_tasks(tasks, [["Berlin", "Paris"]], ["pass@1", "pass@2"])
    print(result.metrics)                                    # {'pass@1': 0.5, 'pass@2': 1.0}
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BenchmarkScore",
    "Verification",
    "check_tasks_file",
    "compute_metric",
    "functions",
    "load_benchmark_dir",
    "load_tasks",
    "pass_at_k",
    "score_benchmark",
    "score_tasks",
    "task_messages",
    "task_prompt",
    "verify",
]

_EXPORTS = {
    "BenchmarkScore": "evsys.verifiers.scoring",
    "Verification": "evsys.verifiers.scoring",
    "score_tasks": "evsys.verifiers.scoring",
    "score_benchmark": "evsys.verifiers.scoring",
    "verify": "evsys.verifiers.scoring",
    "check_tasks_file": "evsys.verifiers.tasks",
    "load_benchmark_dir": "evsys.verifiers.tasks",
    "load_tasks": "evsys.verifiers.tasks",
    "task_messages": "evsys.verifiers.tasks",
    "task_prompt": "evsys.verifiers.tasks",
    "compute_metric": "evsys.verifiers.metrics",
    "pass_at_k": "evsys.verifiers.metrics",
}


def __getattr__(name: str) -> Any:
    if name == "functions":
        return importlib.import_module("evsys.verifiers.functions")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evsys.verifiers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
