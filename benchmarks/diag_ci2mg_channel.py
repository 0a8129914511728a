#!/usr/bin/env python
"""How much a trained CI2MG's modality channel changes its rankings.

Usage::

    python benchmarks/diag_ci2mg_channel.py runs/ci2mg-a runs/ci2mg-b --json bench-out/ci2mg_channel.json

CI2MG scores ``<x_u, x_i>`` with ``x_u = [Ē_U; norm(F^U_m)...]`` and
``x_i = [Ē_I; norm(Z_m)...]`` (spec 5.2 step 8): an ID part (a LightGCN with mean
aggregation) plus one bounded cosine term per modality. For every checkpoint this script
evaluates, on the validation and test splits (full ranking, the run's own protocol):

* **full**: the model as trained (BatchNorm in eval mode, spec 5.4);
* **ID only**: the same model with the modality parts removed (``x = [Ē]``);
* **per-modality BN**: the modality parts with each modality's BatchNorm statistics taken
  over all N items (what training mode computes) instead of the running statistics,
  which the one shared BatchNorm mixes across modalities.

the **score spread** of the two parts (per user, the standard deviation over all items of
the ID part's scores and of the modality parts' scores, averaged over up to 200 users),
and, per modality, what the channel carries: the spread across items of the item part
``norm(Z_m)`` (mean over dimensions of the per-dimension standard deviation; 0 means
every item gets the same vector), the same for the user part ``norm(F^U_m)``, the mean
cosine between two users' ``F^U_m``, the fraction of saturated sigmoid outputs in ``Q_m``
(below 1e-4 or above 1 - 1e-4) and the largest ``|running_mean|`` of the shared BatchNorm.
If "full" equals "ID only", the modality channel does not change any ranking.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _spread(x) -> float:
    return float(x.std(0).mean())


def diagnose(checkpoint: Path) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from graphrec.eval.evaluator import Evaluator
    from graphrec.models.base import Scorer
    from graphrec.train.checkpoint import load_model

    model, dataset, payload = load_model(checkpoint)
    if payload["model"] != "ci2mg":
        raise SystemExit(f"{checkpoint}: a {payload['model']} checkpoint; this diagnostic reads ci2mg checkpoints")
    cfg = payload["config"]
    ev = Evaluator(dataset, topk=[20], batch_size=int(cfg.get("eval_batch_size", 4096)),
                   mask_valid_in_test=bool(cfg.get("eval_mask_valid_in_test", True)))
    model.eval()
    d = model.embedding_size
    with torch.no_grad():
        out = model.compute()
        user_id, item_id = out["user"][:, :d], out["item"][:, :d]
        bn = model.bn
        z_batch = [
            F.batch_norm(model.enhance[m](torch.cat([out["Q"][k], out["Q_hat"][k]], 1)), None, None,
                         bn.weight, bn.bias, True, 0.0, bn.eps)
            for k, m in enumerate(model.modalities)
        ]
        variants = {
            "full": (out["user"], out["item"]),
            "id_only": (user_id, item_id),
            "per_modality_bn": (out["user"], torch.cat([item_id] + [F.normalize(z, dim=1) for z in z_batch], 1)),
        }
        recall = {
            name: {split: ev.evaluate(Scorer(u, i), split).metrics["recall@20"] for split in ("valid", "test")}
            for name, (u, i) in variants.items()
        }
        modalities = {}
        for k, m in enumerate(model.modalities):
            fu = F.normalize(out["user"][:, d * (k + 1): d * (k + 2)], dim=1)
            n_users = fu.shape[0]
            mean_cos = float(((fu.sum(0) @ fu.sum(0)) - n_users) / max(n_users * (n_users - 1), 1))
            q = out["Q"][k]
            modalities[m] = {
                "item_part_spread": _spread(out["item"][:, d * (k + 1): d * (k + 2)]),
                "item_part_spread_per_modality_bn": _spread(F.normalize(z_batch[k], dim=1)),
                "user_part_spread": _spread(fu),
                "user_mean_cosine": mean_cos,
                "q_saturated": float(((q < 1e-4) | (q > 1 - 1e-4)).float().mean()),
            }
        bn_mean = float(bn.running_mean.abs().max())
        # how far apart the two parts place one user's items: per-user std of the scores, mean over users
        users = torch.arange(0, out["user"].shape[0], max(1, out["user"].shape[0] // 200))
        score_spread = {
            "id": float((user_id[users] @ item_id.T).std(1).mean()),
            "modalities": float((out["user"][users, d:] @ out["item"][:, d:].T).std(1).mean()),
        }
    return {"checkpoint": str(checkpoint), "config": {k: cfg.get(k) for k in (
        "seed", "synth_missing", "reference_compat", "ci2mg_contrastive", "ci2mg_loss_weighting", "lamb_1", "lamb_2", "temp")},
        "recall@20": recall, "score_spread": score_spread, "modalities": modalities, "bn_running_mean_absmax": bn_mean}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="ci2mg run folders or model.pt files")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(args.threads)
    from graphrec.errors import GraphrecError

    try:
        rows = [diagnose(c) for c in args.checkpoints]
    except GraphrecError as e:
        raise SystemExit(f"error: {e}") from None
    table = Table(title="CI2MG modality channel: Recall@20 (valid / test) and what the channel carries")
    for col in ("run", "full", "ID only", "per-modality BN", "score spread ID / mod", "modality", "item spread", "item spread (per-mod BN)",
                "user spread", "user mean cos", "Q saturated", "|BN running mean|"):
        table.add_column(col, justify="left" if col in ("run", "modality") else "right")
    for r in rows:
        rec = r["recall@20"]
        first = True
        for m, s in r["modalities"].items():
            cells = [Path(r["checkpoint"]).name if first else ""]
            cells += [f"{rec[v]['valid']:.4f} / {rec[v]['test']:.4f}" if first else "" for v in ("full", "id_only", "per_modality_bn")]
            spread = r["score_spread"]
            cells += [f"{spread['id']:.3g} / {spread['modalities']:.3g}" if first else ""]
            cells += [m, f"{s['item_part_spread']:.2e}", f"{s['item_part_spread_per_modality_bn']:.2e}",
                      f"{s['user_part_spread']:.2e}", f"{s['user_mean_cosine']:.4f}", f"{s['q_saturated']:.2f}",
                      f"{r['bn_running_mean_absmax']:.3g}" if first else ""]
            table.add_row(*cells)
            first = False
    Console(width=200).print(table)
    if args.json:
        from graphrec.data.interactions import atomic_write_json

        atomic_write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
