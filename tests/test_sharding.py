"""Sharded equals unsharded: the batch split over 8 fake CPU devices, on Auto and Explicit meshes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import vqjax
from vqjax import codebook as cbk
from vqjax.nn import STATS, AdditiveVQ, ProductVQ, ResidualVQ, VectorQuantizer

AXIS_TYPES = [AxisType.Auto, AxisType.Explicit]


def _mesh(axis_type):
    return jax.make_mesh((8,), ("data",), axis_types=(axis_type,))


def _data(n=64, d=8, k=24, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, d)), jnp.float32), jnp.asarray(rng.normal(size=(k, d)), jnp.float32)


def _run_sharded(mesh, fn, *args, specs):
    with jax.set_mesh(mesh):
        placed = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(args, specs)]   # s applies to a pytree
        return jax.device_get(jax.jit(fn)(*placed))


def _train_step(module):
    """One training step of a quantizer module: parameter gradients, the Quantized result, statistics updates."""
    def step(variables, z):
        def loss(params):
            q, upd = module.apply({**variables, "params": params}, z, train=True, mutable=[STATS],
                                  rngs={"vq": jax.random.key(2)})
            return jnp.mean((q.values - z) ** 2) + q.loss, (q, upd)
        grads, (q, upd) = jax.grad(loss, has_aux=True)(variables.get("params", {}))
        return grads, q, upd
    return step


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer) or jnp.asarray(x).dtype == bool:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), rtol=rtol, atol=atol)


@pytest.mark.parametrize("axis_type", AXIS_TYPES)
@pytest.mark.parametrize("estimator", ["ste", "rotation", "gumbel"])
def test_vq_and_its_gradient(devices, axis_type, estimator):
    z, cb = _data()

    def fn(z, cb):
        def loss(z, cb):
            q = vqjax.vq(z, cb, estimator=estimator, key=jax.random.key(0), entropy_weight=0.1,
                         entropy_temperature=1.0, chunk_size=8)
            return jnp.sum(q.values ** 2) + q.loss, q
        (_, q), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(z, cb)
        return q, grads, vqjax.vq_decode(q.codes, cb)

    expected = jax.jit(fn)(z, cb)
    got = _run_sharded(_mesh(axis_type), fn, z, cb, specs=[P("data"), P()])
    # Codes exact; float sums over a sharded batch reduce in another order (a few ulps on the Gumbel gradient).
    _assert_trees_close(got, expected, rtol=1e-4)


@pytest.mark.parametrize("axis_type", AXIS_TYPES)
def test_search_top_k(devices, axis_type):
    z, cb = _data()
    fn = lambda z, cb: vqjax.nearest_code(z, cb, top_k=3, chunk_size=5)
    _assert_trees_close(_run_sharded(_mesh(axis_type), fn, z, cb, specs=[P("data"), P()]), jax.jit(fn)(z, cb))


@pytest.mark.parametrize("axis_type", AXIS_TYPES)
def test_ema_update_and_dead_code_replacement(devices, axis_type):
    z, cb = _data()
    codes = vqjax.vq_encode(z, cb)

    def fn(z, codes, cb):
        state = cbk.ema_update(cbk.ema_init(cb), z, codes, decay=0.8)
        err = jnp.sum((z - vqjax.indexing.gather_rows(cb, codes)) ** 2, -1)
        fresh, dead = cbk.replace_dead_codes(jax.random.key(1), state.codebook, state.cluster_size, z,
                                             threshold=0.85, errors=err)
        return state, fresh, dead

    expected = jax.jit(fn)(z, codes, cb)
    got = _run_sharded(_mesh(axis_type), fn, z, codes, cb, specs=[P("data"), P("data"), P()])
    _assert_trees_close(got, expected)
    assert np.any(np.asarray(expected[2]))         # some codes really were replaced


@pytest.mark.parametrize("axis_type", AXIS_TYPES)
@pytest.mark.parametrize("learning", ["ema", "gradient"])
def test_module_train_step(devices, axis_type, learning):
    module = VectorQuantizer(16, 8, codebook_learning=learning, codebook_init="kmeans", kmeans_iters=3,
                             dead_code_threshold=0.3, decay=0.9)
    z, _ = _data(n=128)
    variables = jax.jit(module.init)(jax.random.key(0), z)

    step = _train_step(module)
    expected = jax.jit(step)(variables, z)
    got = _run_sharded(_mesh(axis_type), step, variables, z, specs=[P(), P("data")])
    _assert_trees_close(got, expected, rtol=1e-4, atol=1e-5)


FAMILIES = {
    "fsq": lambda z: vqjax.fsq(z, (8, 5, 5, 3, 3, 2, 2, 2)),
    "lfq": lambda z: vqjax.lfq(z, entropy_weight=0.1, temperature=0.5),
    "bsq": lambda z: vqjax.bsq(z, entropy_weight=0.1, entropy_group_size=4),
    "rvq_beam": lambda z: vqjax.rvq(z, _books(), beam_width=3),
    "rvq_dropout": lambda z: vqjax.rvq(z, _books(), quantizer_dropout=0.5, key=jax.random.key(3)),
    "pq": lambda z: vqjax.pq(z, _books().reshape(3, 24, 2, 4)[:, :, 0, :].reshape(3, 24, 4)[:2]),
    "aq": lambda z: vqjax.aq(z, _books(), beam_width=2, icm_iters=1),
    "residual_fsq": lambda z: vqjax.residual_fsq(z, (4,) * 8, 2),
    "residual_lfq": lambda z: vqjax.residual_lfq(z, 2),
}


def _books():
    return jnp.asarray(np.random.default_rng(7).normal(size=(3, 24, 8)) * 0.5, jnp.float32)


@pytest.mark.parametrize("axis_type", AXIS_TYPES)
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_families_and_their_gradients(devices, axis_type, name):
    z, _ = _data()

    def fn(z):
        def loss(z):
            q = FAMILIES[name](z)
            return jnp.sum(q.values ** 2) + q.loss, q
        (_, q), grad = jax.value_and_grad(loss, has_aux=True)(z)
        return q, grad

    expected = jax.jit(fn)(z)
    got = _run_sharded(_mesh(axis_type), fn, z, specs=[P("data")])
    _assert_trees_close(got, expected)


@pytest.mark.parametrize("axis_type", AXIS_TYPES)
@pytest.mark.parametrize("make", [
    lambda: ResidualVQ(2, 16, 8, codebook_learning="ema", codebook_init="kmeans", kmeans_iters=2,
                       dead_code_threshold=0.3, decay=0.9, beam_width=2),
    lambda: AdditiveVQ(2, 16, 8, codebook_learning="ema", dead_code_threshold=0.3, decay=0.9, icm_iters=1),
    lambda: ProductVQ(2, 16, 8, codebook_init="kmeans", kmeans_iters=2, dead_code_threshold=0.3),
], ids=["rvq", "aq", "pq"])
def test_family_module_train_step(devices, axis_type, make):
    module = make()
    z, _ = _data(n=128)
    variables = jax.jit(module.init)(jax.random.key(0), z)

    step = _train_step(module)
    expected = jax.jit(step)(variables, z)
    got = _run_sharded(_mesh(axis_type), step, variables, z, specs=[P(), P("data")])
    _assert_trees_close(got, expected, rtol=1e-4, atol=1e-5)
