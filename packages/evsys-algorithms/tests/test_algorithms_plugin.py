"""The plugin registers sdft, sft and grpo with their params, rows and templates, importing no torch."""

from __future__ import annotations

import subprocess
import sys

import evsys.algorithms.plugin as plugin
from evsys.algorithms.grpo.params import GRPOParams
from evsys.algorithms.sdft.params import SDFTParams
from evsys.algorithms.sft.params import SFTParams
from evsys.schema.params import TrainingParams
from evsys.schema.plugins import build_registry
from evsys.schema.protocols import Algorithm
from evsys.schema.rows import ChatExample, ChatPromptExample, PromptExample, TaskRow


def test_algorithms_plugin_registrations() -> None:
    registry = build_registry([("evsys-algorithms", plugin)], autoload=False)
    assert registry.names("algorithm") == ["grpo", "sdft", "sft"]
    sdft = registry.get("algorithm", "sdft")
    assert sdft.params is SDFTParams and sdft.meta["row_models"] == (PromptExample, ChatPromptExample)
    assert sdft.meta["templates"] == {
        "user_template": frozenset(),
        "teacher_template": frozenset({"expected", "demo", "prompt"}),
    }
    assert registry.get("algorithm", "sft").meta["row_models"] == (PromptExample, ChatPromptExample, ChatExample)
    assert registry.get("algorithm", "grpo").meta["row_models"] == (PromptExample, ChatPromptExample, TaskRow)
    for name, params in (("sdft", SDFTParams), ("sft", SFTParams), ("grpo", GRPOParams)):
        reg = registry.get("algorithm", name)
        assert reg.params is params and issubclass(params, TrainingParams) and reg.description
        cls = reg.load()
        for method in ("train_step", "total_steps", "state_dict", "load_state_dict"):
            assert callable(getattr(cls, method)), (name, method)


def test_algorithms_plugin_imports_no_torch() -> None:
    code = (
        "import sys, evsys.algorithms.plugin, evsys.algorithms.sdft.algorithm, evsys.algorithms.sft.algorithm, "
        "evsys.algorithms.grpo.algorithm; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_algorithms_plugin_classes_satisfy_the_protocol(make_backend) -> None:
    from evsys.algorithms.sdft.algorithm import SDFT

    algo = SDFT(SDFTParams(learning_rate=1e-4, max_steps=1), make_backend(), None)
    assert isinstance(algo, Algorithm)
