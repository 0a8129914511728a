"""Fast weighted message passing ``out[dst] = Σ_e w_e h[src_e]`` on one relation of a heterograph.

DGL's ``u_mul_e_sum`` (gspmm) is the reference. On CPU, PyTorch's CSR sparse-dense
product is several times faster for the fixed-weight relations graphrec propagates over
(user-item edges, kNN edges), so :func:`u_mul_e_sum` caches the relation as a pair of CSR
matrices (``A`` and ``Aᵀ`` for the backward pass) on first use and multiplies with them.
It falls back to DGL when the edge weights need a gradient (e.g. attention blocks).

The cache is keyed by the graph object, relation and weight tensor (including its
in-place version counter), so editing ``edata`` in place or building a new graph
invalidates it.
"""

from __future__ import annotations

import warnings
import weakref

import dgl
import dgl.ops
import torch

_CACHE: "weakref.WeakKeyDictionary[dgl.DGLGraph, dict]" = weakref.WeakKeyDictionary()


class _CSRMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, at: torch.Tensor, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.at = at
        return torch.sparse.mm(a, h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, None, torch.sparse.mm(ctx.at, grad.contiguous())


#: cached weight tensors per (graph, relation); a model may propagate one relation with several
#: weights (DGMRec: symmetric LightGCN weights and mean-aggregation weights on ``ui``/``iu``)
MAX_WEIGHTS_PER_RELATION = 4


def _matrices(g: dgl.DGLGraph, etype, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    per_graph = _CACHE.setdefault(g, {})
    key = (etype, weight.data_ptr(), weight._version, weight.device)
    hit = per_graph.get(key)
    if hit is not None:
        return hit[0], hit[1]
    src, dst = g.edges(etype=etype)
    srctype, _, dsttype = g.to_canonical_etype(etype)
    n_src, n_dst = g.num_nodes(srctype), g.num_nodes(dsttype)
    w = weight.detach().float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        a = torch.sparse_coo_tensor(torch.stack([dst, src]), w, (n_dst, n_src)).coalesce().to_sparse_csr()
        at = torch.sparse_coo_tensor(torch.stack([src, dst]), w, (n_src, n_dst)).coalesce().to_sparse_csr()
    for k in [k for k in per_graph if k[0] == etype and k[1] == key[1]]:
        del per_graph[k]  # older versions of this weight tensor
    others = [k for k in per_graph if k[0] == etype]  # insertion order: oldest first
    for k in others[: max(0, len(others) - MAX_WEIGHTS_PER_RELATION + 1)]:
        del per_graph[k]  # the oldest weights beyond the cap
    # the entry holds the weight tensor itself, so its memory cannot be reused by another tensor
    # (whose data_ptr would then match this key) while the entry lives
    per_graph[key] = (a, at, weight.detach())
    return a, at


def u_mul_e_sum(g: dgl.DGLGraph, etype, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(n_dst, d)`` sum over in-edges of ``weight_e * h[src_e]`` for relation ``etype``.

    Same result as ``dgl.ops.u_mul_e_sum(g[etype], h, weight)``; ``h`` is ``(n_src, d)``.
    """
    if weight.requires_grad or h.dim() != 2 or g.num_edges(etype) == 0:
        return dgl.ops.u_mul_e_sum(g[etype], h, weight)
    a, at = _matrices(g, etype, weight)
    if h.dtype != torch.float32:
        return dgl.ops.u_mul_e_sum(g[etype], h, weight)
    return _CSRMatmul.apply(a, at, h)
