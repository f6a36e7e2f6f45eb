#!/usr/bin/env bash
# The test command: sets up .venv if needed, then lint + the unit test suite (a few minutes on 2 cores).
# Extra arguments go to pytest, e.g. ./run_tests.sh -k sampler. Plain `pytest` skips the tests marked slow.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh
echo "[tests] ruff"
python -m ruff check aioli_repro tests scripts notebooks/*.ipynb  # source notebooks, not the executed copies
echo "[tests] pytest (every test, the slow ones included)"
python -m pytest -m "" "$@"
