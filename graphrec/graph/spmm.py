"""Weighted message passing ``out[dst] = Σ_e w_e h[src_e]`` on one relation of a heterograph.

The heterograph (a DGLGraph) is the data model and stays on the CPU; message passing runs
where the features ``h`` are (the model's device), with tensors derived from the graph:

* fixed edge weights (user-item edges, kNN edges; float32 ``h``): the relation is cached as a
  pair of CSR matrices (``A`` and ``Aᵀ`` for the backward pass) built from the graph's edges
  and **moved to ``h``'s device**, and multiplied with ``torch.sparse.mm``. On CPU this is
  several times faster than DGL's gspmm; on a GPU it is cuSPARSE, so DGL's CPU-only build
  from the package registry is enough.
* edge weights that need a gradient (attention blocks), or other dtypes: DGL's
  ``u_mul_e_sum`` where DGL has a kernel for the device (the graph's own device: the CPU),
  else the same sum with torch operations (a gather of ``h[src]`` and ``index_add_`` into
  ``dst``) on ``h``'s device, with the edge indices cached there (:func:`edge_index`).

The CSR cache is keyed by the graph object, relation, device and weight tensor (including
its in-place version counter), so editing ``edata`` in place or building a new graph
invalidates it.
"""

from __future__ import annotations

import warnings
import weakref

import dgl
import dgl.ops
import torch

_CACHE: "weakref.WeakKeyDictionary[dgl.DGLGraph, dict]" = weakref.WeakKeyDictionary()
_INDEX: "weakref.WeakKeyDictionary[dgl.DGLGraph, dict]" = weakref.WeakKeyDictionary()


class _CSRMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, at: torch.Tensor, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.at = at
        return torch.sparse.mm(a, h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, None, torch.sparse.mm(ctx.at, grad.contiguous())


#: cached weight tensors per (graph, relation, device); a model may propagate one relation with several
#: weights (DGMRec: symmetric LightGCN weights and mean-aggregation weights on ``ui``/``iu``)
MAX_WEIGHTS_PER_RELATION = 4


def dgl_runs_on(g: dgl.DGLGraph, device: torch.device) -> bool:
    """Whether DGL's own kernels can propagate features on ``device`` over ``g``: only on the
    graph's device (graphrec keeps the graph on the CPU; DGL from the package registry is CPU-only)."""
    return torch.device(device) == g.device


def edge_index(g: dgl.DGLGraph, etype, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(src, dst)`` int64 edge indices of relation ``etype`` on ``device`` (cached per graph).

    For blocks that compute their own (e.g. learnable) edge weights with torch operations
    on the model's device while the graph stays on the CPU. Shapes: ``(E,), (E,)``.
    """
    device = torch.device(device)
    per_graph = _INDEX.setdefault(g, {})
    key = (g.to_canonical_etype(etype), device)
    hit = per_graph.get(key)
    if hit is None:
        src, dst = g.edges(etype=etype)
        hit = per_graph[key] = (src.to(device=device, dtype=torch.int64), dst.to(device=device, dtype=torch.int64))
    return hit


def _matrices(g: dgl.DGLGraph, etype, weight: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    per_graph = _CACHE.setdefault(g, {})
    key = (etype, weight.data_ptr(), weight._version, weight.device, device)
    hit = per_graph.get(key)
    if hit is not None:
        return hit[0], hit[1]
    src, dst = g.edges(etype=etype)
    srctype, _, dsttype = g.to_canonical_etype(etype)
    n_src, n_dst = g.num_nodes(srctype), g.num_nodes(dsttype)
    w = weight.detach().float()
    src, dst = src.to(w.device), dst.to(w.device)  # weights computed on the model's device (e.g. under no_grad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        a = torch.sparse_coo_tensor(torch.stack([dst, src]), w, (n_dst, n_src)).coalesce().to_sparse_csr()
        at = torch.sparse_coo_tensor(torch.stack([src, dst]), w, (n_src, n_dst)).coalesce().to_sparse_csr()
        if a.device != device:  # built where the weights are (the graph's edata: the CPU), then moved
            a, at = a.to(device), at.to(device)
    for k in [k for k in per_graph if k[0] == etype and k[1] == key[1] and k[4] == device]:
        del per_graph[k]  # older versions of this weight tensor
    others = [k for k in per_graph if k[0] == etype and k[4] == device]  # insertion order: oldest first
    for k in others[: max(0, len(others) - MAX_WEIGHTS_PER_RELATION + 1)]:
        del per_graph[k]  # the oldest weights beyond the cap
    # the entry holds the weight tensor itself, so its memory cannot be reused by another tensor
    # (whose data_ptr would then match this key) while the entry lives
    per_graph[key] = (a, at, weight.detach())
    return a, at


def torch_u_mul_e_sum(g: dgl.DGLGraph, etype, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """:func:`u_mul_e_sum` with torch operations on ``h``'s device (any dtype, gradients for ``weight``).

    ``weight`` is ``(E,)`` or ``(E, ...)`` broadcastable against ``h[src]``; it is moved to
    ``h``'s device if it lives elsewhere (e.g. the graph's ``edata`` on the CPU).
    """
    src, dst = edge_index(g, etype, h.device)
    w = weight.to(h.device)
    if w.dim() == 1 and h.dim() > 1:
        w = w.view(-1, *([1] * (h.dim() - 1)))
    msg = h.index_select(0, src) * w
    n_dst = g.num_nodes(g.to_canonical_etype(etype)[2])
    return torch.zeros((n_dst, *msg.shape[1:]), dtype=msg.dtype, device=h.device).index_add_(0, dst, msg)


def u_mul_e_sum(g: dgl.DGLGraph, etype, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(n_dst, d)`` sum over in-edges of ``weight_e * h[src_e]`` for relation ``etype``, on ``h``'s device.

    Same result as ``dgl.ops.u_mul_e_sum(g[etype], h, weight)``; ``h`` is ``(n_src, d)``.
    """
    native = dgl_runs_on(g, h.device)
    if weight.requires_grad or h.dim() != 2 or h.dtype != torch.float32 or g.num_edges(etype) == 0:
        if native:
            return dgl.ops.u_mul_e_sum(g[etype], h, weight)
        return torch_u_mul_e_sum(g, etype, h, weight)
    a, at = _matrices(g, etype, weight, h.device)
    return _CSRMatmul.apply(a, at, h)


def edge_softmax(g: dgl.DGLGraph, etype, logits: torch.Tensor) -> torch.Tensor:
    """Softmax of ``logits`` ``(E,)`` over each destination node's in-edges of ``etype``, on ``logits``' device.

    Same values as ``dgl.nn.functional.edge_softmax(g[etype], logits)`` computed with torch
    operations (per-destination max subtracted first), so it runs wherever the model does.
    Shapes: ``(E,)`` -> ``(E,)``.
    """
    _, dst = edge_index(g, etype, logits.device)
    n_dst = g.num_nodes(g.to_canonical_etype(etype)[2])
    shift = torch.full((n_dst,), float("-inf"), dtype=logits.dtype, device=logits.device)
    shift = shift.scatter_reduce(0, dst, logits.detach(), reduce="amax", include_self=True)
    e = (logits - shift[dst]).exp()
    total = torch.zeros(n_dst, dtype=logits.dtype, device=logits.device).index_add_(0, dst, e)
    return e / total[dst]
