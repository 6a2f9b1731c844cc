"""Layer 6: the task-agnostic trainer (:mod:`vqjax.train.core`) and its tasks (:mod:`vqjax.train.tasks`).

``train_and_evaluate(config, workdir)`` trains whatever ``config.task`` names ('image_tokenizer',
'link_prediction', ...); each task is one module under ``vqjax/train/tasks/``.
"""

from vqjax.train.config import base_config, build_model, check_config, link_config, runlocal
from vqjax.train.core import load_run_info, make_optimizer, train_and_evaluate
from vqjax.train.tasks import Run, Task, get_task, known_tasks, register_task

__all__ = ["train_and_evaluate", "make_optimizer", "base_config", "link_config", "runlocal", "check_config",
           "build_model", "load_run_info", "Task", "Run", "register_task", "get_task", "known_tasks"]
