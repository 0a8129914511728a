"""Sampled mini-batch propagation (propagation: sampled): exact with fan-outs >= the maximum degree,
shapes, unbiasedness of the rescaled estimate (both samplers), the fast sampler's blocks and
determinism, config errors and the CLI."""

from __future__ import annotations

import json

import dgl
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import assert_user_error, invoke, small_config
from graphrec.data.dataset import load_dataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.graph.sampling import (
    NeighbourSampler,
    SampledBlocks,
    check_sampler,
    gather_step,
    layer_step,
    propagate_blocks,
    resolve_fanouts,
)
from graphrec.models import LightGCN
from graphrec.train.seed import set_seed

SMALL = ["--set", "synth_users=150", "--set", "synth_items=200"]


def _model(mode: str, seed: int = 0, **over) -> LightGCN:
    cfg = small_config("lightgcn", propagation=mode, **over)
    ds = load_dataset(cfg)
    set_seed(seed)
    return LightGCN(ds, cfg)


def _batch(model: LightGCN, b: int = 64, seed: int = 1) -> BPRBatch:
    rng = np.random.default_rng(seed)
    tr = model.graph.edges(etype="ui")
    rows = rng.choice(len(tr[0]), b, replace=False)
    neg = rng.integers(0, model.n_items, b)
    return BPRBatch(tr[0][rows].long(), tr[1][rows].long(), torch.from_numpy(neg))


def _max_degree(model: LightGCN) -> int:
    g = model.graph
    return int(max(g.in_degrees(etype="ui").max(), g.in_degrees(etype="iu").max()))


