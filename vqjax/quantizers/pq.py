"""Product quantization (Jégou et al. 2011, "Product Quantization for Nearest Neighbor Search") and the grouped
("multi-head") forms of VQ, FSQ and LFQ.

``z [..., D]`` is split into ``G`` sub-vectors of ``D / G`` channels; sub-vector ``g`` is vector-quantized with
its own codebook ``C_g [K, D/G]`` (or one shared ``[K, D/G]`` codebook: grouped VQ). The implicit codebook has
``K^G`` codes, stored as ``G`` codes per vector (``[..., G]``). The grouped FSQ and LFQ forms apply the scalar
quantizers to each sub-vector, which also splits more than 31 LFQ bits into int32-sized codes.

Gradients: straight-through or the rotation trick per sub-vector; the codebooks learn through the codebook loss
``mean|sg(z) - q|²`` (weight ``codebook_weight``) and ``z`` is pulled by the commitment ``β mean|z - sg(q)|²``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from vqjax import checks, estimators, regularizers, search
from vqjax import kmeans as km
from vqjax.quantizers.base import Quantized
from vqjax.quantizers.bsq import bsq, bsq_decode, bsq_encode
from vqjax.quantizers.compose import grouped, grouped_decode, grouped_encode, split_groups
from vqjax.quantizers.fsq import check_levels, fsq, fsq_decode, fsq_encode
from vqjax.quantizers.lfq import lfq, lfq_decode, lfq_encode
from vqjax.quantizers.multisearch import gather_levels, level_metrics

__all__ = ["pq", "pq_encode", "pq_decode", "fit_pq", "grouped_fsq", "grouped_fsq_encode", "grouped_fsq_decode",
           "grouped_lfq", "grouped_lfq_encode", "grouped_lfq_decode", "grouped_bsq", "grouped_bsq_encode",
           "grouped_bsq_decode", "check_group_codebooks"]


def check_group_codebooks(name: str, codebooks, dim: int | None, num_groups: int | None) -> jax.Array:
    """Validates ``[G, K, D/G]`` codebooks (or a shared ``[K, D/G]`` with ``num_groups``); returns ``[G, K, d]``."""
    fn = name.split(":")[0]
    codebooks = checks.as_float_array(name, codebooks, min_rank=2)
    if codebooks.ndim == 2:
        if num_groups is None:
            raise ValueError(f"{name}: a shared [K, d] codebook needs num_groups=G; got shape "
                             f"{tuple(codebooks.shape)} and num_groups=None")
        checks.check_positive_int(f"{fn}: num_groups", num_groups)
        codebooks = jnp.broadcast_to(codebooks, (num_groups,) + codebooks.shape)
    elif codebooks.ndim != 3:
        raise ValueError(f"{name} must have shape [G, K, D // G] or [K, D // G] with num_groups; got shape "
                         f"{tuple(codebooks.shape)}")
    elif num_groups is not None and num_groups != codebooks.shape[0]:
        raise ValueError(f"{fn}: num_groups must equal G = {codebooks.shape[0]} of [G, K, d] codebooks; "
                         f"got {num_groups}")
    groups, num_codes, sub = codebooks.shape
    if groups == 0 or num_codes == 0 or sub == 0:
        raise ValueError(f"{name} must hold at least one group, code and channel; got shape {tuple(codebooks.shape)}")
    if dim is not None and groups * sub != dim:
        raise ValueError(f"{name}: G * (D // G) = {groups} * {sub} = {groups * sub} must equal D = {dim}, the last "
                         f"dimension of z; got codebooks of shape {tuple(codebooks.shape)}")
    return codebooks


@functools.partial(jax.jit, static_argnums=2)
def _encode(x, codebooks, chunk_size):
    """``x [N, G, d]`` -> int32 ``[N, G]`` (groups in sequence with lax.map: batched searches are slower on CPU)."""
    codes = lax.map(lambda xc: search.nearest_code(xc[0], xc[1], chunk_size=chunk_size).codes,
                    (jnp.moveaxis(x, 1, 0), codebooks))
    return codes.T


def _decode(codebooks, codes):
    """``codes [N, G]`` -> float32 ``[N, G, d]``."""
    return gather_levels(codebooks.astype(jnp.float32), codes)


def pq_encode(z: jax.Array, codebooks: jax.Array, *, num_groups: int | None = None, chunk_size: int | None = None
              ) -> jax.Array:
    """Product codes: int32 ``z.shape[:-1] + (G,)``. See :func:`pq`."""
    z = checks.as_float_array("pq_encode: z", z)
    codebooks = check_group_codebooks("pq_encode: codebooks", codebooks, z.shape[-1], num_groups)
    groups = codebooks.shape[0]
    x = lax.stop_gradient(z).reshape(-1, groups, z.shape[-1] // groups)
    return _encode(x, lax.stop_gradient(codebooks), chunk_size).reshape(z.shape[:-1] + (groups,))


def pq_decode(codes: jax.Array, codebooks: jax.Array, *, num_groups: int | None = None, dtype=None) -> jax.Array:
    """Concatenated sub-codes: ``codes.shape[:-1] + (G * d,)`` in ``dtype`` (default the codebooks' dtype)."""
    codebooks = check_group_codebooks("pq_decode: codebooks", codebooks, None, num_groups)
    groups, num_codes, sub = codebooks.shape
    codes = checks.as_code_array("pq_decode: codes", codes, num_codes)
    if codes.ndim < 1 or codes.shape[-1] != groups:
        raise ValueError(f"pq_decode: codes must have shape [..., G] with G = {groups}; got {tuple(codes.shape)}")
    flat = codes.reshape(-1, groups)
    return _decode(codebooks, flat).reshape(codes.shape[:-1] + (groups * sub,)).astype(dtype or codebooks.dtype)


def pq(z: jax.Array, codebooks: jax.Array, *, num_groups: int | None = None, estimator: str = "ste",
       beta: float = 0.25, codebook_weight: float = 1.0, chunk_size: int | None = None,
       check_finite: bool = False) -> Quantized:
    """Product quantization of ``z [..., D]`` with ``codebooks [G, K, D // G]`` (see the module docstring).

    Args:
      z: ``[..., D]`` floating (float32 arithmetic; values in ``z.dtype``).
      codebooks: ``[G, K, D // G]``, or one shared ``[K, D // G]`` with ``num_groups`` (grouped VQ).
      num_groups: G for a shared codebook (must equal G otherwise).
      estimator: 'ste' or 'rotation' (per sub-vector).
      beta: commitment weight; codebook_weight: codebook-loss weight (0 for EMA codebooks).
      chunk_size: codes per search step.
      check_finite: refuse NaN/Inf in ``z`` and the codebooks.

    Returns:
      :class:`vqjax.Quantized` with codes int32 ``z.shape[:-1] + (G,)``; 'perplexity' and 'usage' are means
      over groups.

    Example:
      >>> q = vqjax.pq(z, codebooks)                    # z [N, 64], codebooks [8, 256, 8]: 64 bits per vector
      >>> vqjax.pq_decode(q.codes, codebooks, dtype=z.dtype) == q.values
    """
    z = checks.as_float_array("pq: z", z)
    codebooks = check_group_codebooks("pq: codebooks", codebooks, z.shape[-1], num_groups)
    checks.check_choice("pq: estimator", estimator, ("ste", "rotation"))
    checks.check_nonnegative("pq: beta", beta)
    checks.check_nonnegative("pq: codebook_weight", codebook_weight)
    if chunk_size is not None:
        checks.check_positive_int("pq: chunk_size", chunk_size)
    if check_finite:
        z = checks.assert_finite("pq: z", z)
        codebooks = checks.assert_finite("pq: codebooks", codebooks)
    groups, num_codes, sub = codebooks.shape
    zg = split_groups(z, groups)
    flat = zg.reshape(-1, groups, sub)
    codes = _encode(lax.stop_gradient(flat), lax.stop_gradient(codebooks), chunk_size)
    q = _decode(codebooks, codes)                                  # [N, G, d], differentiable w.r.t. codebooks
    commit = regularizers.commitment_loss(flat, q)
    cb_loss = regularizers.codebook_loss(flat, q)
    estimate = estimators.straight_through if estimator == "ste" else estimators.rotation_trick
    values = estimate(zg, q.reshape(zg.shape).astype(z.dtype)).reshape(z.shape)
    stats = level_metrics(codes, num_codes)
    stats.update(commitment=commit, codebook_loss=cb_loss)
    loss = beta * commit + codebook_weight * cb_loss
    return Quantized(values, codes.reshape(z.shape[:-1] + (groups,)), loss.astype(jnp.float32), stats)


def fit_pq(key: jax.Array, x: jax.Array, num_groups: int, num_codes: int, *, iters: int = 6,
           max_points_per_code: int | None = 256, chunk_size: int | None = None) -> jax.Array:
    """Fits PQ codebooks by k-means in each sub-space (the FAISS ``ProductQuantizer`` use case).

    One random subset of the rows trains every sub-space (as FAISS does): Lloyd iterations run on at most
    ``max_points_per_code * num_codes`` rows, from k-means++ seeds drawn from the first ``32 * num_codes`` of them.

    Args:
      key: PRNG key.
      x: ``[N, D]`` data with ``D % num_groups == 0``.
      num_groups: G; num_codes: K per group.
      iters: Lloyd iterations. From k-means++ seeds few are needed: on the bundled 8x8 photo patches the test
        error of 8 x 256 codes is 0.1614 at 5, 0.1609 at 6 (the default), 0.1600 at 10 and 0.1590 at 20 (FAISS's
        25 iterations from random seeds reach 0.1683).
      max_points_per_code: training rows per code (FAISS's default 256; None uses all rows).
      chunk_size: codes per search step.

    Returns:
      float32 codebooks ``[G, K, D // G]``.
    """
    x = checks.as_float_array("fit_pq: x", x, min_rank=2).astype(jnp.float32)
    x = x.reshape(-1, x.shape[-1])
    checks.check_positive_int("fit_pq: num_groups", num_groups)
    checks.check_positive_int("fit_pq: num_codes", num_codes)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"fit_pq: iters must be a non-negative int; got {iters!r}")
    if x.shape[-1] % num_groups:
        raise ValueError(f"fit_pq: num_groups must divide D = {x.shape[-1]}; got {num_groups}")
    if max_points_per_code is not None:
        checks.check_positive_int("fit_pq: max_points_per_code", max_points_per_code)
    max_points = None if max_points_per_code is None else max_points_per_code * num_codes
    return _fit_pq(key, x, num_groups, num_codes, iters, chunk_size, max_points)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _fit_pq(key, x, groups, num_codes, iters, chunk_size, max_points):
    # One permutation picks the training rows of every group (a permutation of N rows is a sort: one, not G).
    train = km.subsample(jax.random.fold_in(key, 1), x, max_points)
    xs = jnp.moveaxis(train.reshape(train.shape[0], groups, -1), 1, 0)
    keys = jax.random.split(key, groups)
    # k-means++ seeding is K sequential steps: batched over groups (vmap) it runs K steps, not G * K. The Lloyd
    # searches run group after group (lax.map), which is faster on CPU than a batched search.
    seeds = jax.vmap(lambda k, xg: km.kmeans_plusplus(k, xg[:32 * num_codes], num_codes))(keys, xs)
    fit = lambda a: km.lloyd(a[0], a[1], iters=iters, chunk_size=chunk_size)
    return lax.map(fit, (xs, seeds))


