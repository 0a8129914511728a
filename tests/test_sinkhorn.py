"""Sinkhorn optimal transport of CI2MG (spec 5.2 step 6, invariant 8.7)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from graphrec.blocks.sinkhorn import SCALING_MAX_SPREAD, SinkhornTransport, sinkhorn, sinkhorn_plain, squared_cost
from graphrec.registry import BLOCKS, load_builtin

REPO = Path(__file__).resolve().parents[1]


def _costs(max_side: int = 24, max_value: float = 1.0, square: bool = True):
    """Cost matrices with entries in [0, max_value] (as a multiple of ε)."""

    @st.composite
    def build(draw):
        r = draw(st.integers(1, max_side))
        c = r if square else draw(st.integers(1, max_side))
        a = draw(arrays(np.float32, (r, c), elements=st.floats(0.0, max_value, width=32)))
        return torch.from_numpy(a)

    return build()


@given(cost=_costs(max_value=2.0), eps=st.sampled_from([0.5, 1.0, 5.0]))
def test_plan_marginals_and_sign(cost, eps):
    plan = sinkhorn(cost * eps, epsilon=eps, n_iters=10)
    assert plan.shape == cost.shape
    assert torch.isfinite(plan).all()
    assert (plan >= 0).all()
    torch.testing.assert_close(plan.sum(0), torch.ones(cost.shape[1]), atol=1e-5, rtol=0)
    # 10 iterations on a kernel with spread <= 2 nats: rows are close to 1
    torch.testing.assert_close(plan.sum(1), torch.ones(cost.shape[0]), atol=1e-2, rtol=0)


@given(cost=_costs(max_value=60.0, square=False), eps=st.floats(0.5, 10.0), iters=st.integers(0, 12))
def test_log_domain_matches_plain_where_finite(cost, eps, iters):
    plain = sinkhorn_plain(cost, eps, iters)
    if not torch.isfinite(plain).all():
        return
    spread = float(cost.max() - cost.min()) / eps if cost.numel() else 0.0
    for log_domain in (None, True) + ((False,) if spread <= SCALING_MAX_SPREAD else ()):
        got = sinkhorn(cost, eps, iters, log_domain=log_domain)
        torch.testing.assert_close(got, plain, rtol=1e-4, atol=1e-6)


@given(cost=_costs(max_side=12, max_value=1e4), eps=st.floats(0.01, 5.0))
def test_huge_costs_do_not_underflow(cost, eps):
    plan = sinkhorn(cost, eps, 10)
    assert torch.isfinite(plan).all()
    assert (plan >= 0).all()
    torch.testing.assert_close(plan.sum(0), torch.ones(cost.shape[1]), atol=1e-5, rtol=0)


def test_plain_underflows_where_log_domain_does_not():
    cost = torch.tensor([[1000.0, 2000.0], [3000.0, 1000.0]])
    assert torch.isnan(sinkhorn_plain(cost, 1.0, 10)).all()
    plan = sinkhorn(cost, 1.0, 10)
    torch.testing.assert_close(plan, torch.eye(2))


def test_rectangular_and_zero_iterations():
    cost = torch.rand(5, 3)
    plan = sinkhorn(cost, 1.0, 50)
    # SwAV normalisation: columns sum to n_rows / n_cols, rows to 1
    torch.testing.assert_close(plan.sum(0), torch.full((3,), 5 / 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(plan.sum(1), torch.ones(5), atol=1e-4, rtol=0)
    zero = sinkhorn(cost, 1.0, 0)
    torch.testing.assert_close(zero.sum(), torch.tensor(5.0))
    torch.testing.assert_close(zero, sinkhorn_plain(cost, 1.0, 0))


def test_no_gradient_and_transport_block():
    load_builtin()
    assert BLOCKS.get("sinkhorn_transport") is SinkhornTransport
    assert SinkhornTransport.relations == ()
    src = torch.rand(40, 8, requires_grad=True)
    tgt = torch.rand(40, 8, requires_grad=True)
    block = SinkhornTransport(epsilon=5.0, n_iters=10)
    plan = block(src, tgt)
    assert not plan.requires_grad
    torch.testing.assert_close(plan.sum(0), torch.ones(40), atol=1e-5, rtol=0)
    torch.testing.assert_close(plan.sum(1), torch.ones(40), atol=1e-3, rtol=0)
    cost = squared_cost(src, tgt)
    torch.testing.assert_close(cost, torch.cdist(src.detach(), tgt.detach()).pow(2), atol=1e-5, rtol=1e-5)
    assert not cost.requires_grad


def test_plan_prefers_cheap_pairs():
    # identity matching is the cheapest: the plan concentrates on the diagonal
    x = torch.eye(6) * 10
    plan = sinkhorn(squared_cost(x, x), epsilon=1.0, n_iters=20)
    assert (plan.diagonal() > 0.99).all()
    assert math.isclose(float(plan.sum()), 6.0, rel_tol=1e-5)


@pytest.mark.parametrize("log_domain", [True, False])
def test_both_paths_equal(log_domain):
    torch.manual_seed(0)
    cost = torch.rand(30, 30) * 20
    torch.testing.assert_close(sinkhorn(cost, 5.0, 10, log_domain=log_domain), sinkhorn_plain(cost, 5.0, 10), rtol=1e-4, atol=1e-7)


@given(cost=_costs(max_value=60.0, square=False), eps=st.floats(0.5, 10.0), log_domain=st.sampled_from([None, True]))
def test_transposed_view_gives_the_plan_of_the_transposed_cost(cost, eps, log_domain):
    """CI2MG passes ``C.T`` (a view) for its second direction: same plan as a contiguous ``C.T``."""
    got = sinkhorn(cost.T, eps, 10, log_domain=log_domain)
    want = sinkhorn(cost.T.contiguous(), eps, 10, log_domain=log_domain)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    plain = sinkhorn_plain(cost.T.contiguous(), eps, 10)
    if torch.isfinite(plain).all():
        torch.testing.assert_close(got, plain, rtol=1e-4, atol=1e-6)


def test_ot_scaling_benchmark_runs(tmp_path):
    """benchmarks/bench_ot_scaling.py: one subprocess per size, a JSON record per size."""
    import importlib.util
    import json

    path = REPO / "benchmarks" / "bench_ot_scaling.py"
    spec = importlib.util.spec_from_file_location("bench_ot_scaling", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "ot.json"
    assert bench.main(["--sizes", "64", "96", "--repeats", "1", "--json", str(out)]) == 0
    records = json.loads(out.read_text())["records"]
    assert [r["n_items"] for r in records] == [64, 96]
    for r in records:
        assert r["path"] == "scaling-vector" and r["s_per_plan"] > 0 and r["s_per_batch_2_modalities"] > 0
        assert len(r["s_per_batch_2_modalities_all"]) == 1
