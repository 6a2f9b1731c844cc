"""Training at scale on 8 fake CPU devices: FSDP equals the replicated step and stores ~1/8 per device, a sharded
checkpoint restores on 4 and on 1 device, gradient accumulation equals its large batch, the LM's layouts, and remat
keeps parameters and gradients (bf16 training: test_bf16.py; remat's memory: benchmarks/bench_train.py)."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from experiments_loader import load_experiment

import vqjax
from vqjax.train import train_and_evaluate
from vqjax.train.sharding import fsdp_spec, micro_batches, stored_bytes
from vqjax.train.tasks import get_task

# A step under FSDP gathers the parameters and computes what the replicated step computes: only the order of the
# cross-device reductions may differ, so losses, gradients and Adam's moments agree to float32 rounding. Adam
# turns a gradient that is pure rounding noise (a bias before a GroupNorm has a zero gradient) into a step of about
# +-lr whichever its sign, so parameters themselves are compared within twice the peak learning rate.
RTOL, ATOL = 1e-4, 1e-6


def _config(data_dir, **overrides):
    c = load_experiment("mnist_vq", "runlocal")
    c.data_dir = data_dir
    c.max_eval_examples, c.eval_batch_size = 40, 40
    c.num_train_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 4, 2, 4, 2
    for k, v in overrides.items():
        c[k] = v
    return c


def _steps(config, tmp_path, devices, n):
    """The task's state after ``n`` train steps on ``devices`` (no evaluation), and the run."""
    task = get_task(config.task)
    task.check_config(config)
    run = task.setup(config, str(tmp_path), devices=devices)
    sharding = run.state_sharding
    if sharding is None:
        sharding = jax.tree.map(lambda _: run.replicated, run.abstract)
    state = jax.jit(run.init_state, out_shardings=sharding)(jax.random.key(config.seed))
    step = run.make_step(0)
    metrics = []
    for _ in range(n):
        state, m = step(state)
        metrics.append({k: float(v) for k, v in m.items()})
    return state, metrics, run


def _assert_trees_close(a, b, **tol):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), err_msg=str(path), **tol)


def test_fsdp_rule_splits_the_largest_divisible_axis():
    assert fsdp_spec((3, 3, 16, 32), 8) == jax.sharding.PartitionSpec(None, None, None, "data")
    assert fsdp_spec((256, 8), 8) == jax.sharding.PartitionSpec("data")
    assert fsdp_spec((9, 300), 8) == jax.sharding.PartitionSpec()          # nothing divisible
    assert fsdp_spec((8, 16), 8) == jax.sharding.PartitionSpec()           # below the size worth splitting


def test_fsdp_step_equals_the_replicated_step_and_stores_an_eighth(data_dir, devices, tmp_path):
    c = _config(data_dir)
    c.model.channels = 16                     # most of the bytes in arrays large enough to split (as in real models)
    rep, rep_metrics, _ = _steps(c, tmp_path / "r", devices, 3)
    c.sharding = "fsdp"
    fsdp, fsdp_metrics, run = _steps(c, tmp_path / "f", devices, 3)
    _assert_trees_close(fsdp.opt_state, rep.opt_state, rtol=RTOL, atol=ATOL)
    _assert_trees_close(fsdp.vq_stats, rep.vq_stats, rtol=RTOL, atol=ATOL)
    _assert_trees_close(fsdp.params, rep.params, rtol=0, atol=2 * c.optimizer.learning_rate)
    for a, b in zip(fsdp_metrics, rep_metrics):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    # Parameters and optimizer state: each device stores about 1/8 (biases and norms below the split size stay whole).
    per_device, total = stored_bytes((fsdp.params, fsdp.opt_state))
    rep_device, rep_total = stored_bytes((rep.params, rep.opt_state))
    assert total == rep_total and rep_device == rep_total
    assert per_device / total < 1.25 / 8, f"{per_device} of {total} bytes on one device"
    # the codebook statistics stay whole on every device (global reductions)
    for leaf in jax.tree.leaves(fsdp.vq_stats):
        assert leaf.sharding.is_fully_replicated


