"""Imputation of missing raw features (spec 1.4): mean, zeros, nearest-neighbour mean."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import small_config
from graphrec.data.dataset import load_dataset
from graphrec.data.imputation import impute
from graphrec.data.masks import MissingModalities, generate_missing
from graphrec.errors import GraphrecError


def random_case(n: int, seed: int, mods=("image", "text"), ratio=None):
    rng = np.random.default_rng(seed)
    miss = generate_missing(n, list(mods), ratio, seed=seed)
    feats = {m: rng.normal(size=(n, 3 + j)).astype(np.float32) for j, m in enumerate(mods)}
    return feats, miss


@given(n=st.integers(3, 80), seed=st.integers(0, 10_000), ref_p=st.floats(0.0, 1.0))
def test_mean_imputation(n, seed, ref_p):
    feats, miss = random_case(n, seed)
    reference = np.random.default_rng(seed + 1).random(n) < ref_p
    before = {m: x.copy() for m, x in feats.items()}
    out = impute(feats, miss, "mean", reference=reference)
    for m, x in feats.items():
        np.testing.assert_array_equal(x, before[m])  # inputs untouched
        mm = miss.missing[m]
        np.testing.assert_array_equal(out[m][~mm], x[~mm])  # observed rows untouched
        src = ~mm & reference
        expected = x[src].mean(0) if src.any() else np.zeros(x.shape[1])
        np.testing.assert_allclose(out[m][mm], np.broadcast_to(expected, (mm.sum(), x.shape[1])), rtol=1e-5, atol=1e-6)
        assert out[m].dtype == np.float32


def test_mean_hand_case():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0], [5.0, 6.0]], dtype=np.float32)
    miss = MissingModalities(["image"], {"image": np.array([False, False, True, False])})
    out = impute({"image": x}, miss, "mean")
    np.testing.assert_allclose(out["image"][2], [3.0, 4.0])
    # item 3 is a new item: not a reference row
    out = impute({"image": x}, miss, "mean", reference=np.array([True, True, True, False]))
    np.testing.assert_allclose(out["image"][2], [2.0, 3.0])


def test_zeros():
    feats, miss = random_case(30, 0)
    out = impute(feats, miss, "zeros")
    for m, x in feats.items():
        mm = miss.missing[m]
        assert mm.any()
        assert (out[m][mm] == 0).all()
        np.testing.assert_array_equal(out[m][~mm], x[~mm])


def nn_reference(feats, miss, m, k, reference=None):
    """Brute force, two modalities: item i missing m (having o) <- mean of m over its k most
    cosine-similar (by o) items among those that have m and o (and are reference items);
    fewer than k such items: their mean; none: i keeps the mean imputation (not in the result)."""
    (o,) = [x for x in miss.modalities if x != m]
    n = miss.n_items
    ref = np.ones(n, bool) if reference is None else reference
    cand = np.flatnonzero(~miss.missing[m] & ~miss.missing[o] & ref)
    xo = feats[o] / np.linalg.norm(feats[o], axis=1, keepdims=True)
    out = {}
    for i in np.flatnonzero(miss.missing[m]):
        if miss.missing[o][i] or len(cand) == 0:
            continue
        sim = xo[cand] @ xo[i]
        top = cand[np.argsort(-sim)[:k]]
        out[i] = feats[m][top].mean(0)
    return out


@given(n=st.integers(6, 60), seed=st.integers(0, 10_000), k=st.integers(1, 6), chunk=st.integers(1, 70))
def test_nn_imputation_matches_brute_force(n, seed, k, chunk):
    feats, miss = random_case(n, seed, ratio=0.5)
    out = impute(feats, miss, "nn", nn_k=k, chunk_size=chunk)
    mean = impute(feats, miss, "mean")
    for m in miss.modalities:
        expected = nn_reference(feats, miss, m, k)
        for i in np.flatnonzero(miss.missing[m]):
            if i in expected:
                np.testing.assert_allclose(out[m][i], expected[i], rtol=1e-4, atol=1e-5)
            else:  # missing every modality: mean fallback
                np.testing.assert_allclose(out[m][i], mean[m][i], rtol=1e-5)
        np.testing.assert_array_equal(out[m][~miss.missing[m]], feats[m][~miss.missing[m]])


def test_nn_hand_case():
    # image: items 0,1 close to item 4 by text; item 4 misses image
    text = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0.2], [1, 0.05]], dtype=np.float32)
    image = np.array([[1, 1], [3, 3], [50, 50], [70, 70], [np.nan, np.nan]], dtype=np.float32)
    miss = MissingModalities(["image", "text"], {"image": np.array([0, 0, 0, 0, 1], bool), "text": np.zeros(5, bool)})
    out = impute({"image": image, "text": text}, miss, "nn", nn_k=2)
    np.testing.assert_allclose(out["image"][4], [2.0, 2.0])
    np.testing.assert_allclose(out["text"], text)


def test_nn_never_picks_incomparable_items():
    """A candidate that lacks the other modality is no neighbour, even against negative similarities."""
    text = np.array([[1, 0], [-1, 0.1], [0, 0], [-0.9, -0.2]], dtype=np.float32)
    image = np.array([[0, 0], [2, 4], [100, 100], [4, 2]], dtype=np.float32)
    miss = MissingModalities(
        ["image", "text"], {"image": np.array([1, 0, 0, 0], bool), "text": np.array([0, 0, 1, 0], bool)}
    )
    out = impute({"image": image, "text": text}, miss, "nn", nn_k=3)
    # candidates with image: 1, 2, 3; item 2 has no text, so only 1 and 3 (both negative cosines) count
    np.testing.assert_allclose(out["image"][0], [3.0, 3.0])


def test_nn_ignores_values_of_missing_rows():
    """Raw rows of missing items (NaN in real files, true values in the synthetic set) must not leak."""
    feats, miss = random_case(50, 7, ratio=0.6)
    nan = {m: x.copy() for m, x in feats.items()}
    other = {m: x.copy() for m, x in feats.items()}
    for m in miss.modalities:
        nan[m][miss.missing[m]] = np.nan
        other[m][miss.missing[m]] = 1e3
    a = impute(feats, miss, "nn", nn_k=3)
    for variant in (nan, other):
        b = impute(variant, miss, "nn", nn_k=3)
        for m in miss.modalities:
            assert np.isfinite(b[m]).all()
            np.testing.assert_allclose(b[m], a[m], rtol=1e-5, atol=1e-6)


def test_nn_uses_reference_items_only():
    feats, miss = random_case(60, 3, ratio=0.5)
    reference = np.ones(60, bool)
    reference[::4] = False
    out = impute(feats, miss, "nn", nn_k=2, reference=reference)
    for m in miss.modalities:
        expected = nn_reference(feats, miss, m, 2, reference)
        for i, v in expected.items():
            np.testing.assert_allclose(out[m][i], v, rtol=1e-4, atol=1e-5)


def test_unknown_method():
    feats, miss = random_case(10, 0)
    with pytest.raises(GraphrecError, match="unknown imputation 'knn'; choose one of mean, zeros, nn"):
        impute(feats, miss, "knn")
    with pytest.raises(GraphrecError, match="unknown imputation 'median'"):
        load_dataset(small_config(imputation="median"))


def test_dataset_keeps_raw_and_imputed():
    ds = load_dataset(small_config(imputation="zeros"))
    for m in ds.modalities:
        mm = ds.missing.missing[m]
        assert (ds.features[m][mm] == 0).all()
        # the synthetic set keeps the true features in raw_features
        assert not (ds.raw_features[m][mm] == 0).all()


@given(n_items=st.integers(3, 30), n_users=st.integers(1, 15), seed=st.integers(0, 10_000), ref_p=st.floats(0.3, 1.0))
def test_neigh_mean_matches_brute_force(n_items, n_users, seed, ref_p):
    """NN-injection (the DGMRec authors' missing_imputation 2): a missing row = unweighted mean over
    the items sharing a train user with it that observe the modality (and are reference items);
    none: the mean of the observed reference rows. Observed rows are untouched."""
    rng = np.random.default_rng(seed)
    feats, miss = random_case(n_items, seed)
    reference = rng.random(n_items) < ref_p
    train = np.stack([rng.integers(0, n_users, 40), rng.integers(0, n_items, 40)], axis=1)  # duplicates allowed
    out = impute(feats, miss, "neigh_mean", train=train, reference=reference)
    users_of = [set(train[train[:, 1] == j, 0]) for j in range(n_items)]
    for m, x in feats.items():
        mm = miss.missing[m]
        src = ~mm & reference
        np.testing.assert_array_equal(out[m][~mm], x[~mm])
        for i in np.flatnonzero(mm):
            nbrs = [j for j in np.flatnonzero(src) if users_of[i] & users_of[j]]
            want = x[nbrs].mean(0) if nbrs else x[src].mean(0) if src.any() else np.zeros(x.shape[1])
            np.testing.assert_allclose(out[m][i], want, rtol=1e-5, atol=1e-6)


def test_neigh_mean_needs_train_and_is_a_dataset_option():
    feats, miss = random_case(10, 0)
    with pytest.raises(GraphrecError, match="needs the train interactions"):
        impute(feats, miss, "neigh_mean")
    cfg = small_config(missing_imputation=2)  # the DGMRec authors' key and codes
    assert cfg["imputation"] == "neigh_mean" and "missing_imputation" not in cfg
    assert small_config(missing_imputation=[0])["imputation"] == "zeros"
    with pytest.raises(GraphrecError, match="'missing_imputation: 3' must be 0, 1 or 2"):
        small_config(missing_imputation=3)
    ds = load_dataset(small_config(imputation="neigh_mean"))
    mean_ds = load_dataset(small_config(imputation="mean"))
    m = ds.modalities[0]
    mm = ds.missing.missing[m]
    assert mm.any() and not np.allclose(ds.features[m][mm], mean_ds.features[m][mm])
