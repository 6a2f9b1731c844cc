"""Multi-codebook search shared by residual and additive quantization (and their modules): codebook checks,
greedy and beam-search residual encoding, ICM refinement, decoding sums, quantizer-dropout masks and per-level
metrics.

* Greedy residual encoding is :func:`vqjax.quantizers.compose.residual_encode` with nearest-code search per level.
* Beam search (``beam_width = B``) keeps the ``B`` partial sums with the smallest residual at every level: each
  beam proposes its ``B`` nearest next codes and the best ``B`` of the ``B²`` candidates survive; the answer is
  the better of the best beam and the greedy path for every vector (never worse than greedy).
* ICM (LSQ): each codebook in turn re-picks its code as the nearest to what the others leave; the error never
  increases.

Nothing here forms an ``N x K`` matrix beyond the chunked search of :func:`vqjax.search.nearest_code`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from vqjax import checks, indexing, metrics, search
from vqjax.quantizers.compose import residual_decode, residual_encode

__all__ = ["check_codebooks", "decode_sum", "gather_levels", "greedy_encode", "beam_extend", "beam_encode",
           "icm_refine", "dropout_mask", "level_metrics", "vq_level_encode", "vq_level_decode", "residual_targets",
           "additive_targets", "multi_encode"]


def check_codebooks(name: str, codebooks, dim: int | None, num_levels: int | None, *, allow_shared: bool = True
                    ) -> jax.Array:
    """Validates ``[L, K, D]`` codebooks (or a shared ``[K, D]`` with ``num_levels``); returns ``[L, K, D]``."""
    codebooks = checks.as_float_array(name, codebooks, min_rank=2)
    if codebooks.ndim == 2 and allow_shared:
        if num_levels is None:
            raise ValueError(f"{name}: a shared [K, D] codebook needs num_levels=L; got shape "
                             f"{tuple(codebooks.shape)} and num_levels=None")
        checks.check_positive_int(f"{name.split(':')[0]}: num_levels", num_levels)
        codebooks = jnp.broadcast_to(codebooks, (num_levels,) + codebooks.shape)
    elif codebooks.ndim != 3:
        raise ValueError(f"{name} must have shape [L, K, D]{' or [K, D] with num_levels' if allow_shared else ''}; "
                         f"got shape {tuple(codebooks.shape)}")
    elif num_levels is not None and num_levels != codebooks.shape[0]:
        raise ValueError(f"{name.split(':')[0]}: num_levels must equal L = {codebooks.shape[0]} of [L, K, D] "
                         f"codebooks; got {num_levels}")
    if codebooks.shape[0] == 0 or codebooks.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one level and one code; got shape {tuple(codebooks.shape)}")
    if dim is not None and codebooks.shape[2] != dim:
        raise ValueError(f"{name} must have D = {dim} (the last dimension of z); got shape {tuple(codebooks.shape)}")
    return codebooks


def vq_level_encode(x: jax.Array, codebook: jax.Array, chunk_size: int | None = None) -> jax.Array:
    """Nearest codes of ``x [N, D]`` in one level's codebook ``[K, D]`` (l2)."""
    return search.nearest_code(x, codebook, chunk_size=chunk_size).codes


def vq_level_decode(codes: jax.Array, codebook: jax.Array) -> jax.Array:
    """One level's vectors ``[N, D]`` (float32) of ``codes [N]``; differentiable with respect to the codebook."""
    return indexing.gather_rows(codebook.astype(jnp.float32), codes)


def decode_sum(codebooks: jax.Array, codes: jax.Array) -> jax.Array:
    """``Σ_l C_l[codes[..., l]]`` in float32, levels with code ``-1`` skipped: ``codes.shape[:-1] + (D,)``
    (:func:`vqjax.quantizers.compose.residual_decode` with a row gather per level)."""
    return residual_decode(vq_level_decode, codes, codebooks, codebooks.shape[-1])


def gather_levels(tables: jax.Array, codes: jax.Array) -> jax.Array:
    """``tables[l][codes[:, l]]`` for every level: ``[N, L, D]`` from ``tables [L, K, D]`` and ``codes [N, L]``.

    One plain row gather per level (``lax.map``): a vmapped or multi-dimensional gather is far slower on CPU.
    Differentiable with respect to ``tables``.
    """
    per = lax.map(lambda tc: indexing.gather_rows(tc[0], tc[1]), (tables, codes.T))
    return jnp.moveaxis(per, 0, 1)


