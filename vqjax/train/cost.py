"""What a train step costs: the step fed with its batches (:class:`FedStep`) and XLA's own count of its FLOPs and
memory (:func:`compiled_cost`), for throughput and model-FLOPs-utilisation figures (``benchmarks/bench_train.py``)
and the memory that ``config.remat`` saves."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable

__all__ = ["FedStep", "compiled_cost"]


@dataclasses.dataclass
class FedStep:
    """A task's jitted train step with the source of its batches: ``step(state) -> (state, metrics)`` runs one
    step on the next batch; ``step.lower(state)`` lowers the jitted step on the next batch (``jax.stages.Lowered``)
    without running it.

    Attributes:
      jitted: the ``jax.jit``-ed ``(state, *args) -> (state, metrics)``.
      next_args: ``() -> args``: the arguments after the state for the next step (the batch, constants).
      context: ``() -> context manager`` the step runs in (a mesh and its axis rules), or None.
    """

    jitted: Any
    next_args: Callable[[], tuple]
    context: Callable[[], Any] | None = None

    def _within(self):
        return self.context() if self.context is not None else contextlib.nullcontext()

    def __call__(self, state):
        with self._within():
            return self.jitted(state, *self.next_args())

    def lower(self, state):
        with self._within():
            return self.jitted.lower(state, *self.next_args())


def compiled_cost(lowered) -> dict:
    """XLA's analysis of a lowered step, compiled, all per device: ``flops`` (the cost analysis of the partitioned
    computation: a step split over N devices counts 1/N of its FLOPs), ``temp_bytes`` (scratch memory: activations
    kept for the backward pass and intermediates), ``argument_bytes`` and ``output_bytes``.

    On CPU, XLA's default scheduler favours concurrency and may compute a rematerialised block's recomputation
    early, hiding what remat saves; ``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`` (set
    before JAX starts) schedules for memory, as the GPU and TPU compilers do."""
    compiled = lowered.compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    memory = compiled.memory_analysis()
    return {"flops": float((cost or {}).get("flops", float("nan"))),
            "temp_bytes": int(getattr(memory, "temp_size_in_bytes", 0)),
            "argument_bytes": int(getattr(memory, "argument_size_in_bytes", 0)),
            "output_bytes": int(getattr(memory, "output_size_in_bytes", 0))}
