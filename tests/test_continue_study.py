"""scripts/continue_study.sh: runs the main job and commits only the run cache, in progress and at the end."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "continue_study.sh"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def repo(tmp_path):
    """A git repository with the script, a run cache holding one committed entry and an executed notebook."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / SCRIPT.name)
    (root / "results" / "run_cache").mkdir(parents=True)
    (root / "results" / "run_cache" / ("0" * 20 + ".json.gz")).write_bytes(b"old")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "nb.ipynb").write_text("done\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "empty")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    return root


def _run(repo: Path, *args: str, run_all: str, python: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIOLI_RUN_ALL": str(_executable(repo / "fake_run_all.sh", run_all)),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    if python:
        env["AIOLI_PYTHON"] = str(_executable(repo / "fake_python.sh", python))
    return subprocess.run(["bash", str(repo / "scripts" / SCRIPT.name), *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)


# The stand-in main job: records its arguments, finishes one run, half-writes a notebook, finishes another run
# after the first commit period, then exits with the code it is given.
FAKE_RUN_ALL = """#!/usr/bin/env bash
echo "$@" > args.txt
echo 1 > results/run_cache/{a}.json.gz
echo half > notebooks/nb.ipynb
sleep 4
echo 2 > results/run_cache/{b}.json.gz
exit {rc}
"""


def test_commits_finished_runs_in_progress_and_at_the_end_and_never_the_notebooks(repo):
    a, b = "a" * 20, "b" * 20
    proc = _run(repo, "--commit-every", "0.05", "--profile", "smoke", "--only", "10",
                run_all=FAKE_RUN_ALL.format(a=a, b=b, rc=0))
    assert proc.returncode == 0, proc.stderr
    assert (repo / "args.txt").read_text().split() == ["--profile", "smoke", "--only", "10"]
    messages = _git(repo, "log", "--format=%s").splitlines()
    assert messages[0] == "Run cache: 1 entries from run_all --profile smoke --only 10 (run_all exited with 0)"
    assert messages[1] == "Run cache: 1 entries from run_all --profile smoke --only 10 (in progress)"
    assert _git(repo, "show", "--name-only", "--format=", "HEAD~1").split() == [f"results/run_cache/{a}.json.gz"]
    assert _git(repo, "show", "--name-only", "--format=", "HEAD").split() == [f"results/run_cache/{b}.json.gz"]
    # The half-written notebook stays a change in the working tree, neither committed nor staged.
    status = _git(repo, "status", "--porcelain").splitlines()
    assert " M notebooks/nb.ipynb" in status
    assert all(line.startswith("??") for line in status if "notebooks/" not in line)


def test_the_main_jobs_exit_code_is_returned_and_its_runs_still_committed(repo):
    proc = _run(repo, "--commit-every", "60", run_all=FAKE_RUN_ALL.format(a="c" * 20, b="d" * 20, rc=3))
    assert proc.returncode == 3
    assert (repo / "args.txt").read_text().split() == ["--profile", "full", "--jobs", "2"]  # the default
    assert _git(repo, "log", "-1", "--format=%s") == (
        "Run cache: 2 entries from run_all --profile full --jobs 2 (run_all exited with 3)\n")


def test_zero_never_commits_and_legacy_entries_are_compressed_first(repo):
    (repo / "results" / "run_cache" / ("e" * 20 + ".json")).write_text("{}")
    proc = _run(repo, "--commit-every", "0", run_all=FAKE_RUN_ALL.format(a="f" * 20, b="9" * 20, rc=0),
                python='#!/usr/bin/env bash\necho "$AIOLI_RESULT_CACHE $@" > python_args.txt\n')
    assert proc.returncode == 0, proc.stderr
    assert _git(repo, "log", "-1", "--format=%s") == "start\n"
    cache_arg, *args = (repo / "python_args.txt").read_text().split()
    assert Path(cache_arg) == (repo / "results" / "run_cache").resolve() and args == ["-m", "aioli_repro", "cache",
                                                                                         "--compress"]


def test_commit_every_needs_a_number(repo):
    proc = _run(repo, "--commit-every", "soon", run_all=FAKE_RUN_ALL.format(a="1" * 20, b="2" * 20, rc=0))
    assert proc.returncode == 2 and "--commit-every needs minutes" in proc.stderr
    assert not (repo / "args.txt").exists()


def test_stopping_the_script_stops_the_main_jobs_whole_tree_even_a_child_in_its_own_session(repo):
    # The stand-in starts a grandchild in a new session, like the notebook kernel (and its pool workers) under
    # papermill, then waits; stopping the script must stop that grandchild too.
    run_all = """#!/usr/bin/env bash
setsid sleep 300 &
echo $! > grandchild.pid
wait
"""
    env = {**os.environ, "AIOLI_RUN_ALL": str(_executable(repo / "fake_run_all.sh", run_all))}
    proc = subprocess.Popen(["bash", str(repo / "scripts" / SCRIPT.name), "--commit-every", "0"], cwd=repo, env=env)
    pid_file = repo / "grandchild.pid"
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        time.sleep(0.1)
    grandchild = int(pid_file.read_text())
    proc.terminate()
    assert proc.wait(timeout=30) == 143
    for _ in range(100):
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.exists() and state.read_text().split()[2] == "Z")  # a zombie has exited


# A stand-in whose exit code depends on its arguments: "--only 99" fails.
STAGE_RUN_ALL = """#!/usr/bin/env bash
echo "$@" >> stages.txt
echo "$RANDOM$RANDOM" > "results/run_cache/$(echo "$@" | md5sum | cut -c1-20).json.gz"
[[ "$*" != *"--only 99"* ]]
"""


def test_stages_after_then_run_in_the_order_given_each_committed_and_a_failure_stops_the_queue(repo):
    proc = _run(repo, "--profile", "smoke", "--only", "11", "--then", "--profile", "smoke", "--only", "04",
                run_all=STAGE_RUN_ALL)
    assert proc.returncode == 0, proc.stderr
    assert (repo / "stages.txt").read_text().splitlines() == ["--profile smoke --only 11", "--profile smoke --only 04"]
    assert _git(repo, "log", "-2", "--format=%s").splitlines() == [
        "Run cache: 1 entries from run_all --profile smoke --only 04 (run_all exited with 0)",
        "Run cache: 1 entries from run_all --profile smoke --only 11 (run_all exited with 0)"]
    (repo / "stages.txt").unlink()
    proc = _run(repo, "--only", "99", "--then", "--only", "04", run_all=STAGE_RUN_ALL)
    assert proc.returncode == 1 and (repo / "stages.txt").read_text().splitlines() == ["--only 99"]


def test_a_commit_that_fails_does_not_stop_the_study_and_the_next_one_catches_up(repo):
    # Another git command holds the index lock through the first commit period (a merge, say): that commit fails;
    # the main job must go on, and the final commit takes both finished runs.
    run_all = """#!/usr/bin/env bash
echo 1 > results/run_cache/{a}.json.gz
touch .git/index.lock
sleep 5
rm .git/index.lock
echo 2 > results/run_cache/{b}.json.gz
"""
    a, b = "a" * 20, "b" * 20
    proc = _run(repo, "--commit-every", "0.05", run_all=run_all.format(a=a, b=b))
    assert proc.returncode == 0, proc.stderr
    assert "could not stage the run cache (in progress); trying again later" in proc.stderr
    assert _git(repo, "log", "-1", "--format=%s") == (
        "Run cache: 2 entries from run_all --profile full --jobs 2 (run_all exited with 0)\n")
    assert sorted(_git(repo, "show", "--name-only", "--format=", "HEAD").split()) == [
        f"results/run_cache/{a}.json.gz", f"results/run_cache/{b}.json.gz"]
