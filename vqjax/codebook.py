"""Codebook state and the remedies against codebook collapse, as pure functions.

* EMA codebook (van den Oord et al. 2017, appendix; Razavi et al. 2019): :func:`ema_init` / :func:`ema_update`,
  an optax-style ``(init, update)`` pair over the NamedTuple :class:`EMAState`, with Laplace smoothing and
  support for gradient accumulation (statistics accumulate and fold in only on chosen steps).
* k-means initialisation (:func:`kmeans_start`), on :mod:`vqjax.kmeans`.
* Dead-code replacement (Dhariwal et al. 2020, Jukebox; Zeghidour et al. 2021, SoundStream):
  :func:`usage_update` and :func:`replace_dead_codes`.
* SimVQ (Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized Models with One Linear
  Layer"): :func:`simvq_init`, :func:`simvq_codebook`.
* Factorised low-dimensional lookup (Yu et al. 2022, ViT-VQGAN; Kumar et al. 2023, DAC) is
  ``vqjax.search.l2_normalize`` plus linear projections, wired in ``vqjax.nn.VectorQuantizer(code_dim=...)``.

One codebook's state between steps is the NamedTuple :class:`CodebookState`; each remedy is a
:class:`CodebookTransform` of pure ``(init, start, update)`` functions over it (:func:`ema`, :func:`track_usage`,
:func:`kmeans_start`, :func:`reseed_dead`, :func:`count_steps`), composed with :func:`chain` as in optax
(:func:`remedies` builds the chain a :class:`vqjax.nn.VectorQuantizer` uses).

Batch statistics are sums over the whole (global) batch computed inside ``jit``: with the batch sharded over a
mesh, XLA inserts the all-reduce, so 8 devices and 1 device produce the same update.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vqjax import checks, indexing, search
from vqjax.kmeans import kmeans, sample_rows

__all__ = [
    "CodebookState",
    "CodebookBatch",
    "CodebookTransform",
    "codebook_state",
    "as_codebook_state",
    "searched_codebook",
    "set_codes",
    "chain",
    "ema",
    "track_usage",
    "kmeans_start",
    "reseed_dead",
    "count_steps",
    "remedies",
    "EMAState",
    "CodeStats",
    "code_statistics",
    "ema_init",
    "ema_update",
    "ema_set_codes",
    "usage_update",
    "sample_rows",
    "replace_dead_codes",
    "simvq_init",
    "simvq_codebook",
]


class CodeStats(NamedTuple):
    """Sufficient statistics of one batch for a codebook of K codes.

    Attributes:
      counts: float32 ``[K]``: how many vectors chose each code.
      sums: float32 ``[K, D]``: the sum of the vectors that chose each code.
    """

    counts: jax.Array
    sums: jax.Array


def code_statistics(z: jax.Array, codes: jax.Array, num_codes: int) -> CodeStats:
    """Per-code counts and vector sums of ``z [..., D]`` assigned to ``codes [...]`` (global over a sharded batch)."""
    x = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
    flat = codes.reshape(-1)
    return CodeStats(indexing.bincount(flat, num_codes), indexing.scatter_add_rows(x, flat, num_codes))


class EMAState(NamedTuple):
    """State of an exponential-moving-average codebook.

    Attributes:
      codebook: float32 ``[K, D]``: ``embed_sum / smoothed(cluster_size)``, the codebook to search.
      cluster_size: float32 ``[K]``: EMA of per-step assignment counts.
      embed_sum: float32 ``[K, D]``: EMA of per-step sums of assigned vectors.
      pending: :class:`CodeStats` accumulated since the last applied update (gradient accumulation).
    """

    codebook: jax.Array
    cluster_size: jax.Array
    embed_sum: jax.Array
    pending: CodeStats


def ema_init(codebook: jax.Array) -> EMAState:
    """EMA state that starts at ``codebook [K, D]`` (counts 1, so the codebook is unchanged until updated)."""
    codebook = search.check_codebook("ema_init: codebook", codebook).astype(jnp.float32)
    num_codes = codebook.shape[0]
    return EMAState(codebook=codebook, cluster_size=jnp.ones((num_codes,), jnp.float32),
                    embed_sum=jnp.array(codebook, copy=True),   # a buffer of its own (safe to donate the state)
                    pending=CodeStats(jnp.zeros((num_codes,), jnp.float32), jnp.zeros_like(codebook)))


def _smoothed_codebook(cluster_size: jax.Array, embed_sum: jax.Array, eps: float) -> jax.Array:
    num_codes = cluster_size.shape[0]
    total = jnp.sum(cluster_size)
    smoothed = (cluster_size + eps) / (total + num_codes * eps) * total
    return embed_sum / jnp.maximum(smoothed, eps)[:, None]


def ema_update(state: EMAState, z: jax.Array, codes: jax.Array, *, decay: float = 0.99, eps: float = 1e-5,
               apply: bool | jax.Array = True) -> EMAState:
    """Adds a batch's statistics and, when ``apply``, folds everything pending into the EMA codebook.

    Update rule (with ``n, s`` the counts and sums pending since the last applied step)::

        cluster_size <- decay * cluster_size + (1 - decay) * n
        embed_sum    <- decay * embed_sum    + (1 - decay) * s
        N            =  sum(cluster_size)
        smoothed     =  (cluster_size + eps) / (N + K * eps) * N        # Laplace smoothing
        codebook     =  embed_sum / smoothed

    With gradient accumulation over ``m`` micro-batches, pass ``apply=(micro_step == m - 1)``: the applied
    update is the one a single batch of all ``m`` micro-batches would give.

    Args:
      state: current :class:`EMAState`.
      z: ``[..., D]`` vectors (the encoder outputs that were quantized).
      codes: int ``[...]`` their assigned codes.
      decay: EMA decay in [0, 1).
      eps: Laplace smoothing constant (> 0).
      apply: Python or traced bool: fold the pending statistics into the codebook now.

    Returns:
      the new :class:`EMAState`.
    """
    checks.check_probability("ema_update: decay", decay)
    if not eps > 0:
        raise ValueError(f"ema_update: eps must be > 0; got {eps}")
    num_codes, dim = state.codebook.shape
    z = checks.as_float_array("ema_update: z", z, last_dim=dim)
    if codes.shape != z.shape[:-1]:
        raise ValueError(f"ema_update: codes must have shape z.shape[:-1] = {tuple(z.shape[:-1])}; "
                         f"got {tuple(codes.shape)}")
    batch = code_statistics(z, codes, num_codes)
    pending = CodeStats(state.pending.counts + batch.counts, state.pending.sums + batch.sums)
    cluster_size = decay * state.cluster_size + (1.0 - decay) * pending.counts
    embed_sum = decay * state.embed_sum + (1.0 - decay) * pending.sums
    applied = EMAState(_smoothed_codebook(cluster_size, embed_sum, eps), cluster_size, embed_sum,
                       CodeStats(jnp.zeros_like(pending.counts), jnp.zeros_like(pending.sums)))
    if isinstance(apply, bool):
        return applied if apply else state._replace(pending=pending)
    held = state._replace(pending=pending)
    return jax.tree.map(lambda a, b: jnp.where(apply, a, b), applied, held)


def ema_set_codes(state: EMAState, mask: jax.Array, vectors: jax.Array, count: float | jax.Array) -> EMAState:
    """Overwrites the codes where ``mask [K]`` with ``vectors [K, D]``, giving them EMA count ``count``.

    Used by dead-code replacement and k-means initialisation of an EMA codebook.
    """
    m = mask[:, None]
    vectors = vectors.astype(jnp.float32)
    cluster_size = jnp.where(mask, count, state.cluster_size)
    return state._replace(codebook=jnp.where(m, vectors, state.codebook),
                          cluster_size=cluster_size,
                          embed_sum=jnp.where(m, vectors * cluster_size[:, None], state.embed_sum))


def usage_update(usage: jax.Array, codes: jax.Array, *, decay: float = 0.99) -> jax.Array:
    """EMA of per-step code counts, ``usage <- decay * usage + (1 - decay) * bincount(codes)``: ``[K]``."""
    checks.check_probability("usage_update: decay", decay)
    return decay * usage + (1.0 - decay) * indexing.bincount(codes, usage.shape[0])


def replace_dead_codes(key: jax.Array, codebook: jax.Array, usage: jax.Array, z: jax.Array, *,
                       threshold: float, errors: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Re-seeds codes whose usage EMA fell below ``threshold`` with vectors from the batch.

    A dead code ``k`` (``usage[k] < threshold``) becomes a batch vector drawn with probability proportional to
    ``errors`` (its quantization error, so badly represented regions get codes first) or uniformly.

    Args:
      key: PRNG key.
      codebook: ``[K, D]``.
      usage: ``[K]`` EMA of per-step counts (:func:`usage_update` or ``EMAState.cluster_size``).
      z: ``[..., D]`` batch vectors.
      threshold: codes with ``usage < threshold`` are dead (expected uses per step).
      errors: optional ``[...]`` non-negative sampling weights (e.g. distance to the nearest code).

    Returns:
      ``(new_codebook [K, D], dead [K] bool)``.
    """
    checks.check_nonnegative("replace_dead_codes: threshold", threshold)
    x = z.reshape(-1, z.shape[-1])
    weights = None if errors is None else errors.reshape(-1)
    dead = usage < threshold
    fresh = sample_rows(key, lax.stop_gradient(x), codebook.shape[0], weights).astype(codebook.dtype)
    return jnp.where(dead[:, None], fresh, codebook), dead


