#!/usr/bin/env bash
# The accelerator check: on whatever device JAX finds (GPU, TPU or CPU), in under 8 minutes,
#   1. benchmarks/bench_train.py on mnist_vq and speech_codec: step time, examples and tokens per second, MFU,
#      float32 against bfloat16, replicated against FSDP, and the compiled memory remat saves;
#   2. a training of experiments/mnist_vq.py and one of experiments/speech_codec.py, each given about
#      TRAIN_SECONDS (default 150) of steps at the step time step 1 measured, with their final held-out metrics;
# then prints one table (also written to OUT/report.md).
#
#   bash benchmarks/accelerator_check.sh [--dry] [OUT]      # OUT defaults to runs/accelerator_check
#
# --dry: the same steps on tiny settings (runlocal configs, two training steps): checks the script on a CPU rather
# than measuring anything (make test runs it this way, with EXPERIMENTS=mnist_vq).
# EXPERIMENTS: the experiments benchmarked and trained (default "mnist_vq speech_codec").
set -euo pipefail

DRY=0
if [[ "${1:-}" == "--dry" ]]; then
  DRY=1
  shift
fi
OUT=${1:-runs/accelerator_check}
PY=${PYTHON:-python}
TRAIN_SECONDS=${TRAIN_SECONDS:-150}
EXPERIMENTS=${EXPERIMENTS:-"mnist_vq speech_codec"}
TASKS=$(echo "$EXPERIMENTS" | tr ' ' ',')
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$OUT"

if [[ $DRY == 1 ]]; then
  "$PY" "$HERE/bench_train.py" --dry --tasks "$TASKS" --json "$OUT/bench.json" > /dev/null
else
  "$PY" "$HERE/bench_train.py" --tasks "$TASKS" --steps 10 --json "$OUT/bench.json" > /dev/null
fi

for exp in $EXPERIMENTS; do
  if [[ $DRY == 1 ]]; then
    steps=2
    config="experiments/$exp.py:runlocal"
  else
    steps=$("$PY" "$HERE/bench_train.py" --steps_for "$OUT/bench.json" "$exp" "$TRAIN_SECONDS")
    config="experiments/$exp.py"
  fi
  rm -rf "${OUT:?}/$exp"
  SECONDS=0
  "$PY" -m vqjax.main --config="$config" --workdir="$OUT/$exp" --config.num_train_steps="$steps" \
    --config.eval_every_steps="$steps" --config.checkpoint_every_steps="$steps" > "$OUT/$exp.log" 2>&1
  echo "{\"experiment\": \"$exp\", \"steps\": $steps, \"seconds\": $SECONDS}" > "$OUT/$exp.time.json"
done

"$PY" "$HERE/bench_train.py" --report "$OUT" $EXPERIMENTS | tee "$OUT/report.md"
