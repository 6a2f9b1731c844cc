"""Layer 4: encoders, decoders, discriminators and whole tokenizers."""

from vqjax.models.autoencoder import Decoder, Encoder, ImageTokenizer, ResBlock
from vqjax.models.quantizers import QUANTIZERS, make_quantizer, quantizer_vocab_size, register_quantizer

__all__ = ["Encoder", "Decoder", "ResBlock", "ImageTokenizer", "QUANTIZERS", "make_quantizer",
           "register_quantizer", "quantizer_vocab_size"]
