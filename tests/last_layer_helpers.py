"""The check the image and video tokenizers' adversarial terms rely on: gradients taken through the decoder's
explicit last layer equal those of the whole model."""

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.models.vqgan import last_layer_grads


def assert_last_layer_grads_are_direct(model, variables, x):
    """``apply_last_layer`` on the features ``return_features`` gives reproduces the reconstruction, and
    ``last_layer_grads`` of two losses equal differentiating the whole model with respect to the last kernel."""
    nll = lambda r: jnp.mean((r - x) ** 2) + jnp.mean(jnp.sin(3 * r))
    other = lambda r: jnp.mean(r ** 3)

    @jax.jit
    def run(params):
        recon, _, h = model.apply({**variables, "params": params}, x, return_features=True)
        return recon, h

    recon, h = run(variables["params"])
    np.testing.assert_allclose(recon, jax.jit(model.apply)(variables, x)[0], atol=1e-6)
    last = model.last_layer_params(variables["params"])
    out_fn = lambda k: model.decoder.apply_last_layer({**last, "kernel": k}, h)
    np.testing.assert_allclose(out_fn(last["kernel"]), recon, atol=1e-6)
    via_vjp = jax.jit(lambda r: last_layer_grads(out_fn, last["kernel"], r, nll, other))(recon)
    for loss, got in zip((nll, other), via_vjp):
        direct = jax.jit(jax.grad(lambda p: loss(run(p)[0])))(variables["params"])["decoder"]["conv_out"]["kernel"]
        assert float(jnp.abs(direct).max()) > 0
        np.testing.assert_allclose(got, direct, rtol=1e-4, atol=1e-7)
