"""Checkpoints are plain data: weights_only loading, crafted and old checkpoints, the data
fingerprint and what ``evaluate --set`` may change (issue 11, parts 1 and 5)."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import assert_user_error, invoke, write_mmrec_dir
from graphrec.errors import GraphrecError
from graphrec.train.checkpoint import from_plain, read_checkpoint, to_plain

SMALL = ["--set", "synth_users=150", "--set", "synth_items=200", "--set", "device=cpu"]


def weights_only_round_trip(obj):
    buf = __import__("io").BytesIO()
    torch.save(to_plain(obj), buf)
    buf.seek(0)
    return from_plain(torch.load(buf, weights_only=True))


def assert_same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


DTYPES = st.sampled_from(["bool", "uint8", "int8", "int32", "int64", "uint16", "uint32", "uint64", "float16", "float32", "float64", "<U3"])
ARRAYS = DTYPES.flatmap(lambda d: hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)))
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=5),
                   ARRAYS, st.binary(max_size=8), st.frozensets(st.integers(0, 9), max_size=3).map(set))
PLAIN = st.recursive(LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=3), st.tuples(kids, kids),
                                                    st.dictionaries(st.text(max_size=4), kids, max_size=3)), max_leaves=12)


@given(PLAIN)
def test_anything_saved_as_extra_round_trips_under_weights_only(obj):
    """numpy arrays of any fixed dtype, big ints, bytes, sets, nesting: back as they went in."""
    assert_same(obj, weights_only_round_trip(obj))


def test_rng_states_and_numpy_scalars_round_trip():
    state = {"numpy": np.random.get_state(), "generator": np.random.default_rng(3).bit_generator.state,
             "torch": torch.get_rng_state(), "python": __import__("random").getstate(), "od": OrderedDict(a=1)}
    back = weights_only_round_trip(state)
    assert_same(state, back)
    np.random.set_state(back["numpy"])  # usable as they were
    assert weights_only_round_trip({"x": np.float32(0.5), "n": np.int64(7)}) == {"x": 0.5, "n": 7}
    with pytest.raises(TypeError, match=r"checkpoint\['f'\]: a builtins.function cannot be stored"):
        to_plain({"f": lambda: 0})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "run"
    r = invoke("fit", "dgmrec", "--epochs", "1", "--quiet", "--out", out, *SMALL)
    assert r.exit_code == 0, r.output
    return out


def test_dgmrec_checkpoint_is_plain_data(run_dir):
    """The extra state (CSR graphs, numpy) is stored as tensors and comes back as numpy."""
    raw = torch.load(run_dir / "model.pt", weights_only=True)
    extra = raw["state_dict"]["_extra_state"]
    assert isinstance(extra["graphs"]["image"]["indptr"]["__ndarray__"], torch.Tensor)
    payload = read_checkpoint(run_dir)
    assert isinstance(payload["state_dict"]["_extra_state"]["graphs"]["image"]["indptr"], np.ndarray)
    assert payload["data_fingerprint"]["users"] == 150 and len(payload["data_fingerprint"]["train_sha256"]) == 16


class _WritesAFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "model.pt"
    torch.save({"format": 1, "model": "lightgcn", "config": {}, "state_dict": {}, "x": _WritesAFile(marker)}, ckpt)
    torch.load(ckpt, weights_only=False)  # a plain torch.load runs it: the test can fail
    assert marker.exists()
    marker.unlink()
    for cmd in (["evaluate", ckpt], ["refine-graph", ckpt, "--out", tmp_path / "ref"], ["retrieve", ckpt, "--item", 0, "--modality", "image"],
                ["retrieval-eval", ckpt]):
        line = assert_user_error(invoke(*cmd), "refused: it holds pickled Python objects", "--trust-checkpoint", "graphrec checkpoint convert")
        assert "io.open" in line or "open" in line
        assert not marker.exists()
    assert not (tmp_path / "ref").exists()


def test_old_checkpoint_refused_then_trusted_and_converted(run_dir, tmp_path):
    """A checkpoint of an earlier graphrec (numpy pickled inside): a one-line error that says how to convert."""
    payload = read_checkpoint(run_dir)
    old = tmp_path / "old" / "model.pt"
    old.parent.mkdir()
    torch.save(payload, old)  # numpy arrays pickled as numpy objects, as graphrec wrote them before
    with pytest.raises(Exception):
        torch.load(old, weights_only=True)
    assert_user_error(invoke("evaluate", old), "refused", "numpy", "--trust-checkpoint", f"graphrec checkpoint convert {old}")
    want = json.loads(invoke("evaluate", run_dir, "--json").stdout)["metrics"]
    r = invoke("evaluate", old, "--json", "--trust-checkpoint")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"] == pytest.approx(want)
    r = invoke("checkpoint", "convert", old.parent)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "old" / "model.pt.orig").read_bytes() != old.read_bytes()
    torch.load(old, weights_only=True)
    r = invoke("evaluate", old, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"] == pytest.approx(want)
    assert_user_error(invoke("checkpoint", "convert", old), "model.pt.orig' exists")


def test_evaluate_on_other_data_and_training_keys(run_dir, tmp_path):
    assert_user_error(invoke("evaluate", run_dir, "--set", "learning_rate=0.1"),
                      "--set learning_rate: cannot change at evaluation", "evaluate may set topk")
    assert_user_error(invoke("evaluate", run_dir, "--set", "embedding_size=8", "--set", "topk=[5]"), "--set embedding_size")
    r = invoke("evaluate", run_dir, "--set", "topk=[5]", "--json")
    assert r.exit_code == 0 and "recall@5" in json.loads(r.stdout)["metrics"]
    # same sizes as the synthetic set, other interactions: the fingerprint catches it
    other = write_mmrec_dir(tmp_path / "other", rows=[(u, (u * 7 + k) % 200, [0, 0, 1, 2][k]) for u in range(150) for k in range(4)],
                            dims={"image": 64, "text": 32})
    line = assert_user_error(invoke("evaluate", run_dir, "--data-dir", other), "does not match the data this model was trained on")
    assert "train rows" in line or "modalities" in line
    with pytest.raises(GraphrecError):
        from graphrec.train.checkpoint import load_model

        load_model(run_dir, overrides={"data_dir": str(other)})


def test_save_checkpoint_extra_round_trips(tmp_path):
    """What the resume checkpoints store (optimizer and RNG states, numpy counters) comes back from read_checkpoint."""
    from conftest import small_config
    from graphrec.data.dataset import load_dataset
    from graphrec.models.build import build_model
    from graphrec.train.checkpoint import save_checkpoint

    config = small_config("lightgcn")
    model = build_model(load_dataset(config), config)
    opt = torch.optim.Adam(model.parameters())
    model.user_emb.sum().backward()
    opt.step()
    extra = {"optimizer": opt.state_dict(), "rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state()},
             "early_stopping": {"best": np.float64(0.25), "bad_epochs": np.int64(3), "history": [np.arange(3)]}}
    save_checkpoint(tmp_path / "model.pt", model, config, extra=extra)
    torch.load(tmp_path / "model.pt", weights_only=True)
    back = read_checkpoint(tmp_path)
    assert_same(extra["rng"], back["rng"])
    assert back["early_stopping"]["best"] == 0.25 and back["early_stopping"]["bad_epochs"] == 3
    np.testing.assert_array_equal(back["early_stopping"]["history"][0], np.arange(3))
    opt2 = torch.optim.Adam(model.parameters())
    opt2.load_state_dict(back["optimizer"])
    torch.testing.assert_close(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
