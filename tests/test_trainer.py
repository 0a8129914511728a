"""The training loop (spec 2.2): seeding, early stopping, callbacks, LR schedule, checkpoints, divergence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import small_config
from graphrec.data.dataset import load_dataset
from graphrec.errors import GraphrecError
from graphrec.eval.evaluator import EvalResult
from graphrec.models import MFBPR, LightGCN
from graphrec.registry import MODELS
from graphrec.train.checkpoint import load_model, read_checkpoint, save_checkpoint
from graphrec.train.seed import set_seed
from graphrec.train.trainer import Callback, Trainer, summary_table


def build(model_name="lightgcn", **overrides):
    cfg = small_config(model_name, **overrides)
    ds = load_dataset(cfg)
    set_seed(cfg["seed"])  # spec 2.2: seed, then build the model
    model = MODELS.get(model_name)(ds, cfg)
    return model, ds, cfg


def run(model_name="lightgcn", callbacks=(), **overrides):
    model, ds, cfg = build(model_name, **overrides)
    trainer = Trainer(model, ds, cfg, callbacks=list(callbacks), progress=False)
    return trainer, trainer.fit()


# ----------------------------------------------------------------------------- reproducibility
def test_same_seed_bit_identical():
    t1, r1 = run(epochs=3, seed=5)
    t2, r2 = run(epochs=3, seed=5)
    assert r1.history and [{k: v for k, v in h.items() if k != "seconds"} for h in r1.history] == [
        {k: v for k, v in h.items() if k != "seconds"} for h in r2.history
    ]
    assert r1.test.metrics == r2.test.metrics
    assert r1.best_valid.metrics == r2.best_valid.metrics
    s1, s2 = t1.model.state_dict(), t2.model.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k


def test_deterministic_kernels_make_index_backward_reproducible():
    """On CPU with 2 threads, x[idx]'s backward (repeated idx, as in every BPR loss) accumulates in a
    varying order unless torch's deterministic kernels are on; the trainer turns them on."""
    from graphrec.train.seed import set_deterministic

    before, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(0)
        x, idx = torch.randn(1000, 192, generator=gen), torch.randint(0, 1000, (1024,), generator=gen)
        weights = torch.rand(1024, 192, generator=gen)

        def grad():
            xi = x.clone().requires_grad_(True)
            (xi[idx] * weights).sum().backward()
            return xi.grad

        set_deterministic(True)
        first = grad()
        assert all(torch.equal(first, grad()) for _ in range(8))
        _, _, cfg = build("lightgcn", epochs=1, deterministic=False)
        set_deterministic(True)
        Trainer(*build("lightgcn", epochs=1, deterministic=False)[:2], cfg, progress=False)
        assert not torch.are_deterministic_algorithms_enabled()  # the key is honoured
        Trainer(*build("lightgcn", epochs=1)[:3], progress=False)
        assert torch.are_deterministic_algorithms_enabled()  # default: on
    finally:
        torch.use_deterministic_algorithms(before)
        torch.set_num_threads(threads)


def test_different_seed_differs():
    t1, r1 = run(epochs=2, seed=5)
    t2, r2 = run(epochs=2, seed=6)
    assert not torch.equal(t1.model.user_emb, t2.model.user_emb)
    assert r1.history[0]["loss"] != r2.history[0]["loss"]


# ----------------------------------------------------------------------------- early stopping
class Recorder(Callback):
    def __init__(self):
        self.calls = []
        self.states = {}

    def on_train_start(self, trainer):
        self.calls.append(("train_start",))

    def on_epoch_start(self, trainer, epoch):
        self.calls.append(("epoch_start", epoch))

    def on_epoch_end(self, trainer, epoch, logs):
        assert "loss" in logs and "seconds" in logs
        self.calls.append(("epoch_end", epoch))

    def on_evaluate(self, trainer, epoch, result):
        assert isinstance(result, EvalResult) and result.split == "valid"
        self.calls.append(("evaluate", epoch))
        self.states[epoch + 1] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    def on_train_end(self, trainer, result):
        self.calls.append(("train_end", result.best_epoch))


