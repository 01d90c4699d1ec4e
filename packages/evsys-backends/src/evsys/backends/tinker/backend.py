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
  appended to ``<run_dir>/tinker_checkpoints.jsonl`` (:mod:`.checkpoint_log`).

Sending, waiting and retrying are :mod:`.calls`; the client is built in :mod:`.service`; the sampling
requests are :mod:`.sampling` and :mod:`.rollouts`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evsys.backends.tinker.calls import PendingForwardBackwardResult, PendingResults, ServiceCalls
from evsys.backends.tinker.chat import render_chat_ids
from evsys.backends.tinker.checkpoint_log import CHECKPOINTS_FILE, checkpoint_rows, record_checkpoint
from evsys.backends.tinker.params import TinkerBackendParams
from evsys.backends.tinker.renderers import RendererChat, choose_renderer
from evsys.backends.tinker.retry import RetryPolicy, describe
from evsys.backends.tinker.service import check_model_offered, connect, import_tinker
from evsys.schema.errors import EvsysError, Problem
from evsys.schema.plugin_bases import BaseBackend
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

LOSSES: tuple[str, ...] = ("cross_entropy", "importance_sampling", "ppo")
#: the LoRA alpha the service uses (its LoraConfig takes a rank, no alpha)
SERVICE_LORA_ALPHA = 32.0


