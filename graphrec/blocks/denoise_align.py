"""DAMRS's denoising and alignment losses (Xv et al., KDD 2024).

Views are item embedding tables ``h_v (N, d)`` (one per modality graph and the behaviour graph).

* :func:`neighbour_probabilities`: ``P_v = softmax_j(cos(h_v[i], h_v[j]))`` over all items, rows = batch items.
* :func:`pseudo_neighbours`: for a target view ``t``, ``m = topk(Σ_v P_v + P_t)`` (neighbours the
  views agree on) and ``s = topk(P_t with m removed)`` (neighbours only ``t`` sees), ``k = 10`` unless given.
* :func:`neighbour_discrimination`: with ``e_j = exp(cos(h[i], h[j]) / τ)`` and ``T = Σ_j e_j``,
  ``-log(Σ_m e / T) - log(Σ_s e / (T - Σ_m e))``, averaged over the rows.
* :func:`neighbour_loss`: the fast form of the three above for all views at once (what DAMRS trains
  with): one ``(n, N)`` cosine product per view shared by the probabilities and the discrimination,
  ``Σ_v P_v`` formed once, and the discrimination's gradient written by hand (one dense pass instead of
  autograd's two log-sum-exps over ``(n, N)``). Same values and gradients as the reference functions
  up to float rounding (``tests/test_baselines_zoo.py`` checks both).
* :func:`symmetric_bernoulli_kl`: ``KL(p‖q) + KL(q‖p)`` of element-wise Bernoulli probabilities;
  :func:`symmetric_bernoulli_kl_logits` the same from logits, as ``(p - q)(logit p - logit q)``.
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


def view_pseudo_neighbours(cosines: list[torch.Tensor], k: int = N_PSEUDO) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per target view, :func:`pseudo_neighbours` of ``softmax(cosines)`` with ``Σ_v P_v`` formed once.

    ``cosines``: ``(n, N)`` cosine similarities per view (no gradient). Returns ``[(agreed, own)]``,
    ``(n, k)`` each, identical to ``pseudo_neighbours(probs, t, k)`` for every ``t``.
    """
    with torch.no_grad():
        probs = [torch.softmax(c, dim=1) for c in cosines]
        k = min(k, probs[0].shape[1])
        total = sum(probs)
        out = []
        for p in probs:
            agreed = (total + p).topk(k, dim=1).indices
            out.append((agreed, p.clone().scatter_(1, agreed, 0.0).topk(k, dim=1).indices))
        return out


