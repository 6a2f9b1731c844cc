"""Flax modules for the multi-codebook families: ``ResidualVQ``, ``ProductVQ``, ``AdditiveVQ``.

Every codebook is a :class:`vqjax.nn.VectorQuantizer`, so the collapse remedies (gradient, EMA or SimVQ codebook
learning, k-means initialisation, dead-code replacement, entropy and orthogonality terms) apply per codebook
through the same options, with their statistics in the ``vq_stats`` collection.

* ``ProductVQ``: one quantizer per sub-vector (or one shared across sub-vectors), each searching its own part.
* ``ResidualVQ`` and ``AdditiveVQ``: the codes are chosen jointly over the stacked codebooks by the pure
  encoders (greedy or beam search, plus ICM for additive), then each level's quantizer is called with its own
  input and the given codes (``VectorQuantizer(..., codes=...)``): level ``l`` of RVQ sees its residual
  ``r_l = z - Σ_{j<l} sg(q_j)``; codebook ``m`` of AQ sees what the others leave, ``t_m = z - Σ_{j≠m} sg(q_j)``.
  Losses, EMA statistics and dead-code re-seeding follow those inputs. ``codebook_init='kmeans'`` fits all
  codebooks jointly on the first training batch by residual k-means.

The output is ``straight_through(z, Σ q)`` (or the rotation trick), so ``d values / d z = I``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from vqjax import checks, codebook as cbk, estimators, indexing
from vqjax.nn.vq import CODEBOOK_INITS, STATS, VectorQuantizer
from vqjax.quantizers.base import Quantized
from vqjax.quantizers.multisearch import beam_encode, decode_sum, dropout_mask, greedy_encode, icm_refine

__all__ = ["ResidualVQ", "ProductVQ", "AdditiveVQ", "residual_kmeans"]


def residual_kmeans(key: jax.Array, x: jax.Array, num_levels: int, num_codes: int, iters: int,
                    chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Greedy residual k-means of ``x [N, D]``: ``(codebooks [L, K, D], counts [L, K])``, traceable (a scan)."""
    def level(residual, k):
        fit = cbk.kmeans(k, residual, num_codes, iters=iters, chunk_size=chunk_size)
        counts = cbk.code_statistics(residual, fit.codes, num_codes).counts
        return residual - indexing.gather_rows(fit.centers, fit.codes), (fit.centers, counts)

    _, (books, counts) = lax.scan(level, x.astype(jnp.float32), jax.random.split(key, num_levels))
    return books, counts


def _merge_metrics(per_level: list[dict]) -> dict:
    names = set.intersection(*(set(m) for m in per_level))
    return {name: jnp.mean(jnp.stack([m[name] for m in per_level])) for name in sorted(names)}


_SHARED_FIELDS = ("codebook_learning", "beta", "decay", "eps", "dead_code_threshold", "entropy_weight",
                  "entropy_temperature", "diversity_weight", "orthogonal_weight", "chunk_size", "check_finite")


