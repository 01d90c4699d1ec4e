"""Fake Tinker clients for tests: the SDK's boundary with real ``tinker.types`` responses, no network.

The real ``ServiceClient`` blocks when no service answers, so tests build
``TinkerBackend(setup, params, service_client=FakeServiceClient())``. Every fake records what it was
asked in ``requests`` and appends ``(event, name)`` to one shared ``log`` (``"submit"`` when a request
is made, ``"result"`` when its future is waited on), so tests can assert the order of submission.
Failures are injected per method with ``fail_submit`` (raised when the request is made) and
``fail_result`` (raised by the future's ``result()``), each a list consumed one call at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tinker import types
from tinker.types.topk_logprobs import MASK_LOGPROB, TopkLogprobs

Log = list[tuple[str, str]]


@dataclass
class Faults:
    """Errors to raise, per method name, on the next calls (submission) or the next waits (result)."""

    fail_submit: dict[str, list[BaseException]] = field(default_factory=dict)
    fail_result: dict[str, list[BaseException]] = field(default_factory=dict)

    def on_submit(self, name: str) -> None:
        """Raise the next submission error queued for ``name``, if any."""
        queue = self.fail_submit.get(name)
        if queue:
            raise queue.pop(0)

    def next_result_error(self, name: str) -> BaseException | None:
        """The next result error queued for ``name``, if any."""
        queue = self.fail_result.get(name)
        return queue.pop(0) if queue else None


class FakeFuture:
    """Shaped like the SDK's ``APIFuture``: ``result(timeout=None)`` returns the value or raises."""

    def __init__(self, name: str, log: Log, value: Any = None, error: BaseException | None = None) -> None:
        self.name = name
        self._log = log
        self._value = value
        self._error = error
        self._computed = False
        self.waits = 0

    def result(self, timeout: float | None = None) -> Any:
        """Record the wait, then return the value (a callable value is computed once, now) or raise."""
        self.waits += 1
        self._log.append(("result", self.name))
        if self._error is not None:
            raise self._error
        if callable(self._value) and not self._computed:
            self._value = self._value()
            self._computed = True
        return self._value


class FakeTokenizer:
    """A byte-level tokenizer: id = byte + 10; 1 is BOS-like, 2 is EOS. Its chat template returns a
    ``BatchEncoding`` as transformers 5 may."""

    eos_token_id = 2

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Bytes of ``text`` plus 10."""
        return [b + 10 for b in text.encode("utf-8")]

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Inverse of :meth:`encode`; special ids (< 10) are dropped when asked, else shown as ``<id>``."""
        out = bytearray()
        for t in token_ids:
            if t >= 10:
                out.append(int(t) - 10)
            elif not skip_special_tokens:
                out.extend(f"<{t}>".encode())
        return out.decode("utf-8", errors="replace")

    def apply_chat_template(
        self, messages: list[dict[str, str]], tokenize: bool = True, add_generation_prompt: bool = True, **_: Any
    ) -> Any:
        """``<role>: content\\n`` per message, then ``assistant: `` when asked; a BatchEncoding of ids."""
        from transformers import BatchEncoding

        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        if add_generation_prompt:
            text += "assistant: "
        ids = [1, *self.encode(text)]
        return BatchEncoding({"input_ids": ids, "attention_mask": [1] * len(ids)}) if tokenize else text


def teacher_topk(prompt: Sequence[int], k: int) -> TopkLogprobs:
    """The fake teacher's dense top-k rows: row 0 empty (sentinel), row ``i`` names ``prompt[i] + j``."""
    n = len(prompt)
    ids = np.zeros((n, k), dtype=np.int32)
    lps = np.full((n, k), MASK_LOGPROB, dtype=np.float32)
    for i in range(1, n):
        ids[i] = [int(prompt[i]) + j for j in range(k)]
        lps[i] = [-0.1 * (j + 1) - 0.01 * i for j in range(k)]
    return TopkLogprobs(token_ids=ids, logprobs=lps)


