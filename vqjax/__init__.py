"""vqjax: discrete tokenizers in JAX.

Pure quantizer functions with custom gradients (layer 2), their building blocks (layer 1: estimators, chunked
search, codebook state, regularisers, metrics) and Flax modules (``vqjax.nn``). See ``shared/DESIGN.md`` for the
public contract.
"""

from vqjax import checks, codebook, estimators, indexing, metrics, regularizers, search
from vqjax.estimators import gumbel_softmax, rotation_trick, straight_through
from vqjax.quantizers import Quantized, vq, vq_decode, vq_encode
from vqjax.search import nearest_code

__version__ = "0.1.0"

__all__ = [
    "Quantized",
    "vq",
    "vq_encode",
    "vq_decode",
    "straight_through",
    "rotation_trick",
    "gumbel_softmax",
    "nearest_code",
    "checks",
    "codebook",
    "estimators",
    "indexing",
    "metrics",
    "regularizers",
    "search",
]