class ScriptedTrainer(Trainer):
    """Validation scores follow a script; everything else is real."""

    script: list[float] = []
    n_valid = 0

    def evaluate(self, split):
        real = super().evaluate(split)
        if split == "valid":
            real.metrics["recall@20"] = self.script[self.n_valid]
            self.n_valid += 1
        return real


def test_early_stopping_on_scripted_scores_restores_best_state():
    model, ds, cfg = build(epochs=20, stopping_step=2, eval_step=1)
    rec = Recorder()
    trainer = ScriptedTrainer(model, ds, cfg, callbacks=[rec], progress=False)
    # 0.30001 rounds to 0.3: not strictly better (spec 2.2, 4 decimals)
    trainer.script = [0.1, 0.3, 0.2, 0.25, 0.30001, 0.9, 0.9]
    result = trainer.fit()
    assert result.stopped_early
    assert result.epochs_run == 5  # evaluations 3, 4, 5 do not improve: counter 3 > stopping_step 2
    assert result.best_epoch == 2
    assert result.best_valid.metrics["recall@20"] == 0.3
    assert [h["valid_recall@20"] for h in result.history] == [0.1, 0.3, 0.2, 0.25, 0.3]
    # the model holds the parameters of epoch 2, not of the last epoch
    final = trainer.model.state_dict()
    for k, v in rec.states[2].items():
        assert torch.equal(final[k], v), k
    assert not torch.equal(rec.states[2]["user_emb"], rec.states[5]["user_emb"])
    # the test result is that of the restored model
    assert result.test.metrics == Trainer.evaluate(trainer, "test").metrics


def test_best_state_is_a_host_copy_made_after_the_previous_one_is_dropped(monkeypatch):
    import graphrec.train.trainer as trainer_mod

    model, ds, cfg = build(epochs=4, stopping_step=10, eval_step=1)
    trainer = ScriptedTrainer(model, ds, cfg, progress=False)
    trainer.script = [0.1, 0.2, 0.3, 0.4]  # every evaluation improves: four copies
    seen = []
    real_copy = trainer_mod.host_copy

    def watched(state):
        seen.append(trainer.best_state is None)  # the previous best is gone before the next copy
        return real_copy(state)

    monkeypatch.setattr(trainer_mod, "host_copy", watched)
    trainer.fit()
    assert seen == [True] * 4
    best = trainer.best_state
    assert type(best) is type(model.state_dict()) and hasattr(best, "_metadata")
    for k, v in model.state_dict().items():  # a copy: equal values, its own memory, on the host
        assert torch.equal(best[k], v) and best[k].device.type == "cpu" and best[k].data_ptr() != v.data_ptr(), k


def test_early_stopping_when_metric_is_flat():
    # learning_rate 0: nothing changes, so only the first evaluation is an improvement
    _, result = run(epochs=30, learning_rate=0.0, stopping_step=1, eval_step=2)
    assert result.stopped_early
    assert result.best_epoch == 2
    assert result.epochs_run == 6  # evaluations at epochs 2 (best), 4, 6 -> counter 2 > 1


def test_stopping_min_epochs_rules_out_an_early_stop():
    # the same flat run as above, but early stopping may act only from epoch 10 on
    _, result = run(epochs=30, learning_rate=0.0, stopping_step=1, eval_step=2, stopping_min_epochs=10)
    assert result.stopped_early
    assert result.best_epoch == 2
    assert result.epochs_run == 10


def test_no_early_stop_without_stalling():
    _, result = run(epochs=3, stopping_step=10)
    assert not result.stopped_early and result.epochs_run == 3 and len(result.history) == 3


def test_callbacks_receive_hooks_in_order():
    rec = Recorder()
    _, result = run(epochs=4, eval_step=2, callbacks=[rec])
    expected = [("train_start",)]
    for e in range(4):
        expected += [("epoch_start", e), ("epoch_end", e)]
        if (e + 1) % 2 == 0:
            expected.append(("evaluate", e))
    expected.append(("train_end", result.best_epoch))
    assert rec.calls == expected


