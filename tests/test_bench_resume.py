"""``graphrec bench`` / ``tune`` runs continue mid-run: ``logs/<id>.resume.pt``, same record as an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import StopAfter

from graphrec.bench import resume as bench_resume
from graphrec.bench import runner as bench_runner
from graphrec.bench import worker
from graphrec.cli.main import cli
from graphrec.train.trainer import Callback

TINY = {"synth_users": 60, "synth_items": 80, "device": "cpu", "train_batch_size": 512, "stopping_step": 1000}
TINY_ARGS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
HOOK = "GRAPHREC_BENCH_INTERRUPT_AFTER_EPOCH"
#: what a resumed run must reproduce exactly (timings and the resume bookkeeping aside)
SAME = ("best_epoch", "epochs_run", "stopped_early", "valid", "test", "test_users", "test_groups", "valid_curve",
        "n_evaluations", "n_refinements", "hit_epoch_cap")


def _spec(tmp_path: Path, model: str = "lightgcn", epochs: int = 6, **sets):
    settings = {**TINY, "learning_rate": 0.05, **sets}
    if model == "dgmrec":
        settings.update(embedding_size=16, refine_every=2, club_steps=2)
    return bench_runner.plan([model], "missing", tmp_path / "b", sets=settings, seeds=[3], epochs=epochs, write=False).specs[0]


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _assert_same_run(resumed: dict, full: dict) -> None:
    for key in SAME:
        assert resumed[key] == full[key], key
    assert _strip(resumed["history"]) == _strip(full["history"])
    assert len(resumed["epoch_seconds"]) == len(full["epoch_seconds"]) == full["epochs_run"]



@pytest.mark.parametrize("model", ["lightgcn", "dgmrec"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_record(tmp_path: Path, model: str, capsys) -> None:
    spec = _spec(tmp_path, model)
    full = worker.run_spec(spec, None, tmp_path / "full.users.npz", tmp_path / "full.resume.pt")
    assert full["resumed_from_epoch"] == [] and full["resumes"] == 0 and full["resume_discarded"] is None
    state = tmp_path / "run.resume.pt"
    for k in (2, 4):  # interrupted twice: after epoch 2, and (resumed) after epoch 4
        with pytest.raises(KeyboardInterrupt):
            worker.run_spec(spec, None, tmp_path / "r.users.npz", state, callbacks=(StopAfter(k),))
        raw = torch.load(state, map_location="cpu", weights_only=True)  # plain data only
        assert raw["loop"]["next_epoch"] == k and bench_resume.saved_position(state)[0] == k
        assert [p["epoch"] for p in raw["bench"]["curve"]] == list(range(1, k + 1))
    capsys.readouterr()
    resumed = worker.run_spec(spec, None, tmp_path / "r.users.npz", state)
    assert "bench worker: resumed at epoch 4 of 6" in capsys.readouterr().out
    _assert_same_run(resumed, full)
    assert resumed["resumed_from_epoch"] == [2, 4] and resumed["resumes"] == 2
    assert [p["epoch"] for p in resumed["valid_curve"]] == list(range(1, 7))
    assert resumed["seconds_total"] >= raw["loop"]["elapsed"]
    assert (tmp_path / "r.users.npz").read_bytes() == (tmp_path / "full.users.npz").read_bytes()


def test_a_finished_loop_is_not_trained_again(tmp_path: Path, capsys) -> None:
    """Killed after the last epoch (during the test evaluation): the rerun only evaluates."""
    spec = _spec(tmp_path, epochs=3)
    full = worker.run_spec(spec, None, None, None)
    state = tmp_path / "s.resume.pt"
    with pytest.raises(KeyboardInterrupt):
        worker.run_spec(spec, None, None, state, callbacks=(StopAfter(3),))
    resumed = worker.run_spec(spec, None, None, state)
    _assert_same_run(resumed, full)
    assert resumed["resumed_from_epoch"] == [3]


def test_a_changed_spec_or_damaged_state_starts_over(tmp_path: Path, capsys) -> None:
    spec = _spec(tmp_path)
    state = tmp_path / "s.resume.pt"
    with pytest.raises(KeyboardInterrupt):
        worker.run_spec(spec, None, None, state, callbacks=(StopAfter(3),))
    other = _spec(tmp_path, learning_rate=0.01)
    assert other["id"] == spec["id"]
    capsys.readouterr()
    rec = worker.run_spec(other, None, None, state)
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if "starting over" in x]
    assert len(line) == 1 and "config.learning_rate 0.05 -> 0.01" in line[0], out
    assert "resumed at" not in out
    assert rec["resumed_from_epoch"] == [] and "config.learning_rate 0.05 -> 0.01" in rec["resume_discarded"]
    assert rec["test"] == worker.run_spec(other, None, None, None)["test"]  # from epoch 0
    # other threads are another run too (bit-identity holds for one thread count)
    assert "config.threads 1 -> 2" in bench_resume.identity_changes(bench_resume.identity(spec),
                                                                    bench_resume.identity({**spec, "config": {**spec["config"], "threads": 2}}))
    # a damaged state (a truncated file) is set aside, not an error
    with pytest.raises(KeyboardInterrupt):
        worker.run_spec(spec, None, None, state, callbacks=(StopAfter(2),))
    state.write_bytes(state.read_bytes()[:1000])
    capsys.readouterr()
    rec = worker.run_spec(spec, None, None, state)
    assert "starting over at epoch 0: the saved state is unreadable" in capsys.readouterr().out
    assert rec["resumed_from_epoch"] == [] and rec["resume_discarded"].startswith("the saved state is unreadable")


def test_other_data_start_over(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    state = tmp_path / "s.resume.pt"
    with pytest.raises(KeyboardInterrupt):
        worker.run_spec(spec, None, None, state, callbacks=(StopAfter(2),))
    from graphrec.config import resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.registry import MODELS

    cfg = resolve_config("lightgcn", MODELS.get("lightgcn").default_config, [], {**spec["overrides"], "synth_users": 61})
    saved, why = bench_resume.load_state(state, spec, load_dataset(cfg))
    assert saved is None and why.startswith("the data changed since the state was saved (users")
    saved, why = bench_resume.load_state(state, spec, load_dataset(spec["config"]))
    assert saved is not None and why is None


def _bench(out: Path, *extra: str, epochs: int = 5):
    args = ["bench", "--model", "lightgcn", "--seeds", "3", "--epochs", str(epochs), "--threads", "1", "--quiet",
            "--out", str(out), "--set", "learning_rate=0.05", *TINY_ARGS, *extra]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.mark.slow
def test_bench_killed_mid_run_resumes_and_matches(tmp_path: Path, monkeypatch) -> None:
    run = "lightgcn__missing__seed3"
    full = _bench(tmp_path / "full")
    assert full.exit_code == 0, full.output
    full_rec = json.loads((tmp_path / "full" / "runs" / f"{run}.json").read_text())
    assert not list((tmp_path / "full" / "logs").glob("*.resume.pt"))  # removed with the record

    out = tmp_path / "b"
    monkeypatch.setenv(HOOK, "3")  # the worker gets SIGTERM after epoch 3, as from a killed session
    res = _bench(out)
    assert res.exit_code == 2 and f"1 of 1 runs failed: {run}" in res.output
    logs = out / "logs"
    assert not (out / "runs" / f"{run}.json").exists()
    assert sorted(p.name for p in logs.iterdir() if "resume" in p.name) == [f"{run}.resume.pt"]  # one per run, no temporaries
    first = (logs / f"{run}.log").read_text()
    assert "interrupted by signal 15; no record written" in first and "epoch=3/5" in first and "epoch=4/5" not in first
    dry = CliRunner().invoke(cli, ["bench", "--model", "lightgcn", "--seeds", "3", "--epochs", "5", "--threads", "1",
                                   "--out", str(out), "--set", "learning_rate=0.05", *TINY_ARGS, "--dry-run"])
    assert f"{run}\tto run (resumes after epoch 3)" in dry.output, dry.output
    monkeypatch.delenv(HOOK)
    res = _bench(out)
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "runs" / f"{run}.json").read_text())
    _assert_same_run(rec, full_rec)
    assert rec["resumed_from_epoch"] == [3] and rec["resumes"] == 1 and full_rec["resumed_from_epoch"] == []
    log = (logs / f"{run}.log").read_text()
    assert log.startswith(first)  # appended, not truncated
    assert "bench worker: resumed at epoch 3 of 5" in log and log.count("epoch=1/5") == 1 and "epoch=5/5" in log
    assert not (logs / f"{run}.resume.pt").exists()
    assert "continued from their resume state" in (out / "results.md").read_text()
    assert f"{run} (after epoch 3)" in (out / "results.md").read_text()
    assert "resume state" not in (tmp_path / "full" / "results.md").read_text()
    # a record now exists: a stale state beside it (a kill between the two writes) is deleted, nothing runs
    (logs / f"{run}.resume.pt").write_bytes(b"stale")
    (logs / f".{run}.resume.pt.x1.tmp").write_bytes(b"half")
    assert _bench(out).exit_code == 0
    assert not [p for p in logs.iterdir() if "resume" in p.name]


@pytest.mark.slow
def test_bench_resume_with_a_changed_spec_starts_over(tmp_path: Path, monkeypatch) -> None:
    run = "lightgcn__missing__seed3"
    out = tmp_path / "b"
    monkeypatch.setenv(HOOK, "2")
    assert _bench(out).exit_code == 2
    monkeypatch.delenv(HOOK)
    res = _bench(out, "--set", "reg_weight=0.01")  # no record yet, so nothing to refuse: the worker starts over
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "runs" / f"{run}.json").read_text())
    assert rec["resumed_from_epoch"] == [] and "config.reg_weight" in rec["resume_discarded"]
    log = (out / "logs" / f"{run}.log").read_text()
    assert log.count("starting over at epoch 0") == 1 and "resumed at" not in log


@pytest.mark.slow
def test_tune_trials_resume_mid_run(tmp_path: Path, monkeypatch) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("reg_weight: [0.0]\n")

    def tune(out: Path):
        return CliRunner().invoke(cli, ["tune", "lightgcn", "--space", str(space), "--seeds", "3", "--epochs", "4", "--quiet",
                                        "--out", str(out), "--set", "learning_rate=0.05", *TINY_ARGS], catch_exceptions=False)

    run = "lightgcn__reg-weight-0.0__seed3"
    assert tune(tmp_path / "full").exit_code == 0
    monkeypatch.setenv(HOOK, "2")
    res = tune(tmp_path / "t")
    assert res.exit_code == 2 and "1 trial run(s) failed" in res.output
    assert (tmp_path / "t" / "logs" / f"{run}.resume.pt").is_file()
    monkeypatch.delenv(HOOK)
    assert tune(tmp_path / "t").exit_code == 0
    rec = json.loads((tmp_path / "t" / "runs" / f"{run}.json").read_text())
    _assert_same_run(rec, json.loads((tmp_path / "full" / "runs" / f"{run}.json").read_text()))
    assert rec["resumed_from_epoch"] == [2]
    assert "resumed at epoch 2 of 4" in (tmp_path / "t" / "logs" / f"{run}.log").read_text()


def test_a_signal_during_a_save_waits_for_the_whole_state(tmp_path: Path, monkeypatch) -> None:
    """SIGTERM arriving while the state is written is held back: the file is whole, then the worker stops."""
    import os
    import signal

    from graphrec.train.interrupt import Interrupted, handle_signals

    spec = _spec(tmp_path, epochs=4)
    state = tmp_path / "s.resume.pt"
    real_save, calls = torch.save, []

    def save_then_signal(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the state of epoch 2, half written
            f.write(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
            f.seek(0)
            f.truncate()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_signal)
    with handle_signals(), pytest.raises(Interrupted) as info:
        worker.run_spec(spec, None, None, state)
    assert info.value.signum == signal.SIGTERM and len(calls) == 2
    monkeypatch.setattr(torch, "save", real_save)
    assert bench_resume.saved_position(state)[0] == 2
    assert [p.name for p in tmp_path.iterdir()] == [state.name]  # no temporary file left
    resumed = worker.run_spec(spec, None, None, state)
    assert resumed["resumed_from_epoch"] == [2]
    _assert_same_run(resumed, worker.run_spec(spec, None, None, None))


# ----------------------------------------------------------------------------- mid-epoch states
BATCH_HOOK = "GRAPHREC_BENCH_INTERRUPT_AFTER_BATCH"


class StopMid(Callback):
    """Interrupt right after the mid-epoch state after batch ``b`` of epoch ``k`` (1-based) is saved."""

    def __init__(self, k: int, b: int) -> None:
        self.at = (k, b)

    def on_mid_epoch(self, trainer, epoch, batch) -> None:
        if (epoch + 1, batch) == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("model", ["lightgcn", "dgmrec"])
def test_a_run_interrupted_mid_epoch_resumes_to_the_uninterrupted_record(tmp_path: Path, model: str, capsys) -> None:
    spec = _spec(tmp_path, model, epochs=4, train_batch_size=256)
    full = worker.run_spec(spec, None, tmp_path / "full.users.npz", None)
    # the same run writing a state after every 2 batches: the key does not make it another run
    mid = _spec(tmp_path, model, epochs=4, train_batch_size=256, resume_every_batches=2)
    assert bench_resume.identity(mid) == bench_resume.identity(spec)
    state = tmp_path / "run.resume.pt"
    for k, b in ((2, 2), (3, 4)):  # interrupted in epoch 2 after batch 2, resumed, interrupted in epoch 3 after batch 4
        with pytest.raises(KeyboardInterrupt):
            worker.run_spec(mid, None, tmp_path / "r.users.npz", state, callbacks=(StopMid(k, b),))
        raw = torch.load(state, map_location="cpu", weights_only=True)
        assert raw["position"]["batch"] == b and bench_resume.saved_position(state) == (k - 1, b)
        assert bench_resume.saved_position(state)[0] == k - 1
    capsys.readouterr()
    resumed = worker.run_spec(spec, None, tmp_path / "r.users.npz", state)  # resumed with the default key
    assert "bench worker: resumed at epoch 2 of 4, batch 4 of " in capsys.readouterr().out
    _assert_same_run(resumed, full)
    assert resumed["resumed_from_epoch"] == [1, 2] and resumed["resumed_from_batch"] == [2, 4] and resumed["resumes"] == 2
    assert full["resumed_from_batch"] == []
    assert (tmp_path / "r.users.npz").read_bytes() == (tmp_path / "full.users.npz").read_bytes()


@pytest.mark.slow
def test_bench_killed_mid_epoch_resumes_and_matches(tmp_path: Path, monkeypatch) -> None:
    run = "lightgcn__missing__seed3"
    small = ["--set", "train_batch_size=256"]
    full = _bench(tmp_path / "full", *small, epochs=3)
    assert full.exit_code == 0, full.output
    full_rec = json.loads((tmp_path / "full" / "runs" / f"{run}.json").read_text())
    out = tmp_path / "b"
    monkeypatch.setenv(BATCH_HOOK, "2:3")  # SIGTERM once the state after batch 3 of epoch 2 is saved
    res = _bench(out, *small, "--set", "resume_every_batches=3", epochs=3)
    assert res.exit_code == 2 and f"1 of 1 runs failed: {run}" in res.output
    logs = out / "logs"
    assert sorted(p.name for p in logs.iterdir() if "resume" in p.name) == [f"{run}.resume.pt"]
    first = (logs / f"{run}.log").read_text()
    assert "interrupted by signal 15; no record written" in first and "epoch=1/3" in first and "epoch=2/3" not in first
    dry = CliRunner().invoke(cli, ["bench", "--model", "lightgcn", "--seeds", "3", "--epochs", "3", "--threads", "1",
                                   "--out", str(out), "--set", "learning_rate=0.05", *TINY_ARGS, *small, "--dry-run"])
    assert f"{run}\tto run (resumes after epoch 1 + 3 batch(es))" in dry.output, dry.output
    monkeypatch.delenv(BATCH_HOOK)
    res = _bench(out, *small, epochs=3)  # without the key: the state is continued all the same
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "runs" / f"{run}.json").read_text())
    _assert_same_run(rec, full_rec)
    assert rec["resumed_from_epoch"] == [1] and rec["resumed_from_batch"] == [3]
    log = (logs / f"{run}.log").read_text()
    assert "bench worker: resumed at epoch 1 of 3, batch 3 of" in log and log.count("epoch=1/3") == 1
    assert f"{run} (after epoch 1 + 3 batch(es))" in (out / "results.md").read_text()
    assert not (logs / f"{run}.resume.pt").exists()


@pytest.mark.slow
def test_tune_trials_resume_mid_epoch(tmp_path: Path, monkeypatch) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("reg_weight: [0.0]\n")

    def tune(out: Path, *extra: str):
        return CliRunner().invoke(cli, ["tune", "lightgcn", "--space", str(space), "--seeds", "3", "--epochs", "3", "--quiet",
                                        "--out", str(out), "--set", "learning_rate=0.05", *TINY_ARGS, *extra],
                                  catch_exceptions=False)

    run = "lightgcn__reg-weight-0.0__seed3"
    assert tune(tmp_path / "full").exit_code == 0
    monkeypatch.setenv(BATCH_HOOK, "2:1")
    res = tune(tmp_path / "t", "--set", "resume_every_batches=1")
    assert res.exit_code == 2 and "1 trial run(s) failed" in res.output
    assert bench_resume.saved_position(tmp_path / "t" / "logs" / f"{run}.resume.pt") == (1, 1)
    monkeypatch.delenv(BATCH_HOOK)
    assert tune(tmp_path / "t", "--set", "resume_every_batches=1").exit_code == 0
    rec = json.loads((tmp_path / "t" / "runs" / f"{run}.json").read_text())
    _assert_same_run(rec, json.loads((tmp_path / "full" / "runs" / f"{run}.json").read_text()))
    assert rec["resumed_from_epoch"] == [1] and rec["resumed_from_batch"] == [1]
    assert "resumed at epoch 1 of 3, batch 1 of 3 of epoch 2" in (tmp_path / "t" / "logs" / f"{run}.log").read_text()


def test_resume_cadence_is_not_a_changed_setting() -> None:
    spec = {"config": {"learning_rate": 0.05, "resume_every_minutes": 10.0, "resume_every_batches": 0}}
    old = {"config": {"learning_rate": 0.05, "resume_every_minutes": 2.0, "resume_every_batches": 7}}
    assert bench_runner.changed_settings(old, spec) == {}
    older = {"config": {"learning_rate": 0.05}}  # a record of before the keys existed
    assert bench_runner.changed_settings(older, spec) == {}
    assert bench_runner.changed_settings({"config": {"learning_rate": 0.01}}, spec) == {"learning_rate": (0.01, 0.05)}
