"""A trained tokenizer as an artifact: ``vqjax.Tokenizer.load(workdir)``.

    tok = vqjax.Tokenizer.load("runs/mnist_vq")
    codes = tok.encode(images)         # float images [B, H, W, C] in [0, 1] (or uint8) -> int32 [B, h, w(, L)]
    images = tok.decode(codes)         # -> float32 [B, H, W, C] in [0, 1]
    tok.vocab_size                     # distinct values of one token
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

__all__ = ["Tokenizer"]


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """A trained image tokenizer: the model, its parameters and statistics, and the shapes it works on.

    Attributes:
      model: the :class:`vqjax.models.ImageTokenizer`.
      variables: ``{'params', 'vq_stats'}`` from the latest checkpoint (the EMA parameters when the run kept an
        EMA of the generator weights, as its evaluation did).
      image_shape: ``(H, W, C)`` of the training images.
      codes_shape: token array shape of one image (``(h, w)`` or ``(h, w, L)``).
      vocab_size: distinct values of one token.
      step: the training step of the checkpoint.
    """

    model: Any
    variables: dict
    image_shape: tuple[int, int, int]
    codes_shape: tuple[int, ...]
    vocab_size: int
    step: int

    @classmethod
    def load(cls, workdir: str, step: int | None = None) -> "Tokenizer":
        """The tokenizer trained in ``workdir`` (its latest checkpoint, or ``step``)."""
        import orbax.checkpoint as ocp

        from vqjax.train.config import build_model
        from vqjax.train.loop import load_run_info

        workdir = os.path.abspath(os.path.expanduser(workdir))
        for name in ("config.json", "run.json", "checkpoints"):
            if not os.path.exists(os.path.join(workdir, name)):
                raise FileNotFoundError(f"Tokenizer.load: {workdir!r} is not a training workdir (no {name})")
        with open(os.path.join(workdir, "config.json")) as fh:
            config = ml_collections.ConfigDict(json.load(fh))
        info = load_run_info(workdir)
        with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mgr:
            step = mgr.latest_step() if step is None else step
            if step is None:
                raise FileNotFoundError(f"Tokenizer.load: {workdir!r} has no checkpoint yet")
            restored = mgr.restore(step, args=ocp.args.StandardRestore())
        # A run with an EMA of the generator weights evaluates, and so tokenizes, with the EMA.
        use_ema = float(config.get("ema_decay", 0.0)) > 0
        params = _field(restored, "ema_params", 5) if use_ema else _field(restored, "params", 1)
        vq_stats = _field(restored, "vq_stats", 2)
        model = build_model(config, info["image_shape"][-1])
        return cls(model, {"params": params, "vq_stats": vq_stats}, tuple(info["image_shape"]),
                   tuple(info["codes_shape"]), int(info["vocab_size"]), int(step))

    def _check_images(self, images) -> jax.Array:
        images = jnp.asarray(images)
        if images.ndim == 3 and self.image_shape[-1] == 1:
            images = images[..., None]
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"Tokenizer.encode: images must have shape [B, {', '.join(map(str, self.image_shape))}]; "
                             f"got {tuple(images.shape)}")
        if images.dtype == jnp.uint8:
            images = images.astype(jnp.float32) / 255.0
        return images.astype(jnp.float32)

    def encode(self, images) -> jax.Array:
        """int32 codes ``[B, *codes_shape]`` of images ``[B, H, W, C]`` (float in [0, 1] or uint8)."""
        return _encode(self.model, self.variables, self._check_images(images))

    def decode(self, codes) -> jax.Array:
        """float32 images ``[B, H, W, C]`` in [0, 1] from codes ``[B, *codes_shape]``."""
        codes = jnp.asarray(codes)
        if tuple(codes.shape[1:]) != self.codes_shape or not jnp.issubdtype(codes.dtype, jnp.integer):
            raise ValueError(f"Tokenizer.decode: codes must be integer [B, {', '.join(map(str, self.codes_shape))}]; "
                             f"got {codes.dtype} {tuple(codes.shape)}")
        return _decode(self.model, self.variables, codes.astype(jnp.int32))


def _field(restored, name, index):
    if isinstance(restored, dict):
        return restored.get(name, {})
    return restored[index]


@jax.jit(static_argnums=0)
def _encode(model, variables, images):
    return model.apply(variables, images, method=model.encode)


@jax.jit(static_argnums=0)
def _decode(model, variables, codes):
    return jnp.clip(model.apply(variables, codes, method=model.decode), 0.0, 1.0)