def test_no_evaluation_before_the_end_evaluates_final_model():
    _, result = run(epochs=2, eval_step=5)
    assert result.best_epoch == 2 and result.best_valid is not None and result.test is not None
    assert all("valid_recall@20" not in h for h in result.history)


def test_learning_rate_schedule():
    model, ds, cfg = build(epochs=3, learning_rate=0.01, learning_rate_scheduler=[0.5, 2])
    trainer = Trainer(model, ds, cfg, progress=False)
    lrs = []

    class LR(Callback):
        def on_epoch_start(self, tr, epoch):
            lrs.append(tr.optimizer.param_groups[0]["lr"])

    trainer.callbacks.append(LR())
    trainer.fit()
    np.testing.assert_allclose(lrs, [0.01 * 0.5 ** (e / 2) for e in range(3)], rtol=1e-9)


# ----------------------------------------------------------------------------- errors
class NaNModel(MFBPR):
    def loss(self, batch):
        out = super().loss(batch)
        out["loss"] = out["loss"] * float("nan")
        return out


def test_nan_loss_aborts():
    cfg = small_config("mfbpr", epochs=2)
    ds = load_dataset(cfg)
    trainer = Trainer(NaNModel(ds, cfg), ds, cfg, progress=False)
    with pytest.raises(GraphrecError, match="training diverged: loss is nan at epoch 1"):
        trainer.fit()


def test_unknown_valid_metric():
    model, ds, cfg = build(valid_metric="auc@20")
    with pytest.raises(GraphrecError, match="valid_metric 'auc@20' is not computed"):
        Trainer(model, ds, cfg, progress=False)


def test_valid_metric_case_insensitive():
    _, result = run(epochs=1, valid_metric="NDCG@10")
    assert "valid_ndcg@10" in result.history[0]


# ----------------------------------------------------------------------------- results and checkpoints
def test_fit_result_serialisable_and_table():
    _, result = run(epochs=1)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["best_epoch"] == 1 and d["test"]["split"] == "test" and "recall@20" in d["test"]["metrics"]
    assert summary_table(result).row_count == len(result.test.metrics)


def test_checkpoint_round_trip(tmp_path):
    trainer, result = run(epochs=2)
    path = tmp_path / "model.pt"
    save_checkpoint(path, trainer.model, trainer.config, extra={"result": result.to_dict()})
    payload = read_checkpoint(tmp_path)  # the folder works too
    assert payload["model"] == "lightgcn" and payload["config"]["seed"] == trainer.config["seed"]
    model, ds, _ = load_model(path)
    assert isinstance(model, LightGCN)
    for a, b in zip(model.representations(), trainer.model.representations()):
        torch.testing.assert_close(a, b)
    ev = Trainer(model, ds, trainer.config, progress=False).evaluate("test")
    assert ev.metrics == pytest.approx(result.test.metrics, abs=1e-7)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(GraphrecError, match="does not exist"):
        read_checkpoint(tmp_path / "none.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"nope")
    with pytest.raises(GraphrecError, match=r"junk\.pt: not a graphrec checkpoint"):
        read_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"something": 1}, other)
    with pytest.raises(GraphrecError, match="not a graphrec checkpoint"):
        read_checkpoint(other)
    trainer, _ = run(epochs=1)
    path = tmp_path / "m.pt"
    save_checkpoint(path, trainer.model, trainer.config)
    with pytest.raises(GraphrecError, match=r"the data does not match the data this model was trained on \(users: 120 here, 150"):
        load_model(path, overrides={"synth_users": 120}, eval_only=False)
    payload = torch.load(path, weights_only=True)
    del payload["data_fingerprint"]  # a checkpoint from before fingerprints: the weights' shapes still catch it
    torch.save(payload, path)
    with pytest.raises(GraphrecError, match="weights do not fit"):
        load_model(path, overrides={"synth_users": 120}, eval_only=False)
