"""Graph construction at scale: the kNN block cap and O(nnz) sparse post-processing (benchmarks/bench_knn_scaling.py)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from graphrec.graph import knn
from graphrec.graph.knn import blend_rows, block_rows, knn_topk, mask_missing, row_sums, sym_normalize
from graphrec.graph.refinement import refresh_rows


def test_block_rows_bounds_the_similarity_block():
    assert block_rows(2048, 10_000) == 2048
    assert block_rows(2048, 10**6) == knn.MAX_BLOCK_ELEMENTS // 10**6 == 268
    assert block_rows(2048, 10**12) == 1
    assert block_rows(2048, 10**6) * 10**6 <= knn.MAX_BLOCK_ELEMENTS


def test_capped_blocks_give_the_same_graph(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    masked = rng.random(300) < 0.2
    cands = rng.random(300) < 0.7
    rows = rng.choice(300, 90, replace=False)
    ref = [knn_topk(x, 5, chunk_size=64), knn_topk(x, 5, chunk_size=64, masked=masked),
           knn_topk(x, 5, rows=rows, chunk_size=64, candidates=cands)]
    monkeypatch.setattr(knn, "MAX_BLOCK_ELEMENTS", 300 * 7)  # 7 rows per block
    assert block_rows(64, 300) == 7
    got = [knn_topk(x, 5, chunk_size=64), knn_topk(x, 5, chunk_size=64, masked=masked),
           knn_topk(x, 5, rows=rows, chunk_size=64, candidates=cands)]
    for a, b in zip(ref, got):
        assert (a != b).nnz == 0


def test_sparse_post_processing_at_a_million_items():
    """mask_missing / sym_normalize / blend_rows / the refresh's sparse steps never densify N x N (10^12 here)."""
    n, k = 10**6, 2
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(n), k)
    raw = sp.csr_matrix((rng.random(n * k, dtype=np.float32) + 0.1, (rows, rng.integers(0, n, n * k))), shape=(n, n))
    missing = rng.random(n) < 0.3
    graph = sym_normalize(mask_missing(raw, missing))
    assert graph.shape == (n, n) and graph.nnz <= raw.nnz + missing.sum()
    refresh = np.flatnonzero(missing)[:1000]
    sums = row_sums(raw)
    new = sym_normalize(raw, sums)
    out = blend_rows(graph, new, refresh, 0.8)
    assert out.nnz <= graph.nnz + new.nnz
    # a real refresh of a few rows of a 10^6-item graph: O(|R| N) similarities, O(nnz) sparse work
    x = rng.normal(size=(n, 4)).astype(np.float32)
    refined, new_sums = refresh_rows(graph, x, refresh[:8], k, 0.8, sums, exact=False)
    assert refined.shape == (n, n) and len(new_sums) == n
