"""DGMRec's sampled batch forward (``propagation: sampled``; docs/scaling.md, docs/models/dgmrec.md).

Full propagation (:meth:`DGMRec.propagate`) computes every user and item at every batch. The
sampled forward computes only what one batch's loss reads, from neighbourhoods drawn with the
samplers of :mod:`graphrec.graph.sampling`:

* **user-item branch** (LightGCN, ``n_ui_layers``): the batch's distinct users, positives and
  negatives on sampled blocks with ``fanouts`` (as ``lightgcn``'s sampled mode);
* **user aggregation** (eq. 6): each batch user's mean over at most ``aggregation_fanout`` of its
  train items (rescaled: the mean of the sampled items). ``T`` = the batch's items and these items;
* **item-item branch** (eq. 5, ``n_mm_layers`` hops of ``Ã_m``): ``G_m``, ``S_m`` of ``T`` from all
  their ``knn_<m>`` / ``refine_<m>`` in-neighbours per hop (``knn_k`` each, at most ``2 knn_k`` for
  refined rows: no sampling). ``X`` = the items these hops read;
* **preference gate** (eq. 2-3): ``ρ_i`` of ``X`` as the mean of ``π_u`` over at most
  ``gate_fanout`` (null: ``aggregation_fanout``) of item ``i``'s train users; the encoders run on
  the rows of ``X`` only.

A batch therefore costs ``O(B x aggregation_fanout x (knn_k + 1)^n_mm_layers x gate_fanout)``
plus the user-item blocks, whatever the size of the graph. With ``fanouts``,
``aggregation_fanout`` and ``gate_fanout`` at least the maximum degree, every row equals full propagation's
(``tests/test_dgmrec_sampled.py``).

Control variates (``sampled_control_variate``, default on): the sampled sums above are unbiased but
noisy, and DGMRec's losses are not linear in them (BPR, InfoNCE, the squared-norm regulariser), so the
noise costs accuracy (docs/scaling.md, "DGMRec sampled"). With control variates every sampled
aggregation is corrected by an exact one of the same quantities from the start of the epoch (VR-GCN,
Chen et al. 2018): ``h'_v = H'_v + Σ_(sampled u->v) w_uv (h_u - H_u)``, where ``H`` are the
no-grad full-propagation values of every node, refreshed once per epoch (:meth:`DGMRecSampler.refresh`,
one full forward) and ``H' = Ã H`` exactly. The estimate stays unbiased for any history, equals
``h'_v`` exactly where the node kept all its in-edges, and has zero variance while the parameters
equal the history's (``tests/test_dgmrec_sampled.py``); gradients still flow along sampled edges only.
Applied to the user-item layers (per layer), the preference gate and the user means; the item-item
hops are exact anyway. The history is derived state, not checkpointed: loading a model state
(``DGMRec.set_extra_state``: a checkpoint, or rank 0's broadcast after its per-epoch hook under
``--distributed``) forgets it (:meth:`DGMRecSampler.forget_history`) and the next batch recomputes it
from the loaded state, so every data-parallel rank holds the history of rank 0's state.

Data-parallel (``--distributed``): DGMRec's loss is replicated (``distributed_loss = "replicate"``:
every rank computes the whole global batch) and rank 0 broadcasts the torch RNG state after each
per-epoch hook, so every rank draws the same neighbourhoods and the update equals one process's
(``tests/test_distributed.py``); the ranks do not split the sampling work.

Randomness: the samplers (graphrec's ``fast`` sampler, the default of
:class:`~graphrec.graph.sampling.NeighbourSampler`) draw from torch's generator, so sampled runs are
reproducible from the seed and ``fit --resume`` continues them exactly (torch's RNG state is in
``resume.pt``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dgl
import torch

from graphrec.blocks.item_graph import ItemGraphConv
from graphrec.blocks.lightgcn import LightGCNConv, LightGCNMeanConv
from graphrec.errors import GraphrecError
from graphrec.graph.heterograph import knn_relation, refine_relation
from graphrec.graph.sampling import NeighbourSampler, SampledBlocks, UserItemSampler, lookup, resolve_fanouts

if TYPE_CHECKING:  # pragma: no cover
    from graphrec.models.dgmrec import DGMRec


def last_layer(blocks: SampledBlocks, h: torch.Tensor) -> torch.Tensor:
    """Sum-propagate ``(n_in, d)`` rows of ``blocks.input_nodes`` through every block; ``(n_seeds, d)``:
    the last layer only (no layer mean), ``h'[v] = Σ_(u->v) w_uv h[u]`` (:func:`~graphrec.graph.sampling.layer_step`)."""
    for i in range(len(blocks.layers)):
        h = blocks.step(i, h)
    return h[: blocks.n_seeds]


