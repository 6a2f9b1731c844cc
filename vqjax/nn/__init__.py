"""Layer 3: Flax linen modules that own codebook parameters and statistics and call the pure quantizers."""

from vqjax.nn.multi import AdditiveVQ, ProductVQ, ResidualVQ
from vqjax.nn.scalar import BSQ, FSQ, LFQ
from vqjax.nn.vq import CODEBOOK_INITS, CODEBOOK_LEARNING, STATS, CodebookOptions, VectorQuantizer

__all__ = ["VectorQuantizer", "CodebookOptions", "ResidualVQ", "ProductVQ", "AdditiveVQ", "FSQ", "LFQ", "BSQ", "CODEBOOK_LEARNING",
           "CODEBOOK_INITS", "STATS"]
