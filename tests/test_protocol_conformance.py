"""The built-ins and examples/plugin_package satisfy the written protocols; a plugin that lacks a declared
method fails evsys.testing's check with a message naming what it lacks (no torch: classes are checked)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from evsys.schema.plugin_bases import BaseAlgorithm, BaseBackend
from evsys.schema.plugins import default_registry
from evsys.schema.protocols import Algorithm, Backend, BaseCallback, Callback, RenderedChats
from evsys.schema.rows import PromptExample
from evsys.testing import ContractError, check_algorithm, check_callback, check_conforms, protocol_members

EXAMPLE_PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugin_package" / "src"


def _registered(kind: str) -> list[Any]:
    registry = default_registry()
    return [registration for registration in registry.registrations(kind) if registration.distribution.startswith("evsys-")]


@pytest.mark.parametrize("name", ["sdft", "sft", "grpo"])
def test_builtin_algorithms_satisfy_the_algorithm_protocol(name: str) -> None:
    check_conforms(default_registry().get("algorithm", name).load(), Algorithm)


@pytest.mark.parametrize("name", ["local", "tinker"])
def test_builtin_backends_satisfy_the_backend_protocol(name: str) -> None:
    registration = default_registry().get("backend", name)
    if registration.missing_requirement():
        pytest.skip(registration.missing_requirement())
    check_conforms(registration.load(), Backend)


def test_builtin_callbacks_satisfy_the_callback_protocol() -> None:
    checked = []
    for registration in _registered("callback"):
        if registration.missing_requirement():
            continue
        check_conforms(registration.load(), Callback)
        checked.append(registration.name)
    assert {"console", "local_logger"} <= set(checked)


def test_the_example_plugin_package_satisfies_the_callback_protocol(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN))
    from evsys_acme.callbacks import EventLog

    check_conforms(EventLog, Callback)
    check_callback(EventLog(), run_dir=tmp_path)
    assert (tmp_path / "contract" / "events.jsonl").is_file()
    sys.modules.pop("evsys_acme.callbacks", None)


def test_the_protocols_declare_what_the_engine_calls() -> None:
    assert {"total_steps", "train_step", "state_dict", "load_state_dict", "chats"} <= set(protocol_members(Algorithm))
    assert {"on_phase", "eval_started", "state_dict", "load_state_dict"} <= set(protocol_members(Callback))
    assert {
        "sample_and_score", "render_chat_for_sft", "compute_logprobs", "max_steps_off_policy",
        "on_training_submitted", "supports_dry_run", "resolve_model",
    } <= set(protocol_members(Backend))  # fmt: skip


class EventPrinter:
    """A callback written without BaseCallback, missing two methods the engine calls."""

    def on_run_start(self, context: Any) -> None: ...

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_eval_end(self, result: Any) -> None: ...

    def on_run_end(self, status: str, final_metrics: dict[str, float | None], error: str | None = None) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Any) -> None: ...


def test_a_callback_lacking_declared_methods_fails_the_check_naming_them() -> None:
    with pytest.raises(ContractError) as caught:
        check_callback(EventPrinter())  # type: ignore[arg-type]
    message = str(caught.value)
    assert message == (
        "EventPrinter lacks on_phase, eval_started of the Callback protocol; "
        "subclass evsys.schema.protocols.BaseCallback, which gives their defaults"
    )

    class Fixed(BaseCallback, EventPrinter):
        pass

    check_callback(Fixed())


def test_the_engine_refuses_a_callback_lacking_declared_methods_before_anything_loads(tmp_path: Path) -> None:
    from evsys.engine import run
    from evsys.schema.errors import ConfigError

    config = Path(__file__).resolve().parents[1] / "examples" / "sdft_walkthrough" / "config.local.yaml"
    with pytest.raises(ConfigError) as caught:
        run(config, callbacks=[EventPrinter()], overrides=[f"output_dir={tmp_path}"])  # type: ignore[list-item]
    assert str(caught.value) == (
        "run(callbacks=...): callback EventPrinter lacks on_phase, eval_started of the Callback protocol: "
        "subclass evsys.schema.protocols.BaseCallback"
    )
    assert not any(tmp_path.iterdir())


class CountingAlgorithm:
    """An algorithm written without BaseAlgorithm: it has train_step but not total_steps or the state methods."""

    def __init__(self, params: Any, backend: Any, context: Any) -> None:
        self.params = params

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        return {"train/mean_loss": 0.0}


def test_an_algorithm_lacking_declared_methods_fails_the_check_naming_them() -> None:
    from evsys.algorithms.sdft.params import SDFTParams

    params = SDFTParams(learning_rate=1e-3, max_steps=2)
    batch = [PromptExample(inputs={"question": "Q?"}, expected="A")]
    with pytest.raises(ContractError, match=r"^CountingAlgorithm lacks total_steps, chats, state_dict, load_state_dict of the Algorithm protocol; subclass evsys\.schema\.plugin_bases\.BaseAlgorithm"):
        check_algorithm(CountingAlgorithm, params, None, batch)  # type: ignore[arg-type]

    class Fixed(BaseAlgorithm):
        def train_step(self, batch: Any, step: int) -> dict[str, float]:
            return {"train/mean_loss": float(len(batch))}

    assert check_algorithm(Fixed, params, None, batch, steps=2) == [{"train/mean_loss": 1.0}] * 2  # type: ignore[arg-type]
    assert Fixed.total_steps(params, 10) == 2 and Fixed.chats(params, batch) == RenderedChats()


def test_a_method_that_does_not_take_a_declared_parameter_fails_the_check() -> None:
    class QuietCallback(BaseCallback):
        def on_run_end(self, status: str, final_metrics: dict[str, float | None]) -> None: ...

    with pytest.raises(ContractError, match=r"^QuietCallback\.on_run_end does not take error, which the Callback protocol passes$"):
        check_conforms(QuietCallback, Callback)


def test_a_run_refuses_an_algorithm_plugin_lacking_declared_methods_in_one_line(tmp_path: Path) -> None:
    import dataclasses

    from evsys.engine import run
    from evsys.schema.errors import ConfigError
    from evsys.schema.registry import PluginRegistry

    registry = PluginRegistry()
    for registration in default_registry().registrations():
        registry.add(registration)
    sdft = registry.get("algorithm", "sdft")
    registry.add(dataclasses.replace(sdft, name="counting", target=f"{__name__}:CountingAlgorithm"))
    config = Path(__file__).resolve().parents[1] / "examples" / "sdft_walkthrough" / "config.local.yaml"
    with pytest.raises(ConfigError) as caught:
        run(config, registry=registry, overrides=["algorithm.kind=counting", f"output_dir={tmp_path}"])
    [problem] = caught.value.problems
    assert problem.field == "algorithm.kind"
    assert problem.message == (
        f"algorithm 'counting' of evsys-algorithms ({__name__}:CountingAlgorithm) lacks total_steps, chats, state_dict, "
        "load_state_dict of the Algorithm protocol: subclass evsys.schema.plugin_bases.BaseAlgorithm"
    )
    assert not any(tmp_path.iterdir())


def test_a_backend_lacking_declared_methods_fails_the_check_naming_them() -> None:
    class ModelOnly:
        def sample(self, *args: Any, **kwargs: Any) -> Any: ...

    with pytest.raises(ContractError, match=r"^ModelOnly lacks tokenizer, render_chat, render_chat_for_sft, topk_logprobs, sample_and_score, .*, supports_dry_run of the Backend protocol; subclass evsys\.schema\.plugin_bases\.BaseBackend"):
        check_conforms(ModelOnly(), Backend)
    # what a backend writes itself: the model methods; BaseBackend gives every other member
    assert [name for name in protocol_members(Backend) if not hasattr(BaseBackend, name)] == [
        "tokenizer", "render_chat", "sample", "topk_logprobs", "compute_logprobs", "forward_backward",
        "optim_step", "save_checkpoint", "load_checkpoint", "close",
    ]  # fmt: skip


def test_algorithm_params_not_extending_training_params_is_named_at_algorithm_kind() -> None:
    from types import SimpleNamespace

    from pydantic import BaseModel

    from evsys.engine.run_setup import training_params
    from evsys.schema.errors import ConfigError
    from evsys.schema.yaml_source import parse_yaml

    class LooseParams(BaseModel):
        learning_rate: float = 1e-3

    document = parse_yaml("name: x\nalgorithm:\n  kind: loose\n", "config.yaml")
    validated = SimpleNamespace(
        algorithm_params=LooseParams(), config=SimpleNamespace(algorithm=SimpleNamespace(kind="loose")), document=document
    )
    with pytest.raises(ConfigError) as caught:
        training_params(validated)  # type: ignore[arg-type]
    assert caught.value.problems[0].format() == (
        "config.yaml:3:3: algorithm.kind: algorithm 'loose' declares params LooseParams, which does not extend "
        "evsys.schema.params.TrainingParams (the run needs its seed, batch_size, max_steps and lora_rank)"
    )
