"""Whole tokenizer models by name, rebuilt from explicit constructor arguments (what an artifact's spec holds).

``model_from_spec({'name': 'image_tokenizer', 'kwargs': {...}})`` builds the model a tokenizer artifact was
trained with, from the spec alone; each modality registers its builder here (``register_model``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vqjax.models.audio import (
    AudioCodec,
    EnvelopeCoder,
    ISTFTDecoder,
    PitchCoder,
    SEANetDecoder,
    SEANetEncoder,
    STFTEncoder,
)
from vqjax.models.autoencoder import Decoder, Encoder, ImageTokenizer
from vqjax.models.oned import LENGTH_SAMPLING, Image1DTokenizer, TokenDecoder, TokenEncoder
from vqjax.models.quantizers import make_quantizer, quantizer_vocab_size
from vqjax.models.semantic_ids import RQVAE
from vqjax.models.sequence import MultiScaleResidual, SequenceTokenizer
from vqjax.models.video import VideoAutoencoder, VideoDecoder, VideoEncoder

__all__ = ["MODELS", "register_model", "model_from_spec", "precision", "image_tokenizer", "image_1d_tokenizer", "audio_codec", "check_audio_layout", "video_tokenizer",
           "sequence_tokenizer", "rqvae"]

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, builder: Callable[..., nn.Module]) -> None:
    """Adds ``builder(**kwargs) -> module`` under ``name``; a name can be registered once."""
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = builder


def model_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """The module ``spec = {'name': ..., 'kwargs': {...}}`` describes (``ValueError`` for an unknown name)."""
    name = spec.get("name")
    if name not in MODELS:
        raise ValueError(f"model name must be one of {sorted(MODELS)}; got {name!r}")
    return MODELS[name](**dict(spec.get("kwargs", {})))


def precision(dtype: str = "float32", param_dtype: str = "float32", where: str = "model") -> dict:
    """``{'dtype', 'param_dtype'}`` as jnp dtypes: the compute and storage dtypes every builder takes (a floating
    dtype name each; ``ValueError`` naming ``where`` and the argument otherwise)."""
    out = {}
    for name, value in (("dtype", dtype), ("param_dtype", param_dtype)):
        try:
            dt = jnp.dtype(value)
        except TypeError:
            dt = None
        if dt is None or not jnp.issubdtype(dt, jnp.floating):
            raise ValueError(f"{where}: {name} must be a floating dtype name ('float32', 'bfloat16'); got {value!r}")
        out[name] = dt
    return out


def _quantizer(name: str, dim: int, kwargs: Mapping[str, Any], dtypes: dict) -> nn.Module:
    """The quantizer with the model's precision: projections compute in ``dtype`` and store in ``param_dtype``
    (its own arithmetic stays float32); the quantizer's fields win where the spec sets them."""
    return make_quantizer(name, dim, {**dtypes, **dict(kwargs)})


