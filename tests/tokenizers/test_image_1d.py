"""A 1D image tokenizer as an artifact: the budget argument, prefixes, variable lengths in one batch, the adaptive
mode, refusals of token counts outside the trained range, and the spec's token range through export and load."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from tiny_tokenizers import image_1d_tokenizer, image_tokenizer

import vqjax
from vqjax.tokenizers import ArtifactError


@pytest.fixture(scope="module")
def tok():
    return image_1d_tokenizer()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 1, (5, 8, 8, 1)).astype(np.float32)


def test_the_first_k_codes_are_the_k_token_encoding(tok, images):
    assert tok.token_range == (2, 6) and tok.codes_shape == (None,)
    full = np.asarray(tok.encode(images))
    assert full.shape == (5, 6) and full.dtype == np.int32
    for k in (2, 3, 6):
        codes = np.asarray(tok.encode(images, num_tokens=k))
        np.testing.assert_array_equal(codes, full[:, :k])
        out = np.asarray(tok.decode(codes))
        assert out.shape == (5, 8, 8, 1) and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1


def test_decode_reads_only_the_prefix(tok, images):
    codes = np.asarray(tok.encode(images))
    a = np.asarray(tok.decode(codes[:, :3]))
    changed = codes.copy()
    changed[:, 3:] = (changed[:, 3:] + 7) % tok.vocab_size
    b = np.asarray(tok.decode(changed, lengths=np.full(5, 3)))
    np.testing.assert_allclose(a, b, atol=1e-6)
    # the later codes matter when they are read
    assert not np.allclose(np.asarray(tok.decode(codes)), np.asarray(tok.decode(changed)), atol=1e-4)


def test_rows_of_different_lengths_decode_in_one_batch(tok, images):
    codes = np.asarray(tok.encode(images))
    lengths = np.asarray([2, 6, 3, 4, 5])
    padded = np.where(np.arange(6)[None] < lengths[:, None], codes, -1)
    together = np.asarray(tok.decode(padded, lengths=lengths))
    for i, n in enumerate(lengths):
        alone = np.asarray(tok.decode(codes[i:i + 1, :n]))
        np.testing.assert_allclose(together[i], alone[0], atol=1e-5)


@pytest.mark.parametrize("k", [0, 1, 7, 2.5, True])
def test_token_counts_outside_the_trained_range_are_refused(tok, images, k):
    with pytest.raises(ValueError, match=r"num_tokens must be an int in the trained range \[2, 6\]"):
        tok.encode(images, num_tokens=k)


def test_decoding_lengths_outside_the_range_is_refused(tok, images):
    codes = np.asarray(tok.encode(images))
    with pytest.raises(ValueError, match=r"the codes' length k must be an int in the trained range \[2, 6\]; got 1"):
        tok.decode(codes[:, :1])
    with pytest.raises(ValueError, match="codes must be integer"):
        tok.decode(np.zeros((5, 7, 2), np.int32))
    with pytest.raises(ValueError, match=r"lengths must lie in the trained range \[2, 6\].*got min 1"):
        tok.decode(codes, lengths=np.asarray([1, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match="fit the codes' 3 positions"):
        tok.decode(codes[:, :3], lengths=np.full(5, 4))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 64\); got min -1"):
        tok.decode(np.where(np.arange(6)[None] < 3, -1, codes), lengths=np.full(5, 4))
    with pytest.raises(ValueError, match=r"lengths must be integer \[5\]"):
        tok.decode(codes, lengths=np.full(4, 3))


def test_grid_tokenizers_refuse_the_budget_arguments():
    grid = image_tokenizer()
    x = np.zeros((1, 8, 8, 1), np.float32)
    assert grid.token_range is None
    with pytest.raises(ValueError, match="num_tokens applies to 1D tokenizers"):
        grid.encode(x, num_tokens=2)
    with pytest.raises(ValueError, match="lengths applies to 1D tokenizers"):
        grid.decode(np.asarray(grid.encode(x)), lengths=np.ones(1, int))
    with pytest.raises(ValueError, match="needs a 1D tokenizer"):
        grid.encode_adaptive(x, max_error=0.1)


def test_adaptive_mode_takes_the_fewest_tokens_under_the_bound(tok, images):
    codes = np.asarray(tok.encode(images))
    errors = np.stack([np.mean((np.asarray(tok.decode(codes[:, :k])) - images) ** 2, axis=(1, 2, 3))
                       for k in range(2, 7)], 1)                                  # [B, lengths 2..6]
    bound = float(np.median(errors))
    out = tok.encode_adaptive(images, max_error=bound)
    ok = errors <= bound
    want = np.where(ok.any(1), np.argmax(ok, 1) + 2, 6)
    np.testing.assert_array_equal(out.lengths, want)
    np.testing.assert_array_equal(out.met, ok.any(1))
    np.testing.assert_allclose(out.errors, errors[np.arange(5), want - 2], rtol=1e-4, atol=1e-7)
    for row, n, full in zip(out.codes, out.lengths, codes):
        np.testing.assert_array_equal(row[:n], full[:n])
        assert (row[n:] == -1).all()
    assert [len(c) for c in out.split()] == list(out.lengths)
    codes_only, lengths_only = out                      # unpacks as (codes, lengths)
    assert codes_only is out.codes and lengths_only is out.lengths
    np.testing.assert_allclose(np.asarray(tok.decode(out)), np.asarray(tok.decode(out.codes, lengths=out.lengths)))
    np.testing.assert_allclose(np.asarray(tok.decode(out.split())),                     # ragged per-image codes
                               np.asarray(tok.decode(out.codes, lengths=out.lengths)), atol=1e-6)
    # the adaptive codes decode, and every image lands at (or, where K misses, nearest) its bound
    decoded = np.asarray(tok.decode(out.codes, lengths=out.lengths))
    mse = np.mean((decoded - images) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(mse, out.errors, rtol=1e-4, atol=1e-7)
    # a bound nothing meets spends K everywhere; 0 tolerance is refused only when negative
    assert (tok.encode_adaptive(images, max_error=0.0).lengths == 6).all()
    with pytest.raises(ValueError, match="max_error must be a finite number >= 0"):
        tok.encode_adaptive(images, max_error=-1.0)
    with pytest.raises(ValueError, match="max_error must be a finite number >= 0"):
        tok.encode_adaptive(images, max_error=float("nan"))


def test_multi_codebook_codes_keep_their_level_axis():
    tok = image_1d_tokenizer(quantizer="rvq", quantizer_kwargs={"num_levels": 2, "codebook_size": 8},
                             vocab_size=8, levels=2)
    x = np.random.default_rng(1).uniform(0, 1, (3, 8, 8, 1)).astype(np.float32)
    codes = np.asarray(tok.encode(x, num_tokens=4))
    assert codes.shape == (3, 4, 2)
    assert tok.decode(codes).shape == (3, 8, 8, 1)
    a = tok.encode_adaptive(x, max_error=1.0)
    assert a.codes.shape == (3, 6, 2) and (a.lengths == 2).all()


def test_export_and_load_keep_the_token_range(tok, images, tmp_path):
    path = tok.export(str(tmp_path / "oned"))
    back = vqjax.Tokenizer.load(path)
    assert back.token_range == (2, 6) and back.codes_shape == (None,)
    np.testing.assert_array_equal(np.asarray(back.encode(images, num_tokens=3)),
                                  np.asarray(tok.encode(images, num_tokens=3)))
    spec = json.load(open(os.path.join(path, "spec.json")))
    for bad, msg in (([3, 2], "must be \\[min, max\\] ints"), ([0, 6], "must be \\[min, max\\] ints")):
        json.dump({**spec, "token_range": bad}, open(os.path.join(path, "spec.json"), "w"))
        with pytest.raises(ArtifactError, match=f"token_range: {msg}"):
            vqjax.Tokenizer.load(path)
    json.dump({**spec, "codes_shape": [6]}, open(os.path.join(path, "spec.json"), "w"))
    with pytest.raises(ArtifactError, match="token_range: bounds codes of a variable length"):
        vqjax.Tokenizer.load(path)
    assert jnp.asarray(back.decode(np.asarray(back.encode(images)))).shape == (5, 8, 8, 1)
