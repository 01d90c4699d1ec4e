"""The contract checks behind :mod:`evsys.testing` (see its docstring)."""

from __future__ import annotations

import inspect
import math
import pickle
import tempfile
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from evsys.schema.protocols import (
    Algorithm,
    Backend,
    Callback,
    Datum,
    EvalResult,
    ForwardBackwardResult,
    RunContext,
    missing_members,
    protocol_members,
)
from evsys.schema.registry import load_object

#: what an algorithm and the run loop may use on a backend: the Backend protocol, nothing else
BACKEND_API = protocol_members(Backend)
_BASES = {"Backend": "evsys.schema.plugin_bases.BaseBackend", "Algorithm": "evsys.schema.plugin_bases.BaseAlgorithm", "Callback": "evsys.schema.protocols.BaseCallback"}


class ContractError(AssertionError):
    """A plugin broke a promise of its protocol."""


def check_conforms(obj: object, protocol: type, what: str | None = None) -> None:
    """Raise :class:`ContractError` naming every member of ``protocol`` that ``obj`` (an instance or a
    class) lacks, and the base class that gives their defaults; then one naming a method that does not
    take a parameter the protocol declares for it (by name, or through ``**kwargs``)."""
    name = what or (obj.__name__ if isinstance(obj, type) else type(obj).__name__)
    missing = missing_members(obj, protocol)
    if missing:
        base = _BASES.get(protocol.__name__)
        hint = f"; subclass {base}, which gives their defaults" if base else ""
        raise ContractError(f"{name} lacks {', '.join(missing)} of the {protocol.__name__} protocol{hint}")
    for member in protocol_members(protocol):
        declared = vars(protocol).get(member)
        if isinstance(declared, (classmethod, staticmethod)):
            declared = declared.__func__
        if not inspect.isfunction(declared):
            continue
        lacking = _untaken_parameters(declared, getattr(obj, member))
        if lacking:
            raise ContractError(f"{name}.{member} does not take {', '.join(lacking)}, which the {protocol.__name__} protocol passes")


