"""MultimodalVocab: disjoint ranges, round trips of text + image + graph, malformed spans refused, save/load that
refuses changed tokenizers, and a Hugging Face export that gives the same ids."""

import json

import numpy as np
import pytest

from vqjax.lm import Codes, Invalid, Media, MultimodalVocab, Text, fingerprint, train_bpe


@pytest.fixture(scope="module")
def vocab(text_tok, image_tok, graph_tok):
    return MultimodalVocab.build(text=text_tok, modalities={"image": image_tok, "graph": graph_tok})


def _images(n, seed=0):
    return np.random.default_rng(seed).random((n, 8, 8)).astype(np.float32)


def test_ranges_are_disjoint_and_cover_the_vocabulary(vocab, text_tok, image_tok, graph_tok):
    t = text_tok.get_vocab_size()
    assert vocab.range("text") == (0, t)
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id) == (t, t + 1, t + 2)
    img, gr = vocab.range("image"), vocab.range("graph")
    assert img == (t + 7, t + 7 + image_tok.vocab_size) and gr == (img[1], img[1] + graph_tok.vocab_size)
    assert vocab.size == gr[1] == len(vocab.token_names()) + t
    owners = np.zeros(vocab.size, int)
    for lo, hi in ((0, t), img, gr):
        owners[lo:hi] += 1
    owners[[vocab.pad_id, vocab.bos_id, vocab.eos_id]] += 1
    for name in ("image", "graph"):
        owners[[vocab.begin_id(name), vocab.end_id(name)]] += 1
    assert (owners == 1).all()                   # every id has exactly one meaning
    kinds = vocab.kind_table()
    assert set(kinds[img[0]:img[1]]) == {1} and set(kinds[gr[0]:gr[1]]) == {2} and set(kinds[:t]) == {0}


def test_codes_of_different_modalities_never_collide(vocab):
    a = vocab.codes_to_ids("image", np.full((4, 4), 3))
    b = vocab.codes_to_ids("graph", np.full(vocab.codes_shape("graph"), 3))
    assert not set(a.tolist()) & set(b.tolist())
    # Text, whatever it holds, stays in the text range (the code-token strings are not special to vqjax's encode).
    ids = vocab.encode_text("<|image_3|> <|begin_image|> <|eos|>")
    assert ids.max() < vocab.range("text")[1]


def test_round_trip_text_image_graph(vocab, image_tok, graph_tok):
    imgs = _images(2)
    node = 7
    doc = ["a handwritten seven", ("image", imgs[0]), Text(" then node"), Media("graph", np.int64(node)),
           ("image", imgs[1]), "end."]
    ids = vocab.encode(doc)
    assert ids.dtype == np.int32 and ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    out = vocab.decode(ids)
    assert [type(s).__name__ for s in out] == ["Text", "Media", "Text", "Media", "Media", "Text"]
    assert out[0].text == "a handwritten seven" and out[2].text == " then node" and out[5].text == "end."
    codes = np.asarray(image_tok.encode(imgs[:, :, :, None]))
    np.testing.assert_array_equal(out[1].codes, codes[0])
    np.testing.assert_array_equal(out[4].codes, codes[1])
    np.testing.assert_allclose(out[1].data, np.asarray(image_tok.decode(codes[:1]))[0])
    assert out[3].modality == "graph" and int(out[3].data) == int(graph_tok.decode(graph_tok.encode([node]))[0])
    # Codes segments give the same ids as the media they came from, and decode back to them.
    again = vocab.encode(["a handwritten seven", Codes("image", codes[0])], eos=False)
    np.testing.assert_array_equal(again, ids[:len(again)])


def test_malformed_spans_are_refused_or_reported(vocab):
    good = vocab.encode([("image", _images(1)[0])], bos=False, eos=False)
    n = vocab.span_length("image")
    assert len(good) == n + 2
    cases = {
        "short": np.concatenate([good[:5], good[-1:]]),
        "no end": good[:-1],
        "foreign id inside": np.concatenate([good[:3], vocab.encode_text("x"), good[4:]]),
        "wrong end": np.concatenate([good[:-1], [vocab.end_id("graph")]]),
        "code outside a span": good[1:3],
        "id out of range": np.asarray([vocab.size + 5], np.int32),
    }
    for name, ids in cases.items():
        with pytest.raises(ValueError, match="malformed piece"):
            vocab.decode(ids)
        out = vocab.decode(ids, strict=False)
        assert any(isinstance(s, Invalid) for s in out), name
    assert vocab.spans(good) == [("image", 0, n + 2, None)]


