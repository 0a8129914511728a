"""The rest of the DGMRec paper's baselines (issue 14): LGMRec, SiBraR, MILK and their blocks.

The shared checks (NN-injection by default, `graphrec fit NAME` on the embedded set and on an MMRec
folder, `imputation` recorded) run for them in tests/test_baselines_mm.py (list MM).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_dataset, small_config, tiny_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrec.blocks.hyperedges import LearnableHyperedges, hyperedge_propagate
from graphrec.blocks.infonce import infonce_all
from graphrec.data.dataset import load_dataset
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.graph.heterograph import build_heterograph
from graphrec.registry import BLOCKS, MODELS


def build(name: str, **overrides):
    cfg = small_config(name, embedding_size=8, synth_users=60, synth_items=80, **overrides)
    ds = load_dataset(cfg)
    return MODELS.get(name)(ds, cfg), ds


def dense_interactions(ds) -> torch.Tensor:
    a = torch.zeros(ds.n_users, ds.n_items)
    a[torch.from_numpy(ds.train[:, 0]), torch.from_numpy(ds.train[:, 1])] = 1.0
    return a


# ----------------------------------------------------------------------------- LGMRec
@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 9), width=st.integers(1, 6), tau=st.floats(0.05, 2.0), train=st.booleans(), seed=st.integers(0, 500))
def test_lgmrec_hyperedge_assignments_are_distributions_over_the_hyperedges(k, width, tau, train, seed):
    """Every user's and item's assignment row sums to 1 (Gumbel-softmax in training, softmax in
    evaluation), and the logits are H_i = x V and H_u = A H_i (the sum over the user's train items)."""
    ds = make_dataset(tiny_rows(10, 14, per_user=5, seed=seed % 7), n_users=10, n_items=14)
    g = build_heterograph(ds.n_users, ds.n_items, ds.train)
    torch.manual_seed(seed)
    block = LearnableHyperedges(width, k, tau, keep_rate=1.0).train(train)
    x = torch.randn(ds.n_items, width)
    hu, hi = block.assignments(g, x)
    assert hu.shape == (ds.n_users, k) and hi.shape == (ds.n_items, k)
    for h in (hu, hi):
        assert (h >= 0).all()
        torch.testing.assert_close(h.sum(1), torch.ones(h.shape[0]), rtol=1e-5, atol=1e-5)
    lu, li = block.logits(g, x)
    torch.testing.assert_close(li, x @ block.hyperedges)
    torch.testing.assert_close(lu, dense_interactions(ds) @ li, rtol=1e-5, atol=1e-5)
    if not train:  # evaluation: deterministic, softmax(H / τ)
        torch.testing.assert_close(hi, torch.softmax(li / tau, 1))
        torch.testing.assert_close(block.assignments(g, x)[1], hi)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 12), u=st.integers(1, 8), k=st.integers(1, 5), layers=st.integers(1, 3), seed=st.integers(0, 500))
def test_hyperedge_propagation_is_the_dense_product(n, u, k, layers, seed):
    torch.manual_seed(seed)
    hi, hu, e = torch.rand(n, k), torch.rand(u, k), torch.randn(n, 3)
    pu, pi = hyperedge_propagate(hi, hu, e, layers)
    want = e
    for _ in range(layers - 1):
        want = hi @ hi.T @ want
    torch.testing.assert_close(pu, hu @ hi.T @ want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pi, hi @ hi.T @ want, rtol=1e-4, atol=1e-5)


def test_one_hot_hyperedges_average_nothing_but_sum_their_members():
    """With hard assignments, an item's global embedding is the sum over the items of its hyperedge."""
    hi = F.one_hot(torch.tensor([0, 0, 1, 1, 1]), 2).float()
    e = torch.arange(10.0).view(5, 2)
    _, out = hyperedge_propagate(hi, hi[:1], e)
    torch.testing.assert_close(out, torch.stack([e[:2].sum(0)] * 2 + [e[2:].sum(0)] * 3))


def test_lgmrec_final_representation_is_local_plus_alpha_global():
    model, ds = build("lgmrec", alpha=0.7)
    model.eval()
    with torch.no_grad():
        final, hyper = model.views()
        user, item = model.propagation(model.graph, model.user_emb, model.item_emb)
        local = torch.cat([user, item]) + sum(F.normalize(model.modality_embedding(m), dim=1) for m in model.modalities)
        torch.testing.assert_close(final, local + 0.7 * F.normalize(sum(hyper.values()), dim=1))
        u, i = model.representations()
        torch.testing.assert_close(torch.cat([u, i]), final)  # evaluation has no Gumbel noise, no dropout
        # the global view starts from the collaborative items E^c, one hyperedge step
        hu, hi = model.hyperedges["image"].assignments(model.graph, model.feature("image"))
        torch.testing.assert_close(hyper["image"], torch.cat([hu @ (hi.T @ item), hi @ (hi.T @ item)]), rtol=1e-4, atol=1e-5)
        # modality view: item rows x W, users the mean of their items, then n_mm_layers LightGCN steps
        x = model.feature("text") @ model.projections["text"]
        a = dense_interactions(ds)
        deg_u, deg_i = a.sum(1), a.sum(0)
        norm = a / torch.sqrt(torch.outer(deg_u + 1e-7, deg_i + 1e-7))
        hu_, hi_ = (a @ x) / (deg_u[:, None] + 1e-7), x
        for _ in range(2):
            hu_, hi_ = norm @ hi_, norm.T @ hu_
        torch.testing.assert_close(model.modality_embedding("text"), torch.cat([hu_, hi_]), rtol=1e-4, atol=1e-5)


def test_lgmrec_contrast_and_loss_terms():
    model, ds = build("lgmrec", cl_weight=1.0)
    batch = BPRBatch(torch.tensor([0, 1, 1]), torch.tensor([2, 3, 4]), torch.tensor([5, 6, 7]))
    torch.manual_seed(0)
    out = model.loss(batch)
    torch.manual_seed(0)
    _, hyper = model.views()
    gu, gi = (torch.split(hyper[m], [ds.n_users, ds.n_items]) for m in ("image", "text"))
    want = infonce_all(gu[0][batch.users], gi[0], batch.users, 0.2) + infonce_all(gu[1][batch.pos], gi[1], batch.pos, 0.2)
    torch.testing.assert_close(out["cl"], want)
    # infonce_all is cross-entropy against every row of b, summed over the batch
    a, b = torch.randn(3, 4), torch.randn(6, 4)
    idx = torch.tensor([5, 0, 2])
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.5
    want = -(logits.log_softmax(1)[torch.arange(3), idx]).sum()
    torch.testing.assert_close(infonce_all(a, b, idx, 0.5), want)
    out["loss"].backward()
    assert model.hyperedges["image"].hyperedges.grad.abs().sum() > 0  # the hyperedges are learned
    assert BLOCKS.is_builtin("learnable_hyperedges")


