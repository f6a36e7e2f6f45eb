"""Interrupt ``run_all.sh`` for real and start it again: no finished training run may be recomputed.

    .venv/bin/python scripts/fault_check.py                      # notebook 04 under the smoke profile
    .venv/bin/python scripts/fault_check.py --only 01 04 --after 5

What it does:

1. makes a scratch copy of the checkout (package, notebooks, scripts; ``data/`` linked), so the checkout's
   ``results/``, ``figures/``, ``notebooks/executed/`` and ``runs/`` are never touched; the run folder and the result
   cache are private to the check, the token cache is the checkout's (read, and rebuilt only if invalid);
2. starts the notebook pipeline (what ``run_all.sh`` runs) there and, as soon as ``--after`` training runs have
   finished, kills it and its Jupyter kernel with SIGKILL (no clean-up of any kind);
3. records every finished run's ``result.json`` (inode, mtime, sha256), starts the pipeline again and lets it finish;
4. checks that it finished, that none of those files was rewritten, and prints what was computed when.

Exit status 0 when nothing finished was lost or recomputed. The unit-level counterpart, which also checks that a
killed run resumes to exactly the uninterrupted result at every fault point, is ``tests/test_faults.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def scratch_copy(dst: Path) -> None:
    for name in ("aioli_repro", "notebooks", "scripts"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("executed", "__pycache__"))
    for name in ("pyproject.toml", "run_all.sh"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dst / name)
    (dst / "data").symlink_to(REPO / "data")


def finished_runs(runs: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for p in runs.glob("*/result.json"):
        try:
            st = p.stat()
            out[p.parent.name] = (st.st_ino, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        except FileNotFoundError:  # being renamed into place right now
            pass
    return out


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the Jupyter kernel runs in a session of its own)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def kill_tree(proc: subprocess.Popen) -> list[int]:
    victims = [proc.pid]
    frontier = [proc.pid]
    while frontier:
        kids = [c for p in frontier for c in children(p)]
        victims += kids
        frontier = kids
    for pid in reversed(victims):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    return victims


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke", help="smoke (default); quick and full take hours on a CPU")
    ap.add_argument("--only", nargs="+", default=["04"], help="notebooks to run (number prefixes)")
    ap.add_argument("--after", type=int, default=3, help="kill once this many training runs have finished")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed for each invocation")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copy (its path is printed)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="aioli-fault-check-"))
    scratch_copy(work / "repo")
    runs = work / "runs"
    env = {**os.environ, "AIOLI_RUNS": str(runs), "AIOLI_RESULT_CACHE": str(work / "result_cache"),
           "AIOLI_CACHE": os.environ.get("AIOLI_CACHE", str(REPO / ".cache")), "PYTHONPATH": str(work / "repo"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    env.pop("AIOLI_FAULT", None)
    cmd = [sys.executable, "-m", "aioli_repro.pipeline", "--profile", args.profile, "--only", *args.only]
    report: dict = {"scratch": str(work), "command": " ".join(cmd)}
    where = subprocess.run([sys.executable, "-c", "import aioli_repro; print(aioli_repro.__file__)"], env=env,
                           cwd=work / "repo", capture_output=True, text=True, check=True).stdout.strip()
    if not where.startswith(str(work)):  # an installed copy of the package would write into the checkout
        print(f"the scratch copy is not the package that gets imported ({where}); aborting", file=sys.stderr)
        return 2

    # ---- first invocation, killed
    t0 = time.time()
    with open(work / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=work / "repo", env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        while proc.poll() is None and len(finished_runs(runs)) < args.after and time.time() - t0 < args.timeout:
            time.sleep(0.2)
        if proc.poll() is not None:
            print(f"the pipeline ended (status {proc.returncode}) before {args.after} runs finished; see "
                  f"{work / 'first.log'}", file=sys.stderr)
            return 2
        killed = kill_tree(proc)
    time.sleep(1.0)  # let the kernel's last writes, if any were in flight, land (none may; SIGKILL is immediate)
    before = finished_runs(runs)
    unfinished = sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name not in before)
    report.update(killed_pids=killed, killed_after_s=round(time.time() - t0, 1), finished_before_kill=len(before),
                  unfinished_at_kill=unfinished)

    # ---- second invocation, to the end
    t1 = time.time()
    with open(work / "second.log", "w") as log:
        second = subprocess.run(cmd, cwd=work / "repo", env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=args.timeout)
    after = finished_runs(runs)
    rewritten = sorted(k for k, v in before.items() if after.get(k) != v)
    report.update(second_status=second.returncode, second_s=round(time.time() - t1, 1), finished_at_end=len(after),
                  computed_by_second=len(after) - len(before), recomputed=rewritten,
                  unfinished_then_completed=[u for u in unfinished if u in after])
    ok = second.returncode == 0 and not rewritten and len(after) > len(before)
    report["ok"] = ok
    print(json.dumps(report, indent=1))
    if not ok:
        print(f"FAILED; logs in {work}", file=sys.stderr)
    elif not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
