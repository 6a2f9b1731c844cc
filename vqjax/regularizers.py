"""Auxiliary losses of vector quantization, memory-bounded for large codebooks.

* :func:`commitment_loss` / :func:`codebook_loss` (van den Oord et al. 2017): ``β |z - sg(q)|²`` pulls the
  encoder to its code, ``|sg(z) - q|²`` pulls the code to the encoder output; β weighs the commitment term.
* :func:`entropy_loss` (as used in MAGVIT-v2 / LFQ and in "Finite Scalar Quantization"-era VQ training): with
  ``p_i = softmax(-d(z_i, ·)/τ)`` over the codebook, ``mean_i H(p_i) - diversity_weight * H(mean_i p_i)``:
  confident assignments, spread over the whole codebook.
* :func:`orthogonal_loss` (Shin et al. 2023): ``|Ĉ Ĉᵀ - I|²_F / K²`` for l2-normalised codes, computed through
  the ``D x D`` Gram matrix, never ``K x K``.
* :func:`soft_quantize`: the temperature-weighted combination ``Σ_k softmax(-d/τ)_k c_k`` (soft VQ; with Gumbel
  noise, the relaxed sample of the Gumbel-softmax estimator).

The softmax terms scan the codebook in chunks (``vqjax.search.codebook_chunks``) with an online log-sum-exp, and
rematerialise each chunk in the backward pass, so neither the forward nor the gradient holds ``N x K`` values.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vqjax import checks, search

__all__ = [
    "commitment_loss",
    "codebook_loss",
    "EntropyTerms",
    "entropy_loss",
    "orthogonal_loss",
    "SoftQuantized",
    "soft_quantize",
]


def commitment_loss(z: jax.Array, q: jax.Array) -> jax.Array:
    """``mean |z - sg(q)|²`` in float32 (gradient to ``z`` only). Multiply by β."""
    d = z.astype(jnp.float32) - lax.stop_gradient(q).astype(jnp.float32)
    return jnp.mean(d * d)


def codebook_loss(z: jax.Array, q: jax.Array) -> jax.Array:
    """``mean |sg(z) - q|²`` in float32 (gradient to the codes ``q`` only)."""
    d = lax.stop_gradient(z).astype(jnp.float32) - q.astype(jnp.float32)
    return jnp.mean(d * d)


def _prepare(z, codebook, metric, chunk_size, fn):
    z = checks.as_float_array(f"{fn}: z", z)
    codebook = search.check_codebook(f"{fn}: codebook", codebook, z.shape[-1])
    checks.check_choice(f"{fn}: metric", metric, search.METRICS)
    num_codes = codebook.shape[0]
    chunk_size = search.default_chunk_size(num_codes) if chunk_size is None else min(
        checks.check_positive_int(f"{fn}: chunk_size", chunk_size), num_codes)
    queries, offset = search.prepare_queries(z.reshape(-1, z.shape[-1]), metric)
    return z, queries, offset, search.codebook_chunks(codebook, metric, chunk_size)


def _logits(queries, offset, weights, bias, valid, temperature):
    """Chunk logits ``-d/τ`` (``-inf`` on padding)."""
    d = search.chunk_scores(queries, weights, bias) + offset[:, None]
    return jnp.where(valid[None, :], -d / temperature, -jnp.inf)


class EntropyTerms(NamedTuple):
    """Parts of :func:`entropy_loss`: the loss and the two entropies (nats), float32 scalars."""

    loss: jax.Array
    sample_entropy: jax.Array
    codebook_entropy: jax.Array


def entropy_loss(z: jax.Array, codebook: jax.Array, *, temperature: float = 0.01, diversity_weight: float = 1.0,
                 metric: str = "l2", chunk_size: int | None = None) -> EntropyTerms:
    """Entropy regulariser over a codebook, in codebook chunks.

    ``p_ik = softmax_k(-d(z_i, c_k) / temperature)``;
    ``loss = mean_i H(p_i) - diversity_weight * H(mean_i p_i)``.

    Two scans over the codebook: the first accumulates per row an online log-sum-exp ``m, s`` and
    ``t = Σ_k e^{l_k - m} l_k`` (so ``H_i = m + log s - t/s``); the second forms ``p`` chunk by chunk to sum the
    batch-average probabilities. Each scan step is rematerialised in the backward pass (``jax.checkpoint``), so
    memory stays ``O(N * chunk_size + K * D)`` for the value and the gradient.

    Args:
      z: ``[..., D]`` vectors (the batch; the mean runs over all of them, globally under sharding).
      codebook: ``[K, D]``.
      temperature: positive softmax temperature on distances.
      diversity_weight: weight of the codebook-entropy term.
      metric: 'l2' or 'cosine'.
      chunk_size: codes per scan step.

    Returns:
      :class:`EntropyTerms`.
    """
    if not temperature > 0:
        raise ValueError(f"entropy_loss: temperature must be > 0; got {temperature}")
    z, queries, offset, chunks = _prepare(z, codebook, metric, chunk_size, "entropy_loss")

    @jax.checkpoint
    def pass1(carry, chunk):
        m, s, t = carry
        logits = _logits(queries, offset, *chunk, temperature)
        m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
        scale = jnp.exp(m - m_new)
        e = jnp.exp(logits - m_new[:, None])
        el = e * jnp.where(chunk[2][None, :], logits, 0.0)   # padding: 0 * 0, never 0 * -inf (nor in the VJP)
        return (m_new, s * scale + jnp.sum(e, -1), t * scale + jnp.sum(el, -1)), None

    init = (search.rows_like(queries, -jnp.inf, jnp.float32), search.rows_like(queries, 0.0, jnp.float32),
            search.rows_like(queries, 0.0, jnp.float32))
    (m, s, t), _ = lax.scan(pass1, init, tuple(chunks))
    lse = m + jnp.log(s)
    sample_entropy = jnp.mean(lse - t / s)

    @jax.checkpoint
    def pass2(acc, chunk):
        logits = _logits(queries, offset, *chunk, temperature)
        avg = jnp.mean(jnp.exp(logits - lse[:, None]), axis=0)
        return acc - jnp.sum(jnp.where(avg > 0, avg * jnp.log(jnp.where(avg > 0, avg, 1.0)), 0.0)), None

    codebook_entropy, _ = lax.scan(pass2, jnp.float32(0.0), tuple(chunks))
    loss = sample_entropy - diversity_weight * codebook_entropy
    return EntropyTerms(loss, sample_entropy, codebook_entropy)


def orthogonal_loss(codebook: jax.Array) -> jax.Array:
    """Orthogonality of l2-normalised codes: ``|Ĉ Ĉᵀ - I|²_F / K²`` (Shin et al. 2023).

    Uses ``|Ĉ Ĉᵀ|²_F = |Ĉᵀ Ĉ|²_F`` and ``tr(Ĉ Ĉᵀ) = K``: ``(|ĈᵀĈ|²_F - K) / K²`` with a ``D x D`` Gram matrix.
    """
    codebook = search.check_codebook("orthogonal_loss: codebook", codebook)
    c = search.l2_normalize(codebook.astype(jnp.float32))
    num_codes = c.shape[0]
    gram = c.T @ c
    sq_norms = jnp.sum(c * c, axis=-1)
    # |CCᵀ - I|² = |CᵀC|² - 2 Σ|c_k|² + K (exact even for zero rows).
    return (jnp.sum(gram * gram) - 2.0 * jnp.sum(sq_norms) + num_codes) / num_codes ** 2


class SoftQuantized(NamedTuple):
    """Result of :func:`soft_quantize`.

    Attributes:
      values: float32 ``[..., D]``: ``Σ_k w_k c_k`` with ``w = softmax((-d/τ + noise) / ...)``.
      codes: int32 ``[...]``: ``argmax_k`` of the (perturbed) logits, i.e. the hard sample.
    """

    values: jax.Array
    codes: jax.Array


def soft_quantize(z: jax.Array, codebook: jax.Array, *, temperature: float = 1.0, metric: str = "l2",
                  key: jax.Array | None = None, gumbel_temperature: float = 1.0,
                  chunk_size: int | None = None) -> SoftQuantized:
    """Soft quantization: the softmax-weighted mean of the codes, in codebook chunks (online softmax).

    Without ``key``: ``w = softmax(-d / temperature)``. With ``key`` (the Gumbel-softmax relaxation):
    ``w = softmax((-d / temperature + g) / gumbel_temperature)`` with ``g ~ Gumbel(0, 1)`` drawn chunk by chunk
    (``fold_in(key, chunk_index)``), and ``codes`` is the hard sample ``argmax(-d/τ + g)``.

    Gradients flow to ``z`` and ``codebook`` through the weights and the codes; each chunk is recomputed in the
    backward pass, so memory stays ``O(N * (chunk_size + D) + K * D)``.

    Args:
      z: ``[..., D]``.
      codebook: ``[K, D]``.
      temperature: positive temperature on distances.
      metric: 'l2' or 'cosine' (for cosine the values combine l2-normalised codes).
      key: optional PRNG key for Gumbel noise.
      gumbel_temperature: positive temperature of the Gumbel-softmax relaxation.
      chunk_size: codes per scan step.

    Returns:
      :class:`SoftQuantized`.
    """
    for name, value in (("temperature", temperature), ("gumbel_temperature", gumbel_temperature)):
        if not value > 0:
            raise ValueError(f"soft_quantize: {name} must be > 0; got {value}")
    z, queries, offset, chunks = _prepare(z, codebook, metric, chunk_size, "soft_quantize")
    dim = queries.shape[1]
    chunk_size = chunks.bias.shape[1]
    # Values combine the codes themselves (normalised for cosine): c = -weights / (2 or 1).
    values_of = (lambda w: -w) if metric == "cosine" else (lambda w: -0.5 * w)
    tau = 1.0 if key is None else gumbel_temperature

    @jax.checkpoint
    def body(carry, inp):
        m, s, acc, best, best_idx = carry
        index, weights, bias, valid = inp
        logits = _logits(queries, offset, weights, bias, valid, temperature)
        if key is not None:
            noise = jax.random.gumbel(jax.random.fold_in(key, index), logits.shape, jnp.float32)
            logits = jnp.where(valid[None, :], logits + noise, -jnp.inf)
        idx = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        top = jnp.max(logits, axis=-1)
        better = top > best
        scaled = logits / tau
        m_new = jnp.maximum(m, jnp.max(scaled, axis=-1))
        scale = jnp.exp(m - m_new)
        e = jnp.exp(scaled - m_new[:, None])
        acc = acc * scale[:, None] + e @ values_of(weights)
        return (m_new, s * scale + jnp.sum(e, -1), acc, jnp.where(better, top, best),
                jnp.where(better, idx + index * chunk_size, best_idx)), None

    init = (search.rows_like(queries, -jnp.inf, jnp.float32), search.rows_like(queries, 0.0, jnp.float32),
            search.rows_like(queries, 0.0, jnp.float32, (dim,)), search.rows_like(queries, -jnp.inf, jnp.float32),
            search.rows_like(queries, 0, jnp.int32))
    indices = jnp.arange(chunks.bias.shape[0], dtype=jnp.int32)
    (_, s, acc, _, codes), _ = lax.scan(body, init, (indices,) + tuple(chunks))
    lead = z.shape[:-1]
    return SoftQuantized((acc / s[:, None]).reshape(lead + (dim,)), codes.reshape(lead))
