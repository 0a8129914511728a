"""dgmrec_cold's expected old-item budget (graphrec/models/cold_budget.py): margins count the cold items
in every user's top K, the rank values add up to plain Recall@K, the shift is the smallest that keeps
cost + z sd within the budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_config, train_small_cold_knn
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrec.eval.evaluator import Evaluator
from graphrec.models.base import Scorer
from graphrec.models.build import build_model
from graphrec.models.cold_budget import OldCost, choose_shift_expected, isotonic_decreasing, old_cost
from graphrec.models.cold_offset import affine_rows
from graphrec.models.topk import top_k

floats = st.floats(0.0, 1.0, allow_nan=False, width=32)


@given(st.lists(floats, min_size=1, max_size=40))
def test_isotonic_fit_is_non_increasing_keeps_the_sum_and_fixes_sorted_input(y):
    y = np.array(y)
    f = isotonic_decreasing(y)
    assert f.shape == y.shape
    assert np.all(np.diff(f) <= 1e-12)
    assert f.sum() == pytest.approx(y.sum(), abs=1e-9)
    s = np.sort(y)[::-1]
    np.testing.assert_allclose(isotonic_decreasing(s), s)
    # least squares among non-increasing fits: no better than the fit after a small monotone move
    for other in (np.full_like(y, y.mean()), np.sort(y)[::-1]):
        assert ((f - y) ** 2).sum() <= ((other - y) ** 2).sum() + 1e-9


@st.composite
def costs(draw):
    u = draw(st.integers(1, 30))
    k = draw(st.integers(1, 6))
    m = np.array(draw(st.lists(st.floats(-5, 7, allow_nan=False), min_size=u * k, max_size=u * k))).reshape(u, k)
    h = np.sort(np.array(draw(st.lists(st.floats(0, 0.1), min_size=k, max_size=k))))[::-1]
    g = np.array(draw(st.lists(st.floats(0, 0.1), min_size=k, max_size=k)))
    return OldCost(m, h, g, reference=float(h.sum()) + 0.05, n_eval=draw(st.integers(1, 50)))


@settings(max_examples=60, deadline=None)
@given(costs(), st.floats(0.0, 0.5), st.floats(0.0, 3.0))
def test_expected_shift_is_the_smallest_within_the_budget(cost, tol, z):
    """The chosen t keeps cost + z sd within the budget (or is the upper end); a slightly smaller t does
    not (or t is the lower end); cost falls with t; a larger margin z never gives a smaller t."""
    got = choose_shift_expected(cost, tol, z)
    t = got["t"]
    c, sd = cost.expected(t)
    assert (c, sd) == (got["expected"], got["sd"])
    assert c + z * sd <= tol or t == 8.0
    if t > -4.0:
        c2, sd2 = cost.expected(t - 12.0 / 2 ** 23)
        assert c2 + z * sd2 > tol
    ts = np.linspace(-5, 8, 27)
    vals = [cost.expected(x)[0] for x in ts]
    assert all(a >= b - 1e-12 for a, b in zip(vals, vals[1:]))
    assert cost.expected(100.0) == (0.0, 0.0)
    assert choose_shift_expected(cost, tol, z + 1.0)["t"] >= t


@pytest.fixture(scope="module")
def trained():
    return train_small_cold_knn()


def test_margins_count_the_cold_items_in_every_top_k_and_h_adds_up_to_plain_recall(trained):
    """n_u(t) = #{n: m_un > t} is the number of cold items in user u's top 20 at shift t (every user
    with a training interaction); the unsmoothed rank values sum to plain old-item Recall@20."""
    model, ds, _ = trained
    old = (~model.untrained).numpy()
    with torch.no_grad():
        zu, zi, c, a, b, s = model._scoring()
        cost = old_cost(*affine_rows(zu, zi, model.cold_items, c, a, b, s, 0.0), model.cold_items, s, ds, old)
        users = np.flatnonzero(np.bincount(ds.train[:, 0], minlength=ds.n_users) > 0)
        assert cost.margins.shape == (len(users), 20)
        for t in (-1.0, 0.0, 0.5, 1.5):
            _, items = top_k(Scorer(*affine_rows(zu, zi, model.cold_items, c, a, b, s, t)), users, ds.train_matrix()[users], 20)
            n_cold = model.cold_items.numpy()[items.numpy()].sum(1)
            np.testing.assert_array_equal((cost.margins > t).sum(1), n_cold)
        ev = Evaluator(ds, topk=[20], groups={"old": old})
        plain = ev.evaluate(Scorer(zu, zi), "valid").groups["old"]["recall@20"]
    assert cost.reference == pytest.approx(plain, rel=1e-6)
    assert np.all(np.diff(cost.h) <= 1e-12) and np.all(cost.h >= 0)
    assert cost.expected(-100.0)[0] == pytest.approx(cost.h.sum() / cost.reference)  # every slot taken


@pytest.mark.parametrize("margin", [0.0, 1.0])
def test_calibrate_with_the_expected_budget_sets_that_rule_s_shift(trained, margin):
    """cold_budget=expected (the default): calibrate's t is choose_shift_expected's on the model's own
    margins; a larger margin gives a larger shift (fewer new items shown)."""
    model, ds, cfg = trained
    assert small_config("dgmrec_cold")["cold_budget"] == "expected"
    model.config["cold_margin"] = margin
    try:
        info = model.calibrate(ds)
        with torch.no_grad():
            zu, zi, c, a, b, s = model._scoring()
            cost = old_cost(*affine_rows(zu, zi, model.cold_items, c, a, b, s, 0.0), model.cold_items, s, ds,
                            (~model.untrained).numpy())
        want = choose_shift_expected(cost, cfg["cold_tolerance"], margin)
        assert info["t"] == want["t"] == float(model.cold_offset)
        assert info["expected"] + margin * info["sd"] <= cfg["cold_tolerance"] or info["t"] == 8.0
    finally:
        model.config["cold_margin"] = cfg["cold_margin"]


def test_calibrate_with_the_recall_budget_is_the_earlier_rule(trained):
    """cold_budget=recall: the shift is bisected on old-item validation Recall@20 (at most 10 evaluations)."""
    model, ds, cfg = trained
    model.config["cold_budget"] = "recall"
    try:
        info = model.calibrate(ds)
    finally:
        model.config["cold_budget"] = "expected"
    t = info["t"]
    assert len(info["table"]) <= 10 and all(len(r) == 2 for r in info["table"])
    chosen = [r for r in info["table"] if r[0] == t]
    assert t == 8.0 or chosen[-1][1] >= (1 - cfg["cold_tolerance"]) * info["reference"]


@pytest.mark.parametrize("key,value,fragment", [("cold_budget", "median", "cold_budget"), ("cold_margin", -1.0, "cold_margin")])
def test_bad_budget_settings_are_one_line_errors(trained, key, value, fragment):
    from graphrec.errors import GraphrecError

    _, ds, cfg = trained
    with pytest.raises(GraphrecError, match=fragment):
        build_model(ds, {**cfg, key: value})