# Grouped scalar quantizers: each sub-vector is quantized on its own and gets its own code
# (vqjax.quantizers.compose.grouped over the family's pure functions).

def grouped_fsq(z: jax.Array, levels: Sequence[int], num_groups: int, **kwargs) -> Quantized:
    """FSQ on each of ``num_groups`` sub-vectors of ``len(levels)`` channels: codes int32 ``z.shape[:-1] + (G,)``.

    ``kwargs`` go to :func:`vqjax.fsq`.
    """
    levels = check_levels("grouped_fsq: levels", levels)
    return grouped(fsq, z, num_groups, levels, name="grouped_fsq", per_group=len(levels), **kwargs)


def grouped_fsq_encode(z: jax.Array, levels: Sequence[int], num_groups: int, **kwargs) -> jax.Array:
    """Codes of :func:`grouped_fsq`: int32 ``z.shape[:-1] + (G,)``."""
    levels = check_levels("grouped_fsq_encode: levels", levels)
    return grouped_encode(fsq_encode, z, num_groups, levels, name="grouped_fsq_encode", per_group=len(levels),
                          **kwargs)


def grouped_fsq_decode(codes: jax.Array, levels: Sequence[int], *, dtype=jnp.float32) -> jax.Array:
    """Values of grouped FSQ codes ``[..., G]``: ``codes.shape[:-1] + (G * len(levels),)``."""
    return grouped_decode(fsq_decode, codes, levels, dtype=dtype)


