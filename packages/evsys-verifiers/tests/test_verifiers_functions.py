"""Table-driven tests of every built-in verifier function and extractor."""

from __future__ import annotations

from typing import Any

import pytest

from evsys.verifiers import functions as F
from evsys.verifiers.extract import canonical_answer, extract, parse_number, prepare

Case = tuple[str, Any, dict[str, Any], float]

CONTAINS: list[Case] = [
    ("Berlin", "Berlin", {}, 1.0),
    ("The capital is Berlin.", "Berlin", {}, 1.0),
    ("the capital is berlin", "Berlin", {}, 0.0),
    ("the capital is berlin", "Berlin", {"ignore_case": True}, 1.0),
    ("Berliner Luft", "Berlin", {}, 1.0),
    ("Berliner Luft", "Berlin", {"whole_word": True}, 0.0),
    ("in Berlin, yes", "Berlin", {"whole_word": True}, 1.0),
    ("Paris", ["Berlin", "Paris"], {}, 1.0),
    ("Rome", ["Berlin", "Paris"], {}, 0.0),
    ("anything", "", {}, 0.0),  # an empty expected never matches
    ("ＢＥＲＬＩＮ", "BERLIN", {}, 1.0),  # NFKC: full-width letters
    ("  Berlin  ", " Berlin ", {}, 1.0),
    ("answer 42", 42, {}, 1.0),
    ("Paris", [], {}, 0.0),
    ("x \\boxed{Berlin} y Paris", "Paris", {"extract": "boxed"}, 0.0),
    ("x \\boxed{Berlin} y Paris", "Berlin", {"extract": "boxed"}, 1.0),
    ("no box here Berlin", "Berlin", {"extract": "boxed"}, 0.0),
]

EXACT: list[Case] = [
    ("42", "42", {}, 1.0),
    (" 42\n", "42", {}, 1.0),
    ("42.", "42", {}, 0.0),
    ("42.", "42", {"ignore_punctuation": True}, 1.0),
    ("Paris", "paris", {}, 0.0),
    ("Paris", "paris", {"ignore_case": True}, 1.0),
    ("Answer: Paris", "Paris", {"regexes_to_ignore": ["^Answer: "]}, 1.0),
    ("Answer: Paris", "Paris", {"regexes_to_ignore": "^Answer: "}, 1.0),
    ("«Paris»", "Paris", {"ignore_punctuation": True}, 1.0),  # Unicode punctuation
    ("Rome", ["Paris", "Rome"], {}, 1.0),
    ("ｐａｒｉｓ", "paris", {}, 1.0),
    ("", "", {}, 1.0),
    ("7", 7, {}, 1.0),
    ("<think>hmm</think> Paris", "Paris", {"extract": "after_think"}, 1.0),
    ("<think>never closed Paris", "Paris", {"extract": "after_think"}, 0.0),
]

NORMALIZED: list[Case] = [
    ("The Eiffel Tower", "eiffel tower", {}, 1.0),
    ("an apple.", "Apple", {}, 1.0),
    ("A  dog,  barked!", "dog barked", {}, 1.0),
    ("Paris", "London", {}, 0.0),
    ("the", "", {}, 1.0),
    ("Dr. Who", "dr who", {}, 1.0),
    ("the cat", ["dog", "cat"], {}, 1.0),
    ("cats", "cat", {}, 0.0),
    ("THE END", "end", {}, 1.0),
    ("Answer: <answer>The Moon</answer>", "moon", {"extract": "answer_tag"}, 1.0),
    ("New-York", "newyork", {}, 1.0),
]

F1: list[Case] = [
    ("the cat sat", "the cat sat", {}, 1.0),
    ("cat", "cat sat", {}, 2 * 1.0 * 0.5 / 1.5),
    ("dog", "cat", {}, 0.0),
    ("", "", {}, 1.0),
    ("", "cat", {}, 0.0),
    ("the", "a", {}, 1.0),  # both normalize to nothing
    ("cat cat", "cat", {}, 2 * 0.5 * 1.0 / 1.5),
    ("Cat, SAT!", "cat sat", {}, 1.0),
    ("cat", ["dog", "cat"], {}, 1.0),
    ("big red dog", "red dog", {}, 0.8),
    ("final answer: red dog", "red dog", {"extract": "answer_line"}, 1.0),
]

