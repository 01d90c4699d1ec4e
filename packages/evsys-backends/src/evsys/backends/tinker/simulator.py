"""A strict simulated Tinker service: ``evsys run CONFIG --dry-run`` runs a Tinker config offline, with no key.

``SimulatedService`` stands where ``tinker.ServiceClient()`` stands and answers with the SDK's own
response types. Every request is checked by :mod:`.service_rules` first (exact ``loss_fn_inputs``
keys, shapes, dtypes, token ids below the vocabulary size, lengths within the context window, LoRA
rank, sampling params, prompt-logprob options); a violation raises one line. Responses come from a
small seeded pseudo-model (:class:`PseudoModel`): deterministic from the seed, and dependent on the
prompt. :class:`Tally` counts requests and tokens sampled, scored and trained (the dry run's summary).

Latencies (:class:`Latency`, zero by default) make futures resolve as a busy service would: sampling
and scoring requests run in parallel; a training client's requests run one after another. One worker
thread (:class:`SimWorker`) computes the responses, earliest ready time first, and completes each
future at its ready time (``future()`` gives done callbacks, as the SDK's). The benchmark
(benchmarks/test_bench_tinker_throughput.py) measures step time against the critical path, from the
latencies drawn (``Tally.drawn``) and which sample each scoring scores (``Tally.links``).

For tests: every client records what it was asked in ``requests`` and appends ``(event, name)`` to one
shared ``log`` (``"submit"`` when a request is made, ``"result"`` when its future is waited on);
:class:`Faults` injects errors per method, at submission or at the result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tinker import types
from tinker.types.topk_logprobs import MASK_LOGPROB, TopkLogprobs

from evsys.backends.tinker import service_rules as rules
from evsys.backends.tinker.catalog import model_limits
from evsys.backends.tinker.models import ModelLimits
from evsys.backends.tinker.pseudo_model import PseudoModel, seeded_rng
from evsys.backends.tinker.shapes import adam_args, datum_shape, sample_shape
from evsys.backends.tinker.sim_clock import Faults, Latency, Log, SimClock, SimFuture, SimWorker, Tally

__all__ = ["Faults", "Latency", "PseudoModel", "SimFuture", "SimulatedSamplingClient", "SimulatedService",
           "SimulatedTrainingClient", "Tally"]


class SimulatedSamplingClient:
    """A sampling client of the base model (``version`` 0) or of saved weights (``version`` n)."""

    def __init__(self, service: SimulatedService, kind: str, version: int) -> None:
        self.kind = kind
        self.version = version
        self._service = service
        self.requests: list[dict[str, Any]] = []
        self._drawn_index: dict[int, int] = {}

    def sample(
        self,
        prompt: types.ModelInput,
        num_samples: int,
        sampling_params: types.SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        prompt_logprobs_last_n: int | None = None,
        **extra: Any,
    ) -> SimFuture:
        """Check the request, record it, and answer with a real ``SampleResponse`` from the pseudo-model."""
        service = self._service
        name = f"sample:{self.kind}"
        service.log.append(("submit", name))
        service.faults.on_submit("sample")
        request = {
            "prompt": prompt,
            "num_samples": num_samples,
            "sampling_params": sampling_params,
            "include_prompt_logprobs": include_prompt_logprobs,
            "topk_prompt_logprobs": topk_prompt_logprobs,
            **({"prompt_logprobs_last_n": prompt_logprobs_last_n} if prompt_logprobs_last_n is not None else {}),
            **extra,
        }
        shape = sample_shape(prompt, num_samples, sampling_params, include_prompt_logprobs, topk_prompt_logprobs, prompt_logprobs_last_n)
        rules.check_sample(shape, service.limits)
        self.requests.append(request)
        scoring = include_prompt_logprobs or topk_prompt_logprobs > 0
        service.tally.count("sample (prompt logprobs)" if scoring else "sample")
        error = service.faults.next_result_error("sample")
        tokens = [int(t) for t in prompt.to_ints()]
        serial = len(self.requests)

        def respond() -> types.SampleResponse:
            return service.respond_sample(self, tokens, num_samples, sampling_params, topk_prompt_logprobs,
                                          include_prompt_logprobs, prompt_logprobs_last_n, serial)

        base = service.latency.teacher_s if scoring else service.latency.sample_s
        ready, index = service.clock.schedule(name, base)
        if scoring:
            service.link_scoring(index, tokens)
        else:
            self._drawn_index[serial] = index
        return SimFuture(name, service.log, value=respond, error=error, ready_at=ready, worker=service.worker)

    def compute_logprobs(self, prompt: types.ModelInput, prompt_logprobs_last_n: int | None = None) -> SimFuture:
        """``log p(prompt[i] | prompt[:i])`` for every position (``None`` first, and with
        ``prompt_logprobs_last_n`` before the last n positions), as the SDK's method."""
        service = self._service
        name = f"compute_logprobs:{self.kind}"
        service.log.append(("submit", name))
        service.faults.on_submit("compute_logprobs")
        tokens = [int(t) for t in prompt.to_ints()]
        shape = rules.SampleShape(
            len(tokens), min(tokens, default=0), max(tokens, default=0), 1, 1,
            include_prompt_logprobs=prompt_logprobs_last_n is not None, prompt_logprobs_last_n=prompt_logprobs_last_n,
        )
        rules.check_sample(shape, service.limits)
        self.requests.append({"compute_logprobs": prompt, "prompt_logprobs_last_n": prompt_logprobs_last_n})
        service.tally.count("compute_logprobs")
        first = 1 if prompt_logprobs_last_n is None else max(1, len(tokens) - prompt_logprobs_last_n)
        service.tally.add("tokens_scored", len(tokens) - first)
        error = service.faults.next_result_error("compute_logprobs")

        def respond() -> list[float | None]:
            rows = service.model.along(tokens, first, self.version)
            return [None] * min(first, len(tokens)) + [row.logprob(t) for row, t in zip(rows, tokens[first:], strict=True)]

        ready = service.clock.ready_at("compute_logprobs", service.latency.teacher_s)
        return SimFuture(name, service.log, value=respond, error=error, ready_at=ready, worker=service.worker)


