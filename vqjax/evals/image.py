"""Image tokenizers judged as image coding: PSNR and SSIM per image (SSIM as Wang et al. 2004: an 11-tap Gaussian
window of sigma 1.5, K1 = 0.01, K2 = 0.03, as scikit-image computes it with ``gaussian_weights=True``), and
:func:`evaluate`, which scores a tokenizer artifact on held-out images without the trainer."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.metrics import CodeCounter

__all__ = ["psnr", "ssim", "evaluate"]


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


def evaluate(tok, images, *, batch_size: int = 250) -> list[dict]:
    """An image tokenizer artifact judged as image coding on held-out ``images`` (``[N, H, W, C]`` floats in
    ``[0, 1]`` or uint8): every image through ``tok.decode(tok.encode(...))``. Returns one row: ``codec``,
    ``bits_per_image`` (tokens x log2 vocabulary), ``bits_per_pixel``, mean ``psnr``, ``ssim`` and ``mse``, and the
    codes' ``usage``, ``perplexity`` and ``dead_codes`` over the set.

    Raises:
      ValueError: a tokenizer of another modality, no images, or input the tokenizer refuses.
    """
    if tok.modality != "image":
        raise ValueError(f"vqjax.evals.image.evaluate: tok must be an image tokenizer; got modality {tok.modality!r}")
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if not len(images):
        raise ValueError("vqjax.evals.image.evaluate: images is empty")
    reference = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    levels = tok.codes_shape[-1] if len(tok.codes_shape) == 3 else 1
    counter = CodeCounter(tok.vocab_size, levels)
    sums = {"psnr": 0.0, "ssim": 0.0, "mse": 0.0}
    for start in range(0, len(images), batch_size):
        x = jnp.asarray(reference[start:start + batch_size])
        codes = tok.encode(images[start:start + batch_size])
        counter.update(np.asarray(codes))
        recon = jnp.asarray(tok.decode(codes))
        sums["psnr"] += float(jnp.sum(psnr(x, recon)))
        sums["ssim"] += float(jnp.sum(ssim(x, recon)))
        sums["mse"] += float(jnp.sum(jnp.mean((x - recon) ** 2, axis=(1, 2, 3))))
    bits = math.prod(tok.codes_shape) * math.log2(tok.vocab_size)
    return [{"codec": "vqjax", "bits_per_image": bits, "bits_per_pixel": bits / math.prod(images.shape[1:3]),
             **{k: v / len(images) for k, v in sums.items()}, **counter.result()}]
