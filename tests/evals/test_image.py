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


# -- the rate-distortion harness: classical codecs at equal bits, 1D prefixes, adaptive mode --------------------

def _photo(size=32, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(channels)], -1)
    return np.clip(127 + 100 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("codec", ["jpeg", "webp"])
def test_payload_excludes_the_headers(codec):
    import io

    from PIL import Image

    image = _photo()
    out, bits = image_eval.pillow_roundtrip(image, codec, 50)
    assert out.shape == image.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=image_eval.ANCHORS[codec][0], quality=50, **image_eval.ANCHORS[codec][2])
    data = buf.getvalue()
    assert bits == 8 * image_eval.payload_bytes(data, codec)
    # the headers are what a file of 1 image and of 0 payload share: a flat image costs far fewer payload bits
    flat_bits = image_eval.pillow_roundtrip(np.full_like(image, 128), codec, 50)[1]
    assert flat_bits < bits < 8 * len(data)
    header = len(data) - bits // 8
    assert (header > 150) if codec == "jpeg" else (20 <= header <= 40)   # JPEG: tables; WebP: RIFF + VP8 header
    with pytest.raises(ValueError, match="codec must be one of"):
        image_eval.payload_bytes(data, "png")


def test_classical_codecs_meet_the_budget_at_their_best_quality():
    images = np.stack([_photo(seed=s) for s in range(3)])
    budget = 8 * 300.0
    decoded, bits = image_eval.classical_at_bits(images, "webp", budget)
    assert decoded.shape == images.shape and (bits <= budget).all()
    for image, b in zip(images, bits):             # one quality higher would not fit
        qualities = [q for q in range(0, 101) if image_eval.pillow_roundtrip(image, "webp", q)[1] <= budget]
        assert image_eval.pillow_roundtrip(image, "webp", max(qualities))[1] == b
    # a budget under the lowest quality's payload keeps the lowest quality, just above the budget
    _, tiny = image_eval.classical_at_bits(images[:1], "jpeg", 8.0)
    assert tiny[0] == image_eval.pillow_roundtrip(images[0], "jpeg", 1)[1] > 8.0


def test_rate_distortion_scores_every_prefix_the_grid_and_the_anchors():
    from tiny_tokenizers import image_1d_tokenizer

    oned, grid = image_1d_tokenizer(), image_tokenizer()
    images = np.stack([_photo(8, 1, s) for s in range(4)])
    rows = image_eval.rate_distortion({"oned": oned, "grid": grid}, images, anchors=("jpeg",),
                                      qualities={"jpeg": (10, 90)})
    fixed = [r for r in rows if r["kind"] == "fixed"]
    assert [(r["codec"], r["tokens"]) for r in fixed] == [("oned", 2), ("oned", 4), ("oned", 6), ("grid", 16)]
    assert fixed[0]["bits_per_image"] == pytest.approx(2 * 6.0) and fixed[3]["bits_per_image"] == 16 * 4.0
    reference = images.astype(np.float32) / 255.0
    want = np.asarray(oned.decode(oned.encode(images, num_tokens=4)))
    assert fixed[1]["psnr"] == pytest.approx(float(np.mean(image_eval.psnr(reference, want))), abs=1e-4)
    for kind in ("adaptive", "adaptive_matched"):
        adaptive = [r for r in rows if r["kind"] == kind]
        assert [r["fixed_tokens"] for r in adaptive] == [2, 4, 6] and all(2 <= r["tokens"] <= 6 for r in adaptive)
    for r in (r for r in rows if r["kind"] == "adaptive"):          # the bound is the fixed-k mean error
        assert r["max_error"] == next(f["mse"] for f in fixed if f["tokens"] == r["fixed_tokens"])
    for r in (r for r in rows if r["kind"] == "adaptive_matched"):  # the same mean PSNR (or as near as lengths go)
        target = next(f["psnr"] for f in fixed if f["tokens"] == r["fixed_tokens"])
        assert r["psnr"] >= target - 1e-3 or r["tokens"] == 6
    at_bits = [r for r in rows if r["kind"] == "at_bits"]
    assert sorted(r["budget"] for r in at_bits) == sorted(r["bits_per_image"] for r in fixed)
    assert [r["quality"] for r in rows if r["kind"] == "sweep"] == [10, 90]
    assert all(math.isnan(r["feature_distance"]) for r in rows)
    with pytest.raises(ValueError, match="anchors must be among"):
        image_eval.rate_distortion({"grid": grid}, images, anchors=("png",))
