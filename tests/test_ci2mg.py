"""CI2MG (spec section 5): blocks wired into the model, losses, switches, training, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from graphrec.blocks.modality_aggregation import ModalityAggregation
from graphrec.blocks.sinkhorn import sinkhorn, squared_cost
from graphrec.config import resolve_config
from graphrec.data.dataset import load_dataset
from graphrec.data.masks import MissingModalities
from graphrec.data.sampler import BPRBatch
from graphrec.errors import GraphrecError
from graphrec.eval.evaluator import Evaluator, popularity_scorer
from graphrec.graph.heterograph import IU, UI
from graphrec.models.ci2mg import CI2MG, constant_contrastive
from graphrec.registry import BLOCKS, MODELS, load_builtin

REPO = Path(__file__).resolve().parents[1]
D = 16  # small embedding size keeps the tests fast


def _config(**overrides):
    load_builtin()
    base = {
        "synth_users": 80,
        "synth_items": 120,
        "device": "cpu",
        "epochs": 1,
        "embedding_size": D,
        "n_prototypes": 8,
        "train_batch_size": 256,
    }
    base.update(overrides)
    return resolve_config("ci2mg", CI2MG.default_config, overrides=base)


def _model(seed: int = 0, **overrides) -> tuple[CI2MG, object]:
    cfg = _config(**overrides)
    ds = load_dataset(cfg)
    torch.manual_seed(seed)
    return CI2MG(ds, cfg), ds


def _batch(ds, n: int = 128, seed: int = 0) -> BPRBatch:
    rng = np.random.default_rng(seed)
    rows = ds.train[rng.choice(len(ds.train), size=min(n, len(ds.train)), replace=False)]
    neg = rng.integers(0, ds.n_items, size=len(rows))
    return BPRBatch(torch.from_numpy(rows[:, 0]), torch.from_numpy(rows[:, 1]), torch.from_numpy(neg))


# ----------------------------------------------------------------------------- registry and config
def test_registered_with_blocks_and_defaults():
    load_builtin()
    assert MODELS.get("ci2mg") is CI2MG
    for name in ("modality_aggregation", "hypergraph_prototype_conv", "sinkhorn_transport", "lightgcn"):
        assert name in BLOCKS
    assert BLOCKS.get("modality_aggregation").relations == (UI, IU)
    cfg = CI2MG.default_config
    assert cfg["n_ui_layers"] == 3 and cfg["n_hyper_layers"] == 2 and cfg["n_prototypes"] == 64
    assert cfg["ot_epsilon"] == 5.0 and cfg["ot_iterations"] == 10
    assert cfg["lamb_1"] == 1.0 and cfg["lamb_2"] == 1.0 and cfg["temp"] == 1.0
    assert cfg["ci2mg_contrastive"] == "paper" and cfg["ci2mg_loss_weighting"] == "code"
    assert cfg["reference_compat"] is False and cfg["ci2mg_train_delta"] is False
    # the settings of the documented comparisons (docs/models/ci2mg.md); the presets keep the authors'
    assert (cfg["epochs"], cfg["train_batch_size"], cfg["learning_rate"], cfg["stopping_step"]) == (300, 1024, 3e-3, 50)


@pytest.mark.parametrize("name", ["baby", "sports", "clothing", "tiktok"])
def test_presets_resolve(name):
    load_builtin()
    path = REPO / "configs" / "ci2mg" / f"{name}.yaml"
    cfg = resolve_config("ci2mg", CI2MG.default_config, [path])
    assert cfg["eval_mask_valid_in_test"] is False
    assert cfg["data_dir"] is None
    assert cfg["learning_rate"] == (1e-4 if name in ("sports", "clothing") else 1e-3)
    assert cfg["train_batch_size"] == (4096 if name == "tiktok" else 2048)


@pytest.mark.parametrize("key,value", [("ci2mg_contrastive", "both"), ("ci2mg_loss_weighting", "x"), ("ot_epsilon", 0.0)])
def test_bad_values_are_errors(key, value):
    cfg = _config(**{key: value})
    with pytest.raises(GraphrecError, match=key):
        CI2MG(load_dataset(cfg), cfg)


# ----------------------------------------------------------------------------- blocks on the dataset graph
def test_modality_aggregation_is_two_hop_mean():
    model, ds = _model()
    y = torch.from_numpy(ds.train_matrix().toarray())
    p = torch.randn(ds.n_items, 5)
    fu, fv = ModalityAggregation()(model.graph, p)
    deg_u = y.sum(1, keepdim=True)
    deg_i = y.sum(0).unsqueeze(1)
    torch.testing.assert_close(fu, (y @ p) / (deg_u + 1e-7), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fv, (y.T @ fu) / (deg_i + 1e-7), atol=1e-5, rtol=1e-5)
    no_users = deg_i.squeeze(1) == 0
    if no_users.any():
        assert (fv[no_users] == 0).all()


def test_shapes_and_eval_representations_use_running_stats():
    model, ds = _model()
    m = len(ds.modalities)
    out = model.compute()
    assert out["user"].shape == (ds.n_users, D * (1 + m))
    assert out["item"].shape == (ds.n_items, D * (1 + m))
    for key in ("P", "Q", "Q_hat", "Z"):
        assert len(out[key]) == m and all(t.shape == (ds.n_items, D) for t in out[key])
    # modality parts of the final representations are unit vectors (eq. 13)
    norms = out["item"][:, D:].reshape(ds.n_items, m, D).norm(dim=2)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-4, rtol=0)
    before = model.bn.num_batches_tracked.item()
    model.train()
    model.loss(_batch(ds))
    assert model.bn.num_batches_tracked.item() == before + m  # once per modality per compute()
    model.eval()
    with torch.no_grad():
        u1, i1 = model.representations()
        u2, i2 = model.representations()
        z_eval = model.compute()["Z"][0]
    assert model.bn.num_batches_tracked.item() == before + m  # eval mode does not update statistics
    torch.testing.assert_close(i1, i2)
    expected = model.bn(model.enhance[ds.modalities[0]](torch.cat([model.compute()["Q"][0], model.compute()["Q_hat"][0]], 1)))
    torch.testing.assert_close(z_eval, expected)
    scorer = model.scorer()
    assert scorer.score(torch.tensor([0, 1])).shape == (2, ds.n_items)


def test_inter_modal_generation_is_transport_of_the_target():
    model, ds = _model()
    model.eval()
    with torch.no_grad():
        out = model.compute()
    q_img, q_txt = out["Q"]
    plan = sinkhorn(squared_cost(q_img, q_txt), 5.0, 10)  # T_{v -> t}
    torch.testing.assert_close(out["Q_hat"][1], plan @ q_txt, atol=1e-5, rtol=1e-5)
    plan = sinkhorn(squared_cost(q_txt, q_img), 5.0, 10)  # T_{t -> v}
    torch.testing.assert_close(out["Q_hat"][0], plan @ q_img, atol=1e-5, rtol=1e-5)


def test_intra_only_skips_the_transport(monkeypatch):
    """``inter_modal: false`` (Table 3's "intra only"): Q̂ = Q and no Sinkhorn plan is computed."""
    model, ds = _model(inter_modal=False)
    model.eval()

    def no_transport(*args, **kwargs):
        raise AssertionError("the transport plan was computed")

    monkeypatch.setattr(model.transport, "forward", no_transport)
    monkeypatch.setattr(model.transport, "from_cost", no_transport)
    with torch.no_grad():
        out = model.compute()
    for q, q_hat in zip(out["Q"], out["Q_hat"]):
        torch.testing.assert_close(q_hat, q)
    model.train()
    model.loss(_batch(ds))["loss"].backward()  # still trains (ΔT gets no gradient)
    model, ds = _model(inter_modal=False, ci2mg_train_delta=True)
    model.loss(_batch(ds))["loss"].backward()
    assert model.delta(0).grad is None


# ----------------------------------------------------------------------------- losses and gradients
@pytest.mark.parametrize("train_delta", [False, True])
def test_gradients_reach_every_parameter(train_delta):
    model, ds = _model(ci2mg_train_delta=train_delta)
    losses = model.loss(_batch(ds))
    assert set(losses) == {"loss", "bpr", "contrastive", "rec"}
    losses["loss"].backward()
    names = dict(model.named_parameters())
    # ΔT is a parameter only with ci2mg_train_delta (and then trained); otherwise a zero buffer
    assert ("delta_0" in names and "delta_1" in names) is train_delta
    for name, p in names.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_delta_is_an_untrained_zero_by_default():
    """Default: ΔT_m stays exactly 0 through training (spec 5.1), so Q̂_m = T_m Q_m.

    Before ``ci2mg_train_delta`` (default false) existed, ΔT was trained by default and its
    row-broadcast shift grew without bound (TikTok: ‖ΔT Q‖ ≈ 5,900 for the image modality by
    epoch 11) and pulled L_rec up (docs/models/ci2mg.md, "Reading the loss curves").
    """
    from graphrec.train.trainer import Trainer

    cfg = _config(epochs=2, eval_step=2, learning_rate=1e-2)
    ds = load_dataset(cfg)
    torch.manual_seed(0)
    model = CI2MG(ds, cfg)
    assert not any(n.startswith("delta_") for n, _ in model.named_parameters())
    Trainer(model, ds, cfg, progress=False).fit()
    for k in range(len(ds.modalities)):
        assert float(model.delta(k).abs().max()) == 0.0
    model.eval()
    with torch.no_grad():
        out = model.compute()
    plan = sinkhorn(squared_cost(out["Q"][0], out["Q"][1]), 5.0, 10)
    torch.testing.assert_close(out["Q_hat"][1], plan @ out["Q"][1], atol=1e-5, rtol=1e-5)


def test_a_trained_delta_is_invisible_to_training_batchnorm():
    """Why a trained ΔT is not anchored: ``ΔT_m Q_m`` adds one vector to every item's ``Q̂_m``, and
    training-mode BatchNorm (statistics over all items) removes any such shift from ``Z_m``. So
    L_rec and L_bpr do not depend on ΔT (up to float rounding, which grows with the shift), and
    their gradient into ΔT is 0 in exact arithmetic: what reaches ΔT is the contrastive term's
    small gradient plus rounding noise, each turned into full-size steps by Adam."""
    model, ds = _model(ci2mg_train_delta=True)
    model.train()
    batch = _batch(ds)
    bn_state = {k: v.clone() for k, v in model.bn.state_dict().items()}
    base = model.loss(batch)
    g_delta, g_phi = torch.autograd.grad(base["rec"] + base["bpr"], [model.delta_0, model.projections["image"].weight])
    assert float(g_delta.abs().max()) < 0.01 * float(g_phi.abs().max())
    with torch.no_grad():
        model.delta_0.add_(torch.rand(ds.n_items) * 2.0)  # an item-varying ΔT (shift ≈ 60 per column)
        model.delta_1.sub_(torch.rand(ds.n_items) * 2.0)
    model.bn.load_state_dict(bn_state)
    moved = model.loss(batch)
    torch.testing.assert_close(moved["rec"], base["rec"], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(moved["bpr"], base["bpr"], rtol=1e-3, atol=1e-3)


def test_checkpoint_trained_with_delta_loads_it():
    """A checkpoint written when ΔT was trained by default (no ``ci2mg_train_delta`` key) is evaluated
    with its trained ΔT: the persistent zero buffer takes the saved values and ``Q̂ = (T + ΔT) Q``."""
    trained, ds = _model(ci2mg_train_delta=True)
    with torch.no_grad():
        trained.delta_0.fill_(0.01)
    state = trained.state_dict()
    loaded = CI2MG(ds, _config())
    loaded.load_state_dict(state)
    assert not isinstance(loaded.delta_0, torch.nn.Parameter)
    trained.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.compute()["item"], trained.compute()["item"])


def test_reference_compat_constant_contrastive_and_frozen_delta():
    model, ds = _model(reference_compat=True)
    assert model.contrastive == "code" and model.loss_weighting == "code"
    params = dict(model.named_parameters())
    assert "delta_0" not in params and "delta_0" in dict(model.named_buffers())
    assert float(model.delta_0.abs().sum()) == 0.0
    losses = model.loss(_batch(ds))
    m = len(ds.modalities)
    assert math.isclose(float(losses["contrastive"]), m * math.log(2), rel_tol=1e-6)
    grads = torch.autograd.grad(losses["contrastive"], list(params.values()), allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0.0 for g in grads)
    # weighting "code": L = L_rec + lamb_1 L_s + lamb_2 L_bpr
    total = losses["rec"] + losses["contrastive"] + losses["bpr"]
    torch.testing.assert_close(losses["loss"], total)
    # the state dict keys do not depend on reference_compat (checkpoints load both ways)
    for train_delta in (False, True):
        other, _ = _model(ci2mg_train_delta=train_delta)
        assert set(model.state_dict()) == set(other.state_dict())


def test_constant_contrastive_function():
    q = torch.rand(7, 4, requires_grad=True)
    qh = torch.rand(7, 4)
    val = constant_contrastive(q, qh, 0.3)
    assert math.isclose(float(val), math.log(2), rel_tol=1e-6)
    (g,) = torch.autograd.grad(val, q)
    assert float(g.abs().max()) == 0.0
    assert float(constant_contrastive(q[:0], qh[:0], 1.0)) == 0.0


def test_paper_contrastive_has_gradient():
    model, ds = _model(ci2mg_contrastive="paper", ci2mg_train_delta=True)
    losses = model.loss(_batch(ds))
    hyper = [p for n, p in model.named_parameters() if n.startswith("hypergraphs.")]
    grads = torch.autograd.grad(losses["contrastive"], hyper + [model.delta_0], allow_unused=True)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads[:-1])
    assert grads[-1] is not None and float(grads[-1].abs().sum()) > 0
    # "code" contrastive without reference_compat keeps ΔT trainable (when asked for)
    model2, _ = _model(ci2mg_contrastive="code", ci2mg_train_delta=True)
    assert isinstance(model2.delta_0, torch.nn.Parameter)


