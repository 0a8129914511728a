"""One DGMRec training step equals a straightforward reference computation.

The reference below is the loss of DGMRec as first written (graphrec 0.x before the speed
work of issue 12): every representation computed for every user and item with DGL's own
message-passing kernel (``dgl.ops.u_mul_e_sum``), InfoNCE as ``F.cross_entropy`` over the
full ``(B, B)`` logits with duplicates kept. The optimised model must give the same losses
and the same gradients of every parameter to float tolerance, with the same random draws
(noise of generation/reconstruction, CLUB's permutation), for several configurations.
"""

from __future__ import annotations

import dgl
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import small_config
from graphrec.blocks.bpr import bpr_loss
from graphrec.blocks.generators import perturb
from graphrec.data.dataset import load_dataset
from graphrec.data.sampler import BPRSampler
from graphrec.graph.heterograph import IU, UI, knn_relation, refine_relation
from graphrec.models.dgmrec import DGMRec
from graphrec.train.seed import set_seed


# ----------------------------------------------------------------------------- the reference
def _spmm(g, rel, h, w):
    return dgl.ops.u_mul_e_sum(g[rel], h, w)


def _infonce(a, b, t):
    if a.shape[0] == 0:
        return a.sum() * 0.0
    a = F.normalize(a, dim=1)
    b = F.normalize(b, dim=1)
    return F.cross_entropy(a @ b.T / t, torch.arange(a.shape[0]))


def _item_prop(model, g, h, m):
    for _ in range(int(model.config["n_mm_layers"])):
        out = torch.zeros_like(h)
        for rel in (knn_relation(m), refine_relation(m)):
            if rel in g.canonical_etypes and g.num_edges(rel):
                out = out + _spmm(g, rel, h, g.edges[rel].data["w"])
        h = out
    return h


def _propagate(model, g):
    mods = model.modalities
    u, i = model.user_emb, model.item_emb
    acc_u, acc_i, hu, hi = u, i, u, i
    for _ in range(int(model.config["n_ui_layers"])):
        hu, hi = _spmm(g, IU, hi, g.edges[IU].data["w"]), _spmm(g, UI, hu, g.edges[UI].data["w"])
        acc_u, acc_i = acc_u + hu, acc_i + hi
    L = int(model.config["n_ui_layers"]) + 1
    ue, ie = acc_u / L, acc_i / L
    ge, se = model.general_encoder, model.specific_encoder
    g_ = {m: torch.sigmoid(ge.shared(torch.tanh(ge.projections[m](model.raw[m])))) for m in mods}
    s_ = {m: torch.sigmoid(se.encoders[m](model.raw[m])) for m in mods}
    rho = {m: _spmm(g, UI, torch.tanh(model.preference.maps[m](model.user_emb)), g.edges[UI].data["w_mean"]) for m in mods}
    G = {m: _item_prop(model, g, rho[m] * g_[m], m) for m in mods}
    S = {m: _item_prop(model, g, rho[m] * s_[m], m) for m in mods}
    GU = {m: _spmm(g, IU, G[m], g.edges[IU].data["w_mean"]) for m in mods}
    SU = {m: _spmm(g, IU, S[m], g.edges[IU].data["w_mean"]) for m in mods}
    M = len(mods)
    zu = ue + (sum(GU.values()) / M + sum(SU.values())) / (M + 1)
    zi = ie + (sum(G.values()) / M + sum(S.values())) / (M + 1)
    return {"ue": ue, "ie": ie, "g": g_, "s": s_, "rho": rho, "G": G, "S": S, "GU": GU, "SU": SU, "zu": zu, "zi": zi}


