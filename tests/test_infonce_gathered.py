"""The distinct-row InfoNCE forms equal InfoNCE of the gathered (repeated) rows: value and gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrec.blocks.infonce import (
    infonce,
    infonce_all,
    infonce_all_gathered,
    infonce_gathered,
)


def _tables(seed: int, n_a: int, n_b: int):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n_a, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n_b, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    return a, b, gen


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 40), n_a=st.integers(1, 12), n_b=st.integers(1, 12), same=st.booleans(), temp=st.sampled_from([0.1, 0.2, 1.0]))
def test_infonce_gathered_equals_infonce_of_repeated_rows(seed, batch, n_a, n_b, same, temp):
    a, b, gen = _tables(seed, n_a, max(n_b, n_a) if same else n_b)
    ia = torch.randint(0, n_a, (batch,), generator=gen)  # few distinct values: many repeats
    ib = ia if same else torch.randint(0, n_b, (batch,), generator=gen)
    want = infonce(a[ia], b[ib], temp)
    got = infonce_gathered(a, b, ia, ib, temp)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for g, w in zip(torch.autograd.grad(got, (a, b)), torch.autograd.grad(want, (a, b))):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 30), n=st.integers(1, 15))
def test_infonce_all_gathered_equals_infonce_all_of_repeated_rows(reduction, seed, batch, n):
    a, b, gen = _tables(seed, n, n)
    index = torch.randint(0, n, (batch,), generator=gen)
    want = infonce_all(a[index], b, index, 0.2, reduction)
    got = infonce_all_gathered(a, b, index, 0.2, reduction)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for g, w in zip(torch.autograd.grad(got, (a, b)), torch.autograd.grad(want, (a, b))):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


def test_gathered_forms_on_an_empty_batch_are_zero_with_a_gradient():
    a, b, _ = _tables(0, 4, 5)
    empty = torch.zeros(0, dtype=torch.int64)
    for loss in (infonce_gathered(a, b, empty, empty, 0.2), infonce_all_gathered(a, b, empty, 0.2)):
        assert loss.item() == 0.0 and loss.requires_grad
