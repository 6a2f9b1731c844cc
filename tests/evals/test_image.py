"""The image evaluator: SSIM against scikit-image's, PSNR by its formula, and a tokenizer artifact scored
without the trainer."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from tiny_tokenizers import image_tokenizer

from vqjax import evals
from vqjax.evals import image as image_eval

skimage_metrics = pytest.importorskip("skimage.metrics", reason="needs scikit-image (the data extra)")


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_is_scikit_images_with_gaussian_weights(channels):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 32, 32, channels)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    ours = np.asarray(image_eval.ssim(jnp.asarray(x), jnp.asarray(y)))
    for b in range(2):
        want = skimage_metrics.structural_similarity(x[b], y[b], data_range=1.0, channel_axis=-1,
                                                      gaussian_weights=True, sigma=1.5,
                                                      use_sample_covariance=False)
        assert ours[b] == pytest.approx(want, abs=2e-3)


def test_psnr_is_its_formula():
    x = jnp.zeros((1, 4, 4, 1))
    y = jnp.full((1, 4, 4, 1), 0.1)
    assert float(image_eval.psnr(x, y)[0]) == pytest.approx(10 * math.log10(1 / 0.01), rel=1e-5)


def test_evaluate_scores_an_artifact_by_its_round_trip():
    tok = image_tokenizer()
    images = np.random.default_rng(1).uniform(size=(5, 8, 8, 1)).astype(np.float32)
    (row,) = evals.get_evaluator("image")(tok, images, batch_size=2)
    recon = np.asarray(tok.decode(tok.encode(images)))
    assert row["psnr"] == pytest.approx(float(np.mean(image_eval.psnr(jnp.asarray(images), jnp.asarray(recon)))),
                                        rel=1e-5)
    assert row["bits_per_image"] == 16 * 4 and row["bits_per_pixel"] == 1.0
    assert 0 < row["usage"] <= 1 and row["dead_codes"] == 16 * (1 - row["usage"])
    with pytest.raises(ValueError, match="images is empty"):
        image_eval.evaluate(tok, images[:0])


def test_the_registry_finds_each_field_and_refuses_unknown_names():
    assert evals.known_evaluators() == ["image", "ranking", "recommendation", "speech", "timeseries", "video"]
    for name in evals.known_evaluators():
        assert callable(evals.get_evaluator(name))
    with pytest.raises(ValueError, match=r"evaluator must be one of \[.*'speech'.*\]; got 'smell'"):
        evals.get_evaluator("smell")
    with pytest.raises(ValueError, match="'image' is already registered"):
        evals.register_evaluator("image", lambda tok, x: [])
