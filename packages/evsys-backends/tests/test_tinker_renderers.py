"""The Tinker backend renders chats with tml-renderers, as tinker-cookbook does: prompts, SFT weights, stop tokens.

The backends here are dry-run backends: the real adapter on the strict simulated service, whose tokenizer
and limits are the model's own (the renderer's tokenizer, the catalog's context window and vocabulary).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tinker")
tml = pytest.importorskip("tml_renderers")

from evsys.algorithms.common import user_messages  # noqa: E402
from evsys.algorithms.sdft.algorithm import SDFT  # noqa: E402
from evsys.algorithms.sdft.params import SDFTParams  # noqa: E402
from evsys.algorithms.sft.algorithm import SFT  # noqa: E402
from evsys.algorithms.sft.params import SFTParams  # noqa: E402
from evsys.backends.tinker.backend import TinkerBackend  # noqa: E402
from evsys.backends.tinker.params import TinkerBackendParams  # noqa: E402
from evsys.backends.tinker.renderers import choose_renderer, default_renderer  # noqa: E402
from evsys.backends.tinker.simulator import SimulatedService  # noqa: E402
from evsys.schema.errors import EvsysError  # noqa: E402
from evsys.schema.protocols import BackendSetup  # noqa: E402
from evsys.schema.rows import ChatExample, PromptExample  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
WALKTHROUGH = ROOT / "examples" / "sdft_walkthrough"
QWEN35 = "Qwen/Qwen3.5-4B"


def _backend(model: str = QWEN35, **params: object) -> TinkerBackend:
    """A dry-run backend: the run's renderer on the simulated service with the model's catalog limits."""
    return TinkerBackend(BackendSetup(model_name=model, lora_rank=1, dry_run=True), TinkerBackendParams(**params))


def _tml_prompt(renderer: object, messages: list[dict[str, str]]) -> list[int]:
    spans, _ = renderer.render_for_completion(tml.chat.MessageList.from_oss_messages(messages))  # type: ignore[attr-defined]
    return [t for span in spans for t in span.span.tokens]


def _walkthrough_rows() -> list[PromptExample]:
    lines = (WALKTHROUGH / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    return [PromptExample.model_validate(json.loads(line)) for line in lines if line.strip()]


def test_models_get_the_cookbook_renderer_with_thinking_off() -> None:
    assert default_renderer(QWEN35) == "qwen3_5_disable_thinking"
    assert default_renderer("Qwen/Qwen3-8B") == "qwen3_disable_thinking"
    assert default_renderer("Qwen/Qwen3-4B-Instruct-2507") == "qwen3_instruct"
    assert default_renderer("Qwen/Qwen3.8-27B") == "qwen3_8_disable_thinking"
    assert default_renderer("nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-BF16") == "nemotron3_disable_thinking"
    for uncovered in ("meta-llama/Llama-3.1-8B", "openai/gpt-oss-20b", "Qwen/Qwen3.5-9B-Base"):
        assert default_renderer(uncovered) == "huggingface"
    assert choose_renderer(QWEN35).thinking is False
    assert choose_renderer(QWEN35, "qwen3_5").thinking is True
    with pytest.raises(ValueError, match="unknown renderer 'llama3'"):
        choose_renderer("meta-llama/Llama-3.1-8B", "llama3")


def test_seed_student_and_teacher_prompts_equal_tml_disable_thinking_tokens() -> None:
    backend = _backend()
    reference = tml.renderers.Qwen35.disable_thinking()
    params = SDFTParams(learning_rate=1e-4, max_steps=2, batch_size=1, lora_rank=1, topk=20, user_template="{question}")
    algo = SDFT(params, backend, None)
    rows = _walkthrough_rows()
    assert rows
    for row in rows:
        student = user_messages(params.user_template, row.inputs)
        student_ids = backend.render_chat(student)
        assert student_ids == _tml_prompt(reference, [dict(m) for m in student])
        teacher = algo.teacher_messages(row)
        assert backend.render_chat(teacher) == _tml_prompt(reference, [dict(m) for m in teacher])
        assert backend.tokenizer.decode(student_ids[-6:]).endswith("<think>\n\n</think>\n\n")


def test_the_simulated_service_receives_the_disable_thinking_tokens() -> None:
    backend = _backend()
    reference = tml.renderers.Qwen35.disable_thinking()
    params = SDFTParams(
        learning_rate=1e-4, max_steps=1, batch_size=1, lora_rank=1, topk=3, num_rollouts=2, max_new_tokens=4, user_template="{question}"
    )
    algo = SDFT(params, backend, None)
    row = _walkthrough_rows()[0]
    algo.train_step([row], step=1)
    student = _tml_prompt(reference, [dict(m) for m in user_messages(params.user_template, row.inputs)])
    teacher = _tml_prompt(reference, [dict(m) for m in algo.teacher_messages(row)])
    service = backend._simulated
    clients = [*service.sampling_clients, *(c for t in service.training_clients for c in t.samplers)]
    requests = [r for c in clients for r in c.requests]
    rollouts = [list(r["prompt"].to_ints()) for r in requests if not r["topk_prompt_logprobs"]]
    scored = [list(r["prompt"].to_ints()) for r in requests if r["topk_prompt_logprobs"]]
    assert rollouts and all(prompt == student for prompt in rollouts)
    assert scored and all(prompt[: len(teacher)] == teacher for prompt in scored)
    assert all(list(r["sampling_params"].stop) == [248046] for r in requests if not r["topk_prompt_logprobs"])
    backend.close()


def test_the_pseudo_model_samples_only_ids_the_tokenizer_decodes() -> None:
    backend = _backend()
    tokenizer = backend.tokenizer
    assert tokenizer.token_count == 248077  # Qwen3.5's tokens; its embedding (the service's vocabulary) has 248320 rows
    tokenizer.decode([248076])
    with pytest.raises(ValueError):
        tokenizer.decode([248077])
    service = backend._simulated
    assert (service.limits.vocab_size, service.model.decodable) == (248320, 248077)
    for context in ([1], [5, 9], [248000, 3]):
        assert int(service.model.distribution(context)[0].max()) < 248077
    backend.close()


def test_the_issue_measurements_hold() -> None:
    question = [{"role": "user", "content": "What is the capital of France?"}]
    off = _backend().render_chat(question)
    on = _backend(renderer="qwen3_5").render_chat(question)
    assert (len(on), len(off)) == (17, 19)
    assert _backend().renderer.stop_tokens == [248046]  # type: ignore[union-attr]


def test_sft_weights_equal_render_for_sft() -> None:
    backend = _backend()
    reference = tml.renderers.Qwen35.disable_thinking()
    chat = ChatExample.model_validate(
        {
            "messages": [
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And of Spain?"},
                {"role": "assistant", "content": "Madrid."},
            ]
        }
    )
    algo = SFT(SFTParams(learning_rate=1e-3, max_steps=1, reduction="none"), backend)  # the renderer's raw weights
    datums = algo.build_datums(chat)
    expected = reference.render_for_sft(
        tml.chat.MessageList.from_oss_messages([{"role": m.role, "content": m.content} for m in chat.messages])
    )
    assert len(datums) == len(expected) == 2
    for datum, example in zip(datums, expected, strict=True):
        tokens = [t for span in example.input_token_spans for t in span.span.tokens]
        weights = list(example.per_token_loss_weight_unshifted)
        assert datum.input_tokens == tokens[:-1]
        assert datum.target_tokens == tokens[1:]
        assert datum.weights == weights[1:]
    trained = [t for t, w in zip(datums[-1].target_tokens, datums[-1].weights, strict=True) if w]
    assert backend.tokenizer.decode(trained) == "Madrid.<|im_end|>"
    # the default reduction (the cookbook's mean) scales each example's weights to sum to 1
    normalised = SFT(SFTParams(learning_rate=1e-3, max_steps=1), backend).build_datums(chat)
    for raw, mean in zip(datums, normalised, strict=True):
        assert sum(mean.weights) == pytest.approx(1.0)
        assert [w > 0 for w in mean.weights] == [w > 0 for w in raw.weights]


def test_tokenizer_decodes_offline_and_keeps_thinking_markers() -> None:
    backend = _backend(renderer="qwen3_5")
    tokenizer = backend.tokenizer
    prompt = backend.render_chat([{"role": "user", "content": "Hi"}])
    assert tokenizer.decode(prompt, skip_special_tokens=True) == "user\nHi\nassistant\n<think>\n"
    assert tokenizer.eos_token_id == 248046
    assert tokenizer.decode(tokenizer.encode("Paris")) == "Paris"
    assert backend.render_chat_for_sft([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])


def test_sampling_stops_at_the_renderer_stop_tokens_and_keeps_the_thinking_block() -> None:
    backend = _backend(renderer="qwen3_5")
    prompt = backend.render_chat([{"role": "user", "content": "Hi"}])
    [[sample]] = backend.sample([prompt], n=1, max_tokens=4)
    sent = backend._current_sampler().requests[-1]["sampling_params"]
    assert list(sent.stop) == [248046]
    assert sample.text.startswith("<think>\n")  # the prompt opened the block; the verifier sees it unfinished
    backend.sample([prompt], n=1, max_tokens=4, stop=["\n\n"])
    assert list(backend._current_sampler().requests[-1]["sampling_params"].stop) == ["\n\n", "<|im_end|>"]
    [[plain]] = _backend().sample([_backend().render_chat([{"role": "user", "content": "Hi"}])], n=1, max_tokens=4)
    assert not plain.text.startswith("<think>")  # thinking off: the prompt closed the block


def test_uncovered_model_without_its_tokenizer_says_so_in_one_line() -> None:
    class NoTokenizer(SimulatedService):
        def _new_training(self):  # type: ignore[no-untyped-def]
            client = super()._new_training()

            def refuse() -> object:
                raise OSError("We couldn't connect to 'https://huggingface.co'")

            client.get_tokenizer = refuse
            return client

    backend = TinkerBackend(BackendSetup(model_name="openai/gpt-oss-20b", lora_rank=1), service_client=NoTokenizer())
    with pytest.raises(EvsysError) as info:
        backend.render_chat([{"role": "user", "content": "Hi"}])
    message = str(info.value)
    assert "\n" not in message
    assert "tml-renderers does not cover this model" in message and "openai/gpt-oss-20b" in message


def test_unknown_renderer_param_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown renderer 'qwen35'"):
        TinkerBackendParams(renderer="qwen35")


# -- validate --deep: the run's prompts tokenized offline ------------------------------------------


def _config(tmp_path: Path, model: str = QWEN35, max_new_tokens: int = 64) -> Path:
    text = (WALKTHROUGH / "config.yaml").read_text(encoding="utf-8")
    text = text.replace("examples/sdft_walkthrough/", f"{WALKTHROUGH.as_posix()}/")
    text = text.replace("name: Qwen/Qwen3.5-4B", f"name: {model}")
    text = text.replace("    topk: 20 ", f"    max_new_tokens: {max_new_tokens}\n    topk: 20 ")
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("# yaml-language-server", "#"), encoding="utf-8")
    return path


def test_prompt_lengths_are_the_renderer_token_counts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from evsys.backends.tinker.checks import check_prompt_lengths

    monkeypatch.setenv("EVSYS_CACHE_DIR", str(tmp_path))
    reference = tml.renderers.Qwen35.disable_thinking()
    chats = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "What is the capital of France?"}]]
    longest = max(len(_tml_prompt(reference, chat)) for chat in chats)
    problems, summary = check_prompt_lengths(QWEN35, TinkerBackendParams(), {"student": chats}, [], 64)
    assert problems == []
    assert summary == f"student prompts up to {longest} tokens + 64 new of 262144 (qwen3_5_disable_thinking)"
    [error], _ = check_prompt_lengths(QWEN35, TinkerBackendParams(), {"student": chats}, [], 262144 - longest + 1)
    assert error.field == "algorithm.params.max_new_tokens" and error.severity == "error"
    assert f"the longest student prompt (example 2) is {longest} tokens" in error.message


def test_validate_deep_rejects_prompts_past_the_context_window(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from evsys.cli.validate_cmd import validate_config

    monkeypatch.setenv("TINKER_API_KEY", "tml-x")
    monkeypatch.setenv("EVSYS_CACHE_DIR", str(tmp_path))
    result = validate_config(_config(tmp_path, max_new_tokens=262140), deep=True)
    student, teacher = result.errors
    for error in (student, teacher):
        assert error.field == "algorithm.params.max_new_tokens" and error.location is not None
        assert "with max_new_tokens 262140" in error.message
        assert "past the context window of 'Qwen/Qwen3.5-4B' (262144 tokens, per " in error.message
    assert "longest student prompt" in student.message and "longest teacher prompt" in teacher.message


def test_validate_deep_names_a_retired_models_replacement_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from evsys.cli.validate_cmd import validate_config

    monkeypatch.setenv("TINKER_API_KEY", "tml-x")
    monkeypatch.setenv("EVSYS_CACHE_DIR", str(tmp_path))
    result = validate_config(_config(tmp_path, model="Qwen/Qwen3.5-35B-A3B"), deep=True)
    assert [(p.field, p.message) for p in result.problems] == [
        ("model.name", "Tinker retired 'Qwen/Qwen3.5-35B-A3B' on 2026-06-12; its recommended replacement: Qwen/Qwen3.6-35B-A3B")
    ]
