"""A 1D image tokenizer whose every prefix decodes: images to an ordered sequence of ``K`` tokens.

The encoder cuts ``[B, H, W, C]`` images into ``p x p`` patches, embeds them, appends ``K`` learned latent tokens
and runs a Transformer over both (TiTok, Yu et al. 2024); the latent tokens' outputs, projected to the quantizer's
width, are quantized by any :mod:`vqjax.nn` quantizer into ``K`` codes. Attention among the latent tokens is
causal (token ``i`` reads every patch and the tokens before it, and the patches never read the tokens, as the
registers of FlexTok, Bachmann et al. 2025), so the first ``k`` codes do not depend on the later ones: the codes
of a ``k``-token encoding are the first ``k`` codes of the full one.

The decoder reads the quantized tokens, with every token past the image's length replaced by one learned
``dropped`` embedding, together with one learned mask token per patch; a Transformer over both writes each
patch's pixels from its mask token's output. Training draws each image's length ``k`` from a log-uniform (or
uniform) distribution on ``[min_tokens, K]`` and decodes from its first ``k`` tokens only (nested or tail dropout, Rippel et
al. 2014; One-D-Piece, FlexTok), so the first tokens learn the coarse picture, later ones the detail, and every
prefix decodes. The shapes never change with ``k``: one compiled function decodes every length (``lengths [B]``).

With ``linear_path`` both halves also have a linear map beside the attention: the whole image into every token
(encoder) and every kept token into the whole image (decoder), added to what the Transformers write. Trained with
nested dropout, that map alone is an ordered linear code (the principal components, as Rippel et al. 2014 show),
which the routes through attention learn slowly from scratch; with it a small model reaches a useful code in
hundreds of steps instead of thousands, and the Transformers learn what the linear code misses. It holds
``2 H W C K latent_dim`` parameters: meant for small images (digits, crops), not for 256x256 ones.

    model = image_1d_tokenizer(image_size=(28, 28), image_channels=1, patch_size=4, num_tokens=32, ...)
    codes = model.apply(variables, x, method=model.encode)                      # [B, 32]
    recon = model.apply(variables, codes, jnp.full((B,), 8), method=model.decode)  # from the first 8 codes
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vqjax.models import remat as remat_lib

__all__ = ["patchify", "unpatchify", "TransformerBlock", "TokenEncoder", "TokenDecoder", "Image1DTokenizer",
           "sample_lengths", "prefix_mask"]


def patchify(x: jax.Array, patch: int) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, (H / p) (W / p), p p C]``: non-overlapping patches in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(t: jax.Array, patch: int, height: int, width: int) -> jax.Array:
    """The inverse of :func:`patchify`: ``[B, N, p p C]`` -> ``[B, H, W, C]``."""
    b, _, d = t.shape
    c = d // (patch * patch)
    t = t.reshape(b, height // patch, width // patch, patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(b, height, width, c)


LENGTH_SAMPLING = ("log_uniform", "uniform")


def sample_lengths(key: jax.Array, batch: int, min_tokens: int, num_tokens: int,
                   sampling: str = "log_uniform") -> jax.Array:
    """int32 ``[batch]`` lengths in ``[min_tokens, num_tokens]``. ``'log_uniform'``: ``floor(exp(u))`` with ``u``
    uniform on ``[log min_tokens, log (num_tokens + 1))``, so every octave of lengths is trained as often (the
    short prefixes most often per length); ``'uniform'``: every length equally often (the long prefixes get more
    of the training, as One-D-Piece's tail drop)."""
    if sampling == "uniform":
        return jax.random.randint(key, (batch,), min_tokens, num_tokens + 1).astype(jnp.int32)
    u = jax.random.uniform(key, (batch,), minval=np.log(min_tokens), maxval=np.log(num_tokens + 1))
    return jnp.clip(jnp.floor(jnp.exp(u)), min_tokens, num_tokens).astype(jnp.int32)


def prefix_mask(lengths: jax.Array, num_tokens: int) -> jax.Array:
    """bool ``[B, K]``: token ``i`` of example ``b`` is kept (``i < lengths[b]``)."""
    return jnp.arange(num_tokens)[None, :] < jnp.asarray(lengths, jnp.int32)[:, None]


class TransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention (``num_heads`` heads, softmax in float32, an optional bool ``mask [L, L]``:
    query ``i`` reads key ``j`` where ``mask[i, j]``) and a 4x GELU MLP, each added to its input."""

    width: int
    num_heads: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, length, _ = h.shape
        head = self.width // self.num_heads
        a = nn.LayerNorm(**dt)(h)
        qkv = nn.Dense(3 * self.width, **dt)(a).reshape(b, length, 3, self.num_heads, head)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) / np.sqrt(head)
        if mask is not None:
            logits = jnp.where(mask[None, None], logits, -1e30)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, length, self.width)
        h = h + nn.Dense(self.width, **dt)(out)
        m = nn.LayerNorm(**dt)(h)
        return h + nn.Dense(self.width, **dt)(nn.gelu(nn.Dense(4 * self.width, **dt)(m)))


def _embedding(module: nn.Module, name: str, shape: tuple, param_dtype) -> jax.Array:
    return module.param(name, nn.initializers.normal(0.02), shape, param_dtype)


class TokenEncoder(nn.Module):
    """Images ``[B, H, W, C]`` in ``[0, 1]`` -> ``[B, K, latent_dim]`` latent token vectors (module docstring).

    Attributes:
      patch_size: side ``p`` of the square patches (divides ``H`` and ``W``).
      num_tokens: ``K``, the latent tokens.
      width, num_layers, num_heads: the Transformer's width, blocks and heads.
      latent_dim: output width (the quantizer's ``dim``); the projection computes in float32.
      dtype, param_dtype: compute and storage dtypes.
      remat: recompute each block's activations in the backward pass.
      linear_path: add a linear map of the whole image to every token (module docstring).
    """

    patch_size: int
    num_tokens: int
    width: int
    num_layers: int
    num_heads: int
    latent_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False
    linear_path: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        patches = patchify(x.astype(self.dtype) * 2.0 - 1.0, self.patch_size)
        b, n, _ = patches.shape
        h = nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype)(patches)
        h = h + _embedding(self, "patch_positions", (n, self.width), self.param_dtype).astype(self.dtype)
        tokens = _embedding(self, "latent_tokens", (self.num_tokens, self.width), self.param_dtype)
        h = jnp.concatenate([h, jnp.broadcast_to(tokens.astype(self.dtype), (b,) + tokens.shape)], axis=1)
        # patches read patches; latent token i reads every patch and the tokens 0..i
        rows = jnp.arange(n + self.num_tokens)
        mask = (rows[None, :] < n) | ((rows[:, None] >= n) & (rows[None, :] <= rows[:, None]))
        block = remat_lib.block(TransformerBlock, self.remat)
        for _ in range(self.num_layers):
            h = block(self.width, self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype)(h, mask)
        h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(h[:, n:])
        z = nn.Dense(self.latent_dim, dtype=jnp.float32, param_dtype=self.param_dtype)(h)
        if self.linear_path:
            flat = (x.astype(jnp.float32) * 2.0 - 1.0).reshape(b, -1)
            z = z + nn.Dense(self.num_tokens * self.latent_dim, dtype=jnp.float32, param_dtype=self.param_dtype,
                             name="linear_path")(flat).reshape(b, self.num_tokens, self.latent_dim)
        return z


class TokenDecoder(nn.Module):
    """``[B, K, latent_dim]`` token vectors and ``lengths [B]`` -> images ``[B, H, W, C]`` (values near ``[0, 1]``).

    Tokens at or past ``lengths[b]`` are replaced by the learned ``dropped`` embedding (and by zeros in the linear
    path), so the image decodes from its first ``lengths[b]`` tokens alone. As :class:`vqjax.models.Decoder`, the
    last layer is explicit (``LAST_LAYER``, :meth:`apply_last_layer`; the features it reads are the patch features
    and the linear path's output) for the VQGAN adaptive weight.

    Attributes:
      image_size: ``(H, W)``.
      image_channels: ``C``.
      patch_size, width, num_layers, num_heads: as :class:`TokenEncoder`.
      dtype, param_dtype, remat, linear_path: as :class:`TokenEncoder` (the linear path here maps the kept tokens
        to the whole image).
    """

    image_size: tuple[int, int]
    image_channels: int
    patch_size: int
    width: int
    num_layers: int
    num_heads: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False
    linear_path: bool = False

    LAST_LAYER = "to_pixels"

    def last_layer(self, **kwargs) -> nn.Dense:
        """The final projection (features -> patch pixels), in float32."""
        return nn.Dense(self.patch_size ** 2 * self.image_channels, dtype=jnp.float32,
                        param_dtype=self.param_dtype, **kwargs)

    def to_images(self, out: jax.Array) -> jax.Array:
        """The last layer's output ``[B, N, p p C]`` to images: unpatchified, ``(out + 1) / 2``."""
        return (unpatchify(out, self.patch_size, *self.image_size) + 1.0) * 0.5

    def apply_last_layer(self, last_params, features) -> jax.Array:
        """Images from ``features = (patch features, linear part)`` and the last layer's parameters
        ``last_params`` (a pure function of both)."""
        h, linear = features
        return self.to_images(self.last_layer(parent=None).apply({"params": last_params}, h) + linear)

    @nn.compact
    def __call__(self, values: jax.Array, lengths: jax.Array, *, return_features: bool = False):
        b, k, _ = values.shape
        n = (self.image_size[0] // self.patch_size) * (self.image_size[1] // self.patch_size)
        t = nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype)(values.astype(self.dtype))
        dropped = _embedding(self, "dropped", (self.width,), self.param_dtype).astype(self.dtype)
        t = jnp.where(prefix_mask(lengths, k)[..., None], t, dropped)
        t = t + _embedding(self, "token_positions", (k, self.width), self.param_dtype).astype(self.dtype)
        queries = (_embedding(self, "mask_token", (self.width,), self.param_dtype)
                   + _embedding(self, "patch_positions", (n, self.width), self.param_dtype)).astype(self.dtype)
        h = jnp.concatenate([jnp.broadcast_to(queries, (b, n, self.width)), t], axis=1)
        block = remat_lib.block(TransformerBlock, self.remat)
        for _ in range(self.num_layers):
            h = block(self.width, self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype)(h)
        h = nn.LayerNorm(dtype=jnp.float32, param_dtype=self.param_dtype)(h[:, :n])
        linear = jnp.zeros((), jnp.float32)
        if self.linear_path:
            kept = jnp.where(prefix_mask(lengths, k)[..., None], values.astype(jnp.float32), 0.0).reshape(b, -1)
            linear = nn.Dense(n * self.patch_size ** 2 * self.image_channels, dtype=jnp.float32,
                              param_dtype=self.param_dtype, name="linear_path")(kept).reshape(b, n, -1)
        images = self.to_images(self.last_layer(name=self.LAST_LAYER)(h) + linear)
        return (images, (h, linear)) if return_features else images


class Image1DTokenizer(nn.Module):
    """Token encoder -> quantizer -> token decoder, trained with nested dropout (module docstring).

    ``__call__(x, train)`` returns ``(reconstruction, Quantized)``: in training each image decodes from its first
    ``k`` tokens, ``k`` drawn by :func:`sample_lengths` (``length_sampling``) from the ``'vq'`` random stream; otherwise (or with
    ``lengths`` given) from the first ``lengths[b]``, all ``K`` by default. ``encode(x)`` returns the int32 codes
    ``[B, K]`` (``[B, K, L]`` for multi-codebook quantizers), whose first ``k`` are the ``k``-token encoding;
    ``decode(codes, lengths)`` the images from each row's first ``lengths[b]`` codes (the rest are ignored).

    Attributes:
      encoder, quantizer, decoder: the halves and any :mod:`vqjax.nn` quantizer of width ``encoder.latent_dim``.
      min_tokens: the shortest prefix trained (and decodable); ``encoder.num_tokens`` the longest.
      length_sampling: how training draws each image's length (:func:`sample_lengths`).
    """

    encoder: TokenEncoder
    quantizer: nn.Module
    decoder: TokenDecoder
    min_tokens: int = 1
    length_sampling: str = "log_uniform"

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    def _lengths(self, batch: int, lengths, train: bool) -> jax.Array:
        if lengths is not None:
            return jnp.broadcast_to(jnp.asarray(lengths, jnp.int32), (batch,))
        if train:
            return sample_lengths(self.make_rng("vq"), batch, self.min_tokens, self.num_tokens, self.length_sampling)
        return jnp.full((batch,), self.num_tokens, jnp.int32)

    def __call__(self, x: jax.Array, *, train: bool = False, return_features: bool = False,
                 apply_update: bool | jax.Array = True, lengths: jax.Array | None = None):
        """``(reconstruction, Quantized)``, or ``(reconstruction, Quantized, decoder features)`` with
        ``return_features``; ``apply_update=False`` holds the codebook statistics pending (gradient accumulation)."""
        q = self.quantizer(self.encoder(x), train=train, apply_update=apply_update)
        out = self.decoder(q.values, self._lengths(x.shape[0], lengths, train), return_features=return_features)
        if return_features:
            recon, h = out
            return recon, q, h
        return out, q

    def encode(self, x: jax.Array) -> jax.Array:
        return self.quantizer.encode(self.encoder(x))

    def decode(self, codes: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        return self.decoder(self.quantizer.decode(codes), self._lengths(codes.shape[0], lengths, False))

    def last_layer_params(self, params) -> dict:
        """The decoder's last-layer parameters within this model's ``params``."""
        return params["decoder"][TokenDecoder.LAST_LAYER]
