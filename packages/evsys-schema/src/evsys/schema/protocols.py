"""Protocols between the layers: Backend, Algorithm, Callback, Verifier, and the data they pass.

The Backend protocol is shaped like Tinker's primitives, so an algorithm written against it runs
unchanged on the local backend and on the Tinker service. Arrays are plain nested lists (or any
sequence a backend accepts, e.g. numpy arrays); this package never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

Message = Mapping[str, str]
LossName = Literal["cross_entropy", "importance_sampling", "ppo"]


@dataclass
class SampledSequence:
    """One completion sampled from the current policy."""

    tokens: list[int]
    logprobs: list[float]
    text: str
    stop_reason: Literal["stop", "length"]


@dataclass
class TopKLogprobs:
    """Top-k next-token distributions: ``token_ids[i]`` and ``logprobs[i]`` are ``[k]`` lists."""

    token_ids: list[list[int]]
    logprobs: list[list[float]]


@dataclass
class Datum:
    """One training sequence, in Tinker's layout.

    ``input_tokens`` has length N; ``target_tokens[n]`` is what position n predicts (usually the
    input shifted by one). Each loss reads exactly the inputs Tinker documents for it:

    - ``cross_entropy``: ``target_tokens`` and ``weights``, both ``(N,)`` or both ``(N, K)``; with
      ``(N, K)`` targets and teacher probabilities as weights it is soft-target distillation;
    - ``importance_sampling`` / ``ppo``: ``target_tokens`` ``(N,)``, ``logprobs`` (the sampler's,
      ``(N,)``) and ``advantages`` ``(N,)``; no ``weights`` (leave it ``None``): positions whose
      advantage is 0 (the prompt) contribute nothing.
    """

    input_tokens: list[int]
    target_tokens: Sequence[Any]
    weights: Sequence[Any] | None = None
    logprobs: Sequence[float] | None = None
    advantages: Sequence[float] | None = None


@dataclass
class ForwardBackwardResult:
    """What ``forward_backward`` returns: the loss as a raw sum over weighted tokens, and metrics."""

    loss_sum: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class BackendSetup:
    """What the run hands a backend when it builds one: the model, and the adapter's shape and seed
    (``algorithm.params``' ``lora_rank``, ``lora_alpha`` and ``seed``, the one place a config sets them)."""

    model_name: str
    lora_rank: int
    seed: int = 0
    model_revision: str | None = None
    run_dir: Path | None = None
    dry_run: bool = False
    """``--dry-run``: a backend that supports it (``supports_dry_run = True``) runs against a simulation."""
    lora_alpha: float = 32.0
    """LoRA scaling numerator (the update is scaled by ``lora_alpha / lora_rank``)."""


@runtime_checkable
class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer that algorithms use."""

    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


@runtime_checkable
class Backend(Protocol):
    """What an algorithm and the run loop may ask of a model. Implemented by ``local`` and ``tinker``.

    Subclass :class:`BaseBackend`, which gives every method that has a sensible default
    (``sample_and_score``, ``render_chat_for_sft``, ``max_steps_off_policy``, ``on_training_submitted``,
    ``supports_dry_run``, ``resolve_model``); a backend writes the model methods itself.
    """

    supports_dry_run: ClassVar[bool]
    """``--dry-run`` runs this backend against a simulation of its service (``BackendSetup.dry_run``)."""

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (a Hugging Face tokenizer on both built-in backends)."""
        ...

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """Render chat ``messages`` with the model's chat template into token ids."""
        ...

    def render_chat_for_sft(self, messages: Sequence[Message]) -> list[tuple[list[int], list[float]]] | None:
        """The ``(tokens, weights)`` training examples the backend's own chat renderer lays out for a
        conversation (Tinker's ``render_for_sft``), or None: SFT then finds the assistant turns itself."""
        ...

    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        n: int = 1,
        max_tokens: int = 64,
        temperature: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[list[SampledSequence]]:
        """Sample ``n`` completions per prompt from the current policy (temperature 0: greedy).

        Returns one list of ``n`` completions per prompt, each with per-token logprobs. Generation
        ends at EOS (not included in ``text``; included in ``tokens``), at a stop string, or at
        ``max_tokens``.
        """
        ...

    def topk_logprobs(
        self, sequences: Sequence[Sequence[int]], k: int, from_position: int | Sequence[int]
    ) -> list[TopKLogprobs]:
        """Top-k next-token logprobs under the frozen base model (the SDFT teacher).

        For each sequence ``s`` and each position ``i`` in ``[from_position, len(s))``, returns the top-k
        of ``p(. | s[:i])`` — the distribution that predicts token ``s[i]`` (Tinker's prompt-logprob
        alignment). ``from_position`` is at least 1, one value for all sequences or one per sequence.
        """
        ...

    def sample_and_score(
        self,
        prompts: Sequence[Sequence[int]],
        prefixes: Sequence[Sequence[int]],
        k: int,
        *,
        n: int = 1,
        max_tokens: int = 64,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> tuple[list[list[SampledSequence]], list[list[TopKLogprobs | None]]]:
        """:meth:`sample` ``n`` completions per prompt, then the base model's top-``k`` of each
        ``prefixes[i] + completion`` from ``len(prefixes[i])`` on (``None`` for an empty completion).

        A remote backend scores each rollout the moment it returns (tinker); the default
        (:class:`BaseBackend`) samples, then scores everything in one :meth:`topk_logprobs` call.
        """
        ...

    def compute_logprobs(
        self, sequences: Sequence[Sequence[int]], from_position: int | Sequence[int] = 1, base: bool = True
    ) -> list[list[float]]:
        """Exact logprobs of the tokens of each sequence: ``log p(s[i] | s[:i])``.

        For each sequence ``s``, one value per position ``i`` in ``[from_position, len(s))`` (Tinker's
        prompt-logprob alignment; ``from_position`` is at least 1, one value for all sequences or one
        per sequence), under the frozen base model (``base=True``: the reference of a KL penalty) or
        the current policy (``base=False``). Unlike :meth:`topk_logprobs` this is the logprob of the
        token that is there, however unlikely.
        """
        ...

    def forward_backward(
        self, batch: Sequence[Datum], loss_fn: LossName, loss_fn_config: Mapping[str, float] | None = None
    ) -> ForwardBackwardResult:
        """Accumulate gradients of ``loss_fn`` summed over ``batch`` (Tinker's semantics).

        ``cross_entropy``: ``-sum(w * log p(target))``. ``importance_sampling``:
        ``-sum(exp(logp - sampler_logp) * advantage)``. ``ppo``: the clipped surrogate with
        ``loss_fn_config`` ``clip_low_threshold`` / ``clip_high_threshold``. Each loss reads only the
        :class:`Datum` inputs Tinker documents for it (the RL losses take no ``weights``).
        """
        ...

    def optim_step(
        self,
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.95,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        grad_clip: float | None = None,
    ) -> dict[str, float]:
        """Apply one AdamW step with the accumulated gradients and clear them; returns metrics."""
        ...

    def save_checkpoint(self, name: str) -> str:
        """Save weights (adapter) and optimizer state under ``name``; returns where."""
        ...

    def load_checkpoint(self, path: str) -> None:
        """Restore weights and optimizer state saved by :meth:`save_checkpoint`."""
        ...

    def close(self) -> None:
        """Release resources (threads, sessions, memory)."""
        ...

    @property
    def max_steps_off_policy(self) -> int:
        """How many optimizer steps behind the policy sampling may run while training is in flight
        (0: every step on-policy). With 1 or more the run loop overlaps consecutive steps
        (:mod:`evsys.engine.pipeline`) and registers :meth:`on_training_submitted`."""
        ...

    def on_training_submitted(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the step's thread) once a step's ``forward_backward`` has gone out."""
        ...

    @classmethod
    def resolve_model(cls, model_name: str, revision: str | None = None) -> str:
        """Where the model ``model_name`` is on this machine (a directory or a hub id transformers finds),
        for ``evsys export --merge``."""
        ...

    def resolved_settings(self) -> dict[str, Any]:
        """The settings this backend chose for itself (its ``auto`` values), each as ``{"requested",
        "value", "reason"}``; ``resolved_config.json`` records them as ``backend_resolved``."""
        ...


@dataclass
class RenderedChats:
    """The conversations a run of an algorithm renders from its training rows (``evsys validate --deep``
    measures them against the model's context window without loading the model)."""

    prompts: dict[str, list[list[Message]]] = field(default_factory=dict)
    """Generation prompts by role (``student``; SDFT's ``teacher``)."""
    trained: list[list[Message]] = field(default_factory=list)
    """Whole conversations trained on (SFT)."""
    max_new_tokens: int = 0
    """The longest completion sampled after a prompt (0: the algorithm does not sample)."""


@runtime_checkable
class Algorithm(Protocol):
    """A post-training algorithm, built as ``cls(params, backend, context)`` once the run knows its steps.

    Subclass :class:`evsys.schema.plugin_bases.BaseAlgorithm`, which keeps ``params``, ``backend`` and
    ``context`` and gives ``total_steps`` (``params.max_steps``) and an empty resumable state.
    """

    @classmethod
    def total_steps(cls, params: Any, num_examples: int) -> int:
        """How many optimizer steps a run of ``num_examples`` training examples takes with ``params``
        (called before the algorithm is built: the count is part of its :class:`RunContext`)."""
        ...

    @classmethod
    def chats(cls, params: Any, examples: Sequence[Any]) -> RenderedChats:
        """The conversations a run with ``params`` renders from ``examples`` (no backend, no model)."""
        ...

    def train_step(self, batch: Sequence[Any], step: int) -> dict[str, float]:
        """Run one optimizer step on ``batch`` (examples of the algorithm's row type); return ``train/...`` metrics."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What must survive a resume besides the backend's weights and optimizer (JSON values)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, before the first resumed step."""
        ...


@dataclass
class RunContext:
    """What callbacks and algorithms can know about the run."""

    run_name: str
    run_dir: Path
    output_dir: Path
    config: Any
    max_steps: int
    resumed_from_step: int = 0


@dataclass
class EvalResult:
    """One benchmark's scoring at one step."""

    benchmark: str
    split: str
    step: int
    metrics: dict[str, float | None]
    predictions: list[dict[str, Any]]


@runtime_checkable
class Callback(Protocol):
    """Observes a run. Subclass :class:`BaseCallback`, which does nothing, and override what you need."""

    def on_run_start(self, context: RunContext) -> None:
        """Called once before the first step."""
        ...

    def on_phase(self, text: str) -> None:
        """What the run is doing now, one line (``model: loading ...``), before training and at the first rollout."""
        ...

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Called after each training step with its ``train/...`` metrics."""
        ...

    def eval_started(self, benchmark: str, num_tasks: int, step: int) -> None:
        """Called before a benchmark is scored at ``step``."""
        ...

    def on_eval_end(self, result: EvalResult) -> None:
        """Called after each benchmark scoring."""
        ...

    def on_run_end(self, status: str, final_metrics: dict[str, float | None], error: str | None = None) -> None:
        """Called once at the end; ``status`` is 'completed', 'failed' or 'interrupted'."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What the callback must keep across a resume (saved with each checkpoint; JSON values)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (an empty mapping when resuming from no checkpoint)."""
        ...


class BaseCallback:
    """A callback that does nothing; subclass and override what you need."""

    def __init__(self, params: BaseModel | None = None, **_: Any) -> None:
        self.params = params

    def on_run_start(self, context: RunContext) -> None:
        """Called once before the first step."""

    def on_phase(self, text: str) -> None:
        """What the run is doing now, one line."""

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Called after each training step."""

    def eval_started(self, benchmark: str, num_tasks: int, step: int) -> None:
        """Called before a benchmark is scored."""

    def on_eval_end(self, result: EvalResult) -> None:
        """Called after each benchmark scoring."""

    def on_run_end(self, status: str, final_metrics: dict[str, float | None], error: str | None = None) -> None:
        """Called once at the end."""

    def state_dict(self) -> dict[str, Any]:
        """Nothing to keep across a resume."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore."""


def start_positions(sequences: Sequence[Sequence[int]], from_position: int | Sequence[int], what: str) -> list[int]:
    """``from_position`` of :meth:`Backend.topk_logprobs` / :meth:`Backend.compute_logprobs` as one start per
    sequence, each checked to lie in ``[1, len(sequence)]``; ``what`` names the call in the ValueError."""
    starts = [int(from_position)] * len(sequences) if isinstance(from_position, int) else [int(x) for x in from_position]
    if len(starts) != len(sequences):
        raise ValueError(f"{what} got {len(starts)} from_position values for {len(sequences)} sequences")
    for sequence, start in zip(sequences, starts, strict=True):
        if not 1 <= start <= len(sequence):
            raise ValueError(f"{what} from_position {start} is outside [1, {len(sequence)}] for a sequence of length {len(sequence)}")
    return starts


def protocol_members(protocol: type) -> tuple[str, ...]:
    """The public methods and attributes ``protocol`` declares (what a conforming object must have)."""
    names = [name for name in vars(protocol) if not name.startswith("_")]
    names += [name for name in vars(protocol).get("__annotations__", {}) if not name.startswith("_") and name not in names]
    return tuple(names)


def missing_members(obj: object, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` (an instance or a class) lacks, in declaration order."""
    return [name for name in protocol_members(protocol) if not hasattr(obj, name)]


class VerifierFunction(Protocol):
    """A built-in or registered verifier function: ``(output, expected, **options) -> score in [0, 1]``."""

    def __call__(self, output: str, expected: Any, **options: Any) -> float: ...
