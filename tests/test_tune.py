"""``graphrec tune``: search spaces, validation-only selection, resume, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from graphrec.bench import runner as bench_runner
from graphrec.bench.tune import combinations, select, tune_plan
from graphrec.cli.main import cli

TINY = ["--set", "synth_users=60", "--set", "synth_items=80", "--set", "device=cpu", "--set", "train_batch_size=512"]


def test_grid_and_random_combinations() -> None:
    space = {"learning_rate": [0.001, 0.01], "reg_weight": [0.0, 0.1, 1.0]}
    grid = combinations(space, "grid", None, 0)
    assert len(grid) == 6 and {"learning_rate": 0.01, "reg_weight": 1.0} in grid
    rnd = combinations(space, "random", 4, 3)
    assert len(rnd) == 4 and all(c in grid for c in rnd) and len({json.dumps(c) for c in rnd}) == 4
    assert rnd == combinations(space, "random", 4, 3)  # seeded
    assert len(combinations(space, "random", 50, 3)) == 6


def test_selection_uses_validation_only(tmp_path: Path) -> None:
    p = tune_plan("mfbpr", [{"reg_weight": 0.0}, {"reg_weight": 0.1}], tmp_path, seeds=[1])
    recs = []
    for spec, (valid, test) in zip(p.specs, [(0.30, 0.90), (0.40, 0.10)]):  # the better test belongs to the worse validation
        recs.append({"variant": spec["variant"], "seed": 1, "config": spec["config"], "valid": {"recall@20": valid},
                     "test": {"recall@20": test}, "best_epoch": 3})
    res = select(p, recs)
    assert res["chosen"]["overrides"] == {"reg_weight": 0.1} and res["test"]["recall@20"] == 0.10


@pytest.mark.slow
def test_tune_cli_runs_trials_resumes_and_reports(tmp_path: Path, monkeypatch) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("reg_weight: [0.0, 0.1]\n")
    out = tmp_path / "t"
    args = ["tune", "mfbpr", "--space", str(space), "--epochs", "2", "--quiet", "--out", str(out), *TINY]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert sorted(f.name for f in (out / "runs").glob("*.json")) == [
        "mfbpr__reg-weight-0.0__seed2024.json", "mfbpr__reg-weight-0.1__seed2024.json"]
    md = (out / "tune.md").read_text()
    assert "## Chosen:" in md and md.count("| test metric |") == 1
    summary = json.loads((out / "tune.json").read_text())
    assert summary["chosen"]["valid"] == max(t["valid"] for t in summary["trials"])

    def no_process(*a, **k):
        raise AssertionError("a finished trial was started again")

    monkeypatch.setattr(bench_runner.subprocess, "Popen", no_process)
    assert CliRunner().invoke(cli, args, catch_exceptions=False).exit_code == 0


def test_tune_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    for text, msg in (("reg_weight: 0.1\n", "must be a non-empty list"), ("seed: [1, 2]\n", "use --seeds"), ("knn: [1]\n", "unknown config key 'knn'")):
        bad.write_text(text)
        res = CliRunner().invoke(cli, ["tune", "mfbpr", "--space", str(bad), "--out", str(tmp_path / "o")])
        assert res.exit_code == 2 and msg in res.output and res.output.count("Error:") == 1, res.output
    bad.write_text("reg_weight: [0.1]\n")
    res = CliRunner().invoke(cli, ["tune", "mfbpr", "--space", str(bad), "--set", "reg_weight=1", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "also in the search space" in res.output
