"""Dataset adapters: turn the shared real-data folders into MMRec-format directories.

``prepare_dataset(name, source, **options)`` reads and checks every source file and returns a
:class:`Prepared` held in memory; ``Prepared.write(out)`` then writes each file atomically,
``PREPARED.json`` (provenance, counts, split and missingness rules, licence note) last.
Nothing is written when a source is missing or malformed, and no data is copied into the
repository: the output folder is wherever the caller says (``graphrec datasets prepare``).

See docs/datasets.md for what each adapter produces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from graphrec.data.adapters._common import LICENCE, Prepared, default_source, require_source_root
from graphrec.errors import GraphrecError


def _tiktok(root: Path, **_: Any) -> Prepared:
    from graphrec.data.adapters.tiktok import prepare

    return prepare(root)


def _ml100k(root: Path, min_rating: int | None = None, **_: Any) -> Prepared:
    from graphrec.data.adapters.ml100k import prepare

    return prepare(root, min_rating=min_rating or 0)


def _ml1m(root: Path, valid_seed: int | None = None, **_: Any) -> Prepared:
    from graphrec.data.adapters.ml1m import DEFAULT_VALID_SEED, prepare

    return prepare(root, valid_seed=DEFAULT_VALID_SEED if valid_seed is None else valid_seed)


#: name -> (builder, options it accepts, one-line description)
ADAPTERS: dict[str, tuple[Callable[..., Prepared], tuple[str, ...], str]] = {
    "tiktok": (_tiktok, (), "TikTok 9,308 x 6,710: DGMRec splits + masks, MMSSL image/audio features"),
    "ml100k": (_ml100k, ("min_rating",), "MovieLens-100K 943 x 1,682: posters + IMDb descriptions, natural missingness"),
    "ml1m": (_ml1m, ("valid_seed",), "MovieLens-1M 6,040 x 3,260: CoLaKG split, posters + titles, 3 missing posters"),
}


def prepare_dataset(name: str, source: str | Path | None = None, **options: Any) -> Prepared:
    """Read and check the sources of dataset ``name`` (see :data:`ADAPTERS`).

    ``source`` is the shared data root (default ``$GRAPHREC_SHARED_DATA`` or ``../shared/data``).
    Options that are ``None`` are ignored; an option the dataset does not take is an error.
    """
    if name not in ADAPTERS:
        raise GraphrecError(f"unknown dataset '{name}'; choose one of {', '.join(ADAPTERS)}")
    builder, accepted, _ = ADAPTERS[name]
    given = {k: v for k, v in options.items() if v is not None}
    extra = [k for k in given if k not in accepted]
    if extra:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise GraphrecError(f"{flags} does not apply to dataset '{name}'")
    root = require_source_root(Path(source) if source is not None else None)
    return builder(root, **given)


__all__ = ["ADAPTERS", "LICENCE", "Prepared", "default_source", "prepare_dataset"]
