"""The result type shared by every quantizer family."""

from __future__ import annotations

from typing import NamedTuple

import jax

__all__ = ["Quantized"]


class Quantized(NamedTuple):
    """What every quantizer returns (``vqjax.Quantized``).

    Attributes:
      values: ``z.shape``, ``z.dtype``: quantized vectors; gradients reach ``z`` through the chosen estimator.
      codes: int32; ``z.shape[:-1]`` for one codebook, ``z.shape[:-1] + (num_codebooks,)`` for rvq/pq/aq and
        grouped forms.
      loss: float32 scalar: the quantizer's auxiliary loss, already weighted; add it to the task loss.
      metrics: dict of float32 scalars; at least 'perplexity' and 'usage' (fraction of the codebook used in
        this call).
    """

    values: jax.Array
    codes: jax.Array
    loss: jax.Array
    metrics: dict
