"""DGMRec with propagation: sampled: exact rows with full fan-outs (before and after refinement),
gradients, the batch-restricted whole-table terms, exact resumption, config errors and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_user_error, invoke, small_config

from graphrec.data.dataset import load_dataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.models.build import build_model
from graphrec.registry import import_plugin
from graphrec.train.seed import set_seed

SMALL = ["--set", "synth_users=60", "--set", "synth_items=80", "--set", "embedding_size=16"]


def _model(mode: str, seed: int = 0, **over):
    cfg = small_config("dgmrec", propagation=mode, synth_users=60, synth_items=80, embedding_size=16, **over)
    ds = load_dataset(cfg)
    set_seed(seed)
    return build_model(ds, cfg)


def _batch(model, b: int = 48, seed: int = 1) -> BPRBatch:
    rng = np.random.default_rng(seed)
    tr = model.graph.edges(etype="ui")
    rows = rng.choice(len(tr[0]), b, replace=False)
    return BPRBatch(tr[0][rows].long(), tr[1][rows].long(), torch.from_numpy(rng.integers(0, model.n_items, b)))


def _max_degree(model) -> int:
    g = model.graph
    return int(max(g.in_degrees(etype="ui").max(), g.in_degrees(etype="iu").max()))


def _pair(**over):
    full = _model("full", **over)
    k = _max_degree(full)
    sampled = _model("sampled", fanouts=[k, -1, k + 3], aggregation_fanout=k, **over)
    assert torch.equal(full.item_emb, sampled.item_emb) and torch.equal(full.raw["image"], sampled.raw["image"])
    return full, sampled


@pytest.mark.parametrize("refined", [False, True])
def test_full_fanouts_give_full_propagation_rows(refined):
    full, sampled = _pair()
    assert full.has_missing()
    if refined:  # refine_<m> edges (rows of items missing a modality) and the item samplers' rebuild
        for m in (full, sampled):
            m.refine(inference=False)
        assert any(r.any() for r in sampled.refined.values())
    batch = _batch(full)
    uu, pp = batch.users.unique(), batch.pos.unique()
    items = torch.cat([batch.pos, batch.neg]).unique()
    s = sampled.batch_sampler.forward(uu, pp, batch.neg, items)
    f = full.propagate(full.graph, fuse=False)
    close = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s["ue_U"], f["ue"][uu], **close)
    torch.testing.assert_close(s["ie_P"], f["ie"][pp], **close)
    torch.testing.assert_close(s["ie_N"], f["ie"][batch.neg], **close)
    assert set(items.tolist()) <= set(s["T"].tolist()) and set(s["T"].tolist()) <= set(s["X"].tolist())
    for m in full.modalities:
        torch.testing.assert_close(s["GU"][m], f["GU"][m][uu], **close)
        torch.testing.assert_close(s["SU"][m], f["SU"][m][uu], **close)
        torch.testing.assert_close(s["G"][m], f["G"][m][s["T"]], **close)
        torch.testing.assert_close(s["S"][m], f["S"][m][s["T"]], **close)
        torch.testing.assert_close(s["rho"][m], f["rho"][m][s["X"]], **close)
        torch.testing.assert_close(s["g"][m], f["g"][m][s["X"]], **close)
        assert float(f["G"][m][s["T"]].abs().max()) > 0


def test_full_fanouts_same_loss_and_gradients_without_the_restricted_terms():
    # CLUB and reconstruction are the terms sampled mode restricts to the batch; without them (and noise)
    # the loss and every gradient equal full propagation's
    full, sampled = _pair(sampler=0.0, recon=0.0, noise=0.0)
    batch = _batch(full)
    lf, ls = full.loss(batch), sampled.loss(batch)
    assert set(lf) == set(ls) and "gen" in lf and "inter" in lf
    for key in lf:
        assert float(ls[key]) == pytest.approx(float(lf[key]), rel=1e-5, abs=1e-7), key
    lf["loss"].backward()
    ls["loss"].backward()
    pf, ps = dict(full.named_parameters()), dict(sampled.named_parameters())
    for name, p in pf.items():
        if p.grad is None:
            assert ps[name].grad is None or float(ps[name].grad.abs().max()) == 0, name
            continue
        torch.testing.assert_close(ps[name].grad, p.grad, rtol=1e-4, atol=1e-7, msg=name)
    assert float(pf["user_emb"].grad.abs().max()) > 0 and float(pf["preference.maps.image.weight"].grad.abs().max()) > 0


def test_restricted_terms_cover_the_batch_neighbourhood_only():
    # reconstruction (and CLUB) in sampled mode: the items T of the batch and its users' sampled items
    sampled = _model("sampled", noise=0.0, fanouts=2, aggregation_fanout=2)
    batch = _batch(sampled, b=6)
    items = torch.cat([batch.pos, batch.neg]).unique()
    torch.manual_seed(7)
    s = sampled.batch_sampler.forward(batch.users.unique(), batch.pos.unique(), batch.neg, items)
    T = s["T"]
    assert set(items.tolist()) <= set(T.tolist()) and len(T) < sampled.n_items
    want = 0.1 * sum(F.mse_loss(sampled.decoders[m](s["G"][m], s["S"][m], 0.0), sampled.raw[m][T]) for m in sampled.modalities)
    torch.manual_seed(7)
    got = sampled.loss(batch)["recon"]
    assert float(got) == pytest.approx(float(want), rel=1e-6)


def test_small_fanouts_sample_and_gradients_flow():
    model = _model("sampled", fanouts=2, aggregation_fanout=2, sampled_control_variate=False)
    batch = _batch(model, b=16)
    losses = model.loss(batch)
    assert set(losses) >= {"bpr", "reg", "club", "recon", "align_ui", "align_bm", "inter"}
    losses["loss"].backward()
    for name in ("user_emb", "item_emb", "general_encoder.shared.weight", "specific_encoder.encoders.image.weight",
                 "preference.maps.text.weight"):  # fmt: skip
        p = dict(model.named_parameters()).get(name)
        if p is not None:
            assert p.grad is not None and float(p.grad.abs().max()) > 0, name
    assert len(s_rows := model.batch_sampler.forward(batch.users.unique(), batch.pos.unique(), batch.neg,
                                                     torch.cat([batch.pos, batch.neg]).unique())["T"]) < model.n_items, s_rows
    touched = model.item_emb.grad.abs().sum(1) > 0
    assert 0 < int(touched.sum()) < model.n_items
    assert model.raw["image"].grad is not None and float(model.raw["image"].grad.abs().sum()) > 0
    full_rows = model.propagate(model.graph, fuse=False)["ue"][batch.users.unique()]
    s = model.batch_sampler.forward(batch.users.unique(), batch.pos.unique(), batch.neg, torch.cat([batch.pos, batch.neg]).unique())
    assert not torch.allclose(s["ue_U"], full_rows)  # really sampled


@pytest.mark.parametrize("control_variate", [True, False])
def test_sparse_block_products_give_the_gather_steps_loss_and_gradients(control_variate, monkeypatch):
    """Issue 15 (speed): the blocks propagate by sparse CSR products, the gate's modalities, each item
    block's G and S and the user means' tables in one product per block. Loss and every gradient equal
    those of the gather-multiply-``index_add_`` step one table at a time (the former computation), at
    float32 tolerance, on small fan-outs that really sample; the reconstruction targets are the raw rows
    the forward looked up."""
    from graphrec.graph.sampling import SampledBlocks, gather_step

    def run(reference: bool):
        model = _model("sampled", fanouts=[3, 2, 3], aggregation_fanout=2, sampled_control_variate=control_variate)
        batch = _batch(model)
        with monkeypatch.context() as mp:
            if reference:
                mp.setattr(SampledBlocks, "step", lambda self, i, h, base=None: gather_step(h, self.layers[i], base))
            torch.manual_seed(7)
            losses = model.loss(batch)
            losses["loss"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return model, batch, {k: v.detach() for k, v in losses.items()}, grads

    model, batch, got, got_grads = run(False)
    _, _, want, want_grads = run(True)
    assert got.keys() == want.keys() and got_grads.keys() == want_grads.keys()
    assert {"user_emb", "item_emb", "raw.image", "preference.maps.image.weight"} <= set(got_grads)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-7, msg=k)
    for n in want_grads:
        torch.testing.assert_close(got_grads[n], want_grads[n], rtol=1e-4, atol=1e-7, msg=n)
    s = model.batch_sampler.forward(batch.users.unique(), batch.pos.unique(), batch.neg, torch.cat([batch.pos, batch.neg]).unique())
    for m in model.modalities:
        assert torch.equal(s["feats"][m], model.raw[m][s["X"]])
    assert _max_degree(model) > 3  # the fan-outs really sample


def test_sampled_batches_follow_the_torch_seed():
    model = _model("sampled", fanouts=2, aggregation_fanout=2)
    batch = _batch(model, b=16)
    torch.manual_seed(5)
    a = float(model.loss(batch)["bpr"])
    torch.manual_seed(5)
    assert float(model.loss(batch)["bpr"]) == a


def _batch_rows(model, batch):
    """The batch's rows that do not depend on the draw: ue_U, ie_P, ie_N, GU, SU and rho of the batch items."""
    uu, pp = batch.users.unique(), batch.pos.unique()
    items = torch.cat([batch.pos, batch.neg]).unique()
    s = model.batch_sampler.forward(uu, pp, batch.neg, items)
    at = torch.searchsorted(s["X"], items)
    out = {"ue_U": s["ue_U"], "ie_P": s["ie_P"], "ie_N": s["ie_N"]}
    for m in model.modalities:
        out |= {f"GU_{m}": s["GU"][m], f"SU_{m}": s["SU"][m], f"rho_{m}": s["rho"][m][at]}
    f = model.propagate(model.graph, fuse=False)
    want = {"ue_U": f["ue"][uu], "ie_P": f["ie"][pp], "ie_N": f["ie"][batch.neg]}
    for m in model.modalities:
        want |= {f"GU_{m}": f["GU"][m][uu], f"SU_{m}": f["SU"][m][uu], f"rho_{m}": f["rho"][m][items]}
    return {k: v.detach() for k, v in out.items()}, {k: v.detach() for k, v in want.items()}