def reference_loss(model: DGMRec, batch) -> dict[str, torch.Tensor]:
    cfg, mods = model.config, model.modalities
    f = _propagate(model, model.graph)
    u, p, n = batch.users, batch.pos, batch.neg
    B = u.shape[0]
    out = {"bpr": bpr_loss((f["zu"][u] * f["zi"][p]).sum(1), (f["zu"][u] * f["zi"][n]).sum(1))}
    reg = float(cfg["id_reg"]) * (f["ue"][u].norm() + f["ie"][p].norm() + f["ie"][n].norm()) / B
    out["reg"] = reg + float(cfg["reg"]) * sum((f["G"][m] + f["S"][m])[p].norm() for m in mods) / B
    items = torch.unique(torch.cat([p, n]))
    obs = model.observed[items]
    all_obs = items[obs.all(dim=1)]
    sum_GU_u = sum(f["GU"][m][u] for m in mods)
    sum_G_p = sum(f["G"][m][p] for m in mods)
    if float(cfg["interModal"]) > 0 and len(mods) > 1:
        pairs = [(0, 1)] if len(mods) == 2 else [(i, (i + 1) % len(mods)) for i in range(len(mods))]
        t = float(cfg["interModalTemp"])
        item_term = sum(_infonce(f["g"][mods[a]][all_obs], f["g"][mods[b]][all_obs], t) for a, b in pairs)
        out["inter"] = float(cfg["interModal"]) * (item_term + _infonce(f["GU"][mods[0]][u], f["GU"][mods[1]][u], t))
    if float(cfg["sampler"]) > 0:
        club = 0.0
        for m in mods:
            c, x, y = model.club[m], f["S"][m], f["G"][m]
            mu, var = c.mu(x), c.logvar(x).exp()
            perm = torch.randperm(y.shape[0])
            club = club + 0.5 * ((-((mu - y) ** 2) / var).sum(1) - (-((mu - y[perm]) ** 2) / var).sum(1)).mean()
        out["club"] = float(cfg["sampler"]) * club
    if float(cfg["intraModal"]) > 0:
        ti, tg = float(cfg["intraModalTemp"]), float(cfg["interModalTemp"])
        ui = _infonce(f["ue"][u], f["ie"][p], ti) + _infonce(sum_GU_u, sum_G_p, tg)
        ui = ui + sum(_infonce(f["SU"][m][u], f["S"][m][p], ti) for m in mods)
        out["align_ui"] = float(cfg["intraModal"]) * ui
    if float(cfg["alignBM"]) > 0:
        tb = float(cfg["alignBMTemp"])
        out["align_bm"] = float(cfg["alignBM"]) * (_infonce(f["ie"][p], sum_G_p, tb) + _infonce(f["ue"][u], sum_GU_u, tb))
    noise = float(cfg["noise"])
    if float(cfg["additive"]) > 0 and cfg["generation"] and (~model.observed).any():
        gen = 0.0
        for j, m in enumerate(mods):
            idx = items[obs[:, j]]
            if len(idx):
                gen = gen + F.mse_loss(f["s"][m][idx], model.specific_generators[m](perturb(f["rho"][m][idx], noise)))
            if len(mods) > 1 and len(all_obs):
                src = torch.cat([f["G"][o][all_obs] for o in model._others(m)], dim=1)
                gen = gen + F.mse_loss(f["G"][m][all_obs], model.general_generators[m](perturb(src, noise)))
        out["gen"] = float(cfg["additive"]) * gen
    if float(cfg["recon"]) > 0:
        rec = 0.0
        for m in mods:
            x_hat = model.decoders[m](f["G"][m].detach(), f["S"][m].detach(), noise)
            rec = rec + F.mse_loss(x_hat, model.raw[m])
        out["recon"] = float(cfg["recon"]) * rec
    out["loss"] = sum(out.values())
    return out


# ----------------------------------------------------------------------------- the comparison
def _step(model, fn, batch, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    losses = fn(batch)
    losses["loss"].backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in losses.items()}, grads


CASES = {
    "defaults": {},
    "tiktok-preset": {"train_batch_size": 2048, "n_mm_layers": 2, "interModal": 0.0, "intraModalTemp": 0.2, "alignBMTemp": 0.4,
                      "sampler": 0.0, "avg_lambda": 0.4},
    "three-modalities": {"synth_modalities": ["image", "text", "audio"]},
    "one-modality": {"synth_modalities": ["image"]},
    "no-generation": {"generation": False, "recon": 0.0},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_step_matches_the_reference(case):
    cfg = small_config("dgmrec", **CASES[case])
    ds = load_dataset(cfg)
    set_seed(3)
    model = DGMRec(ds, cfg)
    model.on_train_start(None)
    model.on_epoch_start(None, 0)  # CLUB steps, generation: the state a real step sees
    sampler = BPRSampler(ds.train, ds.n_items, exclude_items=ds.new_items, rng=np.random.default_rng(1))
    batch = next(iter(sampler.epoch(int(cfg["train_batch_size"]))))
    assert len(torch.unique(batch.users)) < len(batch.users)  # duplicates in the batch are exercised
    got, got_grads = _step(model, model.loss, batch, seed=11)
    want, want_grads = _step(model, lambda b: reference_loss(model, b), batch, seed=11)
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-7), k
    assert set(got_grads) == set(want_grads)
    for k, w in want_grads.items():
        torch.testing.assert_close(got_grads[k], w, rtol=1e-4, atol=1e-7, msg=lambda m, k=k: f"{k}: {m}")


def test_the_reference_detects_a_changed_loss():
    """The comparison can fail: a temperature changed in the model only is caught."""
    cfg = small_config("dgmrec")
    ds = load_dataset(cfg)
    set_seed(3)
    model = DGMRec(ds, cfg)
    batch = next(iter(BPRSampler(ds.train, ds.n_items, rng=np.random.default_rng(1)).epoch(512)))
    want, _ = _step(model, lambda b: reference_loss(model, b), batch, seed=11)
    model.config["alignBMTemp"] = float(cfg["alignBMTemp"]) * 1.01
    got, _ = _step(model, model.loss, batch, seed=11)
    assert got["align_bm"] != pytest.approx(want["align_bm"], rel=1e-5)