def test_paper_loss_weighting():
    model, ds = _model(ci2mg_loss_weighting="paper", lamb_1=0.5, lamb_2=0.25)
    losses = model.loss(_batch(ds))
    torch.testing.assert_close(losses["loss"], losses["bpr"] + 0.5 * losses["contrastive"] + 0.25 * losses["rec"])
    model, ds = _model(lamb_1=0.5, lamb_2=0.25)
    losses = model.loss(_batch(ds))
    torch.testing.assert_close(losses["loss"], losses["rec"] + 0.5 * losses["contrastive"] + 0.25 * losses["bpr"])


def test_missing_modality_items_are_left_out_of_the_losses():
    cfg = _config(reference_compat=True)
    ds = load_dataset(cfg)
    n = ds.n_items
    # every item misses text: only the image terms remain
    ds.missing = MissingModalities(ds.modalities, {"image": np.zeros(n, bool), "text": np.ones(n, bool)})
    torch.manual_seed(0)
    model = CI2MG(ds, cfg)
    batch = _batch(ds)
    losses = model.loss(batch)
    assert math.isclose(float(losses["contrastive"]), math.log(2), rel_tol=1e-6)
    out = model.compute()
    pos = torch.unique(batch.pos)
    expected = F.mse_loss(out["Z"][0][pos], out["P"][0][pos])
    torch.testing.assert_close(losses["rec"], expected, atol=1e-4, rtol=1e-4)


