"""LossTermWatch: one warning when a loss term runs away, none for terms that shrink or stay in range."""

from __future__ import annotations

import warnings

import pytest
from conftest import invoke
from hypothesis import given
from hypothesis import strategies as st

from graphrec.errors import GraphrecWarning
from graphrec.train.loss_watch import LossTermWatch

SMALL = ["--set", "synth_users=150", "--set", "synth_items=200", "--set", "embedding_size=16"]


def _rows(values: dict[str, list[float]]):
    n = len(next(iter(values.values())))
    return [{"epoch": e + 1, **{k: v[e] for k, v in values.items()}, "loss": 1.0, "seconds": 0.1} for e in range(n)]


def _watch(rows, model=None) -> tuple[LossTermWatch, list[str]]:
    w = LossTermWatch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for r in rows:
            w.observe(r, model)
    return w, [str(c.message) for c in caught if issubclass(c.category, GraphrecWarning)]


@given(st.lists(st.floats(min_value=-50, max_value=50, allow_nan=False), min_size=1, max_size=30),
       st.floats(min_value=0.01, max_value=1.0))
def test_terms_within_the_factor_of_their_minimum_never_warn(values, scale):
    # every value within 10x of every other (|x| in [scale, 9.9 scale]) or at most the floor: no warning
    bounded = [max(scale, min(abs(v), 9.9 * scale)) * (1 if v >= 0 else -1) for v in values]
    _, msgs = _watch(_rows({"recon": bounded}))
    assert msgs == []


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=30))
def test_a_non_increasing_term_never_warns(values):
    _, msgs = _watch(_rows({"bpr": sorted(values, reverse=True)}))
    assert msgs == []


def test_a_runaway_term_warns_once_naming_it_and_its_growth():
    rows = _rows({"bpr": [0.69, 0.5, 0.4, 0.35, 0.3], "recon": [0.03, 0.009, 0.5, 2.0, 275.0]})
    w, msgs = _watch(rows)
    assert len(msgs) == 1, msgs  # epoch 4 (2.0 > 10 x 0.009 and > 1); not again at epoch 5
    assert msgs[0].startswith("loss term 'recon' rose from 0.009 (epoch 2) to 2 (epoch 4)")
    assert "learning rate" in msgs[0]  # the generic hint, no model given
    assert w.warned == {"recon"}


def test_small_terms_may_grow_by_any_factor_below_the_floor():
    _, msgs = _watch(_rows({"club": [1e-6, 1e-4, 0.5, 0.9]}))
    assert msgs == []


def test_a_resumed_run_keeps_the_minimum_and_does_not_repeat_a_warning():
    rows = _rows({"recon": [0.01, 0.01, 5.0, 50.0, 500.0]})

    class Loop:
        history = rows[:3]  # the interrupted process warned at epoch 3

    class Trainer:
        loop = Loop()
        model = None

    w = LossTermWatch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w.on_train_start(Trainer())
        for r in rows[3:]:
            w.on_epoch_logged(Trainer(), r["epoch"] - 1, r, True, False)
    assert caught == [] and w.low["recon"] == (0.01, 1)
    # resumed before the jump: the minimum of the earlier epochs still counts
    Loop.history = rows[:2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w.on_train_start(Trainer())
        w.on_epoch_logged(Trainer(), 2, rows[2], True, False)
    assert len(caught) == 1 and "from 0.01 (epoch 1) to 5 (epoch 3)" in str(caught[0].message)


@pytest.mark.parametrize("recon_rows", ["all", "observed"])
def test_fit_prints_one_warning_line_with_dgmrec_s_hint(recon_rows, tmp_path, monkeypatch):
    """Through `graphrec fit`: a reconstruction term that jumps 1000x after the first epoch gives one
    `warning:` line; DGMRec's hint names recon_rows=observed only where that is not already set."""
    from graphrec.models.dgmrec import DGMRec

    original_loss, original_start = DGMRec.loss, DGMRec.on_epoch_start
    state = {"epoch": 0}

    def on_epoch_start(self, trainer, epoch):
        state["epoch"] = epoch
        return original_start(self, trainer, epoch)

    def loss(self, batch):
        out = original_loss(self, batch)
        if state["epoch"] >= 1:  # only the logged term: the gradients are the model's own
            out["recon"] = out["recon"].detach() * 0 + 1000.0
        return out

    monkeypatch.setattr(DGMRec, "on_epoch_start", on_epoch_start)
    monkeypatch.setattr(DGMRec, "loss", loss)
    r = invoke("fit", "dgmrec", "--epochs", "3", "--quiet", "--out", tmp_path / "r", *SMALL, "--set", f"recon_rows={recon_rows}")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if line.startswith("warning: loss term")]
    assert len(lines) == 1 and lines[0].startswith("warning: loss term 'recon' rose from ") and "(epoch 2)" in lines[0], r.stderr
    assert ("recon_rows=observed stops it" in lines[0]) == (recon_rows == "all")
