#!/usr/bin/env python
"""Seconds per epoch of one process vs data-parallel processes (``graphrec fit --distributed``).

Usage::

    python benchmarks/bench_distributed.py                              # lightgcn and dgmrec, embedded synthetic set
    python benchmarks/bench_distributed.py --models lightgcn --epochs 5 --nproc 2 --json bench-out/dist.json
    python benchmarks/bench_distributed.py --set synth_users=5000 --set synth_items=8000

For every model, three runs of the ``graphrec fit`` command on CPU: one process with one
thread, one process with ``--nproc`` threads (skip it with ``--no-threaded``), and ``--nproc``
processes with one thread each (``--distributed``, gloo on 127.0.0.1). Reported: mean seconds per training epoch (the
``seconds`` of metrics.json's history, rank 0's clock: per-epoch hooks + batches, without
evaluation) over the epochs after the first, total wall time of the command, and test
Recall@20 (same in every setting: the data-parallel update equals the single-process one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(model: str, args: argparse.Namespace, nproc: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "graphrec.cli.main", "fit", model, "--epochs", str(args.epochs), "--set", "device=cpu",
               "--quiet", "--out", tmp, "--overwrite"]
        for s in args.sets:
            cmd += ["--set", s]
        if nproc > 1:
            cmd += ["--distributed", "--nproc", str(nproc)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())
    secs = [h["seconds"] for h in metrics["history"]]
    timed = secs[1:] or secs
    return {
        "model": model, "processes": nproc, "threads_per_process": threads, "epoch_seconds": secs,
        "s_per_epoch": statistics.mean(timed), "s_per_epoch_std": statistics.pstdev(timed), "wall_s": wall,
        "test_recall@20": metrics["test"]["metrics"].get("recall@20"), "distributed": metrics.get("distributed"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["lightgcn", "dgmrec"])
    p.add_argument("--epochs", type=int, default=6, help="epochs per run (the first is not averaged)")
    p.add_argument("--nproc", type=int, default=2, help="processes of the data-parallel run (and threads of the second run)")
    p.add_argument("--no-threaded", action="store_true", help="skip the one-process run with --nproc threads")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--json", type=Path, default=Path("bench-out/bench_distributed.json"))
    args = p.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    settings = [(1, 1)] + ([] if args.no_threaded else [(1, args.nproc)]) + [(args.nproc, 1)]
    records = []
    for model in args.models:
        for nproc, threads in settings:
            with console.status(f"{model}: {nproc} process(es) x {threads} thread(s)"):
                records.append(run(model, args, nproc, threads))
    table = Table(title=f"seconds per epoch, CPU, {args.epochs} epochs ({os.cpu_count()} cores)")
    for col in ("model", "setting", "s/epoch", "vs 1 process x 1 thread", "wall (whole command)", "test recall@20"):
        table.add_column(col, justify="right")
    for r in records:
        base = next(b for b in records if b["model"] == r["model"] and b["processes"] == 1 and b["threads_per_process"] == 1)
        setting = (f"{r['processes']} processes x 1 thread (gloo)" if r["processes"] > 1
                   else f"1 process x {r['threads_per_process']} thread(s)")
        table.add_row(r["model"], setting, f"{r['s_per_epoch']:.3f} ± {r['s_per_epoch_std']:.3f}",
                      f"{base['s_per_epoch'] / r['s_per_epoch']:.2f}x", f"{r['wall_s']:.1f} s", f"{r['test_recall@20']:.4f}")
    console.print(table)
    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"env": env, "args": {k: v for k, v in vars(args).items() if k != "json"},
                                     "records": records}, indent=2, default=str) + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
