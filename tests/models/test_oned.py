"""The 1D image tokenizer model: patches round trip, causal latent tokens (a prefix never reads later tokens),
the decoder reading only each image's prefix, nested-dropout lengths, the explicit last layer, remat and bf16, and
refused constructor arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.models import image_1d_tokenizer
from vqjax.models.oned import patchify, prefix_mask, sample_lengths, unpatchify

KW = dict(image_size=(8, 12), image_channels=3, patch_size=4, num_tokens=6, width=16, encoder_layers=2,
          decoder_layers=1, num_heads=2, latent_dim=4, quantizer="fsq", quantizer_kwargs={"levels": [5, 5, 5]},
          linear_path=True)


@pytest.fixture(scope="module")
def setup():
    model = image_1d_tokenizer(**KW)
    x = jax.random.uniform(jax.random.key(0), (3, 8, 12, 3))
    variables = jax.jit(model.init)({"params": jax.random.key(1)}, x)
    return model, variables, x


def test_patches_round_trip():
    x = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
    p = patchify(x, 4)
    assert p.shape == (2, 6, 48)
    np.testing.assert_array_equal(np.asarray(p[0, 1]), np.asarray(x[0, 0:4, 4:8].reshape(-1)))
    np.testing.assert_array_equal(np.asarray(unpatchify(p, 4, 8, 12)), np.asarray(x))


def test_a_prefix_of_tokens_never_reads_the_later_tokens(setup):
    model, variables, x = setup
    z = model.apply(variables, x, method=lambda m, v: m.encoder(v))
    params = jax.tree.map(lambda a: a, variables["params"])
    tokens = params["encoder"]["latent_tokens"]
    params["encoder"]["latent_tokens"] = tokens.at[3:].add(5.0)
    z2 = model.apply({**variables, "params": params}, x, method=lambda m, v: m.encoder(v))
    np.testing.assert_allclose(np.asarray(z[:, :3]), np.asarray(z2[:, :3]), atol=1e-5)
    assert not np.allclose(np.asarray(z[:, 3:]), np.asarray(z2[:, 3:]), atol=1e-3)


def test_the_decoder_reads_each_image_s_prefix_only(setup):
    model, variables, x = setup
    codes = model.apply(variables, x, method=model.encode)
    assert codes.shape == (3, 6)
    lengths = jnp.asarray([1, 4, 6])
    out = model.apply(variables, codes, lengths, method=model.decode)
    scrambled = jnp.where(jnp.arange(6)[None] >= lengths[:, None], (codes + 11) % 125, codes)
    out2 = model.apply(variables, scrambled, lengths, method=model.decode)
    np.testing.assert_allclose(np.asarray(out[:2]), np.asarray(out2[:2]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out[2]), np.asarray(out2[2]), atol=1e-5)
    assert not np.allclose(np.asarray(out[0]), np.asarray(model.apply(variables, codes, jnp.asarray([2, 4, 6]),
                                                                      method=model.decode)[0]), atol=1e-4)
    # the default length is all K tokens, as __call__ without training
    recon, _ = model.apply(variables, x)
    np.testing.assert_allclose(np.asarray(recon), np.asarray(model.apply(variables, codes, method=model.decode)),
                               atol=1e-5)


def test_nested_dropout_lengths_are_log_uniform_over_the_range():
    n = sample_lengths(jax.random.key(0), 20000, 2, 31)
    assert int(n.min()) == 2 and int(n.max()) == 31 and n.dtype == jnp.int32
    counts = np.bincount(np.asarray(n), minlength=32)
    # equal mass per octave: [2, 4), [4, 8), [8, 16), [16, 32)
    octaves = [counts[2:4].sum(), counts[4:8].sum(), counts[8:16].sum(), counts[16:32].sum()]
    np.testing.assert_allclose(np.asarray(octaves) / 20000, 0.25, atol=0.02)
    np.testing.assert_array_equal(np.asarray(prefix_mask(jnp.asarray([0, 2]), 3)), [[0, 0, 0], [1, 1, 0]])
    flat = np.bincount(np.asarray(sample_lengths(jax.random.key(1), 20000, 2, 31, "uniform")), minlength=32)
    assert flat[:2].sum() == 0 and flat[32:].sum() == 0
    np.testing.assert_allclose(flat[2:] / 20000, 1 / 30, atol=0.005)      # every length equally often


def test_training_decodes_random_prefixes_and_the_last_layer_is_explicit(setup):
    model, variables, x = setup
    (recon, q, h), _ = model.apply(variables, x, train=True, return_features=True, rngs={"vq": jax.random.key(3)},
                                   mutable=["vq_stats"])
    last = model.last_layer_params(variables["params"])
    np.testing.assert_allclose(np.asarray(model.decoder.apply_last_layer(last, h)), np.asarray(recon), atol=1e-5)
    full, _ = model.apply(variables, x)
    assert not np.allclose(np.asarray(recon), np.asarray(full), atol=1e-4)    # some image decoded from fewer
    # gradients reach the encoder through the quantizer and the decoder's every part
    def loss(p):
        (r, qq), _ = model.apply({**variables, "params": p}, x, train=True, rngs={"vq": jax.random.key(3)},
                                 mutable=["vq_stats"])
        return jnp.mean((r - x) ** 2) + qq.loss
    grads = jax.grad(loss)(variables["params"])
    for name in ("patch_positions", "latent_tokens"):
        assert float(jnp.abs(grads["encoder"][name]).sum()) > 0
    assert float(jnp.abs(grads["decoder"]["dropped"]).sum()) > 0
    assert float(jnp.abs(grads["encoder"]["linear_path"]["kernel"]).sum()) > 0


def test_without_the_linear_path_the_model_has_none(setup):
    model, variables, x = setup
    plain = image_1d_tokenizer(**{**KW, "linear_path": False})
    params = jax.eval_shape(plain.init, {"params": jax.random.key(1)}, x)["params"]
    assert "linear_path" not in params["encoder"] and "linear_path" not in params["decoder"]
    assert "linear_path" in variables["params"]["decoder"]


def test_remat_keeps_the_parameters_and_bf16_runs(setup):
    model, variables, x = setup
    rm = image_1d_tokenizer(**KW, remat=True)
    assert jax.tree.structure(jax.eval_shape(rm.init, {"params": jax.random.key(1)}, x)["params"]) == \
        jax.tree.structure(variables["params"])
    np.testing.assert_allclose(np.asarray(rm.apply(variables, x)[0]), np.asarray(model.apply(variables, x)[0]),
                               atol=1e-5)
    bf = image_1d_tokenizer(**KW, dtype="bfloat16")
    recon, q = bf.apply(variables, x)
    assert recon.dtype == jnp.float32 and bool(jnp.isfinite(recon).all())
    assert float(jnp.mean(jnp.abs(recon - model.apply(variables, x)[0]))) < 0.05


@pytest.mark.parametrize("change, message", [
    (dict(patch_size=5), r"image_size must be \(H, W\) divisible by patch_size \(5\)"),
    (dict(width=15), r"width \(15\) must be a multiple of num_heads \(2\)"),
    (dict(min_tokens=7), r"min_tokens must be <= num_tokens \(6\); got 7"),
    (dict(num_tokens=0), "num_tokens must be a positive int; got 0"),
    (dict(length_sampling="geometric"), r"length_sampling must be one of \('log_uniform', 'uniform'\)"),
])
def test_bad_arguments_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        image_1d_tokenizer(**{**KW, **change})
