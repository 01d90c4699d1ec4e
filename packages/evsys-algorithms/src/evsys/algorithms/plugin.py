"""Registers the built-in algorithms. Imports only params modules: no torch, no backend."""

from __future__ import annotations

from evsys.algorithms.grpo.params import GRPOParams
from evsys.algorithms.sdft.params import TEACHER_EXTRA_FIELDS, SDFTParams
from evsys.algorithms.sft.params import SFTParams
from evsys.schema.plugins import hookimpl
from evsys.schema.registry import Registrar
from evsys.schema.rows import ChatExample, ChatPromptExample, PromptExample, TaskRow


@hookimpl
def evsys_register(register: Registrar) -> None:
    """Register ``sdft``, ``sft`` and ``grpo`` (each ``*_template`` param is checked as a template over the row's inputs)."""
    register.algorithm(
        "sdft",
        "evsys.algorithms.sdft.algorithm:SDFT",
        params=SDFTParams,
        templates={"user_template": frozenset(), "teacher_template": TEACHER_EXTRA_FIELDS},
        description="Self-distillation: on-policy rollouts distilled toward the frozen base model shown the gold answer.",
    )
    register.algorithm(
        "sft",
        "evsys.algorithms.sft.algorithm:SFT",
        params=SFTParams,
        row_models=(PromptExample, ChatPromptExample, ChatExample),
        description="Supervised fine-tuning: cross-entropy on gold answers / assistant turns, prompt masked.",
    )
    register.algorithm(
        "grpo",
        "evsys.algorithms.grpo.algorithm:GRPO",
        params=GRPOParams,
        row_models=(PromptExample, ChatPromptExample, TaskRow),
        description="Group-relative policy optimization with verifier rewards (importance_sampling or ppo loss).",
    )
