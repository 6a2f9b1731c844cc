"""k-means for codebooks, as pure functions: k-means++ seeding (Arthur & Vassilvitskii 2007), Lloyd's iterations
on the chunked nearest-code search (memory bounded as K grows), FAISS-style progressive k-means over growing
dimension prefixes, greedy residual k-means, and the row sampling they share.

Everything is traceable (``jit``/``vmap``); statistics are sums over the whole batch, so a sharded ``x`` gives
the unsharded result.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vqjax import checks, indexing, search

__all__ = ["KMeansResult", "kmeans", "kmeans_plusplus", "lloyd", "progressive_kmeans", "residual_kmeans",
           "sample_rows", "subsample"]


def sample_rows(key: jax.Array, x: jax.Array, num: int, weights: jax.Array | None = None) -> jax.Array:
    """``num`` rows of ``x [N, D]`` drawn with replacement, uniformly or with probability ∝ ``weights [N]``.

    Inverse-CDF sampling (a cumulative sum and ``searchsorted``): ``O(N + num log N)`` memory and time, never
    an ``N x num`` matrix. All-zero weights fall back to uniform sampling.
    """
    n = x.shape[0]
    u = jax.random.uniform(key, (num,), jnp.float32)
    if weights is None:
        idx = jnp.minimum((u * n).astype(jnp.int32), n - 1)
    else:
        w = indexing.replicate(jnp.maximum(weights.astype(jnp.float32), 0.0))
        w = jnp.where(jnp.sum(w) > 0, w, jnp.ones_like(w))
        cdf = jnp.cumsum(w)
        idx = jnp.searchsorted(cdf, u * cdf[-1], side="right").astype(jnp.int32)
        idx = jnp.minimum(idx, n - 1)
    return indexing.gather_rows(x, idx)


class KMeansResult(NamedTuple):
    """Result of :func:`kmeans`: ``centers [K, D]``, ``codes [N]`` int32, ``inertia`` (mean squared distance)."""

    centers: jax.Array
    codes: jax.Array
    inertia: jax.Array


def kmeans_plusplus(key: jax.Array, x: jax.Array, num_codes: int) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): ``[num_codes, D]`` rows of ``x [N, D]``.

    Each next center is drawn with probability ∝ squared distance to the nearest chosen center; memory is
    ``O(N * D)``. When every point is already a center (``num_codes > N`` distinct points) the draw is uniform.
    """
    checks.check_positive_int("kmeans_plusplus: num_codes", num_codes)
    x = checks.as_float_array("kmeans_plusplus: x", x, min_rank=2).astype(jnp.float32)
    x = x.reshape(-1, x.shape[-1])
    keys = jax.random.split(key, num_codes)
    first = sample_rows(keys[0], x, 1)[0]
    centers = jnp.zeros((num_codes, x.shape[1]), jnp.float32).at[0].set(first)
    min_d = jnp.sum((x - first) ** 2, axis=-1)

    def body(i, carry):
        centers, min_d = carry
        c = sample_rows(keys[i], x, 1, min_d)[0]
        return centers.at[i].set(c), jnp.minimum(min_d, jnp.sum((x - c) ** 2, axis=-1))

    centers, _ = lax.fori_loop(1, num_codes, body, (centers, min_d))
    return centers


def subsample(key: jax.Array, x: jax.Array, num: int | None) -> jax.Array:
    """``num`` distinct rows of ``x``, a uniformly random subset in random order (all of ``x`` when ``num`` is None
    or >= N). The rows are those with the ``num`` largest of N uniform keys (a top-k, several times cheaper on CPU
    than the sorts of a full permutation)."""
    if num is None or num >= x.shape[0]:
        return x
    _, rows = lax.top_k(jax.random.uniform(key, (x.shape[0],)), num)
    return indexing.gather_rows(x, rows)


def kmeans(key: jax.Array, x: jax.Array, num_codes: int, *, iters: int = 10, init: jax.Array | None = None,
           chunk_size: int | None = None, max_points: int | None = None, seed_points: int | None = None
           ) -> KMeansResult:
    """Lloyd's k-means from k-means++ seeds, memory-bounded through the chunked nearest-code search.

    Each iteration assigns every point to its nearest center (:func:`vqjax.search.nearest_code`) and moves each
    center to the mean of its points; a center with no points keeps its place.

    Args:
      key: PRNG key for the seeding and subsampling.
      x: ``[N, D]`` (or ``[..., D]``) data.
      num_codes: K.
      iters: Lloyd iterations (>= 0).
      init: optional ``[K, D]`` starting centers instead of k-means++.
      chunk_size: search chunk size.
      max_points: run the Lloyd iterations on a random subset of this many points (FAISS trains on at most
        256 points per center); the returned codes and inertia still cover all of ``x``.
      seed_points: draw the k-means++ seeds from a random subset of this many points (its ``K`` sequential
        steps each cost ``O(points)``).

    Returns:
      :class:`KMeansResult` for the final centers, with codes and inertia over all of ``x``.
    """
    checks.check_positive_int("kmeans: num_codes", num_codes)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"kmeans: iters must be a non-negative int; got {iters!r}")
    for name, value in (("max_points", max_points), ("seed_points", seed_points)):
        if value is not None:
            checks.check_positive_int(f"kmeans: {name}", value)
    x = checks.as_float_array("kmeans: x", x, min_rank=2).astype(jnp.float32)
    x = x.reshape(-1, x.shape[-1])
    k_sub, k_fit = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
    centers = kmeans_plusplus(key, subsample(k_sub, x, seed_points), num_codes) if init is None else \
        search.check_codebook("kmeans: init", init, x.shape[1]).astype(jnp.float32)
    centers = lloyd(subsample(k_fit, x, max_points), centers, iters=iters, chunk_size=chunk_size)
    res = search.nearest_code(x, centers, chunk_size=chunk_size)
    return KMeansResult(centers, res.codes, jnp.mean(res.distances))


