"""DGMRec benchmark: accuracy vs baselines over seeds, the ablation table (paper Table 4),
and speed/memory (seconds per epoch, per refinement, peak RSS) next to LightGCN.

Each (model, variant, seed) runs in its own subprocess so peak RSS is per run.

    python benchmarks/bench_dgmrec.py                       # synthetic set, 3 seeds, baselines + ablations
    python benchmarks/bench_dgmrec.py --no-ablations --seeds 1 --epochs 30
    python benchmarks/bench_dgmrec.py --data-dir DIR --config configs/dgmrec/baby.yaml

Results on ../shared/data folders are for research use only (see each SOURCE.md licence).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

# DGMRec Table 4 variants; shared with `graphrec bench --protocol ablation`
from graphrec.bench.ablations import DGMREC_ABLATIONS as ABLATIONS  # noqa: E402
from graphrec.bench.report import fmt  # noqa: E402
from graphrec.bench.worker import ChildRunFailed, peak_rss_mb, run_json_child, timed  # noqa: E402


def run_one(spec: dict) -> dict:
    """Train one configuration in this process and return its measurements."""
    import torch

    from graphrec.config import resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.registry import MODELS, load_builtin
    from graphrec.train.trainer import Trainer

    torch.set_num_threads(spec.get("threads", 2))
    load_builtin()
    cls = MODELS.get(spec["model"])
    cfg = resolve_config(spec["model"], cls.default_config, spec.get("configs", []), spec["overrides"])
    t0 = time.perf_counter()
    ds = load_dataset(cfg)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = cls(ds, cfg)
    build_s = time.perf_counter() - t0
    refine_times: list[float] = []
    if hasattr(model, "refine"):
        model.refine = timed(model.refine, refine_times)

    eval_times: list[float] = []

    trainer = Trainer(model, ds, cfg, progress=False)
    trainer.evaluate = timed(trainer.evaluate, eval_times)
    res = trainer.fit()
    epoch_s = [h["seconds"] for h in res.history]
    return {
        **{k: v for k, v in spec.items() if k != "threads"},
        "dataset": ds.name,
        "n_users": ds.n_users,
        "n_items": ds.n_items,
        "best_epoch": res.best_epoch,
        "epochs_run": res.epochs_run,
        "test": res.test.metrics,
        "test_groups": res.test.groups,
        "seconds_total": res.seconds,
        "seconds_per_epoch": statistics.mean(epoch_s[1:] or epoch_s),
        "seconds_per_eval": statistics.mean(eval_times) if eval_times else None,
        "seconds_per_refinement": statistics.mean(refine_times) if refine_times else None,
        "seconds_load": load_s,
        "seconds_build": build_s,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", help="MMRec-format folder (default: the embedded synthetic dataset)")
    ap.add_argument("--config", action="append", default=[], help="YAML preset(s) for dgmrec runs")
    ap.add_argument("--models", nargs="+", default=["dgmrec", "lightgcn", "mfbpr"])
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (2024, 2025, ...)")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--json", default="bench-out/dgmrec.json")
    ap.add_argument("--single", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.single:
        print(json.dumps(run_one(json.loads(args.single))))
        return

    from rich.console import Console
    from rich.table import Table

    from graphrec.config import parse_set

    common = {"epochs": args.epochs, **parse_set(args.sets)}
    if args.data_dir:
        common["data_dir"] = args.data_dir
    specs = []
    for seed in range(2024, 2024 + args.seeds):
        for model in args.models:
            specs.append({"model": model, "variant": model, "overrides": {**common, "seed": seed}, "threads": args.threads,
                          "configs": args.config if model == "dgmrec" else []})
        if not args.no_ablations:
            for name, ov in ABLATIONS.items():
                if name == "DGMRec (full)" and "dgmrec" in args.models:
                    continue
                specs.append({"model": "dgmrec", "variant": name, "overrides": {**common, **ov, "seed": seed}, "threads": args.threads,
                              "configs": args.config})
    console = Console()
    records = []
    for i, spec in enumerate(specs, 1):
        console.print(f"[{i}/{len(specs)}] {spec['variant']} seed {spec['overrides']['seed']}")
        try:
            records.append(run_json_child([sys.executable, __file__, "--single", json.dumps(spec)]))
        except ChildRunFailed as exc:
            console.print(exc.stderr)
            raise SystemExit(f"run failed: {spec}") from None
    if "dgmrec" in args.models and not args.no_ablations:
        for r in records:
            if r["variant"] == "dgmrec":
                r["variant"] = "DGMRec (full)"

    variants = list(dict.fromkeys(r["variant"] for r in records))
    table = Table(title=f"test metrics, mean ± std over {args.seeds} seed(s), {records[0]['dataset']}")
    for col in ("variant", "recall@20", "ndcg@20", "recall@10", "best epoch", "s/epoch", "s/refinement", "s/eval", "peak RSS MB"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    summary = {}
    for v in variants:
        rs = [r for r in records if r["variant"] == v]
        row = {
            "recall@20": [r["test"]["recall@20"] for r in rs],
            "ndcg@20": [r["test"]["ndcg@20"] for r in rs],
            "recall@10": [r["test"]["recall@10"] for r in rs],
        }
        spe = statistics.mean(r["seconds_per_epoch"] for r in rs)
        refs = [r["seconds_per_refinement"] for r in rs if r["seconds_per_refinement"] is not None]
        evs = [r["seconds_per_eval"] for r in rs if r["seconds_per_eval"] is not None]
        rss = max(r["peak_rss_mb"] for r in rs)
        summary[v] = {k: statistics.mean(x) for k, x in row.items()} | {"seconds_per_epoch": spe, "peak_rss_mb": rss}
        table.add_row(v, fmt(row["recall@20"]), fmt(row["ndcg@20"]), fmt(row["recall@10"]),
                      f"{statistics.mean(r['best_epoch'] for r in rs):.0f}", f"{spe:.3f}",
                      f"{statistics.mean(refs):.3f}" if refs else "-", f"{statistics.mean(evs):.3f}" if evs else "-", f"{rss:.0f}")
    console.print(table)
    if "lightgcn" in summary:
        base = summary["lightgcn"]
        for v, s in summary.items():
            console.print(f"{v}: {s['seconds_per_epoch'] / base['seconds_per_epoch']:.2f}x LightGCN time per epoch, "
                          f"{s['peak_rss_mb'] / base['peak_rss_mb']:.2f}x peak RSS")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"records": records, "summary": summary}, indent=2))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
