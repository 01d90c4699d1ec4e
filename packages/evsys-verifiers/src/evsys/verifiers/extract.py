"""Text preparation and answer extraction shared by the verifier functions.

Every built-in function first applies :func:`prepare` (Unicode NFKC, then strip) and, when an
``extract`` option is given, :func:`extract` to pull the answer out of a longer output.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction
from typing import Any

__all__ = [
    "EXTRACTORS",
    "canonical_answer",
    "extract",
    "final_answer",
    "find_numbers",
    "parse_number",
    "prepare",
]

EXTRACTORS: tuple[str, ...] = (
    "boxed",
    "answer_tag",
    "answer_line",
    "after_think",
    "gsm8k",
    "last_number",
    "code",
    "none",
)

_normalize = unicodedata.normalize


def prepare(text: Any) -> str:
    """Return ``text`` as a string in Unicode NFKC form with surrounding whitespace stripped."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if not text.isascii():
        text = _normalize("NFKC", text)
    return text.strip()


# ---------------------------------------------------------------- extractors

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")


def _extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (balanced braces) or ``\\boxed x``."""
    for match in reversed(list(_BOXED.finditer(text))):
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth = 0
            for i in range(start, len(text)):
                ch = text[i]
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                    if depth == 0:
                        return text[start + 1 : i].strip()
            continue  # unbalanced: try an earlier one
        if match.group(0)[-1:].isspace():  # the "\\boxed 5" form
            rest = re.match(r"[^\s$]+", text[start:])
            if rest:
                return rest.group(0)
    return None


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)


def _extract_answer_tag(text: str) -> str | None:
    matches = _ANSWER_TAG.findall(text)
    return matches[-1].strip() if matches else None


_ANSWER_LINE = re.compile(
    r"(?:^|(?<=[\s*_(\[]))(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:：]?\s*(?P<ans>[^\n]+)",
    re.IGNORECASE,
)


def _extract_answer_line(text: str) -> str | None:
    matches = list(_ANSWER_LINE.finditer(text))
    for match in reversed(matches):
        answer = match.group("ans").strip(" \t*_")
        answer = answer.rstrip(".").strip(" \t*_")
        if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
            answer = answer.strip("$").strip()
        if answer:
            return answer
    return None


def final_answer(text: str) -> str:
    """The answer of a model output: the text after its thinking block.

    Text after the last ``</think>`` (stripped); an output that opened ``<think>`` and never closed
    it has no answer (``""``); an output without thinking is its own answer.
    """
    marker = text.rfind("</think>")
    if marker >= 0:
        return text[marker + len("</think>") :].strip()
    return "" if "<think>" in text else text


def _extract_after_think(text: str) -> str | None:
    marker = text.rfind("</think>")
    if marker >= 0:
        return text[marker + len("</think>") :].strip()
    if "<think>" in text:
        return None  # the model never finished thinking
    return text


_NUMBER = re.compile(
    r"(?<![\w.])[-+−]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?:/\d+(?:\.\d+)?)?"
)


def find_numbers(text: str) -> list[str]:
    """Every number in ``text`` as written (``1,000``, ``-3.5``, ``1e-3``, ``3/4``)."""
    return _NUMBER.findall(text)


def _extract_last_number(text: str) -> str | None:
    numbers = find_numbers(text.replace("$", " "))
    return _clean_number(numbers[-1]) if numbers else None


_GSM8K = re.compile(r"####\s*([^\n]*)")


def _clean_number(number: str) -> str:
    return number.replace(",", "").replace("−", "-")


def _extract_gsm8k(text: str) -> str | None:
    """The number after the last ``####`` (as in GSM8K references); without ``####``, the last number."""
    matches = _GSM8K.findall(text)
    if matches:
        numbers = find_numbers(matches[-1].replace("$", " "))
        return _clean_number(numbers[0]) if numbers else None
    return _extract_last_number(text)


_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def _extract_code(text: str) -> str | None:
    """The first fenced ```python (or unlabeled) block; the whole text when there is no fence."""
    blocks = _FENCE.findall(text)
    if not blocks:
        return text
    for lang, body in blocks:
        if lang.lower() in {"python", "py", "python3", ""}:
            return body
    return blocks[0][1]


