"""The tinker backend against the simulated service at the SDK boundary, with the real ``tinker.types``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
import tinker
from tinker import types

from evsys.backends.tinker.backend import CHECKPOINTS_FILE, PendingForwardBackwardResult, TinkerBackend
from evsys.backends.tinker.params import TinkerBackendParams
from evsys.backends.tinker.simulator import Faults, SimulatedService
from evsys.backends.tinker.testing import BYTE_LIMITS, ByteTokenizer
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import Backend, BackendSetup, Datum, ForwardBackwardResult

SECRET = "tml-THIS-IS-A-SECRET-KEY-0123456789"
MODEL = "Qwen/Qwen3.5-4B"


def _server_error(code: int = 503) -> tinker.APIStatusError:
    request = httpx.Request("POST", "https://tinker.invalid/api")
    cls = tinker.InternalServerError if code >= 500 else tinker.RateLimitError
    return cls(f"status {code}", response=httpx.Response(code, request=request), body=None)


def _bad_request() -> tinker.APIStatusError:
    request = httpx.Request("POST", "https://tinker.invalid/api")
    return tinker.BadRequestError("bad datum", response=httpx.Response(400, request=request), body=None)


def simulated(faults: Faults | None = None) -> SimulatedService:
    return SimulatedService(tokenizer=ByteTokenizer(), faults=faults, limits=BYTE_LIMITS, seed=3)


def make(
    tmp_path: Path | None = None, faults: Faults | None = None, **params: object
) -> tuple[TinkerBackend, SimulatedService]:
    service = simulated(faults)
    setup = BackendSetup(model_name=MODEL, lora_rank=1, seed=3, run_dir=tmp_path)
    sleeps: list[float] = []
    # The SDK mapping with small, readable ids: the byte tokenizer through the HF-template path
    # (test_tinker_renderers.py and the dry-run test below cover the model's own renderer).
    params.setdefault("renderer", "huggingface")
    backend = TinkerBackend(
        setup, TinkerBackendParams(retry_backoff_s=0.5, **params), service_client=service, sleep=sleeps.append
    )
    backend.sleeps = sleeps  # type: ignore[attr-defined]
    return backend, service


def ce_loss(service: SimulatedService, datum: Datum) -> float:
    """``-sum(w * log p(target))`` under the simulated service's (untrained) pseudo-model."""
    tokens = list(datum.input_tokens)
    total = 0.0
    for i, (targets, weights) in enumerate(zip(datum.target_tokens, datum.weights, strict=True)):
        row_t = targets if isinstance(targets, list) else [targets]
        row_w = weights if isinstance(weights, list) else [weights]
        total -= sum(w * service.model.logprob(tokens[: i + 1], t) for t, w in zip(row_t, row_w, strict=True))
    return total


def sft_datum() -> Datum:
    return Datum(input_tokens=[11, 12, 13], target_tokens=[12, 13, 14], weights=[0.0, 1.0, 1.0])


def distill_datum(k: int = 4) -> Datum:
    return Datum(
        input_tokens=[11, 12, 13],
        target_tokens=[[12 + j for j in range(k)]] * 3,
        weights=[[0.0] * k, [0.25] * k, [0.5, 0.5, 0.0, 0.0][:k]],
    )


# -- construction and auth ------------------------------------------------------------------------


def test_builds_a_lora_training_client_of_the_model() -> None:
    backend, service = make()
    assert service.requests == [("create_lora_training_client", {"base_model": MODEL, "rank": 1, "seed": 3})]
    assert isinstance(backend, Backend)
    assert repr(backend) == "TinkerBackend(model='Qwen/Qwen3.5-4B', lora_rank=1)"


