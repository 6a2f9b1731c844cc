"""bf16 training (``config.precision='bfloat16'``) of the MNIST VQ and FSQ tokenizers, small settings: the
codebook stays as used and the reconstructions as good as in float32 (the quantizers' arithmetic stays float32,
so bf16 does not collapse the codebook as it does where the rounding runs in bf16)."""

import jax
import pytest
from experiments_loader import load_experiment

from vqjax.train.tasks import get_task

STEPS = 40


def _trained(experiment, precision, data_dir, workdir, device):
    c = load_experiment(experiment, "runlocal")
    c.data_dir, c.precision = data_dir, precision
    c.num_train_steps, c.max_eval_examples, c.eval_batch_size = STEPS, 200, 40
    if experiment == "mnist_vq":
        # 16 codes with the experiment's remedies (k-means start, EMA, dead-code re-seeding) use every code they can
        # in either precision; with more codes, which codes the held-out digits reach after a few dozen steps
        # swings by several codes between seeds in float32 alone, and would hide what the precision does.
        c.quantizer_kwargs.codebook_size = 16
    task = get_task(c.task)
    task.check_config(c)
    workdir.mkdir()
    run = task.setup(c, str(workdir), devices=[device])
    state = jax.jit(run.init_state, out_shardings=run.state_sharding)(jax.random.key(c.seed))
    step = run.make_step(0)
    for _ in range(STEPS):
        state, _ = step(state)
    return run.evaluate(state, STEPS)


@pytest.mark.parametrize("experiment", ["mnist_vq", "mnist_fsq"])
def test_bf16_training_keeps_usage_and_psnr(experiment, data_dir, devices, tmp_path):
    f32 = _trained(experiment, "float32", data_dir, tmp_path / "f32", devices[0])
    bf16 = _trained(experiment, "bfloat16", data_dir, tmp_path / "bf16", devices[0])
    assert abs(bf16["usage"] - f32["usage"]) <= 0.05, (bf16["usage"], f32["usage"])
    assert abs(bf16["psnr"] - f32["psnr"]) <= 0.5, (bf16["psnr"], f32["psnr"])
    assert f32["psnr"] > 12.0                     # trained: an empty reconstruction scores about 10 dB