def grouped_lfq(z: jax.Array, num_groups: int, **kwargs) -> Quantized:
    """LFQ on each of ``num_groups`` sub-vectors (each <= 31 bits): codes int32 ``z.shape[:-1] + (G,)``.

    ``kwargs`` go to :func:`vqjax.lfq`; the entropy terms are pooled over groups.
    """
    return grouped(lfq, z, num_groups, name="grouped_lfq", **kwargs)


def grouped_lfq_encode(z: jax.Array, num_groups: int) -> jax.Array:
    """Codes of :func:`grouped_lfq`: int32 ``z.shape[:-1] + (G,)``."""
    return grouped_encode(lfq_encode, z, num_groups, name="grouped_lfq_encode")


def grouped_lfq_decode(codes: jax.Array, dim: int, *, scale: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """Values of grouped LFQ codes ``[..., G]`` with ``dim`` bits per group: ``codes.shape[:-1] + (G * dim,)``."""
    return grouped_decode(lfq_decode, codes, dim, scale=scale, dtype=dtype)


def grouped_bsq(z: jax.Array, num_groups: int, **kwargs) -> Quantized:
    """BSQ on each of ``num_groups`` sub-vectors (each projected to its own unit sphere, <= 31 bits): codes int32
    ``z.shape[:-1] + (G,)``. ``kwargs`` go to :func:`vqjax.bsq`; the entropy terms are pooled over groups."""
    return grouped(bsq, z, num_groups, name="grouped_bsq", **kwargs)


def grouped_bsq_encode(z: jax.Array, num_groups: int) -> jax.Array:
    """Codes of :func:`grouped_bsq`: int32 ``z.shape[:-1] + (G,)``."""
    return grouped_encode(bsq_encode, z, num_groups, name="grouped_bsq_encode")


def grouped_bsq_decode(codes: jax.Array, dim: int, *, dtype=jnp.float32) -> jax.Array:
    """Values of grouped BSQ codes ``[..., G]`` with ``dim`` bits per group: ``codes.shape[:-1] + (G * dim,)``."""
    return grouped_decode(bsq_decode, codes, dim, dtype=dtype)
