"""Base classes for backends and algorithms: the defaults of every method their protocol declares.

A plugin subclasses one and writes only what it does differently; the run loop then calls every
method of the protocol without asking whether it exists. (Callbacks subclass
:class:`evsys.schema.protocols.BaseCallback`.) Imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from evsys.schema.params import TrainingParams
from evsys.schema.protocols import Backend, Message, RenderedChats, RunContext, SampledSequence, TopKLogprobs

__all__ = ["BaseAlgorithm", "BaseBackend"]


class BaseBackend:
    """Defaults of the Backend protocol's optional behaviour; a backend writes the model methods itself
    (``tokenizer``, ``render_chat``, ``sample``, ``topk_logprobs``, ``compute_logprobs``,
    ``forward_backward``, ``optim_step``, ``save_checkpoint``, ``load_checkpoint``, ``close``)."""

    supports_dry_run: ClassVar[bool] = False
    """No simulation to run against: ``--dry-run`` is refused for this backend."""

    @property
    def max_steps_off_policy(self) -> int:
        """0: every step samples from the current policy."""
        return 0

    def on_training_submitted(self, callback: Callable[[], None]) -> None:
        """Never called while :attr:`max_steps_off_policy` is 0."""

    @classmethod
    def resolve_model(cls, model_name: str, revision: str | None = None) -> str:
        """``model_name`` itself: a directory or a hub id transformers resolves on its own."""
        return model_name

    def resolved_settings(self) -> dict[str, Any]:
        """Nothing chosen by the backend itself."""
        return {}

    def render_chat_for_sft(self, messages: Sequence[Message]) -> list[tuple[list[int], list[float]]] | None:
        """None: SFT finds the assistant turns by rendering prefixes with :meth:`render_chat`."""
        return None

    def sample_and_score(
        self: Backend,
        prompts: Sequence[Sequence[int]],
        prefixes: Sequence[Sequence[int]],
        k: int,
        *,
        n: int = 1,
        max_tokens: int = 64,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> tuple[list[list[SampledSequence]], list[list[TopKLogprobs | None]]]:
        """:meth:`sample`, then one :meth:`topk_logprobs` call over every non-empty completion."""
        groups = self.sample(prompts, n=n, max_tokens=max_tokens, temperature=temperature, seed=seed)
        sequences: list[list[int]] = []
        starts: list[int] = []
        where: list[tuple[int, int]] = []
        for i, (prefix, samples) in enumerate(zip(prefixes, groups, strict=True)):
            for j, sample in enumerate(samples):
                if sample.tokens:
                    sequences.append([*prefix, *sample.tokens])
                    starts.append(len(prefix))
                    where.append((i, j))
        out: list[list[TopKLogprobs | None]] = [[None] * len(samples) for samples in groups]
        if sequences:
            for (i, j), topk in zip(where, self.topk_logprobs(sequences, k=k, from_position=starts), strict=True):
                out[i][j] = topk
        return groups, out


class BaseAlgorithm:
    """Keeps ``params``, ``backend`` and ``context``; ``max_steps`` steps; nothing to resume but the step.

    Subclasses write :meth:`train_step`, and :meth:`total_steps` when they count steps otherwise
    (``sft``'s epochs), :meth:`state_dict` / :meth:`load_state_dict` when they carry state across steps.
    """

    params: TrainingParams

    def __init__(self, params: TrainingParams, backend: Backend, context: RunContext | None = None) -> None:
        self.params = params
        self.backend = backend
        self.context = context

    @classmethod
    def total_steps(cls, params: TrainingParams, num_examples: int) -> int:
        """``params.max_steps``."""
        return int(params.max_steps)

    @classmethod
    def chats(cls, params: TrainingParams, examples: Sequence[Any]) -> RenderedChats:
        """Nothing declared: ``validate --deep`` measures no prompts of this algorithm."""
        return RenderedChats()

    def train_step(self, batch: Sequence[Any], step: int) -> dict[str, float]:
        """One optimizer step on ``batch``; returns ``train/...`` metrics including ``train/mean_loss``."""
        raise NotImplementedError(f"{type(self).__name__} must define train_step(batch, step)")

    def state_dict(self) -> dict[str, Any]:
        """Nothing beyond the step (sampling seeds derive from it)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore."""
