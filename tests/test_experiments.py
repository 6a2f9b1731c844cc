"""Every file in experiments/ imports, validates, and describes a model that builds (abstractly, no compute)."""

import jax
import jax.numpy as jnp
import pytest
from experiments_loader import experiment_names, load_experiment

from vqjax.train import check_config
from vqjax.train.tasks.image_tokenizer import build_model, check_image_shape


def test_experiments_exist():
    assert {"mnist_vq", "mnist_fsq", "mnist_lfq", "mnist_vq_collapse", "photos_vqgan", "umls_nodepiece",
            "umls_embedding", "mnist_captions_lm", "speech_codec", "speech_codec_single", "motion_tokenizer",
            "eeg_tokenizer", "action_tokenizer"} <= set(experiment_names())


@pytest.mark.parametrize("name", experiment_names())
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_experiment_is_valid(name, arg):
    c = load_experiment(name, arg)
    if c.get("task") == "lm":
        _check_lm_experiment(c, arg)
        return
    if c.get("task") == "link_prediction":
        _check_link_experiment(c, arg)
        return
    if c.get("task") == "audio_codec":
        _check_audio_experiment(c, arg)
        return
    if c.get("task") == "video_tokenizer":
        _check_video_experiment(c, arg)
        return
    if c.get("task") == "sequence_tokenizer":
        _check_sequence_experiment(c, arg)
        return
    if c.get("task") in ("semantic_ids", "generative_retrieval", "sasrec"):
        _check_recommendation_experiment(c, arg)
        return
    check_config(c)
    shape = FRAME_SHAPES.get(c.dataset, (32, 32, 3))
    check_image_shape(c, shape)
    model = build_model(c, shape[-1], shape[:2])
    x = jnp.zeros((2,) + shape)
    variables = jax.eval_shape(lambda k: model.init({"params": k, "vq": k}, x), jax.random.key(0))
    recon, q = jax.eval_shape(lambda v: model.apply(v, x), variables)
    assert recon.shape == x.shape
    if c.architecture == "1d":
        assert q.codes.shape[1] == c.model_1d.num_tokens
    else:
        factor = 2 ** (len(c.model.channel_mult) - 1)
        assert q.codes.shape[1:3] == (-(-shape[0] // factor), -(-shape[1] // factor))
    if arg == "runlocal":
        assert c.num_train_steps <= 50


# The frames (or images) of each bundled dataset an experiment may read; others are 32x32 RGB photo crops.
FRAME_SHAPES = {"vqjax_mnist": (28, 28, 1), "vqjax_moving_mnist": (64, 64, 1), "vqjax_video_clips": (64, 64, 3)}


# Channels of each time-series set an experiment may read.
SERIES_CHANNELS = {"vqjax_timeseries/pusher_actions": 7, "vqjax_timeseries/eeg_scp1": 6,
                   "vqjax_timeseries/basic_motions": 6}


def _check_sequence_experiment(c, arg):
    from vqjax.models import model_from_spec
    from vqjax.train.tasks import sequence_tokenizer

    check_config(c)
    channels = SERIES_CHANNELS[c.dataset]
    model = model_from_spec(sequence_tokenizer.model_spec(c, [0.0] * channels, [1.0] * channels))
    x = jnp.zeros((2, c.length, channels))
    variables = jax.eval_shape(lambda k: model.init({"params": k, "vq": k}, x), jax.random.key(0))
    recon, q = jax.eval_shape(lambda v: model.apply(v, x), variables)
    frames = c.length // model.hop_length
    assert recon.shape == x.shape and q.codes.shape[1] == sum(frames // s for s in c.model.scales)
    if arg == "runlocal":
        assert c.num_train_steps <= 50


def _check_video_experiment(c, arg):
    from vqjax.models import model_from_spec
    from vqjax.train.tasks import video_tokenizer

    check_config(c)
    frame = FRAME_SHAPES[c.dataset]
    model = model_from_spec(video_tokenizer.model_spec(c, frame[-1]))
    video_tokenizer.check_clip_shape(c, (17,) + frame, model.temporal_stride, model.spatial_stride)
    x = jnp.zeros((1, 17) + frame)
    variables = jax.eval_shape(lambda k: model.init({"params": k, "vq": k}, x), jax.random.key(0))
    recon, q = jax.eval_shape(lambda v: model.apply(v, x), variables)
    assert recon.shape == x.shape
    f = model.spatial_stride
    assert q.codes.shape[1:4] == (1 + 16 // model.temporal_stride, frame[0] // f, frame[1] // f)
    if arg == "runlocal":
        assert c.num_train_steps <= 50 and not c.frame_baselines


def test_experiment_refuses_unknown_argument():
    with pytest.raises(ValueError, match="runlocal"):
        load_experiment("mnist_vq", "huge")


def _check_lm_experiment(c, arg):
    from vqjax.lm import DecoderLM
    from vqjax.train.tasks import get_task

    get_task("lm").check_config(c)
    model = DecoderLM(vocab_size=2000, dim=c.model.dim, num_layers=c.model.num_layers, num_heads=c.model.num_heads,
                      num_kv_heads=c.model.num_kv_heads, mlp_dim=c.model.mlp_dim, dtype=c.precision)
    ids = jnp.zeros((2, c.seq_len), jnp.int32)
    params = jax.eval_shape(lambda k: model.init(k, ids, ids), jax.random.key(0))
    logits, _ = jax.eval_shape(lambda p: model.apply(p, ids, ids), params)
    assert logits.shape == (2, c.seq_len, 2000)
    if arg == "runlocal":
        assert c.num_train_steps <= 50


def _check_audio_experiment(c, arg):
    from vqjax.train.tasks.audio_codec import model_spec

    from vqjax.models import model_from_spec

    check_config(c)
    model = model_from_spec(model_spec(c))
    x = jnp.zeros((2, int(c.crop_seconds * c.sample_rate), 1))
    variables = jax.eval_shape(lambda k: model.init({"params": k, "vq": k}, x), jax.random.key(0))
    recon, q = jax.eval_shape(lambda v: model.apply(v, x), variables)
    assert recon.shape == x.shape and q.codes.shape[1] == x.shape[1] // model.hop_length
    if arg == "runlocal":
        assert c.num_train_steps <= 50 and not c.anchors


def _check_link_experiment(c, arg):
    from vqjax.graph.models import LinkPredictor

    check_config(c)
    model = LinkPredictor(50, 4, c.dim, c.scorer, c.encoder, vocab_size=60, num_layers=c.num_layers,
                          num_heads=c.num_heads, max_distance=c.max_distance, gamma=c.gamma)
    k = c.nodepiece.anchors_per_node
    tokens = jnp.zeros((50, k + c.nodepiece.relations_per_node), jnp.int32)
    dist = jnp.zeros((50, k), jnp.int32)
    ids = jnp.zeros((3,), jnp.int32)
    scores = jax.eval_shape(lambda key: model.init_with_output(key, ids, ids, ids, tokens, dist)[0],
                            jax.random.key(0))
    assert scores.shape == (3,)
    if arg == "runlocal":
        assert c.num_train_steps <= 50


def _check_recommendation_experiment(c, arg):
    """A recommendation config passes its task's checks, and its semantic-ID model (the generative one's too)
    builds and codes a batch of features."""
    from vqjax.models import model_from_spec

    check_config(c)
    ids = c if c.task == "semantic_ids" else c.get("semantic_ids")
    if ids is not None:
        model = model_from_spec({"name": "rqvae", "kwargs": {
            "input_dim": 24, "hidden": list(ids.hidden), "latent_dim": ids.latent_dim, "quantizer": ids.quantizer,
            "quantizer_kwargs": ids.quantizer_kwargs.to_dict()}})
        x = jnp.zeros((4, 24))
        variables = jax.eval_shape(lambda k: model.init({"params": k, "vq": k}, x), jax.random.key(0))
        codes = jax.eval_shape(lambda v: model.apply(v, x, method=model.encode), variables)
        assert codes.shape == (4, ids.quantizer_kwargs.num_levels)
    if arg == "runlocal":
        assert c.num_train_steps <= 60


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_starts_from_its_tasks_default_config(name):
    """One way to write an experiment: every field it sets is a field of its task's default_config()."""
    import ast
    import os

    from experiments_loader import EXPERIMENTS

    tree = ast.parse(open(os.path.join(EXPERIMENTS, f"{name}.py")).read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                and n.module.startswith("vqjax.train.tasks.") for a in n.names}
    assert imported & {"default_config"}, f"experiments/{name}.py does not start from its task's default_config()"
    assert not imported & {"base_config", "link_config"}
