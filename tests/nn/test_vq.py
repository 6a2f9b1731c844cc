"""vqjax.nn.VectorQuantizer: contract, round trips, each codebook mode and remedy, jit/grad/vmap, bad config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import codebook as cbk
from vqjax.nn import STATS, VectorQuantizer


def _z(shape=(4, 6, 8), seed=0, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32).astype(dtype)


def _train(module, variables, z, key=0, **kwargs):
    q, updates = module.apply(variables, z, train=True, mutable=[STATS], rngs={"vq": jax.random.key(key)},
                              **kwargs)
    return q, {**variables, **updates}


@pytest.mark.parametrize("learning", ["gradient", "ema", "simvq"])
@pytest.mark.parametrize("options", [{}, {"code_dim": 4, "metric": "cosine"},
                                     {"codebook_init": "kmeans", "dead_code_threshold": 0.5}])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_round_trip_after_training(learning, options, dtype):
    module = VectorQuantizer(32, 8, codebook_learning=learning, **options)
    z = _z(dtype=dtype)
    variables = jax.jit(module.init)(jax.random.key(0), z)
    _, variables = jax.jit(lambda v, z: _train(module, v, z))(variables, z)
    q = module.apply(variables, z)
    assert q.values.shape == z.shape and q.values.dtype == dtype and q.codes.shape == z.shape[:-1]
    codes = module.apply(variables, z, method="encode")
    np.testing.assert_array_equal(codes, q.codes)
    decoded = module.apply(variables, codes, dtype, method="decode")
    np.testing.assert_array_equal(np.asarray(decoded, np.float32), np.asarray(q.values, np.float32))


def test_ema_mode_matches_pure_update():
    module = VectorQuantizer(16, 8, codebook_learning="ema", decay=0.9)
    z = _z()
    variables = jax.jit(module.init)(jax.random.key(0), z)
    s = variables[STATS]["codebook_state"]
    state = cbk.EMAState(s.codebook, s.usage, s.embed_sum, s.pending)
    q, new = _train(module, variables, z)
    expected = cbk.ema_update(state, z, q.codes, decay=0.9)
    np.testing.assert_allclose(new[STATS]["codebook_state"].codebook, expected.codebook, rtol=1e-6)
    np.testing.assert_allclose(new[STATS]["codebook_state"].usage, expected.cluster_size, rtol=1e-6)
    assert float(q.metrics["codebook_loss"]) >= 0 and "params" not in variables


def test_ema_gradient_accumulation_in_module():
    module = VectorQuantizer(16, 8, codebook_learning="ema")
    z = _z()
    variables = jax.jit(module.init)(jax.random.key(0), z)
    _, held = _train(module, variables, z, apply_update=False)
    np.testing.assert_array_equal(held[STATS]["codebook_state"].codebook, variables[STATS]["codebook_state"].codebook)
    assert float(held[STATS]["codebook_state"].pending.counts.sum()) == z.shape[0] * z.shape[1]


def test_training_stateful_modes_needs_mutable_stats():
    module = VectorQuantizer(16, 8, codebook_learning="ema")
    variables = jax.jit(module.init)(jax.random.key(0), _z())
    with pytest.raises(ValueError, match=r"mutable=\['vq_stats'\]"):
        module.apply(variables, _z(), train=True)


def test_kmeans_init_runs_once_on_first_training_batch():
    """The first training call fits the codebook to the batch: its inertia is close to scikit-learn's best
    k-means (an independent reference, 10 restarts) and far below the random codebook's; later calls do not
    refit."""
    sklearn_cluster = pytest.importorskip("sklearn.cluster", reason="scikit-learn comes with the data extra")
    module = VectorQuantizer(8, 8, codebook_init="kmeans", kmeans_iters=10)
    z = _z((256, 8))
    variables = jax.jit(module.init)(jax.random.key(0), z)
    assert not bool(variables[STATS]["codebook_state"].initialized)
    _, v1 = _train(module, variables, z, key=3)
    cb1 = module.apply(v1, method="current_codebook")
    assert bool(v1[STATS]["codebook_state"].initialized)
    inertia = lambda cb: float(jnp.mean(jnp.min(((z[:, None] - cb[None]) ** 2).sum(-1), -1)))
    best = sklearn_cluster.KMeans(8, n_init=10, random_state=0).fit(np.asarray(z)).inertia_ / z.shape[0]
    assert inertia(cb1) <= 1.1 * best, (inertia(cb1), best)
    assert inertia(cb1) < 0.8 * inertia(variables["params"]["codebook"])
    _, v2 = _train(module, v1, z * 3.0, key=4)                        # no second initialisation
    np.testing.assert_array_equal(v2[STATS]["codebook_state"].codebook, v1[STATS]["codebook_state"].codebook)


@pytest.mark.parametrize("learning", ["gradient", "ema", "simvq"])
def test_dead_codes_are_reseeded_from_batch(learning):
    module = VectorQuantizer(64, 8, codebook_learning=learning, dead_code_threshold=0.5, decay=0.5)
    z = _z((16, 8)) * 0.1 + 5.0                                        # far from every initial code
    variables = jax.jit(module.init)(jax.random.key(0), z)
    q0 = module.apply(variables, z)
    assert float(q0.metrics["usage"]) <= 2 / 64
    v1 = variables
    for step in range(3):                 # an EMA codebook starts with counts 1: dead after two steps
        _, v1 = _train(module, v1, z, key=step)
    q1 = module.apply(v1, z)
    assert float(q1.metrics["usage"]) > float(q0.metrics["usage"])
    assert float(jnp.mean((q1.values - z) ** 2)) < 0.1 * float(jnp.mean((q0.values - z) ** 2))


def test_gradients_reach_the_learned_parameters():
    z = _z()
    for learning, name in (("gradient", "codebook"), ("simvq", "projection")):
        module = VectorQuantizer(16, 8, codebook_learning=learning, code_dim=4, orthogonal_weight=0.1)
        variables = jax.jit(module.init)(jax.random.key(0), z)

        def loss(params):
            q = module.apply({**variables, "params": params}, z, train=True)
            return jnp.mean((q.values - z) ** 2) + q.loss

        grads = jax.jit(jax.grad(loss))(variables["params"])
        for path in (name, "project_in", "project_out"):
            leaves = jax.tree.leaves(grads[path])
            assert all(np.all(np.isfinite(g)) for g in leaves) and any(np.any(g != 0) for g in leaves), path


def test_vmap_over_a_batch_of_inputs_and_no_recompilation(trace_counter):
    module = VectorQuantizer(16, 8, codebook_learning="ema", dead_code_threshold=0.1)
    z = _z()
    variables = jax.jit(module.init)(jax.random.key(0), z)
    per_example = jax.vmap(lambda z: module.apply(variables, z).values)(z)
    np.testing.assert_array_equal(per_example, module.apply(variables, z).values)
    fn = trace_counter(lambda v, z: _train(module, v, z))
    step = jax.jit(fn)
    _, v = step(variables, z)
    step(v, z + 1.0)
    assert fn.traces == 1


def test_gumbel_module_samples_in_training_and_is_deterministic_in_eval():
    module = VectorQuantizer(16, 8, estimator="gumbel")
    z = _z()
    variables = jax.jit(module.init)(jax.random.key(0), z)
    a = module.apply(variables, z)
    np.testing.assert_array_equal(a.codes, module.apply(variables, z, method="encode"))
    t1, _ = _train(module, variables, z, key=1)
    t2, _ = _train(module, variables, z, key=1)
    np.testing.assert_array_equal(t1.codes, t2.codes)                   # deterministic given the key


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(codebook_size=0), ValueError, "codebook_size must be a positive int; got 0"),
    (dict(dim=-3), ValueError, "dim must be a positive int; got -3"),
    (dict(codebook_learning="adam"), ValueError, r"codebook_learning must be one of \('gradient', 'ema', 'simvq'\)"),
    (dict(metric="dot"), ValueError, "metric must be one of"),
    (dict(estimator="x"), ValueError, "estimator must be one of"),
    (dict(codebook_init="zeros"), ValueError, r"codebook_init must be one of \('random', 'kmeans'\)"),
    (dict(decay=1.0), ValueError, r"decay must lie in \[0, 1\)"),
    (dict(dead_code_threshold=-1.0), ValueError, "dead_code_threshold must be a finite non-negative"),
    (dict(code_dim=0), ValueError, "code_dim must be a positive int"),
    (dict(eps=0.0), ValueError, "eps must be > 0"),
])
def test_bad_config(kwargs, err, match):
    args = dict(codebook_size=16, dim=8)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        VectorQuantizer(**args).init(jax.random.key(0), _z())


def test_wrong_input_dim():
    module = VectorQuantizer(16, 8)
    with pytest.raises(ValueError, match=r"z must have last dimension 8; got shape \(4, 6, 5\)"):
        module.init(jax.random.key(0), _z((4, 6, 5)))
