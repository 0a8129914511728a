"""Full-ranking evaluation (spec 2.4): masking, group breakdown, batch-size and order invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_dataset
from graphrec.data.masks import MissingModalities
from graphrec.eval.evaluator import Evaluator, popularity_scorer
from graphrec.models.base import Scorer


def matrix_scorer(scores: np.ndarray) -> Scorer:
    """A scorer whose score(u) is row u of ``scores`` (U x N)."""
    s = torch.as_tensor(scores, dtype=torch.float32)
    return Scorer(torch.eye(s.shape[0]), s.T.contiguous())


def ranking_scores(rankings: list[list[int]], n_items: int) -> np.ndarray:
    """Scores that rank items of each user in the given order (unlisted items last)."""
    s = np.zeros((len(rankings), n_items), dtype=np.float32)
    for u, order in enumerate(rankings):
        for pos, i in enumerate(order):
            s[u, i] = n_items - pos
    return s


def reference_metrics(ds, scores, split, topk, mask_valid_in_test=True):
    """Straightforward per-user loop implementation of spec 2.4."""
    pairs = {"valid": ds.valid, "test": ds.test}[split]
    users = np.unique(pairs[:, 0])
    masked = {u: set() for u in range(ds.n_users)}
    for u, i in ds.train:
        masked[u].add(i)
    if split == "test" and mask_valid_in_test:
        for u, i in ds.valid:
            masked[u].add(i)
    kmax = max(topk)
    sums = {}
    for u in users:
        pos = set(pairs[pairs[:, 0] == u, 1].tolist())
        s = scores[u].astype(np.float64).copy()
        s[list(masked[u])] = -np.inf
        top = np.argsort(-s, kind="stable")[:kmax]
        h = np.array([i in pos for i in top], dtype=float)
        for k in topk:
            hk = h[:k]
            vals = {
                "recall": hk.sum() / len(pos),
                "precision": hk.sum() / k,
                "hit": float(hk.any()),
                "ndcg": sum(hk[r] / math.log2(r + 2) for r in range(len(hk)))
                / sum(1 / math.log2(r + 2) for r in range(min(len(pos), k))),
                "map": sum(hk[r] * hk[: r + 1].sum() / (r + 1) for r in range(len(hk))) / min(len(pos), k),
            }
            for m, v in vals.items():
                sums[f"{m}@{k}"] = sums.get(f"{m}@{k}", 0.0) + v
    return {k: v / len(users) for k, v in sums.items()}, len(users)


def random_dataset(n_users, n_items, seed, per_user=6):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, per_user, replace=False)
        labels = [0, 0, 0, 1, 2] + list(rng.integers(0, 3, per_user - 5))
        rows += [(u, int(i), int(l)) for i, l in zip(items, labels)]
    return make_dataset(rows, n_users=n_users, n_items=n_items)


# ----------------------------------------------------------------------------- hand-made dataset
def hand_dataset():
    # train: u0-0, u1-1; valid: u0-5, u1-5; test: u0-{2,4}, u1-3
    rows = [(0, 0, 0), (1, 1, 0), (0, 5, 1), (1, 5, 1), (0, 2, 2), (0, 4, 2), (1, 3, 2)]
    missing = MissingModalities(
        ["image", "text"],
        {"image": np.array([0, 0, 1, 1, 0, 0], bool), "text": np.array([0, 0, 0, 1, 0, 0], bool)},
    )
    return make_dataset(rows, n_users=2, n_items=6, missing=missing)


HAND_SCORES = ranking_scores([[2, 5, 3, 4, 1, 0], [4, 3, 2, 0, 5, 1]], 6)


def test_hand_case_overall_and_groups():
    ds = hand_dataset()
    res = Evaluator(ds, topk=[1, 2, 3], batch_size=1).evaluate(matrix_scorer(HAND_SCORES), "test")
    # u0: masked {0 (train), 5 (valid)} -> ranking 2, 3, 4 ...: hits at 1 and 3 of |T|=2
    # u1: masked {1, 5} -> ranking 4, 3, 2 ...: hit at 2 of |T|=1
    assert res.split == "test" and res.n_users == 2
    m = res.metrics
    assert m["recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["recall@3"] == pytest.approx(1.0)
    assert m["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert m["ndcg@3"] == pytest.approx(((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)) + 1 / math.log2(3)) / 2)
    assert m["hit@1"] == pytest.approx(0.5)
    assert m["map@3"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2) / 1) / 2)
    # groups: positives restricted to the group's items, users without such positives skipped
    assert set(res.groups) == {"missing=0", "missing=1", "missing=2"}
    assert res.group_users == {"missing=0": 1, "missing=1": 1, "missing=2": 1}
    g0, g1, g2 = res.groups["missing=0"], res.groups["missing=1"], res.groups["missing=2"]
    # missing=0: u0's item 4 at rank 3
    assert g0["recall@2"] == 0.0 and g0["recall@3"] == pytest.approx(1.0)
    assert g0["ndcg@3"] == pytest.approx(1 / math.log2(4))
    # missing=1: u0's item 2 at rank 1
    assert g1["recall@1"] == pytest.approx(1.0) and g1["ndcg@1"] == pytest.approx(1.0)
    # missing=2: u1's item 3 at rank 2
    assert g2["recall@1"] == 0.0 and g2["recall@2"] == pytest.approx(1.0)
    assert g2["ndcg@2"] == pytest.approx(1 / math.log2(3))
    d = res.to_dict()
    assert d["metrics"] == res.metrics and d["n_users"] == 2 and d["groups"] == res.groups


def test_valid_items_masked_on_test_only_when_asked():
    ds = hand_dataset()
    scorer = matrix_scorer(HAND_SCORES)
    masked = Evaluator(ds, topk=[3], mask_valid_in_test=True).evaluate(scorer, "test")
    unmasked = Evaluator(ds, topk=[3], mask_valid_in_test=False).evaluate(scorer, "test")
    # without the mask u0's valid item 5 takes rank 2 and pushes item 4 out of the top 3
    assert masked.metrics["recall@3"] == pytest.approx(1.0)
    assert unmasked.metrics["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    # validation never masks test items: u0 ranks 2 (test) first, 5 (valid) second
    valid = Evaluator(ds, topk=[1, 2], mask_valid_in_test=True).evaluate(scorer, "valid")
    assert valid.metrics["recall@1"] == pytest.approx(0.0)
    assert valid.metrics["recall@2"] == pytest.approx(0.5)


def test_training_items_never_in_top_k():
    ds = random_dataset(30, 40, 0)
    scores = np.random.default_rng(1).random((30, 40)).astype(np.float32)
    # training items get the highest scores, the held-out positives come right after
    for u, i in ds.train:
        scores[u, i] += 100
    for u, i in ds.test:
        scores[u, i] += 50
    res = Evaluator(ds, topk=[1, 5], mask_valid_in_test=True).evaluate(matrix_scorer(scores), "test")
    assert res.metrics["precision@1"] == pytest.approx(1.0)
    n_pos = np.bincount(ds.test[:, 0], minlength=30)[np.unique(ds.test[:, 0])]
    assert res.metrics["recall@5"] == pytest.approx(np.mean(np.minimum(n_pos, 5) / n_pos))
    # the positives the scores favour are found, and the rest match the reference implementation
    ref, _ = reference_metrics(ds, scores, "test", [1, 5])
    for k, v in ref.items():
        assert res.metrics[k] == pytest.approx(v, abs=1e-6)


@given(
    n_users=st.integers(2, 25),
    n_items=st.integers(12, 40),
    seed=st.integers(0, 10_000),
    mask_valid=st.booleans(),
    split=st.sampled_from(["valid", "test"]),
)
def test_matches_reference_implementation(n_users, n_items, seed, mask_valid, split):
    ds = random_dataset(n_users, n_items, seed)
    scores = np.random.default_rng(seed + 1).normal(size=(n_users, n_items)).astype(np.float32)
    topk = [1, 3, 5]
    res = Evaluator(ds, topk=topk, batch_size=7, mask_valid_in_test=mask_valid).evaluate(matrix_scorer(scores), split)
    ref, n = reference_metrics(ds, scores, split, topk, mask_valid)
    assert res.n_users == n
    assert set(res.metrics) == set(ref)
    for k, v in ref.items():
        assert res.metrics[k] == pytest.approx(v, abs=1e-6), k


@settings(max_examples=15)
@given(seed=st.integers(0, 10_000), batch_sizes=st.lists(st.integers(1, 40), min_size=1, max_size=3))
def test_independent_of_eval_batch_size(seed, batch_sizes):
    ds = random_dataset(30, 25, seed)
    groups = {"even": np.arange(25) % 2 == 0, "low": np.arange(25) < 8}
    scorer = matrix_scorer(np.random.default_rng(seed).normal(size=(30, 25)))
    base = Evaluator(ds, topk=[2, 5, 10], batch_size=1000, groups=groups).evaluate(scorer, "test")
    for bs in batch_sizes:
        res = Evaluator(ds, topk=[2, 5, 10], batch_size=bs, groups=groups).evaluate(scorer, "test")
        assert res.n_users == base.n_users
        assert res.group_users == base.group_users
        for k, v in base.metrics.items():
            assert res.metrics[k] == pytest.approx(v, rel=1e-12, abs=1e-14)
        for g, vals in base.groups.items():
            for k, v in vals.items():
                assert res.groups[g][k] == pytest.approx(v, rel=1e-12, abs=1e-14)


def test_independent_of_user_order():
    """Relabelling users (and permuting the scorer's rows the same way) changes nothing."""
    rng = np.random.default_rng(0)
    ds = random_dataset(20, 30, 3)
    scores = rng.normal(size=(20, 30)).astype(np.float32)
    perm = rng.permutation(20)  # user u becomes perm[u]
    rows = []
    for split, lab in (("train", 0), ("valid", 1), ("test", 2)):
        rows += [(int(perm[u]), int(i), lab) for u, i in getattr(ds, split)]
    ds2 = make_dataset(rows, n_users=20, n_items=30)
    scores2 = np.empty_like(scores)
    scores2[perm] = scores
    for split in ("valid", "test"):
        a = Evaluator(ds, topk=[5, 10], batch_size=3).evaluate(matrix_scorer(scores), split)
        b = Evaluator(ds2, topk=[5, 10], batch_size=3).evaluate(matrix_scorer(scores2), split)
        for k in a.metrics:
            assert b.metrics[k] == pytest.approx(a.metrics[k], rel=1e-12)


def test_kmax_larger_than_item_count():
    ds = random_dataset(5, 12, 0)
    res = Evaluator(ds, topk=[5, 50]).evaluate(matrix_scorer(np.random.default_rng(0).random((5, 12))), "test")
    # every positive is somewhere in the top 12 (all items): recall@50 = 1
    assert res.metrics["recall@50"] == pytest.approx(1.0)


def test_popularity_scorer():
    rows = [(0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 1, 0), (1, 1, 0), (2, 2, 0), (0, 3, 1), (1, 3, 2), (2, 4, 2), (0, 4, 2)]
    ds = make_dataset(rows, n_users=3, n_items=5)
    s = popularity_scorer(ds).score(torch.tensor([0, 2]))
    np.testing.assert_allclose(s.numpy(), [[3, 2, 1, 0, 0], [3, 2, 1, 0, 0]])
    res = Evaluator(ds, topk=[1, 2]).evaluate(popularity_scorer(ds), "test")
    # u0: train {0,1} masked, valid {3} masked -> 2 first then 4: hit at 2
    # u1: masked {0,1} -> 2, 3: test item 3 at rank 2;  u2: masked {0,2} -> 1, 3, 4: miss at 2
    assert res.metrics["recall@2"] == pytest.approx((1 + 1 + 0) / 3)


@settings(max_examples=15)
@given(seed=st.integers(0, 10_000), batch_size=st.integers(1, 40))
def test_one_ranking_pass_gives_metrics_and_per_user_values(seed, batch_size):
    ds = random_dataset(30, 25, seed)
    scorer = matrix_scorer(np.random.default_rng(seed).normal(size=(30, 25)))
    ev = Evaluator(ds, topk=[5, 10], batch_size=batch_size)
    plain = ev.evaluate(scorer, "test")
    names = ("recall@10", "ndcg@5")
    res = ev.evaluate(scorer, "test", per_user=names)
    assert res.metrics == plain.metrics and res.groups == plain.groups  # no metric changes
    assert plain.users is None and not plain.per_user
    assert np.array_equal(res.users, ev.users("test")) and set(res.per_user) == set(names)
    for n in names:
        assert len(res.per_user[n]) == res.n_users
        assert res.per_user[n].mean() == pytest.approx(res.metrics[n], rel=1e-12, abs=1e-14)
    users, values = ev.per_user(scorer, "test", names)
    assert np.array_equal(users, res.users) and all(np.array_equal(values[n], res.per_user[n]) for n in names)
