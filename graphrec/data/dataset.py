"""The in-memory dataset every model trains on, and loading it from a config.

:func:`load_dataset` reads an MMRec-format directory (or builds the embedded synthetic
set), applies the split protocol of spec 1.2 (cold-start user filtering), the
missing-modality mask (spec 1.3), the new-item setting (spec 1.5) and imputation
(spec 1.4), and returns a :class:`RecDataset`.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from graphrec.data.feature_norm import normalize_features
from graphrec.data.features import (
    FEATURE_SUFFIX,
    check_modality_names,
    discover_modalities,
    load_features,
)
from graphrec.data.imputation import impute
from graphrec.data.interactions import (
    TEST,
    TRAIN,
    VALID,
    Interactions,
    pair_matrix,
    read_inter,
)
from graphrec.data.masks import MissingModalities, generate_missing, load_mask_file
from graphrec.data.new_items import apply_new_items, derive_new_items, select_new_items
from graphrec.data.synthetic import make_synthetic
from graphrec.errors import GraphrecError, GraphrecWarning


@dataclass
class RecDataset:
    """One dataset, ready for training.

    Attributes:
        name: dataset name (``synthetic`` or the ``.inter`` stem).
        n_users, n_items: U and N.
        train, valid, test: ``(E, 2)`` int64 (user, item) pairs; valid/test after cold-user filtering.
        features: ``{m: (N, d_m) float32}`` raw features after imputation of missing rows.
        raw_features: ``{m: (N, d_m)}`` features as read (missing rows hold whatever the file had;
            for the synthetic set, the true features).
        missing: which item misses which modality.
        new_items: ``(N,)`` bool; True for items of the new-item setting (all False otherwise).
        source: the config keys needed to load the same data again.
    """

    name: str
    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    features: dict[str, np.ndarray]
    raw_features: dict[str, np.ndarray]
    missing: MissingModalities
    new_items: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        return list(self.missing.modalities)

    def train_matrix(self) -> sp.csr_matrix:
        """``(U, N)`` CSR matrix Y of training interactions (ones)."""
        return self.interaction_matrix(("train",))

    def interaction_matrix(self, splits: tuple[str, ...] | list[str] = ("train",)) -> sp.csr_matrix:
        """``(U, N)`` CSR with ones at the (user, item) pairs of ``splits`` (e.g. the items a
        recommendation list excludes: ``("train", "valid")``)."""
        pairs = [self.split_pairs(s) for s in splits]
        pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
        return pair_matrix(pairs, self.n_users, self.n_items)

    def split_pairs(self, split: str) -> np.ndarray:
        if split not in ("train", "valid", "test"):
            raise GraphrecError(f"unknown split '{split}'; use train, valid or test")
        return getattr(self, split)

    def item_groups(self) -> dict[str, np.ndarray]:
        """Named ``(N,)`` bool item groups for the evaluation breakdown.

        ``missing=k`` (items missing k modalities, DGMRec Fig. 3) when any item misses a
        modality; ``new``/``old`` in the new-item setting.
        """
        groups: dict[str, np.ndarray] = {}
        if self.missing.any_missing():
            count = self.missing.count()
            for k in range(len(self.modalities) + 1):
                groups[f"missing={k}"] = count == k
        if self.new_items.any():
            groups["new"] = self.new_items.copy()
            groups["old"] = ~self.new_items
        return groups

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the training data: sizes, feature dims and a hash of the train pairs.

        Checkpoints record it; evaluating a model on data with another fingerprint is an error.
        """
        train = np.ascontiguousarray(np.asarray(self.train, dtype=np.int64))
        return {"users": int(self.n_users), "items": int(self.n_items), "train_rows": int(len(train)),
                "train_sha256": hashlib.sha256(train.tobytes()).hexdigest()[:16],
                "modalities": {m: int(x.shape[1]) for m, x in self.features.items()}}

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
            "modalities": {m: int(x.shape[1]) for m, x in self.features.items()},
            "missing": {m: int(v.sum()) for m, v in self.missing.missing.items()},
            "new_items": int(self.new_items.sum()),
        }


