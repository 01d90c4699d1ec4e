"""The ``tinker`` backend: :class:`~evsys.schema.protocols.Backend` on the remote Tinker service.

Each protocol call maps to the SDK (tinker 0.38) as follows; see docs/backends-tinker.md.

- ``tokenizer`` / ``render_chat`` / ``render_chat_for_sft``: the model's ``tml-renderers`` renderer, as
  tinker-cookbook picks it (:mod:`.renderers`; built-in tokenizer, offline); models it does not cover use
  ``TrainingClient.get_tokenizer()`` and its Hugging Face chat template. Sampling stops at the
  renderer's stop tokens;
- ``sample``: ``TrainingClient.save_weights_and_get_sampling_client()`` (again only after the weights
  changed) then ``SamplingClient.sample(...)``, one request per prompt, all in flight at once;
- ``topk_logprobs``: a base-model ``SamplingClient`` and ``sample(prompt=seq, num_samples=1,
  sampling_params=SamplingParams(max_tokens=1), include_prompt_logprobs=True, topk_prompt_logprobs=k)``
  per sequence, all in flight at once;
- ``sample_and_score`` (SDFT's rollouts): both of the above, each rollout's scoring submitted the moment
  its sample returns;
- ``compute_logprobs``: ``SamplingClient.compute_logprobs(seq)`` per sequence on the base-model client
  (``base=True``) or the policy's;
- ``forward_backward``: ``TrainingClient.forward_backward(data, loss_fn, loss_fn_config)``; the loss is
  ``metrics["loss:sum"]``. It returns after *submitting*: the result resolves lazily, so an
  ``optim_step`` that follows is submitted before anything waits (``pipeline_optim_step``);
- ``optim_step``: ``TrainingClient.optim_step(AdamParams(...))``;
- ``save_checkpoint`` / ``load_checkpoint``: ``save_state(name)`` and
  ``ServiceClient.create_training_client_from_state_with_optimizer(path)``; every tinker:// path is
  appended to ``<run_dir>/tinker_checkpoints.jsonl``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from evsys.backends.tinker.chat import render_chat_ids
from evsys.backends.tinker.credentials import MISSING_KEY_MESSAGE, credential_source
from evsys.backends.tinker.params import TinkerBackendParams
from evsys.backends.tinker.renderers import RendererChat, choose_renderer, opens_thinking
from evsys.backends.tinker.retry import RetryPolicy, call_with_retries, describe, is_service_error
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import (
    BackendSetup,
    Datum,
    ForwardBackwardResult,
    LossName,
    Message,
    SampledSequence,
    Tokenizer,
    TopKLogprobs,
)

logger = logging.getLogger("evsys.backends.tinker")

T = TypeVar("T")
LOSSES: tuple[str, ...] = ("cross_entropy", "importance_sampling", "ppo")
CHECKPOINTS_FILE = "tinker_checkpoints.jsonl"


class PendingForwardBackwardResult(ForwardBackwardResult):
    """A :class:`ForwardBackwardResult` whose ``loss_sum`` and ``metrics`` wait for the service on first read.

    ``forward_backward`` returns one right after submitting the request, so the ``optim_step`` that
    usually follows is submitted before anything waits; ``optim_step`` resolves it. Read the loss
    after ``optim_step`` to keep the two requests back to back.
    """

    def __init__(self, resolve: Callable[[], ForwardBackwardResult]) -> None:
        self._resolve = resolve
        self._value: ForwardBackwardResult | None = None
        self._error: Exception | None = None
        self._lock = threading.Lock()
        self.owner = threading.get_ident()

    def result(self) -> ForwardBackwardResult:
        """Wait for the service (once) and return the plain result; re-raises a failure on every call."""
        with self._lock:
            if self._value is None and self._error is None:
                try:
                    self._value = self._resolve()
                except Exception as exc:
                    self._error = exc
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value

    @property
    def resolved(self) -> bool:
        """Whether the result (or its failure) has arrived."""
        return self._value is not None or self._error is not None

    @property  # type: ignore[override]
    def loss_sum(self) -> float:
        """The loss as a raw sum over weighted tokens (waits for the service)."""
        return self.result().loss_sum

    @loss_sum.setter
    def loss_sum(self, value: float) -> None:
        self.result().loss_sum = value

    @property  # type: ignore[override]
    def metrics(self) -> dict[str, float]:
        """The service's metrics of this forward_backward (waits for the service)."""
        return self.result().metrics

    @metrics.setter
    def metrics(self, value: dict[str, float]) -> None:
        self.result().metrics = value

    def __repr__(self) -> str:
        if self._value is not None:
            return f"PendingForwardBackwardResult(loss_sum={self._value.loss_sum!r}, metrics={self._value.metrics!r})"
        return "PendingForwardBackwardResult(<failed>)" if self._error else "PendingForwardBackwardResult(<pending>)"


