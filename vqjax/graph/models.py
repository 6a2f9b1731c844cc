"""Flax models on NodePiece tokens: a node encoder (MLP or Transformer), link-prediction scorers (RotatE,
DistMult), and the per-node embedding baseline.

    enc = NodePieceEncoder(vocab_size=vocab.size, dim=64, kind="mlp")
    emb = enc.apply(params, tokens[ids], distances[ids])          # [B, 64]
    s = score("rotate", h, rel, t)                                # [B]

Scores are "higher is more plausible": DistMult ``<h, r, t>`` (Yang et al. 2015); RotatE ``γ - |h ∘ r - t|_1``
with ``h, t`` complex (first half of the features real, second half imaginary) and ``r`` a unit rotation given by
its phase (Sun et al. 2019).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.graph.nodepiece import CLS, PAD

__all__ = ["SCORERS", "ENCODERS", "NodePieceEncoder", "LinkPredictor", "score", "score_all", "relation_dim"]

SCORERS = ("rotate", "distmult")
ENCODERS = ("mlp", "transformer", "embedding")


def relation_dim(scorer: str, dim: int) -> int:
    """Width of a relation's parameters: ``dim // 2`` phases for RotatE, ``dim`` for DistMult."""
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {SCORERS}; got {scorer!r}")
    return dim // 2 if scorer == "rotate" else dim


def _rotate(h, r):
    half = h.shape[-1] // 2
    re, im = jnp.cos(r), jnp.sin(r)
    return h[..., :half] * re - h[..., half:] * im, h[..., :half] * im + h[..., half:] * re


def score(scorer: str, h: jax.Array, r: jax.Array, t: jax.Array, *, gamma: float = 12.0) -> jax.Array:
    """Plausibility of triples with embeddings ``h, t`` ``[..., D]`` and relation parameters ``r`` (broadcasting)."""
    if scorer == "distmult":
        return jnp.sum(h * r * t, axis=-1)
    if scorer == "rotate":
        half = h.shape[-1] // 2
        re, im = _rotate(h, r)
        d = jnp.sqrt((re - t[..., :half]) ** 2 + (im - t[..., half:]) ** 2 + 1e-12)
        return gamma - jnp.sum(d, axis=-1)
    raise ValueError(f"scorer must be one of {SCORERS}; got {scorer!r}")


def score_all(scorer: str, h: jax.Array, r: jax.Array, entities: jax.Array, *, gamma: float = 12.0,
              chunk: int = 4096) -> jax.Array:
    """``[B, N]`` scores of ``(h_b, r_b, e)`` for every entity ``e`` of ``entities`` ``[N, D]``, in entity
    chunks (a head query is a tail query with the inverse relation: see :meth:`LinkPredictor.relation`)."""
    n = entities.shape[0]
    pad = (-n) % min(chunk, n)
    ents = jnp.pad(entities, ((0, pad), (0, 0))).reshape(-1, min(chunk, n), entities.shape[-1])

    def one(block):
        return score(scorer, h[:, None], r[:, None], block[None], gamma=gamma)

    out = jax.lax.map(one, ents)                                  # [chunks, B, chunk]
    return jnp.moveaxis(out, 0, 1).reshape(h.shape[0], -1)[:, :n]


class NodePieceEncoder(nn.Module):
    """A node's NodePiece tokens ``[B, k + m]`` and anchor distances ``[B, k]`` -> embedding ``[B, dim]``.

    Anchor positions add a distance embedding (``NOTHING``'s distance ``-1`` has its own row; distances beyond
    ``max_distance`` share the last). ``kind='mlp'``: a 2-layer MLP over the concatenated token vectors (the
    NodePiece default); ``kind='transformer'``: a CLS token and ``num_layers`` pre-norm self-attention blocks over
    the tokens (PAD masked), pooled at CLS.

    Attributes:
      vocab_size: NodePiece vocabulary size (``NodePieceVocab.size``).
      dim: output width; hidden: MLP width (default ``4 * dim``).
      kind: 'mlp' or 'transformer'; num_layers, num_heads: Transformer shape.
      max_distance: distances embedded separately up to this hop count.
      dtype, param_dtype: compute and storage dtypes (the embedding comes back in float32).
    """

    vocab_size: int
    dim: int
    kind: str = "mlp"
    hidden: int | None = None
    num_layers: int = 2
    num_heads: int = 4
    max_distance: int = 10
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, distances: jax.Array) -> jax.Array:
        k = distances.shape[-1]
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        embed = nn.Embed(self.vocab_size, self.dim, name="tokens", **dt)
        x = embed(tokens)
        d = jnp.where(distances < 0, self.max_distance + 1, jnp.minimum(distances, self.max_distance))
        dist = nn.Embed(self.max_distance + 2, self.dim, name="distances", **dt)(d)
        x = x.at[..., :k, :].add(dist)
        hidden = self.hidden or 4 * self.dim
        if self.kind == "mlp":
            h = x.reshape(*x.shape[:-2], -1)
            return nn.Dense(self.dim, **dt)(nn.gelu(nn.Dense(hidden, **dt)(h))).astype(jnp.float32)
        if self.kind != "transformer":
            raise ValueError(f"kind must be 'mlp' or 'transformer'; got {self.kind!r}")
        cls = embed(jnp.full(tokens.shape[:-1] + (1,), CLS))
        x = jnp.concatenate([cls, x], axis=-2)
        keep = jnp.concatenate([jnp.ones(tokens.shape[:-1] + (1,), bool), tokens != PAD], axis=-1)
        mask = nn.make_attention_mask(keep, keep)
        for _ in range(self.num_layers):
            x = x + nn.MultiHeadDotProductAttention(self.num_heads, **dt)(nn.LayerNorm(**dt)(x), mask=mask)
            y = nn.LayerNorm(**dt)(x)
            x = x + nn.Dense(self.dim, **dt)(nn.gelu(nn.Dense(hidden, **dt)(y)))
        return nn.LayerNorm(dtype=jnp.float32, param_dtype=self.param_dtype)(x[..., 0, :])