def _filter_cold_users(pairs: np.ndarray, train: np.ndarray, n_users: int) -> np.ndarray:
    has_train = np.zeros(n_users, dtype=bool)
    has_train[train[:, 0]] = True
    return pairs[has_train[pairs[:, 0]]]


def build_dataset(
    name: str,
    inter: Interactions,
    features: dict[str, np.ndarray],
    missing: MissingModalities,
    new_items: np.ndarray | None = None,
    imputation: str = "mean",
    filter_cold_users: bool = True,
    source: dict[str, Any] | None = None,
    origin: str = "dataset",
    feature_norm: Any = "none",
) -> RecDataset:
    """Assemble a :class:`RecDataset` from rows, features and masks (spec 1.2-1.5).

    ``feature_norm`` (:mod:`graphrec.data.feature_norm`) is applied before imputation; with
    ``none`` the tables are checked and a nearly constant direction or an extreme scale is
    printed as a ``warning:`` line on stderr.
    """
    n = inter.n_items
    is_new = np.zeros(n, dtype=bool)
    if new_items is not None and len(new_items):
        is_new[np.asarray(new_items, dtype=np.int64)] = True
    train = inter.split(TRAIN)
    if len(train) == 0:
        raise GraphrecError(f"{origin}: the train split (x_label 0) is empty; at least one training row is needed")
    train = np.unique(train, axis=0)
    valid, test = inter.split(VALID), inter.split(TEST)
    if filter_cold_users:
        valid = _filter_cold_users(valid, train, inter.n_users)
        test = _filter_cold_users(test, train, inter.n_users)
    for split, pairs in (("valid (x_label 1)", valid), ("test (x_label 2)", test)):
        if len(pairs) == 0:
            raise GraphrecError(
                f"{origin}: the {split} split is empty"
                + (" after dropping users with no train row" if filter_cold_users else "")
                + "; every evaluated user needs a train row and a held-out row"
            )
    if is_new.any() and is_new[train[:, 1]].any():
        raise GraphrecError(f"{origin}: new items must not have train rows (new-item setting)")
    _warn_train_overlap(train, {"valid (x_label 1)": valid, "test (x_label 2)": test}, inter.n_items, origin)
    if features:
        features, notes = normalize_features(features, missing.missing, feature_norm, reference=~is_new)
        for note in notes:
            warnings.warn(f"{origin}: {note}", GraphrecWarning, stacklevel=2)
    imputed = impute(features, missing, imputation, reference=~is_new, train=train) if features else {}
    return RecDataset(
        name=name,
        n_users=inter.n_users,
        n_items=n,
        train=train,
        valid=np.unique(valid, axis=0),
        test=np.unique(test, axis=0),
        features=imputed,
        raw_features=features,
        missing=missing,
        new_items=is_new,
        source=dict(source or {}),
    )


def _warn_train_overlap(train: np.ndarray, held_out: dict[str, np.ndarray], n_items: int, origin: str) -> None:
    """A :class:`GraphrecWarning` with the count of held-out (user, item) pairs that are train pairs too:
    full ranking excludes train items, so they can never be hit."""
    keys = train[:, 0] * np.int64(n_items) + train[:, 1]
    for split, pairs in held_out.items():
        both = int(np.isin(np.unique(pairs[:, 0] * np.int64(n_items) + pairs[:, 1]), keys).sum())
        if both:
            warnings.warn(
                f"{origin}: {both} (user, item) pair(s) of the {split} split are train pairs too; they can never be "
                "ranked (train items are excluded), so the metrics are lower than they should be: fix the split",
                GraphrecWarning, stacklevel=3)


