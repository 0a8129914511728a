"""Missing-modality masks: ``missing_items_<ratio>.npy`` files and the papers' protocols.

Two file formats load everywhere a mask is read (``--set missing_ratio``, ``mask_file``, the
only ``missing_items_*.npy`` of a data folder, ``bench``, ``datasets prepare``):

* **graphrec's format** (written by ``graphrec mask``, ``datasets synth``, ``datasets prepare``):
  a plain ``.npy`` holding a ``(N,)`` structured bool array with one field per modality,
  ``True`` where the item misses that modality; it loads with
  ``np.load(path, allow_pickle=False)`` (``arr["image"]``). Fields naming modalities the
  dataset does not load are ignored; a dataset modality without a field misses nothing.
* **the DGMRec authors' format**: a pickled ``dict`` of disjoint item-id arrays whose keys name
  the combination of missing modalities (spec 1.3): one letter per modality (``t`` text,
  ``v`` image/visual, ``a`` audio), several letters for several (``tv``), and ``all``
  for every modality; modalities without a one-letter code are names joined with ``+``
  (``video+text``). It is read by a restricted unpickler that builds only numpy arrays,
  dicts, lists, tuples, numbers and strings: any other object in the pickle (the way a
  crafted file would run code) is refused with a one-line :class:`GraphrecError`.

:class:`MissingModalities` holds the per-item boolean view used everywhere else:
``missing[m]`` is Ω_m, :meth:`only` is Ω_m^1, :meth:`complete` is C.
"""

from __future__ import annotations

import itertools
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphrec.data.interactions import atomic_save_npy
from graphrec.errors import GraphrecError

#: One-letter codes of the authors' mask files.
MODALITY_CODES = {"image": "v", "text": "t", "audio": "a"}


def modality_code(name: str) -> str:
    return MODALITY_CODES.get(name, name)


@dataclass
class MissingModalities:
    """Which item misses which modality.

    Attributes:
        modalities: modality names, in feature order.
        missing: ``{modality: (N,) bool}``; True where the item's modality is missing (Ω_m).
    """

    modalities: list[str]
    missing: dict[str, np.ndarray]

    @classmethod
    def none(cls, modalities: list[str], n_items: int) -> "MissingModalities":
        return cls(list(modalities), {m: np.zeros(n_items, dtype=bool) for m in modalities})

    @property
    def n_items(self) -> int:
        return len(next(iter(self.missing.values()))) if self.missing else 0

    def count(self) -> np.ndarray:
        """``(N,)`` int: number of missing modalities per item."""
        if not self.modalities:
            return np.zeros(0, dtype=np.int64)
        return np.sum([self.missing[m] for m in self.modalities], axis=0).astype(np.int64)

    def only(self, m: str) -> np.ndarray:
        """Ω_m^1: items missing exactly modality ``m`` and nothing else."""
        return self.missing[m] & (self.count() == 1)

    def complete(self) -> np.ndarray:
        """C: items with every modality observed."""
        return self.count() == 0

    def any_missing(self) -> bool:
        return bool(any(v.any() for v in self.missing.values()))

    # ----- conversion to/from the authors' dict format -----
    def to_key_dict(self) -> dict[str, np.ndarray]:
        """The authors' dict: key -> sorted item ids missing exactly that combination."""
        out: dict[str, np.ndarray] = {}
        mat = np.stack([self.missing[m] for m in self.modalities], axis=1) if self.modalities else None
        if mat is None:
            return out
        n_mod = len(self.modalities)
        for r in range(1, n_mod + 1):
            for combo in itertools.combinations(range(n_mod), r):
                want = np.zeros(n_mod, dtype=bool)
                want[list(combo)] = True
                ids = np.flatnonzero((mat == want).all(axis=1)).astype(np.int64)
                if len(ids):
                    out[self._key(combo)] = ids
        return out

    def _key(self, combo: tuple[int, ...]) -> str:
        if len(combo) == len(self.modalities) and len(self.modalities) > 1:
            return "all"
        codes = [modality_code(self.modalities[c]) for c in combo]
        return "".join(codes) if all(len(c) == 1 for c in codes) else "+".join(codes)

    @classmethod
    def from_key_dict(
        cls, d: dict, modalities: list[str], n_items: int, source: str = "mask"
    ) -> "MissingModalities":
        """Parse the authors' dict; unknown letters, out-of-range or overlapping ids are errors."""
        code_to_mod = {modality_code(m): m for m in modalities}
        missing = {m: np.zeros(n_items, dtype=bool) for m in modalities}
        seen = np.zeros(n_items, dtype=bool)
        for key, ids in d.items():
            ids = np.asarray(ids, dtype=np.int64).ravel()
            if key == "all":
                mods = list(modalities)
            else:
                # "+"-joined names, a whole modality name/code (a single non-letter-coded modality,
                # e.g. "video"), or one letter per modality ("tv")
                codes = key.split("+") if "+" in key else [key] if key in code_to_mod else list(key)
                unknown = [c for c in codes if c not in code_to_mod]
                if unknown:
                    # a mask may name a modality whose features are absent (e.g. TikTok text):
                    # those letters are dropped, the rest still apply
                    known_codes = ", ".join(sorted(code_to_mod))
                    if all(c in "tva" for c in unknown):
                        codes = [c for c in codes if c in code_to_mod]
                    else:
                        raise GraphrecError(
                            f"{source}: key '{key}' names unknown modality code(s) {unknown}; known: {known_codes}"
                        )
                mods = [code_to_mod[c] for c in codes]
            if len(ids) and (ids.min() < 0 or ids.max() >= n_items):
                raise GraphrecError(
                    f"{source}: key '{key}' holds item id {int(ids.max())} outside 0..{n_items - 1}; "
                    "the mask does not belong to this dataset"
                )
            if seen[ids].any():
                raise GraphrecError(f"{source}: key '{key}' repeats items of another key; keys must be disjoint")
            seen[ids] = True
            for m in mods:
                missing[m][ids] = True
        return cls(list(modalities), missing)

    # ----- graphrec's file format: a structured bool array, one field per modality -----
    def to_field_array(self) -> np.ndarray:
        """``(N,)`` structured bool array with one field per modality (graphrec's mask file)."""
        if not self.modalities:
            raise GraphrecError("a mask file needs at least one modality")
        arr = np.zeros(self.n_items, dtype=[(m, np.bool_) for m in self.modalities])
        for m in self.modalities:
            arr[m] = self.missing[m]
        return arr

    @classmethod
    def from_field_array(cls, arr: np.ndarray, modalities: list[str], n_items: int, source: str = "mask") -> "MissingModalities":
        """Parse graphrec's mask array; the wrong length or no field of ``modalities`` are errors."""
        names = list(arr.dtype.names or ())
        if arr.ndim != 1 or not names or any(arr.dtype[n] != np.bool_ for n in names):
            raise GraphrecError(f"{source}: expected a 1-D structured bool array (one field per modality), got {arr.dtype} of shape {arr.shape}")
        if len(arr) != n_items:
            raise GraphrecError(f"{source}: has {len(arr)} rows but the dataset has {n_items} items; the mask does not belong to this dataset")
        if modalities and not set(names) & set(modalities):
            raise GraphrecError(f"{source}: names modalities {', '.join(names)}, none of this dataset's ({', '.join(modalities)})")
        missing = {m: np.array(arr[m], dtype=bool) if m in names else np.zeros(n_items, dtype=bool) for m in modalities}
        return cls(list(modalities), missing)


