"""Memory-bounded nearest-code search over a codebook, for l2 and cosine metrics.

The search never materialises the ``N x K`` distance matrix: it scans the codebook in chunks of ``chunk_size``
codes keeping a running minimum (or a running top-k), and on a single device it also walks the queries in blocks
of ``block_rows`` rows so that each ``block_rows x chunk_size`` tile of distances stays cache-sized. Peak memory is
``O(block_rows * chunk_size + K * D)``. Under a device mesh the rows are not blocked (each device already holds
only its shard of the batch), so the peak per device is ``O(N / devices * chunk_size + K * D)``.

Distances are computed in float32 whatever the input dtype, as ``|c|² - 2 z·c`` (l2, then ``+ |z|²``) or
``-ẑ·ĉ`` (cosine, then ``+ 1``). Ties resolve to the lowest code index, exactly as ``jnp.argmin`` on the dense
matrix does.

The same chunk layout (:func:`codebook_chunks`, :func:`chunk_scores`) drives the chunked softmax terms in
:mod:`vqjax.regularizers`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vqjax import checks

__all__ = [
    "METRICS",
    "SearchResult",
    "CodebookChunks",
    "nearest_code",
    "dense_distances",
    "l2_normalize",
    "prepare_queries",
    "codebook_chunks",
    "chunk_scores",
    "default_chunk_size",
    "rows_like",
    "smallest_k",
    "tile_top_k",
]

METRICS = ("l2", "cosine")
_TILE_ELEMENTS = 1 << 20  # distances held per tile: 1M float32 = 4 MiB (cache-sized; measured fastest)
_MAX_CHUNK = 4096


class SearchResult(NamedTuple):
    """Result of :func:`nearest_code`.

    Attributes:
      codes: int32 ``z.shape[:-1]`` (or ``z.shape[:-1] + (top_k,)``, nearest first).
      distances: float32, same shape: squared l2 distance (``metric='l2'``) or ``1 - cosine`` (``'cosine'``).
    """

    codes: jax.Array
    distances: jax.Array


class CodebookChunks(NamedTuple):
    """A codebook laid out for chunked scans: ``score(x, j) = bias[j] + x @ weights[j]ᵀ`` (smaller is nearer).

    Attributes:
      weights: float32 ``[num_chunks, chunk_size, D]``: ``-2 c`` (l2) or ``-ĉ`` (cosine); padding rows are 0.
      bias: float32 ``[num_chunks, chunk_size]``: ``|c|²`` (l2) or 0 (cosine); ``+inf`` on padding.
      valid: bool ``[num_chunks, chunk_size]``: False on padding codes.
    """

    weights: jax.Array
    bias: jax.Array
    valid: jax.Array


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """``x / max(|x|, eps)`` along ``axis``, computed in float32 and returned in ``x.dtype``.

    Written as ``x * rsqrt(max(|x|², eps²))`` so that the gradient at ``x = 0`` is finite (zero through the norm).
    """
    xf = x.astype(jnp.float32)
    sq = jnp.sum(xf * xf, axis=axis, keepdims=True)
    return (xf * lax.rsqrt(jnp.maximum(sq, eps * eps))).astype(x.dtype)


def default_chunk_size(num_codes: int) -> int:
    """Codes scanned per step: the whole codebook up to 4096 codes, else 4096."""
    return min(num_codes, _MAX_CHUNK)


def check_codebook(name: str, codebook, dim: int | None = None) -> jax.Array:
    """Validates a ``[K, D]`` floating codebook with ``K >= 1`` (and ``D == dim`` when given)."""
    codebook = checks.as_float_array(name, codebook, min_rank=2)
    if codebook.ndim != 2:
        raise ValueError(f"{name} must have rank 2, shape [K, D]; got shape {tuple(codebook.shape)}")
    if codebook.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one code; got shape {tuple(codebook.shape)}")
    if dim is not None and codebook.shape[1] != dim:
        raise ValueError(
            f"{name} must have D = {dim} (the last dimension of z); got shape {tuple(codebook.shape)}")
    return codebook


def prepare_queries(x: jax.Array, metric: str) -> tuple[jax.Array, jax.Array]:
    """float32 queries and the per-row offset that turns chunk scores into true distances.

    Args:
      x: ``[N, D]`` queries.
      metric: 'l2' or 'cosine'.

    Returns:
      ``(queries [N, D], offset [N])``: for l2 the queries themselves and ``|x|²``; for cosine ``x/|x|`` and 1.
    """
    xf = x.astype(jnp.float32)
    if metric == "cosine":
        return l2_normalize(xf), jnp.ones(xf.shape[:1], jnp.float32)
    return xf, jnp.sum(xf * xf, axis=-1)


def codebook_chunks(codebook: jax.Array, metric: str, chunk_size: int) -> CodebookChunks:
    """Lays ``codebook [K, D]`` out as :class:`CodebookChunks` of ``chunk_size`` codes (last one padded)."""
    num_codes, dim = codebook.shape
    cf = codebook.astype(jnp.float32)
    if metric == "cosine":
        weights, bias = -l2_normalize(cf), jnp.zeros((num_codes,), jnp.float32)
    else:
        weights, bias = -2.0 * cf, jnp.sum(cf * cf, axis=-1)
    num_chunks = -(-num_codes // chunk_size)
    pad = num_chunks * chunk_size - num_codes
    valid = jnp.arange(num_chunks * chunk_size) < num_codes
    weights = jnp.pad(weights, ((0, pad), (0, 0)))
    bias = jnp.where(valid, jnp.pad(bias, (0, pad)), jnp.inf)
    return CodebookChunks(weights.reshape(num_chunks, chunk_size, dim), bias.reshape(num_chunks, chunk_size),
                          valid.reshape(num_chunks, chunk_size))


def chunk_scores(queries: jax.Array, weights: jax.Array, bias: jax.Array) -> jax.Array:
    """``bias + queries @ weightsᵀ``: ``[N, C]`` partial distances of one chunk (add the row offset for true ones)."""
    return bias[None, :] + lax.dot_general(queries, weights, (((1,), (1,)), ((), ())),
                                           preferred_element_type=jnp.float32)


def dense_distances(z: jax.Array, codebook: jax.Array, metric: str = "l2") -> jax.Array:
    """The full ``[..., K]`` distance matrix, with the same arithmetic as the chunked search. For tests and tiny K."""
    x = z.reshape(-1, z.shape[-1])
    queries, offset = prepare_queries(x, metric)
    chunks = codebook_chunks(codebook, metric, codebook.shape[0])
    d = chunk_scores(queries, chunks.weights[0], chunks.bias[0]) + offset[:, None]
    return jnp.maximum(d, 0.0).reshape(z.shape[:-1] + (codebook.shape[0],))


def rows_like(queries: jax.Array, fill, dtype, trailing: tuple[int, ...] = ()) -> jax.Array:
    """``[N, *trailing]`` filled with ``fill``, sharded like the rows of ``queries`` (scan carries on a mesh)."""
    base = jnp.zeros_like(queries[:, 0], dtype=dtype)
    return jnp.broadcast_to(base.reshape(base.shape + (1,) * len(trailing)), base.shape + trailing) + jnp.asarray(
        fill, dtype)


def _scan_argmin(queries: jax.Array, chunks: CodebookChunks) -> tuple[jax.Array, jax.Array]:
    chunk_size = chunks.bias.shape[1]

    def body(carry, inp):
        best, best_idx, start = carry
        weights, bias = inp
        d = chunk_scores(queries, weights, bias)
        val = jnp.min(d, axis=-1)
        # First index attaining the minimum, as a plain integer min-reduction (vectorises better than argmin).
        iota = lax.broadcasted_iota(jnp.int32, d.shape, 1)
        idx = jnp.min(jnp.where(d <= val[:, None], iota, chunk_size), axis=-1)
        better = val < best
        return (jnp.where(better, val, best), jnp.where(better, idx + start, best_idx), start + chunk_size), None

    init = (rows_like(queries, jnp.inf, jnp.float32), rows_like(queries, 0, jnp.int32), jnp.int32(0))
    (best, best_idx, _), _ = lax.scan(body, init, (chunks.weights, chunks.bias))
    return best_idx, best


def smallest_k(v: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The ``k`` smallest entries of each row of ``v [rows, w]``, smallest first, ties to the lower column:
    ``(values [rows, k], int32 columns [rows, k])``, as ``lax.top_k(-v, k)`` gives them.

    ``k`` rounds of minimum, first column of the minimum, and masking, on the transposed ``[w, rows]`` layout so
    every reduction runs across rows in vector lanes: for small ``k`` several times faster on CPU than
    ``lax.top_k``, which sorts each row (rows shorter than 32 use ``lax.top_k``, as fast there).
    """
    if v.shape[1] < 32:             # a short row: one small sort is as fast and compiles as one op
        neg, idx = lax.top_k(-v, k)
        return -neg, idx.astype(jnp.int32)
    # +inf entries (padding codes) become the largest finite float, so a taken entry, masked to +inf, is never
    # taken again; they are reported as +inf.
    big = jnp.finfo(v.dtype).max
    vt = jnp.minimum(v.T, big)
    width = vt.shape[0]
    iota = lax.broadcasted_iota(jnp.int32, vt.shape, 0)
    values, columns = [], []
    for _ in range(k):
        low = jnp.min(vt, axis=0)
        col = jnp.min(jnp.where(vt <= low[None], iota, width), axis=0)
        values.append(jnp.where(low == big, jnp.inf, low))
        columns.append(col)
        vt = jnp.where(iota == col[None], jnp.inf, vt)
    return jnp.stack(values, axis=1), jnp.stack(columns, axis=1)


