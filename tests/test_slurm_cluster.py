"""The Slurm executor against a real one-node cluster (slurmctld + slurmd + munged on this machine), started by
``scripts/slurm_local_cluster.sh``: a study slice as Slurm jobs equals the in-process one; a job requeued mid-run
(at its time limit, and killed and requeued as a preemption does) ends with exactly the uninterrupted result; a
killed submitting process, restarted, submits only what is neither finished nor still queued; a cancelled or failing
job stops the study with an error naming the job and its log, and the finished runs stay; a job's process preloads
tcmalloc where the node has it, and not under ``AIOLI_MALLOC=system``.

The cluster needs root and apt (the script installs Slurm from the distribution on first use): elsewhere the module
is skipped with the script's reason. ``AIOLI_SLURM_TESTS=0`` skips it on purpose; ``AIOLI_SLURM_TESTS=require`` makes
a cluster that cannot start a failure instead of a skip. The cluster is started once per test session; if this
session started it, it is stopped at the end (one that was already up is left running).

Every run is tiny (the conftest corpus and model, one CPU per job); the jobs import this module to run
:func:`slow_train`, so it imports nothing from conftest (which would switch settings at import).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aioli_repro import allocator, hparams
from aioli_repro.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from aioli_repro.executor_config import ExecutorConfig, SlurmConfig
from aioli_repro.executors import Runner, cached_result
from aioli_repro.profiles import PROFILES, Profile
from aioli_repro.slurm import SlurmExecutor
from aioli_repro.train import train

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_local_cluster.sh"
ASSETS = REPO / "tests" / "assets"
SETTING = hparams.Setting("tiny_slurm", "C/L", ("github", "wikipedia"), ("code", "licenses"))
COMPARED = ("val_loss", "test_loss", "policy", "final_train_loss", "steps", "train_tokens", "run_id")

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------------------------- the cluster
def _status_up() -> bool:
    return subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster():
    """The one-node cluster, up; skips the tests (with the script's reason) where it cannot start."""
    mode = os.environ.get("AIOLI_SLURM_TESTS", "auto").lower()
    if mode in ("0", "off", "no", "false"):
        pytest.skip("AIOLI_SLURM_TESTS=0")
    was_up = os.geteuid() == 0 and _status_up()
    t0 = time.time()
    try:
        out = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
        rc, text = out.returncode, out.stdout + out.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        rc, text = -1, str(e)
    if rc != 0:
        reason = text.strip().splitlines()[-1:] or ["no output"]
        msg = f"no one-node Slurm cluster (scripts/slurm_local_cluster.sh start, exit {rc}): {reason[0]}"
        if mode == "require":
            pytest.fail(msg + "\n" + text)
        pytest.skip(msg)
    print(f"\n[slurm] {out.stdout.strip().splitlines()[-1]} (script: {time.time() - t0:.1f} s)")
    yield
    if not was_up:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)


@pytest.fixture
def cluster(slurm_cluster, monkeypatch, tmp_path):
    """Per test: jobs import this module (``tests`` must be importable in them), and whatever a test leaves queued is
    cancelled at its end."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("AIOLI_RESULT_CACHE", "off")
    yield tmp_path
    for folder in tmp_path.rglob("_submitit"):
        ids = [p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True)


def slurm(**kw) -> ExecutorConfig:
    """One CPU, 1 GB and a few minutes per job: two jobs at a time on a 2-core node."""
    return ExecutorConfig(backend="slurm", slurm=SlurmConfig(**{"gpus": 0, "cpus": 1, "mem_gb": 1, "time_min": 5,
                                                                **kw}))


def tiny_run(steps=24, seed=0, name="slurm", checkpoint_every=0, **method) -> RunConfig:
    return RunConfig(
        data=DataConfig(groups=SETTING.groups, corpus=str(ASSETS / "tiny_corpus"), tokenizer=str(ASSETS / "tiny_tokenizer"),
                        context_length=32, val_fraction=0.2, test_fraction=0.2),
        model=ModelConfig("tiny"),
        train=TrainConfig(steps=steps, batch_size=8, micro_batch_size=8, warmup_steps=3, eval_every=8,
                          checkpoint_every=checkpoint_every, eval_sequences=4, eval_batch_size=32, lr=3e-3, seed=seed,
                          device="cpu"),
        name=name, **method)


def slow_train(cfg_dict: dict, runs_dir: str, pause_s: float, trace: str) -> dict:
    """What the requeue test's job runs: one training run that appends "<pid> <step>" to ``trace`` after each step,
    then sleeps ``pause_s`` (so the test can act mid-run; the result does not depend on it)."""
    def on_step(step: int) -> None:
        with open(trace, "a") as f:
            f.write(f"{os.getpid()} {step}\n")
        time.sleep(pause_s)

    return train(RunConfig.from_dict(cfg_dict), runs_dir=runs_dir, progress=False, on_step=on_step)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.1, job=None):
    """Poll ``predicate`` until it is true; a ``job`` future that ends first raises its error (or fails the test)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (value := predicate()):
            return value
        if job is not None and job.done():
            job.result()  # a failed job raises here, naming its log
            raise AssertionError(f"the job ended before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def job_folders(runs: Path) -> list[Path]:
    return sorted((p for p in (runs / "_submitit").iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))


def squeue(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "--states=all", "-o", "%T", "-j", job_id], capture_output=True,
                          text=True).stdout.strip()


