"""MovieLens-1M (CoLaKG implicit split) with poster (image) and title+genres (text) features.

Source: ``ml1m-posters/`` under the shared data root: ``colakg_ml1m/{train,test}.txt``
(LightGCN format ``u i1 i2 ...``, remapped ids), ``colakg_ml1m/item_map.txt``
(``<MovieID> <new id>``) and ``features_computed/`` (rows in ``movie_ids.npy`` order).

* Ids are CoLaKG's (users 0..6039, items 0..3259); item i's feature row is the row of its
  MovieID in ``movie_ids.npy``.
* Split: CoLaKG's test.txt -> x_label 2; from each user's train items, ``max(1, floor(0.1 n))``
  drawn at random (numpy ``default_rng(valid_seed)``, rows ordered by user then item) -> x_label 1;
  users with fewer than 3 train items keep them all in train.
* Missingness is natural: image missing = no poster (3 items); every item has title+genres text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graphrec.data.adapters._common import (
    LICENCE,
    Prepared,
    as_features,
    holdout_counts,
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

NAME = "ml1m"
FEATURES = {"image": "image_opennsfw_pool1024.npy", "text": "text_title_genres_minilm384.npy"}
DEFAULT_VALID_SEED = 2025


def read_lightgcn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of a LightGCN-format file (one line per user: ``u i1 i2 ...``)."""
    us, its = [], []
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                ids = np.array(parts, dtype=np.int64)
            except ValueError:
                raise GraphrecError(f"{path}:{lineno}: non-integer id in '{line.strip()[:60]}'") from None
            us.append(np.full(len(ids) - 1, ids[0], dtype=np.int64))
            its.append(ids[1:])
    if not us:
        raise GraphrecError(f"{path}: no interaction lines")
    users, items = np.concatenate(us), np.concatenate(its)
    if len(users) and min(users.min(), items.min()) < 0:
        raise GraphrecError(f"{path}: negative id")
    return users, items