def test_an_fsdp_checkpoint_on_8_devices_resumes_on_4_and_on_1(data_dir, devices, tmp_path):
    c = _config(data_dir, sharding="fsdp")
    c.quantizer, c.quantizer_kwargs = "fsq", dict(levels=(8, 5, 5, 5))      # quick to compile three times
    c.model.latent_dim = 4
    whole = train_and_evaluate(c, str(tmp_path / "eight"), devices=devices, progress=False)
    for n in (4, 1):
        workdir = tmp_path / f"on{n}"
        shutil.copytree(tmp_path / "eight", workdir)
        shutil.rmtree(workdir / "checkpoints" / "4")            # as if killed after the step-2 checkpoint
        resumed = train_and_evaluate(c, str(workdir), devices=devices[:n], progress=False)
        assert resumed.keys() == whole.keys()
        for k, v in whole.items():
            assert resumed[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
    # The tokenizer of a workdir saved on 4 devices loads whole in this 8-device process (any topology to any).
    tok = vqjax.Tokenizer.load(str(tmp_path / "on4"))
    images = np.full((2, 28, 28, 1), 0.5, np.float32)
    np.testing.assert_array_equal(tok.encode(images), vqjax.Tokenizer.load(str(tmp_path / "eight")).encode(images))


def test_gradient_accumulation_equals_the_large_batch(data_dir, devices, tmp_path):
    # EMA codebook without k-means or re-seeding: its statistics are sums, so four micro-batches folded in
    # together are the large batch's.
    kw = dict(quantizer_kwargs=dict(codebook_size=64, codebook_learning="ema", decay=0.9), batch_size=32)
    big_config = _config(data_dir, **kw)
    big, big_metrics, _ = _steps(big_config, tmp_path / "b", devices[:2], 2)
    acc, acc_metrics, _ = _steps(_config(data_dir, grad_accum_steps=4, **kw), tmp_path / "a", devices[:2], 2)
    _assert_trees_close(acc.opt_state, big.opt_state, rtol=RTOL, atol=ATOL)
    _assert_trees_close(acc.vq_stats, big.vq_stats, rtol=RTOL, atol=ATOL)
    _assert_trees_close(acc.params, big.params, rtol=0, atol=2 * big_config.optimizer.learning_rate)
    assert acc_metrics[0]["loss"] == pytest.approx(big_metrics[0]["loss"], rel=1e-5)


def test_micro_batches_keep_every_example_once():
    x = jnp.arange(24).reshape(12, 2)
    m = micro_batches(x, 3)
    assert m.shape == (3, 4, 2)
    np.testing.assert_array_equal(np.sort(np.asarray(m).reshape(-1)), np.arange(24))
    with pytest.raises(ValueError, match="not divisible"):
        micro_batches(x, 5)


@pytest.mark.parametrize("field, value, match", [
    ("precision", "float16", "config.precision must be one of"),
    ("sharding", "zero3", "config.sharding must be one of"),
    ("grad_accum_steps", 3, r"batch_size \(16\) must be divisible by config.grad_accum_steps \(3\)"),
    ("grad_accum_steps", 0, "grad_accum_steps must be a positive int"),
])
def test_bad_scale_fields_are_refused(data_dir, field, value, match):
    c = _config(data_dir)
    c[field] = value
    with pytest.raises(ValueError, match=match):
        get_task(c.task).check_config(c)


@pytest.mark.parametrize("mode, gate, embedding", [
    ("replicated", (None, "model"), ("model", None)),
    ("fsdp", (None, "data"), ("data", None)),          # the largest axis the data axis divides
    ("fsdp+model", ("data", "model"), ("model", "data")),
])
def test_lm_layouts_put_heads_mlp_and_vocabulary_on_the_model_axis(devices, mode, gate, embedding):
    import flax.linen as nn
    import numpy as np_

    from vqjax.lm.model import DecoderLM
    from vqjax.train.core import make_optimizer
    from vqjax.train.tasks.lm import LMState, lm_mesh, lm_state_shardings

    model = DecoderLM(vocab_size=300, dim=64, num_layers=1, num_heads=4, mlp_dim=128)
    tx = make_optimizer(_optimizer(), 10)
    sample = jnp.zeros((1, 8), jnp.int32)
    boxed = jax.eval_shape(lambda k: model.init(k, sample, sample)["params"], jax.random.key(0))
    params = nn.meta.unbox(boxed)
    abstract = LMState(jax.ShapeDtypeStruct((), jnp.int32), params, jax.eval_shape(tx.init, params))
    mesh = lm_mesh(np_.asarray(devices), 1 if mode == "fsdp" else 2)
    shardings = lm_state_shardings(abstract, boxed, tx, mesh, mode)

    def spec(s):
        return tuple(s.spec) + (None, None)

    assert spec(shardings.params["block_0"]["mlp"]["gate"]["kernel"])[:len(gate)] == gate
    assert spec(shardings.params["embedding"])[:2] == embedding
    # Adam's moments follow their parameters
    mu = shardings.opt_state[1][0].mu
    assert mu["block_0"]["mlp"]["gate"]["kernel"] == shardings.params["block_0"]["mlp"]["gate"]["kernel"]


def _optimizer():
    from vqjax.train.config import optimizer_config

    return optimizer_config()


def test_remat_keeps_the_parameters_and_gradients():
    """Rematerialised blocks recompute their activations in the backward pass: same parameter names (checkpoints
    and exports load either way), same loss and gradients. (The compiled memory it saves is measured by
    ``benchmarks/bench_train.py``.)"""
    from vqjax.lm.model import DecoderLM
    from vqjax.models import image_tokenizer

    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 50)
    for build, args in (
            (lambda r: image_tokenizer(channels=4, channel_mult=(1,), num_res_blocks=2, latent_dim=3,
                                       image_channels=1, quantizer="fsq", quantizer_kwargs=dict(levels=(5, 5, 5)),
                                       remat=r), (x,)),
            (lambda r: DecoderLM(vocab_size=50, dim=16, num_layers=1, num_heads=2, mlp_dim=32, remat=r),
             (tokens, tokens))):
        grads = []
        for remat in (False, True):
            m = build(remat)
            params = m.init({"params": jax.random.key(0)}, *args)["params"]

            def loss(p, m=m):
                out = m.apply({"params": p}, *args)[0]
                return jnp.mean(out.astype(jnp.float32) ** 2)

            grads.append((jax.tree_util.tree_structure(params), jax.jit(jax.value_and_grad(loss))(params)))
        (s0, (l0, g0)), (s1, (l1, g1)) = grads
        assert s0 == s1
        assert float(l0) == pytest.approx(float(l1), rel=1e-6)
        _assert_trees_close(g1, g0, rtol=1e-5, atol=1e-7)