def image_tokenizer(*, channels: int, channel_mult: Sequence[int], num_res_blocks: int, latent_dim: int,
                    image_channels: int, quantizer: str, quantizer_kwargs: Mapping[str, Any], dtype: str = "float32",
                    param_dtype: str = "float32", remat: bool = False,
                    image_size: Sequence[int] | None = None) -> ImageTokenizer:
    """A convolutional :class:`ImageTokenizer`: encoder and decoder of the given widths around the quantizer
    registered as ``quantizer`` (:func:`vqjax.models.make_quantizer`) on ``latent_dim`` channels; ``dtype`` and
    ``param_dtype`` the compute and storage dtypes (:func:`precision`), ``remat`` recomputes each residual
    block in the backward pass; ``image_size = (H, W)`` (for sides the downsampling does not divide) crops the
    decoder's output to the input's size, the encoder padding the input up to the next multiple."""
    mult = tuple(int(m) for m in channel_mult)
    dt = precision(dtype, param_dtype, "image_tokenizer")
    size = None
    if image_size is not None:
        size = tuple(int(v) for v in image_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image_tokenizer: image_size must be (H, W) of positive ints; got {tuple(image_size)}")
    return ImageTokenizer(encoder=Encoder(channels, mult, num_res_blocks, latent_dim, **dt, remat=bool(remat)),
                          quantizer=_quantizer(quantizer, latent_dim, quantizer_kwargs, dt),
                          decoder=Decoder(channels, mult, num_res_blocks, image_channels, **dt, remat=bool(remat),
                                          out_size=size))


register_model("image_tokenizer", image_tokenizer)


def image_1d_tokenizer(*, image_size: Sequence[int], image_channels: int, patch_size: int, num_tokens: int,
                       width: int, encoder_layers: int, decoder_layers: int, num_heads: int, latent_dim: int,
                       quantizer: str, quantizer_kwargs: Mapping[str, Any], min_tokens: int = 1,
                       linear_path: bool = False, length_sampling: str = "log_uniform", dtype: str = "float32",
                       param_dtype: str = "float32", remat: bool = False) -> Image1DTokenizer:
    """A 1D :class:`~vqjax.models.oned.Image1DTokenizer`: ``image_size = (H, W)`` images of ``image_channels``
    channels in ``patch_size`` patches, a Transformer encoder (``encoder_layers`` blocks of ``width`` channels and
    ``num_heads`` heads) writing ``num_tokens`` latent tokens of ``latent_dim`` channels, the quantizer registered as
    ``quantizer``, and a Transformer decoder of ``decoder_layers`` blocks; every prefix of ``min_tokens`` to
    ``num_tokens`` tokens decodes (training draws lengths by ``length_sampling``, 'log_uniform' or 'uniform');
    ``linear_path`` adds linear maps image -> tokens -> image beside the attention
    (:mod:`vqjax.models.oned`). ``dtype``, ``param_dtype``: compute and storage dtypes (:func:`precision`);
    ``remat`` recomputes each block in the backward pass.

    Raises:
      ValueError: a patch size that does not divide the image, a width the heads do not divide, or lengths outside
        ``1 <= min_tokens <= num_tokens``, naming the argument.
    """
    size = tuple(int(v) for v in image_size)
    ints = dict(image_channels=image_channels, patch_size=patch_size, num_tokens=num_tokens, width=width,
                encoder_layers=encoder_layers, decoder_layers=decoder_layers, num_heads=num_heads,
                latent_dim=latent_dim, min_tokens=min_tokens)
    for name, value in ints.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"image_1d_tokenizer: {name} must be a positive int; got {value!r}")
    if len(size) != 2 or min(size) < 1 or size[0] % patch_size or size[1] % patch_size:
        raise ValueError(f"image_1d_tokenizer: image_size must be (H, W) divisible by patch_size ({patch_size}); got "
                         f"{tuple(image_size)}")
    if width % num_heads:
        raise ValueError(f"image_1d_tokenizer: width ({width}) must be a multiple of num_heads ({num_heads})")
    if length_sampling not in LENGTH_SAMPLING:
        raise ValueError(f"image_1d_tokenizer: length_sampling must be one of {LENGTH_SAMPLING}; got "
                         f"{length_sampling!r}")
    if min_tokens > num_tokens:
        raise ValueError(f"image_1d_tokenizer: min_tokens must be <= num_tokens ({num_tokens}); got {min_tokens}")
    dt = precision(dtype, param_dtype, "image_1d_tokenizer")
    shared = dict(patch_size=int(patch_size), width=int(width), num_heads=int(num_heads), remat=bool(remat),
                  linear_path=bool(linear_path), **dt)
    return Image1DTokenizer(
        encoder=TokenEncoder(num_tokens=int(num_tokens), num_layers=int(encoder_layers), latent_dim=int(latent_dim),
                             **shared),
        quantizer=_quantizer(quantizer, int(latent_dim), quantizer_kwargs, dt),
        decoder=TokenDecoder(image_size=size, image_channels=int(image_channels), num_layers=int(decoder_layers),
                             **shared),
        min_tokens=int(min_tokens), length_sampling=length_sampling)


register_model("image_1d_tokenizer", image_1d_tokenizer)


