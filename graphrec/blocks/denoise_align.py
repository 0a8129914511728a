"""DAMRS's denoising and alignment losses (Xv et al., KDD 2024).

Views are item embedding tables ``h_v (N, d)`` (one per modality graph and the behaviour graph).

* :func:`neighbour_probabilities`: ``P_v = softmax_j(cos(h_v[i], h_v[j]))`` over all items, rows = batch items.
* :func:`pseudo_neighbours`: for a target view ``t``, ``m = top10(Σ_v P_v + P_t)`` (neighbours the
  views agree on) and ``s = top10(P_t with m removed)`` (neighbours only ``t`` sees).
* :func:`neighbour_discrimination`: with ``e_j = exp(cos(h[i], h[j]) / τ)`` and ``T = Σ_j e_j``,
  ``-log(Σ_m e / T) - log(Σ_s e / (T - Σ_m e))``, averaged over the rows.
* :func:`symmetric_bernoulli_kl`: ``KL(p‖q) + KL(q‖p)`` of element-wise Bernoulli probabilities.
* :func:`agreement_weights`: BPR weights from how much the views agree on a user's pair (no gradient):
  with ``a_v = σ(e_uᵀ norm(h_v[i⁺]))`` and ``b_v = σ(e_uᵀ norm(h_v[i⁻]))``,
  ``w⁺ = clamp(mean_v a · exp(-var_v a)², 0, 1)`` and
  ``w⁻ = clamp(max_v a - mean(b), 0, 1)`` where ``mean_v a < mean(b)`` (the batch mean), else 0.
* :func:`weighted_bpr`: ``-mean(w⁺ log σ(s⁺ - s⁻) + w⁻ log σ(s⁻ - s⁺))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: pseudo neighbours per row (the authors' fixed 10)
N_PSEUDO = 10


def neighbour_probabilities(rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``(n, N)``: softmax over all items of the cosine similarities of ``rows (n, d)`` to ``table (N, d)``."""
    return torch.softmax(F.normalize(rows, dim=1) @ F.normalize(table, dim=1).T, dim=1)


def pseudo_neighbours(probs: list[torch.Tensor], target: int, k: int = N_PSEUDO) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, k), (n, k)``: the agreed (``m``) and the target-only (``s``) pseudo neighbours (no gradient)."""
    with torch.no_grad():
        k = min(k, probs[target].shape[1])
        agreed = (sum(probs) + probs[target]).topk(k, dim=1).indices
        own = probs[target].clone().scatter_(1, agreed, 0.0)
        return agreed, own.topk(k, dim=1).indices


def neighbour_discrimination(agreed: torch.Tensor, own: torch.Tensor, rows: torch.Tensor, table: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Mean over rows of ``-log(Σ_m e / T) - log(Σ_s e / (T - Σ_m e))`` (module docstring).

    Computed with log-sum-exps (``T - Σ_m e`` as the sum over the items outside ``m``), so a small
    ``temperature`` cannot overflow ``exp``; the authors' ``+1e-9`` inside the logs is left out. A row
    whose ``m`` covers every item (fewer than ``2k`` items) has no second term.
    """
    sims = F.normalize(rows, dim=1) @ F.normalize(table, dim=1).T / temperature  # (n, N)
    log_total = torch.logsumexp(sims, 1)
    log_m = torch.logsumexp(sims.gather(1, agreed), 1)
    log_s = torch.logsumexp(sims.gather(1, own), 1)
    log_rest = torch.logsumexp(sims.scatter(1, agreed, float("-inf")), 1)  # log(T - Σ_m e)
    second = torch.where(torch.isfinite(log_rest), log_rest - log_s, torch.zeros_like(log_s))
    return (log_total - log_m + second).mean()


def symmetric_bernoulli_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``mean(KL(p‖q) + KL(q‖p))`` for element-wise Bernoulli probabilities (clamped to ``[eps, 1 - eps]``)."""
    p, q = p.clamp(eps, 1 - eps), q.clamp(eps, 1 - eps)

    def kl(a, b):
        return a * (a.log() - b.log()) + (1 - a) * ((1 - a).log() - (1 - b).log())

    return (kl(p, q) + kl(q, p)).mean()


def agreement_weights(user: torch.Tensor, pos_views: list[torch.Tensor], neg_views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B,), (B,)`` weights ``w⁺``, ``w⁻`` of a batch's BPR terms (module docstring); no gradient."""
    with torch.no_grad():
        a = torch.stack([torch.sigmoid((user * F.normalize(h, dim=1)).sum(1)) for h in pos_views])  # (V, B)
        b = torch.stack([torch.sigmoid((user * F.normalize(h, dim=1)).sum(1)) for h in neg_views])
        mean_a = a.mean(0)
        var_a = a.var(0) if a.shape[0] > 1 else torch.zeros_like(mean_a)
        w_pos = (mean_a * torch.exp(-var_a) ** 2).clamp(0, 1)
        mean_b = b.mean()
        w_neg = ((a.amax(0) - mean_b) * (mean_a < mean_b)).clamp(0, 1)
        return w_pos, w_neg


def weighted_bpr(pos: torch.Tensor, neg: torch.Tensor, w_pos: torch.Tensor, w_neg: torch.Tensor) -> torch.Tensor:
    """``-mean(w⁺ log σ(pos - neg) + w⁻ log σ(neg - pos))`` over ``(B,)`` scores."""
    return -(w_pos * F.logsigmoid(pos - neg) + w_neg * F.logsigmoid(neg - pos)).mean()
