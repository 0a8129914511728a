"""Bad input gives one ``Error:`` line (exit 2) or a one-line warning, never a traceback or a
wrong answer (issue 11, parts 5 and 6): unwritable outputs, sparse or huge ids, tables that do
not fit in memory, unnamed feature files, train/test overlap, retrieval without ground truth,
plugin file paths, featurize row order and natural masks from ``.has.npy``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error, invoke, tiny_rows, write_inter_file, write_mmrec_dir
from graphrec.data.featurize import text_items
from graphrec.data.masks import load_mask_file
from graphrec.registry import BLOCKS

SMALL = ["--set", "synth_users=150", "--set", "synth_items=200", "--set", "device=cpu"]


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "a_file"
    f.write_text("not a folder\n")
    return f


# ----------------------------------------------------------------------------- unwritable outputs
def test_fit_into_unwritable_out(a_file):
    assert_user_error(invoke("fit", "lightgcn", "--epochs", "1", "--quiet", "--out", a_file / "sub", *SMALL),
                      f"cannot write to output folder '{a_file / 'sub'}'", "is a file, not a folder")


def test_bench_into_unwritable_out(a_file):
    assert_user_error(invoke("bench", "--model", "lightgcn", "--epochs", "1", "--quiet", "--out", a_file / "sub"),
                      f"cannot write to output folder '{a_file / 'sub'}'")


def test_featurize_into_unwritable_out_fails_before_encoding(tmp_path, a_file):
    (tmp_path / "items.tsv").write_text("1\tone\n2\ttwo\n")
    assert_user_error(invoke("featurize", "text", tmp_path / "items.tsv", "--out", a_file / "sub" / "text_feat.npy"),
                      "cannot write to the --out folder")


def test_mask_write_failure_is_one_line(tmp_path):
    d = write_mmrec_dir(tmp_path / "data")
    (d / "missing_items_0.2.npy").mkdir()  # something that cannot be replaced by a file
    line = assert_user_error(invoke("mask", "--data-dir", d, "--ratio", "0.2", "--overwrite"), "missing_items_0.2.npy")
    assert "Traceback" not in line


def test_os_errors_of_any_command_are_one_line(tmp_path, monkeypatch):
    """The CLI group turns a file-system error that escaped every check into one line."""
    import graphrec.data.masks as masks

    def denied(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(masks, "atomic_save_npy", denied)
    d = write_mmrec_dir(tmp_path / "data")
    assert_user_error(invoke("mask", "--data-dir", d, "--ratio", "0.2"), "Permission denied:", "missing_items_0.2.npy",
                      "choose a folder you can write to")


# ----------------------------------------------------------------------------- ids and memory
def test_stray_huge_id_is_refused_before_allocation(tmp_path):
    rows = tiny_rows() + [(0, 500_000_000, 0)]
    d = write_mmrec_dir(tmp_path / "data", rows=rows, features={})
    line = assert_user_error(invoke("fit", "lightgcn", "--data-dir", d, "--epochs", "1", "--quiet", "--out", tmp_path / "o"),
                             "item id 500000000 makes 500,000,001 items", "only 16 distinct item ids", "renumber the item ids 0..15")
    assert "119.2 GiB" in line


def test_id_beyond_int64(tmp_path):
    d = tmp_path / "data"
    write_inter_file(d / "toy.inter", text="userID\titemID\tx_label\n0\t1\t0\n99999999999999999999\t1\t1\n")
    assert_user_error(invoke("fit", "lightgcn", "--data-dir", d, "--quiet"), "toy.inter:3: id 99999999999999999999 does not fit in 64 bits")


def test_tables_that_do_not_fit_in_memory(tmp_path):
    line = assert_user_error(invoke("fit", "lightgcn", "--set", "embedding_size=100000000", "--epochs", "1", "--quiet",
                                    "--out", tmp_path / "o", *SMALL),
                             "LightGCN with embedding_size=100,000,000 on 150 users and 200 items", "lower embedding_size")
    assert "521.5 GiB for its embedding tables" in line


# ----------------------------------------------------------------------------- data files
def test_feature_file_without_modality_name(tmp_path):
    d = write_mmrec_dir(tmp_path / "data")
    np.save(d / "_feat.npy", np.zeros((15, 3), np.float32))
    assert_user_error(invoke("fit", "lightgcn", "--data-dir", d, "--quiet"), "_feat.npy': a feature file needs a modality name")


def test_pairs_in_train_and_test_warn_with_count(tmp_path):
    rows = tiny_rows()
    train = [(u, i) for u, i, lab in rows if lab == 0][:3]
    d = write_mmrec_dir(tmp_path / "data", rows=rows + [(u, i, 2) for u, i in train])
    r = invoke("fit", "lightgcn", "--data-dir", d, "--epochs", "1", "--quiet", "--out", tmp_path / "o", "--set", "device=cpu")
    assert r.exit_code == 0, r.output
    warns = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warns) == 1 and "3 (user, item) pair(s) of the test (x_label 2) split are train pairs too" in warns[0], r.stderr
    r = invoke("fit", "lightgcn", "--epochs", "1", "--quiet", "--out", tmp_path / "clean", *SMALL)
    assert r.exit_code == 0 and "warning:" not in r.stderr


def test_retrieval_eval_without_ground_truth_refuses(tmp_path):
    """Hidden rows that are zero in the feature files (real data) give no ground truth: refuse, no Hit@K."""
    rng = np.random.default_rng(0)
    feats = {"image": rng.normal(size=(15, 8)).astype(np.float32), "text": rng.normal(size=(15, 6)).astype(np.float32)}
    hidden = {"v": [0, 1, 2], "t": [3, 4], "all": [5]}
    feats["image"][[0, 1, 2, 5]] = 0
    feats["text"][[3, 4, 5]] = 0
    d = write_mmrec_dir(tmp_path / "data", features=feats, masks={"0.4": hidden})
    run = tmp_path / "run"
    r = invoke("fit", "dgmrec", "--data-dir", d, "--epochs", "1", "--quiet", "--out", run, "--set", "device=cpu", "--set", "knn_k=3")
    assert r.exit_code == 0, r.output
    assert_user_error(invoke("retrieval-eval", run), "retrieval-eval: the feature rows of the items that miss image, text are all zero",
                      "no ground truth")
    # and refine-graph into an unwritable folder is one line too
    (tmp_path / "f").write_text("x")
    assert_user_error(invoke("refine-graph", run, "--out", tmp_path / "f" / "sub"), "cannot write to output folder")


# ----------------------------------------------------------------------------- smaller traps (part 6)
PLUGIN = ("from graphrec.blocks import ItemGraphConv\nfrom graphrec.registry import register_block\n"
          "@register_block('{name}')\nclass C(ItemGraphConv):\n    '''a plugin block'''\n")


@pytest.mark.parametrize("how", ["absolute", "parent"])
def test_plugin_file_paths_from_any_directory(tmp_path, monkeypatch, how):
    name = f"path_conv_{how}"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / f"graphrec_path_plugin_{how}.py").write_text(PLUGIN.format(name=name))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", list(sys.path))
    arg = str(plugins / f"graphrec_path_plugin_{how}.py") if how == "absolute" else f"../plugins/graphrec_path_plugin_{how}.py"
    try:
        r = invoke("--plugin", arg, "blocks")
        assert r.exit_code == 0, r.output
        assert name in r.stdout
    finally:
        BLOCKS.unregister(name)
        sys.modules.pop(f"graphrec_path_plugin_{how}", None)
    assert_user_error(invoke("--plugin", "../plugins/nope.py", "blocks"), "plugin file '../plugins/nope.py' does not exist")


def test_featurize_text_rows_are_in_item_id_order(tmp_path):
    src = tmp_path / "items.tsv"
    src.write_text("10\tten\n2\ttwo\n1\tone\n")
    items, _ = text_items(src)
    assert items.ids == ["1", "2", "10"] and items.raw == ["one", "two", "ten"]


def test_mask_from_featurize_has_files(tmp_path):
    d = write_mmrec_dir(tmp_path / "data")
    has_image = np.ones(15, bool)
    has_image[[2, 7]] = False
    has_text = np.ones(15, bool)
    has_text[[7, 9]] = False
    np.save(tmp_path / "image_feat.has.npy", has_image)
    np.save(tmp_path / "text_feat.has.npy", has_text)
    r = invoke("mask", "--data-dir", d, "--has", f"image={tmp_path / 'image_feat.has.npy'}", "--has", f"text={tmp_path / 'text_feat.has.npy'}")
    assert r.exit_code == 0, r.output
    assert "missing_items_natural.npy" in r.stdout and "image missing: 2, text missing: 2" in r.stdout
    m = load_mask_file(d / "missing_items_natural.npy", ["image", "text"], 15)
    np.testing.assert_array_equal(m.missing["image"], ~has_image)
    np.testing.assert_array_equal(m.count(), (~has_image).astype(int) + (~has_text).astype(int))
    r = invoke("fit", "lightgcn", "--data-dir", d, "--epochs", "1", "--quiet", "--out", tmp_path / "o", "--set", "device=cpu")
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["dataset"]["missing"] == {"image": 2, "text": 2}
    np.save(tmp_path / "short.has.npy", np.ones(14, bool))
    assert_user_error(invoke("mask", "--data-dir", d, "--has", f"image={tmp_path / 'short.has.npy'}", "--overwrite"),
                      "has 14 rows but the dataset has 15 items")
    assert_user_error(invoke("mask", "--data-dir", d, "--has", f"image={tmp_path / 'image_feat.has.npy'}"), "exists; pass --overwrite")
    assert_user_error(invoke("mask", "--data-dir", d), "pass --ratio R")


@pytest.mark.parametrize("args,fragment", [(["--bogus", "models"], "No such option '--bogus' (see 'cli --help')"),
                                           (["fitt"], "No such command 'fitt'"),
                                           (["datasets", "synth", "--users", "x", "--out", "o"], "Invalid value for '--users'")])
def test_usage_errors_are_one_line(args, fragment):
    assert_user_error(invoke(*args), fragment)
