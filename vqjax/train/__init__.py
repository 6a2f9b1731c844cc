"""Layer 6: train state, sharded train/eval steps, orbax checkpoints, metrics writers, evaluation."""

from vqjax.train.config import base_config, build_model, check_config
from vqjax.train.loop import TrainState, load_run_info, make_optimizer, train_and_evaluate

__all__ = ["train_and_evaluate", "TrainState", "make_optimizer", "base_config", "check_config", "build_model",
           "load_run_info"]
