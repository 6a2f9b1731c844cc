"""Flax modules for the multi-codebook families: ``ResidualVQ``, ``ProductVQ``, ``AdditiveVQ``.

Thin shells: every codebook is a :class:`vqjax.nn.VectorQuantizer` built from the module's own
:class:`~vqjax.nn.vq.CodebookOptions` (declared once, inherited), so the collapse remedies (gradient, EMA or SimVQ
codebook learning, k-means initialisation, dead-code replacement, entropy and orthogonality terms) apply per
codebook with their statistics in the ``vq_stats`` collection. The search, the per-level targets and the decoding
sums are layer 2 (:mod:`vqjax.quantizers.multisearch`), the joint k-means start layer 1
(:func:`vqjax.kmeans.residual_kmeans`).

* ``ProductVQ``: one quantizer per sub-vector (or one shared across sub-vectors), each searching its own part.
* ``ResidualVQ`` and ``AdditiveVQ``: the codes are chosen jointly over the stacked codebooks
  (:func:`~vqjax.quantizers.multisearch.multi_encode`: greedy or beam search, plus ICM for additive), then each
  level's quantizer is called with its own target and the given codes (``VectorQuantizer(..., codes=...)``):
  level ``l`` of RVQ sees its residual ``r_l = z - Σ_{j<l} sg(q_j)``; codebook ``m`` of AQ sees what the others
  leave, ``t_m = z - Σ_{j≠m} sg(q_j)``. Losses, EMA statistics and dead-code re-seeding follow those targets.
  ``codebook_init='kmeans'`` fits all codebooks jointly on the first training batch by residual k-means.

The output is ``straight_through(z, Σ q)`` (or the rotation trick), so ``d values / d z = I``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from vqjax import checks, estimators
from vqjax import kmeans as km
from vqjax.nn.vq import STATS, CodebookOptions, VectorQuantizer, option_values
from vqjax.quantizers.base import Quantized
from vqjax.quantizers.compose import merge_groups, split_groups
from vqjax.quantizers.multisearch import (
    additive_targets,
    decode_sum,
    dropout_mask,
    multi_encode,
    residual_targets,
)

__all__ = ["ResidualVQ", "ProductVQ", "AdditiveVQ"]


def _merge_metrics(per_level: list[dict]) -> dict:
    names = set.intersection(*(set(m) for m in per_level))
    return {name: jnp.mean(jnp.stack([m[name] for m in per_level])) for name in sorted(names)}


class _JointCodebooks(CodebookOptions):
    """What ``ResidualVQ`` and ``AdditiveVQ`` share: stacked per-level quantizers, a joint k-means start, and the
    summed output with a straight-through (or rotation) gradient."""

    def _check_joint(self, name):
        checks.check_positive_int(f"{name}: {self._count_field}", self._count)
        checks.check_positive_int(f"{name}: codebook_size", self.codebook_size)
        checks.check_positive_int(f"{name}: dim", self.dim)
        checks.check_positive_int(f"{name}: beam_width", self.beam_width)
        self.check_options(name)
        # The levels' vectors are summed in the input space: no cosine search, projection or sampled codes.
        for field, allowed in (("metric", ("l2",)), ("estimator", ("ste", "rotation")), ("code_dim", (None,))):
            if getattr(self, field) not in allowed:
                raise ValueError(f"{name}: {field} must be one of {allowed} (the codebooks' vectors are summed); "
                                 f"got {getattr(self, field)!r}")

    def _setup_levels(self, shared: bool, **overrides):
        kwargs = option_values(self, codebook_init="random", **overrides)
        names = ["shared"] if shared else [f"level_{i}" for i in range(self._count)]
        self.quantizers = [VectorQuantizer(self.codebook_size, self.dim, **kwargs, name=n) for n in names]
        if self.codebook_init == "kmeans":
            self.initialized = self.variable(STATS, "initialized", lambda: jnp.array(False))

    def codebooks(self) -> jax.Array:
        """The codebooks searched now: float32 ``[L, K, D]``."""
        books = jnp.stack([vq.current_codebook() for vq in self.quantizers])
        return jnp.broadcast_to(books, (self._count,) + books.shape[1:])

    def _key(self):
        if self.has_rng("vq"):
            return self.make_rng("vq")
        return jax.random.fold_in(jax.random.key(1), self.quantizers[0].codebook_state.step)

    def _kmeans_start(self, x, key):
        """On the first training call, residual k-means on the batch becomes every level's codebook (a shared
        codebook takes the first level's fit, the largest-scale residuals)."""
        fresh = ~self.initialized.value
        current = lax.stop_gradient(self.codebooks())
        books, counts = lax.cond(
            fresh, lambda _: km.residual_kmeans(key, x, self._count, self.codebook_size, self.kmeans_iters,
                                                 self.chunk_size),
            lambda _: (current, jnp.ones(current.shape[:2], jnp.float32)), None)
        for vq, book, cnt in zip(self.quantizers, books, counts):
            vq.set_codes(jnp.full((self.codebook_size,), fresh), book, jnp.maximum(cnt, 1.0))
        self.initialized.value = jnp.array(True)

    def _encode_flat(self, x, codebooks):
        return multi_encode(x, codebooks, beam_width=self.beam_width, icm_iters=self._icm_iters,
                            chunk_size=self.chunk_size)

    def _quantize(self, z, train, apply_update, targets_of, dropout: float = 0.0) -> Quantized:
        name = type(self).__name__
        z = checks.as_float_array(f"{name}: z", z, last_dim=self.dim)
        x = z.reshape(-1, self.dim).astype(jnp.float32)
        mutable = train and self.is_mutable_collection(STATS) and not self.is_initializing()
        key = self._key() if mutable or (train and dropout > 0) else None
        if mutable and self.codebook_init == "kmeans":
            self._kmeans_start(lax.stop_gradient(x), jax.random.fold_in(key, 1))
        codebooks = self.codebooks()
        codes = self._encode_flat(x, codebooks)                                    # [N, L]
        target = targets_of(x, codebooks, codes)
        if len(self.quantizers) == 1 and self._count > 1:
            # One shared quantizer: a single call over all levels' targets, so its statistics update once per step.
            stacked = jnp.stack([target(i) for i in range(self._count)], axis=1)
            res = self.quantizers[0](stacked, train=train, apply_update=apply_update, codes=codes)
            loss, results = res.loss * self._count, [res]
        else:
            results = [vq(target(i), train=train, apply_update=apply_update, codes=codes[:, i])
                       for i, vq in enumerate(self.quantizers)]
            loss = sum(r.loss for r in results)
        if train and dropout > 0:
            mask = dropout_mask(jax.random.fold_in(key, 2), (x.shape[0],), self._count, dropout)
            codes = jnp.where(mask, codes, -1)
        total = decode_sum(lax.stop_gradient(codebooks), codes).reshape(z.shape)
        estimate = estimators.straight_through if self.estimator == "ste" else estimators.rotation_trick
        values = estimate(z, total.astype(z.dtype))
        return Quantized(values, codes.reshape(z.shape[:-1] + (self._count,)), loss.astype(jnp.float32),
                         _merge_metrics([r.metrics for r in results]))

    def encode(self, z: jax.Array) -> jax.Array:
        """int32 codes ``z.shape[:-1] + (L,)``."""
        z = checks.as_float_array(f"{type(self).__name__}: z", z, last_dim=self.dim)
        codes = self._encode_flat(z.reshape(-1, self.dim), self.codebooks())
        return codes.reshape(z.shape[:-1] + (self._count,))

    def decode(self, codes: jax.Array, dtype=jnp.float32) -> jax.Array:
        """``[..., dim]`` sums of the codes' vectors (code ``-1``: level absent, for dropped residual levels)."""
        name = type(self).__name__
        codes = checks.as_code_array(f"{name}: codes", codes, self.codebook_size, low=self._lowest_code)
        if codes.ndim < 1 or codes.shape[-1] != self._count:
            raise ValueError(f"{name}: codes must have shape [..., {self._count}]; got {tuple(codes.shape)}")
        return decode_sum(self.codebooks(), codes).astype(dtype)


