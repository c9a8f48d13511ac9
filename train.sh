#!/usr/bin/env bash
# The full pipeline: TRAIN -> ADAPT -> FINETUNE, each stage starting from
# the previous run (checkpoint_path=run:PROJECT/RUN_ID), then evaluation, a video and the ONNX export.
# It first sets up what is missing (tools/setup.sh: a .venv beside the checkout, torch, the project); the second
# time that takes no time. PYTHON=/path/to/python runs it in an environment of your own instead, set up by hand.
#
#   bash train.sh                      # all visible GPUs (NPROC=N to choose); num_envs is in cfg/task/G1/G1.yaml
#   bash train.sh task.num_envs=2048   # extra Hydra overrides go to every stage
#   RUN=myrun PROJECT=g1track bash train.sh
#
# Several machines (torchrun's c10d rendezvous): run the same command on every node, with the same RUN,
# NNODES and RDZV_ENDPOINT (HOST:PORT of one node that all reach), and RUN_DIR on a filesystem all nodes
# share (each stage reads the previous stage's checkpoint, each rank writes its environment state there):
#   NNODES=2 RDZV_ENDPOINT=node0:29400 RUN=myrun RUN_DIR=/shared/runs bash train.sh    # on node0 and on node1
# Global rank 0 (on whichever node) logs and writes checkpoints; the evaluation runs on the node started
# with NODE_RANK=0 (the default; set NODE_RANK=1, 2, ... on the others).
#
# On a machine without a GPU it says so and runs the CPU demo preset (+preset=cpu_demo): the same three
# stages at a small scale, finishing in minutes with checkpoints, an ONNX file, a video and a metrics table.
set -euo pipefail
cd "$(dirname "$0")"
PROJECT=${PROJECT:-g1track}
if [ "${NNODES:-1}" -gt 1 ]; then : "${RUN:?NNODES=$NNODES needs the same RUN=NAME on every node}"; fi
RUN=${RUN:-$(date +%Y%m%d-%H%M%S)}
RUN_DIR=${RUN_DIR:-runs}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
else PY=$(bash tools/setup.sh); export PATH="$(dirname "$PY"):$PATH"; fi
# (an array that may be empty is expanded as ${A[@]+"${A[@]}"}: bash < 4.4 with set -u rejects "${A[@]}" when empty)

if $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  NPROC=${NPROC:-$($PY -c "import torch; print(torch.cuda.device_count())")}
  NNODES=${NNODES:-1}
  if [ "$NNODES" -gt 1 ]; then
    : "${RDZV_ENDPOINT:?NNODES=$NNODES needs RDZV_ENDPOINT=HOST:PORT (a node every node reaches) and the same RUN on every node}"
    RDZV=(--nnodes="$NNODES" --rdzv_backend=c10d --rdzv_endpoint="$RDZV_ENDPOINT" --rdzv_id="${RDZV_ID:-$RUN}")
  else
    RDZV=(--standalone)
  fi
  LAUNCH=($PY -m torch.distributed.run "${RDZV[@]}" --nproc_per_node="$NPROC" -m g1track.train)
  PRESET=()
  echo "== g1track: $NNODES node(s) x $NPROC GPU(s); run $PROJECT/$RUN"
else
  LAUNCH=($PY -m g1track.train)
  PRESET=(+preset=cpu_demo)
  echo "== g1track: no GPU found, running the CPU demo (+preset=cpu_demo; minutes, not the full 13B frames); run $PROJECT/$RUN"
fi
# Videos need offscreen OpenGL (EGL or OSMesa; MUJOCO_GL chooses): without it, everything else still runs
GL_PROBE='
import os, sys, subprocess
probe = "from mujoco.{} import GLContext; c = GLContext(64, 64); c.make_current(); c.free()"
chosen = os.environ.get("MUJOCO_GL", "").lower()
backends = [chosen] if chosen else ["egl", "osmesa"] + (["glfw"] if os.environ.get("DISPLAY") or sys.platform == "darwin" else [])
ok = lambda b: subprocess.run([sys.executable, "-c", probe.format(b)], env={**os.environ, "MUJOCO_GL": b}, capture_output=True, timeout=120).returncode == 0
sys.exit(0 if any(ok(b) for b in backends) else 1)'
PLAY=(-p)
if ! $PY -c "$GL_PROBE"; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo "
  echo "== g1track: no offscreen OpenGL here (${MUJOCO_GL:-EGL and OSMesa} missing), so the evaluation writes no video (training, evaluation and export still run); for videos: ${SUDO}apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6"
  PLAY=()
fi
COMMON=(task=G1/G1_tracking wandb.project="$PROJECT" run_dir="$RUN_DIR")
start=$(date +%s)

"${LAUNCH[@]}" "${COMMON[@]}" +exp=train wandb.id="${RUN}_train" ${PRESET[@]+"${PRESET[@]}"} "$@"
"${LAUNCH[@]}" "${COMMON[@]}" +exp=adapt checkpoint_path="run:$PROJECT/${RUN}_train" wandb.id="${RUN}_adapt" ${PRESET[@]+"${PRESET[@]}"} "$@"
"${LAUNCH[@]}" "${COMMON[@]}" +exp=finetune checkpoint_path="run:$PROJECT/${RUN}_adapt" wandb.id="${RUN}_finetune" ${PRESET[@]+"${PRESET[@]}"} "$@"
if [ "${NODE_RANK:-0}" != 0 ]; then echo "== g1track: node $NODE_RANK done; the evaluation runs on NODE_RANK=0"; exit 0; fi
# Evaluation under two protocols: nominal (no randomization or noise), then robust (the training randomization and
# noise, pushes off, 64 seeded episodes per clip), where the student is compared to its teacher.
$PY -m g1track.eval --run_path "$PROJECT/${RUN}_finetune" --run_dir "$RUN_DIR" ${PLAY[@]+"${PLAY[@]}"} --export protocol=nominal
$PY -m g1track.eval --run_path "$PROJECT/${RUN}_finetune" --run_dir "$RUN_DIR" protocol=robust

echo "== g1track: pipeline done in $(( $(date +%s) - start )) s; everything is in $RUN_DIR/$PROJECT/${RUN}_*"
