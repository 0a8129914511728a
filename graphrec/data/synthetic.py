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

Large sets (more than :data:`DENSE_PAIRS` user-item pairs, e.g. 10^6 items and 4·10^5 users
for 10^7 interactions) cannot score every pair. There a user's items are drawn, by the same
Gumbel top-k on ``beta * taste_u . latent_i``, from :data:`CANDIDATES` candidates: 3/4 drawn
from the user's own cluster and 1/4 from all items, both in proportion to popularity (so the
popularity term is in the candidate draw, not the logit). Users are processed in chunks and
features in blocks of items, so memory stays ``O(users + items)``. The small-set path is
unchanged: same arguments, same data as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphrec.data.interactions import TEST, TRAIN, VALID, Interactions

DEFAULT_FEATURE_DIMS = {"image": 128, "text": 96, "audio": 64}
#: above this many user-item pairs the candidate-based generator is used (module docstring)
DENSE_PAIRS = 50_000_000
#: candidate items per user in the large-set generator (a user's count is capped at half of it)
CANDIDATES = 512
#: users per chunk and items per feature block in the large-set generator
USER_CHUNK = 4096
ITEM_BLOCK = 262_144


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
    if n_users * n_items > DENSE_PAIRS:
        inter = _large_interactions(rng, n_users, n_items, mean_interactions, beta, taste, latent, popularity, user_cluster, item_cluster, n_clusters)
        features = _large_features(rng, mods, general, specific, feature_noise)
        return SyntheticData(inter=inter, features=features, item_cluster=item_cluster)
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


def _split_labels(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """Per user (``counts`` rows each, consecutive): ``max(1, round(0.1 n))`` valid and test rows, the rest
    train, at random positions within the user's rows. ``(sum(counts),)`` int8."""
    owner = np.repeat(np.arange(len(counts)), counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    n_side = np.maximum(1, np.round(0.1 * counts).astype(np.int64))[owner]
    rank = np.arange(len(owner)) - start  # position within the user's rows
    lab = np.full(len(owner), TRAIN, dtype=np.int8)
    lab[rank < n_side] = VALID
    lab[(rank >= n_side) & (rank < 2 * n_side)] = TEST
    order = np.lexsort((rng.random(len(owner)), owner))  # shuffle within each user
    return lab[order]


def _large_interactions(
    rng: np.random.Generator,
    n_users: int,
    n_items: int,
    mean_interactions: int,
    beta: float,
    taste: np.ndarray,
    latent: np.ndarray,
    popularity: np.ndarray,
    user_cluster: np.ndarray,
    item_cluster: np.ndarray,
    n_clusters: int,
) -> Interactions:
    """The candidate-based draw of the module docstring, :data:`USER_CHUNK` users at a time."""
    counts = np.clip(rng.poisson(mean_interactions - 5, size=n_users) + 5, 5, min(n_items // 2, CANDIDATES // 2))
    # per-cluster popularity CDFs laid end to end: cluster c occupies [c, c + 1)
    by_cluster = np.lexsort((np.arange(n_items), item_cluster))
    pop = popularity[by_cluster]
    cl = item_cluster[by_cluster]
    totals = np.bincount(cl, weights=pop, minlength=n_clusters)
    cdf = cl + np.cumsum(pop) / np.maximum(totals[cl], 1e-300) - np.concatenate([[0.0], np.cumsum(totals)])[cl] / np.maximum(totals[cl], 1e-300)
    global_cdf = np.cumsum(popularity) / popularity.sum()
    latent32 = latent.astype(np.float32)
    n_own = CANDIDATES * 3 // 4
    users_out, items_out = [], []
    for lo in range(0, n_users, USER_CHUNK):
        hi = min(lo + USER_CHUNK, n_users)
        b = hi - lo
        own = np.searchsorted(cdf, user_cluster[lo:hi, None] + rng.random((b, n_own)) * (1 - 1e-12), side="right")
        own = by_cluster[np.minimum(own, n_items - 1)]
        anyi = np.minimum(np.searchsorted(global_cdf, rng.random((b, CANDIDATES - n_own)), side="right"), n_items - 1)
        cand = np.sort(np.concatenate([own, anyi], axis=1), axis=1)
        dup = np.zeros(cand.shape, dtype=bool)
        dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
        score = beta * np.einsum("bd,bcd->bc", taste[lo:hi].astype(np.float32), latent32[cand])
        score = score - np.log(-np.log(rng.uniform(1e-12, 1.0, size=score.shape)))
        score[dup] = -np.inf  # each candidate once
        order = np.argsort(-score, axis=1)
        c = counts[lo:hi]
        distinct = (~dup).sum(axis=1)
        c = np.minimum(c, distinct)
        counts[lo:hi] = c
        take = np.arange(CANDIDATES)[None, :] < c[:, None]
        users_out.append(np.repeat(np.arange(lo, hi, dtype=np.int64), c))
        items_out.append(np.take_along_axis(cand, order, axis=1)[take].astype(np.int64))
    users = np.concatenate(users_out)
    return Interactions(users=users, items=np.concatenate(items_out), labels=_split_labels(rng, counts), n_users=n_users, n_items=n_items)


def _large_features(
    rng: np.random.Generator, mods: list[str], general: np.ndarray, specific: dict[str, np.ndarray], feature_noise: float
) -> dict[str, np.ndarray]:
    """Modality features as in the small path, :data:`ITEM_BLOCK` items at a time, float32 throughout."""
    features = {}
    n = len(general)
    for m in mods:
        dim = DEFAULT_FEATURE_DIMS.get(m, 64)
        src = np.concatenate([general, specific[m]], axis=1).astype(np.float32)
        proj = (rng.normal(size=(src.shape[1], dim)) / np.sqrt(src.shape[1])).astype(np.float32)
        x = np.empty((n, dim), dtype=np.float32)
        for lo in range(0, n, ITEM_BLOCK):
            hi = min(lo + ITEM_BLOCK, n)
            x[lo:hi] = src[lo:hi] @ proj + feature_noise * rng.standard_normal((hi - lo, dim), dtype=np.float32)
        features[m] = x
    return features
