"""graphrec.train.optim: MixedAdam (SparseAdam for row-sparse tables, Adam for the rest) and sparse_parameters."""

from __future__ import annotations

import copy

import pytest
import torch

from graphrec.train.optim import MixedAdam, sparse_parameters


def _params():
    gen = torch.Generator().manual_seed(0)
    table = torch.nn.Parameter(torch.randn(10, 4, generator=gen))
    dense = torch.nn.Parameter(torch.randn(3, 4, generator=gen))
    return table, dense


def _grads(table, dense, rows):
    loss = torch.nn.functional.embedding(torch.tensor(rows), table, sparse=True).pow(2).sum() + dense.pow(3).sum()
    loss.backward()


def test_a_scheduler_sets_both_learning_rates_and_steps_match_the_inner_optimisers():
    table, dense = _params()
    t2, d2 = (torch.nn.Parameter(p.detach().clone()) for p in (table, dense))
    opt = MixedAdam([table], [dense], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5**e)
    ref_s, ref_d = torch.optim.SparseAdam([t2], lr=0.1), torch.optim.Adam([d2], lr=0.1)
    for step, rows in enumerate(([1, 2, 2], [2, 7], [0])):
        for o in (opt, ref_s, ref_d):
            o.zero_grad(set_to_none=True)
        _grads(table, dense, rows)
        _grads(t2, d2, rows)
        opt.step()
        ref_s.step()
        ref_d.step()
        sched.step()
        for g in ref_s.param_groups + ref_d.param_groups:
            g["lr"] = 0.1 * 0.5 ** (step + 1)
        assert [g["lr"] for g in opt.param_groups] == [0.1 * 0.5 ** (step + 1)] * 2
        assert torch.equal(table, t2) and torch.equal(dense, d2), step
    assert torch.equal(table[[3, 4, 5, 6, 8, 9]], _params()[0][[3, 4, 5, 6, 8, 9]])  # never touched, never moved


def test_state_dict_round_trip_continues_identically():
    table, dense = _params()
    opt = MixedAdam([table], [dense], lr=0.05)
    _grads(table, dense, [1, 4])
    opt.step()
    t2, d2 = (torch.nn.Parameter(p.detach().clone()) for p in (table, dense))
    opt2 = MixedAdam([t2], [d2], lr=0.05)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as from a file: torch would share the moment tensors
    for o, (t, d) in ((opt, (table, dense)), (opt2, (t2, d2))):
        o.zero_grad(set_to_none=True)
        _grads(t, d, [4, 5])
        o.step()
    assert torch.equal(table, t2) and torch.equal(dense, d2)
    assert opt2.state[t2]["step"] == 2 and int(opt2.state[d2]["step"]) == 2  # the moments came back


def test_sparse_parameters_and_errors():
    table, dense = _params()
    assert sparse_parameters(MixedAdam([table], [dense], lr=0.1)) == [table]
    assert sparse_parameters(torch.optim.SparseAdam([table], lr=0.1)) == [table]
    assert sparse_parameters(torch.optim.Adam([table, dense], lr=0.1)) == []
    with pytest.raises(ValueError, match="needs sparse and dense"):
        MixedAdam([], [dense], lr=0.1)
