"""The experiment-config schema of image tokenizers: defaults, validation, and the model a config describes.

Only this package and ``experiments/`` read ConfigDicts; everything below takes explicit fields.
"""

from __future__ import annotations

import os

import ml_collections

from vqjax.data import pipeline
from vqjax.models import Decoder, Encoder, ImageTokenizer, make_quantizer
from vqjax.models.vqgan import GAN_LOSSES

__all__ = ["base_config", "runlocal", "parse_arg", "check_config", "build_model", "default_data_dir"]

LOSSES = ("l2", "l1")


def default_data_dir() -> str:
    """Where bundled datasets are prepared: ``$VQJAX_DATA_DIR`` or ``~/.cache/vqjax/tfds``."""
    return os.environ.get("VQJAX_DATA_DIR", os.path.join(os.path.expanduser("~"), ".cache", "vqjax", "tfds"))


def base_config() -> ml_collections.ConfigDict:
    """Every field an image-tokenizer experiment has, with defaults; experiment files override what they need.

    The defaults are a small VQ-VAE for the bundled 28x28 MNIST digits: 16 base channels, two downsamplings
    (7x7 tokens), 32-d latents (XLA's CPU convolutions are slow, so the model is sized for a CPU demo).
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = "vqjax_mnist"
    c.train_split = "train"
    c.eval_split = "test"
    c.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.batch_size = 32
    c.eval_batch_size = 250
    c.max_eval_examples = ml_collections.FieldReference(None, field_type=int)
    c.worker_count = 0
    c.num_train_steps = 2000
    c.log_every_steps = 50
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 250
    c.max_to_keep = 3

    c.model = ml_collections.ConfigDict(dict(channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, latent_dim=32))
    c.quantizer = "vq"
    c.quantizer_kwargs = ml_collections.ConfigDict(dict(codebook_size=1024))

    c.optimizer = ml_collections.ConfigDict(dict(learning_rate=1e-3, warmup_steps=100, end_learning_rate_factor=0.1,
                                                 b1=0.9, b2=0.99, weight_decay=0.0, grad_clip=1.0))
    c.recon_loss = "l2"
    # Perceptual loss on the features of a classifier trained in-repo on the run's labels (0 disables).
    c.perceptual_weight = 0.0
    c.feature_net_classes = 10
    c.feature_net_steps = 300
    # VQGAN: patch discriminator (weight 0 disables), adaptive weight, start step, LeCAM and R1.
    c.gan = ml_collections.ConfigDict(dict(weight=0.0, loss="hinge", start_step=0, channels=32, num_layers=2,
                                           adaptive=True, lecam_weight=0.0, lecam_decay=0.99, r1_gamma=0.0))
    c.ema_decay = 0.0          # EMA of the generator weights, used for evaluation and the tokenizer (0 disables)
    return c


def parse_arg(arg: str | None) -> bool:
    """The experiment-file argument: ``None``/``''`` for the full run, ``'runlocal'`` for a tiny one."""
    if arg in (None, ""):
        return False
    if arg == "runlocal":
        return True
    raise ValueError(f"config argument must be 'runlocal' or nothing; got {arg!r}")


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a config for a laptop smoke run (big_vision's ``runlocal``): a tiny model, 20 steps, 100 eval
    images, a 64-code codebook where the quantizer has one."""
    c.model.channels = 8
    c.model.latent_dim = 8
    if "codebook_size" in c.quantizer_kwargs:
        c.quantizer_kwargs.codebook_size = 64
    c.batch_size = 16
    c.eval_batch_size = 40
    c.max_eval_examples = 100
    c.num_train_steps = 20
    c.log_every_steps = 5
    c.eval_every_steps = 10
    c.checkpoint_every_steps = 10
    c.optimizer.warmup_steps = 5
    return c


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"config.{name} must be a positive int; got {value!r}")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad config with a message naming the field, before any data is read or anything compiled."""
    pipeline.check_dataset_name(config.dataset)
    for name in ("batch_size", "eval_batch_size", "num_train_steps", "log_every_steps", "eval_every_steps",
                 "checkpoint_every_steps", "max_to_keep"):
        _positive(name, config[name])
    if config.worker_count < 0:
        raise ValueError(f"config.worker_count must be >= 0; got {config.worker_count}")
    if config.recon_loss not in LOSSES:
        raise ValueError(f"config.recon_loss must be one of {LOSSES}; got {config.recon_loss!r}")
    m = config.model
    for name in ("channels", "num_res_blocks", "latent_dim"):
        _positive(f"model.{name}", m[name])
    if not len(m.channel_mult) or any(not isinstance(v, int) or v <= 0 for v in m.channel_mult):
        raise ValueError(f"config.model.channel_mult must be a non-empty tuple of positive ints; got {m.channel_mult}")
    make_quantizer(config.quantizer, m.latent_dim, config.quantizer_kwargs.to_dict())
    g = config.gan
    if g.weight < 0 or config.perceptual_weight < 0:
        raise ValueError(f"config.gan.weight and config.perceptual_weight must be >= 0; got {g.weight} and "
                         f"{config.perceptual_weight}")
    if g.loss not in GAN_LOSSES:
        raise ValueError(f"config.gan.loss must be one of {GAN_LOSSES}; got {g.loss!r}")
    if g.start_step < 0 or g.lecam_weight < 0 or g.r1_gamma < 0 or not 0 <= g.lecam_decay < 1:
        raise ValueError(f"config.gan: start_step, lecam_weight and r1_gamma must be >= 0 and lecam_decay in [0, 1); "
                         f"got {g.start_step}, {g.lecam_weight}, {g.r1_gamma}, {g.lecam_decay}")
    _positive("gan.channels", g.channels)
    _positive("gan.num_layers", g.num_layers)
    if not 0 <= config.ema_decay < 1:
        raise ValueError(f"config.ema_decay must be in [0, 1); got {config.ema_decay}")
    if config.perceptual_weight > 0:
        _positive("feature_net_classes", config.feature_net_classes)
        _positive("feature_net_steps", config.feature_net_steps)
    if config.optimizer.learning_rate <= 0:
        raise ValueError(f"config.optimizer.learning_rate must be > 0; got {config.optimizer.learning_rate}")


def check_image_shape(config: ml_collections.ConfigDict, shape: tuple[int, int, int]) -> None:
    """The image side must be divisible by the encoder's total downsampling ``2^(len(channel_mult) - 1)``."""
    factor = 2 ** (len(config.model.channel_mult) - 1)
    if shape[0] % factor or shape[1] % factor:
        raise ValueError(f"image size {shape[0]}x{shape[1]} of dataset {config.dataset!r} is not divisible by the "
                         f"downsampling factor {factor} of config.model.channel_mult={tuple(config.model.channel_mult)}")


def build_model(config: ml_collections.ConfigDict, channels: int) -> ImageTokenizer:
    """The :class:`vqjax.models.ImageTokenizer` a config describes, for images with ``channels`` channels."""
    m = config.model
    return ImageTokenizer(
        encoder=Encoder(m.channels, tuple(m.channel_mult), m.num_res_blocks, m.latent_dim),
        quantizer=make_quantizer(config.quantizer, m.latent_dim, config.quantizer_kwargs.to_dict()),
        decoder=Decoder(m.channels, tuple(m.channel_mult), m.num_res_blocks, channels))