# ----------------------------------------------------------------------------- reading pickled masks safely
class _Refused(Exception):
    """A pickle asked for something that is not plain data."""


def _only_ndarray(subtype, *args):
    if subtype is not np.ndarray:
        raise _Refused(f"array subclass {getattr(subtype, '__module__', '?')}.{getattr(subtype, '__name__', subtype)}")
    return np.core.multiarray._reconstruct(subtype, *args)


def _plain_dtype(*args):
    if not args or not isinstance(args[0], str):
        raise _Refused(f"numpy.dtype{args!r}")
    return np.dtype(*args)


def _plain_scalar(dtype, *args):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _Refused("numpy object scalar")
    return np.core.multiarray.scalar(dtype, *args)


def _plain_frombuffer(buf, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _Refused("numpy object buffer")
    return np.core.numeric._frombuffer(buf, dtype, shape, order)


def _latin1_encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode")
    return text.encode("latin1")


#: the only globals a mask pickle may name: what numpy needs to rebuild arrays (numpy 1 and 2 names)
_MASK_GLOBALS: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _plain_dtype,
                                             ("_codecs", "encode"): _latin1_encode}
for _core in ("numpy.core", "numpy._core"):
    _MASK_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _only_ndarray
    _MASK_GLOBALS[(f"{_core}.multiarray", "scalar")] = _plain_scalar
    _MASK_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _plain_frombuffer


class _PlainDataUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dicts, lists, tuples, numbers and strings; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _MASK_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")


