"""Runs that survive interrupts: resume.pt, exact resumption, SIGINT/SIGTERM, locks, --overwrite swaps, run names."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import (
    REPO_ROOT,
    StopAfter,
    assert_user_error,
    invoke,
    small_config,
    tiny_rows,
    write_inter_file,
    write_mmrec_dir,
)
from hypothesis import given
from hypothesis import strategies as st

from graphrec.data.dataset import load_dataset
from graphrec.errors import GraphrecError
from graphrec.models.build import build_model
from graphrec.train import run_folder
from graphrec.train.checkpoint import from_plain, to_plain
from graphrec.train.interrupt import Interrupted
from graphrec.train.resume import (
    RunCheckpointer,
    read_resume,
    restore_trainer,
    trainer_state,
)
from graphrec.train.run_folder import RunFolder
from graphrec.train.trainer import Trainer

SMALL = ["--set", "synth_users=150", "--set", "synth_items=200"]
SETTINGS = {
    "lightgcn": {"epochs": 6, "seed": 3, "learning_rate": 0.05},  # validation rises, stalls and rises again
    # the fast neighbour sampler draws from torch's generator: its state in resume.pt must make the rest identical
    "lightgcn-sampled": {"epochs": 6, "seed": 4, "learning_rate": 0.05, "propagation": "sampled", "fanouts": [3, 3, 3],
                         "sampler": "fast"},
    # refinement every 2 epochs and generation: the refined graphs, counters and CLUB optimiser must come back
    "dgmrec": {"epochs": 5, "seed": 3, "synth_users": 60, "synth_items": 80, "embedding_size": 16, "refine_every": 2,
               "club_steps": 2},
    # sampled DGMRec: the samplers' RNG, the sampled user / gate means and the batch-restricted terms
    "dgmrec-sampled": {"epochs": 5, "seed": 3, "synth_users": 60, "synth_items": 80, "embedding_size": 16, "refine_every": 2,
                       "club_steps": 2, "propagation": "sampled", "fanouts": 3, "aggregation_fanout": 3},
    # ... with sparse_embeddings: MixedAdam's state (SparseAdam moments of the ID tables, Adam's of the rest)
    "dgmrec-sampled-sparse": {"epochs": 5, "seed": 3, "synth_users": 60, "synth_items": 80, "embedding_size": 16,
                              "refine_every": 2, "club_steps": 2, "propagation": "sampled", "fanouts": 3,
                              "aggregation_fanout": 3, "sparse_embeddings": True},
    # hand-written gradients (DAMRS's neighbour term, GRCN's sparse attention) and InfoNCE over distinct rows (LGMRec)
    "damrs": {"epochs": 6, "seed": 3, "learning_rate": 0.05, "synth_users": 60, "synth_items": 80, "embedding_size": 16, "knn_k": 3},
    "grcn": {"epochs": 6, "seed": 3, "learning_rate": 0.05, "synth_users": 60, "synth_items": 80, "embedding_size": 16, "n_routing": 1},
    "lgmrec": {"epochs": 6, "seed": 3, "learning_rate": 0.05, "synth_users": 60, "synth_items": 80, "embedding_size": 16, "hyper_num": 3},
}


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _trainer(name):
    cfg = small_config(name.split("-")[0], **SETTINGS[name])
    ds = load_dataset(cfg)
    return Trainer(build_model(ds, cfg), ds, cfg, progress=False), ds



def _interrupt_and_resume(name, k, folder):
    trainer, ds = _trainer(name)
    run = RunFolder.create(folder, name, ds.name, False)
    trainer.callbacks += [RunCheckpointer(run, {"dataset": ds.summary()}), StopAfter(k)]
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    run.release()
    raw = torch.load(folder / "resume.pt", map_location="cpu", weights_only=True)  # plain data only
    assert raw["loop"]["next_epoch"] == k
    state = read_resume(folder)
    assert (state["best"] is None) == state["best_is_current"]
    trainer, _ = _trainer(name)
    restore_trainer(trainer, state)
    return trainer, trainer.fit(), state


@pytest.mark.parametrize(
    "name", ["lightgcn", "lightgcn-sampled", "dgmrec", "dgmrec-sampled", "dgmrec-sampled-sparse", "damrs", "grcn", "lgmrec"]
)
def test_resume_ends_like_an_uninterrupted_run(name, tmp_path):
    full_trainer, _ = _trainer(name)
    full = full_trainer.fit()
    # one interrupt right after a new best (best state = current state) and one after an epoch without
    # improvement (resume.pt then holds the best state too)
    best, improved_at, flat_at = -1.0, [], []
    for h in full.history[:-1]:
        score = h["valid_recall@20"]
        (improved_at if score > best else flat_at).append(h["epoch"])
        best = max(best, score)
    assert improved_at and flat_at, full.history  # the settings must give both cases
    for k in (improved_at[-1], flat_at[0]):
        trainer, resumed, state = _interrupt_and_resume(name, k, tmp_path / f"run{k}")
        assert state["best_is_current"] == (k in improved_at)
        assert _strip(resumed.history) == _strip(full.history), k
        assert (resumed.best_epoch, resumed.epochs_run, resumed.stopped_early) == (full.best_epoch, full.epochs_run, full.stopped_early)
        assert resumed.best_valid.metrics == full.best_valid.metrics
        assert resumed.test.metrics == full.test.metrics
        s1, s2 = full_trainer.model.state_dict(), trainer.model.state_dict()
        for key in s1:
            if torch.is_tensor(s1[key]):
                assert torch.equal(s1[key], s2[key]), (k, key)
        assert resumed.seconds >= state["loop"]["elapsed"]


def test_plain_encoding_round_trips_numpy_and_big_ints():
    import numpy as np

    obj = {"a": np.arange(5, dtype=np.int32), "b": np.array([1, 2], dtype=np.uint32), "c": (1, 2**100, [np.float32(1.5)]),
           "d": np.zeros((2, 3), dtype=bool), "e": None, "f": np.array(7, dtype=np.int64), "g": np.arange(3, dtype=">f4")}
    back = from_plain(to_plain(obj))
    assert back["a"].dtype == np.int32 and back["a"].tolist() == [0, 1, 2, 3, 4]
    assert back["b"].dtype == np.uint32 and back["b"].tolist() == [1, 2]
    assert back["c"] == (1, 2**100, [1.5]) and back["d"].shape == (2, 3) and back["e"] is None
    assert back["f"].shape == () and back["f"] == 7  # 0-d stays 0-d
    assert back["g"].dtype == np.dtype(">f4") and back["g"].tolist() == [0.0, 1.0, 2.0]


def test_resume_state_is_plain_and_an_unstorable_value_is_one_line(monkeypatch):
    import io

    import numpy as np

    trainer, _ = _trainer("lightgcn")
    np.random.seed(5)
    buf = io.BytesIO()
    torch.save(trainer_state(trainer), buf)
    buf.seek(0)
    state = from_plain(torch.load(buf, weights_only=True))
    name, key, pos, has_gauss, cached = state["rng"]["numpy"]  # MT19937's uint32 key through the array path
    ref = np.random.get_state()
    assert (name, pos, has_gauss, cached) == (ref[0], ref[2], ref[3], ref[4])
    assert key.dtype == np.uint32 and np.array_equal(key, ref[1])
    assert state["sampler_rng"] == trainer.sampler.get_rng_state()  # PCG64's 128-bit ints
    assert state["data_fingerprint"] == trainer.dataset.fingerprint()
    monkeypatch.setattr(trainer.sampler, "get_rng_state", lambda: {"x": object()})
    with pytest.raises(GraphrecError, match="cannot save sampler RNG for resuming: .*object cannot be stored"):
        trainer_state(trainer)


_DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "uint16", "uint32", "uint64"]


@given(
    st.lists(st.tuples(st.sampled_from(_DTYPES), st.lists(st.integers(0, 100), max_size=6)), max_size=4),
    st.integers(-(2**80), 2**80),
    st.lists(st.floats(allow_nan=False), max_size=3),
)
def test_plain_encoding_survives_weights_only_load(arrays, big, floats):
    """Any nesting of numpy arrays (every dtype), huge ints and floats comes back equal through
    torch.save and torch.load(weights_only=True)."""
    import io

    import numpy as np

    obj = {"arrays": [np.asarray(v, dtype=d) for d, v in arrays], "big": big, "floats": tuple(floats), "n": {"x": None}}
    obj["arrays"] += [a.astype(a.dtype.newbyteorder()) for a in obj["arrays"]]  # non-native byte order
    obj["arrays"] += [np.asarray(v[0] if v else 0, dtype=d) for d, v in arrays]  # 0-d
    buf = io.BytesIO()
    torch.save(to_plain(obj), buf)
    buf.seek(0)
    back = from_plain(torch.load(buf, weights_only=True))
    assert [(a.dtype, a.shape, a.tolist()) for a in back["arrays"]] == [(a.dtype, a.shape, a.tolist()) for a in obj["arrays"]]
    assert back["big"] == big and back["floats"] == tuple(floats) and back["n"] == {"x": None}


# ----------------------------------------------------------------------------- the CLI
def _interrupting(monkeypatch, at_call: int, signum=signal.SIGTERM):
    """Make the ``at_call``-th training epoch raise the interrupt a signal raises (epochs before it complete)."""
    calls = {"n": 0}
    original = Trainer.train_epoch

    def train_epoch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise Interrupted(signum)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)


def full_and_interrupted(args, tmp_path, monkeypatch, at_call: int):
    """``graphrec <args>`` uninterrupted into ``tmp_path/full`` and stopped by SIGTERM at its ``at_call``-th epoch
    into ``tmp_path/run``: ``(the uninterrupted metrics.json, the interrupted run folder)``."""
    assert invoke(*args, "--out", tmp_path / "full").exit_code == 0
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupting(m, at_call)
        assert invoke(*args, "--out", out).exit_code == 143
    return json.loads((tmp_path / "full" / "metrics.json").read_text()), out


@pytest.mark.parametrize("model,extra", [("lightgcn", []), ("dgmrec", ["--set", "embedding_size=16", "--set", "refine_every=2"])])
def test_cli_sigterm_then_resume_gives_the_uninterrupted_metrics(model, extra, tmp_path, monkeypatch):
    args = ["fit", model, "--epochs", "5", "--seed", "4", "--quiet", *SMALL, *extra]
    assert invoke(*args, "--out", tmp_path / "full").exit_code == 0
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupting(m, 4)
        r = invoke(*args, "--out", out)
    assert r.exit_code == 143
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Interrupted by SIGTERM after 3 epoch(s)"), r.stderr
    assert f"graphrec fit --resume {out}" in lines[0] and "Traceback" not in r.output
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "interrupted" and status["epoch"] == 3 and status["signal"] == "SIGTERM"
    assert not (out / ".lock").exists() and not (out / "metrics.json").exists()
    assert len((out / "history.jsonl").read_text().splitlines()) == 3
    r = invoke("fit", "--resume", out, "--quiet")
    assert r.exit_code == 0, r.output
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    got = json.loads((out / "metrics.json").read_text())
    assert got["test"] == full["test"] and got["valid"] == full["valid"] and got["best_epoch"] == full["best_epoch"]
    assert _strip(got["history"]) == _strip(full["history"])
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert not (out / "resume.pt").exists() and not (out / ".lock").exists()
    assert "resumed epoch=3" in (out / "train.log").read_text()
    assert len((out / "history.jsonl").read_text().splitlines()) == 5
    assert_user_error(invoke("fit", "--resume", out), "already finished")


def test_resume_of_a_run_saved_before_a_model_key_existed(tmp_path, monkeypatch):
    """A resume.pt written before a model key was added (its config lacks it) continues with that key's default,
    which keeps the earlier behaviour: the same metrics as an uninterrupted run, no config error."""
    args = ["fit", "dgmrec", "--epochs", "3", "--seed", "4", "--quiet", *SMALL, "--set", "embedding_size=16"]
    full, out = full_and_interrupted(args, tmp_path, monkeypatch, 3)
    raw = torch.load(out / "resume.pt", map_location="cpu", weights_only=True)
    for key in ("recon_rows", "refine_sources"):  # keys DGMRec gained after runs had been started
        assert key in raw["config"]
        del raw["config"][key]
    torch.save(raw, out / "resume.pt")
    r = invoke("fit", "--resume", out, "--quiet")
    assert r.exit_code == 0, r.output
    got = json.loads((out / "metrics.json").read_text())
    assert got["test"] == full["test"] and got["best_epoch"] == full["best_epoch"]


def test_interrupt_before_the_first_evaluation(tmp_path, monkeypatch):
    _interrupting(monkeypatch, 1, signal.SIGINT)
    r = invoke("fit", "lightgcn", "--epochs", "2", "--out", tmp_path / "r", "--quiet", *SMALL)
    assert r.exit_code == 130 and r.stderr.strip().splitlines() == [
        f"Interrupted by SIGINT before the first evaluation; {tmp_path / 'r'} holds nothing to resume"]
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "interrupted"
    assert_user_error(invoke("fit", "--resume", tmp_path / "r"), "no resume.pt")


def test_resume_refuses_other_settings_and_non_runs(tmp_path):
    assert_user_error(invoke("fit", "--resume", tmp_path, "--set", "knn_k=3"), "--resume", "--set")
    assert_user_error(invoke("fit", "--resume", tmp_path, "--epochs", "3", "--out", tmp_path), "--epochs", "--out")
    assert_user_error(invoke("fit", "--resume", tmp_path), "no run.json")
    assert_user_error(invoke("fit", "--resume", tmp_path / "nope"), "is not a folder")
    assert_user_error(invoke("fit"), "missing MODEL")


def test_sigint_in_a_real_process_exits_130_and_leaves_a_resumable_folder(tmp_path):
    """A real signal: SIGINT while `graphrec fit` trains, in its own process."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    code = "from graphrec.cli.main import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "fit", "lightgcn", "--epochs", "400", "--set", "stopping_step=1000",
                             "--out", str(out), "--quiet", *SMALL], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and proc.poll() is None:
            h = out / "history.jsonl"
            if h.exists() and len(h.read_text().splitlines()) >= 2 and (out / "resume.pt").exists():
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("Interrupted by SIGINT after") and "Traceback" not in err
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "interrupted" and status["epoch"] >= 2
    state = read_resume(out)
    assert state["loop"]["next_epoch"] == status["epoch"] == len(state["loop"]["history"])
    assert not (out / ".lock").exists()
    assert not list(out.glob(".*.tmp"))  # no half-written files


