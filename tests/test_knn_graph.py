"""Chunked cosine kNN graphs, masking, normalisation and row blending (spec 4.3, 4.8, section 8 items 1-3)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

from graphrec.graph.knn import blend_rows, build_knn_graph, knn_topk, mask_missing, row_sums, sym_normalize


def features(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def cosine(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def dense_topk(sim: np.ndarray, k: int) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """Per row: kept columns, kept values (descending) and the gap to the first dropped value."""
    cols, vals, gaps = [], [], []
    for row in sim:
        order = np.argsort(-row, kind="stable")
        cols.append(np.sort(order[:k]))
        vals.append(row[order[:k]])
        gaps.append(row[order[k - 1]] - row[order[k]] if k < len(row) else np.inf)
    return cols, vals, gaps


def random_sparse(n: int, seed: int, density: float, nonneg: bool = True) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n, n)) * (rng.random((n, n)) < density)
    if not nonneg:
        dense *= rng.choice([-1.0, 1.0], size=(n, n))
    return sp.csr_matrix(dense.astype(np.float32))


# ----------------------------------------------------------------------------- top-k
@given(
    n=st.integers(2, 40),
    d=st.integers(2, 8),
    k=st.integers(1, 12),
    chunk=st.integers(1, 45),
    seed=st.integers(0, 10_000),
)
def test_chunked_topk_matches_dense(n, d, k, chunk, seed):
    x = features(n, d, seed)
    k_eff = min(k, n)
    a = knn_topk(x, k, chunk_size=chunk)
    assert a.shape == (n, n)
    sim = cosine(x)
    cols, vals, gaps = dense_topk(sim, k_eff)
    for i in range(n):
        row = a.getrow(i)
        assert row.nnz == k_eff
        np.testing.assert_allclose(np.sort(row.data)[::-1], vals[i], atol=1e-5)  # kept similarity values
        if gaps[i] > 1e-4:  # no near-tie at the boundary: the neighbour set is determined
            np.testing.assert_array_equal(np.sort(row.indices), cols[i])
        np.testing.assert_allclose(row.toarray().ravel()[row.indices], sim[i, row.indices], atol=1e-5)
        # the item itself (similarity 1) is one of its neighbours
        assert a[i, i] == pytest.approx(1.0, abs=1e-5)


@given(n=st.integers(3, 30), seed=st.integers(0, 10_000), chunks=st.lists(st.integers(1, 35), min_size=2, max_size=4))
def test_chunk_size_does_not_change_result(n, seed, chunks):
    x = torch.from_numpy(features(n, 5, seed))
    mats = [knn_topk(x, 4, chunk_size=c) for c in chunks]
    for m in mats[1:]:
        assert abs(m - mats[0]).max() < 1e-5
        assert (m != 0).sum() == (mats[0] != 0).sum()


def test_rows_argument_computes_only_those_rows():
    x = features(20, 4, 0)
    full = knn_topk(x, 3)
    part = knn_topk(x, 3, rows=np.array([2, 7, 19]), chunk_size=2)
    assert set(np.flatnonzero(np.diff(part.indptr))) == {2, 7, 19}
    for i in (2, 7, 19):
        np.testing.assert_allclose(part.getrow(i).toarray(), full.getrow(i).toarray(), atol=1e-6)


@given(n=st.integers(3, 30), k=st.integers(1, 8), chunk=st.integers(1, 32), seed=st.integers(0, 10_000), p=st.floats(0, 1))
def test_masked_before_topk(n, k, chunk, seed, p):
    """New-item training graph: masked rows/columns cleared and unit diagonal set before the top-k."""
    x = features(n, 4, seed)
    masked = np.random.default_rng(seed).random(n) < p
    a = knn_topk(x, k, chunk_size=chunk, masked=masked)
    sim = cosine(x)
    sim[masked, :] = 0
    sim[:, masked] = 0
    sim[masked, masked] = 1
    k_eff = min(k, n)
    _, vals, gaps = dense_topk(sim, k_eff)
    dense = a.toarray()
    for i in range(n):
        if masked[i]:
            expected = np.zeros(n)
            expected[i] = 1
            np.testing.assert_array_equal(dense[i], expected)  # a unit self loop
        else:
            kept = vals[i][vals[i] != 0]
            np.testing.assert_allclose(np.sort(dense[i][dense[i] != 0])[::-1], kept, atol=1e-5)
    # no row picks a masked item as a neighbour
    off = dense.copy()
    np.fill_diagonal(off, 0)
    assert not off[:, masked].any()


def test_candidates_restrict_neighbours():
    x = features(25, 4, 1)
    cand = np.zeros(25, bool)
    cand[:10] = True
    a = knn_topk(x, 4, candidates=cand, chunk_size=7)
    for i in range(25):
        cols = set(a.getrow(i).indices.tolist())
        assert i in cols
        assert cols - {i} <= set(range(10))


# ----------------------------------------------------------------------------- normalisation
@given(n=st.integers(1, 25), seed=st.integers(0, 10_000), density=st.floats(0.0, 1.0), zero_rows=st.integers(0, 5))
def test_sym_normalize_invariants(n, seed, density, zero_rows):
    a = random_sparse(n, seed, density).tolil()
    rng = np.random.default_rng(seed + 1)
    zr = rng.choice(n, min(zero_rows, n), replace=False)
    for i in zr:
        a[i, :] = 0
    a = a.tocsr()
    dense = a.toarray().astype(np.float64)
    r = dense.sum(axis=1)  # row sums on both sides (spec 4.3 / section 8 item 2)
    out = sym_normalize(a).toarray()
    expected = np.zeros_like(dense)
    for i in range(n):
        for j in range(n):
            if r[i] > 0 and r[j] > 0:
                expected[i, j] = dense[i, j] / np.sqrt(r[i] * r[j])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
    # zero rows stay zero, entries pointing at zero-sum rows get 0
    assert not out[r == 0].any()
    assert not out[:, r == 0].any()
    # with explicit sums
    np.testing.assert_allclose(sym_normalize(a, r).toarray(), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(row_sums(a), r, rtol=1e-5)


def test_sym_normalize_hand_case():
    a = sp.csr_matrix(np.array([[1.0, 3.0, 0.0], [0.0, 1.0, 0.0], [2.0, 0.0, 0.0]], dtype=np.float32))
    # r = [4, 1, 2]
    expected = np.array([[1 / 4, 3 / 2, 0], [0, 1, 0], [2 / np.sqrt(8), 0, 0]])
    np.testing.assert_allclose(sym_normalize(a).toarray(), expected, rtol=1e-6)


# ----------------------------------------------------------------------------- masking after top-k
@given(n=st.integers(2, 35), k=st.integers(1, 10), seed=st.integers(0, 10_000), p=st.floats(0.0, 1.0))
def test_mask_missing_invariants(n, k, seed, p):
    x = features(n, 5, seed)
    missing = np.random.default_rng(seed).random(n) < p
    a = knn_topk(x, k, chunk_size=8)
    m = mask_missing(a, missing)
    before, after = a.toarray(), m.toarray()
    for i in range(n):
        if missing[i]:
            e = np.zeros(n)
            e[i] = 1.0
            np.testing.assert_array_equal(after[i], e)  # row = e_i
            col = after[:, i].copy()
            col[i] = 0
            assert not col.any()  # nobody aggregates from a missing item
        else:
            assert (after[i] != 0).sum() <= min(k, n)
            # not refilled: exactly the old row without the missing columns
            expected = before[i] * ~missing
            np.testing.assert_array_equal(after[i], expected)

    g, r = build_knn_graph(x, k, missing=missing, chunk_size=8)
    gd = g.toarray()
    np.testing.assert_allclose(r, after.sum(axis=1), rtol=1e-5, atol=1e-6)
    for i in np.flatnonzero(missing):
        assert gd[i, i] == 1.0  # exactly 1 after normalisation
        assert (gd[i] != 0).sum() == 1
        assert (gd[:, i] != 0).sum() == 1
    np.testing.assert_allclose(gd, sym_normalize(m).toarray(), rtol=1e-6, atol=1e-7)


def test_build_knn_graph_without_missing_is_normalised_topk():
    x = features(30, 6, 3)
    g, r = build_knn_graph(x, 5, chunk_size=4)
    a = knn_topk(x, 5)
    np.testing.assert_allclose(r, row_sums(a), rtol=1e-6)
    np.testing.assert_allclose(g.toarray(), sym_normalize(a).toarray(), rtol=1e-6)
    assert g.dtype == np.float32
    assert max(np.diff(g.indptr)) <= 5


def test_build_knn_graph_masked_before():
    x = features(30, 6, 4)
    new = np.zeros(30, bool)
    new[[0, 5, 6]] = True
    g, _ = build_knn_graph(x, 5, masked_before=new)
    gd = g.toarray()
    for i in (0, 5, 6):
        assert gd[i, i] == pytest.approx(1.0) and (gd[i] != 0).sum() == 1
        assert (gd[:, i] != 0).sum() == 1


# ----------------------------------------------------------------------------- row blending
@given(
    n=st.integers(1, 25),
    seed=st.integers(0, 10_000),
    lam=st.floats(0.0, 1.0),
    p=st.floats(0.0, 1.0),
    density=st.floats(0.0, 1.0),
)
def test_blend_rows(n, seed, lam, p, density):
    cur = random_sparse(n, seed, density)
    new = random_sparse(n, seed + 7, density)
    rows = np.flatnonzero(np.random.default_rng(seed).random(n) < p)
    out = blend_rows(cur, new, rows, lam).toarray()
    c, nw = cur.toarray(), new.toarray()
    sel = np.zeros(n, bool)
    sel[rows] = True
    np.testing.assert_array_equal(out[~sel], c[~sel])  # other rows unchanged, bit for bit
    np.testing.assert_allclose(out[sel], lam * nw[sel] + (1 - lam) * c[sel], rtol=1e-5, atol=1e-6)


def test_blend_rows_hand_case():
    cur = sp.csr_matrix(np.array([[1.0, 0.0], [0.5, 0.5]], dtype=np.float32))
    new = sp.csr_matrix(np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32))
    out = blend_rows(cur, new, np.array([1]), 0.25).toarray()
    np.testing.assert_allclose(out, [[1.0, 0.0], [0.625, 0.375]])
