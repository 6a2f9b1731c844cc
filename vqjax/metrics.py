"""Codebook usage statistics: perplexity, usage fraction, dead codes.

All are float32 scalars computed from code histograms (``vqjax.indexing.bincount``), so under a sharded batch
they describe the global batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vqjax import indexing

__all__ = ["perplexity", "usage", "dead_code_count", "code_metrics"]


def perplexity(counts: jax.Array) -> jax.Array:
    """``exp(H(p))`` of the code distribution ``p = counts / sum(counts)``: 1 (collapse) to K (uniform)."""
    counts = counts.astype(jnp.float32)
    p = counts / jnp.maximum(jnp.sum(counts), 1e-12)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def usage(counts: jax.Array) -> jax.Array:
    """Fraction of codes with a non-zero count."""
    return jnp.mean((counts > 0).astype(jnp.float32))


def dead_code_count(usage_ema: jax.Array, threshold: float) -> jax.Array:
    """Number of codes whose usage EMA (expected uses per step) is below ``threshold``, as float32."""
    return jnp.sum((usage_ema < threshold).astype(jnp.float32))


def code_metrics(codes: jax.Array, num_codes: int) -> dict[str, jax.Array]:
    """``{'perplexity', 'usage'}`` of the codes of one call (any shape, values in ``[0, num_codes)``)."""
    counts = indexing.bincount(codes, num_codes)
    return {"perplexity": perplexity(counts), "usage": usage(counts)}
