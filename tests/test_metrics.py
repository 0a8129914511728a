"""Top-K metric definitions (spec 2.4) on hand-computed cases and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from graphrec.eval.metrics import METRICS, per_user_metrics


def hits_row(ranks: list[int], kmax: int) -> torch.Tensor:
    h = torch.zeros(1, kmax)
    for r in ranks:
        h[0, r - 1] = 1
    return h


def test_spec_worked_example():
    """|T_u| = 3, hits at ranks 2 and 5, K = 5 (spec 2.4)."""
    out = per_user_metrics(hits_row([2, 5], 10), torch.tensor([3]), [5])
    assert out["recall@5"].item() == pytest.approx(2 / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert dcg == pytest.approx(1.0178, abs=1e-4) and idcg == pytest.approx(2.1309, abs=1e-4)
    assert out["ndcg@5"].item() == pytest.approx(0.4777, abs=1e-4)
    assert out["ndcg@5"].item() == pytest.approx(dcg / idcg, rel=1e-6)
    assert out["precision@5"].item() == pytest.approx(2 / 5)
    assert out["hit@5"].item() == 1.0
    # MAP@5 = (1/min(3,5)) * (P@2 + P@5) = (1/2 + 2/5) / 3
    assert out["map@5"].item() == pytest.approx((1 / 2 + 2 / 5) / 3)


def test_several_cutoffs_and_users():
    hits = torch.stack([hits_row([1, 3], 4)[0], hits_row([], 4)[0], hits_row([4], 4)[0]])
    n_pos = torch.tensor([2, 1, 6])
    out = per_user_metrics(hits, n_pos, [1, 2, 4])
    assert set(out) == {f"{m}@{k}" for m in METRICS for k in (1, 2, 4)}
    np.testing.assert_allclose(out["recall@1"], [1 / 2, 0, 0])
    np.testing.assert_allclose(out["recall@4"], [1.0, 0, 1 / 6])  # denominator |T_u|, not min(K, |T_u|)
    np.testing.assert_allclose(out["precision@2"], [1 / 2, 0, 0])
    np.testing.assert_allclose(out["precision@4"], [2 / 4, 0, 1 / 4])
    np.testing.assert_allclose(out["hit@2"], [1, 0, 0])
    np.testing.assert_allclose(out["hit@4"], [1, 0, 1])
    d = [1 / math.log2(r + 1) for r in range(1, 5)]
    np.testing.assert_allclose(out["ndcg@1"], [1.0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(out["ndcg@4"], [(d[0] + d[2]) / (d[0] + d[1]), 0, d[3] / sum(d)], rtol=1e-6)
    # MAP@K = (1/min(|T|,K)) Σ h[r] P@r
    np.testing.assert_allclose(out["map@4"], [(1 + 2 / 3) / 2, 0, (1 / 4) / 4], rtol=1e-6)
    np.testing.assert_allclose(out["map@2"], [1 / 2, 0, 0], rtol=1e-6)


def test_metric_subset():
    out = per_user_metrics(hits_row([1], 3), torch.tensor([1]), [2], metrics=("recall", "ndcg"))
    assert set(out) == {"recall@2", "ndcg@2"}


def test_perfect_ranking():
    out = per_user_metrics(hits_row([1, 2, 3], 5), torch.tensor([3]), [3, 5])
    for k in (3, 5):
        assert out[f"recall@{k}"].item() == pytest.approx(1.0)
        assert out[f"ndcg@{k}"].item() == pytest.approx(1.0)
        assert out[f"map@{k}"].item() == pytest.approx(1.0)
    assert out["precision@5"].item() == pytest.approx(3 / 5)


@given(
    data=st.lists(st.tuples(st.lists(st.booleans(), min_size=10, max_size=10), st.integers(0, 15)), min_size=1, max_size=12),
    perm_seed=st.integers(0, 1000),
)
def test_properties_and_permutation_invariance(data, perm_seed):
    hits = torch.tensor([h for h, _ in data], dtype=torch.float32)
    # a user has at least as many positives as hits
    n_pos = torch.tensor([max(n, int(sum(h))) for h, n in data])
    ks = [1, 3, 5, 10]
    out = per_user_metrics(hits, n_pos, ks)
    for name, v in out.items():
        assert v.shape == (len(data),)
        assert ((v >= -1e-6) & (v <= 1 + 1e-6)).all(), name
    for a, b in zip(ks, ks[1:]):
        assert (out[f"recall@{b}"] >= out[f"recall@{a}"] - 1e-7).all()
        assert (out[f"hit@{b}"] >= out[f"hit@{a}"]).all()
    # per-user values do not depend on the other users or their order
    perm = torch.from_numpy(np.random.default_rng(perm_seed).permutation(len(data)))
    shuffled = per_user_metrics(hits[perm], n_pos[perm], ks)
    for name in out:
        torch.testing.assert_close(shuffled[name], out[name][perm])
    single = per_user_metrics(hits[:1], n_pos[:1], ks)
    for name in out:
        torch.testing.assert_close(single[name], out[name][:1])


def test_bool_hits_accepted():
    out = per_user_metrics(torch.tensor([[False, True]]), torch.tensor([1]), [2])
    assert out["recall@2"].item() == 1.0
    assert out["ndcg@2"].item() == pytest.approx(1 / math.log2(3))
