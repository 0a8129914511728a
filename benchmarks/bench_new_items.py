"""New-item protocol: DGMRec's cold-item head vs plain DGMRec vs content-kNN (docs/results.md).

For every seed (resumable: a run whose JSON exists is skipped):

* ``dgmrec_cold`` is trained once (new_items=true); its test split is scored three ways with the
  same weights: the head with its validation-calibrated offset (``dgmrec_cold``), plain DGMRec
  (``cold_scoring=false``: DGMRec's own scores, since the cold loss does not touch DGMRec's
  parameters), and content-kNN over DGMRec's item representations (new item = similarity-weighted
  mean of its ``content_k`` nearest old items in feature space, :mod:`graphrec.graph.content`);
* ``content_knn`` (LightGCN + the same kNN transfer) is trained as its own model.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_new_items.py --seeds 2024,2025,2026 --epochs 40 \\
        --out bench-out/new-items-synth

Prints a Markdown table of test Recall@20 / NDCG@20 overall, on new items and on old items.
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
    for g in ("new", "old"):
        if g in res.groups:
            out[g] = {k: float(res.groups[g][k]) for k in GROUP_KEYS}
    return out


def knn_over(model, dataset, zu, zi, k: int = 10):
    """Scorer whose cold items are the similarity-weighted mean of their nearest old items' ``zi``."""
    import numpy as np
    import torch

    from graphrec.graph.content import content_neighbours, neighbour_weights
    from graphrec.models.base import Scorer

    mods = dataset.modalities
    obs = np.stack([~dataset.missing.missing[m] for m in mods], axis=1)
    old = np.bincount(dataset.train[:, 1], minlength=dataset.n_items) > 0
    cold = np.flatnonzero(~old)
    idx, sim = content_neighbours({m: dataset.features[m][cold] for m in mods}, obs[cold],
                                  {m: dataset.features[m] for m in mods}, obs, k, candidates=old)
    w = neighbour_weights(sim)
    zi = zi.clone()
    zi[torch.from_numpy(cold)] = (w.unsqueeze(2) * zi[idx]).sum(dim=1)
    return Scorer(zu, zi)


def run_seed(seed: int, epochs: int, sets: dict, out: Path) -> dict:
    import torch

    from graphrec.config import resolve_config
    from graphrec.data.dataset import load_dataset
    from graphrec.models.base import Scorer
    from graphrec.models.build import build_model
    from graphrec.registry import MODELS, load_builtin
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
        rec[name] = _row(result.test)
        if name == "dgmrec_cold":
            rec["cold_offset"] = float(model.cold_offset)
            model.eval()
            with torch.no_grad():
                zu, zi, _ = model._scoring()
                rec["dgmrec"] = _row(trainer.evaluator.evaluate(Scorer(zu, zi), "test"))
                rec["dgmrec+knn"] = _row(trainer.evaluator.evaluate(knn_over(model, ds, zu, zi), "test"))
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="2024,2025,2026")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, default=Path("bench-out/new-items-synth"))
    args = ap.parse_args()
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
    print("| scoring | test R@20 | test NDCG@20 | new R@20 | new NDCG@20 | old R@20 | old NDCG@20 |")
    print("|---|---|---|---|---|---|---|")
    for name in ("dgmrec", "dgmrec+knn", "content_knn", "dgmrec_cold"):
        cells = []
        for g in ("all", "new", "old"):
            for k in GROUP_KEYS:
                vals = [r[name][g][k] for r in recs if g in r[name]]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.mean(vals):.4f} ± {sd:.4f}" if vals else "–")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
