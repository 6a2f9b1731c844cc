"""VQGAN on 32x32 crops of the bundled scikit-image photos: 8x8 tokens from 1024 codes (EMA codebook with k-means
init and dead-code replacement), a patch discriminator with hinge loss and the adaptive weight from step 1000,
LeCAM regularisation, a perceptual loss on a feature network trained in-repo to tell the 12 photos apart, and an
EMA of the generator weights for evaluation and the tokenizer.

    python -m vqjax.main --config=experiments/photos_vqgan.py --workdir=runs/photos_vqgan
    python -m vqjax.main --config=experiments/photos_vqgan.py:runlocal --workdir=/tmp/photos_vqgan   # a tiny run
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.image_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_photo_crops"
    c.model.channels = 32
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.latent_dim = 32
    c.quantizer = "vq"
    c.quantizer_kwargs = dict(codebook_size=1024, codebook_learning="ema", decay=0.99, codebook_init="kmeans",
                              dead_code_threshold=0.05, beta=0.25)
    c.batch_size = 32
    c.eval_batch_size = 200
    c.num_train_steps = 4000
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 500
    c.recon_loss = "l1"
    c.perceptual_weight = 0.1
    c.feature_net_classes = 12
    c.feature_net_steps = 300
    c.gan.weight = 0.1
    c.gan.loss = "hinge"
    c.gan.start_step = 1000
    c.gan.adaptive = True
    c.gan.lecam_weight = 0.001
    c.ema_decay = 0.999
    c.optimizer.learning_rate = 1e-3
    if parse_arg(arg):
        c = runlocal(c)
        c.gan.start_step = 5
        c.feature_net_steps = 10
        c.ema_decay = 0.9
    return c
