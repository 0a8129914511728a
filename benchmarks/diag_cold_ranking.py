"""How well does content rank items without interactions among themselves? (docs/results.md, new items)

For a trained ``dgmrec_cold`` checkpoint of the new-item protocol, every user's test positives
among the items without training interactions ("cold" items) are ranked **among the cold items
only** (every cold item forced above the old ones), by

* ``content``: dgmrec_cold's content scores (its chosen ``cold_repr``, on each user's scale),
* ``plain``: plain DGMRec's scores of the same weights (the item's own fused representation),
* ``random``: uniform random scores (seed 0),
* ``popularity oracle``: the cold items' number of test interactions (not available to any model),

and Recall@20 over the users with a cold test positive is printed. It separates what the content
representation knows about the new items from the old-item budget that decides how many of them
reach a top-20 list (:mod:`graphrec.models.cold_budget`)::

    OMP_NUM_THREADS=1 python benchmarks/diag_cold_ranking.py bench-out/ml100k-new/dgmrec_cold-seed2024.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def recall_among(scores, cold, positives: dict[int, set[int]], k: int = 20) -> float:
    """Mean over users of |top-k of ``scores[u]`` (columns = ``cold`` items) ∩ positives[u]| / min(|positives[u]|, k)."""
    import numpy as np

    out = []
    for u, pos in positives.items():
        top = np.argsort(-scores[u])[:k]
        out.append(len({int(cold[t]) for t in top} & pos) / min(len(pos), k))
    return float(np.mean(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="a dgmrec_cold checkpoint (e.g. bench_new_items.py's dgmrec_cold-seed<k>.pt)")
    ap.add_argument("--trust-checkpoint", action="store_true", help="load a checkpoint of an earlier graphrec version")
    args = ap.parse_args()

    import numpy as np
    import torch

    from graphrec.train.checkpoint import load_model

    torch.set_num_threads(1)
    model, ds, _ = load_model(args.checkpoint, trust=args.trust_checkpoint)
    if not hasattr(model, "cold_items"):
        sys.exit(f"{args.checkpoint}: not a dgmrec_cold checkpoint")
    model.eval()
    with torch.no_grad():
        zu, zi, c, a, b, _ = model._scoring()
        cold = torch.nonzero(model.cold_items).squeeze(1).numpy()
        content = (a.unsqueeze(1) * (zu @ c.T) + b.unsqueeze(1)).numpy()
        plain = (zu @ zi[torch.from_numpy(cold)].T).numpy()
    column = {int(i): j for j, i in enumerate(cold)}
    positives: dict[int, set[int]] = {}
    popularity = np.zeros(len(cold))
    for u, i in ds.test:
        if int(i) in column:
            positives.setdefault(int(u), set()).add(int(i))
            popularity[column[int(i)]] += 1
    print(f"{args.checkpoint}: {len(cold)} cold items with a modality, {len(positives)} users with a cold test positive "
          f"(mean {np.mean([len(p) for p in positives.values()]):.1f} each)")
    rows = {
        "content (dgmrec_cold)": content,
        "plain DGMRec": plain,
        "random": np.random.default_rng(0).random(content.shape),
        "popularity oracle": np.tile(popularity, (content.shape[0], 1)),
    }
    for name, scores in rows.items():
        print(f"  {name:<22} Recall@20 among cold items: {recall_among(scores, cold, positives):.4f}")


if __name__ == "__main__":
    main()
