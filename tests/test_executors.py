"""Executors: the config, the local process pool, the Slurm backend through submitit's local executor (no cluster),
and two workers racing for the same run (computed once, the run cache intact)."""

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aioli_repro import hparams
from aioli_repro.config import DataConfig, ModelConfig, TrainConfig
from aioli_repro.errors import ConfigError
from aioli_repro.executor_config import ENV, ExecutorConfig, SlurmConfig, resolve
from aioli_repro.executors import NotCachedError, Runner, run_units
from aioli_repro.local_executors import InProcessExecutor, LocalPoolExecutor
from aioli_repro.profiles import PROFILES, Profile
from aioli_repro.run_cache import cache_entries, read_cache_entry
from aioli_repro.threads import init_worker

# The racing workers import this module: it does not import conftest, which would switch the workers' result cache off
# at import (tables is imported inside the test that needs it).
ASSETS = Path(__file__).parent / "assets"
TINY_CORPUS, TINY_TOKENIZER = ASSETS / "tiny_corpus", ASSETS / "tiny_tokenizer"

SETTING = hparams.Setting("tiny", "C/L", ("github", "wikipedia"), ("code", "licenses"))


def test_executor_config_from_strings_files_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert resolve() == ExecutorConfig()
    assert resolve(jobs=3).jobs == 3
    assert resolve("local:4").jobs == 4
    assert resolve("slurm-local").slurm.cluster == "local"
    spec = {"backend": "slurm", "slurm": {"partition": "gpu", "gpus": 1, "cpus": 16, "mem_gb": 64, "time_min": 600,
                                          "setup": ["module load cuda"], "extra": {"exclude": "node7"}}}
    f = tmp_path / "slurm.json"
    f.write_text(json.dumps(spec))
    cfg = resolve(str(f))
    assert (cfg.backend, cfg.slurm.partition, cfg.slurm.cpus, cfg.slurm.setup) == ("slurm", "gpu", 16,
                                                                                   ("module load cuda",))
    assert ExecutorConfig.from_dict(cfg.to_dict()) == cfg
    # The environment names the executor when the caller does not; a caller's --jobs still sets local workers.
    monkeypatch.setenv(ENV, str(f))
    assert resolve().backend == "slurm" and Runner().executor_config.slurm.partition == "gpu"
    monkeypatch.setenv(ENV, "local")
    assert resolve(jobs=2).jobs == 2
    assert resolve("local").jobs == 1  # an explicit executor wins over the environment
    for bad, match in [("local:x", "local:N"), ("mars", "is not local"), ({"backend": "k8s"}, "backend"),
                       ({"slurm": {"gpu": 1}}, "unknown executor option"), ({"jobs": 0}, "jobs")]:
        with pytest.raises(ConfigError, match=match):
            resolve(bad)
    with pytest.raises(ConfigError, match="jobs must be >= 1"):
        Runner(jobs=0)


# ------------------------------------------------------------------------------------------ a worker's threads
def test_a_pool_workers_initializer_loads_neither_numpy_nor_torch():
    """OpenBLAS and OpenMP size their thread pools when they load, so a worker sets its thread variables before
    either loads: unpickling its initializer in a fresh interpreter must import neither."""
    code = ("import pickle, sys; pickle.loads(bytes.fromhex(sys.argv[1])); "
            "print([m for m in ('numpy', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, pickle.dumps(init_worker).hex()], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def _threads_here():
    return os.environ["OMP_NUM_THREADS"], torch.get_num_threads(), ENV in os.environ


def test_pool_workers_run_with_the_thread_count_they_were_given(monkeypatch):
    monkeypatch.setenv(ENV, "local:2")  # the submitting process's executor choice never reaches its workers
    assert LocalPoolExecutor(jobs=2, threads=1).map(_threads_here, [(), ()], progress=False) == [("1", 1, False)] * 2


# ----------------------------------------------------------------------------------------------- the race
def _racing_train(cfg_dict, runs_dir, log, barrier, me):
    """One of two workers: wait until both are up, then train the same run; log every real training start."""
    import aioli_repro.train as tr
    from aioli_repro.config import RunConfig

    original = tr._train_locked

    def logged(*a, **k):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # hold the lock a little longer: the other worker surely arrives while it is held
        return original(*a, **k)

    tr._train_locked = logged
    Path(barrier, f"ready{me}").touch()
    deadline = time.time() + 60
    while len(list(Path(barrier).glob("ready*"))) < 2 and time.time() < deadline:
        time.sleep(0.01)
    return tr.train(RunConfig.from_dict(cfg_dict), runs_dir=runs_dir, progress=False)


def test_two_workers_racing_for_one_run_compute_it_once(tiny_cfg, tmp_path, monkeypatch):
    cache = tmp_path / "result_cache"
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(cache))  # the shared cache is written too (atomically)
    cfg = tiny_cfg(steps=12, checkpoint_every=4)
    runs, log, barrier = tmp_path / "runs", tmp_path / "starts.log", tmp_path / "barrier"
    barrier.mkdir()
    args = [(cfg.to_dict(), str(runs), str(log), str(barrier), i) for i in range(2)]
    a, b = LocalPoolExecutor(jobs=2).map(_racing_train, args, progress=False)
    assert len(log.read_text().split()) == 1  # claimed by one worker; the other waited, then read the result
    assert a == b
    run_dirs = [p for p in runs.iterdir() if p.is_dir()]
    assert len(run_dirs) == 1
    assert json.loads((run_dirs[0] / "result.json").read_text()) == a
    assert read_cache_entry(cache / f"{a['run_id'][:20]}.json.gz")["result"] == a
    assert not list(runs.rglob("*.tmp")) and not (run_dirs[0] / "checkpoint").exists()


