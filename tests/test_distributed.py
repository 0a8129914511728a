"""Data-parallel training (graphrec.train.distributed) and the evaluator pieces it relies on.

The main test starts 2 CPU ranks (gloo on 127.0.0.1, :func:`spawn_local`) that train LightGCN
(batch rows sharded, unequal shards) and DGMRec (loss replicated; CLUB steps, generation and a
graph refinement every epoch on rank 0, broadcast) for 2 epochs, and compares them with one
process on the same global batches. Collectives time out after 60 s and the launcher after
180 s, so a hang fails instead of blocking the suite.

DGMRec with ``propagation: sampled`` is held to the same tolerances as the deterministic specs, not
a looser statistical one: its loss is replicated (every rank computes the whole global batch) and
rank 0 broadcasts the torch RNG state after each per-epoch hook, so every rank draws the *same*
neighbourhoods as one process does, and the control variates' history is recomputed on every rank
from the broadcast state. The update is the single-process one up to float rounding (measured: 0),
so a rank that sampled differently, or used a stale history, fails the 1e-4 parameter bound (a
stale history on rank 1 moved the parameters by 2.2e-2 in 3 epochs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import small_config
from graphrec.data.dataset import load_dataset
from graphrec.eval.evaluator import EvalSums, Evaluator
from graphrec.models.base import Scorer
from graphrec.models.build import build_model
from graphrec.train.distributed import SINGLE, DistContext, shard_bounds, spawn_local
from graphrec.train.trainer import Trainer

BASE = {"synth_users": 120, "synth_items": 150, "epochs": 2}
SPECS = (
    # 255 rows per batch: shards of 128 and 127 rows, and a shorter last batch
    ("lightgcn", {"train_batch_size": 255}),
    # refine_every=1: rank 0 refines the item graphs before both epochs and broadcasts them
    ("dgmrec", {"train_batch_size": 256, "refine_every": 1, "club_items": 64}),
    # sparse_embeddings: SparseAdam over row gradients all-gathered across ranks (all neighbours: deterministic)
    ("lightgcn", {"train_batch_size": 255, "propagation": "sampled", "fanouts": -1, "sparse_embeddings": True}),
    # DGMRec sampled (fan-outs below the degrees: real sampling), control variates on (the default; each rank
    # holds the history of rank 0's state: DGMRec.set_extra_state forgets its own), a refinement before every
    # epoch (rank 1 rebuilds its item samplers) and a gate fan-out apart from the aggregation fan-out
    ("dgmrec", {"train_batch_size": 256, "refine_every": 1, "club_items": 64, "propagation": "sampled", "fanouts": 5,
                "aggregation_fanout": 5, "gate_fanout": 3}),
    # ... and without control variates, default fan-outs (the gate shares the aggregation's sampler), with
    # sparse_embeddings (MixedAdam: the ID tables' row gradients all-gathered, the rest all-reduced)
    ("dgmrec", {"train_batch_size": 256, "club_items": 64, "propagation": "sampled", "sampled_control_variate": False,
                "sparse_embeddings": True}),
)


def _train(name: str, overrides: dict, dist: DistContext):
    cfg = small_config(name, **{**BASE, **overrides})
    ds = load_dataset(cfg)
    model = build_model(ds, cfg)
    trainer = Trainer(model, ds, cfg, progress=False, dist=dist)
    return trainer, trainer.fit()


def _worker(out_dir: str, specs) -> None:
    """One rank: train every spec and save its final state and result."""
    from graphrec.train.distributed import init_distributed, shutdown

    dist = init_distributed("cpu", timeout_s=60)
    try:
        assert dist.world_size == 2 and dist.backend == "gloo"
        for i, (name, overrides) in enumerate(specs):
            trainer, result = _train(name, overrides, dist)
            torch.save({"state": trainer.model.state_dict(), "result": result.to_dict()},
                       Path(out_dir) / f"{name}{i}-rank{dist.rank}.pt")
    finally:
        shutdown()


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


def _timeless(result: dict) -> dict:
    return {**{k: v for k, v in result.items() if k != "seconds"},
            "history": [{k: v for k, v in h.items() if k != "seconds"} for h in result["history"]]}


def test_two_gloo_ranks_match_one_process(tmp_path):
    spawn_local(_worker, 2, (str(tmp_path), SPECS), timeout_s=180)
    for i, (name, overrides) in enumerate(SPECS):
        r0 = torch.load(tmp_path / f"{name}{i}-rank0.pt", weights_only=False)
        r1 = torch.load(tmp_path / f"{name}{i}-rank1.pt", weights_only=False)
        s0, s1 = _tensors(r0["state"]), _tensors(r1["state"])
        assert s0.keys() == s1.keys()
        for k in s0:  # the ranks hold bit-identical weights
            assert torch.equal(s0[k], s1[k]), (name, k)
        assert _timeless(r0["result"]) == _timeless(r1["result"])
        trainer, ref = _train(name, overrides, SINGLE)
        sref = _tensors(trainer.model.state_dict())
        assert sref.keys() == s0.keys()
        for k in sref:  # ... equal to one process training on the same global batches
            torch.testing.assert_close(s0[k], sref[k], atol=1e-4, rtol=0, msg=f"{name}: {k}")
        got, want = r0["result"], ref.to_dict()
        losses = [h["loss"] for h in got["history"]]
        assert all(np.isfinite(losses)) and losses[-1] < losses[0], (name, losses)
        assert got["best_epoch"] == want["best_epoch"] and got["epochs_run"] == want["epochs_run"]
        for a, b in zip(got["history"], want["history"]):
            assert a["epoch"] == b["epoch"] and a["loss"] == pytest.approx(b["loss"], rel=1e-4), name
        for split in ("valid", "test"):
            assert got[split]["n_users"] == want[split]["n_users"]
            for m, v in want[split]["metrics"].items():
                assert got[split]["metrics"][m] == pytest.approx(v, abs=1e-3), (name, split, m)
        if overrides.get("refine_every") == 1:  # the refined graphs travelled: both ranks have refinement edges
            e0, e1 = r0["state"]["_extra_state"], r1["state"]["_extra_state"]
            assert any(r.any() for r in e0["refined"].values())
            for m in e0["graphs"]:
                for part in ("indptr", "indices", "data"):
                    np.testing.assert_array_equal(e0["graphs"][m][part], e1["graphs"][m][part])


def test_shard_bounds_cover_the_batch():
    for b in (0, 1, 5, 255, 256):
        for w in (1, 2, 3, 8):
            bounds = [shard_bounds(b, r, w) for r in range(w)]
            assert bounds[0][0] == 0 and bounds[-1][1] == b
            assert all(hi == lo2 for (_, hi), (lo2, _) in zip(bounds, bounds[1:]))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1


@pytest.fixture(scope="module")
def eval_setup():
    cfg = small_config("lightgcn", synth_users=120, synth_items=150)
    ds = load_dataset(cfg)
    gen = torch.Generator().manual_seed(0)
    scorer = Scorer(torch.randn(ds.n_users, 16, generator=gen), torch.randn(ds.n_items, 16, generator=gen))
    return ds, scorer


def test_evaluator_user_subsets_merge_to_the_full_result(eval_setup):
    ds, scorer = eval_setup
    ev = Evaluator(ds, topk=[5, 10, 20], batch_size=17)
    for split in ("valid", "test"):
        full = ev.evaluate(scorer, split)
        parts = [ev.evaluate_sums(scorer, split, u) for u in np.array_split(ev.users(split), 3)]
        merged = EvalSums.merge(parts).result()
        assert merged.n_users == full.n_users
        assert merged.metrics == pytest.approx(full.metrics, abs=1e-12)
        assert merged.group_users == full.group_users
        for g in full.groups:
            assert merged.groups[g] == pytest.approx(full.groups[g], abs=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 50, 149, 150, 1000])
def test_item_chunked_evaluation_equals_unchunked(eval_setup, chunk):
    ds, scorer = eval_setup
    full = Evaluator(ds, topk=[10, 20, 50], batch_size=32)
    chunked = Evaluator(ds, topk=[10, 20, 50], batch_size=32, item_chunk=chunk)
    for split in ("valid", "test"):
        a, b = full.evaluate(scorer, split), chunked.evaluate(scorer, split)
        assert a.metrics == pytest.approx(b.metrics, abs=1e-12)
        assert a.groups.keys() == b.groups.keys()
        for g in a.groups:
            assert a.groups[g] == pytest.approx(b.groups[g], abs=1e-12)


def test_cli_fit_distributed_writes_once(tmp_path):
    """``graphrec fit --distributed --nproc 2``: rank 0 writes the run folder; same test metrics as one process."""
    from click.testing import CliRunner

    from graphrec.cli.main import cli

    args = ["fit", "mfbpr", "--epochs", "2", "--set", "synth_users=120", "--set", "synth_items=150", "--set", "device=cpu",
            "--set", "train_batch_size=101", "--quiet", "--dist-timeout", "60"]
    one = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    two = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "two"), "--distributed", "--nproc", "2"])
    assert two.exit_code == 0, two.output
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "config.yaml", "history.jsonl", "metrics.json", "model.pt", "run.json", "train.log"]  # no .lock, no resume.pt left
    for k, v in m1["test"]["metrics"].items():
        assert m2["test"]["metrics"][k] == pytest.approx(v, abs=1e-3), k
    # a problem on rank 0 (non-empty --out) is one error line for the whole group
    bad = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "two"), "--distributed", "--nproc", "2"])
    assert bad.exit_code == 2 and "not empty" in bad.output


def _rank1_hangs() -> None:
    import os
    import time

    if os.environ["RANK"] == "1":
        time.sleep(120)


def _rank0_crashes() -> None:
    import os

    if os.environ["RANK"] == "0":
        raise ValueError("boom")


def test_spawn_local_stops_a_rank_left_behind():
    import time

    from graphrec.errors import GraphrecError

    t0 = time.monotonic()
    with pytest.raises(GraphrecError, match=r"rank\(s\) \[1\] still running") as info:
        spawn_local(_rank1_hangs, 2, straggler_s=2, timeout_s=100)
    assert time.monotonic() - t0 < 60  # stopped by the straggler bound, not the overall timeout
    # where the stuck rank was: its faulthandler stack, asked for before it was stopped
    message = str(info.value)
    assert "rank 1 was at File" in message and "_rank1_hangs" in message
    kept = message.split("(all threads: ", 1)[1].split(")", 1)[0]
    assert "time.sleep" in open(kept).read() or "_rank1_hangs" in open(kept).read()
    os.unlink(kept)


def test_spawn_local_reports_a_crash_and_stops_the_rest():
    with pytest.raises(RuntimeError, match="a distributed rank failed"):
        spawn_local(_rank0_crashes, 2, timeout_s=100)


@pytest.mark.parametrize("spawned", [True, False])
def test_shutdown_skips_destroy_in_spawned_ranks(monkeypatch, spawned):
    """gloo's destroy_process_group can block forever once the peer has exited: ranks started by
    spawn_local (which end with os._exit) stop after the barrier; other processes destroy the group."""
    import graphrec.train.distributed as D

    calls = []
    monkeypatch.setattr(D.dist, "is_available", lambda: True)
    monkeypatch.setattr(D.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(D.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(D.dist, "destroy_process_group", lambda: calls.append("destroy"))
    if spawned:
        monkeypatch.setenv(D.SPAWNED_RANK_ENV, "1")
    else:
        monkeypatch.delenv(D.SPAWNED_RANK_ENV, raising=False)
    D.shutdown()
    assert calls == (["barrier"] if spawned else ["barrier", "destroy"])


def _mid_epoch_worker(out_dir: str) -> None:
    """One rank of a run writing a mid-epoch state every 2 batches; rank 0 keeps the 3rd."""
    from graphrec.train.distributed import init_distributed, shutdown
    from graphrec.train.resume import save_resume
    from graphrec.train.trainer import Callback

    class Keep(Callback):
        def __init__(self) -> None:
            self.at: list[list[int]] = []

        def on_mid_epoch(self, trainer, epoch, batch) -> None:
            self.at.append([epoch, batch])
            if trainer.dist.is_main and len(self.at) == 3:
                save_resume(Path(out_dir) / "mid.pt", trainer)

    dist = init_distributed("cpu", timeout_s=60)
    try:
        cfg = small_config("lightgcn", **BASE, train_batch_size=255, resume_every_batches=2)
        ds = load_dataset(cfg)
        keep = Keep()
        Trainer(build_model(ds, cfg), ds, cfg, callbacks=[keep], progress=False, dist=dist).fit()
        (Path(out_dir) / f"at-rank{dist.rank}.json").write_text(json.dumps(keep.at))
    finally:
        shutdown()


def test_a_distributed_mid_epoch_state_resumes_in_one_process(tmp_path):
    """Every rank writes (calls ``on_mid_epoch``) at the same batches; rank 0's state holds the loss totals
    summed over the ranks, so one process continuing it ends like one process that ran throughout."""
    from graphrec.train.resume import position_of, read_resume, restore_trainer

    spawn_local(_mid_epoch_worker, 2, (str(tmp_path),), timeout_s=180)
    at0, at1 = (json.loads((tmp_path / f"at-rank{r}.json").read_text()) for r in (0, 1))
    assert at0 == at1 and len(at0) >= 3 and all(b % 2 == 0 for _, b in at0)
    state = read_resume(tmp_path / "mid.pt")
    assert position_of(state) == tuple(at0[2])  # epochs done = the 0-based epoch of the batch
    cfg = small_config("lightgcn", **BASE, train_batch_size=255)
    ds = load_dataset(cfg)
    trainer = Trainer(build_model(ds, cfg), ds, cfg, progress=False)
    restore_trainer(trainer, state)
    got = trainer.fit().to_dict()
    _, ref = _train("lightgcn", {"train_batch_size": 255}, SINGLE)
    want = ref.to_dict()
    assert got["best_epoch"] == want["best_epoch"] and got["epochs_run"] == want["epochs_run"]
    for a, b in zip(got["history"], want["history"]):  # the resumed epoch's loss: rank 0's partial sums are the group's
        assert a["epoch"] == b["epoch"] and a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for m, v in want["test"]["metrics"].items():
        assert got["test"]["metrics"][m] == pytest.approx(v, abs=1e-3), m
