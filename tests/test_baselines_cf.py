"""CF baselines of the DGMRec paper: SimGCL, SGL, NGCF and the blocks they are built from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import invoke, make_dataset, tiny_rows, write_mmrec_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrec.blocks.edge_dropout import DegreeSensitivePruning, EdgeDropout, kept_count
from graphrec.blocks.generators import perturb
from graphrec.blocks.lightgcn import LightGCNConv, LightGCNPropagation
from graphrec.blocks.ngcf import NGCFConv
from graphrec.blocks.perturbed import PerturbedPropagation
from graphrec.graph.heterograph import UI, build_heterograph
from graphrec.registry import BLOCKS, MODELS, load_builtin

TINY = ["--set", "synth_users=60", "--set", "synth_items=80", "--set", "epochs=2", "--set", "embedding_size=8"]


def tiny_graph(seed: int = 0, n_users: int = 12, n_items: int = 15):
    ds = make_dataset(tiny_rows(n_users, n_items, per_user=6, seed=seed), n_users=n_users, n_items=n_items)
    return ds, build_heterograph(ds.n_users, ds.n_items, ds.train)


@given(n=st.integers(1, 40), d=st.integers(1, 16), eps=st.floats(1e-3, 2.0), seed=st.integers(0, 1000))
def test_simgcl_noise_has_norm_eps_and_keeps_the_sign(n, d, eps, seed):
    """SimGCL's perturbation: every noise row has L2 norm exactly eps and the sign of the embedding,
    so the perturbed embedding stays in its hyperoctant and its norm moves by at most eps."""
    torch.manual_seed(seed)
    x = torch.randn(n, d)
    x[x == 0] = 1.0
    delta = perturb(x, eps) - x
    np.testing.assert_allclose(delta.norm(dim=1).numpy(), eps, rtol=1e-4)
    assert ((delta >= 0) == (x > 0)).all() and (torch.sign(x + delta) == torch.sign(x)).all()
    assert ((x + delta).norm(dim=1) - x.norm(dim=1)).abs().max() <= eps + 1e-5


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_perturbed_propagation_without_noise_is_lightgcn_without_the_ego_layer(n_layers):
    ds, g = tiny_graph()
    torch.manual_seed(0)
    u, i = torch.randn(ds.n_users, 4), torch.randn(ds.n_items, 4)
    pu, pi = PerturbedPropagation(n_layers)(g, u, i)
    lu, li = LightGCNPropagation(n_layers)(g, u, i)
    torch.testing.assert_close(pu, ((n_layers + 1) * lu - u) / n_layers, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pi, ((n_layers + 1) * li - i) / n_layers, rtol=1e-5, atol=1e-6)
    nu, _ = PerturbedPropagation(n_layers)(g, u, i, eps=0.1)
    assert not torch.allclose(nu, pu)
    eu, ei = PerturbedPropagation(n_layers, ego=True)(g, u, i)  # the DGMRec authors' variant: LightGCN itself
    torch.testing.assert_close(eu, lu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ei, li, rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(keep=st.floats(0.0, 1.0), seed=st.integers(0, 1000), degree=st.booleans())
def test_edge_dropout_keeps_the_stated_fraction_and_renormalises(keep, seed, degree):
    ds, g = tiny_graph(seed % 5)
    torch.manual_seed(seed)
    view = (DegreeSensitivePruning() if degree else EdgeDropout())(g, keep)
    e = g.num_edges(UI)
    assert view.num_edges(UI) == kept_count(e, keep) == (0 if keep == 0 else max(1, int(np.floor(keep * e + 1e-9))))
    kept = torch.stack(view.edges(etype=UI), 1).numpy()
    full = {tuple(p) for p in torch.stack(g.edges(etype=UI), 1).numpy()}
    assert {tuple(p) for p in kept} <= full and len({tuple(p) for p in kept}) == len(kept)  # a subset, no repeats
    if len(kept):
        ref = build_heterograph(ds.n_users, ds.n_items, kept)  # weights from the kept degrees
        torch.testing.assert_close(view.edges[UI].data["w"], ref.edges[UI].data["w"])


def test_degree_sensitive_pruning_keeps_edges_of_rare_nodes_more_often():
    """FREEDOM keeps edge (u, i) with probability ∝ 1/sqrt(d_u d_i): over many draws, an edge of a
    degree-1 user on a degree-1 item survives more often than an edge between two hubs."""
    # users 0..4 all interact with items 0..4 (hubs, degree 5); user 5 - item 5 is a lone pair
    pairs = np.array([(u, i) for u in range(5) for i in range(5)] + [(5, 5)])
    g = build_heterograph(6, 6, pairs)
    torch.manual_seed(0)
    lone = sum(int(((torch.stack(DegreeSensitivePruning()(g, 0.2).edges(etype=UI), 1)) == torch.tensor([5, 5])).all(1).any()) for _ in range(200))
    torch.manual_seed(0)
    uniform = sum(int(((torch.stack(EdgeDropout()(g, 0.2).edges(etype=UI), 1)) == torch.tensor([5, 5])).all(1).any()) for _ in range(200))
    # floor(0.2 * 26) = 5 of 26 edges kept; w = 1 (lone) vs 1/5 (hubs): P(lone kept) = 1 - Π_k (5 - k/5)/(6 - k/5) = 0.63
    # with pruning, 5/26 = 0.19 uniformly: about 125 vs 38 of 200 draws
    assert lone > 100 and uniform < 65, (lone, uniform)


def test_ngcf_layer_matches_its_formula():
    ds, g = tiny_graph(1)
    torch.manual_seed(0)
    conv = NGCFConv(4, dropout=0.0)
    h = {"user": torch.randn(ds.n_users, 4), "item": torch.randn(ds.n_items, 4)}
    out = conv(g, h)
    side = LightGCNConv()(g, h)
    for k in h:
        want = torch.nn.functional.leaky_relu(
            (side[k] + h[k]) @ conv.w1.weight.T + conv.w1.bias + (side[k] * h[k]) @ conv.w2.weight.T + conv.w2.bias, 0.2
        )
        torch.testing.assert_close(out[k], want)


def test_cf_baselines_are_registered_with_their_blocks():
    load_builtin()
    for name in ("simgcl", "sgl", "ngcf"):
        assert MODELS.is_builtin(name)
    for name in ("perturbed_lightgcn", "edge_dropout", "degree_edge_pruning", "ngcf_conv"):
        assert BLOCKS.is_builtin(name)


@pytest.mark.parametrize("model", ["simgcl", "sgl", "ngcf"])
def test_fit_runs_on_synthetic_and_mmrec_folder(model, tmp_path):
    r = invoke("fit", model, "--out", tmp_path / "synth", "--quiet", *TINY)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["test"]["recall@20"] >= 0
    data = write_mmrec_dir(tmp_path / "data")
    r = invoke("fit", model, "--out", tmp_path / "mmrec", "--quiet", "--set", f"data_dir={data}", "--set", "epochs=2")
    assert r.exit_code == 0, r.output


def test_bad_keys_are_one_line_errors(tmp_path):
    from conftest import assert_user_error

    assert_user_error(invoke("fit", "sgl", "--out", tmp_path / "a", "--quiet", *TINY, "--set", "drop_ratio=1.0"), "sgl: 'drop_ratio' must be in [0, 1)")
    assert_user_error(invoke("fit", "simgcl", "--out", tmp_path / "b", "--quiet", *TINY, "--set", "temp=0"), "simgcl: 'temp' must be > 0")


def test_ngcf_scores_with_the_concatenated_layers():
    from conftest import small_config

    from graphrec.data.dataset import load_dataset

    cfg = small_config("ngcf", embedding_size=8, n_layers=2)
    model = MODELS.get("ngcf")(load_dataset(cfg), cfg)
    u, i = model.representations()
    assert u.shape == (model.n_users, 24) and i.shape == (model.n_items, 24)
    torch.testing.assert_close(u[:, 8:16].norm(dim=1), torch.ones(model.n_users))


def test_sgl_draws_two_different_views_every_epoch_and_contrasts_them():
    from conftest import small_config
    from graphrec.data.dataset import load_dataset
    from graphrec.data.sampler import BPRBatch

    cfg = small_config("sgl", embedding_size=8, drop_ratio=0.3)
    model = MODELS.get("sgl")(load_dataset(cfg), cfg)
    e = model.graph.num_edges(UI)
    torch.manual_seed(0)
    model.on_epoch_start(None, 0)
    v1, v2 = model.graph_views
    assert v1.num_edges(UI) == v2.num_edges(UI) == kept_count(e, 0.7)
    assert not torch.equal(torch.stack(v1.edges(etype=UI)), torch.stack(v2.edges(etype=UI)))
    batch = BPRBatch(torch.arange(6), torch.arange(6), torch.arange(6, 12))
    with_cl = model.loss(batch)
    assert with_cl["cl"] > 0 and torch.isclose(with_cl["loss"], with_cl["bpr"] + with_cl["reg"] + with_cl["cl"])
    model.on_epoch_start(None, 1)
    assert not torch.equal(torch.stack(v1.edges(etype=UI)), torch.stack(model.graph_views[0].edges(etype=UI)))
