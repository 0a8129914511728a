"""MovieLens-100K with poster (image) and IMDb-description (text) features.

Source: ``ml100k-mm/`` under the shared data root: ``u.data`` (``user item rating timestamp``,
tab-separated, 1-based ids) and ``features_computed/`` (row k = item k + 1).

* Interactions: every rating is an implicit positive (``min_rating`` keeps ratings >= it;
  0 keeps all). Ids become 0-based (user u -> u - 1, item k -> k - 1) and are not
  re-compacted, so feature row i is item i.
* Split, per user, chronological (ties by item id): the latest ``max(1, floor(0.1 n))``
  rows are test, the ``max(1, floor(0.1 n))`` before them valid, the rest train; users with
  fewer than 3 rows keep them all in train.
* Missingness is natural: image missing = no poster (``has_poster``), text missing = no IMDb
  description (``has_imdb_desc``), as in SOURCE.md (62 / 91 items). The text row of an item
  without a description still encodes its title and genres; it is kept in ``text_feat.npy``
  but the mask marks it missing, so graphrec imputes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graphrec.data.adapters._common import (
    LICENCE,
    Prepared,
    as_features,
    holdout_counts,
    inter_bytes,
    label_counts,
    load_npy,
    mask_counts,
    rank_within_user,
    require_files,
    source_record,
)
from graphrec.data.interactions import TEST, TRAIN, VALID
from graphrec.data.masks import MissingModalities
from graphrec.errors import GraphrecError

NAME = "ml100k"
FEATURES = {
    "image": "image_opennsfw_pool1024.npy",
    "text": "text_title_genres_imdbdesc_minilm384.npy",
}
HAS = {"image": "has_poster.npy", "text": "has_imdb_desc.npy"}
SPLIT_RULE = (
    "per user, chronological by timestamp (ties by item id): latest max(1, floor(0.1 n)) rows test (x_label 2), "
    "the max(1, floor(0.1 n)) before them valid (x_label 1), the rest train; users with n < 3 rows: all train"
)


def read_udata(path: Path) -> np.ndarray:
    """``(E, 4)`` int64 rows of ``u.data`` (user, item, rating, timestamp; 1-based ids)."""
    rows = []
    with path.open("r", encoding="latin-1") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise GraphrecError(f"{path}:{lineno}: expected 4 fields 'user item rating timestamp', found {len(parts)}")
            try:
                rows.append([int(p) for p in parts])
            except ValueError:
                raise GraphrecError(f"{path}:{lineno}: non-integer field in '{line.strip()[:60]}'") from None
    if not rows:
        raise GraphrecError(f"{path}: no ratings")
    arr = np.asarray(rows, dtype=np.int64)
    if arr[:, :2].min() < 1:
        raise GraphrecError(f"{path}: user/item ids must be 1-based (found {int(arr[:, :2].min())})")
    return arr


def split_chronological(users: np.ndarray, items: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order (by user, time, item) and the x_label of each row in that order."""
    order = np.lexsort((items, ts, users))
    rank, n = rank_within_user(users[order])
    k = holdout_counts(n)
    from_end = n - 1 - rank
    labels = np.full(len(order), TRAIN, dtype=np.int8)
    labels[from_end < 2 * k] = VALID
    labels[from_end < k] = TEST
    return order, labels


