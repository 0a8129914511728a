"""The embedded synthetic dataset: planted structure, no files needed, deterministic per seed.

Generative story:

* ``n_clusters`` latent clusters. Every item has a *general* latent part (its
  cluster centre plus noise, shared by all modalities) and, per modality, a
  *specific* latent part (independent of the cluster and of the other modalities).
* Every user belongs to a cluster; the user's taste vector prefers its cluster's
  general direction and has random weights on every modality's specific part.
* A user interacts with items drawn without replacement with probability
  proportional to ``popularity_i * exp(beta * taste_u . latent_i)``.
* Modality m's raw feature is a fixed random linear map of ``[general; specific_m]``
  plus Gaussian noise. So every modality helps, each carries information the others
  do not, and an item that misses a modality loses that information.

Splits are per user (about 80/10/10; every user with 3+ items has one valid and one
test item). Missing modalities follow :func:`graphrec.data.masks.generate_missing`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphrec.data.interactions import TEST, TRAIN, VALID, Interactions

DEFAULT_FEATURE_DIMS = {"image": 128, "text": 96, "audio": 64}


@dataclass
class SyntheticData:
    """Interactions and true (unmasked) features of the synthetic set.

    Attributes:
        inter: all rows with split labels.
        features: ``{m: (N, d_m) float32}``.
        item_cluster: ``(N,)`` cluster of every item (for diagnostics).
    """

    inter: Interactions
    features: dict[str, np.ndarray]
    item_cluster: np.ndarray


def make_synthetic(
    n_users: int = 800,
    n_items: int = 1000,
    modalities: tuple[str, ...] | list[str] = ("image", "text"),
    seed: int = 0,
    n_clusters: int = 10,
    general_dim: int = 8,
    specific_dim: int = 6,
    mean_interactions: int = 25,
    beta: float = 2.5,
    feature_noise: float = 0.3,
) -> SyntheticData:
    """Generate the synthetic dataset (see module docstring). Same arguments, same data."""
    rng = np.random.default_rng(seed)
    mods = list(modalities)
    centres = rng.normal(size=(n_clusters, general_dim))
    item_cluster = rng.integers(0, n_clusters, size=n_items)
    general = centres[item_cluster] + 0.5 * rng.normal(size=(n_items, general_dim))
    specific = {m: rng.normal(size=(n_items, specific_dim)) for m in mods}
    latent = np.concatenate([general] + [specific[m] for m in mods], axis=1)
    latent /= np.sqrt(latent.shape[1] / 4.0)

    user_cluster = rng.integers(0, n_clusters, size=n_users)
    taste_general = centres[user_cluster] + 0.5 * rng.normal(size=(n_users, general_dim))
    taste_specific = [rng.normal(size=(n_users, specific_dim)) for _ in mods]
    taste = np.concatenate([taste_general] + taste_specific, axis=1)
    taste /= np.sqrt(taste.shape[1] / 4.0)

    popularity = rng.lognormal(mean=0.0, sigma=1.0, size=n_items)
    logits = beta * taste @ latent.T + np.log(popularity)[None, :]
    counts = np.clip(rng.poisson(mean_interactions - 5, size=n_users) + 5, 5, n_items // 2)
    # Gumbel top-k = sampling without replacement proportional to exp(logits)
    gumbel = logits - np.log(-np.log(rng.uniform(1e-12, 1.0, size=logits.shape)))
    order = np.argsort(-gumbel, axis=1)

    users, items, labels = [], [], []
    for u in range(n_users):
        chosen = order[u, : counts[u]]
        n = len(chosen)
        n_test = max(1, int(round(0.1 * n)))
        n_valid = max(1, int(round(0.1 * n)))
        lab = np.full(n, TRAIN, dtype=np.int8)
        lab[:n_valid] = VALID
        lab[n_valid : n_valid + n_test] = TEST
        lab = lab[rng.permutation(n)]
        users.append(np.full(n, u, dtype=np.int64))
        items.append(chosen.astype(np.int64))
        labels.append(lab)
    inter = Interactions(
        users=np.concatenate(users),
        items=np.concatenate(items),
        labels=np.concatenate(labels),
        n_users=n_users,
        n_items=n_items,
    )

    features = {}
    for m in mods:
        dim = DEFAULT_FEATURE_DIMS.get(m, 64)
        src = np.concatenate([general, specific[m]], axis=1)
        proj = rng.normal(size=(src.shape[1], dim)) / np.sqrt(src.shape[1])
        x = src @ proj + feature_noise * rng.normal(size=(n_items, dim))
        features[m] = x.astype(np.float32)
    return SyntheticData(inter=inter, features=features, item_cluster=item_cluster)