# ----------------------------------------------------------------------------- locks, names, overwrite
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_live_run_locks_its_folder_and_stale_locks_are_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    r = invoke("fit", "lightgcn", "--epochs", "1", "--out", out, "--quiet", *SMALL)
    assert_user_error(r, str(out), "in use by a live run", f"pid {os.getppid()}")
    assert_user_error(invoke("fit", "lightgcn", "--epochs", "1", "--out", out, "--overwrite", *SMALL), "in use")
    (out / ".lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    r = invoke("fit", "lightgcn", "--epochs", "1", "--out", out, "--quiet", *SMALL)
    assert r.exit_code == 0, r.output
    assert (out / "metrics.json").is_file() and not (out / ".lock").exists()


def test_resume_of_a_folder_in_use_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"status": "running"}))
    (out / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    assert_user_error(invoke("fit", "--resume", out), "in use by a live run")


def test_default_names_never_collide_in_one_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_folder.time, "strftime", lambda fmt, *a: "20250101-000000")
    runs = [RunFolder.create(None, "lightgcn", "synthetic", False) for _ in range(3)]
    assert [r.path.name for r in runs] == ["lightgcn-synthetic-20250101-000000", "lightgcn-synthetic-20250101-000000-2",
                                          "lightgcn-synthetic-20250101-000000-3"]
    assert all((r.path / ".lock").is_file() for r in runs)
    for r in runs:
        r.release()
        assert not (r.path / ".lock").exists()


