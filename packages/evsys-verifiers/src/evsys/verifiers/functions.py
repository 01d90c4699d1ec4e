"""The built-in verifier functions: ``(output, expected, **options) -> score in [0, 1]``.

Common rules (after lm-evaluation-harness, SQuAD, human-eval and Math-Verify):

- the output (and each expected answer) is put in Unicode NFKC form and stripped first;
- ``expected`` may be a list: the output passes if it matches any of them (the best score wins);
- ``extract`` (an option of every function) first pulls the answer out of the output: ``boxed``,
  ``answer_tag``, ``answer_line``, ``after_think``, ``gsm8k``, ``last_number``, ``code`` or ``none``
  (see :mod:`evsys.verifiers.extract`); an extractor that finds nothing scores 0;
- an unknown option is a ``TypeError`` and a malformed ``expected`` a ``ValueError``: the sample
  scores 0 and the error is recorded, scoring goes on.

This module is their registry (the plugin's targets are ``evsys.verifiers.functions:<name>``); they
are written in :mod:`evsys.verifiers.answer_match` (strings, numbers, choices) and
:mod:`evsys.verifiers.output_checks` (JSON, shape, programs, math).
"""

from __future__ import annotations

from evsys.verifiers.answer_match import (
    contains,
    exact_match,
    multiple_choice,
    normalized_match,
    numeric_match,
    regex_match,
    squad_normalize,
    token_f1,
)
from evsys.verifiers.output_checks import format_check, json_match, math_equiv, python_tests

__all__ = [
    "BUILTIN_FUNCTIONS",
    "contains",
    "exact_match",
    "format_check",
    "json_match",
    "math_equiv",
    "multiple_choice",
    "normalized_match",
    "numeric_match",
    "python_tests",
    "regex_match",
    "squad_normalize",
    "token_f1",
]

BUILTIN_FUNCTIONS: tuple[str, ...] = (
    "contains",
    "exact_match",
    "normalized_match",
    "token_f1",
    "regex_match",
    "numeric_match",
    "multiple_choice",
    "json_match",
    "format_check",
    "python_tests",
    "math_equiv",
)