def test_lm_gradient_accumulation_equals_the_large_batch():
    """The LM's weighted loss ``sum(nll w) / sum(w)``: micro-batches' summed gradients over the whole batch's weight
    are the large batch's gradient, however unevenly the weights fall between micro-batches."""
    from vqjax.lm.model import DecoderLM
    from vqjax.train.core import make_optimizer
    from vqjax.train.tasks.lm import LMState, _train_step

    model = DecoderLM(vocab_size=40, dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    tokens = jax.random.randint(jax.random.key(0), (8, 12), 1, 40)
    weights = (jax.random.uniform(jax.random.key(1), (8, 12)) > 0.4).astype(jnp.float32) * jnp.arange(1, 9)[:, None]
    batch = {"tokens": tokens, "positions": jnp.broadcast_to(jnp.arange(12), (8, 12)),
             "segment_ids": jnp.ones((8, 12), jnp.int32), "weights": weights}
    params = model.init(jax.random.key(2), tokens[:1], batch["positions"][:1])["params"]
    tx = make_optimizer(_optimizer(), 10)
    state = LMState(jnp.int32(0), params, tx.init(params))
    kinds = jnp.zeros((40,), jnp.int32)
    out = [jax.jit(lambda s, b, n=n: _train_step(model, tx, kinds, 1, n, s, b))(state, batch) for n in (1, 4)]
    (big, big_m), (acc, acc_m) = out
    assert acc_m["loss"] == pytest.approx(float(big_m["loss"]), rel=1e-6)
    assert acc_m["grad_norm"] == pytest.approx(float(big_m["grad_norm"]), rel=1e-5)
    _assert_trees_close(acc.opt_state, big.opt_state, rtol=RTOL, atol=ATOL)
