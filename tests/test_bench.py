"""``graphrec bench``: a smoke run (tiny synthetic set, LightGCN + DGMRec), resume, and run plans."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from graphrec.bench import runner as bench_runner
from graphrec.bench.ablations import CI2MG_NOT_EXPRESSIBLE, DGMREC_ABLATIONS
from graphrec.bench.report import PLOTS_SKIPPED
from graphrec.cli.main import cli
from graphrec.data.masks import load_mask_file

from conftest import write_mmrec_dir

TINY = ["--set", "synth_users=80", "--set", "synth_items=100", "--set", "device=cpu", "--set", "train_batch_size=512"]


def _bench(*args: str):
    return CliRunner().invoke(cli, ["bench", *args], catch_exceptions=False)


@pytest.mark.slow
def test_bench_smoke_records_table_and_resume(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "bench"
    args = ["--model", "lightgcn", "--model", "dgmrec", "--protocol", "missing", "--seeds", "2024", "--epochs", "2",
            "--threads", "1", "--quiet", "--out", str(out), *TINY]
    res = _bench(*args)
    assert res.exit_code == 0, res.output
    runs = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert runs == ["dgmrec__missing__seed2024.json", "lightgcn__missing__seed2024.json"]
    for name in runs:
        rec = json.loads((out / "runs" / name).read_text())
        assert rec["seed"] == 2024 and rec["protocol"] == "missing"
        assert rec["config"]["epochs"] == 2 and rec["config"]["synth_items"] == 100
        assert 0.0 <= rec["test"]["recall@20"] <= 1.0
        assert set(rec["test_groups"]) == {"missing=0", "missing=1", "missing=2"}  # synthetic "even" protocol
        assert 1 <= rec["best_epoch"] <= 2 and rec["epochs_run"] == 2
        assert rec["seconds_per_epoch"] > 0 and rec["seconds_per_eval"] > 0 and rec["peak_rss_mb"] > 0
        assert rec["n_evaluations"] == 3  # two validations and the test
    dg = json.loads((out / "runs" / "dgmrec__missing__seed2024.json").read_text())
    assert dg["seconds_knn_build"] is not None and dg["seconds_knn_build"] >= 0
    assert json.loads((out / "runs" / "lightgcn__missing__seed2024.json").read_text())["seconds_knn_build"] is None

    md = (out / "results.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| lightgcn |") or line.startswith("| dgmrec |")]
    assert [line.split(" | ")[0:3] for line in table[:2]] == [["| lightgcn", "missing", "1"], ["| dgmrec", "missing", "1"]]
    assert "s/epoch vs lightgcn" in md and "1.00×" in table[0]
    assert "by item group" in md and "missing=2" in md
    plots_made = (out / "plot_metrics.png").is_file()
    assert plots_made or PLOTS_SKIPPED in md
    summary = json.loads((out / "results.json").read_text())
    assert [(r["model"], r["variant"]) for r in summary["rows"]] == [("lightgcn", "missing"), ("dgmrec", "missing")]

    # resume: every record exists, so nothing is started and the records are untouched
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}

    def no_process(*a, **k):
        raise AssertionError("a finished run was started again")

    monkeypatch.setattr(bench_runner.subprocess, "Popen", no_process)
    res = _bench(*[a for a in args if a != "--quiet"])
    assert res.exit_code == 0, res.output
    assert "skipped 2 finished run(s)" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == before
    assert "| dgmrec | missing | 1 |" in (out / "results.md").read_text()
    res = _bench(*args, "--dry-run")
    assert "2 runs, 2 done" in res.output


def test_bench_plan_ablation_lists_every_variant(tmp_path: Path) -> None:
    res = _bench("--model", "lightgcn", "--model", "dgmrec", "--model", "ci2mg", "--protocol", "ablation",
                 "--seeds", "1,2", "--dry-run", "--out", str(tmp_path / "b"))
    assert res.exit_code == 0, res.output
    ids = [line.split("\t")[0] for line in res.output.splitlines() if "\t" in line]
    n_ci2mg = 4
    assert len(ids) == 2 * (1 + len(DGMREC_ABLATIONS) + n_ci2mg)
    assert "lightgcn__default__seed1" in ids and "dgmrec__w-o-refinement__seed2" in ids
    assert "ci2mg__intra-only-no-ot-no-l-s-no-l-rec__seed1" in ids
    assert not CI2MG_NOT_EXPRESSIBLE  # every Table 3 row has a config
    assert not (tmp_path / "b").exists()  # a dry run writes nothing


def test_bench_plan_sweep_writes_nested_masks_beside_links(tmp_path: Path) -> None:
    data = write_mmrec_dir(tmp_path / "data")
    out = tmp_path / "b"
    p = bench_runner.plan(["lightgcn"], "ratio-sweep", out, data_dir=str(data), seeds=[7], epochs=1)
    work = out / "work" / "ratio-sweep"
    assert (work / "toy.inter").is_symlink() and (work / "image_feat.npy").resolve() == (data / "image_feat.npy").resolve()
    assert not (data / "missing_items_0.2.npy").exists()  # the data folder is left alone
    assert [s["variant"] for s in p.specs] == ["missing=0", "missing=0.2", "missing=0.4", "missing=0.6", "missing=0.8"]
    assert p.specs[2]["overrides"] == {"data_dir": str(work), "missing_ratio": 0.4, "mask_file": None, "epochs": 1, "threads": 1, "seed": 7}
    m2 = load_mask_file(work / "missing_items_0.2.npy", ["image", "text"], 15)
    m4 = load_mask_file(work / "missing_items_0.4.npy", ["image", "text"], 15)
    for m in ("image", "text"):
        assert not np.any(m2.missing[m] & ~m4.missing[m])  # nested
    assert load_mask_file(work / "missing_items_0.0.npy", ["image", "text"], 15).any_missing() is False
    synth = bench_runner.plan(["dgmrec"], "ci2mg-sweep", out, seeds=[1])
    assert [s["overrides"]["synth_missing"] for s in synth.specs] == [0.5, 0.6, 0.7, 0.8, 0.9]


def test_bench_user_errors_are_one_line(tmp_path: Path) -> None:
    for args, message in (
        (["--model", "lightgcn", "--protocol", "natural"], "needs --data-dir"),
        (["--model", "lightgcn", "--set", "knn=3"], "unknown config key 'knn'"),
        (["--model", "dgmrec", "--preset", "lightgcn=x.yaml"], "not among --model"),
        (["--model", "lightgcn", "--seeds", "a,b"], "--seeds expects"),
        (["--model", "lightgcn", "--variant", "nope"], "not a variant"),
        (["--model", "nomodel"], "nomodel"),
    ):
        res = _bench(*args, "--dry-run", "--out", str(tmp_path / "b"))
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and res.output.count("Error:") == 1


@pytest.mark.parametrize("command", ["bench", "tune"])
@pytest.mark.parametrize(("exc", "code", "name"), [("sigterm", 143, "SIGTERM"), ("ctrl-c", 130, "SIGINT")])
def test_interrupted_bench_and_tune_exit_with_one_line(tmp_path: Path, monkeypatch, command, exc, code, name) -> None:
    import signal

    from graphrec.train.interrupt import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGTERM) if exc == "sigterm" else KeyboardInterrupt()

    monkeypatch.setattr(bench_runner, "run_all", interrupted)
    if command == "bench":
        args = ["bench", "--model", "mfbpr", "--seeds", "1", "--epochs", "1", "--quiet", "--out", str(tmp_path / "o"), *TINY]
    else:
        space = tmp_path / "space.yaml"
        space.write_text("learning_rate: [0.001]\n")
        args = ["tune", "mfbpr", "--space", str(space), "--epochs", "1", "--quiet", "--out", str(tmp_path / "o"), *TINY]
    res = CliRunner().invoke(cli, args)
    lines = res.output.strip().splitlines()
    assert res.exit_code == code, res.output
    assert lines[-1].startswith(f"{command} interrupted (signal {code - 128}, {name}); 0 of 1 runs finished in "), res.output
    assert "Traceback" not in res.output and not list((tmp_path / "o").glob("runs/*.json"))


def test_report_only_writes_no_sweep_work_folder(tmp_path: Path) -> None:
    data = write_mmrec_dir(tmp_path / "data")
    out = tmp_path / "b"
    out.mkdir()
    res = CliRunner().invoke(cli, ["bench", "--model", "lightgcn", "--protocol", "ratio-sweep", "--data-dir", str(data),
                                   "--report-only", "--out", str(out)])
    assert res.exit_code == 2 and "--report-only: no finished record" in res.output, res.output
    assert not (out / "work").exists()  # no masks written for a report
    p = bench_runner.plan(["lightgcn"], "ratio-sweep", out, data_dir=str(data), write=False)
    assert not (out / "work").exists() and any(n.startswith("masks: nested") for n in p.notes)


def test_threads_is_the_config_key_of_every_run(tmp_path: Path) -> None:
    def threads(**kw):
        p = bench_runner.plan(["mfbpr"], "missing", tmp_path / "b", seeds=[1], write=False, **kw)
        return {(s["threads"], s["config"]["threads"], s["overrides"].get("threads")) for s in p.specs}

    assert threads() == {(1, 1, 1)}  # bench's default: one thread per run
    assert threads(threads=4) == {(4, 4, 4)}
    assert threads(sets={"threads": 3}) == {(3, 3, 3)}
    assert threads(sets={"threads": 2}, threads=2) == {(2, 2, 2)}
    assert threads(threads=0) == {(0, 0, 0)}  # all CPUs the worker may use
    with pytest.raises(bench_runner.GraphrecError, match="--threads 4 and --set threads=2 disagree"):
        threads(sets={"threads": 2}, threads=4)
    # another thread count is no other setting: the record is kept
    spec = bench_runner.plan(["mfbpr"], "missing", tmp_path / "b", seeds=[1], threads=4, write=False).specs[0]
    old = {"config": {**spec["config"], "threads": 1}}
    assert bench_runner.changed_settings(old, spec) == {}


def test_set_threads_is_what_the_worker_uses(tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = _bench("--model", "mfbpr", "--seeds", "1", "--epochs", "1", "--set", "threads=2", "--quiet", "--out", str(out), *TINY)
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "runs" / "mfbpr__missing__seed1.json").read_text())
    assert rec["config"]["threads"] == 2 and rec["threads"] == 2 and rec["environment"]["torch_threads"] == 2
    res = _bench("--model", "mfbpr", "--seeds", "1", "--epochs", "1", "--threads", "1", "--set", "threads=2", "--out", str(out), *TINY)
    assert res.exit_code == 2 and "--threads 1 and --set threads=2 disagree" in res.output