def _untaken_parameters(declared: Callable[..., Any], implemented: Any) -> list[str]:
    try:
        have = inspect.signature(implemented).parameters
    except (TypeError, ValueError):  # a builtin without a signature: nothing to compare
        return []
    if any(p.kind == p.VAR_KEYWORD for p in have.values()):
        return []
    wanted = [p for p in inspect.signature(declared).parameters.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return [p.name for p in wanted if p.name not in ("self", "cls") and p.name not in have]


def _expect(condition: object, message: str) -> None:
    if not condition:
        raise ContractError(message)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------------------- backend


def _check_samples(groups: object, prompts: int, n: int, max_tokens: int, what: str) -> None:
    _expect(isinstance(groups, list) and len(groups) == prompts, f"{what}: expected one list per prompt ({prompts}), got {groups!r:.200}")
    for group in groups:  # type: ignore[union-attr]
        _expect(isinstance(group, list) and len(group) == n, f"{what}: expected {n} completions per prompt, got {len(group)}")
        for seq in group:
            for attr in ("tokens", "logprobs", "text", "stop_reason"):
                _expect(hasattr(seq, attr), f"{what}: a completion has no '{attr}' (return SampledSequence)")
            _expect(all(isinstance(t, int) for t in seq.tokens), f"{what}: tokens must be ints")
            _expect(1 <= len(seq.tokens) <= max_tokens, f"{what}: {len(seq.tokens)} tokens, expected 1..{max_tokens}")
            _expect(len(seq.logprobs) == len(seq.tokens), f"{what}: {len(seq.logprobs)} logprobs for {len(seq.tokens)} tokens")
            _expect(all(_finite(lp) and lp <= 1e-4 for lp in seq.logprobs), f"{what}: logprobs must be finite and <= 0")
            _expect(isinstance(seq.text, str), f"{what}: text must be a str")
            _expect(seq.stop_reason in ("stop", "length"), f"{what}: stop_reason must be 'stop' or 'length', got {seq.stop_reason!r}")
            if seq.stop_reason == "length":
                _expect(len(seq.tokens) == max_tokens, f"{what}: stop_reason 'length' with {len(seq.tokens)} < max_tokens tokens")


def _check_topk(rows: object, sequences: Sequence[Sequence[int]], starts: Sequence[int], k: int) -> list[list[list[float]]]:
    _expect(isinstance(rows, list) and len(rows) == len(sequences), "topk_logprobs: expected one TopKLogprobs per sequence")
    logprobs = []
    for row, seq, start in zip(rows, sequences, starts, strict=True):  # type: ignore[arg-type]
        positions = len(seq) - start
        _expect(len(row.token_ids) == positions and len(row.logprobs) == positions, f"topk_logprobs: expected {positions} positions from {start} of a {len(seq)}-token sequence, got {len(row.token_ids)}")
        for ids, lps in zip(row.token_ids, row.logprobs, strict=True):
            _expect(len(ids) == k and len(lps) == k, f"topk_logprobs: expected k={k} entries per position, got {len(ids)}")
            _expect(all(isinstance(i, int) for i in ids) and len(set(ids)) == k, "topk_logprobs: token ids must be k distinct ints")
            _expect(all(_finite(x) and x <= 1e-4 for x in lps), "topk_logprobs: logprobs must be finite and <= 0")
            _expect(all(a >= b - 1e-6 for a, b in pairwise(lps)), "topk_logprobs: logprobs must be sorted, largest first")
        logprobs.append([list(map(float, lps)) for lps in row.logprobs])
    return logprobs


def _check_logprobs(rows: object, sequences: Sequence[Sequence[int]], starts: Sequence[int], what: str) -> list[list[float]]:
    _expect(isinstance(rows, list) and len(rows) == len(sequences), f"{what}: expected one list of logprobs per sequence")
    out = []
    for row, seq, start in zip(rows, sequences, starts, strict=True):  # type: ignore[arg-type]
        positions = len(seq) - start
        _expect(isinstance(row, list) and len(row) == positions, f"{what}: expected {positions} logprobs from {start} of a {len(seq)}-token sequence, got {len(row) if isinstance(row, list) else row!r:.80}")
        _expect(all(_finite(x) and x <= 1e-4 for x in row), f"{what}: logprobs must be finite and <= 0")
        out.append([float(x) for x in row])
    return out


def _agrees_with_topk(
    exact: list[list[float]], rows: object, sequences: Sequence[Sequence[int]], starts: Sequence[int], tolerance: float
) -> bool:
    """Where a sequence's own token is in the top-k of its position, both calls give it the same logprob."""
    for values, row, seq, start in zip(exact, rows, sequences, starts, strict=True):  # type: ignore[arg-type]
        for offset, (ids, lps) in enumerate(zip(row.token_ids, row.logprobs, strict=True)):
            token = seq[start + offset]
            if token in ids and abs(lps[ids.index(token)] - values[offset]) > tolerance:
                return False
    return True


def _close(a: list[Any], b: list[Any], tolerance: float) -> bool:
    flat_a = [x for row in a for pos in row for x in pos]
    flat_b = [x for row in b for pos in row for x in pos]
    return len(flat_a) == len(flat_b) and all(abs(x - y) <= tolerance for x, y in zip(flat_a, flat_b, strict=True))


def _greedy_logprobs(backend: Backend, prompts: list[list[int]], max_tokens: int) -> tuple[list[list[int]], list[list[float]]]:
    groups = backend.sample(prompts, n=1, max_tokens=max_tokens, temperature=0.0, seed=0)
    return [g[0].tokens for g in groups], [list(g[0].logprobs) for g in groups]


def _train_once(backend: Backend, sequence: list[int], learning_rate: float) -> ForwardBackwardResult:
    datum = Datum(input_tokens=sequence[:-1], target_tokens=sequence[1:], weights=[1.0] * (len(sequence) - 1))
    result = backend.forward_backward([datum], "cross_entropy")
    backend.optim_step(learning_rate)
    return result


def check_backend(backend: Backend, *, checkpoints: bool = True, learning_rate: float = 0.05, tolerance: float = 1e-3) -> None:
    """Drive ``backend`` through the Backend protocol: tokenizer, chat rendering, sampling, teacher top-k,
    exact base and policy logprobs (``compute_logprobs``), both cross-entropy layouts, an optimizer step, and (``checkpoints``) a save / train / load round trip.

    The backend is trained a few steps by the check: pass a fresh one built for the test, with a
    tiny model. Raises :class:`ContractError` at the first broken promise.
    """
    check_conforms(backend, Backend)
    tokenizer = backend.tokenizer
    ids = tokenizer.encode("Hello world", add_special_tokens=False)
    _expect(isinstance(ids, list) and ids and all(isinstance(i, int) for i in ids), "tokenizer.encode must return a non-empty list of ints")
    _expect("Hello world" in tokenizer.decode(ids, skip_special_tokens=True), "tokenizer.decode(encode(text)) must give the text back")

    prompts = [
        backend.render_chat([{"role": "user", "content": "What is the capital of France?"}]),
        backend.render_chat([{"role": "user", "content": "Say hi."}]),
    ]
    for prompt in prompts:
        _expect(isinstance(prompt, list) and prompt and all(isinstance(i, int) for i in prompt), "render_chat must return a non-empty list of token ids")
    with_answer = backend.render_chat(
        [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}], add_generation_prompt=False
    )
    _expect(isinstance(with_answer, list) and len(with_answer) > 0, "render_chat(add_generation_prompt=False) must return token ids")

    _check_samples(backend.sample(prompts, n=2, max_tokens=4, temperature=1.0, seed=1), 2, 2, 4, "sample(n=2, temperature=1)")
    first = _greedy_logprobs(backend, prompts, 4)
    _check_samples(backend.sample(prompts, n=1, max_tokens=4, temperature=0.0, seed=0), 2, 1, 4, "sample(temperature=0)")
    _expect(_greedy_logprobs(backend, prompts, 4)[0] == first[0], "sample(temperature=0) must be deterministic (greedy)")

    sequences = [prompts[0] + ids, prompts[1] + ids[:2]]
    starts = [len(prompts[0]), len(prompts[1])]
    teacher_rows = backend.topk_logprobs(sequences, 3, starts)
    teacher = _check_topk(teacher_rows, sequences, starts, 3)
    _check_topk(backend.topk_logprobs(sequences[:1], 2, 1), sequences[:1], [1], 2)
    base = _check_logprobs(backend.compute_logprobs(sequences, starts, base=True), sequences, starts, "compute_logprobs(base=True)")
    _expect(_agrees_with_topk(base, teacher_rows, sequences, starts, tolerance), "compute_logprobs(base=True) must equal topk_logprobs' logprob of the same token under the base model")
    _check_logprobs(backend.compute_logprobs(sequences[:1], 1, base=False), sequences[:1], [1], "compute_logprobs(base=False)")

    sequence = prompts[0] + ids
    hard = Datum(input_tokens=sequence[:-1], target_tokens=sequence[1:], weights=[0.0] * (len(prompts[0]) - 1) + [1.0] * len(ids))
    result = backend.forward_backward([hard], "cross_entropy")
    _expect(isinstance(result, ForwardBackwardResult), "forward_backward must return a ForwardBackwardResult")
    _expect(_finite(result.loss_sum) and result.loss_sum > 0, f"cross_entropy loss_sum must be a positive raw sum, got {result.loss_sum}")
    _expect(isinstance(result.metrics, dict), "forward_backward metrics must be a dict")
    targets = [[t, t] for t in sequence[1:]]
    soft = Datum(input_tokens=sequence[:-1], target_tokens=targets, weights=[[0.5, 0.5] for _ in targets])
    soft_result = backend.forward_backward([soft], "cross_entropy")
    _expect(_finite(soft_result.loss_sum), "cross_entropy with (N, K) targets must return a finite loss_sum")
    metrics = backend.optim_step(learning_rate)
    _expect(isinstance(metrics, dict), "optim_step must return a dict of metrics")

    after = _check_topk(backend.topk_logprobs(sequences, 3, starts), sequences, starts, 3)
    _expect(_close(teacher, after, tolerance), "topk_logprobs must score with the frozen base model: it changed after an optimizer step")
    base_after = _check_logprobs(backend.compute_logprobs(sequences, starts, base=True), sequences, starts, "compute_logprobs(base=True)")
    _expect(
        all(abs(x - y) <= tolerance for a, b in zip(base, base_after, strict=True) for x, y in zip(a, b, strict=True)),
        "compute_logprobs(base=True) must score with the frozen base model: it changed after an optimizer step",
    )

    if not checkpoints:
        return
    saved = backend.save_checkpoint("evsys-contract-check")
    _expect(isinstance(saved, str) and saved, "save_checkpoint must return where it saved")
    before = _greedy_logprobs(backend, prompts, 4)
    for _ in range(3):
        _train_once(backend, sequence, learning_rate)
    backend.load_checkpoint(saved)
    restored = _greedy_logprobs(backend, prompts, 4)
    _expect(restored[0] == before[0], "load_checkpoint must restore the saved policy: greedy samples differ")
    _expect(
        all(abs(a - b) <= tolerance for x, y in zip(restored[1], before[1], strict=True) for a, b in zip(x, y, strict=True)),
        "load_checkpoint must restore the saved policy: sample logprobs differ",
    )