def test_overwrite_replaces_the_whole_folder_and_an_interrupted_overwrite_keeps_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert invoke("fit", "lightgcn", "--epochs", "1", "--out", out, "--quiet", *SMALL).exit_code == 0
    (out / "notes-from-the-old-run.txt").write_text("old")
    old_metrics = (out / "metrics.json").read_bytes()
    with monkeypatch.context() as m:  # interrupted: the old folder is untouched, the staging folder resumable
        _interrupting(m, 3)
        r = invoke("fit", "lightgcn", "--epochs", "3", "--out", out, "--overwrite", "--quiet", *SMALL)
    assert r.exit_code == 143
    staging = out.with_name(f"run.new-{os.getpid()}")
    assert f"--resume {staging}" in r.stderr
    assert (out / "metrics.json").read_bytes() == old_metrics and (out / "notes-from-the-old-run.txt").exists()
    assert json.loads((staging / "run.json").read_text())["target"] == str(out)
    assert invoke("fit", "--resume", staging, "--quiet").exit_code == 0
    assert not staging.exists() and not list(tmp_path.glob("run.old-*"))
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "history.jsonl", "metrics.json", "model.pt", "run.json", "train.log"]
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 3
    assert "target" not in json.loads((out / "run.json").read_text())


def test_a_failed_run_is_marked_failed_and_unlocked(tmp_path, monkeypatch):
    def diverge(self, *args, **kwargs):
        raise GraphrecError("training diverged: loss is nan at epoch 1; lower learning_rate or check the features")

    monkeypatch.setattr(Trainer, "train_epoch", diverge)
    out = tmp_path / "run"
    assert_user_error(invoke("fit", "lightgcn", "--epochs", "2", "--out", out, "--quiet", *SMALL), "training diverged")
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("GraphrecError: training diverged")
    assert not (out / ".lock").exists()


