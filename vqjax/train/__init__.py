"""Layer 8: the task-agnostic trainer (:mod:`vqjax.train.core`) and its tasks (:mod:`vqjax.train.tasks`).

``train_and_evaluate(config, workdir)`` trains whatever ``config.task`` names ('image_tokenizer',
'link_prediction', ...); each task is one module under ``vqjax/train/tasks/``.
"""

from vqjax.train.config import switch_quantizer
from vqjax.train.core import load_run_info, make_optimizer, train_and_evaluate
from vqjax.train.tasks import Run, Task, check_config, get_task, known_tasks, register_task, runlocal

__all__ = ["train_and_evaluate", "make_optimizer", "runlocal", "check_config", "switch_quantizer", "load_run_info",
           "Task", "Run", "register_task", "get_task", "known_tasks"]
