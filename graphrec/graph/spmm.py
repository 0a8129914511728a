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
  :func:`torch_u_mul_e_sum` with one weight per edge and a 2-D ``h`` multiplies a CSR matrix
  holding the current weights instead (``_WeightedSpMM``: the CSR structure of ``A`` and ``Aᵀ`` is
  cached per relation, the values are the weights of the call; ``∂/∂w_e = <∂out[dst_e], h[src_e]>``),
  which avoids the ``(E, d)`` message tensor and its ``index_add_``: about 2.5× faster on CPU.

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


def csr_matmul(a: torch.Tensor, at: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``A @ h`` for a sparse CSR ``A`` ``(n, m)`` and dense ``h`` ``(m, d)``, differentiable in ``h``
    (the backward multiplies ``at`` = ``Aᵀ`` as CSR ``(m, n)``, built by the caller); ``(n, d)``."""
    return _CSRMatmul.apply(a, at, h)


class _WeightedSpMM(torch.autograd.Function):
    """``out = A(w) @ h`` with ``A[dst_e, src_e] = w_e``; gradients for ``h`` and ``w``."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, structure: tuple) -> torch.Tensor:  # type: ignore[override]
        perm, crow, col, _, _, _, _, _, n_src, n_dst, _ = structure
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            a = torch.sparse_csr_tensor(crow, col, w[perm].to(h.dtype), (n_dst, n_src))
        ctx.save_for_backward(h, w)
        ctx.structure = structure
        return torch.sparse.mm(a, h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        h, w = ctx.saved_tensors
        _, _, _, perm_t, crow_t, col_t, _, _, n_src, n_dst, _ = ctx.structure
        grad = grad.contiguous()
        grad_h = grad_w = None
        if ctx.needs_input_grad[0]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                at = torch.sparse_csr_tensor(crow_t, col_t, w[perm_t].to(h.dtype), (n_src, n_dst))
            grad_h = torch.sparse.mm(at, grad)
        if ctx.needs_input_grad[1]:
            grad_w = _sampled_dots(ctx.structure, h, grad).to(w.dtype)  # <grad[dst_e], h[src_e]>
        return grad_h, grad_w, None


def _sampled_dots(structure: tuple, h_src: torch.Tensor, h_dst: torch.Tensor) -> torch.Tensor:
    """``(E,)`` ``<h_src[src_e], h_dst[dst_e]>`` in edge order (a sampled dense-dense product)."""
    _, crow, col, _, _, _, _, _, n_src, n_dst, inverse = structure
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(crow, col, h_src.new_zeros(len(col)), (n_dst, n_src))
        return torch.sparse.sampled_addmm(pattern, h_dst.contiguous(), h_src.T, beta=0.0).values()[inverse]


class _EdgeDot(torch.autograd.Function):
    """``(E,)`` ``<h_src[src_e], h_dst[dst_e]>``; the backward is two sparse products with the edge gradients."""

    @staticmethod
    def forward(ctx, h_src: torch.Tensor, h_dst: torch.Tensor, structure: tuple) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(h_src, h_dst)
        ctx.structure = structure
        return _sampled_dots(structure, h_src, h_dst)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        h_src, h_dst = ctx.saved_tensors
        perm, crow, col, perm_t, crow_t, col_t, _, _, n_src, n_dst, _ = ctx.structure
        grad_src = grad_dst = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if ctx.needs_input_grad[0]:
                grad_src = torch.sparse.mm(torch.sparse_csr_tensor(crow_t, col_t, grad[perm_t], (n_src, n_dst)), h_dst)
            if ctx.needs_input_grad[1]:
                grad_dst = torch.sparse.mm(torch.sparse_csr_tensor(crow, col, grad[perm], (n_dst, n_src)), h_src)
        return grad_src, grad_dst, None


def edge_dot(g: dgl.DGLGraph, etype, h_src: torch.Tensor, h_dst: torch.Tensor) -> torch.Tensor:
    """``(E,)`` dot products ``<h_src[src_e], h_dst[dst_e]>`` over the edges of ``etype`` (edge order).

    ``h_src (n_src, d)``, ``h_dst (n_dst, d)``. Computed as a sampled product over the relation's CSR
    pattern (no ``(E, d)`` tensors; the backward is two sparse products), or with a gather where the
    relation has parallel edges or the dtypes differ; same values up to float rounding.
    """
    if h_src.dim() == 2 and h_src.is_floating_point() and h_src.dtype == h_dst.dtype:
        structure = _edge_structure(g, etype, h_src.device)
        if structure is not None:
            return _EdgeDot.apply(h_src, h_dst, structure)
    src, dst = edge_index(g, etype, h_src.device)
    return (h_src[src] * h_dst[dst]).sum(1)


def _edge_structure(g: dgl.DGLGraph, etype, device: torch.device) -> tuple | None:
    """The CSR structure of relation ``etype``'s ``A`` (rows = destinations) and ``Aᵀ`` with the edge
    permutations that order the weights; ``None`` when the relation has parallel edges (cached)."""
    per_graph = _INDEX.setdefault(g, {})
    key = ("csr-structure", g.to_canonical_etype(etype), device)
    if key in per_graph:
        return per_graph[key]
    src, dst = edge_index(g, etype, device)
    srctype, _, dsttype = g.to_canonical_etype(etype)
    n_src, n_dst = g.num_nodes(srctype), g.num_nodes(dsttype)
    out = None
    if len(src) and len(torch.unique(dst * n_src + src)) == len(src):
        perm = torch.argsort(dst, stable=True)
        perm_t = torch.argsort(src, stable=True)
        crow = torch.zeros(n_dst + 1, dtype=torch.int64, device=device)
        crow[1:] = torch.cumsum(torch.bincount(dst, minlength=n_dst), 0)
        crow_t = torch.zeros(n_src + 1, dtype=torch.int64, device=device)
        crow_t[1:] = torch.cumsum(torch.bincount(src, minlength=n_src), 0)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(len(perm), device=device)
        out = (perm, crow, src[perm], perm_t, crow_t, dst[perm_t], src, dst, n_src, n_dst, inverse)
    per_graph[key] = out
    return out


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
    w = weight.to(h.device)
    if w.dim() == 1 and h.dim() == 2 and h.is_floating_point() and w.dtype == h.dtype:
        structure = _edge_structure(g, etype, h.device)
        if structure is not None:
            return _WeightedSpMM.apply(h, w, structure)
    src, dst = edge_index(g, etype, h.device)
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
