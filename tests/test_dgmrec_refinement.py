"""Graph refinement of DGMRec (spec 4.3, 4.8 step 4, invariants 8.1-8.3).

``refresh_rows`` and ``DGMRec.refine`` against a brute-force dense computation:
only rows in R change, a changed row is ``λ·new + (1−λ)·old``, blending is an EMA
starting from the unit self loop, and refinement edges point *into* refreshed items.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import small_config
from graphrec.data.dataset import load_dataset
from graphrec.graph import item_graph_matrix
from graphrec.graph.heterograph import knn_relation, refine_relation
from graphrec.graph.knn import knn_topk, mask_missing, row_sums, sym_normalize
from graphrec.graph.refinement import refresh_rows
from graphrec.models.dgmrec import DGMRec
from graphrec.train.seed import set_seed


# ----------------------------------------------------------------------------- brute force
def dense_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Dense top-k cosine matrix (similarity weights) and the smallest gap at a top-k boundary."""
    x = np.asarray(x, dtype=np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    n = len(x)
    k = min(k, n)
    a = np.zeros_like(sim)
    gap = np.inf
    for i in range(n):
        order = np.argsort(-sim[i], kind="stable")
        a[i, order[:k]] = sim[i, order[:k]]
        if k < n:
            gap = min(gap, sim[i, order[k - 1]] - sim[i, order[k]])
    return a, gap


def dense_normalize(a: np.ndarray, sums: np.ndarray | None = None) -> np.ndarray:
    r = a.sum(1) if sums is None else np.asarray(sums, dtype=np.float64)
    inv = np.where(r > 0, 1.0 / np.sqrt(np.where(r > 0, r, 1.0)), 0.0)
    return a * inv[:, None] * inv[None, :]


def dense_masked(a: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Masking after the top-k (spec 4.3): clear rows/columns of missing items, unit self loop."""
    out = a.copy()
    out[missing, :] = 0.0
    out[:, missing] = 0.0
    out[np.flatnonzero(missing), np.flatnonzero(missing)] = 1.0
    return out


def rand_features(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def rand_rows(n: int, seed: int, p: float = 0.4) -> np.ndarray:
    rng = np.random.default_rng(seed + 7)
    sel = rng.random(n) < p
    sel[rng.integers(n)] = True
    return sel


# ----------------------------------------------------------------------------- refresh_rows
@given(n=st.integers(4, 24), d=st.integers(2, 6), k=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_exact_knn_graph_matches_brute_force(n, d, k, seed):
    x = rand_features(n, d, seed)
    ref, gap = dense_knn(x, k)
    assume(gap > 1e-4)
    raw = knn_topk(torch.from_numpy(x), k)
    np.testing.assert_allclose(raw.toarray(), ref, atol=1e-5)
    np.testing.assert_allclose(row_sums(raw), ref.sum(1), atol=1e-5)
    np.testing.assert_allclose(sym_normalize(raw).toarray(), dense_normalize(ref), atol=1e-5)


@given(
    n=st.integers(4, 24),
    d=st.integers(2, 6),
    k=st.integers(1, 6),
    lam=st.floats(0.05, 1.0),
    seed=st.integers(0, 10_000),
)
def test_refresh_exact_blends_only_rows_in_r(n, d, k, lam, seed):
    """Spec 8.3: only rows in R change; a changed row is λ·new + (1−λ)·old, new = exact normalised kNN."""
    x_old = rand_features(n, d, seed)
    missing = rand_rows(n, seed)
    cache_raw = knn_topk(x_old, k)
    current = sym_normalize(mask_missing(cache_raw, missing))
    x_new = x_old.copy()
    x_new[missing] = rand_features(int(missing.sum()), d, seed + 1)  # "generated" rows
    new_ref, gap = dense_knn(x_new, k)
    assume(gap > 1e-4)
    rows = np.flatnonzero(missing)
    out, sums = refresh_rows(current, torch.from_numpy(x_new), rows, k, lam, row_sums(cache_raw), exact=True)
    cur = current.toarray().astype(np.float64)
    got = out.toarray()
    expected = cur.copy()
    expected[rows] = lam * dense_normalize(new_ref)[rows] + (1 - lam) * cur[rows]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(got[~missing], current.toarray()[~missing])  # bit-identical elsewhere
    np.testing.assert_allclose(sums, new_ref.sum(1), atol=1e-5)  # exact: every row sum recomputed
    assert isinstance(out, sp.csr_matrix) and out.shape == (n, n)


@given(
    n=st.integers(4, 24),
    d=st.integers(2, 6),
    k=st.integers(1, 6),
    lam=st.floats(0.05, 1.0),
    seed=st.integers(0, 10_000),
)
def test_refresh_fast_computes_rows_of_r_from_the_cache(n, d, k, lam, seed):
    """exact=False: only R's rows are rebuilt; a neighbour j outside R is normalised by the cached r_j."""
    x = rand_features(n, d, seed)
    missing = rand_rows(n, seed)
    rows = np.flatnonzero(missing)
    current = sym_normalize(mask_missing(knn_topk(x, k), missing))
    ref, gap = dense_knn(x, k)
    assume(gap > 1e-4)
    # an arbitrary (wrong) cache: the result must follow it for j outside R
    cache = np.random.default_rng(seed + 3).uniform(0.5, 3.0, size=n)
    out, sums = refresh_rows(current, torch.from_numpy(x), rows, k, lam, cache, exact=False)
    used = cache.copy()
    used[rows] = ref.sum(1)[rows]
    np.testing.assert_allclose(sums, used, atol=1e-5)
    np.testing.assert_array_equal(sums[~missing], cache[~missing])  # not recomputed
    expected = current.toarray().astype(np.float64)
    expected[rows] = lam * dense_normalize(ref, used)[rows] + (1 - lam) * expected[rows]
    np.testing.assert_allclose(out.toarray(), expected, atol=1e-5)
    np.testing.assert_array_equal(out.toarray()[~missing], current.toarray()[~missing])
    # with the true row sums cached, the fast path equals the exact full rebuild
    fast, fast_sums = refresh_rows(current, torch.from_numpy(x), rows, k, lam, ref.sum(1), exact=False)
    exact, exact_sums = refresh_rows(current, torch.from_numpy(x), rows, k, lam, cache, exact=True)
    np.testing.assert_allclose(fast.toarray(), exact.toarray(), atol=1e-6)
    np.testing.assert_allclose(fast_sums, exact_sums, atol=1e-5)


def test_fast_equals_exact_when_only_rows_of_r_changed_and_cache_is_current():
    """The model's situation: features outside R did not change, so their cached row sums are exact."""
    n, d, k = 40, 5, 5
    x = rand_features(n, d, 0)
    missing = rand_rows(n, 0, p=0.3)
    rows = np.flatnonzero(missing)
    x_new = x.copy()
    x_new[rows] = rand_features(len(rows), d, 1)
    full = knn_topk(x_new, k)
    # r_j of items outside R computed from the new features (= what a full rebuild finds)
    cache = row_sums(full).astype(np.float64)
    cache[rows] = 123.0  # rows of R must be recomputed, whatever the cache says
    current = sym_normalize(mask_missing(knn_topk(x, k), missing))
    fast, s_fast = refresh_rows(current, torch.from_numpy(x_new), rows, k, 0.8, cache, exact=False)
    exact, s_exact = refresh_rows(current, torch.from_numpy(x_new), rows, k, 0.8, cache, exact=True)
    np.testing.assert_allclose(fast.toarray(), exact.toarray(), atol=1e-6)
    np.testing.assert_allclose(s_fast, s_exact, atol=1e-5)
    # only rows of R are computed: a "rows" build has entries in those rows only
    part = knn_topk(x_new, k, rows=rows)
    assert set(np.flatnonzero(np.diff(part.indptr))) <= set(rows.tolist())


def test_refresh_lambda_zero_and_empty_rows_are_no_ops():
    x = rand_features(12, 3, 0)
    missing = rand_rows(12, 0)
    raw = knn_topk(x, 3)
    cur = sym_normalize(mask_missing(raw, missing))
    for rows, lam in ((np.flatnonzero(missing), 0.0), (np.array([], dtype=np.int64), 0.7)):
        out, sums = refresh_rows(cur, torch.from_numpy(x * 2 + 1), rows, 3, lam, row_sums(raw), exact=True)
        np.testing.assert_array_equal(out.toarray(), cur.toarray())
        np.testing.assert_array_equal(sums, row_sums(raw))


@pytest.mark.parametrize("exact", [True, False])
def test_refresh_is_cumulative_from_the_unit_self_loop(exact):
    """Two refreshes: row_i = λ·new2 + (1−λ)(λ·new1 + (1−λ)·e_i)."""
    n, d, k, lam = 30, 4, 4, 0.6
    x0 = rand_features(n, d, 5)
    missing = rand_rows(n, 5, p=0.3)
    rows = np.flatnonzero(missing)
    raw0 = knn_topk(x0, k)
    a0 = sym_normalize(mask_missing(raw0, missing))
    x1, x2 = x0.copy(), x0.copy()
    x1[rows] = rand_features(len(rows), d, 6)
    x2[rows] = rand_features(len(rows), d, 7)
    cache = row_sums(raw0)
    a1, cache1 = refresh_rows(a0, torch.from_numpy(x1), rows, k, lam, cache, exact=exact)
    a2, _ = refresh_rows(a1, torch.from_numpy(x2), rows, k, lam, cache1, exact=exact)

    def new_rows(x, c):
        ref, _ = dense_knn(x, k)
        used = ref.sum(1) if exact else np.where(missing, ref.sum(1), c)
        return dense_normalize(ref, used), used

    n1, c1 = new_rows(x1, cache)
    n2, _ = new_rows(x2, c1)
    eye = np.eye(n)
    expected = a0.toarray().astype(np.float64)
    expected[rows] = lam * n2[rows] + (1 - lam) * (lam * n1[rows] + (1 - lam) * eye[rows])
    np.testing.assert_allclose(a2.toarray(), expected, atol=1e-5)


# ----------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def dataset():
    return load_dataset(small_config("dgmrec"))


def make_model(dataset, **overrides):
    set_seed(0)
    return DGMRec(dataset, small_config("dgmrec", **overrides))


def test_initial_masked_graph_invariants(dataset):
    """Spec 8.1: a missing item's row is the unit self loop and no other item aggregates from it."""
    model = make_model(dataset)
    k = int(model.config["knn_k"])
    for m in model.modalities:
        a = model.graphs[m].toarray()
        miss = dataset.missing.missing[m]
        assert miss.any() and (~miss).any()
        rows = np.flatnonzero(miss)
        np.testing.assert_array_equal(a[rows], np.eye(len(a))[rows])  # exactly 1 on the diagonal
        off = a[:, rows].copy()
        off[rows, np.arange(len(rows))] = 0.0
        assert not off.any()
        assert ((a[~miss] != 0).sum(1) <= k).all()
        # (imputed rows are identical, so top-k ties among them exist; masking removes them all)
        ref, _ = dense_knn(dataset.features[m], k)
        np.testing.assert_allclose(a, dense_normalize(dense_masked(ref, miss)), atol=1e-5)
        # the heterograph holds the same matrix; no refinement edges yet
        np.testing.assert_allclose(item_graph_matrix(model.graph, m).toarray(), a, atol=0)
        assert model.graph.num_edges(refine_relation(m)) == 0
        assert model.infer_graph is model.graph  # missing-only setting, refined graph at inference


def check_refined_heterograph(model, m, rows):
    g = model.graph
    r = np.zeros(model.n_items, dtype=bool)
    r[rows] = True
    _, dst_ref = g.edges(etype=refine_relation(m))
    _, dst_knn = g.edges(etype=knn_relation(m))
    assert len(dst_ref) > 0
    assert r[dst_ref.numpy()].all()  # every refinement edge points into a refreshed item
    assert not r[dst_knn.numpy()].any()  # the knn relation has no edge into a refreshed item
    np.testing.assert_allclose(item_graph_matrix(g, m).toarray(), model.graphs[m].toarray(), atol=0)


@pytest.mark.parametrize("exact", [True, False])
def test_model_refine_rows_and_edges(dataset, exact):
    lam = 0.7
    model = make_model(dataset, refine_exact=exact, avg_lambda=lam)
    before = {m: model.graphs[m].toarray() for m in model.modalities}
    sums0 = {m: model.sums[m].copy() for m in model.modalities}
    rng = np.random.default_rng(0)
    for m in model.modalities:  # stand-in for generated features
        rows = model.refinement_rows(m, inference=False)
        model.raw[m].data[rows] = torch.from_numpy(rng.normal(size=(len(rows), model.raw[m].shape[1])).astype(np.float32))
    model.refine()
    assert model.infer_graph is model.graph
    for m in model.modalities:
        miss = dataset.missing.missing[m]
        rows = model.refinement_rows(m, inference=False)
        np.testing.assert_array_equal(rows, np.flatnonzero(miss))  # 2 modalities: R = Ω_m (auto)
        after = model.graphs[m].toarray()
        np.testing.assert_array_equal(after[~miss], before[m][~miss])  # complete and other rows untouched
        complete = dataset.missing.complete()
        np.testing.assert_array_equal(after[complete], before[m][complete])
        ref, _ = dense_knn(model.raw[m].detach().numpy(), int(model.config["knn_k"]))
        used = ref.sum(1) if exact else np.where(miss, ref.sum(1), sums0[m])
        expected = before[m].copy().astype(np.float64)
        expected[rows] = lam * dense_normalize(ref, used)[rows] + (1 - lam) * before[m][rows]
        np.testing.assert_allclose(after, expected, atol=1e-5)
        # refreshed items gained in-edges from neighbours; nobody started aggregating from them
        assert ((after[rows] != 0).sum(1) > 1).all()
        col = after[:, rows].copy()
        col[rows, :] = 0.0
        assert not col.any()
        assert model.refined[m][rows].all() and not model.refined[m][~miss].any()
        check_refined_heterograph(model, m, rows)


def test_model_refine_is_cumulative(dataset):
    lam = 0.6
    model = make_model(dataset, refine_exact=True, avg_lambda=lam)
    k = int(model.config["knn_k"])
    rng = np.random.default_rng(1)
    news = {m: [] for m in model.modalities}
    a0 = {m: model.graphs[m].toarray() for m in model.modalities}
    for _ in range(2):
        for m in model.modalities:
            rows = model.refinement_rows(m, False)
            model.raw[m].data[rows] = torch.from_numpy(rng.normal(size=(len(rows), model.raw[m].shape[1])).astype(np.float32))
            ref, _ = dense_knn(model.raw[m].detach().numpy(), k)
            news[m].append(dense_normalize(ref))
        model.refine()
    for m in model.modalities:
        rows = model.refinement_rows(m, False)
        n1, n2 = news[m]
        expected = a0[m].copy()
        expected[rows] = lam * n2[rows] + (1 - lam) * (lam * n1[rows] + (1 - lam) * np.eye(model.n_items)[rows])
        np.testing.assert_allclose(model.graphs[m].toarray(), expected, atol=1e-5)
        check_refined_heterograph(model, m, rows)


def test_refine_rows_modes_and_sources(dataset):
    single = make_model(dataset, refine_rows="single")
    for m in single.modalities:
        np.testing.assert_array_equal(single.refinement_rows(m, False), np.flatnonzero(dataset.missing.only(m)))
    single.refine()
    for m in single.modalities:
        np.testing.assert_array_equal(single.refined[m], dataset.missing.only(m))
        check_refined_heterograph(single, m, np.flatnonzero(dataset.missing.only(m)))
    obs = make_model(dataset, refine_sources="observed", avg_lambda=1.0)
    before = {m: obs.graphs[m].toarray() for m in obs.modalities}
    obs.refine()
    for m in obs.modalities:
        miss = dataset.missing.missing[m]
        rows = np.flatnonzero(miss)
        after = obs.graphs[m].toarray()
        nb = after[rows].copy()
        nb[np.arange(len(rows)), rows] = 0.0  # the item itself may stay
        assert not nb[:, miss].any()  # new neighbours are items that observe m
        assert (nb[:, ~miss] != 0).sum(1).min() > 0
        np.testing.assert_array_equal(after[~miss], before[m][~miss])


def test_refined_graph_at_inference_false_keeps_initial_inference_graph(dataset):
    model = make_model(dataset, refined_graph_at_inference=False)
    initial = {m: model.graphs[m].toarray() for m in model.modalities}
    model.refine()
    assert model.infer_graph is not model.graph
    for m in model.modalities:
        np.testing.assert_array_equal(item_graph_matrix(model.infer_graph, m).toarray(), initial[m])
        assert model.infer_graph.num_edges(refine_relation(m)) == 0
        assert not np.array_equal(model.graphs[m].toarray(), initial[m])


def test_lambda_zero_refine_changes_nothing(dataset):
    model = make_model(dataset, avg_lambda=0.0)
    before = {m: model.graphs[m].toarray() for m in model.modalities}
    model.refine()
    for m in model.modalities:
        np.testing.assert_array_equal(model.graphs[m].toarray(), before[m])
        # no blending happened, so there are no refinement edges (the unit self loops stay knn edges)
        assert model.graph.num_edges(refine_relation(m)) == 0
        assert not model.refined[m].any()


def test_new_item_graphs():
    ds = load_dataset(small_config("dgmrec", synth_new_items=True))
    new = ds.new_items
    assert new.any()
    model = make_model(ds)
    assert model.infer_graph is not model.graph
    for m in model.modalities:
        train_a = item_graph_matrix(model.graph, m).toarray()
        infer_a = item_graph_matrix(model.infer_graph, m).toarray()
        assert not np.allclose(train_a, infer_a)
        rows = np.flatnonzero(new)
        # training graph: new items masked before the top-k (self loop, nobody aggregates from them)
        np.testing.assert_array_equal(train_a[rows], np.eye(ds.n_items)[rows])
        col = train_a[:, rows].copy()
        col[rows, np.arange(len(rows))] = 0.0
        assert not col.any()
        # inference graph: masked for missing items (after the top-k), new items keep their rows
        miss = ds.missing.missing[m]
        mrows = np.flatnonzero(miss)
        np.testing.assert_array_equal(infer_a[mrows], np.eye(ds.n_items)[mrows])
        ok = new & ~miss
        assert ((infer_a[ok] != 0).sum(1) > 1).all()
        # refinement: training rows = Ω_m ∩ old, inference rows = Ω_m ∩ new
        np.testing.assert_array_equal(model.refinement_rows(m, False), np.flatnonzero(miss & ~new))
        np.testing.assert_array_equal(model.refinement_rows(m, True), np.flatnonzero(miss & new))
    model.refine(inference=True)
    for m in model.modalities:
        rows = np.flatnonzero(ds.missing.missing[m] & new)
        g = model.infer_graph
        _, dst = g.edges(etype=refine_relation(m))
        assert len(dst) and new[dst.numpy()].all() and ds.missing.missing[m][dst.numpy()].all()
        np.testing.assert_array_equal(model.infer_refined[m], np.isin(np.arange(ds.n_items), rows))
        assert model.graph.num_edges(refine_relation(m)) == 0  # the training graph is untouched


@pytest.mark.parametrize("new_items", [False, True])
def test_cached_row_sums_are_those_of_an_unmasked_rebuild(new_items):
    """The fast path normalises neighbours outside R with cached row sums; a refresh rebuilds rows
    without any masking (spec 4.8), so the cache must hold the unmasked kNN row sums (in the
    new-item setting too, where the training graph itself is masked before the top-k)."""
    ds = load_dataset(small_config("dgmrec", synth_new_items=new_items))
    model = make_model(ds)
    k = int(model.config["knn_k"])
    for m in model.modalities:
        full = row_sums(knn_topk(ds.features[m], k))
        np.testing.assert_allclose(model.sums[m], full, rtol=1e-6)
        # so, on unchanged features, the fast refresh of R's rows equals the exact one
        rows = model.refinement_rows(m, inference=False)
        x = torch.from_numpy(ds.features[m])
        fast, _ = refresh_rows(model.graphs[m], x, rows, k, 0.5, model.sums[m], exact=False)
        exact, _ = refresh_rows(model.graphs[m], x, rows, k, 0.5, model.sums[m], exact=True)
        # imputed rows of R are identical vectors, so which of them a row keeps is a top-k tie:
        # compare the weights each row gives, sorted, and the weight on every observed neighbour
        f, e = fast.toarray(), exact.toarray()
        np.testing.assert_allclose(np.sort(f[rows], axis=1), np.sort(e[rows], axis=1), atol=1e-6)
        obs = ~ds.missing.missing[m]
        np.testing.assert_allclose(f[np.ix_(rows, np.flatnonzero(obs))], e[np.ix_(rows, np.flatnonzero(obs))], atol=1e-6)


def test_export_honours_refine_sources(dataset):
    model = make_model(dataset, refine_sources="observed", avg_lambda=1.0)
    out = model.export_refined()
    for m in model.modalities:
        miss = dataset.missing.missing[m]
        a = out[m]["graph"].toarray()
        rows = np.flatnonzero(miss)
        nb = a[rows].copy()
        nb[np.arange(len(rows)), rows] = 0.0
        assert not nb[:, miss].any()  # generated rows aggregate from items that observe m only
        assert (nb != 0).sum(1).min() > 0
