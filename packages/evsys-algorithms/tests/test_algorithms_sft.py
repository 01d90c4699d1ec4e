"""SFT: loss masking on prompt rows and chat rows, truncation, epochs, one step on a scripted backend."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from evsys.algorithms.sft.algorithm import SFT, assistant_mask, build_sft_datum, sft_total_steps
from evsys.algorithms.sft.params import SFTParams
from evsys.schema.rows import ChatExample, PromptExample


def test_algorithms_sft_datum_hand_values() -> None:
    datum = build_sft_datum([1, 2, 3, 4, 5], [False, False, False, True, True])
    assert datum.input_tokens == [1, 2, 3, 4]
    assert datum.target_tokens == [2, 3, 4, 5]
    assert datum.weights == [0.0, 0.0, 1.0, 1.0]  # rows predicting tokens 4 and 5
    truncated = build_sft_datum([1, 2, 3, 4, 5], [False, False, False, True, True], max_length=4)
    assert truncated.input_tokens == [1, 2, 3] and truncated.weights == [0.0, 0.0, 1.0]


def test_algorithms_sft_datum_mean_reduction_hand_values() -> None:
    # tinker-cookbook's reduction="mean": the example's weights sum to 1, normalised after truncation
    mask = [False, True, True, True, True]
    assert build_sft_datum([1, 2, 3, 4, 5], mask, reduction="mean").weights == pytest.approx([0.25] * 4)
    assert build_sft_datum([1, 2, 3, 4, 5], mask, max_length=3, reduction="mean").weights == pytest.approx([0.5, 0.5])
    assert build_sft_datum([1, 2], [False, False], reduction="mean").weights == [0.0]  # nothing to normalise
    with pytest.raises(ValueError, match="reduction"):
        build_sft_datum([1, 2], [False, True], reduction="sum")


def test_algorithms_sft_prompt_row_masks_the_prompt(make_backend) -> None:
    backend = make_backend()
    algo = SFT(SFTParams(learning_rate=1e-3, max_steps=1), backend)
    datum = algo.build_datum(PromptExample(inputs={"question": "Hi"}, expected=["Yo", "Hey"]))
    full = backend.render_chat(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], add_generation_prompt=False
    )
    assert full == backend.tokenizer.encode("<user>Hi|<assistant>Yo|")
    prompt_len = len("<user>Hi|<assistant>")  # 20 tokens; the answer "Yo|" is tokens 20, 21, 22
    assert datum.input_tokens == full[:-1]
    assert datum.weights == pytest.approx([0.0] * (prompt_len - 1) + [1 / 3, 1 / 3, 1 / 3])  # reduction: mean
    trained = [t for t, w in zip(datum.target_tokens, datum.weights, strict=True) if w]
    assert backend.tokenizer.decode(trained) == "Yo|"


def test_algorithms_sft_chat_row_trains_assistant_turns_only(make_backend) -> None:
    backend = make_backend()
    example = ChatExample(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris"},
        ]
    )
    algo = SFT(SFTParams(learning_rate=1e-3, max_steps=1), backend)
    datum = algo.build_datum(example)
    trained = "".join(chr(t) if w else "_" for t, w in zip(datum.target_tokens, datum.weights, strict=True)).split("_")
    assert [piece for piece in trained if piece] == ["Hello|", "Paris|"]

    tokens, mask = assistant_mask(backend, [{"role": m.role, "content": m.content} for m in example.messages])
    assert sum(mask) == len("Hello|") + len("Paris|")
    assert len(tokens) == len(mask)


def test_algorithms_sft_train_step(make_backend) -> None:
    backend = make_backend()
    params = SFTParams(learning_rate=1e-3, max_steps=5, batch_size=2, grad_clip=None)
    batch = [
        PromptExample(inputs={"question": "Hi"}, expected="Yo"),
        ChatExample(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "bcd"}]),
    ]
    assert params.reduction == "mean"  # the cookbook's SFT default
    metrics = SFT(params, backend).train_step(batch, step=1)
    assert [name for name, _ in backend.calls] == ["forward_backward", "optim_step"]
    fb = backend.called("forward_backward")[0]
    assert fb["loss_fn"] == "cross_entropy"
    assert [sum(d.weights) for d in fb["batch"]] == pytest.approx([1.0, 1.0])  # each example's weights sum to 1
    assert backend.called("optim_step")[0]["grad_clip"] is None
    assert metrics["train/target_tokens"] == 3 + 4  # "Yo|" and "bcd|"
    assert metrics["train/mean_loss"] == pytest.approx(backend.loss_sum / 2)  # per example

    raw = make_backend()
    metrics = SFT(SFTParams(learning_rate=1e-3, max_steps=5, batch_size=2, reduction="none"), raw).train_step(batch, 1)
    assert [sum(d.weights) for d in raw.called("forward_backward")[0]["batch"]] == [3.0, 4.0]
    assert metrics["train/mean_loss"] == pytest.approx(raw.loss_sum / 7)  # per token


def test_algorithms_sft_truncated_away_answer_skips(make_backend) -> None:
    backend = make_backend()
    params = SFTParams(learning_rate=1e-3, max_steps=5, max_length=5)
    metrics = SFT(params, backend).train_step([PromptExample(inputs={"question": "Hi"}, expected="Yo")], step=1)
    assert backend.calls == [] and metrics["train/skipped"] == 1.0 and metrics["train/mean_loss"] == 0.0


def test_algorithms_sft_steps_from_epochs(make_backend) -> None:
    assert sft_total_steps(SFTParams(learning_rate=1e-3, epochs=2, batch_size=4), 10) == 5
    assert sft_total_steps(SFTParams(learning_rate=1e-3, epochs=0.5, batch_size=1), 3) == 2
    assert sft_total_steps(SFTParams(learning_rate=1e-3, epochs=3, max_steps=4), 10) == 4
    assert SFT.total_steps(SFTParams(learning_rate=1e-3, max_steps=7), 1000) == 7
    with pytest.raises(ValidationError, match="max_steps or epochs"):
        SFTParams(learning_rate=1e-3)
    with pytest.raises(ValidationError, match="extra"):
        SFTParams(learning_rate=1e-3, max_steps=1, epoch=2)


def test_algorithms_sft_chat_row_opening_with_assistant(make_backend) -> None:
    backend = make_backend()
    example = ChatExample(
        messages=[
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "y"},
        ]
    )
    datum = SFT(SFTParams(learning_rate=1e-3, max_steps=1), backend).build_datum(example)
    marks = "".join(chr(t) if w else "_" for t, w in zip(datum.target_tokens, datum.weights, strict=True))
    assert [piece for piece in marks.split("_") if piece] == ["Hi!|", "y|"]
