"""vqjax: discrete tokenizers in JAX.

Pure quantizer functions with custom gradients (layer 2), their building blocks (layer 1: estimators, chunked
search, codebook state, regularisers, metrics) and Flax modules (``vqjax.nn``). The layers and the public
contract are described in ``docs/design.md``.
"""

import importlib

from vqjax import checks, codebook, estimators, indexing, metrics, regularizers, search
from vqjax.estimators import gumbel_softmax, rotation_trick, straight_through
from vqjax.quantizers import (
    Quantized,
    aq,
    aq_decode,
    aq_encode,
    bsq,
    bsq_decode,
    bsq_encode,
    fit_aq,
    fit_pq,
    fit_rvq,
    fsq,
    fsq_decode,
    fsq_encode,
    grouped_bsq,
    grouped_bsq_decode,
    grouped_bsq_encode,
    grouped_fsq,
    grouped_fsq_decode,
    grouped_fsq_encode,
    grouped_lfq,
    grouped_lfq_decode,
    grouped_lfq_encode,
    lfq,
    lfq_decode,
    lfq_encode,
    pq,
    pq_decode,
    pq_encode,
    residual_fsq,
    residual_fsq_decode,
    residual_fsq_encode,
    residual_lfq,
    residual_lfq_decode,
    residual_lfq_encode,
    rvq,
    rvq_decode,
    rvq_encode,
    vq,
    vq_decode,
    vq_encode,
)
from vqjax.search import nearest_code
from vqjax.version import __version__ as __version__

__all__ = [
    "Quantized",
    "vq",
    "vq_encode",
    "vq_decode",
    "rvq", "rvq_encode", "rvq_decode", "fit_rvq",
    "residual_fsq", "residual_fsq_encode", "residual_fsq_decode",
    "residual_lfq", "residual_lfq_encode", "residual_lfq_decode",
    "pq", "pq_encode", "pq_decode", "fit_pq",
    "grouped_fsq", "grouped_fsq_encode", "grouped_fsq_decode",
    "grouped_lfq", "grouped_lfq_encode", "grouped_lfq_decode",
    "grouped_bsq", "grouped_bsq_encode", "grouped_bsq_decode",
    "aq", "aq_encode", "aq_decode", "fit_aq",
    "fsq", "fsq_encode", "fsq_decode",
    "lfq", "lfq_encode", "lfq_decode",
    "bsq", "bsq_encode", "bsq_decode",
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
_TOKENIZERS = ("Tokenizer", "ImageTokenizer", "AudioTokenizer", "VideoTokenizer", "TimeSeriesTokenizer",
               "SemanticIdTokenizer", "GraphTokenizer")
__all__ += [*_TOKENIZERS, "nn", "models", "train"]

_LAZY_MODULES = ("nn", "models", "graph", "tokenizers", "data", "evals", "train", "lm")


def __getattr__(name):
    # Flax modules, models, the trainer and the tokenizer artifact (orbax, flax) load on first use, so that
    # ``import vqjax`` stays light: ``vqjax.nn.VectorQuantizer`` and ``vqjax.Tokenizer`` work without an import.
    if name in _TOKENIZERS:
        return getattr(importlib.import_module("vqjax.tokenizers"), name)
    if name in _LAZY_MODULES:
        try:
            return importlib.import_module(f"vqjax.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"vqjax.{name}":
                raise
    raise AttributeError(f"module 'vqjax' has no attribute {name!r}")
