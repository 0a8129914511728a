"""Sampled mini-batch propagation: layer-mean embeddings of a batch's nodes from sampled blocks.

Full propagation computes every node's embedding at every batch, so an epoch costs about
``|E|^2 / B``. With ``propagation: sampled`` a batch computes only its seed nodes (its users,
positive and negative items): a sampler draws, from the seeds outwards, at most ``fanouts[l]``
in-neighbours per node and layer and returns one *block* (bipartite graph) per layer; messages
flow only along the sampled edges, so a batch costs ``O(B * prod(fanouts))`` whatever the size of
the graph and an epoch is linear in the number of interactions.

Two samplers (``sampler``, :class:`NeighbourSampler`): ``fast`` (default), graphrec's vectorised
torch sampler over the graph's CSC arrays on the embeddings' device (with replacement where the
degree exceeds the fan-out), and ``dgl``, DGL's :class:`dgl.dataloading.MultiLayerNeighborSampler`
on the CPU (without replacement). Both return the same :class:`SampledBlocks`.

Weights: every sampled edge keeps its weight from the **full** graph (LightGCN's
``1/sqrt(deg_u deg_i)`` with the full graph's degrees). With ``rescale`` (the default) the
messages into a node that kept ``k`` of its ``D`` in-edges are multiplied by ``D / k``, so the
sampled sum is an unbiased estimate of the full one (``k = D`` when the fan-out is at least the
node's degree, so nothing changes then). With fan-outs at least the maximum degree, sampled
propagation equals full propagation exactly.

Layer mean: a block's destination nodes come first among its source nodes (as in DGL), so the
seeds are the first rows at every layer and ``h^(l)[:n_seeds]`` is the seeds' layer-``l`` embedding.

Each layer is a gather (``index_select``) and a scatter-add (``index_add_``) along the sampled
edges on the embeddings' device.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import dgl
import torch

from graphrec.errors import GraphrecError
from graphrec.graph.heterograph import IU, UI
from graphrec.graph.spmm import csr_matmul

#: fan-out per layer when the config gives none (``fanouts: null``)
DEFAULT_FANOUT = 10


def resolve_fanouts(value: Any, n_layers: int, model: str) -> list[int]:
    """The per-layer fan-outs of config key ``fanouts``: ``None`` -> ``[10] * n_layers``, an int ``k`` ->
    ``[k] * n_layers``, a list of ``n_layers`` positive ints as it is. ``-1`` = all neighbours.

    ``fanouts[0]`` is the input-side (outermost) layer, as in DGL. One-line :class:`GraphrecError` otherwise.
    """
    if value is None:
        return [DEFAULT_FANOUT] * n_layers
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * n_layers
    if not isinstance(value, (list, tuple)) or not all(isinstance(k, int) and not isinstance(k, bool) for k in value):
        raise GraphrecError(f"{model}: 'fanouts' must be a positive integer or a list of {n_layers} (one per layer), got {value!r}")
    if len(value) != n_layers:
        raise GraphrecError(f"{model}: 'fanouts' {list(value)!r} has {len(value)} entries for {n_layers} layers (n_layers); give one per layer")
    if any(k == 0 or k < -1 for k in value):
        raise GraphrecError(f"{model}: 'fanouts' must hold positive integers (or -1 = all neighbours), got {list(value)!r}")
    return [int(k) for k in value]


def check_propagation(value: Any, model: str) -> str:
    """``'full'`` or ``'sampled'``; a one-line :class:`GraphrecError` for anything else."""
    if value not in ("full", "sampled"):
        raise GraphrecError(f"{model}: 'propagation' must be 'full' or 'sampled', got {value!r}")
    return str(value)


@dataclass
class SampledBlocks:
    """The sampled computation graph of one batch.

    Attributes:
        input_nodes: ``(n_in,)`` int64 node ids whose ego embeddings enter the first layer.
        n_seeds: the seeds are the first ``n_seeds`` nodes at every layer.
        layers: per layer, input side first: ``(src, dst, w, n_dst)`` with ``src``/``dst`` ``(e,)``
            int64 local indices and ``w`` ``(e,)`` float32 weights (rescaled), on the target device.
    """

    input_nodes: torch.Tensor
    n_seeds: int
    layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]

    #: per layer ``(layer, n_src, (A, Aᵀ))``: the CSR matrices :meth:`step` built (rebuilt when ``layers[i]`` is replaced)
    _matrices: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_edges(self) -> int:
        return sum(len(src) for src, _, _, _ in self.layers)

    def step(self, i: int, h: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """:func:`layer_step` of layer ``i`` (``(n_src, d)`` -> ``(n_dst, d)``) with the layer's CSR matrices
        built once per batch, however often the layer is propagated (DGMRec: per modality and table)."""
        layer = self.layers[i]
        hit = self._matrices.get(i)
        if hit is None or hit[0] is not layer or hit[1] != len(h):
            hit = self._matrices[i] = (layer, len(h), block_matrices(layer, len(h)))
        return layer_step(h, layer, base, hit[2])


#: the neighbour samplers of config key ``sampler`` (:func:`check_sampler`)
SAMPLERS = ("fast", "dgl")
#: the default sampler, chosen by measurement (docs/scaling.md, "Sampled propagation")
DEFAULT_SAMPLER = "fast"


def check_sampler(value: Any, model: str) -> str:
    """``'fast'`` (graphrec's vectorised sampler) or ``'dgl'`` (DGL's ``MultiLayerNeighborSampler``);
    ``None`` -> :data:`DEFAULT_SAMPLER`; a one-line :class:`GraphrecError` for anything else."""
    if value is None:
        return DEFAULT_SAMPLER
    if value not in SAMPLERS:
        raise GraphrecError(f"{model}: 'sampler' must be 'fast' or 'dgl', got {value!r}")
    return str(value)


class NeighbourSampler:
    """Samples blocks of a weighted homogeneous graph for a batch of seed nodes.

    Args:
        src, dst: ``(E,)`` int64 edges ``src -> dst`` (messages flow to ``dst``).
        weight: ``(E,)`` float32 full-graph edge weights.
        n_nodes: number of nodes.
        fanouts: in-edges kept per node and layer, input side first (``-1`` = all).
        rescale: multiply the messages into a node by ``full in-degree / sampled in-degree``.
        sampler: ``"fast"`` (default, :data:`DEFAULT_SAMPLER`) or ``"dgl"``.

    ``"dgl"``: DGL's :class:`~dgl.dataloading.MultiLayerNeighborSampler` on a CPU DGL graph, **without**
    replacement (a node of in-degree ``D > f`` keeps ``f`` distinct in-edges, weights x ``D / f``);
    randomness from DGL's RNG (``dgl.seed``; the trainer reseeds it every epoch).

    ``"fast"``: vectorised torch over the graph's CSC arrays (``indptr`` ``(n+1,)``, in-edge sources and
    weights sorted by destination), on the device of the embeddings (copied there on first use). A node
    of in-degree ``D <= f`` (or ``f = -1``) keeps all its in-edges, weight unchanged; a node with
    ``D > f`` draws ``f`` in-edges uniformly **with replacement** (``torch.rand`` x ``D``, floor), each
    weighted x ``D / f`` (with ``rescale``): the sampled sum is unbiased (every draw's expectation is
    ``1/f`` of the full sum) and a batch costs ``O(sampled edges)`` tensor operations, no per-node
    Python or C++ loop. Randomness from torch's global generator of that device (``torch.manual_seed``;
    its state is in ``resume.pt``, so a resumed run is bit-identical). Destination nodes come first
    among a layer's source nodes, in order, as in DGL's blocks.
    """

    def __init__(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        weight: torch.Tensor,
        n_nodes: int,
        fanouts: list[int],
        rescale: bool = True,
        sampler: str = DEFAULT_SAMPLER,
    ) -> None:
        self.kind = check_sampler(sampler, "sampling")
        self.n_nodes = int(n_nodes)
        self.fanouts = list(fanouts)
        self.rescale = bool(rescale)
        src, dst = src.long().cpu(), dst.long().cpu()
        self.weight = weight.detach().float().cpu()
        self._graph: dgl.DGLGraph | None = None
        if self.kind == "dgl":
            self._graph = dgl.graph((src, dst), num_nodes=self.n_nodes, idtype=torch.int64)
            self.in_degree = self._graph.in_degrees().float()
            self.sampler = dgl.dataloading.MultiLayerNeighborSampler(self.fanouts)
        else:
            self._src, self._dst = src, dst  # kept only until the DGL graph is asked for (graph)
            order = torch.argsort(dst, stable=True)
            counts = torch.bincount(dst, minlength=self.n_nodes)
            self.in_degree = counts.float()
            indptr = torch.zeros(self.n_nodes + 1, dtype=torch.int64)
            torch.cumsum(counts, 0, out=indptr[1:])
            self._csc = (indptr, src[order], self.weight[order])
            self._on: dict[str, tuple[torch.Tensor, ...]] = {}

    @property
    def graph(self) -> dgl.DGLGraph:
        """The sampling graph as a CPU DGL graph (built on first access with ``sampler="fast"``)."""
        if self._graph is None:
            self._graph = dgl.graph((self._src, self._dst), num_nodes=self.n_nodes, idtype=torch.int64)
        return self._graph

    def sample(self, seeds: torch.Tensor, device: torch.device | str) -> SampledBlocks:
        """Blocks for ``(S,)`` unique int64 ``seeds`` (they stay first, in this order), tensors on ``device``."""
        if self.kind == "fast":
            return self._sample_fast(seeds, torch.device(device))
        input_nodes, _, blocks = self.sampler.sample(self.graph, seeds.cpu())
        layers = []
        for block in blocks:
            src, dst = block.edges()
            w = self.weight[block.edata[dgl.EID]]
            if self.rescale:
                full = self.in_degree[block.dstdata[dgl.NID]]
                kept = block.in_degrees().float().clamp(min=1.0)
                w = w * (full / kept)[dst]
            layers.append((src.to(device), dst.to(device), w.to(device), block.num_dst_nodes()))
        return SampledBlocks(input_nodes, len(seeds), layers)

    def _arrays(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """``(indptr, indices, weights, local)`` on ``device``; ``local``: ``(n,)`` int64 scratch, all -1."""
        key = str(device)
        if key not in self._on:
            indptr, indices, w = self._csc
            local = torch.full((self.n_nodes,), -1, dtype=torch.int64, device=device)
            self._on[key] = (indptr.to(device), indices.to(device), w.to(device), local)
        return self._on[key]

    def _sample_fast(self, seeds: torch.Tensor, device: torch.device) -> SampledBlocks:
        indptr, indices, weights, local = self._arrays(device)
        nodes = seeds.to(device).long()
        layers = []
        for fanout in reversed(self.fanouts):  # from the seeds outwards; blocks are returned input side first
            n_dst = len(nodes)
            start = indptr.index_select(0, nodes)
            deg = indptr.index_select(0, nodes + 1) - start
            keep_all = torch.ones_like(deg, dtype=torch.bool) if fanout < 0 else deg <= fanout
            # nodes keeping all their in-edges: expand their CSC ranges
            rows_a = keep_all.nonzero().squeeze(1)
            cnt = deg.index_select(0, rows_a)
            dst_a = torch.repeat_interleave(rows_a, cnt)
            shift = (start.index_select(0, rows_a) - (torch.cumsum(cnt, 0) - cnt)).repeat_interleave(cnt)
            pos = torch.arange(len(dst_a), device=device) + shift
            w = weights.index_select(0, pos)
            dst_l = dst_a
            # nodes with more in-edges than the fan-out: f draws with replacement, weight x D / f
            rows_s = (~keep_all).nonzero().squeeze(1)
            if len(rows_s):
                deg_s = deg.index_select(0, rows_s)
                draw = torch.rand((len(rows_s), fanout), device=device, dtype=torch.float64)
                off = draw.mul_(deg_s.unsqueeze(1)).long().clamp_(max=(deg_s - 1).unsqueeze(1))
                pos_s = off.add_(start.index_select(0, rows_s).unsqueeze(1)).reshape(-1)
                w_s = weights.index_select(0, pos_s)
                if self.rescale:
                    w_s = (w_s.view(-1, fanout) * (deg_s.float() / fanout).unsqueeze(1)).reshape(-1)
                dst_l = torch.cat([dst_a, rows_s.repeat_interleave(fanout)])
                pos = torch.cat([pos, pos_s])
                w = torch.cat([w, w_s])
            src_global = indices.index_select(0, pos)
            # relabel: the destination nodes first (in order), then the new source nodes by first occurrence;
            # ``local`` (all -1 between calls) maps global ids to local ones, no sort needed
            local.index_copy_(0, nodes, torch.arange(n_dst, device=device))
            cand = src_global[local.index_select(0, src_global) < 0]
            order = torch.arange(len(cand), device=device)
            local.index_fill_(0, cand, len(cand))
            local.scatter_reduce_(0, cand, order, reduce="amin")  # first occurrence of each new node
            new = cand[local.index_select(0, cand) == order]
            local.index_copy_(0, new, torch.arange(n_dst, n_dst + len(new), device=device))
            src_l = local.index_select(0, src_global)
            nodes = torch.cat([nodes, new])
            local.index_fill_(0, nodes, -1)
            layers.append((src_l, dst_l, w, n_dst))
        layers.reverse()
        return SampledBlocks(nodes, len(seeds), layers)


def block_matrices(
    layer: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int], n_src: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, Aᵀ)``: a block layer ``(src, dst, w, n_dst)`` as sparse CSR matrices, ``A`` ``(n_dst, n_src)``
    with ``A[v, u]`` = the weights of the edges ``u -> v`` (parallel edges are kept as separate entries,
    so they add up), and its transpose for the backward pass. Entries keep the edge order within a row
    (stable sorts), the order in which :func:`layer_step`'s reference sum adds them."""
    src, dst, w, n_dst = layer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return _csr(dst, src, w, n_dst, n_src), _csr(src, dst, w, n_src, n_dst)