SOURCE_KEYS = (
    "data_dir",
    "dataset",
    "modalities",
    "missing_ratio",
    "mask_file",
    "new_items",
    "imputation",
    "feature_norm",
    "filter_cold_users",
    "synth_users",
    "synth_items",
    "synth_modalities",
    "synth_seed",
    "synth_interactions",
    "synth_missing",
    "synth_new_items",
)


def load_dataset(config: dict[str, Any]) -> RecDataset:
    """Load the dataset a resolved config describes (synthetic when ``data_dir`` is null)."""
    source = {k: config.get(k) for k in SOURCE_KEYS}
    if config.get("data_dir") is None:
        return _load_synthetic(config, source)
    return _load_directory(config, source)


def _load_synthetic(config: dict[str, Any], source: dict[str, Any]) -> RecDataset:
    if config.get("mask_file"):
        raise GraphrecError(
            "'mask_file' applies to a data folder (--data-dir); the embedded synthetic set draws its mask "
            "from 'synth_missing' (even, none or a ratio such as 0.6)"
        )
    mods = check_modality_names(list(config.get("synth_modalities") or ["image", "text"]), "synth_modalities")
    per_user = int(config.get("synth_interactions", 25))  # >= 5, checked with the config (RANGES)
    syn = make_synthetic(
        n_users=int(config["synth_users"]), n_items=int(config["synth_items"]), modalities=mods, seed=int(config["synth_seed"]),
        mean_interactions=per_user,
    )
    inter = syn.inter
    new_items = None
    if config.get("synth_new_items") or config.get("new_items"):
        counts = np.bincount(inter.items[inter.labels == TRAIN], minlength=inter.n_items)
        new_items = select_new_items(counts)
        inter = apply_new_items(inter, new_items)
    protocol = config.get("synth_missing", "even")
    if protocol in (None, "none", 0, 0.0):
        missing = MissingModalities.none(mods, inter.n_items)
    else:
        ratio = None if protocol == "even" else float(protocol)
        missing = generate_missing(inter.n_items, mods, ratio=ratio, seed=1225 + int(config["synth_seed"]))
    return build_dataset(
        "synthetic",
        inter,
        syn.features,
        missing,
        new_items=new_items,
        imputation=config.get("imputation", "mean"),
        filter_cold_users=bool(config.get("filter_cold_users", True)),
        feature_norm=config.get("feature_norm", "none"),
        source=source,
        origin="synthetic dataset",
    )


def find_inter_file(data_dir: Path, dataset: str | None) -> tuple[str, Path]:
    if dataset:
        p = data_dir / f"{dataset}.inter"
        if not p.is_file():
            raise GraphrecError(f"'{p}' does not exist; 'dataset' names <dataset>.inter inside data_dir")
        return dataset, p
    candidates = [p for p in sorted(data_dir.glob("*.inter")) if not p.stem.endswith("_del")]
    if not candidates:
        raise GraphrecError(f"no .inter file in '{data_dir}'; expected <name>.inter (tab-separated userID itemID x_label)")
    if len(candidates) > 1:
        names = ", ".join(p.stem for p in candidates)
        raise GraphrecError(f"several .inter files in '{data_dir}' ({names}); choose one with --set dataset=NAME (graphrec mask: --dataset NAME)")
    return candidates[0].stem, candidates[0]


def _load_directory(config: dict[str, Any], source: dict[str, Any]) -> RecDataset:
    data_dir = Path(config["data_dir"])
    if not data_dir.is_dir():
        raise GraphrecError(f"data directory '{data_dir}' does not exist")
    name, inter_path = find_inter_file(data_dir, config.get("dataset"))
    inter = read_inter(inter_path)
    new_items = None
    if config.get("new_items"):
        inter, new_items = _new_item_interactions(data_dir, name, inter)
    mods = check_modality_names(list(config["modalities"]), "modalities") if config.get("modalities") else discover_modalities(data_dir)
    # mask first: rows of missing items may legitimately hold NaN in the feature files
    missing = _load_mask(config, data_dir, mods, inter.n_items)
    features = {}
    for m in mods:
        features[m] = load_features(data_dir / f"{m}{FEATURE_SUFFIX}", inter.n_items, missing.missing[m])
    return build_dataset(
        name,
        inter,
        features,
        missing,
        new_items=new_items,
        imputation=config.get("imputation", "mean"),
        filter_cold_users=bool(config.get("filter_cold_users", True)),
        feature_norm=config.get("feature_norm", "none"),
        source=source,
        origin=str(inter_path),
    )


