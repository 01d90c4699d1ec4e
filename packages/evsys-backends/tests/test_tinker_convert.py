"""Pure conversions of the tinker backend against the real ``tinker.types``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tinker import types
from tinker.types.topk_logprobs import MASK_LOGPROB, TopkLogprobs

from evsys.backends.tinker.chat import token_ids_from_template_output
from evsys.backends.tinker.convert import (
    LOSS_FN_INPUTS,
    logprobs_from_prompt,
    loss_sum_from_output,
    sampling_params,
    to_sampled_sequence,
    to_tinker_datum,
    topk_from_response,
)
from evsys.backends.tinker.testing import ByteTokenizer
from evsys.schema.protocols import Datum, start_positions


def teacher_topk(prompt: list[int], k: int) -> TopkLogprobs:
    """Dense top-k rows laid out as the service sends them: row 0 empty, row ``i`` names ``prompt[i] + j``."""
    n = len(prompt)
    ids = np.zeros((n, k), dtype=np.int32)
    lps = np.full((n, k), MASK_LOGPROB, dtype=np.float32)
    for i in range(1, n):
        ids[i] = [int(prompt[i]) + j for j in range(k)]
        lps[i] = [-0.1 * (j + 1) - 0.01 * i for j in range(k)]
    return TopkLogprobs(token_ids=ids, logprobs=lps)


def test_datum_with_one_target_per_position() -> None:
    datum = Datum(input_tokens=[5, 6, 7], target_tokens=[6, 7, 8], weights=[0.0, 1.0, 1.0])
    out = to_tinker_datum(datum)
    assert isinstance(out, types.Datum)
    assert out.model_input.to_ints() == [5, 6, 7]
    assert set(out.loss_fn_inputs) == {"target_tokens", "weights"}
    targets, weights = out.loss_fn_inputs["target_tokens"], out.loss_fn_inputs["weights"]
    assert isinstance(targets, types.TensorData)
    assert (targets.dtype, targets.shape, targets.data) == ("int64", [3], [6, 7, 8])
    assert (weights.dtype, weights.shape, weights.data) == ("float32", [3], [0.0, 1.0, 1.0])
    assert targets.sparse_crow_indices is None


def test_datum_with_top_k_targets_for_distillation() -> None:
    targets = [[6, 9, 11], [7, 12, 13]]
    probs = [[0.5, 0.3, 0.2], [0.9, 0.1, 0.0]]
    out = to_tinker_datum(Datum(input_tokens=[5, 6], target_tokens=targets, weights=probs))
    t, w = out.loss_fn_inputs["target_tokens"], out.loss_fn_inputs["weights"]
    assert (t.dtype, t.shape) == ("int64", [2, 3])
    assert (w.dtype, w.shape) == ("float32", [2, 3])
    assert t.to_numpy().tolist() == targets
    np.testing.assert_allclose(w.to_numpy(), np.asarray(probs, dtype=np.float32))


def test_datum_for_rl_losses_carries_logprobs_and_advantages() -> None:
    datum = Datum(
        input_tokens=[1, 2, 3],
        target_tokens=np.array([2, 3, 4]),
        weights=np.ones(3),
        logprobs=[-0.1, -0.2, -0.3],
        advantages=[0.0, 1.5, 1.5],
    )
    for loss_fn in ("importance_sampling", "ppo", None):
        out = to_tinker_datum(datum, loss_fn)
        # exactly what Tinker documents for the RL losses: no weights (advantage 0 masks)
        assert set(out.loss_fn_inputs) == set(LOSS_FN_INPUTS["importance_sampling"])
        assert set(LOSS_FN_INPUTS["importance_sampling"]) == {"target_tokens", "logprobs", "advantages"}
        for name in ("logprobs", "advantages"):
            assert out.loss_fn_inputs[name].dtype == "float32"
            assert out.loss_fn_inputs[name].shape == [3]
        assert out.loss_fn_inputs["advantages"].data == [0.0, 1.5, 1.5]
    as_ce = to_tinker_datum(datum, "cross_entropy")
    assert set(as_ce.loss_fn_inputs) == {"target_tokens", "weights"}


def test_datum_missing_what_its_loss_reads() -> None:
    with pytest.raises(ValueError, match="needs weights"):
        to_tinker_datum(Datum(input_tokens=[1], target_tokens=[2]), "cross_entropy")
    with pytest.raises(ValueError, match="logprobs is missing"):
        to_tinker_datum(Datum(input_tokens=[1], target_tokens=[2], weights=[1.0]), "ppo")
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        to_tinker_datum(Datum(input_tokens=[1], target_tokens=[[2, 3]], logprobs=[0.0], advantages=[1.0]), "ppo")
    with pytest.raises(ValueError, match="unknown loss"):
        to_tinker_datum(Datum(input_tokens=[1], target_tokens=[2], weights=[1.0]), "dpo")


def test_prompt_logprobs_alignment_and_errors() -> None:
    assert logprobs_from_prompt([None, -0.5, -1.5, -2.5], 4, 2) == [-1.5, -2.5]
    assert logprobs_from_prompt([None, -0.5], 2, 2) == []
    with pytest.raises(RuntimeError, match="3 prompt logprobs for a sequence of 4"):
        logprobs_from_prompt([None, -0.5, -1.5], 4, 1)
    with pytest.raises(RuntimeError, match="no prompt logprob at position 2"):
        logprobs_from_prompt([None, None, None], 3, 2)
    assert start_positions([[1, 2], [3]], [2, 1], "topk_logprobs") == [2, 1]
    with pytest.raises(ValueError, match="topk_logprobs got 2 from_position values for 1 sequences"):
        start_positions([[1, 2]], [1, 1], "topk_logprobs")
    with pytest.raises(ValueError, match=r"compute_logprobs from_position 3 is outside \[1, 2\]"):
        start_positions([[1, 2]], 3, "compute_logprobs")


@pytest.mark.parametrize("loss_fn", ["importance_sampling", "ppo"])
def test_datum_for_a_policy_gradient_loss_holds_exactly_its_documented_inputs(loss_fn: str) -> None:
    datum = Datum(
        input_tokens=[5, 6, 7], target_tokens=[6, 7, 8], weights=[0.0, 1.0, 1.0],
        logprobs=[-0.1, -0.2, -0.3], advantages=[0.7, 1.5, -1.5],
    )
    out = to_tinker_datum(datum, loss_fn)
    assert set(out.loss_fn_inputs) == {"target_tokens", "logprobs", "advantages"}
    assert out.loss_fn_inputs["advantages"].data == [0.0, 1.5, -1.5]  # weight 0 masks through the advantage
    assert out.loss_fn_inputs["advantages"].dtype == "float32"
    with pytest.raises(ValueError, match="logprobs is missing"):
        to_tinker_datum(Datum(input_tokens=[5], target_tokens=[6], weights=[1.0], advantages=[1.0]), loss_fn)
    ce = to_tinker_datum(datum, "cross_entropy")
    assert set(ce.loss_fn_inputs) == {"target_tokens", "weights"}


@pytest.mark.parametrize(
    ("datum", "message"),
    [
        (Datum(input_tokens=[], target_tokens=[], weights=[]), "empty"),
        (Datum(input_tokens=[1, 2], target_tokens=[2], weights=[1.0]), "shape"),
        (Datum(input_tokens=[1, 2], target_tokens=[2, 3], weights=[[1.0], [1.0]]), "must match"),
        (Datum(input_tokens=[1, 2], target_tokens=[[2, 3], [3]], weights=[[1.0, 0], [1.0]]), "rectangular"),
        (Datum(input_tokens=[1, 2], target_tokens=[2, 3], weights=[1, 1], advantages=[1.0]), "advantages"),
    ],
)
def test_datum_shape_errors(datum: Datum, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_tinker_datum(datum)


def test_sampling_params() -> None:
    params = sampling_params(32, 0.0, None, 7)
    assert isinstance(params, types.SamplingParams)
    assert (params.max_tokens, params.temperature, params.stop, params.seed) == (32, 0.0, None, 7)
    assert sampling_params(8, 1.0, ("\n\n",), None).stop == ["\n\n"]


def test_topk_alignment_row_i_predicts_token_i() -> None:
    seq = [40, 41, 42, 43, 44]
    response = types.SampleResponse(sequences=[], topk_prompt_logprobs_np=teacher_topk(seq, 3))
    out = topk_from_response(response, len(seq), 2, 3)
    assert out.token_ids == [[42, 43, 44], [43, 44, 45], [44, 45, 46]]
    assert len(out.logprobs) == 3 and all(len(row) == 3 for row in out.logprobs)
    assert out.logprobs[0][0] == pytest.approx(-0.12)


def test_topk_from_list_form_pads_narrow_rows() -> None:
    rows = [None, [(7, -0.1), (8, -2.0)], [(9, -0.2)]]
    response = types.SampleResponse(sequences=[], _topk_prompt_logprobs_list=rows)
    out = topk_from_response(response, 3, 1, 2)
    assert out.token_ids == [[7, 8], [9, 0]]
    assert out.logprobs[1] == [pytest.approx(-0.2), MASK_LOGPROB]


def test_topk_rows_starting_at_position_one_and_k_truncation() -> None:
    ids = np.array([[7, 8, 9], [10, 11, 12]], dtype=np.int32)
    lps = np.full((2, 3), -1.0, dtype=np.float32)
    response = types.SampleResponse(sequences=[], topk_prompt_logprobs_np=TopkLogprobs(ids, lps))
    out = topk_from_response(response, 3, 2, 2)  # 3 tokens, rows for positions 1..2
    assert out.token_ids == [[10, 11]]


def test_topk_errors() -> None:
    with pytest.raises(RuntimeError, match="no top-k"):
        topk_from_response(types.SampleResponse(sequences=[]), 3, 1, 2)
    response = types.SampleResponse(sequences=[], topk_prompt_logprobs_np=teacher_topk([1, 2, 3], 2))
    with pytest.raises(RuntimeError, match="position 0"):
        topk_from_response(response, 3, 0, 2)
    with pytest.raises(RuntimeError, match="rows"):
        topk_from_response(response, 7, 1, 2)


def test_sampled_sequence_text_drops_eos_and_cuts_at_stop() -> None:
    tok = ByteTokenizer()
    tokens = [*tok.encode("Paris.\nMore"), tok.eos_token_id]
    seq = types.SampledSequence(
        stop_reason="stop",
        sequence_id="x",
        tokens_np=np.asarray(tokens, dtype=np.int32),
        logprobs_np=np.full(len(tokens), -0.25, dtype=np.float32),
    )
    out = to_sampled_sequence(seq, tok, stop=["\n"])
    assert out.tokens == tokens
    assert out.logprobs == [-0.25] * len(tokens)
    assert out.text == "Paris."
    assert out.stop_reason == "stop"
    no_lp = types.SampledSequence(stop_reason="length", sequence_id="y", _tokens_list=[20, 21])
    out = to_sampled_sequence(no_lp, tok)
    assert out.stop_reason == "length" and out.text == tok.decode([20, 21])
    assert all(math.isnan(x) for x in out.logprobs)


def test_loss_sum_from_metrics_and_cross_entropy_fallback() -> None:
    data = [to_tinker_datum(Datum(input_tokens=[1, 2], target_tokens=[2, 3], weights=[0.5, 1.0]))]
    out = types.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord", loss_fn_outputs=[], metrics={"loss:sum": 3.5})
    assert loss_sum_from_output(out, "ppo", data) == 3.5
    logprobs = types.TensorData.from_numpy(np.array([-2.0, -1.0], dtype=np.float32))
    out = types.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord", loss_fn_outputs=[{"logprobs": logprobs}])
    assert loss_sum_from_output(out, "cross_entropy", data) == pytest.approx(2.0)
    with pytest.raises(RuntimeError, match=r"loss:sum"):
        loss_sum_from_output(out, "importance_sampling", data)


def test_chat_template_output_forms() -> None:
    from transformers import BatchEncoding

    assert token_ids_from_template_output([1, 2, 3]) == [1, 2, 3]
    assert token_ids_from_template_output(BatchEncoding({"input_ids": [4, 5]})) == [4, 5]
    assert token_ids_from_template_output({"input_ids": [[6, 7]]}) == [6, 7]
    assert token_ids_from_template_output(np.array([8, 9])) == [8, 9]
