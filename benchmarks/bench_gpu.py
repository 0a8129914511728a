"""GPU benchmark: DGMRec, CI2MG and LightGCN on the GPU next to the same run on the CPU.

For every (dataset, model) it trains ``--epochs`` epochs on ``--device`` (default ``cuda``) and
on the CPU from the same seed and batches, then reports seconds per epoch, the evaluation
time, peak GPU memory, and the test metrics of both runs, which must agree within ``--tol``
(absolute, per metric; GPU kernels sum in another order, so runs drift apart by rounding).

    python benchmarks/bench_gpu.py                                     # synthetic set only
    python benchmarks/bench_gpu.py --data-dir /tmp/data/tiktok --epochs 5 --out gpu.json
    python benchmarks/bench_gpu.py --device cpu --epochs 1             # dry run without a GPU

TikTok runs use the presets ``configs/<model>/tiktok.yaml`` where they exist (DGMRec, CI2MG)
and the 0.6 mask. Paper Table 5: the authors' DGMRec trains Baby in 2.63 s per epoch on a GPU.
Status: written without a GPU (issue 12); the GPU figures are not measured yet (docs/results.md).
Results on ../shared/data folders are for research use only (see each SOURCE.md licence).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("recall@20", "ndcg@20")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(model_name: str, data_dir: str | None, device_name: str, epochs: int, seed: int, threads: int) -> dict:
    """Train ``epochs`` epochs of ``model_name`` on ``device_name``; timings and test metrics."""
    import torch

    from graphrec.config import resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.models.build import build_model
    from graphrec.registry import MODELS, load_builtin
    from graphrec.train.seed import resolve_device
    from graphrec.train.trainer import Trainer

    torch.set_num_threads(threads)
    load_builtin()
    cls = MODELS.get(model_name)
    preset = ROOT / "configs" / model_name / "tiktok.yaml"
    files = [str(preset)] if data_dir and "tiktok" in Path(data_dir).name and preset.exists() else []
    overrides = {"device": device_name, "seed": seed, "epochs": epochs}
    if data_dir:
        overrides["data_dir"] = data_dir
        if not files:
            overrides["missing_ratio"] = 0.6
    cfg = resolve_config(model_name, cls.default_config, files, overrides)
    device = resolve_device(device_name)
    ds = load_dataset(cfg)
    t0 = time.perf_counter()
    model = build_model(ds, cfg)  # seeds first
    build_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(model, ds, cfg, progress=False)
    epoch_s, losses = [], []
    for epoch in range(epochs):
        trainer.epoch = epoch
        _sync(device)
        t = time.perf_counter()
        trainer._model_hook("on_epoch_start", epoch)
        logs = trainer.train_epoch()
        _sync(device)
        epoch_s.append(time.perf_counter() - t)
        losses.append(logs["loss"])
        trainer._model_hook("before_evaluation", "valid")
    _sync(device)
    t = time.perf_counter()
    valid = trainer.evaluate("valid")
    _sync(device)
    eval_s = time.perf_counter() - t
    test = trainer.evaluate("test")
    return {
        "model": model_name,
        "dataset": ds.name,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": threads,
        "epochs": epochs,
        "build_s": round(build_s, 3),
        "epoch_s": [round(s, 3) for s in epoch_s],
        "median_epoch_s": round(sorted(epoch_s)[len(epoch_s) // 2], 3),
        "eval_s": round(eval_s, 3),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "losses": [round(v, 6) for v in losses],
        "valid": {k: valid.metrics[k] for k in METRICS},
        "test": {k: test.metrics[k] for k in METRICS},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", action="append", default=[], help="MMRec folder (repeatable); the synthetic set always runs")
    ap.add_argument("--models", nargs="+", default=["dgmrec", "ci2mg", "lightgcn"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--device", default="cuda", help="device under test (default cuda; cpu for a dry run)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads of both runs")
    ap.add_argument("--tol", type=float, default=0.01, help="largest allowed |GPU - CPU| of a test metric")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU reference runs (no metric check)")
    ap.add_argument("--out", type=Path, help="write all records as JSON here")
    args = ap.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu: torch sees no CUDA GPU; run on a GPU machine or pass --device cpu for a dry run", file=sys.stderr)
        return 2
    records, failures = [], []
    for data_dir in [None, *args.data_dir]:
        for model in args.models:
            rec = run(model, data_dir, args.device, args.epochs, args.seed, args.threads)
            if not args.no_cpu:
                cpu = run(model, data_dir, "cpu", args.epochs, args.seed, args.threads)
                rec["cpu"] = {k: cpu[k] for k in ("median_epoch_s", "eval_s", "losses", "test")}
                rec["max_metric_diff"] = max(abs(rec["test"][k] - cpu["test"][k]) for k in METRICS)
                rec["metrics_agree"] = rec["max_metric_diff"] <= args.tol
                if not rec["metrics_agree"]:
                    failures.append(f"{model} on {rec['dataset']}: test metrics differ by {rec['max_metric_diff']:.4f} > {args.tol}")
            records.append(rec)
            cpu_s = rec.get("cpu", {}).get("median_epoch_s")
            print(
                f"{rec['dataset']:>10} {model:>8} {rec['device']:>6}: {rec['median_epoch_s']:.3f} s/epoch"
                + (f" (cpu {cpu_s:.3f}, {cpu_s / max(rec['median_epoch_s'], 1e-9):.1f}x)" if cpu_s else "")
                + f", eval {rec['eval_s']:.3f} s"
                + (f", peak {rec['peak_gpu_mb']:.0f} MiB" if rec["peak_gpu_mb"] is not None else "")
                + f", test recall@20 {rec['test']['recall@20']:.4f}"
                + (f" (cpu {rec['cpu']['test']['recall@20']:.4f})" if "cpu" in rec else ""),
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps(records, indent=1))
    for f in failures:
        print("MISMATCH:", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