class SimulatedTrainingClient:
    """A LoRA training client whose requests run one after another, each checked before it is accepted."""

    def __init__(self, service: SimulatedService, name: str) -> None:
        self.name = name
        self._service = service
        self.version = 0
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.samplers: list[SimulatedSamplingClient] = []
        self._busy_until = 0.0

    def _request(self, method: str, value: Any, base_s: float, **request: Any) -> SimFuture:
        service = self._service
        service.log.append(("submit", method))
        service.faults.on_submit(method)
        self.requests.append((method, request))
        service.tally.count(method)
        ready = service.clock.ready_at(method, base_s, after=self._busy_until)
        self._busy_until = ready
        return SimFuture(
            method, service.log, value=value, error=service.faults.next_result_error(method), ready_at=ready,
            worker=service.worker,
        )

    def get_tokenizer(self) -> Any:
        """The tokenizer the service was given (a dry run: the run's ``tml-renderers`` tokenizer; tests: any)."""
        return self._service.tokenizer

    def forward_backward(self, data: list[types.Datum], loss_fn: str, loss_fn_config: dict[str, float] | None = None) -> SimFuture:
        """Check every datum against the loss's documented inputs; answer with ``loss:sum`` and per-datum logprobs."""
        service = self._service
        rules.check_forward_backward([datum_shape(d) for d in data], loss_fn, loss_fn_config, service.limits)
        service.tally.add("datums_trained", len(data))
        service.tally.add("tokens_trained", sum(d.model_input.length for d in data))
        version = self.version

        def respond() -> types.ForwardBackwardOutput:
            return service.respond_forward_backward(data, loss_fn, loss_fn_config or {}, version)

        return self._request("forward_backward", respond, service.latency.forward_backward_s,
                             data=data, loss_fn=loss_fn, loss_fn_config=loss_fn_config)

    def optim_step(self, optim_params: types.AdamParams) -> SimFuture:
        """Check the Adam params; the weights change (a new version)."""
        rules.check_adam(*adam_args(optim_params))
        self.version += 1
        return self._request("optim_step", types.OptimStepResponse(metrics={"optim/lr": optim_params.learning_rate}),
                             self._service.latency.optim_s, params=optim_params)

    def save_state(self, name: str, ttl_seconds: int | None = None) -> SimFuture:
        """Answer with a ``tinker://`` path of the simulated session."""
        response = types.SaveWeightsResponse(path=f"tinker://{self.name}/weights/{name}")
        self._service.saved[response.path] = self.version
        return self._request("save_state", response, self._service.latency.save_s, name=name, ttl_seconds=ttl_seconds)

    def save_weights_and_get_sampling_client(self) -> SimFuture:
        """A sampling client of the current weights."""
        sampler = SimulatedSamplingClient(self._service, f"policy-{len(self.samplers) + 1}", self.version)
        self.samplers.append(sampler)
        return self._request("save_weights_and_get_sampling_client", sampler, self._service.latency.save_s)


