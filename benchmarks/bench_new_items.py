"""New-item protocol: DGMRec's cold-item head vs plain DGMRec vs content-kNN (docs/results.md).

For every seed (resumable: a run whose JSON exists is skipped):

* ``dgmrec_cold`` is trained once (new_items=true); its test split is scored three ways with the
  same weights: the head with its validation-calibrated offset (``dgmrec_cold``), plain DGMRec
  (``cold_scoring=false``: DGMRec's own scores, since the cold loss does not touch DGMRec's
  parameters), and content-kNN over DGMRec's item representations (new item = similarity-weighted
  mean of its ``content_k`` nearest old items in feature space, :mod:`graphrec.graph.content`);
  and the same kNN rows with the validation-calibrated offset of ``dgmrec_cold``
  (:mod:`graphrec.models.cold_offset`, ``dgmrec+knn calibrated``);
* ``content_knn`` (LightGCN + the same kNN transfer) is trained as its own model.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_new_items.py --seeds 2024,2025,2026 --epochs 40 \\
        --out bench-out/new-items-synth

Prints a Markdown table of test Recall@20 / NDCG@20 overall, on new items and on old items.
``--tradeoff 0.02,0.05,0.1,1`` then prints, from the saved checkpoints, what other old-item
tolerances of the calibrated offset give.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

GROUP_KEYS = ("recall@20", "ndcg@20")


def _row(res) -> dict:
    out = {"all": {k: float(res.metrics[k]) for k in GROUP_KEYS}}
    for g, vals in res.groups.items():
        out[g] = {k: float(vals[k]) for k in GROUP_KEYS}
        out[g]["users"] = int(res.group_users.get(g, 0))
    return out


def groups(ds) -> dict:
    """new / old, and new items by number of missing modalities (``new&missing=k``)."""
    import numpy as np

    out = {"new": ds.new_items.copy(), "old": ~ds.new_items}
    count = ds.missing.count() if ds.missing.any_missing() else np.zeros(ds.n_items, dtype=int)
    for k in range(len(ds.modalities) + 1):
        out[f"new&missing={k}"] = ds.new_items & (count == k)
    return out


def knn_over(model, dataset, zu, zi, k: int = 10):
    """``(zi', cold, c)``: ``zi`` whose cold rows ``c`` are the similarity-weighted mean of their nearest old items' rows."""
    import numpy as np
    import torch

    from graphrec.graph.content import content_neighbours, neighbour_weights

    mods = dataset.modalities
    obs = np.stack([~dataset.missing.missing[m] for m in mods], axis=1)
    old = np.bincount(dataset.train[:, 1], minlength=dataset.n_items) > 0
    cold = np.flatnonzero(~old)
    idx, sim = content_neighbours({m: dataset.features[m][cold] for m in mods}, obs[cold],
                                  {m: dataset.features[m] for m in mods}, obs, k, candidates=old)
    w = neighbour_weights(sim)
    zi = zi.clone()
    c = (w.unsqueeze(2) * zi[idx]).sum(dim=1)
    zi[torch.from_numpy(cold)] = c
    mask = torch.zeros(len(old), dtype=torch.bool)
    mask[torch.from_numpy(cold)] = True
    return zi, mask, c


def run_seed(seed: int, epochs: int, sets: dict, out: Path) -> dict:
    import torch

    from graphrec.config import resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.models.base import Scorer
    from graphrec.models.build import build_model
    from graphrec.models.cold_offset import choose_offset, with_offset
    from graphrec.eval.evaluator import Evaluator
    from graphrec.registry import MODELS, load_builtin
    from graphrec.train.checkpoint import save_checkpoint
    from graphrec.train.trainer import Trainer

    torch.set_num_threads(1)
    load_builtin()
    rec = {"seed": seed, "epochs": epochs, "sets": sets}
    for name in ("dgmrec_cold", "content_knn"):
        cfg = resolve_config(name, MODELS.get(name).default_config, overrides={**sets, "new_items": True, "seed": seed, "epochs": epochs})
        ds = load_dataset(cfg)
        model = build_model(ds, cfg)
        trainer = Trainer(model, ds, cfg, progress=False)
        t0 = time.perf_counter()
        result = trainer.fit()
        rec[f"{name}_seconds"] = time.perf_counter() - t0
        rec[f"{name}_best_epoch"] = result.best_epoch
        ev = Evaluator(ds, groups=groups(ds))
        model.eval()
        rec[name] = _row(ev.evaluate(model.scorer(), "test"))
        assert abs(rec[name]["all"]["recall@20"] - result.test.metrics["recall@20"]) < 1e-9
        save_checkpoint(out / f"{name}-seed{seed}.pt", model, cfg)
        if name == "dgmrec_cold":
            rec["cold_offset"] = float(model.cold_offset)
            with torch.no_grad():
                zu, zi, _ = model._scoring()
                rec["dgmrec"] = _row(ev.evaluate(Scorer(zu, zi), "test"))
                zk, cold, c = knn_over(model, ds, zu, zi)
                rec["dgmrec+knn"] = _row(ev.evaluate(Scorer(zu, zk), "test"))
                # the same validation-calibrated offset as dgmrec_cold's, for the kNN rows
                info = choose_offset(trainer.evaluator, zu, zi, cold, c, Scorer(zu, zi), float(cfg["cold_tolerance"]))
                rec["knn_offset"] = info["offset"]
                rec["dgmrec+knn calibrated"] = _row(ev.evaluate(Scorer(*with_offset(zu, zi, cold, c, info["offset"])), "test"))
    return rec


def tradeoff(out: Path, seeds: list[int], tolerances: list[float]) -> None:
    """From the saved ``dgmrec_cold`` checkpoints: test Recall@20 (all / new / old) of the head and of
    kNN-over-DGMRec with the offset chosen on validation at each old-item tolerance."""
    import torch

    from graphrec.models.cold_offset import choose_offset, with_offset
    from graphrec.eval.evaluator import Evaluator
    from graphrec.models.base import Scorer
    from graphrec.train.checkpoint import load_model

    torch.set_num_threads(1)
    rows: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
    for seed in seeds:
        model, ds, _ = load_model(out / f"dgmrec_cold-seed{seed}.pt")
        model.eval()
        valid_ev = Evaluator(ds, topk=[20])
        test_ev = Evaluator(ds, topk=[20], groups=groups(ds))
        with torch.no_grad():
            zu, zi, c = model._scoring()
            _, cold, ck = knn_over(model, ds, zu, zi)
            for name, cc in (("dgmrec_cold head", c), ("kNN over DGMRec", ck)):
                for tol in tolerances:
                    info = choose_offset(valid_ev, zu, zi, cold, cc, Scorer(zu, zi), tol)
                    r = test_ev.evaluate(Scorer(*with_offset(zu, zi, cold, cc, info["offset"])), "test")
                    miss = sorted(g for g in r.groups if g.startswith("new&missing="))
                    rows.setdefault((name, tol), []).append(
                        (r.metrics["recall@20"], r.groups["new"]["recall@20"], r.groups["old"]["recall@20"],
                         *(r.groups[g]["recall@20"] for g in miss)))
    print("| scoring | old-item tolerance | test R@20 | new R@20 | old R@20 | " + " | ".join(f"R@20 {g}" for g in miss) + " |")
    print("|---|---|---|---|---|" + "---|" * len(miss))
    for (name, tol), vals in rows.items():
        cells = []
        for j in range(len(vals[0])):
            v = [x[j] for x in vals]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):.4f} ± {sd:.4f}")
        print(f"| {name} | {tol:g} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="2024,2025,2026")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, default=Path("bench-out/new-items-synth"))
    ap.add_argument("--tradeoff", metavar="TOLS", help="only the trade-off table from the saved checkpoints, "
                    "at these comma-separated old-item tolerances (e.g. 0.02,0.05,0.1,1)")
    args = ap.parse_args()
    if args.tradeoff:
        tradeoff(args.out, [int(s) for s in args.seeds.split(",")], [float(t) for t in args.tradeoff.split(",")])
        return
    from graphrec.config import parse_set

    sets = parse_set(tuple(args.sets))
    args.out.mkdir(parents=True, exist_ok=True)
    recs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        path = args.out / f"seed{seed}.json"
        if path.is_file():
            recs.append(json.loads(path.read_text()))
            continue
        rec = run_seed(seed, args.epochs, sets, args.out)
        path.write_text(json.dumps(rec, indent=2))
        recs.append(rec)
        print(f"seed {seed} done", file=sys.stderr, flush=True)
    names = ("dgmrec", "content_knn", "dgmrec+knn", "dgmrec+knn calibrated", "dgmrec_cold")

    def cell(name, g, k):
        vals = [r[name][g][k] for r in recs if g in r[name]]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.mean(vals):.4f} ± {sd:.4f}" if vals else "–"

    print("| scoring | test R@20 | test NDCG@20 | new R@20 | new NDCG@20 | old R@20 | old NDCG@20 |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        print(f"| {name} | " + " | ".join(cell(name, g, k) for g in ("all", "new", "old") for k in GROUP_KEYS) + " |")
    miss = sorted({g for r in recs for g in r["dgmrec"] if g.startswith("new&missing=")})
    print()
    print("| scoring | " + " | ".join(f"R@20 {g}" for g in miss) + " |")
    print("|---|" + "---|" * len(miss))
    for name in names:
        print(f"| {name} | " + " | ".join(cell(name, g, "recall@20") for g in miss) + " |")
    print()
    print("users per group (seed 1): " + ", ".join(f"{g} {recs[0]['dgmrec'][g]['users']}" for g in recs[0]["dgmrec"] if g != "all"))
    print("calibrated offsets: " + ", ".join(f"{r['cold_offset']:.4f}" for r in recs)
          + "; best epochs dgmrec_cold " + ", ".join(str(r["dgmrec_cold_best_epoch"]) for r in recs)
          + ", content_knn " + ", ".join(str(r["content_knn_best_epoch"]) for r in recs))


if __name__ == "__main__":
    main()