def _csr(rows: torch.Tensor, cols: torch.Tensor, w: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
    order = torch.argsort(rows, stable=True)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=n_rows), 0, out=crow[1:])
    return torch.sparse_csr_tensor(crow, cols.index_select(0, order), w.index_select(0, order), (n_rows, n_cols))


def layer_step(
    h: torch.Tensor,
    layer: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int],
    base: torch.Tensor | None = None,
    matrices: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One block's weight-free message passing: ``(n_src, d)`` rows ``h`` -> ``(n_dst, d)``.

    ``h'[v] = base[v] + sum over the block's edges (u -> v) of w_uv h[u]`` for ``layer = (src, dst, w, n_dst)``
    (an entry of :attr:`SampledBlocks.layers`); ``base``: ``(n_dst, d)`` rows to add the messages to
    (``None``: zeros; a fresh tensor, it is written in place). The one step of :func:`propagate_blocks` and
    of DGMRec's sampled forward (:mod:`graphrec.models.dgmrec_sampled`).

    Computed as the sparse product ``A h`` (backward ``Aᵀ g``) with the layer's CSR matrices
    (:func:`block_matrices`; ``matrices``: built already, e.g. by :meth:`SampledBlocks.step`): no
    ``(E, d)`` message tensor forward or backward: the blocks' share of a sampled DGMRec step fell from
    34 % (gather-multiply-``index_add_``) to ~15 %, the step by ~9 % (docs/scaling.md, "Where a sampled
    step goes"). Same sums up to float rounding. The gather form remains for rows whose dtype differs from the weights'.
    """
    src, _, w, _ = layer
    if len(src) and h.dim() == 2 and h.is_floating_point() and h.dtype == w.dtype and h.layout == torch.strided:
        a, at = block_matrices(layer, len(h)) if matrices is None else matrices
        out = csr_matmul(a, at, h)
        return out if base is None else base.add_(out)
    return gather_step(h, layer, base)


def gather_step(
    h: torch.Tensor, layer: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int], base: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`layer_step` as gather, multiply, ``index_add_`` (an ``(E, d)`` message tensor): the reference the
    sparse product is tested against, and the form for rows whose dtype differs from the weights'."""
    src, dst, w, n_dst = layer
    msg = h.index_select(0, src).mul_(w.unsqueeze(1))  # in place: one (e, d) buffer per layer, not two
    if base is None:
        base = torch.zeros((n_dst, h.shape[1]), dtype=h.dtype, device=h.device)
    return base.index_add_(0, dst, msg)


def propagate_blocks(blocks: SampledBlocks, ego: torch.Tensor) -> torch.Tensor:
    """Mean of layers ``0..L`` for the seeds: ``(n_in, d)`` ego embeddings of ``blocks.input_nodes`` -> ``(S, d)``.

    Each layer is ``h'[v] = sum over sampled in-edges (u -> v) of w_uv h[u]`` (weight-free, as LightGCN;
    :func:`layer_step`).
    """
    h = ego
    acc = ego[: blocks.n_seeds]
    for i in range(len(blocks.layers)):
        h = blocks.step(i, h)
        acc = acc + h[: blocks.n_seeds]
    return acc / (len(blocks.layers) + 1)


def lookup(table: torch.Tensor, rows: torch.Tensor, sparse: bool = False) -> torch.Tensor:
    """``(n, d)`` rows of a ``(R, d)`` table; with ``sparse`` its gradient is a sparse tensor of those rows
    (an optimiser step then costs ``O(n d)``, not ``O(R d)``)."""
    if sparse:
        return torch.nn.functional.embedding(rows.to(table.device), table, sparse=True)
    return table.index_select(0, rows.to(table.device))


class UserItemSampler:
    """Sampled LightGCN propagation on the user-item relations of a heterograph.

    Nodes of the homogeneous sampling graph: users ``0..U-1``, items ``U..U+N-1``; edges both ways
    with the heterograph's ``ui``/``iu`` weights ``edata[weight]`` (``w``: symmetric, ``w_mean``: mean).

    Shapes: :meth:`batch` maps ``(B,)`` users and any number of ``(B,)`` item tensors to ``(B, d)``
    layer-mean embeddings, computed from the ``(U, d)``/``(N, d)`` ego tables.
    """

    def __init__(
        self, g: dgl.DGLGraph, fanouts: list[int], weight: str = "w", rescale: bool = True, sampler: str = DEFAULT_SAMPLER
    ) -> None:
        self.n_users = g.num_nodes("user")
        self.n_items = g.num_nodes("item")
        u, i = g.edges(etype=UI)
        iu_src, iu_dst = g.edges(etype=IU)
        src = torch.cat([u, iu_src + self.n_users])
        dst = torch.cat([i + self.n_users, iu_dst])
        w = torch.cat([g.edges[UI].data[weight], g.edges[IU].data[weight]])
        self.sampler = NeighbourSampler(src, dst, w, self.n_users + self.n_items, fanouts, rescale, sampler)

    def ego(self, nodes: torch.Tensor, user_emb: torch.Tensor, item_emb: torch.Tensor, sparse: bool = False) -> torch.Tensor:
        """``(n, d)`` ego embeddings of sampling-graph ``nodes`` (users first, then items offset by U).

        ``sparse``: the tables get sparse (row-wise) gradients, for :class:`torch.optim.SparseAdam`."""
        nodes = nodes.to(user_emb.device)
        is_user = nodes < self.n_users
        pos_u = is_user.nonzero().squeeze(1)
        pos_i = (~is_user).nonzero().squeeze(1)
        out = torch.zeros((len(nodes), user_emb.shape[1]), dtype=user_emb.dtype, device=user_emb.device)
        out.index_copy_(0, pos_u, lookup(user_emb, nodes[pos_u], sparse))  # in place: one (n, d) buffer, not three
        return out.index_copy_(0, pos_i, lookup(item_emb, nodes[pos_i] - self.n_users, sparse))

    def batch(
        self, user_emb: torch.Tensor, item_emb: torch.Tensor, users: torch.Tensor, *items: torch.Tensor, sparse: bool = False
    ) -> list[torch.Tensor]:
        """``[(B, d) users, (B_k, d) per item tensor]``: sampled layer-mean embeddings of the batch's nodes."""
        device = user_emb.device
        parts = [users.cpu()] + [t.cpu() + self.n_users for t in items]
        seeds, inverse = torch.unique(torch.cat(parts), return_inverse=True)
        blocks = self.sampler.sample(seeds, device)
        out = propagate_blocks(blocks, self.ego(blocks.input_nodes, user_emb, item_emb, sparse))
        rows = inverse.to(device).split([len(p) for p in parts])
        return [out.index_select(0, r) for r in rows]