# ---------------------------------------------------------------------------------------- verifier


def check_verifier_function(
    fn: Callable[..., Any],
    *,
    passing: tuple[str, Any] | tuple[str, Any, Mapping[str, Any]],
    failing: tuple[str, Any] | tuple[str, Any, Mapping[str, Any]],
    importable: bool = True,
) -> None:
    """Check a verifier function ``(output, expected, **options) -> score``.

    ``passing`` and ``failing`` are ``(output, expected[, options])`` cases that must score 1.0 and
    0.0. Scores must be numbers in [0, 1], the same on every call, and an empty output must score
    (not raise). ``importable``: the function is reachable as a ``"module:attr"`` target and
    picklable, as registration and the parallel scorer need.
    """
    name = getattr(fn, "__qualname__", repr(fn))
    parameters = list(inspect.signature(fn).parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    _expect(len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters), f"{name} must take (output, expected, **options)")

    def score(case: tuple[Any, ...]) -> float:
        output, expected, options = case[0], case[1], dict(case[2]) if len(case) > 2 else {}
        value = fn(output, expected, **options)
        _expect(isinstance(value, (int, float)) and _finite(float(value)), f"{name}{(output, expected)!r}: score must be a number, got {value!r}")
        _expect(0.0 <= float(value) <= 1.0, f"{name}{(output, expected)!r}: score must be in [0, 1], got {value}")
        return float(value)

    _expect(score(passing) == 1.0, f"{name}: the passing case {passing!r} must score 1.0")
    _expect(score(failing) == 0.0, f"{name}: the failing case {failing!r} must score 0.0")
    _expect(score(passing) == score(passing) and score(failing) == score(failing), f"{name}: scores must be deterministic")
    score(("", *passing[1:]))
    if importable:
        module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
        _expect(module and "<locals>" not in qualname, f"{name} must be a module-level function (registered as 'module:attr')")
        try:
            _expect(load_object(f"{module}:{qualname}") is fn, f"{module}:{qualname} does not import to the same function")
            pickle.dumps(fn)
        except ContractError:
            raise
        except Exception as exc:
            raise ContractError(f"{name} is not importable / picklable as {module}:{qualname}: {type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------------------- algorithm


class ProtocolOnlyBackend:
    """Wraps a backend so that only the Backend protocol is reachable; records the calls made."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name not in BACKEND_API:
            raise ContractError(f"an algorithm used backend.{name}, which is not part of the Backend protocol")
        self.calls.append(name)
        return getattr(self._backend, name)

    @property
    def tokenizer(self) -> Any:
        """The wrapped backend's tokenizer."""
        self.calls.append("tokenizer")
        return self._backend.tokenizer


def check_algorithm(
    cls: type[Any],
    params: BaseModel,
    backend: Backend,
    batch: Sequence[Any],
    *,
    steps: int = 1,
    context: RunContext | None = None,
) -> list[dict[str, float]]:
    """Build ``cls(params, backend, context)`` and run ``steps`` train steps on ``batch``.

    The algorithm sees ``backend`` through :class:`ProtocolOnlyBackend`, so using anything beyond the
    Backend protocol fails. Each step must return ``{"train/...": finite float}`` including
    ``train/mean_loss``. Returns the steps' metrics.
    """
    check_conforms(cls, Algorithm)
    max_steps = cls.total_steps(params, len(batch))
    _expect(isinstance(max_steps, int), f"{cls.__name__}.total_steps(params, num_examples) must return an int, got {max_steps!r}")
    guarded = ProtocolOnlyBackend(backend)
    if context is None:
        with tempfile.TemporaryDirectory(prefix="evsys-contract-") as tmp:
            context = RunContext("contract", Path(tmp) / "contract", Path(tmp), None, max_steps)
    algorithm = cls(params, guarded, context)
    history = []
    for step in range(1, steps + 1):
        metrics = algorithm.train_step(list(batch), step)
        _expect(isinstance(metrics, Mapping), f"{cls.__name__}.train_step must return a dict of metrics, got {type(metrics).__name__}")
        _expect("train/mean_loss" in metrics, f"{cls.__name__}.train_step must report train/mean_loss")
        for key, value in metrics.items():
            _expect(isinstance(key, str) and key.startswith("train/"), f"{cls.__name__}: metric names must start with 'train/', got {key!r}")
            _expect(_finite(value), f"{cls.__name__}: metric {key} must be a finite number, got {value!r}")
        history.append(dict(metrics))
    state = algorithm.state_dict()
    _expect(isinstance(state, Mapping), f"{cls.__name__}.state_dict() must return a dict, got {type(state).__name__}")
    algorithm.load_state_dict(dict(state))
    return history


# ---------------------------------------------------------------------------------------- callback


def check_callback(callback: Callback, *, run_dir: Path | None = None, config: Any = None) -> None:
    """Drive ``callback`` through a short run: start, two steps (one with a NaN loss), two evaluations (one
    with a missing metric), the end. It must not raise.

    ``config`` is handed over as ``RunContext.config`` (default: a minimal stand-in with
    ``model.name``, ``backend.kind`` and ``algorithm.kind``).
    """
    check_conforms(callback, Callback)
    from types import SimpleNamespace

    config = config or SimpleNamespace(
        name="contract", model=SimpleNamespace(name="tiny"), backend=SimpleNamespace(kind="local"), algorithm=SimpleNamespace(kind="sdft")
    )
    with tempfile.TemporaryDirectory(prefix="evsys-contract-") as tmp:
        root = Path(run_dir) if run_dir is not None else Path(tmp)
        context = RunContext("contract", root / "contract", root, config, max_steps=2)
        callback.load_state_dict({})
        callback.on_phase("model: loading tiny on the local backend ...")
        callback.on_run_start(context)
        callback.on_step_end(1, {"train/mean_loss": 0.5, "train/step_seconds": 0.1})
        prediction = {"task_id": "t0", "prompt": "Q?", "answer": "A", "score": 1.0, "passed": True, "step": 1, "sample_index": 0, "expected": "A", "error": None}
        callback.eval_started("val", 1, 1)
        callback.on_eval_end(EvalResult("val", "val", 1, {"val/val/pass@1": 1.0}, [prediction]))
        callback.on_step_end(2, {"train/mean_loss": float("nan")})
        state = callback.state_dict()
        _expect(isinstance(state, Mapping), f"{type(callback).__name__}.state_dict() must return a dict, got {type(state).__name__}")
        callback.on_eval_end(EvalResult("val", "val", 2, {"val/val/pass@1": None}, []))
        callback.on_run_end("completed", {"train/mean_loss": None, "val/val/pass@1": None})