def prompt_logprobs(prompt: Sequence[int], last_n: int | None = None) -> list[float | None]:
    """The fake model's logprob of each prompt token: ``None`` at 0 (and before the last ``last_n``), then
    ``-0.1 - 0.01 * i`` at position ``i`` — the logprob :func:`teacher_topk` gives the token itself."""
    first = len(prompt) - last_n if last_n is not None else 1
    return [None if i < max(first, 1) else -0.1 - 0.01 * i for i in range(len(prompt))]


def policy_completion(prompt: Sequence[int], index: int, max_tokens: int, eos: int = 2) -> list[int]:
    """The fake policy's completion: ``"ok<index>"`` bytes then EOS, cut at ``max_tokens``."""
    tokens = [b + 10 for b in f"ok{index}".encode()] + [eos]
    return tokens[:max_tokens]


class FakeSamplingClient:
    """A sampling client: the base model (``kind="base"``) or a saved policy (``kind="policy-<n>"``)."""

    def __init__(self, kind: str, log: Log, faults: Faults) -> None:
        self.kind = kind
        self._log = log
        self._faults = faults
        self.requests: list[dict[str, Any]] = []

    def sample(
        self,
        prompt: types.ModelInput,
        num_samples: int,
        sampling_params: types.SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        **extra: Any,
    ) -> FakeFuture:
        """Record the request; answer with a real ``SampleResponse``."""
        name = f"sample:{self.kind}"
        self._log.append(("submit", name))
        self._faults.on_submit("sample")
        request = {
            "prompt": prompt,
            "num_samples": num_samples,
            "sampling_params": sampling_params,
            "include_prompt_logprobs": include_prompt_logprobs,
            "topk_prompt_logprobs": topk_prompt_logprobs,
            **extra,
        }
        self.requests.append(request)
        error = self._faults.next_result_error("sample")
        tokens = prompt.to_ints()

        def respond() -> types.SampleResponse:
            max_tokens = sampling_params.max_tokens or 16
            sequences = []
            for i in range(num_samples):
                out = policy_completion(tokens, i, max_tokens)
                sequences.append(
                    types.SampledSequence(
                        stop_reason="stop" if out and out[-1] == 2 else "length",
                        sequence_id=f"{self.kind}-{len(self.requests)}-{i}",
                        tokens_np=np.asarray(out, dtype=np.int32),
                        logprobs_np=np.asarray([-0.5] * len(out), dtype=np.float32),
                    )
                )
            topk = teacher_topk(tokens, topk_prompt_logprobs) if topk_prompt_logprobs else None
            return types.SampleResponse(sequences=sequences, topk_prompt_logprobs_np=topk)

        return FakeFuture(name, self._log, value=respond, error=error)


    def compute_logprobs(self, prompt: types.ModelInput, prompt_logprobs_last_n: int | None = None) -> FakeFuture:
        """Record the request; answer with :func:`prompt_logprobs` of the prompt, as the SDK's list."""
        name = f"compute_logprobs:{self.kind}"
        self._log.append(("submit", name))
        self._faults.on_submit("compute_logprobs")
        self.requests.append({"compute_logprobs": prompt, "prompt_logprobs_last_n": prompt_logprobs_last_n})
        tokens = prompt.to_ints()
        return FakeFuture(
            name,
            self._log,
            value=lambda: prompt_logprobs(tokens, prompt_logprobs_last_n),
            error=self._faults.next_result_error("compute_logprobs"),
        )


