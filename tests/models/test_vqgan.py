"""VQGAN parts: loss formulas, the adaptive weight at the decoder's last layer, LeCAM, R1, the perceptual loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.models import Decoder, Encoder, ImageTokenizer, make_quantizer
from vqjax.models.perceptual import FeatureNet, perceptual_distance
from vqjax.models.vqgan import (PatchDiscriminator, adaptive_weight, discriminator_loss, generator_loss, lecam_loss,
                                r1_penalty)

REAL = jnp.array([2.0, 0.5, -1.0, 0.0])
FAKE = jnp.array([-2.0, 0.5, 1.5, -0.25])


def _softplus(x):
    return np.log1p(np.exp(x))


def test_discriminator_and_generator_losses_match_their_formulas():
    r, f = np.asarray(REAL), np.asarray(FAKE)
    hinge = 0.5 * (np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f)))
    ns = 0.5 * (np.mean(_softplus(-r)) + np.mean(_softplus(f)))
    np.testing.assert_allclose(discriminator_loss(REAL, FAKE, "hinge"), hinge, rtol=1e-6)
    np.testing.assert_allclose(discriminator_loss(REAL, FAKE, "non_saturating"), ns, rtol=1e-6)
    np.testing.assert_allclose(generator_loss(FAKE, "hinge"), -np.mean(f), rtol=1e-6)
    np.testing.assert_allclose(generator_loss(FAKE, "non_saturating"), np.mean(_softplus(-f)), rtol=1e-6)
    for fn, args in ((discriminator_loss, (REAL, FAKE)), (generator_loss, (FAKE,))):
        with pytest.raises(ValueError, match="kind must be one of"):
            fn(*args, "wasserstein")


def test_adaptive_weight_is_the_clipped_norm_ratio_without_gradient():
    a, b = jnp.full((3, 3), 2.0), jnp.full((3, 3), 0.5)
    np.testing.assert_allclose(adaptive_weight(a, b), 6.0 / (1.5 + 1e-4), rtol=1e-6)
    assert float(adaptive_weight(a, jnp.zeros((3, 3)))) == 1e4                # clipped
    assert float(jax.grad(lambda s: adaptive_weight(s * a, b))(1.0)) == 0.0


def test_lecam_matches_its_formula():
    ema_real, ema_fake = 0.3, -0.2
    r, f = np.asarray(REAL), np.asarray(FAKE)
    want = np.mean(np.maximum(0, r - ema_fake) ** 2) + np.mean(np.maximum(0, ema_real - f) ** 2)
    np.testing.assert_allclose(lecam_loss(REAL, FAKE, ema_real, ema_fake), want, rtol=1e-6)


def test_r1_of_a_linear_critic_is_its_squared_weight_norm():
    w = jax.random.normal(jax.random.key(0), (4, 4, 3))
    x = jax.random.normal(jax.random.key(1), (5, 4, 4, 3))
    critic = lambda x: jnp.einsum("bhwc,hwc->b", x, w)[:, None]
    np.testing.assert_allclose(r1_penalty(critic, x), jnp.sum(w * w), rtol=1e-5)
    quad = lambda x: jnp.sum(x * x, axis=(1, 2, 3))                           # gradient 2x
    np.testing.assert_allclose(r1_penalty(quad, x), jnp.mean(jnp.sum((2 * x) ** 2, axis=(1, 2, 3))), rtol=1e-5)


def test_patch_discriminator_scores_patches():
    disc = PatchDiscriminator(8, 2)
    x = jnp.zeros((2, 32, 32, 3))
    logits, _ = disc.init_with_output(jax.random.key(0), x)
    assert logits.shape == (2, 8, 8, 1)


def test_adaptive_weight_gradients_through_the_last_layer_equal_the_direct_gradients():
    """The train step differentiates the losses with respect to the decoder's last kernel through the decoder's
    explicit last layer (``apply_last_layer`` on the features ``return_features`` gives, via
    ``last_layer_grads``); that must equal differentiating the whole model."""
    from last_layer_helpers import assert_last_layer_grads_are_direct

    model = ImageTokenizer(Encoder(8, (1, 2), 1, 4), make_quantizer("vq", 4, dict(codebook_size=16)),
                           Decoder(8, (1, 2), 1, 3))
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    variables = jax.jit(model.init)({"params": jax.random.key(1), "vq": jax.random.key(2)}, x)
    assert_last_layer_grads_are_direct(model, variables, x)


def test_perceptual_distance_is_zero_on_equal_images_and_grows_with_noise():
    net = FeatureNet(3, (8, 16))
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
    params = jax.jit(net.init)(jax.random.key(1), x)
    features = lambda im: net.apply(params, im, method="features")
    distance = jax.jit(lambda a, b: perceptual_distance(features, a, b))
    assert abs(float(distance(x, x))) < 1e-10
    noise = jax.random.normal(jax.random.key(2), x.shape)
    small, large = (float(distance(x, x + s * noise)) for s in (0.05, 0.5))
    assert 0 < small < large
    g = jax.jit(jax.grad(distance))(x + 0.1 * noise, x)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0


def test_the_adversarial_terms_change_nothing_before_the_start_step_and_follow_their_formulas_after():
    import optax

    from vqjax.models.vqgan import GANConfig, discriminator_step, gan_init, generator_term

    disc = PatchDiscriminator(4, 2)
    tx = optax.adam(1e-2)
    real = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
    fake = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
    state = gan_init(disc, tx, jax.random.key(2), real)
    cfg = GANConfig(weight=0.5, start_step=3, adaptive=False, lecam_weight=0.1)
    step = jax.jit(lambda s, t: discriminator_step(cfg, disc, tx, s, real, fake, t))
    before, metrics = step(state, jnp.int32(2))
    for a, b in zip(jax.tree.leaves((before.params, before.lecam)), jax.tree.leaves((state.params, state.lecam))):
        np.testing.assert_array_equal(a, b)                                # parameters and LeCAM EMAs untouched
    assert float(metrics["disc_loss"]) == 0.0
    after, metrics = step(state, jnp.int32(3))
    d_real, d_fake = disc.apply(state.params, real), disc.apply(state.params, fake)
    want = discriminator_loss(d_real, d_fake, "hinge") + 0.1 * lecam_loss(d_real, d_fake, 0.0, 0.0)
    np.testing.assert_allclose(metrics["disc_loss"], want, rtol=1e-5)
    np.testing.assert_allclose(after.lecam, 0.01 * np.array([d_real.mean(), d_fake.mean()]), rtol=1e-4)
    assert int(after.opt_state[0].count) == 1

    term = jax.jit(jax.value_and_grad(lambda r, t: generator_term(cfg, disc, state, r, t)[0]))
    value, grad = term(fake, jnp.int32(2))
    assert float(value) == 0.0 and not np.any(np.asarray(grad))
    value, grad = term(fake, jnp.int32(3))
    np.testing.assert_allclose(value, 0.5 * generator_loss(d_fake, "hinge"), rtol=1e-5)
    assert np.any(np.asarray(grad))
