"""``feature_norm``: per-modality normalisation before imputation, and warnings on raw tables."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from graphrec.config import resolve_config
from graphrec.data.dataset import load_dataset
from graphrec.data.feature_norm import feature_checks, norm_methods, normalize, normalize_features
from graphrec.errors import GraphrecError, GraphrecWarning

from conftest import write_mmrec_dir


@given(st.integers(2, 40), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_standardize_uses_observed_rows_and_l2_gives_unit_rows(n: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(50.0, 30.0, size=(n, d))
    observed = rng.random(n) < 0.7
    observed[:2] = True
    x[~observed] = 1e6  # garbage in missing rows must not enter the statistics
    z = normalize(x, "standardize", observed).astype(np.float64)
    std = x[observed].std(axis=0)
    ok = std > 0
    np.testing.assert_allclose(z[observed][:, ok].mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(z[observed][:, ok].std(axis=0), 1.0, rtol=1e-3)
    assert np.all(z[:, ~ok] == 0)
    u = normalize(x, "l2", observed).astype(np.float64)
    norms = np.linalg.norm(u, axis=1)
    np.testing.assert_allclose(norms[np.linalg.norm(x, axis=1) > 0], 1.0, rtol=1e-5)
    assert normalize(x, "none", observed) is x


def test_checks_warn_on_parallel_rows_and_extreme_scale_only() -> None:
    rng = np.random.default_rng(0)
    everyone = np.ones(500, dtype=bool)
    raw_audio = 150.0 + rng.uniform(-20, 20, size=(500, 128))  # values 130-170: nearly parallel rows, large norms
    notes = feature_checks("audio", raw_audio, everyone)
    assert any("nearly parallel (mean pairwise cosine 0.9" in n for n in notes)
    assert any("median row norm" in n and "extreme scale" in n for n in notes)
    assert feature_checks("image", rng.normal(size=(500, 64)), everyone) == []
    _, notes = normalize_features({"audio": raw_audio}, {"audio": ~everyone}, "standardize")
    assert notes == []  # normalised: nothing to warn about


def test_methods_per_modality_and_one_line_errors() -> None:
    assert norm_methods("l2", ["image", "audio"]) == {"image": "l2", "audio": "l2"}
    assert norm_methods({"audio": "standardize"}, ["image", "audio"]) == {"image": "none", "audio": "standardize"}
    for bad, msg in (("zscore", "must be one of none, l2, standardize"), ({"text": "l2"}, "names modality text"), (3, "must be one of")):
        with pytest.raises(GraphrecError, match=msg):
            norm_methods(bad, ["image", "audio"])


def test_dataset_applies_feature_norm_before_imputation_and_records_it(tmp_path) -> None:
    data = write_mmrec_dir(tmp_path / "d")
    raw = np.load(data / "image_feat.npy")
    np.save(data / "image_feat.npy", 200.0 + raw)  # shifted far from the origin: nearly parallel rows
    base = {"data_dir": str(data)}
    with pytest.warns(GraphrecWarning, match="nearly parallel"):  # the CLI shows it as one 'warning:' line
        ds = load_dataset(resolve_config("lightgcn", {}, [], base))
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphrecWarning)
        ds2 = load_dataset(resolve_config("lightgcn", {}, [], {**base, "feature_norm": {"image": "standardize"}}))
    obs = ~ds2.missing.missing["image"]
    np.testing.assert_allclose(ds2.features["image"][obs].mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(ds2.features["text"], ds.features["text"])  # other modality untouched
    assert ds2.source["feature_norm"] == {"image": "standardize"}