class SimulatedService:
    """The simulated ``ServiceClient``: training clients (new or resumed) and base-model sampling clients.

    ``limits`` default to the catalog's (:func:`.models.model_limits`) for the model a training client
    is created for; ``tokenizer`` is what ``get_tokenizer()`` returns; ``seed`` seeds the pseudo-model.
    """

    def __init__(
        self,
        tokenizer: Any = None,
        faults: Faults | None = None,
        *,
        limits: ModelLimits | None = None,
        seed: int = 0,
        latency: Latency | None = None,
    ) -> None:
        self.log: Log = []
        self.faults = faults or Faults()
        self.tokenizer = tokenizer
        self.limits: ModelLimits = limits or ModelLimits(vocab_size=2**31 - 1, context_length=2**31 - 1, max_lora_rank=2**31 - 1)
        self._fixed_limits = limits is not None
        self.seed = seed
        self.latency = latency or Latency()
        self.worker = SimWorker() if self.latency != Latency() else None
        self.tally = Tally()
        self.clock = SimClock(self.latency, self.tally)
        self.model = PseudoModel(seed, self.limits.vocab_size, getattr(tokenizer, "eos_token_id", None), self._decodable())
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.training_clients: list[SimulatedTrainingClient] = []
        self.sampling_clients: list[SimulatedSamplingClient] = []
        self.closed: list[str] = []
        self._completions: dict[tuple[int, ...], list[int]] = {}
        """Sampled completion -> the sample requests (indices into ``tally.drawn``) not yet linked to a scoring."""
        self._link_lock = threading.Lock()
        self.saved: dict[str, int] = {}
        """``tinker://`` path -> the weights version saved there."""
        self._longest = 0

    def link_scoring(self, index: int, sequence: Sequence[int]) -> None:
        """Record which sampled completion the scoring request ``index`` scores: the longest that ends
        ``sequence``; where several sample requests returned it, the earliest done by now not linked yet."""
        drawn = self.tally.drawn
        with self._link_lock:
            for length in range(min(len(sequence) - 1, self._longest), 0, -1):
                origins = self._completions.get(tuple(sequence[-length:]))
                if origins:
                    now = time.monotonic()
                    done = [o for o in origins if drawn[o][1] + drawn[o][2] <= now] or origins
                    origin = min(done, key=lambda o: drawn[o][1] + drawn[o][2])
                    origins.remove(origin)
                    self.tally.links.append((index, origin))
                    return

    def _future(self, method: str, make: Callable[[], Any], **request: Any) -> SimFuture:
        self.log.append(("submit", method))
        self.faults.on_submit(method)
        self.requests.append((method, request))
        self.tally.count(method)
        return SimFuture(method, self.log, value=make, error=self.faults.next_result_error(method))

    def _use_model(self, model: str) -> None:
        if not self._fixed_limits:
            self.limits = rules.check_model(model, model_limits(model))
            self.model = PseudoModel(self.seed, self.limits.vocab_size, self.model.stop_token, self._decodable())

    def _decodable(self) -> int | None:
        """How many ids the tokenizer decodes, where it says (a model's embedding may have rows no token
        uses; a real model never samples them, so the pseudo-model does not either)."""
        count = getattr(self.tokenizer, "token_count", None)
        return count if isinstance(count, int) else None

    def _new_training(self) -> SimulatedTrainingClient:
        client = SimulatedTrainingClient(self, f"sim-run-{len(self.training_clients) + 1}")
        self.training_clients.append(client)
        return client

    def create_lora_training_client(self, base_model: str, rank: int = 32, seed: int | None = None) -> SimFuture:
        """Check the model and LoRA rank; a future of a new training client."""
        self._use_model(base_model)
        rules.check_lora_rank(rank, base_model, self.limits)
        return self._future("create_lora_training_client", self._new_training, base_model=base_model, rank=rank, seed=seed)

    def create_training_client_from_state_with_optimizer(self, path: str) -> SimFuture:
        """A future of a training client resumed from ``path`` (its weights, when this service saved them;
        else a trained policy of its own)."""
        if not path.startswith("tinker://"):
            raise rules.ServiceRuleError(f"Tinker would reject resuming from '{path}': not a tinker:// path")
        version = self.saved.get(path, 1)

        def resume() -> SimulatedTrainingClient:
            client = self._new_training()
            client.version = version
            return client

        return self._future("create_training_client_from_state_with_optimizer", resume, path=path)

    def create_sampling_client(self, model_path: str | None = None, base_model: str | None = None) -> SimFuture:
        """A future of a base-model sampling client."""

        def make() -> SimulatedSamplingClient:
            client = SimulatedSamplingClient(self, "base", 0)
            self.sampling_clients.append(client)
            return client

        return self._future("create_sampling_client", make, model_path=model_path, base_model=base_model)

    def close(self, status: str, detail: str | None = None) -> SimFuture:
        """Record the session's end."""
        self.closed.append(status)
        return SimFuture("close", self.log, value=None)

    # -- responses --------------------------------------------------------------------------------

    def draw_completions(
        self, prompt: Sequence[int], num_samples: int, params: types.SamplingParams, version: int = 0, serial: int = 0
    ) -> list[tuple[list[int], list[float], str]]:
        """``(tokens, logprobs, stop_reason)`` of each completion the pseudo-model samples for ``prompt``.

        Deterministic from the service seed, ``params.seed`` (else ``serial``), the prompt and the sample index.
        """
        prompt = [int(t) for t in prompt]
        stop_ids, stop_texts = self._stops(params.stop)
        temperature = float(params.temperature)
        seed = params.seed if params.seed is not None else serial
        completions = []
        start = self.model.context(prompt, version)
        for index in range(num_samples):
            rng = seeded_rng(self.seed, int(seed), index, len(prompt), *prompt[-8:])
            context = start.copy()
            out: list[int] = []
            lps: list[float] = []
            reason = "length"
            for _ in range(int(params.max_tokens or 1)):
                found = context.next()
                ids, logprobs = found.ids, found.logprobs
                if temperature <= 0:
                    pick = 0
                else:
                    weights = np.exp((logprobs - logprobs.max()) / temperature)
                    pick = int(rng.choice(len(ids), p=weights / weights.sum()))
                out.append(int(ids[pick]))
                lps.append(float(logprobs[pick]))
                context.push(out[-1])
                if out[-1] in stop_ids or (stop_texts and self._hits_text(out, stop_texts)):
                    reason = "stop"
                    break
            completions.append((out, lps, reason))
        return completions

    def topk_rows(self, sequence: Sequence[int], k: int, first: int = 1, version: int = 0) -> TopkLogprobs:
        """Dense top-``k`` prompt-logprob rows of ``sequence``: row ``i >= first`` is the top-k of ``p(. | s[:i])``;
        other rows hold the SDK's empty sentinel (token 0, ``MASK_LOGPROB``)."""
        tokens = [int(t) for t in sequence]
        ids_m = np.zeros((len(tokens), k), dtype=np.int32)
        lps_m = np.full((len(tokens), k), MASK_LOGPROB, dtype=np.float32)
        start = max(first, 1)
        for i, found in enumerate(self.model.along(tokens, start, version), start):
            width = min(k, len(found.ids))
            ids_m[i, :width] = found.ids[:width]
            lps_m[i, :width] = found.logprobs[:width]
        return TopkLogprobs(token_ids=ids_m, logprobs=lps_m)

    def respond_sample(
        self, client: SimulatedSamplingClient, prompt: list[int], num_samples: int, params: types.SamplingParams,
        topk: int, include_prompt_logprobs: bool, last_n: int | None, serial: int,
    ) -> types.SampleResponse:
        """Completions drawn from the pseudo-model, plus the prompt's (top-k) logprobs when asked."""
        version = client.version
        sequences = []
        origin = client._drawn_index.get(serial)
        for index, (out, lps, reason) in enumerate(self.draw_completions(prompt, num_samples, params, version, serial)):
            self.tally.add("tokens_sampled", len(out))
            if origin is not None and out:
                with self._link_lock:
                    self._completions.setdefault(tuple(out), []).append(origin)
                    self._longest = max(self._longest, len(out))
            sequences.append(types.SampledSequence(
                stop_reason=reason, sequence_id=f"{client.kind}-{serial}-{index}",
                tokens_np=np.asarray(out, dtype=np.int32), logprobs_np=np.asarray(lps, dtype=np.float32),
            ))
        if not (include_prompt_logprobs or topk):
            return types.SampleResponse(sequences=sequences)
        n = len(prompt)
        first = 1 if last_n is None else n - last_n
        self.tally.add("tokens_scored", n - first)
        plp = np.full(n, np.nan, dtype=np.float32)
        if include_prompt_logprobs:
            for i, found in enumerate(self.model.along(prompt, first, version), first):
                plp[i] = found.logprob(prompt[i])
        return types.SampleResponse(
            sequences=sequences,
            prompt_logprobs_np=plp if include_prompt_logprobs else None,
            topk_prompt_logprobs_np=self.topk_rows(prompt, topk, first, version) if topk else None,
        )

    def _stops(self, stop: Any) -> tuple[set[int], list[str]]:
        eos = self.model.stop_token
        if stop is None:
            return ({eos} if eos is not None else set()), []
        items = [stop] if isinstance(stop, str) else list(stop)
        ids = {int(s) for s in items if isinstance(s, (int, np.integer))}
        texts = [s for s in items if isinstance(s, str) and s]
        if eos is not None and items:
            ids.add(eos)
        return ids, texts

    def _hits_text(self, tokens: list[int], texts: list[str]) -> bool:
        decode = getattr(self.tokenizer, "decode", None)
        return decode is not None and any(t in decode(tokens, skip_special_tokens=True) for t in texts)

    def respond_forward_backward(
        self, data: list[types.Datum], loss_fn: str, config: dict[str, float], version: int
    ) -> types.ForwardBackwardOutput:
        """The loss of the pseudo-model's logprobs of each datum's targets, as the service computes it.

        The ``logprobs`` output holds 0.0 at positions whose weights (``cross_entropy``) or advantages
        (the others) are all zero: they do not enter the loss, and the simulator skips them.
        """
        total = 0.0
        outputs = []
        for datum in data:
            tokens = [int(t) for t in datum.model_input.to_ints()]
            targets = np.asarray(datum.loss_fn_inputs["target_tokens"].to_numpy())
            weighed = datum.loss_fn_inputs["weights" if loss_fn == "cross_entropy" else "advantages"].to_numpy()
            live = np.asarray(weighed).reshape(len(tokens), -1).any(axis=1)
            flat = targets.reshape(len(tokens), -1)
            rows = np.zeros(flat.shape, dtype=np.float32)  # rows that carry no weight are not computed: 0.0
            context = self.model.context((), version)
            for i, token in enumerate(tokens):
                context.push(token)
                if live[i]:
                    found = context.next()
                    rows[i] = [found.logprob(t) for t in flat[i].tolist()]
            lp = rows.reshape(targets.shape)
            if loss_fn == "cross_entropy":
                weights = np.asarray(datum.loss_fn_inputs["weights"].to_numpy(), dtype=np.float64)
                total += float(-(weights * lp).sum())
            else:
                old = np.asarray(datum.loss_fn_inputs["logprobs"].to_numpy(), dtype=np.float64)
                adv = np.asarray(datum.loss_fn_inputs["advantages"].to_numpy(), dtype=np.float64)
                ratio = np.exp(lp.astype(np.float64) - old)
                if loss_fn in ("ppo", "cispo"):
                    low, high = config.get("clip_low_threshold", 0.8), config.get("clip_high_threshold", 1.2)
                    ratio = np.minimum(ratio * adv, np.clip(ratio, low, high) * adv) / np.where(adv == 0, 1, adv)
                total += float(-(ratio * adv).sum())
            outputs.append({"logprobs": types.TensorData.from_numpy(lp)})
        return types.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord", loss_fn_outputs=outputs, metrics={"loss:sum": total})
