"""Configs of the DGMRec authors' code and MMRec: aliases with their conversion, or one-line errors."""

from __future__ import annotations

import pytest

from graphrec.config import AUTHOR_ERRORS, resolve_config
from graphrec.errors import GraphrecError
from graphrec.registry import MODELS, load_builtin

load_builtin()


def _cfg(model: str, overrides: dict, files=()):
    return resolve_config(model, MODELS.get(model).default_config, list(files), overrides)


def test_authors_best_config_keys_are_read(tmp_path) -> None:
    best = tmp_path / "LightGCN_tiktok.yaml"
    best.write_text("n_ui_layers: [2]\nreg_weight: [0.0]\nlearning_rate: [0.001]\nseed: [999]\nlearner: adam\n"
                    "use_gpu: false\ninter_file_name: tiktok.inter\nfilter_out_cod_start_users: true\nvalid_metric: Recall@20\n")
    c = _cfg("lightgcn", {}, [best])
    assert (c["n_layers"], c["reg_weight"], c["learning_rate"], c["seed"]) == (2, 0.0, 0.001, 999)
    assert (c["device"], c["dataset"], c["filter_cold_users"]) == ("cpu", "tiktok", True)
    assert _cfg("dgmrec", {"n_layers": 2})["n_ui_layers"] == 2
    assert _cfg("dgmrec", {"gpu_id": 1})["device"] == "cuda:1"


@pytest.mark.parametrize("key", sorted(AUTHOR_ERRORS))
def test_keys_without_counterpart_name_what_to_use(key) -> None:
    with pytest.raises(GraphrecError, match=f"'{key}' \\(a key of the authors' code / MMRec\\) has no graphrec counterpart: .+") as e:
        _cfg("lightgcn", {key: 1})
    assert "\n" not in str(e.value)


def test_grids_and_other_optimisers_are_refused() -> None:
    with pytest.raises(GraphrecError, match="'learning_rate' holds several values"):
        _cfg("mfbpr", {"learning_rate": [0.001, 0.01]})
    with pytest.raises(GraphrecError, match="Adam only"):
        _cfg("mfbpr", {"learner": "sgd"})
    assert _cfg("lightgcn", {"topk": [10, 20]})["topk"] == [10, 20]  # list-valued keys stay lists
