"""Loading a DGMRec checkpoint or resume state skips the item kNN searches its state already holds
(graphrec.models.base.graphs_from_state): same model, same metrics, no search."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import invoke, small_config
from test_resume import full_and_interrupted

import graphrec.models.dgmrec as dgmrec_module
from graphrec.data.dataset import load_dataset
from graphrec.errors import GraphrecError
from graphrec.models.base import graphs_from_state
from graphrec.models.build import build_model
from graphrec.registry import MODELS
from graphrec.train.checkpoint import load_model, save_checkpoint
from graphrec.train.trainer import Trainer

SMALL = ["--set", "synth_users=150", "--set", "synth_items=200", "--set", "embedding_size=16"]


def _no_search(*args, **kwargs):
    raise AssertionError("the item kNN graphs were searched although the state holds them")


@pytest.mark.parametrize("new_items", [False, True])
def test_a_loaded_checkpoint_has_the_saved_graphs_without_a_search(new_items, tmp_path, monkeypatch):
    cfg = small_config("dgmrec", epochs=3, refine_every=2, embedding_size=16, synth_users=80, synth_items=120,
                       new_items=new_items)
    ds = load_dataset(cfg)
    model = build_model(ds, cfg)
    Trainer(model, ds, cfg, progress=False).fit()  # refined graphs differ from a fresh build's
    save_checkpoint(tmp_path / "m.pt", model, cfg)
    monkeypatch.setattr(dgmrec_module, "knn_topk", _no_search)
    loaded, _, _ = load_model(tmp_path / "m.pt", dataset=ds)
    assert not loaded.graphs_pending
    for name in ("graphs", "infer_graphs"):
        a, b = getattr(model, name), getattr(loaded, name)
        assert a.keys() == b.keys()
        for m in a:
            assert (a[m] != b[m]).nnz == 0 and a[m].nnz > 0
    for name in ("refined", "sums", "infer_refined", "infer_sums"):
        a, b = getattr(model, name), getattr(loaded, name)
        assert a.keys() == b.keys() and all((a[m] == b[m]).all() for m in a)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        for x, y in zip(model.representations(), loaded.representations()):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_a_model_built_to_be_loaded_refuses_to_run_unloaded():
    cfg = small_config("dgmrec", synth_users=60, synth_items=80, embedding_size=16)
    ds = load_dataset(cfg)
    with graphs_from_state():
        model = MODELS.get("dgmrec")(ds, cfg)
    assert model.graphs_pending and all(g.nnz == 0 for g in model.graphs.values())
    with pytest.raises(GraphrecError, match="no item graphs"):
        model.check_graphs_loaded()
    fresh = build_model(ds, cfg)  # outside the block: the graphs are searched as always
    assert not fresh.graphs_pending and all(g.nnz > 0 for g in fresh.graphs.values())
    model.load_state_dict(fresh.state_dict())
    model.check_graphs_loaded()


def test_cli_resume_and_evaluate_skip_the_search(tmp_path, monkeypatch):
    args = ["fit", "dgmrec", "--epochs", "4", "--seed", "5", "--quiet", *SMALL, "--set", "refine_every=2"]
    full, out = full_and_interrupted(args, tmp_path, monkeypatch, 3)
    monkeypatch.setattr(dgmrec_module, "knn_topk", _no_search)
    r = invoke("fit", "--resume", out, "--quiet")
    assert r.exit_code == 0, r.output
    got = json.loads((out / "metrics.json").read_text())
    assert got["test"] == full["test"] and got["best_epoch"] == full["best_epoch"]
    r = invoke("evaluate", out / "model.pt", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"]["recall@20"] == pytest.approx(full["test"]["metrics"]["recall@20"], abs=1e-7)
