"""Device handling: the heterograph stays on the CPU, message passing follows the features' device.

No GPU is needed: the paths taken for a device DGL has no kernel for (a CSR product built from
the graph and moved to the features' device; torch operations for weights with a gradient)
are forced on the CPU by patching :func:`graphrec.graph.spmm.dgl_runs_on`, and compared with
DGL's own kernels. ``resolve_device`` is checked with a patched ``torch.cuda``.
"""

from __future__ import annotations

import os
import sys

import dgl
import dgl.ops
import numpy as np
import pytest
import torch
from dgl.nn.functional import edge_softmax as dgl_edge_softmax
from hypothesis import given, settings
from hypothesis import strategies as st

import graphrec.graph.spmm as spmm
from conftest import REPO_ROOT, assert_user_error, invoke, small_config
from conftest import UI as REL
from conftest import random_ui_graph as _graph
from graphrec.data.dataset import load_dataset
from graphrec.data.sampler import BPRSampler
from graphrec.errors import GraphrecError
from graphrec.models.build import build_model
from graphrec.train.seed import resolve_device, resolve_threads



@pytest.fixture
def foreign_device(monkeypatch):
    """Pretend the features live on a device DGL has no kernel for (as CUDA with the CPU-only DGL)."""
    calls = []

    def never(g, device):
        calls.append(torch.device(device))
        return False

    monkeypatch.setattr(spmm, "dgl_runs_on", never)
    return calls


# ----------------------------------------------------------------------------- message passing
@settings(max_examples=25)
@given(n_src=st.integers(1, 20), n_dst=st.integers(1, 20), n_edges=st.integers(0, 80), seed=st.integers(0, 10_000))
def test_torch_kernel_matches_dgl_in_values_and_gradients(n_src, n_dst, n_edges, seed):
    """The torch fallback (learnable weights on a GPU) equals DGL, gradients of h and w included."""
    g = _graph(n_src, n_dst, n_edges, seed)
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n_src, 3, generator=gen, dtype=torch.float64)
    w = torch.rand(n_edges, generator=gen, dtype=torch.float64)
    h1, w1 = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    h2, w2 = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    ref = dgl.ops.u_mul_e_sum(g[REL], h1, w1)
    out = spmm.torch_u_mul_e_sum(g, REL, h2, w2)
    torch.testing.assert_close(out, ref)
    up = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    if n_edges:
        (ref * up).sum().backward()
        (out * up).sum().backward()
        torch.testing.assert_close(h2.grad, h1.grad)
        torch.testing.assert_close(w2.grad, w1.grad)


def test_foreign_device_paths_match_dgl(foreign_device):
    g = _graph(12, 9, 40, 0)
    w = g.edges[REL].data["w"]
    h = torch.randn(12, 4, requires_grad=True)
    ref = dgl.ops.u_mul_e_sum(g[REL], h, w)
    fixed = spmm.u_mul_e_sum(g, REL, h, w)  # cached CSR product, built for h's device
    learned = spmm.u_mul_e_sum(g, REL, h, w.clone().requires_grad_(True))  # torch operations
    assert foreign_device and all(d == h.device for d in foreign_device)
    torch.testing.assert_close(fixed, ref)
    torch.testing.assert_close(learned, ref)
    empty = dgl.heterograph({REL: ([], [])}, num_nodes_dict={"user": 3, "item": 5})
    empty.edges[REL].data["w"] = torch.zeros(0)
    out = spmm.u_mul_e_sum(empty, REL, torch.randn(3, 2), empty.edges[REL].data["w"])
    assert out.shape == (5, 2) and not out.any()


def test_edge_softmax_matches_dgl():
    g = _graph(10, 6, 50, 3)
    logits = torch.randn(50, dtype=torch.float64, requires_grad=True)
    ref = dgl_edge_softmax(g[REL], logits.detach().clone().requires_grad_(True))
    out = spmm.edge_softmax(g, REL, logits)
    torch.testing.assert_close(out, ref.detach())
    sums = torch.zeros(6, dtype=torch.float64).index_add_(0, g.edges(etype=REL)[1], out.detach())
    has_edges = g.in_degrees(etype=REL) > 0
    torch.testing.assert_close(sums[has_edges], torch.ones(int(has_edges.sum()), dtype=torch.float64))