def test_bad_input_is_refused_clearly(vocab, text_tok, image_tok):
    with pytest.raises(KeyError, match="unknown modality 'audio'"):
        vocab.encode([("audio", np.zeros(10))])
    with pytest.raises(ValueError, match=r"codes of 'image' must lie in \[0, 16\)"):
        vocab.encode([Codes("image", np.full((4, 4), 16))])
    with pytest.raises(ValueError, match=r"must be integer \[4, 4\]"):
        vocab.encode([Codes("image", np.zeros((3, 4), int))])
    with pytest.raises(TypeError, match="segment 0 must be"):
        vocab.encode([3.5])
    with pytest.raises(ValueError, match="modality names"):
        MultimodalVocab.build(text=text_tok, modalities={"Image!": image_tok})
    with pytest.raises(TypeError, match="must be a tokenizer"):
        MultimodalVocab.build(text=text_tok, modalities={"image": object()})
    with pytest.raises(ValueError, match="NaN"):
        vocab.encode([("image", np.full((8, 8), np.nan, np.float32))])


def test_save_load_and_refuse_a_changed_tokenizer(vocab, tmp_path, image_tok, make_image_tokenizer):
    path = vocab.save(str(tmp_path / "vocab.json"))
    again = MultimodalVocab.load(path)                     # tokenizers re-opened from their recorded paths
    doc = ["a handwritten seven", ("image", _images(1)[0]), ("graph", np.int64(3))]
    np.testing.assert_array_equal(again.encode(doc), vocab.encode(doc))
    assert again.size == vocab.size and again.range("graph") == vocab.range("graph")
    # Same architecture, other weights: the codes would mean something else.
    other = make_image_tokenizer(seed=1)
    assert fingerprint(other) != fingerprint(image_tok)
    with pytest.raises(ValueError, match="'image' tokenizer changed.*fingerprint"):
        MultimodalVocab.load(path, modalities={"image": other})
    with pytest.raises(ValueError, match="'image' tokenizer changed.*vocab_size"):
        MultimodalVocab.load(path, modalities={"image": make_image_tokenizer(codebook_size=32)})
    saved = json.load(open(path))
    saved["format"] = 99
    json.dump(saved, open(tmp_path / "bad.json", "w"))
    with pytest.raises(ValueError, match="format 99"):
        MultimodalVocab.load(str(tmp_path / "bad.json"))


def test_fingerprint_is_the_same_for_a_workdir_export_and_a_reload(image_tok, tmp_path):
    import vqjax

    again = vqjax.Tokenizer.load(image_tok.export(str(tmp_path / "again")))
    assert fingerprint(again) == fingerprint(image_tok)


def test_hf_export_gives_the_same_ids(vocab, tmp_path):
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(vocab.export_hf(str(tmp_path / "hf")))
    assert hf.get_vocab_size() == vocab.size
    for text in ["a handwritten seven", "Unicode: naïve café — ✓", "def f(x):\n    return x ** 2  # ok", ""]:
        assert hf.encode(text).ids == vocab.encode_text(text).tolist(), text
    names = vocab.token_names()
    for tid in (vocab.pad_id, vocab.eos_id, vocab.begin_id("graph"), vocab.range("image")[0] + 5, vocab.size - 1):
        assert hf.id_to_token(tid) == names[tid - vocab.text_size]


def test_bpe_is_deterministic_and_refuses_bad_sizes():
    texts = ["a handwritten seven", "a handwritten three", "the digit nine"] * 20
    a, b = train_bpe(texts, 300), train_bpe(texts, 300)
    assert a.to_str() == b.to_str()
    with pytest.raises(ValueError, match="vocab_size must be an int >= 256"):
        train_bpe(texts, 100)
    with pytest.raises(ValueError, match="at least one non-empty string"):
        train_bpe([], 300)
