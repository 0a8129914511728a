"""Reading and writing MMRec ``.inter`` files.

An ``.inter`` file is tab-separated with a header; graphrec reads the columns
``userID``, ``itemID`` and ``x_label`` (0 = train, 1 = valid, 2 = test) and ignores
any other column (``rating``, ``timestamp``). Ids are 0-based integers. The number
of users/items is ``max(id) + 1`` over the whole file (spec 1.2).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphrec.errors import GraphrecError

REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
TRAIN, VALID, TEST = 0, 1, 2
#: the largest id an int64 holds
MAX_ID = 2**63 - 1
#: ids may leave gaps, but a count (max id + 1) above this many times the distinct ids is an error
#: once one 64-d float32 table of that many rows would pass 1 GiB (a stray id like 500000000)
SPARSE_ID_FACTOR = 10
SPARSE_ID_MIN_BYTES = 2**30


@dataclass
class Interactions:
    """All rows of one ``.inter`` file.

    Attributes:
        users, items: ``(E,)`` int64 ids.
        labels: ``(E,)`` int8 split label (0 train, 1 valid, 2 test).
        n_users, n_items: ``max id + 1`` (at least the given minimum).
    """

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    n_users: int
    n_items: int

    def split(self, label: int) -> np.ndarray:
        """``(E_split, 2)`` array of (user, item) pairs with the given label."""
        sel = self.labels == label
        return np.stack([self.users[sel], self.items[sel]], axis=1)


def read_inter(path: str | Path) -> Interactions:
    """Read an MMRec ``.inter`` file, validating columns, ids and labels."""
    p = Path(path)
    if not p.is_file():
        raise GraphrecError(f"interaction file '{p}' does not exist")
    with p.open("r", encoding="utf-8", errors="replace") as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise GraphrecError(
                f"{p}: header lacks column(s) {', '.join(missing)}; an .inter file is tab-separated with a header "
                f"'userID<TAB>itemID<TAB>x_label' (found: {' | '.join(header)[:80]})"
            )
        cols = [header.index(c) for c in REQUIRED_COLUMNS]
        width = len(header)
        arr = _parse_fast(fh, cols, width)
    if arr is not None:
        return _interactions(arr, p)
    # a small file, or a malformed row somewhere: the line-by-line reader names it
    with p.open("r", encoding="utf-8", errors="replace") as fh:
        fh.readline()
        rows: list[tuple[int, int, int]] = []
        for lineno, line in enumerate(fh, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) < width:
                raise GraphrecError(
                    f"{p}:{lineno}: expected {width} tab-separated columns, found {len(parts)} ('{line[:60]}')"
                )
            try:
                u, i, lab = (int(parts[c]) for c in cols)
            except ValueError:
                bad = next(parts[c] for c in cols if not _is_int(parts[c]))
                raise GraphrecError(f"{p}:{lineno}: '{bad}' is not an integer id/label; ids must be 0-based integers") from None
            if u < 0 or i < 0:
                raise GraphrecError(f"{p}:{lineno}: negative id ({u}, {i}); ids must be 0-based non-negative integers")
            if u > MAX_ID or i > MAX_ID:
                raise GraphrecError(f"{p}:{lineno}: id {max(u, i)} does not fit in 64 bits; ids must be 0-based integers 0..n-1")
            if lab not in (TRAIN, VALID, TEST):
                raise GraphrecError(f"{p}:{lineno}: x_label {lab} is not 0 (train), 1 (valid) or 2 (test)")
            rows.append((u, i, lab))
    if not rows:
        raise GraphrecError(f"{p}: no interaction rows after the header")
    return _interactions(np.asarray(rows, dtype=np.int64), p)


#: files up to this size are read line by line only (the vectorised reader's set-up is not worth it)
FAST_READ_MIN_BYTES = 1 << 20


def _parse_fast(fh, cols: list[int], width: int) -> np.ndarray | None:
    """``(E, 3)`` int64 (user, item, label) rows of the rest of ``fh`` parsed by numpy's C reader, or ``None``
    when a row would be refused by the line-by-line reader (which then reports it with its line number).
    Used for files over :data:`FAST_READ_MIN_BYTES` (10^7 rows: seconds instead of a minute, no Python tuples)."""
    try:
        size = os.fstat(fh.fileno()).st_size
    except (OSError, AttributeError):
        return None
    if size < FAST_READ_MIN_BYTES:
        return None
    start = fh.tell()
    try:
        arr = np.loadtxt(fh, dtype=np.int64, delimiter="\t", usecols=cols, comments=None, ndmin=2)
    except (ValueError, OverflowError):
        return None
    if arr.shape[0] == 0 or arr.shape[1] != 3:
        return None
    if (arr[:, :2] < 0).any() or not np.isin(arr[:, 2], (TRAIN, VALID, TEST)).all():
        return None
    # loadtxt takes rows with too few columns when usecols are present; the line reader refuses them
    if width > max(cols) + 1:
        fh.seek(start)
        for line in fh:
            if line.strip("\r\n") and line.count("\t") < width - 1:
                return None
    return arr


def _interactions(arr: np.ndarray, p: Path) -> "Interactions":
    for col, kind in ((0, "user"), (1, "item")):
        check_dense_ids(arr[:, col], kind, str(p))
    return Interactions(
        users=arr[:, 0].copy(),
        items=arr[:, 1].copy(),
        labels=arr[:, 2].astype(np.int8),
        n_users=int(arr[:, 0].max()) + 1,
        n_items=int(arr[:, 1].max()) + 1,
    )


def check_dense_ids(ids: np.ndarray, kind: str, source: str) -> None:
    """One-line :class:`GraphrecError`, before anything is allocated, when ``max(ids) + 1`` is far above
    the number of distinct ids (:data:`SPARSE_ID_FACTOR`) and tables indexed by id would be large."""
    n = int(ids.max()) + 1
    table = n * 64 * 4  # one 64-d float32 row per id
    if table <= SPARSE_ID_MIN_BYTES:
        return
    distinct = len(np.unique(ids))
    if n > SPARSE_ID_FACTOR * distinct:
        raise GraphrecError(
            f"{source}: {kind} id {n - 1} makes {n:,} {kind}s (ids are 0-based: max id + 1) but only {distinct:,} distinct "
            f"{kind} ids occur; one 64-d embedding table for them would take {table / 2**30:.1f} GiB: renumber the {kind} ids 0..{distinct - 1}"
        )


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def write_inter(path: str | Path, users: np.ndarray, items: np.ndarray, labels: np.ndarray, chunk: int = 1_000_000) -> None:
    """Write an ``.inter`` file atomically (temp file + rename), ``chunk`` rows at a time (10^7 rows in bounded memory)."""
    with atomic_writer(path, binary=True) as fh:
        fh.write(b"userID\titemID\tx_label\n")
        for lo in range(0, len(users), chunk):
            sl = slice(lo, lo + chunk)
            rows = [f"{u}\t{i}\t{lab}\n" for u, i, lab in zip(users[sl].tolist(), items[sl].tolist(), labels[sl].tolist())]
            fh.write("".join(rows).encode())


def pair_matrix(pairs: np.ndarray, n_users: int, n_items: int, binary: bool = True):
    """``(n_users, n_items)`` SciPy CSR matrix of ``(P, 2)`` (user, item) pairs: ones, or with
    ``binary=False`` the number of times each pair occurs."""
    import scipy.sparse as sp

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    m = sp.csr_matrix((np.ones(len(pairs), dtype=np.float32), (pairs[:, 0], pairs[:, 1])), shape=(n_users, n_items))
    m.sum_duplicates()
    if binary:
        m.data[:] = 1.0
    return m


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    with atomic_writer(path, binary=True) as fh:
        fh.write(data)


@contextlib.contextmanager
def atomic_writer(path: str | Path, newline: str | None = "\n", binary: bool = False):
    """File handle (text, or bytes with ``binary``) whose content replaces ``path`` only when the
    ``with`` block succeeds (temporary file in the same folder, then ``os.replace``); streams
    outputs too large to build in memory."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline=newline)) as fh:
            yield fh
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_default(o):
    """``json.dumps`` ``default=``: numpy scalars and arrays as Python numbers and lists, else ``str``."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def atomic_write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON (numpy values allowed, :func:`json_default`) atomically."""
    import json

    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=json_default) + "\n").encode())


def atomic_save_npy(path: str | Path, array, allow_pickle: bool = False) -> None:
    """``np.save`` atomically (the file name is used exactly as given)."""
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    atomic_write_bytes(path, buf.getvalue())
