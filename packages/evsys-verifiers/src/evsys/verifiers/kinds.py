"""The built-in verifier kinds: ``in_process``, ``python`` and ``subprocess``.

A kind's registered target is a builder ``build(spec, registry) -> verifier`` where ``verifier`` is
called as ``verifier(output, expected)`` and returns a score in [0, 1] (a float, a bool, or a
:class:`~evsys.verifiers.scoring.Verification`). Plugins add kinds the same way::

    @hookimpl
    def evsys_register(register):
        register.verifier("remote_judge", "my_pkg.judge:build")

``spec.options`` carries the verifier's options; the option ``threshold`` is reserved (``verify``
applies it to decide ``passed``) and is not handed to functions.
"""

from __future__ import annotations

import inspect
import json
import shlex
import sys
import weakref
from collections.abc import Callable
from typing import Any

from evsys.schema.registry import load_object
from evsys.schema.rows import VerifierSpec

__all__ = ["DEFAULT_FUNCTION", "build_in_process", "build_python", "build_subprocess", "subprocess_score"]

DEFAULT_FUNCTION = "exact_match"
RESERVED_OPTIONS = frozenset({"threshold"})
Verifier = Callable[[str, Any], Any]

_FUNCTIONS: weakref.WeakKeyDictionary[Any, dict[str, tuple[Callable[..., Any], bool]]] = weakref.WeakKeyDictionary()
_TARGETS: dict[str, tuple[Callable[..., Any], bool]] = {}


def _accepts_timeout(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return "timeout" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _function(registry: Any, fn_name: str) -> tuple[Callable[..., Any], bool]:
    table = _FUNCTIONS.setdefault(registry, {})
    found = table.get(fn_name)
    if found is None:
        registration = registry.get("verifier_function", fn_name)
        func = registration.load()
        found = table[fn_name] = (func, _accepts_timeout(func))
    return found


def _options(spec: VerifierSpec, takes_timeout: bool) -> dict[str, Any]:
    options = spec.options
    if RESERVED_OPTIONS.intersection(options):
        options = {k: v for k, v in options.items() if k not in RESERVED_OPTIONS}
    if spec.timeout is not None and takes_timeout and "timeout" not in options:
        options = {**options, "timeout": spec.timeout}
    return options


def build_in_process(spec: VerifierSpec, registry: Any) -> Verifier:
    """A registered function named by ``spec.fn_name`` (default ``exact_match``), called with ``spec.options``."""
    func, takes_timeout = _function(registry, spec.fn_name or DEFAULT_FUNCTION)
    options = _options(spec, takes_timeout)
    if not options:
        return func
    return lambda output, expected: func(output, expected, **options)


def build_python(spec: VerifierSpec, registry: Any = None) -> Verifier:
    """The function at ``spec.fn_name`` = ``"module:function"``, called with ``spec.options``."""
    target = spec.fn_name
    if not target or ":" not in target:
        raise ValueError(f"a python verifier needs fn_name 'module:function', got {target!r}")
    found = _TARGETS.get(target)
    if found is None:
        func = load_object(target)
        found = _TARGETS[target] = (func, _accepts_timeout(func))
    func, takes_timeout = found
    options = _options(spec, takes_timeout)
    return lambda output, expected: func(output, expected, **options)


def subprocess_score(stdout: str, returncode: int | None) -> float:
    """A checker's verdict: the last stdout line when it is a number in [0, 1] (and the exit status is 0),
    else 1.0 for exit status 0 and 0.0 otherwise."""
    if returncode != 0:
        return 0.0
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if lines:
        try:
            value = float(lines[-1])
        except ValueError:
            return 1.0
        if 0.0 <= value <= 1.0:
            return value
        raise ValueError(f"the checker printed {lines[-1]!r}, outside [0, 1]")
    return 1.0


def build_subprocess(spec: VerifierSpec, registry: Any = None) -> Verifier:
    """A checker program run by the subprocess runner (:mod:`evsys.verifiers.runner`).

    The run directory holds ``output.txt`` (the model's output), ``expected.json`` and
    ``options.json``, plus any ``options.files`` (name -> text); their names are also in
    ``$EVSYS_OUTPUT_FILE``, ``$EVSYS_EXPECTED_FILE`` and ``$EVSYS_OPTIONS_FILE``. In ``command``,
    ``{output_file}``, ``{expected_file}``, ``{options_file}`` and ``{python}`` (this interpreter) are
    replaced. The verdict is :func:`subprocess_score`; a timeout or too much output scores 0 with the reason as the error.
    Options: ``timeout`` (default ``spec.timeout`` or 30 s), ``memory_mb``, ``files``.
    """
    if not spec.command:
        raise ValueError("a subprocess verifier needs a command")
    argv = shlex.split(spec.command) if isinstance(spec.command, str) else list(spec.command)
    options = {k: v for k, v in spec.options.items() if k not in RESERVED_OPTIONS}
    timeout = float(options.pop("timeout", spec.timeout or 30.0))
    memory_mb = options.pop("memory_mb", 1024)
    extra_files = dict(options.pop("files", {}) or {})
    replacements = {
        "{output_file}": "output.txt",
        "{expected_file}": "expected.json",
        "{options_file}": "options.json",
        "{python}": sys.executable,
    }
    for key, value in replacements.items():
        argv = [part.replace(key, value) for part in argv]

    def verifier(output: str, expected: Any) -> float:
        from evsys.verifiers import runner

        files = {
            **{str(k): str(v) for k, v in extra_files.items()},
            "output.txt": output,
            "expected.json": json.dumps(expected),
            "options.json": json.dumps(options),
        }
        env = {
            "EVSYS_OUTPUT_FILE": "output.txt",
            "EVSYS_EXPECTED_FILE": "expected.json",
            "EVSYS_OPTIONS_FILE": "options.json",
        }
        limits = runner.Limits(memory_bytes=int(memory_mb) * 1024 * 1024 if memory_mb else None)
        result = runner.run_command(argv, files=files, timeout=timeout, limits=limits, env=env)
        if result.timed_out:  # scored 0 with the reason recorded (verify() turns this into Verification.error)
            raise TimeoutError(f"the subprocess verifier {result.reason()} (timeout {timeout:g}s)")
        if result.output_exceeded:
            raise RuntimeError("the subprocess verifier printed more than the output limit")
        return subprocess_score(result.stdout, result.returncode)

    return verifier