class TinkerBackend(BaseBackend):
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
        if setup.lora_alpha != SERVICE_LORA_ALPHA:
            raise EvsysError(
                Problem(
                    f"the Tinker service scales every adapter with lora_alpha {SERVICE_LORA_ALPHA:g}, got {setup.lora_alpha:g}: "
                    "remove algorithm.params.lora_alpha (or use the local backend)",
                    field="algorithm.params.lora_alpha",
                )
            )
        self._setup = setup
        self._params = params if params is not None else TinkerBackendParams()
        policy = RetryPolicy(
            max_retries=self._params.max_retries,
            backoff_s=self._params.retry_backoff_s,
            backoff_max_s=self._params.retry_backoff_max_s,
            total_s=self._params.retry_total_s,
        )
        self._calls = ServiceCalls(
            policy,
            sleep,
            request_timeout_s=self._params.request_timeout_s,
            concurrency=self._params.teacher_concurrency,
        )
        self._owns_service = service_client is None
        self._renderer_choice = choose_renderer(setup.model_name, self._params.renderer)
        self._renderer: RendererChat | None = None
        renderer = self.renderer if service_client is None and setup.dry_run else None
        self._service, self._simulated = connect(setup, self._params, service_client, renderer)
        check_model_offered(setup.model_name, self._params, self._service, fetch_capabilities)
        self._closed = False
        self._tokenizer: Any = None
        self._base_sampler: Any = None
        self._policy_sampler: Any = None
        self._weights_version = 0
        self._sampler_version = -1
        self._pending = PendingResults()
        self._turn = threading.Lock()  # held from a step's forward_backward to its optim_step (off-policy mode)
        self._in_flight = 0  # optim_steps submitted and not yet done
        self._local = threading.local()
        self._on_training_submitted: Callable[[], None] | None = None
        self._pool: Any = None
        self._pool_size = 0
        self._training = self._calls.call(
            f"create a LoRA training client for '{setup.model_name}' (rank {setup.lora_rank})",
            lambda: self._service.create_lora_training_client(
                base_model=setup.model_name, rank=setup.lora_rank, seed=setup.seed
            ),
        )

    def __repr__(self) -> str:
        return f"TinkerBackend(model={self._setup.model_name!r}, lora_rank={self._setup.lora_rank})"

    # -- plumbing ---------------------------------------------------------------------------------

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
        self._pending.drain()
        if self._policy_sampler is None or self._sampler_version != self._weights_version:
            self._refresh_sampler()
        self._local.sampler_version = self._sampler_version
        return self._policy_sampler

    def _refresh_sampler(self) -> None:
        """Save the weights for sampling; the sampler is labelled with the optimizer steps submitted before it."""
        version = self._weights_version
        sampler = self._calls.call(
            "save the weights for sampling", lambda: self._training.save_weights_and_get_sampling_client()
        )
        if version >= self._sampler_version:
            self._policy_sampler, self._sampler_version = sampler, version

    def _teacher_sampler(self) -> Any:
        if self._base_sampler is None:
            model = self._setup.model_name
            self._base_sampler = self._calls.call(
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
                raise self._calls.fail(
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
        from evsys.backends.tinker.sampling import sample

        return sample(self, prompts, n, max_tokens, temperature, stop, seed)

    def topk_logprobs(
        self, sequences: Sequence[Sequence[int]], k: int, from_position: int | Sequence[int]
    ) -> list[TopKLogprobs]:
        """Top-k of ``p(. | s[:i])`` for ``i`` in ``[from_position, len(s))`` under the frozen base model.

        One prompt-logprob request per sequence to a base-model sampling client, all in flight at once
        (at most ``teacher_concurrency``); row ``i`` of Tinker's ``topk_prompt_logprobs`` is exactly the
        distribution that predicts ``s[i]``.
        """
        from evsys.backends.tinker.sampling import topk_logprobs

        return topk_logprobs(self, sequences, k, from_position)

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
        from evsys.backends.tinker.sampling import compute_logprobs

        return compute_logprobs(self, sequences, from_position, base)

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
            future = self._calls.submit_once(
                f"forward_backward ({loss_fn})",
                lambda: self._training.forward_backward(data, loss_fn, loss_fn_config=config),
            )
        except BaseException:
            if self.max_steps_off_policy:
                self._turn.release()
            raise

        def resolve() -> ForwardBackwardResult:
            output = self._calls.wait_once(f"forward_backward ({loss_fn})", future)
            try:
                loss = loss_sum_from_output(output, loss_fn, data)
            except RuntimeError as exc:
                raise self._calls.fail(EvsysError(f"Tinker: {exc}")) from exc
            metrics = {str(k): float(v) for k, v in (output.metrics or {}).items()}
            return ForwardBackwardResult(loss_sum=loss, metrics=metrics)

        pending = PendingForwardBackwardResult(resolve)
        if defer:
            self._pending.add(pending)
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
        tinker = import_tinker()
        adam = tinker.types.AdamParams(
            learning_rate=learning_rate,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            grad_clip_norm=float(grad_clip) if grad_clip else 0.0,
        )
        try:
            future = self._calls.submit_once("optim_step", lambda: self._training.optim_step(adam))
        finally:
            if self.max_steps_off_policy and self._turn.locked():
                self._turn.release()
        staleness = self._weights_version - getattr(self._local, "sampler_version", self._weights_version)
        self._weights_version += 1
        self._in_flight += 1
        try:
            if self._on_training_submitted is not None:
                self._on_training_submitted()
            self._pending.drain(own=bool(self.max_steps_off_policy))
            response = self._calls.wait_once("optim_step", future)
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
        self._pending.drain()
        response = self._calls.call(
            f"save checkpoint '{name}'",
            lambda: self._training.save_state(name, ttl_seconds=self._params.checkpoint_ttl_s),
        )
        path = str(response.path)
        row = {"event": "save", "name": name, "path": path, "model": self._setup.model_name, "lora_rank": self._setup.lora_rank}
        record_checkpoint(self._setup.run_dir, row)
        return path

    def load_checkpoint(self, path: str) -> None:
        """Resume from a tinker:// path (or a name recorded in the run dir) with its optimizer state."""
        self._pending.drain()
        resolved = path
        if not path.startswith("tinker://"):
            named = [row for row in checkpoint_rows(self._setup.run_dir) if row.get("event") == "save" and row.get("name") == path]
            if not named:
                raise self._calls.fail(
                    EvsysError(
                        f"cannot resume from '{path}': not a tinker:// path, and no checkpoint of that name "
                        f"is recorded in {CHECKPOINTS_FILE} of the run directory"
                    )
                )
            resolved = str(named[-1]["path"])
        self._training = self._calls.call(
            f"resume from checkpoint {resolved}",
            lambda: self._service.create_training_client_from_state_with_optimizer(resolved),
        )
        self._weights_version += 1
        self._policy_sampler = None
        record_checkpoint(self._setup.run_dir, {"event": "load", "path": resolved, "model": self._setup.model_name})

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
            self._pending.drain()
        except Exception as exc:
            self._calls.failed = True
            logger.warning("Tinker: a pending request failed while closing: %s", describe(exc))
            self._pending.clear()
        if self._simulated is not None:
            from evsys.backends.tinker.dry_run import write_summary

            write_summary(self._simulated, self._setup, failed=self._calls.failed)
            return
        if self._owns_service and hasattr(self._service, "close"):
            try:
                future = self._service.close("errored" if self._calls.failed else "success")
                if future is not None and hasattr(future, "result"):
                    future.result(30)
            except Exception as exc:
                logger.warning("Tinker: could not end the session cleanly: %s", describe(exc))