class LinkPredictor(nn.Module):
    """Entity encoder + relation parameters for link prediction.

    ``encoder='embedding'`` is the per-node baseline (one ``dim`` vector per entity); ``'mlp'`` and
    ``'transformer'`` embed entities from their NodePiece tokens (passed to every call, not stored), so the
    parameter count does not grow with the number of entities. Relations have ``2 R`` parameter rows: row
    ``r + R`` is the inverse of ``r`` and answers head queries ``(?, r, t)`` as tail queries ``(t, r + R, ?)``.

    Attributes:
      num_entities, num_relations: sizes (``num_relations`` without inverses).
      dim: entity width (even for RotatE).
      scorer: 'rotate' or 'distmult'.
      encoder: one of :data:`ENCODERS`.
      vocab_size: the NodePiece vocabulary size (token encoders).
      num_layers, num_heads, max_distance: token-encoder settings.
      gamma: RotatE margin.
      dtype, param_dtype: the token encoder's compute dtype and every parameter's storage dtype (scores are
        computed in float32).
    """

    num_entities: int
    num_relations: int
    dim: int
    scorer: str = "rotate"
    encoder: str = "mlp"
    vocab_size: int = 0
    num_layers: int = 2
    num_heads: int = 4
    max_distance: int = 10
    gamma: float = 12.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}; got {self.encoder!r}")
        if self.scorer == "rotate" and self.dim % 2:
            raise ValueError(f"dim must be even for RotatE (complex embeddings); got {self.dim}")
        if self.encoder == "embedding":
            self.table = nn.Embed(self.num_entities, self.dim, embedding_init=nn.initializers.normal(0.1),
                                  dtype=jnp.float32, param_dtype=self.param_dtype)
        else:
            self.nodes = NodePieceEncoder(self.vocab_size, self.dim, self.encoder, num_layers=self.num_layers,
                                          num_heads=self.num_heads, max_distance=self.max_distance, dtype=self.dtype,
                                          param_dtype=self.param_dtype)
        init = (nn.initializers.uniform(2 * jnp.pi) if self.scorer == "rotate" else nn.initializers.normal(0.1))
        self.relations = self.param("relations", init, (2 * self.num_relations, relation_dim(self.scorer,
                                                                                           self.dim)),
                                    self.param_dtype)

    def entities(self, ids: jax.Array, tokens: jax.Array | None = None, distances: jax.Array | None = None):
        """Embeddings ``[..., dim]`` of entity ``ids`` (token encoders gather their rows of ``tokens``)."""
        if self.encoder == "embedding":
            return self.table(ids)
        return self.nodes(tokens[ids], distances[ids])

    def relation(self, rel: jax.Array, inverse: bool | jax.Array = False) -> jax.Array:
        return self.relations[rel + jnp.where(inverse, self.num_relations, 0)].astype(jnp.float32)

    def with_negatives(self, queries, rels, answers, negatives, tokens=None, distances=None):
        """Training scores: ``[B]`` of the true triples ``(queries, rels, answers)`` and ``[B, M]`` of the same
        queries against ``M`` shared negative entities."""
        q, r = self.entities(queries, tokens, distances), self.relations[rels].astype(jnp.float32)
        a, n = self.entities(answers, tokens, distances), self.entities(negatives, tokens, distances)
        return (score(self.scorer, q, r, a, gamma=self.gamma),
                score(self.scorer, q[:, None], r[:, None], n[None], gamma=self.gamma))

    def all_entities(self, tokens=None, distances=None, chunk: int = 4096):
        """Embeddings of every entity ``[N, dim]`` (token encoders run in chunks of ``chunk`` entities)."""
        if self.encoder == "embedding":
            return self.table.embedding.astype(jnp.float32)
        ids = jnp.arange(self.num_entities)
        size = min(chunk, self.num_entities)
        pad = (-self.num_entities) % size
        blocks = jnp.pad(ids, (0, pad)).reshape(-1, size)
        return jnp.concatenate([self.entities(b, tokens, distances) for b in blocks])[:self.num_entities]

    def __call__(self, heads, rels, tails, tokens=None, distances=None):
        """Scores of triples (ids ``[B]``), for initialisation and simple use."""
        h, t = self.entities(heads, tokens, distances), self.entities(tails, tokens, distances)
        return score(self.scorer, h, self.relation(rels), t, gamma=self.gamma)
