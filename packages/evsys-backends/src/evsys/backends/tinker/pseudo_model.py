"""The simulated Tinker service's model: a seeded next-token distribution over the vocabulary (no torch)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

CANDIDATES = 24
RESIDUAL_MASS = 1e-3
CACHE_SIZE = 200_000


def seeded_rng(*parts: int) -> np.random.Generator:
    """A generator seeded by a hash of ``parts`` (the same parts, the same draws)."""
    digest = hashlib.blake2b(np.asarray(parts, dtype=np.int64).tobytes(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


class PseudoModel:
    """A seeded next-token distribution over the vocabulary, a function of the last tokens and the position.

    At each context, ``CANDIDATES`` ids share ``1 - RESIDUAL_MASS`` of the probability: tokens copied
    from the context (favoured) and ids drawn from the vocabulary, plus the stop token; every other id
    shares the residual mass evenly. ``version`` changes the weights (0 is the base model). Ids the
    tokenizer cannot decode (``decodable`` and above) are never candidates.
    """

    def __init__(self, seed: int, vocab_size: int, stop_token: int | None, decodable: int | None = None) -> None:
        self.seed = seed
        self.vocab_size = vocab_size
        self.stop_token = stop_token
        self.decodable = decodable
        """Ids at or above this (embedding rows no token uses) are never candidates: a draw there wraps below it."""
        self._cache: dict[tuple[int, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = {}

    def distribution(self, context: Sequence[int], version: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, logprobs)`` of the candidates after ``context``, most likely first (memoized)."""
        key = (version, tuple(map(int, context)))
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            found = self._cache[key] = self._compute(key[1], version)
        return found

    def _compute(self, context: tuple[int, ...], version: int) -> tuple[np.ndarray, np.ndarray]:
        tail = context[-4:]
        rng = seeded_rng(self.seed, version, len(context), *tail)
        pool = np.asarray([t for t in context if 0 <= t < self.vocab_size], dtype=np.int64)
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
        return ids_arr[order], logprobs[order]

    def logprob(self, context: Sequence[int], token: int, version: int = 0) -> float:
        """``log p(token | context)``."""
        ids, logprobs = self.distribution(context, version)
        hit = np.flatnonzero(ids == token)
        if len(hit):
            return float(logprobs[hit[0]])
        return float(np.log(RESIDUAL_MASS / max(1, self.vocab_size - len(ids))))

    def logprobs_of(self, context: Sequence[int], tokens: np.ndarray, version: int = 0) -> np.ndarray:
        """``log p(t | context)`` for each ``t`` in ``tokens``."""
        ids, logprobs = self.distribution(context, version)
        out = np.full(len(tokens), np.log(RESIDUAL_MASS / max(1, self.vocab_size - len(ids))), dtype=np.float64)
        for j, token in enumerate(tokens):
            hit = np.flatnonzero(ids == token)
            if len(hit):
                out[j] = logprobs[hit[0]]
        return out
