"""The causal 3D video encoder and decoder: shapes from the strides (a single image is one latent frame); chunked
encoding and decoding equal the whole clip's; a later frame never changes an earlier output; bad input refused."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from streaming_helpers import run_in_chunks

from vqjax.models.video import CausalConv3d, VideoDecoder, VideoEncoder, latent_frames

FIELDS = dict(channels=4, channel_mult=(1, 2, 2), temporal_down=(True, True), num_res_blocks=1)


@pytest.fixture(scope="module")
def video_codec():
    enc = VideoEncoder(latent_dim=3, **FIELDS)
    dec = VideoDecoder(out_channels=1, **FIELDS)
    pe = jax.jit(enc.init)(jax.random.key(0), jnp.zeros((1, 5, 16, 16, 1)))
    pd = jax.jit(dec.init)(jax.random.key(1), jnp.zeros((1, 2, 4, 4, 3)))
    return enc, dec, pe, pd


def _clip(frames, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(size=(batch, frames, 16, 16, 1)).astype(np.float32)


def test_shapes_follow_the_strides_and_an_image_is_one_frame(video_codec):
    enc, dec, pe, pd = video_codec
    assert enc.temporal_stride == 4 and enc.spatial_stride == 4
    z, _ = jax.jit(enc.apply)(pe, _clip(17))
    assert z.shape == (2, 5, 4, 4, 3) and latent_frames(17, 4) == 5
    y, _ = jax.jit(dec.apply)(pd, z)
    assert y.shape == (2, 17, 16, 16, 1)
    x = _clip(17)
    image, _ = enc.apply(pe, x[:, :1])
    assert image.shape == (2, 1, 4, 4, 3)
    # frame 0 is encoded on its own: the image's latent is the clip's first latent frame
    np.testing.assert_allclose(image[:, 0], enc.apply(pe, x)[0][:, 0], rtol=1e-5, atol=1e-5)
    assert dec.apply(pd, image)[0].shape == (2, 1, 16, 16, 1)


@pytest.mark.parametrize("cuts", [[1, 5, 9, 13], [5], [9, 13]])
def test_chunks_equal_the_whole_clip(video_codec, cuts):
    enc, dec, pe, pd = video_codec
    x = _clip(17)
    whole, _ = jax.jit(enc.apply)(pe, x)
    np.testing.assert_allclose(run_in_chunks(enc, pe, x, cuts), whole, rtol=1e-5, atol=1e-5)
    frames = [latent_frames(c, 4) for c in cuts]
    y_whole, _ = jax.jit(dec.apply)(pd, whole)
    np.testing.assert_allclose(run_in_chunks(dec, pd, whole, frames), y_whole, rtol=1e-5, atol=1e-5)


def test_later_frames_never_change_earlier_outputs(video_codec):
    enc, dec, pe, pd = video_codec
    x = _clip(17)
    later = x.copy()
    later[:, 9:] = _clip(8, seed=5)
    a, _ = enc.apply(pe, x)
    b, _ = enc.apply(pe, later)
    np.testing.assert_array_equal(a[:, :3], b[:, :3])              # latent 2 reads frames up to 8
    assert not np.allclose(a[:, 3:], b[:, 3:])
    ya, _ = dec.apply(pd, a)
    yb, _ = dec.apply(pd, b)
    np.testing.assert_array_equal(ya[:, :9], yb[:, :9])             # frames 0..8 come from latents 0..2


def test_bad_input_is_refused(video_codec):
    enc, dec, pe, pd = video_codec
    with pytest.raises(ValueError, match=r"first chunk must hold 1 \+ 2 \* n frames; got 16"):
        enc.apply(pe, _clip(16))
    with pytest.raises(ValueError, match=r"must be a video \[batch, frames, height, width, channels\]"):
        enc.apply(pe, _clip(17)[:, :, :, :, 0])
    with pytest.raises(ValueError, match=r"1 \+ 4 \* n frames"):
        latent_frames(16, 4)
    with pytest.raises(ValueError, match="temporal kernel"):
        CausalConv3d(2, (1, 3, 3), (2, 1, 1)).init(jax.random.key(0), jnp.zeros((1, 3, 4, 4, 1)))
    with pytest.raises(ValueError, match="temporal_down needs one entry per spatial halving"):
        VideoEncoder(channels=4, channel_mult=(1, 2), temporal_down=(True, True)).init(
            jax.random.key(0), jnp.zeros((1, 5, 8, 8, 1)))


@pytest.mark.parametrize("quantizer, kwargs, tail, patch", [("fsq", {"levels": [5, 5, 5]}, (), 1),
                                                            ("rvq", {"num_levels": 2, "codebook_size": 16}, (2,), 2)])
def test_tokenizer_codes_stream_and_decode_like_the_whole_clip(quantizer, kwargs, tail, patch):
    from vqjax.models import model_from_spec

    model = model_from_spec({"name": "video_tokenizer", "kwargs": dict(
        channels=4, channel_mult=[1, 2, 2], temporal_down=[True, True], num_res_blocks=1, latent_dim=3,
        video_channels=1, quantizer=quantizer, quantizer_kwargs=kwargs, patch_size=patch)})
    x = _clip(17)
    variables = jax.jit(model.init)({"params": jax.random.key(0), "vq": jax.random.key(1)}, x[:, :5])
    recon, q = jax.jit(model.apply)(variables, x)
    side = 16 // (4 * patch)
    assert recon.shape == x.shape and q.codes.shape == (2, 5, side, side) + tail
    assert model.temporal_stride == 4 and model.spatial_stride == 4 * patch
    encode = jax.jit(lambda v, x, s: model.apply(v, x, s, method="encode_stream"))
    decode = jax.jit(lambda v, c, s: model.apply(v, c, s, method="decode_stream"))
    whole = model.apply(variables, x, method="encode")
    np.testing.assert_array_equal(whole, q.codes)
    parts, state = [], None
    for a, b in ((0, 5), (5, 13), (13, 17)):
        c, state = encode(variables, x[:, a:b], state)
        parts.append(c)
    np.testing.assert_array_equal(np.concatenate(parts, 1), whole)          # the same tokens, chunk by chunk
    frames, state = [], None
    for a, b in ((0, 2), (2, 5)):
        f, state = decode(variables, whole[:, a:b], state)
        frames.append(f)
    np.testing.assert_allclose(np.concatenate(frames, 1), model.apply(variables, whole, method="decode"),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.apply(variables, whole, method="decode"), recon, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strides", [(1, 1, 1), (2, 2, 2), (1, 2, 2)])
def test_causal_conv_is_a_3d_convolution_over_the_first_frame_padding(strides):
    # The layer (a sum of 2D convolutions per temporal tap) against XLA's 3D convolution of the clip with two
    # copies of its first frame in front and 'SAME' spatial padding.
    layer = CausalConv3d(5, (3, 3, 3), strides)
    x = _clip(9, seed=3)
    params = jax.jit(layer.init)(jax.random.key(0), x)
    y, _ = layer.apply(params, x)
    padded = np.concatenate([x[:, :1], x[:, :1], x], axis=1)
    ref = jax.lax.conv_general_dilated(padded, params["params"]["kernel"], strides, [(0, 0), (1, 1), (1, 1)]
                                       if strides[1] == 1 else [(0, 0), (0, 1), (0, 1)],
                                       dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    np.testing.assert_allclose(y, ref + params["params"]["bias"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("frames, strides", [(9, (2, 1, 1)), (6, (2, 2, 2)), (5, (1, 1, 1))])
def test_conv3d_is_xlas_3d_convolution_with_same_padding(frames, strides):
    """The discriminator's layer (a sum of 2D convolutions per temporal tap) against ``nn.Conv``'s 3D 'SAME'
    convolution with the same kernel and bias, odd and even frame counts."""
    from vqjax.models.video import Conv3d

    layer = Conv3d(5, (3, 3, 3), strides)
    x = _clip(frames, seed=4)
    params = jax.jit(layer.init)(jax.random.key(0), x)
    ref = nn.Conv(5, (3, 3, 3), strides, padding="SAME").apply(params, x)
    y = jax.jit(layer.apply)(params, x)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_space_to_depth_stacks_each_frames_patches_and_inverts():
    from vqjax.models.video import depth_to_space, space_to_depth

    x = np.arange(2 * 3 * 4 * 6 * 2, dtype=np.float32).reshape(2, 3, 4, 6, 2)
    y = space_to_depth(jnp.asarray(x), 2)
    assert y.shape == (2, 3, 2, 3, 8)
    np.testing.assert_array_equal(y[1, 2, 1, 2], x[1, 2, 2:4, 4:6].reshape(-1))     # one 2x2 patch, row-major
    np.testing.assert_array_equal(depth_to_space(y, 2), x)
    np.testing.assert_array_equal(space_to_depth(jnp.asarray(x), 1), x)
    with pytest.raises(ValueError, match="not divisible by patch_size 4"):
        space_to_depth(jnp.asarray(x), 4)


def test_adaptive_weight_gradients_through_the_video_decoders_last_layer_equal_the_direct_gradients():
    """The video task's adversarial term differentiates through the decoder's explicit last layer
    (``apply_last_layer`` on the features ``return_features`` gives, via ``last_layer_grads``, patch stem
    included); that must equal differentiating the whole model."""
    from last_layer_helpers import assert_last_layer_grads_are_direct
    from vqjax.models import model_from_spec

    model = model_from_spec({"name": "video_tokenizer", "kwargs": dict(
        channels=4, channel_mult=[1, 2], temporal_down=[True], num_res_blocks=1, latent_dim=3, video_channels=1,
        quantizer="fsq", quantizer_kwargs={"levels": [5, 5, 5]}, patch_size=2)})
    x = jnp.asarray(_clip(5))
    variables = jax.jit(model.init)({"params": jax.random.key(0)}, x)
    assert_last_layer_grads_are_direct(model, variables, x)


def test_video_discriminator_scores_space_time_patches_and_sees_motion():
    """One logit per space-time patch; the temporal layers make it judge the order of frames, not only each frame
    (the same frames reversed in time score differently), and it refuses what is not a clip."""
    from vqjax.models.video import VideoDiscriminator

    disc = VideoDiscriminator(channels=4, num_layers=2, temporal_layers=2)
    x = jnp.asarray(_clip(9))
    params = jax.jit(disc.init)(jax.random.key(0), x)
    logits = jax.jit(disc.apply)(params, x)
    assert logits.shape == (2, 3, 4, 4, 1)                    # 9 frames -> 5 -> 3; 16 / 2^2 in space
    flipped = jax.jit(disc.apply)(params, x[:, ::-1])
    assert float(jnp.abs(flipped[:, ::-1] - logits).max()) > 1e-3
    grad = jax.jit(jax.grad(lambda v: jnp.sum(disc.apply(params, v))))(x)
    assert float(jnp.abs(grad[:, -1]).max()) > 0                # the last frame reaches the logits
    with pytest.raises(ValueError, match="VideoDiscriminator: x must be a video"):
        disc.apply(params, x[:, 0])


def _tokenizer_pair(temporal_down=(True, True), quantizer="fsq", kwargs=None, video_mult=(1, 2, 2)):
    from vqjax.models import model_from_spec

    kwargs = {"levels": [5, 5, 5]} if kwargs is None else kwargs
    shared = dict(channels=4, num_res_blocks=1, latent_dim=3, quantizer=quantizer, quantizer_kwargs=kwargs)
    image = model_from_spec({"name": "image_tokenizer", "kwargs": dict(channel_mult=[1, 2, 2], image_channels=1,
                                                                      **shared)})
    video = model_from_spec({"name": "video_tokenizer", "kwargs": dict(
        channel_mult=list(video_mult), temporal_down=list(temporal_down), video_channels=1, **shared)})
    keys = {"params": jax.random.key(0), "vq": jax.random.key(1)}
    vi = jax.jit(image.init)(keys, jnp.zeros((1, 16, 16, 1)))
    vv = jax.jit(video.init)({"params": jax.random.key(2), "vq": jax.random.key(3)}, jnp.zeros((1, 5, 16, 16, 1)))
    return image, video, vi, vv


@pytest.mark.parametrize("temporal_down, quantizer, kwargs", [((True, True), "fsq", None),
                                                              ((False, True), "vq", {"codebook_size": 16})])
def test_an_inflated_image_tokenizer_is_the_image_tokenizer_on_each_groups_last_frame(temporal_down, quantizer,
                                                                                      kwargs):
    from vqjax.models.video import inflate_image_params

    image, video, vi, vv = _tokenizer_pair(temporal_down, quantizer, kwargs)
    params = inflate_image_params(vi["params"], vv["params"])
    assert jax.tree.structure(params) == jax.tree.structure(vv["params"])
    variables = {**vv, "params": params, **({"vq_stats": vi["vq_stats"]} if "vq_stats" in vi else {})}
    x = _clip(17)
    recon, q = jax.jit(video.apply)(variables, x)
    stride = video.temporal_stride
    held = np.array([0] + [stride * ((t + stride - 1) // stride) for t in range(1, 17)])   # 0, 4, 4, 4, 4, 8, ...
    image_recon, image_q = jax.jit(image.apply)(vi, x[:, held].reshape((-1, 16, 16, 1)))
    np.testing.assert_allclose(recon, np.asarray(image_recon).reshape(recon.shape), rtol=1e-4, atol=1e-4)
    image_codes = np.asarray(image_q.codes).reshape((2, 17) + image_q.codes.shape[1:])
    np.testing.assert_array_equal(q.codes, image_codes[:, ::stride])


def test_inflation_refuses_a_different_layout():
    from vqjax.models.video import inflate_image_params

    _, _, vi, vv = _tokenizer_pair(temporal_down=(True, True, False), video_mult=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="channel_mult or num_res_blocks"):
        inflate_image_params(vi["params"], vv["params"])
    vv = _tokenizer_pair(kwargs={"levels": [5, 5, 5, 5]})[3]              # a quantizer with projections
    other = _tokenizer_pair()[2]                                        # one without
    with pytest.raises(ValueError, match="quantizer"):
        inflate_image_params(other["params"], vv["params"])
