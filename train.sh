#!/usr/bin/env bash
# The full pipeline of the pipeline quick reference: TRAIN -> ADAPT -> FINETUNE, each stage starting from
# the previous run (checkpoint_path=run:PROJECT/RUN_ID), then evaluation, a video and the ONNX export.
#
#   bash train.sh                      # all visible GPUs (NPROC=N to choose); num_envs is in cfg/task/G1/G1.yaml
#   bash train.sh task.num_envs=2048   # extra Hydra overrides go to every stage
#   RUN=myrun PROJECT=g1track bash train.sh
#
# On a machine without a GPU it says so and runs the CPU demo preset (+preset=cpu_demo): the same three
# stages at a small scale, finishing in minutes with checkpoints, an ONNX file, a video and a metrics table.
set -euo pipefail
cd "$(dirname "$0")"
PROJECT=${PROJECT:-g1track}
RUN=${RUN:-$(date +%Y%m%d-%H%M%S)}
RUN_DIR=${RUN_DIR:-runs}
PY=${PYTHON:-python}

if $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  NPROC=${NPROC:-$($PY -c "import torch; print(torch.cuda.device_count())")}
  LAUNCH=($PY -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m g1track.train)
  PRESET=()
  echo "== g1track: $NPROC GPU(s); run $PROJECT/$RUN"
else
  LAUNCH=($PY -m g1track.train)
  PRESET=(+preset=cpu_demo)
  echo "== g1track: no GPU found, running the CPU demo (+preset=cpu_demo; minutes, not the full 13B frames); run $PROJECT/$RUN"
fi
COMMON=(task=G1/G1_tracking wandb.project="$PROJECT" run_dir="$RUN_DIR")
start=$(date +%s)

"${LAUNCH[@]}" "${COMMON[@]}" +exp=train wandb.id="${RUN}_train" "${PRESET[@]}" "$@"
"${LAUNCH[@]}" "${COMMON[@]}" +exp=adapt checkpoint_path="run:$PROJECT/${RUN}_train" wandb.id="${RUN}_adapt" "${PRESET[@]}" "$@"
"${LAUNCH[@]}" "${COMMON[@]}" +exp=finetune checkpoint_path="run:$PROJECT/${RUN}_adapt" wandb.id="${RUN}_finetune" "${PRESET[@]}" "$@"
$PY -m g1track.eval --run_path "$PROJECT/${RUN}_finetune" --run_dir "$RUN_DIR" -p --export

echo "== g1track: pipeline done in $(( $(date +%s) - start )) s; everything is in $RUN_DIR/$PROJECT/${RUN}_*"
