"""Layer 2: one pure-function quantizer family per module (no Flax).

``compose`` holds the residual and grouped combinators that build the multi-codebook forms from any family's
pure functions; ``multisearch`` the greedy/beam/ICM multi-codebook search shared by RVQ, AQ and their modules.
"""

from vqjax.quantizers.aq import aq, aq_decode, aq_encode, fit_aq
from vqjax.quantizers.base import Quantized
from vqjax.quantizers.bsq import bsq, bsq_decode, bsq_encode
from vqjax.quantizers.fsq import fsq, fsq_decode, fsq_encode
from vqjax.quantizers.lfq import lfq, lfq_decode, lfq_encode
from vqjax.quantizers.pq import (
                                 fit_pq,
                                 grouped_bsq,
                                 grouped_bsq_decode,
                                 grouped_bsq_encode,
                                 grouped_fsq,
                                 grouped_fsq_decode,
                                 grouped_fsq_encode,
                                 grouped_lfq,
                                 grouped_lfq_decode,
                                 grouped_lfq_encode,
                                 pq,
                                 pq_decode,
                                 pq_encode,
)
from vqjax.quantizers.rvq import (
                                 fit_rvq,
                                 residual_fsq,
                                 residual_fsq_decode,
                                 residual_fsq_encode,
                                 residual_lfq,
                                 residual_lfq_decode,
                                 residual_lfq_encode,
                                 rvq,
                                 rvq_decode,
                                 rvq_encode,
)
from vqjax.quantizers.vq import ESTIMATORS, vq, vq_decode, vq_encode

__all__ = [
    "Quantized", "ESTIMATORS",
    "vq", "vq_encode", "vq_decode",
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
]
