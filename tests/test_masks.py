"""Missing-modality masks: the authors' dict format and the papers' (nested) generation protocol."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import require_files
from graphrec.data.masks import (
    MissingModalities,
    generate_missing,
    load_mask_file,
    mask_file_keys,
    mask_file_name,
    save_mask_file,
)
from graphrec.errors import GraphrecError

MODALITY_SETS = [
    ["image", "text"],
    ["image", "text", "audio"],
    ["text"],
    ["video", "caption"],  # names without a one-letter code
    ["image", "video", "text"],  # mixed coded / uncoded
]


def as_matrix(m: MissingModalities) -> np.ndarray:
    return np.stack([m.missing[k] for k in m.modalities], axis=1)


def test_basic_views():
    m = MissingModalities(["image", "text"], {"image": np.array([1, 0, 1, 0], bool), "text": np.array([1, 1, 0, 0], bool)})
    np.testing.assert_array_equal(m.count(), [2, 1, 1, 0])
    np.testing.assert_array_equal(m.only("image"), [0, 0, 1, 0])
    np.testing.assert_array_equal(m.only("text"), [0, 1, 0, 0])
    np.testing.assert_array_equal(m.complete(), [0, 0, 0, 1])
    assert m.any_missing() and m.n_items == 4
    d = m.to_key_dict()
    assert set(d) == {"all", "t", "v"}
    np.testing.assert_array_equal(d["all"], [0])
    np.testing.assert_array_equal(d["t"], [1])
    np.testing.assert_array_equal(d["v"], [2])
    none = MissingModalities.none(["image"], 3)
    assert not none.any_missing() and none.to_key_dict() == {} and none.complete().all()


@given(
    mods=st.sampled_from(MODALITY_SETS),
    n=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
    p=st.floats(0.0, 1.0),
)
def test_key_dict_round_trip(mods, n, seed, p):
    rng = np.random.default_rng(seed)
    mat = rng.random((n, len(mods))) < p
    m = MissingModalities(list(mods), {k: mat[:, j].copy() for j, k in enumerate(mods)})
    d = m.to_key_dict()
    # keys are disjoint, sorted, and cover exactly the items missing something
    ids = np.concatenate(list(d.values())) if d else np.zeros(0, np.int64)
    assert len(ids) == len(np.unique(ids)) == int((m.count() > 0).sum())
    for v in d.values():
        assert (np.diff(v) > 0).all()
    back = MissingModalities.from_key_dict(d, list(mods), n)
    np.testing.assert_array_equal(as_matrix(back), mat)


def test_from_key_dict_drops_absent_modality_letters():
    """TikTok masks name text ('t'), whose features are absent: those letters are dropped."""
    d = {"t": [0], "v": [1], "a": [2], "tv": [3], "ta": [4], "va": [5], "all": [6]}
    m = MissingModalities.from_key_dict(d, ["image", "audio"], 8)
    np.testing.assert_array_equal(m.missing["image"], [0, 1, 0, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(m.missing["audio"], [0, 0, 1, 0, 1, 1, 1, 0])


@pytest.mark.parametrize(
    "d,pattern",
    [
        ({"v": [0, 9]}, r"key 'v' holds item id 9 outside 0\.\.4"),
        ({"v": [-1]}, "outside 0..4"),
        ({"v": [0, 1], "t": [1]}, "key 't' repeats items of another key"),
        ({"x": [0]}, r"key 'x' names unknown modality code\(s\) \['x'\]"),
    ],
)
def test_from_key_dict_errors(d, pattern):
    with pytest.raises(GraphrecError, match=pattern):
        MissingModalities.from_key_dict(d, ["image", "text"], 5, source="masks.npy")


def test_mask_file_round_trip_and_errors(tmp_path):
    m = generate_missing(50, ["image", "text", "audio"], 0.6, seed=3)
    p = tmp_path / mask_file_name("0.6")
    assert p.name == "missing_items_0.6.npy"
    assert mask_file_name(0.666) == "missing_items_0.666.npy"
    save_mask_file(p, m)
    raw = np.load(p, allow_pickle=False)  # graphrec's format needs no pickle: one bool field per modality
    assert raw.dtype.names == ("image", "text", "audio") and raw.shape == (50,)
    np.testing.assert_array_equal(raw["text"], m.missing["text"])
    back = load_mask_file(p, ["image", "text", "audio"], 50)
    np.testing.assert_array_equal(as_matrix(back), as_matrix(m))
    assert set(mask_file_keys(p)) == set(m.to_key_dict()) == {"v", "t", "a", "vt", "va", "ta", "all"}
    # fields of modalities the dataset does not load are ignored; a modality without a field misses nothing
    two = load_mask_file(p, ["image", "video"], 50)
    np.testing.assert_array_equal(two.missing["image"], m.missing["image"])
    assert not two.missing["video"].any()

    with pytest.raises(GraphrecError, match="does not exist"):
        load_mask_file(tmp_path / "missing_items_0.1.npy", ["image"], 5)
    with pytest.raises(GraphrecError, match="has 50 rows but the dataset has 49 items"):
        load_mask_file(p, ["image", "text", "audio"], 49)
    with pytest.raises(GraphrecError, match="none of this dataset's"):
        load_mask_file(p, ["video"], 50)
    arr = tmp_path / "missing_items_arr.npy"
    np.save(arr, np.arange(3))
    with pytest.raises(GraphrecError, match=r"missing_items_arr\.npy: expected a mask"):
        load_mask_file(arr, ["image"], 5)
    junk = tmp_path / "missing_items_junk.npy"
    junk.write_bytes(b"garbage")
    with pytest.raises(GraphrecError, match=r"missing_items_junk\.npy: cannot be read"):
        load_mask_file(junk, ["image"], 5)
    listed = tmp_path / "missing_items_list.npy"
    np.save(listed, np.array([{"v": [1]}, 2], dtype=object), allow_pickle=True)
    with pytest.raises(GraphrecError, match="expected a mask"):
        load_mask_file(listed, ["image"], 5)


def test_authors_pickled_dict_still_loads(tmp_path):
    """The DGMRec authors' format (an np.save'd dict of id arrays, lists and ints too) loads without running code."""
    p = tmp_path / "missing_items_0.5.npy"
    np.save(p, np.array({"v": np.array([0, 3]), "t": [1], "all": np.int64(2)}, dtype=object), allow_pickle=True)
    m = load_mask_file(p, ["image", "text"], 5)
    np.testing.assert_array_equal(as_matrix(m), [[1, 0], [0, 1], [1, 1], [1, 0], [0, 0]])


class _WritesAFile:
    """Unpickling this object creates ``path`` (as a crafted mask or checkpoint would run any code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_mask_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "missing_items_0.6.npy"
    np.save(p, np.array({"v": np.array([1]), "t": _WritesAFile(marker)}, dtype=object), allow_pickle=True)
    np.load(p, allow_pickle=True)  # the plain numpy loader runs the payload: the test can fail
    assert marker.exists()
    marker.unlink()
    with pytest.raises(GraphrecError) as info:
        load_mask_file(p, ["image", "text"], 5)
    msg = str(info.value)
    assert "\n" not in msg and str(p) in msg and "io.open" in msg and "not plain data" in msg
    assert not marker.exists()
    # an array subclass is refused too (only numpy.ndarray is rebuilt)
    sub = tmp_path / "missing_items_sub.npy"
    np.save(sub, np.array({"v": np.ma.masked_array([1])}, dtype=object), allow_pickle=True)
    with pytest.raises(GraphrecError, match="not plain data"):
        load_mask_file(sub, ["image"], 5)


# ----------------------------------------------------------------------------- generation protocol
@given(n=st.integers(1, 400), n_mod=st.sampled_from([2, 3]), seed=st.integers(0, 10_000))
def test_even_protocol_proportions(n, n_mod, seed):
    """ratio=None: 1/(M+1) of items at each of 0..M missing modalities (±1 item)."""
    mods = ["image", "text", "audio"][:n_mod]
    m = generate_missing(n, mods, None, seed=seed)
    counts = np.bincount(m.count(), minlength=n_mod + 1)
    assert len(counts) == n_mod + 1
    for c in counts:
        assert abs(c - n / (n_mod + 1)) <= 1, counts
    # within a level, the combinations are spread evenly too (±1)
    mat = as_matrix(m)
    for r in range(1, n_mod + 1):
        level = counts[r]
        for combo in itertools.combinations(range(n_mod), r):
            want = np.zeros(n_mod, bool)
            want[list(combo)] = True
            got = int((mat == want).all(axis=1).sum())
            assert abs(got - level / comb(n_mod, r)) <= 1


def test_even_protocol_exact_values():
    m2 = generate_missing(300, ["image", "text"], None, seed=1)
    np.testing.assert_array_equal(np.bincount(m2.count()), [100, 100, 100])
    assert m2.only("image").sum() == 50 and m2.only("text").sum() == 50
    m3 = generate_missing(400, ["image", "text", "audio"], None, seed=1)
    np.testing.assert_array_equal(np.bincount(m3.count()), [100, 100, 100, 100])


@given(
    n=st.integers(1, 300),
    n_mod=st.sampled_from([1, 2, 3]),
    ratios=st.lists(st.sampled_from([0.0, 0.1, 0.2, 0.4, 0.5, 0.6, 0.8, 0.95]), min_size=2, max_size=5),
    seed=st.integers(0, 10_000),
)
def test_nested_across_ratios(n, n_mod, ratios, seed):
    """An item missing something at a lower ratio misses the same modalities at every higher ratio."""
    mods = ["image", "text", "audio"][:n_mod]
    ratios = sorted(set(ratios))
    masks = [as_matrix(generate_missing(n, mods, r, seed=seed)) for r in ratios]
    for r, mat in zip(ratios, masks):
        assert mat.any(axis=1).sum() == int(round(r * n))
    for lo, hi in zip(masks, masks[1:]):
        was = lo.any(axis=1)
        np.testing.assert_array_equal(hi[was], lo[was])


def test_ratio_sweep_spreads_levels():
    m = generate_missing(600, ["image", "text"], 0.4, seed=0)
    counts = np.bincount(m.count(), minlength=3)
    assert counts[0] == 360 and counts[1] == 120 and counts[2] == 120


def test_seeded_reproducibility():
    a = generate_missing(200, ["image", "text"], 0.5, seed=42)
    b = generate_missing(200, ["image", "text"], 0.5, seed=42)
    c = generate_missing(200, ["image", "text"], 0.5, seed=43)
    np.testing.assert_array_equal(as_matrix(a), as_matrix(b))
    assert not np.array_equal(as_matrix(a), as_matrix(c))


def test_eligible_restricts_missing_items():
    eligible = np.zeros(100, bool)
    eligible[::2] = True
    m = generate_missing(100, ["image", "text"], 0.3, seed=0, eligible=eligible)
    assert not m.count()[~eligible].any()
    assert (m.count() > 0).sum() == 30
    with pytest.raises(GraphrecError, match="only 50 are eligible"):
        generate_missing(100, ["image", "text"], 0.6, eligible=eligible)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_invalid_ratio(ratio):
    with pytest.raises(GraphrecError, match=r"missing ratio must be in \[0, 1\)"):
        generate_missing(10, ["image"], ratio)


def test_no_modalities():
    with pytest.raises(GraphrecError, match="without modalities"):
        generate_missing(10, [], 0.5)


# ----------------------------------------------------------------------------- real masks
@pytest.mark.realdata
def test_tiktok_mask_with_image_audio(shared_data):
    """tiktok 0.6 mask read with the modalities that have features (image/audio): 't' letters dropped."""
    p = shared_data / "dgmrec-masks" / "tiktok" / "missing_items_0.6.npy"
    require_files(p)
    raw = mask_file_keys(p)  # the restricted reader gives the same dict as np.load(allow_pickle=True)
    assert all((raw[k] == v).all() for k, v in np.load(p, allow_pickle=True).item().items())
    sizes = {k: len(v) for k, v in raw.items()}
    assert sizes == {"t": 445, "v": 447, "a": 448, "tv": 447, "ta": 446, "va": 448, "all": 1343}  # spec 1.6
    three = load_mask_file(p, ["image", "text", "audio"], 6710)
    np.testing.assert_array_equal(np.bincount(three.count()), [2686, 445 + 447 + 448, 447 + 446 + 448, 1343])
    m = load_mask_file(p, ["image", "audio"], 6710)
    assert m.modalities == ["image", "audio"]
    assert m.missing["image"].sum() == 447 + 447 + 448 + 1343
    assert m.missing["audio"].sum() == 448 + 446 + 448 + 1343
    np.testing.assert_array_equal(np.bincount(m.count()), [2686 + 445, 447 + 447 + 448 + 446, 448 + 1343])
    # items missing only text are complete for image/audio
    assert m.complete()[raw["t"]].all()


@pytest.mark.realdata
@pytest.mark.parametrize(
    "dataset,n_items,sizes",
    [
        ("baby", 7050, {"t": 1174, "v": 1176, "all": 2350}),
        ("sports", 18357, {"t": 3058, "v": 3060, "all": 6119}),
        ("clothing", 23033, {"t": 3837, "v": 3838, "all": 7679}),
    ],
)
def test_amazon_masks(shared_data, dataset, n_items, sizes):
    p = shared_data / "dgmrec-masks" / dataset / "missing_items_0.666.npy"
    require_files(p)
    m = load_mask_file(p, ["image", "text"], n_items)
    assert m.only("text").sum() == sizes["t"] and m.only("image").sum() == sizes["v"]
    assert (m.count() == 2).sum() == sizes["all"]
    assert m.complete().sum() == n_items - sum(sizes.values())


def test_random_draw_is_per_item_nested_and_near_even() -> None:
    from graphrec.data.masks import generate_missing

    mods = ["image", "text", "audio"]
    even = generate_missing(6000, mods, None, seed=7, draw="random")
    counts = np.bincount(even.count(), minlength=4)
    assert abs(counts[0] - 1500) <= 1 and all(abs(c - 1500) < 150 for c in counts[1:])
    assert len(set(counts[1:])) > 1  # drawn, not cycled into exactly equal shares
    cycled = np.bincount(generate_missing(6000, mods, None, seed=7).count(), minlength=4)
    assert len(set(cycled.tolist())) == 1
    low, high = (generate_missing(6000, mods, r, seed=7, draw="random") for r in (0.2, 0.6))
    for m in mods:
        assert not np.any(low.missing[m] & ~high.missing[m])  # nested
