"""GRPO: advantages, datum layout, the loss selection, KL folding, and steps on a scripted backend."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from evsys.algorithms.grpo.algorithm import GRPO, build_rl_datum, group_advantages, kl_log_ratios
from evsys.algorithms.grpo.params import GRPOParams
from evsys.schema.protocols import SampledSequence
from evsys.schema.rows import PromptExample, TaskRow


class ScriptedGRPO(GRPO):
    """GRPO with a reward of 1.0 for outputs containing the expected text (no verifier package needed)."""

    def reward(self, output: str, task: TaskRow) -> tuple[float, bool]:
        expected = task.resolved_expected
        expected = expected if isinstance(expected, list) else [expected]
        return (1.0 if any(e in output for e in expected) else 0.0), False


def test_algorithms_grpo_advantages_hand_values() -> None:
    # the default centers only, as tinker-cookbook's compute_advantages (rewards - mean)
    assert group_advantages([1, 0, 0, 1]) == pytest.approx([0.5, -0.5, -0.5, 0.5])
    assert group_advantages([0, 0, 0, 1]) == pytest.approx([-0.25, -0.25, -0.25, 0.75])
    # scale_rewards: also divided by the group's population std (+ 1e-6), as the GRPO paper and TRL
    assert group_advantages([1, 0, 0, 1], scale_rewards=True) == pytest.approx([1, -1, -1, 1], abs=1e-5)
    std = math.sqrt(0.1875)
    assert group_advantages([0, 0, 0, 1], scale_rewards=True) == pytest.approx(
        [-0.25 / std, -0.25 / std, -0.25 / std, 0.75 / std], rel=1e-4
    )
    assert group_advantages([0.7, 0.7, 0.7]) == [0.0, 0.0, 0.0]
    assert group_advantages([1, 1], scale_rewards=True) == [0.0, 0.0]


def test_algorithms_grpo_datum_hand_values() -> None:
    datum = build_rl_datum([1, 2, 3], [4, 5], [-0.1, -0.2], 0.5)
    assert datum.input_tokens == [1, 2, 3, 4]
    assert datum.target_tokens == [2, 3, 4, 5]
    assert datum.weights is None  # the RL losses take no weights: the prompt is masked by advantage 0
    assert datum.logprobs == [0.0, 0.0, -0.1, -0.2]
    assert datum.advantages == [0.0, 0.0, 0.5, 0.5]
    per_token = build_rl_datum([1], [4, 5], [-0.1, -0.2], [0.3, -0.3])
    assert per_token.advantages == [0.3, -0.3] and per_token.input_tokens == [1, 4]


def test_algorithms_grpo_kl_log_ratios_use_exact_base_logprobs() -> None:
    sample = SampledSequence(tokens=[7, 9], logprobs=[-0.1, -0.4], text="", stop_reason="stop")
    assert kl_log_ratios(sample, [-2.0, -0.5]) == pytest.approx([1.9, 0.1])
    with pytest.raises(ValueError):
        kl_log_ratios(sample, [-2.0])


def test_algorithms_grpo_params() -> None:
    params = GRPOParams(learning_rate=1e-5, max_steps=3)
    assert params.group_size == 4 and params.loss_fn == "importance_sampling"
    assert params.scale_rewards is False and params.kl_coef == 0.0 and params.temperature == 1.0  # the cookbook's
    with pytest.raises(ValidationError, match="extra"):
        GRPOParams(learning_rate=1e-5, max_steps=3, kl_topk=20)  # the top-K lookup is gone: logprobs are exact
    with pytest.raises(ValidationError):
        GRPOParams(learning_rate=1e-5, max_steps=3, loss_fn="dpo")
    with pytest.raises(ValidationError, match="clip_low_threshold"):
        GRPOParams(learning_rate=1e-5, max_steps=3, clip_low_threshold=1.1)
    with pytest.raises(ValidationError, match="extra"):
        GRPOParams(learning_rate=1e-5, max_steps=3, groupsize=2)
    for name, field in GRPOParams.model_fields.items():
        assert field.description, name


def test_algorithms_grpo_step_skips_equal_groups(make_backend) -> None:
    backend = make_backend(completions=["Paris!", "Lyon", "Paris", "Nice", "x", "y", "z", "w"])
    params = GRPOParams(learning_rate=1e-5, max_steps=3, group_size=4, batch_size=2)
    batch = [
        PromptExample(inputs={"question": "Capital of France?"}, expected="Paris"),
        PromptExample(inputs={"question": "Capital of Japan?"}, expected="Tokyo"),  # all 0: no signal
    ]
    metrics = ScriptedGRPO(params, backend).train_step(batch, step=2)
    assert [name for name, _ in backend.calls] == ["sample", "forward_backward", "optim_step"]
    assert backend.called("sample")[0]["n"] == 4
    fb = backend.called("forward_backward")[0]
    assert fb["loss_fn"] == "importance_sampling" and fb["config"] is None
    assert len(fb["batch"]) == 4  # the Japan group is left out
    first = fb["batch"][0]
    prompt = backend.render_chat([{"role": "user", "content": "Capital of France?"}])
    assert first.input_tokens[: len(prompt)] == prompt
    assert first.advantages[len(prompt) - 1 :] == pytest.approx([0.5] * len("Paris!"))  # 1 - mean(1, 0, 1, 0)
    assert first.advantages[: len(prompt) - 1] == [0.0] * (len(prompt) - 1) and first.weights is None
    assert first.logprobs[len(prompt) - 1 :] == [-0.5] * len("Paris!")
    assert metrics["train/reward_mean"] == pytest.approx(2 / 8)
    assert metrics["train/reward_std"] == pytest.approx(math.sqrt(2 / 8 * 6 / 8))
    assert metrics["train/frac_groups_all_equal"] == 0.5
    tokens = len("Paris!") + len("Lyon") + len("Paris") + len("Nice")
    assert metrics["train/tokens"] == tokens
    assert metrics["train/mean_loss"] == pytest.approx(backend.loss_sum / tokens)


def test_algorithms_grpo_all_groups_equal_skips_the_step(make_backend) -> None:
    backend = make_backend(completions=["nope"])
    params = GRPOParams(learning_rate=1e-5, max_steps=3, group_size=2)
    metrics = ScriptedGRPO(params, backend).train_step([PromptExample(inputs={"question": "q"}, expected="yes")], 1)
    assert [name for name, _ in backend.calls] == ["sample"]
    assert metrics["train/skipped"] == 1.0 and metrics["train/mean_loss"] == 0.0
    assert metrics["train/frac_groups_all_equal"] == 1.0 and metrics["train/reward_std"] == 0.0


def test_algorithms_grpo_ppo_config_and_task_rows(make_backend) -> None:
    backend = make_backend(completions=["42", "41"])
    params = GRPOParams(
        learning_rate=1e-5, max_steps=3, group_size=2, loss_fn="ppo", clip_low_threshold=0.9, clip_high_threshold=1.1
    )
    task = TaskRow(
        task_id="t1", instruction="6 * 7 = ?", verifier={"kind": "in_process", "fn_name": "contains", "expected": "42"}
    )
    ScriptedGRPO(params, backend).train_step([task], step=0)
    assert backend.called("sample")[0]["prompts"][0] == backend.render_chat([{"role": "user", "content": "6 * 7 = ?"}])
    fb = backend.called("forward_backward")[0]
    assert fb["loss_fn"] == "ppo" and fb["config"] == {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}


def test_algorithms_grpo_kl_penalty_folds_into_advantages(make_backend) -> None:
    # the base model's exact logprob of each sampled token: 'a' -> log .5, 'b' -> log .01, 'c' -> log .25
    base = {ord("a"): math.log(0.5), ord("b"): math.log(0.01), ord("c"): math.log(0.25)}
    backend = make_backend(completions=["ab", "c"], base_logprob=lambda token: base[token])
    params = GRPOParams(learning_rate=1e-5, max_steps=3, group_size=2, kl_coef=0.1)
    batch = [PromptExample(inputs={"question": "q"}, expected="a")]
    metrics = ScriptedGRPO(params, backend).train_step(batch, 0)
    assert [name for name, _ in backend.calls] == ["sample", "compute_logprobs", "forward_backward", "optim_step"]
    (call,) = backend.called("compute_logprobs")
    prompt = backend.render_chat([{"role": "user", "content": "q"}])
    assert call["base"] is True and call["from_position"] == [len(prompt), len(prompt)]
    assert call["sequences"] == [[*prompt, ord("a"), ord("b")], [*prompt, ord("c")]]
    # sampler logprobs are -0.5: log-ratios d = -0.5 - base; A += 0.1 * (mean(d) - d_t); rewards 1, 0 -> A = +-0.5
    d = [-0.5 - math.log(0.5), -0.5 - math.log(0.01), -0.5 - math.log(0.25)]
    mean = sum(d) / 3
    assert metrics["train/kl_base"] == pytest.approx(mean)
    datums = backend.called("forward_backward")[0]["batch"]
    n = len(prompt) - 1
    assert datums[0].advantages[n:] == pytest.approx([0.5 + 0.1 * (mean - d[0]), 0.5 + 0.1 * (mean - d[1])])
    assert datums[1].advantages[n:] == pytest.approx([-0.5 + 0.1 * (mean - d[2])])
    assert datums[0].advantages[:n] == [0.0] * n  # the prompt stays masked


def test_algorithms_grpo_kl_penalty_trains_groups_with_equal_rewards(make_backend) -> None:
    # as tinker-cookbook (remove_constant_reward_groups=False): with a KL penalty, a group with equal
    # rewards still carries the penalty's signal; without one it is left out and the step skipped
    base = {ord("x"): math.log(0.5), ord("y"): math.log(0.1)}
    batch = [PromptExample(inputs={"question": "q"}, expected="no")]
    backend = make_backend(completions=["x", "y"], base_logprob=lambda token: base[token])
    metrics = ScriptedGRPO(GRPOParams(learning_rate=1e-5, max_steps=3, group_size=2, kl_coef=1.0), backend).train_step(batch, 0)
    assert metrics["train/skipped"] == 0.0 and metrics["train/frac_groups_all_equal"] == 1.0
    datums = backend.called("forward_backward")[0]["batch"]
    d = [-0.5 - math.log(0.5), -0.5 - math.log(0.1)]
    mean = sum(d) / 2
    assert [x for x in datums[0].advantages if x] == pytest.approx([mean - d[0]])
    assert [x for x in datums[1].advantages if x] == pytest.approx([mean - d[1]])
    plain = make_backend(completions=["x", "y"])
    skipped = ScriptedGRPO(GRPOParams(learning_rate=1e-5, max_steps=3, group_size=2), plain).train_step(batch, 0)
    assert skipped["train/skipped"] == 1.0 and [name for name, _ in plain.calls] == ["sample"]


def test_algorithms_grpo_reward_uses_the_verifier(make_backend) -> None:
    pytest.importorskip("evsys.verifiers.scoring", reason="evsys.verifiers.scoring is not built yet")
    backend = make_backend(completions=["It is Paris.", "No idea"])
    params = GRPOParams(learning_rate=1e-5, max_steps=3, group_size=2, reward_fn="contains")
    metrics = GRPO(params, backend).train_step([PromptExample(inputs={"question": "q"}, expected="Paris")], 0)
    assert metrics["train/reward_mean"] == pytest.approx(0.5)
    assert metrics["train/reward_errors"] == 0.0
