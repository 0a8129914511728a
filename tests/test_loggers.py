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


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class _Stub:
    def __init__(self):
        self.config = {"epochs": 3}


def test_batch_lines_come_at_most_once_per_interval_with_an_eta():
    clock, lines = _Clock(), []
    log = loggers.LineLogger(lines.append, batch_every_seconds=10.0, clock=clock)
    log.on_epoch_start(_Stub(), 1)
    for b in range(1, 41):  # 1 s per batch, 40 batches
        clock.t += 1.0
        log.on_batch_end(_Stub(), 1, b, 40, 0.5)
    assert [parse_line(x)[1]["batch"] for x in lines] == ["10/40", "20/40", "30/40"]  # none after the last batch
    kind, f = parse_line(lines[0])
    assert kind == "batch" and f == {"epoch": "2/3", "batch": "10/40", "loss": "0.500000", "elapsed": "10.0s", "eta": "30.0s"}


def test_batch_lines_of_a_resumed_partial_epoch_estimate_from_its_own_batches():
    clock, lines = _Clock(), []
    log = loggers.LineLogger(lines.append, batch_every_seconds=5.0, clock=clock)
    log.on_epoch_start(_Stub(), 0)
    for b in range(61, 71):  # resumed after 60 batches; 2 s per batch here
        clock.t += 2.0
        log.on_batch_end(_Stub(), 0, b, 100, 0.25)
    f = parse_line(lines[0])[1]
    assert f["batch"] == "63/100" and f["elapsed"] == "6.0s" and f["eta"] == "74.0s"  # 37 batches left at 2 s


def test_no_batch_lines_without_an_interval():
    lines = []
    log = loggers.LineLogger(lines.append)
    log.on_epoch_start(_Stub(), 0)
    for b in range(1, 5):
        log.on_batch_end(_Stub(), 0, b, 5, 0.1)
    assert lines == []


def test_trainer_off_a_terminal_prints_batch_lines_and_the_cli_its_stages(tmp_path, monkeypatch):
    import io

    from graphrec.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "BATCH_LINE_SECONDS", 0.0)  # a line after every batch but the last
    cfg = small_config("mfbpr", epochs=1, train_batch_size=64)
    ds = load_dataset(cfg)
    buf = io.StringIO()
    tr = Trainer(build_model(ds, cfg), ds, cfg, console=Console(file=buf, force_terminal=False, width=80))
    tr.fit()
    n = tr.sampler.n_batches(64)
    batches = [parse_line(x)[1] for x in buf.getvalue().splitlines() if x.startswith("batch ")]
    assert n > 2 and [b["batch"] for b in batches] == [f"{k}/{n}" for k in range(1, n)]
    from graphrec.cli import common

    monkeypatch.setattr(common, "STAGE_ANNOUNCE_SECONDS", 0.0)  # every stage counts as long
    r = invoke("fit", "lightgcn", "--epochs", "1", "--out", tmp_path / "run", *SMALL)
    assert r.exit_code == 0, r.output
    err = r.stderr.splitlines()
    for step in ("loading data", "building lightgcn"):
        assert f"{step} ..." in err and any(x.startswith(f"{step}: done in ") and x.endswith("s") for x in err), err


def test_a_stage_off_a_terminal_announces_itself_once_it_takes_long():
    import io
    import time

    from graphrec.cli.common import stage

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=80)
    with stage(console, "building x", announce_after=0.05):
        time.sleep(0.3)
    with stage(console, "quick", announce_after=30):
        pass
    assert buf.getvalue().splitlines()[0] == "building x ..."
    assert buf.getvalue().splitlines()[1].startswith("building x: done in 0.")
    assert len(buf.getvalue().splitlines()) == 2  # the quick step printed nothing
    with pytest.raises(GraphrecError), stage(console, "failing", announce_after=0.0):
        time.sleep(0.2)
        raise GraphrecError("bad")
    assert buf.getvalue().splitlines()[2:] == ["failing ..."]  # announced, but no done line after an error