class ResidualVQ(_JointCodebooks):
    """Residual vector quantizer (:func:`vqjax.rvq`) with a :class:`VectorQuantizer` per level.

    Attributes:
      num_levels: L.
      codebook_size: K per level.
      dim: D.
      beam_width: 1 for greedy encoding, more for beam search (never worse than greedy).
      quantizer_dropout: in training, the probability that a vector keeps only a random number of levels
        (needs the ``'vq'`` rng or uses the step counter); dropped levels' codes are ``-1``.
      shared_codebook: one codebook for all levels.
      the keyword-only :class:`~vqjax.nn.vq.CodebookOptions`: as :class:`VectorQuantizer`, per level
        (``codebook_init='kmeans'`` fits all levels jointly; ``estimator`` 'ste' or 'rotation' acts on the total).
        With ``code_dim`` or ``metric='cosine'`` the levels are factorised as in DAC (Kumar et al. 2023): level
        ``l`` projects its residual to ``code_dim``, searches there (l2-normalised with 'cosine'), projects the
        code back and passes on ``r_{l+1} = r_l - q_l``; encoding is then greedy (``beam_width`` 1), every level
        starts its own k-means and the gradient reaches ``z`` through each level's estimator.

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

    _count_field = "num_levels"
    _icm_iters = 0
    _lowest_code = -1

    @property
    def _count(self) -> int:
        return self.num_levels

    @property
    def factorized(self) -> bool:
        """Levels search projected (``code_dim``) or l2-normalised (``metric='cosine'``) codes, DAC-style."""
        return self.code_dim is not None or self.metric == "cosine"

    def setup(self):
        checks.check_probability("ResidualVQ: quantizer_dropout", self.quantizer_dropout, open_right=False)
        if not self.factorized:
            self._check_joint("ResidualVQ")
            self._setup_levels(self.shared_codebook)
            return
        for field, value in (("num_levels", self.num_levels), ("codebook_size", self.codebook_size),
                             ("dim", self.dim)):
            checks.check_positive_int(f"ResidualVQ: {field}", value)
        self.check_options("ResidualVQ")
        if self.beam_width != 1 or self.shared_codebook or self.estimator not in ("ste", "rotation"):
            raise ValueError(f"ResidualVQ: factorised levels (code_dim={self.code_dim}, metric={self.metric!r}) "
                             f"need beam_width=1, shared_codebook=False and estimator 'ste' or 'rotation'; got "
                             f"{self.beam_width}, {self.shared_codebook}, {self.estimator!r}")
        self.quantizers = [VectorQuantizer(self.codebook_size, self.dim, **option_values(self), name=f"level_{i}")
                           for i in range(self.num_levels)]

    def codebooks(self) -> jax.Array:
        """The codebooks searched now: float32 ``[L, K, D]`` (``[L, K, code_dim]`` when factorised)."""
        if self.factorized:
            return jnp.stack([vq.current_codebook() for vq in self.quantizers])
        return super().codebooks()

    def __call__(self, z: jax.Array, *, train: bool = False, apply_update: bool = True) -> Quantized:
        """Quantizes ``z [..., dim]``: codes int32 ``z.shape[:-1] + (num_levels,)``."""
        if not self.factorized:
            return self._quantize(z, train, apply_update, residual_targets, self.quantizer_dropout)
        z = checks.as_float_array("ResidualVQ: z", z, last_dim=self.dim)
        residual, results = z.astype(jnp.float32), []
        for vq in self.quantizers:
            results.append(vq(residual, train=train, apply_update=apply_update))
            residual = residual - results[-1].values
        codes = jnp.stack([r.codes for r in results], axis=-1)
        keep = jnp.ones(codes.shape, bool)
        if train and self.quantizer_dropout > 0:
            keep = dropout_mask(jax.random.fold_in(self._key(), 2), z.shape[:-1], self.num_levels,
                                self.quantizer_dropout)
            codes = jnp.where(keep, codes, -1)
        total = 0.0                                   # summed level by level, as decode does
        for i, r in enumerate(results):
            total = total + jnp.where(keep[..., i, None], r.values, 0.0)
        loss = sum(r.loss for r in results)
        return Quantized(total.astype(z.dtype), codes, loss.astype(jnp.float32),
                         _merge_metrics([r.metrics for r in results]))

    def _key(self):
        if self.factorized and self.has_rng("vq"):
            return self.make_rng("vq")
        if self.factorized:
            return jax.random.fold_in(jax.random.key(1), self.quantizers[0].codebook_state.step)
        return super()._key()

    def encode(self, z: jax.Array) -> jax.Array:
        """int32 codes ``z.shape[:-1] + (num_levels,)``."""
        if not self.factorized:
            return super().encode(z)
        residual = checks.as_float_array("ResidualVQ: z", z, last_dim=self.dim).astype(jnp.float32)
        codes = []
        for vq in self.quantizers:
            codes.append(vq.encode(residual))
            residual = residual - vq.decode(codes[-1])
        return jnp.stack(codes, axis=-1)

    def decode(self, codes: jax.Array, dtype=jnp.float32) -> jax.Array:
        """``[..., dim]`` sums of the codes' vectors (code ``-1``: level absent, for dropped residual levels)."""
        if not self.factorized:
            return super().decode(codes, dtype)
        codes = checks.as_code_array("ResidualVQ: codes", codes, self.codebook_size, low=-1)
        if codes.ndim < 1 or codes.shape[-1] != self.num_levels:
            raise ValueError(f"ResidualVQ: codes must have shape [..., {self.num_levels}]; got {tuple(codes.shape)}")
        total = 0.0
        for i, vq in enumerate(self.quantizers):
            c = codes[..., i]
            total = total + jnp.where((c >= 0)[..., None], vq.decode(jnp.maximum(c, 0)), 0.0)
        return jnp.asarray(total).astype(dtype)


