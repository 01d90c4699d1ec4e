"""The built-in verifier functions: ``(output, expected, **options) -> score in [0, 1]``.

Common rules (after lm-evaluation-harness, SQuAD, human-eval and Math-Verify):

- the output (and each expected answer) is put in Unicode NFKC form and stripped first;
- ``expected`` may be a list: the output passes if it matches any of them (the best score wins);
- ``extract`` (an option of every function) first pulls the answer out of the output: ``boxed``,
  ``answer_tag``, ``answer_line``, ``after_think``, ``gsm8k``, ``last_number``, ``code`` or ``none``
  (see :mod:`evsys.verifiers.extract`); an extractor that finds nothing scores 0;
- an unknown option is a ``TypeError`` and a malformed ``expected`` a ``ValueError``: the sample
  scores 0 and the error is recorded, scoring goes on.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

from evsys.verifiers.extract import extract as _extract
from evsys.verifiers.extract import find_numbers, parse_number, prepare

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


def _items(expected: Any) -> Sequence[Any]:
    if isinstance(expected, (list, tuple)):
        return expected
    if expected is None:
        raise ValueError("no expected answer: set verifier.expected (or the task's target / answer)")
    return (expected,)


def _text(output: Any, how: str | None) -> str | None:
    text = prepare(output)
    if how is None or how == "none":
        return text
    got = _extract(text, how)
    return None if got is None else prepare(got)


# ---------------------------------------------------------------- string matching


def contains(
    output: str, expected: Any, *, ignore_case: bool = False, whole_word: bool = False, extract: str | None = None
) -> float:
    """1.0 when an expected string occurs in the output (``whole_word``: not inside a longer word).

    An empty expected string never matches.
    """
    text = _text(output, extract)
    if text is None:
        return 0.0
    if ignore_case:
        text = text.casefold()
    for item in _items(expected):
        needle = prepare(item)
        if not needle:
            continue
        if ignore_case:
            needle = needle.casefold()
        if whole_word:
            if re.search(r"(?<!\w)" + re.escape(needle) + r"(?!\w)", text):
                return 1.0
        elif needle in text:
            return 1.0
    return 0.0


_ASCII_PUNCT = str.maketrans("", "", string.punctuation)


def _strip_punctuation(text: str) -> str:
    text = text.translate(_ASCII_PUNCT)
    if text.isascii():
        return text
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))


def _em_normalize(text: str, ignore_case: bool, ignore_punctuation: bool, regexes: Sequence[str]) -> str:
    for pattern in regexes:
        text = re.sub(pattern, "", text)
    if ignore_case:
        text = text.casefold()
    if ignore_punctuation:
        text = _strip_punctuation(text)
    return text.strip()


def exact_match(
    output: str,
    expected: Any,
    *,
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
    regexes_to_ignore: Sequence[str] | str | None = None,
    extract: str | None = None,
) -> float:
    """1.0 when the output equals an expected answer (lm-evaluation-harness ``exact_match``).

    ``regexes_to_ignore`` are removed first, then case (``ignore_case``) and punctuation
    (``ignore_punctuation``, ASCII and Unicode) are dropped, from both sides.
    """
    text = _text(output, extract)
    if text is None:
        return 0.0
    if not (ignore_case or ignore_punctuation or regexes_to_ignore):
        for item in _items(expected):
            if prepare(item) == text:
                return 1.0
        return 0.0
    regexes = [regexes_to_ignore] if isinstance(regexes_to_ignore, str) else list(regexes_to_ignore or ())
    text = _em_normalize(text, ignore_case, ignore_punctuation, regexes)
    for item in _items(expected):
        if _em_normalize(prepare(item), ignore_case, ignore_punctuation, regexes) == text:
            return 1.0
    return 0.0


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SQUAD_PUNCT = set(string.punctuation)


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _SQUAD_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalized_match(output: str, expected: Any, *, extract: str | None = None) -> float:
    """1.0 when the output equals an expected answer after SQuAD normalization."""
    text = _text(output, extract)
    if text is None:
        return 0.0
    norm = squad_normalize(text)
    return 1.0 if any(squad_normalize(prepare(item)) == norm for item in _items(expected)) else 0.0


def _f1(prediction: str, truth: str) -> float:
    pred_tokens = squad_normalize(prediction).split()
    true_tokens = squad_normalize(truth).split()
    if not pred_tokens or not true_tokens:
        return float(pred_tokens == true_tokens)
    common = Counter(pred_tokens) & Counter(true_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(true_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(output: str, expected: Any, *, extract: str | None = None) -> float:
    """SQuAD token-level F1 between the output and the best expected answer."""
    text = _text(output, extract)
    if text is None:
        return 0.0
    return max((_f1(text, prepare(item)) for item in _items(expected)), default=0.0)


def regex_match(
    output: str,
    expected: Any,
    *,
    ignore_case: bool = False,
    full: bool = False,
    multiline: bool = False,
    dotall: bool = False,
    extract: str | None = None,
) -> float:
    """1.0 when an expected regular expression is found in the output (``full``: matches all of it)."""
    text = _text(output, extract)
    if text is None:
        return 0.0
    flags = (re.IGNORECASE if ignore_case else 0) | (re.MULTILINE if multiline else 0) | (re.DOTALL if dotall else 0)
    for item in _items(expected):
        pattern = re.compile(str(item), flags)
        if (pattern.fullmatch(text) if full else pattern.search(text)) is not None:
            return 1.0
    return 0.0


# ---------------------------------------------------------------- numbers


def numeric_match(
    output: str,
    expected: Any,
    *,
    rel_tol: float | None = None,
    abs_tol: float = 0.0,
    last_number: bool = True,
    extract: str | None = None,
) -> float:
    """1.0 when the output's number equals an expected number.

    Two integers (``42``, ``4.0``, ``1e11``) must be equal exactly; other numbers may differ by
    ``rel_tol`` (default 1e-9) or ``abs_tol``. A ``rel_tol`` or ``abs_tol`` set by the task applies to
    integers too. Numbers may be written ``1,000``, ``3.0``, ``1e-3``, ``3/4``, ``\\frac{3}{4}`` or
    ``$5``; a trailing ``%`` is dropped and never converted (``50%`` matches 50, not 0.5). When the
    whole output is not a number, its last number is used (``last_number=False`` turns that off).
    """
    wants = []
    for item in _items(expected):
        want = parse_number(item)
        if want is None:
            raise ValueError(f"expected answer {item!r} is not a number")
        wants.append(want)
    text = _text(output, extract)
    if text is None:
        return 0.0
    value = parse_number(text)
    if value is None and last_number:
        numbers = find_numbers(text.replace("$", " "))
        value = parse_number(numbers[-1]) if numbers else None
    if value is None:
        return 0.0
    tolerant_integers = rel_tol is not None or abs_tol > 0
    for want in wants:
        if want == value:
            return 1.0
        if want.denominator == 1 and value.denominator == 1 and not tolerant_integers:
            continue  # integers compare exactly
        try:
            if math.isclose(float(value), float(want), rel_tol=1e-9 if rel_tol is None else rel_tol, abs_tol=abs_tol):
                return 1.0
        except OverflowError:
            continue
    return 0.0


# ---------------------------------------------------------------- multiple choice

_LABELS = string.ascii_uppercase
_ANSWER_LETTER = re.compile(r"(?i:answer)\s*(?i:is)?\s*[:：]?\s*(?i:option\s*)?[(\[]?([A-Z])[)\]]?(?![A-Za-z])")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_LINE_LETTER = re.compile(r"(?m)^\s*\**([A-Z])[.):]")
_CORE_STRIP = " \t\n()[]{}.:*_'\""


def _label_of_expected(expected: Any, labels: str, choices: Sequence[Any] | None) -> str:
    if isinstance(expected, bool):
        raise ValueError(f"expected choice {expected!r} is not a label, an index or a choice")
    if isinstance(expected, int):
        if 0 <= expected < len(labels):
            return labels[expected]
        raise ValueError(f"expected choice index {expected} is out of range")
    text = prepare(expected)
    core = text.strip(_CORE_STRIP)
    if len(core) == 1 and core.upper() in labels:
        return core.upper()
    if choices:
        norm = squad_normalize(text)
        for label, choice in zip(labels, choices, strict=False):
            if squad_normalize(prepare(choice)) == norm:
                return label
    raise ValueError(f"expected choice {expected!r} is not one of the labels {labels}")


def _chosen_label(text: str, labels: str, choices: Sequence[Any] | None) -> str | None:
    core = text.strip(_CORE_STRIP)
    if len(core) == 1 and core.upper() in labels:
        return core.upper()
    found = [m.group(1) for m in _ANSWER_LETTER.finditer(text) if m.group(1) in labels]
    if found:
        return found[-1]
    for pattern in (_PAREN_LETTER, _LINE_LETTER):
        match = pattern.search(text)
        if match and match.group(1) in labels:
            return match.group(1)
    if choices:
        norm = squad_normalize(text)
        for label, choice in zip(labels, choices, strict=False):
            if squad_normalize(prepare(choice)) == norm:
                return label
    return None


def multiple_choice(
    output: str,
    expected: Any,
    *,
    choices: Sequence[Any] | None = None,
    labels: str | Sequence[str] | None = None,
    extract: str | None = None,
) -> float:
    """1.0 when the option the output picks is the expected one.

    ``expected`` is a label (``"B"``, ``"(b)"``), a 0-based index, or a choice's text when ``choices``
    is given. The output may be ``B``, ``(B)``, ``B. Paris``, ``The answer is B`` / ``Answer: (B)``, or
    (with ``choices``) the choice's text. Labels default to A, B, C, ... (as many as ``choices``).
    """
    label_set = "".join(labels) if labels is not None else _LABELS[: len(choices)] if choices else _LABELS
    text = _text(output, extract)
    if text is None:
        return 0.0
    wanted = {_label_of_expected(item, label_set, choices) for item in _items(expected)}
    return 1.0 if _chosen_label(text, label_set, choices) in wanted else 0.0


# ---------------------------------------------------------------- JSON

_JSON_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)```", re.DOTALL | re.IGNORECASE)


def _parse_json_output(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except ValueError:
        pass
    for body in _JSON_FENCE.findall(text):
        try:
            return True, json.loads(body)
        except ValueError:
            continue
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        start = min(starts)
        end = max(text.rfind("}"), text.rfind("]"))
        if end > start:
            try:
                return True, json.loads(text[start : end + 1])
            except ValueError:
                pass
    return False, None


def _json_equal(got: Any, want: Any, subset: bool) -> bool:
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return False
        if not subset and got.keys() != want.keys():
            return False
        return all(key in got and _json_equal(got[key], value, subset) for key, value in want.items())
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(_json_equal(g, w, subset) for g, w in zip(got, want, strict=False))
        )
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, (int, float)):
        return isinstance(got, (int, float)) and got == want
    return type(got) is type(want) and got == want


def json_match(output: str, expected: Any, *, subset: bool = False, extract: str | None = None) -> float:
    """1.0 when the output parses as JSON equal to ``expected`` (``subset``: expected keys present and equal).

    The output may be bare JSON, a fenced ```json block, or text around one object or array.
    ``expected`` is a JSON object or scalar, or a string holding JSON; a list means any of them (to expect
    an array, give it as a JSON string ``"[1, 2]"``). ``true`` never equals ``1``.
    """
    text = _text(output, extract)
    if text is None:
        return 0.0
    ok, got = _parse_json_output(text)
    if not ok:
        return 0.0
    for want in _items(expected):
        if isinstance(want, str):
            with contextlib.suppress(ValueError):
                want = json.loads(want)
        if _json_equal(got, want, subset):
            return 1.0
    return 0.0


# ---------------------------------------------------------------- format

_PRESETS: dict[str, re.Pattern[str]] = {
    "think_answer": re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL),
}
FORMAT_PRESETS: tuple[str, ...] = ("think_answer", "answer_tag", "boxed", "answer_line", "json")


def _preset_ok(text: str, preset: str) -> bool:
    if preset in _PRESETS:
        return _PRESETS[preset].fullmatch(text) is not None
    if preset in ("answer_tag", "boxed", "answer_line"):
        return _extract(text, preset) is not None
    if preset == "json":
        try:
            json.loads(text)
        except ValueError:
            return False
        return True
    raise ValueError(f"unknown format preset '{preset}'; choose one of: {', '.join(FORMAT_PRESETS)}")


def format_check(
    output: str,
    expected: Any = None,
    *,
    pattern: str | None = None,
    preset: str | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    max_words: int | None = None,
    must_contain: Sequence[str] | None = None,
    must_not_contain: Sequence[str] | None = None,
    extract: str | None = None,
) -> float:
    """1.0 when the output has the required shape; every check given must hold.

    ``pattern`` is a regex the whole output must match (``re.DOTALL``); ``preset`` one of
    ``think_answer``, ``answer_tag``, ``boxed``, ``answer_line``, ``json``; lengths count characters.
    A string ``expected`` stands for ``preset`` when it names one, else for ``pattern``.
    """
    if isinstance(expected, str) and expected and pattern is None and preset is None:
        if expected in FORMAT_PRESETS:
            preset = expected
        else:
            pattern = expected
    checks = [pattern, preset, min_length, max_length, max_words, must_contain, must_not_contain]
    if all(check is None for check in checks):
        raise ValueError("format_check needs a pattern, a preset, a length bound or must_contain")
    text = _text(output, extract)
    if text is None:
        return 0.0
    ok = True
    if pattern is not None:
        ok = ok and re.fullmatch(pattern, text, re.DOTALL) is not None
    if preset is not None:
        ok = ok and _preset_ok(text, preset)
    if min_length is not None:
        ok = ok and len(text) >= min_length
    if max_length is not None:
        ok = ok and len(text) <= max_length
    if max_words is not None:
        ok = ok and len(text.split()) <= max_words
    if must_contain is not None:
        needles = [must_contain] if isinstance(must_contain, str) else must_contain
        ok = ok and all(prepare(n) in text for n in needles)
    if must_not_contain is not None:
        needles = [must_not_contain] if isinstance(must_not_contain, str) else must_not_contain
        ok = ok and not any(prepare(n) in text for n in needles)
    return 1.0 if ok else 0.0


# ---------------------------------------------------------------- programs


def python_tests(
    output: str,
    expected: Any = None,
    *,
    tests: str | Sequence[str] | None = None,
    entry_point: str | None = None,
    prompt: str | None = None,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    extract: str | None = "code",
    python: str | None = None,
) -> float:
    """1.0 when the program passes its tests (human-eval style), run by the subprocess runner.

    The program is ``prompt + code + tests`` plus ``check(entry_point)`` when ``entry_point`` is given;
    ``tests`` (or ``expected``) is test code or a list of ``assert`` lines. ``code`` is the output's
    first fenced python block, or the whole output (``extract='none'``). Unlike the other functions,
    the code is not NFKC-normalized and keeps its leading indentation. The run passes only if it
    exits 0 *and* prints a random per-run token after the tests, within ``timeout`` seconds.
    """
    from evsys.verifiers import runner

    code = output if isinstance(output, str) else str(output)
    if extract is not None and extract != "none":
        got = _extract(code, extract)
        if got is None:
            return 0.0
        code = got
    source_tests = tests if tests is not None else expected
    if source_tests is None:
        raise ValueError("python_tests needs tests: set options.tests or verifier.expected")
    if not isinstance(source_tests, str):
        source_tests = "\n".join(str(line) for line in source_tests)
    parts = [(prompt or "") + code.rstrip(), source_tests]
    if entry_point:
        parts.append(f"check({entry_point})")
    program = "\n\n".join(parts) + "\n"
    limits = runner.Limits(memory_bytes=int(memory_mb) * 1024 * 1024 if memory_mb else None)
    result = runner.run_python(program, timeout=float(timeout), limits=limits, python=python)
    return 1.0 if result.passed else 0.0


def math_equiv(output: str, expected: Any, *, timeout: float = 10.0, extract: str | None = None) -> float:
    """1.0 when Math-Verify finds the output's final answer equivalent to an expected one.

    Needs the optional extra: ``pip install 'evsys-verifiers[math]'``. Math-Verify runs in a worker
    process; a check that takes over ``timeout`` seconds is killed by the parent and scores 0.
    """
    from evsys.verifiers import math_worker

    text = _text(output, extract)
    if text is None:
        return 0.0
    golds = [prepare(item) if not isinstance(item, (int, float)) else str(item) for item in _items(expected)]
    return math_worker.verify(text, golds, timeout=float(timeout))
