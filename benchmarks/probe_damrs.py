"""What DAMRS's graphs and loss terms look like on a dataset, step by step (docs/models/damrs.md,
"Reading the curves on TikTok").

First one JSON line about the item graphs: per modality the mean cosine similarity (the survival
threshold), how many pairs survive "at least the mean in every modality", the survivors per row,
and the out-/in-degrees of the denoised and behaviour graphs. Then it trains DAMRS as ``graphrec
fit`` does (shared trainer, Adam, the same sampler) and prints one JSON line per step: the logged
terms (``bpr``, ``neighbor`` and ``kl`` are already weighted), the agreement weights (mean and min of
``w⁺``, the share of pairs with ``w⁻ > 0`` and their mean ``w⁻``), the mean user-embedding norm, every
``--grad-every`` steps the gradient norm of each term on the user and item tables, and every
``--eval-every`` steps the validation recall@20.

    OMP_NUM_THREADS=1 python benchmarks/probe_damrs.py --steps 60 --eval-every 10
    OMP_NUM_THREADS=1 python benchmarks/probe_damrs.py --data-dir /tmp/data/tiktok --set dataset=tiktok \\
        --set missing_ratio=0.6 --set eval_mask_valid_in_test=false --steps 60 --eval-every 10

Results on ../shared/data folders are for research use only (see each SOURCE.md licence).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _model_setup import (  # benchmarks/, beside this file
    add_config_args,
    model_config_and_data,
)


def graph_stats(ds, cfg) -> dict:
    """Survivors of the denoising rule and the degrees of the item graphs (exact, ``O(N²)`` memory)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from graphrec.graph.denoised import cooccurrence_graph, denoised_knn_graphs

    xs = {m: F.normalize(torch.as_tensor(np.asarray(x, dtype=np.float32)), dim=1) for m, x in ds.features.items()}
    keep, out = None, {"items": ds.n_items, "mean_similarity": {}}
    for m, x in xs.items():
        s = x @ x.T
        out["mean_similarity"][m] = round(float(s.mean()), 4)
        keep = s >= s.mean() if keep is None else keep & (s >= s.mean())
    per_row = keep.sum(1).float()
    out["surviving_pairs"] = round(float(keep.float().mean()), 4)
    out["survivors_per_row"] = {"min": int(per_row.min()), "median": float(per_row.median()), "only_itself": int((per_row <= 1).sum())}
    graphs = denoised_knn_graphs(ds.features, int(cfg["knn_k"]))
    graphs["behavior"] = cooccurrence_graph(ds.train, ds.n_users, ds.n_items, int(cfg["cooc_k"]))
    for name, a in graphs.items():
        a = a.tocsr()
        deg_out, deg_in = np.diff(a.indptr), np.bincount(a.indices, minlength=ds.n_items)
        out[name] = {"edges": int(a.nnz), "out_degree_median": float(np.median(deg_out)), "rows_with_only_one_edge": int((deg_out <= 1).sum()),
                     "in_degree_max": int(deg_in.max()), "in_degree_p99": float(np.percentile(deg_in, 99))}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(ap)
    ap.add_argument("--steps", type=int, default=60, help="training steps (batches)")
    ap.add_argument("--eval-every", type=int, default=10, help="validation recall@20 every N steps")
    ap.add_argument("--grad-every", type=int, default=5, help="per-term gradient norms every N steps (three extra backward passes)")
    ap.add_argument("--no-graphs", action="store_true", help="skip the graph statistics")
    args = ap.parse_args(argv)

    import torch

    import graphrec.models.damrs as damrs_module
    from graphrec.train.trainer import Trainer

    cls, cfg, ds = model_config_and_data("damrs", args)
    if not args.no_graphs:
        print(json.dumps({"graphs": graph_stats(ds, cfg)}), flush=True)
    model = cls(ds, cfg)
    trainer = Trainer(model, ds, cfg, progress=False)

    seen: dict = {}
    weights = damrs_module.agreement_weights

    def observed_weights(user, pos_views, neg_views):  # the model's own weights, recorded
        w_pos, w_neg = weights(user, pos_views, neg_views)
        on = w_neg > 0
        seen.update(w_pos_mean=float(w_pos.mean()), w_pos_min=float(w_pos.min()), w_neg_share=float(on.float().mean()),
                    w_neg_mean=float(w_neg[on].mean()) if on.any() else 0.0, user_norm=float(user.norm(dim=1).mean()))
        return w_pos, w_neg

    damrs_module.agreement_weights = observed_weights
    params = [model.user_emb, model.item_emb]
    step = 0
    print(json.dumps({"step": 0, "valid_recall@20": round(trainer.evaluate("valid").metrics["recall@20"], 4)}), flush=True)
    while step < args.steps:
        for batch in trainer.sampler.epoch(int(cfg["train_batch_size"])):
            batch = batch.to(trainer.device)
            trainer.optimizer.zero_grad(set_to_none=True)
            losses = model.loss(batch)
            row = {"step": step + 1, **{k: round(float(v), 6) for k, v in losses.items()}, **{k: round(v, 4) for k, v in seen.items()}}
            if args.grad_every and step % args.grad_every == 0:
                for name in ("bpr", "neighbor", "kl"):
                    if losses[name].requires_grad:
                        grads = torch.autograd.grad(losses[name], params, retain_graph=True, allow_unused=True)
                        row[f"grad_{name}_user_item"] = [round(float(g.norm()), 6) if g is not None else 0.0 for g in grads]
            losses["loss"].backward()
            trainer.optimizer.step()
            step += 1
            if step % args.eval_every == 0:
                row["valid_recall@20"] = round(trainer.evaluate("valid").metrics["recall@20"], 4)
            print(json.dumps(row), flush=True)
            if step >= args.steps:
                break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
