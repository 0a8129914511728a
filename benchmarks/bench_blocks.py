"""Compare blocks in one slot of a model: accuracy (recall@20, ndcg@20) and seconds per epoch.

Every (block, seed) runs in its own subprocess with ``--set <slot key>=<block>`` on top of
the common overrides, so each block gets the same data, seed and budget.

    # the tutorial's comparison (docs/extending.md): default item-item conv vs attention
    python benchmarks/bench_blocks.py --plugin examples.attention_block \\
        --key item_graph_block --blocks item_graph_conv attention_item_conv --epochs 30 --seeds 2

    python benchmarks/bench_blocks.py --model lightgcn --key ui_block \\
        --blocks lightgcn_conv my_conv --plugin my_plugin --data-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from graphrec.bench.worker import ChildRunFailed, peak_rss_mb, run_json_child  # noqa: E402


def run_one(spec: dict) -> dict:
    """Train one (block, seed) in this process and return its measurements."""
    import torch

    from graphrec.config import resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.models.build import build_model
    from graphrec.registry import MODELS, import_plugins, load_builtin
    from graphrec.train.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    load_builtin()
    import_plugins(spec["plugins"])
    cls = MODELS.get(spec["model"])
    cfg = resolve_config(spec["model"], cls.default_config, spec["configs"], spec["overrides"])
    ds = load_dataset(cfg)
    model = build_model(ds, cfg)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    t0 = time.perf_counter()
    res = Trainer(model, ds, cfg, progress=False).fit()
    epoch_s = [h["seconds"] for h in res.history]
    return {
        "block": spec["block"],
        "seed": spec["overrides"]["seed"],
        "dataset": ds.name,
        "best_epoch": res.best_epoch,
        "epochs_run": res.epochs_run,
        "test": res.test.metrics,
        "seconds_total": time.perf_counter() - t0,
        "seconds_per_epoch": statistics.mean(epoch_s[1:] or epoch_s),
        "epoch_seconds": epoch_s,
        "trainable_parameters": n_params,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dgmrec")
    ap.add_argument("--key", default="item_graph_block", help="the model's block slot key (graphrec models MODEL)")
    ap.add_argument("--blocks", nargs="+", default=["item_graph_conv", "attention_item_conv"], help="registered block names")
    ap.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="plugin module(s) to import")
    ap.add_argument("--data-dir", help="MMRec-format folder (default: the embedded synthetic dataset)")
    ap.add_argument("--config", action="append", default=[], help="YAML preset(s)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--seeds", type=int, default=2, help="number of seeds (2024, 2025, ...)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="bench-out/blocks.json")
    ap.add_argument("--report", metavar="JSON", help="print the tables of a finished run's JSON and exit")
    ap.add_argument("--single", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.single:
        print(json.dumps(run_one(json.loads(args.single))))
        return
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        report(saved["records"], argparse.Namespace(**saved["args"]))
        return

    from graphrec.config import parse_set

    common = {"epochs": args.epochs, "device": "cpu", **parse_set(args.sets)}
    if args.data_dir:
        common["data_dir"] = args.data_dir
    specs = [
        {"model": args.model, "block": b, "plugins": args.plugin, "configs": args.config, "threads": args.threads,
         "overrides": {**common, args.key: b, "seed": seed}}
        for seed in range(2024, 2024 + args.seeds)
        for b in args.blocks
    ]
    from rich.console import Console

    console = Console()
    records = []
    for i, spec in enumerate(specs, 1):
        console.print(f"[{i}/{len(specs)}] {args.key}={spec['block']} seed {spec['overrides']['seed']}")
        try:
            records.append(run_json_child([sys.executable, __file__, "--single", json.dumps(spec)], args.threads, os.getcwd()))
        except ChildRunFailed as exc:
            console.print(exc.stderr)
            raise SystemExit(f"run failed: {spec}") from None

    summary = report(records, args)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"args": vars(args), "records": records, "summary": summary}, indent=2))
    console.print(f"wrote {args.json}")


def report(records: list[dict], args: argparse.Namespace) -> dict:
    """Print the comparison as a rich table and as Markdown (for docs); return the per-block means."""
    from rich.console import Console
    from rich.table import Table

    from graphrec.bench.report import fmt

    cols = ("block", "recall@20", "ndcg@20", "best epoch", "s/epoch", "params")
    title = (f"{args.model}: {args.key} on {records[0]['dataset']}, {args.epochs} epochs max, "
             f"mean ± std over {args.seeds} seed(s)")
    table = Table(title=title)
    for col in cols:
        table.add_column(col, justify="left" if col == "block" else "right", no_wrap=True)
    summary, rows = {}, []
    for b in args.blocks:
        rs = [r for r in records if r["block"] == b]
        rec, ndcg = [r["test"]["recall@20"] for r in rs], [r["test"]["ndcg@20"] for r in rs]
        spe = [r["seconds_per_epoch"] for r in rs]
        summary[b] = {"recall@20": statistics.mean(rec), "ndcg@20": statistics.mean(ndcg), "seconds_per_epoch": statistics.mean(spe)}
        row = [b, fmt(rec), fmt(ndcg), f"{statistics.mean(r['best_epoch'] for r in rs):.0f}", fmt(spe, 2),
               str(rs[0]["trainable_parameters"])]
        table.add_row(*row)
        rows.append(row)
    console = Console(width=max(100, Console().width))
    console.print(table)
    lines = [f"| {' | '.join(cols)} |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += [f"| `{r[0]}` | " + " | ".join(r[1:]) + " |" for r in rows]
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
    return summary


if __name__ == "__main__":
    main()