REGEX: list[Case] = [
    ("order 66", r"\d+", {}, 1.0),
    ("no digits", r"\d+", {}, 0.0),
    ("ABC", "abc", {}, 0.0),
    ("ABC", "abc", {"ignore_case": True}, 1.0),
    ("abc def", "abc", {"full": True}, 0.0),
    ("abc", "abc", {"full": True}, 1.0),
    ("line1\nline2", "^line2$", {}, 0.0),
    ("line1\nline2", "^line2$", {"multiline": True}, 1.0),
    ("a\nb", "a.b", {"dotall": True}, 1.0),
    ("xyz", ["abc", "y"], {}, 1.0),
    ("2024-01-05", r"\d{4}-\d{2}-\d{2}", {"full": True}, 1.0),
]

NUMERIC: list[Case] = [
    ("42", 42, {}, 1.0),
    ("1,000", 1000, {}, 1.0),
    ("3.0", "3", {}, 1.0),
    ("3/4", 0.75, {}, 1.0),
    ("1e-3", "0.001", {}, 1.0),
    ("1.5E+3", 1500, {}, 1.0),
    ("50%", 0.5, {}, 0.0),  # no silent percent conversion
    ("50%", 50, {}, 1.0),
    ("The answer is 17.", "17", {}, 1.0),
    ("The answer is 17.", "17", {"last_number": False}, 0.0),
    ("3.1416", "3.14159", {"rel_tol": 1e-3}, 1.0),
    ("3.1416", "3.14159", {}, 0.0),
    ("0.0000001", 0, {"abs_tol": 1e-6}, 1.0),
    ("no number", 5, {}, 0.0),
    ("$1,234.50", "1234.5", {}, 1.0),
    ("-7", "−7", {}, 1.0),
    ("\\frac{1}{2}", "0.5", {}, 1.0),
    ("2 \\times 10^{3}", 2000, {}, 1.0),
    ("5", [4, 5], {}, 1.0),
    ("first 3 then #### 12", 12, {"extract": "gsm8k"}, 1.0),
    ("0.30000000000000004", "0.3", {}, 1.0),
    ("123456789012345678901", "123456789012345678901", {}, 1.0),
    # integers compare exactly: a relative tolerance of 1e-9 would let these off-by-one answers pass
    ("100000000001", 100000000000, {}, 0.0),
    ("100000000001", "100,000,000,000", {}, 0.0),
    ("1e11", 100000000000, {}, 1.0),
    ("100000000000.0", "100000000000", {}, 1.0),
    ("123456789012345678902", "123456789012345678901", {}, 0.0),
    # a tolerance the task sets applies to integers too; non-integers keep the default one
    ("101", 100, {"abs_tol": 1}, 1.0),
    ("100000000001", 100000000000, {"rel_tol": 1e-9}, 1.0),
    ("100000000000.5", "100000000000.5000001", {}, 1.0),
]

MULTIPLE_CHOICE: list[Case] = [
    ("B", "B", {}, 1.0),
    ("(b)", "B", {}, 1.0),
    ("The answer is (C).", "C", {}, 1.0),
    ("Answer: D", "D", {}, 1.0),
    ("A", "B", {}, 0.0),
    ("B. Paris", "B", {}, 1.0),
    ("Paris", "B", {"choices": ["London", "Paris", "Rome"]}, 1.0),
    ("Paris", "Paris", {"choices": ["London", "Paris", "Rome"]}, 1.0),
    ("B", 1, {}, 1.0),  # 0-based index
    ("A cat is not an answer", "A", {}, 0.0),
    ("I think (A) but the answer is B", "B", {}, 1.0),
    ("E", "D", {"choices": ["w", "x", "y", "z"]}, 0.0),  # E is not a label with 4 choices
    ("2", "2", {"labels": ["1", "2", "3"]}, 1.0),
    ("<answer>C</answer>", "C", {"extract": "answer_tag"}, 1.0),
]

JSON: list[Case] = [
    ('{"a": 1}', {"a": 1}, {}, 1.0),
    ('{"a": 1, "b": 2}', {"a": 1}, {}, 0.0),
    ('{"a": 1, "b": 2}', {"a": 1}, {"subset": True}, 1.0),
    ('```json\n{"a": 1}\n```', {"a": 1}, {}, 1.0),
    ('Here you go: {"a": [1, 2]} done', {"a": [1, 2]}, {}, 1.0),
    ('{"a": true}', {"a": 1}, {}, 0.0),  # true is not 1
    ('{"a": 1.0}', {"a": 1}, {}, 1.0),
    ("not json", {"a": 1}, {}, 0.0),
    ('{"a": 1}', '{"a": 1}', {}, 1.0),  # expected given as a JSON string
    ("[1, 2]", "[1, 2]", {}, 1.0),
    ('{"a": {"b": 1, "c": 2}}', {"a": {"b": 1}}, {"subset": True}, 1.0),
    ('{"a": {"b": 1, "c": 2}}', {"a": {"b": 1}}, {}, 0.0),
    ('"hello"', "hello", {}, 1.0),
    ('{"a": 2}', [{"a": 1}, {"a": 2}], {}, 1.0),
]

