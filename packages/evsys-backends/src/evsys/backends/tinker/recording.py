"""Record a Tinker session's requests (shapes) and responses (fields) to JSONL, and replay a record through
the service's rules (:mod:`.service_rules`).

``backend.params.record_requests: FILE`` wraps the service client (real or simulated) in
:class:`RecordingService`: each request is one line ``{"kind": "request", "method", "shape"}`` when it is
submitted, each response one line ``{"kind": "response", "method", "fields"}`` when it arrives. No
token ids or texts are written, only lengths, id ranges, dtypes, shapes, options and field names.
:func:`replay` checks every recorded request as the simulator checks a live one, and that every
response holds the fields the backend reads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evsys.backends.tinker import service_rules as rules
from evsys.backends.tinker.catalog import model_limits
from evsys.backends.tinker.models import ModelLimits
from evsys.backends.tinker.shapes import adam_args, datum_shape, sample_shape
from evsys.schema.errors import EvsysError


class Recorder:
    """Appends one JSON line per event to ``path`` (thread-safe); the first line names the source."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kind": "header", "source": source, "format": 1}) + "\n", encoding="utf-8")

        self._next = 0

    def write(self, row: Mapping[str, Any]) -> None:
        """Append ``row``."""
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def request(self, method: str, shape: Mapping[str, Any], **extra: Any) -> int:
        """Append a request row; returns its id (its response row carries the same)."""
        with self._lock:
            rid = self._next
            self._next += 1
        self.write({"kind": "request", "id": rid, "method": method, **extra, "shape": dict(shape)})
        return rid


def response_fields(method: str, value: Any) -> dict[str, Any]:
    """The fields of a response worth checking: names, counts and shapes, never token ids or texts."""
    if method == "sample":
        topk = getattr(value, "topk_prompt_logprobs_np", None)
        plp = getattr(value, "prompt_logprobs_np", None)
        return {
            "sequences": [
                {"length": len(s.tokens), "logprobs": s.logprobs is not None, "stop_reason": str(s.stop_reason)}
                for s in value.sequences
            ],
            "topk_prompt_logprobs": list(topk.token_ids.shape) if topk is not None else None,
            "prompt_logprobs": list(plp.shape) if plp is not None else None,
        }
    if method == "forward_backward":
        return {
            "loss_fn_output_type": str(value.loss_fn_output_type),
            "loss_fn_outputs": [{k: list(v.shape or []) for k, v in out.items()} for out in value.loss_fn_outputs],
            "metrics": sorted(value.metrics or {}),
        }
    if method == "optim_step":
        return {"metrics": sorted(getattr(value, "metrics", None) or {})}
    if method == "save_state":
        return {"path_scheme": str(value.path).split("://", 1)[0]}
    return {"type": type(value).__name__}


class _Future:
    def __init__(self, inner: Any, method: str, recorder: Recorder, rid: int, wrap: Any = None) -> None:
        self._inner, self._method, self._recorder, self._rid, self._wrap = inner, method, recorder, rid, wrap

    def result(self, timeout: float | None = None) -> Any:
        value = self._inner.result(timeout) if timeout is not None else self._inner.result()
        fields = response_fields(self._method, value)
        self._recorder.write({"kind": "response", "id": self._rid, "method": self._method, "fields": fields})
        return self._wrap(value) if self._wrap is not None else value

    def future(self) -> Any:
        """The inner request's ``concurrent.futures.Future`` (done callbacks); :meth:`result` records the response."""
        return self._inner.future()


