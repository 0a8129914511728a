"""Reading MMRec folders: .inter files, feature tables, split protocol and bad input (spec 1.1-1.2)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import link_files, require_files, tiny_rows, write_inter_file, write_mmrec_dir
from graphrec.config import resolve_config
from graphrec.data.dataset import find_inter_file, load_dataset
from graphrec.data.features import discover_modalities, load_features
from graphrec.data.interactions import TEST, TRAIN, VALID, read_inter, write_inter
from graphrec.errors import GraphrecError


def dir_config(data_dir, **kw):
    return resolve_config("lightgcn", {}, overrides={"data_dir": str(data_dir), **kw})


# ----------------------------------------------------------------------------- .inter reader
def test_read_write_round_trip(tmp_path):
    users = np.array([0, 0, 1, 3, 3])
    items = np.array([1, 4, 0, 2, 9])
    labels = np.array([0, 1, 0, 2, 0])
    p = tmp_path / "x.inter"
    write_inter(p, users, items, labels)
    inter = read_inter(p)
    np.testing.assert_array_equal(inter.users, users)
    np.testing.assert_array_equal(inter.items, items)
    np.testing.assert_array_equal(inter.labels, labels)
    # U and N are max id + 1 (ids without rows still count, spec 1.2)
    assert (inter.n_users, inter.n_items) == (4, 10)
    np.testing.assert_array_equal(inter.split(TRAIN), [[0, 1], [1, 0], [3, 9]])
    np.testing.assert_array_equal(inter.split(VALID), [[0, 4]])
    np.testing.assert_array_equal(inter.split(TEST), [[3, 2]])


def test_extra_columns_and_order_ignored(tmp_path):
    text = "rating\titemID\ttimestamp\tx_label\tuserID\n5\t3\t100\t0\t1\n4\t0\t101\t2\t0\n\n"
    inter = read_inter(write_inter_file(tmp_path / "y.inter", text=text))
    np.testing.assert_array_equal(inter.users, [1, 0])
    np.testing.assert_array_equal(inter.items, [3, 0])
    np.testing.assert_array_equal(inter.labels, [0, 2])


@pytest.mark.parametrize(
    "text,pattern",
    [
        ("userID\titemID\n0\t1\n", r"lacks column\(s\) x_label"),
        ("user\titem\tlabel\n0\t1\t0\n", r"lacks column\(s\) userID, itemID, x_label"),
        ("userID,itemID,x_label\n0,1,0\n", "lacks column"),  # comma- instead of tab-separated
        ("userID\titemID\tx_label\n0\tabc\t0\n", r":2: 'abc' is not an integer"),
        ("userID\titemID\tx_label\n0\t1\t0\n1.5\t1\t0\n", r":3: '1.5' is not an integer"),
        ("userID\titemID\tx_label\n0\t1\t3\n", r":2: x_label 3 is not 0 \(train\), 1 \(valid\) or 2 \(test\)"),
        ("userID\titemID\tx_label\n0\t1\t-1\n", r"x_label -1 is not"),
        ("userID\titemID\tx_label\n-1\t1\t0\n", r":2: negative id"),
        ("userID\titemID\tx_label\n0\t-4\t0\n", r"negative id"),
        ("userID\titemID\tx_label\n0\t1\n", r":2: expected 3 tab-separated columns, found 2"),
        ("userID\titemID\tx_label\n", "no interaction rows"),
        ("", "lacks column"),
    ],
    ids=[
        "missing-column",
        "no-required-columns",
        "comma-separated",
        "non-integer-item",
        "float-user",
        "unknown-label",
        "negative-label",
        "negative-user",
        "negative-item",
        "short-row",
        "header-only",
        "empty-file",
    ],
)
def test_malformed_inter(tmp_path, text, pattern):
    p = write_inter_file(tmp_path / "bad.inter", text=text)
    with pytest.raises(GraphrecError, match=pattern) as exc:
        read_inter(p)
    assert "bad.inter" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_inter_file(tmp_path):
    with pytest.raises(GraphrecError, match="nope.inter.*does not exist"):
        read_inter(tmp_path / "nope.inter")


# ----------------------------------------------------------------------------- features
def test_load_features_ok_and_cast(tmp_path):
    p = tmp_path / "image_feat.npy"
    np.save(p, np.arange(12, dtype=np.float16).reshape(4, 3))
    x = load_features(p, 4)
    assert x.dtype == np.float32 and x.shape == (4, 3)
    np.testing.assert_array_equal(x, np.arange(12).reshape(4, 3))


def test_feature_row_count_mismatch(tmp_path):
    p = tmp_path / "text_feat.npy"
    np.save(p, np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(GraphrecError, match=r"text_feat\.npy: has 5 rows but the interaction file has 7 items"):
        load_features(p, 7)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_features(tmp_path, bad):
    x = np.ones((6, 2), dtype=np.float32)
    x[3, 1] = bad
    p = tmp_path / "image_feat.npy"
    np.save(p, x)
    with pytest.raises(GraphrecError, match=r"image_feat\.npy: 1 row\(s\) hold NaN or inf \(first: item 3\)"):
        load_features(p, 6)
    # allowed when the item is listed as missing that modality
    allow = np.zeros(6, dtype=bool)
    allow[3] = True
    assert load_features(p, 6, allow).shape == (6, 2)


def test_feature_file_shape_and_dtype_errors(tmp_path):
    p = tmp_path / "a_feat.npy"
    np.save(p, np.zeros(4))
    with pytest.raises(GraphrecError, match="2-D array"):
        load_features(p, 4)
    np.save(p, np.array([["a", "b"]] * 4))
    with pytest.raises(GraphrecError, match="numeric"):
        load_features(p, 4)
    p.write_bytes(b"not a numpy file")
    with pytest.raises(GraphrecError, match="is not a .npy file"):
        load_features(p, 4)
    np.save(p, np.zeros((4, 2)))
    p.write_bytes(p.read_bytes()[:-8])  # truncated: a .npy header, too little data
    with pytest.raises(GraphrecError, match="cannot be read"):
        load_features(p, 4)
    with pytest.raises(GraphrecError, match="does not exist"):
        load_features(tmp_path / "none_feat.npy", 4)


def test_discover_modalities(tmp_path):
    for name in ("text_feat.npy", "image_feat.npy", "image_generated_feat.npy", "other.npy"):
        np.save(tmp_path / name, np.zeros((2, 2)))
    assert discover_modalities(tmp_path) == ["image", "text"]


# ----------------------------------------------------------------------------- folders -> dataset
def test_load_directory(mmrec_dir):
    ds = load_dataset(dir_config(mmrec_dir))
    assert ds.name == "toy"
    assert (ds.n_users, ds.n_items) == (12, 15)
    assert ds.modalities == ["image", "text"]
    assert ds.features["image"].shape == (15, 8) and ds.features["text"].shape == (15, 6)
    assert not ds.missing.any_missing() and not ds.new_items.any()
    rows = np.asarray(read_inter(mmrec_dir / "toy.inter").split(TRAIN))
    assert {tuple(r) for r in ds.train} == {tuple(r) for r in rows}
    # config keys to load the same data again travel with the dataset
    assert ds.source["data_dir"] == str(mmrec_dir)


def test_modalities_key_selects(mmrec_dir):
    ds = load_dataset(dir_config(mmrec_dir, modalities=["text"]))
    assert ds.modalities == ["text"] and list(ds.features) == ["text"]


def test_cold_user_filtering(tmp_path):
    # user 2 has only valid/test rows; user 3 only a test row
    rows = [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 1, 0), (1, 3, 1), (1, 0, 2), (2, 4, 1), (2, 5, 2), (3, 5, 2)]
    d = write_mmrec_dir(tmp_path / "d", rows, dims={})
    ds = load_dataset(dir_config(d))
    assert set(ds.valid[:, 0]) == {0, 1} and set(ds.test[:, 0]) == {0, 1}
    assert ds.n_users == 4 and ds.n_items == 6
    kept = load_dataset(dir_config(d, filter_cold_users=False))
    assert set(kept.valid[:, 0]) == {0, 1, 2} and set(kept.test[:, 0]) == {0, 1, 2, 3}


def test_duplicate_train_rows_are_merged(tmp_path):
    rows = [(0, 0, 0), (0, 0, 0), (0, 1, 1), (0, 2, 2)]
    ds = load_dataset(dir_config(write_mmrec_dir(tmp_path / "d", rows, dims={})))
    np.testing.assert_array_equal(ds.train, [[0, 0]])
    assert ds.train_matrix().sum() == 1


def test_empty_train_split(tmp_path):
    rows = [(0, 0, 1), (0, 1, 2), (1, 1, 1), (1, 2, 2)]
    d = write_mmrec_dir(tmp_path / "d", rows, dims={})
    with pytest.raises(GraphrecError, match=r"toy\.inter: the train split \(x_label 0\) is empty"):
        load_dataset(dir_config(d))


def test_empty_valid_after_cold_user_filtering(tmp_path):
    # the only validation user has no train row
    rows = [(0, 0, 0), (0, 1, 2), (1, 2, 1)]
    d = write_mmrec_dir(tmp_path / "d", rows, dims={})
    with pytest.raises(GraphrecError, match=r"toy\.inter: the valid \(x_label 1\) split is empty after dropping users"):
        load_dataset(dir_config(d))


def test_feature_mismatch_through_load_dataset(tmp_path):
    d = write_mmrec_dir(tmp_path / "d", tiny_rows(), features={"image": np.zeros((3, 4), dtype=np.float32)})
    with pytest.raises(GraphrecError, match=r"image_feat\.npy: has 3 rows .* 15 items"):
        load_dataset(dir_config(d))


def test_nan_features_through_load_dataset(tmp_path):
    x = np.random.default_rng(0).normal(size=(15, 4)).astype(np.float32)
    x[5] = np.nan
    d = write_mmrec_dir(tmp_path / "d", tiny_rows(), features={"image": x})
    with pytest.raises(GraphrecError, match=r"image_feat\.npy: 1 row\(s\) hold NaN.*item 5"):
        load_dataset(dir_config(d))
    # item 5 listed as missing image: accepted and imputed with the observed mean
    np.save(d / "missing_items_0.1.npy", np.array({"v": np.array([5])}, dtype=object), allow_pickle=True)
    ds = load_dataset(dir_config(d))
    assert ds.missing.missing["image"].sum() == 1
    assert np.isfinite(ds.features["image"]).all()
    np.testing.assert_allclose(ds.features["image"][5], np.delete(x, 5, axis=0).mean(0), rtol=1e-5)


def test_several_inter_files_need_dataset(tmp_path):
    d = write_mmrec_dir(tmp_path / "d", tiny_rows(), name="first", dims={})
    write_inter_file(d / "second.inter", tiny_rows(seed=1))
    with pytest.raises(GraphrecError, match=r"several \.inter files .*first, second.*--set dataset=NAME"):
        load_dataset(dir_config(d))
    assert load_dataset(dir_config(d, dataset="second")).name == "second"
    with pytest.raises(GraphrecError, match=r"third\.inter' does not exist"):
        load_dataset(dir_config(d, dataset="third"))


def test_del_files_are_not_candidates(tmp_path):
    d = write_mmrec_dir(tmp_path / "d", tiny_rows(), name="toy", dims={})
    write_inter_file(d / "toy_del.inter", tiny_rows())
    assert find_inter_file(d, None)[0] == "toy"


def test_no_inter_file_and_missing_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GraphrecError, match=r"no \.inter file in"):
        load_dataset(dir_config(tmp_path / "empty"))
    with pytest.raises(GraphrecError, match=r"data directory '.*nowhere' does not exist"):
        load_dataset(dir_config(tmp_path / "nowhere"))


def test_mask_file_selection(tmp_path):
    d = write_mmrec_dir(
        tmp_path / "d",
        tiny_rows(),
        masks={"0.2": {"v": np.array([1, 2])}, "0.4": {"v": np.array([1, 2]), "t": np.array([3])}},
    )
    with pytest.raises(GraphrecError, match=r"several mask files .*0\.2, 0\.4.*missing_ratio"):
        load_dataset(dir_config(d))
    ds = load_dataset(dir_config(d, missing_ratio=0.4))
    assert ds.missing.missing["image"].sum() == 2 and ds.missing.missing["text"].sum() == 1
    with pytest.raises(GraphrecError, match=r"missing_items_0\.9\.npy' does not exist.*graphrec mask"):
        load_dataset(dir_config(d, missing_ratio=0.9))
    ds = load_dataset(dir_config(d, mask_file=str(d / "missing_items_0.2.npy")))
    assert ds.missing.missing["image"].sum() == 2 and ds.missing.missing["text"].sum() == 0
    # missing_ratio none: no missing modality although the folder holds two masks
    ds = load_dataset(dir_config(d, missing_ratio="none"))
    assert not ds.missing.missing["image"].any() and not ds.missing.missing["text"].any()


def test_relative_mask_file_is_read_from_the_working_directory_then_data_dir(tmp_path, monkeypatch):
    d = write_mmrec_dir(tmp_path / "d", tiny_rows(), masks={"0.2": {"v": np.array([1, 2])}, "0.4": {"t": np.array([3])}})
    monkeypatch.chdir(tmp_path)
    ds = load_dataset(dir_config(d, mask_file="missing_items_0.4.npy"))  # not in the working directory: data_dir's
    assert ds.missing.missing["text"].sum() == 1 and not ds.missing.missing["image"].any()
    (tmp_path / "missing_items_0.4.npy").write_bytes((d / "missing_items_0.2.npy").read_bytes())
    ds = load_dataset(dir_config(d, mask_file="missing_items_0.4.npy"))  # the working directory's comes first
    assert ds.missing.missing["image"].sum() == 2
    with pytest.raises(GraphrecError, match=r"mask file 'nope\.npy' does not exist in the working directory nor in data_dir"):
        load_dataset(dir_config(d, mask_file="nope.npy"))
    with pytest.raises(GraphrecError, match=r"mask file '/nowhere/m\.npy' does not exist$"):
        load_dataset(dir_config(d, mask_file="/nowhere/m.npy"))
    # the synthetic set has no folder to read a mask from: an error, not a silently ignored key
    with pytest.raises(GraphrecError, match=r"'mask_file' applies to a data folder .*synth_missing"):
        load_dataset(resolve_config("lightgcn", {}, overrides={"mask_file": "missing_items_0.4.npy"}))


# ----------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_tiktok_full_split_counts(shared_data, tmp_path):
    """The TikTok files with real image/audio features load with the counts of spec 1.6."""
    masks, feats = shared_data / "dgmrec-masks" / "tiktok", shared_data / "tiktok-mmssl"
    files = {
        "tiktok.inter": masks / "tiktok.inter",
        "image_feat.npy": feats / "image_feat.npy",
        "audio_feat.npy": feats / "audio_feat.npy",
        "missing_items_0.6.npy": masks / "missing_items_0.6.npy",
    }
    require_files(*files.values())
    d = link_files(tmp_path / "tiktok", files)
    ds = load_dataset(dir_config(d))
    assert (ds.n_users, ds.n_items) == (9308, 6710)
    assert ds.modalities == ["audio", "image"]
    assert len(ds.train) == 59541 and len(np.unique(ds.train[:, 1])) == 6245
    assert len(ds.valid) == 6125 and len(np.unique(ds.valid[:, 0])) == 6125
    assert len(ds.test) == 3046 and len(np.unique(ds.test[:, 0])) == 3046
    for m in ds.modalities:
        assert np.isfinite(ds.features[m]).all() and ds.features[m].shape == (6710, 128)
        # every missing row holds the observed mean
        miss = ds.missing.missing[m]
        np.testing.assert_allclose(ds.features[m][miss], np.broadcast_to(ds.features[m][~miss].mean(0), (miss.sum(), 128)), rtol=1e-4, atol=1e-5)


@pytest.mark.realdata
def test_tiktok_new_item_runtime_sizes(shared_data, tmp_path):
    """New-item mode from tiktok.inter + tiktok_del.inter (spec 1.5 runtime sizes)."""
    masks = shared_data / "dgmrec-masks" / "tiktok"
    files = {"tiktok.inter": masks / "tiktok.inter", "tiktok_del.inter": masks / "tiktok_del.inter"}
    require_files(*files.values())
    d = link_files(tmp_path / "tiktok", files)
    ds = load_dataset(dir_config(d, new_items=True))
    assert ds.new_items.sum() == 1242  # derived: train rows in the full file, none in _del
    assert len(ds.train) == 48292
    assert len(ds.valid) == 5668 and len(np.unique(ds.valid[:, 0])) == 5668
    assert len(ds.test) == 13238 and len(np.unique(ds.test[:, 0])) == 4316
    assert not ds.new_items[ds.train[:, 1]].any()


def test_synth_interactions_sets_the_density():
    from conftest import small_config

    dense = load_dataset(small_config())
    sparse = load_dataset(small_config(synth_interactions=8))
    n_dense, n_sparse = (len(d.train) + len(d.valid) + len(d.test) for d in (dense, sparse))
    assert n_sparse < 0.5 * n_dense  # 8 vs 25 interactions per user on average
    assert 6 <= n_sparse / dense.n_users <= 10
    with pytest.raises(GraphrecError, match="synth_interactions"):
        load_dataset(small_config(synth_interactions=3))
