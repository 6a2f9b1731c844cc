"""Evaluation measures for image tokenizers: PSNR, SSIM and code statistics over a whole split."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["psnr", "ssim", "CodeCounter", "KnownAnswers", "filtered_rank", "ranking_metrics"]


def psnr(x: jax.Array, y: jax.Array, max_value: float = 1.0) -> jax.Array:
    """Per-image PSNR in dB of ``[B, H, W, C]`` images: ``10 log10(max² / mean((x - y)²))``."""
    mse = jnp.mean((x.astype(jnp.float32) - y.astype(jnp.float32)) ** 2, axis=(1, 2, 3))
    return 10.0 * jnp.log10(max_value ** 2 / jnp.maximum(mse, 1e-10))


def _gaussian_window(size: int, sigma: float) -> jax.Array:
    r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    g = jnp.exp(-0.5 * (r / sigma) ** 2)
    return g / jnp.sum(g)


def ssim(x: jax.Array, y: jax.Array, max_value: float = 1.0, window: int = 11, sigma: float = 1.5) -> jax.Array:
    """Per-image SSIM (Wang et al. 2004) of ``[B, H, W, C]`` images: Gaussian ``window`` (shrunk to fit small
    images), ``K1 = 0.01``, ``K2 = 0.03``, valid positions only, averaged over positions and channels."""
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    size = min(window, x.shape[1], x.shape[2])
    g = _gaussian_window(size, sigma)

    def blur(v):  # separable valid filtering of [B, H, W, C]
        v = jnp.moveaxis(v, -1, 1).reshape((-1,) + v.shape[1:3] + (1,))
        k_h = g.reshape(size, 1, 1, 1)
        k_w = g.reshape(1, size, 1, 1)
        dn = ("NHWC", "HWIO", "NHWC")
        v = jax.lax.conv_general_dilated(v, k_h, (1, 1), "VALID", dimension_numbers=dn)
        v = jax.lax.conv_general_dilated(v, k_w, (1, 1), "VALID", dimension_numbers=dn)
        return v.reshape((x.shape[0], x.shape[3]) + v.shape[1:3])

    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return jnp.mean(s, axis=(1, 2, 3))


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


class KnownAnswers:
    """Every true answer of each query ``(entity, relation)`` over all splits, for filtered ranking.

    Tail queries ``(h, r, ?)`` use relation ``r``; head queries ``(?, r, t)`` are asked as ``(t, r + R, ?)``.
    """

    def __init__(self, triples: np.ndarray, num_entities: int, num_relations: int):
        t = np.asarray(triples, np.int64)
        self.num_entities, self.num_relations = num_entities, num_relations
        queries = np.concatenate([t[:, 0] * 2 * num_relations + t[:, 1],
                                  t[:, 2] * 2 * num_relations + t[:, 1] + num_relations])
        answers = np.concatenate([t[:, 2], t[:, 0]])
        order = np.lexsort((answers, queries))
        self.queries, self.answers = queries[order], answers[order]

    def mask(self, entities: np.ndarray, relations: np.ndarray) -> np.ndarray:
        """bool ``[B, N]``: the known answers of each query ``(entities[b], relations[b])``."""
        keys = np.asarray(entities, np.int64) * 2 * self.num_relations + np.asarray(relations, np.int64)
        lo = np.searchsorted(self.queries, keys, side="left")
        hi = np.searchsorted(self.queries, keys, side="right")
        counts = hi - lo
        rows = np.repeat(np.arange(keys.size), counts)
        cols = self.answers[np.repeat(lo, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts,
                                                                                       counts)]
        out = np.zeros((keys.size, self.num_entities), bool)
        out[rows, cols] = True
        return out


def filtered_rank(scores: jax.Array, targets: jax.Array, known: jax.Array) -> jax.Array:
    """Rank (1 = best) of ``scores[b, targets[b]]`` among the entities that are not other known answers, with ties
    counted half (the "realistic" rank: ``1 + #higher + #tied / 2``). float32 ``[B]``."""
    target = jnp.take_along_axis(scores, targets[:, None], axis=1)
    others = known & (jnp.arange(scores.shape[1])[None] != targets[:, None])
    valid = ~others
    higher = jnp.sum((scores > target) & valid, axis=1)
    tied = jnp.sum((scores == target) & valid, axis=1) - 1
    return 1.0 + higher.astype(jnp.float32) + 0.5 * tied.astype(jnp.float32)


def ranking_metrics(ranks: np.ndarray) -> dict[str, float]:
    """Mean reciprocal rank and Hits@1/3/10 of ranks."""
    ranks = np.asarray(ranks, np.float64)
    return {"mrr": float(np.mean(1.0 / ranks)), "mean_rank": float(np.mean(ranks)),
            **{f"hits@{k}": float(np.mean(ranks <= k)) for k in (1, 3, 10)}}
