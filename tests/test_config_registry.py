"""Config resolution (precedence, unknown keys, types) and the model/block registries."""

from __future__ import annotations

import pytest
from torch import nn

from graphrec.config import DATA_DEFAULTS, TRAIN_DEFAULTS, load_yaml, parse_set, resolve_config
from graphrec.errors import GraphrecError
from graphrec.registry import BLOCKS, MODELS, Registry, load_builtin

MODEL_DEFAULTS = {"n_layers": 3, "reg_weight": 1e-4, "epochs": 100}


def test_defaults_and_model_defaults():
    cfg = resolve_config("toy", MODEL_DEFAULTS)
    assert cfg["model"] == "toy"
    assert cfg["n_layers"] == 3
    # the model's default overrides the trainer default
    assert cfg["epochs"] == 100 != TRAIN_DEFAULTS["epochs"]
    for key in list(TRAIN_DEFAULTS) + list(DATA_DEFAULTS):
        assert key in cfg
    assert cfg["learning_rate"] == TRAIN_DEFAULTS["learning_rate"]


def test_precedence_files_in_order_then_overrides(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("n_layers: 1\nlearning_rate: 0.5\nseed: 7\n")
    b.write_text("model: toy\nn_layers: 2\n")
    cfg = resolve_config("toy", MODEL_DEFAULTS, [a, b], {"seed": 11})
    assert cfg["n_layers"] == 2  # later file wins
    assert cfg["learning_rate"] == 0.5  # earlier file still applies
    assert cfg["seed"] == 11  # overrides win over files
    assert cfg["model"] == "toy"


def test_file_for_another_model(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("model: dgmrec\n")
    with pytest.raises(GraphrecError, match=r"x\.yaml.*dgmrec.*not 'toy'"):
        resolve_config("toy", MODEL_DEFAULTS, [f])


def test_unknown_key_names_key_and_suggests():
    with pytest.raises(GraphrecError) as exc:
        resolve_config("toy", MODEL_DEFAULTS, overrides={"lerning_rate": 0.1})
    msg = str(exc.value)
    assert "lerning_rate" in msg and "did you mean 'learning_rate'" in msg
    assert "\n" not in msg


def test_unknown_key_in_file_names_file(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("nonsense_key: 1\n")
    with pytest.raises(GraphrecError, match=r"cfg\.yaml.*nonsense_key"):
        resolve_config("toy", MODEL_DEFAULTS, [f])


@pytest.mark.parametrize(
    "key,value,pattern",
    [
        ("epochs", "abc", "'epochs' must be an integer"),
        ("epochs", 2.5, "'epochs' must be an integer"),
        ("epochs", True, "'epochs' must be an integer"),
        ("learning_rate", "fast", "'learning_rate' must be a number"),
        ("learning_rate", False, "'learning_rate' must be a number"),
        ("filter_cold_users", "yes", "'filter_cold_users' must be true or false"),
        ("filter_cold_users", 1, "'filter_cold_users' must be true or false"),
        ("topk", 20, "'topk' must be a list"),
    ],
)
def test_wrong_value_types(key, value, pattern):
    with pytest.raises(GraphrecError, match=pattern):
        resolve_config("toy", MODEL_DEFAULTS, overrides={key: value})


@pytest.mark.parametrize(
    "key,value,pattern",
    [
        ("train_batch_size", 0, r"'train_batch_size' must be >= 1, got 0"),
        ("eval_batch_size", -1, r"'eval_batch_size' must be >= 1"),
        ("eval_step", 0, r"'eval_step' must be >= 1"),
        ("epochs", -1, r"'epochs' must be >= 1"),
        ("epochs", 0, r"'epochs' must be >= 1 \(at least one epoch of training\)"),
        ("seed", -5, r"'seed' must be an integer in \[0, 2\^32\)"),
        ("seed", 2**32, r"'seed' must be"),
        ("learning_rate", -0.1, r"'learning_rate' must be >= 0"),
        ("weight_decay", -1e-4, r"'weight_decay' must be >= 0"),
        ("topk", [0], r"'topk' must be a non-empty list of positive integers"),
        ("topk", [], r"'topk' must be a non-empty list"),
        ("topk", [10, 2.5], r"'topk' must be a non-empty list"),
        ("synth_items", 19, r"'synth_items' must be >= 20"),
        ("synth_interactions", 4, r"'synth_interactions' must be >= 5 \(every synthetic user"),
    ],
)
def test_out_of_range_values_are_one_line_errors(key, value, pattern, tmp_path):
    with pytest.raises(GraphrecError, match="^--set: " + pattern):
        resolve_config("toy", MODEL_DEFAULTS, overrides={key: value})
    f = tmp_path / "c.yaml"
    f.write_text(f"{key}: {value}\n")
    with pytest.raises(GraphrecError, match=f"^config file '{f}': " + pattern):
        resolve_config("toy", MODEL_DEFAULTS, [f])


def test_boundary_values_are_accepted():
    cfg = resolve_config("toy", MODEL_DEFAULTS, overrides={
        "epochs": 1, "seed": 0, "stopping_step": 0, "eval_item_chunk": 0, "weight_decay": 0, "topk": [1]})
    assert cfg["epochs"] == 1 and cfg["topk"] == [1]


def test_value_coercions():
    cfg = resolve_config("toy", MODEL_DEFAULTS, overrides={"epochs": 3.0, "learning_rate": 1, "data_dir": "x"})
    assert cfg["epochs"] == 3 and isinstance(cfg["epochs"], int)
    assert cfg["learning_rate"] == 1.0 and isinstance(cfg["learning_rate"], float)
    assert cfg["data_dir"] == "x"
    # None is allowed for any key (e.g. "back to the default behaviour")
    assert resolve_config("toy", MODEL_DEFAULTS, overrides={"dataset": None})["dataset"] is None


def test_parse_set_reads_yaml_values():
    out = parse_set(["a=0.1", "b=true", "c=[1, 2]", "d=text", "e=", "f=x=y"])
    assert out == {"a": 0.1, "b": True, "c": [1, 2], "d": "text", "e": None, "f": "x=y"}


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """PyYAML alone reads ``1e-3`` as a string; configs and --set read it as 0.001."""
    import yaml

    assert parse_set(["lr=1e-3", "n=-2E+2", "x=1.5e-3", "s=1e-3x", "i=2024"]) == {
        "lr": 0.001, "n": -200.0, "x": 0.0015, "s": "1e-3x", "i": 2024}
    f = tmp_path / "c.yaml"
    f.write_text("learning_rate: 1e-3\nweight_decay: 1E-4\n")
    cfg = resolve_config("toy", {"reg_weight": 1e-4}, [f], overrides=parse_set(["reg_weight=5e-5"]))
    assert cfg["learning_rate"] == 0.001 and cfg["weight_decay"] == 0.0001 and cfg["reg_weight"] == 5e-5
    assert yaml.safe_load("x: 1e-3") == {"x": "1e-3"}  # the global loader is untouched


def test_parse_set_without_equals():
    with pytest.raises(GraphrecError, match="key=value.*'novalue'"):
        parse_set(["novalue"])


def test_load_yaml_errors(tmp_path):
    with pytest.raises(GraphrecError, match="does not exist"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(GraphrecError, match=r"bad\.yaml.*not valid YAML"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(GraphrecError, match=r"list\.yaml.*mapping"):
        load_yaml(lst)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}


# ----------------------------------------------------------------------------- registry
def test_registry_register_get_and_errors():
    reg: Registry = Registry("widget")

    @reg.register("alpha")
    class Alpha:
        pass

    assert reg.get("alpha") is Alpha
    assert "alpha" in reg and "beta" not in reg
    assert reg.names() == ["alpha"]
    assert list(reg.items()) == [("alpha", Alpha)]
    # registering the same object again is a no-op
    reg.register("alpha")(Alpha)
    with pytest.raises(GraphrecError, match="already registered"):

        @reg.register("alpha")
        class Other:
            pass

    with pytest.raises(GraphrecError) as exc:
        reg.get("alpa")
    msg = str(exc.value)
    assert "unknown widget 'alpa'" in msg and "did you mean 'alpha'" in msg and "alpha" in msg


def test_builtin_models_and_blocks():
    load_builtin()
    from graphrec.blocks.lightgcn import LightGCNConv, LightGCNPropagation
    from graphrec.models import LightGCN, MFBPR

    assert MODELS.get("lightgcn") is LightGCN
    assert MODELS.get("mfbpr") is MFBPR
    assert BLOCKS.get("lightgcn") is LightGCNPropagation
    assert BLOCKS.get("lightgcn_conv") is LightGCNConv
    for name, cls in BLOCKS.items():
        assert issubclass(cls, nn.Module), name
    for name, cls in MODELS.items():
        assert isinstance(cls.default_config, dict), name


def test_unknown_model_name():
    load_builtin()
    with pytest.raises(GraphrecError, match="unknown model 'lightgnc'.*did you mean 'lightgcn'"):
        MODELS.get("lightgnc")
