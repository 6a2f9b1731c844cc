"""Runs a streaming layer ``(x, state) -> (y, state)`` chunk by chunk, for the audio and video layer tests."""

import jax
import jax.numpy as jnp


def run_in_chunks(module, params, x, cuts):
    """``module`` applied to ``x[:, a:b]`` for consecutive cuts along axis 1, the state carried, concatenated."""
    outs, state = [], None
    apply = jax.jit(module.apply)
    for a, b in zip([0] + list(cuts), list(cuts) + [x.shape[1]]):
        y, state = apply(params, x[:, a:b], state)
        outs.append(y)
    return jnp.concatenate(outs, 1)
