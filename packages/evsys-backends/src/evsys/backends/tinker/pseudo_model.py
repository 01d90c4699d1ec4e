"""The simulated Tinker service's model: a seeded next-token distribution over the vocabulary (no torch).

Distributions are memoized in a prefix tree of contexts, so walking a sequence (sampling token by
token, scoring every position of a prompt) costs one dictionary step per token, not a copy of the
whole context per position.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

CANDIDATES = 24
RESIDUAL_MASS = 1e-3
CACHE_SIZE = 200_000
"""Contexts memoized (nodes of the prefix tree) before the memo starts over."""


def seeded_rng(*parts: int) -> np.random.Generator:
    """A generator seeded by a hash of ``parts`` (the same parts, the same draws)."""
    digest = hashlib.blake2b(np.asarray(parts, dtype=np.int64).tobytes(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


class Next:
    """The distribution after one context: candidate ``ids`` (most likely first), their ``logprobs``, and
    ``residual``, the logprob of every id that is not a candidate."""

    __slots__ = ("_lookup", "ids", "logprobs", "residual")

    def __init__(self, ids: np.ndarray, logprobs: np.ndarray, vocab_size: int) -> None:
        self.ids = ids
        self.logprobs = logprobs
        self.residual = float(np.log(RESIDUAL_MASS / max(1, vocab_size - len(ids))))
        self._lookup: dict[int, float] | None = None

    def logprob(self, token: int) -> float:
        """``log p(token)``."""
        lookup = self._lookup
        if lookup is None:
            lookup = {}
            for candidate, value in zip(self.ids.tolist(), self.logprobs.tolist(), strict=True):
                lookup.setdefault(candidate, value)
            self._lookup = lookup
        return lookup.get(int(token), self.residual)


class _Node:
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.value: Next | None = None


class Context:
    """A position in a token sequence, extended one token at a time (:meth:`push`); :meth:`next` is the
    distribution after the tokens so far. Made by :meth:`PseudoModel.context`."""

    __slots__ = ("_model", "_node", "_tail", "_valid", "_version", "length")

    def __init__(self, model: PseudoModel, version: int, node: _Node) -> None:
        self._model = model
        self._version = version
        self._node = node
        self._valid: list[int] = []
        self._tail: list[int] = []
        self.length = 0

    def push(self, token: int) -> None:
        """Append ``token`` to the context."""
        token = int(token)
        node = self._node.children.get(token)
        if node is None:
            node = self._node.children.setdefault(token, _Node())
            self._model._nodes += 1
        self._node = node
        if 0 <= token < self._model.vocab_size:
            self._valid.append(token)
        self._tail.append(token)
        if len(self._tail) > 4:
            del self._tail[0]
        self.length += 1

    def extend(self, tokens: Sequence[int]) -> None:
        """Append each of ``tokens``."""
        for token in tokens:
            self.push(token)

    def next(self) -> Next:
        """The distribution after this context (memoized)."""
        node = self._node
        found = node.value
        if found is None:
            found = node.value = self._model._compute(self.length, self._tail, self._valid, self._version)
        return found

    def copy(self) -> Context:
        """An independent context at the same position."""
        other = Context(self._model, self._version, self._node)
        other._valid = list(self._valid)
        other._tail = list(self._tail)
        other.length = self.length
        return other


class PseudoModel:
    """A seeded next-token distribution over the vocabulary, a function of the context and its length.

    At each context, ``CANDIDATES`` ids share ``1 - RESIDUAL_MASS`` of the probability: tokens copied
    from the context (favoured) and ids drawn from the vocabulary (seeded by the last 4 tokens and the
    position), plus the stop token; every other id shares the residual mass evenly. ``version`` changes
    the weights (0 is the base model). Ids the tokenizer cannot decode (``decodable`` and above) are
    never candidates.
    """

    def __init__(self, seed: int, vocab_size: int, stop_token: int | None, decodable: int | None = None) -> None:
        self.seed = seed
        self.vocab_size = vocab_size
        self.stop_token = stop_token
        self.decodable = decodable
        """Ids at or above this (embedding rows no token uses) are never candidates: a draw there wraps below it."""
        self._roots: dict[int, _Node] = {}
        self._nodes = 0

    def context(self, tokens: Sequence[int] = (), version: int = 0) -> Context:
        """A :class:`Context` after ``tokens`` under the weights ``version``."""
        if self._nodes >= CACHE_SIZE:
            self._roots, self._nodes = {}, 0
        node = self._roots.get(version) or self._roots.setdefault(version, _Node())
        sequence = [int(t) for t in tokens]
        for token in sequence:
            child = node.children.get(token)
            if child is None:
                child = node.children.setdefault(token, _Node())
                self._nodes += 1
            node = child
        context = Context(self, version, node)
        context._valid = [t for t in sequence if 0 <= t < self.vocab_size]
        context._tail = sequence[-4:]
        context.length = len(sequence)
        return context

    def along(self, tokens: Sequence[int], first: int, version: int = 0) -> list[Next]:
        """The distributions after ``tokens[:i]`` for ``i`` in ``[first, len(tokens))``, in one walk."""
        if self._nodes >= CACHE_SIZE:
            self._roots, self._nodes = {}, 0
        node = self._roots.get(version) or self._roots.setdefault(version, _Node())
        sequence = [int(t) for t in tokens]
        out: list[Next] = []
        for i, token in enumerate(sequence):
            if i >= first:
                found = node.value
                if found is None:
                    valid = [t for t in sequence[:i] if 0 <= t < self.vocab_size]
                    found = node.value = self._compute(i, sequence[max(0, i - 4) : i], valid, version)
                out.append(found)
            child = node.children.get(token)
            if child is None:
                child = node.children.setdefault(token, _Node())
                self._nodes += 1
            node = child
        return out

    def distribution(self, context: Sequence[int], version: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, logprobs)`` of the candidates after ``context``, most likely first (memoized)."""
        found = self.context(context, version).next()
        return found.ids, found.logprobs

    def _compute(self, length: int, tail: Sequence[int], valid: Sequence[int], version: int) -> Next:
        rng = seeded_rng(self.seed, version, length, *tail)
        pool = np.asarray(valid, dtype=np.int64)
        copied = rng.choice(pool, size=min(len(pool), CANDIDATES // 2), replace=False) if len(pool) else pool
        drawn = rng.integers(0, self.vocab_size, size=CANDIDATES)
        if self.decodable is not None and self.decodable < self.vocab_size:
            drawn = drawn % self.decodable
        ids = list(dict.fromkeys([*copied.tolist(), *drawn.tolist()]))[: CANDIDATES - 1]
        logits = np.concatenate([rng.normal(1.0, 1.0, len(copied)), rng.normal(-1.0, 1.0, len(ids) - len(copied))])
        if self.stop_token is not None and self.stop_token not in ids:
            ids.append(self.stop_token)
            logits = np.append(logits, 0.5)
        ids_arr = np.asarray(ids, dtype=np.int64)
        logprobs = logits - np.logaddexp.reduce(logits) + np.log1p(-RESIDUAL_MASS)
        order = np.argsort(-logprobs, kind="stable")
        return Next(ids_arr[order], logprobs[order], self.vocab_size)

    def logprob(self, context: Sequence[int], token: int, version: int = 0) -> float:
        """``log p(token | context)``."""
        return self.context(context, version).next().logprob(token)

    def logprobs_of(self, context: Sequence[int], tokens: np.ndarray, version: int = 0) -> np.ndarray:
        """``log p(t | context)`` for each ``t`` in ``tokens``."""
        found = self.context(context, version).next()
        return np.asarray([found.logprob(t) for t in tokens], dtype=np.float64)
