"""Codebook usage statistics: perplexity, usage fraction, dead codes.

All are float32 scalars computed from code histograms (``vqjax.indexing.bincount``), so under a sharded batch
they describe the global batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from vqjax import indexing

__all__ = ["perplexity", "usage", "dead_code_count", "code_metrics", "sorted_code_metrics", "CodeCounter"]

_HISTOGRAM_LIMIT = 1 << 16  # above this many codes (and more codes than samples), count by sorting instead


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
    """``{'perplexity', 'usage'}`` of the codes of one call (any shape, values in ``[0, num_codes)``).

    A histogram of ``num_codes`` bins for ordinary codebooks; for implicit codebooks larger than both 65536 and
    the number of codes in the call (FSQ, LFQ, BSQ with millions of codes) the same figures come from
    :func:`sorted_code_metrics`, so memory follows the batch, not the codebook.
    """
    if num_codes > max(_HISTOGRAM_LIMIT, codes.size):
        return sorted_code_metrics(codes, num_codes)
    counts = indexing.bincount(codes, num_codes)
    return {"perplexity": perplexity(counts), "usage": usage(counts)}


def sorted_code_metrics(codes: jax.Array, num_codes: int) -> dict[str, jax.Array]:
    """Perplexity and usage from sorted codes, in ``O(N log N)`` time and ``O(N)`` memory, for any ``num_codes``.

    With ``c_i`` the number of occurrences of the code at position ``i`` of the sorted array,
    ``H = -(1/N) Σ_i log(c_i / N)`` (each run of ``c`` equal codes contributes ``c/N log(c/N)``), and usage is
    the number of runs over ``num_codes``. Equals :func:`code_metrics`' histogram figures up to rounding.
    """
    flat = jnp.sort(indexing.replicate(codes.reshape(-1)))
    n = flat.shape[0]
    if n == 0:
        return {"perplexity": jnp.float32(1.0), "usage": jnp.float32(0.0)}
    pos = jnp.arange(n, dtype=jnp.int32)
    starts = jnp.concatenate([jnp.ones((1,), bool), flat[1:] != flat[:-1]])
    ends = jnp.concatenate([flat[1:] != flat[:-1], jnp.ones((1,), bool)])
    first = lax.cummax(jnp.where(starts, pos, 0))
    last = lax.cummin(jnp.where(ends, pos, n - 1), reverse=True)
    counts = (last - first + 1).astype(jnp.float32)
    entropy = -jnp.mean(jnp.log(counts / n))
    return {"perplexity": jnp.exp(entropy), "usage": jnp.sum(starts.astype(jnp.float32)) / num_codes}


class CodeCounter:
    """Counts token values over many batches (host side): usage, perplexity and dead codes of a whole split.

    Codes ``[B, ...]`` or ``[B, ..., L]`` for ``levels = L`` codebooks; counts are kept per codebook (a dict of
    value -> count, so huge implicit codebooks cost only what is used).
    """

    def __init__(self, vocab_size: int, levels: int = 1):
        self.vocab_size = vocab_size
        self.levels = levels
        self.counts = [dict() for _ in range(levels)]

    def update(self, codes: np.ndarray, mask: np.ndarray | None = None) -> None:
        codes = np.asarray(codes)
        if mask is not None:
            codes = codes[np.asarray(mask) > 0]
        flat = codes.reshape(-1, self.levels)
        for level in range(self.levels):
            values, counts = np.unique(flat[:, level], return_counts=True)
            table = self.counts[level]
            for v, c in zip(values.tolist(), counts.tolist()):
                if v >= 0:                      # -1: a dropped residual level
                    table[v] = table.get(v, 0) + c

    def result(self) -> dict[str, float]:
        """``usage`` (fraction of codes used, mean over codebooks), ``perplexity`` (mean over codebooks) and
        ``dead_codes`` (codes never used, summed over codebooks)."""
        usage, perplexity, dead = [], [], 0
        for table in self.counts:
            counts = np.array(list(table.values()), np.float64)
            total = max(counts.sum(), 1.0)
            p = counts / total
            usage.append(len(table) / self.vocab_size)
            perplexity.append(math.exp(-float(np.sum(p * np.log(np.maximum(p, 1e-30))))))
            dead += self.vocab_size - len(table)
        return {"usage": float(np.mean(usage)), "perplexity": float(np.mean(perplexity)), "dead_codes": float(dead)}