_EXTRACT_FUNCS = {
    "boxed": _extract_boxed,
    "answer_tag": _extract_answer_tag,
    "answer_line": _extract_answer_line,
    "after_think": _extract_after_think,
    "gsm8k": _extract_gsm8k,
    "last_number": _extract_last_number,
    "code": _extract_code,
}


def extract(text: str, how: str | None) -> str | None:
    """Pull the answer out of ``text`` with extractor ``how`` (see :data:`EXTRACTORS`).

    ``None`` or ``"none"`` returns the text unchanged. An extractor that finds nothing returns
    ``None`` (the sample then scores 0). An unknown name raises :class:`ValueError`.
    """
    if how is None or how == "none":
        return text
    func = _EXTRACT_FUNCS.get(how)
    if func is None:
        raise ValueError(f"unknown extract '{how}'; choose one of: {', '.join(EXTRACTORS)}")
    return func(text)


# ---------------------------------------------------------------- numbers

_GROUPED = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?:[eE][-+]?\d+)?$")
_PLAIN = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")
_LATEX_FRAC = re.compile(r"^([-+]?)\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}$")
_TIMES_TEN = re.compile(r"^(.+?)\s*(?:\\times|×|\*|\\cdot|x)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?$")


def _parse_plain(text: str) -> Fraction | None:
    if _GROUPED.match(text):
        text = text.replace(",", "")
    if not _PLAIN.match(text):
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def parse_number(text: Any) -> Fraction | None:
    """Parse a number as written by a model or a reference; ``None`` when it is not one.

    Accepts ``1,000`` (thousands separators), ``3.0``, ``-2``, ``1e-3``, ``3/4``, ``\\frac{3}{4}``,
    ``2 \\times 10^{3}``, a leading ``$`` and a trailing ``%`` (dropped, never divided by 100:
    ``50%`` is 50). Values come back as exact fractions.
    """
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return Fraction(text)
    if isinstance(text, float):
        if text != text or text in (float("inf"), float("-inf")):
            return None
        return Fraction(text)
    if isinstance(text, Fraction):
        return text
    s = prepare(text)
    if not s:
        return None
    s = s.replace("−", "-").replace("\\!", "").replace("\\,", "").replace("{,}", ",").replace("\\%", "%")
    s = s.strip().strip("$").strip()
    if s.startswith("\\$"):
        s = s[2:].strip()
    if s.startswith(("+$", "-$")):
        s = s[0] + s[2:]
    if s.endswith("%"):
        s = s[:-1].strip()
    if s.endswith(".") and len(s) > 1 and s[-2].isdigit():
        s = s[:-1]
    s = s.replace(" ", "") if re.fullmatch(r"[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?", s) else s
    value = _parse_plain(s)
    if value is not None:
        return value
    frac = _LATEX_FRAC.match(s)
    if frac:
        num, den = _parse_plain(frac.group(2).strip()), _parse_plain(frac.group(3).strip())
        if num is None or den is None or den == 0:
            return None
        value = num / den
        return -value if frac.group(1) == "-" else value
    if s.count("/") == 1:
        left, right = (part.strip() for part in s.split("/"))
        num, den = _parse_plain(left), _parse_plain(right)
        if num is not None and den is not None and den != 0 and "e" not in right.lower():
            return num / den
        return None
    times = _TIMES_TEN.match(s)
    if times:
        mantissa = _parse_plain(times.group(1).strip())
        if mantissa is not None:
            return mantissa * (Fraction(10) ** int(times.group(2)))
    return None


# ---------------------------------------------------------------- answers for majority voting

_WS = re.compile(r"\s+")


def canonical_answer(text: Any) -> str:
    """A normal form for comparing answers in ``maj@k``: NFKC, casefold, spaces collapsed, numbers canonical."""
    s = prepare(text)
    number = parse_number(s)
    if number is not None:
        return str(number.numerator) if number.denominator == 1 else f"{number.numerator}/{number.denominator}"
    s = _WS.sub(" ", s.casefold()).rstrip(".").strip()
    return s