def _import_tinker() -> Any:
    try:
        import tinker
    except ImportError as exc:
        raise EvsysError(
            f"backend 'tinker' needs the tinker SDK: pip install 'evsys-backends[tinker]' ({exc})"
        ) from None
    return tinker


CAPABILITIES_TIMEOUT_S = 30.0
"""Longest wait for the service's model list at start; past it the cached or static list is used."""


def _is_sdk_service(service_client: Any) -> bool:
    """Whether ``service_client`` is the SDK's own ``ServiceClient`` (then its RestClient can list models)."""
    try:
        from tinker.lib.public_interfaces.service_client import ServiceClient
    except ImportError:  # another SDK layout: judge by where the class comes from
        return type(service_client).__module__.split(".")[0] == "tinker"
    return isinstance(service_client, ServiceClient)


class TinkerBackend:
    """The Backend protocol on the Tinker service: a LoRA training client plus sampling clients.

    ``service_client`` replaces ``tinker.ServiceClient()`` (tests pass the simulator,
    :class:`~evsys.backends.tinker.simulator.SimulatedService`). With ``setup.dry_run`` the simulator
    serves the run offline (no key) and :meth:`close` writes its summary to ``dry_run.md``. Otherwise a
    credential must exist (``TINKER_API_KEY``, ``TINKER_CREDENTIAL_CMD`` or ``tinker auth login``'s
    file) before any client is built; the SDK reads it itself, and this object never holds the key.
    """

    supports_dry_run = True

    def __init__(
        self,
        setup: BackendSetup,
        params: TinkerBackendParams | None = None,
        *,
        service_client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        fetch_capabilities: Callable[[], Any] | None = None,
    ) -> None:
        self._setup = setup
        self._params = params if params is not None else TinkerBackendParams()
        self._policy = RetryPolicy(
            max_retries=self._params.max_retries,
            backoff_s=self._params.retry_backoff_s,
            backoff_max_s=self._params.retry_backoff_max_s,
            total_s=self._params.retry_total_s,
        )
        self._sleep = sleep
        self._owns_service = service_client is None
        self._simulated: Any = None
        self._renderer_choice = choose_renderer(setup.model_name, self._params.renderer)
        self._renderer: RendererChat | None = None
        if service_client is None and setup.dry_run:
            from evsys.backends.tinker.dry_run import simulated_service

            service_client = self._simulated = simulated_service(setup, self.renderer)
        elif service_client is None:
            if credential_source() is None:
                raise EvsysError(MISSING_KEY_MESSAGE)
            tinker = _import_tinker()
            service_client = tinker.ServiceClient(
                base_url=self._params.base_url,
                display_name=self._params.display_name or f"evsys {setup.model_name}",
            )
        else:
            _import_tinker()
        if self._params.record_requests:
            from pathlib import Path

            from evsys.backends.tinker.recording import RecordingService

            source = "simulator" if setup.dry_run else "service"
            service_client = RecordingService(service_client, Path(self._params.record_requests), source)
        if setup.model_revision:
            logger.warning(
                "Tinker serves '%s' at the service's revision; model.revision '%s' is ignored",
                setup.model_name,
                setup.model_revision,
            )
        self._service = service_client
        if fetch_capabilities is None and _is_sdk_service(service_client):
            rest = _import_tinker().RestClient(base_url=self._params.base_url)
            fetch_capabilities = lambda: rest.get_server_capabilities().result(CAPABILITIES_TIMEOUT_S)  # noqa: E731
        if fetch_capabilities is not None:
            self._check_model_offered(fetch_capabilities)
        self._failed = False
        self._closed = False
        self._tokenizer: Any = None
        self._base_sampler: Any = None
        self._policy_sampler: Any = None
        self._weights_version = 0
        self._sampler_version = -1
        self._pending: list[PendingForwardBackwardResult] = []
        self._pending_lock = threading.Lock()
        self._turn = threading.Lock()  # held from a step's forward_backward to its optim_step (off-policy mode)
        self._in_flight = 0  # optim_steps submitted and not yet done
        self._local = threading.local()
        self._on_training_submitted: Callable[[], None] | None = None
        self._pool: Any = None
        self._pool_size = 0
        self._training = self._call(
            f"create a LoRA training client for '{setup.model_name}' (rank {setup.lora_rank})",
            lambda: self._service.create_lora_training_client(
                base_model=setup.model_name, rank=setup.lora_rank, seed=setup.seed
            ),
        )

    def _check_model_offered(self, fetch: Callable[[], Any]) -> None:
        """Check the model against the service's catalog (cached on disk for a day; see :mod:`.catalog`)."""
        from evsys.backends.tinker.catalog import load_catalog, model_problem

        catalog = load_catalog(fetch, base_url=self._params.base_url)
        found = model_problem(self._setup.model_name, catalog)
        if found is None:
            return
        severity, message = found
        if severity == "error":
            raise EvsysError(message)
        logger.warning("%s", message)

    def __repr__(self) -> str:
        return f"TinkerBackend(model={self._setup.model_name!r}, lora_rank={self._setup.lora_rank})"

    # -- plumbing ---------------------------------------------------------------------------------

    def _wait(self, future: Any) -> Any:
        timeout = self._params.request_timeout_s
        return future.result(timeout) if timeout is not None else future.result()

    def _fail(self, error: EvsysError) -> EvsysError:
        self._failed = True
        return error

    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return call_with_retries(fn, what=what, policy=self._policy, sleep=self._sleep)
        except EvsysError:
            self._failed = True
            raise

    def _call(self, what: str, submit: Callable[[], Any]) -> Any:
        """Submit and wait, retrying both on a transient error (idempotent requests only)."""
        return self._retrying(what, lambda: self._wait(submit()))

    def _submit_once(self, what: str, submit: Callable[[], Any]) -> Any:
        """Submit a request that changes the weights; retries only failures to submit it."""
        return self._retrying(f"submit {what}", submit)

    def _wait_once(self, what: str, future: Any) -> Any:
        """Wait for a request that changes the weights: a failure is not retried (it may have applied)."""
        try:
            return self._wait(future)
        except Exception as exc:
            if not is_service_error(exc):
                raise
            raise self._fail(
                EvsysError(
                    f"Tinker: {what} failed: {describe(exc)}; the weights may be partly updated, "
                    "so it is not retried: resume the run from its last checkpoint"
                )
            ) from exc

    def _gather(self, what: str, submits: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run idempotent requests with up to ``teacher_concurrency`` in flight, in order; retry each alone."""
        results: list[Any] = [None] * len(submits)
        inflight: deque[tuple[int, Any]] = deque()

        def finish(index: int, first: Any) -> None:
            queue = [first]

            def attempt() -> Any:
                if queue:
                    item = queue.pop()
                    if isinstance(item, BaseException):
                        raise item
                    return self._wait(item)
                return self._wait(submits[index]())

            results[index] = self._retrying(what, attempt)

        for index, submit in enumerate(submits):
            if len(inflight) >= self._params.teacher_concurrency:
                finish(*inflight.popleft())
            try:
                inflight.append((index, submit()))
            except Exception as exc:
                inflight.append((index, exc))
        while inflight:
            finish(*inflight.popleft())
        return results

    def _drain(self, *, own: bool = False) -> None:
        """Resolve every pending forward_backward result (``own``: this thread's only), surfacing a failure."""
        while True:
            with self._pending_lock:
                mine = [p for p in self._pending if not own or p.owner == threading.get_ident()]
                if not mine:
                    return
                self._pending.remove(mine[0])
            mine[0].result()

    def _record(self, row: Mapping[str, Any]) -> None:
        run_dir = self._setup.run_dir
        if run_dir is None:
            logger.info("Tinker checkpoint %s (no run directory to record it in)", row.get("path"))
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        line = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **row}
        with (run_dir / CHECKPOINTS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def _checkpoint_rows(self) -> list[dict[str, Any]]:
        run_dir = self._setup.run_dir
        if run_dir is None or not (run_dir / CHECKPOINTS_FILE).is_file():
            return []
        rows = []
        for line in (run_dir / CHECKPOINTS_FILE).read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
        return rows

    @property
    def max_steps_off_policy(self) -> int:
        """How many optimizer steps old the weights that sample may be while training is in flight (0: on-policy)."""
        return self._params.max_steps_off_policy

    def on_training_submitted(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the step's thread) once a step's ``optim_step`` has been submitted."""
        self._on_training_submitted = callback

    def _current_sampler(self) -> Any:
        lag = self._weights_version - self._sampler_version
        if self._policy_sampler is not None and self._in_flight > 0 and lag <= self.max_steps_off_policy:
            self._local.sampler_version = self._sampler_version  # off policy: the weights before the step in flight
            return self._policy_sampler
        self._drain()
        if self._policy_sampler is None or self._sampler_version != self._weights_version:
            self._refresh_sampler()
        self._local.sampler_version = self._sampler_version
        return self._policy_sampler

    def _refresh_sampler(self) -> None:
        """Save the weights for sampling; the sampler is labelled with the optimizer steps submitted before it."""
        version = self._weights_version
        sampler = self._call(
            "save the weights for sampling", lambda: self._training.save_weights_and_get_sampling_client()
        )
        if version >= self._sampler_version:
            self._policy_sampler, self._sampler_version = sampler, version

    def _teacher_sampler(self) -> Any:
        if self._base_sampler is None:
            model = self._setup.model_name
            self._base_sampler = self._call(
                f"create a base-model sampling client for '{model}'",
                lambda: self._service.create_sampling_client(base_model=model),
            )
        return self._base_sampler

    # -- the Backend protocol ---------------------------------------------------------------------

    @property
    def renderer(self) -> RendererChat | None:
        """The ``tml-renderers`` renderer of this run, or None where the Hugging Face chat template is used."""
        if self._renderer is None and not self._renderer_choice.uses_hf_template:
            self._renderer = RendererChat(self._renderer_choice.name)
        return self._renderer

    @property
    def tokenizer(self) -> Tokenizer:
        """The renderer's built-in tokenizer, or (models it does not cover) ``TrainingClient.get_tokenizer()``."""
        if self._tokenizer is None:
            renderer = self.renderer
            if renderer is not None:
                self._tokenizer = renderer.tokenizer
                return self._tokenizer  # type: ignore[no-any-return]
            try:
                self._tokenizer = self._training.get_tokenizer()
            except Exception as exc:
                raise self._fail(
                    EvsysError(
                        f"cannot load the tokenizer of '{self._setup.model_name}': tml-renderers does not cover "
                        "this model, so its Hugging Face tokenizer is needed and the Tinker SDK fetches it from "
                        f"the Hugging Face hub ({describe(exc)})"
                    )
                ) from exc
        return self._tokenizer  # type: ignore[no-any-return]

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """Render chat ``messages`` into token ids with the run's renderer (or the HF chat template)."""
        renderer = self.renderer
        if renderer is not None:
            return renderer.render_chat(messages, add_generation_prompt)
        return render_chat_ids(self.tokenizer, messages, add_generation_prompt)

    def render_chat_for_sft(self, messages: Sequence[Message]) -> list[tuple[list[int], list[float]]] | None:
        """The renderer's SFT examples of a chat, ``(tokens, weights)`` each (``render_for_sft``), or None
        where the Hugging Face template is used (SFT then finds the assistant turns by rendering prefixes)."""
        renderer = self.renderer
        return renderer.render_sft(messages) if renderer is not None else None

    def _stop_for(self, stop: Sequence[str] | None) -> list[str] | list[int] | None:
        """The request's stop: the renderer's stop tokens, as text beside any stop strings."""
        renderer = self.renderer
        if renderer is None or not renderer.stop_tokens:
            return list(stop) if stop else None
        if not stop:
            return list(renderer.stop_tokens)
        return [*stop, *(renderer.tokenizer.decode([t]) for t in renderer.stop_tokens)]

    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        n: int = 1,
        max_tokens: int = 64,
        temperature: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[list[SampledSequence]]:
        """Sample ``n`` completions per prompt from the current weights, all prompts in flight at once."""
        from evsys.backends.tinker.convert import sampling_params

        tinker = _import_tinker()
        if not prompts:
            return []
        sampler = self._current_sampler()
        params = sampling_params(max_tokens, temperature, self._stop_for(stop), seed)

        def submit_for(prompt: Sequence[int]) -> Callable[[], Any]:
            model_input = tinker.types.ModelInput.from_ints([int(t) for t in prompt])
            return lambda: sampler.sample(prompt=model_input, num_samples=n, sampling_params=params)

        submits = [submit_for(prompt) for prompt in prompts]
        responses = self._gather("sample from the policy", submits)
        return [self._samples_of(prompt, response, stop) for prompt, response in zip(prompts, responses, strict=True)]

    def _samples_of(self, prompt: Sequence[int], response: Any, stop: Sequence[str] | None) -> list[SampledSequence]:
        """The protocol's samples of one ``SampleResponse``; where the prompt opened the thinking block,
        each text starts with it, so whoever scores the text sees the thinking (and its end)."""
        from evsys.backends.tinker.convert import to_sampled_sequence

        tokenizer = self.tokenizer
        samples = [to_sampled_sequence(seq, tokenizer, stop) for seq in response.sequences]
        if self._renderer_choice.thinking and opens_thinking(tokenizer.decode(list(prompt))):
            for seq in samples:
                seq.text = "<think>\n" + seq.text
        return samples

    def topk_logprobs(
        self, sequences: Sequence[Sequence[int]], k: int, from_position: int | Sequence[int]
    ) -> list[TopKLogprobs]:
        """Top-k of ``p(. | s[:i])`` for ``i`` in ``[from_position, len(s))`` under the frozen base model.

        One prompt-logprob request per sequence to a base-model sampling client, all in flight at once
        (at most ``teacher_concurrency``); row ``i`` of Tinker's ``topk_prompt_logprobs`` is exactly the
        distribution that predicts ``s[i]``.
        """
        from evsys.backends.tinker.convert import start_positions, topk_from_response

        tinker = _import_tinker()
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        starts = start_positions(sequences, from_position)
        asked = [i for i, (seq, start) in enumerate(zip(sequences, starts, strict=True)) if start < len(seq)]
        out = [TopKLogprobs(token_ids=[], logprobs=[]) for _ in sequences]
        if not asked:
            return out
        sampler = self._teacher_sampler()
        params = tinker.types.SamplingParams(max_tokens=1)

        def submit_for(index: int) -> Callable[[], Any]:
            tokens = [int(t) for t in sequences[index]]
            extra: dict[str, Any] = {}
            if self._params.teacher_suffix_only:
                extra["prompt_logprobs_last_n"] = len(tokens) - starts[index]
            return lambda: sampler.sample(
                prompt=tinker.types.ModelInput.from_ints(tokens),
                num_samples=1,
                sampling_params=params,
                include_prompt_logprobs=True,
                topk_prompt_logprobs=k,
                **extra,
            )

        responses = self._gather("score with the teacher (top-k prompt logprobs)", [submit_for(i) for i in asked])
        for index, response in zip(asked, responses, strict=True):
            try:
                out[index] = topk_from_response(response, len(sequences[index]), starts[index], k)
            except RuntimeError as exc:
                raise self._fail(EvsysError(f"Tinker: teacher scoring failed: {exc}")) from exc
        return out

    def sample_and_score(
        self,
        prompts: Sequence[Sequence[int]],
        prefixes: Sequence[Sequence[int]],
        k: int,
        n: int = 1,
        max_tokens: int = 64,
        temperature: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> tuple[list[list[SampledSequence]], list[list[TopKLogprobs | None]]]:
        """Sample ``n`` completions per prompt and score each with the frozen base model as soon as it returns.

        Every prompt's sample request goes out at once; the moment one returns, the top-``k`` prompt
        logprobs of ``prefixes[i] + completion`` (from ``len(prefixes[i])`` on) are requested for each of
        its completions, while the other rollouts are still sampling. Equals :meth:`sample` followed by
        :meth:`topk_logprobs` (``None`` for an empty completion), without waiting for the slowest rollout.
        """
        from evsys.backends.tinker.rollouts import sample_and_score

        return sample_and_score(self, prompts, prefixes, k, n, max_tokens, temperature, stop, seed)

    def compute_logprobs(
        self, sequences: Sequence[Sequence[int]], from_position: int | Sequence[int] = 1, base: bool = True
    ) -> list[list[float]]:
        """Exact ``log p(s[i] | s[:i])`` for ``i`` in ``[from_position, len(s))``: ``SamplingClient.compute_logprobs``
        on the base-model client (``base=True``) or the current policy's, one request per sequence, all in
        flight at once (at most ``teacher_concurrency``)."""
        from evsys.backends.tinker.convert import logprobs_from_prompt, start_positions

        tinker = _import_tinker()
        starts = start_positions(sequences, from_position)
        asked = [i for i, (seq, start) in enumerate(zip(sequences, starts, strict=True)) if start < len(seq)]
        out: list[list[float]] = [[] for _ in sequences]
        if not asked:
            return out
        sampler = self._teacher_sampler() if base else self._current_sampler()

        def submit_for(index: int) -> Callable[[], Any]:
            tokens = [int(t) for t in sequences[index]]
            extra: dict[str, Any] = {}
            if self._params.teacher_suffix_only:
                extra["prompt_logprobs_last_n"] = len(tokens) - starts[index]
            return lambda: sampler.compute_logprobs(tinker.types.ModelInput.from_ints(tokens), **extra)

        which = "the base model" if base else "the policy"
        responses = self._gather(f"score with {which} (prompt logprobs)", [submit_for(i) for i in asked])
        for index, values in zip(asked, responses, strict=True):
            try:
                out[index] = logprobs_from_prompt(values, len(sequences[index]), starts[index])
            except RuntimeError as exc:
                raise self._fail(EvsysError(f"Tinker: scoring with {which} failed: {exc}")) from exc
        return out

    def forward_backward(
        self, batch: Sequence[Datum], loss_fn: LossName, loss_fn_config: Mapping[str, float] | None = None
    ) -> ForwardBackwardResult:
        """Submit ``forward_backward(data, loss_fn)``; the loss (``metrics["loss:sum"]``) resolves lazily.

        With ``pipeline_optim_step`` (the default) the returned result waits for the service only when
        read, or when ``optim_step`` (submitted first) resolves it; otherwise it is resolved here.
        """
        return self._forward_backward(batch, loss_fn, loss_fn_config, defer=self._params.pipeline_optim_step)

    def _forward_backward(
        self,
        batch: Sequence[Datum],
        loss_fn: str,
        loss_fn_config: Mapping[str, float] | None,
        *,
        defer: bool,
    ) -> ForwardBackwardResult:
        from evsys.backends.tinker.convert import loss_sum_from_output, to_tinker_datum

        if loss_fn not in LOSSES:
            raise ValueError(f"unknown loss '{loss_fn}'; the tinker backend supports {', '.join(LOSSES)}")
        if not batch:
            raise ValueError("forward_backward needs at least one datum")
        data = [to_tinker_datum(d, loss_fn) for d in batch]
        config = {k: float(v) for k, v in loss_fn_config.items()} if loss_fn_config else None
        if self.max_steps_off_policy:
            self._turn.acquire()  # the steps' training requests go out in order: released by optim_step
        try:
            future = self._submit_once(
                f"forward_backward ({loss_fn})",
                lambda: self._training.forward_backward(data, loss_fn, loss_fn_config=config),
            )
        except BaseException:
            if self.max_steps_off_policy:
                self._turn.release()
            raise

        def resolve() -> ForwardBackwardResult:
            output = self._wait_once(f"forward_backward ({loss_fn})", future)
            try:
                loss = loss_sum_from_output(output, loss_fn, data)
            except RuntimeError as exc:
                raise self._fail(EvsysError(f"Tinker: {exc}")) from exc
            metrics = {str(k): float(v) for k, v in (output.metrics or {}).items()}
            return ForwardBackwardResult(loss_sum=loss, metrics=metrics)

        pending = PendingForwardBackwardResult(resolve)
        if defer:
            with self._pending_lock:
                self._pending.append(pending)
            return pending
        return pending.result()

    def optim_step(
        self,
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.95,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        grad_clip: float | None = None,
    ) -> dict[str, float]:
        """Submit ``optim_step(AdamParams(...))``, then wait for pending forward_backward results and for it."""
        tinker = _import_tinker()
        adam = tinker.types.AdamParams(
            learning_rate=learning_rate,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            grad_clip_norm=float(grad_clip) if grad_clip else 0.0,
        )
        try:
            future = self._submit_once("optim_step", lambda: self._training.optim_step(adam))
        finally:
            if self.max_steps_off_policy and self._turn.locked():
                self._turn.release()
        staleness = self._weights_version - getattr(self._local, "sampler_version", self._weights_version)
        self._weights_version += 1
        self._in_flight += 1
        try:
            if self._on_training_submitted is not None:
                self._on_training_submitted()
            self._drain(own=bool(self.max_steps_off_policy))
            response = self._wait_once("optim_step", future)
            if self.max_steps_off_policy:
                self._refresh_sampler()  # the next overlapping step samples these weights, one step behind
        finally:
            self._in_flight -= 1
        metrics = {str(k): float(v) for k, v in (getattr(response, "metrics", None) or {}).items()}
        if self.max_steps_off_policy:
            metrics["off_policy_steps"] = float(staleness)
        return metrics

    def forward_backward_and_optim_step(
        self,
        batch: Sequence[Datum],
        loss_fn: LossName,
        loss_fn_config: Mapping[str, float] | None = None,
        *,
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.95,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        grad_clip: float | None = None,
    ) -> tuple[ForwardBackwardResult, dict[str, float]]:
        """One training step with both requests submitted before waiting; returns the resolved results."""
        pending = self._forward_backward(batch, loss_fn, loss_fn_config, defer=True)
        metrics = self.optim_step(learning_rate, beta1, beta2, eps, weight_decay, grad_clip)
        result = pending.result() if isinstance(pending, PendingForwardBackwardResult) else pending
        return result, metrics

    def save_checkpoint(self, name: str) -> str:
        """``save_state(name)`` (weights and optimizer state); records the tinker:// path in the run dir."""
        self._drain()
        response = self._call(
            f"save checkpoint '{name}'",
            lambda: self._training.save_state(name, ttl_seconds=self._params.checkpoint_ttl_s),
        )
        path = str(response.path)
        self._record(
            {
                "event": "save",
                "name": name,
                "path": path,
                "model": self._setup.model_name,
                "lora_rank": self._setup.lora_rank,
            }
        )
        return path

    def load_checkpoint(self, path: str) -> None:
        """Resume from a tinker:// path (or a name recorded in the run dir) with its optimizer state."""
        self._drain()
        resolved = path
        if not path.startswith("tinker://"):
            named = [row for row in self._checkpoint_rows() if row.get("event") == "save" and row.get("name") == path]
            if not named:
                raise self._fail(
                    EvsysError(
                        f"cannot resume from '{path}': not a tinker:// path, and no checkpoint of that name "
                        f"is recorded in {CHECKPOINTS_FILE} of the run directory"
                    )
                )
            resolved = str(named[-1]["path"])
        self._training = self._call(
            f"resume from checkpoint {resolved}",
            lambda: self._service.create_training_client_from_state_with_optimizer(resolved),
        )
        self._weights_version += 1
        self._policy_sampler = None
        self._record({"event": "load", "path": resolved, "model": self._setup.model_name})

    def close(self) -> None:
        """Wait for pending results (reporting, not raising, their failures) and end the service session."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        if self._turn.locked():
            self._turn.release()
        try:
            self._drain()
        except Exception as exc:
            self._failed = True
            logger.warning("Tinker: a pending request failed while closing: %s", describe(exc))
            self._pending.clear()
        if self._simulated is not None:
            from evsys.backends.tinker.dry_run import write_summary

            write_summary(self._simulated, self._setup, failed=self._failed)
            return
        if self._owns_service and hasattr(self._service, "close"):
            try:
                future = self._service.close("errored" if self._failed else "success")
                if future is not None and hasattr(future, "result"):
                    future.result(30)
            except Exception as exc:
                logger.warning("Tinker: could not end the session cleanly: %s", describe(exc))
