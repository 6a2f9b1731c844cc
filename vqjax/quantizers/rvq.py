"""Residual vector quantization (Juang & Gray 1982; Zeghidour et al. 2021, SoundStream; Défossez et al. 2022,
EnCodec; Kumar et al. 2023, DAC) and residual forms of FSQ and LFQ.

Level ``l`` quantizes what the previous levels left: ``r_0 = z``, ``q_l = C_l[argmin_k |r_l - C_l[k]|²]``,
``r_{l+1} = r_l - q_l``; the output is ``Σ_l q_l`` and the codes are ``[..., L]``.

* Greedy encoding (``beam_width=1``) takes the nearest code at each level. Beam search (``beam_width=B``) keeps
  the ``B`` partial sums with the smallest residual at every level (each beam proposes its ``B`` nearest next
  codes, the best ``B`` of the ``B²`` candidates survive), and the final answer is the better of the best beam
  and the greedy path for every vector, so it never does worse than greedy. Both searches live in
  :mod:`vqjax.quantizers.multisearch`; greedy encoding and the decoding sum are the generic residual
  combinators of :mod:`vqjax.quantizers.compose` over a nearest-code search.
* Quantizer dropout (SoundStream, DAC): with ``key`` and ``quantizer_dropout = p``, each vector, with probability
  ``p``, keeps only its first ``n ~ U{1..L}`` levels; the dropped levels' codes are ``-1`` ("absent"), which
  :func:`rvq_decode` reads as zero. A model trained so decodes at any bitrate.
* A shared codebook: pass ``codebooks`` as ``[K, D]`` and ``num_levels``.
* :func:`residual_fsq` and :func:`residual_lfq`: the same combinators over FSQ/LFQ with shrinking scales.

The gradient to ``z`` is straight-through on the total (``d values / d z = I``) or the rotation trick from ``z``
to the total; codebooks learn through the codebook loss ``Σ_l mean|sg(r_l) - q_l|²`` (weight
``codebook_weight``), and the commitment loss ``β Σ_l mean|r_l - sg(q_l)|²`` pulls ``z`` (``r_l`` carries the
gradient of ``z`` only).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from tqdm.auto import tqdm

from vqjax import checks, estimators, indexing, regularizers, search
from vqjax import kmeans as km
from vqjax.quantizers.base import Quantized
from vqjax.quantizers.compose import residual_decode, residual_encode
from vqjax.quantizers.fsq import check_levels, fsq_decode, fsq_encode
from vqjax.quantizers.lfq import bit_entropy, check_bits, check_common, lfq_decode, lfq_encode, unpack_bits
from vqjax.quantizers.multisearch import (
    beam_encode,
    beam_extend,
    check_codebooks,
    decode_sum,
    dropout_mask,
    greedy_encode,
    level_metrics,
)

__all__ = ["rvq", "rvq_encode", "rvq_decode", "residual_outputs", "residual_fsq", "residual_fsq_encode",
           "residual_fsq_decode", "residual_lfq", "residual_lfq_encode", "residual_lfq_decode", "fit_rvq"]


def _common(fn, z, beam_width, chunk_size, quantizer_dropout, key):
    checks.check_positive_int(f"{fn}: beam_width", beam_width)
    if chunk_size is not None:
        checks.check_positive_int(f"{fn}: chunk_size", chunk_size)
    checks.check_probability(f"{fn}: quantizer_dropout", quantizer_dropout, open_right=False)
    if quantizer_dropout > 0 and key is None:
        raise ValueError(f"{fn}: quantizer_dropout > 0 samples the number of levels and needs key=jax.random.key(...); "
                         f"got key=None")


# ----------------------------------------------------------------------------------------------------------------
# Residual VQ.

def rvq_encode(z: jax.Array, codebooks: jax.Array, *, num_levels: int | None = None, beam_width: int = 1,
               chunk_size: int | None = None) -> jax.Array:
    """Residual codes: int32 ``z.shape[:-1] + (L,)``. See :func:`rvq`."""
    z = checks.as_float_array("rvq_encode: z", z)
    codebooks = check_codebooks("rvq_encode: codebooks", codebooks, z.shape[-1], num_levels)
    _common("rvq_encode", z, beam_width, chunk_size, 0.0, None)
    x = lax.stop_gradient(z).reshape(-1, z.shape[-1])
    cb = lax.stop_gradient(codebooks)
    codes = greedy_encode(x, cb, chunk_size=chunk_size) if beam_width == 1 else beam_encode(
        x, cb, beam_width, chunk_size=chunk_size)
    return codes.reshape(z.shape[:-1] + (codebooks.shape[0],))


def rvq_decode(codes: jax.Array, codebooks: jax.Array, *, num_levels: int | None = None, dtype=None) -> jax.Array:
    """``Σ_l C_l[codes[..., l]]`` (code ``-1``: level absent): ``codes.shape[:-1] + (D,)`` in ``dtype``
    (default the codebooks' dtype)."""
    codebooks = check_codebooks("rvq_decode: codebooks", codebooks, None, num_levels)
    codes = checks.as_code_array("rvq_decode: codes", codes, codebooks.shape[1], low=-1)
    if codes.ndim < 1 or codes.shape[-1] != codebooks.shape[0]:
        raise ValueError(f"rvq_decode: codes must have shape [..., L] with L = {codebooks.shape[0]}; "
                         f"got {tuple(codes.shape)}")
    return decode_sum(codebooks, codes).astype(dtype or codebooks.dtype)


def rvq(z: jax.Array, codebooks: jax.Array, *, num_levels: int | None = None, beam_width: int = 1,
        estimator: str = "ste", beta: float = 0.25, codebook_weight: float = 1.0, quantizer_dropout: float = 0.0,
        key: jax.Array | None = None, chunk_size: int | None = None, check_finite: bool = False) -> Quantized:
    """Residual vector quantization of ``z [..., D]`` with ``codebooks [L, K, D]`` (see the module docstring).

    Args:
      z: ``[..., D]`` floating (float32 arithmetic; values in ``z.dtype``).
      codebooks: ``[L, K, D]``, or a shared ``[K, D]`` with ``num_levels``.
      num_levels: L for a shared codebook (must equal L otherwise).
      beam_width: 1 for greedy, ``B > 1`` for beam search (never worse than greedy).
      estimator: 'ste' or 'rotation' (from ``z`` to the total).
      beta: commitment weight; codebook_weight: weight of the codebook loss (0 for EMA codebooks).
      quantizer_dropout: probability that a vector keeps only a random number of levels (needs ``key``).
      key: PRNG key for quantizer dropout.
      chunk_size: codes per search step.
      check_finite: refuse NaN/Inf in ``z`` and the codebooks.

    Returns:
      :class:`vqjax.Quantized` with codes int32 ``z.shape[:-1] + (L,)`` (``-1`` for dropped levels) and metrics
      'perplexity' and 'usage' (means over levels), 'commitment', 'codebook_loss'.

    Raises:
      TypeError / ValueError: bad z or codebooks, unknown estimator, non-positive beam width, dropout outside
        [0, 1] or without key.

    Example:
      >>> q = vqjax.rvq(z, codebooks, beam_width=4)              # codebooks [8, 1024, 128]
      >>> vqjax.rvq_decode(q.codes, codebooks, dtype=z.dtype) == q.values
    """
    z = checks.as_float_array("rvq: z", z)
    codebooks = check_codebooks("rvq: codebooks", codebooks, z.shape[-1], num_levels)
    checks.check_choice("rvq: estimator", estimator, ("ste", "rotation"))
    checks.check_nonnegative("rvq: beta", beta)
    checks.check_nonnegative("rvq: codebook_weight", codebook_weight)
    _common("rvq", z, beam_width, chunk_size, quantizer_dropout, key)
    if check_finite:
        z = checks.assert_finite("rvq: z", z)
        codebooks = checks.assert_finite("rvq: codebooks", codebooks)
    num_levels, num_codes, dim = codebooks.shape
    codes = rvq_encode(z, codebooks, beam_width=beam_width, chunk_size=chunk_size)
    return residual_outputs(z, codebooks, codes, estimator=estimator, beta=beta, codebook_weight=codebook_weight,
                            quantizer_dropout=quantizer_dropout, key=key)


def residual_outputs(z, codebooks, codes, *, estimator, beta, codebook_weight, quantizer_dropout, key
                     ) -> Quantized:
    """Values, losses and metrics of residual codes ``[..., L]``.

    One scan over the levels carries ``Σ_{j<l} sg(q_j)``, so no ``[N, L, D]`` array is formed: level ``l`` adds
    ``mean|r_l - sg(q_l)|²`` (commitment, gradient to ``z``) and ``mean|sg(r_l) - q_l|²`` (codebook loss,
    gradient to ``C_l``) with ``r_l = z - Σ_{j<l} sg(q_j)``.
    """
    num_levels, num_codes, dim = codebooks.shape
    x = z.reshape(-1, dim).astype(jnp.float32)
    flat = codes.reshape(-1, num_levels)

    def level(carry, inp):
        before, commit, cb_loss = carry
        book, code = inp
        q = indexing.gather_rows(book.astype(jnp.float32), code)
        r = x - before
        commit = commit + regularizers.commitment_loss(r, q)
        cb_loss = cb_loss + regularizers.codebook_loss(r, q)
        return (before + lax.stop_gradient(q), commit, cb_loss), None

    init = (jnp.zeros_like(lax.stop_gradient(x)), jnp.float32(0.0), jnp.float32(0.0))
    (_, commit, cb_loss), _ = lax.scan(level, init, (codebooks, flat.T))
    stats = level_metrics(flat, num_codes)
    stats.update(commitment=commit, codebook_loss=cb_loss)
    if quantizer_dropout > 0:
        mask = dropout_mask(key, z.shape[:-1], num_levels, quantizer_dropout)
        codes = jnp.where(mask, codes, -1)
    total = decode_sum(lax.stop_gradient(codebooks), lax.stop_gradient(codes))
    estimate = estimators.straight_through if estimator == "ste" else estimators.rotation_trick
    values = estimate(z, total.reshape(z.shape).astype(z.dtype))
    loss = beta * commit + codebook_weight * cb_loss
    return Quantized(values, codes.astype(jnp.int32), loss.astype(jnp.float32), stats)


# ----------------------------------------------------------------------------------------------------------------
# Residual FSQ and LFQ.

def _fsq_scales(levels, num_levels) -> jax.Array:
    """Per-level, per-channel scales ``(L_i - 1)^-l`` (vector-quantize-pytorch's ResidualFSQ): ``[L, d]``."""
    lv = np.asarray(levels, np.float64)
    return jnp.asarray((lv[None, :] - 1.0) ** -np.arange(num_levels, dtype=np.float64)[:, None], jnp.float32)


def _fsq_level(levels, eps):
    """FSQ as one residual level: ``(encode(r, s), decode(codes, s))`` at per-channel scale ``s``."""
    return (lambda r, s: fsq_encode(r / s, levels, eps=eps),
            lambda codes, s: fsq_decode(codes, levels) * s)


def _rfsq_checks(fn, z, levels, num_levels, eps):
    levels = check_levels(f"{fn}: levels", levels)
    checks.check_positive_int(f"{fn}: num_levels", num_levels)
    if not 0 < checks.check_nonnegative(f"{fn}: eps", eps) < 1:
        raise ValueError(f"{fn}: eps must lie in (0, 1) (at 0 a 2-level channel is stuck at one value); got {eps}")
    if z is not None:
        z = checks.as_float_array(f"{fn}: z", z, last_dim=len(levels))
    return z, levels


def _rfsq_codes(z, levels, num_levels, eps):
    x = z.reshape(-1, len(levels))
    codes = residual_encode(*_fsq_level(levels, eps), x, _fsq_scales(levels, num_levels))
    return codes.reshape(z.shape[:-1] + (num_levels,))


def _rfsq_sum(codes, levels, num_levels):
    return residual_decode(_fsq_level(levels, 1e-3)[1], codes, _fsq_scales(levels, num_levels), len(levels))


def residual_fsq_encode(z: jax.Array, levels: Sequence[int], num_levels: int, *, eps: float = 1e-3) -> jax.Array:
    """Residual FSQ codes: int32 ``z.shape[:-1] + (num_levels,)``. See :func:`residual_fsq`."""
    z, levels = _rfsq_checks("residual_fsq_encode", z, levels, num_levels, eps)
    return _rfsq_codes(z, levels, num_levels, eps)


def residual_fsq_decode(codes: jax.Array, levels: Sequence[int], num_levels: int, *, dtype=jnp.float32
                        ) -> jax.Array:
    """``Σ_l scale_l * fsq_decode(codes[..., l])``: ``codes.shape[:-1] + (len(levels),)`` in ``dtype``."""
    _, levels = _rfsq_checks("residual_fsq_decode", None, levels, num_levels, 1e-3)
    codes = checks.as_code_array("residual_fsq_decode: codes", codes, math.prod(levels))
    if codes.ndim < 1 or codes.shape[-1] != num_levels:
        raise ValueError(f"residual_fsq_decode: codes must have shape [..., {num_levels}]; got {tuple(codes.shape)}")
    return _rfsq_sum(codes, levels, num_levels).astype(dtype)


def residual_fsq(z: jax.Array, levels: Sequence[int], num_levels: int, *, eps: float = 1e-3,
                 check_finite: bool = False) -> Quantized:
    """Residual FSQ: level ``l`` applies FSQ to ``r_l / s_l`` with per-channel scale ``s_l = (L_i - 1)^-l``
    (:func:`vqjax.quantizers.compose.residual_encode` over :func:`vqjax.fsq_encode` / :func:`vqjax.fsq_decode`).

    Values are ``Σ_l s_l fsq(r_l / s_l)`` with a straight-through gradient to ``z``; codes int32
    ``z.shape[:-1] + (num_levels,)``, each in ``[0, prod(levels))``; loss 0.

    Example:
      >>> q = vqjax.residual_fsq(z, (8, 5, 5, 5), num_levels=4)
    """
    z, levels = _rfsq_checks("residual_fsq", z, levels, num_levels, eps)
    if check_finite:
        z = checks.assert_finite("residual_fsq: z", z)
    codes = _rfsq_codes(lax.stop_gradient(z), levels, num_levels, eps)
    values = estimators.straight_through(z, _rfsq_sum(codes, levels, num_levels).astype(z.dtype))
    return Quantized(values, codes, jnp.float32(0.0), level_metrics(codes, math.prod(levels)))


def _lfq_scales(scale, num_levels) -> jax.Array:
    """Per-level scales ``scale * 2^-l``: ``[L]``."""
    return jnp.asarray([scale * 2.0 ** -level for level in range(num_levels)], jnp.float32)


def _lfq_level(dim):
    """LFQ as one residual level: the signs of ``r`` at scale ``s``."""
    return (lambda r, s: lfq_encode(r / s),
            lambda codes, s: lfq_decode(codes, dim) * s)


def _rlfq_sum(codes, dim, scale, num_levels):
    return residual_decode(_lfq_level(dim)[1], codes, _lfq_scales(scale, num_levels), dim)


def _rlfq_checks(fn, dim_name, dim, num_levels, scale):
    check_bits(f"{fn}: {dim_name}", dim)
    checks.check_positive_int(f"{fn}: num_levels", num_levels)
    if checks.check_nonnegative(f"{fn}: scale", scale) == 0:
        raise ValueError(f"{fn}: scale must be > 0; got {scale}")


def residual_lfq_encode(z: jax.Array, num_levels: int, *, scale: float = 1.0) -> jax.Array:
    """Residual LFQ codes: int32 ``z.shape[:-1] + (num_levels,)``. See :func:`residual_lfq`."""
    z = checks.as_float_array("residual_lfq_encode: z", z)
    _rlfq_checks("residual_lfq_encode", "z.shape[-1]", z.shape[-1], num_levels, scale)
    dim = z.shape[-1]
    codes = residual_encode(*_lfq_level(dim), z.reshape(-1, dim), _lfq_scales(scale, num_levels))
    return codes.reshape(z.shape[:-1] + (num_levels,))


def residual_lfq_decode(codes: jax.Array, dim: int, num_levels: int, *, scale: float = 1.0, dtype=jnp.float32
                        ) -> jax.Array:
    """``Σ_l ±scale 2^-l`` per bit: ``codes.shape[:-1] + (dim,)`` in ``dtype``."""
    _rlfq_checks("residual_lfq_decode", "dim", dim, num_levels, scale)
    codes = checks.as_code_array("residual_lfq_decode: codes", codes, 2 ** dim)
    if codes.ndim < 1 or codes.shape[-1] != num_levels:
        raise ValueError(f"residual_lfq_decode: codes must have shape [..., {num_levels}]; got {tuple(codes.shape)}")
    return _rlfq_sum(codes, dim, scale, num_levels).astype(dtype)


def residual_lfq(z: jax.Array, num_levels: int, *, scale: float = 1.0, entropy_weight: float = 0.1,
                 diversity_weight: float = 1.0, temperature: float = 0.01, commitment_weight: float = 0.25,
                 entropy_group_size: int | None = 8, check_finite: bool = False) -> Quantized:
    """Residual LFQ: level ``l`` takes the signs of ``r_l`` at scale ``scale * 2^-l`` (vector-quantize-pytorch's
    ResidualLFQ). Each level adds LFQ's commitment and factorised entropy terms on its residual (see
    :func:`vqjax.lfq`); the straight-through gradient goes from the total to ``z``.

    Returns codes int32 ``z.shape[:-1] + (num_levels,)``.
    """
    z = checks.as_float_array("residual_lfq: z", z)
    _rlfq_checks("residual_lfq", "z.shape[-1]", z.shape[-1], num_levels, scale)
    check_common("residual_lfq", temperature=temperature, entropy_weight=entropy_weight,
                 diversity_weight=diversity_weight, commitment_weight=commitment_weight,
                 group_size=entropy_group_size)
    if check_finite:
        z = checks.assert_finite("residual_lfq: z", z)
    dim = z.shape[-1]
    zf = z.astype(jnp.float32)
    codes = residual_lfq_encode(lax.stop_gradient(z), num_levels, scale=scale)
    loss, commit_total = jnp.float32(0.0), jnp.float32(0.0)
    before = jnp.zeros_like(zf)
    for level in range(num_levels):
        s = scale * 2.0 ** -level
        r = zf - before
        q = jnp.where(unpack_bits(codes[..., level], dim), s, -s)
        commit = regularizers.commitment_loss(r, q)
        commit_total += commit
        loss += commitment_weight * commit
        if entropy_weight > 0:
            loss += entropy_weight * bit_entropy(r, scale=s, temperature=temperature,
                                                 diversity_weight=diversity_weight,
                                                 group_size=entropy_group_size).loss
        before = before + q
    values = estimators.straight_through(z, _rlfq_sum(codes, dim, scale, num_levels).astype(z.dtype))
    stats = level_metrics(codes, 2 ** dim)
    stats["commitment"] = commit_total
    return Quantized(values, codes, loss.astype(jnp.float32), stats)


# ----------------------------------------------------------------------------------------------------------------
# Post-training fitting.

def fit_rvq(key: jax.Array, x: jax.Array, num_levels: int, num_codes: int, *, iters: int = 5,
            dim_steps: int = 10, beam_width: int = 1, max_points_per_code: int | None = 256,
            chunk_size: int | None = None, progress: bool = False) -> jax.Array:
    """Fits RVQ codebooks to data by residual k-means (the FAISS ``ResidualQuantizer`` use case).

    Level ``l`` runs k-means on the residuals the first ``l`` levels leave, in principal components of growing
    dimension (:func:`vqjax.kmeans.progressive_kmeans`, as FAISS trains its residual quantizer). With
    ``beam_width = B > 1`` the data keep ``B`` beams while fitting, as FAISS does: level ``l`` is fitted on the
    residuals of all beams, then every beam is extended by one level (:func:`beam_extend`), so later levels fit
    the residuals the beam encoder will actually produce.

    Args:
      key: PRNG key.
      x: ``[N, D]`` data.
      num_levels: L; num_codes: K per level.
      iters: Lloyd iterations per dimension step (``dim_steps`` steps per level).
      dim_steps: dimension steps of the progressive k-means (1: plain k-means from random rows).
      beam_width: beams kept while fitting (encode with the same width).
      max_points_per_code: each level's k-means trains on at most this many residuals per code (FAISS's 256;
        None uses all).
      chunk_size: codes per search step.
      progress: show a tqdm bar over levels.

    Returns:
      float32 codebooks ``[L, K, D]``.
    """
    x = checks.as_float_array("fit_rvq: x", x, min_rank=2).astype(jnp.float32)
    x = x.reshape(-1, x.shape[-1])
    checks.check_positive_int("fit_rvq: num_levels", num_levels)
    checks.check_positive_int("fit_rvq: num_codes", num_codes)
    checks.check_positive_int("fit_rvq: beam_width", beam_width)
    checks.check_positive_int("fit_rvq: dim_steps", dim_steps)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"fit_rvq: iters must be a non-negative int; got {iters!r}")
    if max_points_per_code is not None:
        checks.check_positive_int("fit_rvq: max_points_per_code", max_points_per_code)
    if x.shape[0] < num_codes:
        raise ValueError(f"fit_rvq: x must have at least num_codes = {num_codes} rows; got shape {tuple(x.shape)}")
    max_points = None if max_points_per_code is None else max_points_per_code * num_codes
    dim = x.shape[1]
    residual = x[:, None, :]
    history = jnp.zeros((x.shape[0], 1, num_levels), jnp.int32)
    books = []
    levels = range(num_levels)
    if progress:
        levels = tqdm(levels, desc="fit_rvq", unit="level")
    for level in levels:
        centers = _jit_kmeans(jax.random.fold_in(key, level), residual.reshape(-1, dim), num_codes, iters,
                              dim_steps, max_points, chunk_size)
        books.append(centers)
        residual, history = _jit_extend(residual, history, centers, level, beam_width, chunk_size)
    return jnp.stack(books)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _jit_kmeans(key, x, num_codes, iters, dim_steps, max_points, chunk_size):
    return km.progressive_kmeans(key, x, num_codes, iters=iters, dim_steps=dim_steps, max_points=max_points,
                                  chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _jit_extend(residual, history, codebook, level, beams, chunk_size):
    if beams == 1:
        codes = search.nearest_code(residual[:, 0], codebook, chunk_size=chunk_size).codes
        residual = residual - indexing.gather_rows(codebook, codes)[:, None, :]
        return residual, history.at[:, 0, level].set(codes)
    return beam_extend(residual, history, codebook, level, min(beams, residual.shape[1] * codebook.shape[0]),
                       chunk_size=chunk_size)
