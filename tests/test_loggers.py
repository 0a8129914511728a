"""Logs outside a terminal: plain evaluation lines, train.log, history.jsonl, the TensorBoard logger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from conftest import assert_user_error, invoke, small_config
from graphrec.data.dataset import load_dataset
from graphrec.errors import GraphrecError
from graphrec.models.build import build_model
from graphrec.train import loggers
from graphrec.train.loggers import TensorBoardLogger, eval_line, parse_line
from graphrec.train.trainer import Trainer

SMALL = ["--set", "synth_users=150", "--set", "synth_items=200"]


def test_eval_line_format_is_stable():
    record = {"epoch": 3, "loss": 0.6931471, "seconds": 1.0, "valid_recall@20": 0.0123}
    line = eval_line(record, 50, "recall@20", 0.015, 2, 12.34)
    assert line == "epoch=3/50 loss=0.693147 recall@20=0.0123 best=0.0150 best_epoch=2 elapsed=12.3s"
    kind, fields = parse_line(line)
    assert kind == "epoch" and fields == {"epoch": "3/50", "loss": "0.693147", "recall@20": "0.0123", "best": "0.0150",
                                          "best_epoch": "2", "elapsed": "12.3s"}


def test_cli_off_a_terminal_prints_one_line_per_evaluation_and_writes_logs(tmp_path):
    out = tmp_path / "run"
    r = invoke("fit", "lightgcn", "--epochs", "4", "--set", "eval_step=2", "--out", out, *SMALL)
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    evals = [line for line in lines if line.startswith("epoch=")]
    assert [parse_line(line)[1]["epoch"] for line in evals] == ["2/4", "4/4"]  # one per evaluation, as they happen
    done = [line for line in lines if line.startswith("done ")]
    assert len(done) == 1 and "best_epoch=" in done[0] and "test_recall@20=" in done[0]
    assert not any("━" in line and "loss " in line for line in lines)  # no progress bar drawn at the end
    log = (out / "train.log").read_text().splitlines()
    assert log[0].startswith("start model=lightgcn") and log[1:] == evals + done
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and all("loss" in h for h in history)
    assert ["valid_recall@20" in h for h in history] == [False, True, False, True]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"] == history


def test_quiet_keeps_the_log_files_but_prints_no_lines(tmp_path):
    out = tmp_path / "run"
    r = invoke("fit", "mfbpr", "--epochs", "2", "--out", out, "--quiet", *SMALL)
    assert r.exit_code == 0 and r.stderr == ""
    assert len([x for x in (out / "train.log").read_text().splitlines() if x.startswith("epoch=")]) == 2


def test_trainer_on_a_non_terminal_console_prints_lines():
    import io

    cfg = small_config("mfbpr", epochs=2)
    ds = load_dataset(cfg)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=80)
    Trainer(build_model(ds, cfg), ds, cfg, console=console).fit()
    text = buf.getvalue().splitlines()
    assert [t.split()[0] for t in text] == ["epoch=1/2", "epoch=2/2", "done"]


class FakeWriter:
    def __init__(self):
        self.scalars: list[tuple[str, float, int]] = []
        self.closed = False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, float(value), int(step)))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_tensorboard_logger_writes_scalars_per_epoch():
    cfg = small_config("lightgcn", epochs=3)
    ds = load_dataset(cfg)
    writer = FakeWriter()
    result = Trainer(build_model(ds, cfg), ds, cfg, callbacks=[TensorBoardLogger(writer)], progress=False).fit()
    tags = {}
    for tag, value, step in writer.scalars:
        tags.setdefault(tag, []).append((step, value))
    assert [s for s, _ in tags["train/loss"]] == [1, 2, 3]
    assert [v for _, v in tags["train/loss"]] == [h["loss"] for h in result.history]
    assert [s for s, _ in tags["valid/recall@20"]] == [1, 2, 3] and "valid/ndcg@50" in tags
    assert tags["test/recall@20"] == [(result.best_epoch, pytest.approx(result.test.metrics["recall@20"]))]
    assert "time/epoch_seconds" in tags and writer.closed


def test_logger_tensorboard_without_the_package_is_one_error_line(tmp_path, monkeypatch):
    import importlib.util
    import sys

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    r = invoke("fit", "lightgcn", "--epochs", "1", "--out", tmp_path / "r", "--logger", "tensorboard", *SMALL)
    assert_user_error(r, "tensorboard", 'pip install -e ".[tensorboard]"')
    assert not (tmp_path / "r").exists()  # nothing written
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(GraphrecError, match="tensorboard"):
        loggers.summary_writer(tmp_path / "tb")


def test_logger_tensorboard_writes_into_the_run_folder(tmp_path, monkeypatch):
    made = []

    def fake_summary_writer(log_dir, purge_step=None):
        made.append((Path(log_dir), purge_step))
        return FakeWriter()

    monkeypatch.setattr(loggers, "require_tensorboard", lambda: None)
    monkeypatch.setattr(loggers, "summary_writer", fake_summary_writer)
    r = invoke("fit", "lightgcn", "--epochs", "1", "--out", tmp_path / "r", "--logger", "tensorboard", "--quiet", *SMALL)
    assert r.exit_code == 0, r.output
    assert made == [(tmp_path / "r" / "tensorboard", None)]
