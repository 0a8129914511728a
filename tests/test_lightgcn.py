"""LightGCN propagation against the dense formula, gradients, and end-to-end quality vs popularity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_dataset, small_config
from graphrec.blocks.bpr import bpr_loss, l2_reg
from graphrec.blocks.lightgcn import LightGCNConv, LightGCNPropagation
from graphrec.data.dataset import load_dataset
from graphrec.data.sampler import BPRBatch
from graphrec.eval.evaluator import Evaluator, popularity_scorer
from graphrec.graph.heterograph import build_heterograph
from graphrec.models import MFBPR, LightGCN
from graphrec.registry import BLOCKS, MODELS, load_builtin
from graphrec.train.seed import set_seed
from graphrec.train.trainer import Trainer

# user 3 and item 5 have no train edge; user 3 has a valid row only
ROWS = [(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 2, 0), (2, 0, 0), (2, 3, 0), (2, 4, 0), (4, 2, 0), (4, 4, 0),
        (0, 2, 1), (1, 0, 1), (2, 1, 1), (4, 0, 1), (3, 4, 1), (0, 3, 2), (1, 4, 2), (2, 2, 2), (4, 1, 2)]  # fmt: skip
U, N = 5, 6


def dense_adjacency(train: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    a = np.zeros((n_users + n_items, n_users + n_items))
    for u, i in train:
        a[u, n_users + i] = 1
        a[n_users + i, u] = 1
    return a


def dense_lightgcn(train, n_users, n_items, e_u, e_i, n_layers, mode="sym"):
    a = dense_adjacency(train, n_users, n_items)
    deg = a.sum(1) + 1e-7
    if mode == "sym":
        a_hat = a / np.sqrt(np.outer(deg, deg))  # D^-1/2 A D^-1/2
    else:
        a_hat = a / deg[:, None]  # D^-1 A
    h = np.concatenate([e_u, e_i]).astype(np.float64)
    acc, cur = h.copy(), h
    for _ in range(n_layers):
        cur = a_hat @ cur
        acc += cur
    out = acc / (n_layers + 1)
    return out[:n_users], out[n_users:]


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
@pytest.mark.parametrize("mode,weight", [("sym", "w"), ("rw", "w_mean")])
def test_propagation_equals_dense_formula(n_layers, mode, weight):
    ds = make_dataset(ROWS, n_users=U, n_items=N)
    g = build_heterograph(U, N, ds.train)
    rng = np.random.default_rng(n_layers)
    e_u, e_i = rng.normal(size=(U, 4)), rng.normal(size=(N, 4))
    prop = LightGCNPropagation(n_layers, weight=weight)
    out_u, out_i = prop(g, torch.tensor(e_u, dtype=torch.float32), torch.tensor(e_i, dtype=torch.float32))
    ref_u, ref_i = dense_lightgcn(ds.train, U, N, e_u, e_i, n_layers, mode)
    np.testing.assert_allclose(out_u.numpy(), ref_u, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_i.numpy(), ref_i, rtol=1e-5, atol=1e-6)
    # zero-degree nodes: E / (L + 1)
    np.testing.assert_allclose(out_u[3].numpy(), e_u[3] / (n_layers + 1), rtol=1e-6)
    np.testing.assert_allclose(out_i[5].numpy(), e_i[5] / (n_layers + 1), rtol=1e-6)


def test_single_conv_layer():
    ds = make_dataset(ROWS, n_users=U, n_items=N)
    g = build_heterograph(U, N, ds.train)
    e_u, e_i = torch.randn(U, 3), torch.randn(N, 3)
    out = LightGCNConv()(g, {"user": e_u, "item": e_i})
    a = dense_adjacency(ds.train, U, N)
    deg = a.sum(1) + 1e-7
    a_hat = a / np.sqrt(np.outer(deg, deg))
    ref = a_hat @ np.concatenate([e_u.numpy(), e_i.numpy()])
    np.testing.assert_allclose(out["user"].numpy(), ref[:U], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["item"].numpy(), ref[U:], rtol=1e-5, atol=1e-6)
    assert "w" in LightGCNConv().extra_repr()


def test_lightgcn_with_mean_conv_block_is_row_normalised():
    """``ui_block=lightgcn_mean_conv``: LightGCN with CI2MG's ID propagation ``D^-1 A``."""
    load_builtin()
    ds = make_dataset(ROWS, n_users=U, n_items=N)
    cfg = small_config("lightgcn", embedding_size=8, n_layers=2, ui_block="lightgcn_mean_conv")
    model = LightGCN(ds, cfg)
    user, item = model.representations()
    e_u, e_i = model.user_emb.detach().numpy(), model.item_emb.detach().numpy()
    ref_u, ref_i = dense_lightgcn(ds.train, U, N, e_u, e_i, 2, mode="rw")
    np.testing.assert_allclose(user.detach().numpy(), ref_u, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(item.detach().numpy(), ref_i, rtol=1e-5, atol=1e-6)
    sym_u, _ = dense_lightgcn(ds.train, U, N, e_u, e_i, 2, mode="sym")
    assert not np.allclose(user.detach().numpy(), sym_u, atol=1e-4)


def test_model_representations_and_gradients():
    load_builtin()
    assert MODELS.get("lightgcn") is LightGCN and BLOCKS.get("lightgcn") is LightGCNPropagation
    ds = make_dataset(ROWS, n_users=U, n_items=N)
    cfg = small_config("lightgcn", embedding_size=8, n_layers=2)
    model = LightGCN(ds, cfg)
    user, item = model.representations()
    ref_u, ref_i = dense_lightgcn(
        ds.train, U, N, model.user_emb.detach().numpy(), model.item_emb.detach().numpy(), 2
    )
    np.testing.assert_allclose(user.detach().numpy(), ref_u, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(item.detach().numpy(), ref_i, rtol=1e-5, atol=1e-6)
    # scorer = dot products of the representations
    s = model.scorer().score(torch.tensor([0, 4]))
    np.testing.assert_allclose(s.numpy(), (ref_u[[0, 4]] @ ref_i.T), rtol=1e-4, atol=1e-5)

    batch = BPRBatch(torch.tensor([0, 1, 2]), torch.tensor([0, 2, 3]), torch.tensor([5, 3, 1]))
    losses = model.loss(batch)
    assert set(losses) >= {"loss", "bpr", "reg"}
    u, p, n = user[batch.users], item[batch.pos], item[batch.neg]
    expected_bpr = -torch.nn.functional.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    torch.testing.assert_close(losses["bpr"], expected_bpr)
    torch.testing.assert_close(
        losses["reg"], 1e-4 * l2_reg(model.user_emb[batch.users], model.item_emb[batch.pos], model.item_emb[batch.neg])
    )
    losses["loss"].backward()
    for p_ in (model.user_emb, model.item_emb):
        assert p_.grad is not None and p_.grad.abs().sum() > 0
    # propagation spreads gradients beyond the batch's own rows (user 4 is not in the batch)
    assert model.user_emb.grad[4].abs().sum() > 0


def test_bpr_and_l2_definitions():
    pos, neg = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 3.0])
    expected = -(np.log(1 / (1 + np.exp(-1.0))) + np.log(1 / (1 + np.exp(3.0)))) / 2
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)
    # numerically stable for large margins
    assert torch.isfinite(bpr_loss(torch.tensor([-1e4]), torch.tensor([1e4])))
    a, b = torch.ones(4, 3), torch.full((4, 3), 2.0)
    assert l2_reg(a, b).item() == pytest.approx((12 + 48) / 2 / 4)