class _CosineDiscrimination(torch.autograd.Function):
    """:func:`neighbour_discrimination` from a precomputed ``cos = rows_n @ table_n.T`` (no gradient).

    Forward keeps one ``(n, N)`` tensor, ``E = exp(cos / τ - rowmax)`` with the agreed columns zeroed;
    backward forms ``∂L/∂cos`` from it in one pass (softmax over all items, softmax over the items
    outside ``m``, minus the softmaxes over ``m`` and ``s`` at their ``k`` columns) and returns
    ``G @ table_n`` and ``Gᵀ @ rows_n``.
    """

    @staticmethod
    def forward(ctx, rows_n, table_n, cos, agreed, own, temperature):
        n_items = cos.shape[1]
        sims = cos / temperature
        peak = sims.amax(1, keepdim=True)
        e = sims.sub_(peak).exp_()  # (n, N), exp(s - rowmax)
        e_m = e.gather(1, agreed)
        e.scatter_(1, agreed, 0.0)
        rest = e.sum(1)  # Σ_{j ∉ m} exp(s - rowmax)
        total = rest + e_m.sum(1)
        s_m, s_s = cos.gather(1, agreed) / temperature, cos.gather(1, own) / temperature
        log_m, log_s = s_m.logsumexp(1), s_s.logsumexp(1)
        log_total = total.log() + peak[:, 0]
        has_rest = agreed.shape[1] < n_items
        log_rest = rest.log() + peak[:, 0]
        if has_rest:
            exact = (rest < 1e-30).nonzero()[:, 0]  # the rest underflowed against the row max (tiny τ)
            if len(exact):
                log_rest[exact] = (cos[exact] / temperature).scatter(1, agreed[exact], float("-inf")).logsumexp(1)
            second = log_rest - log_s
        else:
            second = torch.zeros_like(log_s)
        ctx.save_for_backward(rows_n, table_n, e, e_m, agreed, own, s_m, s_s, log_m, log_s, log_total, log_rest, peak, exact if has_rest else agreed[:0, 0], cos if has_rest and len(exact) else cos[:0])
        ctx.temperature, ctx.has_rest = temperature, has_rest
        return (log_total - log_m + second).mean()

    @staticmethod
    def backward(ctx, grad):
        rows_n, table_n, e, e_m, agreed, own, s_m, s_s, log_m, log_s, log_total, log_rest, peak, exact, cos_exact = ctx.saved_tensors
        n = e.shape[0]
        c = grad / (n * ctx.temperature)  # d mean / d row, times d s / d cos
        peak = peak[:, 0]
        inv_total = torch.exp(peak - log_total)  # 1 / Σ_j exp(s - rowmax)
        scale = inv_total + (torch.exp(peak - log_rest) if ctx.has_rest else 0.0)
        if ctx.has_rest and len(exact):
            scale[exact] = inv_total[exact]
        g = e * (c * scale)[:, None]  # softmax over all items + softmax over the rest, at j ∉ m
        g.scatter_(1, agreed, c * (e_m * inv_total[:, None] - torch.exp(s_m - log_m[:, None])))
        if ctx.has_rest:
            g.scatter_add_(1, own, -c * torch.exp(s_s - log_s[:, None]))
            if len(exact):
                sims = cos_exact[exact] / ctx.temperature
                part = torch.exp(sims - log_rest[exact][:, None]).scatter_(1, agreed[exact], 0.0)
                g[exact] += c * part
        return g @ table_n, g.T @ rows_n, None, None, None, None


def neighbour_loss(tables: list[torch.Tensor], items: torch.Tensor, temperature: float = 0.2, k: int = N_PSEUDO) -> torch.Tensor:
    """``mean_t`` of :func:`neighbour_discrimination` of the rows ``items`` of view ``t`` against its
    :func:`pseudo_neighbours` (probabilities of every view in ``tables``, each ``(N, d)``).

    Equal, up to float rounding, to::

        probs = [neighbour_probabilities(t[items], t) for t in tables]
        sum(neighbour_discrimination(*pseudo_neighbours(probs, v, k), t[items], t, temperature)
            for v, t in enumerate(tables)) / len(tables)

    at ``O(V · n · N)`` memory and about a third of its time.
    """
    normed = [F.normalize(t, dim=1) for t in tables]
    rows = [t[items] for t in normed]
    with torch.no_grad():
        cosines = [r @ t.T for r, t in zip(rows, normed)]
    pairs = view_pseudo_neighbours(cosines, k)
    terms = [_CosineDiscrimination.apply(r, t, c, a, o, float(temperature)) for r, t, c, (a, o) in zip(rows, normed, cosines, pairs)]
    return sum(terms) / len(terms)


def symmetric_bernoulli_kl_logits(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """:func:`symmetric_bernoulli_kl` of ``σ(x)`` and ``σ(y)``: ``mean((p - q)(x' - y'))`` with ``x', y'``
    clamped to ``±logit(1 - eps)`` (the same clamp), in four element-wise passes instead of about twenty."""
    bound = float(torch.logit(torch.tensor(1 - eps, dtype=torch.float64)))
    x, y = x.clamp(-bound, bound), y.clamp(-bound, bound)
    return ((torch.sigmoid(x) - torch.sigmoid(y)) * (x - y)).mean()


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
