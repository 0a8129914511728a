"""DGMRec's command-line tools: refine-graph, retrieve and retrieval-eval (CliRunner, no subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_user_error, invoke
from graphrec.graph.io import load_item_graph
from graphrec.train.checkpoint import load_model

SMALL = ["--set", "synth_users=150", "--set", "synth_items=200", "--set", "device=cpu"]



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dgmrec") / "D"
    r = invoke("fit", "dgmrec", "--epochs", "2", "--quiet", "--out", out, *SMALL)
    assert r.exit_code == 0, r.output
    assert (out / "model.pt").is_file()
    return out


@pytest.fixture(scope="module")
def loaded(run_dir):
    model, dataset, payload = load_model(run_dir / "model.pt")
    model.eval()
    return model, dataset, payload


@pytest.fixture(scope="module")
def refined_dir(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("refine") / "R"
    r = invoke("refine-graph", run_dir / "model.pt", "--out", out)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def lightgcn_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lgcn") / "L"
    r = invoke("fit", "lightgcn", "--epochs", "1", "--quiet", "--out", out, *SMALL)
    assert r.exit_code == 0, r.output
    return out


# ----------------------------------------------------------------------------- refine-graph
def test_refine_graph_writes_generated_features(refined_dir, loaded):
    model, dataset, payload = loaded
    assert dataset.modalities == ["image", "text"]
    for m in dataset.modalities:
        feats = np.load(refined_dir / f"{m}_feat_generated.npy")
        mask = np.load(refined_dir / f"{m}_generated_mask.npy")
        miss = dataset.missing.missing[m]
        assert feats.shape == dataset.features[m].shape and feats.dtype == np.float32
        np.testing.assert_array_equal(mask, miss)  # Ω_m
        # generated rows differ from the imputed mean, every one of them
        assert (np.abs(feats[miss] - dataset.features[m][miss]).max(axis=1) > 1e-4).all()
        assert len(np.unique(feats[miss].round(5), axis=0)) > 1  # not one shared vector
        # observed rows are the dataset's own features, untouched (--observed-rows input, the default)
        np.testing.assert_array_equal(feats[~miss], dataset.features[m][~miss].astype(np.float32))
        # generation is noise-free: the file equals the model's generated features
        gen = model.generated_features()[m]
        np.testing.assert_allclose(feats[miss], gen[miss], rtol=1e-5, atol=1e-6)
    summary = json.loads((refined_dir / "refine_summary.json").read_text())
    assert set(summary["modalities"]) == set(dataset.modalities)
    for m, v in summary["modalities"].items():
        assert v["generated_rows"] == int(dataset.missing.missing[m].sum())
        assert 0 < v["refinement_edges"] < v["edges"]


def test_refine_graph_reports_the_scale_of_generated_rows(refined_dir, loaded):
    """refine_summary.json records the median norms of the generated and observed rows of each file and their ratio."""
    _, dataset, _ = loaded
    summary = json.loads((refined_dir / "refine_summary.json").read_text())["modalities"]
    for m, v in summary.items():
        feats = np.load(refined_dir / f"{m}_feat_generated.npy")
        miss = dataset.missing.missing[m]
        norms = np.linalg.norm(feats, axis=1)
        assert v["median_norm_generated"] == pytest.approx(float(np.median(norms[miss])), rel=1e-6)
        assert v["median_norm_observed"] == pytest.approx(float(np.median(norms[~miss])), rel=1e-6)
        assert v["norm_ratio"] == pytest.approx(v["median_norm_generated"] / v["median_norm_observed"])


def test_refine_graph_warns_when_generated_rows_are_off_scale(run_dir, tmp_path, monkeypatch):
    """Generation that overshot (DGMRec's reconstruction feedback on ML-100K: norms ~1,000x the real rows) is
    written as asked, with one warning line per modality that is off by more than 10x, naming the fix."""
    from graphrec.models.dgmrec import DGMRec

    original = DGMRec.export_refined

    def overshooting(self, lam=None):
        out = original(self, lam)
        m = min(out)
        out[m]["features"] = out[m]["features"].copy()
        out[m]["features"][out[m]["generated"]] *= 1000.0
        return out

    monkeypatch.setattr(DGMRec, "export_refined", overshooting)
    r = invoke("refine-graph", run_dir, "--out", tmp_path / "x")
    assert r.exit_code == 0, r.output
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning: generated")]
    assert len(warned) == 1 and "recon_rows=observed" in warned[0], r.stderr
    m = warned[0].split()[2]
    summary = json.loads((tmp_path / "x" / "refine_summary.json").read_text())["modalities"]
    assert summary[m]["norm_ratio"] > 10
    assert all(0.1 <= v["norm_ratio"] <= 10 for k, v in summary.items() if k != m)


def test_refine_graph_observed_rows_trained(run_dir, loaded, tmp_path):
    """``--observed-rows trained``: observed rows are the model's trained raw table (it moved in training)."""
    _, dataset, payload = loaded
    r = invoke("refine-graph", run_dir, "--out", tmp_path / "t", "--observed-rows", "trained")
    assert r.exit_code == 0, r.output
    m = dataset.modalities[0]
    miss = dataset.missing.missing[m]
    feats = np.load(tmp_path / "t" / f"{m}_feat_generated.npy")
    trained = payload["state_dict"][f"raw.{m}"].numpy()
    np.testing.assert_array_equal(feats[~miss], trained[~miss])
    assert not np.allclose(trained[~miss], dataset.features[m][~miss])  # so the two options differ
    assert json.loads((tmp_path / "t" / "refine_summary.json").read_text())["observed_rows"] == "trained"


def test_refine_graph_edges_point_into_generated_items(refined_dir, loaded):
    model, dataset, _ = loaded
    n = dataset.n_items
    for m in dataset.modalities:
        a, is_ref = load_item_graph(refined_dir / f"{m}_item_graph.npz")
        raw = np.load(refined_dir / f"{m}_item_graph.npz")
        assert a.shape == (n, n) and len(is_ref) == a.nnz == len(raw["src"])
        miss = dataset.missing.missing[m]
        dst, src = raw["dst"], raw["src"]
        assert is_ref.any()
        assert miss[dst[is_ref]].all()  # refinement edges point into generated items
        assert not miss[dst[~is_ref]].any()  # ... and every edge into a generated item is one
        # every generated item aggregates from at least one other item now
        nb = dst[is_ref & (src != dst)]
        assert set(np.flatnonzero(miss)) <= set(nb.tolist())
        # nobody else started aggregating from generated items; rows of observed items are the model's
        current = model.graphs[m].toarray()
        dense = a.toarray()
        np.testing.assert_allclose(dense[~miss], current[~miss], rtol=0, atol=0)
        assert not dense[np.ix_(~miss, miss)].any()
        assert (raw["weight"] > 0).all()


def test_refine_graph_generates_items_missing_every_modality(refined_dir, loaded):
    _, dataset, _ = loaded
    full = dataset.missing.count() == len(dataset.modalities)
    assert full.any()  # the 'even' protocol: 1/3 of items miss both modalities
    for m in dataset.modalities:
        mask = np.load(refined_dir / f"{m}_generated_mask.npy")
        feats = np.load(refined_dir / f"{m}_feat_generated.npy")
        assert mask[full].all()
        assert (np.abs(feats[full] - dataset.features[m][full]).max(axis=1) > 1e-4).all()
        a, is_ref = load_item_graph(refined_dir / f"{m}_item_graph.npz")
        coo = a.tocoo()
        into_full = full[coo.row] & (coo.row != coo.col)
        assert is_ref[into_full].all() and set(coo.row[into_full]) == set(np.flatnonzero(full))


def test_refine_graph_lambda_zero_keeps_graph(run_dir, loaded, tmp_path):
    model, dataset, _ = loaded
    out = tmp_path / "R0"
    r = invoke("refine-graph", run_dir, "--out", out, "--lambda", "0")
    assert r.exit_code == 0, r.output
    for m in dataset.modalities:
        a, is_ref = load_item_graph(out / f"{m}_item_graph.npz")
        assert not is_ref.any()
        np.testing.assert_allclose(a.toarray(), model.graphs[m].toarray(), rtol=0, atol=0)
    assert_user_error(invoke("refine-graph", run_dir, "--out", tmp_path / "bad", "--lambda", "1.5"), "--lambda")


def test_refine_graph_refuses_non_empty_out(run_dir, refined_dir):
    before = {p.name: p.stat().st_mtime_ns for p in refined_dir.iterdir()}
    assert_user_error(invoke("refine-graph", run_dir / "model.pt", "--out", refined_dir), "not empty", "--overwrite")
    assert {p.name: p.stat().st_mtime_ns for p in refined_dir.iterdir()} == before  # nothing written
    r = invoke("refine-graph", run_dir / "model.pt", "--out", refined_dir, "--overwrite")
    assert r.exit_code == 0, r.output


def test_refine_graph_on_lightgcn_is_a_clear_error(lightgcn_dir, tmp_path):
    line = assert_user_error(invoke("refine-graph", lightgcn_dir / "model.pt", "--out", tmp_path / "R"), "lightgcn")
    assert "does not generate missing modalities" in line
    assert not (tmp_path / "R").exists()
    assert_user_error(invoke("retrieve", lightgcn_dir, "--item", "0", "--modality", "image"), "lightgcn")
    assert_user_error(invoke("retrieval-eval", lightgcn_dir), "lightgcn")


def test_refine_graph_missing_checkpoint(tmp_path):
    assert_user_error(invoke("refine-graph", tmp_path / "nope.pt", "--out", tmp_path / "R"), "does not exist")


# ----------------------------------------------------------------------------- retrieve
def test_retrieve_ranks_items_that_have_the_modality(run_dir, loaded):
    model, dataset, _ = loaded
    miss = dataset.missing.missing["image"]
    item = int(np.flatnonzero(miss)[0])
    r = invoke("retrieve", run_dir, "--item", item, "--modality", "image", "-k", "5", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["item"] == item and out["modality"] == "image" and out["status"] == "missing"
    ranking = out["ranking"]
    assert [x["rank"] for x in ranking] == [1, 2, 3, 4, 5]
    ids = [x["item"] for x in ranking]
    assert len(set(ids)) == 5
    assert not miss[ids].any()  # all have the modality
    cos = [x["cosine"] for x in ranking]
    assert all(a >= b - 1e-6 for a, b in zip(cos, cos[1:]))
    # brute force: cosine of the generated feature with every item that has an image
    q = torch.from_numpy(model.generated_features()["image"][item]).double()
    table = torch.from_numpy(dataset.features["image"]).double()
    sims = torch.nn.functional.cosine_similarity(q.unsqueeze(0), table, dim=1).numpy()
    sims[miss] = -np.inf
    expected = np.argsort(-sims, kind="stable")[:5]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(cos, sims[expected], atol=1e-5)


def test_retrieve_never_returns_items_without_the_modality(run_dir, loaded):
    _, dataset, _ = loaded
    miss = dataset.missing.missing["image"]
    item = int(np.flatnonzero(miss)[1])
    r = invoke("retrieve", run_dir, "--item", item, "--modality", "image", "-k", "199", "--json")
    assert r.exit_code == 0, r.output
    ids = [x["item"] for x in json.loads(r.stdout)["ranking"]]
    assert sorted(ids) == np.flatnonzero(~miss).tolist()  # every item with an image, nothing else


def test_retrieve_observed_item_and_table_output(run_dir, loaded):
    _, dataset, _ = loaded
    item = int(np.flatnonzero(~dataset.missing.missing["text"])[0])
    r = invoke("retrieve", run_dir, "--item", item, "--modality", "text", "-k", "3", "--json")
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["status"] == "observed" and len(out["ranking"]) == 3
    r = invoke("retrieve", run_dir, "--item", item, "--modality", "text", "-k", "2")
    assert r.exit_code == 0 and "rank" in r.stdout


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--item", "0", "--modality", "audio"], "unknown modality 'audio'"),
        (["--item", "200", "--modality", "image"], "outside 0..199"),
        (["--item", "-1", "--modality", "image"], "outside"),
        (["--item", "0", "--modality", "image", "-k", "0"], "-k"),
    ],
)
def test_retrieve_user_errors(run_dir, args, fragment):
    assert_user_error(invoke("retrieve", run_dir, *args), fragment)