class _Levels(nn.Module):
    """Fields and plumbing shared by the multi-codebook modules (one VectorQuantizer per codebook)."""

    def _vq_kwargs(self, fields=_SHARED_FIELDS, **overrides) -> dict:
        kwargs = {name: getattr(self, name) for name in fields}
        kwargs.update(overrides)
        return kwargs

    def _check_common(self, name, count_field):
        checks.check_positive_int(f"{name}: {count_field}", getattr(self, count_field))
        checks.check_positive_int(f"{name}: codebook_size", self.codebook_size)
        checks.check_positive_int(f"{name}: dim", self.dim)
        checks.check_choice(f"{name}: codebook_init", self.codebook_init, CODEBOOK_INITS)
        checks.check_choice(f"{name}: estimator", self.estimator, ("ste", "rotation"))
        checks.check_positive_int(f"{name}: beam_width", self.beam_width)

    def _setup_levels(self, count, shared, **overrides):
        kwargs = self._vq_kwargs(codebook_size=self.codebook_size, dim=self.dim, codebook_init="random", **overrides)
        names = ["shared"] if shared else [f"level_{i}" for i in range(count)]
        self.quantizers = [VectorQuantizer(**kwargs, name=name) for name in names]
        if self.codebook_init == "kmeans":
            self.initialized = self.variable(STATS, "initialized", lambda: jnp.array(False))

    @property
    def _count(self) -> int:
        raise NotImplementedError

    def codebooks(self) -> jax.Array:
        """The codebooks searched now: float32 ``[L, K, D]``."""
        books = jnp.stack([vq.current_codebook() for vq in self.quantizers])
        return jnp.broadcast_to(books, (self._count,) + books.shape[1:])

    def _mutable(self, train):
        return train and self.is_mutable_collection(STATS) and not self.is_initializing()

    def _key(self):
        if self.has_rng("vq"):
            return self.make_rng("vq")
        return jax.random.fold_in(jax.random.key(1), self.quantizers[0].step.value)

    def _kmeans_init(self, x, key):
        """On the first training call, residual k-means on the batch becomes every level's codebook."""
        count = self._count
        fresh = ~self.initialized.value
        current = lax.stop_gradient(self.codebooks())
        books, counts = lax.cond(
            fresh, lambda _: residual_kmeans(key, x, count, self.codebook_size, self.kmeans_iters, self.chunk_size),
            lambda _: (current, jnp.ones(current.shape[:2], jnp.float32)), None)
        # A shared codebook takes the first level's fit (the largest-scale residuals).
        for vq, book, cnt in zip(self.quantizers, books, counts):
            vq.set_codes(jnp.full((self.codebook_size,), fresh), book, jnp.maximum(cnt, 1.0))
        self.initialized.value = jnp.array(True)

    def _call_levels(self, inputs, codes, train, apply_update) -> tuple[jax.Array, list[Quantized]]:
        """Calls quantizer ``l`` on ``inputs(l)`` with ``codes[:, l]``; returns the summed loss and the results."""
        if len(self.quantizers) == 1 and self._count > 1:
            # One shared quantizer: a single call over all levels' inputs, so its statistics update once per step.
            stacked = jnp.stack([inputs(i) for i in range(self._count)], axis=1)
            res = self.quantizers[0](stacked, train=train, apply_update=apply_update, codes=codes)
            return res.loss * self._count, [res]
        results = [vq(inputs(i), train=train, apply_update=apply_update, codes=codes[:, i])
                   for i, vq in enumerate(self.quantizers)]
        return sum(r.loss for r in results), results