def _perturb(model, scale: float, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * (float(p.abs().mean()) + 1e-3))


def test_control_variate_rows_are_exact_at_the_history_for_any_fanout():
    # fan-out 1 everywhere: with the history refreshed at the current parameters every sampled
    # aggregation equals full propagation's (zero variance); without control variates it does not
    batch = _batch(_model("full"))
    on = _model("sampled", fanouts=1, aggregation_fanout=1, sampled_control_variate=True)
    on.batch_sampler.refresh()
    got, want = _batch_rows(on, batch)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    off = _model("sampled", fanouts=1, aggregation_fanout=1, sampled_control_variate=False)
    got, want = _batch_rows(off, batch)
    assert not torch.allclose(got["ue_U"], want["ue_U"]) and not torch.allclose(got["GU_image"], want["GU_image"])


def test_control_variate_is_unbiased_with_a_stale_history_and_reduces_the_noise():
    batch = _batch(_model("full"), b=16)

    def errors(cv: bool, draws: int):
        model = _model("sampled", fanouts=2, aggregation_fanout=2, sampled_control_variate=cv)
        model.batch_sampler.refresh()
        _perturb(model, 0.05)  # the parameters move after the refresh: the history is stale
        torch.manual_seed(11)
        rows = [_batch_rows(model, batch) for _ in range(draws)]
        want = rows[0][1]
        mean_err = {k: float((sum(r[0][k] for r in rows) / draws - want[k]).abs().mean()) for k in want}
        one_err = {k: float(sum((r[0][k] - want[k]).abs().mean() for r in rows) / draws) for k in want}
        return mean_err, one_err

    mean_cv, one_cv = errors(True, 300)
    _, one_plain = errors(False, 20)
    for k in one_cv:
        # unbiased: the mean of 300 draws is ~1/sqrt(300) as far off as one draw (a bias would not average out)
        assert 0 < mean_cv[k] < 0.15 * one_cv[k], (k, mean_cv[k], one_cv[k])
        assert one_cv[k] < 0.2 * one_plain[k], (k, one_cv[k], one_plain[k])  # and one draw is far less noisy