def _load_mask(config: dict[str, Any], data_dir: Path, mods: list[str], n_items: int) -> MissingModalities:
    if config.get("mask_file"):
        return load_mask_file(_mask_path(Path(config["mask_file"]).expanduser(), data_dir), mods, n_items)
    ratio = config.get("missing_ratio")
    if isinstance(ratio, str) and ratio.lower() == "none":  # no missing modality, whatever mask files the folder holds
        return MissingModalities.none(mods, n_items)
    if ratio is not None:
        p = data_dir / f"missing_items_{ratio}.npy"
        if not p.is_file():
            raise GraphrecError(f"mask file '{p}' does not exist; write one with 'graphrec mask --data-dir {data_dir} --ratio {ratio}'")
        return load_mask_file(p, mods, n_items)
    files = sorted(data_dir.glob("missing_items_*.npy"))
    if len(files) > 1:
        ratios = ", ".join(p.stem.removeprefix("missing_items_") for p in files)
        raise GraphrecError(f"several mask files in '{data_dir}' (ratios {ratios}); choose one with --set missing_ratio=R")
    if files:
        return load_mask_file(files[0], mods, n_items)
    return MissingModalities.none(mods, n_items)


def _mask_path(p: Path, data_dir: Path) -> Path:
    """``mask_file`` as given; a relative path that is not a file from the working directory is read from
    ``data_dir`` (where the dataset's own masks are). A missing absolute path is reported by the loader."""
    if p.is_absolute() or p.is_file():
        return p
    if (data_dir / p).is_file():
        return data_dir / p
    raise GraphrecError(f"mask file '{p}' does not exist in the working directory nor in data_dir '{data_dir}'")


def _new_item_interactions(data_dir: Path, name: str, full: Interactions) -> tuple[Interactions, np.ndarray]:
    """Runtime splits of the new-item setting from ``<name>_del.inter`` (spec 1.5)."""
    del_path = data_dir / f"{name}_del.inter"
    ids_path = data_dir / "new_items.npy"
    if ids_path.is_file():
        try:  # allow_pickle stays False: an object array is refused, not run
            new_items = np.asarray(np.load(ids_path), dtype=np.int64).ravel()
        except (OSError, ValueError, TypeError, EOFError) as exc:
            raise GraphrecError(f"{ids_path}: not a numpy array of item ids ({type(exc).__name__}); "
                                "write it with np.save(path, np.array(ids, dtype=np.int64))") from None
        if len(new_items) and (new_items.min() < 0 or new_items.max() >= full.n_items):
            raise GraphrecError(f"{ids_path}: item ids outside 0..{full.n_items - 1}")
    elif del_path.is_file():
        new_items = derive_new_items(full, read_inter(del_path))
    else:
        counts = np.bincount(full.items[full.labels == TRAIN], minlength=full.n_items)
        cold = np.unique(full.items[(full.labels != TRAIN) & (counts[full.items] == 0)])
        if len(cold) > 0.05 * full.n_items:  # e.g. a <name>_del.inter given as <name>.inter
            warnings.warn(
                f"{data_dir / (name + '.inter')}: {len(cold)} items ({len(cold) / full.n_items:.0%}) already have held-out "
                "rows but no train rows, as in a _del file; the new-item setting draws about 20 % more new items from "
                f"the rest. For the papers' protocol put the full file as {name}.inter and the _del file as {name}_del.inter",
                GraphrecWarning, stacklevel=2,
            )
        new_items = select_new_items(counts)
    return apply_new_items(full, new_items), new_items