class ResidualVQ(_Levels):
    """Residual vector quantizer (:func:`vqjax.rvq`) with a :class:`VectorQuantizer` per level.

    Attributes:
      num_levels: L.
      codebook_size: K per level.
      dim: D.
      beam_width: 1 for greedy encoding, more for beam search (never worse than greedy).
      quantizer_dropout: in training, the probability that a vector keeps only a random number of levels
        (needs the ``'vq'`` rng or uses the step counter); dropped levels' codes are ``-1``.
      shared_codebook: one codebook for all levels.
      estimator: 'ste' or 'rotation' (on the total).
      codebook_learning, beta, decay, eps, codebook_init, kmeans_iters, dead_code_threshold, entropy_weight,
        entropy_temperature, diversity_weight, orthogonal_weight, chunk_size, check_finite: as
        :class:`VectorQuantizer`, per level (``codebook_init='kmeans'`` fits all levels jointly).

    Example:
      >>> rvq = vqjax.nn.ResidualVQ(8, 1024, 128, codebook_learning='ema', dead_code_threshold=1.0)
      >>> q, upd = rvq.apply(variables, z, train=True, mutable=['vq_stats'])     # q.codes [..., 8]
    """

    num_levels: int
    codebook_size: int
    dim: int
    beam_width: int = 1
    quantizer_dropout: float = 0.0
    shared_codebook: bool = False
    estimator: str = "ste"
    codebook_learning: str = "gradient"
    beta: float = 0.25
    decay: float = 0.99
    eps: float = 1e-5
    codebook_init: str = "random"
    kmeans_iters: int = 10
    dead_code_threshold: float = 0.0
    entropy_weight: float = 0.0
    entropy_temperature: float = 0.01
    diversity_weight: float = 1.0
    orthogonal_weight: float = 0.0
    chunk_size: int | None = None
    check_finite: bool = False

    def setup(self):
        self._check_common("ResidualVQ", "num_levels")
        checks.check_probability("ResidualVQ: quantizer_dropout", self.quantizer_dropout, open_right=False)
        self._setup_levels(self.num_levels, self.shared_codebook)

    @property
    def _count(self) -> int:
        return self.num_levels

    def _encode_flat(self, x, codebooks):
        x, codebooks = lax.stop_gradient(x), lax.stop_gradient(codebooks)
        if self.beam_width == 1:
            return greedy_encode(x, codebooks, chunk_size=self.chunk_size)
        return beam_encode(x, codebooks, self.beam_width, chunk_size=self.chunk_size)

    def __call__(self, z: jax.Array, *, train: bool = False, apply_update: bool = True) -> Quantized:
        """Quantizes ``z [..., dim]``: codes int32 ``z.shape[:-1] + (num_levels,)``."""
        z = checks.as_float_array("ResidualVQ: z", z, last_dim=self.dim)
        x = z.reshape(-1, self.dim).astype(jnp.float32)
        mutable = self._mutable(train)
        key = self._key() if mutable or (train and self.quantizer_dropout > 0) else None
        if mutable and self.codebook_init == "kmeans":
            self._kmeans_init(lax.stop_gradient(x), jax.random.fold_in(key, 1))
        codebooks = self.codebooks()
        codes = self._encode_flat(x, codebooks)                                    # [N, L]
        frozen = lax.stop_gradient(codebooks)
        before = [jnp.zeros_like(frozen[0, :1])]                                   # Σ_{j<l} sg(q_j), built lazily

        def residual(level):                                                       # r_l, gradient to z only
            while len(before) <= level:
                i = len(before) - 1
                before.append(before[-1] + indexing.gather_rows(frozen[i], codes[:, i]))
            return x - before[level]

        loss, results = self._call_levels(residual, codes, train, apply_update)
        stats = _merge_metrics([r.metrics for r in results])
        if train and self.quantizer_dropout > 0:
            mask = dropout_mask(jax.random.fold_in(key, 2), (x.shape[0],), self.num_levels, self.quantizer_dropout)
            codes = jnp.where(mask, codes, -1)
        total = decode_sum(lax.stop_gradient(codebooks), codes).reshape(z.shape)
        estimate = estimators.straight_through if self.estimator == "ste" else estimators.rotation_trick
        values = estimate(z, total.astype(z.dtype))
        return Quantized(values, codes.reshape(z.shape[:-1] + (self.num_levels,)), loss.astype(jnp.float32), stats)

    def encode(self, z: jax.Array) -> jax.Array:
        """int32 codes ``z.shape[:-1] + (num_levels,)``."""
        z = checks.as_float_array("ResidualVQ: z", z, last_dim=self.dim)
        codes = self._encode_flat(z.reshape(-1, self.dim), self.codebooks())
        return codes.reshape(z.shape[:-1] + (self.num_levels,))

    def decode(self, codes: jax.Array, dtype=jnp.float32) -> jax.Array:
        """``[..., dim]`` sums of the codes' vectors (code ``-1``: level absent)."""
        codes = checks.as_code_array("ResidualVQ: codes", codes, self.codebook_size, low=-1)
        if codes.ndim < 1 or codes.shape[-1] != self.num_levels:
            raise ValueError(f"ResidualVQ: codes must have shape [..., {self.num_levels}]; got {tuple(codes.shape)}")
        return decode_sum(self.codebooks(), codes).astype(dtype)


