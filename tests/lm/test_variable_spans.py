"""Variable-length spans (an audio codec's frames): encode/decode round trip, malformed spans refused, the bound
enforced, saved and reloaded, and constrained generation that ends only on whole frames and never past the bound."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_tokenizers import audio_tokenizer

from vqjax.lm import Codes, Media, MultimodalVocab
from vqjax.lm.generate import allowed_mask, constraint_tables, generate, span_validity
from vqjax.lm.model import DecoderLM


@pytest.fixture(scope="module")
def audio_tok(tmp_path_factory):
    import vqjax

    return vqjax.Tokenizer.load(audio_tokenizer().export(str(tmp_path_factory.mktemp("audio_tok"))))


@pytest.fixture(scope="module")
def vocab(text_tok, audio_tok, image_tok):
    return MultimodalVocab.build(text=text_tok, modalities={"speech": audio_tok, "image": image_tok},
                                 max_lengths={"speech": 6})


def test_round_trip_of_spans_of_any_whole_number_of_frames(vocab, audio_tok):
    assert vocab.variable("speech") and not vocab.variable("image")
    assert vocab.frame_length("speech") == 3 and vocab.span_length("speech") == 18 and vocab.max_frames("speech") == 6
    rng = np.random.default_rng(0)
    for frames in (1, 4, 6):
        codes = rng.integers(0, 256, (frames, 3))
        ids = vocab.encode(["say", Codes("speech", codes)])
        assert len(ids) == len(vocab.encode(["say"])) + 2 + 3 * frames
        seg = [s for s in vocab.decode(ids) if isinstance(s, Media)][0]
        np.testing.assert_array_equal(seg.codes, codes)
        assert seg.data.shape == np.asarray(audio_tok.decode(codes[None]))[0].shape


def test_partial_frames_and_spans_past_the_bound_are_refused(vocab, text_tok, audio_tok):
    lo, _ = vocab.range("speech")
    begin, end = vocab.begin_id("speech"), vocab.end_id("speech")
    partial = np.asarray([vocab.bos_id, begin, lo, lo + 1, lo + 2, lo + 3, end, vocab.eos_id])
    with pytest.raises(ValueError, match="whole number of 3-code frames"):
        vocab.decode(partial)
    too_long = np.asarray([vocab.bos_id, begin, *([lo] * 21), end])
    with pytest.raises(ValueError, match="not followed by its end token"):
        vocab.decode(too_long)
    with pytest.raises(ValueError, match=r"\[1..6, 3\]"):
        vocab.encode([Codes("speech", np.zeros((7, 3), int))])
    with pytest.raises(ValueError, match="max_lengths"):
        MultimodalVocab.build(text=text_tok, modalities={"speech": audio_tok})


def test_saved_and_reloaded_with_its_bound(vocab, tmp_path):
    path = vocab.save(str(tmp_path / "vocab.json"))
    again = MultimodalVocab.load(path)
    assert again.max_frames("speech") == 6 and again.size == vocab.size
    ids = vocab.encode([Codes("speech", np.ones((2, 3), int))])
    np.testing.assert_array_equal(again.encode([Codes("speech", np.ones((2, 3), int))]), ids)


def test_constrained_generation_ends_on_whole_frames_within_the_bound(vocab):
    tables = constraint_tables(vocab)
    m = vocab.modalities.index("speech") + 1
    end = vocab.end_id("speech")
    mask = np.asarray(allowed_mask(tables, jnp.full(5, m), jnp.asarray([0, 2, 3, 9, 18]), jnp.zeros(5, bool)))
    assert [bool(mask[i, end]) for i in range(5)] == [False, False, True, True, True]
    lo, hi = vocab.range("speech")
    assert mask[3, lo:hi].all() and not mask[4, lo:hi].any()
    model = DecoderLM(vocab_size=vocab.size, dim=32, num_layers=1, num_heads=2, num_kv_heads=1, mlp_dim=32)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), jnp.int32))
    prompts = [np.append(vocab.encode(["say"], eos=False), vocab.begin_id("speech"))] * 8
    out = generate(model, params, vocab, prompts, max_new_tokens=30, key=jax.random.key(1), temperature=1.0)
    report = span_validity(vocab, out, prompts)
    assert report["spans"] == 8 and report["fraction"] == 1.0


# -- a 1D image tokenizer: spans of any length in its token range -------------------------------------------------

@pytest.fixture(scope="module")
def oned_vocab(text_tok, tmp_path_factory):
    from tiny_tokenizers import image_1d_tokenizer

    import vqjax

    tok = vqjax.Tokenizer.load(image_1d_tokenizer().export(str(tmp_path_factory.mktemp("oned"))))
    return MultimodalVocab.build(text=text_tok, modalities={"digit": tok}), tok


def test_one_d_image_spans_take_any_length_the_spec_allows(oned_vocab):
    vocab, tok = oned_vocab
    assert vocab.variable("digit") and vocab.min_frames("digit") == 2 and vocab.max_frames("digit") == 6
    assert vocab.span_length("digit") == 6 and vocab.min_span_length("digit") == 2
    image = np.random.default_rng(0).uniform(0, 1, (8, 8, 1)).astype(np.float32)
    full = vocab.encode([Media("digit", image)])
    assert len(full) == 2 + 2 + 6                         # BOS, begin, 6 codes, end, EOS
    for k in (2, 4, 6):
        codes = np.asarray(tok.encode(image[None], num_tokens=k))[0]
        ids = vocab.encode(["a digit", Codes("digit", codes)])
        seg = [s for s in vocab.decode(ids) if isinstance(s, Media)][0]
        np.testing.assert_array_equal(seg.codes, codes)
        np.testing.assert_allclose(seg.data, np.asarray(tok.decode(codes[None]))[0], atol=1e-6)
    lo, _ = vocab.range("digit")
    short = np.asarray([vocab.bos_id, vocab.begin_id("digit"), lo, vocab.end_id("digit"), vocab.eos_id])
    with pytest.raises(ValueError, match="at least 2 and at most 6"):
        vocab.decode(short)
    with pytest.raises(ValueError, match=r"\[2..6\]"):
        vocab.encode([Codes("digit", np.zeros(1, int))])
    with pytest.raises(ValueError, match=r"\[2..6\]"):
        vocab.encode([Codes("digit", np.zeros(7, int))])


def test_the_bound_may_be_lowered_never_raised(text_tok, oned_vocab):
    _, tok = oned_vocab
    assert MultimodalVocab.build(text=text_tok, modalities={"digit": tok},
                                 max_lengths={"digit": 4}).max_frames("digit") == 4
    with pytest.raises(ValueError, match=r"length range \[2, 6\]"):
        MultimodalVocab.build(text=text_tok, modalities={"digit": tok}, max_lengths={"digit": 8})


def test_generated_one_d_spans_always_decode(oned_vocab, tmp_path):
    vocab, tok = oned_vocab
    tables = constraint_tables(vocab)
    m = vocab.modalities.index("digit") + 1
    end = vocab.end_id("digit")
    mask = np.asarray(allowed_mask(tables, jnp.full(4, m), jnp.asarray([0, 1, 2, 6]), jnp.zeros(4, bool)))
    assert [bool(mask[i, end]) for i in range(4)] == [False, False, True, True]
    model = DecoderLM(vocab_size=vocab.size, dim=32, num_layers=1, num_heads=2, num_kv_heads=1, mlp_dim=32)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), jnp.int32))
    prompts = [np.append(vocab.encode(["draw"], eos=False), vocab.begin_id("digit"))] * 8
    out = generate(model, params, vocab, prompts, max_new_tokens=12, key=jax.random.key(2), temperature=1.0)
    report = span_validity(vocab, out, prompts)
    assert report["spans"] == 8 and report["fraction"] == 1.0
    again = MultimodalVocab.load(vocab.save(str(tmp_path / "vocab.json")))
    assert again.min_frames("digit") == 2 and again.max_frames("digit") == 6
