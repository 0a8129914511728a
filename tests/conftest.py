"""Shared fixtures and helpers of the graphrec test suite.

* :func:`shared_data_dir` / the ``shared_data`` fixture: where the real data lives
  (``$GRAPHREC_SHARED_DATA``, default ``<repo>/../shared/data``); tests that need it are
  marked ``realdata`` and skip when it is absent. Real data is never copied into the repo.
* :func:`write_inter_file` / :func:`write_mmrec_dir`: write tiny MMRec-format folders.
* :func:`make_dataset`: a :class:`RecDataset` from explicit (user, item, label) rows.
* :func:`small_config`: a resolved config on a small synthetic dataset (fast on 2 CPU cores).
* a watchdog: a test that runs longer than ``$GRAPHREC_TEST_TIMEOUT`` seconds (default 300; the
  slowest test takes a few seconds) fails with a ``TimeoutError`` where it stands; if it is stuck
  in native code, every thread's stack is dumped and the run exits, so a hang never eats CI's time.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys

# one CPU thread per test process unless told otherwise: the tensors here are tiny, and
# OpenMP spinning on a busy 2-core machine makes multi-threaded runs several times slower
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("GRAPHREC_TEST_THREADS", "1"))
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from graphrec.config import resolve_config
from graphrec.data.dataset import RecDataset, build_dataset
from graphrec.data.interactions import Interactions
from graphrec.data.masks import MissingModalities
from graphrec.registry import MODELS, load_builtin
from graphrec.train.trainer import Callback

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO_ROOT = Path(__file__).resolve().parents[1]

# hypothesis: small, deterministic example counts so that the suite stays fast on 2 cores
settings.register_profile(
    "graphrec", max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "graphrec"))


# ----------------------------------------------------------------------------- watchdog
TEST_TIMEOUT_S = float(os.environ.get("GRAPHREC_TEST_TIMEOUT", "300"))


def _on_alarm(signum, frame):  # pragma: no cover - only on a hang
    raise TimeoutError(f"test ran longer than {TEST_TIMEOUT_S:g} s (GRAPHREC_TEST_TIMEOUT)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    armed = TEST_TIMEOUT_S > 0 and hasattr(signal, "SIGALRM")
    if armed:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT_S)
        # backstop for a hang in native code, where the alarm's exception never gets to run
        faulthandler.dump_traceback_later(TEST_TIMEOUT_S + 60, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            faulthandler.cancel_dump_traceback_later()


# ----------------------------------------------------------------------------- real data
def shared_data_dir() -> Path:
    """``$GRAPHREC_SHARED_DATA`` or the ``shared/data`` folder beside the repository."""
    env = os.environ.get("GRAPHREC_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set GRAPHREC_SHARED_DATA)")
    return root


def require_files(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"real data file {p} not found")


def link_files(dest: Path, files: Mapping[str, Path]) -> Path:
    """Make ``dest`` hold symbolic links ``name -> path`` (read-only real data stays where it is)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        (dest / name).symlink_to(src)
    return dest


# ----------------------------------------------------------------------------- MMRec folders
Row = tuple[int, int, int]