def test_an_unusable_out_path_is_one_error_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = invoke("fit", "lightgcn", "--epochs", "1", "--out", blocker / "run", "--quiet", *SMALL)
    assert_user_error(r, "cannot write to output folder", str(blocker))


# ----------------------------------------------------------------------------- damaged files, other data
def _interrupted_run(tmp_path, monkeypatch, *extra):
    """A lightgcn run folder interrupted after 2 evaluated epochs (resume.pt written)."""
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupting(m, 3)
        r = invoke("fit", "lightgcn", "--epochs", "3", "--seed", "1", "--out", out, "--quiet", *extra)
    assert r.exit_code == 143 and (out / "resume.pt").is_file(), r.output
    return out


def test_a_malformed_resume_file_is_one_line(tmp_path, monkeypatch):
    out = _interrupted_run(tmp_path, monkeypatch, *SMALL)
    good = torch.load(out / "resume.pt", weights_only=True)

    def damaged(change):
        state = copy.deepcopy(good)
        change(state)
        torch.save(state, out / "resume.pt")
        return invoke("fit", "--resume", out, "--quiet")

    assert_user_error(damaged(lambda s: s.pop("loop")), "resume.pt", "malformed resume file", "no loop")
    assert_user_error(damaged(lambda s: s["loop"].update(next_epoch="two")), "resume.pt", "malformed resume file", "ValueError")
    assert_user_error(damaged(lambda s: s["rng"]["numpy"][1].update(shape=[7])), "malformed resume file", "ValueError")
    assert_user_error(damaged(lambda s: s["rng"].update(python="x")), "malformed resume file")
    assert_user_error(damaged(lambda s: s.update(optimizer={"state": 1})), "malformed resume file")
    (out / "resume.pt").write_bytes(b"not a zip")
    assert_user_error(invoke("fit", "--resume", out), "not a graphrec resume file")
    assert not (out / ".lock").exists()


