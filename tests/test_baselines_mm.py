"""Multimodal baselines of the DGMRec paper: VBPR, FREEDOM, LATTICE, their blocks and feature filling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_user_error, invoke, small_config, tiny_rows, write_mmrec_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrec.blocks.edge_dropout import kept_count
from graphrec.blocks.learned_graph import LearnedKNNGraph, combine
from graphrec.data.dataset import load_dataset
from graphrec.data.imputation import impute
from graphrec.data.sampler import BPRBatch
from graphrec.graph.heterograph import UI, knn_relation
from graphrec.graph.knn import frozen_knn_graph
from graphrec.registry import BLOCKS, MODELS

MM = ["vbpr", "freedom", "lattice", "bm3", "mgcn", "lgmrec", "mmgcn", "grcn", "slmrec", "damrs", "gume"]
#: missing-modality-aware baselines: filled as the DGMRec authors tune them (imputation: mean by default)
AWARE = ["milk", "sibrar"]
EXTRA = {"vbpr": "reg_weight=0.001", "freedom": "knn_k=3", "lattice": "knn_k=3", "bm3": "dropout=0.5", "mgcn": "knn_k=3", "lgmrec": "hyper_num=3", "mmgcn": "n_layers=1", "grcn": "n_routing=1", "slmrec": "n_layers=1", "damrs": "knn_k=3", "gume": "knn_k=3", "milk": "alpha=0.5", "sibrar": "skip_missing=true"}
TINY = ["--set", "synth_users=60", "--set", "synth_items=80", "--set", "epochs=2", "--set", "embedding_size=8"]


def build(name: str, **overrides):
    cfg = small_config(name, embedding_size=8, synth_users=60, synth_items=80, **overrides)
    ds = load_dataset(cfg)
    return MODELS.get(name)(ds, cfg), ds


def dense_cos(x: np.ndarray) -> np.ndarray:
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    return z @ z.T


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 30), k=st.integers(1, 8), binary=st.booleans(), seed=st.integers(0, 1000))
def test_frozen_knn_graph_matches_the_dense_formula(n, k, binary, seed):
    x = np.random.default_rng(seed).normal(size=(n, 5)).astype(np.float32)
    a = frozen_knn_graph(x, k, binary=binary, chunk_size=7).toarray()
    s = dense_cos(x)
    kk = min(k, n)
    top = np.zeros_like(s)
    for i in range(n):
        idx = np.argsort(-s[i], kind="stable")[:kk]
        top[i, idx] = 1.0 if binary else np.maximum(s[i, idx], 0)
    r = top.sum(1)
    inv = np.where(r > 0, 1 / np.sqrt(np.where(r > 0, r, 1)), 0)
    want = top * inv[:, None] * inv[None, :]
    if binary:  # every row keeps exactly k items, so every weight is 1/k
        assert ((a > 0).sum(1) == kk).all()
        np.testing.assert_allclose(a[a > 0], 1.0 / kk, rtol=1e-5)
    np.testing.assert_allclose(np.sort(a, 1), np.sort(want, 1), rtol=1e-4, atol=1e-6)  # ties may pick other columns


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 40), k=st.integers(1, 12), chunk=st.integers(1, 16), seed=st.integers(0, 1000))
def test_lattice_learned_graph_has_k_neighbours_per_item(n, k, chunk, seed):
    """LATTICE's learned graph: every item aggregates from exactly min(k, N) distinct items, the kept
    similarities are the k largest cosines of the projected features, and they carry a gradient."""
    torch.manual_seed(seed)
    block = LearnedKNNGraph(6, 4, k=k, chunk_size=chunk)
    x = torch.randn(n, 6)
    lg = block(x)
    g = lg.graph
    kk = min(k, n)
    assert g.device == torch.device("cpu") and lg.weight.shape == (n * kk,)  # the graph stays on the CPU
    assert (g.in_degrees() == kk).all() and g.num_edges() == n * kk
    src, dst = g.edges()
    assert len(set(zip(src.tolist(), dst.tolist()))) == n * kk  # no repeated neighbour
    z = torch.nn.functional.normalize(block.projection(x), dim=1).detach()
    s = (z @ z.T).clamp_min(0)
    kept = torch.zeros(n, n)
    kept[dst, src] = lg.weight.detach()
    torch.testing.assert_close(kept[dst, src], s[dst, src])
    torch.testing.assert_close(kept.sum(1), s.topk(kk, dim=1).values.sum(1), rtol=1e-5, atol=1e-5)  # the k largest
    lg.weight.sum().backward()
    assert block.projection.weight.grad is not None and block.projection.weight.grad.abs().sum() > 0


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 25), k=st.integers(1, 6), seed=st.integers(0, 1000))
def test_lattice_combined_graph_is_the_normalised_weighted_sum(n, k, seed):
    """Ŝ = D^-1/2 (Σ_m a_m S_m) D^-1/2 (LATTICE eq. 4-5), propagated as a sparse product."""
    torch.manual_seed(seed)
    blocks = [LearnedKNNGraph(5, 3, k=k), LearnedKNNGraph(4, 3, k=k)]
    graphs = [blocks[0](torch.randn(n, 5)), blocks[1](torch.randn(n, 4))]
    a = torch.softmax(torch.randn(2), 0)
    dense = torch.zeros(n, n)
    for w, g in zip(a, graphs):
        src, dst = g.graph.edges()
        dense.index_put_((dst, src), w * g.weight.detach(), accumulate=True)
    r = dense.sum(1)
    inv = torch.where(r > 0, r.clamp_min(1e-12).rsqrt(), torch.zeros_like(r))
    want = dense * inv[:, None] * inv[None, :]
    h = torch.randn(n, 3)
    torch.testing.assert_close(combine(graphs, a).propagate(h), want @ h, rtol=1e-4, atol=1e-5)


def test_lattice_rebuilds_its_graph_once_per_epoch_with_a_gradient():
    model, _ = build("lattice", knn_k=4)
    batch = BPRBatch(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8]))
    model.on_epoch_start(None, 0)
    model.loss(batch)["loss"].backward()
    proj = model.learned[model.modalities[0]].projection.weight
    assert proj.grad is not None and proj.grad.abs().sum() > 0  # first batch: the learned graph is differentiable
    model.zero_grad()
    model.loss(batch)["loss"].backward()
    assert proj.grad is None or proj.grad.abs().sum() == 0  # later batches reuse it detached
    assert model._cached is not None and model._cached.graph.num_edges() == 4 * model.n_items * len(model.modalities)
    assert not model._cached.weight.requires_grad


def test_freedom_modality_weights_and_trained_features():
    model, _ = build("freedom", mm_weights={"image": 0.1, "text": 0.9}, edge_drop=0.0)
    assert model.mm_weights == pytest.approx({"image": 0.1, "text": 0.9})
    h = model.item_graph_embeddings()
    want = 0.1 * model.item_conv(model.graph, model.item_emb, "image") + 0.9 * model.item_conv(model.graph, model.item_emb, "text")
    torch.testing.assert_close(h, want)
    assert isinstance(model.feature("image"), torch.nn.Parameter)  # the authors fine-tune the feature tables
    model.on_epoch_start(None, 0)
    assert model.train_graph.num_edges(UI) == model.graph.num_edges(UI)  # edge_drop 0: the full graph
    vbpr, _ = build("vbpr")
    assert not isinstance(vbpr.feature("image"), torch.nn.Parameter)


def test_freedom_pruned_graph_keeps_the_stated_fraction_of_edges():
    model, ds = build("freedom", edge_drop=0.8)
    e = model.graph.num_edges(UI)
    torch.manual_seed(0)
    model.on_epoch_start(None, 0)
    first = torch.stack(model.train_graph.edges(etype=UI), 1)
    assert model.train_graph.num_edges(UI) == kept_count(e, 0.2) == e * 2 // 10
    model.on_epoch_start(None, 1)
    assert model.train_graph.num_edges(UI) == kept_count(e, 0.2)
    assert not torch.equal(first, torch.stack(model.train_graph.edges(etype=UI), 1))  # redrawn every epoch
    # the frozen item graphs: knn_k binary neighbours per item, never retrained, used at evaluation with the full graph
    for m in model.modalities:
        assert (model.graph.in_degrees(etype=knn_relation(m)) == 10).all()
    assert sum(p.numel() for p in model.parameters()) == (ds.n_users + ds.n_items) * 8 + sum(
        (ds.features[m].shape[1] + 1) * 8 + ds.features[m].size for m in model.modalities
    )  # ID embeddings, projections P_m, the feature tables; the item graph has no parameter


def test_vbpr_scores_are_its_formula():
    model, ds = build("vbpr")
    with torch.no_grad():
        model.item_bias.normal_()
        user, item = model.representations()
        f = torch.cat([torch.from_numpy(ds.features[m]) for m in model.modalities], 1)
        want = (
            model.item_bias.T
            + model.gamma_user @ model.gamma_item.T
            + model.theta_user @ (f @ model.projection.weight.T).T
            + (f @ model.visual_bias.weight.T).T
        )
        torch.testing.assert_close(user @ item.T, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MM)
def test_multimodal_baselines_fill_missing_features_by_nn_injection_by_default(name):
    model, ds = build(name)
    assert model.config["imputation"] == "neigh_mean"
    feats = impute(ds.raw_features, ds.missing, "neigh_mean", train=ds.train)
    for m in model.modalities:
        assert ds.missing.missing[m].any()
        np.testing.assert_allclose(model.feature(m).detach().numpy(), feats[m], rtol=1e-6)
    model_mean, ds_mean = build(name, imputation="mean")
    m = model.modalities[0]
    assert not np.allclose(model_mean.feature(m).detach().numpy(), model.feature(m).detach().numpy())


@pytest.mark.parametrize("name", MM + AWARE)
def test_fit_runs_on_synthetic_and_mmrec_folder_and_records_the_filling(name, tmp_path):
    r = invoke("fit", name, "--out", tmp_path / "synth", "--quiet", *TINY)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["test"]["recall@20"] >= 0
    default = "mean" if name in AWARE else "neigh_mean"
    assert yaml.safe_load((tmp_path / "synth" / "config.yaml").read_text())["imputation"] == default
    data = write_mmrec_dir(tmp_path / "data", tiny_rows(), masks={"0.3": {"v": np.array([1, 2]), "t": np.array([3])}})
    r = invoke("fit", name, "--out", tmp_path / "mmrec", "--quiet", "--set", f"data_dir={data}", "--set", "epochs=2",
               "--set", "imputation=zeros", "--set", EXTRA[name])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert yaml.safe_load((tmp_path / "mmrec" / "config.yaml").read_text())["imputation"] == "zeros"


@pytest.mark.parametrize("name", MM + AWARE)
def test_multimodal_baselines_need_features(name, tmp_path):
    data = write_mmrec_dir(tmp_path / "data", features={})
    assert_user_error(invoke("fit", name, "--out", tmp_path / "o", "--quiet", "--set", f"data_dir={data}"), f"{name} needs at least one modality")


def test_multimodal_blocks_registered():
    for name in MM + AWARE:
        assert MODELS.is_builtin(name)
    assert BLOCKS.is_builtin("learned_knn_graph")


def test_the_attention_plugin_block_plugs_into_freedom_and_lattice(monkeypatch):
    """docs/extending.md section 8: the item_conv slot takes the tutorial's plugin block unchanged."""
    import importlib
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    importlib.import_module("examples.attention_block")
    for name in ("freedom", "lattice"):
        model, _ = build(name, item_graph_block="attention_item_conv", knn_k=3)
        assert type(model.item_conv).__name__ == "AttentionItemConv"
        before = model.item_graph_embeddings() if name == "freedom" else model.item_graph_embeddings(None)
        model.item_conv.att_src[model.modalities[0]].data.fill_(0.5)
        after = model.item_graph_embeddings() if name == "freedom" else model.item_graph_embeddings(None)
        assert not torch.allclose(before, after)  # the block is used
    assert "examples.attention_block" in sys.modules


