"""TikTok: DGMRec's interaction splits and masks + MMSSL's visual/acoustic features.

Sources (under the shared data root):

* ``dgmrec-masks/tiktok/``: ``tiktok.inter``, ``tiktok_del.inter``, ``missing_items_0.6.npy``,
  ``missing_items_0.75.npy`` (copied byte-for-byte);
* ``tiktok-mmssl/``: ``image_feat.npy``, ``audio_feat.npy`` (6,710 x 128 float16 -> float32).

The text features of TikTok are not obtainable, so the masks' ``t`` letters refer to an absent
modality (graphrec's mask reader drops them). ``new_items.npy`` is written for the new-item
setting (spec 1.5): the spec's regeneration is tried first and kept only if every regenerated item
has no train row in ``tiktok_del.inter``; otherwise the fallback (items with train rows in the full
file but none in ``_del``) is written, which reproduces the shipped ``_del`` train split exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graphrec.data.adapters._common import (
    LICENCE,
    Prepared,
    as_features,
    label_counts,
    load_npy,
    mask_counts,
    require_files,
    source_record,
)
from graphrec.data.interactions import TRAIN, Interactions, read_inter
from graphrec.data.masks import load_mask_file, mask_file_keys
from graphrec.data.new_items import apply_new_items, derive_new_items, select_new_items
from graphrec.errors import GraphrecError

NAME = "tiktok"
MODALITIES = ["audio", "image"]
MASK_FILES = ["missing_items_0.6.npy", "missing_items_0.75.npy"]


def _pairs(inter: Interactions, label: int) -> set[tuple[int, int]]:
    return set(map(tuple, inter.split(label).tolist()))


def _upstream_profile(counts: np.ndarray, new_items: np.ndarray, fraction=0.2, cold_fraction=0.7, seed=1111) -> dict:
    """Compare ``new_items`` with the upstream algorithm *up to the order of tied counts*.

    Upstream draws fixed positions (seed 1111) in the item list sorted by train count. Whatever the
    order within a group of equal counts, the number of new items with each count is fixed; this
    returns whether ``new_items`` has exactly those numbers for every count > 0, and how many new
    items upstream has with count 0 (those cannot be recovered from the ``_del`` file).
    """
    n = len(counts)
    n_cold = int(np.floor(cold_fraction * n))
    rs = np.random.RandomState(seed)
    pos_cold = rs.choice(n_cold, int(np.floor(fraction * n_cold)), replace=False) if n_cold else np.zeros(0, int)
    n_warm = n - n_cold
    pos_warm = rs.choice(n_warm, int(np.floor(fraction * n_warm)), replace=False) + n_cold if n_warm else np.zeros(0, int)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.concatenate([pos_cold, pos_warm])] = True
    sorted_counts = np.sort(counts)
    expected = np.bincount(sorted_counts[chosen], minlength=int(counts.max()) + 1)
    got = np.bincount(counts[new_items], minlength=len(expected))
    return {
        "upstream_total": int(chosen.sum()),
        "upstream_zero_train_count": int(expected[0]),
        "per_count_consistent_above_zero": bool(np.array_equal(expected[1:], got[1:])),
    }


def prepare(root: Path) -> Prepared:
    masks_dir, feat_dir = root / "dgmrec-masks" / NAME, root / "tiktok-mmssl"
    src = require_files(masks_dir, ["tiktok.inter", "tiktok_del.inter", *MASK_FILES], NAME)
    src.update(require_files(feat_dir, ["image_feat.npy", "audio_feat.npy"], NAME))

    full = read_inter(src["tiktok.inter"])
    red = read_inter(src["tiktok_del.inter"])
    n, u = full.n_items, full.n_users
    if red.n_items > n or red.n_users > u:
        raise GraphrecError(f"{NAME}: tiktok_del.inter has ids beyond tiktok.inter ({red.n_users} x {red.n_items} vs {u} x {n})")
    for lab, split in ((1, "valid"), (2, "test")):
        if _pairs(full, lab) != _pairs(red, lab):
            raise GraphrecError(f"{NAME}: the {split} rows of tiktok_del.inter differ from tiktok.inter (spec 1.5 expects them equal)")
    if not _pairs(red, TRAIN) <= _pairs(full, TRAIN):
        raise GraphrecError(f"{NAME}: tiktok_del.inter has train rows that tiktok.inter lacks")

    features = {}
    for m in MODALITIES:
        raw = load_npy(src[f"{m}_feat.npy"], NAME, ndim=2)
        if raw.shape[0] != n:
            raise GraphrecError(
                f"{NAME}: {m}_feat.npy has {raw.shape[0]} rows but tiktok.inter has {n} items (max itemID + 1)"
            )
        features[m] = (as_features(raw, src[f"{m}_feat.npy"], NAME), str(raw.dtype))

    masks = {}
    for f in MASK_FILES:
        parsed = load_mask_file(src[f], MODALITIES, n)  # validates ids and disjointness
        keys = mask_file_keys(src[f])
        masks[f] = {"keys": {k: int(len(v)) for k, v in keys.items()}, "missing": mask_counts(parsed)}

    # ---- new items (spec 1.5)
    counts = np.bincount(full.items[full.labels == TRAIN], minlength=n)
    has_del_train = np.zeros(n, dtype=bool)
    has_del_train[red.items[red.labels == TRAIN]] = True
    regenerated = select_new_items(counts)
    regen_bad = int(has_del_train[regenerated].sum())
    derived = derive_new_items(full, red)
    if regen_bad == 0:
        new_items, method = regenerated, "regenerated (spec 1.5 algorithm, stable sort) and checked against tiktok_del.inter"
    else:
        new_items, method = derived, (
            "fallback of spec 1.5: items with train rows in tiktok.inter but none in tiktok_del.inter "
            f"(the regenerated set has {regen_bad} items with train rows in tiktok_del.inter: the authors' "
            "unstable sort of tied counts cannot be reproduced)"
        )
    if has_del_train[new_items].any():  # pragma: no cover - guaranteed by construction
        raise GraphrecError(f"{NAME}: a new item has train rows in tiktok_del.inter")
    runtime = apply_new_items(full, new_items)
    reproduces = _pairs(runtime, TRAIN) == _pairs(red, TRAIN)
    profile = _upstream_profile(counts, new_items)

    full_counts, del_counts = label_counts(full.labels), label_counts(red.labels)
    ni = {
        "file": "new_items.npy",
        "count": int(len(new_items)),
        "method": method,
        "regenerated_count": int(len(regenerated)),
        "regenerated_with_train_rows_in_del": regen_bad,
        "derived_count": int(len(derived)),
        "train_rows_runtime": label_counts(runtime.labels)["train"],
        "reproduces_del_train_split": bool(reproduces),
        **profile,
        "note": (
            "upstream also marks items without any train row as new; those cannot be told apart from old "
            "items with no train row, so they are not in new_items.npy (they have no train edges either way)"
        ),
    }
    info = {
        "dataset": NAME,
        "format": "MMRec (userID, itemID, x_label; 0 train / 1 valid / 2 test)",
        "command": f"graphrec datasets prepare {NAME} --source {root} --out OUT",
        "sources": source_record(src, root),
        "users": u,
        "items": n,
        "splits": {"tiktok.inter": full_counts, "tiktok_del.inter": del_counts},
        "split_rule": "as shipped by DGMRec (the MMSSL split; DiffMM's tst = label 1, val = label 2)",
        "modalities": {m: int(x.shape[1]) for m, (x, _) in features.items()},
        "feature_conversion": {m: f"{dt} -> float32" for m, (_, dt) in features.items()},
        "missingness": {
            "definition": "DGMRec's shipped synthetic masks, copied byte-for-byte; key letters: t text, v image, "
            "a audio; text features are absent, so 't' letters are dropped when loading (image missing = all+v+tv+va, "
            "audio missing = all+a+ta+va)",
            "masks": masks,
        },
        "new_items": ni,
        "licence": LICENCE,
        "licence_files": [str(root / "dgmrec-masks" / "SOURCE.md"), str(root / "tiktok-mmssl" / "SOURCE.md")],
    }
    prep = Prepared(NAME, info)
    prep.outputs["tiktok.inter"] = ("bytes", src["tiktok.inter"].read_bytes())
    prep.outputs["tiktok_del.inter"] = ("bytes", src["tiktok_del.inter"].read_bytes())
    prep.file_info["tiktok.inter"] = {"rows": len(full.users), **full_counts}
    prep.file_info["tiktok_del.inter"] = {"rows": len(red.users), **del_counts}
    for m, (x, _) in features.items():
        prep.outputs[f"{m}_feat.npy"] = ("npy", x)
    for f in MASK_FILES:
        prep.outputs[f] = ("bytes", src[f].read_bytes())
        prep.file_info[f] = {"keys": masks[f]["keys"]}
    prep.outputs["new_items.npy"] = ("npy", np.asarray(new_items, dtype=np.int64))
    prep.summary = [
        ("users x items", f"{u:,} x {n:,}"),
        ("tiktok.inter train/valid/test", "/".join(f"{full_counts[k]:,}" for k in ("train", "valid", "test"))),
        ("tiktok_del.inter train/valid/test", "/".join(f"{del_counts[k]:,}" for k in ("train", "valid", "test"))),
        ("modalities", ", ".join(f"{m} {x.shape[1]}-d" for m, (x, _) in features.items())),
        *((f"missing ({f})", ", ".join(f"{m} {c:,}" for m, c in masks[f]["missing"].items())) for f in MASK_FILES),
        ("new items", f"{len(new_items):,} written ({'regenerated' if regen_bad == 0 else 'derived from _del'}); "
         f"regenerated {len(regenerated):,} ({regen_bad:,} with _del train rows), derived {len(derived):,}"),
        ("new-item train rows", f"{ni['train_rows_runtime']:,} (= _del train: {'yes' if reproduces else 'NO'})"),
    ]
    return prep
