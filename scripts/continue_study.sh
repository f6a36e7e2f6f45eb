#!/usr/bin/env bash
# Continue a long study across sittings: run the main job (it resumes from the run cache) and commit
# results/run_cache every few minutes, so a sitting that ends mid-study loses no finished run.
#
#   scripts/continue_study.sh [--commit-every MINUTES] [run_all.sh arguments ...] [--then run_all.sh arguments ...]
#   nohup setsid scripts/continue_study.sh --profile full --jobs 2 --only 10 11 12 13 > study.log 2>&1 &
#
# Without run_all arguments it continues `--profile full --jobs 2`. --commit-every 0 never commits. `--then`
# separates stages that run one after another in the order given (run_all itself orders notebooks by number), e.g.
# `--profile full --jobs 2 --only 11 12 13 --then --profile full --jobs 2 --only 04`; a stage that fails stops the
# queue. A stage already finished re-renders from the run cache in about a minute, so the same command can start
# every sitting.
# Only results/run_cache is staged and committed (`git commit -- results/run_cache`): the executed notebooks are
# rewritten while they run, and a half-executed copy must never be committed. Legacy .json cache entries are
# gzipped first (`python -m aioli_repro cache --compress`). AIOLI_RUN_ALL replaces ./run_all.sh and
# AIOLI_PYTHON the interpreter (the tests use stand-ins).
#
# The body is two functions, parsed whole before they run, so editing this file while it runs cannot change it.
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
  stages=()  # each stage's run_all arguments, one string per stage (split again when it runs)
  stage=()
  for arg in "$@"; do
    if [[ "$arg" == "--then" ]]; then
      stages+=("${stage[*]:-}")
      stage=()
    else
      stage+=("$arg")
    fi
  done
  stages+=("${stage[*]:-}")
  run_all="${AIOLI_RUN_ALL:-./run_all.sh}"
  python="${AIOLI_PYTHON:-.venv/bin/python}"
  cache=results/run_cache
  period=$(awk -v m="$every" 'BEGIN { printf "%d", m * 60 }')

  commit_cache() {  # $1: what to say in the message
    [[ "$period" -gt 0 ]] || return 0
    # A commit that fails (another git command holds the index lock) is retried at the next period; it must not
    # stop the study, which set -e would do.
    if ! git add -A -- "$cache"; then
      echo "[continue_study] $(date +%H:%M) could not stage the run cache ($1); trying again later" >&2
      return 0
    fi
    if ! git diff --cached --quiet -- "$cache"; then
      local n
      n=$(git diff --cached --name-only -- "$cache" | wc -l)
      if git commit -q -m "Run cache: $n entries from run_all ${args[*]} ($1)" -- "$cache"; then
        echo "[continue_study] $(date +%H:%M) committed $n run cache entries ($1)"
      else
        echo "[continue_study] $(date +%H:%M) could not commit the run cache ($1); trying again later" >&2
      fi
    fi
  }

  if compgen -G "$cache/*.json" > /dev/null; then
    AIOLI_RESULT_CACHE="$PWD/$cache" "$python" -m aioli_repro cache --compress
  fi

  for stage_args in "${stages[@]}"; do
    read -r -a args <<< "$stage_args"
    [[ ${#args[@]} -gt 0 ]] || args=(--profile full --jobs 2)
    run_stage || exit $?
  done
}

run_stage() {  # one stage: run_all with "${args[@]}" in the background, committing the cache as it goes
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
  return "$rc"
}

main "$@"
exit
