"""Verifier functions that parse or run the output: JSON, its shape, programs' tests, math equivalence.

``json_match``, ``format_check``, ``python_tests`` and ``math_equiv``; the common rules are in
:mod:`evsys.verifiers.functions`, which registers them. Programs and Math-Verify run in child
processes (:mod:`evsys.verifiers.runner`, :mod:`evsys.verifiers.math_worker`), imported only when used.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from typing import Any

from evsys.verifiers.answer_match import answer_text, expected_answers
from evsys.verifiers.extract import extract as _extract
from evsys.verifiers.extract import prepare

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
    text = answer_text(output, extract)
    if text is None:
        return 0.0
    ok, got = _parse_json_output(text)
    if not ok:
        return 0.0
    for want in expected_answers(expected):
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
    text = answer_text(output, extract)
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

    text = answer_text(output, extract)
    if text is None:
        return 0.0
    golds = [prepare(item) if not isinstance(item, (int, float)) else str(item) for item in expected_answers(expected)]
    return math_worker.verify(text, golds, timeout=float(timeout))
