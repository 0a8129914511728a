#!/usr/bin/env python
"""Time LightGCN / MF-BPR training epochs and a full evaluation on one dataset.

Usage::

    python benchmarks/bench_lightgcn.py                      # embedded synthetic dataset
    python benchmarks/bench_lightgcn.py --data-dir DIR --epochs 5 --json bench-out/tiktok.json
    python benchmarks/bench_lightgcn.py --models lightgcn --set synth_users=5000 --set synth_items=8000

For every model: one warm-up epoch, then ``--epochs`` timed epochs (mean and standard
deviation of seconds per epoch), then one timed full-ranking evaluation of the test
split. Peak resident memory is the process's ``ru_maxrss`` after the model's run (a
running maximum over the whole process, so later models include earlier ones); on CUDA
the peak allocated GPU memory is reported too. Prints a rich table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from graphrec.config import parse_set, resolve_config  # noqa: E402
from graphrec.data.dataset import load_dataset  # noqa: E402
from graphrec.errors import GraphrecError  # noqa: E402
from graphrec.registry import MODELS, load_builtin  # noqa: E402
from graphrec.train.seed import set_seed  # noqa: E402
from graphrec.train.trainer import Trainer  # noqa: E402


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(name: str, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    cls = MODELS.get(name)
    overrides: dict[str, Any] = {"device": args.device, **parse_set(args.sets)}
    if args.data_dir:
        overrides["data_dir"] = str(args.data_dir)
    config = resolve_config(name, cls.default_config, overrides=overrides)
    t0 = time.perf_counter()
    dataset = load_dataset(config)
    load_s = time.perf_counter() - t0

    set_seed(int(config["seed"]))
    t0 = time.perf_counter()
    model = cls(dataset, config)
    trainer = Trainer(model, dataset, config, console=console, progress=False)
    build_s = time.perf_counter() - t0
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    _sync(device)
    t0 = time.perf_counter()
    trainer.train_epoch()  # warm-up (allocator, kernels, caches)
    _sync(device)
    warmup_s = time.perf_counter() - t0

    epoch_s = []
    for e in range(args.epochs):
        trainer.epoch = e + 1
        t0 = time.perf_counter()
        logs = trainer.train_epoch()
        _sync(device)
        epoch_s.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    result = trainer.evaluate("test")
    _sync(device)
    eval_s = time.perf_counter() - t0

    return {
        "model": name,
        "dataset": dataset.name,
        "users": dataset.n_users,
        "items": dataset.n_items,
        "train_rows": int(len(dataset.train)),
        "test_users": result.n_users,
        "train_batch_size": int(config["train_batch_size"]),
        "batches_per_epoch": trainer.sampler.n_batches(int(config["train_batch_size"])),
        "device": str(device),
        "load_s": round(load_s, 4),
        "build_s": round(build_s, 4),
        "warmup_epoch_s": round(warmup_s, 4),
        "epochs_timed": args.epochs,
        "epoch_s_mean": round(statistics.fmean(epoch_s), 4) if epoch_s else None,
        "epoch_s_std": round(statistics.stdev(epoch_s), 4) if len(epoch_s) > 1 else 0.0,
        "epoch_s": [round(s, 4) for s in epoch_s],
        "eval_s": round(eval_s, 4),
        "final_loss": round(float(logs["loss"]), 5) if epoch_s else None,
        "test_recall@20": round(result.metrics.get("recall@20", float("nan")), 4),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
    }


def table(rows: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title)
    for col in ("model", "dataset", "users x items", "train rows", "s/epoch", "warm-up s", "eval s", "recall@20", "peak RSS MiB"):
        t.add_column(col, justify="left" if col in ("model", "dataset") else "right")
    for r in rows:
        t.add_row(
            r["model"],
            r["dataset"],
            f"{r['users']} x {r['items']}",
            str(r["train_rows"]),
            f"{r['epoch_s_mean']:.3f} ± {r['epoch_s_std']:.3f}" if r["epoch_s_mean"] is not None else "-",
            f"{r['warmup_epoch_s']:.3f}",
            f"{r['eval_s']:.3f}",
            f"{r['test_recall@20']:.4f}",
            f"{r['peak_rss_mib']:.0f}" + (f" (GPU {r['peak_gpu_mib']:.0f})" if r["peak_gpu_mib"] is not None else ""),
        )
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, help="MMRec-format folder (default: the embedded synthetic dataset)")
    p.add_argument("--models", nargs="+", default=["lightgcn", "mfbpr"], help="models to time (default: lightgcn mfbpr)")
    p.add_argument("--epochs", type=int, default=5, help="timed epochs after one warm-up epoch (default: 5)")
    p.add_argument("--json", type=Path, default=Path("bench-out/bench_lightgcn.json"), help="JSON output file (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=None if sys.stdout.isatty() else 150)
    load_builtin()
    rows = []
    try:
        for name in args.models:
            with console.status(f"timing {name}"):
                rows.append(bench_model(name, args, console))
    except GraphrecError as exc:
        console.print(f"[red]Error:[/] {exc}")
        return 2
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "dgl": __import__("dgl").__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    console.print(table(rows, f"graphrec baselines: {args.epochs} timed epochs after 1 warm-up"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"environment": env, "args": {k: str(v) for k, v in vars(args).items()}, "results": rows}, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
