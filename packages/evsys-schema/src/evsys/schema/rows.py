"""Rows of the files EvSys reads and writes: examples, benchmark tasks, metrics and predictions."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from evsys.schema.base import StrictModel


class PromptExample(StrictModel):
    """A prompt and the gold answer: ``{"inputs": {...}, "expected": ...}`` (SDFT, SFT, GRPO)."""

    shape: ClassVar[str] = '{"inputs": {...}, "expected": ...}'

    inputs: dict[str, Any] = Field(min_length=1, description="Template fields, e.g. {'question': '...'}.")
    expected: str | list[str] = Field(description="The gold answer; the SDFT teacher (not the student) sees it.")
    id: str | None = Field(default=None, description="Optional row identifier.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form data carried along.")


class ChatMessage(StrictModel):
    """One chat turn."""

    role: Literal["system", "user", "assistant", "tool"] = Field(description="Who speaks.")
    content: str = Field(description="What is said.")


def _chat_schema_extra(schema: dict[str, Any]) -> None:
    schema["properties"]["messages"]["contains"] = {"properties": {"role": {"const": "assistant"}}, "required": ["role"]}


class ChatExample(StrictModel):
    """A conversation ``{"messages": [...]}``; SFT trains on its assistant turns."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_chat_schema_extra)
    shape: ClassVar[str] = 'conversations to train on {"messages": [..., assistant turns]} without "expected"'

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation.")
    id: str | None = Field(default=None, description="Optional row identifier.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form data carried along.")

    @model_validator(mode="after")
    def _has_assistant_turn(self) -> ChatExample:
        if not any(m.role == "assistant" for m in self.messages):
            raise ValueError("messages need at least one assistant turn to train on")
        return self


class ChatPromptExample(StrictModel):
    """A chat prompt and the gold answer: ``{"messages": [...], "expected": ...}`` (SDFT, SFT, GRPO).

    The messages are the prompt (system and user turns, earlier assistant turns allowed) and end with
    a user turn; SDFT's teacher template is applied to that last user turn.
    """

    shape: ClassVar[str] = '{"messages": [system/user turns], "expected": ...}'

    messages: list[ChatMessage] = Field(min_length=1, description="The prompt turns; the last one is the user's.")
    expected: str | list[str] = Field(description="The gold answer; the SDFT teacher (not the student) sees it.")
    id: str | None = Field(default=None, description="Optional row identifier.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form data carried along.")

    @model_validator(mode="after")
    def _ends_with_user(self) -> ChatPromptExample:
        if self.messages[-1].role != "user":
            raise ValueError(
                f"a chat prompt must end with a user turn (the last one is '{self.messages[-1].role}')"
            )
        return self


class VerifierSpec(StrictModel):
    """How a task's output is scored."""

    kind: str = Field(default="in_process", min_length=1, description="'in_process', 'python', 'subprocess' or a plugin's kind.")
    fn_name: str | None = Field(
        default=None, description="in_process: a registered function name; python: 'module:function'."
    )
    expected: Any = Field(default=None, description="The reference answer; a list means any of them.")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword options for the verifier function.")
    command: list[str] | str | None = Field(default=None, description="subprocess: the program and arguments to run.")
    timeout: float | None = Field(default=None, gt=0, description="Seconds before the verification counts as failed.")
    sandbox: Literal["auto", "bwrap", "none"] | None = Field(
        default=None,
        description="Where its programs run: 'bwrap' demands the bubblewrap sandbox, 'none' the plain runner, "
        "'auto' bubblewrap where it works (unset: $EVSYS_VERIFIER_SANDBOX, else auto).",
    )


def _present(key: str) -> dict[str, Any]:
    return {"required": [key], "properties": {key: {"not": {"type": "null"}}}}


_TASK_PROMPT_KEYS = ("instruction", "prompt", "question", "messages")
_TASK_SCHEMA_RULES: dict[str, Any] = {
    "allOf": [
        {"anyOf": [_present("task_id"), _present("id")]},
        {"oneOf": [_present(key) for key in _TASK_PROMPT_KEYS]},
        {"anyOf": [_present("verifier"), _present("target"), _present("answer")]},
    ]
}


class TaskRow(StrictModel):
    """A benchmark task: one line of ``tasks.jsonl``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_TASK_SCHEMA_RULES)
    shape: ClassVar[str] = 'benchmark tasks {"task_id": ..., "instruction": ..., "verifier": {...}}'

    task_id: str | int | None = Field(default=None, description="Task identifier ('id' is accepted too).")
    id: str | int | None = Field(default=None, description="Alias of task_id.")
    instruction: str | None = Field(default=None, description="The prompt shown to the model.")
    prompt: str | None = Field(default=None, description="Alias of instruction.")
    question: str | None = Field(default=None, description="Alias of instruction.")
    messages: list[ChatMessage] | None = Field(default=None, description="A chat prompt instead of an instruction.")
    verifier: VerifierSpec | None = Field(default=None, description="How the output is scored.")
    target: Any = Field(default=None, description="Fallback for verifier.expected.")
    answer: Any = Field(default=None, description="Fallback for verifier.expected.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form data carried along.")

    @model_validator(mode="after")
    def _check(self) -> TaskRow:
        if self.task_id is None and self.id is None:
            raise ValueError("a task needs 'task_id' (or 'id')")
        prompts = [k for k in _TASK_PROMPT_KEYS if getattr(self, k) is not None]
        if len(prompts) != 1:
            raise ValueError("a task needs exactly one of 'instruction', 'prompt', 'question' or 'messages'")
        if self.verifier is None and self.target is None and self.answer is None:
            raise ValueError("a task needs a 'verifier' (or a 'target' / 'answer' to compare with)")
        return self

    @property
    def resolved_id(self) -> str:
        """The task's identifier as a string."""
        return str(self.task_id if self.task_id is not None else self.id)

    @property
    def resolved_expected(self) -> Any:
        """``verifier.expected``, else ``target``, else ``answer``."""
        if self.verifier is not None and self.verifier.expected is not None:
            return self.verifier.expected
        return self.target if self.target is not None else self.answer


class MetricsRow(StrictModel):
    """One line of ``metrics.jsonl``."""

    step: int = Field(ge=0, description="Training step the metrics belong to (0: before training).")
    split: str = Field(min_length=1, description="'train', or the benchmark's split label.")
    metrics: dict[str, float | None] = Field(
        description="Metric name -> value; train keys are 'train/...', benchmark keys '<split>/<benchmark>/<metric>'."
    )


class PredictionRow(StrictModel):
    """One line of ``predictions/<benchmark>.jsonl``: the student's answer to a task."""

    task_id: str = Field(description="The task's identifier.")
    prompt: str = Field(description="The prompt as shown to the model (chat-rendered text).")
    answer: str = Field(description="The model's answer: what the verifier scored (the text after a thinking block).")
    output: str | None = Field(
        default=None,
        description="The whole generated text, present when it differs from answer (a thinking model's "
        "reasoning and answer).",
    )
    score: float = Field(ge=0.0, le=1.0, description="Verifier score in [0, 1].")
    passed: bool = Field(description="Whether the score counts as a pass.")
    step: int | None = Field(default=None, ge=0, description="Training step at which it was scored.")
    sample_index: int = Field(default=0, ge=0, description="Which of the task's samples this is.")
    expected: Any = Field(default=None, description="The reference answer.")
    error: str | None = Field(default=None, description="The verifier's error, when it raised.")