def test_runner_trains_identical_configs_once_and_returns_results_in_order(tiny_cfg, tmp_path):
    calls = []

    class Recording(InProcessExecutor):  # an out-of-process executor's interface, run here (the pool is above)
        in_process = False

        def map(self, fn, args, keys=None, desc="runs", progress=True):
            calls.append(len(args))
            return super().map(fn, args)

    c1, c2 = tiny_cfg(steps=4, seed=1, checkpoint_every=0), tiny_cfg(steps=4, seed=2, checkpoint_every=0)
    runner = Runner(jobs=2, runs_dir=tmp_path / "runs", progress=False)
    runner._executor = Recording()
    r = runner.run([c1, c2, c1])
    assert calls == [2] and r[0] == r[2] and r[0]["run_id"] != r[1]["run_id"] and [x["seed"] for x in r] == [1, 2, 1]


def test_run_units_asks_for_a_shared_run_once_and_lists_unfinished_units_when_cached_only(tiny_cfg):
    c1, c2, c3 = (tiny_cfg(steps=4, seed=s, checkpoint_every=0) for s in (1, 2, 3))

    class Fake:  # returns each config's seed; cached_only: only seeds 1 and 2 have finished
        def __init__(self, cached_only):
            self.cached_only, self.asked = cached_only, []

        def run(self, cfgs):
            self.asked.append([c.train.seed for c in cfgs])
            if self.cached_only and any(c.train.seed == 3 for c in cfgs):
                raise NotCachedError("seed 3")
            return [{"seed": c.train.seed} for c in cfgs]

    runner = Fake(False)
    found, missing = run_units(runner, {"a": [c1, c2], "b": [c2, c3, c1]})
    assert runner.asked == [[1, 2, 3]] and missing == []
    assert {k: [r["seed"] for r in v] for k, v in found.items()} == {"a": [1, 2], "b": [2, 3, 1]}
    found, missing = run_units(Fake(True), {"a": [c1, c2], "b": [c2, c3]})
    assert list(found) == ["a"] and missing == ["b"]


# ----------------------------------------------------------------------------------------------- Slurm path
@pytest.fixture
def cpu_tiny_profile(monkeypatch):
    monkeypatch.setitem(hparams.SETTINGS, SETTING.key, SETTING)
    PROFILES["_tiny_cpu"] = Profile(
        "_tiny_cpu", "tests", DataConfig(corpus=str(TINY_CORPUS), tokenizer=str(TINY_TOKENIZER), context_length=32,
                                         val_fraction=0.2, test_fraction=0.2),
        ModelConfig("tiny"),
        TrainConfig(steps=12, batch_size=8, micro_batch_size=8, warmup_steps=3, eval_every=6, checkpoint_every=0,
                    eval_sequences=4, eval_batch_size=32, lr=3e-3, device="cpu"))
    yield "_tiny_cpu"
    PROFILES.pop("_tiny_cpu")


def test_slurm_backend_through_submitit_local_one_job_per_run(cpu_tiny_profile, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from aioli_repro.tables import run_grid

    cache = tmp_path / "result_cache"
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(cache))  # forwarded to the jobs
    runs = tmp_path / "runs"
    ex = ExecutorConfig(backend="slurm", slurm=SlurmConfig(cluster="local", gpus=0, cpus=1, time_min=5))
    df = run_grid(["stratified", "aioli"], [SETTING.key], cpu_tiny_profile, seeds=[0], runs_dir=runs, executor=ex,
                  progress=False)
    assert list(df.method) == ["aioli", "stratified"] and df.avg_test_perplexity.notna().all()
    assert len(_job_folders(runs)) == 2  # one job per run
    assert len(cache_entries(cache)) == 2  # each job wrote its result into the shared cache
    # Again, plus a duplicate: finished runs are found before submitting, so no job starts.
    runner = Runner(runs_dir=runs, progress=False, executor=ex)
    strat = runner.run_one(_strat_cfg(cpu_tiny_profile), keep_model=True)
    assert runner.executor.submitted == 0 and strat["run_id"] == df[df.method == "stratified"].run_id.item()
    assert len(_job_folders(runs)) == 2