def prepare(root: Path, min_rating: int = 0) -> Prepared:
    folder = root / "ml100k-mm"
    src = require_files(folder, ["u.data"], NAME)
    fc = folder / "features_computed"
    src.update({f"features_computed/{k}": v for k, v in require_files(fc, [*FEATURES.values(), *HAS.values()], NAME).items()})

    data = read_udata(src["u.data"])
    pairs = data[:, 0] * (int(data[:, 1].max()) + 1) + data[:, 1]
    if len(np.unique(pairs)) != len(pairs):
        raise GraphrecError(f"{NAME}: u.data has duplicate (user, item) pairs; it must list each rating once")
    n_ratings = len(data)
    if min_rating:
        data = data[data[:, 2] >= min_rating]
        if not len(data):
            raise GraphrecError(f"{NAME}: no rating is >= --min-rating {min_rating}")
    users, items, rating, ts = data[:, 0] - 1, data[:, 1] - 1, data[:, 2], data[:, 3]
    u, n = int(users.max()) + 1, int(items.max()) + 1

    feats, has = {}, {}
    for m, f in FEATURES.items():
        x = load_npy(src[f"features_computed/{f}"], NAME, ndim=2)
        h = load_npy(src[f"features_computed/{HAS[m]}"], NAME, ndim=1).astype(bool)
        if x.shape[0] < n or len(h) != x.shape[0]:
            raise GraphrecError(f"{NAME}: {f} has {x.shape[0]} rows ({HAS[m]}: {len(h)}) but u.data has {n} items")
        feats[m] = as_features(x[:n], src[f"features_computed/{f}"], NAME)
        has[m] = h[:n]
    mask = MissingModalities(list(FEATURES), {m: ~has[m] for m in FEATURES})

    order, labels = split_chronological(users, items, ts)
    cols = {"userID": users[order], "itemID": items[order], "rating": rating[order], "timestamp": ts[order], "x_label": labels}
    counts = label_counts(labels)
    miss = mask_counts(mask)
    info = {
        "dataset": NAME,
        "format": "MMRec (userID, itemID, rating, timestamp, x_label; 0 train / 1 valid / 2 test)",
        "command": f"graphrec datasets prepare {NAME} --source {root} --out OUT"
        + (f" --min-rating {min_rating}" if min_rating else ""),
        "options": {"min_rating": min_rating},
        "sources": source_record(src, root),
        "users": u,
        "items": n,
        "ratings_read": n_ratings,
        "interactions": int(len(users)),
        "implicit_feedback": "every rating is a positive" if not min_rating else f"ratings >= {min_rating} are positives",
        "id_mapping": "0-based: userID = u.data user - 1, itemID = u.data item - 1 (not re-compacted; feature row i = item i)",
        "splits": {"ml100k.inter": counts},
        "split_rule": SPLIT_RULE,
        "modalities": {m: int(x.shape[1]) for m, x in feats.items()},
        "features": {m: f"features_computed/{f} (rows 0..{n - 1})" for m, f in FEATURES.items()},
        "missingness": {
            "definition": "natural: image missing = no poster (has_poster false), text missing = no IMDb description "
            "(has_imdb_desc false; the row still encodes title + genres but is treated as missing, per SOURCE.md)",
            "mask_file": "missing_items_natural.npy (graphrec mask format, one bool field per modality; in key terms v image-only, t text-only, all both)",
            "missing": miss,
            "keys": {k: int(len(v)) for k, v in mask.to_key_dict().items()},
        },
        "licence": LICENCE,
        "licence_files": [str(folder / "SOURCE.md"), str(folder / "README")],
    }
    prep = Prepared(NAME, info)
    prep.outputs["ml100k.inter"] = ("bytes", inter_bytes(cols))
    prep.file_info["ml100k.inter"] = {"rows": int(len(labels)), **counts}
    for m, x in feats.items():
        prep.outputs[f"{m}_feat.npy"] = ("npy", x)
    prep.outputs["missing_items_natural.npy"] = ("mask", mask)
    prep.summary = [
        ("users x items", f"{u:,} x {n:,}"),
        ("interactions", f"{len(users):,} of {n_ratings:,} ratings" + (f" (rating >= {min_rating})" if min_rating else "")),
        ("train/valid/test", "/".join(f"{counts[k]:,}" for k in ("train", "valid", "test"))),
        ("modalities", ", ".join(f"{m} {x.shape[1]}-d" for m, x in feats.items())),
        ("missing (natural)", ", ".join(f"{m} {c:,}" for m, c in miss.items())),
    ]
    return prep