AUDIO_ARCHITECTURES = {"seanet": (SEANetEncoder, SEANetDecoder), "stft": (STFTEncoder, ISTFTDecoder)}


def check_audio_layout(*, architecture: str, strides: Sequence[int], harmonic: bool, pitch_codes: bool,
                       envelope_levels: int, field: Callable[[str], str] = lambda name: name,
                       flag: Callable[[str], str] = lambda name: f"{name}=True", where: str = "audio_codec: ") -> None:
    """Refuses an audio codec layout that :func:`audio_codec` cannot build, naming each argument as
    ``field(name)`` (a switched-on bool as ``flag(name)``) after ``where`` (the task passes its config's field
    names).

    Raises:
      ValueError: an unknown architecture; strides that are not positive ints (the STFT hop ``strides[0]`` >= 2);
        the voiced part or the envelope codes off the ``'stft'`` architecture; pitch codes without the voiced part;
        a negative or non-int ``envelope_levels``.
    """
    if architecture not in AUDIO_ARCHITECTURES:
        raise ValueError(f"{where}{field('architecture')} must be one of {sorted(AUDIO_ARCHITECTURES)}; got "
                         f"{architecture!r}")
    if not len(strides) or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0
                               for s in strides):
        raise ValueError(f"{where}{field('strides')} must be a non-empty tuple of positive ints; got {tuple(strides)}")
    if architecture == "stft" and strides[0] < 2:
        raise ValueError(f"{where}{field('strides')}[0] is the STFT hop of the 'stft' architecture and must be >= 2; "
                         f"got {strides[0]}")
    if harmonic and architecture != "stft":
        raise ValueError(f"{where}{flag('harmonic')} adds a voiced part to the inverse-STFT decoder and needs "
                         f"{field('architecture')}='stft'; got {architecture!r}")
    if pitch_codes and not harmonic:
        raise ValueError(f"{where}{flag('pitch_codes')} sends the pitch of the harmonic decoder and needs "
                         f"{field('harmonic')}=True")
    if isinstance(envelope_levels, bool) or not isinstance(envelope_levels, int) or envelope_levels < 0:
        raise ValueError(f"{where}{field('envelope_levels')} must be an int >= 0 (0: no envelope codes); got "
                         f"{envelope_levels!r}")
    if envelope_levels and architecture != "stft":
        raise ValueError(f"{where}{field('envelope_levels')} > 0 sends an envelope that the inverse-STFT decoder "
                         f"builds on and needs {field('architecture')}='stft'; got {architecture!r}")


