"""The CSR fast path of graphrec.graph.spmm equals DGL's gspmm, in values and gradients."""

import dgl
import dgl.ops
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import UI as REL
from conftest import random_ui_graph as _graph
from graphrec.graph.spmm import u_mul_e_sum



@settings(max_examples=25)
@given(n_src=st.integers(1, 30), n_dst=st.integers(1, 30), n_edges=st.integers(1, 120), seed=st.integers(0, 10_000))
def test_matches_dgl_values_and_gradients(n_src, n_dst, n_edges, seed):
    g = _graph(n_src, n_dst, n_edges, seed)  # duplicate edges included: both must sum them
    w = g.edges[REL].data["w"]
    h1 = torch.randn(n_src, 5, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    h2 = h1.detach().clone().requires_grad_(True)
    ref = dgl.ops.u_mul_e_sum(g[REL], h1, w)
    out = u_mul_e_sum(g, REL, h2, w)
    assert torch.allclose(ref, out, atol=1e-5)
    upstream = torch.randn_like(ref)
    (ref * upstream).sum().backward()
    (out * upstream).sum().backward()
    assert torch.allclose(h1.grad, h2.grad, atol=1e-5)


def test_in_place_weight_change_invalidates_cache():
    g = _graph(6, 5, 20, 0)
    h = torch.randn(6, 3)
    first = u_mul_e_sum(g, REL, h, g.edges[REL].data["w"])
    g.edges[REL].data["w"].mul_(2.0)
    second = u_mul_e_sum(g, REL, h, g.edges[REL].data["w"])
    assert torch.allclose(second, 2.0 * first, atol=1e-5)


def test_weights_with_gradient_fall_back_to_dgl():
    g = _graph(6, 5, 20, 1)
    w = g.edges[REL].data["w"].clone().requires_grad_(True)
    out = u_mul_e_sum(g, REL, torch.randn(6, 3), w)
    out.sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_nodes_without_in_edges_get_zero():
    g = dgl.heterograph({REL: (torch.tensor([0]), torch.tensor([2]))}, num_nodes_dict={"user": 2, "item": 4})
    g.edges[REL].data["w"] = torch.tensor([3.0])
    out = u_mul_e_sum(g, REL, torch.ones(2, 2), g.edges[REL].data["w"])
    np.testing.assert_allclose(out.numpy(), [[0, 0], [0, 0], [3, 3], [0, 0]])


@pytest.mark.parametrize("n_edges", [0])
def test_empty_relation(n_edges):
    g = dgl.heterograph({REL: (torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))},
                        num_nodes_dict={"user": 3, "item": 2})
    g.edges[REL].data["w"] = torch.zeros(0)
    assert u_mul_e_sum(g, REL, torch.ones(3, 4), g.edges[REL].data["w"]).shape == (2, 4)


def test_two_weights_on_one_relation_stay_cached(monkeypatch):
    """A model that alternates two weights on one relation (DGMRec: ``w`` and ``w_mean``) builds
    each CSR pair once, and each product uses its own weights."""
    import graphrec.graph.spmm as spmm

    g = _graph(7, 6, 25, 3)
    g.edges[REL].data["w2"] = torch.rand(25, generator=torch.Generator().manual_seed(9))
    h = torch.randn(7, 3)
    builds = []
    real = torch.Tensor.coalesce
    monkeypatch.setattr(torch.Tensor, "coalesce", lambda self: builds.append(1) or real(self))
    for _ in range(3):
        for name in ("w", "w2"):
            w = g.edges[REL].data[name]
            torch.testing.assert_close(u_mul_e_sum(g, REL, h, w), dgl.ops.u_mul_e_sum(g[REL], h, w), atol=1e-5, rtol=1e-5)
    assert len(builds) == 2 * 2  # A and Aᵀ per weight, once
    assert len(spmm._CACHE[g]) == 2


def test_cache_keeps_at_most_the_cap_per_relation():
    import graphrec.graph.spmm as spmm

    g = _graph(5, 4, 12, 4)
    h = torch.randn(5, 2)
    weights = [torch.rand(12, generator=torch.Generator().manual_seed(i)) for i in range(spmm.MAX_WEIGHTS_PER_RELATION + 2)]
    for w in weights:
        torch.testing.assert_close(u_mul_e_sum(g, REL, h, w), dgl.ops.u_mul_e_sum(g[REL], h, w), atol=1e-5, rtol=1e-5)
    kept = list(spmm._CACHE[g])
    assert len(kept) == spmm.MAX_WEIGHTS_PER_RELATION
    assert [k[1] for k in kept] == [w.data_ptr() for w in weights[-spmm.MAX_WEIGHTS_PER_RELATION:]]  # the newest


def _distinct_pairs_graph(gen: torch.Generator, n_src: int, n_dst: int, n_edges: int, n_parallel: int):
    """``(graph, src, dst)``: ``n_edges`` distinct random ``user -ui-> item`` pairs, then the first
    ``n_parallel`` of them again (parallel edges, which the CSR paths leave to the plain sum)."""
    pairs = torch.randperm(n_src * n_dst, generator=gen)[:n_edges]
    src, dst = pairs // n_dst, pairs % n_dst
    src, dst = torch.cat([src, src[:n_parallel]]), torch.cat([dst, dst[:n_parallel]])
    return dgl.heterograph({REL: (src, dst)}, num_nodes_dict={"user": n_src, "item": n_dst}), src, dst


@pytest.mark.parametrize("parallel", [False, True])
def test_torch_u_mul_e_sum_with_learned_weights_equals_gather_and_index_add(parallel):
    """The CSR path for per-edge weights that need a gradient (GRCN's attention) against the plain
    gather / index_add sum: same output and the same gradients of ``h`` and ``w``; a relation with
    parallel edges keeps the plain sum."""
    from graphrec.graph.spmm import _edge_structure, torch_u_mul_e_sum

    gen = torch.Generator().manual_seed(5)
    g, src, dst = _distinct_pairs_graph(gen, 30, 20, 150, 10 if parallel else 0)
    h = torch.randn(30, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.rand(len(src), generator=gen, dtype=torch.float64, requires_grad=True)
    got = torch_u_mul_e_sum(g, "ui", h, w)
    assert (_edge_structure(g, "ui", h.device) is None) == parallel  # which path ran
    want = torch.zeros(20, 7, dtype=torch.float64).index_add(0, dst, h[src] * w[:, None])
    torch.testing.assert_close(got, want)
    up = torch.randn(20, 7, generator=gen, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((got * up).sum(), (h, w)), torch.autograd.grad((want * up).sum(), (h, w))):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda h_, w_: torch_u_mul_e_sum(g, "ui", h_, w_), (h, w))


@pytest.mark.parametrize("parallel", [False, True])
def test_edge_dot_equals_the_gathered_dot_products(parallel):
    """GRCN's affinities ``<h_s[src_e], h_t[dst_e]>`` from the sampled product, against the gather."""
    from graphrec.graph.spmm import edge_dot

    gen = torch.Generator().manual_seed(6)
    g, src, dst = _distinct_pairs_graph(gen, 25, 15, 90, 5 if parallel else 0)
    hs = torch.randn(25, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    ht = torch.randn(15, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    got, want = edge_dot(g, "ui", hs, ht), (hs[src] * ht[dst]).sum(1)
    torch.testing.assert_close(got, want)
    up = torch.randn(len(src), generator=gen, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((got * up).sum(), (hs, ht)), torch.autograd.grad((want * up).sum(), (hs, ht))):
        torch.testing.assert_close(a, b)
