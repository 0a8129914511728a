"""Saving and loading item-item graphs as ``.npz`` edge lists.

File layout (``np.savez``): ``src``, ``dst`` (int64 item ids; edge ``src -> dst`` means
"dst aggregates from src"), ``weight`` (float32 normalised weight Ã[dst, src]),
``refinement`` (bool: the edge is a refinement edge into an item missing the modality),
``n_items`` (scalar). Load with :func:`load_item_graph` or plain ``np.load``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from graphrec.data.interactions import atomic_write_bytes
from graphrec.errors import GraphrecError


def save_item_graph(path: str | Path, graph: sp.csr_matrix, refined_rows: np.ndarray) -> None:
    coo = graph.tocoo()
    buf = io.BytesIO()
    np.savez(
        buf,
        src=coo.col.astype(np.int64),
        dst=coo.row.astype(np.int64),
        weight=coo.data.astype(np.float32),
        refinement=np.asarray(refined_rows, dtype=bool)[coo.row],
        n_items=np.int64(graph.shape[0]),
    )
    atomic_write_bytes(path, buf.getvalue())


def load_item_graph(path: str | Path) -> tuple[sp.csr_matrix, np.ndarray]:
    """Return ``(Ã, refinement_edge_mask)``: the ``(N, N)`` CSR matrix (row = dst) and a bool per stored edge."""
    p = Path(path)
    try:
        z = np.load(p)
        n = int(z["n_items"])
        a = sp.csr_matrix((z["weight"], (z["dst"], z["src"])), shape=(n, n))
        return a, z["refinement"]
    except (OSError, KeyError, ValueError) as exc:
        raise GraphrecError(f"{p}: not a graphrec item-graph file ({type(exc).__name__})") from None
