"""``my_algo``: the fixture's algorithm class, the target its plugin registers.

The tests check registration, schema and validation of a third-party algorithm; this class is
what ``evsys run`` would build. Importing it imports no torch (the backend does the tensor work).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class MyAlgo:
    """Samples ``beam_width`` completions per prompt and reports their mean length in tokens."""

    def __init__(self, params: Any, backend: Any, context: Any) -> None:
        self.params = params
        self.backend = backend
        self.context = context

    def train_step(self, batch: Sequence[Any], step: int) -> dict[str, float]:
        """One step: sample every prompt of ``batch``; no update (a fixture)."""
        lengths = [
            len(tokens)
            for example in batch
            for tokens in self.backend.sample(
                [self.params.prompt_template.format(**example.inputs)], self.params.beam_width, self.params.temperature
            )
        ]
        return {"train/mean_completion_tokens": sum(lengths) / max(len(lengths), 1)}
