"""Evaluation measures for image tokenizers: PSNR, SSIM and code statistics over a whole split."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["psnr", "ssim", "CodeCounter"]


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
