"""dgmrec_cold: the cold items' neighbour cache, and ``cold_repr: knn_auto`` (source and neighbour
count chosen on validation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_config, train_small_cold_knn

from graphrec.eval.evaluator import Evaluator
from graphrec.models.base import Scorer
from graphrec.models.build import build_model
from graphrec.models.cold_offset import affine_rows
from graphrec.train.checkpoint import load_model, save_checkpoint


@pytest.fixture(scope="module")
def trained():
    """dgmrec_cold (knn) trained for a few epochs on the small synthetic new-item protocol."""
    return train_small_cold_knn()


def _auto(trained):
    model, ds, cfg = trained
    auto = build_model(ds, {**cfg, "cold_repr": "knn_auto"})
    auto.load_state_dict(model.state_dict())  # the same DGMRec weights
    return auto.eval()


def test_neighbour_cache_follows_the_rows_not_their_count(trained):
    """Two different sets of cold rows of the same size get their own neighbours (the cache used to
    be keyed on the row count only), and a change of cold_k is seen too."""
    model, ds, _ = trained
    with torch.no_grad():
        out = model.propagate(model.infer_graph)
        model._last = None
        table, obs = model._table()
        first = torch.arange(0, 6)
        second = torch.arange(10, 16)
        a = model._content_rows(out, first)
        b = model._content_rows(out, second)
        r = second.numpy()
        fresh = model._transfer(out["ie"], *model._knn({m: x[r] for m, x in table.items()}, obs[r]))
        torch.testing.assert_close(b, fresh)
        assert not torch.allclose(a, b)
        k = model.config["cold_k"]
        try:
            model.config["cold_k"] = 1
            one = model._content_rows(out, second)
            idx, _ = model._knn({m: x[r] for m, x in table.items()}, obs[r])
            torch.testing.assert_close(one, out["ie"][idx[:, 0]])
        finally:
            model.config["cold_k"] = k
            model._neighbours = None


def test_knn_auto_picks_the_best_validation_candidate_and_applies_it(trained, tmp_path):
    """knn_auto tries both sources and 5 neighbour counts, each with its own budget shift; the one with
    the highest validation Recall@20 on cold items wins, and the model then scores with it (rows =
    the chosen k neighbours' rows of the chosen source, shifted by the chosen t), also after a reload."""
    _, ds, cfg = trained
    auto = _auto(trained)
    info = auto.calibrate(ds)
    cands = info["candidates"]
    assert {(c["source"], c["k"]) for c in cands} == {(s, k) for s in ("ie", "zi") for k in (1, 2, 3, 5, 10)}
    best = max(c["cold_recall"] for c in cands)
    assert best > 0  # the synthetic new items have validation positives that content finds
    chosen = next(c for c in cands if (c["source"], c["k"]) == info["choice"])
    assert chosen["cold_recall"] == best
    assert all(c["cold_recall"] < best for c in cands[:cands.index(chosen)])  # ties go to the earlier candidate
    src, k = info["choice"]
    assert auto.cold_choice.tolist() == [["ie", "zi"].index(src), k] and float(auto.cold_offset) == chosen["t"]
    # the scorer uses the choice: recompute the cold rows by hand from the chosen source and k
    with torch.no_grad():
        out = auto.propagate(auto.infer_graph)
        auto._last = None
        rows = torch.nonzero(auto.cold_items).squeeze(1)
        table, obs = auto._table()
        r = rows.numpy()
        auto.config["cold_k"], kk = 99, auto.config["cold_k"]  # knn_auto ignores cold_k once chosen
        try:
            idx, w = auto._knn({m: x[r] for m, x in table.items()}, obs[r])
        finally:
            auto.config["cold_k"] = kk
        assert idx.shape[1] == k
        c = auto._transfer(out[src], idx, w)
        zu, zi, c2, a, b, s = auto._scoring()
        torch.testing.assert_close(c2, c)
        ev = Evaluator(ds, topk=[20], groups={"old": ~auto.untrained.numpy(), "cold": auto.cold_items.numpy()})
        res = ev.evaluate(Scorer(*affine_rows(zu, zi, auto.cold_items, c, a, b, s, chosen["t"])), "valid")
        assert res.groups["cold"]["recall@20"] == pytest.approx(chosen["cold_recall"])
        assert res.groups["old"]["recall@20"] >= (1 - cfg["cold_tolerance"]) * info["reference"] or chosen["t"] == 8.0
        sc = auto.scorer()
    save_checkpoint(tmp_path / "auto.pt", auto, {**cfg, "cold_repr": "knn_auto"})
    again, _, _ = load_model(tmp_path / "auto.pt")
    assert again.cold_choice.tolist() == auto.cold_choice.tolist()
    sc2 = again.eval().scorer()
    torch.testing.assert_close(sc2.user @ sc2.item.T, sc.user @ sc.item.T, rtol=1e-5, atol=1e-5)


def test_knn_auto_first_candidate_is_the_default_knn(trained):
    """knn_auto's first candidate is exactly cold_repr=knn: same shift, same bisection table."""
    model, ds, _ = trained
    info_knn = model.calibrate(ds)
    info = _auto(trained).calibrate(ds)
    first = info["candidates"][0]
    assert (first["source"], first["k"]) == ("ie", 10)
    assert first["t"] == info_knn["t"]


def test_knn_auto_is_the_default(trained):
    _, ds, _ = trained
    cfg = small_config("dgmrec_cold", new_items=True)
    assert build_model(ds, cfg).cold_repr == "knn_auto"


def test_knn_auto_checkpoint_without_choice_loads(trained, tmp_path):
    """A dgmrec_cold checkpoint written before cold_choice existed loads (default choice: e, cold_k)."""
    model, ds, cfg = trained
    state = {k: v for k, v in model.state_dict().items() if k != "cold_choice"}
    fresh = build_model(ds, {**cfg, "cold_repr": "knn_auto"})
    fresh.load_state_dict(state)
    assert fresh.cold_choice.tolist() == [0, int(cfg["cold_k"])]
    assert np.isfinite(fresh.eval().scorer().item.numpy()).all()
