"""Perceptual loss as an interface: any feature network ``features(x) -> [feature maps]``.

``perceptual_distance(features, x, y)`` compares unit-normalised feature maps stage by stage (the LPIPS recipe
of Zhang et al. 2018 with uniform channel weights). Nothing is downloaded: the default feature network is
:class:`FeatureNet`, a small classifier trained in-repo on the run's own labelled data
(:func:`vqjax.train.perceptual.train_feature_net`); any other network (for example a VGG a user has locally)
plugs in through the same ``features`` callable.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.models.autoencoder import group_count

__all__ = ["FeatureNet", "perceptual_distance"]


class FeatureNet(nn.Module):
    """A small convolutional classifier whose stage outputs serve as perceptual features.

    ``__call__(x)`` returns class logits; ``features(x)`` returns the list of stage outputs (one per entry of
    ``widths``, each after a stride-2 downsampling but the first).
    """

    num_classes: int
    widths: Sequence[int] = (16, 32, 64)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.convs = [nn.Conv(w, (3, 3), strides=(1, 1) if i == 0 else (2, 2), **dt) for i, w in enumerate(self.widths)]
        self.norms = [nn.GroupNorm(group_count(w), **dt) for w in self.widths]
        self.head = nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=self.param_dtype)

    def features(self, x: jax.Array) -> list[jax.Array]:
        h, out = x.astype(self.dtype) * 2.0 - 1.0, []
        for conv, norm in zip(self.convs, self.norms):
            h = nn.swish(norm(conv(h)))
            out.append(h)
        return out

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(jnp.mean(self.features(x)[-1], axis=(1, 2)))


def perceptual_distance(features: Callable[[jax.Array], Sequence[jax.Array]], x: jax.Array, y: jax.Array
                        ) -> jax.Array:
    """``sum_stages mean_{b,h,w} |f̂(x) - f̂(y)|²`` with ``f̂`` the feature map divided by its channel norm."""
    total = jnp.float32(0.0)
    for fx, fy in zip(features(x), features(y)):
        nx = fx / jnp.sqrt(jnp.sum(fx * fx, axis=-1, keepdims=True) + 1e-10)
        ny = fy / jnp.sqrt(jnp.sum(fy * fy, axis=-1, keepdims=True) + 1e-10)
        total = total + jnp.mean(jnp.sum((nx - ny) ** 2, axis=-1))
    return total
