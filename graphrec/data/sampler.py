"""Vectorised BPR triple sampling (spec 2.3).

Each training row (u, p) gets one negative n drawn uniformly from the pool of items
that have a training interaction, redrawn while n is in u's training history (and,
in the new-item setting, while n is a new item). Membership tests use sorted
``user * N + item`` keys and ``np.searchsorted``, so an epoch costs a few vector
operations, not a Python loop per interaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from graphrec.errors import GraphrecError


@dataclass
class BPRBatch:
    """One batch of B triples: ``users``, ``pos``, ``neg`` are ``(B,)`` int64 tensors."""

    users: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor

    def to(self, device: torch.device | str) -> "BPRBatch":
        return BPRBatch(self.users.to(device), self.pos.to(device), self.neg.to(device))


class BPRSampler:
    """Shuffles training pairs each epoch and pairs every row with a sampled negative.

    Args:
        train: ``(E, 2)`` (user, item) training pairs.
        n_items: N.
        exclude_items: ``(N,)`` bool; items never drawn as negatives (new items).
        rng: numpy Generator (seeded by the trainer).
    """

    def __init__(
        self, train: np.ndarray, n_items: int, exclude_items: np.ndarray | None = None, rng: np.random.Generator | None = None
    ) -> None:
        self.train = np.asarray(train, dtype=np.int64)
        self.n_items = int(n_items)
        self.rng = rng if rng is not None else np.random.default_rng()
        pool = np.unique(self.train[:, 1])
        if exclude_items is not None:
            pool = pool[~np.asarray(exclude_items, dtype=bool)[pool]]
        if len(pool) == 0:
            raise GraphrecError("no item can be drawn as a negative: the train split has no eligible item")
        self.pool = pool
        self.keys = np.unique(self.train[:, 0] * self.n_items + self.train[:, 1])

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        k = users * self.n_items + items
        pos = np.searchsorted(self.keys, k)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == k

    def sample_negatives(self, users: np.ndarray, max_rounds: int = 100) -> np.ndarray:
        """``(len(users),)`` negatives, none in the user's train history (when possible)."""
        neg = self.pool[self.rng.integers(0, len(self.pool), size=len(users))]
        todo = np.flatnonzero(self._is_positive(users, neg))
        rounds = 0
        while len(todo) and rounds < max_rounds:
            neg[todo] = self.pool[self.rng.integers(0, len(self.pool), size=len(todo))]
            todo = todo[self._is_positive(users[todo], neg[todo])]
            rounds += 1
        if len(todo):
            raise GraphrecError(
                f"{len(todo)} user(s) interacted with every candidate negative item; BPR needs items they did not see"
            )
        return neg

    def epoch(self, batch_size: int, start: int = 0) -> Iterator[BPRBatch]:
        """Yield shuffled batches of ``batch_size`` training rows with fresh negatives.

        The whole epoch's shuffle and negatives are drawn from :attr:`rng` before the first batch, so
        ``start`` (batches to skip: a resumed partial epoch) leaves :attr:`rng` where a full epoch leaves it
        and yields the batches ``start, start + 1, ...`` of the stream the same state gives.
        """
        order = self.rng.permutation(len(self.train))
        rows = self.train[order]
        neg = self.sample_negatives(rows[:, 0])
        for lo in range(int(start) * batch_size, len(rows), batch_size):
            sl = slice(lo, lo + batch_size)
            yield BPRBatch(
                torch.from_numpy(rows[sl, 0]), torch.from_numpy(rows[sl, 1]), torch.from_numpy(neg[sl])
            )

    def get_rng_state(self) -> dict:
        """The state of :attr:`rng` (its bit generator's, a dict of ints and strings), for resuming."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        """Continue :attr:`rng` from a :meth:`get_rng_state` of the same bit generator."""
        self.rng.bit_generator.state = state

    def n_batches(self, batch_size: int) -> int:
        return (len(self.train) + batch_size - 1) // batch_size
