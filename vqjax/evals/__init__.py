"""Layer 6: evaluators, one module per field, usable on a tokenizer artifact without the trainer.

- ``image``: PSNR, SSIM, MSE and code usage of an image tokenizer;
- ``speech``: PESQ-WB/NB, STOI, SI-SDR and mel distance of an audio codec beside Codec2 and Opus;
- ``video``: PSNR and SSIM per frame, flicker and bits per pixel beside MPEG-4 and VP9;
- ``timeseries``: NMSE, correlation and band power error beside FAST;
- ``recommendation``: Recall@k and NDCG@k (overall, warm, cold) of a recommender beside popularity;
- ``ranking``: filtered MRR and Hits@k of a link predictor.

Each module's ``evaluate`` scores its subject and its anchors by one harness on the same data and returns one row
per codec; :func:`get_evaluator` finds it by name::

    rows = vqjax.evals.speech.evaluate(tok, clips, anchors=("codec2", "opus"))
    rows = vqjax.evals.get_evaluator("image")(tok, test_images)

``figures`` draws what the harnesses and the trainer show.
"""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["EVALUATORS", "register_evaluator", "get_evaluator", "known_evaluators"]

# The built-in evaluators: name -> module whose ``evaluate`` it is (imported on first use).
_BUILTIN = {"image": "vqjax.evals.image", "speech": "vqjax.evals.speech", "video": "vqjax.evals.video",
            "timeseries": "vqjax.evals.timeseries", "recommendation": "vqjax.evals.recommendation",
            "ranking": "vqjax.evals.ranking"}
EVALUATORS: dict[str, Callable] = {}


def register_evaluator(name: str, evaluate: Callable) -> Callable:
    """Adds ``evaluate`` under ``name``; a name can be registered once (``ValueError`` otherwise)."""
    if name in EVALUATORS or name in _BUILTIN:
        raise ValueError(f"evaluator {name!r} is already registered")
    EVALUATORS[name] = evaluate
    return evaluate


def known_evaluators() -> list[str]:
    """Every evaluator name: the built-ins and whatever has been registered."""
    return sorted(set(EVALUATORS) | set(_BUILTIN))


def get_evaluator(name: str) -> Callable:
    """The ``evaluate`` registered as ``name`` (a built-in module's, imported here on first use).

    Raises:
      ValueError: an unknown name, listing the known ones.
    """
    if name in _BUILTIN:
        return importlib.import_module(_BUILTIN[name]).evaluate
    if name not in EVALUATORS:
        raise ValueError(f"evaluator must be one of {known_evaluators()}; got {name!r}")
    return EVALUATORS[name]
