"""Plugins: entry points, --plugin modules, swappable block slots, checkpoints that need plugins,
and the tutorial's attention block (docs/extending.md, examples/attention_block.py)."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import dgl
import pytest
import torch
from torch import nn

from graphrec.blocks import ItemGraphConv
from graphrec.blocks.slots import build_block, expand_relations
from graphrec.data.dataset import load_dataset
from graphrec.errors import GraphrecError
from graphrec.graph.heterograph import knn_relation
from graphrec.models.build import build_model
from graphrec.registry import BLOCKS, MODELS, import_plugin, load_builtin, register_block
from graphrec.train.checkpoint import read_checkpoint

from conftest import REPO_ROOT, assert_user_error, invoke, small_config

PLUGIN_PKG = Path(__file__).parent / "plugin_pkg"
SMALL = ["--set", "synth_users=150", "--set", "synth_items=200", "--set", "device=cpu"]



def fit(out: Path, model: str, *args) -> dict:
    r = invoke("fit", model, "--epochs", "1", "--quiet", "--out", out, *SMALL, *args)
    assert r.exit_code == 0, r.output
    return read_checkpoint(out / "model.pt")


def write_dist_info(site: Path, dist: str, version: str, entry_points: dict[str, dict[str, str]]) -> None:
    """What ``pip install`` leaves in site-packages for importlib.metadata: METADATA + entry_points.txt."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines += [f"[{group}]", *(f"{k} = {v}" for k, v in eps.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))


