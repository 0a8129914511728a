"""Top-K ranking metrics from hit matrices (spec 2.4).

``hits`` is a ``(B, K_max)`` 0/1 float tensor: ``hits[u, r-1] = 1`` iff the item at rank r
is a positive of user u; ``n_pos`` is ``(B,)``, the user's number of positives |T_u|.

* Recall@K = Σ_{r≤K} h[r] / |T_u|
* NDCG@K = DCG / IDCG, DCG = Σ_{r≤K} h[r] / log2(r+1), IDCG = Σ_{r=1}^{min(|T_u|,K)} 1/log2(r+1)
* Precision@K = Σ_{r≤K} h[r] / K
* Hit@K = 1 if any h[r] = 1 for r ≤ K
* MAP@K = (1/min(|T_u|,K)) Σ_{r≤K} h[r] · Precision@r
"""

from __future__ import annotations

import torch

METRICS = ("recall", "ndcg", "precision", "hit", "map")


def per_user_metrics(hits: torch.Tensor, n_pos: torch.Tensor, ks: list[int], metrics=METRICS) -> dict[str, torch.Tensor]:
    """``{'recall@10': (B,), ...}`` per-user values for every metric and K."""
    hits = hits.float()
    n_pos = n_pos.float()
    kmax = hits.shape[1]
    ranks = torch.arange(1, kmax + 1, dtype=torch.float32, device=hits.device)
    discount = 1.0 / torch.log2(ranks + 1.0)
    cum_hits = hits.cumsum(dim=1)
    ideal_cum = discount.cumsum(0)
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        k_eff = min(k, kmax)
        h = hits[:, :k_eff]
        n_hit = cum_hits[:, k_eff - 1]
        if "recall" in metrics:
            out[f"recall@{k}"] = n_hit / n_pos.clamp(min=1)
        if "ndcg" in metrics:
            dcg = (h * discount[:k_eff]).sum(1)
            idcg_len = torch.clamp(n_pos, max=k_eff).long().clamp(min=1)
            out[f"ndcg@{k}"] = dcg / ideal_cum[idcg_len - 1]
        if "precision" in metrics:
            out[f"precision@{k}"] = n_hit / k
        if "hit" in metrics:
            out[f"hit@{k}"] = (n_hit > 0).float()
        if "map" in metrics:
            prec_at_r = cum_hits[:, :k_eff] / ranks[:k_eff]
            out[f"map@{k}"] = (h * prec_at_r).sum(1) / torch.clamp(n_pos, max=k).clamp(min=1)
    return out
