"""Chat prompt rows ``{"messages": [system/user turns], "expected": ...}`` in SDFT, GRPO and SFT.

The student sees the messages as given; SDFT's teacher sees the same turns with the last user turn
rewritten by the teacher template; GRPO scores against ``expected``; SFT appends the answer.
"""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from evsys.algorithms.grpo.algorithm import GRPO
from evsys.algorithms.grpo.params import GRPOParams
from evsys.algorithms.sdft.algorithm import SDFT
from evsys.algorithms.sdft.params import SDFTParams, resolve_teacher_template
from evsys.algorithms.sft.algorithm import example_messages
from evsys.data.templates import render_template
from evsys.schema.rows import ChatPromptExample, PromptExample

SYSTEM = {"role": "system", "content": "Answer with one word."}
USER = {"role": "user", "content": "Capital of France?"}
CHAT = ChatPromptExample(messages=[SYSTEM, USER], expected="Paris")
SDFT_PARAMS = {"learning_rate": 1.0e-4, "max_steps": 2, "batch_size": 2, "lora_rank": 1, "topk": 2, "max_new_tokens": 8}


def test_chat_prompt_must_end_with_a_user_turn() -> None:
    with pytest.raises(ValidationError, match="must end with a user turn"):
        ChatPromptExample(messages=[USER, {"role": "assistant", "content": "Paris"}], expected="Paris")


def test_sdft_teacher_rewrites_only_the_last_user_turn(make_backend) -> None:
    params = SDFTParams(**SDFT_PARAMS)
    algo = SDFT(params, make_backend())
    template = resolve_teacher_template(params.teacher_template)
    teacher = render_template(template, {"prompt": USER["content"], "expected": "Paris", "demo": "Paris"})
    assert algo.teacher_messages(CHAT) == [SYSTEM, {"role": "user", "content": teacher}]
    # a prompt row built from the same text gets the same teacher turn
    assert algo.teacher_messages(PromptExample(inputs={"question": USER["content"]}, expected="Paris"))[-1]["content"] == teacher


def test_sdft_step_on_chat_and_prompt_rows(make_backend) -> None:
    backend = make_backend(completions=["Paris"], k_logprobs=[math.log(0.5), math.log(0.25)])
    algo = SDFT(SDFTParams(**SDFT_PARAMS), backend)
    algo.train_step([CHAT, PromptExample(inputs={"question": "Capital of Japan?"}, expected="Tokyo")], step=0)
    sample = backend.called("sample")[0]
    assert sample["prompts"][0] == backend.render_chat([SYSTEM, USER])
    assert sample["prompts"][1] == backend.render_chat([{"role": "user", "content": "Capital of Japan?"}])
    topk = backend.called("topk_logprobs")[0]
    teacher_prompt = backend.render_chat(algo.teacher_messages(CHAT))
    assert topk["sequences"][0] == teacher_prompt + backend.tokenizer.encode("Paris")
    assert topk["from_position"][0] == len(teacher_prompt)


def test_grpo_chat_row_prompt_and_reward(make_backend) -> None:
    backend = make_backend(completions=["Paris", "Rome"])
    algo = GRPO(GRPOParams(learning_rate=1e-5, max_steps=1, group_size=2, reward_fn="exact_match"), backend)
    prompt, task = algo.prompt_and_task(CHAT, 0)
    assert prompt == backend.render_chat([SYSTEM, USER])
    assert task.resolved_expected == "Paris"
    assert algo.reward("Paris", task) == (1.0, False)
    assert algo.reward("Rome", task) == (0.0, False)


def test_sft_chat_prompt_row_appends_the_answer() -> None:
    assert example_messages(CHAT, "{question}") == [SYSTEM, USER, {"role": "assistant", "content": "Paris"}]
