"""Untrained tokenizers with the real protocol (random weights), built in memory, for the tests of the artifact,
the evaluators and the LM bridge."""

import jax
import jax.numpy as jnp

import vqjax
from vqjax.models import model_from_spec

AUDIO_ARCH = {"seanet": {"channels": 4, "strides": [2, 4, 5]}, "stft": {"channels": 8, "strides": [10, 4]}}
AUDIO_HOP = 40                                  # both architectures: 40 samples a frame, 400 frames a second


def image_spec(codebook_size: int = 16, size: int = 8, channels: int = 8) -> dict:
    """The spec of a one-downsampling image tokenizer of ``size x size`` grey images, ``codebook_size`` codes."""
    return {"modality": "image",
            "model": {"name": "image_tokenizer",
                      "kwargs": dict(channels=channels, channel_mult=[1, 2], num_res_blocks=1, latent_dim=4,
                                     image_channels=1, quantizer="vq",
                                     quantizer_kwargs=dict(codebook_size=codebook_size))},
            "input": {"shape": [size, size, 1], "dtype": "float32", "range": [0.0, 1.0]},
            "codes_shape": [size // 2, size // 2], "vocab_size": codebook_size}


def image_tokenizer(seed: int = 0, codebook_size: int = 16, size: int = 8) -> vqjax.Tokenizer:
    spec = image_spec(codebook_size, size)
    model = model_from_spec(spec["model"])
    variables = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, size, size, 1)))
    return vqjax.Tokenizer(spec, model, dict(variables))


def image_1d_spec(num_tokens: int = 6, min_tokens: int = 2, size: int = 8, quantizer: str = "fsq",
                  quantizer_kwargs: dict | None = None, vocab_size: int = 64, levels: int | None = None) -> dict:
    """The spec of a 1D image tokenizer of ``size x size`` grey images: ``min_tokens..num_tokens`` ordered tokens
    (FSQ levels (4, 4, 4) = 64 codes by default)."""
    tail = [] if levels is None else [levels]
    return {"modality": "image",
            "model": {"name": "image_1d_tokenizer",
                      "kwargs": dict(image_size=[size, size], image_channels=1, patch_size=4, num_tokens=num_tokens,
                                     min_tokens=min_tokens, width=16, encoder_layers=1, decoder_layers=1,
                                     num_heads=2, latent_dim=4, quantizer=quantizer,
                                     quantizer_kwargs=quantizer_kwargs or {"levels": [4, 4, 4]})},
            "input": {"shape": [size, size, 1], "dtype": "float32", "range": [0.0, 1.0]},
            "codes_shape": [None, *tail], "vocab_size": vocab_size, "token_range": [min_tokens, num_tokens]}


def image_1d_tokenizer(seed: int = 0, **kwargs) -> vqjax.Tokenizer:
    spec = image_1d_spec(**kwargs)
    model = model_from_spec(spec["model"])
    size = spec["input"]["shape"][0]
    variables = jax.jit(model.init)({"params": jax.random.key(seed), "vq": jax.random.key(seed + 1)},
                                    jnp.zeros((1, size, size, 1)))
    return vqjax.Tokenizer(spec, model, dict(variables))


def audio_tokenizer(causal: bool = True, architecture: str = "seanet") -> vqjax.Tokenizer:
    """A 16 kHz codec of 3 residual levels of 256 codes at 400 frames a second (9.6 kbps)."""
    spec_model = {"name": "audio_codec", "kwargs": {**AUDIO_ARCH[architecture], "architecture": architecture,
                                                    "latent_dim": 8, "causal": causal, "quantizer": "rvq",
                                                    "quantizer_kwargs": {"num_levels": 3, "codebook_size": 256}}}
    model = model_from_spec(spec_model)
    variables = jax.jit(model.init)({"params": jax.random.key(0), "vq": jax.random.key(1)}, jnp.zeros((1, 400, 1)))
    spec = {"modality": "audio", "model": spec_model, "input": {"shape": [None, 1], "range": [-1.0, 1.0]},
            "codes_shape": [None, 3], "vocab_size": 256, "sample_rate": 16000, "frame_rate": 400.0,
            "tokens_per_second": 1200.0, "kbps": 9.6}
    return vqjax.Tokenizer(spec, model, {"params": variables["params"], "vq_stats": variables["vq_stats"]})


def video_tokenizer() -> vqjax.Tokenizer:
    """A causal video tokenizer of 5-frame 16x16 grey clips (codes [3, 8, 8] of 625)."""
    spec_model = {"name": "video_tokenizer", "kwargs": {
        "channels": 4, "channel_mult": [1, 2], "temporal_down": [True], "num_res_blocks": 1, "latent_dim": 4,
        "video_channels": 1, "quantizer": "fsq", "quantizer_kwargs": {"levels": [5, 5, 5, 5]}}}
    model = model_from_spec(spec_model)
    variables = jax.jit(model.init)({"params": jax.random.key(0)}, jnp.zeros((1, 5, 16, 16, 1)))
    spec = {"modality": "video", "model": spec_model, "input": {"shape": [5, 16, 16, 1], "range": [0.0, 1.0]},
            "codes_shape": [3, 8, 8], "vocab_size": 625, "frame_rate": 10.0}
    return vqjax.Tokenizer(spec, model, dict(variables))


def timeseries_tokenizer() -> vqjax.Tokenizer:
    """A 2-channel time-series tokenizer, 4 samples a code, 16 codes."""
    spec_model = {"name": "sequence_tokenizer", "kwargs": {
        "channels": 4, "strides": [2, 2], "latent_dim": 4, "signal_channels": 2, "mean": [0.0, 0.0],
        "scale": [1.0, 1.0], "quantizer": "vq", "quantizer_kwargs": {"codebook_size": 16}}}
    model = model_from_spec(spec_model)
    variables = jax.jit(model.init)({"params": jax.random.key(0), "vq": jax.random.key(1)}, jnp.zeros((1, 32, 2)))
    spec = {"modality": "timeseries", "model": spec_model, "input": {"shape": [32, 2], "range": None},
            "codes_shape": [8], "vocab_size": 16, "sample_rate": 64.0,
            "normalization": {"mean": [0.0, 0.0], "scale": [1.0, 1.0]}}
    return vqjax.Tokenizer(spec, model, dict(variables))


def item_tokenizer() -> vqjax.Tokenizer:
    """Semantic IDs of a 6-item catalogue: an RQ-VAE of 2 levels of 4 codes on content features, each item a
    distinct tuple."""
    import numpy as np

    from vqjax.models.semantic_ids import ItemFeaturizer

    docs = [["red", "fruit"], ["green", "fruit"], ["red", "car"], ["blue", "car"], ["green", "tree"], ["tree"]]
    feat = ItemFeaturizer.fit("content", docs, content_dim=4)
    spec_model = {"name": "rqvae", "kwargs": {"input_dim": feat.dim, "hidden": [8], "latent_dim": 4,
                                              "quantizer": "rvq",
                                              "quantizer_kwargs": {"num_levels": 2, "codebook_size": 4}}}
    model = model_from_spec(spec_model)
    variables = jax.jit(lambda k: model.init({"params": k, "vq": k}, jnp.zeros((1, feat.dim)), train=False))(
        jax.random.key(0))
    spec = {"modality": "item", "model": spec_model, "input": {"shape": [], "dtype": "int64", "range": [0, 5]},
            "codes_shape": [2], "vocab_size": 4, "level_sizes": [4, 4], "collisions": "extra_level", "num_items": 6}
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [3, 3]], np.int32)
    return vqjax.Tokenizer(spec, model, dict(variables), item_codes=codes, featurizer=feat)
