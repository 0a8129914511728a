#!/usr/bin/env python
"""Seconds per LightGCN (or DGMRec) training epoch, full vs sampled propagation, from 10^5 to 10^7 interactions.

Usage::

    python benchmarks/bench_sampled_scaling.py                               # 10^5, 10^6, 10^7 synthetic interactions
    python benchmarks/bench_sampled_scaling.py --model dgmrec --sizes 100000 1000000 --modes full sampled
    python benchmarks/bench_sampled_scaling.py --model dgmrec --sizes --data-dir /tmp/data/tiktok --modes full sampled \
        --fanouts 10 10 --set missing_ratio=0.6 --set dataset=tiktok --preset configs/dgmrec/tiktok.yaml
    python benchmarks/bench_sampled_scaling.py --sizes 100000 --data-dir data/ml1m --json bench-out/s.json
    python benchmarks/bench_sampled_scaling.py --merge bench-out/a.json bench-out/b.json --json all.json --plot docs/img/x.png

Every (dataset, mode) runs in its own subprocess (its own peak RSS). Synthetic sets come from
:func:`graphrec.data.synthetic.make_synthetic` with ``size / --per-user`` users (25 interactions
each) and ``size x --items-per-interaction`` items (default 0.1: 10^7 interactions -> 10^6
items), without features (LightGCN uses none). Modes:

* ``full``: ``propagation: full`` (every batch propagates over the whole graph; dense Adam);
* ``sampled``: ``propagation: sampled`` with ``--fanouts`` (dense Adam: a step still costs
  ``O((users + items) x d)``);
* ``sampled_sparse``: ``sampled`` plus ``sparse_embeddings: true`` (SparseAdam: a step costs
  ``O(rows of the batch x d)``; DGMRec: ``MixedAdam``, SparseAdam for the ID and raw feature
  tables, Adam for the rest).

``--model dgmrec``: DGMRec (``n_ui_layers`` = the number of ``--fanouts``) on the embedded synthetic
set *with* its two modalities (image 128-d, text 96-d) and the even missing-modality mask (what
``graphrec datasets synth`` writes), or on ``--data-dir`` with ``--set`` / ``--preset`` (e.g. TikTok).
The item kNN graphs are built before timing (``knn_method: auto``: approximate from 30,000 items).
The per-epoch hooks (CLUB steps, generation of missing features; refinement comes every
``refine_every`` epochs, not in the first) are timed apart as ``hooks_s`` and are not in ``epoch_s``:
they are the same in both modes (one full forward per epoch).

Sampled modes run once per ``--samplers`` entry (``fast``: graphrec's vectorised sampler, ``dgl``:
DGL's ``MultiLayerNeighborSampler``); ``sample_s_per_batch`` is the sampler's share of a batch
(the blocks alone, timed on the same batches' seeds after the epoch's batches).

The loop is the trainer's (:meth:`graphrec.train.trainer.Trainer.train_epoch` without the
progress bar): BPR batches of ``--batch-size`` with fresh negatives, forward, backward, optimiser
step. The first batch (it builds the CSR cache or the sampling graph) is timed apart as
``setup_s``. When an epoch would take longer than ``--time-limit`` seconds, only the batches
within the limit are timed and the epoch is **extrapolated** (per-epoch shuffle and negative
sampling + mean seconds per batch x batches per epoch); such rows say ``partial`` in the table
and ``"partial": true`` in the JSON. Also timed: one full propagation (what an evaluation needs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from graphrec.bench.worker import peak_rss_mb, timed_json_child  # noqa: E402

MODES = {
    "full": {"propagation": "full"},
    "sampled": {"propagation": "sampled"},
    "sampled_sparse": {"propagation": "sampled", "sparse_embeddings": True},
}


def _dgmrec_config(args: argparse.Namespace) -> dict[str, Any]:
    from graphrec.config import parse_set, resolve_config
    from graphrec.registry import MODELS

    over: dict[str, Any] = {"device": "cpu", "threads": args.threads, **parse_set(args.set)}
    if args.data_dir:
        over["data_dir"] = args.data_dir
    else:
        over.update(synth_users=max(10, args.size // args.per_user), synth_items=max(20, int(args.size * args.items_per_interaction)),
                    synth_interactions=args.per_user)  # fmt: skip
    over.update({"train_batch_size": args.batch_size, "n_ui_layers": len(args.fanouts), "fanouts": args.fanouts, **MODES[args.mode]})
    return resolve_config("dgmrec", MODELS.get("dgmrec").default_config, files=args.preset, overrides=over)


def _dataset(args: argparse.Namespace):
    import numpy as np

    if args.model == "dgmrec":
        from graphrec.data.dataset import load_dataset

        ds = load_dataset(_dgmrec_config(args))
        return ds, Path(args.data_dir).name if args.data_dir else f"synthetic {args.size:.0e}"

    from graphrec.data.dataset import build_dataset
    from graphrec.data.masks import MissingModalities

    if args.data_dir:
        from graphrec.config import resolve_config
        from graphrec.data.dataset import load_dataset
        from graphrec.registry import MODELS, load_builtin

        load_builtin()
        cfg = resolve_config("lightgcn", MODELS.get("lightgcn").default_config, overrides={"data_dir": args.data_dir, "modalities": []})
        return load_dataset(cfg), Path(args.data_dir).name
    from graphrec.data.synthetic import make_synthetic

    n_users = max(10, args.size // args.per_user)
    n_items = max(20, int(args.size * args.items_per_interaction))
    syn = make_synthetic(n_users=n_users, n_items=n_items, modalities=(), seed=0, mean_interactions=args.per_user)
    ds = build_dataset("synthetic", syn.inter, {}, MissingModalities.none([], n_items))
    del np
    return ds, f"synthetic {args.size:.0e}"


def child(args: argparse.Namespace) -> None:
    import torch

    from graphrec.config import resolve_config
    from graphrec.registry import MODELS, load_builtin
    from graphrec.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    load_builtin()
    t = time.perf_counter()
    ds, name = _dataset(args)
    load_s = time.perf_counter() - t
    over: dict[str, Any] = {"device": "cpu", "threads": args.threads, "train_batch_size": args.batch_size, "n_layers": len(args.fanouts),
                            "fanouts": args.fanouts, "sampler": args.sampler, **MODES[args.mode]}  # fmt: skip
    if args.data_dir:
        over["data_dir"] = args.data_dir
    if args.model == "dgmrec":
        cfg = _dgmrec_config(args)
    else:
        cfg = resolve_config("lightgcn", MODELS.get("lightgcn").default_config, overrides=over)
    t = time.perf_counter()
    model = MODELS.get(args.model)(ds, cfg)
    trainer = Trainer(model, ds, cfg, progress=False)
    build_s = time.perf_counter() - t
    hooks_s = None
    if args.model == "dgmrec":  # CLUB optimiser; the first epoch's hooks (CLUB steps, generation), timed apart
        model.on_train_start(trainer)
        model.train()
        t = time.perf_counter()
        model.on_epoch_start(trainer, 0)
        hooks_s = round(time.perf_counter() - t, 3)
    n_batches = trainer.sampler.n_batches(args.batch_size)
    opt = trainer.optimizer
    model.train()
    t = time.perf_counter()
    batches = trainer.sampler.epoch(args.batch_size)
    first = next(batches)  # the epoch's shuffle and negative sampling happen here
    epoch_setup_s = time.perf_counter() - t

    seen: list[Any] = []

    def step(batch) -> None:
        if len(seen) < 20:
            seen.append(batch)
        opt.zero_grad(set_to_none=True)
        model.loss(batch)["loss"].backward()
        opt.step()

    t = time.perf_counter()
    step(first)
    setup_s = time.perf_counter() - t
    times: list[float] = []
    start = time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > args.time_limit:
            break
    partial = len(times) < n_batches - 1
    per_batch = sum(times) / max(len(times), 1)
    epoch_s = epoch_setup_s + per_batch * n_batches if partial else epoch_setup_s + sum(times) + per_batch
    sample_s = None
    if args.mode != "full" and args.model == "lightgcn":  # the sampler's share: the blocks of the first batches again, nothing else
        ui = model.ui_sampler
        t = time.perf_counter()
        for b in seen:
            seeds = torch.unique(torch.cat([b.users, b.pos + ui.n_users, b.neg + ui.n_users]))
            ui.sampler.sample(seeds, "cpu")
        sample_s = (time.perf_counter() - t) / max(len(seen), 1)
    model.eval()
    t = time.perf_counter()
    with torch.no_grad():
        model.representations()
    prop_s = time.perf_counter() - t
    print(json.dumps({
        "model": args.model, "dataset": name, "mode": args.mode, "hooks_s": hooks_s, "sampler": args.sampler if args.mode != "full" and args.model == "lightgcn" else None,
        "sample_s_per_batch": None if sample_s is None else round(sample_s, 5), "interactions": int(len(ds.train)), "users": ds.n_users, "items": ds.n_items,
        "batch_size": args.batch_size, "fanouts": args.fanouts, "batches_per_epoch": n_batches, "batches_timed": len(times),
        "partial": partial, "s_per_batch": round(per_batch, 5), "epoch_s": round(epoch_s, 3), "epoch_setup_s": round(epoch_setup_s, 3),
        "setup_s": round(setup_s, 3), "load_s": round(load_s, 2), "build_s": round(build_s, 2), "full_propagation_s": round(prop_s, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }))  # fmt: skip


def plot(records: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    syn = [r for r in records if "error" not in r and r["dataset"].startswith("synthetic")]
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"full": "o-", "sampled": "s--", "sampled_sparse": "^-"}
    def key(r: dict[str, Any]) -> tuple:
        return (r["mode"], tuple(r["fanouts"]) if r["mode"] != "full" else (), r.get("sampler") or "")

    for mode, fan, smp in sorted({key(r) for r in syn}):
        rs = sorted((r for r in syn if key(r) == (mode, fan, smp)), key=lambda r: r["interactions"])
        label = mode if mode == "full" else f"{mode} {list(fan)} {smp or 'dgl'}"
        ax.plot([r["interactions"] for r in rs], [r["epoch_s"] for r in rs], styles.get(mode, "x-"), label=label)
        for r in rs:
            if r["partial"]:
                ax.annotate("extrapolated", (r["interactions"], r["epoch_s"]), fontsize=7, textcoords="offset points", xytext=(4, -10))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training interactions (items = interactions / 10)")
    ax.set_ylabel("seconds per epoch (1 CPU thread)")
    model = records[0].get("model", "lightgcn") if records else "lightgcn"
    ax.set_title(f"{'DGMRec' if model == 'dgmrec' else 'LightGCN'} epoch time: full vs sampled propagation")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["lightgcn", "dgmrec"], default="lightgcn")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable; dgmrec)")
    ap.add_argument("--preset", action="append", default=[], metavar="PATH", help="YAML config file (repeatable; dgmrec)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000, 10_000_000], help="synthetic interactions")
    ap.add_argument("--data-dir", action="append", default=[], help="also an MMRec folder (repeatable), e.g. data/ml1m")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--fanouts", type=int, nargs="+", default=[10, 10, 10], help="per layer, input side first (n_layers = their number)")
    ap.add_argument("--samplers", nargs="+", default=["fast", "dgl"], choices=["fast", "dgl"], help="neighbour samplers of the sampled modes")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--per-user", type=int, default=25)
    ap.add_argument("--items-per-interaction", type=float, default=0.1)
    ap.add_argument("--time-limit", type=float, default=240.0, help="seconds of timed batches per run before extrapolating")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=Path("bench-out/sampled_scaling.json"))
    ap.add_argument("--plot", type=Path, help="PNG of seconds per epoch vs interactions (matplotlib)")
    ap.add_argument("--merge", type=Path, nargs="+", help="no runs: merge the records of these JSON files into --json (table, --plot)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    ap.add_argument("--sampler", default="fast", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.data_dir = args.data_dir[0] if args.data_dir else None
        child(args)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    common = ["--fanouts", *map(str, args.fanouts), "--batch-size", str(args.batch_size), "--per-user", str(args.per_user),
              "--items-per-interaction", str(args.items_per_interaction), "--time-limit", str(args.time_limit),
              "--threads", str(args.threads), "--model", args.model]  # fmt: skip
    common += [a for kv in args.set for a in ("--set", kv)] + [a for f in args.preset for a in ("--preset", f)]
    jobs = [(["--size", str(s)], f"{s:,} interactions") for s in args.sizes] + [(["--data-dir", d], d) for d in args.data_dir]
    records: list[dict[str, Any]] = []
    if args.merge:  # one locked command per size (keeps each under the machine's time slot), merged here
        jobs = []
        for f in args.merge:
            records += json.loads(f.read_text())["records"]
    for extra, label in jobs:
        for mode in args.modes:
            # DGMRec's sampled mode always uses the fast sampler (no 'sampler' key)
            for sampler in args.samplers if mode != "full" and args.model == "lightgcn" else ["fast"]:
                cmd = [sys.executable, __file__, "--child", "--mode", mode, "--sampler", sampler, *extra, *common]
                what = mode if mode == "full" else f"{mode} ({sampler})"
                rec = timed_json_child(cmd, args.threads, console, f"{label}, {what}")
                records.append({"label": label, "mode": mode, **rec})
                if "error" not in rec:
                    console.print(f"{label} {what}: {rec['epoch_s']:.1f} s/epoch, {rec['s_per_batch']:.4f} s/batch"
                                  f"{' (extrapolated)' if rec['partial'] else ''}")
    table = Table(title=f"{args.model} seconds per epoch, batch {args.batch_size}, fan-outs {args.fanouts}, {args.threads} thread(s)")
    for col in ("dataset", "users", "items", "interactions", "mode", "s/epoch", "s/batch", "sampler s/batch", "batches timed", "full prop. s",
                "peak RSS MiB"):
        table.add_column(col, justify="right")
    for r in records:
        if "error" in r:
            table.add_row(r["label"], "", "", "", r["mode"], "error", "", "", "", "", "")
            continue
        smp = r.get("sample_s_per_batch")
        table.add_row(r["dataset"], f"{r['users']:,}", f"{r['items']:,}", f"{r['interactions']:,}",
                      r["mode"] + (f" ({r['sampler']})" if r.get("sampler") else ""),
                      f"{r['epoch_s']:,.1f}" + (" (partial)" if r["partial"] else ""), f"{r['s_per_batch']:.4f}",
                      "" if smp is None else f"{smp:.4f}",
                      f"{r['batches_timed']}/{r['batches_per_epoch']}", f"{r['full_propagation_s']:.2f}", f"{r['peak_rss_mb']:,.0f}")  # fmt: skip
    Console().print(table)
    env = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(), "threads": args.threads}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"env": env, "args": {k: v for k, v in vars(args).items() if k not in ("child", "size", "mode")},
                                     "records": records}, indent=1, default=str))  # fmt: skip
    if args.plot and plot(records, args.plot):
        console.print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