class AdditiveVQ(_Levels):
    """Additive vector quantizer (:func:`vqjax.aq`) with a :class:`VectorQuantizer` per codebook.

    Codes are found by beam search over the ``num_codebooks`` codebooks plus ``icm_iters`` ICM sweeps; codebook
    ``m`` then learns (by gradient, EMA or SimVQ) from ``t_m = z - Σ_{j≠m} sg(q_j)``, a coordinate-descent step on
    the joint reconstruction error. Each level's commitment weight is ``beta / num_codebooks``, so the summed
    commitment is ``beta |z - sg(q)|²``.

    Attributes:
      num_codebooks: M.
      codebook_size: K per codebook.
      dim: D.
      beam_width: encoder beam.
      icm_iters: ICM sweeps after the beam search.
      estimator, codebook_learning, beta, decay, eps, codebook_init, kmeans_iters, dead_code_threshold,
        entropy_weight, entropy_temperature, diversity_weight, orthogonal_weight, chunk_size, check_finite:
        as :class:`ResidualVQ`.
    """

    num_codebooks: int
    codebook_size: int
    dim: int
    beam_width: int = 4
    icm_iters: int = 0
    estimator: str = "ste"
    codebook_learning: str = "gradient"
    beta: float = 0.25
    decay: float = 0.99
    eps: float = 1e-5
    codebook_init: str = "random"
    kmeans_iters: int = 10
    dead_code_threshold: float = 0.0
    entropy_weight: float = 0.0
    entropy_temperature: float = 0.01
    diversity_weight: float = 1.0
    orthogonal_weight: float = 0.0
    chunk_size: int | None = None
    check_finite: bool = False

    def setup(self):
        self._check_common("AdditiveVQ", "num_codebooks")
        if isinstance(self.icm_iters, bool) or not isinstance(self.icm_iters, int) or self.icm_iters < 0:
            raise ValueError(f"AdditiveVQ: icm_iters must be a non-negative int; got {self.icm_iters!r}")
        self._setup_levels(self.num_codebooks, False, beta=self.beta / self.num_codebooks)

    @property
    def _count(self) -> int:
        return self.num_codebooks

    def _encode_flat(self, x, codebooks):
        x, codebooks = lax.stop_gradient(x), lax.stop_gradient(codebooks)
        codes = beam_encode(x, codebooks, self.beam_width, chunk_size=self.chunk_size)
        if self.icm_iters:
            codes = icm_refine(x, codebooks, codes, self.icm_iters, chunk_size=self.chunk_size)
        return codes

    def __call__(self, z: jax.Array, *, train: bool = False, apply_update: bool = True) -> Quantized:
        """Quantizes ``z [..., dim]``: codes int32 ``z.shape[:-1] + (num_codebooks,)``."""
        z = checks.as_float_array("AdditiveVQ: z", z, last_dim=self.dim)
        x = z.reshape(-1, self.dim).astype(jnp.float32)
        mutable = self._mutable(train)
        key = self._key() if mutable else None
        if mutable and self.codebook_init == "kmeans":
            self._kmeans_init(lax.stop_gradient(x), jax.random.fold_in(key, 1))
        codebooks = self.codebooks()
        codes = self._encode_flat(x, codebooks)
        frozen = lax.stop_gradient(codebooks)
        rest = x - decode_sum(frozen, codes)
        target = lambda m: rest + indexing.gather_rows(frozen[m], codes[:, m])       # t_m = z - Σ_{j≠m} sg(q_j)
        loss, results = self._call_levels(target, codes, train, apply_update)
        stats = _merge_metrics([r.metrics for r in results])
        total = decode_sum(lax.stop_gradient(codebooks), codes).reshape(z.shape)
        estimate = estimators.straight_through if self.estimator == "ste" else estimators.rotation_trick
        values = estimate(z, total.astype(z.dtype))
        return Quantized(values, codes.reshape(z.shape[:-1] + (self.num_codebooks,)), loss.astype(jnp.float32),
                         stats)

    def encode(self, z: jax.Array) -> jax.Array:
        """int32 codes ``z.shape[:-1] + (num_codebooks,)``."""
        z = checks.as_float_array("AdditiveVQ: z", z, last_dim=self.dim)
        return self._encode_flat(z.reshape(-1, self.dim), self.codebooks()).reshape(
            z.shape[:-1] + (self.num_codebooks,))

    def decode(self, codes: jax.Array, dtype=jnp.float32) -> jax.Array:
        """``[..., dim]`` sums of the codes' vectors."""
        codes = checks.as_code_array("AdditiveVQ: codes", codes, self.codebook_size)
        if codes.ndim < 1 or codes.shape[-1] != self.num_codebooks:
            raise ValueError(f"AdditiveVQ: codes must have shape [..., {self.num_codebooks}]; "
                             f"got {tuple(codes.shape)}")
        return decode_sum(self.codebooks(), codes).astype(dtype)


