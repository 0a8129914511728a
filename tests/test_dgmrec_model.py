"""DGMRec end to end on small synthetic data: losses, per-epoch hooks, checkpoints, settings."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from conftest import small_config
from graphrec.data.dataset import load_dataset
from graphrec.data.sampler import BPRSampler
from graphrec.errors import GraphrecError
from graphrec.eval.evaluator import popularity_scorer
from graphrec.graph import item_graph_matrix
from graphrec.graph.heterograph import refine_relation
from graphrec.models.dgmrec import DGMRec
from graphrec.train.seed import set_seed
from graphrec.train.trainer import Trainer

LOSS_KEYS = {"bpr", "reg", "inter", "club", "align_ui", "align_bm", "gen", "recon"}
WEIGHT_OF = {"inter": "interModal", "club": "sampler", "align_ui": "intraModal", "align_bm": "alignBM", "gen": "additive",
             "recon": "recon"}  # fmt: skip


def config(**overrides):
    return small_config("dgmrec", **overrides)


def build(dataset, seed: int = 0, **overrides) -> DGMRec:
    set_seed(seed)
    return DGMRec(dataset, config(**overrides))


def first_batch(dataset, size: int = 512, seed: int = 0):
    sampler = BPRSampler(dataset.train, dataset.n_items, exclude_items=dataset.new_items, rng=np.random.default_rng(seed))
    return next(iter(sampler.epoch(size)))


def raw_copy(model) -> dict[str, np.ndarray]:
    return {m: model.raw[m].detach().numpy().copy() for m in model.modalities}


def changed_rows(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return (before != after).any(axis=1)


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(config())


# ----------------------------------------------------------------------------- losses
def test_loss_has_finite_parts_for_every_term(dataset):
    model = build(dataset)
    losses = model.loss(first_batch(dataset))
    assert set(losses) == LOSS_KEYS | {"loss"}
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    torch.testing.assert_close(losses["loss"], sum(v for k, v in losses.items() if k != "loss"))
    assert losses["bpr"] > 0 and losses["reg"] > 0 and losses["recon"] > 0 and losses["gen"] > 0


@pytest.mark.parametrize("key", sorted(WEIGHT_OF))
def test_zero_weight_removes_its_term(dataset, key):
    model = build(dataset, **{WEIGHT_OF[key]: 0.0})
    losses = model.loss(first_batch(dataset))
    assert key not in losses
    assert set(losses) == (LOSS_KEYS - {key}) | {"loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    if key == "club":
        assert len(model.club) == 0  # no estimators at all when sampler = 0


def test_weights_scale_their_terms(dataset):
    batch = first_batch(dataset)
    a = build(dataset).loss(batch)
    b = build(dataset, recon=0.2, alignBM=0.02).loss(batch)
    # same seed, same model: the deterministic terms scale with their weight
    torch.testing.assert_close(b["align_bm"], 2 * a["align_bm"])
    torch.testing.assert_close(b["bpr"], a["bpr"])
    assert abs(b["recon"] / a["recon"] - 2.0) < 0.05  # noise ν in the decoder input


def grads_of(model, term: str, batch) -> dict[str, float]:
    model.zero_grad(set_to_none=True)
    model.loss(batch)[term].backward()
    return {n: float(p.grad.abs().sum()) if p.grad is not None else 0.0 for n, p in model.named_parameters()}


def test_reconstruction_trains_decoder_and_raw_target_only(dataset):
    """Spec 4.4(h): the decoder input is detached, the raw-table target is not."""
    model = build(dataset)
    g = grads_of(model, "recon", first_batch(dataset))
    for n, v in g.items():
        if n.startswith("decoders.") or n.startswith("raw."):
            assert v > 0, n
        else:
            assert v == 0, n


def recon_row_grads(model, batch) -> dict[str, np.ndarray]:
    """Per modality, (N,) absolute gradient of the recon term in each raw-table row."""
    model.zero_grad(set_to_none=True)
    model.loss(batch)["recon"].backward()
    return {m: model.raw[m].grad.abs().sum(1).numpy() for m in model.modalities}


@pytest.mark.parametrize("propagation", ["full", "sampled"])
def test_recon_rows_observed_leaves_the_rows_of_missing_items(dataset, propagation):
    """recon_rows 'all' (spec 4.4(h)) pulls every row towards the decoder; 'observed' only the rows of items observing m."""
    batch = first_batch(dataset)
    every = recon_row_grads(build(dataset, propagation=propagation), batch)
    seen = recon_row_grads(build(dataset, propagation=propagation, recon_rows="observed"), batch)
    for j, m in enumerate(dataset.modalities):
        missing = dataset.missing.missing[m]
        assert missing.any() and (~missing).any()
        assert (every[m][missing] > 0).any()  # the default reaches the generated / imputed rows
        assert not seen[m][missing].any()  # 'observed' never does
        assert (seen[m][~missing] > 0).any()


def test_recon_rows_observed_is_the_mse_over_observed_rows(dataset):
    model = build(dataset, recon_rows="observed", noise=0.0)
    losses = model.loss(first_batch(dataset))
    f = model.propagate(model.graph, fuse=False)
    want = 0.0
    for j, m in enumerate(model.modalities):
        keep = model.observed[:, j]
        x_hat = model.decoders[m](f["G"][m], f["S"][m], 0.0)
        want += float(((x_hat[keep] - model.raw[m][keep]) ** 2).mean())
    assert float(losses["recon"]) == pytest.approx(model.config["recon"] * want, rel=1e-5)


def test_generation_loss_reaches_generators_and_both_arguments(dataset):
    """Spec 4.4(g): MSE with gradients into both the generator output and the target."""
    model = build(dataset)
    g = grads_of(model, "gen", first_batch(dataset))
    for prefix in ("specific_generators.", "general_generators.", "specific_encoder.", "general_encoder.", "preference.",
                   "raw."):  # fmt: skip
        assert any(v > 0 for n, v in g.items() if n.startswith(prefix)), prefix
    assert all(v == 0 for n, v in g.items() if n.startswith("decoders.") or n.startswith("club."))


def test_generation_flag_removes_generation_loss(dataset):
    losses = build(dataset, generation=False).loss(first_batch(dataset))
    assert "gen" not in losses and "recon" in losses


def test_no_missing_modality_means_no_generation(dataset):
    ds = load_dataset(config(synth_missing="none"))
    model = build(ds, refine_every=1)
    assert "gen" not in model.loss(first_batch(ds))
    before = raw_copy(model)
    model.on_epoch_start(None, 0)
    for m in model.modalities:
        np.testing.assert_array_equal(raw_copy(model)[m], before[m])
        assert model.graph.num_edges(refine_relation(m)) == 0


@pytest.mark.parametrize(
    "key,value",
    [("general_generator_input", "generated"), ("refine_rows", "every"), ("refine_sources", "none"), ("recon_rows", "missing")],
)
def test_unknown_choices_raise(dataset, key, value):
    with pytest.raises(GraphrecError, match=key):
        DGMRec(dataset, config(**{key: value}))


# ----------------------------------------------------------------------------- generation write-back
def test_generation_writes_only_single_missing_rows(dataset):
    model = build(dataset, refinement=False)
    single = {m: dataset.missing.only(m) for m in model.modalities}
    for m in model.modalities:
        assert single[m].any() and (dataset.missing.missing[m] & ~single[m]).any()  # fully missing items exist
        np.testing.assert_array_equal(model.generation_rows(m, new=False), np.flatnonzero(single[m]))
    before = raw_copy(model)
    torch.manual_seed(11)
    expected = {m: x.numpy() for m, x in model.generate(model.graph).items()}
    torch.manual_seed(11)
    model.on_epoch_start(None, 0)
    after = raw_copy(model)
    for m in model.modalities:
        np.testing.assert_array_equal(changed_rows(before[m], after[m]), single[m])  # Ω_m^1 only
        np.testing.assert_allclose(after[m][single[m]], expected[m][single[m]], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(after[m][~single[m]], before[m][~single[m]])  # observed + fully missing rows
    assert model.counter == 1


def test_generate_fully_missing_also_writes_items_missing_everything(dataset):
    model = build(dataset, refinement=False, generate_fully_missing=True)
    before = raw_copy(model)
    model.write_generated(model.graph, {m: model.generation_rows(m, new=False) for m in model.modalities})
    after = raw_copy(model)
    for m in model.modalities:
        miss = dataset.missing.missing[m]
        np.testing.assert_array_equal(changed_rows(before[m], after[m]), miss)
        full = dataset.missing.count() == len(model.modalities)
        assert (changed_rows(before[m], after[m]) & full).sum() == full.sum() > 0


def test_generation_flag_false_leaves_raw_tables(dataset):
    model = build(dataset, generation=False, refinement=False)
    before = raw_copy(model)
    for e in range(3):
        model.on_epoch_start(None, e)
    for m in model.modalities:
        np.testing.assert_array_equal(raw_copy(model)[m], before[m])


def test_general_generator_input_switch_changes_generation(dataset):
    enc = build(dataset).generate(build(dataset).graph, noise=0.0)
    prop_model = build(dataset, general_generator_input="propagated")
    prop = prop_model.generate(prop_model.graph, noise=0.0)
    for m in enc:
        assert enc[m].shape == (dataset.n_items, dataset.features[m].shape[1])
        assert not torch.allclose(enc[m], prop[m])
    # without noise generation is deterministic; with noise it is not
    model = build(dataset)
    torch.testing.assert_close(model.generate(model.graph, noise=0.0)["image"], model.generate(model.graph, noise=0.0)["image"])
    assert not torch.equal(model.generate(model.graph)["image"], model.generate(model.graph)["image"])


# ----------------------------------------------------------------------------- refinement schedule
def record_refines(model) -> list[int]:
    calls: list[int] = []
    original = model.refine

    def wrapped(inference: bool = False):
        calls.append((model.counter, inference))
        return original(inference)

    model.refine = wrapped
    return calls


def test_refine_happens_every_refine_every_epochs(dataset):
    model = build(dataset, refine_every=3)
    calls = record_refines(model)
    graphs = []
    for e in range(7):
        model.on_epoch_start(None, e)
        graphs.append({m: model.graphs[m].copy() for m in model.modalities})
    assert calls == [(3, False), (6, False)]
    m = model.modalities[0]
    same = [abs(graphs[i][m] - graphs[i - 1][m]).max() == 0 for i in range(1, 7)]
    # counters 2..7: the graph changes exactly at counters 3 and 6
    assert same == [True, False, True, True, False, True]
    assert model.refined[m].any()


def test_refinement_flag_false_never_refines(dataset):
    model = build(dataset, refine_every=1, refinement=False)
    calls = record_refines(model)
    initial = {m: model.graphs[m].copy() for m in model.modalities}
    for e in range(3):
        model.on_epoch_start(None, e)
    assert calls == []
    for m in model.modalities:
        assert abs(model.graphs[m] - initial[m]).max() == 0
        assert not model.refined[m].any()
        assert model.graph.num_edges(refine_relation(m)) == 0


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained(dataset):
    cfg = config(epochs=3, learning_rate=0.01, refine_every=2)
    set_seed(0)
    model = DGMRec(dataset, cfg)
    calls = record_refines(model)
    trainer = Trainer(model, dataset, cfg, progress=False)
    club_before = [p.detach().clone() for p in model.club.parameters()]
    result = trainer.fit()
    club_moved = any(not torch.equal(a, b.detach()) for a, b in zip(club_before, model.club.parameters()))
    return {"model": model, "trainer": trainer, "result": result, "calls": calls, "config": cfg, "club_moved": club_moved}


def test_training_beats_popularity(trained):
    result, trainer = trained["result"], trained["trainer"]
    assert result.epochs_run == 3
    pop = trainer.evaluator.evaluate(popularity_scorer(trainer.dataset), "test").metrics["recall@20"]
    ours = result.test.metrics["recall@20"]
    assert ours > pop + 0.05, (ours, pop)


def test_trainer_runs_the_hooks(trained):
    # refinement at counter 2 only (epochs 1..3), CLUB estimators trained by their own optimiser
    assert trained["calls"] == [(2, False)]
    assert trained["club_moved"]
    model = trained["model"]
    for m in model.modalities:
        np.testing.assert_array_equal(model.refined[m], trained["trainer"].dataset.missing.missing[m])


def test_state_dict_round_trip_restores_graphs_and_representations(trained, dataset):
    model = trained["model"]
    assert model.counter == 3 and any(model.refined[m].any() for m in model.modalities)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    fresh = build(dataset, seed=123, **{k: v for k, v in trained["config"].items() if k in ("refine_every", "learning_rate")})
    with torch.no_grad():
        assert not torch.allclose(fresh.representations()[1], model.representations()[1])
    fresh.load_state_dict(state)
    assert fresh.counter == model.counter
    for m in model.modalities:
        assert abs(fresh.graphs[m] - model.graphs[m]).max() == 0
        np.testing.assert_array_equal(fresh.refined[m], model.refined[m])
        np.testing.assert_array_equal(fresh.sums[m], model.sums[m])
        np.testing.assert_array_equal(item_graph_matrix(fresh.graph, m).toarray(), item_graph_matrix(model.graph, m).toarray())
        assert fresh.graph.num_edges(refine_relation(m)) == model.graph.num_edges(refine_relation(m)) > 0
    model.eval()
    fresh.eval()
    with torch.no_grad():
        zu1, zi1 = model.representations()
        zu2, zi2 = fresh.representations()
    assert torch.equal(zu1, zu2) and torch.equal(zi1, zi2)


def full_forward(model) -> tuple[torch.Tensor, torch.Tensor]:
    out = model.propagate(model.infer_graph)
    return out["zu"], out["zi"]


@pytest.mark.parametrize("mods", [["image", "text"], ["image", "text", "audio"], ["image"]])
def test_representations_one_modality_at_a_time_equal_the_full_forward_bit_for_bit(mods):
    # representations() sums the modalities one at a time (memory); the values must not move at all,
    # with refined graphs, with and without autograd, and the gradients must be the full forward's
    cfg = config(synth_modalities=mods, epochs=1, refine_every=1, learning_rate=0.01)
    ds = load_dataset(cfg)
    set_seed(0)
    model = DGMRec(ds, cfg)
    Trainer(model, ds, cfg, progress=False).fit()
    assert all(model.refined[m].any() for m in mods)
    model.eval()
    with torch.no_grad():
        for got, want in zip(model.representations(), full_forward(model)):
            assert torch.equal(got, want)
    grads = []
    for fn in (DGMRec.representations, full_forward):
        model.zero_grad(set_to_none=True)
        zu, zi = fn(model)
        (zu[:7].square().sum() + zi[::3].sin().sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and {"item_emb", "general_encoder.shared.weight"} <= grads[0].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7, msg=name)


def test_representations_never_hold_every_modality_at_once(dataset, monkeypatch):
    # the encoders run for one modality at a time and its (N, d) outputs are freed before the next
    # modality's are computed: count the encoder outputs alive (weak references) at each encoder call
    import weakref

    model = build(dataset)
    model.eval()
    alive: list[weakref.ref] = []
    peaks: list[int] = []
    for enc in (model.general_encoder, model.specific_encoder):
        orig = enc.forward

        def counted(feats, orig=orig):
            peaks.append(sum(r() is not None for r in alive))
            out = orig(feats)
            alive.extend(weakref.ref(t) for t in out.values())
            return out

        monkeypatch.setattr(enc, "forward", counted)
    with torch.no_grad():
        model.representations()
    assert len(peaks) == 2 * len(model.modalities) and max(peaks) == 0, peaks
    peaks.clear()
    with torch.no_grad():
        model.propagate(model.infer_graph)
    # the full forward returns every encoder output, so each later encoder call sees all earlier ones alive
    assert peaks == [0, 1, 2, 3], peaks


# ----------------------------------------------------------------------------- new-item setting
def test_new_item_setting_trains():
    ds = load_dataset(config(synth_new_items=True))
    new = ds.new_items
    assert new.any() and not np.isin(ds.train[:, 1], np.flatnonzero(new)).any()
    cfg = config(synth_new_items=True, epochs=2, learning_rate=0.01)
    set_seed(0)
    model = DGMRec(ds, cfg)
    negatives = []
    original = model.loss

    def loss(batch):
        negatives.append(batch.neg.numpy().copy())
        return original(batch)

    model.loss = loss
    result = Trainer(model, ds, cfg, progress=False).fit()
    negs = np.concatenate(negatives)
    assert len(negs) == 2 * len(ds.train)
    assert not new[negs].any()  # never a new item
    assert np.isfinite(result.test.metrics["recall@20"])
    assert "new" in result.test.groups
    assert model.infer_graph is not model.graph
    for m in model.modalities:
        assert abs(item_graph_matrix(model.graph, m) - item_graph_matrix(model.infer_graph, m)).max() > 0


def test_new_item_hooks_generate_the_right_rows():
    ds = load_dataset(config(synth_new_items=True))
    new = ds.new_items
    model = build(ds, refine_every=2)
    single = {m: ds.missing.only(m) for m in model.modalities}
    before = raw_copy(model)
    model.before_evaluation(None, "test")  # only validation triggers the inference hook
    for m in model.modalities:
        np.testing.assert_array_equal(raw_copy(model)[m], before[m])
    model.before_evaluation(None, "valid")  # inference-time generation on the inference graph
    mid = raw_copy(model)
    for m in model.modalities:
        np.testing.assert_array_equal(changed_rows(before[m], mid[m]), single[m] & new)
    model.on_epoch_start(None, 0)  # training: Ω_m^1 ∩ old
    after = raw_copy(model)
    for m in model.modalities:
        np.testing.assert_array_equal(changed_rows(mid[m], after[m]), single[m] & ~new)
    calls = record_refines(model)
    model.on_epoch_start(None, 1)  # counter 2: training graph refined
    model.before_evaluation(None, "valid")  # counter 2 and infer_adj_update: inference graph refined
    assert calls == [(2, False), (2, True)]
    for m in model.modalities:
        np.testing.assert_array_equal(model.infer_refined[m], ds.missing.missing[m] & new)
        np.testing.assert_array_equal(model.refined[m], ds.missing.missing[m] & ~new)
    no_update = build(ds, refine_every=1, infer_adj_update=False)
    calls = record_refines(no_update)
    no_update.on_epoch_start(None, 0)
    no_update.before_evaluation(None, "valid")
    assert calls == [(1, False)]


# ----------------------------------------------------------------------------- 3 and 1 modalities
def test_three_modalities_train_for_an_epoch():
    mods = ["image", "text", "audio"]
    cfg = config(synth_modalities=mods, epochs=1, refine_every=1)
    ds = load_dataset(cfg)
    assert ds.modalities == mods
    set_seed(0)
    model = DGMRec(ds, cfg)
    d = model.embedding_size
    for m in mods:
        assert model.general_generators[m].net[0].in_features == 2 * d
        # refine_rows 'auto' with 3 modalities: single-missing items only
        np.testing.assert_array_equal(model.refinement_rows(m, False), np.flatnonzero(ds.missing.only(m)))
        assert (ds.missing.missing[m] & ~ds.missing.only(m)).any()
    # generators read the other modalities in cyclic order (TikTok: t <- [a; v], v <- [t; a], a <- [v; t])
    assert model._others("image") == ["text", "audio"]
    assert model._others("text") == ["audio", "image"]
    assert model._others("audio") == ["image", "text"]
    losses = model.loss(first_batch(ds))
    assert set(losses) == LOSS_KEYS | {"loss"} and all(torch.isfinite(v) for v in losses.values())
    result = Trainer(model, ds, cfg, progress=False).fit()
    assert result.epochs_run == 1 and np.isfinite(result.test.metrics["recall@20"])
    for m in mods:
        np.testing.assert_array_equal(model.refined[m], ds.missing.only(m))


def test_one_modality_trains_for_an_epoch():
    cfg = config(synth_modalities=["image"], epochs=1, refine_every=1)
    ds = load_dataset(cfg)
    set_seed(0)
    model = DGMRec(ds, cfg)
    assert len(model.general_generators) == 0
    losses = model.loss(first_batch(ds))
    assert "inter" not in losses and {"bpr", "gen", "recon", "club"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    miss = ds.missing.missing["image"]
    np.testing.assert_array_equal(model.generation_rows("image", new=False), np.flatnonzero(miss))
    result = Trainer(model, ds, cfg, progress=False).fit()
    assert np.isfinite(result.test.metrics["recall@20"])
    np.testing.assert_array_equal(model.refined["image"], miss)


def test_model_without_modalities_is_an_error():
    ds = load_dataset(config(synth_modalities=["image"]))
    ds.missing.modalities.clear()
    with pytest.raises(GraphrecError, match="modality"):
        DGMRec(ds, config())