def test_control_variate_history_is_refreshed_every_epoch():
    model = _model("sampled", fanouts=2, aggregation_fanout=2)
    assert model.batch_sampler.control_variate and model.batch_sampler.history is None
    model.on_epoch_start(None, 1)
    first = model.batch_sampler.history["ui"][1].clone()
    f = model.propagate(model.graph, fuse=False)
    hist = model.batch_sampler.history
    torch.testing.assert_close(sum(hist["ui"]) / len(hist["ui"]), torch.cat([f["ue"], f["ie"]]), rtol=1e-5, atol=1e-6)
    pi, _ = model.preference(model.graph, model.user_emb)
    for mod in model.modalities:  # the tables built one modality at a time are the full forward's
        assert torch.equal(hist["pi"][mod], pi[mod])
        for k in ("rho", "G", "S", "GU", "SU"):
            assert torch.equal(hist[k][mod], f[k][mod]), (k, mod)
    _perturb(model, 0.1)
    model.on_epoch_start(None, 2)
    assert not torch.allclose(model.batch_sampler.history["ui"][1], first)
    assert _model("full").batch_sampler is None


def test_loading_a_state_forgets_the_history_and_the_next_batch_rebuilds_it_from_that_state():
    # what a data-parallel rank other than 0 sees after rank 0's per-epoch hook is broadcast
    # (set_extra_state): the history must be that of the loaded state, not of its own earlier one
    model = _model("sampled", fanouts=2, aggregation_fanout=2)
    other = _model("sampled", fanouts=2, aggregation_fanout=2)
    _perturb(other, 0.1)  # another state (rank 0's after its hook)
    model.batch_sampler.refresh()
    stale = model.batch_sampler.history["ui"][1].clone()
    model.load_state_dict(other.state_dict())
    assert model.batch_sampler.history is None
    model.loss(_batch(model))
    other.batch_sampler.refresh()
    assert torch.equal(model.batch_sampler.history["ui"][1], other.batch_sampler.history["ui"][1])
    assert not torch.allclose(model.batch_sampler.history["ui"][1], stale)