def test_one_and_three_modalities():
    model, ds = _model(synth_modalities=["image"])
    out = model.compute()
    torch.testing.assert_close(out["Q_hat"][0], out["Q"][0])  # no OT partner: Q̂ = Q
    assert out["item"].shape == (ds.n_items, 2 * D)
    assert not hasattr(model, "delta_0")
    loss = model.loss(_batch(ds))["loss"]
    assert torch.isfinite(loss)
    loss.backward()

    model, ds = _model(synth_modalities=["image", "text", "audio"])
    model.eval()
    with torch.no_grad():
        out = model.compute()
    q = out["Q"]
    plan = sinkhorn(squared_cost(q[0] + q[1], q[2]), 5.0, 10)  # audio generated from image + text
    torch.testing.assert_close(out["Q_hat"][2], plan @ q[2], atol=1e-5, rtol=1e-5)
    assert out["user"].shape == (ds.n_users, 4 * D)
    model.train()
    assert torch.isfinite(model.loss(_batch(ds))["loss"])


def test_ot_batch_items_subset():
    model, ds = _model(ot_batch_items=30, ci2mg_train_delta=True)
    out = model.compute()
    assert all(t.shape == (ds.n_items, D) for t in out["Q_hat"])
    model.loss(_batch(ds))["loss"].backward()
    assert model.delta_0.grad is not None
    model.eval()
    with torch.no_grad():
        a = model.representations()[1]
        b = model.representations()[1]
    torch.testing.assert_close(a, b)  # the evaluation subset is fixed


