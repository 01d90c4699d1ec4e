"""SDFT: datum construction, renormalization, teacher templates, and one step on a scripted backend."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from evsys.algorithms.sdft.algorithm import SDFT, build_sdft_datum, entropy, renormalize, teacher_distribution
from evsys.algorithms.sdft.params import PAPER_TEMPLATE, SDFTParams, resolve_teacher_template
from evsys.schema.protocols import TopKLogprobs
from evsys.schema.rows import PromptExample

SEED_PARAMS = {
    "learning_rate": 1.0e-4,
    "max_steps": 2,
    "batch_size": 1,
    "lora_rank": 1,
    "topk": 20,
    "user_template": "{question}",
}


def test_algorithms_sdft_renormalize_hand_values() -> None:
    probs = renormalize([math.log(0.3), math.log(0.1)])
    assert probs == pytest.approx([0.75, 0.25])
    assert renormalize([math.log(0.2)] * 4) == pytest.approx([0.25] * 4)
    assert renormalize([0.0, -math.inf]) == pytest.approx([1.0, 0.0])
    assert entropy([0.5, 0.5]) == pytest.approx(math.log(2))


def test_algorithms_sdft_datum_hand_values() -> None:
    teacher = TopKLogprobs(
        token_ids=[[5, 6], [7, 8]],
        logprobs=[[math.log(0.3), math.log(0.1)], [math.log(0.25), math.log(0.25)]],
    )
    datum = build_sdft_datum([10, 11, 12], [20, 21], teacher)
    assert datum.input_tokens == [10, 11, 12, 20]
    # rows 0 and 1 predict prompt tokens: weight 0; row 2 predicts answer token 0, row 3 answer token 1
    assert datum.target_tokens == [[0, 0], [0, 0], [5, 6], [7, 8]]
    assert datum.weights[0] == [0.0, 0.0]
    assert datum.weights[1] == [0.0, 0.0]
    assert datum.weights[2] == pytest.approx([0.75, 0.25])
    assert datum.weights[3] == pytest.approx([0.5, 0.5])
    assert datum.logprobs is None and datum.advantages is None


def test_algorithms_sdft_datum_skip_first_tokens() -> None:
    teacher = TopKLogprobs(token_ids=[[5, 6], [7, 8], [1, 2]], logprobs=[[-1.0, -2.0]] * 3)
    datum = build_sdft_datum([10, 11], [20, 21, 22], teacher, skip_first_tokens=2)
    assert len(datum.input_tokens) == 4
    assert [sum(row) for row in datum.weights] == pytest.approx([0.0, 0.0, 0.0, 1.0])
    assert datum.target_tokens[1] == [0, 0] and datum.target_tokens[3] == [1, 2]  # skipped rows: zeros, as the cookbook


def test_algorithms_sdft_datum_drops_teacher_ids_past_the_tokenizer() -> None:
    # as tinker-cookbook: ids >= len(tokenizer) (special tokens the service can return) are dropped and
    # the rest renormalized; a position with nothing left is not distilled
    assert teacher_distribution([3, 9, 4], [math.log(0.4), math.log(0.4), math.log(0.1)], vocab_size=5) == (
        [3, 4],
        pytest.approx([0.8, 0.2]),
    )
    assert teacher_distribution([9], [-0.1], vocab_size=5) == ([], [])
    teacher = TopKLogprobs(token_ids=[[1, 7], [8, 9]], logprobs=[[math.log(0.25), math.log(0.75)], [-0.1, -0.2]])
    datum = build_sdft_datum([10], [1, 2], teacher, vocab_size=5)
    assert datum.target_tokens == [[1, 0], [0, 0]]
    assert datum.weights == [pytest.approx([1.0, 0.0]), [0.0, 0.0]]
    unfiltered = build_sdft_datum([10], [1, 2], teacher)
    assert unfiltered.target_tokens == [[1, 7], [8, 9]] and unfiltered.weights[0] == pytest.approx([0.25, 0.75])


def test_algorithms_sdft_datum_rejects_misaligned_teacher() -> None:
    teacher = TopKLogprobs(token_ids=[[5]], logprobs=[[-1.0]])
    with pytest.raises(ValueError, match="1 rows for 2 completion tokens"):
        build_sdft_datum([1, 2], [3, 4], teacher)


def test_algorithms_sdft_seed_params_and_defaults() -> None:
    params = SDFTParams(**SEED_PARAMS)
    # tinker-cookbook's SDFT recipe: the paper's teacher prompt, the first 3 answer tokens not distilled
    assert params.teacher_template == "paper" and resolve_teacher_template(params.teacher_template) == PAPER_TEMPLATE
    assert params.skip_first_tokens == 3 and params.num_rollouts == 1 and params.temperature == 1.0
    with pytest.raises(ValidationError, match="extra"):
        SDFTParams(**SEED_PARAMS, top_k=3)
    for name, field in SDFTParams.model_fields.items():
        assert field.description, name


def test_algorithms_sdft_teacher_templates() -> None:
    assert resolve_teacher_template("paper") == PAPER_TEMPLATE
    assert PAPER_TEMPLATE.format(prompt="{question}", demo="{demo}") == (
        "{question}\n\nThis is an example for a response to the question:\n{demo}\n\n"
        "Now answer with a response of your own, including the thinking process."
    )
    assert resolve_teacher_template("Q: {question} A: {expected}") == "Q: {question} A: {expected}"
    SDFTParams(**SEED_PARAMS, teacher_template="paper")
    SDFTParams(**SEED_PARAMS, teacher_template="{question} (answer: {demo})")
    with pytest.raises(ValidationError, match="gold answer"):
        SDFTParams(**SEED_PARAMS, teacher_template="{question}")
    with pytest.raises(ValidationError, match="gold answer"):
        SDFTParams(**SEED_PARAMS, teacher_template="papr")


def test_algorithms_sdft_teacher_messages(make_backend) -> None:
    example = PromptExample(inputs={"question": "Capital of France?"}, expected=["Paris", "paris"])
    # the default is tinker-cookbook's DEFAULT_DEMO_TEMPLATE, character for character
    default = SDFT(SDFTParams(**SEED_PARAMS), make_backend())
    assert default.teacher_messages(example) == [
        {
            "role": "user",
            "content": "Capital of France?\n\nThis is an example for a response to the question:\nParis\n\n"
            "Now answer with a response of your own, including the thinking process.",
        }
    ]
    hint = SDFT(SDFTParams(**{**SEED_PARAMS, "teacher_template": "answer_hint"}), make_backend())
    assert hint.teacher_messages(example)[0]["content"] == "Capital of France?\n\nThe correct answer is Paris."


def test_algorithms_sdft_train_step_calls_backend_in_order(make_backend) -> None:
    backend = make_backend(completions=["Paris"], k_logprobs=[math.log(0.5), math.log(0.25)])
    params = SDFTParams(
        **{**SEED_PARAMS, "topk": 2, "batch_size": 2, "max_new_tokens": 8, "weight_decay": 0.01},
        teacher_template="answer_hint",
        skip_first_tokens=0,
    )
    algo = SDFT(params, backend, None)
    batch = [
        PromptExample(inputs={"question": "Capital of France?"}, expected="Paris"),
        PromptExample(inputs={"question": "Capital of Japan?"}, expected="Tokyo"),
    ]
    metrics = algo.train_step(batch, step=3)
    assert [name for name, _ in backend.calls] == ["sample", "topk_logprobs", "forward_backward", "optim_step"]

    sample = backend.called("sample")[0]
    student_prompt = backend.render_chat([{"role": "user", "content": "Capital of France?"}])
    assert sample["prompts"][0] == student_prompt and sample["n"] == 1 and sample["max_tokens"] == 8

    topk = backend.called("topk_logprobs")[0]
    teacher_prompt = backend.render_chat(
        [{"role": "user", "content": "Capital of Japan?\n\nThe correct answer is Tokyo."}]
    )
    completion = backend.tokenizer.encode("Paris")
    assert topk["sequences"][1] == teacher_prompt + completion
    assert topk["from_position"][1] == len(teacher_prompt) and topk["k"] == 2

    fb = backend.called("forward_backward")[0]
    assert fb["loss_fn"] == "cross_entropy" and len(fb["batch"]) == 2
    datum = fb["batch"][0]
    assert datum.input_tokens == (student_prompt + completion)[:-1]
    assert datum.weights[len(student_prompt) - 1] == pytest.approx([2 / 3, 1 / 3])
    assert backend.called("optim_step")[0] == {"learning_rate": 1.0e-4, "weight_decay": 0.01, "grad_clip": None}

    assert metrics["train/answer_tokens"] == 10.0
    assert metrics["train/mean_loss"] == pytest.approx(backend.loss_sum / 10)
    assert metrics["train/rollout_len"] == 5.0
    q = [2 / 3, 1 / 3]
    assert metrics["train/teacher_entropy"] == pytest.approx(-sum(p * math.log(p) for p in q))
    assert metrics["train/grad_norm"] == 1.5
    assert all(key.startswith("train/") for key in metrics)
    assert algo.state_dict() == {} and SDFT.total_steps(algo.params, 100) == 2


def test_algorithms_sdft_num_rollouts_and_skip(make_backend) -> None:
    backend = make_backend(completions=["ab", "abc"])
    params = SDFTParams(**{**SEED_PARAMS, "num_rollouts": 2, "skip_first_tokens": 1})
    metrics = SDFT(params, backend).train_step([PromptExample(inputs={"question": "q"}, expected="x")], step=0)
    assert backend.called("sample")[0]["n"] == 2
    assert len(backend.called("forward_backward")[0]["batch"]) == 2
    assert metrics["train/answer_tokens"] == 3.0  # (2 - 1) + (3 - 1)
    assert metrics["train/mean_loss"] == pytest.approx(backend.loss_sum / 3)


def test_algorithms_sdft_default_step_skips_three_tokens_and_filters_the_vocabulary(make_backend) -> None:
    class HundredTokens(type(make_backend().tokenizer)):  # type: ignore[misc]
        def __len__(self) -> int:
            return 100

    # the fake teacher names ids token, token + 1, token + 2 at log .5, .25, .125
    backend = make_backend(completions=["xxxbd"])
    backend._tokenizer = HundredTokens()
    metrics = SDFT(SDFTParams(**{**SEED_PARAMS, "topk": 3}), backend).train_step(
        [PromptExample(inputs={"question": "q"}, expected="x")], step=0
    )
    (datum,) = backend.called("forward_backward")[0]["batch"]
    first = len(backend.render_chat([{"role": "user", "content": "q"}])) - 1  # the row predicting answer token 0
    assert [sum(row) for row in datum.weights[first : first + 3]] == [0.0, 0.0, 0.0]  # 'xxx' not distilled
    # 'b' (98): ids 98, 99, 100; 100 is past the tokenizer: dropped, the rest renormalized
    assert datum.target_tokens[first + 3] == [98, 99, 0]
    assert datum.weights[first + 3] == pytest.approx([2 / 3, 1 / 3, 0.0])
    # 'd' (100): ids 100, 101, 102, none left: not distilled
    assert datum.weights[first + 4] == [0.0, 0.0, 0.0]
    assert metrics["train/answer_tokens"] == 1.0
    assert metrics["train/teacher_entropy"] == pytest.approx(entropy([2 / 3, 1 / 3]))


def test_algorithms_sdft_sampling_seed_varies_by_step(make_backend) -> None:
    backend = make_backend()
    algo = SDFT(SDFTParams(**SEED_PARAMS), backend)
    example = PromptExample(inputs={"question": "q"}, expected="x")
    algo.train_step([example], step=1)
    algo.train_step([example], step=2)
    seeds = [call["seed"] for call in backend.called("sample")]
    assert seeds[0] != seeds[1]
