"""Layer 4: encoders, decoders, discriminators and whole tokenizers."""

from vqjax.models.audio import AudioCodec, SEANetDecoder, SEANetEncoder
from vqjax.models.autoencoder import Decoder, Encoder, ImageTokenizer, ResBlock
from vqjax.models.oned import Image1DTokenizer, TokenDecoder, TokenEncoder
from vqjax.models.quantizers import QUANTIZERS, make_quantizer, quantizer_vocab_size, register_quantizer
from vqjax.models.registry import (
                                   MODELS,
                                   audio_codec,
                                   image_1d_tokenizer,
                                   image_tokenizer,
                                   model_from_spec,
                                   register_model,
                                   rqvae,
                                   sequence_tokenizer,
                                   video_tokenizer,
)
from vqjax.models.semantic_ids import RQVAE
from vqjax.models.sequence import SequenceTokenizer
from vqjax.models.video import VideoAutoencoder, VideoDecoder, VideoEncoder

__all__ = ["Encoder", "Decoder", "ResBlock", "ImageTokenizer", "QUANTIZERS", "make_quantizer",
           "register_quantizer", "quantizer_vocab_size", "MODELS", "register_model", "model_from_spec",
           "image_tokenizer", "Image1DTokenizer", "TokenEncoder", "TokenDecoder",
           "image_1d_tokenizer", "AudioCodec", "SEANetEncoder", "SEANetDecoder", "audio_codec", "VideoEncoder",
           "VideoDecoder", "VideoAutoencoder", "video_tokenizer", "SequenceTokenizer",
           "sequence_tokenizer", "RQVAE", "rqvae"]
