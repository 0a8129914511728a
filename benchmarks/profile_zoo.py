"""Seconds per training step of registered models on one dataset, and where the step goes.

Builds each model as ``graphrec fit`` does (presets from ``configs/<model>/<dataset>.yaml`` when
they exist), runs the trainer's ``on_epoch_start`` hook, then times ``--steps`` full BPR batches
(forward, backward, Adam; the first is warm-up) and prints one JSON line per model: ms per step,
batches per epoch, the estimated training seconds per epoch, and with ``--top`` the heaviest
operators from ``torch.profiler``.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/profile_zoo.py --data-dir /tmp/data/tiktok \\
        --set missing_ratio=0.6 --set dataset=tiktok damrs mgcn

Results on ../shared/data folders are for research use only (see each SOURCE.md licence).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="model names (default: every registered model)")
    ap.add_argument("--data-dir")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=4, help="full batches timed per model (plus one warm-up)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=0, help="print this many heaviest operators (torch.profiler)")
    args = ap.parse_args(argv)

    import torch
    import yaml

    from graphrec.config import resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.registry import MODELS, load_builtin
    from graphrec.train.seed import set_seed
    from graphrec.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    load_builtin()
    over: dict = {"device": "cpu"}
    for kv in args.set:
        k, v = kv.split("=", 1)
        over[k] = yaml.safe_load(v)
    if args.data_dir:
        over["data_dir"] = args.data_dir
    root = Path(__file__).resolve().parents[1]
    for name in args.models or sorted(MODELS.names()):
        cls = MODELS.get(name)
        preset = root / "configs" / name / f"{over.get('dataset', 'synthetic')}.yaml"
        cfg = resolve_config(name, cls.default_config, [str(preset)] if preset.exists() else [], dict(over))
        ds = load_dataset(cfg)
        set_seed(int(cfg["seed"]))
        t = time.perf_counter()
        model = cls(ds, cfg)
        tr = Trainer(model, ds, cfg, progress=False)
        build_s = time.perf_counter() - t
        model.train()
        tr._model_hook("on_epoch_start", 0)
        bs = int(cfg["train_batch_size"])
        batches = list(tr.sampler.epoch(bs))
        full = [b for b in batches if len(b.users) == bs][: args.steps + 1] or batches[: args.steps + 1]

        def step(b, tr=tr, model=model):
            tr.optimizer.zero_grad(set_to_none=True)
            loss = model.loss(b)["loss"]
            loss.backward()
            tr.optimizer.step()

        step(full[0])
        t = time.perf_counter()
        for b in full[1:]:
            step(b)
        ms = (time.perf_counter() - t) * 1e3 / max(len(full) - 1, 1)
        row = {"model": name, "ms_per_step": round(ms, 1), "batches": len(batches), "est_s_per_epoch": round(ms * len(batches) / 1e3, 1), "build_s": round(build_s, 1)}
        if args.top:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step(full[-1])
            ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[: args.top]
            row["top_ms"] = {e.key: round(e.self_cpu_time_total / 1e3, 1) for e in ev}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