def audio_codec(*, channels: int, strides: Sequence[int], latent_dim: int, audio_channels: int = 1,
                num_residual: int = 1, causal: bool = True, quantizer: str, quantizer_kwargs: Mapping[str, Any],
                architecture: str = "seanet", harmonic: bool = False, pitch_codes: bool = False,
                envelope_levels: int = 0, envelope_bands: int = 20, envelope_per_frame: int = 1,
                sample_rate: int = 16000, dtype: str = "float32", param_dtype: str = "float32",
                remat: bool = False) -> AudioCodec:
    """An :class:`~vqjax.models.audio.AudioCodec` around the quantizer registered as ``quantizer`` on
    ``latent_dim`` channels. ``architecture='seanet'``: SEANet encoder and mirrored decoder of base width
    ``channels`` and downsampling ``strides`` on the waveform; ``'stft'``: STFT encoder and inverse-STFT (Vocos)
    decoder of width ``channels``, hop ``strides[0]`` and the frame rate divided by the later strides, with
    ``harmonic=True`` a voiced part (pitch, voicing and envelope) added to its spectra; ``pitch_codes=True`` sends
    that part's pitch as the first code level (a :class:`~vqjax.models.audio.PitchCoder` on windows of two frames,
    as many codes as the quantizer's codebook) instead of predicting it; ``envelope_levels > 0`` sends the
    spectral envelope next (an :class:`~vqjax.models.audio.EnvelopeCoder` of ``envelope_bands`` mel bands at
    ``sample_rate`` on the pitch's windows, ``envelope_levels`` residual levels of the quantizer's codebook size),
    which the inverse-STFT decoder builds its magnitudes on; ``envelope_per_frame`` envelopes per codec frame,
    quantized together (2 with strides ``(h, 2)``: one per STFT frame of the decoder, on its window). ``dtype``,
    ``param_dtype``: compute and storage dtypes (:func:`precision`); ``remat`` recomputes each residual unit or
    ConvNeXt block in the backward pass."""
    check_audio_layout(architecture=architecture, strides=strides, harmonic=harmonic, pitch_codes=pitch_codes,
                       envelope_levels=envelope_levels)
    encoder, decoder = AUDIO_ARCHITECTURES[architecture]
    strides = tuple(int(s) for s in strides)
    dt = precision(dtype, param_dtype, "audio_codec")
    shared = dict(channels=channels, strides=strides, num_residual=num_residual, causal=causal, remat=bool(remat),
                  **dt)
    extra = {"harmonic": True} if harmonic else {}
    q = _quantizer(quantizer, latent_dim, quantizer_kwargs, dt)
    pitch = None
    if pitch_codes:
        if getattr(q, "num_levels", None) is None:
            raise ValueError(f"audio_codec: pitch_codes=True puts the pitch in front of a residual quantizer's "
                             f"levels; quantizer {quantizer!r} has none")
        hop = int(np.prod(strides))
        pitch = PitchCoder(n_fft=2 * hop, hop=hop, vocab=quantizer_vocab_size(q), causal=causal)
    envelope = None
    if envelope_levels:
        if getattr(q, "num_levels", None) is None:
            raise ValueError(f"audio_codec: envelope_levels > 0 sends an envelope that the inverse-STFT decoder "
                             f"builds on, in front of a residual quantizer's levels; quantizer {quantizer!r} has none")
        if isinstance(envelope_bands, bool) or not isinstance(envelope_bands, int) or envelope_bands < 2:
            raise ValueError(f"audio_codec: envelope_bands must be an int >= 2; got {envelope_bands!r}")
        hop = int(np.prod(strides))
        if isinstance(envelope_per_frame, bool) or not isinstance(envelope_per_frame, int) or \
                envelope_per_frame < 1 or hop % envelope_per_frame:
            raise ValueError(f"audio_codec: envelope_per_frame must be a positive int dividing the hop ({hop}); got "
                             f"{envelope_per_frame!r}")
        envelope = EnvelopeCoder(n_fft=2 * hop, hop=hop, sample_rate=int(sample_rate), num_bands=envelope_bands,
                                 num_levels=envelope_levels, codebook_size=quantizer_vocab_size(q), causal=causal,
                                 per_frame=envelope_per_frame)
    return AudioCodec(encoder=encoder(latent_dim=latent_dim, **shared), quantizer=q,
                      decoder=decoder(audio_channels=audio_channels, **shared, **extra), pitch=pitch,
                      envelope=envelope)


register_model("audio_codec", audio_codec)


def video_tokenizer(*, channels: int, channel_mult: Sequence[int], temporal_down: Sequence[bool], num_res_blocks: int,
                    latent_dim: int, video_channels: int, quantizer: str, quantizer_kwargs: Mapping[str, Any],
                    patch_size: int = 1, dtype: str = "float32", param_dtype: str = "float32",
                    remat: bool = False) -> VideoAutoencoder:
    """A causal 3D :class:`~vqjax.models.video.VideoAutoencoder`: encoder and mirrored decoder of base width
    ``channels`` (a ``patch_size`` space-to-depth stem, ``len(channel_mult) - 1`` spatial halvings, time halved
    where ``temporal_down``) around the quantizer registered as ``quantizer`` on ``latent_dim`` channels;
    ``dtype``, ``param_dtype`` the compute and storage dtypes (:func:`precision`), ``remat`` recomputes each
    residual block in the backward pass."""
    dt = precision(dtype, param_dtype, "video_tokenizer")
    shared = dict(channels=channels, channel_mult=tuple(int(m) for m in channel_mult),
                  temporal_down=tuple(bool(d) for d in temporal_down), num_res_blocks=num_res_blocks,
                  patch_size=int(patch_size), remat=bool(remat), **dt)
    return VideoAutoencoder(encoder=VideoEncoder(latent_dim=latent_dim, **shared),
                          quantizer=_quantizer(quantizer, latent_dim, quantizer_kwargs, dt),
                          decoder=VideoDecoder(out_channels=video_channels, **shared))


