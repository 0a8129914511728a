"""Recommending: RecModel.recommend (library), items added after training, ``graphrec recommend`` (CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_user_error, invoke, small_config
from hypothesis import given
from hypothesis import strategies as st

from graphrec.data.catalogue import NewItems, load_new_items
from graphrec.data.dataset import load_dataset
from graphrec.errors import GraphrecError
from graphrec.models.build import build_model

SMALL = ["--set", "synth_users=150", "--set", "synth_items=200"]
NEW = [*SMALL, "--set", "new_items=true"]


@pytest.fixture(scope="module")
def lgcn():
    cfg = small_config("lightgcn", seed=5)
    ds = load_dataset(cfg)
    return build_model(ds, cfg), ds


def brute_force(model, users, exclude, k):
    """Top-k by a full argsort of the scorer, excluded items removed."""
    sc = model.scorer()
    out = []
    for u in users:
        s = sc.score(torch.tensor([u]))[0].numpy().astype(np.float64)
        s[exclude[u].indices] = -np.inf
        order = np.argsort(-s, kind="stable")[:k]
        out.append(order)
    return np.array(out)


# ----------------------------------------------------------------------------- library
@given(k=st.integers(1, 30), batch=st.integers(1, 200), chunk=st.sampled_from([0, 7, 64, 199]))
def test_recommend_equals_brute_force_argsort(lgcn, k, batch, chunk):
    model, ds = lgcn
    users = np.array([0, 3, 17, 149, 42])
    excl = ds.interaction_matrix(("train", "valid"))
    items, scores = model.recommend(users, k, exclude=excl, batch_size=batch, item_chunk=chunk)
    assert items.shape == scores.shape == (len(users), k)
    np.testing.assert_array_equal(items, brute_force(model, users, excl, k))
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    for row, u in zip(items, users):  # never an excluded item
        assert not set(row) & set(excl[u].indices)


def test_recommend_excludes_training_items_and_scores_match(lgcn):
    model, ds = lgcn
    users = np.arange(ds.n_users)
    items, scores = model.recommend(users, 20, exclude=ds.train_matrix())
    train = ds.train_matrix()
    assert all(not set(items[u]) & set(train[u].indices) for u in users)
    sc = model.scorer()
    full = (sc.user @ sc.item.T).numpy()
    np.testing.assert_allclose(scores, np.take_along_axis(full, items, axis=1), rtol=1e-5, atol=1e-6)


def test_recommend_short_lists_are_padded(lgcn):
    model, ds = lgcn
    excl = ds.train_matrix().tolil()
    excl[0, :] = 1  # user 0: every item excluded but none
    excl[0, 5] = 0
    items, scores = model.recommend(np.array([0, 1]), 3, exclude=excl.tocsr())
    assert items[0].tolist() == [5, -1, -1] and np.isneginf(scores[0, 1:]).all()
    assert (items[1] >= 0).all()


def test_recommend_rejects_bad_users_and_k(lgcn):
    model, _ = lgcn
    with pytest.raises(GraphrecError, match="user 150 is outside 0..149"):
        model.recommend(np.array([1, 150]), 5)
    with pytest.raises(GraphrecError, match="k must be at least 1"):
        model.recommend(np.array([1]), 0)


def test_models_without_features_refuse_new_items(lgcn):
    model, _ = lgcn
    assert model.feature_widths() == {}
    new = NewItems.from_arrays({"image": np.ones((2, 3), np.float32)}, {"image": 3})
    with pytest.raises(GraphrecError, match="'lightgcn' cannot score items added after training"):
        model.recommend(np.array([0]), 5, new_items=new)


# ----------------------------------------------------------------------------- new-item rows
def test_new_items_parse_missing_rows_and_files():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    x[1] = np.nan
    new = NewItems.from_arrays({"image": x}, {"image": 4, "text": 2})
    assert new.n == 3 and new.modalities == ["image", "text"]
    assert new.observed.tolist() == [[True, False], [False, False], [True, False]]
    assert new.features["text"].shape == (3, 2) and np.isnan(new.features["text"]).all()


@pytest.mark.parametrize(
    "feats,msg",
    [
        ({"audio": np.ones((2, 4))}, "modality 'audio' is not one of the model's (image, text)"),
        ({"image": np.ones((2, 5))}, "image features have 5 columns but the model's image width is 4"),
        ({"image": np.ones((2, 4)), "text": np.ones((3, 2))}, "disagree on the number of new items (image 2, text 3)"),
        ({"image": np.array([[1.0, np.nan, 0, 0]])}, "image row 0 holds NaN or inf in some columns"),
        ({"image": np.array([[1.0, np.inf, 0, 0]])}, "image row 0 holds NaN or inf"),
        ({"image": np.ones(4)}, "must be 2-D"),
        ({}, "no feature rows"),
    ],
)
def test_new_items_bad_input(feats, msg):
    with pytest.raises(GraphrecError) as e:
        NewItems.from_arrays(feats, {"image": 4, "text": 2})
    assert msg in str(e.value)


def test_load_new_items_folder(tmp_path):
    np.save(tmp_path / "image_feat.npy", np.ones((2, 4), np.float32))
    assert load_new_items(tmp_path, {"image": 4}).n == 2
    np.save(tmp_path / "sound_feat.npy", np.ones((2, 4), np.float32))
    with pytest.raises(GraphrecError, match="modality 'sound' is not one of the model's"):
        load_new_items(tmp_path, {"image": 4})
    (tmp_path / "empty").mkdir()
    with pytest.raises(GraphrecError, match="holds no feature file"):
        load_new_items(tmp_path / "empty", {"image": 4})
    with pytest.raises(GraphrecError, match="does not exist"):
        load_new_items(tmp_path / "nowhere", {"image": 4})


def _old_rows(ds, rows):
    return {m: ds.features[m][rows].copy() for m in ds.modalities}


def test_content_knn_new_item_scores_are_neighbour_mixtures():
    cfg = small_config("content_knn", seed=1, new_items=True)
    ds = load_dataset(cfg)
    model = build_model(ds, cfg)
    old = np.flatnonzero(np.bincount(ds.train[:, 1], minlength=ds.n_items) > 0)
    new = NewItems.from_arrays(_old_rows(ds, old[:4]), model.feature_widths())
    rep = model.new_item_representations(new)
    sc = model.scorer()
    s_new = (sc.user @ rep.T).numpy()
    s_old = (sc.user @ sc.item[torch.from_numpy(old)].T).numpy()
    # a convex mixture of old items' rows: every user's score lies within the old items' range
    assert (s_new <= s_old.max(axis=1, keepdims=True) + 1e-5).all()
    assert (s_new >= s_old.min(axis=1, keepdims=True) - 1e-5).all()
    # the in-dataset new items are scored the same way (rows replaced in the scorer)
    cold = np.flatnonzero(ds.new_items)
    same = NewItems.from_arrays(
        {m: np.where(ds.missing.missing[m][cold, None], np.nan, ds.features[m][cold]) for m in ds.modalities},
        model.feature_widths(),
    )
    torch.testing.assert_close(model.new_item_representations(same), sc.item[torch.from_numpy(cold)], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def dgm():
    cfg = small_config("dgmrec", seed=2, new_items=True, epochs=1)
    ds = load_dataset(cfg)
    return build_model(ds, cfg), ds


def test_dgmrec_new_items_without_modalities_score_zero(dgm):
    model, ds = dgm
    widths = model.feature_widths()
    feats = _old_rows(ds, [0, 1])
    for m in feats:
        feats[m][1] = np.nan  # item 1 misses every modality: no graph row, no ID part
    rep = model.new_item_representations(NewItems.from_arrays(feats, widths))
    assert rep.shape == (2, model.embedding_size)
    assert float(rep[0].abs().sum()) > 0
    assert float(rep[1].abs().sum()) == 0.0
    items, _ = model.recommend(np.arange(10), 210, new_items=NewItems.from_arrays(feats, widths))
    assert set(items.ravel()) >= {200, 201}  # the new ids N, N+1 are ranked with the catalogue


@pytest.mark.parametrize("cold_repr", ["knn", "head"])
def test_dgmrec_cold_keeps_dgmrec_training_trajectory(cold_repr):
    """Training and model selection are plain dgmrec's: the same weights and best epoch; only the head
    (cold_repr=head) is trained by the cold loss."""
    from graphrec.train.trainer import Trainer

    states, best = {}, {}
    for name in ("dgmrec", "dgmrec_cold"):
        extra = {"cold_repr": cold_repr} if name == "dgmrec_cold" else {}
        cfg = small_config(name, seed=4, new_items=True, epochs=3, **extra)
        ds = load_dataset(cfg)
        model = build_model(ds, cfg)
        head0 = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("cold_head.")}
        result = Trainer(model, ds, cfg, progress=False).fit()
        states[name], best[name] = model.state_dict(), (result.best_epoch, result.best_valid.metrics)
    cold = states["dgmrec_cold"]
    assert best["dgmrec_cold"] == best["dgmrec"]
    if cold_repr == "head":
        assert head0 and all(not torch.equal(cold[k], v) for k, v in head0.items())  # the cold loss trained the head
    else:
        assert not head0
    for key, value in states["dgmrec"].items():
        if torch.is_tensor(value):
            torch.testing.assert_close(cold[key], value, msg=key)


def test_plain_dgmrec_ignores_the_test_hook():
    """The trainer's hook before the test evaluation leaves plain dgmrec untouched (its scores are the paper's)."""
    cfg = small_config("dgmrec", seed=4, new_items=True)
    ds = load_dataset(cfg)
    model = build_model(ds, cfg).eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    s0 = model.scorer()
    model.before_evaluation(None, "test")
    s1 = model.scorer()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(s0.user, s1.user) and torch.equal(s0.item, s1.item)


@pytest.fixture(scope="module")
def cold_model():
    """dgmrec_cold trained for a few epochs on the small synthetic new-item protocol, calibrated."""
    from graphrec.train.trainer import Trainer

    cfg = small_config("dgmrec_cold", seed=4, new_items=True, epochs=4, cold_repr="knn")
    ds = load_dataset(cfg)
    model = build_model(ds, cfg)
    trainer = Trainer(model, ds, cfg, progress=False)
    trainer.fit()  # calibrates before the test evaluation
    return model.eval(), ds, trainer


def test_dgmrec_cold_scores_new_items_on_the_old_items_scale(cold_model):
    """A new item's score comes from its content, is not degenerate, and has each user's old-item scale:
    per user, the cold items' scores have the old items' standard deviation and mean − t σ_u."""
    model, ds, _ = cold_model
    cold = model.cold_items  # no training interaction and at least one observed modality
    has = torch.from_numpy(np.stack([~ds.missing.missing[m] for m in ds.modalities], 1).any(1))
    new = torch.from_numpy(ds.new_items)
    assert torch.equal(cold[new], has[new]) and bool(model.untrained[new].all())
    zu, zi = model.representations()
    assert zu.shape[1] == zi.shape[1] == 2 * model.embedding_size + 1
    s = zu @ zi.T
    plain_u, plain_i, c, a, b, sd = model._scoring()
    torch.testing.assert_close(s[:, ~cold], plain_u @ plain_i[~cold].T, rtol=1e-5, atol=1e-5)  # old items: DGMRec's
    t = float(model.cold_offset)
    torch.testing.assert_close(s[:, cold], a[:, None] * (plain_u @ c.T) + (b - t * sd)[:, None], rtol=1e-5, atol=1e-5)
    old_scores = plain_u @ plain_i[~model.untrained].T
    new_scores = s[:, cold]
    assert float(new_scores.std(dim=1).min()) > 0  # new items are told apart for every user
    torch.testing.assert_close(new_scores.std(dim=1), old_scores.std(dim=1), rtol=0.05, atol=1e-4)
    torch.testing.assert_close(new_scores.mean(dim=1), old_scores.mean(dim=1) - t * sd, rtol=0.05, atol=1e-3)
    model.config["cold_scoring"] = False
    try:
        assert model.representations()[1].shape[1] == model.embedding_size
    finally:
        model.config["cold_scoring"] = True


def test_dgmrec_cold_puts_new_items_into_top_k(cold_model):
    """On the new-item protocol plain DGMRec's scores and dgmrec_cold's differ only in new items, which
    dgmrec_cold recommends (and hits), within its old-item budget on validation."""
    from graphrec.eval.evaluator import Evaluator
    from graphrec.models.base import Scorer

    model, ds, trainer = cold_model
    users = np.arange(ds.n_users)
    items, _ = model.recommend(users, 20, exclude=ds.train_matrix())
    with_new = ds.new_items[items].any(axis=1).mean()
    assert with_new > 0.05
    ev = Evaluator(ds, topk=[20], groups={"new": ds.new_items, "old": ~ds.new_items})
    cold_res = ev.evaluate(model.scorer(), "test")
    zu, zi, *_ = model._scoring()
    plain_res = ev.evaluate(Scorer(zu, zi), "test")
    assert cold_res.groups["new"]["recall@20"] > plain_res.groups["new"]["recall@20"]
    assert cold_res.groups["new"]["recall@20"] > 0.01
    info = model.calibrate(ds)  # the default budget: expected cost + cold_margin sd within 2 % (test_cold_budget.py)
    t = info["t"]
    chosen = [r for r in info["table"] if r[0] == t]
    margin = model.config["cold_margin"]
    assert info["table"] and (t == 8.0 or (chosen and chosen[-1][1] + margin * chosen[-1][2] <= 0.02))
    assert len(info["table"]) <= 27  # bisection, not a grid


def test_dgmrec_cold_items_added_later_with_and_without_content(cold_model):
    """An added item with an observed modality gets a content row [0; c; 1] equal to the mix of its
    nearest old items' ID rows; one observing nothing keeps DGMRec's own row [z; 0; 0]."""
    model, ds, _ = cold_model
    d = model.embedding_size
    j = int(np.flatnonzero(np.stack([~ds.missing.missing[m] for m in ds.modalities], 1).all(1) & ~ds.new_items)[0])
    feats = {m: np.stack([ds.features[m][j], np.full(ds.features[m].shape[1], np.nan, np.float32)]).astype(np.float32)
             for m in ds.modalities}
    rows = model.new_item_representations(NewItems.from_arrays(feats, model.feature_widths()))
    assert rows.shape == (2, 2 * d + 1)
    assert float(rows[0, -1]) == 1.0 and float(rows[0, :d].abs().sum()) == 0.0 and float(rows[0, d:2 * d].abs().sum()) > 0
    out = model.propagate(model.infer_graph)
    q = {m: torch.from_numpy(feats[m][:1]) for m in ds.modalities}
    idx, w = model._knn(q, np.ones((1, len(ds.modalities)), bool))
    assert j in idx[0].tolist()  # the old item itself is its own nearest neighbour
    torch.testing.assert_close(rows[0, d:2 * d], (w[0, :, None] * out["ie"][idx[0]]).sum(0), rtol=1e-5, atol=1e-6)
    assert float(rows[1, -1]) == 0.0 and float(rows[1, d:].abs().sum()) == 0.0


@given(u=st.integers(1, 6), n=st.integers(2, 8), d=st.integers(1, 4), t=st.floats(-3, 3))
def test_affine_rows_map_only_cold_scores(u, n, d, t):
    from graphrec.models.cold_offset import affine_rows

    g = torch.Generator().manual_seed(u * 100 + n * 10 + d)
    zu, zi = torch.randn(u, d, generator=g), torch.randn(n, d, generator=g)
    cold = torch.arange(n) % 2 == 1
    c = torch.randn(int(cold.sum()), d, generator=g)
    a, b, sd = torch.rand(u, generator=g) + 0.5, torch.randn(u, generator=g), torch.rand(u, generator=g) + 0.1
    uu, ii = affine_rows(zu, zi, cold, c, a, b, sd, t)
    s = uu @ ii.T
    torch.testing.assert_close(s[:, ~cold], zu @ zi[~cold].T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s[:, cold], a[:, None] * (zu @ c.T) + (b - t * sd)[:, None], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rec")
    out = {}
    for name, extra in (("lightgcn", SMALL), ("dgmrec_cold", NEW), ("content_knn", NEW)):
        r = invoke("fit", name, "--epochs", "1", "--out", root / name, "--quiet", "--seed", "3", *extra)
        assert r.exit_code == 0, r.output
        out[name] = root / name / "model.pt"
    return out


def _read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_cli_tsv_all_users(ckpts, tmp_path):
    out = tmp_path / "recs.tsv"
    r = invoke("recommend", ckpts["lightgcn"], "-k", "7", "--out", out, "--batch-size", "40")
    assert r.exit_code == 0, r.output
    rows = _read_tsv(out)
    assert rows[0] == ["user", "rank", "item", "score"]
    body = rows[1:]
    assert len(body) == 150 * 7
    from graphrec.train.checkpoint import load_model

    model, ds, _ = load_model(ckpts["lightgcn"])
    seen = ds.interaction_matrix(("train", "valid"))
    items, scores = model.recommend(np.arange(150), 7, exclude=seen)
    assert [int(b[0]) for b in body[:7]] == [0] * 7 and [int(b[1]) for b in body[:7]] == list(range(1, 8))
    np.testing.assert_array_equal(np.array([int(b[2]) for b in body]).reshape(150, 7), items)
    np.testing.assert_allclose(np.array([float(b[3]) for b in body]).reshape(150, 7), scores, rtol=1e-5)
    assert "wrote" in r.stderr and "150 users" in r.stderr
    assert "recommend: 150/150 users (100 %)" in r.stderr  # plain progress lines without a terminal


def test_cli_jsonl_users_file_and_exclude(ckpts, tmp_path):
    users = tmp_path / "ids.txt"
    users.write_text("# some users\n12\n\n3\n12\n")
    out = tmp_path / "recs.jsonl"
    r = invoke("recommend", ckpts["lightgcn"], "-k", "5", "--out", out, "--users", users, "--exclude", "train", "--quiet")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["user"] for x in recs] == [12, 3]
    from graphrec.train.checkpoint import load_model

    _, ds, _ = load_model(ckpts["lightgcn"])
    train = ds.train_matrix()
    for x in recs:
        assert len(x["items"]) == len(x["scores"]) == 5
        assert not set(x["items"]) & set(train[x["user"]].indices)
        assert x["scores"] == sorted(x["scores"], reverse=True)
    r = invoke("recommend", ckpts["lightgcn"], "--out", tmp_path / "x.out", "--format", "jsonl", "--users", users, "--quiet")
    assert r.exit_code == 0 and json.loads((tmp_path / "x.out").read_text().splitlines()[0])["user"] == 12


def test_cli_refuses_to_overwrite(ckpts, tmp_path):
    out = tmp_path / "recs.tsv"
    out.write_text("mine\n")
    assert_user_error(invoke("recommend", ckpts["lightgcn"], "--out", out), "exists", "--overwrite")
    assert out.read_text() == "mine\n"
    r = invoke("recommend", ckpts["lightgcn"], "--out", out, "--overwrite", "-k", "2", "--quiet")
    assert r.exit_code == 0 and out.read_text().startswith("user\trank")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "content,fragments",
    [
        ("3\n150\n7\n", ["line 2", "user 150 is not a user of the model", "valid ids 0..149"]),
        ("3\n-1\n", ["line 2", "user -1"]),
        ("3\nabc\n", ["line 2", "'abc' is not an integer user id"]),
        ("# none\n", ["lists no user id"]),
    ],
)
def test_cli_bad_users_file(ckpts, tmp_path, content, fragments):
    users = tmp_path / "u.txt"
    users.write_text(content)
    out = tmp_path / "r.tsv"
    assert_user_error(invoke("recommend", ckpts["lightgcn"], "--out", out, "--users", users), *fragments)
    assert not out.exists()


def _new_dir(tmp_path: Path, ds, widths: dict[str, int], bad: str | None = None) -> Path:
    d = tmp_path / "new"
    d.mkdir()
    for m, w in widths.items():
        x = ds.features[m][:3].astype(np.float32).copy()
        if m == ds.modalities[-1]:
            x[1] = np.nan  # item N+1 misses this modality
        if bad == "width" and m == ds.modalities[0]:
            x = np.ones((3, w + 1), np.float32)
        if bad == "nan" and m == ds.modalities[0]:
            x[2, 0] = np.nan
        np.save(d / f"{m}_feat.npy", x)
    if bad == "name":
        np.save(d / "smell_feat.npy", np.ones((3, 2), np.float32))
    return d


@pytest.mark.parametrize("name", ["dgmrec_cold", "content_knn"])
def test_cli_new_items_are_ranked(ckpts, tmp_path, name):
    from graphrec.train.checkpoint import load_model

    model, ds, _ = load_model(ckpts[name])
    d = _new_dir(tmp_path, ds, model.feature_widths())
    out = tmp_path / "r.tsv"
    r = invoke("recommend", ckpts[name], "--out", out, "--new-items", d, "-k", "203")
    assert r.exit_code == 0, r.output
    assert "new items have ids 200..202" in r.stderr
    body = _read_tsv(out)[1:]
    user0 = [int(b[2]) for b in body if b[0] == "0"]
    assert {200, 201, 202} <= set(user0)


@pytest.mark.parametrize(
    "bad,fragments",
    [
        ("width", ["columns but the model's", "width is"]),
        ("nan", ["row 2 holds NaN or inf in some columns"]),
        ("name", ["modality 'smell' is not one of the model's"]),
    ],
)
def test_cli_new_items_bad_input(ckpts, tmp_path, bad, fragments):
    from graphrec.train.checkpoint import load_model

    model, ds, _ = load_model(ckpts["content_knn"])
    d = _new_dir(tmp_path, ds, model.feature_widths(), bad=bad)
    assert_user_error(invoke("recommend", ckpts["content_knn"], "--out", tmp_path / "r.tsv", "--new-items", d), *fragments)


def test_cli_new_items_need_features(ckpts, tmp_path):
    d = tmp_path / "new"
    d.mkdir()
    np.save(d / "image_feat.npy", np.ones((2, 4), np.float32))
    assert_user_error(invoke("recommend", ckpts["lightgcn"], "--out", tmp_path / "r.tsv", "--new-items", d),
                      "'lightgcn' cannot score items added after training")
    assert_user_error(invoke("recommend", ckpts["lightgcn"], "--out", tmp_path / "r.tsv", "--new-items", tmp_path / "no"),
                      "--new-items folder", "does not exist")


def test_cli_missing_checkpoint_and_folder_out(ckpts, tmp_path):
    assert_user_error(invoke("recommend", tmp_path / "none.pt", "--out", tmp_path / "r.tsv"), "does not exist")
    assert_user_error(invoke("recommend", ckpts["lightgcn"], "--out", tmp_path), "is a folder")


def test_cli_evaluate_accepts_the_models_own_scoring_key(ckpts):
    """dgmrec_cold declares cold_scoring an evaluation key: --set cold_scoring=false scores as plain DGMRec."""
    on = invoke("evaluate", ckpts["dgmrec_cold"], "--json")
    off = invoke("evaluate", ckpts["dgmrec_cold"], "--json", "--set", "cold_scoring=false")
    assert on.exit_code == 0 and off.exit_code == 0, (on.output, off.output)
    assert json.loads(off.stdout)["metrics"]["recall@20"] >= 0.0
    # a model without that key refuses it, naming what it may set
    assert_user_error(invoke("evaluate", ckpts["lightgcn"], "--set", "cold_scoring=false"), "--set cold_scoring", "evaluate may set topk")
    assert_user_error(invoke("evaluate", ckpts["dgmrec_cold"], "--set", "cold_weight=0.5"), "--set cold_weight", "cold_scoring")


def test_cli_recommend_has_trust_checkpoint(ckpts, tmp_path):
    out = tmp_path / "recs.tsv"
    r = invoke("recommend", ckpts["lightgcn"], "-k", "3", "--out", out, "--trust-checkpoint", "--quiet")
    assert r.exit_code == 0, r.output
    assert out.read_text().startswith("user\trank\titem\tscore")
