#!/usr/bin/env bash
# The main job: regenerate every table and figure on the embedded offline corpus.
#   ./run_all.sh [--profile smoke|quick|full|paper] [--jobs N] [--only 00 01 ...]
# Sets up .venv if needed. Finished training runs are cached in runs/, so a second invocation only re-renders.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh
python -m aioli_repro.pipeline "$@"
