"""The dataset heterograph: schema, LightGCN edge weights, item-item relations (spec 2.5, 9.3)."""

from __future__ import annotations

import dgl
import dgl.function as fn
import numpy as np
import scipy.sparse as sp
import torch

from graphrec.graph.heterograph import (
    EPS,
    IU,
    UI,
    build_heterograph,
    item_graph_matrix,
    knn_relation,
    refine_relation,
)
from graphrec.graph.knn import build_knn_graph

TRAIN = np.array([[0, 0], [0, 1], [1, 1], [2, 1], [2, 3], [4, 2]])  # user 3 and item 4 have no edge
U, N = 5, 5


def test_schema_and_counts():
    g = build_heterograph(U, N, TRAIN)
    assert set(g.ntypes) == {"user", "item"}
    assert set(g.canonical_etypes) == {UI, IU}
    assert g.num_nodes("user") == U and g.num_nodes("item") == N  # isolated nodes kept
    assert g.num_edges(UI) == g.num_edges(IU) == len(TRAIN)
    assert g.idtype == torch.int64
    src, dst = g.edges(etype=UI)
    assert set(zip(src.tolist(), dst.tolist())) == set(map(tuple, TRAIN.tolist()))
    src, dst = g.edges(etype=IU)
    assert set(zip(dst.tolist(), src.tolist())) == set(map(tuple, TRAIN.tolist()))


def test_lightgcn_edge_weights():
    g = build_heterograph(U, N, TRAIN)
    deg_u = np.bincount(TRAIN[:, 0], minlength=U)
    deg_i = np.bincount(TRAIN[:, 1], minlength=N)
    for rel in (UI, IU):
        src, dst = g.edges(etype=rel)
        u, i = (src, dst) if rel == UI else (dst, src)
        u, i = u.numpy(), i.numpy()
        w = g.edges[rel].data["w"].numpy()
        np.testing.assert_allclose(w, 1 / np.sqrt((deg_u[u] + EPS) * (deg_i[i] + EPS)), rtol=1e-6)
        d = deg_i[i] if rel == UI else deg_u[u]
        np.testing.assert_allclose(g.edges[rel].data["w_mean"].numpy(), 1 / (d + EPS), rtol=1e-6)
    # mean aggregation sums to 1 over each destination with edges
    ones = torch.ones(U, 1)
    out = dgl.ops.u_mul_e_sum(g[UI], ones, g.edges[UI].data["w_mean"]).squeeze(1).numpy()
    np.testing.assert_allclose(out, (deg_i > 0).astype(float), rtol=1e-5)


def test_item_item_relation_orientation_and_weights():
    a = sp.csr_matrix(np.array([[0.5, 0.2, 0, 0, 0], [0, 1, 0, 0.3, 0], [0, 0, 1, 0, 0], [0.1, 0, 0, 0.9, 0], [0, 0, 0, 0, 1]], np.float32))
    g = build_heterograph(U, N, TRAIN, item_graphs={"image": a})
    rel = knn_relation("image")
    assert rel in g.canonical_etypes and refine_relation("image") in g.canonical_etypes
    src, dst = g.edges(etype=rel)
    w = g.edges[rel].data["w"]
    # A[i, j] = "i aggregates from j" -> edge j -> i with weight A[i, j]
    for s_, d_, w_ in zip(src.tolist(), dst.tolist(), w.tolist()):
        assert a[d_, s_] == np.float32(w_)
    assert len(src) == a.nnz
    np.testing.assert_array_equal(item_graph_matrix(g, "image").toarray(), a.toarray())
    # message passing out[i] = sum_j A[i, j] h[j]
    h = torch.randn(N, 3)
    out = dgl.ops.u_mul_e_sum(g[rel], h, w)
    np.testing.assert_allclose(out.numpy(), a.toarray() @ h.numpy(), rtol=1e-5, atol=1e-6)
    # the same through update_all on the relation subgraph
    sub = g[rel]
    sub.srcdata["h"] = h
    sub.edata["w"] = w
    sub.update_all(fn.u_mul_e("h", "w", "m"), fn.sum("m", "out"))
    np.testing.assert_allclose(sub.dstdata["out"].numpy(), a.toarray() @ h.numpy(), rtol=1e-5, atol=1e-6)


def test_refined_rows_split_between_relations():
    x = np.random.default_rng(0).normal(size=(N, 4)).astype(np.float32)
    a, _ = build_knn_graph(x, 3)
    refined = np.array([False, True, False, True, False])
    g = build_heterograph(U, N, TRAIN, item_graphs={"text": a}, refined_rows={"text": refined})
    _, dst_knn = g.edges(etype=knn_relation("text"))
    _, dst_ref = g.edges(etype=refine_relation("text"))
    assert set(dst_ref.tolist()) == {1, 3}
    assert not set(dst_knn.tolist()) & {1, 3}  # the two relations never share a destination
    assert g.num_edges(knn_relation("text")) + g.num_edges(refine_relation("text")) == a.nnz
    np.testing.assert_allclose(item_graph_matrix(g, "text").toarray(), a.toarray(), rtol=1e-6)
    # summing messages over both relations gives Ã h
    h = torch.randn(N, 2)
    total = sum(
        dgl.ops.u_mul_e_sum(g[rel], h, g.edges[rel].data["w"]) for rel in (knn_relation("text"), refine_relation("text"))
    )
    np.testing.assert_allclose(total.numpy(), a.toarray() @ h.numpy(), rtol=1e-5, atol=1e-6)


def test_item_graph_matrix_of_missing_modality_is_empty():
    g = build_heterograph(U, N, TRAIN)
    m = item_graph_matrix(g, "audio")
    assert m.shape == (N, N) and m.nnz == 0
