"""Params of ``sdft`` and its named teacher templates. Imports no torch."""

from __future__ import annotations

from pydantic import Field, field_validator

from evsys.algorithms.params import AlgorithmParams
from evsys.data.templates import template_fields

#: The SDFT paper's teacher prompt, tinker-cookbook's ``DEFAULT_DEMO_TEMPLATE`` (the default).
#: ``{prompt}`` is the rendered ``user_template`` (the question) and ``{demo}`` the gold answer, so
#: with ``user_template: "{question}"`` this is exactly the cookbook's "{question}\n\nThis is an ...".
PAPER_TEMPLATE = (
    "{prompt}\n\nThis is an example for a response to the question:\n{demo}\n\n"
    "Now answer with a response of your own, including the thinking process."
)
#: The question, then the gold answer stated plainly, in the same user turn (measured better on the
#: bundled 135M model, which rarely follows the paper's template; see docs/algorithms.md).
ANSWER_HINT_TEMPLATE = "{prompt}\n\nThe correct answer is {expected}."

#: Named teacher templates accepted by ``teacher_template``.
TEACHER_TEMPLATES: dict[str, str] = {
    "answer_hint": ANSWER_HINT_TEMPLATE,
    "paper": PAPER_TEMPLATE,
}
DEFAULT_TEACHER_TEMPLATE = "paper"
#: Placeholders a teacher template may use beyond the row's ``inputs``.
TEACHER_EXTRA_FIELDS = frozenset({"expected", "demo", "prompt"})


def resolve_teacher_template(value: str) -> str:
    """The template text of a preset name (``paper``, ``answer_hint``), or ``value`` itself."""
    return TEACHER_TEMPLATES.get(value.strip(), value)


class SDFTParams(AlgorithmParams):
    """Params of ``sdft``: the seed's six (learning_rate, max_steps, batch_size, lora_rank, topk,
    user_template) plus documented extras with defaults."""

    topk: int = Field(
        default=20,
        ge=1,
        description="How many teacher tokens are distilled per answer position (top-K of the teacher, renormalized).",
    )
    teacher_template: str = Field(
        default=DEFAULT_TEACHER_TEMPLATE,
        description=(
            "What the frozen teacher sees, as one user turn: a preset name ('paper', the default: the SDFT "
            "paper's and tinker-cookbook's prompt; 'answer_hint': the question then 'The correct answer is "
            "{expected}.') or a literal template using {prompt} (the rendered user_template), {expected} / "
            "{demo} (the gold answer) and any inputs key."
        ),
    )
    max_new_tokens: int = Field(default=64, ge=1, description="Longest student rollout, in tokens.")
    temperature: float = Field(
        default=1.0, ge=0, description="Sampling temperature of the on-policy rollouts (0: greedy)."
    )
    num_rollouts: int = Field(default=1, ge=1, description="On-policy rollouts per prompt per step.")
    skip_first_tokens: int = Field(
        default=3,
        ge=0,
        description=(
            "Don't distill the first N answer tokens of each rollout (weight 0); 3, as tinker-cookbook and the "
            "paper's reference code."
        ),
    )

    @field_validator("teacher_template")
    @classmethod
    def _check_teacher_template(cls, value: str) -> str:
        text = resolve_teacher_template(value)
        fields = template_fields(text)
        if not fields & {"expected", "demo"}:
            presets = ", ".join(sorted(TEACHER_TEMPLATES))
            raise ValueError(
                f"teacher_template must show the teacher the gold answer with {{expected}} or {{demo}}, "
                f"or name a preset ({presets})"
            )
        return value
