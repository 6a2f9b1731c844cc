"""A decoder-only Transformer in Flax for multimodal token streams: RoPE, RMSNorm, SwiGLU, optional grouped-query
attention, packed-sequence masking, a KV cache for generation, and logically partitioned parameters.

    model = DecoderLM(vocab_size=vocab.size, dim=256, num_layers=4, num_heads=4, num_kv_heads=2, mlp_dim=768)
    logits, _ = model.apply(params, tokens, positions, segment_ids)            # training: [B, T, V]
    cache = init_cache(model, batch=4, max_len=128)
    logits, cache = model.apply(params, tokens, positions, cache=cache)          # prefill, then one id at a time

Attention in training is causal within each packed document (``segment_ids`` equal and non-zero). With a cache,
the new ids' keys and values are written at ``cache['index']``; a query attends to filled cache slots up to its own
slot whose ``cache['valid']`` is set (left-padded prompts mark their padding invalid). Logits and softmax are in
float32 whatever ``dtype``.

Parameters carry logical axis names (``embed``, ``vocab``, ``heads``, ``kv_heads``, ``head_dim``, ``mlp``,
``layers``); :data:`LOGICAL_RULES` maps them onto a mesh with ``data`` and ``model`` axes (tensor parallelism of the
heads, the MLP and the vocabulary), and activations are constrained to ``('batch', 'length', ...)`` with ``batch``
on ``data``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

__all__ = ["DecoderLM", "LOGICAL_RULES", "init_cache", "rope", "param_shardings"]

LOGICAL_RULES = (("batch", "data"), ("length", None), ("embed", None), ("vocab", "model"), ("heads", "model"),
                 ("kv_heads", "model"), ("head_dim", None), ("mlp", "model"), ("act_heads", "model"),
                 ("act_mlp", "model"), ("act_vocab", "model"))


def rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """Rotary position embedding of ``x [B, T, H, Dh]`` at integer ``positions [B, T]`` (pairs of halves)."""
    half = x.shape[-1] // 2
    freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions.astype(jnp.float32)[:, :, None, None] * freq
    sin, cos = jnp.sin(angle), jnp.cos(angle)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class RMSNorm(nn.Module):
    eps: float = 1e-6
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (x.shape[-1],),
                           self.param_dtype)
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return (y * scale.astype(jnp.float32)).astype(x.dtype)


class Proj(nn.Module):
    """``x`` contracted over its last ``len(in_shape)`` axes with a kernel ``in_shape + out_shape`` whose axes carry
    the logical names ``axes`` (``param_dtype`` parameters, ``dtype`` arithmetic)."""

    out_shape: tuple[int, ...]
    axes: tuple[str, ...]
    contract: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    out_dtype: Any = None           # accumulate and return in this dtype (the LM head: float32 logits)

    @nn.compact
    def __call__(self, x):
        in_shape = x.shape[x.ndim - self.contract:]
        fan_in = int(np.prod(in_shape))
        init = nn.initializers.normal(1.0 / np.sqrt(fan_in))
        kernel = self.param("kernel", nn.with_logical_partitioning(init, self.axes), in_shape + self.out_shape,
                            self.param_dtype)
        return jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=self.contract,
                             preferred_element_type=self.out_dtype)


def _dense(features, axes, name, dtype, param_dtype, in_axes=None):
    out = features if isinstance(features, tuple) else (features,)
    return Proj(out, axes, 1 if in_axes is None else len(in_axes), dtype, param_dtype, name=name)


class Attention(nn.Module):
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_base: float
    dtype: Any
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, positions, mask_fn, layer_cache):
        q = _dense((self.num_heads, self.head_dim), ("embed", "heads", "head_dim"), "query", self.dtype, self.param_dtype)(x)
        k = _dense((self.num_kv_heads, self.head_dim), ("embed", "kv_heads", "head_dim"), "key", self.dtype, self.param_dtype)(x)
        v = _dense((self.num_kv_heads, self.head_dim), ("embed", "kv_heads", "head_dim"), "value", self.dtype, self.param_dtype)(x)
        q, k = rope(q, positions, self.rope_base), rope(k, positions, self.rope_base)
        new_cache = None
        if layer_cache is not None:
            index = layer_cache["index"]
            k = jax.lax.dynamic_update_slice_in_dim(layer_cache["k"], k.astype(layer_cache["k"].dtype), index, 1)
            v = jax.lax.dynamic_update_slice_in_dim(layer_cache["v"], v.astype(layer_cache["v"].dtype), index, 1)
            new_cache = {"k": k, "v": v}
        b, t, _, d = q.shape
        groups = self.num_heads // self.num_kv_heads
        qg = q.reshape(b, t, self.num_kv_heads, groups, d)
        scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) / jnp.sqrt(d)
        mask = mask_fn(k.shape[1])                                                   # [B, T, S]
        scores = jnp.where(mask[:, None, None], scores, -1e30)
        probs = jax.nn.softmax(scores, axis=-1)
        probs = jnp.where(mask[:, None, None], probs, 0.0)                            # rows with no key: zeros
        out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v).reshape(b, t, self.num_heads, d)
        out = nn.with_logical_constraint(out, ("batch", "length", "act_heads", "head_dim"))
        y = _dense(x.shape[-1], ("heads", "head_dim", "embed"), "out", self.dtype, self.param_dtype, in_axes=(-2, -1))(out)
        return y, new_cache


class MLP(nn.Module):
    hidden: int
    dtype: Any
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        gate = _dense(self.hidden, ("embed", "mlp"), "gate", self.dtype, self.param_dtype)(x)
        up = _dense(self.hidden, ("embed", "mlp"), "up", self.dtype, self.param_dtype)(x)
        h = nn.with_logical_constraint(nn.silu(gate) * up, ("batch", "length", "act_mlp"))
        return _dense(x.shape[-1], ("mlp", "embed"), "down", self.dtype, self.param_dtype)(h)


class Block(nn.Module):
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    rope_base: float
    dtype: Any
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, positions, mask_fn, layer_cache):
        pd = self.param_dtype
        h, new_cache = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.rope_base, self.dtype, pd,
                                 name="attention")(RMSNorm(param_dtype=pd, name="attention_norm")(x), positions,
                                                   mask_fn, layer_cache)
        x = x + h
        x = x + MLP(self.mlp_dim, self.dtype, pd, name="mlp")(RMSNorm(param_dtype=pd, name="mlp_norm")(x))
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), new_cache


class DecoderLM(nn.Module):
    """Decoder-only Transformer language model over a :class:`~vqjax.lm.MultimodalVocab`'s ids.

    Attributes:
      vocab_size: V (``vocab.size``).
      dim: model width.
      num_layers, num_heads: depth and query heads (``dim`` divisible by ``num_heads``).
      num_kv_heads: key/value heads (grouped-query attention; ``num_heads`` divisible by it); None = num_heads.
      mlp_dim: SwiGLU hidden width.
      rope_base: RoPE frequency base.
      tie_embeddings: output head = input embedding transposed.
      dtype: activation dtype ('float32' or 'bfloat16'); attention scores, softmax and logits stay float32.
      param_dtype: parameter storage dtype ('float32' or 'bfloat16').
      remat: recompute each layer's activations in the backward pass (less memory, one more forward pass).
      vocab_multiple: the embedding and head tables are padded to a multiple of this many rows, so the vocabulary
        axis divides across a model axis (the padded rows are never read, and their logits are cut off).
    """

    vocab_size: int
    dim: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    num_kv_heads: int | None = None
    rope_base: float = 10000.0
    tie_embeddings: bool = False
    dtype: str = "float32"
    vocab_multiple: int = 128
    param_dtype: str = "float32"
    remat: bool = False

    @property
    def padded_vocab(self) -> int:
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    def _check(self):
        for name in ("vocab_size", "dim", "num_layers", "num_heads", "mlp_dim", "vocab_multiple"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"DecoderLM: {name} must be a positive int; got {v!r}")
        kv = self.num_kv_heads or self.num_heads
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"DecoderLM: dim ({self.dim}) must be divisible by num_heads ({self.num_heads}) into "
                             f"an even head size")
        if self.num_heads % kv:
            raise ValueError(f"DecoderLM: num_heads ({self.num_heads}) must be divisible by num_kv_heads ({kv})")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in ("float32", "bfloat16"):
                raise ValueError(f"DecoderLM: {name} must be 'float32' or 'bfloat16'; got {getattr(self, name)!r}")

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array | None = None, *,
                 cache: dict | None = None) -> tuple[jax.Array, dict | None]:
        """Logits float32 ``[B, T, V]`` of the next id after each of ``tokens [B, T]``.

        Args:
          tokens, positions: int ``[B, T]``; positions restart at 0 per document (RoPE).
          segment_ids: int ``[B, T]`` (training, packed rows): attention stays within equal non-zero ids.
          cache: from :func:`init_cache` (generation): ``{'k', 'v'}`` per layer, ``'valid' [B, S]``, ``'index'``;
            the new ids occupy slots ``index .. index + T - 1`` and ``valid`` there is set from ``segment_ids > 0``
            (all True when None).

        Returns:
          ``(logits, new_cache)`` (``new_cache`` None without a cache).
        """
        self._check()
        dtype = jnp.dtype(self.dtype)
        b, t = tokens.shape
        kv = self.num_kv_heads or self.num_heads
        pd = jnp.dtype(self.param_dtype)
        embed = self.param("embedding", nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
                           (self.padded_vocab, self.dim), pd)
        x = jnp.take(embed, tokens, axis=0).astype(dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        new_cache = None
        if cache is None:
            seg = jnp.ones_like(tokens) if segment_ids is None else segment_ids

            def mask_fn(_):
                causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
                return causal[None] & (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0)
        else:
            index = cache["index"]
            now_valid = jnp.ones_like(tokens, bool) if segment_ids is None else segment_ids > 0
            valid = jax.lax.dynamic_update_slice_in_dim(cache["valid"], now_valid, index, 1)
            new_cache = {"valid": valid, "index": index + t}

            def mask_fn(s):
                slot = index + jnp.arange(t)
                return (jnp.arange(s)[None, None, :] <= slot[None, :, None]) & valid[:, None, :]
        for i in range(self.num_layers):
            layer_cache = None if cache is None else {**cache[f"layer_{i}"], "index": cache["index"]}
            block = nn.remat(Block, static_argnums=(3,)) if self.remat else Block    # mask_fn: a Python function
            x, lc = block(self.num_heads, kv, self.dim // self.num_heads, self.mlp_dim, self.rope_base, dtype, pd,
                          name=f"block_{i}")(x, positions, mask_fn, layer_cache)
            if cache is not None:
                new_cache[f"layer_{i}"] = lc
        x = RMSNorm(param_dtype=pd, name="final_norm")(x)
        if self.tie_embeddings:
            logits = jnp.einsum("btd,vd->btv", x, embed.astype(dtype), preferred_element_type=jnp.float32)
        else:
            head = Proj((self.padded_vocab,), ("embed", "vocab"), 1, dtype, pd, jnp.float32, name="head")
            logits = head(x)
        logits = nn.with_logical_constraint(logits, ("batch", "length", "act_vocab"))
        return logits[..., :self.vocab_size], new_cache


def init_cache(model: DecoderLM, batch: int, max_len: int) -> dict:
    """An empty KV cache for ``batch`` sequences of up to ``max_len`` ids (keys/values in the model's dtype)."""
    kv = model.num_kv_heads or model.num_heads
    shape = (batch, max_len, kv, model.dim // model.num_heads)
    dtype = jnp.dtype(model.dtype)
    cache = {f"layer_{i}": {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
             for i in range(model.num_layers)}
    return {**cache, "valid": jnp.zeros((batch, max_len), bool), "index": jnp.int32(0)}


def param_shardings(boxed, mesh: jax.sharding.Mesh, rules=LOGICAL_RULES):
    """``NamedSharding``s of logically partitioned parameters (``boxed``, e.g. ``jax.eval_shape`` of ``init``) on
    ``mesh`` by ``rules``; an axis whose size the mesh axes do not divide (one key/value head on a 2-way model axis)
    stays replicated."""

    specs = nn.logical_to_mesh(nn.get_partition_spec(boxed), rules)

    def fit(leaf, spec):
        shape = leaf.value.shape if isinstance(leaf, nn.LogicallyPartitioned) else leaf.shape
        axes = []
        for size, names in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
            names_t = () if names is None else (names if isinstance(names, tuple) else (names,))
            parts = int(np.prod([mesh.shape[n] for n in names_t])) if names_t else 1
            axes.append(names if size % parts == 0 else None)
        return NamedSharding(mesh, PartitionSpec(*axes))

    return jax.tree.map(fit, boxed, specs, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))