# ----------------------------------------------------------------------------- training and CLI
def test_training_beats_popularity():
    from graphrec.train.seed import set_seed
    from graphrec.train.trainer import Trainer

    cfg = _config(
        synth_users=200, synth_items=300, embedding_size=32, n_prototypes=16, epochs=20, eval_step=5,
        train_batch_size=512, learning_rate=5e-3, seed=7,
    )
    ds = load_dataset(cfg)
    set_seed(7)
    model = CI2MG(ds, cfg)
    result = Trainer(model, ds, cfg, progress=False).fit()
    pop = Evaluator(ds, topk=cfg["topk"]).evaluate(popularity_scorer(ds), "test").metrics["recall@20"]
    got = result.test.metrics["recall@20"]
    assert got > pop, (got, pop)


def test_cli_fit_and_evaluate(tmp_path):
    from graphrec.cli.main import cli

    out = tmp_path / "run"
    runner = CliRunner()
    sets = ["--set", "synth_users=60", "--set", "synth_items=90", "--set", "embedding_size=8", "--set", "n_prototypes=4"]
    res = runner.invoke(cli, ["fit", "ci2mg", "--epochs", "1", "--quiet", "--out", str(out), *sets])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "ci2mg" and metrics["epochs_run"] == 1
    res = runner.invoke(cli, ["evaluate", str(out), "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.output.strip().splitlines()[-1])
    assert math.isclose(again["metrics"]["recall@20"], metrics["test"]["metrics"]["recall@20"], abs_tol=1e-6)


def test_channel_diagnostic_reads_a_checkpoint(tmp_path):
    """benchmarks/diag_ci2mg_channel.py: 'full' is the model's own evaluation; other models are refused."""
    import importlib.util

    from graphrec.cli.main import cli

    spec = importlib.util.spec_from_file_location("diag_ci2mg_channel", REPO / "benchmarks" / "diag_ci2mg_channel.py")
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    runner = CliRunner()
    sets = ["--set", "synth_users=60", "--set", "synth_items=90", "--set", "embedding_size=8", "--set", "n_prototypes=4"]
    out = tmp_path / "ci2mg"
    assert runner.invoke(cli, ["fit", "ci2mg", "--epochs", "2", "--quiet", "--out", str(out), *sets]).exit_code == 0
    row = diag.diagnose(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isclose(row["recall@20"]["full"]["test"], metrics["test"]["metrics"]["recall@20"], abs_tol=1e-6)
    assert set(row["recall@20"]) == {"full", "id_only", "per_modality_bn"}
    assert set(row["modalities"]) == {"image", "text"}
    for stats in row["modalities"].values():
        assert stats["item_part_spread"] >= 0 and -1 - 1e-6 <= stats["user_mean_cosine"] <= 1 + 1e-6
        assert 0 <= stats["q_saturated"] <= 1
    other = tmp_path / "lightgcn"
    assert runner.invoke(cli, ["fit", "lightgcn", "--epochs", "1", "--quiet", "--out", str(other), *sets[:4]]).exit_code == 0
    with pytest.raises(SystemExit, match="lightgcn checkpoint"):
        diag.diagnose(other)


def test_checkpoint_without_a_later_key_loads_with_its_default(tmp_path):
    """A checkpoint written before a key existed (``inter_modal``, new on 2026-11-23) loads with its default."""
    from graphrec.cli.main import cli
    from graphrec.train.checkpoint import load_model

    out = tmp_path / "run"
    sets = ["--set", "synth_users=60", "--set", "synth_items=90", "--set", "embedding_size=8", "--set", "n_prototypes=4"]
    assert CliRunner().invoke(cli, ["fit", "ci2mg", "--epochs", "1", "--quiet", "--out", str(out), *sets]).exit_code == 0
    payload = torch.load(out / "model.pt", map_location="cpu", weights_only=False)
    del payload["config"]["inter_modal"]
    torch.save(payload, out / "model.pt")
    model, _, _ = load_model(out)
    assert model.use_inter_modal is True


# ----------------------------------------------------------------------------- reading the loss curves
def _load_probe():
    """benchmarks/probe_ci2mg_rec.py as a module (it imports benchmarks/_model_setup.py)."""
    import importlib.util
    import sys

    bench = str(REPO / "benchmarks")
    sys.path.insert(0, bench)
    try:
        spec = importlib.util.spec_from_file_location("probe_ci2mg_rec", REPO / "benchmarks" / "probe_ci2mg_rec.py")
        probe = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(probe)
    finally:
        sys.path.remove(bench)
    return probe


@given(
    z=arrays(np.float32, (6, 4), elements=st.floats(-50, 50, width=32)),
    p=arrays(np.float32, (6, 4), elements=st.floats(-50, 50, width=32)),
)
def test_rec_parts_add_up_to_the_mse(z, p):
    """benchmarks/probe_ci2mg_rec.py splits MSE(Z, P) two ways: norm + direction, column mean + centred."""
    probe = _load_probe()
    zt, pt = torch.from_numpy(z).double(), torch.from_numpy(p).double()
    parts = probe.rec_parts(zt, pt)
    tol = 1e-3 * (1 + parts["mse"])
    assert math.isclose(parts["mse_norm"] + parts["mse_dir"], parts["mse"], abs_tol=tol)
    assert math.isclose(parts["mse_mean"] + parts["mse_centred"], parts["mse"], abs_tol=tol)
    assert parts["mse_norm"] >= 0 and parts["mse_dir"] >= -1e-6 and parts["var_P"] >= 0


@given(
    a=arrays(np.float32, (12, 5), elements=st.floats(0, 1, width=32)),
    b=arrays(np.float32, (12, 5), elements=st.floats(0, 1, width=32)),
)
def test_paper_contrastive_at_temperature_one_stays_near_log_n(a, b):
    """Why the logged ``contrastive`` stays flat near ``M log n``: ``Q_m`` and ``Q̂_m`` are sigmoid outputs
    (non-negative), so every cosine lies in [0, 1], and at τ = 1 each term of the InfoNCE lies in
    ``[log(1 + (n-1)/e), log(1 + (n-1)e)]``, about ``log n ± 1`` (TikTok: n ≈ 1,230 items per batch,
    6.12 ≤ term ≤ 8.11 around log n = 7.11)."""
    from graphrec.blocks.infonce import infonce

    n = a.shape[0]
    a, b = torch.from_numpy(a) + 1e-3, torch.from_numpy(b) + 1e-3  # no zero rows
    value = float(infonce(a, b, 1.0))
    assert math.log(1 + (n - 1) / math.e) - 1e-5 <= value <= math.log(1 + (n - 1) * math.e) + 1e-5


def test_probe_prints_one_line_per_epoch(capsys):
    probe = _load_probe()
    sets = ["synth_users=60", "synth_items=90", "embedding_size=8", "n_prototypes=4", "epochs=2"]
    assert probe.main([a for kv in sets for a in ("--set", kv)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["epoch"] for r in lines[:-1]] == [1, 2] and "test_recall@20" in lines[-1]
    row = lines[0]
    for m in ("image", "text"):
        assert math.isclose(row[m]["mse_mean"] + row[m]["mse_centred"], row[m]["mse"], abs_tol=2e-3)
        assert row[m]["dT_shift"] == 0.0  # ΔT is an untrained zero by default
    assert "valid_recall@20" in row and row["rec"] > 0