def layer_mean_cv(blocks: SampledBlocks, ego: torch.Tensor, history: list[torch.Tensor]) -> torch.Tensor:
    """Mean of layers ``0..L`` for the seeds with control variates; ``(n_seeds, d)``.

    ``ego``: ``(n_in, d)`` rows of ``blocks.input_nodes``; ``history[l]``: ``(n_nodes, d)`` exact
    layer-``l`` values of every node of the sampling graph (``history[0]`` the ego tables), no grad.
    Layer ``l + 1`` of a node ``v`` is ``history[l + 1][v] + Σ_(sampled u->v) w_uv (h^l_u - history[l][u])``.
    """
    ids = blocks.input_nodes.to(ego.device)
    h = ego
    acc = ego[: blocks.n_seeds]
    old = history[0].index_select(0, ids[: len(h)])
    for layer, step in enumerate(blocks.layers):
        delta = h - old
        old = history[layer + 1].index_select(0, ids[: step[3]])  # gathered once: this layer's base, the next one's history
        h = old + blocks.step(layer, delta)
        acc = acc + h[: blocks.n_seeds]
    return acc / (len(blocks.layers) + 1)


def _full_matrix(sampler: NeighbourSampler, device: torch.device) -> torch.Tensor:
    """The sampling graph's ``(n, n)`` weighted adjacency (row = destination) as a sparse CSR tensor."""
    indptr, indices, w = sampler._arrays(device)[:3]
    n = sampler.n_nodes
    return torch.sparse_csr_tensor(indptr, indices, w, size=(n, n), device=device)