# ----------------------------------------------------------------------------- entry points
@pytest.fixture
def toy_dist(tmp_path, monkeypatch) -> Path:
    """tests/plugin_pkg made visible as an installed distribution, without network or pip."""
    project = tomllib.loads((PLUGIN_PKG / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    write_dist_info(site, project["name"], project["version"], project["entry-points"])
    monkeypatch.syspath_prepend(str(PLUGIN_PKG))  # the package's code (as an editable install)
    monkeypatch.syspath_prepend(str(site))  # its metadata
    return site


def test_entry_points_register_block_and_model(toy_dist):
    load_builtin()
    assert "toy_ui_conv" in BLOCKS and "toy_mf" in MODELS
    assert BLOCKS.distribution("toy_ui_conv") == "graphrec-toy-plugin"
    assert BLOCKS.origin("toy_ui_conv") == "graphrec_toy_plugin.blocks"
    assert MODELS.source("toy_mf") == "graphrec-toy-plugin" and MODELS.origin("toy_mf") == "graphrec_toy_plugin.models"
    assert not BLOCKS.is_builtin("toy_ui_conv") and BLOCKS.is_builtin("lightgcn_conv")
    r = invoke("blocks")
    assert r.exit_code == 0 and "toy_ui_conv" in r.stdout and "graphrec-toy-plugin" in r.stdout
    r = invoke("models")
    assert r.exit_code == 0 and "toy_mf" in r.stdout
    r = invoke("models", "toy_mf")
    assert r.exit_code == 0 and "ui_block" in r.stdout and "block (ui_conv)" in r.stdout


def test_entry_point_model_and_block_fit_and_evaluate(toy_dist, tmp_path):
    payload = fit(tmp_path / "mf", "toy_mf", "--set", "ui_block=toy_ui_conv")
    assert payload["model"] == "toy_mf" and payload["blocks"] == {"ui_block": "toy_ui_conv"}
    assert payload["plugins"] == ["graphrec_toy_plugin.models", "graphrec_toy_plugin.blocks"]
    assert payload["registry"]["blocks"]["ui_block"]["distribution"] == "graphrec-toy-plugin"
    assert "conv.scale" in payload["state_dict"]
    # the plugin block swapped into a built-in model
    payload = fit(tmp_path / "lgcn", "lightgcn", "--set", "ui_block=toy_ui_conv")
    assert payload["plugins"] == ["graphrec_toy_plugin.blocks"]
    assert "propagation.conv.scale" in payload["state_dict"]
    r = invoke("evaluate", tmp_path / "lgcn", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"]["recall@20"] == pytest.approx(payload["result"]["test"]["metrics"]["recall@20"])


def test_broken_entry_point_is_one_line_error(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write_dist_info(site, "graphrec-broken-plugin", "0.2", {"graphrec.blocks": {"broken_conv": "graphrec_no_such_module:Conv"}})
    monkeypatch.syspath_prepend(str(site))
    line = assert_user_error(invoke("blocks"), "broken_conv = graphrec_no_such_module:Conv", "graphrec.blocks",
                             "distribution 'graphrec-broken-plugin'", "No module named 'graphrec_no_such_module'")
    assert "GRAPHREC_DISABLE_ENTRY_POINTS" in line
    monkeypatch.setenv("GRAPHREC_DISABLE_ENTRY_POINTS", "1")
    assert invoke("blocks").exit_code == 0


def test_entry_point_module_that_registers_nothing(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "graphrec_empty_plugin.py").parent.mkdir(parents=True)
    (site / "graphrec_empty_plugin.py").write_text("X = 1\n")
    write_dist_info(site, "graphrec-empty-plugin", "0.1", {"graphrec.models": {"ghost": "graphrec_empty_plugin"}})
    monkeypatch.syspath_prepend(str(site))
    assert_user_error(invoke("models"), "'ghost = graphrec_empty_plugin'", "registers no model named 'ghost'")


# ----------------------------------------------------------------------------- --plugin
def test_plugin_option_bad_module():
    assert_user_error(invoke("--plugin", "graphrec_nope_mod", "models"), "plugin module 'graphrec_nope_mod'", "No module named")
    assert_user_error(invoke("blocks", "--plugin", "graphrec_nope_mod"), "plugin module 'graphrec_nope_mod'")


def test_plugin_module_from_current_directory(tmp_path, monkeypatch):
    (tmp_path / "graphrec_cwd_plugin.py").write_text(
        "from graphrec.blocks import ItemGraphConv\nfrom graphrec.registry import register_block\n"
        "@register_block('cwd_item_conv')\nclass CwdConv(ItemGraphConv):\n    '''from the current directory'''\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        r = invoke("--plugin", "graphrec_cwd_plugin.py", "blocks")  # a file path works as well
        assert r.exit_code == 0, r.output
        assert "cwd_item_conv" in r.stdout and "graphrec_cwd_plugin" in r.stdout
    finally:
        BLOCKS.unregister("cwd_item_conv")
        sys.modules.pop("graphrec_cwd_plugin", None)


# ----------------------------------------------------------------------------- block slots
class BadShapeConv(nn.Module):
    """Returns half the embedding width (wrong)."""

    relations = ("knn_{m}",)

    def forward(self, g, h, modality):
        return h[:, : h.shape[1] // 2]


class KnnUIConv(nn.Module):
    """A ui-slot block that (wrongly for LightGCN) reads the per-modality kNN relations."""

    relations = ("ui", "knn_{m}")

    def forward(self, g, feats):
        return feats


class NeedsArgsConv(nn.Module):
    relations = ()

    def __init__(self, hidden: int) -> None:
        super().__init__()

    def forward(self, g, h, modality):
        return h


class NoRelationsConv(nn.Module):
    def forward(self, g, h, modality):
        return h


@pytest.fixture
def test_blocks():
    names = {"t_bad_shape": BadShapeConv, "t_knn_ui": KnnUIConv, "t_needs_args": NeedsArgsConv, "t_no_rel": NoRelationsConv}
    for n, cls in names.items():
        register_block(n)(cls)
    yield
    for n in names:
        BLOCKS.unregister(n)


def test_relation_templates():
    rels = expand_relations(("ui", ("item", "knn_{m}", "item"), "refine_{m}"), ["image", "text"])
    assert [r for _, r in rels] == ["ui", ("item", "knn_image", "item"), ("item", "knn_text", "item"), "refine_image", "refine_text"]


def test_default_blocks_keep_the_state_dict():
    cfg = small_config("lightgcn")
    model = build_model(load_dataset(cfg), cfg)
    assert set(model.state_dict()) == {"user_emb", "item_emb"}
    assert type(model.propagation.conv).__name__ == "LightGCNConv"


@pytest.mark.parametrize(
    "model,sets,fragments",
    [
        ("dgmrec", ["item_graph_block=no_such_block"], ["config key 'item_graph_block'", "unknown block 'no_such_block'", "--plugin"]),
        ("lightgcn", ["ui_block=t_knn_ui"], ["block 't_knn_ui' (config key 'ui_block')", "'knn_image'", "does not have", "iu, ui"]),
        ("dgmrec", ["item_graph_block=lightgcn_conv"], ["does not fit the item_conv slot", "forward(g, h (N, d), modality)"]),
        ("dgmrec", ["item_graph_block=t_needs_args"], ["__init__ needs hidden", "d, modalities"]),
        ("dgmrec", ["item_graph_block=t_no_rel"], ["does not declare the relations"]),
        ("dgmrec", ["item_graph_block=t_bad_shape"], ["block 't_bad_shape'", "returned (200, 32), expected (200, 64)", "item_conv"]),
    ],
    ids=["unknown", "relations", "signature", "ctor", "no-relations", "shape"],
)
def test_slot_errors(test_blocks, tmp_path, model, sets, fragments):
    args = [a for s in sets for a in ("--set", s)]
    r = invoke("fit", model, "--epochs", "1", "--quiet", "--out", tmp_path / "o", *SMALL, *args,
               "--set", "knn_chunk_size=64" if model == "dgmrec" else "reg_weight=0.0001")
    assert_user_error(r, *fragments)


def test_block_from_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: dgmrec\nitem_graph_block: item_graph\n")  # ItemGraphPropagation also fits the item_conv slot
    payload = fit(tmp_path / "o", "dgmrec", "--config", f)
    assert payload["blocks"] == {"ui_block": "lightgcn_conv", "item_graph_block": "item_graph"}


# ----------------------------------------------------------------------------- tutorial block
@pytest.fixture
def repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))  # restore sys.path after the test


def test_attention_block_starts_as_the_default_conv(repo_cwd):
    import_plugin("examples.attention_block")
    from examples.attention_block import AttentionItemConv

    cfg = small_config("dgmrec", item_graph_block="attention_item_conv")
    ds = load_dataset(cfg)
    model = build_model(ds, cfg)
    conv = model.item_propagation.conv
    assert isinstance(conv, AttentionItemConv) and set(conv.att_src) == {"image", "text"}
    g = model.graph
    h = torch.randn(model.n_items, model.embedding_size)
    for m in model.modalities:
        torch.testing.assert_close(conv(g, h, m), ItemGraphConv()(g, h, m))  # zero attention = Ã_m h
    with torch.no_grad():
        conv.att_src["image"].normal_()
        conv.att_dst["image"].normal_()
    out = conv(g, h, "image")
    assert out.shape == h.shape and not torch.allclose(out, ItemGraphConv()(g, h, "image"))
    # attention weights: an edge softmax over each item's in-edges sums to 1
    sub = g[knn_relation("image")]
    logits = torch.randn(sub.num_edges(), 1)
    alpha = dgl.nn.functional.edge_softmax(sub, logits)
    sums = dgl.ops.copy_e_sum(sub, alpha).squeeze(1)
    has_in = sub.in_degrees() > 0
    torch.testing.assert_close(sums[has_in], torch.ones(int(has_in.sum())))
    out.sum().backward()
    assert conv.att_src["image"].grad is not None and conv.att_src["image"].grad.abs().sum() > 0


def test_attention_block_tutorial_commands(repo_cwd, tmp_path):
    """The tutorial's commands: fit, evaluate and refine-graph, each with --plugin."""
    out = tmp_path / "att"
    r = invoke("--plugin", "examples.attention_block", "fit", "dgmrec", "--set", "item_graph_block=attention_item_conv",
               "--epochs", "1", "--quiet", "--out", out, *SMALL)
    assert r.exit_code == 0, r.output
    payload = read_checkpoint(out / "model.pt")
    assert payload["blocks"] == {"ui_block": "lightgcn_conv", "item_graph_block": "attention_item_conv"}
    assert payload["plugins"] == ["examples.attention_block"]
    assert "item_propagation.conv.att_src.image" in payload["state_dict"]
    r = invoke("--plugin", "examples.attention_block", "evaluate", out, "--json")
    assert r.exit_code == 0, r.output
    r = invoke("refine-graph", out, "--plugin", "examples.attention_block", "--out", tmp_path / "refined")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "refined" / "image_item_graph.npz").is_file()


# ----------------------------------------------------------------------------- checkpoints need plugins
def test_checkpoint_names_the_missing_plugin(tmp_path, monkeypatch):
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "graphrec_ckpt_plugin.py").write_text(
        "import torch\nfrom torch import nn\nfrom graphrec.blocks import ItemGraphConv\n"
        "from graphrec.registry import register_block\n"
        "@register_block('ckpt_item_conv')\nclass ScaledConv(ItemGraphConv):\n"
        "    '''Ã_m h times a learnable scalar.'''\n"
        "    def __init__(self):\n        super().__init__()\n        self.scale = nn.Parameter(torch.tensor(1.0))\n"
        "    def forward(self, g, h, modality):\n        return super().forward(g, h, modality) * self.scale\n"
    )
    clean_path = [p for p in sys.path if p not in ("", str(plug))]
    monkeypatch.setattr(sys, "path", list(clean_path))
    monkeypatch.chdir(plug)
    run = tmp_path / "run"
    try:
        r = invoke("fit", "dgmrec", "--plugin", "graphrec_ckpt_plugin", "--set", "item_graph_block=ckpt_item_conv",
                   "--epochs", "1", "--quiet", "--out", run, *SMALL)
        assert r.exit_code == 0, r.output
        assert read_checkpoint(run / "model.pt")["plugins"] == ["graphrec_ckpt_plugin"]
        # a fresh process elsewhere: the block is not registered and its module not importable
        BLOCKS.unregister("ckpt_item_conv")
        sys.modules.pop("graphrec_ckpt_plugin")
        sys.path[:] = clean_path
        monkeypatch.chdir(tmp_path)
        msg = ("checkpoint needs plugin module 'graphrec_ckpt_plugin' (block 'ckpt_item_conv'); "
               "pass --plugin graphrec_ckpt_plugin (plugins named in a checkpoint are never imported by themselves)")
        assert_user_error(invoke("evaluate", run), msg)
        assert_user_error(invoke("refine-graph", run, "--out", tmp_path / "ref"), msg)
        assert not (tmp_path / "ref").exists()
        # even where the recorded module is importable, the checkpoint does not import it
        monkeypatch.chdir(plug)
        assert_user_error(invoke("evaluate", run), msg)
        assert_user_error(invoke("retrieval-eval", run), msg)
        assert "graphrec_ckpt_plugin" not in sys.modules and "ckpt_item_conv" not in BLOCKS
        r = invoke("--plugin", "graphrec_ckpt_plugin", "evaluate", run, "--json")  # the group option
        assert r.exit_code == 0, r.output
        assert "ckpt_item_conv" in BLOCKS
        # or name it with --plugin (subcommand option)
        BLOCKS.unregister("ckpt_item_conv")
        sys.modules.pop("graphrec_ckpt_plugin")
        sys.path[:] = clean_path
        r = invoke("refine-graph", run, "--out", tmp_path / "ref", "--plugin", "graphrec_ckpt_plugin")
        assert r.exit_code == 0, r.output
    finally:
        BLOCKS.unregister("ckpt_item_conv")
        sys.modules.pop("graphrec_ckpt_plugin", None)


def test_builtin_checkpoint_needs_no_plugins(tmp_path):
    payload = fit(tmp_path / "l", "lightgcn")
    assert payload["plugins"] == [] and payload["blocks"] == {"ui_block": "lightgcn_conv"}
    with pytest.raises(GraphrecError, match="unknown block"):
        build_block("ui_block", "nope", "ui_conv", None, [], 8, "lightgcn")
