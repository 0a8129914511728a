"""Shared pieces of the dataset adapters: the prepared-folder container, source checks, splits."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from graphrec.data.interactions import TEST, TRAIN, VALID, atomic_save_npy, atomic_write_bytes, write_inter
from graphrec.data.masks import MissingModalities, save_mask_file
from graphrec.errors import GraphrecError

LICENCE = (
    "research use only: the interactions, texts and posters come from third parties (GroupLens MovieLens usage "
    "licence: research use, no redistribution without permission; TikTok/MMSSL, DGMRec, CoLaKG, IMDb scrape: no "
    "licence stated). Do not redistribute the prepared folder; see the SOURCE.md files listed under 'licence_files'."
)


def default_source() -> Path:
    """``$GRAPHREC_SHARED_DATA``, else ``../shared/data`` relative to the current directory."""
    env = os.environ.get("GRAPHREC_SHARED_DATA")
    return Path(env) if env else Path.cwd().parent / "shared" / "data"


def require_source_root(source: Path | None) -> Path:
    root = Path(source) if source is not None else default_source()
    if not root.is_dir():
        if source is not None:
            what = f"--source '{root}'"
        elif os.environ.get("GRAPHREC_SHARED_DATA"):
            what = f"GRAPHREC_SHARED_DATA '{root}'"
        else:
            what = f"the default shared data folder '{root}' (../shared/data from the current folder)"
        raise GraphrecError(
            f"{what} does not exist; pass --source DIR, the folder that holds tiktok-mmssl/, dgmrec-masks/, "
            "ml100k-mm/ and ml1m-posters/ (or set GRAPHREC_SHARED_DATA)"
        )
    return root.resolve()


def require_files(folder: Path, names: list[str], dataset: str) -> dict[str, Path]:
    """``{name: path}`` of files inside ``folder``; a missing folder or file is a one-line error."""
    if not folder.is_dir():
        raise GraphrecError(f"{dataset}: source folder '{folder}' does not exist; is --source the shared data root?")
    paths = {n: folder / n for n in names}
    absent = [n for n, p in paths.items() if not p.is_file()]
    if absent:
        raise GraphrecError(f"{dataset}: '{folder}' lacks {', '.join(absent)}")
    return paths


def load_npy(path: Path, dataset: str, ndim: int | None = None) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error
        raise GraphrecError(f"{dataset}: '{path}' cannot be read as a .npy array ({type(exc).__name__})") from None
    if ndim is not None and arr.ndim != ndim:
        raise GraphrecError(f"{dataset}: '{path}' has shape {arr.shape}, expected a {ndim}-D array")
    return arr


def as_features(arr: np.ndarray, path: Path, dataset: str) -> np.ndarray:
    """float32, C-contiguous, finite; else a one-line error."""
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise GraphrecError(f"{dataset}: '{path}' is not a numeric 2-D feature table (shape {arr.shape}, {arr.dtype})")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise GraphrecError(f"{dataset}: '{path}' holds NaN or inf")
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_record(paths: dict[str, Path], root: Path) -> dict[str, dict[str, Any]]:
    """Provenance of every source file read: absolute path, size and SHA-256."""
    rec = {}
    for p in sorted(set(paths.values())):
        try:
            key = str(p.relative_to(root))
        except ValueError:
            key = str(p)
        rec[key] = {"path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return rec


def label_counts(labels: np.ndarray) -> dict[str, int]:
    return {name: int((labels == lab).sum()) for name, lab in (("train", TRAIN), ("valid", VALID), ("test", TEST))}


def holdout_counts(n: np.ndarray, fraction: float = 0.1, min_rows: int = 3) -> np.ndarray:
    """Rows held out per user for one split: ``max(1, floor(fraction * n))`` when ``n >= min_rows``, else 0."""
    n = np.asarray(n, dtype=np.int64)
    k = np.maximum(1, np.floor(fraction * n).astype(np.int64))
    return np.where(n >= min_rows, k, 0)


def rank_within_user(users_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by user: (position of the row within its user, that user's row count)."""
    n = len(users_sorted)
    starts = np.r_[0, np.flatnonzero(np.diff(users_sorted)) + 1]
    sizes = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, sizes)
    return rank, np.repeat(sizes, sizes)


def inter_bytes(columns: dict[str, np.ndarray]) -> bytes:
    """Tab-separated ``.inter`` text with a header (integer columns, in the given order)."""
    names = list(columns)
    cols = [np.asarray(columns[c]).tolist() for c in names]
    fmt = "\t".join(["{}"] * len(names))
    lines = ["\t".join(names)] + [fmt.format(*row) for row in zip(*cols)]
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Prepared:
    """One prepared dataset held in memory until :meth:`write` (nothing touches --out before).

    ``outputs`` maps file names to ``("bytes", data)``, ``("npy", array)``, ``("mask", MissingModalities)``
    or ``("inter", (users, items, labels))``; they are written in order, ``PREPARED.json`` last,
    so its presence marks a complete folder.
    """

    name: str
    info: dict[str, Any]
    outputs: dict[str, tuple[str, Any]] = field(default_factory=dict)
    summary: list[tuple[str, str]] = field(default_factory=list)
    file_info: dict[str, dict[str, Any]] = field(default_factory=dict)

    def write(self, out: Path, progress: Callable[[str], None] | None = None) -> list[str]:
        out = Path(out)
        files: dict[str, Any] = {}
        for fname, (kind, obj) in self.outputs.items():
            if progress:
                progress(fname)
            path = out / fname
            if kind == "bytes":
                atomic_write_bytes(path, obj)
            elif kind == "npy":
                atomic_save_npy(path, obj)
            elif kind == "mask":
                save_mask_file(path, obj)
            elif kind == "inter":
                write_inter(path, *obj)
            else:  # pragma: no cover - programming error
                raise ValueError(kind)
            files[fname] = {
                **_describe(kind, obj),
                **self.file_info.get(fname, {}),
                "bytes": path.stat().st_size,
                "sha256": sha256_file(path),
            }
        info = {**self.info, "files": files}
        atomic_write_bytes(out / "PREPARED.json", (json.dumps(info, indent=2, sort_keys=False) + "\n").encode())
        return [*self.outputs, "PREPARED.json"]


def _describe(kind: str, obj: Any) -> dict[str, Any]:
    if kind == "npy":
        return {"shape": list(obj.shape), "dtype": str(obj.dtype)}
    if kind == "inter":
        return {"rows": int(len(obj[0])), **label_counts(np.asarray(obj[2]))}
    if kind == "mask":
        assert isinstance(obj, MissingModalities)
        return {"keys": {k: int(len(v)) for k, v in obj.to_key_dict().items()}}
    return {}


def mask_counts(mask: MissingModalities) -> dict[str, int]:
    return {m: int(v.sum()) for m, v in mask.missing.items()}