FORMAT: list[Case] = [
    ("<think>x</think><answer>1</answer>", "think_answer", {}, 1.0),
    ("<think>x</think>\n<answer>1</answer>\n", "think_answer", {}, 1.0),
    ("<answer>1</answer>", "think_answer", {}, 0.0),
    ("blah \\boxed{3}", None, {"preset": "boxed"}, 1.0),
    ("blah 3", None, {"preset": "boxed"}, 0.0),
    ('{"x": 1}', None, {"preset": "json"}, 1.0),
    ("{x: 1}", None, {"preset": "json"}, 0.0),
    ("ABC-123", r"[A-Z]+-\d+", {}, 1.0),
    ("abc-123", None, {"pattern": r"[A-Z]+-\d+"}, 0.0),
    ("short", None, {"max_length": 10}, 1.0),
    ("this is too long", None, {"max_length": 10}, 0.0),
    ("one two three", None, {"max_words": 2}, 0.0),
    ("has the word", None, {"must_contain": ["word"], "must_not_contain": ["bad"]}, 1.0),
    ("a bad word", None, {"must_not_contain": "bad"}, 0.0),
    ("Final answer: 3", None, {"preset": "answer_line", "min_length": 3}, 1.0),
]

ADD_TESTS = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
PYTHON: list[Case] = [
    ("def add(a, b):\n    return a + b", ADD_TESTS, {"entry_point": "add"}, 1.0),
    ("def add(a, b):\n    return a - b", ADD_TESTS, {"entry_point": "add"}, 0.0),
    ("```python\ndef add(a, b):\n    return a + b\n```", ADD_TESTS, {"entry_point": "add"}, 1.0),
    ("    return a + b\n", ADD_TESTS, {"entry_point": "add", "prompt": "def add(a, b):\n"}, 1.0),
    ("def add(a, b) return", ADD_TESTS, {"entry_point": "add"}, 0.0),  # syntax error
    ("def add(a, b):\n    return a + b", None, {"tests": ["assert add(2, 2) == 4"]}, 1.0),
    ("def add(a, b):\n    return a + b", ["assert add(2, 2) == 5"], {}, 0.0),
    ("def add(a, b):\n    raise ValueError", ADD_TESTS, {"entry_point": "add"}, 0.0),
    ("import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b", ADD_TESTS, {"entry_point": "add"}, 0.0),
    ("def add(a, b):\n    return a + b\nimport os\nos._exit(0)", ADD_TESTS, {"entry_point": "add"}, 0.0),
    ("def add(a, b):\n    return a + b\ninput()", ADD_TESTS, {"entry_point": "add"}, 0.0),
    ("import time\ndef add(a, b):\n    time.sleep(5)", ADD_TESTS, {"entry_point": "add", "timeout": 0.5}, 0.0),
    ("def add(a, b):\n    print('é')\n    return a + b", ADD_TESTS, {"entry_point": "add"}, 1.0),
]

