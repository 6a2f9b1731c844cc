"""Additive quantization (Babenko & Lempitsky 2014, "Additive Quantization for Extreme Vector Compression";
Martinez et al. 2016/2018, LSQ and LSQ++).

A vector is approximated by a sum of one code from each of ``M`` full-dimension codebooks ``C_m [K, D]``:
``z ≈ Σ_m C_m[b_m]``. Unlike RVQ the codebooks are fitted jointly, so finding the codes is a hard combinatorial
problem; vqjax encodes by beam search over the codebooks in order (the residual beam search of
:func:`vqjax.quantizers.multisearch.beam_encode`, never worse than greedy) optionally followed by iterated conditional
modes (ICM, as in LSQ): each codebook in turn is re-chosen as the nearest code to what the others leave, which
never increases the error.

:func:`fit_aq` fits codebooks to data by alternating encoding with the exact least-squares codebook update
``min_C |X - B C|²`` (``B`` the ``N x MK`` one-hot code matrix), solved through the ``MK x MK`` normal equations
with a ridge towards the previous codebooks, starting from residual k-means.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from tqdm.auto import tqdm

from vqjax import checks, estimators, indexing, regularizers
from vqjax.quantizers.base import Quantized
from vqjax.quantizers.multisearch import beam_encode, check_codebooks, decode_sum, icm_refine, level_metrics
from vqjax.quantizers.rvq import fit_rvq

__all__ = ["aq", "aq_encode", "aq_decode", "additive_outputs", "lstsq_codebooks", "fit_aq"]


def _encode(x, codebooks, beam_width, icm_iters, chunk_size):
    codes = beam_encode(x, codebooks, beam_width, chunk_size=chunk_size)
    return icm_refine(x, codebooks, codes, icm_iters, chunk_size=chunk_size) if icm_iters else codes


def _check(fn, beam_width, icm_iters, chunk_size):
    checks.check_positive_int(f"{fn}: beam_width", beam_width)
    if isinstance(icm_iters, bool) or not isinstance(icm_iters, int) or icm_iters < 0:
        raise ValueError(f"{fn}: icm_iters must be a non-negative int; got {icm_iters!r}")
    if chunk_size is not None:
        checks.check_positive_int(f"{fn}: chunk_size", chunk_size)


def aq_encode(z: jax.Array, codebooks: jax.Array, *, beam_width: int = 4, icm_iters: int = 0,
              chunk_size: int | None = None) -> jax.Array:
    """Additive codes: int32 ``z.shape[:-1] + (M,)``. See :func:`aq`."""
    z = checks.as_float_array("aq_encode: z", z)
    codebooks = check_codebooks("aq_encode: codebooks", codebooks, z.shape[-1], None, allow_shared=False)
    _check("aq_encode", beam_width, icm_iters, chunk_size)
    x = lax.stop_gradient(z).reshape(-1, z.shape[-1])
    codes = _encode(x, lax.stop_gradient(codebooks), beam_width, icm_iters, chunk_size)
    return codes.reshape(z.shape[:-1] + (codebooks.shape[0],))


def aq_decode(codes: jax.Array, codebooks: jax.Array, *, dtype=None) -> jax.Array:
    """``Σ_m C_m[codes[..., m]]``: ``codes.shape[:-1] + (D,)`` in ``dtype`` (default the codebooks' dtype)."""
    codebooks = check_codebooks("aq_decode: codebooks", codebooks, None, None, allow_shared=False)
    codes = checks.as_code_array("aq_decode: codes", codes, codebooks.shape[1])
    if codes.ndim < 1 or codes.shape[-1] != codebooks.shape[0]:
        raise ValueError(f"aq_decode: codes must have shape [..., M] with M = {codebooks.shape[0]}; "
                         f"got {tuple(codes.shape)}")
    return decode_sum(codebooks, codes).astype(dtype or codebooks.dtype)


def aq(z: jax.Array, codebooks: jax.Array, *, beam_width: int = 4, icm_iters: int = 0, estimator: str = "ste",
       beta: float = 0.25, codebook_weight: float = 1.0, chunk_size: int | None = None,
       check_finite: bool = False) -> Quantized:
    """Additive quantization of ``z [..., D]`` with ``codebooks [M, K, D]`` (see the module docstring).

    Loss: ``codebook_weight * mean|sg(z) - q|² + beta * mean|z - sg(q)|²`` with ``q = Σ_m C_m[b_m]`` (the
    codebook term trains all ``M`` codebooks jointly).

    Args:
      z: ``[..., D]`` floating (float32 arithmetic; values in ``z.dtype``).
      codebooks: ``[M, K, D]``.
      beam_width: encoder beam (>= 1).
      icm_iters: ICM sweeps after the beam search (0 skips them).
      estimator: 'ste' or 'rotation' (from ``z`` to ``q``).
      beta, codebook_weight: loss weights.
      chunk_size: codes per search step.
      check_finite: refuse NaN/Inf in ``z`` and the codebooks.

    Returns:
      :class:`vqjax.Quantized` with codes int32 ``z.shape[:-1] + (M,)``; 'perplexity' and 'usage' are means
      over codebooks.

    Example:
      >>> books = vqjax.fit_aq(key, train, num_codebooks=8, num_codes=256)
      >>> q = vqjax.aq(z, books, beam_width=8)
      >>> vqjax.aq_decode(q.codes, books, dtype=z.dtype) == q.values
    """
    z = checks.as_float_array("aq: z", z)
    codebooks = check_codebooks("aq: codebooks", codebooks, z.shape[-1], None, allow_shared=False)
    _check("aq", beam_width, icm_iters, chunk_size)
    checks.check_choice("aq: estimator", estimator, ("ste", "rotation"))
    checks.check_nonnegative("aq: beta", beta)
    checks.check_nonnegative("aq: codebook_weight", codebook_weight)
    if check_finite:
        z = checks.assert_finite("aq: z", z)
        codebooks = checks.assert_finite("aq: codebooks", codebooks)
    x = z.reshape(-1, z.shape[-1])
    codes = _encode(lax.stop_gradient(x), lax.stop_gradient(codebooks), beam_width, icm_iters, chunk_size)
    return additive_outputs(z, codebooks, codes, estimator=estimator, beta=beta, codebook_weight=codebook_weight)


def additive_outputs(z, codebooks, codes, *, estimator, beta, codebook_weight) -> Quantized:
    """Values, loss and metrics of additive codes ``[N, M]`` (shared with ``nn.AdditiveVQ``)."""
    x = z.reshape(-1, z.shape[-1])
    q = decode_sum(codebooks, codes)                               # differentiable w.r.t. the codebooks
    commit = regularizers.commitment_loss(x, q)
    cb_loss = regularizers.codebook_loss(x, q)
    estimate = estimators.straight_through if estimator == "ste" else estimators.rotation_trick
    values = estimate(z, lax.stop_gradient(q).reshape(z.shape).astype(z.dtype))
    stats = level_metrics(codes, codebooks.shape[1])
    stats.update(commitment=commit, codebook_loss=cb_loss)
    loss = beta * commit + codebook_weight * cb_loss
    return Quantized(values, codes.reshape(z.shape[:-1] + (codebooks.shape[0],)), loss.astype(jnp.float32), stats)


def lstsq_codebooks(x: jax.Array, codes: jax.Array, codebooks: jax.Array, *, ridge: float = 1e-3) -> jax.Array:
    """The least-squares codebooks for fixed codes: ``argmin_C |X - B C|² + λ |C - C_prev|²``: ``[M, K, D]``.

    ``BᵀB`` (``MK x MK``) is accumulated by a histogram of code pairs (``N M²`` entries, never ``N x MK``) and
    ``BᵀX`` by scatter-adds; ``λ = ridge * N / K`` (the ridge relative to the average code count) makes the
    system definite (the codes of different codebooks share a null space: a vector added to one codebook and
    subtracted from another changes nothing) and keeps unused codes where they were.
    """
    num_books, num_codes, dim = codebooks.shape
    size = num_books * num_codes
    idx = codes.astype(jnp.int32) + jnp.arange(num_books, dtype=jnp.int32) * num_codes           # [N, M]
    pairs = (idx[:, :, None] * size + idx[:, None, :]).reshape(-1)
    gram = indexing.bincount(pairs, size * size).reshape(size, size)
    xf = x.astype(jnp.float32)

    def add(rhs, col):
        return rhs + indexing.scatter_add_rows(xf, col, size), None

    rhs, _ = lax.scan(add, jnp.zeros((size, dim), jnp.float32), idx.T)
    lam = ridge * x.shape[0] / num_codes
    prev = codebooks.reshape(size, dim).astype(jnp.float32)
    chol = jax.scipy.linalg.cho_factor(gram + lam * jnp.eye(size, dtype=jnp.float32))
    return jax.scipy.linalg.cho_solve(chol, rhs + lam * prev).reshape(num_books, num_codes, dim)


def fit_aq(key: jax.Array, x: jax.Array, num_codebooks: int, num_codes: int, *, iters: int = 10,
           beam_width: int = 8, icm_iters: int = 1, kmeans_iters: int = 5, ridge: float = 1e-3,
           chunk_size: int | None = None, progress: bool = False) -> jax.Array:
    """Fits additive codebooks to data: beam-fitted residual k-means (:func:`vqjax.fit_rvq`), then ``iters`` rounds
    of (encode, least squares).

    Each round encodes the data with beam search (+ ICM) and solves :func:`lstsq_codebooks`; the mean squared
    error of the encoded data never increases from the least-squares step (up to the small ridge).

    Args:
      key: PRNG key; x: ``[N, D]`` data; num_codebooks: M; num_codes: K.
      iters: alternating rounds; beam_width, icm_iters: the encoder used in each round.
      kmeans_iters: Lloyd iterations per dimension step of the residual k-means start (:func:`vqjax.fit_rvq`).
      ridge: relative ridge of the least-squares step (> 0).
      chunk_size: codes per search step; progress: tqdm bar over rounds.

    Returns:
      float32 codebooks ``[M, K, D]``.
    """
    x = checks.as_float_array("fit_aq: x", x, min_rank=2).astype(jnp.float32)
    x = x.reshape(-1, x.shape[-1])
    checks.check_positive_int("fit_aq: num_codebooks", num_codebooks)
    checks.check_positive_int("fit_aq: num_codes", num_codes)
    _check("fit_aq", beam_width, icm_iters, chunk_size)
    if not ridge > 0:
        raise ValueError(f"fit_aq: ridge must be > 0; got {ridge}")
    codebooks = fit_rvq(key, x, num_codebooks, num_codes, iters=kmeans_iters, beam_width=beam_width,
                        chunk_size=chunk_size)
    rounds = range(iters)
    if progress:
        rounds = tqdm(rounds, desc="fit_aq", unit="round")
    for _ in rounds:
        codebooks = _jit_round(x, codebooks, beam_width, icm_iters, ridge, chunk_size)
    return codebooks


def _round(x, codebooks, beam_width, icm_iters, ridge, chunk_size):
    codes = _encode(x, codebooks, beam_width, icm_iters, chunk_size)
    return lstsq_codebooks(x, codes, codebooks, ridge=ridge)


_jit_round = jax.jit(_round, static_argnums=(2, 3, 4, 5))