def simvq_init(key: jax.Array, num_codes: int, dim: int) -> tuple[jax.Array, jax.Array]:
    """SimVQ parameters: a frozen Gaussian basis ``[K, D]`` (std ``D**-0.5``) and a learned map ``[D, D]``.

    SimVQ reparameterises the codebook as ``C = basis @ W`` with ``basis`` frozen and ``W`` learned, so every
    gradient step moves the whole codebook (the span of ``W``) rather than the few selected codes, which keeps
    all codes in use. ``W`` starts at the identity here, so the initial codebook is the basis itself.

    Returns:
      ``(basis [K, D] float32, projection [D, D] float32)``.
    """
    checks.check_positive_int("simvq_init: num_codes", num_codes)
    checks.check_positive_int("simvq_init: dim", dim)
    basis = jax.random.normal(key, (num_codes, dim), jnp.float32) * dim ** -0.5
    return basis, jnp.eye(dim, dtype=jnp.float32)


def simvq_codebook(basis: jax.Array, projection: jax.Array) -> jax.Array:
    """The SimVQ codebook ``stop_gradient(basis) @ projection``: ``[K, D]``; gradients reach only ``projection``."""
    return jnp.dot(lax.stop_gradient(basis).astype(jnp.float32), projection.astype(jnp.float32))