def test_lgmrec_with_one_modality_has_no_contrast_term():
    model, _ = build("lgmrec", synth_modalities=["image"])
    out = model.loss(BPRBatch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])))
    assert model.modalities == ["image"] and out["cl"].item() == 0.0 and torch.isfinite(out["loss"])


# ----------------------------------------------------------------------------- MILK
@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 5), alpha=st.floats(0.05, 5.0), seed=st.integers(0, 500))
def test_milk_environments_are_the_uniform_mixture_and_cyclic_shifts(m, alpha, seed):
    """M + 1 environments: the uniform one, then M cyclic shifts of one Dirichlet draw, so over the
    shifted environments every modality takes every weight once (each column sums to 1)."""
    from graphrec.blocks.environments import CyclicMixup

    torch.manual_seed(seed)
    w = CyclicMixup([f"m{k}" for k in range(m)], alpha)()
    assert w.shape == (m + 1, m) and (w >= 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(m + 1))
    torch.testing.assert_close(w[0], torch.full((m,), 1.0 / m))
    for k in range(1, m + 1):
        torch.testing.assert_close(w[k], torch.roll(w[1], k - 1))
    torch.testing.assert_close(w[1:].sum(0), torch.ones(m), rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 10), m=st.integers(1, 4), seed=st.integers(0, 500))
def test_mix_modalities_ignores_what_an_item_does_not_observe(n, m, seed):
    from graphrec.blocks.environments import mix_modalities

    g = torch.Generator().manual_seed(seed)
    reps, w = torch.randn(n, m, 3, generator=g), torch.rand(m, generator=g) + 0.1
    avail = torch.rand(n, m, generator=g) > 0.4
    out = mix_modalities(reps, w, avail)
    changed = reps.clone()
    changed[~avail] = 100.0  # what a row does not observe plays no part ...
    full = avail.any(1)
    torch.testing.assert_close(mix_modalities(changed, w, avail)[full], out[full])
    want = (w * avail).unsqueeze(-1).mul(reps).sum(1) / (w * avail).sum(1, keepdim=True) * w.sum()
    torch.testing.assert_close(out[full], want[full], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[~full], (w.unsqueeze(-1) * reps[~full]).sum(1))  # ... unless it observes nothing
    torch.testing.assert_close(mix_modalities(reps, w), (w.unsqueeze(-1) * reps).sum(1))


def test_milk_scores_an_item_from_the_modalities_it_observes():
    model, ds = build("milk")
    miss = torch.from_numpy(ds.missing.missing["image"] & ~ds.missing.missing["text"])
    assert miss.any()
    with torch.no_grad():
        _, before = model.representations()
        model.feat_0[miss] = 5.0  # the image rows of items without an image
        _, after = model.representations()
        torch.testing.assert_close(after[miss], before[miss])  # untouched: only the text speaks for them
        torch.testing.assert_close(after[miss], model.projections["text"](model.feature("text")[miss]))
        has = ~torch.from_numpy(ds.missing.missing["image"])
        torch.testing.assert_close(after[has], before[has])
        plain, _ = build("milk", skip_missing=False)
        plain.load_state_dict(model.state_dict())
        plain.feat_0.copy_(model.feat_0)
        assert not torch.allclose(plain.representations()[1][miss], after[miss])  # skip_missing false: filled rows count


def test_milk_loss_is_environment_risks_plus_their_variance():
    model, ds = build("milk", penalty_weight=10.0, align_weight=0.5, reg_weight=0.0)
    batch = BPRBatch(torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7]), torch.tensor([8, 9, 10, 11]))
    torch.manual_seed(3)
    out = model.loss(batch)
    torch.manual_seed(3)
    envs = model.environments()
    reps = model.modality_reps(torch.cat([batch.pos, batch.neg]))
    risks = []
    for w in envs:
        v = model.mixture(reps, w, torch.cat([batch.pos, batch.neg]))
        s_pos, s_neg = (model.user_emb[batch.users] * v[:4]).sum(1), (model.user_emb[batch.users] * v[4:]).sum(1)
        risks.append(-F.logsigmoid(s_pos - s_neg).mean())
    risks = torch.stack(risks)
    torch.testing.assert_close(out["bpr"], risks.sum())
    torch.testing.assert_close(out["penalty"], 10.0 * risks.var())
    obs = model.observed[batch.pos]
    both = obs[:, 0] & obs[:, 1]
    want = F.mse_loss(reps[:4][both, 0], reps[:4][both, 1]) if both.any() else torch.tensor(0.0)
    torch.testing.assert_close(out["align"], 0.5 * want)
    # equal modality representations: every environment sees the same items, no variance
    with torch.no_grad():
        for p in model.projections.values():
            p.weight.zero_()
            p.bias.fill_(0.1)
    assert model.loss(batch)["penalty"].item() == pytest.approx(0.0, abs=1e-10)


def test_milk_honours_the_imputation_key():
    model, ds = build("milk", imputation="zeros", skip_missing=False)
    miss = torch.from_numpy(ds.missing.missing["text"])
    assert model.config["imputation"] == "zeros" and (model.feature("text")[miss] == 0).all()
    mean, _ = build("milk", skip_missing=False)
    assert mean.config["imputation"] == "mean" and not torch.allclose(mean.feature("text")[miss], model.feature("text")[miss])


