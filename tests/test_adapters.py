"""Dataset adapters (``graphrec datasets prepare``): real-data folders -> MMRec directories.

Tests marked ``realdata`` read ../shared/data (or $GRAPHREC_SHARED_DATA) and skip without it;
they write only under pytest's tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error, invoke, require_files
from graphrec.config import resolve_config
from graphrec.data import load_dataset
from graphrec.data.adapters import prepare_dataset
from graphrec.data.adapters._common import holdout_counts
from graphrec.data.adapters.ml100k import split_chronological
from graphrec.data.adapters.ml1m import carve_valid
from graphrec.data.interactions import TEST, TRAIN, VALID, read_inter
from graphrec.errors import GraphrecError


def dir_config(data_dir: Path, **kw):
    return resolve_config("lightgcn", {}, overrides={"data_dir": str(data_dir), **kw})



# ----------------------------------------------------------------------------- split rules (no data needed)
def test_holdout_counts():
    n = np.array([1, 2, 3, 9, 10, 19, 20, 25])
    assert holdout_counts(n).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]


def test_chronological_split_takes_the_latest_rows():
    # user 0: 20 rows (2 test, 2 valid); user 1: 2 rows (all train); user 2: 3 rows with tied timestamps
    users = np.r_[np.zeros(20, int), [1, 1], [2, 2, 2]]
    items = np.r_[np.arange(20), [0, 1], [7, 5, 6]]
    ts = np.r_[np.arange(20)[::-1] * 10, [5, 6], [1, 1, 1]]  # user 0: item 0 is the latest
    order, labels = split_chronological(users, items, ts)
    got = {(int(users[o]), int(items[o])): int(lab) for o, lab in zip(order, labels)}
    assert [got[(0, i)] for i in (0, 1, 2, 3, 4)] == [TEST, TEST, VALID, VALID, TRAIN]
    assert got[(1, 0)] == got[(1, 1)] == TRAIN
    assert (got[(2, 5)], got[(2, 6)], got[(2, 7)]) == (TRAIN, VALID, TEST)  # ties broken by item id


def test_carve_valid_is_seeded_and_per_user():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(5), [2, 3, 10, 25, 40])
    items = np.concatenate([rng.choice(100, k, replace=False) for k in (2, 3, 10, 25, 40)])
    u1, i1, l1 = carve_valid(users, items, seed=7)
    u2, i2, l2 = carve_valid(users[::-1].copy(), items[::-1].copy(), seed=7)  # input order does not matter
    assert np.array_equal(u1, u2) and np.array_equal(i1, i2) and np.array_equal(l1, l2)
    assert [int((l1[u1 == u] == VALID).sum()) for u in range(5)] == [0, 1, 1, 2, 4]
    _, _, l3 = carve_valid(users, items, seed=8)
    assert not np.array_equal(l1, l3)


# ----------------------------------------------------------------------------- bad input (no data needed)
def test_cli_missing_source_is_one_error_line(tmp_path):
    r = invoke("datasets", "prepare", "tiktok", "--source", tmp_path / "nope", "--out", tmp_path / "out")
    assert_user_error(r, "nope", "does not exist", "--source")
    assert not (tmp_path / "out").exists()


def test_cli_unknown_name(tmp_path):
    r = invoke("datasets", "prepare", "netflix", "--source", tmp_path, "--out", tmp_path / "out")
    assert_user_error(r, "unknown dataset 'netflix'", "tiktok", "ml100k", "ml1m")
    assert not (tmp_path / "out").exists()


def test_cli_option_of_another_dataset(tmp_path):
    r = invoke("datasets", "prepare", "ml1m", "--source", tmp_path, "--out", tmp_path / "out", "--min-rating", "4")
    assert_user_error(r, "--min-rating does not apply to dataset 'ml1m'")


def test_cli_non_empty_out_is_refused_before_reading(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = invoke("datasets", "prepare", "ml100k", "--source", tmp_path / "nope", "--out", out)
    assert_user_error(r, "not empty", "--overwrite")
    assert (out / "keep.txt").read_text() == "x"


def test_missing_source_folder_and_files(tmp_path):
    with pytest.raises(GraphrecError, match=r"ml100k: source folder .*ml100k-mm' does not exist"):
        prepare_dataset("ml100k", tmp_path)
    ck = tmp_path / "ml1m-posters" / "colakg_ml1m"
    ck.mkdir(parents=True)
    (ck / "train.txt").write_text("0 1 2\n")
    with pytest.raises(GraphrecError, match=r"ml1m: .*colakg_ml1m' lacks test\.txt, item_map\.txt") as exc:
        prepare_dataset("ml1m", tmp_path)
    assert "\n" not in str(exc.value)
    (tmp_path / "dgmrec-masks" / "tiktok").mkdir(parents=True)
    with pytest.raises(GraphrecError, match=r"tiktok: .*lacks tiktok\.inter, tiktok_del\.inter"):
        prepare_dataset("tiktok", tmp_path)


def test_default_source_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHREC_SHARED_DATA", str(tmp_path / "absent"))
    with pytest.raises(GraphrecError, match="GRAPHREC_SHARED_DATA .*absent' does not exist"):
        prepare_dataset("tiktok")


# ----------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def tiktok_dir(shared_data, tmp_path_factory) -> Path:
    src = shared_data / "dgmrec-masks" / "tiktok"
    require_files(src / "tiktok.inter", src / "tiktok_del.inter", shared_data / "tiktok-mmssl" / "image_feat.npy")
    out = tmp_path_factory.mktemp("prepared") / "tiktok"
    r = invoke("datasets", "prepare", "tiktok", "--source", shared_data, "--out", out)
    assert r.exit_code == 0, r.output
    assert "new items" in r.stderr and "1,242" in r.stderr
    return out


@pytest.mark.realdata
def test_tiktok_prepared_files(tiktok_dir, shared_data):
    masks_src = shared_data / "dgmrec-masks" / "tiktok"
    assert sorted(p.name for p in tiktok_dir.iterdir()) == sorted(
        ["tiktok.inter", "tiktok_del.inter", "image_feat.npy", "audio_feat.npy", "missing_items_0.6.npy",
         "missing_items_0.75.npy", "new_items.npy", "PREPARED.json"]
    )
    for f in ("tiktok.inter", "tiktok_del.inter", "missing_items_0.6.npy", "missing_items_0.75.npy"):
        assert (tiktok_dir / f).read_bytes() == (masks_src / f).read_bytes(), f
    for m in ("image", "audio"):
        x = np.load(tiktok_dir / f"{m}_feat.npy")
        assert x.shape == (6710, 128) and x.dtype == np.float32
        np.testing.assert_array_equal(x, np.load(shared_data / "tiktok-mmssl" / f"{m}_feat.npy").astype(np.float32))
    info = json.loads((tiktok_dir / "PREPARED.json").read_text())
    assert (info["users"], info["items"]) == (9308, 6710)
    assert info["splits"]["tiktok.inter"] == {"train": 59541, "valid": 6130, "test": 3051}
    assert info["splits"]["tiktok_del.inter"]["train"] == 48292
    assert "research" in info["licence"]
    ni = info["new_items"]
    assert ni["count"] == ni["derived_count"] == 1242 and ni["regenerated_count"] == 1341
    assert ni["reproduces_del_train_split"] and ni["per_count_consistent_above_zero"]
    assert ni["upstream_total"] == 1341 and ni["upstream_zero_train_count"] == 99
    # every new item has zero train rows in the _del file
    new = np.load(tiktok_dir / "new_items.npy")
    red = read_inter(tiktok_dir / "tiktok_del.inter")
    assert not np.isin(red.items[red.labels == TRAIN], new).any()


@pytest.mark.realdata
def test_tiktok_prepared_loads_with_spec_counts(tiktok_dir):
    ds = load_dataset(dir_config(tiktok_dir, dataset="tiktok", missing_ratio=0.6))
    assert (ds.n_users, ds.n_items) == (9308, 6710)
    assert len(ds.train) == 59541 and ds.modalities == ["audio", "image"]
    keys = np.load(tiktok_dir / "missing_items_0.6.npy", allow_pickle=True).item()
    omega_v = sum(len(keys[k]) for k in ("all", "v", "tv", "va"))
    assert omega_v == 1343 + 447 + 447 + 448
    assert ds.missing.missing["image"].sum() == omega_v
    assert ds.missing.missing["audio"].sum() == sum(len(keys[k]) for k in ("all", "a", "ta", "va"))


@pytest.mark.realdata
def test_tiktok_prepared_new_item_setting(tiktok_dir):
    ds = load_dataset(dir_config(tiktok_dir, dataset="tiktok", missing_ratio=0.6, new_items=True))
    assert len(ds.train) == 48292 and ds.new_items.sum() == 1242
    assert len(ds.valid) == 5668 and len(ds.test) == 13238
    assert not ds.new_items[ds.train[:, 1]].any()


def _prepare_ml100k(shared_data: Path, out: Path, *extra) -> None:
    require_files(shared_data / "ml100k-mm" / "u.data", shared_data / "ml100k-mm" / "features_computed")
    r = invoke("datasets", "prepare", "ml100k", "--source", shared_data, "--out", out, *extra)
    assert r.exit_code == 0, r.output


@pytest.mark.realdata
def test_ml100k_prepared(shared_data, tmp_path):
    out = tmp_path / "ml100k"
    _prepare_ml100k(shared_data, out)
    ds = load_dataset(dir_config(out))
    assert (ds.n_users, ds.n_items) == (943, 1682)
    assert ds.modalities == ["image", "text"]
    assert ds.missing.missing["image"].sum() == 62 and ds.missing.missing["text"].sum() == 91
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 100_000
    fc = shared_data / "ml100k-mm" / "features_computed"
    np.testing.assert_array_equal(np.load(out / "image_feat.npy"), np.load(fc / "image_opennsfw_pool1024.npy"))
    assert np.array_equal(~np.load(fc / "has_imdb_desc.npy"), ds.missing.missing["text"])
    # split rule: per user, every test row is at least as recent as every valid row, valid >= train
    inter = read_inter(out / "ml100k.inter")
    import pandas as pd

    df = pd.read_csv(out / "ml100k.inter", sep="\t")
    assert list(df.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    g = df.groupby(["userID", "x_label"])["timestamp"]
    lo, hi = g.min().unstack(), g.max().unstack()
    assert (hi[TRAIN] <= lo[VALID]).all() and (hi[VALID] <= lo[TEST]).all()
    n = df.groupby("userID").size()
    k = holdout_counts(n.to_numpy())
    assert np.array_equal(df[df.x_label == TEST].groupby("userID").size().reindex(n.index).to_numpy(), k)
    assert np.array_equal(df[df.x_label == VALID].groupby("userID").size().reindex(n.index).to_numpy(), k)
    assert inter.n_items == 1682
    info = json.loads((out / "PREPARED.json").read_text())
    assert info["missingness"]["missing"] == {"image": 62, "text": 91}
    assert info["splits"]["ml100k.inter"] == {"train": 80808, "valid": 9596, "test": 9596}


@pytest.mark.realdata
def test_ml100k_is_reproducible_and_min_rating(shared_data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _prepare_ml100k(shared_data, a)
    _prepare_ml100k(shared_data, b)
    for p in sorted(a.iterdir()):
        assert p.read_bytes() == (b / p.name).read_bytes(), p.name
    c = tmp_path / "c"
    _prepare_ml100k(shared_data, c, "--min-rating", "4")
    ds = load_dataset(dir_config(c))
    info = json.loads((c / "PREPARED.json").read_text())
    assert info["interactions"] == 34174 + 21201 and info["options"] == {"min_rating": 4}
    assert ds.n_items == np.load(c / "image_feat.npy").shape[0]  # rows stay aligned with item ids


@pytest.mark.realdata
def test_ml1m_prepared(shared_data, tmp_path):
    src = shared_data / "ml1m-posters"
    require_files(src / "colakg_ml1m" / "train.txt", src / "features_computed" / "movie_ids.npy")
    out = tmp_path / "ml1m"
    r = invoke("datasets", "prepare", "ml1m", "--source", shared_data, "--out", out)
    assert r.exit_code == 0, r.output
    ds = load_dataset(dir_config(out))
    assert (ds.n_users, ds.n_items) == (6040, 3260)
    assert ds.missing.missing["image"].sum() == 3 and ds.missing.missing["text"].sum() == 0
    assert len(ds.test) == 197_321 and len(ds.train) + len(ds.valid) == 801_218
    assert len(ds.valid) == int(holdout_counts(np.bincount(np.r_[ds.train[:, 0], ds.valid[:, 0]])).sum())
    # features follow item_map.txt -> movie_ids.npy
    item_map = np.loadtxt(src / "colakg_ml1m" / "item_map.txt", dtype=np.int64)
    movie_ids = np.load(src / "features_computed" / "movie_ids.npy")
    movie, item = item_map[5]
    row = int(np.flatnonzero(movie_ids == movie)[0])
    np.testing.assert_array_equal(
        np.load(out / "text_feat.npy")[item], np.load(src / "features_computed" / "text_title_genres_minilm384.npy")[row]
    )
    info = json.loads((out / "PREPARED.json").read_text())
    assert sorted(x["MovieID"] for x in info["missingness"]["items_without_poster"]) == [1421, 1423, 3935]
    assert info["options"] == {"valid_seed": 2025}
