"""Verifier functions that compare the output's answer with the expected one: strings, numbers, choices.

``contains``, ``exact_match``, ``normalized_match``, ``token_f1``, ``regex_match``, ``numeric_match``
and ``multiple_choice``; the common rules are in :mod:`evsys.verifiers.functions`, which registers them.
:func:`expected_answers` and :func:`answer_text` apply those rules for every built-in function.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

from evsys.verifiers.extract import extract as _extract
from evsys.verifiers.extract import find_numbers, parse_number, prepare


def expected_answers(expected: Any) -> Sequence[Any]:
    """``expected`` as a sequence of answers (a list or tuple as is, one value as a 1-tuple)."""
    if isinstance(expected, (list, tuple)):
        return expected
    if expected is None:
        raise ValueError("no expected answer: set verifier.expected (or the task's target / answer)")
    return (expected,)


def answer_text(output: Any, how: str | None) -> str | None:
    """The prepared output, or the answer ``how`` extracts from it (None when it finds none)."""
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
    text = answer_text(output, extract)
    if text is None:
        return 0.0
    if ignore_case:
        text = text.casefold()
    for item in expected_answers(expected):
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
    text = answer_text(output, extract)
    if text is None:
        return 0.0
    if not (ignore_case or ignore_punctuation or regexes_to_ignore):
        for item in expected_answers(expected):
            if prepare(item) == text:
                return 1.0
        return 0.0
    regexes = [regexes_to_ignore] if isinstance(regexes_to_ignore, str) else list(regexes_to_ignore or ())
    text = _em_normalize(text, ignore_case, ignore_punctuation, regexes)
    for item in expected_answers(expected):
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
    text = answer_text(output, extract)
    if text is None:
        return 0.0
    norm = squad_normalize(text)
    return 1.0 if any(squad_normalize(prepare(item)) == norm for item in expected_answers(expected)) else 0.0


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
    text = answer_text(output, extract)
    if text is None:
        return 0.0
    return max((_f1(text, prepare(item)) for item in expected_answers(expected)), default=0.0)


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
    text = answer_text(output, extract)
    if text is None:
        return 0.0
    flags = (re.IGNORECASE if ignore_case else 0) | (re.MULTILINE if multiline else 0) | (re.DOTALL if dotall else 0)
    for item in expected_answers(expected):
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
    for item in expected_answers(expected):
        want = parse_number(item)
        if want is None:
            raise ValueError(f"expected answer {item!r} is not a number")
        wants.append(want)
    text = answer_text(output, extract)
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
    text = answer_text(output, extract)
    if text is None:
        return 0.0
    wanted = {_label_of_expected(item, label_set, choices) for item in expected_answers(expected)}
    return 1.0 if _chosen_label(text, label_set, choices) in wanted else 0.0