# ----------------------------------------------------------------------------- SiBraR
@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 500))
def test_single_branch_embeds_every_modality_with_the_same_function(n, seed):
    """One branch g for all inputs: once projected to width d, an input gives the same embedding
    whichever modality it came from (and the ID input, which has no projection, is g itself)."""
    from graphrec.blocks.single_branch import SingleBranch

    torch.manual_seed(seed)
    block = SingleBranch({"id": None, "image": 5, "text": 7}, 4)
    x = {"id": torch.randn(n, 4), "image": torch.randn(n, 5), "text": torch.randn(n, 7)}
    out = block(x)
    for m in x:
        torch.testing.assert_close(out[m], block.embed(block.project(m, x[m])))
    h = block.project("image", x["image"])
    torch.testing.assert_close(block({"id": h})["id"], out["image"])
    shared = [name for name, _ in block.named_parameters() if name.startswith("branch.")]
    assert len(shared) == 4  # W1, b1, W2, b2: one set, whatever the number of modalities
    assert BLOCKS.is_builtin("single_branch")


def test_sibrar_scores_an_item_missing_every_modality_from_its_id():
    model, ds = build("sibrar", skip_missing=True)
    none = torch.from_numpy(ds.missing.missing["image"] & ds.missing.missing["text"])
    assert none.any()
    with torch.no_grad():
        _, item = model.representations()
        torch.testing.assert_close(item[none], model.single_branch.embed(model.item_emb[none]))
        model.feat_0[none] = 1e3  # its (filled) feature rows play no part
        model.feat_1[none] = -1e3
        torch.testing.assert_close(model.representations()[1][none], item[none])
        assert torch.isfinite(item).all()
        full = ~torch.from_numpy(ds.missing.missing["image"] | ds.missing.missing["text"])
        torch.testing.assert_close(item[full], model.input_embeddings(torch.nonzero(full).squeeze(1)).mean(1))
    plain, _ = build("sibrar")  # default: the DGMRec authors' mean over the ID and all (filled) modalities
    with torch.no_grad():
        torch.testing.assert_close(plain.representations()[1], plain.input_embeddings().mean(1))


def test_sibrar_samples_two_distinct_observed_inputs_per_row():
    model, ds = build("sibrar", skip_missing=True)
    items = torch.arange(ds.n_items)
    torch.manual_seed(0)
    pick = model.sample_inputs(items)
    observed = model.inputs_observed  # (N, 1 + M): the ID, then the modalities
    assert pick.shape == (ds.n_items, 2)
    assert observed[items, pick[:, 0]].all() and observed[items, pick[:, 1]].all()  # only what the item observes
    only_id = observed.sum(1) == 1
    assert (pick[only_id] == 0).all()  # the ID twice
    assert (pick[~only_id, 0] != pick[~only_id, 1]).all()
    plain, _ = build("sibrar")
    counts = torch.bincount(plain.sample_inputs(items.repeat(20)).flatten(), minlength=3)
    assert (counts > counts.sum() / 6).all()  # about a third each: every input is drawn, observed or not


def test_sibrar_loss_is_bpr_of_the_sampled_mean_plus_the_modality_contrast(monkeypatch):
    model, _ = build("sibrar", cl_weight=0.5, temp=0.7)
    batch = BPRBatch(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8]))
    pick = torch.tensor([[0, 1], [2, 0], [1, 2]])
    monkeypatch.setattr(model, "sample_inputs", lambda items: pick)
    out = model.loss(batch)
    pos, neg = model.input_embeddings(batch.pos), model.input_embeddings(batch.neg)
    r = torch.arange(3)
    p1, p2, n1, n2 = pos[r, pick[:, 0]], pos[r, pick[:, 1]], neg[r, pick[:, 0]], neg[r, pick[:, 1]]
    u = model.user_emb[batch.users]
    bpr = -F.logsigmoid((u * (p1 + p2) / 2).sum(1) - (u * (n1 + n2) / 2).sum(1)).mean()
    s = (p1 * p2).sum(1) / 0.7
    ce1 = -torch.log_softmax(torch.stack([s, (p1 * n2).sum(1) / 0.7], 1), 1)[:, 0]
    ce2 = -torch.log_softmax(torch.stack([s, (p2 * n1).sum(1) / 0.7], 1), 1)[:, 0]
    torch.testing.assert_close(out["bpr"], bpr)
    torch.testing.assert_close(out["cl"], 0.5 * (ce1 + ce2).mean())
    torch.testing.assert_close(pos[:, 1:].norm(dim=2), torch.ones(3, 2))  # content inputs are unit vectors


# ----------------------------------------------------------------------------- MMGCN
def test_mmgcn_layer_matches_its_formula():
    from graphrec.blocks.mmgcn import MMGCNLayer

    ds = make_dataset(tiny_rows(9, 12, per_user=4, seed=1), n_users=9, n_items=12)
    g = build_heterograph(ds.n_users, ds.n_items, ds.train)
    torch.manual_seed(0)
    layer = MMGCNLayer(5, 3)
    x = {"user": torch.randn(9, 5), "item": torch.randn(12, 5)}
    ids = {"user": torch.randn(9, 3), "item": torch.randn(12, 3)}
    out = layer(g, x, ids)
    a = dense_interactions(ds)
    lr = F.leaky_relu
    for k, adj, other in (("user", a, "item"), ("item", a.T, "user")):
        mean = adj / adj.sum(1, keepdim=True).clamp_min(1e-7)
        h = F.normalize(mean @ layer.conv(x[other]), dim=1)
        want = lr(layer.combine(lr(h)) + lr(layer.own(x[k])) + ids[k])
        torch.testing.assert_close(out[k], want, rtol=1e-4, atol=1e-5)


