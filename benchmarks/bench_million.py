#!/usr/bin/env python
"""Time and peak memory of each stage of one ``graphrec fit`` on a large MMRec folder (10^6 items).

Usage::

    graphrec datasets synth --out /tmp/big --users 43000 --items 1000000 --interactions 250
    python benchmarks/bench_million.py --data-dir /tmp/big --model lightgcn --epochs 1 \\
        --set propagation=sampled --set sparse_embeddings=true --set fanouts=[5,5,5] --json bench-out/million.json

The stages are those of ``graphrec fit`` (:mod:`graphrec.cli.train`), run in this process with the
same library calls: **load** (``load_dataset``: the ``.inter`` file, feature files, masks),
**build** (the model: heterograph, and for DGMRec the kNN item graphs), **trainer** (optimiser,
evaluator, BPR sampler), **epoch** (each of ``--epochs`` training epochs, ``Trainer.train_epoch``
after the model's epoch hook), **evaluate valid** / **evaluate test** (full-ranking over all items,
``Trainer.evaluate``). After every stage: its seconds and the process's peak RSS so far
(``ru_maxrss``), so a stage's own peak is the first row where the value rises to it.
``--max-batches K`` times only K batches of the first epoch and extrapolates it (labelled);
``--splits valid`` evaluates only the validation split (each evaluation is one full-ranking pass).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from graphrec.bench.worker import peak_rss_mb  # noqa: E402


class _Ticker:
    """Stands in for the trainer's progress bar: a line on stderr every ``every`` batches (seconds so far)."""

    def __init__(self, total: int, every: int, t0: float) -> None:
        self.total, self.every, self.t0, self.done = total, max(1, every), t0, 0

    def update(self, task, advance: int = 1, **fields) -> None:
        self.done += advance
        if self.done % self.every == 0:
            el = time.perf_counter() - self.t0
            print(json.dumps({"batches": self.done, "of": self.total, "seconds": round(el, 1), "s_per_batch": round(el / self.done, 4),
                              "peak_rss_mb": round(peak_rss_mb(), 1)}), file=sys.stderr, flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--model", default="lightgcn")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    ap.add_argument("--max-batches", type=int, default=0, help="time only this many batches of the (first) epoch and extrapolate it (0 = whole epochs)")
    ap.add_argument("--splits", nargs="*", default=["valid", "test"], choices=["valid", "test"],
                    help="splits to evaluate after training (each is one full-ranking pass; none = training only)")
    ap.add_argument("--report-every", type=int, default=500, help="print batches done and seconds every this many batches of an epoch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=Path("bench-out/million.json"))
    args = ap.parse_args()

    import torch

    from graphrec.config import parse_set, resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.registry import MODELS, load_builtin
    from graphrec.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    load_builtin()
    stages: list[dict] = []

    def stage(name: str, t0: float, **extra) -> None:
        rec = {"stage": name, "seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(peak_rss_mb(), 1), **extra}
        stages.append(rec)
        print(json.dumps(rec), file=sys.stderr, flush=True)

    over = {"data_dir": args.data_dir, "device": "cpu", "threads": args.threads, "epochs": args.epochs, **parse_set(args.sets)}
    cfg = resolve_config(args.model, MODELS.get(args.model).default_config, overrides=over)
    t = time.perf_counter()
    ds = load_dataset(cfg)
    stage("load", t, users=ds.n_users, items=ds.n_items, train_rows=int(len(ds.train)))
    t = time.perf_counter()
    model = MODELS.get(args.model)(ds, cfg)
    stage("build (model + graph)", t, edges=int(model.graph.num_edges()))
    t = time.perf_counter()
    trainer = Trainer(model, ds, cfg, progress=False)
    stage("trainer set-up", t)
    n_batches = trainer.sampler.n_batches(int(cfg["train_batch_size"]))
    for epoch in range(args.epochs if not args.max_batches else 1):
        t = time.perf_counter()
        trainer.epoch = epoch
        trainer._model_hook("on_epoch_start", epoch)
        if args.max_batches:  # a partial epoch, the trainer's step without its progress bar
            batches = trainer.sampler.epoch(int(cfg["train_batch_size"]))
            model.train()
            first = next(batches)  # the epoch's shuffle and negative sampling
            set_up = time.perf_counter() - t
            done, t_batches = 0, time.perf_counter()
            for batch in [first, *(b for _, b in zip(range(args.max_batches - 1), batches))]:
                trainer.optimizer.zero_grad(set_to_none=True)
                loss = model.loss(batch.to(trainer.device))["loss"]
                loss.backward()
                trainer.optimizer.step()
                done += 1
            per = (time.perf_counter() - t_batches) / done
            stage("epoch 1 (extrapolated)", t, batches_timed=done, batches=n_batches, s_per_batch=round(per, 4),
                  epoch_s_extrapolated=round(set_up + per * n_batches, 1), loss=round(float(loss), 5))  # fmt: skip
            continue
        logs = trainer.train_epoch(_Ticker(n_batches, args.report_every, t), "epoch")
        stage(f"epoch {epoch + 1}", t, loss=round(logs["loss"], 5), batches=n_batches)
    res = {}
    for split in args.splits:
        t = time.perf_counter()
        trainer._model_hook("before_evaluation", split)
        res[split] = trainer.evaluate(split)
        stage(f"evaluate {split}", t, **{k: round(v, 5) for k, v in res[split].metrics.items() if k in ("recall@20", "ndcg@20")})
    out = {"env": {"python": platform.python_version(), "cpus": os.cpu_count(), "threads": args.threads, "torch": torch.__version__},
           "config": {k: cfg[k] for k in sorted(cfg) if k in over or k in ("train_batch_size", "embedding_size", "n_layers")},
           "stages": stages}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