class FakeTrainingClient:
    """A LoRA training client. It pretends every target has logprob -1 and every ratio is 1, so
    ``loss:sum`` is the sum of the weights (``cross_entropy``) or minus the sum of the advantages."""

    def __init__(self, name: str, log: Log, faults: Faults, tokenizer: Any) -> None:
        self.name = name
        self._log = log
        self._faults = faults
        self._tokenizer = tokenizer
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.samplers: list[FakeSamplingClient] = []

    def _request(self, method: str, value: Any, **request: Any) -> FakeFuture:
        self._log.append(("submit", method))
        self._faults.on_submit(method)
        self.requests.append((method, request))
        return FakeFuture(method, self._log, value=value, error=self._faults.next_result_error(method))

    def get_tokenizer(self) -> Any:
        """The tokenizer (the real SDK fetches the model's from the Hugging Face hub)."""
        return self._tokenizer

    def forward_backward(
        self, data: list[types.Datum], loss_fn: str, loss_fn_config: dict[str, float] | None = None
    ) -> FakeFuture:
        """Record the request; answer with a real ``ForwardBackwardOutput`` carrying ``loss:sum``."""

        def respond() -> types.ForwardBackwardOutput:
            total = 0.0
            outputs = []
            for datum in data:
                inputs = datum.loss_fn_inputs
                if "weights" in inputs:  # cross_entropy: -sum(w * -1)
                    total += float(np.asarray(inputs["weights"].to_numpy(), dtype=np.float64).sum())
                else:  # the RL losses at ratio 1: -sum(advantages)
                    total -= float(np.asarray(inputs["advantages"].to_numpy(), dtype=np.float64).sum())
                targets = inputs["target_tokens"].to_numpy()
                outputs.append({"logprobs": types.TensorData.from_numpy(-np.ones(targets.shape, dtype=np.float32))})
            return types.ForwardBackwardOutput(
                loss_fn_output_type="ArrayRecord", loss_fn_outputs=outputs, metrics={"loss:sum": total}
            )

        return self._request("forward_backward", respond, data=data, loss_fn=loss_fn, loss_fn_config=loss_fn_config)

    def optim_step(self, optim_params: types.AdamParams) -> FakeFuture:
        """Record the request; answer with a real ``OptimStepResponse``."""
        return self._request(
            "optim_step", types.OptimStepResponse(metrics={"optim/lr": optim_params.learning_rate}), params=optim_params
        )

    def save_state(self, name: str, ttl_seconds: int | None = None) -> FakeFuture:
        """Record the request; answer with a real ``SaveWeightsResponse`` and a tinker:// path."""
        response = types.SaveWeightsResponse(path=f"tinker://{self.name}/weights/{name}")
        return self._request("save_state", response, name=name, ttl_seconds=ttl_seconds)

    def save_weights_and_get_sampling_client(self) -> FakeFuture:
        """Record the request; answer with a new policy sampling client."""
        sampler = FakeSamplingClient(f"policy-{len(self.samplers) + 1}", self._log, self._faults)
        self.samplers.append(sampler)
        return self._request("save_weights_and_get_sampling_client", sampler)


class FakeServiceClient:
    """The service: makes training clients (new or from a checkpoint) and base-model sampling clients."""

    def __init__(self, tokenizer: Any = None, faults: Faults | None = None) -> None:
        self.log: Log = []
        self.faults = faults or Faults()
        self.tokenizer = tokenizer if tokenizer is not None else FakeTokenizer()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.training_clients: list[FakeTrainingClient] = []
        self.sampling_clients: list[FakeSamplingClient] = []
        self.closed: list[str] = []

    def _future(self, method: str, make: Callable[[], Any], **request: Any) -> FakeFuture:
        self.log.append(("submit", method))
        self.faults.on_submit(method)
        self.requests.append((method, request))
        return FakeFuture(method, self.log, value=make, error=self.faults.next_result_error(method))

    def _new_training(self) -> FakeTrainingClient:
        client = FakeTrainingClient(f"run-{len(self.training_clients) + 1}", self.log, self.faults, self.tokenizer)
        self.training_clients.append(client)
        return client

    def create_lora_training_client(self, base_model: str, rank: int = 32, seed: int | None = None) -> FakeFuture:
        """A future of a new training client."""
        return self._future(
            "create_lora_training_client", self._new_training, base_model=base_model, rank=rank, seed=seed
        )

    def create_training_client_from_state_with_optimizer(self, path: str) -> FakeFuture:
        """A future of a training client resumed from ``path``."""
        return self._future("create_training_client_from_state_with_optimizer", self._new_training, path=path)

    def create_sampling_client(self, model_path: str | None = None, base_model: str | None = None) -> FakeFuture:
        """A future of a base-model sampling client."""

        def make() -> FakeSamplingClient:
            client = FakeSamplingClient("base", self.log, self.faults)
            self.sampling_clients.append(client)
            return client

        return self._future("create_sampling_client", make, model_path=model_path, base_model=base_model)

    def close(self, status: str, detail: str | None = None) -> FakeFuture:
        """Record the session's end."""
        self.closed.append(status)
        return FakeFuture("close", self.log, value=None)