def test_mmgcn_towers_are_modality_specific_and_averaged():
    model, _ = build("mmgcn", n_layers=2, latent_size=16)
    with torch.no_grad():
        image, text = model.tower("image"), model.tower("text")
        u, i = model.representations()
        torch.testing.assert_close(torch.cat([u, i]), (image + text) / 2)
        model.feat_1.mul_(-3.0)  # another text feature table: the image tower does not see it
        torch.testing.assert_close(model.tower("image"), image)
        assert not torch.allclose(model.tower("text"), text)
    assert model.inputs["image"].out_features == 16 and model.preferences["image"].shape[1] == 16  # 128 wide: mapped first
    assert all(len(t) == 2 for t in model.towers.values()) and BLOCKS.is_builtin("mmgcn_layer")
    batch = BPRBatch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    model.loss(batch)["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.preferences.values())  # the preferences are trained


# ----------------------------------------------------------------------------- GRCN
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 500))
def test_affinity_attention_is_a_softmax_over_each_nodes_in_edges(seed):
    from graphrec.blocks.edge_attention import AffinityAttention
    from graphrec.graph.heterograph import IU, UI

    ds = make_dataset(tiny_rows(8, 11, per_user=4, seed=seed % 5), n_users=8, n_items=11)
    g = build_heterograph(ds.n_users, ds.n_items, ds.train)
    torch.manual_seed(seed)
    feats = {"user": torch.randn(8, 3), "item": torch.randn(11, 3)}
    out, alphas = AffinityAttention()(g, feats)
    a = dense_interactions(ds).bool()
    logits = feats["user"] @ feats["item"].T
    att_items = torch.softmax(logits.masked_fill(~a, float("-inf")), dim=1).nan_to_num(0.0)  # users over their items
    att_users = torch.softmax(logits.T.masked_fill(~a.T, float("-inf")), dim=1).nan_to_num(0.0)  # items over their users
    torch.testing.assert_close(out["user"], att_items @ feats["item"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["item"], att_users @ feats["user"], rtol=1e-4, atol=1e-5)
    u, i = g.edges(etype=UI)
    torch.testing.assert_close(alphas[UI], att_users[i, u])
    torch.testing.assert_close(alphas[IU], att_items[u, i])


def test_grcn_prunes_the_edges_no_modality_supports():
    from graphrec.graph.heterograph import IU, UI

    model, ds = build("grcn", content_size=8)
    with torch.no_grad():
        model.confidence[0] = -1.0  # user 0 distrusts every modality: the messages it sends are cut
        model.confidence[ds.n_users + 1] = -1.0  # item 1 likewise
        alphas = {m: model.content(m)[1] for m in model.modalities}
        w = model.edge_weights(alphas)
    u, i = model.graph.edges(etype=UI)
    assert (w[UI] >= 0).all() and (w[IU] >= 0).all()
    assert (w[UI][u == 0] == 0).all() and (w[IU][i == 1] == 0).all()
    assert (w[UI][u != 0] > 0).any() and (w[IU][i != 1] > 0).any()
    a = torch.stack([alphas[m][UI] for m in model.modalities], 1)
    torch.testing.assert_close(w[UI], torch.relu((a * model.confidence[u]).amax(1)))
    with torch.no_grad():  # the ID part runs on the refined graph: x + W x + W (W x)
        user, item = model.representations()
        n_u = ds.n_users
        wm = torch.zeros(n_u + ds.n_items, n_u + ds.n_items)
        wm[i + n_u, u] = w[UI]  # row = destination
        wm[u, i + n_u] = w[IU]
        x = F.normalize(model.ids, dim=1)
        torch.testing.assert_close(torch.cat([user, item])[:, :8], x + wm @ x + wm @ (wm @ x), rtol=1e-4, atol=1e-5)
        assert user.shape[1] == 8 + 2 * 8  # id ‖ image ‖ text


def test_grcn_routing_refines_the_user_preferences():
    model, _ = build("grcn", content_size=8, n_routing=0)
    routed, _ = build("grcn", content_size=8, n_routing=2)
    routed.load_state_dict(model.state_dict())
    with torch.no_grad():
        a, _ = model.content("image")
        b, _ = routed.content("image")
    n_u = model.n_users
    assert not torch.allclose(a[:n_u], b[:n_u])  # users moved towards the items they chose
    assert BLOCKS.is_builtin("affinity_attention") and BLOCKS.is_builtin("edge_weighted_conv")


# ----------------------------------------------------------------------------- SLMRec
def test_fine_coarse_contrast_chains_the_levels_and_skips_unobserved_rows():
    from graphrec.blocks.fine_coarse import FineCoarseContrast, dot_infonce

    torch.manual_seed(0)
    fac = FineCoarseContrast(["image", "text"], 4)
    z0, views = torch.randn(6, 4), {"image": torch.randn(6, 4), "text": torch.randn(6, 4)}
    observed = {"image": torch.tensor([1, 1, 0, 1, 1, 1]).bool(), "text": torch.tensor([1, 0, 1, 1, 0, 1]).bool()}
    loss = fac(z0, views, observed, 0.5)
    z1 = fac.chain["image"](z0)
    z2 = fac.chain["text"](z1)  # text is aligned one level coarser, through the image level
    want = dot_infonce(z1[observed["image"]], fac.heads["image"](views["image"])[observed["image"]], 0.5)
    want = want + dot_infonce(z2[observed["text"]], fac.heads["text"](views["text"])[observed["text"]], 0.5)
    torch.testing.assert_close(loss, want)
    changed = {m: v.clone() for m, v in views.items()}
    changed["image"][2] = 50.0  # the row that does not observe image plays no part in its term
    changed["text"][[1, 4]] = -50.0
    torch.testing.assert_close(fac(z0, changed, observed, 0.5), loss)
    logits = torch.randn(3, 3)
    torch.testing.assert_close(dot_infonce(torch.eye(3), logits.T, 1.0), F.cross_entropy(logits, torch.arange(3)))
    assert BLOCKS.is_builtin("fine_coarse_contrast")


def test_slmrec_fuses_its_graph_views_and_ignores_the_negatives():
    model, ds = build("slmrec", n_layers=2)
    views = model.views()
    user, item = model.representations()
    torch.testing.assert_close(item, model.fuse_item(torch.cat([views[k][1] for k in ("id", "image", "text")], 1)))
    # every modality view starts its users from the same ID embedding
    with torch.no_grad():
        zero_items = model.propagation(model.graph, model.user_emb, torch.zeros_like(model.item_emb))
        model.dense["image"].weight.zero_()
        model.dense["image"].bias.zero_()
        torch.testing.assert_close(model.views()["image"][0], zero_items[0])
    users, pos = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    a = model.loss(BPRBatch(users, pos, torch.tensor([6, 7, 8])))
    b = model.loss(BPRBatch(users, pos, torch.tensor([30, 40, 50])))
    torch.testing.assert_close(a["loss"], b["loss"])  # in-batch negatives only
    user, item = model.representations()
    torch.testing.assert_close(a["infonce"], infonce_plain(user, item, users, pos, 0.2), rtol=1e-4, atol=1e-5)


def infonce_plain(user, item, users, pos, temp):
    u, i = F.normalize(user[users], dim=1), F.normalize(item[pos], dim=1)
    return F.cross_entropy(u @ i.T / temp, torch.arange(len(users)))


# ----------------------------------------------------------------------------- DAMRS
@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 25), k=st.integers(1, 6), chunk=st.integers(1, 9), seed=st.integers(0, 500))
def test_damrs_denoised_graphs_keep_only_pairs_every_modality_finds_similar(n, k, chunk, seed):
    from graphrec.graph.denoised import denoised_knn_graphs

    rng = np.random.default_rng(seed)
    feats = {"a": rng.normal(size=(n, 4)).astype(np.float32), "b": rng.normal(size=(n, 3)).astype(np.float32)}
    graphs = denoised_knn_graphs(feats, k, chunk_size=chunk)
    sims = {m: dense_cos(x) for m, x in feats.items()}
    keep = np.ones((n, n), dtype=bool)
    for s in sims.values():
        keep &= s >= s.mean() - 1e-6
    for m, g in graphs.items():
        a = g.toarray()
        nz = a > 0
        assert not (nz & ~keep).any()  # a pair below either modality's mean never survives
        assert (nz.sum(1) == np.minimum(k, keep.sum(1))).all()  # k per row, or all survivors
        for i in range(n):  # the kept ones are the most similar survivors
            kept, dropped = sims[m][i][nz[i]], sims[m][i][keep[i] & ~nz[i]]
            if len(kept) and len(dropped):
                assert kept.min() >= dropped.max() - 1e-5
        r = nz.sum(1)
        want = nz / np.sqrt(np.outer(np.maximum(r, 1), np.maximum(r, 1)))
        np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-7)