def test_mfbpr_gradients_only_touch_batch_rows():
    ds = make_dataset(ROWS, n_users=U, n_items=N)
    model = MFBPR(ds, small_config("mfbpr", embedding_size=8))
    model.loss(BPRBatch(torch.tensor([0]), torch.tensor([0]), torch.tensor([5])))["loss"].backward()
    assert model.user_emb.grad[0].abs().sum() > 0 and model.user_emb.grad[1:].abs().sum() == 0
    assert model.item_emb.grad[[0, 5]].abs().sum() > 0 and model.item_emb.grad[1:5].abs().sum() == 0


def train_and_compare(model_name: str, **overrides):
    cfg = small_config(
        model_name, synth_users=300, synth_items=400, epochs=12, eval_step=4, learning_rate=0.01, **overrides
    )
    ds = load_dataset(cfg)
    set_seed(cfg["seed"])
    model = MODELS.get(model_name)(ds, cfg)
    result = Trainer(model, ds, cfg, progress=False).fit()
    pop = Evaluator(ds, topk=cfg["topk"]).evaluate(popularity_scorer(ds), "test")
    return result, pop


@pytest.mark.slow
def test_lightgcn_beats_popularity():
    result, pop = train_and_compare("lightgcn")
    ours, base = result.test.metrics["recall@20"], pop.metrics["recall@20"]
    assert ours > base * 1.5, (ours, base)
    assert result.best_valid.metrics["recall@20"] > 0


@pytest.mark.slow
def test_mfbpr_beats_popularity():
    result, pop = train_and_compare("mfbpr")
    ours, base = result.test.metrics["recall@20"], pop.metrics["recall@20"]
    assert ours > base * 1.3, (ours, base)
