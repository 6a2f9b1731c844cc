"""Vector quantization (van den Oord et al. 2017, "Neural Discrete Representation Learning").

``vq(z, codebook)`` maps each vector of ``z [..., D]`` to its nearest code in ``codebook [K, D]`` (memory-bounded
chunked search), passes gradients through the chosen estimator, and returns the weighted auxiliary loss and usage
metrics as a :class:`vqjax.Quantized`. ``vq_encode`` / ``vq_decode`` are the two halves, with
``vq_decode(vq_encode(z, c), c, dtype=z.dtype) == vq(z, c).values`` bit for bit (deterministic estimators).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vqjax import checks, estimators, indexing, metrics, regularizers, search
from vqjax.quantizers.base import Quantized

__all__ = ["ESTIMATORS", "vq", "vq_encode", "vq_decode"]

ESTIMATORS = ("ste", "rotation", "gumbel")


def _inputs(z, codebook, metric, fn):
    z = checks.as_float_array(f"{fn}: z", z)
    codebook = search.check_codebook(f"{fn}: codebook", codebook, z.shape[-1])
    checks.check_choice(f"{fn}: metric", metric, search.METRICS)
    return z, codebook


def _search_space(z, codebook, metric):
    """(z, codebook) in the space where codes live: l2-normalised for cosine, unchanged for l2."""
    if metric == "cosine":
        return search.l2_normalize(z), search.l2_normalize(codebook.astype(jnp.float32))
    return z, codebook


def vq_encode(z: jax.Array, codebook: jax.Array, *, metric: str = "l2", chunk_size: int | None = None
              ) -> jax.Array:
    """Nearest-code indices: int32 ``z.shape[:-1]``. See :func:`vq`."""
    z, codebook = _inputs(z, codebook, metric, "vq_encode")
    return search.nearest_code(z, codebook, metric=metric, chunk_size=chunk_size).codes


def vq_decode(codes: jax.Array, codebook: jax.Array, *, metric: str = "l2", dtype=None) -> jax.Array:
    """Code vectors ``codebook[codes]`` (l2-normalised for ``metric='cosine'``): ``codes.shape + (D,)``.

    Args:
      codes: integer array of indices in ``[0, K)`` (checked when concrete).
      codebook: ``[K, D]``.
      metric: the metric used to encode ('cosine' decodes to unit vectors).
      dtype: output dtype; default ``codebook.dtype``. Pass ``z.dtype`` to reproduce ``vq(z).values`` exactly.
    """
    codebook = search.check_codebook("vq_decode: codebook", codebook)
    checks.check_choice("vq_decode: metric", metric, search.METRICS)
    codes = checks.as_code_array("vq_decode: codes", codes, codebook.shape[0])
    table = search.l2_normalize(codebook.astype(jnp.float32)) if metric == "cosine" else codebook
    return indexing.gather_rows(table, codes).astype(dtype or codebook.dtype)


def vq(z: jax.Array, codebook: jax.Array, *, metric: str = "l2", estimator: str = "ste", beta: float = 0.25,
       codebook_weight: float = 1.0, entropy_weight: float = 0.0, entropy_temperature: float = 0.01,
       diversity_weight: float = 1.0, gumbel_temperature: float = 1.0, key: jax.Array | None = None,
       chunk_size: int | None = None, check_finite: bool = False, codes: jax.Array | None = None) -> Quantized:
    """Vector-quantizes ``z`` with ``codebook``.

    Forward: ``codes = argmin_k d(z, c_k)`` (chunked, never ``N x K``); ``values = c[codes]`` in ``z.dtype``
    (unit vectors for ``metric='cosine'``, where z and the codes are l2-normalised first).

    Gradient estimators:
      * ``'ste'``: straight-through, ``dvalues/dz = I``.
      * ``'rotation'``: the rotation trick, ``dL/dz = |q|/|z| Rᵀ g``.
      * ``'gumbel'``: codes are the hard Gumbel-max sample of ``softmax(-d)`` (needs ``key``), values are the
        exact codes in the forward pass and carry the gradient of the relaxed sample
        ``Σ_k softmax((-d_k + g_k)/gumbel_temperature) c_k`` (reaching z and the codebook).

    Loss (float32 scalar, already weighted)::

        codebook_weight * mean|sg(z) - q|² + beta * mean|z - sg(q)|²
          + entropy_weight * (mean_i H(p_i) - diversity_weight * H(mean_i p_i)),  p = softmax(-d / entropy_temperature)

    Use ``codebook_weight=0`` when the codebook is learned by EMA (``vqjax.codebook.ema_update``).

    Args:
      z: ``[..., D]`` floating (bf16/f16/f32; arithmetic in float32, values returned in ``z.dtype``).
      codebook: ``[K, D]`` floating.
      metric: 'l2' or 'cosine'.
      estimator: 'ste', 'rotation' or 'gumbel'.
      beta: commitment weight (>= 0).
      codebook_weight: weight of the codebook loss (>= 0).
      entropy_weight: weight of the entropy regulariser (>= 0; 0 skips its two chunked passes).
      entropy_temperature: its softmax temperature (> 0).
      diversity_weight: weight of the codebook-entropy term inside it.
      gumbel_temperature: Gumbel-softmax temperature (> 0).
      key: PRNG key, required by ``estimator='gumbel'``.
      chunk_size: codes per search step (default ``min(K, 4096)``).
      check_finite: refuse NaN/Inf in ``z`` and ``codebook`` (see ``vqjax.checks.assert_finite``).
      codes: optional int ``z.shape[:-1]`` assignment chosen elsewhere (e.g. by the joint beam search of
        residual or additive quantization); the search is skipped and these codes are used as given.

    Returns:
      :class:`vqjax.Quantized` with codes int32 ``z.shape[:-1]`` and metrics 'perplexity', 'usage',
      'commitment', 'codebook_loss' (and 'sample_entropy', 'codebook_entropy' when ``entropy_weight > 0``).

    Raises:
      TypeError / ValueError: integer/complex/rank-0 z, a codebook not ``[K, D]`` with K >= 1 and z's D,
        unknown metric or estimator, negative weights, non-positive temperatures or sizes, gumbel without key.

    Example:
      >>> q = vqjax.vq(z, codebook, estimator='rotation')
      >>> loss = task_loss(decoder(q.values)) + q.loss
    """
    z, codebook = _inputs(z, codebook, metric, "vq")
    checks.check_choice("vq: estimator", estimator, ESTIMATORS)
    for name, value in (("beta", beta), ("codebook_weight", codebook_weight), ("entropy_weight", entropy_weight),
                        ("diversity_weight", diversity_weight)):
        checks.check_nonnegative(f"vq: {name}", value)
    for name, value in (("entropy_temperature", entropy_temperature), ("gumbel_temperature", gumbel_temperature)):
        if checks.check_nonnegative(f"vq: {name}", value) == 0:
            raise ValueError(f"vq: {name} must be > 0; got {value}")
    if codes is not None:
        if estimator == "gumbel":
            raise ValueError("vq: estimator='gumbel' samples its own codes; it cannot take given codes")
        codes = checks.as_code_array("vq: codes", codes, codebook.shape[0])
        if codes.shape != z.shape[:-1]:
            raise ValueError(f"vq: codes must have shape z.shape[:-1] = {tuple(z.shape[:-1])}; got {tuple(codes.shape)}")
    if estimator == "gumbel" and key is None:
        raise ValueError("vq: estimator='gumbel' samples codes and needs key=jax.random.key(...); got key=None")
    if check_finite:
        z = checks.assert_finite("vq: z", z)
        codebook = checks.assert_finite("vq: codebook", codebook)

    num_codes = codebook.shape[0]
    zs, table = _search_space(z, codebook, metric)
    if estimator == "gumbel":
        soft = regularizers.soft_quantize(z, codebook, temperature=1.0, metric=metric, key=key,
                                          gumbel_temperature=gumbel_temperature, chunk_size=chunk_size)
        codes = soft.codes
        q = indexing.gather_rows(table, codes)
        values = estimators.straight_through(soft.values.astype(z.dtype), q.astype(z.dtype))
    else:
        if codes is None:
            codes = search.nearest_code(z, codebook, metric=metric, chunk_size=chunk_size).codes
        q = indexing.gather_rows(table, codes)
        estimate = estimators.straight_through if estimator == "ste" else estimators.rotation_trick
        values = estimate(zs, q.astype(z.dtype))

    commit = regularizers.commitment_loss(zs, q)
    cb_loss = regularizers.codebook_loss(zs, q)
    loss = codebook_weight * cb_loss + beta * commit
    stats = metrics.code_metrics(codes, num_codes)
    stats.update(commitment=commit, codebook_loss=cb_loss)
    if entropy_weight > 0:
        ent = regularizers.entropy_loss(z, codebook, temperature=entropy_temperature,
                                        diversity_weight=diversity_weight, metric=metric, chunk_size=chunk_size)
        loss = loss + entropy_weight * ent.loss
        stats.update(sample_entropy=ent.sample_entropy, codebook_entropy=ent.codebook_entropy)
    return Quantized(values, codes, loss.astype(jnp.float32), stats)