@pytest.mark.parametrize("sampler", ["fast", "dgl"])
@pytest.mark.parametrize("weight", ["lightgcn_conv", "lightgcn_mean_conv"])
def test_full_fanout_equals_full_propagation(weight, sampler):
    full = _model("full", ui_block=weight)
    k = _max_degree(full)
    sampled = _model("sampled", fanouts=[k, k + 5, -1], ui_block=weight, sampler=sampler)
    assert torch.equal(full.user_emb, sampled.user_emb)  # same seed, same weights
    batch = _batch(full)
    lf, ls = full.loss(batch), sampled.loss(batch)
    assert float(ls["loss"]) == pytest.approx(float(lf["loss"]), rel=1e-5, abs=1e-7)
    lf["loss"].backward()
    ls["loss"].backward()
    for a, b in [(full.user_emb.grad, sampled.user_emb.grad), (full.item_emb.grad, sampled.item_emb.grad)]:
        assert float(a.abs().max()) > 0
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
    # and the rows match full propagation's
    u, i = full.representations()
    su, sp, sn = sampled.batch_representations(batch)
    torch.testing.assert_close(su, u[batch.users], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sn, i[batch.neg], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("sampler", ["fast", "dgl"])
def test_small_fanout_shapes_and_differs(sampler):
    model = _model("sampled", fanouts=[2, 2, 2], sampler=sampler)
    batch = _batch(model, b=32)
    u, p, n = model.batch_representations(batch)
    assert u.shape == p.shape == n.shape == (32, model.embedding_size)
    fu, fi = model.representations()
    assert not torch.allclose(u, fu[batch.users])  # really sampled
    loss = model.loss(batch)["loss"]
    loss.backward()
    touched = model.item_emb.grad.abs().sum(1) > 0
    assert 0 < int(touched.sum()) < model.n_items  # only the sampled neighbourhood gets a gradient


@pytest.mark.parametrize("sampler", ["fast", "dgl"])
def test_rescaled_estimate_is_unbiased(sampler):
    # a star: node 0 aggregates from 20 neighbours with weight 1; fan-out 4 keeps 4, rescaled x5
    n = 21
    src = torch.arange(1, n)
    dst = torch.zeros(n - 1, dtype=torch.int64)
    h = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    ns = NeighbourSampler(src, dst, torch.ones(n - 1), n, [4], sampler=sampler)
    est = []
    for s in range(400):
        dgl.seed(s)
        torch.manual_seed(s)
        blocks = ns.sample(torch.tensor([0]), "cpu")
        assert blocks.n_edges == 4
        ego = h[blocks.input_nodes]
        est.append(2 * float(propagate_blocks(blocks, ego)[0, 0]))  # layer mean (h0 + h1) / 2 with h0 = 0
    assert np.mean(est) == pytest.approx(float(h[1:].sum()), abs=4 * np.std(est) / np.sqrt(len(est)))


def _random_graph(seed: int, n: int, e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    return src, dst, torch.rand(e, generator=g) + 0.1


def _full_layers(src, dst, w, n, h, layers):
    """Layer mean of ``layers`` weighted sums over all in-edges (the exact aggregate)."""
    acc, cur = h.clone(), h
    for _ in range(layers):
        cur = torch.zeros_like(h).index_add_(0, dst, cur[src] * w.unsqueeze(1))
        acc = acc + cur
    return acc / (layers + 1)


@given(st.integers(0, 10_000), st.integers(1, 3), st.integers(1, 2))
def test_fast_sampler_is_unbiased_on_random_graphs(seed, fanout, layers):
    # the mean of many sampled layer-mean embeddings (2 layers: the estimate of an estimate) -> the exact one;
    # 800 disjoint copies of one random graph give 800 independent estimates in one call
    n, e, copies = 12, 60, 800  # mean in-degree 5 > most fan-outs here: draws with replacement, weights x D / f
    src, dst, w = _random_graph(seed, n, e)
    h = torch.randn((n, 3), generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    exact = _full_layers(src, dst, w.double(), n, h, layers)
    off = (torch.arange(copies) * n).repeat_interleave(e)
    ns = NeighbourSampler(src.repeat(copies) + off, dst.repeat(copies) + off, w.repeat(copies), n * copies, [fanout] * layers)
    picks = torch.tensor([0, 5, 7])
    seeds = (picks.unsqueeze(0) + n * torch.arange(copies).unsqueeze(1)).reshape(-1)
    torch.manual_seed(seed)
    b = ns.sample(seeds, "cpu")
    b.layers = [(s_, d_, w_.double(), k) for s_, d_, w_, k in b.layers]
    est = propagate_blocks(b, h[b.input_nodes % n]).reshape(copies, len(picks), 3)
    se = est.std(0) / np.sqrt(copies)
    assert bool(((est.mean(0) - exact[picks]).abs() <= 5 * se + 1e-9).all()), (est.mean(0), exact[picks], se)
    if fanout == 1:  # really sampled: the estimates vary
        assert float(se.max()) > 0


def test_fast_sampler_blocks():
    # destination nodes first among the sources, every sampled edge a real in-edge, f draws where D > f, all where D <= f
    src, dst, w = _random_graph(3, 40, 300)
    ns = NeighbourSampler(src, dst, w, 40, [4, 6], sampler="fast")
    edges = set(zip(src.tolist(), dst.tolist()))
    deg = torch.bincount(dst, minlength=40)
    torch.manual_seed(0)
    seeds = torch.tensor([3, 1, 17])
    b = ns.sample(seeds, "cpu")
    assert b.n_seeds == 3 and len(b.input_nodes) == len(set(b.input_nodes.tolist()))
    # rebuild each layer's global ids: layer l's destinations are the first n_dst of its sources
    nodes = [b.input_nodes]
    for _, _, _, n_dst in b.layers:
        nodes.append(nodes[-1][:n_dst])
    assert torch.equal(nodes[-1], seeds)
    for (s_, d_, w_, n_dst), fan, src_nodes in zip(b.layers, [4, 6], nodes[:-1]):
        gs, gd = src_nodes[s_], src_nodes[:n_dst][d_]
        assert all((a, c) in edges for a, c in zip(gs.tolist(), gd.tolist()))
        kept = torch.bincount(d_, minlength=n_dst)
        expect = torch.clamp(deg[src_nodes[:n_dst]], max=fan)
        assert torch.equal(kept, expect)
        assert w_.dtype == torch.float32 and (w_ > 0).all()


def test_fast_sampler_is_deterministic_under_a_seed():
    src, dst, w = _random_graph(5, 500, 5000)
    ns = NeighbourSampler(src, dst, w, 500, [3, 3], sampler="fast")
    seeds = torch.arange(0, 500, 7)

    def draw(seed):
        torch.manual_seed(seed)
        b = ns.sample(seeds, "cpu")
        return [b.input_nodes] + [t for layer in b.layers for t in layer[:3]]

    a, b, c = draw(1), draw(1), draw(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, c))


def test_check_sampler():
    assert check_sampler(None, "m") == "fast" and check_sampler("dgl", "m") == "dgl"
    with pytest.raises(GraphrecError, match="'sampler' must be 'fast' or 'dgl'"):
        check_sampler("cugraph", "m")


@given(st.lists(st.integers(0, 29), min_size=1, max_size=12), st.integers(1, 3), st.sampled_from(["fast", "dgl"]))
def test_seed_rows_follow_the_batch(users, layers, sampler):
    # rows come back in batch order, duplicates included; full fan-out = full propagation
    model = _model("sampled", fanouts=-1, n_layers=layers, sampler=sampler)
    batch = torch.tensor(users)
    items = (batch * 7) % model.n_items
    out_u, out_i = model.ui_sampler.batch(model.user_emb, model.item_emb, batch, items)
    fu, fi = model.representations()
    torch.testing.assert_close(out_u, fu[batch], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_i, fi[items], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "value,fragment",
    [([10, 10], "has 2 entries for 3 layers"), ([10, 0, 10], "positive integers"), ("many", "positive integer or a list"), ([1.5, 2, 2], "positive integer or a list")],
)
def test_bad_fanouts(value, fragment):
    with pytest.raises(GraphrecError, match=fragment):
        resolve_fanouts(value, 3, "lightgcn")


def test_fanout_defaults():
    assert resolve_fanouts(None, 2, "m") == [10, 10]
    assert resolve_fanouts(5, 3, "m") == [5, 5, 5]


def test_cli_sampled_fit(tmp_path):
    r = invoke("fit", "lightgcn", "--epochs", "2", "--out", tmp_path / "r", "--quiet", *SMALL,
               "--set", "propagation=sampled", "--set", "fanouts=[5,5,5]")  # fmt: skip
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and 0.0 < metrics["test"]["metrics"]["recall@20"] <= 1.0
    r = invoke("evaluate", tmp_path / "r", "--json")  # the checkpoint reloads
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "sets,fragment",
    [(["propagation=sampling"], "'propagation' must be 'full' or 'sampled'"),
     (["propagation=sampled", "fanouts=[10,10]"], "has 2 entries for 3 layers"),
     (["propagation=sampled", "fanouts=[10,-3,10]"], "positive integers"),
     (["propagation=sampled", "sampler=cugraph"], "'sampler' must be 'fast' or 'dgl'")],
)  # fmt: skip
def test_cli_bad_propagation(tmp_path, sets, fragment):
    args = [a for s in sets for a in ("--set", s)]
    assert_user_error(invoke("fit", "lightgcn", "--epochs", "1", "--out", tmp_path / "r", "--quiet", *SMALL, *args), fragment)


def test_sparse_embeddings_same_gradient_and_row_local_step():
    k = _max_degree(_model("full"))
    dense = _model("sampled", fanouts=-1)
    sparse = _model("sampled", fanouts=-1, sparse_embeddings=True)
    batch = _batch(dense)
    dense.loss(batch)["loss"].backward()
    sparse.loss(batch)["loss"].backward()
    assert sparse.item_emb.grad.is_sparse and not dense.item_emb.grad.is_sparse
    torch.testing.assert_close(sparse.item_emb.grad.to_dense(), dense.item_emb.grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(sparse.user_emb.grad.to_dense(), dense.user_emb.grad, rtol=1e-5, atol=1e-8)
    opt = sparse.make_optimizer(1e-2, 0.0)
    assert isinstance(opt, torch.optim.SparseAdam) and k > 0
    before = sparse.item_emb.detach().clone()
    opt.step()
    moved = (sparse.item_emb.detach() != before).any(1)
    touched = sparse.item_emb.grad.coalesce().indices()[0].unique()
    assert set(moved.nonzero().squeeze(1).tolist()) <= set(touched.tolist()) and bool(moved.any())


@pytest.mark.parametrize(
    "over,fragment",
    [({"sparse_embeddings": True}, "needs propagation=sampled"),
     ({"sparse_embeddings": True, "propagation": "sampled", "weight_decay": 0.1}, "does not support weight_decay")],
)  # fmt: skip
def test_sparse_embeddings_errors(over, fragment):
    mode = over.pop("propagation", "full")
    with pytest.raises(GraphrecError, match=fragment):
        _model(mode, **over)


def test_cli_sparse_embeddings_fit(tmp_path):
    r = invoke("fit", "lightgcn", "--epochs", "2", "--out", tmp_path / "r", "--quiet", *SMALL,
               "--set", "propagation=sampled", "--set", "sparse_embeddings=true")  # fmt: skip
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["test"]["metrics"]["recall@20"] > 0.0


@given(st.integers(1, 6), st.integers(1, 8), st.integers(0, 30), st.booleans(), st.integers(0, 2**31 - 1))
def test_layer_step_is_base_plus_the_weighted_adjacency_product(n_src, n_dst, n_edges, with_base, seed):
    """``layer_step`` (the one step of propagate_blocks and DGMRec's sampled forward) is ``base + A h``
    with ``A[v, u]`` the summed weights of the block's edges ``u -> v`` (parallel edges add up)."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n_src, (n_edges,), generator=gen)
    dst = torch.randint(0, n_dst, (n_edges,), generator=gen)
    w = torch.rand(n_edges, generator=gen)
    h = torch.randn(n_src, 3, generator=gen, dtype=torch.float64)
    base = torch.randn(n_dst, 3, generator=gen, dtype=torch.float64) if with_base else None
    a = torch.zeros(n_dst, n_src, dtype=torch.float64).index_put_((dst, src), w.double(), accumulate=True)
    want = a @ h + (base if with_base else 0)
    h_before = h.clone()
    got = layer_step(h, (src, dst, w.double(), n_dst), None if base is None else base.clone())
    torch.testing.assert_close(got, want)
    assert torch.equal(h, h_before)  # the input rows are not written (the messages are a gathered copy)


@given(st.integers(1, 7), st.integers(1, 6), st.integers(0, 40), st.booleans(), st.integers(0, 2**31 - 1))
def test_block_step_is_the_gather_steps_sum_and_gradient(n_src, n_dst, n_edges, with_base, seed):
    """:meth:`SampledBlocks.step` (the sparse CSR product, matrices built once per layer) gives the
    gather-multiply-``index_add_`` reference's rows and input gradient at float32 tolerance, parallel edges
    included; it reuses a layer's matrices and rebuilds them when the layer is replaced."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n_src, (n_edges,), generator=gen)
    dst = torch.randint(0, n_dst, (n_edges,), generator=gen)
    w = torch.rand(n_edges, generator=gen) + 0.1
    h = torch.randn(n_src, 5, generator=gen)
    base = torch.randn(n_dst, 5, generator=gen)
    upstream = torch.randn(n_dst, 5, generator=gen)
    blocks = SampledBlocks(torch.arange(n_src), n_dst, [(src, dst, w, n_dst)])

    def run(step):
        x = h.clone().requires_grad_(True)
        out = step(x, base.clone() if with_base else None)
        (out * upstream).sum().backward()
        return out.detach(), x.grad

    got, got_grad = run(lambda x, b: blocks.step(0, x, b))
    want, want_grad = run(lambda x, b: gather_step(x, (src, dst, w, n_dst), b))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-5, atol=1e-6)
    if n_edges:
        cached = blocks._matrices[0][2]
        blocks.step(0, h)
        assert blocks._matrices[0][2] is cached
        blocks.layers[0] = (src, dst, 2 * w, n_dst)  # a new layer: new matrices
        torch.testing.assert_close(blocks.step(0, h), 2 * gather_step(h, (src, dst, w, n_dst)), rtol=1e-5, atol=1e-6)