class AdditiveVQ(_JointCodebooks):
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
      the keyword-only :class:`~vqjax.nn.vq.CodebookOptions`: as :class:`ResidualVQ`.
    """

    num_codebooks: int
    codebook_size: int
    dim: int
    beam_width: int = 4
    icm_iters: int = 0

    _count_field = "num_codebooks"
    _lowest_code = 0

    @property
    def _count(self) -> int:
        return self.num_codebooks

    @property
    def _icm_iters(self) -> int:
        return self.icm_iters

    def setup(self):
        self._check_joint("AdditiveVQ")
        if isinstance(self.icm_iters, bool) or not isinstance(self.icm_iters, int) or self.icm_iters < 0:
            raise ValueError(f"AdditiveVQ: icm_iters must be a non-negative int; got {self.icm_iters!r}")
        self._setup_levels(False, beta=self.beta / self.num_codebooks)

    def __call__(self, z: jax.Array, *, train: bool = False, apply_update: bool = True) -> Quantized:
        """Quantizes ``z [..., dim]``: codes int32 ``z.shape[:-1] + (num_codebooks,)``."""
        return self._quantize(z, train, apply_update, additive_targets)


class ProductVQ(CodebookOptions):
    """Product vector quantizer (:func:`vqjax.pq`): ``z`` split into ``num_groups`` sub-vectors, each quantized by
    its own :class:`VectorQuantizer` (or one shared quantizer: grouped / multi-head VQ).

    Every :class:`~vqjax.nn.vq.CodebookOptions` applies per group, including ``metric``, ``estimator`` (with
    'gumbel'), ``code_dim`` and ``codebook_init='kmeans'``. Codes are int32 ``z.shape[:-1] + (num_groups,)``; the
    loss is the mean of the groups' losses.

    Attributes:
      num_groups: G (must divide ``dim``).
      codebook_size: K per group.
      dim: D.
      shared_codebook: one quantizer for all groups.
      the keyword-only options: as :class:`VectorQuantizer`, per group (on sub-vectors of ``dim // num_groups``).
    """

    num_groups: int
    codebook_size: int
    dim: int
    shared_codebook: bool = False

    def setup(self):
        checks.check_positive_int("ProductVQ: num_groups", self.num_groups)
        checks.check_positive_int("ProductVQ: dim", self.dim)
        checks.check_positive_int("ProductVQ: codebook_size", self.codebook_size)
        if self.dim % self.num_groups:
            raise ValueError(f"ProductVQ: num_groups must divide dim = {self.dim}; got {self.num_groups}")
        self.check_options("ProductVQ")
        names = ["shared"] if self.shared_codebook else [f"group_{g}" for g in range(self.num_groups)]
        self.quantizers = [VectorQuantizer(self.codebook_size, self.dim // self.num_groups, **option_values(self),
                                           name=n) for n in names]

    def _split(self, z):
        return split_groups(checks.as_float_array("ProductVQ: z", z, last_dim=self.dim), self.num_groups)

    def __call__(self, z: jax.Array, *, train: bool = False, apply_update: bool = True) -> Quantized:
        """Quantizes ``z [..., dim]``: codes int32 ``z.shape[:-1] + (num_groups,)``."""
        zg = self._split(z)
        if self.shared_codebook:
            q = self.quantizers[0](zg, train=train, apply_update=apply_update)
            return q._replace(values=merge_groups(q.values))
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
            return merge_groups(self.quantizers[0].decode(codes, dtype))
        return jnp.concatenate([vq.decode(codes[..., g], dtype) for g, vq in enumerate(self.quantizers)], axis=-1)
