"""The in-repo default feature network for the perceptual loss: a :class:`vqjax.models.FeatureNet` classifier
trained on the run's own labelled training data (digit classes for MNIST, the source photo for photo crops), so
nothing is downloaded. Deterministic given the seed; saved in the workdir and reused on resume."""

from __future__ import annotations

import os
from typing import Any, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vqjax.data import pipeline
from vqjax.models.perceptual import FeatureNet

__all__ = ["train_feature_net", "load_or_train_feature_net", "feature_net_accuracy"]


def train_feature_net(source: Sequence[dict[str, Any]], *, num_classes: int, steps: int, batch_size: int = 64,
                      seed: int = 0, learning_rate: float = 3e-3, stop=None) -> tuple[FeatureNet, Any, float]:
    """Trains a :class:`FeatureNet` to classify ``source``'s ``label``; returns ``(net, params, train accuracy of
    the last 10 batches)``. ``stop`` (a :class:`vqjax.train.core.StopRequest`) is checked every step: SIGTERM
    interrupts the training (``Interrupted``) and nothing is saved."""
    net = FeatureNet(num_classes)
    shape = pipeline.image_shape(source)
    params = net.init(jax.random.key(seed), jnp.zeros((1,) + shape))
    tx = optax.adam(learning_rate)
    opt = tx.init(params)
    batches = pipeline.train_batches(source, batch_size=batch_size, seed=seed + 1)

    @jax.jit
    def step(params, opt, x, y):
        def loss_fn(p):
            logits = net.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), jnp.mean(
                jnp.argmax(logits, -1) == y)

        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, acc

    accs = []
    for _ in range(steps):
        if stop is not None:
            stop.check("feature-network pre-training")
        batch = next(batches)
        params, opt, acc = step(params, opt, batch["image"], batch["label"])
        accs.append(acc)
    return net, params, float(np.mean(accs[-10:])) if accs else 0.0


def load_or_train_feature_net(workdir: str, source, *, num_classes: int, steps: int, seed: int, stop=None):
    """The feature network of a run: loaded from ``workdir/feature_net.msgpack``, or trained and saved there."""
    path = os.path.join(workdir, "feature_net.msgpack")
    net = FeatureNet(num_classes)
    template = net.init(jax.random.key(seed), jnp.zeros((1,) + pipeline.image_shape(source)))
    if os.path.exists(path):
        with open(path, "rb") as fh:
            return net, flax.serialization.from_bytes(template, fh.read())
    net, params, _ = train_feature_net(source, num_classes=num_classes, steps=steps, seed=seed, stop=stop)
    with open(path + ".tmp", "wb") as fh:
        fh.write(flax.serialization.to_bytes(params))
    os.replace(path + ".tmp", path)
    return net, params


def feature_net_accuracy(net: FeatureNet, params, source: Sequence[dict[str, Any]], *, batch_size: int = 250,
                         max_examples: int | None = 1000) -> float:
    """Classification accuracy of the feature network on ``source`` (held-out data: the run's eval split), the
    evidence that its features carry what the perceptual loss relies on."""
    apply = jax.jit(lambda p, x: jnp.argmax(net.apply(p, x), -1))
    hits = total = 0
    for batch in pipeline.eval_batches(source, batch_size=batch_size, max_examples=max_examples):
        keep = batch["mask"] > 0
        pred = np.asarray(apply(params, batch["image"]))[keep]
        hits += int(np.sum(pred == np.asarray(batch["label"])[keep]))
        total += int(keep.sum())
    return hits / max(total, 1)