def _job_folders(runs):
    return [p for p in (runs / "_submitit").iterdir() if p.is_dir() and p.name != "%j"]


def _strat_cfg(profile):
    from aioli_repro.profiles import profile_config

    return profile_config(profile, SETTING.groups, "stratified", 0, name="stratified")


def test_slurm_backend_submits_a_run_two_callers_need_at_once_one_time(tmp_path):
    pytest.importorskip("submitit")
    from aioli_repro.slurm import SlurmExecutor

    ex = SlurmExecutor(SlurmConfig(cluster="local", gpus=0, cpus=1, time_min=5), tmp_path / "jobs")
    a, b, c = ex.submit(os.getpid, (), key="run-a"), ex.submit(os.getpid, (), key="run-a"), ex.submit(os.getpid, ())
    assert a is b and ex.submitted <= 2
    assert a.result(timeout=120) != c.result(timeout=120) and ex.submitted == 2  # two jobs, each its own process


def test_slurm_config_becomes_the_sbatch_header(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from aioli_repro.slurm import SlurmExecutor

    fake = tmp_path / "bin"  # submitit only checks that srun exists; nothing is submitted
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    cfg = SlurmConfig(partition="gpu", gpus=1, cpus=16, mem_gb=48, time_min=600, account="lab",
                      setup=("source .venv/bin/activate",), extra={"exclude": "node7"})
    text = SlurmExecutor(cfg, tmp_path / "jobs")._ex._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=16", "--mem=48GB", "--time=600",
                 "--account=lab", "--exclude=node7", "source .venv/bin/activate"):
        assert line in text, line


def _fake_commands(tmp_path, monkeypatch, **scripts):
    """Executables named after the keyword arguments (``srun``, ``sacct``, ``squeue``), each a shell script."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")


def test_without_accounting_job_states_come_from_squeue_and_are_exact(tmp_path, monkeypatch):
    """Where sacct fails (no slurmdbd), the states come from squeue: a job still starting (CONFIGURING) or requeued
    and held is not over, one squeue no longer lists (ended, then purged) is, and nothing is logged as a warning.
    (submitit's own sacct reader warns at every poll there, and never sees a cancelled job end.)"""
    pytest.importorskip("submitit")
    from aioli_repro import slurm

    _fake_commands(tmp_path, monkeypatch, srun="exit 0", sacct="echo 'Slurm accounting storage is disabled' >&2; exit 1",
                   squeue="printf '11|RUNNING|vm\\n12|CONFIGURING|vm\\n13|REQUEUE_HOLD|\\n14|CANCELLED|vm\\n'")
    monkeypatch.setattr(slurm, "_STATUS_READER", [])
    ex = slurm.SlurmExecutor(SlurmConfig(gpus=0, cpus=1), tmp_path / "jobs")
    assert ex.status_reader == "squeue"
    watcher = type(ex._ex._executor.job_class.watcher)(delay_s=60)  # a fresh one: the class-level one is shared
    for job_id in ("11", "12", "13", "14", "15"):
        watcher.register_job(job_id)
    watcher.update()
    assert {j: (watcher.get_state(j, mode="cache"), watcher.is_done(j, mode="cache"))
            for j in ("11", "12", "13", "14", "15")} == {
        "11": ("RUNNING", False), "12": ("CONFIGURING", False), "13": ("REQUEUE_HOLD", False),
        "14": ("CANCELLED", True), "15": (slurm.GONE, True)}
    # squeue answers "Invalid job id" when it knows none of the ids asked for: all of them have ended.
    _fake_commands(tmp_path, monkeypatch, squeue="echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1")
    watcher.update()
    assert watcher.get_state("11", mode="cache") == slurm.GONE


def test_a_restarted_submitter_waits_for_the_job_an_earlier_one_left_running(tmp_path, monkeypatch):
    """A run's job is named after the run (and the job folder); a new executor asked for that run finds the job
    still queued or running by that name and waits for it instead of submitting the run again."""
    pytest.importorskip("submitit")
    from aioli_repro import slurm

    name = slurm._job_name("run-a", tmp_path / "jobs")
    _fake_commands(tmp_path, monkeypatch, srun="exit 0", sacct="exit 0",
                   squeue=f'case "$*" in *--name={name}*) echo "42|RUNNING";; *) echo "43|COMPLETED";; esac')
    monkeypatch.setattr(slurm, "_STATUS_READER", [])
    ex = slurm.SlurmExecutor(SlurmConfig(gpus=0, cpus=1), tmp_path / "jobs")
    assert ex.status_reader == "sacct"  # accounting answers: submitit's own reader (with the complete state list)
    job = ex._live_job("run-a")
    assert job.job_id == "42" and job.paths.folder == tmp_path / "jobs" / "42"
    assert ex._live_job("run-b") is None  # its name's only job has ended: submit it again
    assert ex._live_job(None) is None
