"""Streaming state for stacks of layers that are functions ``(x, state) -> (y, state)``."""

from __future__ import annotations

__all__ = ["StateChain"]


class StateChain:
    """Threads streaming states through a stack of layers: ``h = chain(layer, h)`` calls the next layer with its
    state from ``state`` (a tuple, one per layer; None or a shorter tuple: those layers start afresh) and collects
    the new one in ``chain.states``."""

    def __init__(self, state):
        self._old = list(state) if state is not None else []
        self.states: list = []

    def __call__(self, layer, h):
        i = len(self.states)
        h, st = layer(h, self._old[i] if i < len(self._old) else None)
        self.states.append(st)
        return h
