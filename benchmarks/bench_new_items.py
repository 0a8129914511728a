"""New-item protocol: dgmrec_cold vs plain DGMRec vs the content-kNN baseline (docs/results.md).

For every seed (resumable: a seed whose JSON exists is skipped):

* ``dgmrec_cold`` is trained once (new_items=true). Its test split is scored twice with the same
  weights: from content, with the shift chosen on validation after training (``dgmrec_cold``), and
  as plain DGMRec (``cold_scoring=false``). Training and model selection are plain DGMRec's (the
  cold rows are not scored during training), so the second is plain ``dgmrec``'s result;
* ``content_knn`` (LightGCN + nearest old items in feature space) is trained as its own model
  (LightGCN's trainer settings; only the data keys of ``--set``/``--preset`` apply to it).

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_new_items.py --seeds 2024,2025,2026 --epochs 40 \\
        --out bench-out/new-items-synth
    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_new_items.py --data-dir data/tiktok \\
        --preset configs/dgmrec/tiktok.yaml --set missing_ratio=0.6 --epochs 40 --out bench-out/new-items-tiktok

Prints Markdown tables of test Recall@20 / NDCG@20 overall, on new items and on old items, and
new items' Recall@20 by number of missing modalities.
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
#: keys of --set / --preset that content_knn's runs share with dgmrec_cold's
SHARED_KEYS = ("data_dir", "dataset", "missing_ratio", "mask_file", "synth_missing", "new_items", "seed", "epochs",
               "eval_mask_valid_in_test", "topk")


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


def run_seed(seed: int, epochs: int, sets: dict, out: Path, preset: dict | None = None) -> dict:
    import torch

    from graphrec.config import resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.models.base import Scorer
    from graphrec.models.build import build_model
    from graphrec.eval.evaluator import Evaluator
    from graphrec.registry import MODELS, load_builtin
    from graphrec.train.checkpoint import save_checkpoint
    from graphrec.train.trainer import Trainer

    torch.set_num_threads(1)
    load_builtin()
    rec = {"seed": seed, "epochs": epochs, "sets": sets, "preset": preset or {}}
    for name in ("dgmrec_cold", "content_knn"):
        base = {k: v for k, v in (preset or {}).items() if k != "model"}
        over = {**base, **sets, "new_items": True, "seed": seed, "epochs": epochs}
        if name == "content_knn":  # LightGCN's own trainer settings; the data and evaluation keys are shared
            over = {k: v for k, v in over.items() if k in SHARED_KEYS}
        cfg = resolve_config(name, MODELS.get(name).default_config, overrides=over)
        ds = load_dataset(cfg)
        model = build_model(ds, cfg)
        trainer = Trainer(model, ds, cfg, progress=False)
        t0 = time.perf_counter()
        result = trainer.fit()
        rec[f"{name}_seconds"] = time.perf_counter() - t0
        rec[f"{name}_best_epoch"] = result.best_epoch
        rec[f"{name}_epochs_run"] = result.epochs_run if hasattr(result, "epochs_run") else None
        ev = Evaluator(ds, groups=groups(ds), mask_valid_in_test=bool(cfg.get("eval_mask_valid_in_test", True)))
        model.eval()
        rec[name] = _row(ev.evaluate(model.scorer(), "test"))
        assert abs(rec[name]["all"]["recall@20"] - result.test.metrics["recall@20"]) < 1e-9
        save_checkpoint(out / f"{name}-seed{seed}.pt", model, cfg)
        if name == "dgmrec_cold":
            rec["cold_shift"] = float(model.cold_offset)
            with torch.no_grad():  # the same weights and best epoch as plain dgmrec: its scores
                model.config["cold_scoring"] = False
                rec["dgmrec"] = _row(ev.evaluate(model.scorer(), "test"))
                model.config["cold_scoring"] = True
    return rec


def rescore(out: Path, seeds: list[int], cold_repr: str, trust: bool, tolerance: float | None = None,
            budget: str | None = None, margin: float | None = None) -> list[dict]:
    """Score the saved ``dgmrec_cold`` checkpoints again with ``cold_repr`` (kNN representations need
    no training; ``head`` needs a checkpoint that has one), the shift chosen anew on validation."""
    import torch

    from graphrec.train.checkpoint import load_model  # first: graphrec.eval.evaluator alone is a circular import

    from graphrec.errors import GraphrecError
    from graphrec.eval.evaluator import Evaluator

    torch.set_num_threads(1)
    recs = []
    for seed in seeds:
        path = out / f"dgmrec_cold-seed{seed}.pt"
        try:
            model, ds, _ = load_model(path, trust=trust)
        except GraphrecError:  # a checkpoint of a cold_repr=head run
            model, ds, _ = load_model(path, overrides={"cold_repr": "head"}, eval_only=False, trust=trust)
        cfg = model.config  # the run's resolved config (its evaluation protocol: eval_mask_valid_in_test)
        model.cold_repr, model._neighbours = cold_repr, None
        if tolerance is not None:
            model.config["cold_tolerance"] = tolerance
        # checkpoints of runs before cold_budget existed take the current defaults unless given
        if budget is not None:
            model.config["cold_budget"] = budget
        if margin is not None:
            model.config["cold_margin"] = margin
        model.eval()
        info = model.calibrate(ds, int(cfg.get("eval_batch_size", 2048)))
        ev = Evaluator(ds, groups=groups(ds), mask_valid_in_test=bool(cfg.get("eval_mask_valid_in_test", True)))
        rec = json.loads((out / f"seed{seed}.json").read_text())
        with torch.no_grad():
            rec["dgmrec_cold"] = _row(ev.evaluate(model.scorer(), "test"))
            model.config["cold_scoring"] = False
            rec["dgmrec"] = _row(ev.evaluate(model.scorer(), "test"))
            knn_path = out / f"content_knn-seed{seed}.pt"
            if knn_path.is_file():  # under the same evaluation settings as DGMRec's
                knn, _, _ = load_model(knn_path, dataset=ds, trust=trust)
                rec["content_knn"] = _row(ev.evaluate(knn.eval().scorer(), "test"))
        rec["cold_shift"], rec["cold_repr"], rec["calibration"] = info["t"], cold_repr, info["table"]
        if "choice" in info:  # knn_auto: the source and neighbour count chosen on validation
            rec["cold_choice"], rec["cold_candidates"] = list(info["choice"]), info["candidates"]
        rec["cold_budget"], rec["cold_margin"] = model.config["cold_budget"], float(model.config["cold_margin"])
        tag = cold_repr if tolerance is None else f"{cold_repr}-tol{tolerance:g}"
        if budget is not None:
            tag += f"-{budget}" + (f"-z{margin:g}" if budget == "expected" and margin is not None else "")
        (out / f"rescore-{tag}-seed{seed}.json").write_text(json.dumps(rec, indent=2))
        recs.append(rec)
        print(f"seed {seed} rescored", file=sys.stderr, flush=True)
    return recs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="2024,2025,2026")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, default=Path("bench-out/new-items-synth"))
    ap.add_argument("--data-dir", help="MMRec folder (default: the embedded synthetic set)")
    ap.add_argument("--preset", type=Path, help="YAML config of dgmrec_cold's runs, e.g. configs/dgmrec/tiktok.yaml")
    ap.add_argument("--rescore", metavar="COLD_REPR", help="only score the saved checkpoints again with this "
                    "cold_repr (knn, knn_fused, knn_auto, head) and a new shift; writes rescore-<repr>[-tol<x>]-seed<k>.json")
    ap.add_argument("--tolerance", type=float, help="with --rescore: cold_tolerance (old-item budget) of the new shift")
    ap.add_argument("--budget", choices=("expected", "recall"), help="with --rescore: cold_budget of the new shift "
                    "(default: the model's default); the tag -<budget>[-z<margin>] is added to the file names")
    ap.add_argument("--margin", type=float, help="with --rescore --budget expected: cold_margin (standard deviations)")
    ap.add_argument("--trust-checkpoint", action="store_true", help="with --rescore: load checkpoints of earlier graphrec versions")
    args = ap.parse_args()
    from graphrec.config import parse_set

    sets = parse_set(tuple(args.sets))
    if args.data_dir:
        sets["data_dir"] = args.data_dir
    preset = None
    if args.preset:
        import yaml

        preset = yaml.safe_load(args.preset.read_text()) or {}
    args.out.mkdir(parents=True, exist_ok=True)
    recs = []
    if args.rescore:
        recs = rescore(args.out, [int(s) for s in args.seeds.split(",")], args.rescore, args.trust_checkpoint, args.tolerance,
                       args.budget, args.margin)
    for seed in ([] if args.rescore else (int(s) for s in args.seeds.split(","))):
        path = args.out / f"seed{seed}.json"
        if path.is_file():
            recs.append(json.loads(path.read_text()))
            continue
        rec = run_seed(seed, args.epochs, sets, args.out, preset)
        path.write_text(json.dumps(rec, indent=2))
        recs.append(rec)
        print(f"seed {seed} done", file=sys.stderr, flush=True)
    names = ("dgmrec", "content_knn", "dgmrec_cold")

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
    print("shifts t (σ_u units): " + ", ".join(f"{r['cold_shift']:.3f}" for r in recs)
          + "; best epochs dgmrec_cold " + ", ".join(str(r["dgmrec_cold_best_epoch"]) for r in recs)
          + ", content_knn " + ", ".join(str(r["content_knn_best_epoch"]) for r in recs))


if __name__ == "__main__":
    main()
