"""The experiment-config schema of image tokenizers: defaults, validation, and the model a config describes.

Only this package and ``experiments/`` read ConfigDicts; everything below takes explicit fields.
"""

from __future__ import annotations

import os

import ml_collections

from vqjax.data import pipeline
from vqjax.models import Decoder, Encoder, ImageTokenizer, make_quantizer
from vqjax.models.vqgan import GAN_LOSSES

__all__ = ["base_config", "link_config", "optimizer_config", "runlocal", "parse_arg", "check_config",
           "check_link_config", "build_model", "default_data_dir"]

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

    c.optimizer = optimizer_config()
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


def optimizer_config(learning_rate: float = 1e-3) -> ml_collections.ConfigDict:
    """AdamW on a warmup-cosine schedule with global-norm clipping (:func:`vqjax.train.make_optimizer`)."""
    return ml_collections.ConfigDict(dict(learning_rate=learning_rate, warmup_steps=100, end_learning_rate_factor=0.1,
                                          b1=0.9, b2=0.99, weight_decay=0.0, grad_clip=1.0))


def link_config() -> ml_collections.ConfigDict:
    """Every field of a link-prediction experiment (``task='link_prediction'``), with defaults: RotatE on UMLS
    with NodePiece entities (MLP encoder); ``encoder='embedding'`` is the per-node embedding baseline."""
    c = ml_collections.ConfigDict()
    c.task = "link_prediction"
    c.seed = 0
    c.dataset = "umls"
    c.data_root = ml_collections.FieldReference(None, field_type=str)
    c.encoder = "mlp"                 # 'mlp' | 'transformer' (NodePiece tokens) | 'embedding' (one vector per node)
    c.scorer = "rotate"               # 'rotate' | 'distmult'
    c.dim = 64
    c.gamma = 12.0                    # RotatE margin
    c.num_layers = 2                  # Transformer encoder
    c.num_heads = 4
    c.max_distance = 10
    c.nodepiece = ml_collections.ConfigDict(dict(num_anchors=40, anchors_per_node=10, relations_per_node=12,
                                                 strategy="mix"))
    c.batch_size = 256
    c.num_negatives = 128
    c.adversarial_temperature = 1.0   # self-adversarial negative weights (Sun et al. 2019); 0: uniform
    c.eval_batch_size = 256
    c.max_eval_triples = ml_collections.FieldReference(None, field_type=int)
    c.num_train_steps = 3000
    c.log_every_steps = 100
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 500
    c.max_to_keep = 3
    c.optimizer = optimizer_config(3e-3)
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
    images, a 64-code codebook where the quantizer has one (for link prediction: 20 steps, 16-d, 100 eval
    triples)."""
    if c.get("task") == "link_prediction":
        c.dim, c.batch_size, c.num_negatives, c.eval_batch_size = 16, 64, 16, 40
        c.max_eval_triples = 100
        c.num_train_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 20, 5, 10, 10
        c.optimizer.warmup_steps = 5
        return c
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


def check_link_config(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad link-prediction config with a message naming the field, before any data is read."""
    from vqjax.data.graphs import KG_DATASETS
    from vqjax.graph import STRATEGIES
    from vqjax.graph.models import ENCODERS, SCORERS

    if config.dataset not in KG_DATASETS:
        raise ValueError(f"config.dataset must be one of {KG_DATASETS}; got {config.dataset!r}")
    if config.encoder not in ENCODERS:
        raise ValueError(f"config.encoder must be one of {ENCODERS}; got {config.encoder!r}")
    if config.scorer not in SCORERS:
        raise ValueError(f"config.scorer must be one of {SCORERS}; got {config.scorer!r}")
    for name in ("dim", "batch_size", "num_negatives", "eval_batch_size", "num_train_steps", "log_every_steps",
                 "eval_every_steps", "checkpoint_every_steps", "max_to_keep", "num_layers", "num_heads",
                 "max_distance"):
        _positive(name, config[name])
    if config.scorer == "rotate" and config.dim % 2:
        raise ValueError(f"config.dim must be even for scorer='rotate' (complex embeddings); got {config.dim}")
    if config.encoder == "transformer" and config.dim % config.num_heads:
        raise ValueError(f"config.dim ({config.dim}) must be divisible by config.num_heads ({config.num_heads})")
    n = config.nodepiece
    for name in ("num_anchors", "anchors_per_node"):
        _positive(f"nodepiece.{name}", n[name])
    if n.anchors_per_node > n.num_anchors:
        raise ValueError(f"config.nodepiece.anchors_per_node ({n.anchors_per_node}) must be <= "
                         f"config.nodepiece.num_anchors ({n.num_anchors})")
    if not isinstance(n.relations_per_node, int) or n.relations_per_node < 0:
        raise ValueError(f"config.nodepiece.relations_per_node must be an int >= 0; got {n.relations_per_node!r}")
    if n.strategy not in STRATEGIES:
        raise ValueError(f"config.nodepiece.strategy must be one of {STRATEGIES}; got {n.strategy!r}")
    if config.adversarial_temperature < 0 or config.optimizer.learning_rate <= 0:
        raise ValueError(f"config.adversarial_temperature must be >= 0 and config.optimizer.learning_rate > 0; "
                         f"got {config.adversarial_temperature} and {config.optimizer.learning_rate}")


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