# ----------------------------------------------------------------------------- retrieval-eval
def test_retrieval_eval_json(run_dir, loaded):
    _, dataset, _ = loaded
    r = invoke("retrieval-eval", run_dir, "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    seen = {(x["modality"], x["group"], x["method"]) for x in rows}
    for m in dataset.modalities:
        for g in ("missing 1", "missing all"):
            assert {(m, g, "generated"), (m, g, "nearest neighbours")} <= seen
    for x in rows:
        if x["method"] == "nearest neighbours" and x["group"] == "missing all":
            # no modality left to find neighbours with: undefined ("–")
            assert x["hit@10"] is None and x["hit@20"] is None and x["items"] == 0
            continue
        assert 0.0 <= x["hit@10"] <= x["hit@20"] <= 1.0, x
        assert x["items"] > 0
    single = {(x["modality"], x["method"]): x for x in rows if x["group"] == "missing 1"}
    for m in dataset.modalities:
        assert single[(m, "generated")]["items"] == int(dataset.missing.only(m).sum())
        # the baseline finds items from their other (true) modality: far better than chance (20/200)
        assert single[(m, "nearest neighbours")]["hit@20"] > 0.2
    r = invoke("retrieval-eval", run_dir)
    assert r.exit_code == 0 and "nearest neighbours" in r.stdout