def dense_cos(x):
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    return z @ z.T


def test_damrs_cooccurrence_graph_links_items_the_same_users_chose():
    from graphrec.graph.denoised import cooccurrence_graph

    train = np.array([(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 3)])
    a = cooccurrence_graph(train, 3, 5, k=1, chunk_size=2).toarray()
    nz = a > 0
    assert nz[0, 1] and nz[1, 0] and nz[2, 0] ^ nz[2, 1]  # item 2's one neighbour is 0 or 1 (one shared user each)
    assert nz.diagonal().all() and not nz[3, :3].any() and not nz[4, :4].any()  # lone items: only themselves
    assert (nz.sum(1) <= 2).all()


def test_damrs_pseudo_neighbours_and_agreement_weights():
    from graphrec.blocks.denoise_align import agreement_weights, pseudo_neighbours, weighted_bpr

    torch.manual_seed(0)
    probs = [torch.softmax(torch.randn(4, 30), 1) for _ in range(3)]
    agreed, own = pseudo_neighbours(probs, target=2, k=5)
    torch.testing.assert_close(agreed, (probs[0] + probs[1] + 2 * probs[2]).topk(5, 1).indices)
    for r in range(4):
        assert not set(agreed[r].tolist()) & set(own[r].tolist())  # the target view's own neighbours are new ones
    user = torch.randn(6, 8)
    w_pos, w_neg = agreement_weights(user, [torch.randn(6, 8) for _ in range(3)], [torch.randn(6, 8) for _ in range(3)])
    assert ((w_pos >= 0) & (w_pos <= 1)).all() and ((w_neg >= 0) & (w_neg <= 1)).all()
    same = torch.randn(6, 8)  # views that agree exactly: no variance, w⁺ = the common probability
    w_pos, _ = agreement_weights(user, [same] * 3, [same] * 3)
    torch.testing.assert_close(w_pos, torch.sigmoid((user * F.normalize(same, dim=1)).sum(1)))
    s_pos, s_neg = torch.randn(6), torch.randn(6)
    torch.testing.assert_close(weighted_bpr(s_pos, s_neg, torch.ones(6), torch.zeros(6)), -F.logsigmoid(s_pos - s_neg).mean())


def test_damrs_neighbour_discrimination_is_finite_at_a_small_temperature():
    """exp(cos / τ) overflows float32 for τ < 1/88; the loss is computed in log space instead."""
    from graphrec.blocks.denoise_align import neighbour_discrimination

    torch.manual_seed(2)
    rows, table = torch.randn(3, 4), torch.randn(30, 4)
    table[:3] = rows  # cos = 1 with the first items: exp(1 / 0.005) = inf in float32
    agreed, own = torch.tensor([[0, 5], [1, 6], [2, 7]]), torch.tensor([[8, 9], [10, 11], [12, 13]])
    got = neighbour_discrimination(agreed, own, rows, table, 0.005)
    s = F.normalize(rows.double(), dim=1) @ F.normalize(table.double(), dim=1).T / 0.005
    rest = s.scatter(1, agreed, float("-inf"))
    want = (s.logsumexp(1) - s.gather(1, agreed).logsumexp(1) + rest.logsumexp(1) - s.gather(1, own).logsumexp(1)).mean()
    assert torch.isfinite(got)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    every = torch.arange(4).repeat(3, 1)  # m covers all four items: no second term, still finite
    assert torch.isfinite(neighbour_discrimination(every, every, rows, table[:4], 0.2))


def test_damrs_scores_and_loss_terms():
    model, ds = build("damrs", knn_k=3)
    assert "knn_behavior" in model.graph.etypes
    with torch.no_grad():
        user, item, views = model.forward_all()
        u, i = model.representations()
        torch.testing.assert_close(i, item + (views["image"] + views["text"] + views["behavior"]) / 3)
    out = model.loss(BPRBatch(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])))
    assert all(torch.isfinite(v) for v in out.values()) and out["kl"] >= 0 and out["neighbor"] > 0
    out["loss"].backward()
    assert model.item_emb.grad.abs().sum() > 0


