"""Layer 2: one pure-function quantizer family per module (no Flax)."""

from vqjax.quantizers.base import Quantized
from vqjax.quantizers.vq import ESTIMATORS, vq, vq_decode, vq_encode

__all__ = ["Quantized", "ESTIMATORS", "vq", "vq_encode", "vq_decode"]