MATH: list[Case] = [
    ("The answer is $\\boxed{\\frac{1}{2}}$", "0.5", {}, 1.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", {}, 1.0),
    ("\\boxed{3}", "2", {}, 0.0),
    ("$x^2+2x+1$", "(x+1)^2", {}, 1.0),
    ("\\boxed{\\sqrt{4}}", "2", {}, 1.0),
    ("\\boxed{2}", ["3", "2"], {}, 1.0),
    ("no math here", "7", {}, 0.0),
    ("\\boxed{\\pi}", "\\pi", {}, 1.0),
    ("$\\frac{2}{4}$", "1/2", {}, 1.0),
    ("\\boxed{10}", "10.0", {}, 1.0),
    ("I think <answer>\\boxed{4}</answer>", "4", {"extract": "answer_tag"}, 1.0),
]


def _ids(cases: list[Case]) -> list[str]:
    return [f"{i}:{str(c[0])[:20]!r}" for i, c in enumerate(cases)]


@pytest.mark.parametrize(
    ("func", "table"),
    [
        (F.contains, CONTAINS),
        (F.exact_match, EXACT),
        (F.normalized_match, NORMALIZED),
        (F.token_f1, F1),
        (F.regex_match, REGEX),
        (F.numeric_match, NUMERIC),
        (F.multiple_choice, MULTIPLE_CHOICE),
        (F.json_match, JSON),
        (F.format_check, FORMAT),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_table(func: Any, table: list[Case]) -> None:
    assert len(table) >= 10
    failures = []
    for output, expected, options, want in table:
        try:
            got = func(output, expected, **options)
        except Exception as exc:
            got = exc
        if got != pytest.approx(want):
            failures.append((output, expected, options, want, got))
    assert not failures


@pytest.mark.parametrize(("output", "expected", "options", "want"), PYTHON, ids=_ids(PYTHON))
def test_python_tests(output: str, expected: Any, options: dict[str, Any], want: float) -> None:
    assert F.python_tests(output, expected, **options) == want


def test_math_equiv_table() -> None:
    from evsys.verifiers import math_worker

    if not math_worker.available():
        with pytest.raises(RuntimeError, match=r"evsys-verifiers\[math\]"):
            F.math_equiv("\\boxed{1}", "1")
        pytest.skip("Math-Verify (the [math] extra) is not installed")
    assert len(MATH) >= 10
    failures = [(o, e, w) for o, e, opts, w in MATH if F.math_equiv(o, e, **opts) != w]
    assert not failures


def test_math_equiv_timeout_is_enforced_by_the_parent() -> None:
    import time

    from evsys.verifiers import math_worker

    if not math_worker.available():
        pytest.skip("Math-Verify (the [math] extra) is not installed")
    F.math_equiv("\\boxed{1}", "1")  # warm a worker up
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        F.math_equiv("\\boxed{" + "+".join(["x^{99}"] * 3000) + "}", "1", timeout=0.05)
    assert time.monotonic() - start < 2.0
    assert F.math_equiv("\\boxed{2}", "2") == 1.0  # a fresh worker replaces the killed one


@pytest.mark.parametrize(
    ("func", "expected", "options", "error"),
    [
        (F.contains, None, {}, ValueError),
        (F.contains, "x", {"bogus": 1}, TypeError),
        (F.numeric_match, "abc", {}, ValueError),
        (F.regex_match, "(", {}, Exception),
        (F.multiple_choice, "Z9", {}, ValueError),
        (F.format_check, None, {}, ValueError),
        (F.format_check, None, {"preset": "nope"}, ValueError),
        (F.exact_match, "x", {"extract": "nope"}, ValueError),
        (F.python_tests, None, {}, ValueError),
    ],
)
def test_bad_expected_or_options_raise(func: Any, expected: Any, options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        func("some output", expected, **options)


EXTRACT_CASES = [
    ("so \\boxed{\\frac{1}{2}} done", "boxed", "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{2}", "boxed", "2"),
    ("\\boxed 7", "boxed", "7"),
    ("\\boxed{unbalanced", "boxed", None),
    ("<answer> Paris </answer>", "answer_tag", "Paris"),
    ("<answer>a</answer> <ANSWER>b</ANSWER>", "answer_tag", "b"),
    ("no tag", "answer_tag", None),
    ("work\nFinal Answer: **42**.", "answer_line", "42"),
    ("The answer is $3$.", "answer_line", "3"),
    ("nothing", "answer_line", None),
    ("<think>a</think> b", "after_think", "b"),
    ("<think>a", "after_think", None),
    ("plain", "after_think", "plain"),
    ("x = 5\n#### 1,200", "gsm8k", "1200"),
    ("costs $1,000 then 3.5", "gsm8k", "3.5"),
    ("####", "gsm8k", None),
    ("a 1 b -2.5", "last_number", "-2.5"),
    ("```python\nprint(1)\n```", "code", "print(1)\n"),
    ("```bash\nls\n```\n```python\nx=1\n```", "code", "x=1\n"),
    ("no fence", "code", "no fence"),
    ("same", "none", "same"),
    ("same", None, "same"),
]


@pytest.mark.parametrize(("text", "how", "want"), EXTRACT_CASES)
def test_extract(text: str, how: str | None, want: str | None) -> None:
    assert extract(text, how) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1,000", 1000),
        ("1,000,000", 1000000),
        ("3.0", 3),
        ("1e-3", 0.001),
        ("3/4", 0.75),
        ("$5", 5),
        ("50%", 50),
        ("1,5", None),
        ("abc", None),
        ("1/0", None),
        ("nan", None),
        ("inf", None),
        (True, None),
        (2.5, 2.5),
        ("12,34", None),
        ("−3", -3),
    ],
)
def test_parse_number(text: Any, want: float | None) -> None:
    got = parse_number(text)
    assert (got is None) if want is None else float(got) == want


def test_prepare_and_canonical_answer() -> None:
    assert prepare("  ﬁne\n") == "fine"
    assert prepare(None) == ""
    assert canonical_answer(" 1,000. ") == canonical_answer("1000") == "1000"
    assert canonical_answer("0.5") == canonical_answer("1/2")
    assert canonical_answer("Paris.") == canonical_answer("  paris ") == "paris"
