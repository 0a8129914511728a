"""The ``graphrec`` command line, through click's CliRunner (no subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import assert_user_error, invoke, tiny_rows, write_inter_file, write_mmrec_dir
from graphrec.data.masks import load_mask_file

SMALL = ["--set", "synth_users=150", "--set", "synth_items=200"]



@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lgcn"
    r = invoke("fit", "lightgcn", "--epochs", "2", "--out", out, "--quiet", "--seed", "3", *SMALL)
    assert r.exit_code == 0, r.output
    return out


# ----------------------------------------------------------------------------- fit / evaluate
def test_fit_writes_run_folder(fitted):
    assert {p.name for p in fitted.iterdir()} >= {"config.yaml", "metrics.json", "model.pt"}
    cfg = yaml.safe_load((fitted / "config.yaml").read_text())
    assert cfg["model"] == "lightgcn" and cfg["epochs"] == 2 and cfg["seed"] == 3 and cfg["synth_users"] == 150
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert metrics["model"] == "lightgcn"
    assert metrics["dataset"]["users"] == 150 and metrics["dataset"]["items"] == 200
    assert metrics["epochs_run"] == 2 and len(metrics["history"]) == 2
    assert 0.0 <= metrics["test"]["metrics"]["recall@20"] <= 1.0
    assert set(metrics["test"]["groups"]) == {"missing=0", "missing=1", "missing=2"}


def test_fit_quiet_prints_json_line(tmp_path):
    r = invoke("fit", "mfbpr", "--epochs", "1", "--out", tmp_path / "r", "--quiet", *SMALL)
    assert r.exit_code == 0
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["out"] == str(tmp_path / "r") and "recall@20" in line["test"]
    assert r.stderr.strip() == ""  # --quiet: no progress, no tables


def test_fit_refuses_non_empty_out(fitted):
    before = (fitted / "metrics.json").read_bytes()
    r = invoke("fit", "lightgcn", "--epochs", "1", "--out", fitted, "--quiet", *SMALL)
    assert_user_error(r, str(fitted), "not empty", "--overwrite")
    assert (fitted / "metrics.json").read_bytes() == before


def test_fit_overwrite_and_out_is_file(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "junk.txt").write_text("x")
    # --overwrite replaces only a run folder: other folders are refused, their files untouched
    r = invoke("fit", "mfbpr", "--epochs", "1", "--out", out, "--overwrite", "--quiet", *SMALL)
    assert_user_error(r, str(out), "replaces only a graphrec run folder", "junk.txt")
    assert [p.name for p in out.iterdir()] == ["junk.txt"]
    f = tmp_path / "file"
    f.write_text("x")
    assert_user_error(invoke("fit", "mfbpr", "--epochs", "1", "--out", f, "--quiet", *SMALL), "is a file")


def test_evaluate_reproduces_metrics(fitted):
    expected = json.loads((fitted / "metrics.json").read_text())["test"]["metrics"]
    r = invoke("evaluate", fitted / "model.pt", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["model"] == "lightgcn" and got["split"] == "test"
    assert got["metrics"].keys() == expected.keys()
    for k, v in expected.items():
        assert got["metrics"][k] == pytest.approx(v, abs=1e-6), k
    # the run folder works as well, and valid can be evaluated
    r = invoke("evaluate", fitted, "--json", "--split", "valid")
    assert r.exit_code == 0 and json.loads(r.stdout)["split"] == "valid"


def test_evaluate_table_and_topk_override(fitted):
    r = invoke("evaluate", fitted, "--set", "topk=[5]")
    assert r.exit_code == 0
    assert "recall@5" in r.stdout and "recall@20" not in r.stdout


def test_same_seed_same_run(tmp_path):
    """Two fits with the same --seed in one process give identical results (model init is seeded)."""
    res = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        r = invoke("fit", "lightgcn", "--epochs", "1", "--seed", seed, "--out", tmp_path / name, "--quiet", *SMALL)
        assert r.exit_code == 0
        res.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    assert res[0]["test"] == res[1]["test"]
    assert res[0]["history"][0]["loss"] == res[1]["history"][0]["loss"]
    assert res[0]["history"][0]["loss"] != res[2]["history"][0]["loss"]


# ----------------------------------------------------------------------------- listings
def test_models_listing():
    r = invoke("models")
    assert r.exit_code == 0
    assert "lightgcn" in r.stdout and "mfbpr" in r.stdout


@pytest.mark.parametrize("name,keys", [("lightgcn", ["n_layers", "reg_weight"]), ("mfbpr", ["reg_weight"])])
def test_models_keys(name, keys):
    r = invoke("models", name)
    assert r.exit_code == 0
    for k in keys + ["learning_rate", "epochs", "data_dir", "synth_users", "missing_ratio"]:
        assert k in r.stdout, k
    assert "model" in r.stdout and "trainer" in r.stdout and "data" in r.stdout


def test_blocks_listing():
    r = invoke("blocks")
    assert r.exit_code == 0
    assert "lightgcn_conv" in r.stdout and "lightgcn" in r.stdout
    assert "ui, iu" in r.stdout


@pytest.mark.parametrize(
    "args",
    [[], ["fit"], ["evaluate"], ["models"], ["blocks"], ["datasets"], ["datasets", "synth"], ["mask"]],
    ids=lambda a: " ".join(a) or "graphrec",
)
def test_help(args):
    r = invoke(*args, "--help")
    assert r.exit_code == 0
    assert "Usage:" in r.stdout
    r = invoke(*args, "-h")
    assert r.exit_code == 0


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0 and "0.1.0" in r.stdout


# ----------------------------------------------------------------------------- datasets / masks
@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("synth") / "d"
    r = invoke("datasets", "synth", "--out", d, "--users", "80", "--items", "120", "--seed", "1")
    assert r.exit_code == 0, r.output
    return d


def test_datasets_synth_files(synth_dir):
    names = {p.name for p in synth_dir.iterdir()}
    assert names >= {"synthetic.inter", "image_feat.npy", "text_feat.npy", "missing_items_even.npy"}
    assert np.load(synth_dir / "image_feat.npy").shape[0] == 120
    m = load_mask_file(synth_dir / "missing_items_even.npy", ["image", "text"], 120)
    np.testing.assert_array_equal(np.bincount(m.count()), [40, 40, 40])
    assert_user_error(invoke("datasets", "synth", "--out", synth_dir), "not empty")
    assert_user_error(invoke("datasets", "synth", "--out", synth_dir / "x", "--users", "3"), "--users: 'synth_users' must be >= 10")


def test_fit_on_written_folder(synth_dir, tmp_path):
    r = invoke("fit", "lightgcn", "--data-dir", synth_dir, "--epochs", "1", "--out", tmp_path / "r", "--quiet")
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["dataset"]["name"] == "synthetic" and metrics["dataset"]["items"] == 120
    assert metrics["dataset"]["missing"] == {"image": 60, "text": 60}
    r = invoke("evaluate", tmp_path / "r", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["metrics"]["recall@20"] == pytest.approx(metrics["test"]["metrics"]["recall@20"], abs=1e-6)


def test_mask_command_nested_and_no_overwrite(tmp_path):
    d = tmp_path / "d"
    assert invoke("datasets", "synth", "--out", d, "--users", "40", "--items", "100", "--no-mask").exit_code == 0
    assert not list(d.glob("missing_items_*"))
    r = invoke("mask", "--data-dir", d, "--ratio", "0.2", "--ratio", "0.4")
    assert r.exit_code == 0, r.output
    assert "missing_items_0.2.npy" in r.stdout and "missing_items_0.4.npy" in r.stdout
    m2 = load_mask_file(d / "missing_items_0.2.npy", ["image", "text"], 100)
    m4 = load_mask_file(d / "missing_items_0.4.npy", ["image", "text"], 100)
    assert (m2.count() > 0).sum() == 20 and (m4.count() > 0).sum() == 40
    was = m2.count() > 0
    for m in ("image", "text"):
        np.testing.assert_array_equal(m4.missing[m][was], m2.missing[m][was])
    before = (d / "missing_items_0.2.npy").read_bytes()
    assert_user_error(invoke("mask", "--data-dir", d, "--ratio", "0.2", "--seed", "5"), "missing_items_0.2.npy", "--overwrite")
    assert (d / "missing_items_0.2.npy").read_bytes() == before
    r = invoke("mask", "--data-dir", d, "--ratio", "0.2", "--seed", "5", "--overwrite")
    assert r.exit_code == 0 and (d / "missing_items_0.2.npy").read_bytes() != before
    # several masks now: fit needs missing_ratio
    r = invoke("fit", "mfbpr", "--data-dir", d, "--epochs", "1", "--out", tmp_path / "r", "--quiet")
    assert_user_error(r, "several mask files", "missing_ratio")
    r = invoke("fit", "mfbpr", "--data-dir", d, "--epochs", "1", "--out", tmp_path / "r", "--quiet", "--set", "missing_ratio=0.4")
    assert r.exit_code == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["dataset"]["missing"] == {
        "image": int(m4.missing["image"].sum()),
        "text": int(m4.missing["text"].sum()),
    }


def test_mask_even_and_modalities(tmp_path):
    d = write_mmrec_dir(tmp_path / "d", tiny_rows(n_users=20, n_items=30))
    r = invoke("mask", "--data-dir", d, "--ratio", "even", "--modalities", "text")
    assert r.exit_code == 0
    m = load_mask_file(d / "missing_items_even.npy", ["text"], 30)
    assert m.missing["text"].sum() == 15


# ----------------------------------------------------------------------------- bad input
def _write(tmp: Path, text: str, name: str = "toy") -> Path:
    d = write_mmrec_dir(tmp / "d", tiny_rows(), name=name)
    (d / f"{name}.inter").write_text(text)
    return d


def case_missing_column(tmp):
    return ["fit", "lightgcn", "--data-dir", _write(tmp, "userID\titemID\n0\t1\n")], ["toy.inter", "x_label"]


def case_non_integer(tmp):
    return ["fit", "lightgcn", "--data-dir", _write(tmp, "userID\titemID\tx_label\n0\tfoo\t0\n")], ["toy.inter:2", "'foo' is not an integer"]


def case_unknown_label(tmp):
    return ["fit", "lightgcn", "--data-dir", _write(tmp, "userID\titemID\tx_label\n0\t1\t7\n")], ["toy.inter:2", "x_label 7"]


def case_negative_id(tmp):
    return ["fit", "lightgcn", "--data-dir", _write(tmp, "userID\titemID\tx_label\n-3\t1\t0\n")], ["toy.inter:2", "negative id"]


def case_empty_file(tmp):
    return ["fit", "lightgcn", "--data-dir", _write(tmp, "")], ["toy.inter", "lacks column"]


def case_header_only(tmp):
    return ["fit", "lightgcn", "--data-dir", _write(tmp, "userID\titemID\tx_label\n")], ["toy.inter", "no interaction rows"]


def case_feature_no_columns(tmp):
    d = write_mmrec_dir(tmp / "d", tiny_rows(), features={"image": np.zeros((15, 0), np.float32)})
    return ["fit", "lightgcn", "--data-dir", d], ["image_feat.npy", "0 feature columns"]


def case_feature_not_npy(tmp):
    d = write_mmrec_dir(tmp / "d", tiny_rows(), features={"image": np.zeros((15, 2), np.float32)})
    (d / "image_feat.npy").write_text("1,2\n3,4\n")
    return ["fit", "lightgcn", "--data-dir", d], ["image_feat.npy", "is not a .npy file", "numpy.save"]


def case_feature_rows(tmp):
    d = write_mmrec_dir(tmp / "d", tiny_rows(), features={"image": np.zeros((4, 3), np.float32)})
    return ["fit", "lightgcn", "--data-dir", d], ["image_feat.npy", "has 4 rows", "15 items"]


def case_nan_features(tmp):
    x = np.ones((15, 3), np.float32)
    x[2, 0] = np.nan
    d = write_mmrec_dir(tmp / "d", tiny_rows(), features={"text": x})
    return ["fit", "lightgcn", "--data-dir", d], ["text_feat.npy", "NaN or inf", "item 2"]


def case_empty_train(tmp):
    d = write_mmrec_dir(tmp / "d", [(0, 0, 1), (0, 1, 2), (1, 1, 1), (1, 2, 2)], dims={})
    return ["fit", "lightgcn", "--data-dir", d], ["toy.inter", "train split (x_label 0) is empty"]


def case_empty_valid(tmp):
    d = write_mmrec_dir(tmp / "d", [(0, 0, 0), (0, 1, 2), (1, 2, 1)], dims={})
    return ["fit", "lightgcn", "--data-dir", d], ["toy.inter", "valid (x_label 1) split is empty", "no train row"]


def case_unknown_model(tmp):
    return ["fit", "lightgnc"], ["unknown model 'lightgnc'", "did you mean 'lightgcn'"]


def case_unknown_key(tmp):
    return ["fit", "lightgcn", "--set", "lerning_rate=0.1"], ["unknown config key 'lerning_rate'", "learning_rate"]


def case_unknown_key_in_file(tmp):
    f = tmp / "cfg.yaml"
    f.write_text("n_layer: 2\n")
    return ["fit", "lightgcn", "--config", f], ["cfg.yaml", "unknown config key 'n_layer'"]


def case_wrong_type(tmp):
    return ["fit", "lightgcn", "--set", "train_batch_size=many"], ["'train_batch_size' must be an integer", "many"]


def case_zero_batch(tmp):
    return ["fit", "lightgcn", "--set", "train_batch_size=0"], ["'train_batch_size' must be >= 1, got 0"]


def case_bad_topk(tmp):
    return ["fit", "lightgcn", "--set", "topk=[0]"], ["'topk' must be a non-empty list of positive integers"]


def case_zero_eval_step(tmp):
    return ["fit", "lightgcn", "--set", "eval_step=0"], ["'eval_step' must be >= 1"]


def case_bad_modality_name(tmp):
    return ["fit", "lightgcn", "--set", "synth_modalities=[image, a/b]"], ["synth_modalities", "'a/b'"]


def case_duplicate_modality(tmp):
    return ["datasets", "synth", "--out", tmp / "out", "--modalities", "image,image"], ["'image' is listed more than once"]


def case_evaluate_bad_override(tmp):
    ck = tmp / "ck"
    tiny = ["--set", "synth_users=30", "--set", "synth_items=40"]
    assert invoke("fit", "mfbpr", "--epochs", "1", "--quiet", "--out", ck, *tiny).exit_code == 0
    return ["evaluate", ck, "--set", "topk=[0]"], ["'topk' must be a non-empty list of positive integers"]


def case_wrong_type_bool(tmp):
    return ["fit", "lightgcn", "--set", "filter_cold_users=maybe"], ["'filter_cold_users' must be true or false"]


def case_several_inter(tmp):
    d = write_mmrec_dir(tmp / "d", tiny_rows(), name="one")
    write_inter_file(d / "two.inter", tiny_rows(seed=2))
    return ["fit", "lightgcn", "--data-dir", d], ["several .inter files", "one, two", "--set dataset=NAME"]


def case_missing_data_dir(tmp):
    return ["fit", "lightgcn", "--data-dir", tmp / "nowhere"], ["nowhere", "does not exist"]


def case_missing_config(tmp):
    return ["fit", "lightgcn", "--config", tmp / "none.yaml"], ["none.yaml", "does not exist"]


def case_bad_set(tmp):
    return ["fit", "lightgcn", "--set", "epochs"], ["--set expects key=value", "'epochs'"]


def case_unknown_imputation(tmp):
    return ["fit", "lightgcn", "--set", "imputation=magic", *SMALL], ["unknown imputation 'magic'"]


def case_missing_checkpoint(tmp):
    return ["evaluate", tmp / "none" / "model.pt"], ["model.pt", "does not exist"]


def case_bad_checkpoint(tmp):
    (tmp / "bad.pt").write_bytes(b"zzz")
    return ["evaluate", tmp / "bad.pt"], ["bad.pt", "not a graphrec checkpoint"]


def case_mask_bad_ratio(tmp):
    return ["mask", "--data-dir", write_mmrec_dir(tmp / "d"), "--ratio", "lots"], ["--ratio 'lots'"]


def case_mask_ratio_range(tmp):
    return ["mask", "--data-dir", write_mmrec_dir(tmp / "d"), "--ratio", "1.5"], ["missing ratio must be in [0, 1)"]


def case_mask_no_dir(tmp):
    return ["mask", "--data-dir", tmp / "nowhere", "--ratio", "0.2"], ["nowhere", "does not exist"]


def case_unknown_model_keys(tmp):
    return ["models", "dgmrecc"], ["unknown model 'dgmrecc'"]


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


@pytest.mark.parametrize("args", [["--seed", "-5"], ["--epochs", "-1"], ["--epochs", "0"]])
def test_out_of_range_options_are_usage_errors(args, tmp_path):
    line = assert_user_error(invoke("fit", "lightgcn", *args, "--quiet", "--out", tmp_path / "o"), f"Invalid value for '{args[0]}'",
                             args[1], "see 'cli fit --help'")
    assert not (tmp_path / "o").exists()
    if args == ["--epochs", "0"]:
        assert "x>=1" in line
        assert_user_error(invoke("fit", "lightgcn", "--set", "epochs=0", "--quiet"), "'epochs' must be >= 1")


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_bad_input_is_one_line_exit_2(tmp_path, case):
    args, fragments = case(tmp_path)
    out = tmp_path / "out"
    if args[0] == "fit":
        args = [*args, "--epochs", "1", "--out", out, "--quiet"]
    r = invoke(*args)
    assert_user_error(r, *fragments)
    assert r.stdout == ""
    # nothing half-written
    assert not out.exists() or not any(out.iterdir())
