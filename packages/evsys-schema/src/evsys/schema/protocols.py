"""Protocols between the layers: Backend, Algorithm, Callback, Verifier, and the data they pass.

The Backend protocol is shaped like Tinker's primitives, so an algorithm written against it runs
unchanged on the local backend and on the Tinker service. Arrays are plain nested lists (or any
sequence a backend accepts, e.g. numpy arrays); this package never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

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
    """What the run hands a backend when it builds one."""

    model_name: str
    lora_rank: int
    seed: int = 0
    model_revision: str | None = None
    run_dir: Path | None = None
    dry_run: bool = False
    """``--dry-run``: a backend that supports it (``supports_dry_run = True``) runs against a simulation."""


@runtime_checkable
class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer that algorithms use."""

    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


@runtime_checkable
class Backend(Protocol):
    """What an algorithm may ask of a model. Implemented by ``local`` and ``tinker``.

    Optional hooks, outside the structural check (read them with ``getattr(backend, name, None)``):

    - ``sample_and_score(prompts, prefixes, k, n=..., max_tokens=..., temperature=..., seed=...)``:
      :meth:`sample` and :meth:`topk_logprobs` of each ``prefix + completion`` in one call, so a remote
      backend can score each rollout as soon as it returns (tinker). Algorithms call it through
      ``evsys.algorithms.common.sample_and_score``, which falls back to the two methods.
    - ``render_chat_for_sft(messages) -> list[(tokens, weights)] | None``: the training examples a
      backend's own chat renderer lays out for a conversation (Tinker's ``render_for_sft``); SFT uses
      them when given, and otherwise finds the assistant turns by rendering prefixes."""

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (a Hugging Face tokenizer on both built-in backends)."""
        ...

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """Render chat ``messages`` with the model's chat template into token ids."""
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


@runtime_checkable
class Algorithm(Protocol):
    """A post-training algorithm. Built as ``cls(params, backend, context)``."""

    def train_step(self, batch: Sequence[Any], step: int) -> dict[str, float]:
        """Run one optimizer step on ``batch`` (examples of the algorithm's row type); return ``train/...`` metrics."""
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
    """Observes a run. Every method is optional to implement (see :class:`BaseCallback`)."""

    def on_run_start(self, context: RunContext) -> None:
        """Called once before the first step."""
        ...

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Called after each training step with its ``train/...`` metrics."""
        ...

    def on_eval_end(self, result: EvalResult) -> None:
        """Called after each benchmark scoring."""
        ...

    def on_run_end(self, status: str, final_metrics: dict[str, float | None], error: str | None = None) -> None:
        """Called once at the end; ``status`` is 'completed', 'failed' or 'interrupted'."""
        ...


class BaseCallback:
    """A callback that does nothing; subclass and override what you need."""

    def __init__(self, params: BaseModel | None = None, **_: Any) -> None:
        self.params = params

    def on_run_start(self, context: RunContext) -> None:
        """Called once before the first step."""

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Called after each training step."""

    def on_eval_end(self, result: EvalResult) -> None:
        """Called after each benchmark scoring."""

    def on_run_end(self, status: str, final_metrics: dict[str, float | None], error: str | None = None) -> None:
        """Called once at the end."""


class VerifierFunction(Protocol):
    """A built-in or registered verifier function: ``(output, expected, **options) -> score in [0, 1]``."""

    def __call__(self, output: str, expected: Any, **options: Any) -> float: ...
