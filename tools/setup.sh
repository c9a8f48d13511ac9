#!/usr/bin/env bash
# Set up what is missing for g1track, and nothing else: a virtualenv `.venv` beside the checkout, torch (the CPU
# build where there is no NVIDIA GPU, else the CUDA build), then the project with its `dev` extra (pytest, nbdev,
# the docs site). `train.sh` and `test.sh` call it first; on its own:
#
#   bash tools/setup.sh          # prints the virtualenv's python on stdout, its messages on stderr
#
# Idempotent: once everything is installed it leaves a stamp in .venv holding what it installed (the torch request
# and a hash of pyproject.toml); while the stamp matches, a call returns at once with no pip call at all. Change
# pyproject.toml (or TORCH_VERSION / TORCH_INDEX_URL) and the next call installs again.
#
#   TORCH_VERSION=2.13.0     the torch release to install (the one CI tests)
#   TORCH_INDEX_URL=URL      where to get torch from (default: the CPU wheel index without a GPU when it can be reached,
#                            else pip's configured index: with a GPU, PyPI's CUDA build)
#   PYTHON3=python3.12       the interpreter that creates .venv (default: the newest python3.1x on PATH, else python3)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
STAMP=$VENV/.g1track-setup
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
say() { echo "== setup: $*" >&2; }
die() { echo "== setup: $*" >&2; exit 1; }

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU"; }

# the torch build this machine wants: the CUDA build with an NVIDIA GPU, else the CPU build
torch_variant() { if has_gpu; then echo cuda; else echo cpu; fi; }

# where pip gets torch from: TORCH_INDEX_URL, or for the CPU build the CPU wheel index (PyPI's Linux wheel bundles
# several GB of CUDA libraries) when it can be reached; else pip's own configuration (PyPI: the CUDA build; or a mirror)
CPU_INDEX=https://download.pytorch.org/whl/cpu
torch_index() {
  if [ -n "${TORCH_INDEX_URL:-}" ]; then echo "$TORCH_INDEX_URL"
  elif [ "$1" = cpu ] && ! pip_has_own_index && reachable "$CPU_INDEX"; then echo "$CPU_INDEX"
  else echo ""; fi
}
pip_has_own_index() {  # pip is set up with an index or wheel folder of its own (a mirror, a cache): use it, probe nothing
  [ -n "${PIP_INDEX_URL:-}${PIP_FIND_LINKS:-}${PIP_EXTRA_INDEX_URL:-}" ] || "$VENV/bin/python" -m pip config list 2>/dev/null | grep -qE "index-url|find-links"
}
reachable() {  # can this machine open a connection to the host of URL $1 within a few seconds?
  "$VENV/bin/python" - "$1" <<'PY' 2>/dev/null
import socket, sys, urllib.parse
try: socket.create_connection((urllib.parse.urlparse(sys.argv[1]).hostname, 443), timeout=5).close()
except OSError: sys.exit(1)
PY
}

# what this call would install: when it equals the stamp, everything is there already
wanted() {
  local hash
  hash=$(cksum < "$ROOT/pyproject.toml" | cut -d' ' -f1)
  echo "torch==$TORCH_VERSION variant=$(torch_variant) index=${TORCH_INDEX_URL:-default} pyproject=$hash extras=dev"
}

pick_python() {
  if [ -n "${PYTHON3:-}" ]; then echo "$PYTHON3"; return; fi
  for p in python3.14 python3.13 python3.12 python3.11 python3.10 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$p"; return
    fi
  done
  die "g1track needs Python 3.10 or newer and found none on PATH; install one (Debian/Ubuntu: apt-get install python3 python3-venv) or name it with PYTHON3=/path/to/python3.X"
}

# pip install, quiet: its messages only when it fails, on stderr (stdout carries only the python path,
# for `PY=$(bash tools/setup.sh)`)
pip_q() {
  local log rc=0
  log=$(mktemp)
  "$VENV/bin/python" -m pip install -q "$@" >"$log" 2>&1 || rc=$?
  [ $rc = 0 ] || cat "$log" >&2
  rm -f "$log"
  return $rc
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(wanted)" ] && "$VENV/bin/python" -c "" 2>/dev/null; then
  echo "$VENV/bin/python"; exit 0                      # everything is there: start at once
fi

t0=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  py=$(pick_python)
  say "creating the virtualenv $VENV with $py ($("$py" --version 2>&1))"
  "$py" -m venv "$VENV" 2>/dev/null || { rm -rf "$VENV"; die "'$py -m venv' failed: on Debian/Ubuntu the venv module is a package of its own: apt-get install python3-venv (or python3.X-venv), then run this again"; }
elif ! "$VENV/bin/python" -c "" 2>/dev/null; then
  die "$VENV exists but its python does not run (moved or upgraded interpreter?); delete it (rm -rf $VENV) and run this again"
fi
pip_q --upgrade pip || die "pip could not upgrade itself in $VENV; see the messages above"

variant=$(torch_variant)
index=$(torch_index "$variant")
if [ "$variant" = cuda ]; then say "NVIDIA GPU found: installing torch $TORCH_VERSION, the CUDA build${index:+ from $index}"
else say "no NVIDIA GPU (nvidia-smi): installing torch $TORCH_VERSION, the CPU build${index:+ from $index}"; fi
pip_q "torch==$TORCH_VERSION" ${index:+--index-url "$index"} || die "torch $TORCH_VERSION did not install; see pip's message above (TORCH_VERSION=... or TORCH_INDEX_URL=... choose another)"
if [ "$variant" = cpu ] && "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.version.cuda is None)" 2>/dev/null; then
  say "note: pip installed a CUDA build of torch on this machine without a GPU (it runs on the CPU all the same); TORCH_INDEX_URL=$CPU_INDEX selects the smaller CPU build"
fi
if [ "$variant" = cuda ] && ! "$VENV/bin/python" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  cuda=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -1)
  say "warning: this torch build does not see the GPU (the driver supports CUDA ${cuda:-?}); reinstall with TORCH_INDEX_URL=https://download.pytorch.org/whl/cuXYZ naming a CUDA release the driver supports, after rm $STAMP"
fi

say "installing the project with its dev extra (pip install -e .[dev])"
pip_q -e "$ROOT[dev]" || die "installing the project failed; see pip's message above"
"$VENV/bin/python" -c "import g1track, torch, mujoco" || die "the project installed but does not import; see the traceback above"
wanted > "$STAMP"
say "ready in $(( $(date +%s) - t0 )) s: $("$VENV/bin/python" -c 'import torch, mujoco, g1track; print(f"g1track {g1track.__version__}, torch {torch.__version__}, mujoco {mujoco.__version__}")')"
echo "$VENV/bin/python"