class ProductVQ(_Levels):
    """Product vector quantizer (:func:`vqjax.pq`): ``z`` split into ``num_groups`` sub-vectors, each quantized by
    its own :class:`VectorQuantizer` (or one shared quantizer: grouped / multi-head VQ).

    Every ``VectorQuantizer`` option applies per group, including ``metric``, ``estimator`` (with 'gumbel'),
    ``code_dim`` and ``codebook_init='kmeans'``. Codes are int32 ``z.shape[:-1] + (num_groups,)``; the loss is the
    mean of the groups' losses.

    Attributes:
      num_groups: G (must divide ``dim``).
      codebook_size: K per group.
      dim: D.
      shared_codebook: one quantizer for all groups.
      the rest: as :class:`VectorQuantizer`, per group (on sub-vectors of ``dim // num_groups`` channels).
    """

    num_groups: int
    codebook_size: int
    dim: int
    shared_codebook: bool = False
    codebook_learning: str = "gradient"
    metric: str = "l2"
    estimator: str = "ste"
    beta: float = 0.25
    decay: float = 0.99
    eps: float = 1e-5
    codebook_init: str = "random"
    kmeans_iters: int = 10
    dead_code_threshold: float = 0.0
    entropy_weight: float = 0.0
    entropy_temperature: float = 0.01
    diversity_weight: float = 1.0
    orthogonal_weight: float = 0.0
    code_dim: int | None = None
    gumbel_temperature: float = 1.0
    chunk_size: int | None = None
    check_finite: bool = False

    def setup(self):
        checks.check_positive_int("ProductVQ: num_groups", self.num_groups)
        checks.check_positive_int("ProductVQ: dim", self.dim)
        if self.dim % self.num_groups:
            raise ValueError(f"ProductVQ: num_groups must divide dim = {self.dim}; got {self.num_groups}")
        kwargs = self._vq_kwargs(_SHARED_FIELDS + ("metric", "estimator", "codebook_init", "kmeans_iters", "code_dim",
                                                   "gumbel_temperature"),
                                 codebook_size=self.codebook_size, dim=self.dim // self.num_groups)
        names = ["shared"] if self.shared_codebook else [f"group_{g}" for g in range(self.num_groups)]
        self.quantizers = [VectorQuantizer(**kwargs, name=name) for name in names]

    def _split(self, z):
        z = checks.as_float_array("ProductVQ: z", z, last_dim=self.dim)
        return z.reshape(z.shape[:-1] + (self.num_groups, self.dim // self.num_groups))

    def __call__(self, z: jax.Array, *, train: bool = False, apply_update: bool = True) -> Quantized:
        """Quantizes ``z [..., dim]``: codes int32 ``z.shape[:-1] + (num_groups,)``."""
        zg = self._split(z)
        if self.shared_codebook:
            q = self.quantizers[0](zg, train=train, apply_update=apply_update)
            return q._replace(values=q.values.reshape(z.shape))
        results = [vq(zg[..., g, :], train=train, apply_update=apply_update) for g, vq in enumerate(self.quantizers)]
        values = jnp.concatenate([r.values for r in results], axis=-1)
        codes = jnp.stack([r.codes for r in results], axis=-1)
        loss = jnp.mean(jnp.stack([r.loss for r in results]))
        return Quantized(values, codes, loss, _merge_metrics([r.metrics for r in results]))

    def encode(self, z: jax.Array) -> jax.Array:
        """int32 codes ``z.shape[:-1] + (num_groups,)``."""
        zg = self._split(z)
        if self.shared_codebook:
            return self.quantizers[0].encode(zg)
        return jnp.stack([vq.encode(zg[..., g, :]) for g, vq in enumerate(self.quantizers)], axis=-1)

    def decode(self, codes: jax.Array, dtype=jnp.float32) -> jax.Array:
        """``[..., dim]`` concatenated sub-vectors of ``codes [..., num_groups]``."""
        if codes.ndim < 1 or codes.shape[-1] != self.num_groups:
            raise ValueError(f"ProductVQ: codes must have shape [..., {self.num_groups}]; got {tuple(codes.shape)}")
        if self.shared_codebook:
            values = self.quantizers[0].decode(codes, dtype)
            return values.reshape(values.shape[:-2] + (self.dim,))
        return jnp.concatenate([vq.decode(codes[..., g], dtype) for g, vq in enumerate(self.quantizers)], axis=-1)
