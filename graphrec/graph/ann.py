"""Approximate cosine kNN rows (faiss HNSW / IVF or DGL's NN-descent), same graph as the exact search.

:func:`graphrec.graph.knn.knn_topk` calls :func:`ann_topk` when a :class:`KnnSearch` says so
(``knn_method: ann``, or ``auto`` with at least ``ann_min_rows`` rows to search). The result is
the exact search's kind of graph, only its neighbour lists are approximate:

* ``(N, N)`` CSR, at most ``k`` entries per searched row, weight = the cosine similarity of
  the pair (computed exactly for every pair found), zero similarities dropped;
* the item itself is always one of its ``k`` neighbours (weight its self-similarity, 1; it
  replaces the weakest neighbour found if the index missed it);
* ``masked`` items get a unit self loop and are nobody's neighbour; with ``candidates`` only
  those items (plus the row's own item, weight 1) may be neighbours; rows not searched are empty.

The index holds the *distinct* normalised rows of the allowed neighbours (mean-imputed
missing rows are all one vector; an index of 10^5 copies of one point is slow and degrades
HNSW); a distinct vector found for a query stands for its copies, lowest item ids first.
Only the searched rows are queried (a refinement queries the refreshed rows only).

Backends (``ann_backend``): ``faiss-hnsw`` (default when ``faiss`` is installed: ``pip install
'graphrec[ann]'``), ``faiss-ivf``, ``nn-descent`` (DGL, no extra dependency; builds the kNN
graph of the index points plus the query rows; the fallback of ``auto`` without faiss, with one
:class:`~graphrec.errors.GraphrecWarning`). Figures and defaults: ``docs/scaling.md``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp
import torch

from graphrec.errors import GraphrecError, GraphrecWarning

KNN_METHODS = ("auto", "exact", "ann")
ANN_BACKENDS = ("auto", "faiss-hnsw", "faiss-ivf", "nn-descent")

#: the kNN search keys of every model that builds item-item kNN graphs (merged into its ``default_config``)
KNN_SEARCH_DEFAULTS: dict[str, Any] = {
    "knn_method": "auto",
    "ann_min_rows": 30_000,
    "ann_backend": "auto",
    "ann_hnsw_m": 16,
    "ann_ef_construction": 40,
    "ann_ef_search": 64,
    "ann_ivf_nlist": 0,
    "ann_ivf_nprobe": 32,
    "ann_nnd_candidates": 60,
}

#: rows whose pair similarities are computed at once (rows x k x d floats)
_SIM_ROWS = 16_384
#: below this many index points the search is exact (an index would not pay)
_TINY = 256

_warned_fallback = False
#: what the last :func:`ann_topk` ran: backend, index points, queries, seconds in the index (build + search),
#: seconds in total (benchmarks/bench_knn_ann.py reads it)
last_timings: dict[str, Any] = {}


@dataclass(frozen=True)
class KnnSearch:
    """How kNN rows are searched: ``method`` exact / ann / auto, and the index settings.

    ``auto`` searches exactly when fewer than ``min_rows`` rows are searched: the exact search
    costs ``O(rows x N)``, an index ``O(N log N)`` to build plus ``O(rows log N)`` to query,
    so the rows searched (N for a full build, the refreshed rows for a refinement) decide.
    """

    method: str = "auto"
    min_rows: int = 30_000
    backend: str = "auto"
    hnsw_m: int = 16
    ef_construction: int = 40
    ef_search: int = 64
    ivf_nlist: int = 0
    ivf_nprobe: int = 32
    nnd_candidates: int = 60

    _KEYS = {
        "knn_method": "method", "ann_min_rows": "min_rows", "ann_backend": "backend", "ann_hnsw_m": "hnsw_m",
        "ann_ef_construction": "ef_construction", "ann_ef_search": "ef_search", "ann_ivf_nlist": "ivf_nlist",
        "ann_ivf_nprobe": "ivf_nprobe", "ann_nnd_candidates": "nnd_candidates",
    }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], model: str = "config") -> "KnnSearch":
        """Read (and check) the ``knn_method`` / ``ann_*`` keys of a model config; one-line errors."""
        kw: dict[str, Any] = {}
        for key, attr in cls._KEYS.items():
            if key in config:
                kw[attr] = config[key]
        out = cls(**kw)
        out.check(model)
        return out

    def check(self, model: str = "config") -> None:
        if self.method not in KNN_METHODS:
            raise GraphrecError(f"{model}: 'knn_method' must be one of {', '.join(KNN_METHODS)}, got {self.method!r}")
        if self.backend not in ANN_BACKENDS:
            raise GraphrecError(f"{model}: 'ann_backend' must be one of {', '.join(ANN_BACKENDS)}, got {self.backend!r}")
        key_of = {v: k for k, v in self._KEYS.items()}
        for f in fields(self):
            if f.name in ("method", "backend"):
                continue
            v = getattr(self, f.name)
            low = 0 if f.name in ("ivf_nlist", "min_rows") else 1
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise GraphrecError(f"{model}: '{key_of[f.name]}' must be an integer >= {low}, got {v!r}")
        if self.hnsw_m < 2:
            raise GraphrecError(f"{model}: 'ann_hnsw_m' must be an integer >= 2, got {self.hnsw_m!r}")

    def use_ann(self, n_rows: int) -> bool:
        """Whether a search of ``n_rows`` rows goes through the index."""
        if self.method == "auto":
            return n_rows >= self.min_rows
        return self.method == "ann"


EXACT = KnnSearch(method="exact")


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(search: KnnSearch) -> str:
    """The backend that will run: ``auto`` is faiss-hnsw, or nn-descent (one warning) without faiss."""
    global _warned_fallback
    backend = search.backend
    if backend == "auto":
        if faiss_available():
            return "faiss-hnsw"
        if not _warned_fallback:
            _warned_fallback = True
            warnings.warn(
                "faiss is not installed: approximate kNN uses DGL's nn-descent (slower; pip install 'graphrec[ann]' for faiss)",
                GraphrecWarning,
                stacklevel=3,
            )
        return "nn-descent"
    if backend.startswith("faiss") and not faiss_available():
        raise GraphrecError(f"ann_backend '{backend}' needs faiss: pip install 'graphrec[ann]' (or set ann_backend: nn-descent)")
    return backend


def _normalized(x) -> np.ndarray:
    t = torch.as_tensor(x).detach().float().cpu()
    return torch.nn.functional.normalize(t, dim=1).numpy()


def _distinct(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)``: row ids of the distinct rows of ``v`` (first copy, ascending) and each row's distinct id.

    Rows are grouped by a 64-bit key (the float32 bits of two random projections), then checked
    against their group's first row; distinct rows sharing a key (rare) fall back to sorting the
    rows themselves. Copies whose keys differ (never seen) would only stay separate points.
    """
    n, d = v.shape
    u = np.ascontiguousarray(v).view(np.uint32)
    proj = torch.from_numpy(np.random.default_rng(0x5EED).standard_normal((d, 2)).astype(np.float32))
    p = (torch.from_numpy(np.ascontiguousarray(v)) @ proj).numpy().view(np.uint32).astype(np.uint64)
    h = (p[:, 0] << np.uint64(32)) | p[:, 1]
    step = 1 << 15
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    same = all(np.array_equal(u[lo : lo + step], u[first[inverse[lo : lo + step]]]) for lo in range(0, n, step))
    if not same:
        raw = u.view(np.dtype((np.void, 4 * d))).ravel()
        _, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
    order = np.argsort(first)  # distinct ids in the order of their first row
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    return first[order], remap[inverse]