# ----------------------------------------------------------------------------------------------------------------
# One codebook state and its remedies as (init, start, update) transforms composed with `chain` (optax style).

class CodebookState(NamedTuple):
    """Everything a codebook keeps between steps (the ``vq_stats`` of one :class:`vqjax.nn.VectorQuantizer`).

    The codebook searched is ``codebook`` itself for an EMA codebook, and ``learned + codebook`` for a learned one
    (a ``'gradient'`` parameter or a SimVQ product), where ``codebook`` is then the additive offset that k-means
    starts and re-seeded codes write: the pure-functional form of overwriting rows in place.

    Attributes:
      codebook: float32 ``[K, D]``: the EMA codebook, or the offset of a learned one.
      usage: float32 ``[K]``: EMA of per-step counts (the EMA codebook's cluster size).
      embed_sum: float32 ``[K, D]`` EMA of per-step sums of assigned vectors (EMA codebooks; ``[K, 0]`` else).
      pending: :class:`CodeStats` not yet folded in (gradient accumulation; sums ``[K, 0]`` for learned ones).
      initialized: bool: a k-means start has happened.
      step: int32 updates applied.
    """

    codebook: jax.Array
    usage: jax.Array
    embed_sum: jax.Array
    pending: CodeStats
    initialized: jax.Array
    step: jax.Array

    @property
    def is_ema(self) -> bool:
        return self.embed_sum.shape[-1] == self.codebook.shape[-1] and self.embed_sum.shape[-1] > 0


class CodebookBatch(NamedTuple):
    """What one training call saw, for the update of a codebook.

    Attributes:
      x: float32 ``[N, D]`` vectors in the search space (gradient-free).
      codes: int32 ``[N]`` their codes.
      errors: float32 ``[N]`` squared quantization errors.
      learned: float32 ``[K, D]`` learned codebook (``None`` for EMA codebooks).
      apply: bool (or traced): fold statistics in now (False on all but the last micro-batch of an accumulation).
    """

    x: jax.Array
    codes: jax.Array
    errors: jax.Array
    learned: jax.Array | None = None
    apply: bool | jax.Array = True