def _read_pickled_npy(p: Path) -> Any:
    """The object of an ``np.save(..., allow_pickle=True)`` file, through :class:`_PlainDataUnpickler`."""
    with open(p, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        _, _, dtype = np.lib.format._read_array_header(fh, version)
        if not dtype.hasobject:
            raise ValueError("not an object array")
        return _PlainDataUnpickler(fh, encoding="latin1").load()


def read_mask_array(path: str | Path) -> dict | np.ndarray:
    """The raw content of a mask file: graphrec's structured array, or the authors' ``dict``.

    Never runs code: plain ``.npy`` arrays load without pickle, pickled ones through the
    restricted unpickler (any other object is a one-line :class:`GraphrecError` naming the file).
    """
    p = Path(path)
    if not p.is_file():
        raise GraphrecError(f"mask file '{p}' does not exist")
    expected = "expected a mask: a structured bool array (one field per modality) or the authors' pickled dict of item-id arrays"
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise GraphrecError(f"{p}: cannot be read as a mask file (ValueError); {expected}") from None
        try:
            obj = _read_pickled_npy(p)
        except _Refused as exc:
            raise GraphrecError(
                f"{p}: refused: its pickle asks for {exc}, which is not plain data (a mask holds only arrays, dicts, "
                "lists, numbers and strings); a file like this can run code when loaded"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error
            raise GraphrecError(f"{p}: cannot be read as a mask file ({type(exc).__name__}); {expected}") from None
        d = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object and obj.size == 1 else obj
        if not isinstance(d, dict) or not all(isinstance(k, str) for k in d):
            raise GraphrecError(f"{p}: {expected} (keys like 't', 'v', 'all'); found {type(d).__name__}")
        return d
    except Exception as exc:  # noqa: BLE001
        raise GraphrecError(f"{p}: cannot be read as a mask file ({type(exc).__name__}); {expected}") from None
    if arr.dtype.names is None:
        raise GraphrecError(f"{p}: {expected}; found a {arr.dtype} array of shape {arr.shape}")
    return arr


def load_mask_file(path: str | Path, modalities: list[str], n_items: int) -> MissingModalities:
    """Read a mask file of either format (module docstring) for a dataset's modalities and items."""
    raw = read_mask_array(path)
    if isinstance(raw, dict):
        try:
            return MissingModalities.from_key_dict(raw, modalities, n_items, source=str(path))
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, GraphrecError):
                raise
            raise GraphrecError(f"{path}: the mask's values are not arrays of item ids ({type(exc).__name__})") from None
    return MissingModalities.from_field_array(raw, modalities, n_items, source=str(path))


def mask_file_keys(path: str | Path) -> dict[str, np.ndarray]:
    """The authors' key dict of a mask file of either format (``{"v": ids, "all": ids, ...}``)."""
    raw = read_mask_array(path)
    if isinstance(raw, dict):
        return {k: np.asarray(v).ravel() for k, v in raw.items()}
    names = list(raw.dtype.names)
    return MissingModalities(names, {m: np.asarray(raw[m], dtype=bool) for m in names}).to_key_dict()


def save_mask_file(path: str | Path, mask: MissingModalities) -> None:
    """Write graphrec's mask format (a structured bool ``.npy``; no pickle), atomically."""
    atomic_save_npy(path, mask.to_field_array())


def mask_file_name(ratio: float | str) -> str:
    """``missing_items_<ratio>.npy`` with the ratio printed as given (``0.666`` stays ``0.666``)."""
    return f"missing_items_{ratio}.npy"


def generate_missing(
    n_items: int,
    modalities: list[str],
    ratio: float | None = None,
    seed: int = 1225,
    eligible: np.ndarray | None = None,
    draw: str = "cycle",
) -> MissingModalities:
    """Seeded, nested missing-modality protocol of the papers.

    Items are put in a seeded random order. The first ``round(ratio * N)`` items in
    that order miss at least one modality; an item's combination depends only on its
    position (positions cycle through 1..M missing modalities, and within a level
    through its combinations), so:

    * ``ratio = None`` gives the papers' even split: 1/(M+1) of items at each of
      0..M missing modalities (1/3 each for two modalities, 1/4 each for three);
    * masks for increasing ratios are **nested**: an item missing at 20 % is
      missing the same modalities at 40 %;
    * at any ratio, missing items are spread evenly over 1..M missing modalities.

    ``eligible`` (``(N,)`` bool) restricts which items may miss anything.

    ``draw="random"`` is the papers' per-item draw instead: each missing item's number of
    missing modalities is drawn uniformly from 1..M and its combination uniformly within that
    level (a second seeded stream, one draw per item, so masks stay nested); level sizes then
    vary around the even split by sampling noise. ``"cycle"`` (default) gives exactly equal
    sizes, as the DGMRec authors' released masks have.
    """
    if draw not in ("cycle", "random"):
        raise GraphrecError(f"missing-modality draw must be 'cycle' or 'random', got '{draw}'")
    n_mod = len(modalities)
    if n_mod == 0:
        raise GraphrecError("cannot generate a missing-modality mask without modalities")
    if ratio is None:
        ratio = n_mod / (n_mod + 1)
    if not 0.0 <= ratio < 1.0:
        raise GraphrecError(f"missing ratio must be in [0, 1), got {ratio}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_items)
    if eligible is not None:
        order = order[np.asarray(eligible, dtype=bool)[order]]
    n_missing = int(round(ratio * n_items))
    if n_missing > len(order):
        raise GraphrecError(f"cannot make {n_missing} items miss a modality: only {len(order)} are eligible")
    levels = [list(itertools.combinations(range(n_mod), r)) for r in range(1, n_mod + 1)]
    missing = {m: np.zeros(n_items, dtype=bool) for m in modalities}
    if draw == "random":  # one (level, combination) draw per item, independent of the ratio
        draws = np.random.default_rng([seed, 1]).random((n_items, 2))
    for pos in range(n_missing):
        if draw == "random":
            u = draws[order[pos]]
            level = levels[min(int(u[0] * n_mod), n_mod - 1)]
            combo = level[min(int(u[1] * len(level)), len(level) - 1)]
        else:
            level = levels[pos % n_mod]
            combo = level[(pos // n_mod) % len(level)]
        for c in combo:
            missing[modalities[c]][order[pos]] = True
    return MissingModalities(list(modalities), missing)