def test_damrs_loss_terms_are_their_formulas():
    """Each DAMRS term against a dense re-computation: neighbour discrimination, the symmetric
    Bernoulli KL, the agreement weights (w⁻ only where the views' mean is below the negatives' mean)
    and the loss assembled from the views in the authors' way."""
    from graphrec.blocks.denoise_align import (
        agreement_weights,
        neighbour_discrimination,
        neighbour_probabilities,
        pseudo_neighbours,
        symmetric_bernoulli_kl,
        weighted_bpr,
    )

    torch.manual_seed(1)
    rows, table = torch.randn(3, 4), torch.randn(25, 4)
    agreed, own = torch.tensor([[0, 1], [2, 3], [4, 5]]), torch.tensor([[6, 7], [8, 9], [10, 11]])
    e = (F.normalize(rows, dim=1) @ F.normalize(table, dim=1).T / 0.3).exp()
    m, s = e.gather(1, agreed).sum(1), e.gather(1, own).sum(1)
    want = (-(m / e.sum(1)).log() - (s / (e.sum(1) - m)).log()).mean()
    torch.testing.assert_close(neighbour_discrimination(agreed, own, rows, table, 0.3), want, rtol=1e-5, atol=1e-6)
    p, q = torch.rand(4, 5), torch.rand(4, 5)
    kl = lambda a, b: a * (a / b).log() + (1 - a) * ((1 - a) / (1 - b)).log()  # noqa: E731
    torch.testing.assert_close(symmetric_bernoulli_kl(p, q), (kl(p, q) + kl(q, p)).mean())
    assert symmetric_bernoulli_kl(p, p).item() == pytest.approx(0.0, abs=1e-7)
    user = torch.randn(6, 8)
    pos_v, neg_v = [torch.randn(6, 8) for _ in range(3)], [torch.randn(6, 8) for _ in range(3)]
    a = torch.stack([torch.sigmoid((user * F.normalize(h, dim=1)).sum(1)) for h in pos_v])
    b = torch.stack([torch.sigmoid((user * F.normalize(h, dim=1)).sum(1)) for h in neg_v])
    w_pos, w_neg = agreement_weights(user, pos_v, neg_v)
    torch.testing.assert_close(w_pos, (a.mean(0) * torch.exp(-a.var(0)) ** 2).clamp(0, 1))
    below = a.mean(0) < b.mean()
    torch.testing.assert_close(w_neg, torch.where(below, (a.amax(0) - b.mean()).clamp(0, 1), torch.zeros(6)))

    model, ds = build("damrs", knn_k=3, kl_weight=0.7, neighbor_weight=0.3, temp=0.5)
    batch = BPRBatch(torch.tensor([0, 1, 1, 2]), torch.tensor([3, 4, 5, 3]), torch.tensor([6, 7, 8, 9]))
    out = model.loss(batch)
    user, item, views = model.forward_all()
    order = [views[v] for v in ("image", "text", "behavior")]
    mean_view = sum(order) / 3
    u = user[batch.users]
    w_pos, w_neg = agreement_weights(u, [h[batch.pos] for h in order], [h[batch.neg] for h in order])
    full = item + mean_view
    torch.testing.assert_close(out["bpr"], weighted_bpr((u * full[batch.pos]).sum(1), (u * full[batch.neg]).sum(1), w_pos, w_neg))
    users, items = batch.users.unique(), torch.cat([batch.pos, batch.neg]).unique()
    probs = [neighbour_probabilities(t[items], t) for t in order]
    neigh = sum(neighbour_discrimination(*pseudo_neighbours(probs, k), t[items], t, 0.5) for k, t in enumerate(order)) / 3
    torch.testing.assert_close(out["neighbor"], 0.3 * neigh)
    p_g = torch.sigmoid(user[users] @ F.normalize(item[items], dim=1).T)
    p_t = torch.sigmoid(user[users] @ F.normalize(mean_view[items], dim=1).T)
    torch.testing.assert_close(out["kl"], 0.7 * symmetric_bernoulli_kl(p_g, p_t))
    torch.testing.assert_close(out["loss"], out["bpr"] + out["neighbor"] + out["kl"])


def test_damrs_n_pseudo_sets_how_many_pseudo_neighbours_the_discrimination_uses():
    """``n_pseudo`` is the k of both pseudo-neighbour sets (the authors' TikTok code: knn_k = 5)."""
    from graphrec.blocks.denoise_align import neighbour_discrimination, neighbour_probabilities, pseudo_neighbours

    model, _ = build("damrs", knn_k=3, neighbor_weight=1.0, n_pseudo=4)
    batch = BPRBatch(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8]))
    got = model.loss(batch)["neighbor"]
    with torch.no_grad():
        _, _, views = model.forward_all()
    order = [views[v] for v in ("image", "text", "behavior")]
    items = torch.cat([batch.pos, batch.neg]).unique()
    probs = [neighbour_probabilities(t[items], t) for t in order]

    def reference(k):
        return sum(neighbour_discrimination(*pseudo_neighbours(probs, v, k), t[items], t, 0.2) for v, t in enumerate(order)) / 3

    torch.testing.assert_close(got.detach(), reference(4))
    assert not torch.isclose(got.detach(), reference(10))  # the default k would give another value
    with pytest.raises(GraphrecError, match="n_pseudo"):
        build("damrs", n_pseudo=0)


def test_damrs_tiktok_preset_is_the_authors_tiktok_config():
    from pathlib import Path

    from graphrec.config import resolve_config

    path = Path(__file__).resolve().parents[1] / "configs" / "damrs" / "tiktok.yaml"
    cfg = resolve_config("damrs", MODELS.get("damrs").default_config, [path])
    got = {k: cfg[k] for k in ("n_ui_layers", "n_mm_layers", "knn_k", "n_pseudo", "kl_weight", "neighbor_weight", "train_batch_size", "learning_rate")}
    assert got == {"n_ui_layers": 2, "n_mm_layers": 2, "knn_k": 5, "n_pseudo": 5, "kl_weight": 1.0, "neighbor_weight": 0.001, "train_batch_size": 4096, "learning_rate": 1e-3}


