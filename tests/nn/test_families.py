"""The family modules: FSQ, LFQ, BSQ, ResidualVQ, ProductVQ, AdditiveVQ — contract, encode/decode round trips,
remedies per codebook, gradient accumulation, bad configurations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vqjax
from vqjax.nn import BSQ, FSQ, LFQ, STATS, AdditiveVQ, ProductVQ, ResidualVQ


def _normal(shape, seed=0, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


MODULES = {
    "fsq": lambda: FSQ((8, 5, 5), dim=8),
    "fsq_grouped": lambda: FSQ((5, 3, 3, 3), num_groups=2),
    "lfq": lambda: LFQ(6, dim=8),
    "lfq_grouped": lambda: LFQ(4, num_groups=2),
    "bsq": lambda: BSQ(8),
    "rvq_ema": lambda: ResidualVQ(3, 16, 8, codebook_learning="ema", codebook_init="kmeans", kmeans_iters=3,
                                  dead_code_threshold=0.2, quantizer_dropout=0.3),
    "rvq_beam_shared": lambda: ResidualVQ(3, 16, 8, beam_width=3, shared_codebook=True),
    "rvq_simvq": lambda: ResidualVQ(2, 16, 8, codebook_learning="simvq", estimator="rotation"),
    "rvq_factorised": lambda: ResidualVQ(3, 16, 8, code_dim=2, metric="cosine", codebook_init="kmeans",
                                         kmeans_iters=3, quantizer_dropout=0.3),
    "pq": lambda: ProductVQ(2, 16, 8, codebook_init="kmeans", kmeans_iters=3, dead_code_threshold=0.2),
    "pq_shared_cosine": lambda: ProductVQ(4, 16, 8, shared_codebook=True, metric="cosine", code_dim=2),
    "aq": lambda: AdditiveVQ(3, 16, 8, beam_width=3, icm_iters=1, codebook_learning="ema", codebook_init="kmeans",
                             kmeans_iters=3),
}


@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_contract_train_step_and_round_trip(name, dtype):
    module = MODULES[name]()
    z = _normal((4, 12, 8), seed=1, dtype=dtype)
    variables = jax.jit(module.init)(jax.random.key(0), z)

    @jax.jit
    def step(variables, z):
        def loss(params):
            q, upd = module.apply({**variables, "params": params}, z, train=True, mutable=[STATS],
                                  rngs={"vq": jax.random.key(2)})
            return jnp.mean((q.values.astype(jnp.float32) - z) ** 2) + q.loss, (q, upd)
        grads, (q, upd) = jax.grad(loss, has_aux=True)(variables.get("params", {}))
        return grads, q, upd

    grads, q, upd = step(variables, z)
    assert isinstance(q, vqjax.Quantized)
    assert q.values.shape == z.shape and q.values.dtype == dtype
    assert q.codes.dtype == jnp.int32 and q.loss.dtype == jnp.float32 and q.loss.shape == ()
    assert {"perplexity", "usage"} <= set(q.metrics)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
    variables = {**variables, **upd}
    evaluated = jax.jit(lambda v, z: module.apply(v, z))(variables, z)
    codes = jax.jit(lambda v, z: module.apply(v, z, method="encode"))(variables, z)
    decoded = jax.jit(lambda v, c: module.apply(v, c, dtype, method="decode"))(variables, codes)
    np.testing.assert_array_equal(codes, evaluated.codes)
    np.testing.assert_array_equal(np.asarray(decoded, np.float32), np.asarray(evaluated.values, np.float32))
    assert int(np.min(np.asarray(codes))) >= 0


def _fit(module, data, steps=60, lr=3e-2, seed=0):
    variables = jax.jit(module.init)(jax.random.key(seed), data[:512])
    params, stats = variables.get("params", {}), variables.get(STATS, {})
    opt = optax.adam(lr)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, stats, opt_state, x, key):
        def loss(params):
            q, upd = module.apply({"params": params, STATS: stats}, x, train=True, mutable=[STATS], rngs={"vq": key})
            return jnp.mean((q.values - x) ** 2) + q.loss, upd[STATS]
        grads, stats = jax.grad(loss, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state

    rng = np.random.default_rng(seed)
    for i in range(steps):
        x = data[rng.integers(0, data.shape[0], 512)]
        params, stats, opt_state = step(params, stats, opt_state, x, jax.random.key(i))
    return {"params": params, STATS: stats}


@pytest.fixture(scope="module")
def patches():
    from vqjax.demo import load_patches
    train, test = load_patches(8000, 2000, seed=5)
    return jnp.asarray(train), jnp.asarray(test)


def _usage(module, variables, test):
    codes = np.asarray(jax.jit(lambda v, x: module.apply(v, x, method="encode"))(variables, test))
    return np.mean([len(np.unique(codes[:, l])) for l in range(codes.shape[1])]) / module.codebook_size


def test_remedies_apply_to_every_level_of_residual_vq(patches):
    train, test = patches
    plain = ResidualVQ(2, 128, 64)
    remedied = ResidualVQ(2, 128, 64, codebook_learning="ema", codebook_init="kmeans", kmeans_iters=5,
                          dead_code_threshold=1.0, decay=0.9)
    u_plain = _usage(plain, _fit(plain, train), test)
    u_rem = _usage(remedied, _fit(remedied, train), test)
    assert u_rem > 0.8 and u_rem > u_plain + 0.3, (u_plain, u_rem)


def test_remedies_apply_to_product_and_additive_vq(patches):
    train, test = patches
    for plain, remedied in [
        (ProductVQ(2, 256, 64), ProductVQ(2, 256, 64, codebook_init="kmeans", kmeans_iters=5,
                                          dead_code_threshold=1.0, decay=0.9)),
        (AdditiveVQ(2, 64, 64, beam_width=2), AdditiveVQ(2, 64, 64, beam_width=2, codebook_learning="ema",
                                                         codebook_init="kmeans", kmeans_iters=5,
                                                         dead_code_threshold=1.0, decay=0.9)),
    ]:
        u_plain = _usage(plain, _fit(plain, train, steps=40), test)
        u_rem = _usage(remedied, _fit(remedied, train, steps=40), test)
        assert u_rem > 0.6 and u_rem > u_plain + 0.2, (type(plain).__name__, u_plain, u_rem)


def test_quantizer_dropout_only_in_training():
    module = ResidualVQ(4, 8, 4, quantizer_dropout=1.0)
    z = _normal((256, 4), seed=3)
    variables = jax.jit(module.init)(jax.random.key(0), z)
    q_train, _ = module.apply(variables, z, train=True, mutable=[STATS], rngs={"vq": jax.random.key(1)})
    kept = np.asarray((q_train.codes >= 0).sum(-1))
    assert kept.min() == 1 and kept.max() == 4 and len(np.unique(kept)) == 4
    np.testing.assert_array_equal(module.apply(variables, q_train.codes, method="decode"), q_train.values)
    assert int(module.apply(variables, z).codes.min()) >= 0


def test_factorised_residual_vq_searches_projected_cosine_codes_level_by_level(patches):
    # DAC-style levels: level 0's code is the nearest by cosine in its projected space, and every level lowers the
    # error of the partial sum (decode with the later levels absent).
    train, test = patches
    module = ResidualVQ(4, 64, 64, code_dim=8, metric="cosine", codebook_init="kmeans", kmeans_iters=5)
    variables = _fit(module, train, steps=40)
    codes = np.asarray(jax.jit(lambda v, x: module.apply(v, x, method="encode"))(variables, test))
    p = variables["params"]["level_0"]["project_in"]
    zc = np.asarray(test) @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
    book = np.asarray(module.apply(variables, method=lambda m: m.codebooks()))[0]
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    sims = unit(zc) @ unit(book).T
    assert np.mean(codes[:, 0] == sims.argmax(1)) > 0.99
    errors = []
    for n in range(1, 5):
        partial = np.where(np.arange(4) < n, codes, -1)
        recon = module.apply(variables, jnp.asarray(partial), method="decode")
        errors.append(float(jnp.mean((recon - test) ** 2)))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    with pytest.raises(ValueError, match="factorised levels .* need beam_width=1"):
        ResidualVQ(2, 8, 4, code_dim=2, beam_width=2).init(jax.random.key(0), jnp.zeros((2, 4)))


def test_ema_accumulation_in_residual_vq():
    module = ResidualVQ(2, 8, 4, codebook_learning="ema", decay=0.5)
    z = _normal((64, 4), seed=4)
    variables = jax.jit(module.init)(jax.random.key(0), z)
    _, held = module.apply(variables, z, train=True, apply_update=False, mutable=[STATS])
    for lv in ("level_0", "level_1"):
        np.testing.assert_array_equal(held[STATS][lv]["codebook_state"].codebook,
                                      variables[STATS][lv]["codebook_state"].codebook)
        assert float(held[STATS][lv]["codebook_state"].pending.counts.sum()) == 64
    _, applied = module.apply({**variables, **held}, z, train=True, mutable=[STATS])
    assert not np.allclose(applied[STATS]["level_0"]["codebook_state"].codebook,
                           variables[STATS]["level_0"]["codebook_state"].codebook)


@pytest.mark.parametrize("make, err, match", [
    (lambda: FSQ((1, 4)), ValueError, r"FSQ: levels must hold ints >= 2"),
    (lambda: LFQ(40), ValueError, r"LFQ: bits: 40 bits"),
    (lambda: BSQ(8, num_groups=0), ValueError, r"BSQ: num_groups must be a positive int"),
    (lambda: ResidualVQ(0, 8, 4), ValueError, r"ResidualVQ: num_levels must be a positive int"),
    (lambda: ResidualVQ(2, 0, 4), ValueError, r"ResidualVQ: codebook_size must be a positive int"),
    (lambda: ResidualVQ(2, 8, 4, quantizer_dropout=2.0), ValueError, r"quantizer_dropout must lie in \[0, 1\]"),
    (lambda: ResidualVQ(2, 8, 4, codebook_init="zeros"), ValueError, r"codebook_init must be one of"),
    (lambda: AdditiveVQ(2, 8, 4, icm_iters=-1), ValueError, r"icm_iters must be a non-negative int"),
    (lambda: ProductVQ(3, 8, 4), ValueError, r"ProductVQ: num_groups must divide dim = 4; got 3"),
    (lambda: ProductVQ(2, 8, 4, codebook_learning="magic"), ValueError, r"codebook_learning must be one of"),
])
def test_bad_configuration(make, err, match):
    with pytest.raises(err, match=match):
        make().init(jax.random.key(0), jnp.zeros((2, 4 if not isinstance(make(), (FSQ, LFQ, BSQ)) else 8)))


def test_wrong_input_width_is_refused():
    for module, width in [(ResidualVQ(2, 8, 4), 5), (FSQ((4, 4)), 3), (ProductVQ(2, 8, 4), 6)]:
        with pytest.raises(ValueError, match=r"last dimension"):
            module.init(jax.random.key(0), jnp.zeros((2, width)))