def test_edge_index_is_cached_per_device():
    g = _graph(5, 5, 12, 1)
    a = spmm.edge_index(g, REL, "cpu")
    assert spmm.edge_index(g, REL, torch.device("cpu")) is a
    assert a[0].dtype == torch.int64 and a[0].device.type == "cpu"
    torch.testing.assert_close(torch.stack(a), torch.stack(g.edges(etype=REL)).long())


# ----------------------------------------------------------------------------- models
def test_to_device_moves_parameters_and_keeps_the_graph_on_the_cpu():
    for name in ("lightgcn", "dgmrec"):
        cfg = small_config(name)
        model = build_model(load_dataset(cfg), cfg)
        model.to_device(torch.device("meta"))  # a device without DGL kernels; nothing is computed
        assert model.device.type == "meta"
        assert model.graph.device.type == "cpu"
        if name == "dgmrec":
            assert model.infer_graph.device.type == "cpu"
            assert model.observed.device.type == "meta"


@pytest.mark.parametrize("name", ["mfbpr", "lightgcn", "dgmrec", "ci2mg"])
def test_every_model_trains_through_the_foreign_device_paths(name, monkeypatch):
    """One step through the paths a GPU takes gives DGL's CPU results (same seed, same batch)."""
    cfg = small_config(name)
    ds = load_dataset(cfg)
    batch = next(iter(BPRSampler(ds.train, ds.n_items, rng=np.random.default_rng(0)).epoch(256)))

    def step():
        model = build_model(ds, cfg)  # seeds first
        torch.manual_seed(5)
        loss = model.loss(batch)["loss"]
        loss.backward()
        return float(loss), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    want_loss, want_grads = step()
    monkeypatch.setattr(spmm, "dgl_runs_on", lambda g, device: False)
    got_loss, got_grads = step()
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    for k, w in want_grads.items():
        torch.testing.assert_close(got_grads[k], w, rtol=1e-4, atol=1e-6)


def test_attention_block_runs_through_the_torch_kernels(monkeypatch):
    from graphrec.registry import import_plugin

    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    import_plugin("examples.attention_block")
    cfg = small_config("dgmrec", item_graph_block="attention_item_conv")
    ds = load_dataset(cfg)
    model = build_model(ds, cfg)
    for p in model.item_propagation.conv.parameters():
        torch.nn.init.normal_(p, std=0.5)  # non-uniform attention
    x = torch.rand(ds.n_items, 64)
    m = model.modalities[0]
    want = model.item_propagation.conv(model.graph, x, m)
    monkeypatch.setattr(spmm, "dgl_runs_on", lambda g, device: False)
    got = model.item_propagation.conv(model.graph, x, m)
    torch.testing.assert_close(got, want)


# ----------------------------------------------------------------------------- device and thread choice
def test_auto_picks_the_gpu_when_torch_sees_one(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")  # a CPU-only DGL build does not matter
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(GraphrecError, match="sees 2 GPU"):
        resolve_device("cuda:2")


def test_bad_devices_are_user_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GraphrecError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(GraphrecError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    assert_user_error(invoke("fit", "lightgcn", "--device", "cuda", "--epochs", "1"), "no CUDA GPU")
    assert_user_error(invoke("fit", "lightgcn", "--device", "tpu", "--epochs", "1"), "device 'tpu'")


def test_threads_default_to_what_the_process_may_use(monkeypatch):
    assert resolve_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert resolve_threads(0) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert resolve_threads(0) == len(os.sched_getaffinity(0))


def test_fit_threads_option_sets_torch_threads(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n))
    r = invoke("fit", "mfbpr", "--epochs", "1", "--threads", "2", "--device", "cpu", "--quiet", "--out", tmp_path / "run",
               "--set", "synth_users=60", "--set", "synth_items=80")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert seen == [2]
