"""FAST: exact up to the rounding of the scaled DCT, frequency-major order, lossless BPE that compresses, save/load,
and token sequences that do not spell a chunk reported rather than padded."""

import numpy as np
import pytest
import scipy.fft

from vqjax.models.fast import FAST


def _chunks(n=64, t=24, c=3, seed=0):
    """Smooth random chunks (random walks, low-passed), as action chunks are."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=(n, t, c)), axis=1)
    return (x * np.array([1.0, 5.0, 0.2])[:c]).astype(np.float32)


@pytest.fixture(scope="module")
def fast():
    return FAST.fit(_chunks(), scale=10.0, vocab_size=512)


def test_decode_is_the_chunk_of_the_rounded_dct(fast):
    x = _chunks(8, seed=1)
    decoded, ok = fast.decode(fast.encode(x))
    assert ok.all() and decoded.shape == x.shape and decoded.dtype == np.float32
    # by hand: quantile-normalise, DCT, round at the scale, invert
    normed = 2 * (x - fast.low) / (fast.high - fast.low) - 1
    coeffs = np.round(10.0 * scipy.fft.dct(normed.astype(np.float64), norm="ortho", axis=1)) / 10.0
    expected = (scipy.fft.idct(coeffs, norm="ortho", axis=1) + 1) / 2 * (fast.high - fast.low) + fast.low
    np.testing.assert_allclose(decoded, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(decoded, fast.reconstruct(x))
    # the rounding error is at most half a step per coefficient: bounded in the normalised units
    err = (decoded - x) / (fast.high - fast.low) * 2
    assert np.sqrt((err ** 2).sum(axis=1)).max() <= 0.5 / 10.0 * np.sqrt(x.shape[1]) + 1e-4


def test_integers_are_frequency_major(fast):
    x = _chunks(2, seed=2)
    ints = fast.integers(x)
    normed = 2 * (x - fast.low) / (fast.high - fast.low) - 1
    dc = np.round(10.0 * normed.sum(axis=1) / np.sqrt(x.shape[1]))       # the DCT-II's first orthonormal term
    np.testing.assert_array_equal(ints[:, :x.shape[2]], dc)


def test_bpe_is_lossless_and_compresses_smooth_chunks(fast):
    x = _chunks(16, seed=3)
    tokens = fast.encode(x)
    assert all(len(t) < x.shape[1] * x.shape[2] for t in tokens)
    for seq, row in zip(tokens, fast.integers(x)):
        np.testing.assert_array_equal(fast.decode_integers(seq), row)
    finer = FAST.fit(_chunks(), scale=40.0, vocab_size=1024)
    assert np.mean([len(t) for t in finer.encode(x)]) > np.mean([len(t) for t in tokens])   # finer: more tokens


def test_save_and_load_give_the_same_tokens(fast, tmp_path):
    fast.save(str(tmp_path / "fast"))
    loaded = FAST.load(str(tmp_path / "fast"))
    x = _chunks(4, seed=4)
    assert loaded.encode(x) == fast.encode(x)
    np.testing.assert_array_equal(loaded.decode(fast.encode(x))[0], fast.decode(fast.encode(x))[0])
    with pytest.raises(FileNotFoundError, match="fast.json"):
        FAST.load(str(tmp_path))


def test_sequences_that_do_not_spell_a_chunk_are_reported(fast):
    x = _chunks(3, seed=5)
    tokens = fast.encode(x)
    truncated = tokens[0][:-1]
    extended = tokens[1] + tokens[1][:1]
    unknown = tokens[2][:-1] + [fast.vocab_size + 7]
    decoded, ok = fast.decode([truncated, extended, unknown, tokens[0]])
    assert ok.tolist() == [False, False, False, True]
    assert np.isnan(decoded[:3]).all() and np.isfinite(decoded[3]).all()
    with pytest.raises(ValueError, match="do not spell one chunk of 24 x 3"):
        fast.decode_one(truncated)
    np.testing.assert_array_equal(fast.decode_one(tokens[0]), decoded[3])


def test_bad_input_is_refused(fast):
    x = _chunks(2, seed=6)
    with pytest.raises(ValueError, match=r"chunks must be \[N, 24, 3\]"):
        fast.encode(x[:, :20])
    bad = x.copy()
    bad[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        fast.encode(bad)
    with pytest.raises(ValueError, match="outside the fitted range|must lie in"):
        fast.encode(x * 1000.0)
    with pytest.raises(TypeError, match="floating"):
        fast.encode(x.astype(np.int32))
    with pytest.raises(ValueError, match="vocab_size \\(8\\) must be at least the integer alphabet"):
        FAST.fit(x, vocab_size=8)
    with pytest.raises(ValueError, match="non-empty"):
        FAST.fit(np.zeros((0, 4, 2), np.float32))
