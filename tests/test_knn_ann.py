"""Approximate kNN item graphs (graphrec.graph.ann): recall against the exact search, same conventions,
``auto`` keeps the exact search on small sets, settings checked, faiss optional (nn-descent fallback)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_user_error, invoke, small_config
from graphrec.errors import GraphrecError, GraphrecWarning
from graphrec.graph import ann
from graphrec.graph.ann import KNN_SEARCH_DEFAULTS, KnnSearch, faiss_available
from graphrec.graph.knn import build_knn_graph, frozen_knn_graph, knn_topk, row_sums
from graphrec.graph.refinement import refresh_rows

SMALL = ["--set", "synth_users=150", "--set", "synth_items=200", "--set", "device=cpu"]
needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss not installed (pip install 'graphrec[ann]')")
BACKENDS = [pytest.param("faiss-hnsw", marks=needs_faiss), pytest.param("faiss-ivf", marks=needs_faiss), "nn-descent"]


def clustered(n: int = 3000, d: int = 32, clusters: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    return centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)


def rows_of(a: sp.csr_matrix, i: int) -> np.ndarray:
    return a.indices[a.indptr[i] : a.indptr[i + 1]]


def recall(approx: sp.csr_matrix, exact: sp.csr_matrix, x: np.ndarray) -> float:
    """Share of the exact neighbour lists found, ties counted as found (a found item as similar as the
    exact list's k-th is as good as it)."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    hits, total = 0, 0
    for i in np.flatnonzero(np.diff(exact.indptr)):
        ex = exact.data[exact.indptr[i] : exact.indptr[i + 1]]
        found = rows_of(approx, i)
        kth = ex.min()
        hits += min(len(ex), int(np.sum(xn[found] @ xn[i] >= kth - 1e-6)))
        total += len(ex)
    return hits / total


def ann_search(backend: str, **kw) -> KnnSearch:
    return KnnSearch(method="ann", backend=backend, **kw)


# ----------------------------------------------------------------------------- recall and conventions
@pytest.mark.parametrize("backend", BACKENDS)
def test_recall_at_default_settings(backend):
    x = clustered()
    exact = knn_topk(x, 10)
    approx = knn_topk(x, 10, search=ann_search(backend))
    assert recall(approx, exact, x) >= 0.95
    # the weights of the pairs both found are the same cosine similarities
    both = exact.multiply(approx.astype(bool)).tocsr()
    common = approx.multiply(exact.astype(bool)).tocsr()
    assert both.nnz > 0.9 * exact.nnz
    np.testing.assert_allclose(both.data, common.data, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_conventions_as_exact(backend):
    x = clustered(1500, 16, seed=1)
    rng = np.random.default_rng(1)
    masked = rng.random(1500) < 0.1
    cands = rng.random(1500) < 0.6
    rows = rng.choice(1500, 300, replace=False)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = ann_search(backend)
    for kw in ({}, {"masked": masked}, {"rows": rows, "candidates": cands}, {"rows": rows, "masked": masked, "candidates": cands}):
        a = knn_topk(x, 10, search=s, **kw)
        e = knn_topk(x, 10, **kw)
        assert a.shape == e.shape == (1500, 1500) and a.dtype == np.float32
        searched = np.zeros(1500, dtype=bool)
        searched[kw.get("rows", np.arange(1500))] = True
        np.testing.assert_array_equal(np.diff(a.indptr) > 0, searched)  # unsearched rows empty
        assert np.diff(a.indptr).max() <= 10
        assert (np.diff(a.indptr)[searched] == np.diff(e.indptr)[searched]).all()
        assert (a.diagonal()[searched] > 0.99).all()  # the item itself, similarity 1
        coo = a.tocoo()
        np.testing.assert_allclose(coo.data, np.einsum("ij,ij->i", xn[coo.row], xn[coo.col]), atol=1e-5)
        off = coo.row != coo.col
        if "masked" in kw:
            m_rows = searched & masked
            assert all(list(rows_of(a, i)) == [i] and a[i, i] == 1.0 for i in np.flatnonzero(m_rows))
            assert not masked[coo.col[off]].any()  # no row picks a masked item
        if "candidates" in kw:
            assert cands[coo.col[off]].all()  # only candidates (or the item itself)
        assert recall(a, e, x) >= 0.95


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicate_rows(backend):
    """Mean-imputed rows are one vector: each copy still gets k neighbours, itself among them."""
    x = clustered(1200, 16, seed=2)
    x[:400] = x[:400].mean(axis=0)
    a = knn_topk(x, 10, search=ann_search(backend))
    assert (np.diff(a.indptr) == 10).all()
    assert (a.diagonal() > 0.99).all()
    assert recall(a, knn_topk(x, 10), x) >= 0.95


def test_tiny_pools_are_searched_exactly():
    x = clustered(100, 8)
    a = knn_topk(x, 10, search=ann_search("nn-descent"))
    assert (a != knn_topk(x, 10)).nnz == 0


@needs_faiss
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(600, 1200), k=st.integers(1, 12), d=st.integers(4, 12), frac=st.floats(0.0, 0.5), seed=st.integers(0, 10**6))
def test_property_rows_are_the_exact_kind(n, k, d, frac, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    cands = rng.random(n) >= frac
    a = knn_topk(x, k, search=ann_search("faiss-hnsw"), candidates=cands)
    deg = np.diff(a.indptr)
    assert ((deg >= 1) & (deg <= k)).all()
    assert (a.diagonal() > 0.99).all()
    coo = a.tocoo()
    off = coo.row != coo.col
    assert cands[coo.col[off]].all()
    # no pair twice, no zero weight
    assert len(set(zip(coo.row.tolist(), coo.col.tolist()))) == a.nnz and (coo.data != 0).all()


# ----------------------------------------------------------------------------- auto, graphs, refinement
def test_auto_is_exact_below_min_rows_and_ann_above(monkeypatch):
    x = clustered(1000, 16)
    assert (knn_topk(x, 10, search=KnnSearch()) != knn_topk(x, 10)).nnz == 0  # bit-identical
    calls = []
    monkeypatch.setattr("graphrec.graph.knn.ann_topk", lambda *a, **kw: calls.append(kw.get("rows")) or sp.csr_matrix((1000, 1000)))
    knn_topk(x, 10, search=KnnSearch(min_rows=1000))
    knn_topk(x, 10, rows=np.arange(999), search=KnnSearch(min_rows=1000))  # 999 rows: exact
    knn_topk(x, 10, search=KnnSearch(method="exact", min_rows=0))
    knn_topk(x, 10, rows=np.arange(5), search=KnnSearch(method="ann"))
    assert len(calls) == 2 and calls[0] is None and len(calls[1]) == 5
    assert KNN_SEARCH_DEFAULTS["knn_method"] == "auto" and KnnSearch().min_rows == KNN_SEARCH_DEFAULTS["ann_min_rows"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_graph_builders_take_the_search(backend):
    x = clustered(1500, 16, seed=3)
    missing = np.random.default_rng(3).random(1500) < 0.3
    s = ann_search(backend)
    g_a, r_a = build_knn_graph(x, 10, missing=missing, search=s)
    g_e, r_e = build_knn_graph(x, 10, missing=missing)
    assert g_a.shape == g_e.shape and np.allclose(g_a.diagonal()[missing], 1.0)
    assert np.abs(r_a - r_e).mean() < 0.05 * r_e.mean()
    f_a, f_e = frozen_knn_graph(x, 10, search=s), frozen_knn_graph(x, 10)
    assert np.array_equal(np.diff(f_a.indptr), np.diff(f_e.indptr))
    assert recall(f_a, f_e, x) >= 0.95


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("observed_only", [False, True])
def test_refinement_with_ann_approximates_exact(backend, observed_only):
    x = clustered(2000, 16, seed=4)
    rng = np.random.default_rng(4)
    missing = rng.random(2000) < 0.3
    graph, sums = build_knn_graph(x, 10, missing=missing)
    rows = np.flatnonzero(missing)
    cands = ~missing if observed_only else None
    ref_e, s_e = refresh_rows(graph, x, rows, 10, 0.8, sums, candidates=cands)
    ref_a, s_a = refresh_rows(graph, x, rows, 10, 0.8, sums, candidates=cands, search=ann_search(backend))
    keep = ~missing
    assert (ref_a[keep] != ref_e[keep]).nnz == 0  # rows not refreshed: unchanged
    np.testing.assert_array_equal(s_a[keep], s_e[keep])
    new_e = refresh_rows(graph, x, rows, 10, 1.0, sums, candidates=cands)[0]
    new_a = refresh_rows(graph, x, rows, 10, 1.0, sums, candidates=cands, search=ann_search(backend))[0]
    assert recall(new_a, new_e, x) >= 0.95
    assert np.abs(ref_a - ref_e).sum() < 0.1 * np.abs(ref_e).sum()


def test_refinement_queries_only_the_refreshed_rows(monkeypatch):
    x = clustered(1000, 8)
    graph, sums = build_knn_graph(x, 5)
    seen = {}
    real = ann.ann_topk

    def spy(x_, k, search, rows=None, masked=None, candidates=None):
        seen["rows"] = rows
        return real(x_, k, search, rows=rows, masked=masked, candidates=candidates)

    monkeypatch.setattr("graphrec.graph.knn.ann_topk", spy)
    refresh_rows(graph, x, np.arange(40), 5, 0.8, sums, search=ann_search("nn-descent"))
    np.testing.assert_array_equal(seen["rows"], np.arange(40))


def test_models_default_to_exact_on_small_sets():
    from graphrec.models.build import build_model  # noqa: F401 (registry)

    for model in ("dgmrec", "freedom", "lattice", "mgcn", "gume", "damrs"):
        cfg = small_config(model)
        assert cfg["knn_method"] == "auto" and cfg["ann_min_rows"] > 200
        assert KnnSearch.from_config(cfg, model) == KnnSearch()


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, d))
    return (centres[rng.integers(0, 12, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def test_damrs_denoised_graphs_with_ann_keep_the_cross_modality_rule_and_match_exact():
    """The approximate denoised graphs: every kept pair passes every modality's mean, at most k per
    row (self kept), and nearly the exact graphs' edges (the index only proposes candidates)."""
    from graphrec.graph.denoised import denoised_knn_graphs

    feats = {"image": _clustered(400, 16, 1), "audio": _clustered(400, 12, 2)}
    k = 8
    exact = denoised_knn_graphs(feats, k)
    approx = denoised_knn_graphs(feats, k, search=ann_search("nn-descent"))
    exact_none = denoised_knn_graphs(feats, k, search=KnnSearch(method="exact"))
    norm = {m: x / np.linalg.norm(x, axis=1, keepdims=True) for m, x in feats.items()}
    means = {m: float((x.sum(0) ** 2).sum()) / 400**2 for m, x in norm.items()}
    for m in feats:
        assert (exact_none[m] != exact[m]).nnz == 0
        a = approx[m].tocoo()
        assert np.diff(approx[m].indptr).max() <= k
        assert (a.row == a.col).sum() == 400  # every item keeps itself
        for o, x in norm.items():
            assert ((x[a.row] * x[a.col]).sum(1) >= means[o] - 1e-6).all()
        shared = approx[m].multiply(exact[m] > 0).nnz / exact[m].nnz
        assert shared > 0.9, (m, shared)


def test_gume_neighbours_use_the_ann_search(monkeypatch):
    from graphrec.graph.enhanced import modality_neighbours

    calls = []
    real = ann.ann_topk

    def spy(x_, k, search, rows=None, masked=None, candidates=None):
        calls.append(masked)
        return real(x_, k, search, rows=rows, masked=masked, candidates=candidates)

    monkeypatch.setattr("graphrec.graph.knn.ann_topk", spy)
    feats = {"image": _clustered(300, 16, 3), "audio": _clustered(300, 12, 4)}
    missing = {"image": np.arange(300) % 7 == 0, "audio": np.zeros(300, dtype=bool)}
    neigh = modality_neighbours(feats, missing, 6, search=ann_search("nn-descent"))
    exact = modality_neighbours(feats, missing, 6)
    assert len(calls) == 2 and calls[0] is missing["image"]
    for m in feats:
        assert neigh[m].multiply(exact[m]).nnz / exact[m].nnz > 0.9
        miss = np.flatnonzero(missing[m])
        assert (neigh[m][miss] != sp.identity(300, format="csr")[miss]).nnz == 0  # only themselves


@pytest.mark.slow
def test_dgmrec_trains_with_ann(tmp_path):
    backend = "faiss-hnsw" if faiss_available() else "nn-descent"
    r = invoke("fit", "dgmrec", "--epochs", "6", "--quiet", "--out", tmp_path / "run", "--set", "synth_users=200",
               "--set", "synth_items=400", "--set", "device=cpu", "--set", "knn_method=ann", "--set", f"ann_backend={backend}",
               "--set", "refine_every=5")
    assert r.exit_code == 0, r.output


# ----------------------------------------------------------------------------- settings and the optional faiss
@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("knn_method", "fast", "'knn_method' must be one of auto, exact, ann, got 'fast'"),
        ("ann_backend", "annoy", "'ann_backend' must be one of auto, faiss-hnsw, faiss-ivf, nn-descent"),
        ("ann_hnsw_m", 1, "'ann_hnsw_m' must be an integer >= 2"),
        ("ann_ef_search", 0, "'ann_ef_search' must be an integer >= 1"),
        ("ann_ivf_nprobe", -3, "'ann_ivf_nprobe' must be an integer >= 1"),
        ("ann_min_rows", -1, "'ann_min_rows' must be an integer >= 0"),
        ("ann_ivf_nlist", 2.5, "'ann_ivf_nlist' must be an integer >= 0"),
    ],
)
def test_bad_settings_are_one_line_errors(key, value, fragment):
    with pytest.raises(GraphrecError, match="^dgmrec: ") as e:
        KnnSearch.from_config({**KNN_SEARCH_DEFAULTS, key: value}, "dgmrec")
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_bad_setting_on_the_command_line(tmp_path):
    assert_user_error(invoke("fit", "freedom", "--epochs", "1", "--quiet", "--out", tmp_path / "o", *SMALL, "--set", "knn_method=fast"),
                      "'knn_method' must be one of auto, exact, ann")


def test_without_faiss_auto_falls_back_to_nn_descent(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    monkeypatch.setattr(ann, "_warned_fallback", False)
    assert not faiss_available()
    x = clustered(1500, 16)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = knn_topk(x, 10, search=KnnSearch(method="ann"))
        knn_topk(x, 10, search=KnnSearch(method="ann"))
    lines = [str(m.message) for m in w if issubclass(m.category, GraphrecWarning)]
    assert len(lines) == 1 and "nn-descent" in lines[0] and "graphrec[ann]" in lines[0] and "\n" not in lines[0]
    assert recall(a, knn_topk(x, 10), x) >= 0.95
    with pytest.raises(GraphrecError, match="needs faiss: pip install 'graphrec\\[ann\\]'"):
        knn_topk(x, 10, search=ann_search("faiss-hnsw"))


@needs_faiss
def test_faiss_hnsw_is_the_default_backend_when_installed():
    assert ann.resolve_backend(KnnSearch()) == "faiss-hnsw"