def write_inter_file(path: Path, rows: Iterable[Row] | None = None, text: str | None = None) -> Path:
    """Write an .inter file from ``(user, item, x_label)`` rows, or verbatim ``text``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if text is None:
        lines = ["userID\titemID\tx_label"] + [f"{u}\t{i}\t{lab}" for u, i, lab in rows or ()]
        text = "\n".join(lines) + "\n"
    path.write_text(text)
    return path


def tiny_rows(n_users: int = 12, n_items: int = 15, per_user: int = 5, seed: int = 0) -> list[Row]:
    """Random rows where every user has ``per_user - 2`` train rows, one valid and one test row."""
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    for u in range(n_users):
        items = rng.choice(n_items, per_user, replace=False)
        labels = [1, 2] + [0] * (per_user - 2)
        rows += [(u, int(i), lab) for i, lab in zip(items, labels)]
    # make sure the highest ids occur so that U and N are as requested
    if all(i != n_items - 1 for _, i, _ in rows):
        rows.append((n_users - 1, n_items - 1, 0))
    return rows


def write_mmrec_dir(
    root: Path,
    rows: Iterable[Row] | None = None,
    name: str = "toy",
    features: Mapping[str, np.ndarray] | None = None,
    masks: Mapping[str, dict] | None = None,
    n_items: int | None = None,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """Write ``<name>.inter``, ``<m>_feat.npy`` and ``missing_items_<ratio>.npy`` into ``root``.

    Without ``features``, random features for ``image`` (8-d) and ``text`` (6-d) are written
    (``dims`` changes them; ``{}`` writes none).
    """
    rows = list(rows if rows is not None else tiny_rows(seed=seed))
    write_inter_file(root / f"{name}.inter", rows)
    n = n_items if n_items is not None else max(i for _, i, _ in rows) + 1
    rng = np.random.default_rng(seed)
    if features is None:
        features = {m: rng.normal(size=(n, d)).astype(np.float32) for m, d in (dims or {"image": 8, "text": 6}).items()}
    for m, x in features.items():
        np.save(root / f"{m}_feat.npy", x)
    for ratio, d in (masks or {}).items():
        np.save(root / f"missing_items_{ratio}.npy", np.array(d, dtype=object), allow_pickle=True)
    return root


@pytest.fixture
def mmrec_dir(tmp_path: Path) -> Path:
    """A valid tiny MMRec folder (12 users, 15 items, image + text features, no mask)."""
    return write_mmrec_dir(tmp_path / "data")


# ----------------------------------------------------------------------------- datasets
def make_dataset(
    rows: Iterable[Row],
    n_users: int | None = None,
    n_items: int | None = None,
    features: Mapping[str, np.ndarray] | None = None,
    missing: MissingModalities | None = None,
    new_items: np.ndarray | None = None,
    filter_cold_users: bool = True,
    imputation: str = "mean",
) -> RecDataset:
    """A :class:`RecDataset` from explicit ``(user, item, label)`` rows."""
    arr = np.asarray(list(rows), dtype=np.int64)
    nu = n_users if n_users is not None else int(arr[:, 0].max()) + 1
    ni = n_items if n_items is not None else int(arr[:, 1].max()) + 1
    inter = Interactions(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].astype(np.int8), nu, ni)
    feats = dict(features or {})
    mods = list(feats) if missing is None else list(missing.modalities)
    miss = missing if missing is not None else MissingModalities.none(mods, ni)
    return build_dataset(
        "tiny", inter, feats, miss, new_items=new_items, imputation=imputation, filter_cold_users=filter_cold_users
    )


def small_config(model: str = "lightgcn", **overrides: Any) -> dict[str, Any]:
    """Resolved config for ``model`` on a small synthetic set, CPU, no file access."""
    load_builtin()
    base = {"synth_users": 150, "synth_items": 200, "device": "cpu", "epochs": 2, "train_batch_size": 512}
    base.update(overrides)
    return resolve_config(model, MODELS.get(model).default_config, overrides=base)


def train_small_cold_knn():
    """``dgmrec_cold`` (``cold_repr: knn``) trained 4 epochs on the small synthetic new-item protocol:
    ``(model in eval mode, dataset, config)``; for module-scoped fixtures of the new-item tests."""
    from graphrec.data.dataset import load_dataset
    from graphrec.models.build import build_model
    from graphrec.train.trainer import Trainer

    cfg = small_config("dgmrec_cold", seed=4, new_items=True, epochs=4, cold_repr="knn")
    ds = load_dataset(cfg)
    model = build_model(ds, cfg)
    Trainer(model, ds, cfg, progress=False).fit()
    return model.eval(), ds, cfg


def invoke(*args):
    """Run the ``graphrec`` CLI in-process (click's runner); arguments are stringified."""
    from click.testing import CliRunner

    from graphrec.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, *fragments: str) -> str:
    """Exit status 2 and exactly one 'Error: ...' line on stderr, no traceback; returns the line."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


UI = ("user", "ui", "item")


def random_ui_graph(n_src: int, n_dst: int, n_edges: int, seed: int):
    """A random ``user -ui-> item`` DGL graph with edge weights ``w`` in [0, 1) (duplicate edges allowed)."""
    import dgl

    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n_src, (n_edges,), generator=g)
    dst = torch.randint(0, n_dst, (n_edges,), generator=g)
    graph = dgl.heterograph({UI: (src, dst)}, num_nodes_dict={"user": n_src, "item": n_dst})
    graph.edges[UI].data["w"] = torch.rand(n_edges, generator=g)
    return graph


class StopAfter(Callback):
    """A trainer callback that interrupts (``KeyboardInterrupt``) after epoch ``k``'s bookkeeping,
    when that epoch's checkpoint / resume state is written: for the resume tests."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_epoch_logged(self, trainer, epoch, record, evaluated, improved) -> None:
        if epoch + 1 == self.k:
            raise KeyboardInterrupt
