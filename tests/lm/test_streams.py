"""Packing interleaved documents: whole documents per row, positions restarting, spans never split unless asked,
weights per kind, efficiency reported, and batches through the grain pipeline."""

import numpy as np
import pytest

from vqjax.lm import Codes, MultimodalVocab
from vqjax.lm.streams import cut_points, pack_documents, packed_batches


@pytest.fixture(scope="module")
def vocab(text_tok, image_tok):
    return MultimodalVocab.build(text=text_tok, modalities={"image": image_tok})


def _docs(vocab, n=40, seed=0):
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        codes = rng.integers(0, 16, (4, 4))
        words = " ".join(rng.choice(["seven", "three", "a", "handwritten", "digit"], rng.integers(1, 6)))
        segs = [words, Codes("image", codes)] if i % 2 else [Codes("image", codes), words]
        docs.append(vocab.encode(segs))
    return docs


def test_rows_hold_whole_documents_with_restarting_positions(vocab):
    docs = _docs(vocab)
    rows, stats = pack_documents(docs, 64, vocab)
    assert rows["tokens"].shape == (stats.rows, 64) and stats.cut == 0 and stats.documents == len(docs)
    found = []
    for r in range(stats.rows):
        seg, tok, pos = rows["segment_ids"][r], rows["tokens"][r], rows["positions"][r]
        assert (tok[seg == 0] == vocab.pad_id).all()
        for s in range(1, seg.max() + 1):
            piece = tok[seg == s]
            np.testing.assert_array_equal(pos[seg == s], np.arange(len(piece)))
            found.append(tuple(piece))
    assert sorted(found) == sorted(tuple(d) for d in docs)          # every document exactly once, unsplit
    used = sum(len(d) for d in docs)
    assert stats.tokens == used and stats.efficiency == pytest.approx(used / (stats.rows * 64))
    assert stats.efficiency > 0.85                                 # best fit packs these documents densely


def test_long_documents_are_cut_between_spans_only(vocab):
    img = [Codes("image", np.full((4, 4), 3))] * 3
    doc = vocab.encode(["a handwritten seven", *img, "and a three", *img])
    rows, stats = pack_documents([doc], 30, vocab)
    assert stats.cut == 1 and stats.documents > 1
    for r in range(stats.rows):
        seg = rows["segment_ids"][r]
        for s in range(1, seg.max() + 1):
            for kind, start, stop, problem in vocab.spans(rows["tokens"][r][seg == s]):
                assert problem is None, (kind, problem)            # each piece's spans are whole
    rejoined = np.concatenate([rows["tokens"][r][rows["segment_ids"][r] == s] for r in range(stats.rows)
                               for s in range(1, rows["segment_ids"][r].max() + 1)])
    np.testing.assert_array_equal(rejoined, doc)
    with pytest.raises(ValueError, match="longer than seq_len = 12"):
        pack_documents([doc], 12, vocab)
    rows, stats = pack_documents([doc], 12, vocab, split_spans=True)
    assert stats.tokens == len(doc)
    ok = cut_points(doc, vocab)
    begin = int(np.nonzero(doc == vocab.begin_id("image"))[0][0])
    assert ok[begin] and not ok[begin + 1:begin + 18].any() and ok[begin + 18]


def test_weights_follow_the_target_kind_and_stop_at_document_ends(vocab):
    docs = _docs(vocab, 4)
    rows, _ = pack_documents(docs, 200, vocab, weights={"text": 1.0, "image": 0.25})
    tok, seg, w = rows["tokens"][0], rows["segment_ids"][0], rows["weights"][0]
    kinds = vocab.kind_table()
    for t in range(len(tok) - 1):
        same = seg[t] > 0 and seg[t + 1] == seg[t]
        want = 0.0 if not same else (1.0 if tok[t + 1] == vocab.eos_id else {0: 1.0, 1: 0.25, -1: 0.0}[kinds[tok[t + 1]]])
        assert w[t] == want, t
    assert w[-1] == 0
    with pytest.raises(ValueError, match="unknown kinds \\['audio'\\]"):
        pack_documents(docs, 200, vocab, weights={"audio": 1.0})


def test_packed_batches_through_grain_are_seeded_and_resumable(vocab):
    rows, stats = pack_documents(_docs(vocab, 60), 32, vocab)
    a = packed_batches(rows, batch_size=4, seed=0)
    batches = [next(a) for _ in range(5)]
    assert batches[0]["tokens"].shape == (4, 32) and set(batches[0]) == {"tokens", "segment_ids", "positions",
                                                                         "weights"}
    resumed = next(packed_batches(rows, batch_size=4, seed=0, start_step=3))
    np.testing.assert_array_equal(resumed["tokens"], batches[3]["tokens"])
    halves = [next(packed_batches(rows, batch_size=4, seed=0, process_index=p, process_count=2)) for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate([h["tokens"] for h in halves]), batches[0]["tokens"])
    with pytest.raises(ValueError, match="cannot fill a batch"):
        packed_batches(rows, batch_size=stats.rows + 1, seed=0)


def test_caption_documents_both_orders_and_unconditional_images(vocab):
    from vqjax.lm.documents import caption, caption_documents, digit_in_text

    rng = np.random.default_rng(0)
    codes, labels = rng.integers(0, 16, (400, 4, 4)), rng.integers(0, 10, 400)
    docs = caption_documents(vocab, codes, labels, seed=3, uncond_fraction=0.25)
    assert len(docs) == 800
    begin = vocab.begin_id("image")
    alone = 0
    for i, (first, second) in enumerate(zip(docs[0::2], docs[1::2])):
        # Caption then image (or, for about a quarter, the image alone); then image then caption.
        segs = vocab.decode(first)
        np.testing.assert_array_equal(segs[-1].codes, codes[i])
        if len(segs) == 1:
            alone += 1
            np.testing.assert_array_equal(first, [vocab.bos_id, begin, *(codes[i].ravel() + vocab.range("image")[0]),
                                                  vocab.end_id("image"), vocab.eos_id])
        else:
            assert digit_in_text(segs[0].text) == labels[i]
        back = vocab.decode(second)
        np.testing.assert_array_equal(back[0].codes, codes[i])
        assert digit_in_text(back[1].text) == labels[i]
    assert 70 <= alone <= 130                                           # 25% of 400, within 3 sigma
    plain = caption_documents(vocab, codes, labels, seed=3)
    assert all(len(vocab.decode(d)) == 2 for d in plain)
    with pytest.raises(ValueError, match=r"uncond_fraction must lie in \[0, 1\); got 1.0"):
        caption_documents(vocab, codes, labels, seed=3, uncond_fraction=1.0)
    assert digit_in_text(caption(7, 3)) == 7 and digit_in_text("a three or a 4") is None