def carve_valid(users: np.ndarray, items: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort train rows by (user, item) and mark ``max(1, floor(0.1 n))`` random rows per user as valid."""
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    keys = np.random.default_rng(seed).random(len(users))
    by_key = np.lexsort((keys, users))  # within each user, a seeded random order
    rank, n = rank_within_user(users[by_key])
    labels = np.full(len(users), TRAIN, dtype=np.int8)
    labels[by_key[rank < holdout_counts(n)]] = VALID
    return users, items, labels


def prepare(root: Path, valid_seed: int = DEFAULT_VALID_SEED) -> Prepared:
    folder = root / "ml1m-posters"
    ck, fc = folder / "colakg_ml1m", folder / "features_computed"
    src = {f"colakg_ml1m/{k}": v for k, v in require_files(ck, ["train.txt", "test.txt", "item_map.txt"], NAME).items()}
    names = ["movie_ids.npy", "has_poster.npy", *FEATURES.values()]
    src.update({f"features_computed/{k}": v for k, v in require_files(fc, names, NAME).items()})

    tr_u, tr_i = read_lightgcn(src["colakg_ml1m/train.txt"])
    te_u, te_i = read_lightgcn(src["colakg_ml1m/test.txt"])
    try:
        item_map = np.loadtxt(src["colakg_ml1m/item_map.txt"], dtype=np.int64, ndmin=2)
    except ValueError:
        raise GraphrecError(f"{NAME}: item_map.txt must hold lines '<MovieID> <new id>'") from None
    n = len(item_map)
    if item_map.shape[1] != 2 or not np.array_equal(np.sort(item_map[:, 1]), np.arange(n)):
        raise GraphrecError(f"{NAME}: item_map.txt must map MovieIDs to the new ids 0..N-1 exactly once")
    u = int(max(tr_u.max(), te_u.max())) + 1
    if max(tr_i.max(), te_i.max()) >= n:
        raise GraphrecError(f"{NAME}: train/test.txt use item ids >= {n} (the size of item_map.txt)")
    key_tr, key_te = tr_u * n + tr_i, te_u * n + te_i
    if len(np.unique(key_tr)) != len(key_tr) or len(np.unique(key_te)) != len(key_te):
        raise GraphrecError(f"{NAME}: duplicate (user, item) pairs in train.txt or test.txt")
    if np.isin(key_te, key_tr).any():
        raise GraphrecError(f"{NAME}: test.txt repeats pairs of train.txt")

    movie_of = np.empty(n, dtype=np.int64)
    movie_of[item_map[:, 1]] = item_map[:, 0]
    movie_ids = load_npy(src["features_computed/movie_ids.npy"], NAME, ndim=1).astype(np.int64)
    row_of = {int(m): r for r, m in enumerate(movie_ids)}
    absent = [int(m) for m in movie_of if int(m) not in row_of]
    if absent:
        raise GraphrecError(f"{NAME}: {len(absent)} MovieID(s) of item_map.txt are not in movie_ids.npy (first: {absent[0]})")
    rows = np.array([row_of[int(m)] for m in movie_of], dtype=np.int64)
    has_poster = load_npy(src["features_computed/has_poster.npy"], NAME, ndim=1).astype(bool)
    if len(has_poster) != len(movie_ids):
        raise GraphrecError(f"{NAME}: has_poster.npy has {len(has_poster)} rows, movie_ids.npy {len(movie_ids)}")
    feats = {}
    for m, f in FEATURES.items():
        x = load_npy(src[f"features_computed/{f}"], NAME, ndim=2)
        if x.shape[0] != len(movie_ids):
            raise GraphrecError(f"{NAME}: {f} has {x.shape[0]} rows, movie_ids.npy {len(movie_ids)}")
        feats[m] = as_features(x[rows], src[f"features_computed/{f}"], NAME)
    mask = MissingModalities(list(FEATURES), {"image": ~has_poster[rows], "text": np.zeros(n, dtype=bool)})

    users, items, labels = carve_valid(tr_u, tr_i, valid_seed)
    te_order = np.lexsort((te_i, te_u))
    users = np.concatenate([users, te_u[te_order]])
    items = np.concatenate([items, te_i[te_order]])
    labels = np.concatenate([labels, np.full(len(te_u), TEST, dtype=np.int8)])
    order = np.lexsort((items, labels, users))  # by user, then split, then item
    users, items, labels = users[order], items[order], labels[order]

    counts = label_counts(labels)
    miss = mask_counts(mask)
    no_poster = [{"item": int(i), "MovieID": int(movie_of[i])} for i in np.flatnonzero(mask.missing["image"])]
    info = {
        "dataset": NAME,
        "format": "MMRec (userID, itemID, x_label; 0 train / 1 valid / 2 test)",
        "command": f"graphrec datasets prepare {NAME} --source {root} --out OUT"
        + (f" --valid-seed {valid_seed}" if valid_seed != DEFAULT_VALID_SEED else ""),
        "options": {"valid_seed": valid_seed},
        "sources": source_record(src, root),
        "users": u,
        "items": n,
        "interactions": int(len(users)),
        "id_mapping": "CoLaKG's remapped ids; item i = MovieID item_map[i], feature row = index of that MovieID in movie_ids.npy",
        "splits": {"ml1m.inter": counts, "colakg_train_rows": int(len(tr_u)), "colakg_test_rows": int(len(te_u))},
        "split_rule": "CoLaKG test.txt -> test (x_label 2); valid (x_label 1) = max(1, floor(0.1 n)) of each user's n "
        f"train items drawn with numpy default_rng({valid_seed}) over rows sorted by (user, item); users with n < 3 "
        "keep all in train; the rest of train.txt -> train (x_label 0)",
        "modalities": {m: int(x.shape[1]) for m, x in feats.items()},
        "features": {m: f"features_computed/{f} rows via item_map.txt + movie_ids.npy" for m, f in FEATURES.items()},
        "missingness": {
            "definition": "natural: image missing = no poster (has_poster false); text (title + genres from movies.dat) "
            "exists for every item",
            "mask_file": "missing_items_natural.npy (graphrec mask format, one bool field per modality; in key terms v)",
            "missing": miss,
            "items_without_poster": no_poster,
        },
        "licence": LICENCE,
        "licence_files": [str(folder / "SOURCE.md"), str(folder / "README")],
    }
    prep = Prepared(NAME, info)
    prep.outputs["ml1m.inter"] = ("inter", (users, items, labels))
    for m, x in feats.items():
        prep.outputs[f"{m}_feat.npy"] = ("npy", x)
    prep.outputs["missing_items_natural.npy"] = ("mask", mask)
    prep.summary = [
        ("users x items", f"{u:,} x {n:,}"),
        ("interactions", f"{len(users):,} (CoLaKG train {len(tr_u):,} + test {len(te_u):,})"),
        ("train/valid/test", "/".join(f"{counts[k]:,}" for k in ("train", "valid", "test"))),
        ("modalities", ", ".join(f"{m} {x.shape[1]}-d" for m, x in feats.items())),
        ("missing (natural)", ", ".join(f"{m} {c:,}" for m, c in miss.items())),
    ]
    return prep