def greedy_encode(x: jax.Array, codebooks: jax.Array, *, chunk_size: int | None = None) -> jax.Array:
    """Greedy residual codes of ``x [N, D]`` for ``codebooks [L, K, D]``: int32 ``[N, L]``
    (:func:`vqjax.quantizers.compose.residual_encode` with a nearest-code search per level)."""
    return residual_encode(lambda r, c: vq_level_encode(r, c, chunk_size), vq_level_decode, x, codebooks)


def beam_extend(residual: jax.Array, history: jax.Array, codebook: jax.Array, level, beams: int, *,
                chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """One beam-search step: each of the ``B'`` beams proposes its ``beams`` nearest codes of ``codebook [K, D]``;
    the ``beams`` candidates with the smallest residual survive.

    Args:
      residual: float32 ``[N, B', D]`` residuals of the current beams.
      history: int32 ``[N, B', L]`` their codes so far.
      codebook: ``[K, D]`` of this level; level: its index in ``history`` (int or traced).
      beams: beams kept (``<= B' * K``).

    Returns:
      ``(residual [N, beams, D], history [N, beams, L])``, best beam first.
    """
    n, width, _ = residual.shape
    c = codebook.astype(jnp.float32)
    per_beam = min(beams, c.shape[0])
    cand = search.nearest_code(residual, c, top_k=per_beam, chunk_size=chunk_size)      # [N, B', per_beam]
    dist = cand.distances.reshape(n, width * per_beam)
    child = cand.codes.reshape(n, width * per_beam)
    _, pick = search.smallest_k(dist, beams)                                             # ties: lower index
    parent = pick // per_beam
    code = jnp.take_along_axis(child, pick, axis=1)                                      # [N, beams]
    # Each survivor copies its parent's residual and history: a select per parent (a batched gather over the
    # beam axis is many times slower on CPU).
    residual = _from_parents(residual, parent) - indexing.gather_rows(c, code)
    history = _from_parents(history, parent)
    history = jnp.where(jnp.arange(history.shape[-1]) == level, code[:, :, None], history)
    return residual, history


def _from_parents(rows: jax.Array, parent: jax.Array) -> jax.Array:
    """``rows[n, parent[n, b]]`` for ``rows [N, B', F]`` and ``parent [N, B]``: ``[N, B, F]``."""
    out = jnp.zeros(parent.shape + rows.shape[2:], rows.dtype)
    for p in range(rows.shape[1]):
        out = jnp.where((parent == p)[:, :, None], rows[:, p:p + 1], out)
    return out


def beam_encode(x: jax.Array, codebooks: jax.Array, beam_width: int, *, chunk_size: int | None = None
                ) -> jax.Array:
    """Beam-search residual codes of ``x [N, D]``: int32 ``[N, L]``, never worse than :func:`greedy_encode`.

    Memory: ``O(N B D)`` for the beams plus the chunked top-``B`` search over ``N B`` residuals.
    """
    x = x.astype(jnp.float32)
    num_levels, num_codes, _ = codebooks.shape
    beams = min(beam_width, num_codes)
    history = jnp.zeros_like(x[:, :1], dtype=jnp.int32)[:, :, None] + jnp.zeros((num_levels,), jnp.int32)  # [N, 1, L]
    residual, history = beam_extend(x[:, None, :], history, codebooks[0], 0, beams, chunk_size=chunk_size)

    def body(carry, inp):
        level, c = inp
        return beam_extend(*carry, c, level, beams, chunk_size=chunk_size), None

    if num_levels > 1:
        levels = jnp.arange(1, num_levels, dtype=jnp.int32)
        (residual, history), _ = lax.scan(body, (residual, history), (levels, codebooks[1:]))
    err = jnp.sum(residual * residual, axis=-1)                    # [N, B]
    best = jnp.argmin(err, axis=1)
    beam_codes = jnp.take_along_axis(history, best[:, None, None], axis=1)[:, 0]
    greedy = greedy_encode(x, codebooks, chunk_size=chunk_size)
    err_beam = jnp.sum((x - decode_sum(codebooks, beam_codes)) ** 2, axis=-1)
    err_greedy = jnp.sum((x - decode_sum(codebooks, greedy)) ** 2, axis=-1)
    return jnp.where((err_beam <= err_greedy)[:, None], beam_codes, greedy)


def dropout_mask(key: jax.Array, lead: tuple[int, ...], num_levels: int, rate: float) -> jax.Array:
    """Quantizer-dropout mask ``lead + (L,)``: with probability ``rate`` a vector keeps its first ``n ~ U{1..L}``."""
    k_apply, k_n = jax.random.split(key)
    keep = jax.random.randint(k_n, lead, 1, num_levels + 1)
    n = jnp.where(jax.random.uniform(k_apply, lead) < rate, keep, num_levels)
    return jnp.arange(num_levels) < n[..., None]


def icm_refine(x: jax.Array, codebooks: jax.Array, codes: jax.Array, iters: int, *,
               chunk_size: int | None = None) -> jax.Array:
    """``iters`` sweeps of iterated conditional modes over the ``M`` codebooks: int32 ``[N, M]``.

    Each step re-picks codebook ``m``'s code as the nearest to ``x - Σ_{j≠m} C_j[b_j]``; the squared error never
    increases.
    """
    x = x.astype(jnp.float32)
    num_books = codebooks.shape[0]
    table = codebooks.astype(jnp.float32)
    books = jnp.arange(num_books)

    def step(i, carry):
        codes, recon = carry
        m = i % num_books
        c = lax.dynamic_index_in_dim(table, m, keepdims=False)
        old = jnp.sum(jnp.where(books == m, codes, 0), axis=1)
        others = recon - indexing.gather_rows(c, old)
        new = search.nearest_code(x - others, c, chunk_size=chunk_size).codes
        return jnp.where(books == m, new[:, None], codes), others + indexing.gather_rows(c, new)

    codes, _ = lax.fori_loop(0, iters * num_books, step, (codes, decode_sum(table, codes)))
    return codes


def level_metrics(codes: jax.Array, num_codes: int) -> dict[str, jax.Array]:
    """Mean over the last axis (levels/groups/codebooks) of per-level perplexity and usage."""
    # lax.map, not vmap: a batched scatter is many times slower than L plain ones on CPU.
    per = lax.map(lambda c: metrics.code_metrics(c, num_codes), jnp.moveaxis(codes, -1, 0))
    return {name: jnp.mean(value) for name, value in per.items()}




def residual_targets(x: jax.Array, codebooks: jax.Array, codes: jax.Array):
    """What each residual level quantizes: ``level -> r_l = x - Σ_{j<l} sg(C_j[codes[:, j]])`` (gradient to ``x``
    only), built lazily level by level so no ``[N, L, D]`` array is formed."""
    frozen = lax.stop_gradient(codebooks)
    before = [jnp.zeros_like(frozen[0, :1])]

    def target(level: int) -> jax.Array:
        while len(before) <= level:
            i = len(before) - 1
            before.append(before[-1] + vq_level_decode(codes[:, i], frozen[i]))
        return x - before[level]

    return target


def additive_targets(x: jax.Array, codebooks: jax.Array, codes: jax.Array):
    """What each additive codebook should represent: ``m -> t_m = x - Σ_{j≠m} sg(C_j[codes[:, j]])``."""
    frozen = lax.stop_gradient(codebooks)
    rest = x - decode_sum(frozen, codes)
    return lambda m: rest + vq_level_decode(codes[:, m], frozen[m])


def multi_encode(x: jax.Array, codebooks: jax.Array, *, beam_width: int = 1, icm_iters: int = 0,
                 chunk_size: int | None = None) -> jax.Array:
    """Codes ``[N, L]`` of ``x [N, D]`` (gradient-free): greedy residual (``beam_width=1``) or beam search, then
    ``icm_iters`` ICM sweeps (additive quantization)."""
    x, codebooks = lax.stop_gradient(x), lax.stop_gradient(codebooks)
    if beam_width == 1:
        codes = greedy_encode(x, codebooks, chunk_size=chunk_size)
    else:
        codes = beam_encode(x, codebooks, beam_width, chunk_size=chunk_size)
    if icm_iters:
        codes = icm_refine(x, codebooks, codes, icm_iters, chunk_size=chunk_size)
    return codes
