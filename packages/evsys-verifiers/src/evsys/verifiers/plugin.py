"""The evsys-verifiers plugin: registers the built-in verifier kinds, functions and metrics.

Targets are lazy ``"module:attr"`` strings; importing this module imports nothing heavy.
"""

from __future__ import annotations

from evsys.schema.plugins import hookimpl
from evsys.schema.registry import Registrar

KINDS: dict[str, tuple[str, str]] = {
    "in_process": ("evsys.verifiers.kinds:build_in_process", "A registered function named by fn_name."),
    "python": ("evsys.verifiers.kinds:build_python", "A function at fn_name = 'module:function'."),
    "subprocess": ("evsys.verifiers.kinds:build_subprocess", "A checker program run in a limited child process."),
}
FUNCTIONS: dict[str, str] = {
    "contains": "An expected string occurs in the output (ignore_case, whole_word).",
    "exact_match": "The output equals an expected answer (ignore_case, ignore_punctuation, regexes_to_ignore).",
    "normalized_match": "Equal after SQuAD normalization.",
    "token_f1": "SQuAD token F1.",
    "regex_match": "An expected regular expression matches (full, ignore_case).",
    "numeric_match": "Equal numbers within rel_tol / abs_tol.",
    "multiple_choice": "The chosen option label is the expected one.",
    "json_match": "Equal JSON (subset).",
    "format_check": "The output has the required shape (pattern, preset, lengths).",
    "python_tests": "The program passes its tests (human-eval style, subprocess runner).",
    "math_equiv": "Math-Verify equivalence (extra: evsys-verifiers[math]).",
}
METRICS: dict[str, tuple[str, str]] = {
    "pass@k": ("evsys.verifiers.metrics:pass_at_k_metric", "Unbiased pass@k over the tasks with n >= k samples."),
    "mean@k": ("evsys.verifiers.metrics:mean_at_k", "Mean score of the first k samples."),
    "maj@k": ("evsys.verifiers.metrics:maj_at_k", "Majority vote over the first k samples' answers."),
    "pass^k": ("evsys.verifiers.metrics:pass_hat_k_metric", "Chance that k samples all pass (tau-bench pass^k)."),
    "accuracy": ("evsys.verifiers.metrics:accuracy", "Fraction of samples that pass (with accuracy_stderr)."),
}


@hookimpl
def evsys_register(register: Registrar) -> None:
    """Register the kinds ``in_process``, ``python``, ``subprocess``, every built-in function and the metrics
    ``pass@k``, ``mean@k``, ``maj@k``, ``pass^k`` and ``accuracy``."""
    for name, (target, description) in KINDS.items():
        register.verifier(name, target, description=description)
    for name, description in FUNCTIONS.items():
        register.verifier_function(name, f"evsys.verifiers.functions:{name}", description=description)
    for name, (target, description) in METRICS.items():
        register.metric(name, target, description=description)