register_model("video_tokenizer", video_tokenizer)


def sequence_tokenizer(*, channels: int, strides: Sequence[int], latent_dim: int, signal_channels: int,
                       mean: Sequence[float], scale: Sequence[float], quantizer: str,
                       quantizer_kwargs: Mapping[str, Any], num_residual: int = 1, causal: bool = False,
                       transformer_layers: int = 0, scales: Sequence[int] = (1,), dtype: str = "float32",
                       param_dtype: str = "float32", remat: bool = False) -> SequenceTokenizer:
    """A :class:`~vqjax.models.sequence.SequenceTokenizer` for ``signal_channels`` channels normalised by ``mean``
    and ``scale``: SEANet encoder and decoder of base width ``channels`` and downsampling ``strides``,
    ``transformer_layers`` blocks at the latent rate, and the quantizer registered as ``quantizer`` on
    ``latent_dim`` channels; ``scales`` other than ``(1,)`` give each temporal scale its own such quantizer
    (:class:`~vqjax.models.sequence.MultiScaleResidual`). ``dtype``, ``param_dtype``: compute and storage dtypes
    (:func:`precision`); ``remat`` recomputes each residual unit in the backward pass."""
    if len(mean) != signal_channels or len(scale) != signal_channels:
        raise ValueError(f"sequence_tokenizer: mean and scale need one value per channel ({signal_channels}); got "
                         f"{len(mean)} and {len(scale)}")
    scales = tuple(int(s) for s in scales)
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"sequence_tokenizer: scales must be positive ints; got {scales}")
    dt = precision(dtype, param_dtype, "sequence_tokenizer")
    shared = dict(channels=channels, strides=tuple(int(s) for s in strides), num_residual=num_residual,
                  causal=causal, remat=bool(remat), **dt)
    if scales == (1,):
        quant = _quantizer(quantizer, latent_dim, quantizer_kwargs, dt)
    else:
        quant = MultiScaleResidual(tuple(_quantizer(quantizer, latent_dim, quantizer_kwargs, dt)
                                         for _ in scales), scales)
    return SequenceTokenizer(encoder=SEANetEncoder(latent_dim=latent_dim, **shared), quantizer=quant,
                             decoder=SEANetDecoder(audio_channels=signal_channels, **shared),
                             mean=tuple(float(v) for v in mean), scale=tuple(float(v) for v in scale),
                             transformer_layers=int(transformer_layers))


register_model("sequence_tokenizer", sequence_tokenizer)


def rqvae(*, input_dim: int, hidden: Sequence[int], latent_dim: int, quantizer: str,
          quantizer_kwargs: Mapping[str, Any], dtype: str = "float32", param_dtype: str = "float32") -> RQVAE:
    """An item :class:`~vqjax.models.semantic_ids.RQVAE`: MLP encoder of widths ``hidden`` to ``latent_dim``, the
    quantizer registered as ``quantizer`` (a multi-level one, normally ``'rvq'``) and the mirrored decoder;
    ``dtype``, ``param_dtype`` the compute and storage dtypes (:func:`precision`)."""
    dt = precision(dtype, param_dtype, "rqvae")
    quant = _quantizer(quantizer, latent_dim, quantizer_kwargs, dt)
    if not hasattr(quant, "num_levels") and not hasattr(quant, "num_codebooks"):
        raise ValueError(f"rqvae: quantizer must give a code tuple per item ('rvq', 'pq' or 'aq'); got {quantizer!r}")
    return RQVAE(input_dim=int(input_dim), hidden=tuple(int(h) for h in hidden), latent_dim=int(latent_dim),
                 quantizer=quant, **dt)


register_model("rqvae", rqvae)