# ----------------------------------------------------------------------------- GUME
def test_gume_enhances_the_graph_with_the_neighbours_every_modality_shares():
    from graphrec.graph.enhanced import modality_neighbours
    from graphrec.graph.heterograph import IU, UI

    model, ds = build("gume", knn_k=4)
    neigh = modality_neighbours(ds.features, ds.missing.missing, 4)
    for m, a in neigh.items():  # an item missing m has only itself, and nobody has it
        miss = ds.missing.missing[m]
        rows = a.toarray()
        assert (rows[miss].sum(1) == 1).all() and (rows[miss, np.flatnonzero(miss)] == 1).all()
        assert not rows[~miss][:, miss].any()
    shared = (neigh["image"].toarray() > 0) & (neigh["text"].toarray() > 0)
    np.fill_diagonal(shared, False)
    rel = ("item", "knn_enhanced", "item")
    src, dst = model.graph.edges(etype=rel)
    got = np.zeros_like(shared)
    got[dst.numpy(), src.numpy()] = True  # edge j -> i: item i aggregates from j
    assert (got == shared).all() and shared.any()
    deg_u = np.bincount(ds.train[:, 0], minlength=ds.n_users)
    deg_i = np.bincount(ds.train[:, 1], minlength=ds.n_items) + shared.sum(1)
    u, i = (t.numpy() for t in model.graph.edges(etype=UI))
    np.testing.assert_allclose(model.graph.edges[UI].data["w_enh"].numpy(), 1 / np.sqrt((deg_u[u] + 1e-7) * (deg_i[i] + 1e-7)), rtol=1e-5)
    np.testing.assert_allclose(model.graph.edges[rel].data["w"].numpy(), 1 / np.sqrt((deg_i[dst.numpy()] + 1e-7) * (deg_i[src.numpy()] + 1e-7)), rtol=1e-5)
    plain, _ = build("gume", knn_k=4, enhance_graph=False)
    assert plain.graph.num_edges(rel) == 0
    torch.testing.assert_close(plain.graph.edges[IU].data["w_enh"], plain.graph.edges[IU].data["w"])  # plain LightGCN weights
    assert BLOCKS.is_builtin("enhanced_conv")


def test_gume_final_representation_is_the_id_view_plus_mgcns_fusion():
    from graphrec.models.gume import moment_gap

    model, _ = build("gume", knn_k=3)
    with torch.no_grad():
        v = model.views()
        torch.testing.assert_close(v["final"], v["id"] + model.fuser(v["explicit"], v["id"]))
        u, i = model.representations()
        torch.testing.assert_close(torch.cat([u, i]), v["final"])
    out = model.loss(BPRBatch(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])))
    assert all(torch.isfinite(x) for x in out.values())
    out["loss"].backward()
    assert all(p.grad is not None for p in model.extended_users.values())  # the extended user tables are trained
    a = torch.randn(5, 3)
    assert moment_gap(a, a).item() == 0.0
    torch.testing.assert_close(moment_gap(a, a + 1.0), torch.tensor(1.0))  # a shifted table: only the means differ


def test_gume_loss_terms_are_their_formulas():
    """GUME's terms against a re-computation: BPR + the two regularisers, the moment gap over the positives
    observing both modalities, the ID/integration contrast at bm_temp (items: positives observing every
    modality) and the user-modality contrast at um_temp with two noisy copies of each user table."""
    from graphrec.blocks.generators import perturb
    from graphrec.blocks.infonce import infonce
    from graphrec.models.gume import moment_gap

    model, ds = build("gume", knn_k=3, bm_weight=0.3, bm_temp=0.7, um_weight=0.2, um_temp=0.3, vt_weight=0.5, reg_weight_1=0.01, reg_weight_2=0.02)
    obs = model.observed
    both = torch.nonzero(obs.all(1)).squeeze(1)[:3]
    partial = torch.nonzero(~obs.all(1)).squeeze(1)[:2]
    assert len(both) == 3 and len(partial) == 2
    batch = BPRBatch(torch.tensor([0, 1, 2, 3, 4]), torch.cat([both, partial]), torch.tensor([10, 11, 12, 13, 14]))
    torch.manual_seed(7)
    out = model.loss(batch)
    torch.manual_seed(7)
    v = model.views()
    split = [ds.n_users, ds.n_items]
    user, item = torch.split(v["final"], split)
    u, pos, neg = batch.users, batch.pos, batch.neg
    bpr = -F.logsigmoid((user[u] * item[pos]).sum(1) - (user[u] * item[neg]).sum(1)).mean()
    torch.testing.assert_close(out["bpr"], bpr)
    iu, ii = torch.split(v["integration"], split)
    du, di = torch.split(v["id"], split)
    xu, xi = torch.split(v["extended"], split)
    ea, et = (v["explicit"][m][ds.n_users + both] for m in ("image", "text"))
    bm = infonce(iu[u], du[u], 0.7) + infonce(ii[both], di[both], 0.7)
    torch.testing.assert_close(out["align"], 0.5 * moment_gap(ea, et) + 0.3 * bm)
    noisy = infonce(perturb(iu[u], 0.1), perturb(iu[u], 0.1), 0.3) + infonce(perturb(xu[u], 0.1), perturb(xu[u], 0.1), 0.3)
    torch.testing.assert_close(out["um"], 0.2 * (infonce(xu[u], iu[u], 0.3) + noisy))
    reg = 0.01 * 0.5 * (user[u].pow(2).sum() + item[pos].pow(2).sum() + item[neg].pow(2).sum()) / 5 + 0.02 * 0.5 * xi[pos].pow(2).sum() / 5
    torch.testing.assert_close(out["reg"], reg)
    torch.testing.assert_close(out["loss"], out["bpr"] + out["reg"] + out["align"] + out["um"])


@pytest.mark.parametrize("name", ["lgmrec", "mmgcn", "grcn"])
def test_regularisers_are_their_formulas(name):
    """The L2 terms (the other terms are checked above): LGMRec's Frobenius norms of the batch's final
    rows over B; MMGCN's and GRCN's mean squares of the batch's ID rows plus the users' preferences
    (MMGCN: every user's, GRCN: the batch's)."""
    model, ds = build(name, reg_weight=0.5)
    batch = BPRBatch(torch.tensor([0, 1, 1]), torch.tensor([2, 3, 4]), torch.tensor([5, 6, 7]))
    torch.manual_seed(0)
    out = model.loss(batch)
    u, pos, neg = batch.users, batch.pos, batch.neg
    if name == "lgmrec":
        torch.manual_seed(0)
        final, _ = model.views()
        user, item = torch.split(final, [ds.n_users, ds.n_items])
        want = (user[u].norm() + item[pos].norm() + item[neg].norm()) / 3
    else:
        e_u, e_i = model.ids[: ds.n_users], model.ids[ds.n_users :]
        want = e_u[u].pow(2).mean() + torch.cat([e_i[pos], e_i[neg]]).pow(2).mean()
        rows = slice(None) if name == "mmgcn" else u
        want = want + sum(p[rows].pow(2).mean() for p in model.preferences.values())
    torch.testing.assert_close(out["reg"], 0.5 * want)