def test_gate_fanout_makes_only_the_preference_gate_exact():
    # gate_fanout=-1 with every other aggregation at fan-out 1 (no control variates): the gate rows of X
    # equal full propagation's, the batch users' means do not; null keeps one sampler for both
    full = _model("full")
    k = _max_degree(full)
    sampled = _model("sampled", fanouts=[k, -1, k + 3], aggregation_fanout=1, gate_fanout=-1, sampled_control_variate=False)
    assert sampled.batch_sampler.gate_fanout == -1 and sampled.batch_sampler.aggregation_fanout == 1
    batch = _batch(full)
    uu, pp = batch.users.unique(), batch.pos.unique()
    items = torch.cat([batch.pos, batch.neg]).unique()
    s = sampled.batch_sampler.forward(uu, pp, batch.neg, items)
    f = full.propagate(full.graph, fuse=False)
    for m in full.modalities:
        torch.testing.assert_close(s["rho"][m], f["rho"][m][s["X"]], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(s["GU"]["image"], f["GU"]["image"][uu])
    both = _model("sampled", aggregation_fanout=2)
    both.batch_sampler._samplers()
    assert both.batch_sampler.gate_fanout == 2 and both.batch_sampler._gate is both.batch_sampler._mean


@pytest.mark.parametrize(
    "over,fragment",
    [({"propagation": "sampling"}, "'propagation' must be 'full' or 'sampled'"),
     ({"propagation": "sampled", "fanouts": [5, 5]}, "has 2 entries for 3 layers"),
     ({"propagation": "sampled", "aggregation_fanout": 0}, "'aggregation_fanout' must be a positive integer"),
     ({"propagation": "sampled", "gate_fanout": -3}, "'gate_fanout' must be a positive integer"),
     ({"propagation": "sampled", "ui_block": "ngcf_conv"}, "needs a weight-free LightGCN layer"),
     ({"propagation": "sampled", "item_graph_block": "attention_item_conv"}, "needs item_graph_block=item_graph_conv")],
)  # fmt: skip
def test_bad_combinations(over, fragment):
    import_plugin("examples.attention_block")
    mode = over.pop("propagation")
    with pytest.raises(GraphrecError, match=fragment):
        _model(mode, **over)


@pytest.mark.parametrize(
    "sets,fragment",
    [(["propagation=sampling"], "'propagation' must be 'full' or 'sampled'"),
     (["propagation=sampled", "aggregation_fanout=-2"], "'aggregation_fanout' must be a positive integer"),
     (["propagation=sampled", "item_graph_block=attention_item_conv"], "needs item_graph_block=item_graph_conv")],
)  # fmt: skip
def test_cli_bad_combinations(tmp_path, sets, fragment):
    args = [a for s in sets for a in ("--set", s)]
    assert_user_error(invoke("--plugin", "examples.attention_block", "fit", "dgmrec", "--epochs", "1", "--out", tmp_path / "r", "--quiet", *SMALL, *args), fragment)


def test_cli_sampled_fit_refines_and_evaluates(tmp_path):
    r = invoke("fit", "dgmrec", "--epochs", "2", "--out", tmp_path / "r", "--quiet", *SMALL,
               "--set", "propagation=sampled", "--set", "fanouts=[4,4,4]", "--set", "refine_every=1")  # fmt: skip
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and 0.0 < metrics["test"]["metrics"]["recall@20"] <= 1.0
    r = invoke("evaluate", tmp_path / "r", "--json")  # the checkpoint (refined graphs included) reloads
    assert r.exit_code == 0, r.output


def test_sparse_embeddings_first_step_is_adams_on_touched_rows_and_leaves_the_others():
    """``sparse_embeddings``: row-sparse gradients of the ID and raw feature tables equal to the dense ones,
    and MixedAdam's first step equals Adam's: SparseAdam on the touched rows of the tables (Adam with
    SparseAdam's eps placement, ``eps / sqrt(1 - beta2)`` at step 1: graphrec.train.optim), untouched rows
    and their moments unchanged, plain Adam (bit for bit) on every other parameter."""
    import math

    from graphrec.train.optim import MixedAdam

    dense = _model("sampled", fanouts=2, aggregation_fanout=2)
    sparse = _model("sampled", fanouts=2, aggregation_fanout=2, sparse_embeddings=True)
    batch = _batch(dense, b=8)  # a few rows: most of the tables untouched
    for model in (dense, sparse):
        torch.manual_seed(3)  # the same neighbourhoods
        model.loss(batch)["loss"].backward()
    tables = ("user_emb", "item_emb", "raw.image", "raw.text")
    assert [n for n, p in sparse.named_parameters() if any(p is t for t in sparse.row_tables())] == list(tables)
    ref = dict(dense.named_parameters())
    for name, p in sparse.named_parameters():
        if name in tables:
            assert p.grad.is_sparse, name
            torch.testing.assert_close(p.grad.to_dense(), ref[name].grad, rtol=1e-6, atol=1e-9, msg=name)
        elif p.grad is not None:
            assert torch.equal(p.grad, ref[name].grad), name
    opt = sparse.make_optimizer(1e-2, 0.0)
    assert isinstance(opt, MixedAdam) and {id(p) for p in opt.sparse_params} == {id(p) for p in sparse.row_tables()}
    before = {n: p.detach().clone() for n, p in sparse.named_parameters()}
    opt.step()
    ref_tables = [ref[n] for n in tables]
    torch.optim.Adam(ref_tables, lr=1e-2, eps=1e-8 / math.sqrt(1 - 0.999)).step()
    torch.optim.Adam([p for p in dense.optim_parameters() if all(p is not t for t in ref_tables)], lr=1e-2).step()
    for name, p in sparse.named_parameters():
        if name not in tables:
            assert torch.equal(p, ref[name]), name
            continue
        touched = torch.zeros(len(p), dtype=torch.bool)
        touched[p.grad.coalesce().indices()[0]] = True
        assert 0 < int(touched.sum()) < len(p), name
        torch.testing.assert_close(p[touched], ref[name][touched], rtol=1e-5, atol=1e-7, msg=name)
        assert not torch.equal(p[touched], before[name][touched]), name
        assert torch.equal(p[~touched], before[name][~touched]), name  # untouched rows do not move
        assert not opt.state[p]["exp_avg"][~touched].any() and not opt.state[p]["exp_avg_sq"][~touched].any()


@pytest.mark.parametrize(
    "over,fragment",
    [({"sparse_embeddings": True, "propagation": "full"}, "needs propagation=sampled"),
     ({"sparse_embeddings": True, "weight_decay": 0.1}, "does not support weight_decay")],
)  # fmt: skip
def test_sparse_embeddings_errors(over, fragment):
    cfg = small_config("dgmrec", **{"propagation": "sampled", "synth_users": 60, "synth_items": 80, **over})
    with pytest.raises(GraphrecError, match=fragment):
        build_model(load_dataset(cfg), cfg)