def tile_top_k(d: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The ``k`` smallest entries of each row of ``d [rows, C]``, smallest first, ties to the lower index:
    ``(values [rows, k], int32 indices [rows, k])``, exactly as ``lax.top_k(-d, k)``.

    Two stages when the row is long against ``k``: the row's groups of ``g`` columns (``C / g`` about 32 to 64
    groups) are reduced to their minima, the ``k`` groups with the smallest minima are picked (any of the row's
    ``k`` smallest entries lies in one of them: a group outside them is preceded by ``k`` group minima, each a
    smaller entry), and only those ``k g`` candidates, kept in column order, are ranked by :func:`smallest_k`.
    """
    rows, width = d.shape
    group = 8
    while width // group > 64 and width % (2 * group) == 0:
        group *= 2
    if width % group or width // group < 2 * k:
        return smallest_k(d, k)
    grouped = d.reshape(rows, width // group, group)
    _, pick = smallest_k(jnp.min(grouped, axis=-1), k)                       # [rows, k], ties to the lower group
    pick = jnp.sort(pick, axis=-1)                                          # column order: ties stay lower-first
    cand = jnp.take_along_axis(grouped, pick[:, :, None], axis=1).reshape(rows, k * group)
    values, pos = smallest_k(cand, k)
    return values, jnp.take_along_axis(pick, pos // group, axis=1) * group + pos % group


def _scan_topk(queries: jax.Array, chunks: CodebookChunks, top_k: int) -> tuple[jax.Array, jax.Array]:
    num_chunks, chunk_size = chunks.bias.shape
    if num_chunks == 1:
        best, best_idx = tile_top_k(chunk_scores(queries, chunks.weights[0], chunks.bias[0]), top_k)
        return best_idx, best

    def body(carry, inp):
        best, best_idx, start = carry
        weights, bias = inp
        val, idx = tile_top_k(chunk_scores(queries, weights, bias), min(top_k, chunk_size))
        # Carry first: on equal distances the earlier (lower-index) entry wins.
        merged_val, pos = smallest_k(jnp.concatenate([best, val], axis=-1), top_k)
        merged_idx = jnp.concatenate([best_idx, idx + start], axis=-1)
        return (merged_val, jnp.take_along_axis(merged_idx, pos, axis=-1), start + chunk_size), None

    init = (rows_like(queries, jnp.inf, jnp.float32, (top_k,)), rows_like(queries, 0, jnp.int32, (top_k,)),
            jnp.int32(0))
    (best, best_idx, _), _ = lax.scan(body, init, (chunks.weights, chunks.bias))
    return best_idx, best


def nearest_code(z: jax.Array, codebook: jax.Array, *, metric: str = "l2", top_k: int | None = None,
                 chunk_size: int | None = None, block_rows: int | None = None) -> SearchResult:
    """Nearest codebook entries of each vector of ``z``, without an ``N x K`` matrix.

    Args:
      z: ``[..., D]`` floating queries (any float dtype; arithmetic in float32).
      codebook: ``[K, D]`` floating codebook.
      metric: 'l2' (squared Euclidean) or 'cosine' (``1 - cos``; z and codes are l2-normalised).
      top_k: when given, the ``top_k`` nearest codes, nearest first (``top_k <= K``).
      chunk_size: codes per scan step; default ``min(K, 4096)``.
      block_rows: rows per block on a single device; default keeps a tile at about 1M distances; ignored
        (no row blocking) when a device mesh is active.

    Returns:
      :class:`SearchResult` with int32 ``codes`` and float32 ``distances`` of shape ``z.shape[:-1]``
      (``+ (top_k,)`` with ``top_k``).

    Raises:
      TypeError / ValueError: non-floating inputs, a codebook that is not ``[K, D]`` with ``K >= 1`` and the
        ``D`` of ``z``, an unknown metric, or non-positive sizes.

    Example:
      >>> res = nearest_code(z, codebook)              # z [B, T, D], codebook [K, D]
      >>> res.codes.shape == z.shape[:-1]
    """
    z = checks.as_float_array("nearest_code: z", z)
    codebook = check_codebook("nearest_code: codebook", codebook, z.shape[-1])
    checks.check_choice("nearest_code: metric", metric, METRICS)
    num_codes = codebook.shape[0]
    if top_k is not None:
        checks.check_positive_int("nearest_code: top_k", top_k)
        if top_k > num_codes:
            raise ValueError(f"nearest_code: top_k must be <= K = {num_codes}; got {top_k}")
    chunk_size = default_chunk_size(num_codes) if chunk_size is None else checks.check_positive_int(
        "nearest_code: chunk_size", chunk_size)
    chunk_size = min(chunk_size, num_codes)
    if block_rows is not None:
        checks.check_positive_int("nearest_code: block_rows", block_rows)

    lead = z.shape[:-1]
    x = lax.stop_gradient(z).reshape(-1, z.shape[-1])
    queries, offset = prepare_queries(x, metric)
    chunks = codebook_chunks(lax.stop_gradient(codebook), metric, chunk_size)
    search = (lambda q: _scan_argmin(q, chunks)) if top_k is None else (lambda q: _scan_topk(q, chunks, top_k))

    n = queries.shape[0]
    mesh_active = not jax.sharding.get_abstract_mesh().empty
    rows = block_rows or max(256, _TILE_ELEMENTS // chunk_size)
    # a symbolic row count (an export whose batch axis is free) takes the blocked path, right for any count
    if mesh_active or (isinstance(n, int) and n <= rows):
        codes, dist = search(queries)
    else:
        num_blocks = -(-n // rows)
        padded = jnp.pad(queries, ((0, num_blocks * rows - n), (0, 0)))
        codes, dist = lax.map(search, padded.reshape(num_blocks, rows, -1))
        codes = codes.reshape((num_blocks * rows,) + codes.shape[2:])[:n]
        dist = dist.reshape((num_blocks * rows,) + dist.shape[2:])[:n]
    dist = dist + (offset if top_k is None else offset[:, None])
    dist = jnp.maximum(dist, 0.0)
    suffix = () if top_k is None else (top_k,)
    return SearchResult(codes.reshape(lead + suffix), dist.reshape(lead + suffix))
