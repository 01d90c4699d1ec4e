"""evsys.testing's contract checks, run against the built-ins (real parts: a tiny random Llama on the local backend)."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evsys.schema.plugin_bases import BaseAlgorithm
from evsys.schema.protocols import BackendSetup
from evsys.schema.rows import ChatExample, PromptExample
from evsys.testing import ContractError, check_algorithm, check_backend, check_callback, check_verifier_function

pytest.importorskip("torch")

EXAMPLES = [
    PromptExample(inputs={"question": "What is the capital of France?"}, expected="Paris"),
    PromptExample(inputs={"question": "What is the capital of Japan?"}, expected="Tokyo"),
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from evsys.backends.local.testing import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def make_backend(model: Path, run_dir: Path | None = None) -> Any:
    from evsys.backends.local.backend import LocalBackend
    from evsys.backends.local.params import LocalBackendParams

    return LocalBackend(BackendSetup(model_name=str(model), lora_rank=2, seed=0, run_dir=run_dir), LocalBackendParams(device="cpu"))


@pytest.fixture(scope="module")
def backend(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    built = make_backend(tiny_model, tmp_path_factory.mktemp("run"))
    yield built
    built.close()


def test_testing_module_imports_no_torch() -> None:
    code = "import sys, evsys.testing; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_local_backend_keeps_the_backend_contract(tiny_model: Path, tmp_path: Path) -> None:
    backend = make_backend(tiny_model, tmp_path)
    try:
        check_backend(backend)
    finally:
        backend.close()


class ShortSampler:
    """A backend that returns one completion too few: the contract check must say so."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def tokenizer(self) -> Any:
        return self._inner.tokenizer

    def sample(self, prompts: Any, n: int = 1, **kwargs: Any) -> Any:
        return [group[:-1] for group in self._inner.sample(prompts, n=n, **kwargs)]


def test_check_backend_names_the_broken_promise(backend: Any) -> None:
    with pytest.raises(ContractError, match=r"expected 2 completions per prompt, got 1"):
        check_backend(ShortSampler(backend), checkpoints=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "params", "batch"),
    [
        ("sdft", {"topk": 4, "max_new_tokens": 6}, EXAMPLES),
        ("sft", {}, [EXAMPLES[0], ChatExample(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])]),
        ("grpo", {"group_size": 4, "max_new_tokens": 4, "reward_fn": "contains"}, EXAMPLES),
    ],
)
def test_builtin_algorithms_keep_the_algorithm_contract(backend: Any, kind: str, params: dict[str, Any], batch: list[Any]) -> None:
    import evsys.algorithms.plugin as algorithms_plugin
    from evsys.schema.plugins import build_registry

    registry = build_registry(plugins=[("evsys-algorithms", algorithms_plugin)], autoload=False)
    registration = registry.get("algorithm", kind)
    model = registration.params(learning_rate=1e-3, max_steps=1, batch_size=len(batch), lora_rank=2, **params)
    history = check_algorithm(registration.load(), model, backend, batch)
    assert len(history) == 1 and "train/mean_loss" in history[0]


class PeekingAlgorithm(BaseAlgorithm):
    """Reaches past the Backend protocol (backend.model): the check must refuse it."""

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        self.backend.model.train()
        return {"train/mean_loss": 0.0}


def test_check_algorithm_refuses_non_protocol_backend_use(backend: Any) -> None:
    from evsys.schema.params import TrainingParams

    with pytest.raises(ContractError, match=r"backend\.model, which is not part of the Backend protocol"):
        check_algorithm(PeekingAlgorithm, TrainingParams(learning_rate=1e-3, max_steps=1), backend, EXAMPLES)


#: (passing, failing) cases of every built-in verifier function
VERIFIER_CASES: dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]] = {
    "contains": (("The capital is Paris.", "Paris"), ("Lyon", "Paris")),
    "exact_match": (("Paris", "paris", {"ignore_case": True}), ("Paris!", "Lyon")),
    "normalized_match": (("The Paris.", "paris"), ("Lyon", "Paris")),
    "token_f1": (("Paris", "Paris"), ("Lyon", "Paris")),
    "regex_match": (("answer: 42", r"\d+"), ("none", r"\d+")),
    "numeric_match": (("about 3.0", 3), ("4", 3)),
    "multiple_choice": (("The answer is B", "B"), ("The answer is C", "B")),
    "json_match": (('{"a": 1}', {"a": 1}), ('{"a": 2}', {"a": 1})),
    "format_check": (("abc", None, {"pattern": "^[a-c]+$"}), ("xyz", None, {"pattern": "^[a-c]+$"})),
    "python_tests": (
        ("def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3"),
        ("def add(a, b):\n    return a - b\n", "assert add(1, 2) == 3"),
    ),
    "math_equiv": (("$\\frac{1}{2}$", "0.5"), ("$3$", "0.5")),
}


def test_builtin_verifier_functions_keep_the_verifier_contract() -> None:
    import evsys.verifiers.plugin as verifiers_plugin
    from evsys.schema.plugins import build_registry

    registry = build_registry(plugins=[("evsys-verifiers", verifiers_plugin)], autoload=False)
    names = registry.names("verifier_function")
    assert sorted(VERIFIER_CASES) == names, "add a (passing, failing) case for every built-in verifier function"
    for name in names:
        passing, failing = VERIFIER_CASES[name]
        check_verifier_function(registry.get("verifier_function", name).load(), passing=passing, failing=failing)  # type: ignore[arg-type]


def out_of_range(output: str, expected: Any) -> float:
    return 2.0


def test_check_verifier_function_refuses_bad_functions() -> None:
    with pytest.raises(ContractError, match=r"score must be in \[0, 1\], got 2.0"):
        check_verifier_function(out_of_range, passing=("a", "a"), failing=("a", "b"))
    with pytest.raises(ContractError, match="module-level function"):
        check_verifier_function(lambda output, expected: float(output == expected), passing=("a", "a"), failing=("a", "b"))


def test_builtin_callbacks_keep_the_callback_contract(tmp_path: Path) -> None:
    from evsys.logging.console import ConsoleProgress
    from evsys.logging.local import LocalLogger

    check_callback(LocalLogger(), run_dir=tmp_path)
    assert (tmp_path / "contract" / "summary.md").is_file()
    stream = io.StringIO()
    check_callback(ConsoleProgress(stream=stream))
    assert stream.getvalue().splitlines()[-1].startswith("run completed after ")
