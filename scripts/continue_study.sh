#!/usr/bin/env bash
# Continue a long study across sittings: run the main job (it resumes from the run cache) and commit
# results/run_cache every few minutes, so a sitting that ends mid-study loses no finished run.
#
#   scripts/continue_study.sh [--commit-every MINUTES] [run_all.sh arguments ...]
#   nohup setsid scripts/continue_study.sh --profile full --jobs 2 --only 10 11 12 13 > study.log 2>&1 &
#
# Without run_all arguments it continues `--profile full --jobs 2`. --commit-every 0 never commits.
# Only results/run_cache is staged and committed (`git commit -- results/run_cache`): the executed notebooks are
# rewritten while they run, and a half-executed copy must never be committed. Legacy .json cache entries are
# gzipped first (`python -m aioli_repro cache --compress`). AIOLI_RUN_ALL replaces ./run_all.sh and
# AIOLI_PYTHON the interpreter (the tests use stand-ins).
#
# The body is one function, parsed whole before it runs, so editing this file while it runs cannot change it.
set -euo pipefail

main() {
  cd "$(dirname "$0")/.."

  every=15
  if [[ "${1:-}" == "--commit-every" ]]; then
    if ! [[ $# -ge 2 && "$2" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
      echo "continue_study: --commit-every needs minutes, e.g. 15" >&2
      exit 2
    fi
    every="$2"
    shift 2
  fi
  args=("$@")
  [[ ${#args[@]} -gt 0 ]] || args=(--profile full --jobs 2)
  run_all="${AIOLI_RUN_ALL:-./run_all.sh}"
  python="${AIOLI_PYTHON:-.venv/bin/python}"
  cache=results/run_cache
  period=$(awk -v m="$every" 'BEGIN { printf "%d", m * 60 }')

  commit_cache() {  # $1: what to say in the message
    [[ "$period" -gt 0 ]] || return 0
    git add -A -- "$cache"
    if ! git diff --cached --quiet -- "$cache"; then
      local n
      n=$(git diff --cached --name-only -- "$cache" | wc -l)
      git commit -q -m "Run cache: $n entries from run_all ${args[*]} ($1)" -- "$cache"
      echo "[continue_study] $(date +%H:%M) committed $n run cache entries ($1)"
    fi
  }

  if compgen -G "$cache/*.json" > /dev/null; then
    AIOLI_RESULT_CACHE="$PWD/$cache" "$python" -m aioli_repro cache --compress
  fi

  "$run_all" "${args[@]}" &
  job=$!
  # Stop the main job's whole process tree with this script, so a stopped sitting leaves no orphan training: the
  # notebook kernel starts its own session, so a process-group kill would miss it and its pool workers.
  kill_tree() {
    local child
    for child in $(pgrep -P "$1" || true); do kill_tree "$child"; done
    kill "$1" 2> /dev/null || true
  }
  trap 'kill_tree "$job"; exit 143' INT TERM
  last=$SECONDS
  while kill -0 "$job" 2> /dev/null; do
    sleep 1
    if [[ "$period" -gt 0 && $((SECONDS - last)) -ge "$period" ]]; then
      commit_cache "in progress"
      last=$SECONDS
    fi
  done
  rc=0
  wait "$job" || rc=$?
  commit_cache "run_all exited with $rc"
  exit "$rc"
}

main "$@"
exit