def _check_fanout(name: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value == 0 or value < -1:
        raise GraphrecError(f"{name}: '{key}' must be a positive integer (or -1 = all), got {value!r}")
    return int(value)


def check_sampled_config(model: "DGMRec", config: dict[str, Any]) -> tuple[list[int], int, int]:
    """``(fanouts, aggregation_fanout, gate_fanout)`` of a sampled DGMRec (``gate_fanout`` null = the
    aggregation fan-out); one-line :class:`GraphrecError` for a bad combination."""
    name = model.name
    fanouts = resolve_fanouts(config.get("fanouts"), int(config["n_ui_layers"]), name)
    agg = _check_fanout(name, "aggregation_fanout", config.get("aggregation_fanout"))
    gate = config.get("gate_fanout")
    gate = agg if gate is None else _check_fanout(name, "gate_fanout", gate)
    if type(model.lightgcn.conv) not in (LightGCNConv, LightGCNMeanConv):
        raise GraphrecError(
            f"{name}: propagation=sampled needs a weight-free LightGCN layer as ui_block "
            f"(lightgcn_conv or lightgcn_mean_conv), got {config['ui_block']!r}"
        )
    if type(model.item_propagation.conv) is not ItemGraphConv:
        raise GraphrecError(f"{name}: propagation=sampled needs item_graph_block=item_graph_conv, got {config['item_graph_block']!r}")
    return fanouts, agg, gate


class DGMRecSampler:
    """The samplers of a sampled DGMRec (built on first use from ``model.graph``, on the CPU) and its batch forward.

    The item-item samplers are rebuilt when the model's training graph changes (refinement).
    """

    def __init__(
        self, model: "DGMRec", fanouts: list[int], aggregation_fanout: int, rescale: bool, control_variate: bool = False,
        gate_fanout: int | None = None, sparse: bool = False,
    ) -> None:
        self.model = model
        #: the ID and raw feature tables' rows are looked up with sparse gradients (``sparse_embeddings``: SparseAdam)
        self.sparse = bool(sparse)
        self.control_variate = bool(control_variate)
        #: exact no-grad tables of the last :meth:`refresh` (control variates), None before the first
        self.history: dict[str, Any] | None = None
        self.fanouts = fanouts
        self.aggregation_fanout = aggregation_fanout
        #: users per item of the preference gate (None = ``aggregation_fanout``: one sampler for both)
        self.gate_fanout = aggregation_fanout if gate_fanout is None else gate_fanout
        self.rescale = rescale
        self._ui: UserItemSampler | None = None
        self._mean: UserItemSampler | None = None
        self._gate: UserItemSampler | None = None
        self._items: dict[str, NeighbourSampler] = {}
        self._items_graph: dgl.DGLGraph | None = None

    def _samplers(self) -> tuple[UserItemSampler, UserItemSampler, dict[str, NeighbourSampler]]:
        m = self.model
        g = m.graph
        if self._ui is None:  # the user-item relations never change (refinement rebuilds only the item graphs)
            self._ui = UserItemSampler(g, self.fanouts, m.lightgcn.conv.weight, self.rescale)
            self._mean = UserItemSampler(g, [self.aggregation_fanout], "w_mean", self.rescale)
            same = self.gate_fanout == self.aggregation_fanout  # one sampler: the draws of earlier releases
            self._gate = self._mean if same else UserItemSampler(g, [self.gate_fanout], "w_mean", self.rescale)
        if self._items_graph is not g:
            self._items = {}
            n_items = g.num_nodes("item")
            hops = [-1] * int(m.item_propagation.n_layers)
            for mod in m.modalities:
                parts = [
                    (*g.edges(etype=rel), g.edges[rel].data["w"])
                    for rel in (knn_relation(mod), refine_relation(mod))
                    if rel in g.canonical_etypes
                ]
                src, dst, w = (torch.cat([p[k] for p in parts]) for k in range(3))
                self._items[mod] = NeighbourSampler(src, dst, w, n_items, hops, rescale=False)
            self._items_graph = g
        return self._ui, self._mean, self._items

    def forget_history(self) -> None:
        """Drop the control variates' history: the next :meth:`forward` recomputes it (:meth:`refresh`)
        from the model's current state. Called when that state is replaced (``DGMRec.set_extra_state``)."""
        self.history = None

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the control variates' history from the current parameters (one full forward, no grad).

        ``ui``: ``[(U + N, d)]`` exact LightGCN layers ``0..L`` (users first); ``pi`` ``{m: (U, d)}``,
        ``rho``/``G``/``S`` ``{m: (N, d)}``, ``GU``/``SU`` ``{m: (U, d)}``: full propagation's tables."""
        m = self.model
        self.history = None  # the last epoch's tables go before this epoch's are built
        ui, _, _ = self._samplers()
        dev = m.item_emb.device
        f: dict[str, dict[str, torch.Tensor]] = {k: {} for k in ("pi", "rho", "G", "S", "GU", "SU")}
        for mod, t in m.modality_tables(m.graph):  # one modality's encoder outputs alive at a time
            for k, tables in f.items():
                tables[mod] = t[k]
        a = _full_matrix(ui.sampler, dev)
        h = torch.cat([m.user_emb, m.item_emb]).detach()
        layers = [h]
        for _ in self.fanouts:
            h = torch.sparse.mm(a, h)
            layers.append(h)
        self.history = {"ui": layers, **f}

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, items: torch.Tensor) -> dict[str, Any]:
        """The batch's rows of every quantity the loss reads.

        Args: ``users`` ``(U_B,)`` distinct batch users, ``pos`` ``(P_B,)`` distinct positives,
        ``neg`` ``(B,)`` negatives, ``items`` the distinct items of ``pos`` and ``neg`` (any device).

        Returns ``ue_U (U_B, d)``, ``ie_P (P_B, d)``, ``ie_N (B, d)``; ``GU``/``SU`` ``{m: (U_B, d)}``;
        ``T`` ``(|T|,)`` sorted CPU item ids with ``G``/``S`` ``{m: (|T|, d)}``; ``X`` ``(|X|,)`` sorted
        CPU item ids (``X ⊇ T ⊇ items``) with ``g``/``s``/``rho`` ``{m: (|X|, d)}`` and the raw feature
        rows ``feats`` ``{m: (|X|, d_m)}`` (looked up once per batch: the loss's reconstruction targets are
        rows of them, not a second lookup whose dense gradient would be a second ``(N, d_m)`` table).
        """
        m = self.model
        ui, mean, item_samplers = self._samplers()
        dev = m.item_emb.device
        n_users = m.n_users
        users, pos, neg, items = (t.cpu() for t in (users, pos, neg, items))
        if self.control_variate and self.history is None:
            self.refresh()
        hist = self.history if self.control_variate else None
        if hist is None:
            ue_U, ie_P, ie_N = ui.batch(m.user_emb, m.item_emb, users, pos, neg, sparse=self.sparse)
        else:
            parts = [users, pos + n_users, neg + n_users]
            seeds, inverse = torch.unique(torch.cat(parts), return_inverse=True)
            ui_blocks = ui.sampler.sample(seeds, dev)
            out = layer_mean_cv(ui_blocks, ui.ego(ui_blocks.input_nodes, m.user_emb, m.item_emb, self.sparse), hist["ui"])
            ue_U, ie_P, ie_N = (out.index_select(0, r) for r in inverse.to(dev).split([len(p) for p in parts]))
        # the batch users' sampled train items (eq. 6): in-edges of a user come from items only
        agg = mean.sampler.sample(users, dev)
        user_items = agg.input_nodes[len(users) :] - n_users
        T = torch.unique(torch.cat([items, user_items]))
        blocks = {mod: item_samplers[mod].sample(T, dev) for mod in m.modalities}
        X = torch.unique(torch.cat([b.input_nodes for b in blocks.values()]))
        # preference gate of X's items: mean of π over sampled train users (eq. 2-3), gate_fanout each
        gate = self._gate.sampler.sample(X + n_users, dev)
        gate_users = (gate.input_nodes[len(X) :]).to(dev)
        Xd = X.to(dev)
        feats = {mod: lookup(m.raw[mod], Xd, self.sparse) for mod in m.modalities}
        g, s = m.general_encoder(feats), m.specific_encoder(feats)
        u_rows = lookup(m.user_emb, gate_users, self.sparse)
        d = m.embedding_size
        maps = list(m.preference.maps.items())
        # one sparse product per block for all the tables it propagates (modalities, G and S side by side
        # as columns): the same sums as one product per table, each block's matrices built once
        pi = [torch.tanh(f(u_rows)) for _, f in maps]
        if hist is not None:  # exact gate of the history + the sampled change since
            pi = [p - hist["pi"][mod].index_select(0, gate_users) for p, (mod, _) in zip(pi, maps)]
        zeros_x = torch.zeros((len(X), len(maps) * d), dtype=u_rows.dtype, device=dev)  # X's own rows carry no message
        rho_all = last_layer(gate, torch.cat([zeros_x, torch.cat(pi, 1)])).split(d, 1)
        if hist is None:
            rho = {mod: r for r, (mod, _) in zip(rho_all, maps)}
        else:
            rho = {mod: hist["rho"][mod].index_select(0, Xd) + r for r, (mod, _) in zip(rho_all, maps)}
        G: dict[str, torch.Tensor] = {}
        S: dict[str, torch.Tensor] = {}
        for mod, b in blocks.items():
            rows = torch.searchsorted(X, b.input_nodes).to(dev)
            G[mod], S[mod] = last_layer(b, torch.cat([rho[mod] * g[mod], rho[mod] * s[mod]], 1).index_select(0, rows)).split(d, 1)
        # user modality features: mean of G, S over the sampled items (users' own rows carry no message)
        item_rows = torch.searchsorted(T, user_items).to(dev)
        mods = list(m.modalities)
        cur = torch.cat([G[mod] for mod in mods] + [S[mod] for mod in mods], 1).index_select(0, item_rows)
        if hist is not None:
            ui_items = user_items.to(dev)
            cur = cur - torch.cat([hist[k][mod].index_select(0, ui_items) for k in ("G", "S") for mod in mods], 1)
        zeros_u = torch.zeros((len(users), cur.shape[1]), dtype=cur.dtype, device=dev)
        means = last_layer(agg, torch.cat([zeros_u, cur])).split(d, 1)
        if hist is not None:
            ud = users.to(dev)
            means = [hist[k][mod].index_select(0, ud) + r for r, (k, mod) in zip(means, [(k, mod) for k in ("GU", "SU") for mod in mods])]
        GU = dict(zip(mods, means[: len(mods)]))
        SU = dict(zip(mods, means[len(mods) :]))
        return {"ue_U": ue_U, "ie_P": ie_P, "ie_N": ie_N, "GU": GU, "SU": SU, "T": T, "G": G, "S": S, "X": X, "g": g, "s": s, "rho": rho, "feats": feats}