def _threads() -> int:
    return max(1, int(torch.get_num_threads()))


def _faiss_search(base: np.ndarray, queries: np.ndarray, k: int, search: KnnSearch, backend: str) -> np.ndarray:
    """``(q, k)`` ids into ``base`` (``-1`` where fewer were found), inner product on unit rows."""
    import faiss

    faiss.omp_set_num_threads(_threads())
    t0 = time.perf_counter()
    n, d = base.shape
    if backend == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(d, int(search.hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(search.ef_construction)
        index.add(base)
        index.hnsw.efSearch = max(int(search.ef_search), k)
    else:
        nlist = int(search.ivf_nlist) or max(1, int(round(4 * math.sqrt(n))))
        nlist = min(nlist, n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        # k-means: 10 iterations on at most 32 points per list (faiss: 25 on up to 256; 8x faster
        # at 10^6 items, same recall in docs/scaling.md's measurements)
        n_train = min(n, 32 * nlist)
        sample = base if n_train == n else base[np.sort(np.random.default_rng(0).choice(n, n_train, replace=False))]
        index.cp.min_points_per_centroid = 1
        index.cp.niter = 10
        index.train(sample)
        index.add(base)
        index.nprobe = min(int(search.ivf_nprobe), nlist)
    t1 = time.perf_counter()
    _, ids = index.search(queries, k)
    last_timings.update(index_s=t1 - t0, query_s=time.perf_counter() - t1)
    return ids


def _nnd_search(base: np.ndarray, extra: np.ndarray, k: int, search: KnnSearch) -> tuple[np.ndarray, np.ndarray]:
    """DGL's NN-descent on ``base`` + ``extra`` (it only joins a set with itself).

    Returns ``(base_nbrs, extra_nbrs)``: ``(len(base), kk)`` and ``(len(extra), kk)`` ids into
    ``base`` (``-1`` for an ``extra`` point, never a neighbour here); ``kk = 2k`` when ``extra`` is
    not empty (their neighbours among themselves are discarded), else ``k``.
    """
    from dgl.transforms.functional import _nndescent_knn_graph

    t0 = time.perf_counter()
    pts = np.concatenate([base, extra]) if len(extra) else base
    kk = min(2 * k if len(extra) else k, len(pts))
    out = _nndescent_knn_graph(
        torch.from_numpy(np.ascontiguousarray(pts)), kk, [len(pts)], max_candidates=int(search.nnd_candidates),
        sample_rate=1.0, dist="euclidean",
    ).numpy()
    centre, nbr = out[0], out[1]
    nbr = nbr[np.argsort(centre, kind="stable")].reshape(len(pts), kk)
    nbr = np.where(nbr < len(base), nbr, -1)
    last_timings.update(index_s=time.perf_counter() - t0, query_s=None)  # one join: no separate query step
    return nbr[: len(base)], nbr[len(base) :]


def _pair_sims(xn: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    out = np.empty(len(r), dtype=np.float32)
    step = _SIM_ROWS * 16
    for lo in range(0, len(r), step):
        hi = lo + step
        out[lo:hi] = np.einsum("ij,ij->i", xn[r[lo:hi]], xn[c[lo:hi]])
    return out


def ann_topk(
    x,
    k: int,
    search: KnnSearch,
    rows: np.ndarray | None = None,
    masked: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
) -> sp.csr_matrix:
    """Approximate :func:`graphrec.graph.knn.knn_topk` (same arguments and conventions, module docstring).

    Shapes: ``(N, d)`` features -> ``(N, N)`` CSR with at most ``k`` entries in each row of ``rows``.
    """
    from graphrec.graph.knn import knn_topk

    t_start = time.perf_counter()
    last_timings.clear()
    xn = np.ascontiguousarray(_normalized(x), dtype=np.float32)
    n = xn.shape[0]
    k = min(int(k), n)
    row_ids = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    allowed = np.ones(n, dtype=bool)
    masked_b = np.zeros(n, dtype=bool) if masked is None else np.asarray(masked, dtype=bool)
    allowed &= ~masked_b
    if candidates is not None:
        allowed &= np.asarray(candidates, dtype=bool)
    queries = row_ids[~masked_b[row_ids]]
    pool = np.flatnonzero(allowed)
    everyone = len(pool) == n
    first, inverse = _distinct(xn if everyone else xn[pool]) if len(pool) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if len(first) < max(_TINY, 2 * k + 1) or len(queries) == 0:
        return knn_topk(x, k, rows=rows, masked=masked, candidates=candidates)
    t0 = time.perf_counter()
    base = xn if everyone and len(first) == n else np.ascontiguousarray(xn[pool[first]])  # no copy when all distinct
    k_search = min(k, len(base))
    backend = resolve_backend(search)
    if backend == "nn-descent":
        pool_pos = np.full(n, -1, dtype=np.int64)
        pool_pos[pool] = np.arange(len(pool))
        qpos = pool_pos[queries]
        outside = qpos < 0
        base_nbrs, extra_nbrs = _nnd_search(base, xn[queries[outside]], k_search, search)
        found = np.full((len(queries), base_nbrs.shape[1]), -1, dtype=np.int64)
        found[~outside] = base_nbrs[inverse[qpos[~outside]]]
        found[outside] = extra_nbrs
    else:
        found = _faiss_search(base, xn if rows is None and len(queries) == n else xn[queries], k_search, search, backend)
    last_timings.update(backend=backend, index_points=len(base), queries=len(queries), search_s=time.perf_counter() - t0)
    # expand each distinct vector into its items (lowest ids first), keep k per query, best first
    counts = np.bincount(inverse, minlength=len(first))
    members = pool[np.argsort(inverse, kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    qi, slot = np.nonzero(found >= 0)
    u = found[qi, slot]
    take = np.minimum(counts[u], k)
    rep_q = np.repeat(qi, take)
    offs = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)
    cols = members[np.repeat(starts[u], take) + offs]
    rr = queries[rep_q]
    vv = _pair_sims(xn, rr, cols)
    # best first within each query (stable: ids of one distinct vector stay in id order), then k per query
    order = np.lexsort((-vv, rep_q))
    rep_q, rr, cols, vv = rep_q[order], rr[order], cols[order], vv[order]
    key = rr * n + cols
    _, uniq = np.unique(key, return_index=True)  # a pair found twice (nn-descent) counts once
    uniq.sort()
    rep_q, rr, cols, vv = rep_q[uniq], rr[uniq], cols[uniq], vv[uniq]
    starts_q = np.searchsorted(rep_q, np.arange(len(queries)))
    rank = np.arange(len(rep_q)) - starts_q[rep_q]
    keep = rank < k
    rep_q, rr, cols, vv = rep_q[keep], rr[keep], cols[keep], vv[keep]
    starts_q = np.searchsorted(rep_q, np.arange(len(queries)))
    # the item itself is always a neighbour: it replaces the weakest found when the index missed it
    has_self = np.zeros(len(queries), dtype=bool)
    has_self[rep_q[cols == rr]] = True
    per_q = np.bincount(rep_q, minlength=len(queries))
    lacking = np.flatnonzero(~has_self)
    drop = np.zeros(len(rr), dtype=bool)
    full = lacking[per_q[lacking] >= k]
    if len(full):
        last = starts_q[full] + k - 1
        drop[last] = True
    self_val = np.where(allowed[queries[lacking]], _pair_sims(xn, queries[lacking], queries[lacking]), 1.0).astype(np.float32)
    masked_rows = row_ids[masked_b[row_ids]]
    r_all = np.concatenate([rr[~drop], queries[lacking], masked_rows])
    c_all = np.concatenate([cols[~drop], queries[lacking], masked_rows])
    v_all = np.concatenate([vv[~drop], self_val, np.ones(len(masked_rows), dtype=np.float32)]).astype(np.float32)
    nz = v_all != 0
    last_timings["total_s"] = time.perf_counter() - t_start
    return sp.csr_matrix((v_all[nz], (r_all[nz], c_all[nz])), shape=(n, n))