class CodebookTransform(NamedTuple):
    """A remedy as pure functions of :class:`CodebookState` (compose with :func:`chain`).

    Attributes:
      init: ``state -> state`` on a fresh state.
      start: ``(state, x [N, D], key, learned) -> state`` before the search of a training call (k-means start).
      update: ``(state, CodebookBatch, key) -> state`` after it (EMA, usage, dead-code re-seeding).
    """

    init: Callable[[CodebookState], CodebookState]
    start: Callable[..., CodebookState]
    update: Callable[[CodebookState, CodebookBatch, jax.Array], CodebookState]


def _keep_start(state, x, key, learned):
    return state


def _keep_update(state, batch, key):
    return state


def codebook_state(codebook: jax.Array, *, ema: bool) -> CodebookState:
    """A fresh :class:`CodebookState`: an EMA codebook starting at ``codebook [K, D]`` (counts 1), or the zero
    offset of a learned codebook of that shape."""
    codebook = search.check_codebook("codebook_state: codebook", codebook).astype(jnp.float32)
    k, d = codebook.shape
    width = d if ema else 0
    return CodebookState(codebook=codebook if ema else jnp.zeros_like(codebook),
                         usage=jnp.ones((k,), jnp.float32) if ema else jnp.zeros((k,), jnp.float32),
                         embed_sum=jnp.array(codebook, copy=True) if ema else jnp.zeros((k, 0), jnp.float32),
                         pending=CodeStats(jnp.zeros((k,), jnp.float32), jnp.zeros((k, width), jnp.float32)),
                         initialized=jnp.array(False), step=jnp.zeros((), jnp.int32))


def as_codebook_state(value) -> CodebookState:
    """A :class:`CodebookState` from itself or from its dict form (how a checkpoint restored without a target, or
    a msgpack file, returns it)."""
    if isinstance(value, CodebookState):
        return value
    if isinstance(value, dict) and set(value) == set(CodebookState._fields):
        pending = value["pending"]
        if isinstance(pending, dict):
            pending = CodeStats(pending["counts"], pending["sums"])
        return CodebookState(**{**value, "pending": pending})
    raise TypeError(f"as_codebook_state: expected a CodebookState or a dict of its fields "
                    f"{list(CodebookState._fields)}; got {type(value).__name__}")


def searched_codebook(state: CodebookState, learned: jax.Array | None = None) -> jax.Array:
    """The codebook to search: ``state.codebook`` (EMA) or ``learned + state.codebook`` (learned)."""
    return state.codebook if learned is None else learned.astype(jnp.float32) + state.codebook


def set_codes(state: CodebookState, mask: jax.Array, vectors: jax.Array, count, learned: jax.Array | None = None
              ) -> CodebookState:
    """Overwrites the searched codes where ``mask [K]`` with ``vectors [K, D]`` and gives them usage ``count``
    (an EMA codebook's rows and statistics, or a learned codebook's offset)."""
    vectors = lax.stop_gradient(vectors).astype(jnp.float32)
    usage = jnp.where(mask, count, state.usage)
    if learned is None:
        ema = ema_set_codes(EMAState(state.codebook, state.usage, state.embed_sum, state.pending), mask, vectors,
                            count)
        return state._replace(codebook=ema.codebook, usage=ema.cluster_size, embed_sum=ema.embed_sum)
    learned = lax.stop_gradient(learned).astype(jnp.float32)
    target = jnp.where(mask[:, None], vectors, learned + state.codebook)
    return state._replace(codebook=target - learned, usage=usage)


def chain(*transforms: CodebookTransform) -> CodebookTransform:
    """The transforms applied in order (each draws from its own ``fold_in(key, i)``)."""
    def init(state):
        for t in transforms:
            state = t.init(state)
        return state

    def start(state, x, key, learned):
        for i, t in enumerate(transforms):
            state = t.start(state, x, jax.random.fold_in(key, i), learned)
        return state

    def update(state, batch, key):
        for i, t in enumerate(transforms):
            state = t.update(state, batch, jax.random.fold_in(key, i))
        return state

    return CodebookTransform(init, start, update)