def test_missing_key_is_one_clear_line_before_any_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    monkeypatch.delenv("TINKER_CREDENTIAL_CMD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    built: list[object] = []
    monkeypatch.setattr(tinker, "ServiceClient", lambda *a, **k: built.append(k))
    with pytest.raises(EvsysError) as info:
        TinkerBackend(BackendSetup(model_name=MODEL, lora_rank=1), TinkerBackendParams())
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("TINKER_API_KEY is not set: export TINKER_API_KEY=")
    assert "backend 'tinker'" in message
    assert built == []


def test_stored_credential_file_counts_as_a_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    monkeypatch.delenv("TINKER_CREDENTIAL_CMD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    store = tmp_path / ".tinker" / "credentials.json"
    store.parent.mkdir()
    store.write_text(
        json.dumps({"version": 1, "default": "k", "keys": {"k": {"type": "manual", "key": SECRET, "name": "k"}}})
    )
    made: list[dict[str, object]] = []

    def service_factory(**kwargs: object) -> SimulatedService:
        made.append(kwargs)
        return simulated()

    monkeypatch.setattr(tinker, "ServiceClient", service_factory)
    backend = TinkerBackend(BackendSetup(model_name=MODEL, lora_rank=1), TinkerBackendParams())
    assert made == [{"base_url": None, "display_name": f"evsys {MODEL}"}]
    assert SECRET not in repr(vars(backend))


def test_the_key_is_never_passed_stored_logged_or_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TINKER_API_KEY", SECRET)
    made: list[dict[str, object]] = []
    services: list[SimulatedService] = []

    def service_factory(**kwargs: object) -> SimulatedService:
        made.append(kwargs)
        services.append(simulated(Faults(fail_result={"sample": [_server_error()]})))
        return services[-1]

    monkeypatch.setattr(tinker, "ServiceClient", service_factory)
    caplog.set_level(logging.DEBUG)
    backend = TinkerBackend(
        BackendSetup(model_name=MODEL, lora_rank=1, run_dir=tmp_path), TinkerBackendParams(retry_backoff_s=0)
    )
    backend.sample([[11, 12]])
    backend.topk_logprobs([[11, 12, 13]], k=2, from_position=1)
    backend.forward_backward([sft_datum()], "cross_entropy")
    backend.optim_step(1e-4)
    backend.save_checkpoint("step-1")
    backend.close()
    assert all("api_key" not in kwargs for kwargs in made)
    assert services[0].closed == ["success"]
    haystack = [repr(vars(backend)), repr(backend), caplog.text, repr(backend._params.model_dump())]
    haystack += [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    assert "retry 1/5" in caplog.text  # the retry was logged ...
    assert not any(SECRET in text for text in haystack)  # ... and nothing holds the key


# -- sampling ---------------------------------------------------------------------------------------


def test_sample_requests_and_conversion() -> None:
    backend, service = make()
    out = backend.sample([[11, 12], [13]], n=2, max_tokens=8, temperature=0.0, stop=["\n"], seed=5)
    sampler = service.training_clients[0].samplers[0]
    assert len(sampler.requests) == 2
    first = sampler.requests[0]
    assert first["prompt"].to_ints() == [11, 12] and first["num_samples"] == 2
    params = first["sampling_params"]
    assert isinstance(params, types.SamplingParams)
    assert (params.max_tokens, params.temperature, params.stop, params.seed) == (8, 0.0, ["\n"], 5)
    for prompt, group in zip([[11, 12], [13]], out, strict=True):
        drawn = service.draw_completions(prompt, 2, params)
        assert [s.tokens for s in group] == [tokens for tokens, _, _ in drawn]
        for seq, (tokens, logprobs, reason) in zip(group, drawn, strict=True):
            assert seq.logprobs == pytest.approx(logprobs, rel=1e-6) and seq.stop_reason == reason
            body = tokens[:-1] if tokens[-1] == 2 else tokens
            assert seq.text == service.tokenizer.decode(body, skip_special_tokens=True).split("\n")[0]
    assert [s.stop_reason for s in backend.sample([[11]], n=8, max_tokens=1)[0]].count("length") >= 1


def test_sample_requests_are_all_in_flight_before_any_wait() -> None:
    backend, service = make()
    backend.sample([[11], [12], [13]])
    sample_events = [e for e in service.log if e[1].startswith("sample:")]
    assert sample_events == [("submit", "sample:policy-1")] * 3 + [("result", "sample:policy-1")] * 3


def test_sampling_client_is_refreshed_only_after_the_weights_change() -> None:
    backend, service = make()
    training = service.training_clients[0]
    backend.sample([[11]])
    backend.sample([[12]])
    assert len(training.samplers) == 1
    backend.topk_logprobs([[11, 12]], k=2, from_position=1)  # the teacher does not touch the weights
    backend.sample([[12]])
    assert len(training.samplers) == 1
    backend.forward_backward([sft_datum()], "cross_entropy")
    backend.optim_step(1e-4)
    backend.sample([[13]])
    backend.sample([[14]])
    assert len(training.samplers) == 2
    assert [len(s.requests) for s in training.samplers] == [3, 2]
    saves = [e for e in service.log if e == ("submit", "save_weights_and_get_sampling_client")]
    assert len(saves) == 2


def test_render_chat_uses_the_tinker_tokenizer_and_handles_batch_encoding() -> None:
    backend, service = make()
    ids = backend.render_chat([{"role": "user", "content": "Hi"}])
    assert ids == [1, *service.tokenizer.encode("user: Hi\nassistant: ")]
    assert backend.tokenizer is service.tokenizer


# -- the teacher ------------------------------------------------------------------------------------


def test_teacher_requests_use_a_base_model_client_with_prompt_logprobs() -> None:
    backend, service = make()
    seqs = [[11, 12, 13, 14], [20, 21, 22]]
    out = backend.topk_logprobs(seqs, k=3, from_position=[2, 1])
    assert service.requests[-1] == ("create_sampling_client", {"model_path": None, "base_model": MODEL})
    base = service.sampling_clients[0]
    assert len(base.requests) == 2
    for request, seq in zip(base.requests, seqs, strict=True):
        assert request["prompt"].to_ints() == seq
        assert request["num_samples"] == 1
        assert request["sampling_params"] == types.SamplingParams(max_tokens=1)
        assert request["include_prompt_logprobs"] is True
        assert request["topk_prompt_logprobs"] == 3
        assert "prompt_logprobs_last_n" not in request
    # row i is the top-k of p(. | s[:i]) under the frozen base model
    for result, seq, start in zip(out, seqs, [2, 1], strict=True):
        rows = service.topk_rows(seq, 3)
        assert result.token_ids == rows.token_ids[start:].tolist()
        assert result.logprobs == rows.logprobs[start:].astype(float).tolist()
    assert all(len(row) == 3 for r in out for row in r.logprobs)
    assert service.training_clients[0].samplers == []  # the teacher is the frozen base model


def test_teacher_requests_go_out_concurrently_within_the_window() -> None:
    backend, service = make()
    backend.topk_logprobs([[11, 12]] * 4, k=2, from_position=1)
    events = [e[0] for e in service.log if e[1] == "sample:base"]
    assert events == ["submit"] * 4 + ["result"] * 4
    backend, service = make(teacher_concurrency=2)
    backend.topk_logprobs([[11, 12]] * 4, k=2, from_position=1)
    events = [e[0] for e in service.log if e[1] == "sample:base"]
    assert events == ["submit", "submit", "result", "submit", "result", "submit", "result", "result"]


def test_teacher_suffix_only_and_empty_ranges() -> None:
    backend, service = make(teacher_suffix_only=True)
    out = backend.topk_logprobs([[11, 12, 13, 14], [15, 16]], k=2, from_position=[3, 2])
    assert [r["prompt_logprobs_last_n"] for r in service.sampling_clients[0].requests] == [1]
    assert out[0].token_ids == service.topk_rows([11, 12, 13, 14], 2).token_ids[3:].tolist()
    assert out[1].token_ids == [] and out[1].logprobs == []
    with pytest.raises(ValueError, match="from_position"):
        backend.topk_logprobs([[11, 12]], k=2, from_position=0)


def exact_logprobs(service: SimulatedService, seq: list[int], start: int, version: int = 0) -> list[float]:
    """``log p(seq[i] | seq[:i])`` under the simulated service's pseudo-model, for ``i >= start``."""
    return [service.model.logprob(seq[:i], seq[i], version) for i in range(start, len(seq))]


def test_compute_logprobs_asks_the_base_model_client_for_exact_prompt_logprobs() -> None:
    backend, service = make()
    seqs = [[11, 12, 13, 14], [20, 21, 22]]
    out = backend.compute_logprobs(seqs, [2, 1], base=True)
    base = service.sampling_clients[0]
    assert base.kind == "base" and base.version == 0
    assert [r["compute_logprobs"].to_ints() for r in base.requests] == seqs
    assert all(r["prompt_logprobs_last_n"] is None for r in base.requests)
    assert out == [pytest.approx(exact_logprobs(service, seqs[0], 2)), pytest.approx(exact_logprobs(service, seqs[1], 1))]
    assert service.training_clients[0].samplers == []  # the frozen base model, not a policy snapshot
    events = [e[0] for e in service.log if e[1] == "compute_logprobs:base"]
    assert events == ["submit", "submit", "result", "result"]  # all in flight before any wait


def test_compute_logprobs_of_the_policy_and_suffix_only() -> None:
    backend, service = make(teacher_suffix_only=True)
    out = backend.compute_logprobs([[11, 12, 13, 14], [15, 16]], [3, 2], base=False)
    (policy,) = service.training_clients[0].samplers
    assert [r["prompt_logprobs_last_n"] for r in policy.requests] == [1]
    assert out == [pytest.approx(exact_logprobs(service, [11, 12, 13, 14], 3, policy.version)), []]
    assert service.sampling_clients == []
    with pytest.raises(ValueError, match="from_position"):
        backend.compute_logprobs([[11, 12]], 3)


def test_compute_logprobs_missing_values_are_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    backend, _service = make()
    from evsys.backends.tinker.pseudo_model import Next

    monkeypatch.setattr(Next, "logprob", lambda self, token: None)
    with pytest.raises(EvsysError, match="no prompt logprob at position 1"):
        backend.compute_logprobs([[11, 12]])


# -- training ---------------------------------------------------------------------------------------


def test_forward_backward_requests_real_datums_and_returns_the_loss_sum() -> None:
    backend, service = make()
    result = backend.forward_backward([distill_datum(), sft_datum()], "cross_entropy")
    assert isinstance(result, ForwardBackwardResult)
    method, request = service.training_clients[0].requests[-1]
    assert method == "forward_backward"
    assert request["loss_fn"] == "cross_entropy" and request["loss_fn_config"] is None
    data = request["data"]
    assert all(isinstance(d, types.Datum) for d in data)
    assert data[0].loss_fn_inputs["target_tokens"].shape == [3, 4]
    assert data[0].loss_fn_inputs["target_tokens"].dtype == "int64"
    assert data[0].loss_fn_inputs["weights"].shape == [3, 4]
    assert data[0].loss_fn_inputs["weights"].dtype == "float32"
    assert data[1].loss_fn_inputs["target_tokens"].shape == [3]
    assert result.loss_sum == pytest.approx(ce_loss(service, distill_datum()) + ce_loss(service, sft_datum()), rel=1e-5)
    assert result.metrics["loss:sum"] == pytest.approx(result.loss_sum)


@pytest.mark.parametrize("loss_fn", ["importance_sampling", "ppo"])
def test_rl_losses_pass_their_name_and_config(loss_fn: str) -> None:
    backend, service = make()
    datum = Datum(input_tokens=[11, 12], target_tokens=[12, 13], weights=[1, 1], logprobs=[-1, -2], advantages=[1, 1])
    config = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2} if loss_fn == "ppo" else None
    backend.forward_backward([datum], loss_fn, config)  # type: ignore[arg-type]
    _, request = service.training_clients[0].requests[-1]
    assert request["loss_fn"] == loss_fn and request["loss_fn_config"] == config
    inputs = request["data"][0].loss_fn_inputs
    assert set(inputs) == {"target_tokens", "logprobs", "advantages"}  # exactly what Tinker documents
    masked = Datum(input_tokens=[11, 12], target_tokens=[12, 13], weights=[0, 1], logprobs=[0, -2], advantages=[1, 1])
    backend.forward_backward([masked], loss_fn, config)  # type: ignore[arg-type]
    _, request = service.training_clients[0].requests[-1]
    assert request["data"][0].loss_fn_inputs["advantages"].to_numpy().tolist() == [0.0, 1.0]  # the mask folds in
    # exactly the inputs Tinker documents for the RL losses: a datum's weights are not sent
    assert set(request["data"][0].loss_fn_inputs) == {"target_tokens", "logprobs", "advantages"}
    with pytest.raises(ValueError, match="needs weights"):
        backend.forward_backward([Datum(input_tokens=[11], target_tokens=[12], advantages=[1.0], logprobs=[-1.0])], "cross_entropy")
    with pytest.raises(ValueError, match="unknown loss"):
        backend.forward_backward([datum], "dpo")  # type: ignore[arg-type]


def test_optim_step_is_submitted_before_waiting_for_forward_backward() -> None:
    backend, service = make()
    result = backend.forward_backward([sft_datum()], "cross_entropy")
    assert isinstance(result, PendingForwardBackwardResult) and not result.resolved
    metrics = backend.optim_step(2e-4, weight_decay=0.01, grad_clip=1.0)
    training_events = [e for e in service.log if e[1] in ("forward_backward", "optim_step")]
    assert training_events == [
        ("submit", "forward_backward"),
        ("submit", "optim_step"),
        ("result", "forward_backward"),
        ("result", "optim_step"),
    ]
    assert result.resolved and result.loss_sum == pytest.approx(ce_loss(service, sft_datum()), rel=1e-5)
    _, request = service.training_clients[0].requests[-1]
    adam = request["params"]
    assert isinstance(adam, types.AdamParams)
    assert (adam.learning_rate, adam.beta1, adam.beta2, adam.eps) == (2e-4, 0.9, 0.95, 1e-8)
    assert (adam.weight_decay, adam.grad_clip_norm) == (0.01, 1.0)
    assert metrics == {"optim/lr": 2e-4}


def test_forward_backward_and_optim_step_in_one_call() -> None:
    backend, service = make(pipeline_optim_step=False)
    result, metrics = backend.forward_backward_and_optim_step(
        [sft_datum()], "cross_entropy", learning_rate=1e-4, grad_clip=None
    )
    assert result.loss_sum == pytest.approx(ce_loss(service, sft_datum()), rel=1e-5) and metrics == {"optim/lr": 1e-4}
    assert [e for e in service.log if e[1] in ("forward_backward", "optim_step")][:2] == [
        ("submit", "forward_backward"),
        ("submit", "optim_step"),
    ]
    assert service.training_clients[0].requests[-1][1]["params"].grad_clip_norm == 0.0


def test_without_pipelining_forward_backward_waits_for_its_result() -> None:
    backend, service = make(pipeline_optim_step=False)
    result = backend.forward_backward([sft_datum()], "cross_entropy")
    assert type(result) is ForwardBackwardResult
    assert service.log[-1] == ("result", "forward_backward")


# -- retries and errors -----------------------------------------------------------------------------


def test_transient_errors_are_retried_with_backoff_then_succeed() -> None:
    faults = Faults(
        fail_submit={
            "create_lora_training_client": [tinker.APIConnectionError(request=httpx.Request("GET", "http://x"))]
        },
        fail_result={"sample": [_server_error(503), _server_error(429)]},
    )
    backend, service = make(faults=faults)
    assert len(service.training_clients) == 1
    out = backend.topk_logprobs([[11, 12, 13]], k=2, from_position=1)
    assert out[0].token_ids == service.topk_rows([11, 12, 13], 2).token_ids[1:].tolist()
    assert len(service.sampling_clients[0].requests) == 3  # one request, resubmitted twice
    assert backend.sleeps == [0.5, 0.5, 1.0]  # type: ignore[attr-defined]


def test_a_request_that_could_not_be_submitted_is_resubmitted() -> None:
    faults = Faults(fail_submit={"sample": [ConnectionError("reset")]}, fail_result={"sample": [_server_error(503)]})
    backend, service = make(faults=faults)
    out = backend.sample([[11], [12]])
    assert [len(group) for group in out] == [1, 1]
    requests = service.training_clients[0].samplers[0].requests
    # [11] failed to submit and [12]'s result failed: each is retried on its own, in order
    assert [r["prompt"].to_ints() for r in requests] == [[12], [11], [12]]
    assert backend.sleeps == [0.5, 0.5]  # type: ignore[attr-defined]


def test_retries_are_bounded_then_one_clear_error() -> None:
    faults = Faults(fail_result={"sample": [_server_error(502)] * 10})
    backend, _ = make(faults=faults, max_retries=3)
    with pytest.raises(EvsysError) as info:
        backend.sample([[11]])
    message = str(info.value)
    assert "\n" not in message
    assert "sample from the policy failed after 4 attempts" in message
    assert "InternalServerError: status 502" in message
    assert backend.sleeps == [0.5, 1.0, 2.0]  # type: ignore[attr-defined]


def test_retries_stop_at_the_total_time_bound() -> None:
    faults = Faults(fail_result={"sample": [_server_error(500)] * 10})
    backend, _ = make(faults=faults, max_retries=10, retry_total_s=2.0)
    with pytest.raises(EvsysError, match="failed after 3 attempts"):
        backend.sample([[11]])
    assert backend.sleeps == [0.5, 1.0]  # a third wait (2s) would pass the 2s bound  # type: ignore[attr-defined]


def test_a_non_transient_error_is_not_retried() -> None:
    backend, _ = make(faults=Faults(fail_result={"sample": [_bad_request()]}))
    with pytest.raises(EvsysError, match=r"^Tinker: sample from the policy failed: BadRequestError: bad datum$"):
        backend.sample([[11]])
    assert backend.sleeps == []  # type: ignore[attr-defined]


def test_weight_changing_requests_retry_submission_but_never_a_result() -> None:
    faults = Faults(fail_submit={"forward_backward": [_server_error(503)]})
    backend, service = make(faults=faults)
    backend.forward_backward([sft_datum()], "cross_entropy")
    backend.optim_step(1e-4)
    assert [m for m, _ in service.training_clients[0].requests] == ["forward_backward", "optim_step"]

    backend, service = make(faults=Faults(fail_result={"forward_backward": [_server_error(503)]}))
    result = backend.forward_backward([sft_datum()], "cross_entropy")
    with pytest.raises(EvsysError, match=r"forward_backward \(cross_entropy\) failed: .*resume the run"):
        backend.optim_step(1e-4)
    assert [m for m, _ in service.training_clients[0].requests] == ["forward_backward", "optim_step"]
    with pytest.raises(EvsysError):
        _ = result.loss_sum


# -- checkpoints ------------------------------------------------------------------------------------


def test_checkpoints_are_saved_recorded_and_resumed(tmp_path: Path) -> None:
    backend, service = make(tmp_path, checkpoint_ttl_s=7200)
    backend.sample([[11]])
    path = backend.save_checkpoint("step-000002")
    assert path == "tinker://sim-run-1/weights/step-000002"
    assert service.training_clients[0].requests[-1] == ("save_state", {"name": "step-000002", "ttl_seconds": 7200})
    backend.load_checkpoint(path)
    assert service.requests[-1] == ("create_training_client_from_state_with_optimizer", {"path": path})
    resumed = service.training_clients[1]
    backend.forward_backward([sft_datum()], "cross_entropy")
    backend.optim_step(1e-4)
    assert [m for m, _ in resumed.requests] == ["forward_backward", "optim_step"]
    backend.sample([[11]])
    assert len(resumed.samplers) == 1  # the sampler follows the resumed weights
    backend.load_checkpoint("step-000002")  # a name recorded in the run dir
    rows = [json.loads(line) for line in (tmp_path / CHECKPOINTS_FILE).read_text().splitlines()]
    assert [(r["event"], r["path"]) for r in rows] == [("save", path), ("load", path), ("load", path)]
    assert rows[0]["name"] == "step-000002" and rows[0]["model"] == MODEL
    with pytest.raises(EvsysError, match="not a tinker:// path"):
        backend.load_checkpoint("nope")


def test_save_waits_for_pending_results_first(tmp_path: Path) -> None:
    backend, service = make(tmp_path)
    backend.forward_backward([sft_datum()], "cross_entropy")
    backend.save_checkpoint("mid")
    order = [e for e in service.log if e[1] in ("forward_backward", "save_state")]
    assert order == [
        ("submit", "forward_backward"),
        ("result", "forward_backward"),
        ("submit", "save_state"),
        ("result", "save_state"),
    ]


def test_close_resolves_pending_work_and_leaves_an_injected_service_open() -> None:
    backend, service = make()
    backend.forward_backward([sft_datum()], "cross_entropy")
    backend.close()
    backend.close()
    assert service.log[-1] == ("result", "forward_backward")
    assert service.closed == []


# -- throughput ------------------------------------------------------------------------------------


def test_sample_and_score_equals_sample_then_topk_logprobs() -> None:
    prompts, prefixes = [[11, 12], [13, 14, 15]], [[20, 21, 22], [23]]
    backend, service = make()
    groups, scores = backend.sample_and_score(prompts, prefixes, 3, n=2, max_tokens=6, temperature=1.0, seed=4)
    other, _ = make()
    expected = other.sample(prompts, n=2, max_tokens=6, temperature=1.0, seed=4)
    assert [[s.tokens for s in g] for g in groups] == [[s.tokens for s in g] for g in expected]
    sequences = [prefix + s.tokens for prefix, g in zip(prefixes, expected, strict=True) for s in g]
    starts = [len(prefix) for prefix, g in zip(prefixes, expected, strict=True) for _ in g]
    topk = other.topk_logprobs(sequences, k=3, from_position=starts)
    assert [t for row in scores for t in row] == topk
    assert service.sampling_clients[0].requests[0]["topk_prompt_logprobs"] == 3


@pytest.mark.parametrize("renderer", ["qwen3_5_disable_thinking", "qwen3_5"])
def test_sample_and_score_renders_as_sample_does_with_the_models_renderer(renderer: str) -> None:
    pytest.importorskip("tml_renderers")

    def dry_run() -> TinkerBackend:  # the model's renderer on the simulated service, with the catalog's limits
        return TinkerBackend(BackendSetup(model_name=MODEL, lora_rank=1, seed=3, dry_run=True), TinkerBackendParams(renderer=renderer))

    backend = dry_run()
    prompt = backend.render_chat([{"role": "user", "content": "Capital of France?"}])
    [group], _ = backend.sample_and_score([prompt], [prompt], 2, n=2, max_tokens=5, temperature=1.0, seed=4)
    [expected] = dry_run().sample([prompt], n=2, max_tokens=5, temperature=1.0, seed=4)
    assert [(s.tokens, s.text) for s in group] == [(s.tokens, s.text) for s in expected]
    assert all(s.text.startswith("<think>\n") == (renderer == "qwen3_5") for s in group)  # an opened block stays visible
    [rollout] = backend._current_sampler().requests
    assert list(rollout["sampling_params"].stop) == [248046]  # the renderer's stop token
    backend.close()


def test_each_rollout_is_scored_as_soon_as_its_sample_returns() -> None:
    from evsys.backends.tinker.simulator import Latency

    service = SimulatedService(tokenizer=ByteTokenizer(), limits=BYTE_LIMITS, seed=3, latency=Latency(sample_s=0.2, jitter=0.9, seed=2))
    backend = TinkerBackend(BackendSetup(model_name=MODEL, lora_rank=1, seed=3), TinkerBackendParams(), service_client=service)
    backend.sample_and_score([[11 + i] for i in range(6)], [[30]] * 6, 2, n=1, max_tokens=3, temperature=1.0, seed=1)
    events = [e for e in service.log if e[1] in ("sample:policy-1", "sample:base")]
    first_scoring = events.index(("submit", "sample:base"))
    last_sample = max(i for i, e in enumerate(events) if e == ("result", "sample:policy-1"))
    assert first_scoring < last_sample  # scoring started while other rollouts were still sampling
    assert events[:6] == [("submit", "sample:policy-1")] * 6  # every rollout in flight at once
    backend.close()


def test_a_lora_alpha_the_service_does_not_use_is_refused_before_connecting() -> None:
    from evsys.backends.tinker.backend import TinkerBackend
    from evsys.schema.errors import EvsysError
    from evsys.schema.protocols import BackendSetup

    with pytest.raises(EvsysError) as caught:
        TinkerBackend(BackendSetup(model_name="Qwen/Qwen3-8B", lora_rank=8, lora_alpha=16.0), service_client=object())
    assert str(caught.value) == (
        "algorithm.params.lora_alpha: the Tinker service scales every adapter with lora_alpha 32, got 16: "
        "remove algorithm.params.lora_alpha (or use the local backend)"
    )
