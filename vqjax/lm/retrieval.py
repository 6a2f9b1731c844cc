"""Generative retrieval (TIGER, Rajput et al. 2023) on the decoder-only LM: a user's history is the concatenation of
its items' semantic-ID tuples (:func:`item_tokens`: level ``t``'s code ``c`` is token ``1 + offset_t + c``, 0 is
padding), a :class:`vqjax.lm.DecoderLM` predicts the next item's tuple token by token, and :func:`beam_search`
decodes the ``beam`` most likely tuples, each step constrained by an :class:`IdTrie` of the valid tuples, so every
result is an item of the catalogue, ranked by its log-probability. :func:`with_new_items` lets items the model
never saw in training into the list through the tuples it generates (TIGER's cold-start retrieval).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.lm.model import init_cache

__all__ = ["IdTrie", "build_trie", "trie_children", "item_tokens", "token_offsets", "beam_search", "with_new_items"]


class IdTrie(NamedTuple):
    """The valid code tuples as a trie, one sorted table per level (memory O(items x levels), lookups by binary
    search): at level ``t`` a node ``p`` has child code ``c`` iff ``p * K_t + c`` is in ``keys[t]``; the child is
    node ``children[t][i]`` of level ``t + 1`` (at the last level: the item)."""

    keys: tuple[jax.Array, ...]
    children: tuple[jax.Array, ...]


def build_trie(codes: np.ndarray, level_sizes: Sequence[int]) -> IdTrie:
    """The trie of ``codes [N, L]`` (item ``i``'s tuple is row ``i``), codes of level ``t`` in ``[0, K_t)``.

    Raises:
      ValueError: codes outside their level, two items with one tuple, or a table too large for int32 keys.
    """
    codes = np.asarray(codes, np.int64)
    sizes = [int(k) for k in level_sizes]
    if codes.ndim != 2 or codes.shape[1] != len(sizes) or codes.shape[0] == 0:
        raise ValueError(f"build_trie: codes must be [N > 0, {len(sizes)}]; got {codes.shape}")
    if (codes < 0).any() or (codes >= np.asarray(sizes)).any():
        raise ValueError(f"build_trie: codes of level t must lie in [0, K_t) for K = {sizes}")
    parent = np.zeros(codes.shape[0], np.int64)
    keys, children = [], []
    for t, k in enumerate(sizes):
        key = parent * k + codes[:, t]
        if key.max() >= 2 ** 31:
            raise ValueError(f"build_trie: level {t} needs keys beyond int32 ({int(key.max())})")
        uniq, inverse = np.unique(key, return_inverse=True)
        keys.append(jnp.asarray(uniq, jnp.int32))
        if t == len(sizes) - 1:
            if uniq.size != codes.shape[0]:
                raise ValueError(f"build_trie: {codes.shape[0] - uniq.size} item(s) share a tuple with another; IDs "
                                 f"must be collision-free (disambiguate them first)")
            item = np.empty(uniq.size, np.int64)
            item[inverse.reshape(-1)] = np.arange(codes.shape[0])
            children.append(jnp.asarray(item, jnp.int32))
        else:
            children.append(jnp.arange(uniq.size, dtype=jnp.int32))
        parent = inverse.reshape(-1)
    return IdTrie(tuple(keys), tuple(children))


def trie_children(trie: IdTrie, level: int, size: int, nodes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(valid bool [M, K], child int32 [M, K])`` for nodes ``[M]`` of level ``level`` (``size`` = its K)."""
    keys = trie.keys[level]
    want = nodes[:, None] * size + jnp.arange(size, dtype=jnp.int32)[None]
    idx = jnp.clip(jnp.searchsorted(keys, want), 0, keys.shape[0] - 1)
    valid = keys[idx] == want
    return valid, jnp.where(valid, trie.children[level][idx], 0)


def token_offsets(level_sizes: Sequence[int]) -> tuple[int, ...]:
    """Each level's first token id (token 0 is padding)."""
    return tuple(int(v) for v in 1 + np.concatenate([[0], np.cumsum(level_sizes)[:-1]]))


def item_tokens(codes: np.ndarray, items: np.ndarray, level_sizes: Sequence[int]) -> np.ndarray:
    """int32 ``items.shape[:-1] + (W * L,)`` tokens of item rows ``items [..., W]`` (-1 = padding -> L zeros)."""
    offsets = np.asarray(token_offsets(level_sizes), np.int32)
    items = np.asarray(items)
    tok = codes[np.maximum(items, 0)] + offsets
    tok = np.where(items[..., None] >= 0, tok, 0)
    return tok.reshape(items.shape[:-1] + (-1,)).astype(np.int32)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def beam_search(model, params, trie: IdTrie, tokens: jax.Array, level_sizes: tuple[int, ...], beam: int
                ) -> tuple[jax.Array, jax.Array]:
    """The ``beam`` most likely valid next items after each history, by trie-constrained beam search.

    Args:
      model: a :class:`vqjax.lm.DecoderLM` over :func:`item_tokens` (vocab ``1 + sum(level_sizes)``).
      params: its parameters.
      trie: :func:`build_trie` of the catalogue's tuples.
      tokens: int32 ``[B, T]`` histories, left-padded with 0 (each holds at least one item).
      level_sizes: codes per level.
      beam: beam width (results per history).

    Returns:
      ``(items int32 [B, beam], log-probabilities [B, beam])``, best first; ``-1`` and ``-inf`` where fewer than
      ``beam`` items exist. At each level only codes that continue a valid tuple are scored (the distribution is
      renormalised over them), so every returned item is in the catalogue.
    """
    b, t = tokens.shape
    levels = len(level_sizes)
    offsets = token_offsets(level_sizes)
    seg = (tokens > 0).astype(jnp.int32)
    pos = jnp.maximum(jnp.cumsum(seg, axis=1) - 1, 0)
    cache = init_cache(model, b, t + levels)
    logits, cache = model.apply({"params": params}, tokens, pos, seg, cache=cache)
    logits = jnp.repeat(logits[:, -1], beam, axis=0)
    cache = jax.tree.map(lambda a: jnp.repeat(a, beam, axis=0) if a.ndim else a, cache)
    next_pos = jnp.repeat(pos[:, -1] + 1, beam)
    scores = jnp.tile(jnp.where(jnp.arange(beam) == 0, 0.0, -jnp.inf), (b, 1))
    nodes = jnp.zeros((b * beam,), jnp.int32)
    for level, size in enumerate(level_sizes):
        valid, child = trie_children(trie, level, size, nodes)
        lo = offsets[level]
        masked = jnp.where(valid, logits[:, lo:lo + size], -1e30)
        lp = jnp.where(valid, jax.nn.log_softmax(masked, axis=-1), -jnp.inf)
        cand = (scores.reshape(-1, 1) + lp).reshape(b, beam * size)
        scores, idx = jax.lax.top_k(cand, beam)
        parent = (jnp.arange(b)[:, None] * beam + idx // size).reshape(-1)
        code = (idx % size).reshape(-1)
        nodes = child[parent, code]
        if level < levels - 1:
            cache = jax.tree.map(lambda a: a[parent] if a.ndim else a, cache)
            step_tok = (lo + code)[:, None]
            out, cache = model.apply({"params": params}, step_tok, (next_pos + level)[:, None], cache=cache)
            logits = out[:, 0]
    items = jnp.where(jnp.isfinite(scores), nodes.reshape(b, beam), -1)
    return items, scores


def with_new_items(items: np.ndarray, codes: np.ndarray, new: np.ndarray, *, k: int, max_new: int,
                   prefix_len: int | None = None) -> np.ndarray:
    """TIGER's cold-start retrieval: the first ``k`` of generated ``items [B, beam]`` (best first, -1 = none),
    each followed by the new items (``new`` bool ``[N]``: never seen in training) whose codes share its first
    ``prefix_len`` levels (default ``L' - 1``), at most ``max_new`` such items per list (the ``epsilon * k`` of
    Rajput et al. 2023).

    A model never generates the exact tuple of an item it was not trained on, but it does generate its neighbours';
    this puts the new items sharing their prefix (their semantic-ID cluster) next to them. ``max_new=0`` returns
    ``items[:, :k]``.

    Returns:
      int32 ``[B, k]`` (-1 where fewer than ``k`` items exist).
    """
    items = np.asarray(items)
    out = np.full((items.shape[0], k), -1, np.int32)
    if max_new <= 0:
        out[:, :min(k, items.shape[1])] = items[:, :k]
        return out
    prefix_len = codes.shape[1] - 1 if prefix_len is None else int(prefix_len)
    if not 1 <= prefix_len <= codes.shape[1]:
        raise ValueError(f"with_new_items: prefix_len must lie in [1, {codes.shape[1]}]; got {prefix_len}")
    table: dict[bytes, list[int]] = {}
    for i in np.flatnonzero(new):
        table.setdefault(np.ascontiguousarray(codes[i, :prefix_len]).tobytes(), []).append(int(i))
    for b, row in enumerate(items):
        ranked, taken, added = [], set(), 0
        for item in row:
            if item < 0 or len(ranked) >= k:
                break
            if item not in taken:
                ranked.append(int(item))
                taken.add(int(item))
            for extra in table.get(np.ascontiguousarray(codes[item, :prefix_len]).tobytes(), ()):
                if added < max_new and extra not in taken and len(ranked) < k:
                    ranked.append(extra)
                    taken.add(extra)
                    added += 1
        out[b, :len(ranked)] = ranked
    return out
