"""DGMRec's blocks against their formulas (spec 4.2, 4.4-4.6, invariants 8.4-8.6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import make_dataset, small_config
from graphrec.blocks.club import CLUB
from graphrec.blocks.encoders import GeneralEncoder, SpecificEncoder
from graphrec.blocks.fusion import ModalityFusion
from graphrec.blocks.generators import FeatureGenerator, ModalityDecoder, perturb
from graphrec.blocks.infonce import infonce, infonce_rows
from graphrec.blocks.item_graph import ItemGraphConv, ItemGraphPropagation
from graphrec.blocks.preference import PreferenceGate
from graphrec.blocks.user_aggregation import UserAggregation
from graphrec.data.dataset import load_dataset
from graphrec.data.sampler import BPRSampler
from graphrec.graph import item_graph_matrix
from graphrec.graph.heterograph import build_heterograph, knn_relation, refine_relation
from graphrec.graph.knn import knn_topk, mask_missing, row_sums, sym_normalize
from graphrec.graph.refinement import refresh_rows
from graphrec.models.dgmrec import DGMRec
from graphrec.registry import BLOCKS, load_builtin
from graphrec.train.seed import set_seed

# user 4 and items 5, 6 have no train row (only valid/test rows)
ROWS = [(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 2, 0), (2, 0, 0), (2, 3, 0), (2, 4, 0), (3, 2, 0), (3, 4, 0),
        (0, 5, 1), (1, 6, 2), (2, 5, 2), (3, 6, 1), (4, 5, 1), (4, 0, 2), (0, 3, 2), (1, 0, 1)]  # fmt: skip
U, N = 5, 7


def t32(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def train_neighbours(train: np.ndarray, n_users: int, n_items: int):
    users_of = {i: [] for i in range(n_items)}
    items_of = {u: [] for u in range(n_users)}
    for u, i in train:
        users_of[int(i)].append(int(u))
        items_of[int(u)].append(int(i))
    return users_of, items_of


# ----------------------------------------------------------------------------- encoders
def test_blocks_are_registered():
    load_builtin()
    for name in ("general_encoder", "specific_encoder", "preference_gate", "item_graph_conv", "item_graph",
                 "user_aggregation", "club", "feature_generator", "modality_decoder", "modality_fusion"):  # fmt: skip
        assert name in BLOCKS, name


@given(n=st.integers(1, 12), d=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_encoder_shapes_and_range(n, d, seed):
    torch.manual_seed(seed)
    dims = {"image": 5, "text": 3, "audio": 7}
    feats = {m: torch.randn(n, dm) * 3 for m, dm in dims.items()}
    for enc in (GeneralEncoder(dims, d), SpecificEncoder(dims, d)):
        out = enc(feats)
        assert set(out) == set(dims)
        for m, h in out.items():
            assert h.shape == (n, d)
            assert torch.all(h > 0) and torch.all(h < 1), m


def test_general_encoder_formula_and_shared_layer():
    torch.manual_seed(0)
    dims = {"image": 6, "text": 4, "audio": 5}
    d = 8
    enc = GeneralEncoder(dims, d)
    feats = {m: torch.randn(10, dm) for m, dm in dims.items()}
    out = enc(feats)
    # one shared d x d layer, one projection per modality: no per-modality copy of S
    linears = [mod for mod in enc.modules() if isinstance(mod, torch.nn.Linear)]
    assert len(linears) == len(dims) + 1
    assert sum(p.numel() for p in enc.parameters()) == sum(dm * d + d for dm in dims.values()) + d * d + d
    for m, x in feats.items():
        ref = torch.sigmoid(enc.shared(torch.tanh(enc.projections[m](x))))
        torch.testing.assert_close(out[m], ref)
    # changing the shared layer changes every modality's output
    with torch.no_grad():
        enc.shared.weight.mul_(-1.0)
    out2 = enc(feats)
    for m in dims:
        assert not torch.allclose(out[m], out2[m]), m
    # gradients of one modality's output reach S and its own projection only
    enc.zero_grad()
    enc({"image": feats["image"]})["image"].sum().backward()
    assert enc.shared.weight.grad is not None and enc.shared.weight.grad.abs().sum() > 0
    assert enc.projections["image"].weight.grad.abs().sum() > 0
    assert enc.projections["text"].weight.grad is None and enc.projections["audio"].weight.grad is None


def test_specific_encoder_formula_and_independence():
    torch.manual_seed(1)
    dims = {"image": 6, "text": 4}
    enc = SpecificEncoder(dims, 5)
    feats = {m: torch.randn(7, dm) for m, dm in dims.items()}
    out = enc(feats)
    for m, x in feats.items():
        torch.testing.assert_close(out[m], torch.sigmoid(enc.encoders[m](x)))
    with torch.no_grad():
        enc.encoders["text"].weight.mul_(-1.0)
    out2 = enc(feats)
    torch.testing.assert_close(out2["image"], out["image"])  # no sharing between modalities
    assert not torch.allclose(out2["text"], out["text"])


# ----------------------------------------------------------------------------- preference gate
def dense_rho(train, user_emb: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    users_of, _ = train_neighbours(train, user_emb.shape[0], N)
    pi = torch.tanh(user_emb.double() @ w.double().T)
    out = torch.zeros(N, user_emb.shape[1], dtype=torch.float64)
    for i, us in users_of.items():
        if us:
            out[i] = pi[us].mean(0)
    return out


def test_preference_gate_is_mean_of_tanh_over_train_users():
    ds = make_dataset(ROWS, n_users=U, n_items=N)
    g = build_heterograph(U, N, ds.train)
    torch.manual_seed(0)
    gate = PreferenceGate(["image", "text"], 6)
    e = torch.randn(U, 6)
    pi, rho = gate(g, e)
    for m in ("image", "text"):
        w = gate.maps[m].weight
        assert gate.maps[m].bias is None  # W_m has no bias
        torch.testing.assert_close(pi[m], torch.tanh(e @ w.T))
        assert rho[m].shape == (N, 6)
        torch.testing.assert_close(rho[m].double(), dense_rho(ds.train, e, w), atol=1e-6, rtol=1e-5)
        # spec 8.4: exactly 0 for items without a train user (5 and 6 have valid/test rows only)
        assert torch.equal(rho[m][[5, 6]], torch.zeros(2, 6))
        assert rho[m][:5].abs().sum(1).min() > 0
    # the gate: element-wise product, no extra sigmoid
    x = {"image": torch.randn(N, 6), "text": torch.randn(N, 6)}
    gated = PreferenceGate.gate(rho, x)
    for m in x:
        torch.testing.assert_close(gated[m], rho[m] * x[m])


def test_model_gate_and_user_features_use_train_edges_only():
    rng = np.random.default_rng(0)
    feats = {"image": rng.normal(size=(N, 5)).astype(np.float32), "text": rng.normal(size=(N, 4)).astype(np.float32)}
    ds = make_dataset(ROWS, n_users=U, n_items=N, features=feats)
    cfg = small_config("dgmrec", embedding_size=6, knn_k=3)
    torch.manual_seed(0)
    model = DGMRec(ds, cfg)
    # the model's graph holds the train pairs only
    src, dst = model.graph.edges(etype="ui")
    assert sorted(zip(src.tolist(), dst.tolist())) == sorted(map(tuple, ds.train.tolist()))
    f = model.propagate(model.graph)
    for m in ("image", "text"):
        ref = dense_rho(ds.train, model.user_emb.detach(), model.preference.maps[m].weight.detach())
        torch.testing.assert_close(f["rho"][m].detach().double(), ref, atol=1e-6, rtol=1e-5)
        assert torch.equal(f["rho"][m][[5, 6]].detach(), torch.zeros(2, 6))
        # user 4 has no train item: zero user modality features
        assert torch.equal(f["GU"][m][4].detach(), torch.zeros(6))


# ----------------------------------------------------------------------------- item graph propagation
def refined_item_graph(n: int = 30, d: int = 6, k: int = 4, seed: int = 0):
    """A normalised masked kNN graph of one modality whose missing rows were refreshed once."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    missing = np.zeros(n, dtype=bool)
    missing[rng.choice(n, n // 3, replace=False)] = True
    raw = knn_topk(x, k)
    a = sym_normalize(mask_missing(raw, missing))
    x2 = x.copy()
    x2[missing] = rng.normal(size=(int(missing.sum()), d))
    a2, _ = refresh_rows(a, torch.from_numpy(x2), np.flatnonzero(missing), k, 0.7, row_sums(raw), exact=True)
    return a2, missing


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_item_propagation_equals_dense_power(n_layers):
    a, missing = refined_item_graph()
    n = a.shape[0]
    train = np.array([[0, 0], [1, 1]])
    g = build_heterograph(2, n, train, {"image": a, "text": sym_normalize(knn_topk(np.eye(n), 2))}, {"image": missing})
    assert g.num_edges(refine_relation("image")) > 0 and g.num_edges(knn_relation("image")) > 0
    # the heterograph holds exactly Ã (knn + refine relations summed)
    rec = item_graph_matrix(g, "image")
    np.testing.assert_allclose(rec.toarray(), a.toarray(), rtol=0, atol=0)
    torch.manual_seed(n_layers)
    h = torch.randn(n, 5)
    dense = torch.from_numpy(a.toarray()).double()
    ref = h.double()
    for _ in range(n_layers):
        ref = dense @ ref  # last layer only: no layer mean, no residual
    out = ItemGraphPropagation(n_layers)(g, h, "image")
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    # one conv step reads both relations: dropping the refine relation changes the result
    conv = ItemGraphConv()
    one = conv(g, h, "image")
    knn_only = torch.from_numpy(a.toarray() * (~missing)[:, None]).float() @ h
    assert not torch.allclose(one, knn_only, atol=1e-4)
    # the other modality's graph is independent of this one
    torch.testing.assert_close(conv(g, h, "text"), torch.from_numpy(sym_normalize(knn_topk(np.eye(n), 2)).toarray()).float() @ h)


def test_item_propagation_without_item_relations_is_zero():
    g = build_heterograph(2, 4, np.array([[0, 0], [1, 1]]))
    h = torch.randn(4, 3)
    assert torch.equal(ItemGraphConv()(g, h, "image"), torch.zeros(4, 3))


# ----------------------------------------------------------------------------- user aggregation
def test_user_aggregation_is_mean_over_train_items():
    ds = make_dataset(ROWS, n_users=U, n_items=N)
    g = build_heterograph(U, N, ds.train)
    torch.manual_seed(0)
    h = torch.randn(N, 4)
    out = UserAggregation()(g, h)
    assert out.shape == (U, 4)
    _, items_of = train_neighbours(ds.train, U, N)
    for u in range(U):
        if items_of[u]:
            torch.testing.assert_close(out[u], h[items_of[u]].mean(0), atol=1e-6, rtol=1e-5)
        else:
            assert torch.equal(out[u], torch.zeros(4))  # user 4: no train item
    assert not items_of[4]
    # valid/test items (5, 6) never reach a user
    h2 = h.clone()
    h2[[5, 6]] += 100.0
    torch.testing.assert_close(UserAggregation()(g, h2), out)


# ----------------------------------------------------------------------------- CLUB
def test_club_bound_formula():
    torch.manual_seed(0)
    est = CLUB(4, 3, 8)
    x, y = torch.randn(6, 4), torch.randn(6, 3)
    torch.manual_seed(5)
    bound = est(x, y)
    torch.manual_seed(5)
    perm = torch.randperm(6)
    mu, var = est.mu(x), est.logvar(x).exp()
    ref = 0.5 * ((-((mu - y) ** 2) / var).sum(1) - (-((mu - y[perm]) ** 2) / var).sum(1)).mean()
    torch.testing.assert_close(bound, ref)
    lv = est.logvar(torch.randn(100, 4) * 50)
    assert torch.all(lv >= -1) and torch.all(lv <= 1)  # tanh-bounded log-variance
    nll = est.learning_loss(x, y)
    torch.testing.assert_close(nll, -(-((mu - y) ** 2) / var - est.logvar(x)).sum(1).mean())
    assert est(x[:0], y[:0]).item() == 0.0


def test_club_bound_is_zero_in_expectation_for_independent_y():
    """Spec 8.5: with y independent of x the upper bound has mean about 0."""
    torch.manual_seed(0)
    est = CLUB(8, 8, 16)
    with torch.no_grad():
        vals = torch.stack([est(torch.randn(128, 8), torch.randn(128, 8) * 2) for _ in range(300)])
        # scale of one term of the bound, to make the tolerance relative
        x, y = torch.randn(128, 8), torch.randn(128, 8) * 2
        scale = (((est.mu(x) - y) ** 2) / est.logvar(x).exp()).sum(1).mean()
    se = vals.std() / math.sqrt(len(vals))
    assert vals.std() > 0  # the draws do vary
    assert abs(vals.mean()) < 4 * se + 1e-3
    assert abs(vals.mean()) < 0.01 * scale


def test_club_estimator_learns_a_dependency():
    """Spec 8.5: ℓ_est decreases when trained on y = f(x); the bound then detects the dependency."""
    torch.manual_seed(0)
    est = CLUB(8, 8, 32)
    w = torch.randn(8, 8) / 2
    x = torch.randn(256, 8)
    y = torch.tanh(x @ w) * 2
    opt = torch.optim.Adam(est.parameters(), lr=1e-2)
    with torch.no_grad():
        start = est.learning_loss(x, y).item()
    for _ in range(80):
        opt.zero_grad()
        loss = est.learning_loss(x, y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = est.learning_loss(x, y).item()
        dependent = torch.stack([est(x, y) for _ in range(20)]).mean()
        independent = torch.stack([est(torch.randn(256, 8), torch.tanh(torch.randn(256, 8) @ w) * 2) for _ in range(50)]).mean()
    assert end < start - 5.0, (start, end)
    assert dependent > 1.0
    assert dependent > 10 * abs(independent)


# ----------------------------------------------------------------------------- InfoNCE
def test_infonce_identical_orthonormal_views_tend_to_zero():
    for n in (2, 5, 16):
        a = torch.eye(n)
        for tau in (1.0, 0.2, 0.05):
            expected = math.log(1 + (n - 1) * math.exp(-1 / tau))
            assert infonce(a, a * 3.0, tau).item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert infonce(a, a, 0.01).item() < 1e-6


@given(n=st.integers(1, 20), d=st.integers(1, 8), tau=st.floats(0.05, 5.0), seed=st.integers(0, 2**16))
def test_infonce_identical_rows_give_log_n(n, d, tau, seed):
    torch.manual_seed(seed)
    row = torch.rand(1, d) + 0.1
    a = row.repeat(n, 1)
    b = (torch.rand(1, d) + 0.1).repeat(n, 1)
    assert infonce(a, b, tau).item() == pytest.approx(math.log(n), abs=1e-5)


@given(n=st.integers(1, 12), d=st.integers(1, 6), tau=st.floats(0.1, 2.0), seed=st.integers(0, 2**16))
def test_infonce_matches_formula(n, d, tau, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) + 0.01
    b = rng.normal(size=(n, d)) + 0.01
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    s = an @ bn.T / tau
    ref = np.mean([-(s[i, i] - np.log(np.exp(s[i]).sum())) for i in range(n)])  # one direction, A -> B
    assert infonce(t32(a), t32(b), tau).item() == pytest.approx(ref, rel=1e-4, abs=1e-4)


@given(
    n=st.integers(1, 30), n_a=st.integers(1, 8), n_b=st.integers(1, 8), d=st.integers(1, 6),
    tau=st.floats(0.05, 2.0), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_infonce_rows_equals_infonce_on_the_expanded_rows(n, n_a, n_b, d, tau, seed):
    """Value and gradients of the distinct-row form equal those of the plain loss (duplicates kept),
    including rows of a/b that no batch row uses."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n_a, d, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n_b, d, generator=g, dtype=torch.float64, requires_grad=True)
    ia = torch.randint(0, n_a, (n,), generator=g)
    ib = torch.randint(0, n_b, (n,), generator=g)
    got = infonce_rows(a, b, tau, ia, ib)
    ga, gb = torch.autograd.grad(got, (a, b))
    want = infonce(a[ia], b[ib], tau)
    wa, wb = torch.autograd.grad(want, (a, b))
    assert got.item() == pytest.approx(want.item(), rel=1e-9, abs=1e-9)
    torch.testing.assert_close(ga, wa, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(gb, wb, rtol=1e-7, atol=1e-9)


def test_infonce_rows_empty_is_zero():
    a = torch.randn(3, 4, requires_grad=True)
    out = infonce_rows(a, torch.randn(2, 4), 0.2, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(a.grad, torch.zeros_like(a))


def test_infonce_is_one_directional_and_empty_is_zero():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    assert not math.isclose(infonce(a, b, 0.3).item(), infonce(b, a, 0.3).item(), rel_tol=1e-6)
    e = torch.zeros(0, 4, requires_grad=True)
    out = infonce(e, torch.zeros(0, 4), 0.2)
    assert out.item() == 0.0 and not torch.isnan(out)
    out.backward()
    assert e.grad is not None and not torch.isnan(e.grad).any()


# ----------------------------------------------------------------------------- noise ν
@given(n=st.integers(1, 10), d=st.integers(1, 12), seed=st.integers(0, 2**16), zeros=st.booleans())
def test_perturb_norm_and_sign(n, d, seed, zeros):
    torch.manual_seed(seed)
    x = torch.randn(n, d)
    if zeros:
        x[torch.rand(n, d) < 0.3] = 0.0
    torch.manual_seed(seed + 1)
    out = perturb(x, 0.1)
    diff = out - x
    # reconstruct ξ/||ξ|| with the same RNG stream
    torch.manual_seed(seed + 1)
    xi = torch.rand_like(x)
    xi = xi / xi.norm(dim=1, keepdim=True)
    expected_norm = 0.1 * (xi * torch.sign(x)).norm(dim=1)
    torch.testing.assert_close(diff.norm(dim=1), expected_norm, atol=1e-6, rtol=1e-5)
    assert torch.all(diff.norm(dim=1) <= 0.1 + 1e-6)
    # aligned with sign(x): the noise pushes every entry away from zero, zero entries stay
    assert torch.all(diff * torch.sign(x) >= 0)
    assert torch.all(diff[x == 0] == 0)
    assert torch.all(out.abs() >= x.abs() - 1e-7)
    full = (x != 0).all(dim=1)
    torch.testing.assert_close(diff.norm(dim=1)[full], torch.full((int(full.sum()),), 0.1), atol=1e-6, rtol=1e-5)


def test_perturb_is_random_and_can_be_switched_off():
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    assert not torch.equal(perturb(x, 0.1), perturb(x, 0.1))
    assert torch.equal(perturb(x, 0.0), x)
    assert perturb(torch.zeros(0, 3), 0.1).shape == (0, 3)
    torch.manual_seed(3)
    big = perturb(x, 0.5)
    assert torch.allclose((big - x).norm(dim=1), torch.full((4,), 0.5), atol=1e-5)


def test_generator_and_decoder_shapes():
    torch.manual_seed(0)
    gen = FeatureGenerator(10, 5)
    out = gen(torch.randn(3, 10))
    assert out.shape == (3, 5)
    lin1, act, lin2 = gen.net
    assert isinstance(act, torch.nn.Tanh) and lin1.in_features == 10 and lin2.out_features == 5
    dec = ModalityDecoder(5, 9)
    g, s = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(dec(g, s), dec.linear(torch.cat([g, s], 1)))  # general first, no noise by default
    assert not torch.allclose(dec(g, s, 0.1), dec(g, s))


# ----------------------------------------------------------------------------- fusion
@pytest.mark.parametrize("n_mod", [1, 2, 3])
def test_fusion_formula(n_mod):
    torch.manual_seed(n_mod)
    ids = torch.randn(5, 4)
    mods = ["image", "text", "audio"][:n_mod]
    gen = {m: torch.randn(5, 4) for m in mods}
    spe = {m: torch.randn(5, 4) for m in mods}
    out = ModalityFusion()(ids, gen, spe)
    ref = ids + (sum(gen.values()) / n_mod + sum(spe.values())) / (n_mod + 1)
    torch.testing.assert_close(out, ref)
    if n_mod == 2:  # Amazon: ((G_v + G_t)/2 + S_v + S_t)/3
        g1, g2 = gen.values()
        s1, s2 = spe.values()
        torch.testing.assert_close(out, ids + ((g1 + g2) / 2 + s1 + s2) / 3)
    assert torch.equal(ModalityFusion()(ids, {}, {}), ids)


# ----------------------------------------------------------------------------- gradients
def test_gradients_reach_every_block():
    cfg = small_config("dgmrec", train_batch_size=512)
    ds = load_dataset(cfg)
    set_seed(0)
    model = DGMRec(ds, cfg)
    batch = next(iter(BPRSampler(ds.train, ds.n_items, rng=np.random.default_rng(0)).epoch(512)))
    losses = model.loss(batch)
    assert {"gen", "club", "inter"} <= set(losses)
    losses["loss"].backward()
    optimised = {id(p) for p in model.optim_parameters()}
    for name, p in model.named_parameters():
        if name.startswith("club."):
            assert id(p) not in optimised, name  # CLUB has its own optimiser
            continue
        assert id(p) in optimised, name
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    blocks = {"general_encoder", "specific_encoder", "preference", "general_generators", "specific_generators",
              "decoders", "raw", "user_emb", "item_emb"}  # fmt: skip
    assert blocks <= {n.split(".")[0] for n, _ in model.named_parameters()}
    # the estimator's own objective reaches the CLUB parameters
    model.zero_grad()
    feats = {m: model.raw[m].detach() for m in model.modalities}
    g, s = model.general_encoder(feats), model.specific_encoder(feats)
    sum(model.club[m].learning_loss(s[m].detach(), g[m].detach()) for m in model.club).backward()
    for name, p in model.club.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

