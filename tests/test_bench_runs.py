"""``graphrec bench``: settings never mixed, clean stops, logs, per-user metrics and significance."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from graphrec.bench import runner as bench_runner
from graphrec.bench.significance import mark, paired_tests
from graphrec.bench.worker import load_per_user, save_per_user
from graphrec.cli.main import cli

from conftest import REPO_ROOT

TINY = ["--set", "synth_users=60", "--set", "synth_items=80", "--set", "device=cpu", "--set", "train_batch_size=512"]


def _bench(*args: str):
    return CliRunner().invoke(cli, ["bench", *args], catch_exceptions=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of an exited parent is reaped by init; treat it as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def test_paired_tests_detect_a_shift_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    users = np.arange(400)
    base = rng.random(400)
    same = paired_tests((users, base), (users, base.copy()))
    assert same["t_p"] == 1.0 and same["wilcoxon_p"] == 1.0 and same["mean_diff"] == 0.0
    better = paired_tests((users, base), (users, base + 0.05 + 0.01 * rng.standard_normal(400)))
    assert better["t_p"] < 1e-6 and better["wilcoxon_p"] < 1e-6 and better["mean_diff"] > 0.04
    assert mark(better) == "*"
    noise = paired_tests((users, base), (users, base + 0.2 * rng.standard_normal(400)))
    assert noise["t_p"] > 0.01 and mark(noise) in ("", "(*)")
    # only the users present in both runs are paired
    part = paired_tests((users, base), (users[100:], base[100:] + 1.0))
    assert part["users"] == 300 and part["mean_diff"] == pytest.approx(1.0)


def test_per_user_file_round_trips_without_pickle(tmp_path: Path) -> None:
    path = tmp_path / "r.users.npz"
    save_per_user(path, [3, 5, 9], {"recall@20": [0.5, 0.0, 1.0]})
    users, vals = load_per_user(path)
    assert users.tolist() == [3, 5, 9] and vals["recall@20"].tolist() == [0.5, 0.0, 1.0]
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    os.replace(tmp_path / "evil.npy", tmp_path / "evil.users.npz")
    assert load_per_user(tmp_path / "evil.users.npz") is None  # not an npz of plain arrays: refused


def test_shared_trainer_settings_unless_a_preset_or_set_names_them(tmp_path: Path) -> None:
    p = bench_runner.plan(["lightgcn", "dgmrec", "ci2mg"], "missing", tmp_path / "b", seeds=[1])
    cfg = {s["model"]: s["config"] for s in p.specs}
    for key in ("learning_rate", "train_batch_size", "epochs", "stopping_step", "learning_rate_scheduler"):
        assert cfg["dgmrec"][key] == cfg["lightgcn"][key] == cfg["ci2mg"][key], key
    assert any("dgmrec: shared trainer settings" in n and "learning_rate 0.003 -> 0.001" in n for n in p.notes)
    preset = tmp_path / "dg.yaml"
    preset.write_text("learning_rate: 0.003\n")
    p = bench_runner.plan(["lightgcn", "dgmrec"], "missing", tmp_path / "b", seeds=[1], presets={"dgmrec": [str(preset)]},
                          sets={"train_batch_size": 256})
    cfg = {s["model"]: s["config"] for s in p.specs}
    assert cfg["dgmrec"]["learning_rate"] == 0.003 and cfg["lightgcn"]["learning_rate"] == 0.001
    assert cfg["dgmrec"]["train_batch_size"] == cfg["lightgcn"]["train_batch_size"] == 256
    own = bench_runner.plan(["dgmrec"], "missing", tmp_path / "b", seeds=[1], trainer="model")
    assert own.specs[0]["config"]["learning_rate"] == 0.003 and own.specs[0]["config"]["train_batch_size"] == 1024


@pytest.mark.slow
def test_bench_records_logs_settings_and_refuses_mixed_settings(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["--model", "lightgcn", "--model", "mfbpr", "--seeds", "1,2", "--epochs", "2", "--threads", "1", "--quiet",
            "--out", str(out), *TINY]
    res = _bench(*args)
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "runs" / "mfbpr__missing__seed1.json").read_text())
    assert rec["config"]["epochs"] == 2 and rec["spec"]["config"]["epochs"] == 2  # the resolved spec it ran with
    assert rec["device"] == "cpu" and rec["threads"] == 1
    assert [p["epoch"] for p in rec["valid_curve"]] == [1, 2] and "recall@20" in rec["valid_curve"][0]
    assert rec["hit_epoch_cap"] is True and rec["epochs_cap"] == 2
    users, vals = load_per_user(out / "runs" / rec["test_per_user"]["file"])
    assert len(users) == rec["test_users"] and set(vals) >= {"recall@20", "ndcg@20", "recall@50", "ndcg@50"}
    assert vals["recall@20"].mean() == pytest.approx(rec["test"]["recall@20"], abs=1e-9)
    log = (out / "logs" / "mfbpr__missing__seed1.log").read_text()
    # the stable plain lines of graphrec.train.loggers, then the test metrics
    from graphrec.train.loggers import parse_line

    lines = log.splitlines()
    evals = [parse_line(x)[1] for x in lines if x.startswith("epoch=")]
    assert [e["epoch"] for e in evals] == ["1/2", "2/2"], log
    assert float(evals[-1]["recall@20"]) == pytest.approx(rec["valid_curve"][-1]["recall@20"], abs=6e-5)
    kind, done = parse_line(next(x for x in lines if x.startswith("done ")))
    assert kind == "done" and done["epochs"] == "2" and done["best_epoch"] == str(rec["best_epoch"])
    assert any(x.startswith("test: recall@") and "recall@20 " in x for x in lines), log
    md = (out / "results.md").read_text()
    assert "test recall@50" in md and "test ndcg@50" in md
    assert "| mfbpr | missing | lr 0.001, batch 512, cap 2, patience 20" in md
    assert "⚠ cap (2)" in md and "## Significance against lightgcn" in md
    assert re.search(r"\| mfbpr \| missing \| lightgcn / missing \| recall@20 \| 2 \| 60 \| [-+]\d\.\d{4} \|", md), md

    # --report-only: a report from the finished records of a larger plan, nothing run
    res = _bench(*[a if a != "1,2" else "1,2,3" for a in args if a != "--quiet"], "--report-only")
    assert res.exit_code == 0 and "from 4 of 6 runs" in res.output, res.output
    assert not (out / "runs" / "mfbpr__missing__seed3.json").exists()

    # other epochs, --set or presets: refused, naming the keys; nothing is run or changed
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    res = _bench(*[a if a != "2" else "3" for a in args], "--set", "learning_rate=0.002")
    assert res.exit_code == 2 and res.output.count("Error:") == 1
    assert "4 record(s) made with other settings" in res.output and "epochs: 2 -> 3" in res.output
    assert "learning_rate: 0.001 -> 0.002" in res.output and "--rerun-changed" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == before
    dry = _bench(*args, "--set", "learning_rate=0.002", "--dry-run")
    assert "mfbpr__missing__seed1\tother settings: learning_rate" in dry.output
    # --rerun-changed runs only the changed records again and keeps the old ones aside
    res = _bench("--model", "lightgcn", "--seeds", "1", "--epochs", "2", "--threads", "1", "--quiet", "--out", str(out),
                 *TINY, "--set", "learning_rate=0.002", "--rerun-changed")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "runs" / "lightgcn__missing__seed1.json").read_text())["config"]["learning_rate"] == 0.002
    assert len(list((out / "runs" / "replaced").glob("*/lightgcn__missing__seed1.json"))) == 1


def _start_bench(out: Path, epochs: int = 400) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "graphrec.cli.main", "bench", "--model", "lightgcn", "--seeds", "1", "--epochs", str(epochs),
           "--set", "stopping_step=1000", "--threads", "1", "--quiet", "--out", str(out), *TINY]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _worker_pid(log: Path, timeout: float = 120.0) -> int:
    end = time.time() + timeout
    while time.time() < end:
        m = re.search(r"\(pid (\d+)\)", log.read_text()) if log.is_file() else None
        if m and "epoch=1/" in log.read_text():
            return int(m.group(1))
        time.sleep(0.2)
    raise AssertionError(f"the worker never started: {log.read_text() if log.is_file() else 'no log'}")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process checks read /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_bench_ends_its_worker_and_writes_no_record(tmp_path: Path, sig: int) -> None:
    out = tmp_path / "bench"
    proc = _start_bench(out)
    log = out / "logs" / "lightgcn__missing__seed1.log"
    pid = _worker_pid(log)
    assert _alive(pid)
    end = time.time() + 60
    while "epoch=2/" not in log.read_text() and time.time() < end:  # epoch 1's resume state is written
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "bench interrupted (signal 15, SIGTERM)" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "no record written" in (out / "logs" / "lightgcn__missing__seed1.log").read_text()
    end = time.time() + 30
    while _alive(pid) and time.time() < end:
        time.sleep(0.2)
    assert not _alive(pid), "the worker outlived bench"
    assert not (out / "runs" / "lightgcn__missing__seed1.json").exists()
    # the run in progress keeps one resume state, whole (the same command continues it), and no temporary file
    from graphrec.bench.resume import saved_position

    assert sorted(p.name for p in (out / "logs").iterdir() if "resume" in p.name) == ["lightgcn__missing__seed1.resume.pt"]
    assert saved_position(out / "logs" / "lightgcn__missing__seed1.resume.pt")[0] >= 1


def test_worker_ranks_the_test_split_once(tmp_path: Path, monkeypatch) -> None:
    from graphrec.bench import worker
    from graphrec.eval.evaluator import Evaluator

    calls: list[str] = []
    original = Evaluator.evaluate_sums

    def counted(self, scorer, split="valid", users=None, per_user=()):
        calls.append(split)
        return original(self, scorer, split, users, per_user)

    monkeypatch.setattr(Evaluator, "evaluate_sums", counted)
    ranked: list[int] = []
    original_topk = Evaluator._topk

    def counted_topk(self, scorer, ub, *args):
        ranked.append(len(ub))
        return original_topk(self, scorer, ub, *args)

    monkeypatch.setattr(Evaluator, "_topk", counted_topk)
    sets = {"synth_users": 60, "synth_items": 80, "device": "cpu", "train_batch_size": 512}
    spec = bench_runner.plan(["mfbpr"], "missing", tmp_path, sets=sets, seeds=[1], epochs=2, write=False).specs[0]
    rec = worker.run_spec(spec, None, tmp_path / "u.users.npz")
    assert calls.count("test") == 1 and calls.count("valid") == 2, calls
    assert ranked == [60] * 3  # one ranking pass (one batch of the 60 users) per evaluation: 2 valid + 1 test
    users, vals = load_per_user(tmp_path / "u.users.npz")
    assert len(users) == rec["test_users"]
    for name in ("recall@20", "ndcg@20", "recall@50", "ndcg@50"):
        assert vals[name].mean() == pytest.approx(rec["test"][name], abs=1e-12)
