"""DecoderLM and generation: packed masking, the KV cache equals recomputation, constrained spans always decode,
sampling is seeded, sharded equals unsharded, bad input refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.lm import Codes, MultimodalVocab
from vqjax.lm.generate import allowed_mask, constraint_tables, generate, sample_logits, span_validity
from vqjax.lm.model import DecoderLM, init_cache


@pytest.fixture(scope="module")
def vocab(text_tok, image_tok, graph_tok):
    return MultimodalVocab.build(text=text_tok, modalities={"image": image_tok, "graph": graph_tok})


@pytest.fixture(scope="module")
def lm(vocab):
    model = DecoderLM(vocab_size=vocab.size, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), jnp.int32))
    return model, params


def test_packed_documents_do_not_see_each_other(lm, vocab):
    model, params = lm
    apply = jax.jit(model.apply)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, vocab.text_size, 7), rng.integers(0, vocab.text_size, 5)
    row = np.concatenate([a, b])[None]
    seg = np.asarray([[1] * 7 + [2] * 5])
    pos = np.concatenate([np.arange(7), np.arange(5)])[None]
    packed, _ = apply(params, row, pos, seg)
    alone_a, _ = apply(params, a[None], np.arange(7)[None])
    alone_b, _ = apply(params, b[None], np.arange(5)[None])
    np.testing.assert_allclose(packed[0, :7], alone_a[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, 7:], alone_b[0], atol=1e-5)


def test_kv_cache_equals_recomputation(lm, vocab):
    model, params = lm
    ids = np.random.default_rng(1).integers(0, vocab.size, (2, 9)).astype(np.int32)
    pos = np.broadcast_to(np.arange(9), (2, 9))
    apply = jax.jit(lambda p, i, q, c: model.apply(p, i, q, cache=c))
    full, _ = jax.jit(model.apply)(params, ids, pos)
    cache = init_cache(model, 2, 12)
    logits, cache = apply(params, ids[:, :5], pos[:, :5], cache)          # prefill 5
    steps = [logits]
    for t in range(5, 9):
        logits, cache = apply(params, ids[:, t:t + 1], pos[:, t:t + 1], cache)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=2e-5)
    assert int(cache["index"]) == 9


def test_constrained_generation_always_decodes(lm, vocab):
    model, params = lm
    # An untrained model: unconstrained, almost no span would be well formed; constrained, every one is.
    prompts = [vocab.encode(["a handwritten seven"], eos=False),
               np.append(vocab.encode(["the digit three"], eos=False), vocab.begin_id("image")),
               vocab.encode([Codes("image", np.zeros((4, 4), int))], eos=False)]
    out = generate(model, params, vocab, prompts, max_new_tokens=40, key=jax.random.key(0), temperature=1.0)
    assert all(np.array_equal(o[:len(p)], p) for o, p in zip(out, prompts))
    assert out[1][len(prompts[1]):len(prompts[1]) + 16].min() >= vocab.range("image")[0]   # the open span goes on
    report = span_validity(vocab, out, prompts)
    assert report["spans"] >= 1 and report["fraction"] == 1.0
    free = generate(model, params, vocab, prompts, max_new_tokens=40, key=jax.random.key(0), constrained=False)
    loose = span_validity(vocab, free, prompts)
    assert loose["spans"] >= 1 and loose["fraction"] < 1.0          # the open image span goes astray


def test_allowed_mask_state_machine(vocab):
    tables = constraint_tables(vocab)
    img = vocab.modalities.index("image") + 1
    n = vocab.span_length("image")
    mask = np.asarray(allowed_mask(tables, jnp.asarray([0, img, img, 0]), jnp.asarray([0, 3, n, 0]),
                                   jnp.asarray([False, False, False, True])))
    lo, hi = vocab.range("image")
    assert mask[0, :vocab.text_size].all() and mask[0, vocab.eos_id] and mask[0, vocab.begin_id("graph")]
    assert not mask[0, lo:hi].any() and not mask[0, vocab.pad_id] and not mask[0, vocab.bos_id]
    assert not mask[0, vocab.end_id("image")]
    assert mask[1, lo:hi].all() and mask[1].sum() == hi - lo
    assert mask[2, vocab.end_id("image")] and mask[2].sum() == 1
    assert mask[3, vocab.pad_id] and mask[3].sum() == 1


def test_sampling_is_seeded_and_respects_top_k_top_p():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 2000))
    allowed = jnp.ones_like(logits, bool)
    draw = lambda **kw: np.asarray(sample_logits(jax.random.key(3), logits, allowed, 1.0, kw.get("k"), kw.get("p")))
    np.testing.assert_array_equal(draw(), draw())
    assert set(draw(k=2)) == {0, 1}
    assert set(draw(p=0.7)) == {0, 1}                       # 0.5 < 0.7 <= 0.8: the two most likely
    assert set(draw(p=0.5)) == {0}
    counts = np.bincount(draw(), minlength=4) / 2000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.04)
    greedy = sample_logits(jax.random.key(0), logits[:2], allowed[:2], 0.0, None, None)
    assert np.asarray(greedy).tolist() == [0, 0]


def test_generation_with_and_without_cache_agree(lm, vocab):
    model, params = lm
    prompts = [vocab.encode(["a handwritten seven"], eos=False), vocab.encode(["three"], eos=False)]
    kw = dict(max_new_tokens=12, key=jax.random.key(5), temperature=0.0)
    with_cache = generate(model, params, vocab, prompts, **kw)
    without = generate(model, params, vocab, prompts, use_cache=False, **kw)
    for a, b in zip(with_cache, without):
        np.testing.assert_array_equal(a, b)


def test_classifier_free_guidance_follows_its_formula(lm, vocab):
    model, params = lm
    begin = vocab.begin_id("image")
    prompts = [np.append(vocab.encode([t], eos=False), begin) for t in ("a handwritten seven", "the digit 3")]
    uncond = [np.asarray([vocab.bos_id, begin], np.int32)] * 2
    n = vocab.span_length("image")
    g = 3.0
    out = generate(model, params, vocab, prompts, max_new_tokens=n + 1, key=jax.random.key(0), temperature=0.0,
                   guidance=g, uncond_prompts=uncond)
    lo, hi = vocab.range("image")
    apply = jax.jit(model.apply)
    # Reference, recomputed without a cache: every greedy id maximises log p_u + g (log p_c - log p_u) over the
    # image codes, where p_c sees the prompt and p_u the unconditional prompt, each followed by the ids so far.
    for p, u, o in zip(prompts, uncond, out):
        new = o[len(p):]
        assert new[-1] == vocab.end_id("image") and len(new) == n + 1
        for t in range(n):
            lc = jax.nn.log_softmax(apply(params, np.concatenate([p, new[:t]])[None],
                                          np.arange(len(p) + t)[None])[0][0, -1])
            lu = jax.nn.log_softmax(apply(params, np.concatenate([u, new[:t]])[None],
                                          np.arange(len(u) + t)[None])[0][0, -1])
            assert new[t] == lo + int(np.argmax(np.asarray(lu + g * (lc - lu))[lo:hi])), t
    plain = generate(model, params, vocab, prompts, max_new_tokens=n + 1, key=jax.random.key(0), temperature=0.0)
    same = generate(model, params, vocab, prompts, max_new_tokens=n + 1, key=jax.random.key(0), temperature=0.0,
                    guidance=1.0, uncond_prompts=uncond)
    for a, b in zip(plain, same):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="needs uncond_prompts"):
        generate(model, params, vocab, prompts, max_new_tokens=2, key=jax.random.key(0), guidance=2.0)
    with pytest.raises(ValueError, match=r"uncond_prompts\[0\] leaves the constraint state"):
        generate(model, params, vocab, prompts, max_new_tokens=2, key=jax.random.key(0), guidance=2.0,
                 uncond_prompts=[np.asarray([vocab.bos_id])] * 2)


def test_bad_input_is_refused(lm, vocab):
    model, params = lm
    with pytest.raises(ValueError, match="num_heads .4. must be divisible by num_kv_heads .3."):
        DecoderLM(vocab_size=10, dim=32, num_layers=1, num_heads=4, num_kv_heads=3, mlp_dim=8).init(
            jax.random.key(0), jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2), jnp.int32))
    p = [vocab.encode(["x"], eos=False)]
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int"):
        generate(model, params, vocab, p, max_new_tokens=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="top_p must lie in"):
        generate(model, params, vocab, p, max_new_tokens=2, key=jax.random.key(0), top_p=1.5)
    with pytest.raises(ValueError, match="prompt ids must lie in"):
        generate(model, params, vocab, [np.asarray([vocab.size])], max_new_tokens=2, key=jax.random.key(0))


def test_sharded_over_data_and_model_axes_equals_unsharded(lm, vocab, devices):
    """Parameters laid out by their logical axes on a 4 x 2 (data, model) mesh, activations constrained: the
    logits and a gradient step equal the single-device ones."""
    import flax.linen as nn
    from jax.sharding import Mesh

    from vqjax.lm.model import LOGICAL_RULES

    model, params = lm
    ids = np.random.default_rng(2).integers(0, vocab.size, (8, 16)).astype(np.int32)
    pos = np.broadcast_to(np.arange(16), (8, 16)).astype(np.int32)

    def loss(p, ids, pos):
        logits, _ = model.apply(p, ids, pos)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), ids[:, 1:, None], -1))

    step = lambda p, ids, pos: jax.value_and_grad(loss)(p, ids, pos)
    want_loss, want_grad = jax.jit(step)(params, ids, pos)
    mesh = Mesh(np.asarray(devices).reshape(4, 2), ("data", "model"))
    with nn.logical_axis_rules(LOGICAL_RULES):
        shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(params), mesh)
        data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data", None))
        with jax.set_mesh(mesh):
            sharded = jax.device_put(params, shardings)
            got_loss, got_grad = jax.jit(step)(sharded, jax.device_put(ids, data), jax.device_put(pos, data))
    head = got_grad["params"]["head"]["kernel"]
    head = getattr(head, "value", head)
    assert len(head.sharding.device_set) == 8 and not head.sharding.is_fully_replicated
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_graph_spans_are_constrained_to_existing_nodes(lm, vocab, graph_tok, monkeypatch):
    """Graph token rows decode only when they are some node's tokens: a trie over those rows keeps every generated
    graph span decodable; with per-position ranges alone, an untrained model's spans mostly name no node."""
    model, params = lm
    prompts = [np.append(vocab.encode([f"node {i}"], eos=False), vocab.begin_id("graph")) for i in range(12)]
    prompts.append(np.concatenate([vocab.encode([Codes("graph", graph_tok.encode([5])[0])], eos=False)[:-3]]))
    kw = dict(max_new_tokens=vocab.span_length("graph") + 2, key=jax.random.key(4), temperature=1.0)
    out = generate(model, params, vocab, prompts, **kw)
    report = span_validity(vocab, out, prompts)
    assert report["spans"] == 13 and report["fraction"] == 1.0
    nodes = [int(s.data) for seq in out for s in vocab.decode(seq) if getattr(s, "modality", None) == "graph"]
    assert len(nodes) == 13 and all(0 <= n < graph_tok.num_nodes for n in nodes)
    # The prompt that ended inside node 5's span (its last two codes missing) continues within the rows that share
    # its prefix.
    assert np.array_equal(graph_tok.encode([nodes[-1]])[0][:-2], graph_tok.encode([5])[0][:-2])
    monkeypatch.setattr(type(vocab), "valid_rows", lambda self, name: None)
    loose = span_validity(vocab, generate(model, params, vocab, prompts, **kw), prompts)
    assert loose["fraction"] < 0.5