def test_resume_on_other_train_pairs_with_the_same_counts_is_one_line(tmp_path, monkeypatch):
    rows = tiny_rows(n_users=20, n_items=30, per_user=6, seed=2)
    data = write_mmrec_dir(tmp_path / "data", rows)
    out = _interrupted_run(tmp_path, monkeypatch, "--data-dir", data)
    # user 0's first train row and its valid row swap splits: same users, items, split sizes, other train pairs
    i_train = next(k for k, (u, _, lab) in enumerate(rows) if u == 0 and lab == 0)
    i_valid = next(k for k, (u, _, lab) in enumerate(rows) if u == 0 and lab == 1)
    swapped = list(rows)
    swapped[i_train], swapped[i_valid] = (0, rows[i_train][1], 1), (0, rows[i_valid][1], 0)
    write_inter_file(data / "toy.inter", swapped)
    cfg = from_plain(torch.load(out / "resume.pt", weights_only=True))
    assert load_dataset(cfg["config"]).summary() == cfg["dataset"]  # the counts alone do not tell
    assert_user_error(invoke("fit", "--resume", out, "--quiet"), f"{out / 'resume.pt'}", "train rows (hash)",
                      "resume with the --data-dir contents the run was trained on")
    write_inter_file(data / "toy.inter", rows)
    state = read_resume(out)  # a resume.pt without a fingerprint falls back to the summary (counts)
    state.pop("data_fingerprint")
    state["dataset"]["train"] += 1
    ds = load_dataset(state["config"])
    with pytest.raises(GraphrecError, match="users, items or interactions"):
        restore_trainer(Trainer(build_model(ds, state["config"]), ds, state["config"], progress=False), state)
    assert invoke("fit", "--resume", out, "--quiet").exit_code == 0