def test_bm3_needs_no_negatives_and_stops_gradients_at_its_targets():
    model, _ = build("bm3", dropout=0.0)
    users, pos = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
    torch.manual_seed(0)
    a = model.loss(BPRBatch(users, pos, torch.tensor([8, 9, 10, 11])))
    torch.manual_seed(0)
    b = model.loss(BPRBatch(users, pos, torch.tensor([20, 30, 40, 50])))
    torch.testing.assert_close(a["loss"], b["loss"])  # the sampled negatives play no part
    x = torch.randn(5, 8, requires_grad=True)
    t = model.bootstrap.target(x)
    assert not t.requires_grad  # stop-gradient target
    online = model.bootstrap(x)
    model.bootstrap.distance(online, x).backward()  # a target that needs grad is detached inside
    assert x.grad is not None  # through the online branch only
    u, i = model.representations()
    eu, ei = model.encode()
    torch.testing.assert_close(u @ i.T, model.bootstrap(eu) @ model.bootstrap(ei).T)
    assert BLOCKS.is_builtin("bootstrap_alignment")


def test_mgcn_purifier_and_fuser():
    """MGCN: the purifier only shrinks the item ID embedding (|x̃_m| ≤ |e_i| element-wise, the
    features choose how much); the fuser's common part is a convex combination of the modality views,
    so identical views leave no specific part and S = view / (M + 1) whatever the preference gates."""
    from graphrec.blocks.mgcn import BehaviorFuser, BehaviorPurifier

    torch.manual_seed(0)
    pur = BehaviorPurifier({"image": 7, "text": 5}, 4)
    e = torch.randn(10, 4)
    out = pur(e, {"image": torch.randn(10, 7), "text": torch.randn(10, 5)})
    for x in out.values():
        assert (x.abs() <= e.abs() + 1e-7).all() and (torch.sign(x) == torch.sign(e)).all()
    fuser = BehaviorFuser(["a", "b", "c"], 4)
    v = torch.randn(6, 4)
    torch.testing.assert_close(fuser({"a": v, "b": v, "c": v}, torch.randn(6, 4)), v / 4)
    views = {m: torch.randn(6, 4) for m in "abc"}
    with torch.no_grad():
        for gate in fuser.preferences.values():
            gate[0].weight.zero_()
            gate[0].bias.fill_(50.0)  # σ = 1: S = (Σ_m E_m − (M − 1) C) / (M + 1)
        s = fuser(views, torch.randn(6, 4))
        stacked = torch.stack([views[m] for m in "abc"], 1)
        alpha = torch.softmax(fuser.query(stacked).squeeze(-1), 1)
        common = (alpha.unsqueeze(-1) * stacked).sum(1)
    torch.testing.assert_close(s, (sum(views.values()) - 2 * common) / 4)


def test_user_aggregation_with_the_symmetric_weight_is_mgcns_R():
    from graphrec.blocks.user_aggregation import UserAggregation

    model, ds = build("mgcn", knn_k=3)
    h = torch.randn(ds.n_items, 3)
    r = np.zeros((ds.n_users, ds.n_items))
    r[ds.train[:, 0], ds.train[:, 1]] = 1
    du, di = r.sum(1), r.sum(0)
    want = (r / np.sqrt(np.outer(du + 1e-7, di + 1e-7))) @ h.numpy()
    np.testing.assert_allclose(UserAggregation("w")(model.graph, h).numpy(), want, rtol=1e-4, atol=1e-6)
    ids, side = model.views()
    u, i = model.representations()
    torch.testing.assert_close(torch.cat([u, i]), ids + side)