class _Sampling:
    def __init__(self, inner: Any, recorder: Recorder, role: str) -> None:
        self._inner, self._recorder, self._role = inner, recorder, role

    def sample(self, prompt: Any, num_samples: int, sampling_params: Any, include_prompt_logprobs: bool = False,
               topk_prompt_logprobs: int = 0, **extra: Any) -> _Future:
        shape = sample_shape(prompt, num_samples, sampling_params, include_prompt_logprobs, topk_prompt_logprobs,
                             extra.get("prompt_logprobs_last_n"))
        rid = self._recorder.request("sample", shape.to_json(), role=self._role)
        future = self._inner.sample(prompt=prompt, num_samples=num_samples, sampling_params=sampling_params,
                                    include_prompt_logprobs=include_prompt_logprobs,
                                    topk_prompt_logprobs=topk_prompt_logprobs, **extra)
        return _Future(future, "sample", self._recorder, rid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Training:
    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self._inner, self._recorder = inner, recorder

    def forward_backward(self, data: list[Any], loss_fn: str, loss_fn_config: dict[str, float] | None = None) -> _Future:
        shape = {"loss_fn": loss_fn, "loss_fn_config": loss_fn_config, "data": [datum_shape(d).to_json() for d in data]}
        rid = self._recorder.request("forward_backward", shape)
        future = self._inner.forward_backward(data, loss_fn, loss_fn_config=loss_fn_config)
        return _Future(future, "forward_backward", self._recorder, rid)

    def optim_step(self, optim_params: Any) -> _Future:
        rid = self._recorder.request("optim_step", {"adam": list(adam_args(optim_params))})
        return _Future(self._inner.optim_step(optim_params), "optim_step", self._recorder, rid)

    def save_state(self, name: str, ttl_seconds: int | None = None) -> _Future:
        rid = self._recorder.request("save_state", {"ttl_seconds": ttl_seconds})
        return _Future(self._inner.save_state(name, ttl_seconds=ttl_seconds), "save_state", self._recorder, rid)

    def save_weights_and_get_sampling_client(self) -> _Future:
        rid = self._recorder.request("save_weights_and_get_sampling_client", {})
        return _Future(self._inner.save_weights_and_get_sampling_client(), "save_weights_and_get_sampling_client",
                       self._recorder, rid, lambda s: _Sampling(s, self._recorder, "policy"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RecordingService:
    """Wraps a service client so every request's shape and every response's fields go to ``path``."""

    def __init__(self, inner: Any, path: Path, source: str) -> None:
        self._inner = inner
        self.recorder = Recorder(path, source)

    def create_lora_training_client(self, base_model: str, rank: int = 32, seed: int | None = None) -> _Future:
        """Record the model and rank; the client it answers records too."""
        shape = {"base_model": base_model, "rank": rank}
        rid = self.recorder.request("create_lora_training_client", shape)
        future = self._inner.create_lora_training_client(base_model=base_model, rank=rank, seed=seed)
        return _Future(future, "create_lora_training_client", self.recorder, rid, lambda c: _Training(c, self.recorder))

    def create_training_client_from_state_with_optimizer(self, path: str) -> _Future:
        """Resume; the client it answers records too."""
        rid = self.recorder.request("create_training_client_from_state_with_optimizer", {})
        future = self._inner.create_training_client_from_state_with_optimizer(path)
        return _Future(future, "create_training_client_from_state_with_optimizer", self.recorder, rid,
                       lambda c: _Training(c, self.recorder))

    def create_sampling_client(self, model_path: str | None = None, base_model: str | None = None) -> _Future:
        """A base-model sampling client that records."""
        rid = self.recorder.request("create_sampling_client", {"base_model": base_model})
        future = self._inner.create_sampling_client(model_path=model_path, base_model=base_model)
        return _Future(future, "create_sampling_client", self.recorder, rid, lambda s: _Sampling(s, self.recorder, "base"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _check_response(method: str, fields: Mapping[str, Any], asked: Mapping[str, Any] | None) -> None:
    if method == "forward_backward" and "loss:sum" not in fields.get("metrics", []):
        raise EvsysError("the forward_backward response has no 'loss:sum' metric (the backend reads the loss there)")
    if method == "sample" and asked is not None:
        want = asked.get("topk_prompt_logprobs", 0)
        rows = fields.get("topk_prompt_logprobs")
        if want and (rows is None or rows[0] not in (asked["prompt_length"], asked["prompt_length"] - 1)):
            raise EvsysError(f"a top-k prompt-logprob response has rows {rows} for a prompt of {asked['prompt_length']} tokens")
        if len(fields.get("sequences", [])) != asked.get("num_samples"):
            raise EvsysError(f"a sample response has {len(fields.get('sequences', []))} sequences for num_samples {asked.get('num_samples')}")


def replay(path: Path, limits: ModelLimits | None = None) -> dict[str, int]:
    """Check every request of the record at ``path`` against the service's rules and every response's fields.

    The model's limits come from the catalog unless given. Returns the count of requests per method;
    raises :class:`EvsysError` (``<path>:<line>: ...``) at the first violation.
    """
    counts: dict[str, int] = {}
    asked_by_id: dict[int, Mapping[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            if row["kind"] == "request":
                method, shape = row["method"], row["shape"]
                counts[method] = counts.get(method, 0) + 1
                if method == "create_lora_training_client":
                    limits = limits or rules.check_model(shape["base_model"], model_limits(shape["base_model"]))
                    rules.check_lora_rank(int(shape["rank"]), shape["base_model"], limits)
                elif method == "sample":
                    rules.check_sample(rules.SampleShape.from_json(shape), _need(limits))
                    asked_by_id[int(row["id"])] = shape
                elif method == "forward_backward":
                    data = [rules.DatumShape.from_json(d) for d in shape["data"]]
                    rules.check_forward_backward(data, shape["loss_fn"], shape["loss_fn_config"], _need(limits))
                elif method == "optim_step":
                    rules.check_adam(*shape["adam"])
            elif row["kind"] == "response":
                _check_response(row["method"], row["fields"], asked_by_id.get(int(row["id"])))
        except EvsysError as exc:
            raise EvsysError(f"{path}:{number}: {exc}") from None
    return counts


def _need(limits: ModelLimits | None) -> ModelLimits:
    if limits is None:
        raise EvsysError("the record has no create_lora_training_client request before its first sample or training request")
    return limits
