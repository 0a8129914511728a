"""Entropic optimal transport with Sinkhorn iterations (CI2MG eq. 6-9, spec 5.2 step 6).

The authors use the SwAV normalisation variant::

    P = exp(-C / ε);  P /= ΣP
    repeat n_iters:  P /= rowsum(P); P /= n_rows;  P /= colsum(P); P /= n_cols
    P *= n_rows

(uniform marginals; for a square cost the columns of the result sum to exactly 1
and the rows to about 1). :func:`sinkhorn` computes the same iterates in the log
domain with dual potentials ``f`` (rows) and ``g`` (columns),
``log P_ij = -C_ij/ε + f_i + g_j``, so that large ``C/ε`` (where ``exp`` underflows
to 0 and the plain version returns NaN) stays finite; when the kernel's dynamic range
is safe for float32 it uses the equivalent, faster scaling-vector form. :func:`sinkhorn_plain` is the
literal version, kept as a reference for tests.

No gradient flows through the plan (it is a constant in back-propagation).
Memory: a dense ``(n_rows, n_cols)`` float matrix plus one temporary of that size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from graphrec.registry import register_block


@torch.no_grad()
def squared_cost(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``C[i, j] = ‖source_i - target_j‖²`` (clamped at 0). Shapes: ``(R, d), (C, d)`` -> ``(R, C)``."""
    cost = source.pow(2).sum(1, keepdim=True) + target.pow(2).sum(1).unsqueeze(0) - 2.0 * source @ target.T
    return cost.clamp_min_(0.0)


#: Largest spread ``max(-C/ε) - min(-C/ε)`` (in nats) for which :func:`sinkhorn` uses the
#: scaling-vector form; beyond it every kernel entry could no longer be represented
#: safely in float32 and the log-domain iterations are used.
SCALING_MAX_SPREAD = 40.0


@torch.no_grad()
def sinkhorn(cost: torch.Tensor, epsilon: float = 5.0, n_iters: int = 10, log_domain: bool | None = None) -> torch.Tensor:
    """SwAV-style Sinkhorn plan for ``cost (R, C)`` -> ``(R, C)``, stable for any ``cost/ε``; no gradient.

    The iterates are those of :func:`sinkhorn_plain`, written as ``P = r·diag(u) K diag(v)``
    (``K = exp(-C/ε)``). ``log_domain=True`` runs them on log-potentials
    (``f = log u``, ``g = log v``, one ``logsumexp`` per row/column update), which never
    under- or overflows. ``None`` (default) picks the scaling-vector form (matrix-vector
    products on the max-shifted kernel, several times faster on CPU) when the kernel's
    spread ``max(-C/ε) - min(-C/ε)`` is at most :data:`SCALING_MAX_SPREAD` nats, so that
    no kernel entry or scaling factor leaves the float32 range, and the log domain
    otherwise. Both equal :func:`sinkhorn_plain` (up to rounding) wherever it is finite.
    """
    cost = cost.detach().float()
    r, c = cost.shape
    log_r, log_c = math.log(r), math.log(c)
    if n_iters <= 0:
        log_k = cost / (-float(epsilon))
        return torch.exp(log_k - torch.logsumexp(log_k.reshape(-1), 0) + log_r)
    # global min/max on a contiguous layout (a transposed cost, CI2MG's second direction, reduces
    # several times slower in its own layout); the elements are the same
    low, high = torch.aminmax(cost.T if cost.T.is_contiguous() and not cost.is_contiguous() else cost)
    if log_domain is None:
        log_domain = not bool((high - low) / float(epsilon) <= SCALING_MAX_SPREAD)
    if not log_domain:
        # the max-shifted kernel exp(-(C - min C)/ε), entries in [e^-40, 1], built in one buffer
        k = torch.sub(cost, low).mul_(-1.0 / float(epsilon)).exp_()
        v = torch.ones(c, dtype=k.dtype, device=k.device)
        for _ in range(int(n_iters)):
            u = 1.0 / (r * (k @ v))
            v = 1.0 / (c * (u @ k))
        k *= u.unsqueeze(1) * r
        k *= v.unsqueeze(0)
        return k
    log_k = cost / (-float(epsilon))
    g = torch.zeros(c, dtype=log_k.dtype, device=log_k.device)
    for _ in range(int(n_iters)):
        f = -torch.logsumexp(log_k + g.unsqueeze(0), dim=1) - log_r
        g = -torch.logsumexp(log_k + f.unsqueeze(1), dim=0) - log_c
    log_k += f.unsqueeze(1)
    log_k += g.unsqueeze(0) + log_r
    return log_k.exp_()


@torch.no_grad()
def sinkhorn_plain(cost: torch.Tensor, epsilon: float = 5.0, n_iters: int = 10) -> torch.Tensor:
    """The literal (probability-domain) SwAV Sinkhorn; underflows for large ``cost/ε``."""
    p = torch.exp(-cost.detach().float() / float(epsilon))
    p = p / p.sum()
    r, c = p.shape
    for _ in range(int(n_iters)):
        p = p / p.sum(dim=1, keepdim=True) / r
        p = p / p.sum(dim=0, keepdim=True) / c
    return p * r


@register_block("sinkhorn_transport")
class SinkhornTransport(nn.Module):
    """Transport plan between two point sets (CI2MG eq. 6-9), no gradient.

    ``forward(source, target)`` returns ``T = sinkhorn(‖source_i - target_j‖², ε, n_iters)``;
    the barycentric map of the target features is then ``T @ target``.

    Shapes: ``source (R, d)``, ``target (C, d)`` -> ``(R, C)`` with rows summing to
    about 1 and, for ``R = C``, columns summing to 1. Memory ``O(R·C)``.
    """

    relations = ()

    def __init__(self, epsilon: float = 5.0, n_iters: int = 10, log_domain: bool | None = None) -> None:
        super().__init__()
        self.epsilon = float(epsilon)
        self.n_iters = int(n_iters)
        self.log_domain = log_domain

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.from_cost(squared_cost(source.detach(), target.detach()))

    def from_cost(self, cost: torch.Tensor) -> torch.Tensor:
        """The plan for a given cost matrix ``(R, C)`` (e.g. the transpose of another direction's)."""
        return sinkhorn(cost, self.epsilon, self.n_iters, self.log_domain)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, n_iters={self.n_iters}, log_domain={self.log_domain}"
