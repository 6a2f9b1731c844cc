"""SASRec (Kang & McAuley 2018), the sequential recommender over item ids: self-attention over item embeddings with
learned positions, causal, the next item scored by the dot product with the (tied) item embeddings. (Generative
retrieval over semantic IDs, its counterpart, is :mod:`vqjax.lm.retrieval`.)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["SASRec"]


class SASRec(nn.Module):
    """SASRec: causal self-attention over a user's items (Kang & McAuley 2018), pre-LayerNorm blocks.

    ``__call__(items, train)`` takes int ``[B, T]`` items (-1 = padding, left) and returns float32 ``[B, T, dim]``
    states; :meth:`scores` turns states into ``[..., num_items]`` scores against the tied item embeddings.

    Attributes:
      num_items: N.
      dim: width.
      num_layers, num_heads: Transformer depth and heads.
      max_len: longest history (learned positions).
      dropout: dropout rate on embeddings, attention and feed-forward outputs.
      dtype, param_dtype: compute and storage dtypes (states and scores come back in float32).
    """

    num_items: int
    dim: int
    num_layers: int
    num_heads: int
    max_len: int
    dropout: float = 0.2
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        pd, dt = self.param_dtype, dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.item_embedding = self.param("item_embedding", nn.initializers.normal(0.02), (self.num_items + 1, self.dim),
                                         pd)
        self.position_embedding = self.param("position_embedding", nn.initializers.normal(0.02),
                                             (self.max_len, self.dim), pd)
        self.attn = [nn.MultiHeadDotProductAttention(self.num_heads, dropout_rate=self.dropout, name=f"attn_{i}",
                                                     **dt) for i in range(self.num_layers)]
        self.ln_attn = [nn.LayerNorm(name=f"ln_attn_{i}", **dt) for i in range(self.num_layers)]
        self.ln_ffn = [nn.LayerNorm(name=f"ln_ffn_{i}", **dt) for i in range(self.num_layers)]
        self.ffn_in = [nn.Dense(self.dim, name=f"ffn_in_{i}", **dt) for i in range(self.num_layers)]
        self.ffn_out = [nn.Dense(self.dim, name=f"ffn_out_{i}", **dt) for i in range(self.num_layers)]
        self.final_ln = nn.LayerNorm(dtype=jnp.float32, param_dtype=pd)
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, items: jax.Array, *, train: bool = False) -> jax.Array:
        t = items.shape[1]
        if t > self.max_len:
            raise ValueError(f"SASRec: histories hold at most max_len={self.max_len} items; got {t}")
        real = items >= 0
        x = (self.item_embedding[items + 1] * jnp.sqrt(float(self.dim)) +
             self.position_embedding[self.max_len - t:]).astype(self.dtype)
        x = self.drop(x, deterministic=not train) * real[..., None]
        mask = (jnp.tril(jnp.ones((t, t), bool))[None] & real[:, None, :])[:, None]
        for i in range(self.num_layers):
            h = self.ln_attn[i](x)
            x = x + self.drop(self.attn[i](h, h, mask=mask, deterministic=not train), deterministic=not train)
            h = self.ln_ffn[i](x)
            x = x + self.drop(self.ffn_out[i](nn.gelu(self.ffn_in[i](h))), deterministic=not train)
            x = x * real[..., None]
        return self.final_ln(x)

    def scores(self, states: jax.Array) -> jax.Array:
        """Scores ``states.shape[:-1] + (num_items,)`` of every item as the next one."""
        return states.astype(jnp.float32) @ self.item_embedding[1:].astype(jnp.float32).T
