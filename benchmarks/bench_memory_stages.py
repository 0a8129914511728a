#!/usr/bin/env python
"""Resident memory of a model run, stage by stage: build, epoch-start hooks, training batches, the
full forward of an evaluation, the ranking, the best-state copy, the test evaluation.

Usage::

    python benchmarks/bench_memory_stages.py                          # DGMRec, sampled, 10^5 synthetic items
    python benchmarks/bench_memory_stages.py --items 30000 --set propagation=full --set sparse_embeddings=false
    python benchmarks/bench_memory_stages.py --model lightgcn --items 100000 --json bench-out/mem-lgcn.json
    python benchmarks/bench_memory_stages.py --data-dir /tmp/big --set dataset=synthetic --set eval_item_chunk=250000

The synthetic set has ``--items`` items, ``43 x items / 1,000`` users and 250 interactions per user
(the shape of the 10^6-item set of docs/scaling.md), two modalities (image 128-d, text 96-d) and the
even missing-modality mask. Defaults: ``propagation: sampled``, ``sparse_embeddings: true``,
``fanouts [5, 5, 5]``, ``aggregation_fanout 5``, ``eval_batch_size 512``, ``eval_item_chunk 25,000``,
one torch thread; ``--set`` overrides any config key.

A thread samples the process's resident set (``VmRSS``) every 50 ms; each stage prints the RSS at
its end and the **peak since the previous stage's end**. Python's allocator (glibc malloc) keeps
freed heap memory and, by default, raises its ``mmap`` threshold as large blocks are freed (up to
32 MiB), so at 10^5 items, whose ``(N, 64)`` tables are ~25 MiB, freed tables stay in the RSS and
the stages read higher than what is alive. Fix the threshold for figures that compare code versions
(it makes the run slower; the tables of 10^6 items are above 32 MiB and are mapped anyway)::

    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/bench_memory_stages.py

The JSON (``--json``) holds the stages, the configuration, the environment and whether the
threshold was fixed. Nothing is timed: the figures do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


class PeakWatch:
    """The largest RSS seen (every ``period`` s) since the last :meth:`stage`."""

    def __init__(self, period: float = 0.05) -> None:
        self.peak = rss_gib()
        self.stages: list[dict] = []
        threading.Thread(target=self._watch, args=(period,), daemon=True).start()

    def _watch(self, period: float) -> None:
        while True:
            self.peak = max(self.peak, rss_gib())
            time.sleep(period)

    def stage(self, name: str) -> None:
        now = rss_gib()
        row = {"stage": name, "rss_gib": round(now, 3), "peak_gib": round(max(self.peak, now), 3)}
        self.stages.append(row)
        print(f"{name:<34} {row['rss_gib']:>8.2f} {row['peak_gib']:>14.2f}", flush=True)
        self.peak = now


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="dgmrec")
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--data-dir", type=Path, help="an MMRec-format folder instead of the synthetic set (--items is then ignored)")
    ap.add_argument("--batches", type=int, default=30, help="training batches timed between the hooks and the evaluation")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from graphrec.config import parse_set, resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.models.build import build_model
    from graphrec.registry import MODELS, load_builtin
    from graphrec.train.trainer import Trainer

    torch.set_num_threads(1)
    load_builtin()
    n = args.items
    over = dict(device="cpu", threads=1, synth_users=max(10, n * 43 // 1000), synth_items=n, synth_interactions=250,
                propagation="sampled", sparse_embeddings=True, fanouts=[5, 5, 5], aggregation_fanout=5, epochs=1,
                eval_batch_size=512, eval_item_chunk=25_000, resume_every_minutes=0)
    if args.model != "dgmrec":
        over = {k: v for k, v in over.items() if k not in ("aggregation_fanout",)}
    if args.data_dir:
        over = {k: v for k, v in over.items() if not k.startswith("synth_")} | {"data_dir": str(args.data_dir)}
    over.update(parse_set(args.sets))
    cfg = resolve_config(args.model, MODELS.get(args.model).default_config, overrides=over)
    fixed = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    print(f"{args.model}, {args.data_dir or f'{n:,} synthetic items'}; MALLOC_MMAP_THRESHOLD_={fixed or 'unset (dynamic)'}")
    print(f"{'stage':<34} {'RSS GiB':>8} {'peak since GiB':>14}")
    watch = PeakWatch()
    ds = load_dataset(cfg)
    model = build_model(ds, cfg)
    trainer = Trainer(model, ds, cfg, progress=False)
    watch.stage("built (data, graphs, model)")
    trainer.epoch = 0
    trainer._model_hook("on_epoch_start", 0)
    watch.stage("epoch-start hooks")
    batches = trainer.sampler.epoch(int(cfg["train_batch_size"]))
    model.train()
    for _, b in zip(range(args.batches), batches):
        trainer.optimizer.zero_grad(set_to_none=True)
        model.loss(b)["loss"].backward()
        trainer.optimizer.step()
    watch.stage(f"{args.batches} training batches")
    model.eval()
    with torch.no_grad():
        scorer = model.scorer()
    watch.stage("full forward (scorer)")
    with torch.no_grad():
        trainer.evaluator.evaluate(scorer, "valid")
    del scorer
    watch.stage("ranking (valid)")
    for _ in range(2):  # a second improvement replaces the first copy, as in the trainer
        if hasattr(trainer, "keep_best_state"):
            trainer.keep_best_state()
        else:  # the trainer before keep_best_state: the new copy was made while the last one was held
            trainer.best_state = copy.deepcopy(model.state_dict())
    watch.stage("best-state copy (twice)")
    model.load_state_dict(trainer.best_state)
    with torch.no_grad():
        trainer.evaluator.evaluate(model.scorer(), "test")
    watch.stage("restore + test evaluation")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        rec = {"model": args.model, "items": None if args.data_dir else n, "data_dir": str(args.data_dir or ""), "config": {k: over[k] for k in sorted(over)}, "stages": watch.stages,
               "malloc_mmap_threshold": fixed, "python": platform.python_version(), "torch": torch.__version__,
               "host": platform.node()}
        args.json.write_text(json.dumps(rec, indent=1, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
