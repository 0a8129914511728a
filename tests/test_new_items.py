"""The new-item setting (spec 1.5, section 8 item 10)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import make_dataset, small_config, tiny_rows, write_inter_file, write_mmrec_dir
from graphrec.config import resolve_config
from graphrec.data.dataset import load_dataset
from graphrec.data.interactions import TEST, TRAIN, VALID, Interactions
from graphrec.data.new_items import apply_new_items, derive_new_items, select_new_items
from graphrec.data.sampler import BPRSampler
from graphrec.errors import GraphrecError, GraphrecWarning


def pairs(a: np.ndarray) -> set[tuple[int, int]]:
    return {(int(u), int(i)) for u, i in a}


@given(n=st.integers(5, 500), seed=st.integers(0, 2**31 - 1), max_count=st.integers(0, 50))
def test_select_new_items_stratified(n, seed, max_count):
    counts = np.random.default_rng(seed).integers(0, max_count + 1, size=n)
    new = select_new_items(counts)
    assert new.dtype == np.int64
    assert (np.diff(new) > 0).all()  # sorted, unique
    order = np.argsort(counts, kind="stable")  # ties in id order (documented)
    n_cold = int(np.floor(0.7 * n))
    cold, warm = set(order[:n_cold].tolist()), set(order[n_cold:].tolist())
    assert len(cold & set(new.tolist())) == int(np.floor(0.2 * len(cold)))
    assert len(warm & set(new.tolist())) == int(np.floor(0.2 * len(warm)))
    # deterministic (seed 1111 by default)
    np.testing.assert_array_equal(new, select_new_items(counts))


def test_select_new_items_groups_by_count():
    counts = np.arange(100)[::-1].copy()  # item i has 99 - i train rows: items 30..99 are cold
    new = select_new_items(counts)
    assert len(new) == 20
    assert (new >= 30).sum() == 14 and (new < 30).sum() == 6
    other = select_new_items(counts, seed=1)
    assert not np.array_equal(new, other) and len(other) == 20
    with pytest.raises(GraphrecError, match="fraction must be in"):
        select_new_items(counts, fraction=1.0)


def test_apply_new_items_moves_train_rows_to_test():
    rows = np.array(tiny_rows(n_users=20, n_items=30, per_user=8, seed=3))
    inter = Interactions(rows[:, 0], rows[:, 1], rows[:, 2].astype(np.int8), 20, 30)
    new = np.array([0, 4, 7, 11])
    out = apply_new_items(inter, new)
    is_new = np.isin(inter.items, new)
    # rows keep their order and ids; only labels change
    np.testing.assert_array_equal(out.users, inter.users)
    np.testing.assert_array_equal(out.items, inter.items)
    assert (out.n_users, out.n_items) == (20, 30)
    assert not np.isin(out.split(TRAIN)[:, 1], new).any()
    assert pairs(out.split(TRAIN)) == pairs(inter.split(TRAIN)) - pairs(rows[(rows[:, 2] == TRAIN) & is_new][:, :2])
    assert pairs(out.split(VALID)) == pairs(inter.split(VALID))  # valid unchanged
    moved = rows[(rows[:, 2] == TRAIN) & is_new][:, :2]
    assert len(moved) > 0
    assert pairs(out.split(TEST)) == pairs(inter.split(TEST)) | pairs(moved)
    assert inter.labels[is_new & (inter.labels == TRAIN)].size == len(moved)  # input untouched


def test_derive_new_items():
    full = Interactions(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 2, 3]), np.array([0, 0, 0, 1, 0], np.int8), 3, 5)
    reduced = Interactions(np.array([0, 1, 1]), np.array([0, 1, 2]), np.array([0, 0, 1], np.int8), 3, 5)
    # item 3 lost its train rows; item 2 never had one; item 4 has no row
    np.testing.assert_array_equal(derive_new_items(full, reduced), [3])


def test_build_dataset_rejects_new_items_with_train_rows():
    rows = [(0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 2)]
    with pytest.raises(GraphrecError, match="new items must not have train rows"):
        make_dataset(rows, new_items=np.array([1]))


def test_synthetic_new_item_setting():
    full = load_dataset(small_config())
    ds = load_dataset(small_config(synth_new_items=True))
    n_new = int(ds.new_items.sum())
    assert n_new == int(np.floor(0.2 * 140)) + int(np.floor(0.2 * 60))  # 200 items: 140 cold, 60 warm
    assert not ds.new_items[ds.train[:, 1]].any()
    # valid unchanged up to cold-user filtering against the reduced train
    has_train = np.zeros(ds.n_users, bool)
    has_train[ds.train[:, 0]] = True
    assert pairs(ds.valid) == {p for p in pairs(full.valid) if has_train[p[0]]}
    # test = full test ∪ the new items' former train rows (filtered the same way)
    moved = {p for p in pairs(full.train) if ds.new_items[p[1]]}
    assert moved
    assert pairs(ds.test) == {p for p in pairs(full.test) | moved if has_train[p[0]]}
    assert pairs(ds.train) == pairs(full.train) - moved
    groups = ds.item_groups()
    np.testing.assert_array_equal(groups["new"], ds.new_items)
    np.testing.assert_array_equal(groups["old"], ~ds.new_items)


def test_new_items_mean_imputation_uses_old_items_only():
    ds = load_dataset(small_config(synth_new_items=True))
    for m in ds.modalities:
        miss = ds.missing.missing[m]
        ref = ~miss & ~ds.new_items
        expected = ds.raw_features[m][ref].mean(0)
        np.testing.assert_allclose(ds.features[m][miss], np.broadcast_to(expected, (miss.sum(), len(expected))), rtol=1e-5)
        # a mean over all observed items (new ones included) would differ
        assert not np.allclose(ds.raw_features[m][~miss].mean(0), expected)


def test_directory_new_items_from_del_file_and_ids(tmp_path):
    rows = tiny_rows(n_users=20, n_items=25, per_user=8, seed=5)
    d = write_mmrec_dir(tmp_path / "d", rows, name="toy", dims={})
    arr = np.array(rows)
    drop = {3, 8}
    kept = [r for r in rows if not (r[2] == TRAIN and r[1] in drop)]
    write_inter_file(d / "toy_del.inter", kept)
    cfg = resolve_config("lightgcn", {}, overrides={"data_dir": str(d), "new_items": True})
    ds = load_dataset(cfg)
    np.testing.assert_array_equal(np.flatnonzero(ds.new_items), sorted(drop))
    moved = pairs(arr[(arr[:, 2] == TRAIN) & np.isin(arr[:, 1], list(drop))][:, :2])
    assert moved <= pairs(ds.test)
    # an explicit new_items.npy wins over the _del file
    np.save(d / "new_items.npy", np.array([3]))
    ds = load_dataset(cfg)
    np.testing.assert_array_equal(np.flatnonzero(ds.new_items), [3])
    np.save(d / "new_items.npy", np.array([99]))
    with pytest.raises(GraphrecError, match=r"new_items\.npy: item ids outside 0\.\.24"):
        load_dataset(cfg)


def test_sampler_never_yields_new_items_or_train_items():
    ds = load_dataset(small_config(synth_new_items=True))
    sampler = BPRSampler(ds.train, ds.n_items, exclude_items=ds.new_items, rng=np.random.default_rng(0))
    train_keys = set(map(tuple, ds.train.tolist()))
    for _ in range(3):
        for b in sampler.epoch(256):
            neg = b.neg.numpy()
            assert not ds.new_items[neg].any()
            assert not any((u, n) in train_keys for u, n in zip(b.users.tolist(), neg.tolist()))


def test_sampler_excludes_items_that_have_train_rows():
    # exclusion also applies to items that do have train rows (CI2MG asserts no new negative)
    rows = np.array([(u, i) for u in range(6) for i in range(u % 3, 10, 3)])
    excl = np.zeros(10, bool)
    excl[[0, 5]] = True
    s = BPRSampler(rows, 10, exclude_items=excl, rng=np.random.default_rng(1))
    assert not np.isin(s.pool, [0, 5]).any()
    neg = s.sample_negatives(np.repeat(np.arange(6), 200))
    assert not np.isin(neg, [0, 5]).any()


def test_a_del_file_given_as_the_full_file_warns(tmp_path):
    """A <name>_del.inter put in place of <name>.inter would lose another 20 % of items: a warning says so."""
    rows = tiny_rows(n_users=30, n_items=40, per_user=10, seed=6)
    drop = set(range(0, 40, 5))  # 8 of 40 items (20 %) keep only held-out rows, as in a _del file
    kept = [r for r in rows if not (r[2] == TRAIN and r[1] in drop)]
    d = write_mmrec_dir(tmp_path / "d", kept, name="toy", dims={})
    cfg = resolve_config("lightgcn", {}, overrides={"data_dir": str(d), "new_items": True})
    with pytest.warns(GraphrecWarning, match=r"already have held-out rows but no train rows.*toy_del\.inter"):
        load_dataset(cfg)
    full = write_mmrec_dir(tmp_path / "f", rows, name="toy", dims={})
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphrecWarning)
        load_dataset(resolve_config("lightgcn", {}, overrides={"data_dir": str(full), "new_items": True}))
