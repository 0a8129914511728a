"""The chunked large-set synthetic generator (10^6 items / 10^7 interactions), on small sizes with the
threshold lowered: valid splits, unique pairs, planted cluster structure, determinism, the CLI option."""

from __future__ import annotations

import numpy as np
import pytest

import graphrec.data.synthetic as synthetic
from conftest import assert_user_error, invoke
from graphrec.data.interactions import TEST, TRAIN, VALID, read_inter
from graphrec.data.synthetic import make_synthetic


@pytest.fixture
def large_path(monkeypatch):
    monkeypatch.setattr(synthetic, "DENSE_PAIRS", 0)
    monkeypatch.setattr(synthetic, "USER_CHUNK", 37)  # several chunks, a ragged last one
    monkeypatch.setattr(synthetic, "ITEM_BLOCK", 100)


def test_large_path_rows(large_path):
    s = make_synthetic(n_users=300, n_items=2000, seed=3, mean_interactions=12)
    u, i, lab = s.inter.users, s.inter.items, s.inter.labels
    assert len(np.unique(u * 2000 + i)) == len(u)  # each (user, item) once
    counts = np.bincount(u, minlength=300)
    assert counts.min() >= 5 and abs(counts.mean() - 12) < 1.5
    for user in range(300):  # per user: max(1, round(n/10)) valid and test rows
        mine = lab[u == user]
        k = max(1, int(round(0.1 * len(mine))))
        assert (mine == VALID).sum() == k and (mine == TEST).sum() == k and (mine == TRAIN).sum() == len(mine) - 2 * k
    # planted structure: most of a user's items come from one cluster (random: about 1/10)
    m = np.zeros((300, 10))
    np.add.at(m, (u, s.item_cluster[i]), 1)
    assert (m.max(1) / m.sum(1)).mean() > 0.5
    assert {k: v.shape for k, v in s.features.items()} == {"image": (2000, 128), "text": (2000, 96)}
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in s.features.values())


def test_large_path_deterministic(large_path):
    a = make_synthetic(n_users=80, n_items=500, seed=1)
    b = make_synthetic(n_users=80, n_items=500, seed=1)
    c = make_synthetic(n_users=80, n_items=500, seed=2)
    np.testing.assert_array_equal(a.inter.items, b.inter.items)
    np.testing.assert_array_equal(a.features["image"], b.features["image"])
    assert not np.array_equal(a.inter.items[:50], c.inter.items[:50])


def test_small_path_unchanged_by_threshold():
    # below DENSE_PAIRS the original generator runs: 800 x 1000 default set, as before
    s = make_synthetic()  # checksums of the set as the generator wrote it before the large path existed
    assert len(s.inter.users) == 19859 and int(s.inter.items.sum()) == 9828265
    assert int((s.inter.users * 7 + s.inter.labels).sum()) == 56034847
    assert float(s.features["image"].sum()) == pytest.approx(1246.28515625, abs=1e-3)


def test_cli_interactions_option(tmp_path):
    r = invoke("datasets", "synth", "--out", tmp_path / "d", "--users", "60", "--items", "300", "--interactions", "8", "--no-mask")
    assert r.exit_code == 0, r.output
    inter = read_inter(tmp_path / "d" / "synthetic.inter")
    assert abs(np.bincount(inter.users).mean() - 8) < 1.5
    assert_user_error(invoke("datasets", "synth", "--out", tmp_path / "e", "--interactions", "2"), "--interactions: 'synth_interactions' must be >= 5")