# ----------------------------------------------------------------------------- interrupts around the finish
def test_a_signal_while_the_run_finishes_exits_0_and_names_the_results(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert invoke("fit", "lightgcn", "--epochs", "1", "--out", out, "--quiet", *SMALL).exit_code == 0
    original = RunFolder.finish

    def finish(self):
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, held back by critical() until the folder is finished
        return original(self)

    monkeypatch.setattr(RunFolder, "finish", finish)
    r = invoke("fit", "lightgcn", "--epochs", "2", "--out", out, "--overwrite", "--quiet", *SMALL)
    assert r.exit_code == 0, r.output
    assert r.stderr.strip().splitlines() == [
        f"Interrupted by SIGTERM after the run finished; its results are in {out} (metrics.json, model.pt)"]
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2
    assert not (out / "resume.pt").exists() and not (out / ".lock").exists()
    assert not list(tmp_path.glob("run.*"))


def test_an_interrupt_before_the_swap_keeps_the_run_resumable(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(RunFolder, "finish", lambda self: (_ for _ in ()).throw(Interrupted(signal.SIGINT)))
        r = invoke("fit", "lightgcn", "--epochs", "2", "--out", out, "--quiet", *SMALL)
    assert r.exit_code == 130
    assert f"graphrec fit --resume {out}" in r.stderr and "no run folder" not in r.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert invoke("fit", "--resume", out, "--quiet").exit_code == 0


def test_an_interrupt_while_a_resume_loads_leaves_the_folder_resumable(tmp_path, monkeypatch):
    out = _interrupted_run(tmp_path, monkeypatch, *SMALL)
    before = (out / "run.json").read_text()
    with monkeypatch.context() as m:
        m.setattr("graphrec.train.resume.read_resume", lambda path: (_ for _ in ()).throw(Interrupted(signal.SIGINT)))
        r = invoke("fit", "--resume", out, "--quiet")
    assert r.exit_code == 130
    assert r.stderr.strip().splitlines() == [
        f"Interrupted by SIGINT before the run continued; {out} is unchanged: continue with 'graphrec fit --resume {out}'"]
    assert (out / "run.json").read_text() == before and not (out / ".lock").exists()
    assert invoke("fit", "--resume", out, "--quiet").exit_code == 0
