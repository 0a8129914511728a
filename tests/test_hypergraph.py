"""Prototype hypergraph convolution of CI2MG (spec 5.2 steps 4-5, invariant 8.8)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from graphrec.blocks.hypergraph import (
    HypergraphPrototypeConv,
    dense_hypergraph_matrix,
    hypergraph_conv,
    prototype_membership,
)
from graphrec.registry import BLOCKS, load_builtin


def _cluster_means(q: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    out = torch.zeros_like(q)
    for c in range(k):
        sel = labels == c
        if sel.any():
            out[sel] = q[sel].mean(0)
    return out


def test_one_hot_membership_averages_within_clusters():
    torch.manual_seed(0)
    n, k, d = 12, 4, 5
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 0, 1, 2, 2, 0, 1])  # cluster 3 is empty
    h = torch.nn.functional.one_hot(labels, k).float()
    q = torch.randn(n, d)
    out = hypergraph_conv(h, torch.eye(k), q)
    torch.testing.assert_close(out, _cluster_means(q, labels, k))


def test_block_with_axis_prototypes_averages_clusters():
    # prototypes along the axes and items along the axes: cosine membership is one-hot
    k = 4
    block = HypergraphPrototypeConv(dim=k, n_prototypes=k, n_layers=2, activation=None)
    with torch.no_grad():
        block.prototypes.copy_(torch.eye(k) * 3.0)
        block.theta.copy_(torch.eye(k))
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 0, 3])
    x = torch.nn.functional.one_hot(labels, k).float() * torch.rand(8, 1).add(0.5)
    torch.testing.assert_close(block.membership(x), torch.nn.functional.one_hot(labels, k).float())
    # two layers of a projection onto cluster means = one layer
    torch.testing.assert_close(block(x), _cluster_means(x, labels, k))


@given(
    n=st.integers(1, 9),
    k=st.integers(1, 6),
    d=st.integers(1, 5),
    zero_rows=st.integers(0, 3),
    seed=st.integers(0, 10_000),
)
def test_associative_product_equals_dense_formula(n, k, d, zero_rows, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    x[: min(zero_rows, n)] = 0.0  # items with zero features: zero membership rows
    protos = torch.randn(k, d, generator=gen, dtype=torch.float64)
    theta = torch.randn(k, k, generator=gen, dtype=torch.float64)
    q = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    h = prototype_membership(x, protos)
    dense = dense_hypergraph_matrix(h, theta) @ q
    fast = hypergraph_conv(h, theta, q)
    scale = dense.abs().max().clamp_min(1.0)
    torch.testing.assert_close(fast / scale, dense / scale, rtol=1e-9, atol=1e-9)


def test_dense_formula_by_hand():
    h = torch.tensor([[1.0, 0.5], [0.0, 0.0], [-0.5, 1.0]])
    theta = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    dv = torch.diag(torch.tensor([1 / 1.5, 1.0, 1 / 0.5]))  # row sums 1.5, 0 -> 1, 0.5
    de = torch.diag(torch.tensor([1 / 0.5, 1 / 1.5]))  # column sums 0.5, 1.5
    expected = dv @ h @ theta @ de @ h.T
    torch.testing.assert_close(dense_hypergraph_matrix(h, theta), expected)
    q = torch.arange(6.0).reshape(3, 2)
    torch.testing.assert_close(hypergraph_conv(h, theta, q), expected @ q)


def test_zero_feature_items_get_half_and_shapes():
    load_builtin()
    assert BLOCKS.get("hypergraph_prototype_conv") is HypergraphPrototypeConv
    assert HypergraphPrototypeConv.relations == ()
    torch.manual_seed(1)
    block = HypergraphPrototypeConv(dim=8, n_prototypes=5, n_layers=2)
    x = torch.randn(20, 8)
    x[3] = 0.0
    out = block(x)
    assert out.shape == (20, 8)
    torch.testing.assert_close(out[3], torch.full((8,), 0.5))
    assert ((out >= 0) & (out <= 1)).all()  # sigmoid; tiny signed row sums may saturate it
    assert block.membership(x).shape == (20, 5)
    assert block.membership(x).abs().max() <= 1.0 + 1e-6


def test_gradients_reach_prototypes_and_theta():
    torch.manual_seed(2)
    block = HypergraphPrototypeConv(dim=6, n_prototypes=4, n_layers=2)
    x = torch.randn(15, 6, requires_grad=True)
    block(x).pow(2).sum().backward()
    for p in (block.prototypes, block.theta, x):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_memory_is_linear_in_items():
    # a larger N runs without an N x N buffer (would be 3.2 GB at float32 for N = 30k)
    block = HypergraphPrototypeConv(dim=8, n_prototypes=16, n_layers=2)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(30_000, 8)).astype(np.float32))
    with torch.no_grad():
        assert block(x).shape == (30_000, 8)
