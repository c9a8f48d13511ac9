#!/usr/bin/env bash
# The tests, from a fresh clone: sets up what is missing (tools/setup.sh: a .venv beside the checkout, torch, the
# project with its dev extra; the second time that takes no time), then runs pytest on the whole suite.
#
#   bash test.sh                          # everything (20+ min on 2 cores)
#   bash test.sh tests/test_sim.py -x     # pytest arguments pass through
#
# PYTHON=/path/to/python runs the tests in an environment of your own instead, set up by hand.
set -euo pipefail
cd "$(dirname "$0")"
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
else PY=$(bash tools/setup.sh); export PATH="$(dirname "$PY"):$PATH"; fi
exec "$PY" -m pytest -q "$@"
