"""Vectorised BPR triple sampling (spec 2.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from graphrec.data.sampler import BPRSampler
from graphrec.errors import GraphrecError


def random_train(n_users: int, n_items: int, seed: int, density: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mat = rng.random((n_users, n_items)) < density
    mat[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # every user has a row
    mat[:, 0] = False  # leave item 0 without train rows
    mat[0, 1:] = False
    mat[0, 1] = True
    u, i = np.nonzero(mat)
    return np.stack([u, i], axis=1)


@given(n_users=st.integers(1, 20), n_items=st.integers(4, 30), seed=st.integers(0, 10_000), bs=st.integers(1, 64))
def test_epoch_triples_are_valid(n_users, n_items, seed, bs):
    train = random_train(n_users, n_items, seed, density=0.4)
    keys = set(map(tuple, train.tolist()))
    pool = set(train[:, 1].tolist())
    # users that saw every pool item cannot get a negative
    full_users = [u for u in range(n_users) if pool <= {i for uu, i in keys if uu == u}]
    if full_users:
        with pytest.raises(GraphrecError, match="interacted with every candidate negative"):
            list(BPRSampler(train, n_items, rng=np.random.default_rng(seed)).epoch(bs))
        return
    s = BPRSampler(train, n_items, rng=np.random.default_rng(seed))
    batches = list(s.epoch(bs))
    assert len(batches) == s.n_batches(bs) == -(-len(train) // bs)
    seen = []
    for b in batches:
        assert b.users.dtype == b.pos.dtype == b.neg.dtype == torch.int64
        assert len(b.users) == len(b.pos) == len(b.neg) <= bs
        for u, p, n in zip(b.users.tolist(), b.pos.tolist(), b.neg.tolist()):
            assert (u, p) in keys  # positives are train rows
            assert (u, n) not in keys  # negatives are not in the user's train history
            assert n in pool  # negatives come from the train item pool
            seen.append((u, p))
    # every training row appears exactly once per epoch
    assert sorted(seen) == sorted(map(tuple, train.tolist()))


def test_item_without_train_rows_never_sampled():
    train = random_train(30, 12, 0)
    s = BPRSampler(train, 12, rng=np.random.default_rng(0))
    neg = s.sample_negatives(np.repeat(np.arange(1, 30), 50))
    assert 0 not in set(neg.tolist())
    assert set(s.pool.tolist()) == set(train[:, 1].tolist())


def test_negatives_roughly_uniform_over_pool():
    # one user with a single train item: negatives uniform over the other pool items
    train = np.array([[0, 0]] + [[1, i] for i in range(10)])
    s = BPRSampler(train, 10, rng=np.random.default_rng(3))
    neg = s.sample_negatives(np.zeros(20000, dtype=np.int64))
    counts = np.bincount(neg, minlength=10)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] / 20000 - 1 / 9) < 0.015)


def test_seeded_determinism():
    train = random_train(40, 25, 1)

    def run(seed):
        s = BPRSampler(train, 25, rng=np.random.default_rng(seed))
        return [torch.stack([b.users, b.pos, b.neg]) for _ in range(2) for b in s.epoch(32)]

    a, b, c = run(5), run(5), run(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    # two epochs of one sampler are shuffled differently
    assert not torch.equal(a[0], a[len(a) // 2])


def test_errors():
    train = np.array([[0, 0], [0, 1]])
    with pytest.raises(GraphrecError, match="no item can be drawn as a negative"):
        BPRSampler(train, 2, exclude_items=np.array([True, True]))
    s = BPRSampler(train, 2, rng=np.random.default_rng(0))
    with pytest.raises(GraphrecError, match="1 user\\(s\\) interacted with every candidate"):
        s.sample_negatives(np.array([0]))


def test_batch_to_device():
    s = BPRSampler(np.array([[0, 0], [1, 1]]), 2, rng=np.random.default_rng(0))
    b = next(iter(s.epoch(2))).to("cpu")
    assert b.users.device.type == "cpu"
