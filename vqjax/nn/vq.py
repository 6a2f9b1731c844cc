"""``VectorQuantizer``: the Flax linen module around :func:`vqjax.vq` and the codebook remedies.

The module owns the codebook (a parameter, or an EMA codebook) and its :class:`vqjax.codebook.CodebookState` in the
``vq_stats`` collection, and calls layer 1 and 2 for everything else: the search and losses are :func:`vqjax.vq`,
the remedies are the :class:`vqjax.codebook.CodebookTransform` chain of :func:`vqjax.codebook.remedies`.
:class:`CodebookOptions` declares the per-codebook options once; the multi-codebook modules inherit them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from vqjax import checks, metrics, regularizers, search
from vqjax import codebook as cbk
from vqjax.quantizers.base import Quantized
from vqjax.quantizers.vq import ESTIMATORS, vq, vq_decode, vq_encode

__all__ = ["VectorQuantizer", "CodebookOptions", "CODEBOOK_LEARNING", "CODEBOOK_INITS", "STATS", "option_values"]

CODEBOOK_LEARNING = ("gradient", "ema", "simvq")
CODEBOOK_INITS = ("random", "kmeans")
STATS = "vq_stats"


class CodebookOptions(nn.Module):
    """The options of one learned codebook, declared once (keyword-only) and shared by :class:`VectorQuantizer`
    and the multi-codebook modules (``ResidualVQ``, ``ProductVQ``, ``AdditiveVQ``), which pass them to a
    ``VectorQuantizer`` per codebook. See :class:`VectorQuantizer` for their meaning."""

    _: dataclasses.KW_ONLY
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
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @property
    def vocab_size(self) -> int:
        """Distinct values of one code: the codebook size ``K`` (per level, group or codebook)."""
        return self.codebook_size

    def check_options(self, name: str) -> None:
        """Refuses bad option values with a message naming ``name`` and the field."""
        checks.check_choice(f"{name}: codebook_learning", self.codebook_learning, CODEBOOK_LEARNING)
        checks.check_choice(f"{name}: metric", self.metric, search.METRICS)
        checks.check_choice(f"{name}: estimator", self.estimator, ESTIMATORS)
        checks.check_choice(f"{name}: codebook_init", self.codebook_init, CODEBOOK_INITS)
        checks.check_probability(f"{name}: decay", self.decay)
        for field in ("beta", "dead_code_threshold", "entropy_weight", "diversity_weight", "orthogonal_weight"):
            checks.check_nonnegative(f"{name}: {field}", getattr(self, field))
        for field in ("eps", "entropy_temperature", "gumbel_temperature"):
            if checks.check_nonnegative(f"{name}: {field}", getattr(self, field)) == 0:
                raise ValueError(f"{name}: {field} must be > 0; got {getattr(self, field)}")
        if isinstance(self.kmeans_iters, bool) or not isinstance(self.kmeans_iters, int) or self.kmeans_iters < 0:
            raise ValueError(f"{name}: kmeans_iters must be a non-negative int; got {self.kmeans_iters!r}")
        if self.code_dim is not None:
            checks.check_positive_int(f"{name}: code_dim", self.code_dim)
        if self.chunk_size is not None:
            checks.check_positive_int(f"{name}: chunk_size", self.chunk_size)


OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(CodebookOptions) if f.name not in ("parent", "name"))


def option_values(module: CodebookOptions, **overrides) -> dict:
    """``{option: value}`` of ``module``'s :class:`CodebookOptions`, with ``overrides``."""
    return {**{name: getattr(module, name) for name in OPTION_FIELDS}, **overrides}