def lloyd(x: jax.Array, centers: jax.Array, *, iters: int, chunk_size: int | None = None) -> jax.Array:
    """``iters`` Lloyd iterations on ``x [N, D]`` from ``centers [K, D]`` (float32): each assigns every point to its
    nearest center and moves each center to the mean of its points; a center with no points keeps its place."""
    num_codes = centers.shape[0]

    def step(_, centers):
        codes = search.nearest_code(x, centers, chunk_size=chunk_size).codes
        counts, sums = _counts_and_sums(x, codes, num_codes)
        means = sums / jnp.maximum(counts, 1.0)[:, None]
        return jnp.where((counts > 0)[:, None], means, centers)

    return lax.fori_loop(0, iters, step, centers)


def progressive_kmeans(key: jax.Array, x: jax.Array, num_codes: int, *, iters: int = 5, dim_steps: int = 10,
                       max_points: int | None = None, chunk_size: int | None = None) -> jax.Array:
    """k-means in principal components of growing dimension (FAISS's ``ProgressiveDimClustering``).

    The data are centred and rotated onto their principal axes; k-means first runs on the leading
    ``round(D^(1/dim_steps))`` components from ``num_codes`` random rows, then each step ``s`` adds components up
    to ``round(D^(s/dim_steps))`` and continues from the previous centers (new components start at 0). Lloyd is
    invariant to the centring and rotation, so ``dim_steps=1`` is plain Lloyd from random rows. :func:`vqjax.fit_rvq`
    uses it: on residual quantization of 8x8 photo patches (8 x 256 codes, beam 5, 256 training points per code)
    the test relative MSE is 0.090 against 0.101 with k-means++ seeds and full-dimension Lloyd. On a single
    k-means fit k-means++ with more Lloyd iterations can do as well or better.

    Args:
      key: PRNG key (subsampling and the random starting rows).
      x: ``[N, D]`` data (float32 arithmetic).
      num_codes: K (``<= `` the number of training rows).
      iters: Lloyd iterations per dimension step.
      dim_steps: number of dimension steps (the last one is the full D).
      max_points: train on a random subset of this many rows (FAISS: 256 per code).
      chunk_size: search chunk size.

    Returns:
      float32 centers ``[K, D]``.
    """
    checks.check_positive_int("progressive_kmeans: num_codes", num_codes)
    checks.check_positive_int("progressive_kmeans: dim_steps", dim_steps)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"progressive_kmeans: iters must be a non-negative int; got {iters!r}")
    x = checks.as_float_array("progressive_kmeans: x", x, min_rank=2).astype(jnp.float32)
    x = x.reshape(-1, x.shape[-1])
    train = subsample(key, x, max_points)
    if train.shape[0] < num_codes:
        raise ValueError(f"progressive_kmeans: needs at least num_codes = {num_codes} rows; got {train.shape[0]}")
    dim = x.shape[1]
    mean = jnp.mean(train, axis=0)
    centred = train - mean
    _, vecs = jnp.linalg.eigh(centred.T @ centred)
    axes = vecs[:, ::-1]                                  # principal axes, largest variance first
    rotated = centred @ axes
    start = subsample(jax.random.fold_in(key, 1), rotated, num_codes)      # random rows
    dims = sorted({max(1, round(dim ** (step / dim_steps))) for step in range(1, dim_steps)} | {dim})
    centers = start[:, :dims[0]]
    for d in dims:
        centers = lloyd(rotated[:, :d], jnp.pad(centers, ((0, 0), (0, d - centers.shape[1]))), iters=iters,
                        chunk_size=chunk_size)
    return centers @ axes.T + mean


def residual_kmeans(key: jax.Array, x: jax.Array, num_levels: int, num_codes: int, iters: int,
                    chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Greedy residual k-means of ``x [N, D]``: ``(codebooks [L, K, D], counts [L, K])``, traceable (a scan)."""
    def level(residual, k):
        fit = kmeans(k, residual, num_codes, iters=iters, chunk_size=chunk_size)
        counts = indexing.bincount(fit.codes.reshape(-1), num_codes)
        return residual - indexing.gather_rows(fit.centers, fit.codes), (fit.centers, counts)

    _, (books, counts) = lax.scan(level, x.astype(jnp.float32), jax.random.split(key, num_levels))
    return books, counts


def _counts_and_sums(x: jax.Array, codes: jax.Array, num_codes: int) -> tuple[jax.Array, jax.Array]:
    """Per-code counts ``[K]`` and sums ``[K, D]`` of the rows of ``x [N, D]`` assigned to ``codes [N]``."""
    return indexing.bincount(codes, num_codes), indexing.scatter_add_rows(x, codes, num_codes)