def release_requeued(job_id: str, trace: Path) -> None:
    """Slurm makes a requeued job eligible only 2 minutes later (EligibleTime = requeue + 121 s, fixed in slurmctld);
    the test makes it eligible sooner, as an administrator can: once the job is back in the queue and its last
    process (the last pid in ``trace``) has exited, plus a second, since slurmd refuses a launch whose credential
    dates from the second the previous one was revoked in ("Job credential revoked")."""
    wait_for(lambda: squeue(job_id) == "PENDING", 60, f"job {job_id} back in the queue")
    pid = int(trace.read_text().split()[-2])
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60, f"the end of the job's process {pid}")
    time.sleep(1.5)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def checkpoint_step(runs: Path) -> int:
    states = list(runs.glob("*/checkpoint/state.json"))
    try:
        return max(json.loads(p.read_text())["step"] for p in states) if states else 0
    except (OSError, ValueError, KeyError):  # being replaced right now
        return 0


def results(runs: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/result.json")}


@pytest.fixture
def tiny_slurm_profile(monkeypatch):
    monkeypatch.setitem(hparams.SETTINGS, SETTING.key, SETTING)
    PROFILES["_tiny_slurm"] = Profile(
        "_tiny_slurm", "tests", tiny_run().data, ModelConfig("tiny"),
        TrainConfig(steps=16, batch_size=8, micro_batch_size=8, warmup_steps=3, eval_every=8, checkpoint_every=0,
                    eval_sequences=4, eval_batch_size=32, lr=3e-3, device="cpu"))
    yield "_tiny_slurm"
    PROFILES.pop("_tiny_slurm")


# ------------------------------------------------------------------------------------------------------ 1. tables
def test_a_study_slice_as_slurm_jobs_equals_the_in_process_study(cluster, tiny_slurm_profile, caplog,
                                                                 one_torch_thread):
    """The stratified baseline and Aioli, every training run a Slurm job: the same rows and Table 2 as the same
    studies run in this process, the same tables, one job per run, and no warning from submitit (its job states are exact without
    accounting). (Grid search would add its 9-run sweep: 11 jobs of about 9 s each on 2 busy cores, 80 s.)"""
    from aioli_repro.tables import differences, group_tradeoffs, run_grid

    methods = ["stratified", "aioli"]
    local = run_grid(methods, [SETTING.key], tiny_slurm_profile, seeds=[0], runs_dir=cluster / "local",
                     executor="local", progress=False)
    with caplog.at_level(logging.INFO, logger="submitit"):
        on_slurm = run_grid(methods, [SETTING.key], tiny_slurm_profile, seeds=[0], runs_dir=cluster / "slurm",
                            executor=slurm(), progress=False)
    assert on_slurm.drop(columns="label").equals(local.drop(columns="label"))
    for table in (differences, group_tradeoffs):  # the study's tables (Table 2 itself knows only the paper's settings)
        assert table(on_slurm).equals(table(local)), table.__name__
    n_runs = len(results(cluster / "local"))
    assert len(job_folders(cluster / "slurm")) == n_runs == len(results(cluster / "slurm"))  # one job per run
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# ----------------------------------------------------------------------------------------------- 2. requeue
def test_a_requeued_job_resumes_from_its_checkpoint_to_the_uninterrupted_result(cluster, one_torch_thread):
    """One job, interrupted twice: at step >= 8 Slurm's time-limit signal (USR2, what ``--signal=USR2@90`` sends;
    submitit checkpoints the call and requeues it with ``scontrol requeue``), then at step >= 20 ``scontrol requeue``
    from outside (killed and put back in the queue, as a preemption does). Same job id throughout; each start resumes
    from the last checkpoint; the result is exactly that of the run trained here without interruption."""
    cfg = tiny_run(steps=60, checkpoint_every=4, name="requeued")
    runs = cluster / "runs"
    ex = SlurmExecutor(slurm().slurm, runs / "_submitit")
    trace = cluster / "steps.log"
    fut = ex.submit(slow_train, (cfg.to_dict(), str(runs), 0.2, str(trace)), key="requeued")
    reference = train(cfg, runs_dir=cluster / "reference", progress=False)  # while the job starts
    job_id = wait_for(lambda: getattr(fut, "job", None), 60, "the submission").job_id

    wait_for(lambda: checkpoint_step(runs) >= 8, 120, "a checkpoint at step >= 8", job=fut)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    log = runs / "_submitit" / job_id / f"{job_id}_0_log.out"
    wait_for(lambda: log.exists() and "Requeued job" in log.read_text(), 60, "submitit's requeue", job=fut)
    release_requeued(job_id, trace)
    first = checkpoint_step(runs)
    wait_for(lambda: checkpoint_step(runs) >= max(20, first + 8), 120, "the requeued job's checkpoints", job=fut)
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    release_requeued(job_id, trace)

    result = fut.result(timeout=240)
    assert {k: result[k] for k in COMPARED} == {k: reference[k] for k in COMPARED}
    assert json.loads(next(runs.glob("*/result.json")).read_text()) == result
    # Three processes trained: steps 1.., then each restart from one past a checkpoint (a multiple of 4) it had
    # reached, to the end; the steps after that checkpoint that the killed process had done are done again.
    starts: dict[str, list[int]] = {}
    for line in trace.read_text().split("\n")[:-1]:
        pid, step = line.split()
        starts.setdefault(pid, []).append(int(step))
    firsts = [steps[0] for steps in starts.values()]
    assert len(starts) == 3 and firsts[0] == 1 and all(f % 4 == 1 for f in firsts), firsts
    assert 8 < firsts[1] < firsts[2] < cfg.train.steps and list(starts.values())[-1][-1] == cfg.train.steps
    restarts = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "Restarts=2" in restarts, restarts
    assert ex.submitted == 1


# ---------------------------------------------------------------------------------- 3. killed submitting process
SUBMITTER = """
import sys
from aioli_repro.executors import Runner
from tests.test_slurm_cluster import slurm, tiny_run
runs = sys.argv[1]
Runner(runs_dir=runs, progress=False, executor=slurm(max_parallel=1)).run([tiny_run(200, seed=s) for s in range(3)])
"""


def test_a_killed_submitter_restarted_submits_only_runs_neither_finished_nor_queued(cluster):
    """Three runs, one job at a time. The submitting process is killed (SIGKILL) once the first run has finished and
    the second one's job is running. The restart finds the first run finished (no job), waits for the second one's
    job that is still running (found by its job name) and submits the third: three jobs in all, each run trained
    once, from step 0 (no resume)."""
    runs = cluster / "runs"
    cfgs = [tiny_run(200, seed=s) for s in range(3)]
    proc = subprocess.Popen([sys.executable, "-c", SUBMITTER, str(runs)], cwd=REPO)
    try:
        wait_for(lambda: len(results(runs)) == 1 and len(job_folders(runs)) == 2
                 and squeue(job_folders(runs)[1].name) == "RUNNING", 180, "run 1 done and run 2's job running")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    in_flight = job_folders(runs)[1].name
    assert squeue(in_flight) == "RUNNING" and len(results(runs)) == 1

    runner = Runner(runs_dir=runs, progress=False, executor=slurm(max_parallel=1))
    out = runner.run(cfgs)
    assert (runner.executor.submitted, runner.executor.adopted) == (1, 1)
    jobs = [p.name for p in job_folders(runs)]
    assert len(jobs) == 3 and len(results(runs)) == 3 == len({r["run_id"] for r in out})  # one job per run
    def names():
        out = subprocess.run(["squeue", "-h", "--states=all", "-o", "%j %T", "-j", ",".join(jobs)],
                             capture_output=True, text=True).stdout.split("\n")[:-1]
        return out if all(n.endswith(" COMPLETED") for n in out) else None

    assert len({n.split()[0] for n in wait_for(names, 60, "the jobs' end")}) == 3  # three runs, three job names


# ---------------------------------------------------------------------------------- 4. cancelled or failing job
def test_a_cancelled_or_failing_job_stops_the_study_naming_the_job_and_its_log(cluster, monkeypatch):
    """A study of a short and a long run: the long run's job is cancelled (scancel) after the short run finished.
    Then a study whose job dies (SIGKILL at step 3: no result pickle, only the cluster's state says it ended). Both
    raise an error naming the job, its state and its log; the finished run is kept (a restart reads it)."""
    runs = cluster / "runs"
    short, long = tiny_run(16, seed=0, name="short"), tiny_run(100_000, seed=1, name="long")
    runner = Runner(runs_dir=runs, progress=False, executor=slurm())

    box: dict = {}
    study = threading.Thread(target=lambda: box.setdefault("error", _raises(lambda: runner.run([short, long]))))
    study.start()
    wait_for(lambda: len(results(runs)) == 1 and len(job_folders(runs)) == 2, 120, "the short run's result")
    long_job = next(p.name for p in job_folders(runs) if not (p / f"{p.name}_result.json").exists())
    assert squeue(long_job) == "RUNNING"
    subprocess.run(["scancel", long_job], check=True)
    study.join(120)
    err = box.get("error")
    assert isinstance(err, RuntimeError), err
    log = runs / "_submitit" / long_job / f"{long_job}_0_log.err"
    assert f"Slurm job {long_job} ended without a result (CANCELLED); its log: {log}" in str(err)
    assert cached_result(short, runs) is not None
    assert Runner(runs_dir=runs, progress=False, cached_only=True).run([short])[0]["run_id"] == cached_result(
        short, runs)["run_id"]

    monkeypatch.setenv("AIOLI_FAULT", "step:3")  # forwarded to the job: SIGKILL after step 3
    failing = Runner(runs_dir=runs, progress=False, executor=slurm())
    with pytest.raises(RuntimeError, match=r"Slurm job (\d+) ended without a result \(FAILED\); its log: ") as e:
        failing.run([tiny_run(16, seed=2, name="killed")])
    job = re.search(r"Slurm job (\d+)", str(e.value)).group(1)
    assert str(runs / "_submitit" / job / f"{job}_0_log.err") in str(e.value)
    assert cached_result(short, runs) is not None


def _raises(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - handed to the test
        return e
    return None


# ------------------------------------------------------------------------------------------------ 5. allocator
def loaded_allocator() -> list[str]:
    """What the allocator test's job runs: the tcmalloc libraries mapped into the job's own process."""
    with open("/proc/self/maps") as f:
        return sorted({line.split()[-1] for line in f if "tcmalloc" in line})


def test_a_jobs_process_preloads_tcmalloc_where_the_node_has_it_unless_told_not_to(cluster, monkeypatch):
    """The job script searches the node for the library (allocator.job_setup_lines), as local pool workers do."""
    lib = allocator.find_tcmalloc()
    if lib is None and not os.environ.get("AIOLI_REQUIRE_TCMALLOC"):
        pytest.skip("no tcmalloc here (apt-get install libtcmalloc-minimal4)")
    monkeypatch.delenv("LD_PRELOAD", raising=False)  # Slurm passes the submitter's environment on to the job
    for setting, expected in (("auto", [os.path.realpath(lib)]), ("system", [])):
        monkeypatch.setenv(allocator.ENV, setting)
        ex = SlurmExecutor(slurm().slurm, cluster / setting / "_submitit")
        assert ex.map(loaded_allocator, [()], progress=False) == [expected], setting
