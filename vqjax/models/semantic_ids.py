"""Semantic IDs for catalogue items: item features, the RQ-VAE that turns them into code tuples, and the two ways
of making every tuple name exactly one item.

* :class:`ItemFeaturizer` -- what an item is as a vector: content (TF-IDF of title words, genres and release year,
  reduced by a truncated SVD fitted on the catalogue: latent semantic analysis, no downloads), collaborative
  signal (item vectors of a BPR matrix factorisation fitted in JAX on the training interactions, :func:`fit_bpr`),
  or both concatenated. Items without interactions (new or cold items) get their collaborative part from their
  content through a ridge map fitted on the items that have both, so a new item gets a feature vector -- and an ID
  -- without retraining anything.
* :class:`RQVAE` -- an MLP encoder, a residual quantizer (any of :mod:`vqjax.models.quantizers`, normally
  ``'rvq'`` with k-means init, EMA codebooks and dead-code reseeding) and an MLP decoder (Rajput et al. 2023,
  "Recommender Systems with Generative Retrieval", TIGER).
* Collision handling, so that a tuple decodes to one item:
  :func:`disambiguate` appends a level that numbers the items sharing a tuple (TIGER);
  :func:`balanced_last_level` re-assigns the last level inside each group of items sharing the earlier levels by
  an entropic optimal-transport plan with unit code capacities (Sinkhorn-Knopp, as LC-Rec's uniform semantic
  mapping, Zheng et al. 2024), rounded to distinct codes; :func:`assign_new` gives new items codes the same way
  without touching the existing ones. :func:`collision_stats` measures what is left.
* :func:`random_ids` -- the random-ID baseline with the same level sizes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["FEATURES", "COLLISION_MODES", "item_terms", "ItemFeaturizer", "fit_bpr", "RQVAE", "disambiguate",
           "balanced_last_level", "sinkhorn_distinct", "assign_new", "collision_stats", "random_ids"]

FEATURES = ("content", "collaborative", "both")
COLLISION_MODES = ("extra_level", "balanced")
_WORD = re.compile(r"[a-z0-9']+")


def item_terms(title: str, year: int, genres: Sequence[str]) -> list[str]:
    """The content terms of an item: title words, genres, release year and decade (an unknown year, 0, adds
    none)."""
    terms = [f"w:{w}" for w in _WORD.findall(title.lower())]
    terms += [f"g:{g.lower()}" for g in genres]
    if int(year) > 0:
        terms += [f"y:{int(year)}", f"d:{int(year) // 10 * 10}"]
    return terms


def _l2_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclasses.dataclass(frozen=True, eq=False)
class ItemFeaturizer:
    """Item feature vectors from content and (optionally) collaborative embeddings; see the module docstring.

    Attributes:
      kind: ``'content'``, ``'collaborative'`` or ``'both'``.
      vocabulary: the content terms (index = column of the TF-IDF matrix).
      idf: float32 ``[V]`` inverse document frequencies.
      projection: float32 ``[V, content_dim]`` the truncated SVD's right singular vectors.
      cf_map: float32 ``[content_dim, cf_dim]`` ridge map from content to collaborative vectors (None for
        ``'content'``).
    """

    kind: str
    vocabulary: tuple[str, ...]
    idf: np.ndarray
    projection: np.ndarray
    cf_map: np.ndarray | None = None

    @classmethod
    def fit(cls, kind: str, documents: Sequence[Sequence[str]], *, content_dim: int, cf: np.ndarray | None = None,
            ridge: float = 1.0) -> "ItemFeaturizer":
        """Fits the TF-IDF vocabulary and SVD on ``documents`` (each item's terms) and, for ``'collaborative'``
        and ``'both'``, the ridge map from their content vectors to ``cf [n, d]`` (the same items' collaborative
        vectors).

        Raises:
          ValueError: an unknown ``kind``, no documents, ``cf`` missing or of another length.
        """
        if kind not in FEATURES:
            raise ValueError(f"ItemFeaturizer: kind must be one of {FEATURES}; got {kind!r}")
        if not documents:
            raise ValueError("ItemFeaturizer.fit: documents is empty")
        if kind != "content" and (cf is None or len(cf) != len(documents)):
            raise ValueError(f"ItemFeaturizer.fit: kind={kind!r} needs cf vectors for the {len(documents)} "
                             f"documents; got {None if cf is None else len(cf)}")
        vocabulary = tuple(sorted({t for doc in documents for t in doc}))
        index = {t: i for i, t in enumerate(vocabulary)}
        df = np.zeros(len(vocabulary))
        for doc in documents:
            df[[index[t] for t in set(doc)]] += 1
        idf = (np.log((1.0 + len(documents)) / (1.0 + df)) + 1.0).astype(np.float32)
        tfidf = cls._tfidf(documents, index, idf)
        k = min(int(content_dim), *tfidf.shape)
        _, _, vt = np.linalg.svd(tfidf, full_matrices=False)
        vt = vt[:k] * np.sign(vt[:k, :1] + (vt[:k, :1] == 0))          # sign fixed: the same on every machine
        feat = cls(kind, vocabulary, idf, vt.T.astype(np.float32))
        if kind == "content":
            return feat
        c = feat.content_vectors(documents).astype(np.float64)
        target = _l2_rows(np.asarray(cf, np.float64))
        cf_map = np.linalg.solve(c.T @ c + ridge * np.eye(c.shape[1]), c.T @ target)
        return dataclasses.replace(feat, cf_map=cf_map.astype(np.float32))

    @staticmethod
    def _tfidf(documents, index, idf) -> np.ndarray:
        x = np.zeros((len(documents), len(idf)), np.float32)
        for row, doc in enumerate(documents):
            cols = sorted({index[t] for t in doc if t in index})
            x[row, cols] = idf[cols]
        return _l2_rows(x)

    @property
    def content_dim(self) -> int:
        return int(self.projection.shape[1])

    @property
    def dim(self) -> int:
        """Width of :meth:`features`."""
        if self.kind == "content":
            return self.content_dim
        cf_dim = int(self.cf_map.shape[1])
        return cf_dim if self.kind == "collaborative" else self.content_dim + cf_dim

    def content_vectors(self, documents: Sequence[Sequence[str]]) -> np.ndarray:
        """float32 ``[n, content_dim]`` l2-normalised LSA vectors (terms outside the vocabulary are ignored)."""
        index = {t: i for i, t in enumerate(self.vocabulary)}
        return _l2_rows(self._tfidf(documents, index, self.idf) @ self.projection).astype(np.float32)

    def features(self, documents: Sequence[Sequence[str]], cf: np.ndarray | None = None,
                 has_cf: np.ndarray | None = None) -> np.ndarray:
        """float32 ``[n, dim]`` feature vectors, scaled to mean square 1 per entry.

        Args:
          documents: each item's terms (:func:`item_terms`).
          cf: ``[n, cf_dim]`` collaborative vectors, or None (all predicted from content).
          has_cf: bool ``[n]``: which rows of ``cf`` are real (the others are predicted); default all when ``cf``
            is given.
        """
        content = self.content_vectors(documents)
        if self.kind == "content":
            parts = [content]
        else:
            predicted = _l2_rows(content @ self.cf_map)
            if cf is not None:
                real = np.ones(len(documents), bool) if has_cf is None else np.asarray(has_cf, bool)
                predicted = np.where(real[:, None], _l2_rows(np.asarray(cf, np.float32)), predicted)
            parts = [predicted] if self.kind == "collaborative" else [content, predicted]
        x = np.concatenate(parts, axis=1) / math.sqrt(len(parts))
        return (x * math.sqrt(x.shape[1])).astype(np.float32)

    def save(self, directory: str) -> None:
        """Writes ``featurizer.json`` (kind, vocabulary) and ``featurizer.npz`` (arrays) to ``directory``."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "featurizer.json"), "w") as fh:
            json.dump({"kind": self.kind, "vocabulary": list(self.vocabulary)}, fh)
        arrays = {"idf": self.idf, "projection": self.projection}
        if self.cf_map is not None:
            arrays["cf_map"] = self.cf_map
        np.savez(os.path.join(directory, "featurizer.npz"), **arrays)

    @classmethod
    def load(cls, directory: str) -> "ItemFeaturizer":
        for name in ("featurizer.json", "featurizer.npz"):
            if not os.path.exists(os.path.join(directory, name)):
                raise FileNotFoundError(f"ItemFeaturizer.load: {directory!r} has no {name}")
        with open(os.path.join(directory, "featurizer.json")) as fh:
            meta = json.load(fh)
        with np.load(os.path.join(directory, "featurizer.npz")) as data:
            cf_map = data["cf_map"] if "cf_map" in data else None
            return cls(meta["kind"], tuple(meta["vocabulary"]), data["idf"], data["projection"], cf_map)


def fit_bpr(sequences: Sequence[np.ndarray], num_items: int, *, dim: int = 64, steps: int = 2000,
            batch_size: int = 4096, learning_rate: float = 0.01, weight_decay: float = 1e-4, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors of a BPR matrix factorisation (Rendle et al. 2009) fitted in JAX on the users' items.

    Each step draws ``batch_size`` (user, item) interactions and one random item per pair and minimises
    ``-log σ(u·i - u·j) + weight_decay (|u|² + |i|² + |j|²)`` with Adam; all steps run in one compiled scan.

    Returns:
      ``(vectors float32 [num_items, dim], seen bool [num_items])``: items that never occur keep their random
      initial vectors and ``seen`` False (replace them, e.g. with :meth:`ItemFeaturizer.features`).
    """

    users = np.concatenate([np.full(len(s), u, np.int32) for u, s in enumerate(sequences)])
    items = np.concatenate([np.asarray(s, np.int32) for s in sequences])
    if items.size == 0:
        raise ValueError("fit_bpr: there are no interactions")
    seen = np.zeros(num_items, bool)
    seen[items] = True
    key = jax.random.key(seed)
    k_u, k_i, k_run = jax.random.split(key, 3)
    params = {"users": 0.1 * jax.random.normal(k_u, (len(sequences), dim)),
              "items": 0.1 * jax.random.normal(k_i, (num_items, dim))}
    tx = optax.adam(learning_rate)
    users_j, items_j = jnp.asarray(users), jnp.asarray(items)

    def loss_fn(p, u, i, j):
        pu, pi, pj = p["users"][u], p["items"][i], p["items"][j]
        x = jnp.sum(pu * (pi - pj), axis=-1)
        reg = jnp.sum(pu ** 2 + pi ** 2 + pj ** 2, axis=-1)
        return jnp.mean(-jax.nn.log_sigmoid(x) + weight_decay * reg)

    def step(carry, k):
        p, opt = carry
        k1, k2 = jax.random.split(k)
        pick = jax.random.randint(k1, (batch_size,), 0, users_j.shape[0])
        neg = jax.random.randint(k2, (batch_size,), 0, num_items)
        loss, grads = jax.value_and_grad(loss_fn)(p, users_j[pick], items_j[pick], neg)
        updates, opt = tx.update(grads, opt, p)
        return (optax.apply_updates(p, updates), opt), loss

    @jax.jit
    def run(p, keys):
        (p, _), losses = jax.lax.scan(step, (p, tx.init(p)), keys)
        return p, losses

    params, _ = run(params, jax.random.split(k_run, steps))
    return np.asarray(params["items"], np.float32), seen


class _MLP(nn.Module):
    widths: Sequence[int]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i, w in enumerate(self.widths):
            x = nn.Dense(w, dtype=self.dtype, param_dtype=self.param_dtype, name=f"dense_{i}")(x)
            if i < len(self.widths) - 1:
                x = nn.silu(x)
        return x


class RQVAE(nn.Module):
    """Residual-quantised autoencoder of item feature vectors (TIGER's RQ-VAE).

    ``__call__(x, train)`` -> ``(reconstruction [B, input_dim], Quantized)``; ``encode(x)`` -> int32 codes
    ``[B, levels]``; ``decode(codes)`` -> reconstructions; ``last_level_costs(x)`` -> float32 ``[B, K]`` squared
    distances of each item's last residual to the last level's codes (for :func:`balanced_last_level`).

    Attributes:
      input_dim: feature width.
      hidden: encoder widths (the decoder mirrors them).
      latent_dim: width of the quantised latent.
      quantizer: a residual quantizer on ``latent_dim`` (codes ``[..., levels]``).
      dtype, param_dtype: the MLPs' compute and storage dtypes (reconstructions come back in float32).
    """

    input_dim: int
    hidden: Sequence[int]
    latent_dim: int
    quantizer: nn.Module
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = _MLP(tuple(self.hidden) + (self.latent_dim,), **dt)
        self.decoder = _MLP(tuple(reversed(tuple(self.hidden))) + (self.input_dim,), **dt)

    @property
    def num_levels(self) -> int:
        return int(getattr(self.quantizer, "num_levels", getattr(self.quantizer, "num_codebooks", 1)))

    def _latent(self, x):
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"RQVAE: features must have width {self.input_dim}; got shape {x.shape}")
        return self.encoder(x.astype(jnp.float32)).astype(jnp.float32)

    def __call__(self, x: jax.Array, *, train: bool = False):
        q = self.quantizer(self._latent(x), train=train)
        return self.decoder(q.values).astype(jnp.float32), q

    def encode(self, x: jax.Array) -> jax.Array:
        return self.quantizer.encode(self._latent(x)).astype(jnp.int32)

    def decode(self, codes: jax.Array) -> jax.Array:
        return self.decoder(self.quantizer.decode(codes)).astype(jnp.float32)

    def last_level_costs(self, x: jax.Array) -> jax.Array:
        z = self._latent(x)
        codes = self.quantizer.encode(z)
        partial = self.quantizer.decode(codes.at[..., -1].set(-1))
        r = z - partial
        cb = self.quantizer.codebooks()[-1]
        return (jnp.sum(r * r, -1, keepdims=True) - 2.0 * r @ cb.T + jnp.sum(cb * cb, -1)[None]).astype(jnp.float32)


def _groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(group index [N], group sizes [G])`` of equal rows of ``codes [N, L]`` (groups in lexicographic order)."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return inverse.reshape(-1), counts


def disambiguate(codes: np.ndarray, size: int) -> np.ndarray:
    """``[N, L + 1]``: ``codes`` with a last level numbering the items that share a tuple (0, 1, ... in item
    order), TIGER's collision handling.

    Raises:
      ValueError: more than ``size`` items share a tuple (the extra level has ``size`` codes).
    """
    codes = np.asarray(codes, np.int32)
    group, counts = _groups(codes)
    if counts.size and counts.max() > size:
        worst = codes[np.flatnonzero(group == int(np.argmax(counts)))[0]]
        raise ValueError(f"disambiguate: {int(counts.max())} items share the tuple {worst.tolist()}, more than the "
                         f"{size} codes of the disambiguation level (raise disambiguation_size or the codebooks)")
    extra = np.zeros(len(codes), np.int32)
    seen = np.zeros(counts.size, np.int32)
    for i, g in enumerate(group):
        extra[i] = seen[g]
        seen[g] += 1
    return np.concatenate([codes, extra[:, None]], axis=1)


def sinkhorn_distinct(cost: np.ndarray, *, epsilon: float = 0.05, iters: int = 200) -> np.ndarray:
    """Distinct codes for ``m`` items from their costs ``[m, K]`` (``m <= K``): the entropic optimal-transport plan
    between the items (mass 1 each) and the codes (capacity 1 each; a slack row takes the ``K - m`` unused) by
    log-domain Sinkhorn-Knopp at temperature ``epsilon`` times the median cost, rounded to a one-to-one assignment
    (the plan's most likely matching)."""
    from scipy.optimize import linear_sum_assignment  # heavy import, loaded only where needed

    cost = np.asarray(cost, np.float64)
    m, k = cost.shape
    if m > k:
        raise ValueError(f"sinkhorn_distinct: {m} items cannot take distinct codes of {k}")
    scale = max(float(np.median(np.abs(cost))), 1e-12) * epsilon
    c = np.concatenate([cost, np.zeros((1, k))]) / scale              # slack row: the unused codes
    log_a = np.log(np.concatenate([np.ones(m), [max(k - m, 1e-9)]]))
    log_b = np.zeros(k)
    f, g = np.zeros(m + 1), np.zeros(k)
    for _ in range(iters):
        f = log_a - _logsumexp(g[None, :] - c, axis=1)
        g = log_b - _logsumexp(f[:, None] - c, axis=0)
    log_plan = f[:m, None] + g[None, :] - c[:m]
    _, cols = linear_sum_assignment(-log_plan)
    return cols.astype(np.int32)


def _logsumexp(x, axis):
    mx = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(mx, axis) + np.log(np.sum(np.exp(x - mx), axis=axis))


def balanced_last_level(codes: np.ndarray, costs: np.ndarray, *, epsilon: float = 0.05, iters: int = 200
                        ) -> np.ndarray:
    """``codes [N, L]`` with the last level re-assigned inside every group of items that share the first ``L - 1``
    codes and hold a collision, by :func:`sinkhorn_distinct` on ``costs [N, K]`` (each item's squared distance to
    the last level's codes); groups without a collision keep their nearest codes.

    Raises:
      ValueError: a group larger than ``K`` (no balanced assignment makes it collision-free).
    """
    codes = np.asarray(codes, np.int32).copy()
    k = costs.shape[1]
    group, counts = _groups(codes[:, :-1])
    order = np.argsort(group, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for g in range(counts.size):
        members = order[bounds[g]:bounds[g + 1]]
        if len(np.unique(codes[members, -1])) == len(members):
            continue
        if len(members) > k:
            raise ValueError(f"balanced_last_level: {len(members)} items share the prefix "
                             f"{codes[members[0], :-1].tolist()}, more than the {k} codes of the last level; use "
                             f"collisions='extra_level' or larger codebooks")
        codes[members, -1] = sinkhorn_distinct(costs[members], epsilon=epsilon, iters=iters)
    return codes


def assign_new(existing: np.ndarray, prefixes: np.ndarray, mode: str, *, size: int | None = None,
               costs: np.ndarray | None = None) -> np.ndarray:
    """Codes for new items, leaving ``existing [N, L']`` as they are.

    Args:
      existing: the catalogue's codes (collision-free).
      prefixes: ``[n, L]`` the new items' quantizer codes.
      mode: ``'extra_level'`` (``L' = L + 1``: the next free number among items sharing the tuple; needs ``size``,
        the extra level's codes) or ``'balanced'`` (``L' = L``: the nearest last-level code, by ``costs [n, K]``,
        not yet taken inside the item's group).

    Returns:
      int32 ``[n, L']``, collision-free together with ``existing`` (new items are placed one after another).

    Raises:
      ValueError: a full group (no free code), an unknown mode or mismatched shapes.
    """
    existing = np.asarray(existing, np.int32)
    prefixes = np.asarray(prefixes, np.int32)
    if mode not in COLLISION_MODES:
        raise ValueError(f"assign_new: mode must be one of {COLLISION_MODES}; got {mode!r}")
    key_len = prefixes.shape[1] if mode == "extra_level" else prefixes.shape[1] - 1
    if existing.shape[1] != (prefixes.shape[1] + 1 if mode == "extra_level" else prefixes.shape[1]):
        raise ValueError(f"assign_new: existing codes have {existing.shape[1]} levels; new items' prefixes have "
                         f"{prefixes.shape[1]} (mode {mode!r})")
    taken: dict[bytes, set[int]] = {}
    for row in existing:
        taken.setdefault(row[:key_len].tobytes(), set()).add(int(row[-1]))
    out = []
    for i, p in enumerate(prefixes):
        used = taken.setdefault(p[:key_len].tobytes(), set())
        if mode == "extra_level":
            free = next((c for c in range(size) if c not in used), None)
            row = np.concatenate([p, [free if free is not None else -1]])
        else:
            choice = [int(c) for c in np.argsort(costs[i], kind="stable") if int(c) not in used]
            free = choice[0] if choice else None
            row = np.concatenate([p[:-1], [free if free is not None else -1]])
        if free is None:
            raise ValueError(f"assign_new: the group {p[:key_len].tolist()} already holds {len(used)} items, every "
                             f"code of its last level; new item {i} has no free ID")
        used.add(int(free))
        out.append(row.astype(np.int32))
    return np.stack(out) if out else np.zeros((0, existing.shape[1]), np.int32)


def collision_stats(codes: np.ndarray) -> dict:
    """``collision_rate`` (1 - distinct tuples / items), ``colliding_items`` (fraction of items sharing their
    tuple) and ``max_items_per_tuple`` of ``codes [N, L]``."""
    codes = np.asarray(codes)
    group, counts = _groups(codes)
    n = max(len(codes), 1)
    return {"collision_rate": 1.0 - counts.size / n, "colliding_items": float(np.sum(counts[counts > 1])) / n,
            "max_items_per_tuple": int(counts.max()) if counts.size else 0}


def random_ids(num_items: int, level_sizes: Sequence[int], seed: int) -> np.ndarray:
    """int32 ``[num_items, L]`` codes drawn uniformly per level (the random-ID baseline), deterministic for
    ``seed``."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, int(k), num_items) for k in level_sizes], axis=1).astype(np.int32)