# ----------------------------------------------------------------------------- quality
@pytest.mark.slow
@pytest.mark.parametrize("name", ["milk", "sibrar"])
def test_missing_modality_aware_baselines_beat_popularity(name):
    """Trained briefly on the embedded set (a third of the items miss modalities), the content-driven
    MILK and SiBraR rank far above popularity (measured: about 2.1x at these settings)."""
    from graphrec.eval.evaluator import Evaluator, popularity_scorer
    from graphrec.train.seed import set_seed
    from graphrec.train.trainer import Trainer

    cfg = small_config(name, synth_users=300, synth_items=400, epochs=8, eval_step=4, learning_rate=0.01, embedding_size=32)
    ds = load_dataset(cfg)
    set_seed(cfg["seed"])
    result = Trainer(MODELS.get(name)(ds, cfg), ds, cfg, progress=False).fit()
    pop = Evaluator(ds, topk=cfg["topk"]).evaluate(popularity_scorer(ds), "test").metrics["recall@20"]
    assert result.test.metrics["recall@20"] > 1.5 * pop, (result.test.metrics["recall@20"], pop)


# ----------------------------------------------------------------------------- items added after training
def _new_items(ds):
    from graphrec.data.catalogue import NewItems

    feats = {m: ds.features[m][:3].astype(np.float32).copy() for m in ds.modalities}
    feats["text"][1] = np.nan  # new item 1 has no text
    feats["image"][2] = np.nan
    feats["text"][2] = np.nan  # new item 2 has nothing
    return NewItems.from_arrays(feats, {m: ds.features[m].shape[1] for m in ds.modalities})


def test_milk_and_sibrar_score_new_items_from_the_modalities_they_have():
    new = None
    for name in ("milk", "sibrar"):
        model, ds = build(name, skip_missing=True)
        model.eval()
        new = _new_items(ds)
        with torch.no_grad():
            reps = model.new_item_representations(new)
            feats, obs = model.new_item_features(new)
            mean_image = model.feature("image")[model.observed[:, 0]].mean(0)
            torch.testing.assert_close(feats["image"][2], mean_image)  # unobserved: the training mean
            if name == "milk":  # l2 feature_norm applied to observed rows, as in training
                torch.testing.assert_close(feats["image"][0].norm(), torch.tensor(1.0))
                embed = {m: model.projections[m](feats[m]) for m in model.modalities}
            else:
                embed = {m: F.normalize(v, dim=1) for m, v in model.single_branch(feats).items()}
            torch.testing.assert_close(reps[0], (embed["image"][0] + embed["text"][0]) / 2)
            torch.testing.assert_close(reps[1], embed["image"][1])  # no text: from its image alone
            torch.testing.assert_close(reps[2], (embed["image"][2] + embed["text"][2]) / 2)  # nothing: the means
        items, _ = model.recommend(np.array([0, 1]), 5, new_items=new)
        assert items.shape == (2, 5) and items.max() < ds.n_items + 3
    assert new is not None


def test_cli_recommends_new_items_with_sibrar(tmp_path):
    from conftest import invoke

    run = tmp_path / "run"
    r = invoke("fit", "sibrar", "--out", run, "--quiet", "--set", "synth_users=60", "--set", "synth_items=80", "--set", "epochs=1", "--set", "embedding_size=8")
    assert r.exit_code == 0, r.output
    _, ds = build("sibrar")
    d = tmp_path / "new"
    d.mkdir()
    for m in ds.modalities:
        np.save(d / f"{m}_feat.npy", ds.features[m][:3].astype(np.float32))
    out = tmp_path / "r.tsv"
    r = invoke("recommend", run / "model.pt", "--out", out, "--new-items", d, "-k", "83")
    assert r.exit_code == 0, r.output
    ranked = {int(line.split("\t")[2]) for line in out.read_text().splitlines()[1:] if line.startswith("0\t")}
    assert {80, 81, 82} <= ranked


def test_recommend_help_names_every_model_that_scores_new_items():
    from conftest import invoke

    from graphrec.models.base import RecModel

    help_text = " ".join(invoke("recommend", "--help").output.split())
    scorers = [n for n in MODELS.names() if MODELS.is_builtin(n) and MODELS.get(n).new_item_representations is not RecModel.new_item_representations]
    assert {"milk", "sibrar", "dgmrec_cold"} <= set(scorers)
    for name in scorers:
        assert re.search(rf"(?<![\w-]){name}(?![\w-])", help_text), name


@pytest.mark.parametrize("n, n_items, temp", [(7, 40, 0.2), (12, 60, 0.5), (5, 12, 0.05), (6, 25, 0.005), (4, 9, 0.2)])
def test_damrs_fast_neighbour_loss_equals_the_reference(n, n_items, temp):
    """The trained form (shared cosines, Σ_v P_v once, hand-written gradient) against the
    straightforward per-view reference: same value and same gradient of every view table, also at a
    temperature where the rest underflows against the row maximum and with fewer than 2k items."""
    from graphrec.blocks.denoise_align import neighbour_discrimination, neighbour_loss, neighbour_probabilities, pseudo_neighbours

    gen = torch.Generator().manual_seed(n * n_items)
    tables = [torch.randn(n_items, 5, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    items = torch.randperm(n_items, generator=gen)[:n]
    probs = [neighbour_probabilities(t[items], t) for t in tables]
    want = sum(neighbour_discrimination(*pseudo_neighbours(probs, v), t[items], t, temp) for v, t in enumerate(tables)) / 3
    got = neighbour_loss(tables, items, temp)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for g, w in zip(torch.autograd.grad(got, tables), torch.autograd.grad(want, tables)):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


def test_damrs_kl_from_logits_equals_the_kl_of_probabilities():
    from graphrec.blocks.denoise_align import symmetric_bernoulli_kl, symmetric_bernoulli_kl_logits

    gen = torch.Generator().manual_seed(3)
    x, y = (torch.randn(20, 30, generator=gen, dtype=torch.float64) * 9 for _ in range(2))  # some beyond the clamp
    x.requires_grad_(True)
    want = symmetric_bernoulli_kl(torch.sigmoid(x), torch.sigmoid(y))
    got = symmetric_bernoulli_kl_logits(x, y)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0], rtol=1e-6, atol=1e-12)