class VectorQuantizer(CodebookOptions):
    """Vector quantizer with a learned codebook and the usual remedies against codebook collapse.

    Called as ``module.apply(variables, z, train=..., mutable=['vq_stats'], rngs={'vq': key})`` and returns a
    :class:`vqjax.Quantized`. ``encode(z) -> codes`` and ``decode(codes) -> values`` (via ``method=``) give
    ``decode(encode(z)) == module(z, train=False).values`` exactly.

    Codebook learning (``codebook_learning``):
      * ``'gradient'``: the codebook is a parameter trained by the codebook loss (van den Oord et al. 2017).
      * ``'ema'``: exponential moving averages of assignments (``vqjax.codebook.ema_update``), kept in the
        ``vq_stats`` collection; no codebook loss.
      * ``'simvq'``: ``C = basis @ W`` with a frozen random basis (in ``vq_stats``) and a learned ``W``
        (Zhu et al. 2024).

    Remedies: ``codebook_init='kmeans'`` fits the codebook to the first training batch (k-means++ and ``kmeans_iters``
    Lloyd steps); ``dead_code_threshold > 0`` re-seeds codes whose usage EMA (expected uses per step, decay
    ``decay``) falls below it with batch vectors drawn in proportion to their quantization error;
    ``entropy_weight`` adds the chunked entropy regulariser; ``orthogonal_weight`` the orthogonality loss;
    ``code_dim`` searches in a low-dimensional projected space (factorised codes, ViT-VQGAN/DAC; combine with
    ``metric='cosine'`` for their l2-normalised lookup). The codebook's statistics are one
    :class:`vqjax.codebook.CodebookState` in ``vq_stats['codebook_state']``, updated by the remedy chain of
    :func:`vqjax.codebook.remedies`; for the ``'gradient'`` and ``'simvq'`` forms, k-means and dead-code
    re-seeding write its ``codebook`` field as an additive offset (``codebook = learned + offset``), the
    pure-functional equivalent of overwriting those rows in place.

    In training, codebook statistics change only when the ``vq_stats`` collection is mutable. With gradient
    accumulation pass ``apply_update=False`` on all but the last micro-batch: EMA statistics accumulate and fold
    in together. Randomness (k-means seeding, re-seeding, Gumbel sampling) comes from the ``'vq'`` rng stream,
    or, when none is given, from a key derived from a step counter.

    Attributes (all but the first two are keyword-only :class:`CodebookOptions`):
      codebook_size: K (> 0).
      dim: D of the input's last axis (> 0).
      codebook_learning: 'gradient', 'ema' or 'simvq'.
      metric: 'l2' or 'cosine'.
      estimator: 'ste', 'rotation' or 'gumbel' (gumbel samples only when ``train``; evaluation is nearest-code).
      beta: commitment weight.
      decay: EMA decay of codebook statistics and usage.
      eps: Laplace smoothing of the EMA codebook.
      codebook_init: 'random' or 'kmeans'.
      kmeans_iters: Lloyd iterations for ``codebook_init='kmeans'``.
      dead_code_threshold: usage EMA below which a code is re-seeded (0 disables).
      entropy_weight, entropy_temperature, diversity_weight: the entropy regulariser.
      orthogonal_weight: weight of the orthogonality loss on the codebook.
      code_dim: search dimension for factorised codes (None: search in ``dim``).
      gumbel_temperature: Gumbel-softmax temperature.
      chunk_size: codes per search step.
      check_finite: refuse NaN/Inf inputs.
      dtype: compute dtype of the ``code_dim`` projections (None: from their input and parameters); the search,
        losses and codebook updates run in float32 whatever it is, and the values come back in ``z``'s dtype.
      param_dtype: storage dtype of the learned codebook and projections (float32; the ``vq_stats`` statistics
        are always float32).
    """

    codebook_size: int
    dim: int

    def _validate(self):
        checks.check_positive_int("VectorQuantizer: codebook_size", self.codebook_size)
        checks.check_positive_int("VectorQuantizer: dim", self.dim)
        self.check_options("VectorQuantizer")

    def setup(self):
        self._validate()
        k, cd = self.codebook_size, self.search_dim
        if self.code_dim is not None:
            self.project_in = nn.Dense(cd, dtype=self.dtype, param_dtype=self.param_dtype, name="project_in")
            self.project_out = nn.Dense(self.dim, dtype=self.dtype, param_dtype=self.param_dtype, name="project_out")
        if self.codebook_learning == "gradient":
            self.codebook = self.param("codebook", nn.initializers.normal(1.0), (k, cd), self.param_dtype)
        elif self.codebook_learning == "simvq":
            self.basis = self.variable(STATS, "basis", lambda: cbk.simvq_init(self.make_rng("params"), k, cd)[0])
            self.projection = self.param("projection", lambda _, shape, dtype: jnp.eye(shape[0], dtype=dtype), (cd, cd),
                                         self.param_dtype)
        self.remedies = cbk.remedies(learning=self.codebook_learning, decay=self.decay, eps=self.eps,
                                     kmeans_iters=self.kmeans_iters if self.codebook_init == "kmeans" else None,
                                     dead_code_threshold=self.dead_code_threshold, chunk_size=self.chunk_size)

        def fresh_state():
            if self.codebook_learning == "ema":
                start = jax.random.normal(self.make_rng("params"), (k, cd), jnp.float32)
            else:
                start = jnp.zeros((k, cd), jnp.float32)
            return self.remedies.init(cbk.codebook_state(start, ema=self.codebook_learning == "ema"))

        self.state = self.variable(STATS, "codebook_state", fresh_state)

    @property
    def codebook_state(self) -> cbk.CodebookState:
        """The current :class:`vqjax.codebook.CodebookState` (also from its dict form in restored variables)."""
        return cbk.as_codebook_state(self.state.value)

    @property
    def search_dim(self) -> int:
        return self.code_dim or self.dim

    def _learned_codebook(self) -> jax.Array | None:
        """The learned part of the codebook (None for EMA codebooks)."""
        if self.codebook_learning == "gradient":
            return self.codebook.astype(jnp.float32)
        if self.codebook_learning == "simvq":
            return cbk.simvq_codebook(self.basis.value, self.projection.astype(jnp.float32))
        return None

    def current_codebook(self) -> jax.Array:
        """The codebook searched now: float32 ``[K, search_dim]``."""
        return cbk.searched_codebook(self.codebook_state, self._learned_codebook())

    def _key(self) -> jax.Array:
        if self.has_rng("vq"):
            return self.make_rng("vq")
        return jax.random.fold_in(jax.random.key(0), self.codebook_state.step)

    def _project_in(self, z):
        z = checks.as_float_array("VectorQuantizer: z", z, last_dim=self.dim)
        return self.project_in(z) if self.code_dim is not None else z

    def _search_space(self, zc):
        return search.l2_normalize(zc.astype(jnp.float32)) if self.metric == "cosine" else zc.astype(jnp.float32)

    def set_codes(self, mask: jax.Array, vectors: jax.Array, count) -> None:
        """Overwrites the codes where ``mask [K]`` with ``vectors [K, search_dim]`` and usage count ``count``
        (:func:`vqjax.codebook.set_codes`).

        How container modules (``ResidualVQ``, ``AdditiveVQ``) write a jointly fitted k-means start into each
        level; needs the ``vq_stats`` collection mutable.
        """
        self.state.value = cbk.set_codes(self.codebook_state, mask, vectors, count, self._learned_codebook())

    def __call__(self, z: jax.Array, *, train: bool = False, apply_update: bool = True,
                 codes: jax.Array | None = None) -> Quantized:
        """Quantizes ``z [..., dim]``; see the class docstring. Returns :class:`vqjax.Quantized`.

        ``codes`` (optional, int ``z.shape[:-1]``) imposes an assignment found elsewhere (the joint beam search of
        residual and additive quantizers); losses, statistics and remedies then follow those codes.
        """
        zc = self._project_in(z)
        mutable = train and self.is_mutable_collection(STATS) and not self.is_initializing()
        needs_state = self.codebook_learning == "ema" or self.codebook_init == "kmeans" or self.dead_code_threshold > 0
        if train and needs_state and not mutable and not self.is_initializing():
            raise ValueError(
                "VectorQuantizer: training with codebook_learning='ema', codebook_init='kmeans' or dead_code_threshold > 0 "
                f"updates the '{STATS}' collection; call apply(..., train=True, mutable=['{STATS}'])")
        zs = self._search_space(zc)
        flat = lax.stop_gradient(zs.reshape(-1, zs.shape[-1]))
        key = self._key() if mutable or (train and self.estimator == "gumbel") else None
        learned = self._learned_codebook()
        if mutable:
            frozen = None if learned is None else lax.stop_gradient(learned)
            self.state.value = self.remedies.start(self.codebook_state, flat, jax.random.fold_in(key, 1), frozen)

        codebook = self.current_codebook()
        estimator = self.estimator if train or self.estimator != "gumbel" else "ste"
        q = vq(zc, codebook, metric=self.metric, estimator=estimator, beta=self.beta,
               codebook_weight=0.0 if self.codebook_learning == "ema" else 1.0,
               entropy_weight=self.entropy_weight, entropy_temperature=self.entropy_temperature,
               diversity_weight=self.diversity_weight, gumbel_temperature=self.gumbel_temperature,
               key=None if key is None else jax.random.fold_in(key, 2), chunk_size=self.chunk_size,
               check_finite=self.check_finite, codes=codes)
        loss, stats = q.loss, dict(q.metrics)
        if self.orthogonal_weight > 0:
            ortho = regularizers.orthogonal_loss(codebook)
            loss = loss + self.orthogonal_weight * ortho
            stats["orthogonal"] = ortho

        if mutable:
            values = lax.stop_gradient(q.values).reshape(flat.shape).astype(jnp.float32)
            batch = cbk.CodebookBatch(x=flat, codes=lax.stop_gradient(q.codes).reshape(-1),
                                      errors=jnp.sum((flat - values) ** 2, axis=-1),
                                      learned=None if learned is None else lax.stop_gradient(learned),
                                      apply=apply_update)
            self.state.value = self.remedies.update(self.codebook_state, batch, jax.random.fold_in(key, 3))
        if self.dead_code_threshold > 0:
            stats["dead_codes"] = metrics.dead_code_count(self.codebook_state.usage, self.dead_code_threshold)

        values = self.project_out(q.values) if self.code_dim is not None else q.values
        return Quantized(values.astype(z.dtype), q.codes, loss, stats)

    def encode(self, z: jax.Array) -> jax.Array:
        """int32 codes ``z.shape[:-1]`` of the nearest codes."""
        return vq_encode(self._project_in(z), self.current_codebook(), metric=self.metric,
                         chunk_size=self.chunk_size)

    def decode(self, codes: jax.Array, dtype=jnp.float32) -> jax.Array:
        """``[..., dim]`` vectors of ``codes`` (after ``project_out`` with ``code_dim``), in ``dtype``."""
        if self.code_dim is None:
            return vq_decode(codes, self.current_codebook(), metric=self.metric, dtype=dtype)
        values = vq_decode(codes, self.current_codebook(), metric=self.metric, dtype=jnp.float32)
        return self.project_out(values).astype(dtype)