def ema(decay: float = 0.99, eps: float = 1e-5) -> CodebookTransform:
    """EMA codebook learning (:func:`ema_update`): counts and sums fold into ``usage``/``embed_sum`` and the
    codebook becomes their Laplace-smoothed ratio; with ``batch.apply`` False they stay pending."""
    checks.check_probability("ema: decay", decay)
    if not eps > 0:
        raise ValueError(f"ema: eps must be > 0; got {eps}")

    def update(state, batch, key):
        new = ema_update(EMAState(state.codebook, state.usage, state.embed_sum, state.pending), batch.x,
                         batch.codes, decay=decay, eps=eps, apply=batch.apply)
        return state._replace(codebook=new.codebook, usage=new.cluster_size, embed_sum=new.embed_sum,
                              pending=new.pending)

    return CodebookTransform(lambda s: s, _keep_start, update)


def track_usage(decay: float = 0.99) -> CodebookTransform:
    """Usage EMA of a learned codebook (:func:`usage_update`), applied when ``batch.apply``."""
    checks.check_probability("track_usage: decay", decay)

    def update(state, batch, key):
        usage = usage_update(state.usage, batch.codes, decay=decay)
        return state._replace(usage=jnp.where(batch.apply, usage, state.usage))

    return CodebookTransform(lambda s: s, _keep_start, update)


def kmeans_start(iters: int = 10, chunk_size: int | None = None) -> CodebookTransform:
    """On the first training call, k-means (k-means++ seeds, ``iters`` Lloyd steps) on the batch becomes the
    codebook, each code with usage ``max(count, 1)``; later calls leave the state alone."""
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"kmeans_start: iters must be a non-negative int; got {iters!r}")

    def start(state, x, key, learned):
        k = state.codebook.shape[0]

        def fit(_):
            res = kmeans(key, x, k, iters=iters, chunk_size=chunk_size)
            return res.centers, jnp.maximum(code_statistics(x, res.codes, k).counts, 1.0)

        current = searched_codebook(state, learned)
        fresh = ~state.initialized
        centers, counts = lax.cond(fresh, fit, lambda _: (lax.stop_gradient(current), state.usage), None)
        state = set_codes(state, jnp.full((k,), fresh), centers, counts, learned)
        return state._replace(initialized=jnp.array(True))

    return CodebookTransform(lambda s: s._replace(initialized=jnp.array(False)), start, _keep_update)


def reseed_dead(threshold: float) -> CodebookTransform:
    """Dead-code re-seeding (:func:`replace_dead_codes`): codes whose usage fell below ``threshold`` become batch
    vectors drawn in proportion to their quantization error, with usage ``threshold`` (when ``batch.apply``)."""
    if checks.check_nonnegative("reseed_dead: threshold", threshold) == 0:
        raise ValueError(f"reseed_dead: threshold must be > 0; got {threshold}")

    def update(state, batch, key):
        current = lax.stop_gradient(searched_codebook(state, batch.learned))
        fresh, dead = replace_dead_codes(key, current, state.usage, batch.x, threshold=threshold,
                                         errors=batch.errors)
        return set_codes(state, dead & jnp.asarray(batch.apply), fresh, threshold, batch.learned)

    return CodebookTransform(lambda s: s, _keep_start, update)


def count_steps() -> CodebookTransform:
    """Counts applied updates in ``state.step``."""
    def update(state, batch, key):
        return state._replace(step=state.step + jnp.asarray(batch.apply, jnp.int32))

    return CodebookTransform(lambda s: s, _keep_start, update)


def remedies(*, learning: str, decay: float = 0.99, eps: float = 1e-5, kmeans_iters: int | None = None,
             dead_code_threshold: float = 0.0, chunk_size: int | None = None) -> CodebookTransform:
    """The chain a :class:`vqjax.nn.VectorQuantizer` uses: k-means start (``kmeans_iters`` not None), EMA learning
    (``learning='ema'``) or usage tracking (learned codebooks), dead-code re-seeding (threshold > 0), step count."""
    parts = []
    if kmeans_iters is not None:
        parts.append(kmeans_start(kmeans_iters, chunk_size))
    parts.append(ema(decay, eps) if learning == "ema" else track_usage(decay))
    if dead_code_threshold > 0:
        parts.append(reseed_dead(dead_code_threshold))
    parts.append(count_steps())
    return chain(*parts)
