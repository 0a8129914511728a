"""Mid-epoch resume states: a run interrupted between two batches continues at the next batch and ends
like an uninterrupted run (``resume_every_batches`` / ``resume_every_minutes``, graphrec.train.resume)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_user_error, invoke, small_config

from graphrec.data.dataset import load_dataset
from graphrec.data.sampler import BPRSampler
from graphrec.models.build import build_model
from graphrec.train import trainer as trainer_module
from graphrec.train.resume import (
    FORMAT,
    FORMAT_MID_EPOCH,
    RunCheckpointer,
    position_of,
    read_resume,
    restore_trainer,
)
from graphrec.train.run_folder import RunFolder
from graphrec.train.trainer import Callback, Trainer

TINY = {"synth_users": 60, "synth_items": 80, "embedding_size": 16, "train_batch_size": 256}
SETTINGS = {
    "lightgcn": {"epochs": 3, "seed": 3, "learning_rate": 0.05},
    # the fast neighbour sampler draws from torch's generator, saved at the batch
    "lightgcn-sampled": {"epochs": 3, "seed": 4, "learning_rate": 0.05, "propagation": "sampled", "fanouts": [3, 3, 3],
                         "sampler": "fast"},
    # CLUB steps, generation and refinement ran at the epoch start: not again on resume
    "dgmrec": {"epochs": 3, "seed": 3, "refine_every": 1, "club_steps": 2},
    # the control variates' tables of the epoch start (model epoch state)
    "dgmrec-sampled": {"epochs": 3, "seed": 3, "refine_every": 1, "club_steps": 2, "propagation": "sampled",
                       "fanouts": 3, "aggregation_fanout": 3},
    # the epoch's edge-dropped views / pruned graph / learned graph (model epoch state)
    "sgl": {"epochs": 3, "seed": 3, "learning_rate": 0.05},
    "freedom": {"epochs": 3, "seed": 3, "learning_rate": 0.05, "knn_k": 3},
    "lattice": {"epochs": 3, "seed": 3, "learning_rate": 0.05, "knn_k": 3},
    "damrs": {"epochs": 3, "seed": 3, "learning_rate": 0.05, "knn_k": 3},
    "lgmrec": {"epochs": 3, "seed": 3, "learning_rate": 0.05, "hyper_num": 3},
}


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _trainer(name, **over):
    cfg = small_config(name.split("-")[0], **{**TINY, **SETTINGS[name], **over})
    ds = load_dataset(cfg)
    return Trainer(build_model(ds, cfg), ds, cfg, progress=False), ds


class StopMid(Callback):
    """Interrupt at the ``k``-th mid-epoch write (after the writers before it in the callback list)."""

    def __init__(self, k: int) -> None:
        self.k, self.seen = k, 0

    def on_mid_epoch(self, trainer, epoch, batch) -> None:
        self.seen += 1
        if self.seen == self.k:
            raise KeyboardInterrupt


class Positions(Callback):
    def __init__(self) -> None:
        self.at: list[tuple[int, int]] = []

    def on_mid_epoch(self, trainer, epoch, batch) -> None:
        assert trainer.position is not None and trainer.position.batch == batch
        self.at.append((epoch, batch))


@pytest.mark.parametrize("name", list(SETTINGS))
def test_a_run_interrupted_mid_epoch_ends_like_an_uninterrupted_one(name, tmp_path):
    full_trainer, _ = _trainer(name)
    assert full_trainer.resume_every_batches == 0 and full_trainer.resume_every_seconds == 600.0  # the defaults
    full = full_trainer.fit()
    n_batches = full_trainer.sampler.n_batches(256)
    assert n_batches >= 4
    # every 2 batches; interrupted at the 3rd write (in epoch 2), resumed, interrupted again, resumed to the end
    folder = tmp_path / "run"
    seen: list[tuple[int, int]] = []
    state = None
    for stop in (3, 2, None):
        trainer, ds = _trainer(name, resume_every_batches=2)
        if state is None:
            run = RunFolder.create(folder, name, ds.name, False)
        else:
            run = RunFolder.reopen(folder)
            restore_trainer(trainer, state)
            assert trainer.resume_at is not None and trainer.resume_at.batch == position_of(state)[1]
        pos = Positions()
        trainer.callbacks += [RunCheckpointer(run, {"dataset": ds.summary()}), pos] + ([StopMid(stop)] if stop else [])
        if stop:
            with pytest.raises(KeyboardInterrupt):
                trainer.fit()
            run.release()
            raw = torch.load(folder / "resume.pt", map_location="cpu", weights_only=True)  # plain data only
            assert raw["format"] == FORMAT_MID_EPOCH and raw["best_is_current"] is False
            state = read_resume(folder)
            assert position_of(state) == (pos.at[-1][0], pos.at[-1][1])
            assert json.loads((folder / "run.json").read_text())["batch"] == pos.at[-1][1]
        else:
            resumed = trainer.fit()
        seen += pos.at
    assert seen and all(b % 2 == 0 and 0 < b < n_batches for _, b in seen)
    assert _strip(resumed.history) == _strip(full.history)
    assert (resumed.best_epoch, resumed.epochs_run) == (full.best_epoch, full.epochs_run)
    assert resumed.best_valid.metrics == full.best_valid.metrics
    assert resumed.test.metrics == full.test.metrics
    s1, s2 = full_trainer.model.state_dict(), trainer.model.state_dict()
    for key in s1:
        if torch.is_tensor(s1[key]):
            assert torch.equal(s1[key], s2[key]), key


def test_mid_epoch_writes_follow_the_clock(monkeypatch):
    now = {"t": 0.0}
    monkeypatch.setattr(trainer_module, "clock", lambda: now["t"])
    trainer, _ = _trainer("lightgcn", resume_every_minutes=0.5, epochs=2)
    n_batches = trainer.sampler.n_batches(256)

    pos = Positions()
    trainer.callbacks.append(pos)
    original = trainer.model.loss

    def loss(batch):
        now["t"] += 10.0
        return original(batch)

    trainer.model.loss = loss  # every batch takes 10 s of the patched clock
    trainer.fit()
    # 30 s = 3 batches after the fit start or the last write; the clock goes on over epoch ends (nothing
    # was written there) and the epoch's last batch never writes (the epoch end is the boundary write)
    expected, last = [], 0
    for e in range(2):
        for b in range(1, n_batches + 1):
            g = e * n_batches + b
            if b < n_batches and g - last >= 3:
                expected.append((e, b))
                last = g
    assert pos.at == expected and len(expected) >= 2


def test_no_mid_epoch_write_when_off(tmp_path):
    trainer, _ = _trainer("lightgcn", resume_every_minutes=0, epochs=1)
    pos = Positions()
    trainer.callbacks.append(pos)
    trainer.fit()
    assert pos.at == []


def test_sampler_start_skips_batches_of_the_same_stream():
    import numpy as np

    train = np.array([(u, i) for u in range(20) for i in range(u % 5, 30, 3)], dtype=np.int64)
    a, b = (BPRSampler(train, 40, rng=np.random.default_rng(7)) for _ in range(2))
    full = list(a.epoch(16))
    tail = list(b.epoch(16, start=3))
    assert len(tail) == len(full) - 3
    for x, y in zip(full[3:], tail):
        assert torch.equal(x.users, y.users) and torch.equal(x.pos, y.pos) and torch.equal(x.neg, y.neg)
    assert a.get_rng_state() == b.get_rng_state()


# ----------------------------------------------------------------------------- the CLI
SMALL = ["--set", "synth_users=60", "--set", "synth_items=80", "--set", "train_batch_size=256", "--set", "embedding_size=16"]


def _stop_at_mid_epoch(monkeypatch, k: int):
    """Interrupt (as SIGTERM does) right after the ``k``-th mid-epoch state is written."""
    from graphrec.train.interrupt import Interrupted

    calls = {"n": 0}
    original = RunCheckpointer.on_mid_epoch

    def on_mid_epoch(self, trainer, epoch, batch):
        original(self, trainer, epoch, batch)
        calls["n"] += 1
        if calls["n"] == k:
            raise Interrupted(15)

    monkeypatch.setattr(RunCheckpointer, "on_mid_epoch", on_mid_epoch)


def test_cli_fit_interrupted_mid_epoch_resumes_at_the_next_batch(tmp_path, monkeypatch):
    args = ["fit", "lightgcn", "--epochs", "3", "--seed", "4", "--quiet", *SMALL, "--set", "resume_every_batches=2"]
    assert invoke(*args, "--out", tmp_path / "full").exit_code == 0
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _stop_at_mid_epoch(m, 4)
        r = invoke(*args, "--out", out)
    assert r.exit_code == 143
    state = read_resume(out)
    epoch, batch = position_of(state)
    assert batch > 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"keeps epoch {epoch} and {batch} batch(es) of epoch {epoch + 1}" in lines[0], r.stderr
    r = invoke("fit", "--resume", out, "--quiet")
    assert r.exit_code == 0, r.output
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    got = json.loads((out / "metrics.json").read_text())
    assert got["test"] == full["test"] and got["valid"] == full["valid"] and got["best_epoch"] == full["best_epoch"]
    assert _strip(got["history"]) == _strip(full["history"])
    assert f"resumed epoch={epoch} batch={batch}" in (out / "train.log").read_text()
    assert not (out / "resume.pt").exists()


def test_cli_a_mid_epoch_state_of_other_batching_is_one_line(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _stop_at_mid_epoch(m, 1)
        r = invoke("fit", "lightgcn", "--epochs", "2", "--quiet", *SMALL, "--set", "resume_every_batches=2", "--out", out)
    assert r.exit_code == 143
    # the saved config is what --resume uses: change its batch size by hand
    state = torch.load(out / "resume.pt", map_location="cpu", weights_only=True)
    state["config"]["train_batch_size"] = 128
    torch.save(state, out / "resume.pt")
    assert_user_error(invoke("fit", "--resume", out, "--quiet"), "batch 2 of", "resume with the settings and data")
    state["config"]["train_batch_size"] = 256
    state["position"]["batch"] = 10_000
    torch.save(state, out / "resume.pt")
    assert_user_error(invoke("fit", "--resume", out, "--quiet"), "malformed resume file")
    state["position"]["batch"] = 2
    state["format"] = FORMAT
    torch.save(state, out / "resume.pt")
    assert_user_error(invoke("fit", "--resume", out, "--quiet"), "malformed resume file")


def test_config_keys_are_checked(tmp_path):
    assert_user_error(invoke("fit", "lightgcn", "--set", "resume_every_minutes=-1", "--out", tmp_path / "x"),
                      "resume_every_minutes", ">= 0")


def _stopped_mid_epoch(name, tmp_path, stop=2, **over):
    """A run of ``name`` interrupted at its ``stop``-th mid-epoch state (every 2 batches): the state."""
    trainer, ds = _trainer(name, resume_every_batches=2, **over)
    run = RunFolder.create(tmp_path / "run", name, ds.name, False)
    trainer.callbacks += [RunCheckpointer(run, {"dataset": ds.summary()}), StopMid(stop)]
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    run.release()
    return read_resume(tmp_path / "run")


def test_dgl_sampler_resumes_reproducibly_but_not_bit_exactly(tmp_path):
    """DGL's RNG has no state to save: with ``sampler: dgl`` the resumed part of the epoch draws other
    neighbourhoods (reseeded from (seed, epoch, batch)), the same ones at every resume of one state."""
    over = {"sampler": "dgl"}
    _stopped_mid_epoch("lightgcn-sampled", tmp_path, **over)
    results = []
    for _ in range(2):  # the state read afresh each time (Adam's loaded moments share the state's tensors)
        trainer, _ = _trainer("lightgcn-sampled", **over)
        restore_trainer(trainer, read_resume(tmp_path / "run"))
        results.append(trainer.fit())
    assert _strip(results[0].history) == _strip(results[1].history)
    assert results[0].test.metrics == results[1].test.metrics


def test_the_progress_bar_and_running_loss_continue_at_the_resumed_batch(tmp_path, monkeypatch):
    from io import StringIO

    from rich.console import Console
    from rich.progress import Progress

    state = _stopped_mid_epoch("lightgcn", tmp_path)
    resets, updates = [], []
    original_reset, original_update = Progress.reset, Progress.update

    def reset(self, task_id, **kwargs):
        resets.append((kwargs.get("description"), kwargs.get("completed", 0)))
        return original_reset(self, task_id, **kwargs)

    def update(self, task_id, **kwargs):
        if "loss" in kwargs and kwargs.get("advance") == 1:
            updates.append(kwargs["loss"])
        return original_update(self, task_id, **kwargs)

    monkeypatch.setattr(Progress, "reset", reset)
    monkeypatch.setattr(Progress, "update", update)
    cfg = small_config("lightgcn", **{**TINY, **SETTINGS["lightgcn"]})
    ds = load_dataset(cfg)
    console = Console(file=StringIO(), force_terminal=True, width=120)
    trainer = Trainer(build_model(ds, cfg), ds, cfg, console=console, progress=True)
    restore_trainer(trainer, state)
    epoch, batch = position_of(state)
    trainer.fit()
    assert resets[0] == (f"epoch {epoch + 1}", batch) and resets[1] == (f"epoch {epoch + 2}", 0)
    pos = state["position"]
    # the first resumed batch's mean loss averages the saved running sum with it
    first = updates[0] * (batch + 1) - pos["running"]
    assert 0.0 < first < 2.0 and updates[0] != pytest.approx(first)


def test_an_old_epoch_boundary_state_still_loads(tmp_path):
    """A format-1 ``resume.pt`` of before mid-epoch states (no ``position`` key) resumes as before."""
    from conftest import StopAfter

    full_trainer, _ = _trainer("lightgcn")
    full = full_trainer.fit()
    trainer, ds = _trainer("lightgcn", resume_every_minutes=0)
    run = RunFolder.create(tmp_path / "run", "lightgcn", ds.name, False)
    trainer.callbacks += [RunCheckpointer(run, {"dataset": ds.summary()}), StopAfter(1)]
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    run.release()
    raw = torch.load(tmp_path / "run" / "resume.pt", map_location="cpu", weights_only=True)
    assert raw["format"] == FORMAT and raw["position"] is None
    del raw["position"]
    torch.save(raw, tmp_path / "run" / "resume.pt")
    state = read_resume(tmp_path / "run")
    assert position_of(state) == (1, 0)
    trainer, _ = _trainer("lightgcn")
    restore_trainer(trainer, state)
    assert trainer.resume_at is None
    resumed = trainer.fit()
    assert _strip(resumed.history) == _strip(full.history) and resumed.test.metrics == full.test.metrics


def _builtin_models() -> list[str]:
    from graphrec.registry import MODELS, load_builtin

    load_builtin()
    return sorted(MODELS.names())


@pytest.mark.parametrize("name", [m for m in _builtin_models() if m not in SETTINGS])
def test_every_model_resumes_mid_epoch_exactly(name, tmp_path):
    """Every built-in model (its defaults, 2 epochs): a model whose ``on_epoch_start`` or first batch keeps
    something outside its state dict without ``get_epoch_state`` fails here."""
    over = {**TINY, "epochs": 2, "seed": 3}

    def trainer(**more):
        cfg = small_config(name, **over, **more)
        ds = load_dataset(cfg)
        return Trainer(build_model(ds, cfg), ds, cfg, progress=False), ds

    t, _ = trainer()
    full = t.fit()
    t, ds = trainer(resume_every_batches=2)
    run = RunFolder.create(tmp_path / "run", name, ds.name, False)
    t.callbacks += [RunCheckpointer(run, {}), StopMid(3)]  # epoch 2, batch 2
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    run.release()
    t, _ = trainer()
    restore_trainer(t, read_resume(tmp_path / "run"))
    assert t.resume_at is not None and t.resume_at.epoch == 1
    resumed = t.fit()
    assert _strip(resumed.history) == _strip(full.history)
    assert resumed.test.metrics == full.test.metrics
