"""The training CLI (flags only; the work is :func:`vqjax.train.train_and_evaluate`).

    python -m vqjax.main --config=experiments/mnist_vq.py --workdir=DIR [--config.field=value ...]

Running it again on the same workdir resumes from the latest checkpoint. ``--distributed`` calls
``jax.distributed.initialize()`` first (multi-host runs on a pod or cluster; the coordinator, process count and
process id come from the environment, or from ``--coordinator_address``, ``--num_processes`` and
``--process_id``; CPU processes talk through gloo). The table printed at the end comes from the task (``config.task``).
"""

from __future__ import annotations

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from vqjax.train import get_task, switch_quantizer, train_and_evaluate
from vqjax.train.config import split_quantizer_overrides

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment file (experiments/NAME.py[:arg])", lock_config=True)
flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, figures, the tokenizer")
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (multi-host launch)")
flags.DEFINE_string("coordinator_address", None, "with --distributed: host:port of process 0")
flags.DEFINE_integer("num_processes", None, "with --distributed: number of processes")
flags.DEFINE_integer("process_id", None, "with --distributed: this process's index")
flags.DEFINE_string("cpu_collectives", "gloo", "with --distributed: collectives between CPU processes ('gloo' or "
                    "'mpi'); accelerators use their own")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a readable error for a ``--config.a.b=...`` override that does not fit the
    config (a typo, or a field below a value that is not a group) instead of a traceback. A
    ``--config.quantizer=NAME`` that changes the family replaces the experiment's ``quantizer_kwargs`` with the
    ``--config.quantizer_kwargs.*`` given beside it (:func:`vqjax.train.switch_quantizer`)."""
    try:
        rest, quantizer, kwargs = split_quantizer_overrides(argv)
        if quantizer is not None:
            sys.argv = list(rest)       # config_flags reads its --config.* overrides from sys.argv as well
        remaining = FLAGS(rest)
        if quantizer is not None:
            switch_quantizer(FLAGS.config, quantizer, kwargs)
        return remaining
    except flags.Error:
        raise
    except Exception as err:  # noqa: BLE001 - config_flags raises TypeError/KeyError/AttributeError on bad paths
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        sys.exit(f"FATAL: a --config override does not fit the experiment config ({type(err).__name__}: {err}). "
                 f"Overrides given: {overrides}. Each must name an existing field, e.g. --config.num_train_steps=100 "
                 f"or --config.quantizer_kwargs.codebook_size=512.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not any(a.split("=")[0] in ("--verbosity", "-v", "--v") for a in sys.argv[1:]):
        logging.set_verbosity(logging.WARNING)        # orbax logs every checkpoint step at INFO

    if FLAGS.distributed:
        jax.config.update("jax_cpu_collectives_implementation", FLAGS.cpu_collectives)
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
        if jax.default_backend() == "cpu" and jax.process_count() > 1:
            # Multi-process CPU executables loaded from the persistent compilation cache stall at their first
            # gloo collective (JAX 0.10): compile afresh.
            jax.config.update("jax_enable_compilation_cache", False)

    try:
        task = get_task(FLAGS.config.get("task", "image_tokenizer"))
        task.check_config(FLAGS.config)
    except ValueError as err:
        sys.exit(f"FATAL: bad config: {err}")
    result = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if jax.process_index() == 0:
        if result.get("interrupted"):
            print(f"stopped at step {result['step']} (SIGTERM); rerun the same command to resume")
        else:
            print(task.report(result, FLAGS.workdir))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
