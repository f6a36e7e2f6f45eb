"""Where independent training runs execute: in this process, in a local pool of processes, or as Slurm jobs.

Runs (sweep points, proxies, finals, children of a branch) are independent and idempotent: a run is named by the hash
of its config, its directory is locked (``flock``) while one process computes it, its result is written with atomic
renames, and an interrupted run resumes from its last checkpoint (``runs.py``). So an executor may run any set of
runs in any order and on any machine that sees the same run directory: a run asked for twice at once is computed
once (the second worker waits on the lock, then reads the result), and a job killed half-way leaves a checkpoint that
its next attempt resumes from.

Backends (:class:`ExecutorConfig`):

``local``
    ``jobs`` = 1 runs in this process. ``jobs`` = N > 1 runs N worker processes (spawned, so CUDA works in each),
    each with ``threads`` torch threads (default: cores // N, so one thread per worker when N = cores). On one GPU
    machine every worker shares the GPU: one process per run, many runs at a time.
``slurm``
    One Slurm job per run through ``submitit`` (partition, GPUs, CPUs, memory, time limit in :class:`SlurmConfig`).
    Jobs write into the shared run directory and the shared result cache, so the submitting process (and every
    later one) reads their results from there; ``submitit`` also returns them. A job that reaches its time limit is
    requeued and resumes from its checkpoint. A job is named after its run, so a restarted submitting process waits
    for a run's job that is still queued or running instead of submitting the run again. Job states come from
    ``sacct`` where Slurm's accounting answers, else from ``squeue`` (see :func:`slurm_status_reader`).
    ``SlurmConfig.cluster = "local"`` runs the same code path through ``submitit``'s local executor on this machine
    (no cluster needed); ``scripts/slurm_local_cluster.sh`` starts a real one-node cluster (``tests/test_slurm_cluster.py``).

Which executor: an explicit ``executor`` argument (an :class:`ExecutorConfig`, a dict, or a string), else the
``AIOLI_EXECUTOR`` environment variable, else ``local`` with the ``jobs`` the caller passed. Strings: ``local``,
``local:N``, ``slurm``, ``slurm-local``, a JSON object, or the path of a JSON file holding one, e.g.::

    {"backend": "slurm", "slurm": {"partition": "gpu", "gpus": 1, "cpus": 8, "mem_gb": 48, "time_min": 360,
                                   "setup": ["source /path/to/aioli-repro/.venv/bin/activate"]}}

so ``AIOLI_EXECUTOR=slurm.json ./run_all.sh --profile paper`` runs the notebooks' training runs on the cluster.

Studies never pick an executor themselves: they hand configs to a :class:`Runner`, which resolves the executor once,
trains each distinct config once, and with ``cached_only`` only reads the run cache.

Cross-machine locking relies on ``flock`` over the shared file system: NFSv4 and most cluster file systems support it
(Lustre needs the ``flock`` mount option); without it, two jobs could compute the same run at once (each still writes
a complete result atomically, so nothing is corrupted, but GPU time is wasted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import allocator
from .config import RunConfig, base_groups, canonical_json, run_id
from .corpus import open_source
from .errors import ConfigError
from .model import resolve_device
from .paths import atomic_write_json
from .runs import RunDir, default_runs_dir
from .threads import init_worker, set_threads
from .tokenizer import load_tokenizer, tokenizer_fingerprint
from .train import train

ENV = "AIOLI_EXECUTOR"
# Environment a job inherits from the submitting process (caches, run cache, offline switches, fault injection).
_FORWARDED_ENV_PREFIXES = ("AIOLI_", "HF_", "TOKENIZERS_", "TRANSFORMERS_")


@dataclass
class SlurmConfig:
    """One Slurm job per run, through submitit."""

    partition: str = ""
    """Slurm partition (``--partition``); empty: the cluster's default."""
    gpus: int = 1
    """GPUs per job (``--gpus-per-node``). One run uses one device."""
    cpus: int = 8
    """CPU cores per job (``--cpus-per-task``); also the job's torch thread count."""
    mem_gb: float = 32.0
    """Host memory per job in GB (``--mem``). A Pythia-160M run needs about 6 GB plus the page cache of its tokens."""
    time_min: int = 360
    """Time limit per job in minutes (``--time``). A job that hits it is requeued and resumes from its checkpoint."""
    account: str = ""
    """``--account``, if the cluster needs one."""
    qos: str = ""
    """``--qos``, if the cluster needs one."""
    constraint: str = ""
    """``--constraint`` (e.g. a GPU type), if any."""
    max_parallel: int = 0
    """At most this many jobs queued or running at once from this process (0: no cap)."""
    setup: tuple[str, ...] = ()
    """Shell lines run before each job (``module load ...``, ``source .venv/bin/activate``)."""
    folder: str = ""
    """Where submitit keeps job scripts, pickles and logs; empty: ``<runs_dir>/_submitit``."""
    cluster: str = "slurm"
    """``slurm``, or ``local``: the same code path through submitit's local executor on this machine (tests)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further sbatch options, passed as submitit's ``slurm_additional_parameters`` (e.g. ``{"exclude": "node7"}``)."""
    max_requeues: int = 3
    """How often a job that reached its time limit or was preempted is requeued (it resumes from its checkpoint)."""


@dataclass
class ExecutorConfig:
    """Which backend executes independent runs, and its settings."""

    backend: str = "local"
    """``local`` (this machine) or ``slurm`` (one Slurm job per run)."""
    jobs: int = 1
    """local: runs executed at once, each in its own process (1: in this process)."""
    threads: int = 0
    """local: torch threads per worker process; 0: cores // jobs (at least 1)."""
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    """slurm: the job resources."""

    def validate(self) -> ExecutorConfig:
        if self.backend not in ("local", "slurm"):
            raise ConfigError(f"executor backend must be 'local' or 'slurm', got {self.backend!r}")
        if int(self.jobs) < 1:
            raise ConfigError(f"jobs must be >= 1, got {self.jobs}")
        if int(self.threads) < 0:
            raise ConfigError(f"executor threads must be >= 0, got {self.threads}")
        s = self.slurm
        if s.cluster not in ("slurm", "local"):
            raise ConfigError(f"slurm.cluster must be 'slurm' or 'local', got {s.cluster!r}")
        for name in ("gpus", "max_parallel", "max_requeues"):
            if int(getattr(s, name)) < 0:
                raise ConfigError(f"slurm.{name} must be >= 0, got {getattr(s, name)!r}")
        for name in ("cpus", "time_min"):
            if int(getattr(s, name)) < 1:
                raise ConfigError(f"slurm.{name} must be >= 1, got {getattr(s, name)!r}")
        if not s.mem_gb > 0:
            raise ConfigError(f"slurm.mem_gb must be positive, got {s.mem_gb!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExecutorConfig:
        d = dict(d)
        slurm = dict(d.pop("slurm", {}) or {})
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        unknown_s = set(slurm) - {f.name for f in dataclasses.fields(SlurmConfig)}
        if unknown or unknown_s:
            raise ConfigError(f"unknown executor option(s) {sorted(unknown) + [f'slurm.{k}' for k in sorted(unknown_s)]}")
        if "setup" in slurm:
            slurm["setup"] = tuple(slurm["setup"])
        return cls(slurm=SlurmConfig(**slurm), **d).validate()

    @classmethod
    def parse(cls, text: str) -> ExecutorConfig:
        """``local``, ``local:N``, ``slurm``, ``slurm-local``, a JSON object, or a path to a JSON file."""
        text = text.strip()
        if text == "local":
            return cls()
        if text.startswith("local:"):
            try:
                return cls(jobs=int(text.split(":", 1)[1])).validate()
            except ValueError:
                raise ConfigError(f"expected local:N with an integer N, got {text!r}") from None
        if text == "slurm":
            return cls(backend="slurm").validate()
        if text == "slurm-local":
            return cls(backend="slurm", slurm=SlurmConfig(cluster="local", gpus=0, cpus=1)).validate()
        if text.startswith("{"):
            return cls.from_dict(json.loads(text))
        path = Path(text)
        if path.is_file():
            return cls.from_dict(json.loads(path.read_text()))
        raise ConfigError(f"{ENV}/executor {text!r} is not local, local:N, slurm, slurm-local, a JSON object or a "
                          "JSON file")


def resolve(executor: ExecutorConfig | dict | str | None = None, jobs: int = 1) -> ExecutorConfig:
    """The executor a caller asked for: explicit > ``$AIOLI_EXECUTOR`` > local with ``jobs`` workers."""
    if int(jobs) < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    if isinstance(executor, ExecutorConfig):
        return executor.validate()
    if isinstance(executor, dict):
        return ExecutorConfig.from_dict(executor)
    if isinstance(executor, str):
        return ExecutorConfig.parse(executor)
    if executor is not None:
        raise ConfigError(f"executor must be an ExecutorConfig, a dict or a string, got {type(executor).__name__}")
    if os.environ.get(ENV):
        cfg = ExecutorConfig.parse(os.environ[ENV])
        if cfg.backend == "local" and jobs > 1:  # the caller's --jobs wins over the environment's local default
            cfg = dataclasses.replace(cfg, jobs=int(jobs))
        return cfg
    return ExecutorConfig(jobs=int(jobs)).validate()


def available_cores() -> int:
    """Cores this process may use (a Slurm job's allocation, not the node's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(jobs: int) -> int:
    return max(1, available_cores() // max(1, jobs))


def _forwarded_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV_PREFIXES)}
    env["AIOLI_WAIT_FOR_LOCKS"] = "1"  # a run another worker is computing is waited for, never started twice
    env.pop(ENV, None)  # a worker trains its run itself; it never submits further jobs
    return env


class Executor:
    """Maps a picklable module-level function over argument tuples; results come back in order."""

    in_process = False
    local = True

    def map(self, fn: Callable, args: Sequence[tuple], keys: Sequence[str] | None = None, desc: str = "runs",
            progress: bool = True) -> list[Any]:
        raise NotImplementedError

    @property
    def workers(self) -> int:
        return 1


class InProcessExecutor(Executor):
    in_process = True

    def map(self, fn, args, keys=None, desc="runs", progress=True):
        return [fn(*a) for a in args]


def _progress(it, total: int, desc: str, progress: bool):
    if not progress:
        return it
    return tqdm(it, total=total, desc=desc, unit="run")


class LocalPoolExecutor(Executor):
    """``jobs`` spawned worker processes on this machine, ``threads`` torch threads each."""

    def __init__(self, jobs: int, threads: int = 0):
        self.jobs, self.threads = jobs, threads or default_threads(jobs)

    @property
    def workers(self) -> int:
        return self.jobs

    def map(self, fn, args, keys=None, desc="runs", progress=True):
        args = list(args)
        if not args:
            return []
        results: list[Any] = [None] * len(args)
        # The initializer sets the worker's threads before anything loads numpy or torch (see threads.py); ENV is
        # unset there because a worker trains its runs itself, it never starts executors of its own.
        # Workers start while the pool runs (spawned on demand), each with tcmalloc preloaded where the machine has
        # it: same numbers, less time in the kernel (see allocator.py).
        with allocator.for_children():
            pool = ProcessPoolExecutor(min(self.jobs, len(args)), mp_context=mp.get_context("spawn"),
                                       initializer=init_worker, initargs=(self.threads, _forwarded_env(), (ENV,)))
            try:
                futures = {pool.submit(fn, *a): i for i, a in enumerate(args)}
                for fut in _progress(as_completed(futures), len(futures), f"{desc} on {self.jobs} workers",
                                     progress):
                    results[futures[fut]] = fut.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # running runs finish (their locks stay consistent)
                raise
            pool.shutdown(wait=True)
        return results


class _Job:
    """What a Slurm job executes: the forwarded environment, the thread count, then ``fn(*args)``. Its
    ``checkpoint`` tells submitit to requeue the same call when Slurm signals the time limit (``--signal=USR2@90``);
    the run then resumes from its last checkpoint. A job Slurm kills and requeues itself (``scontrol requeue``, a
    preemption in requeue mode) reruns the same call from its pickle, and the run resumes the same way."""

    def __init__(self, fn: Callable, env: dict[str, str], threads: int):
        self.fn, self.env, self.threads = fn, env, threads

    def __call__(self, *args):
        os.environ.update(self.env)
        os.environ.pop(ENV, None)
        set_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", self.threads)))
        value = self.fn(*args)
        # The caller reads this JSON, never submitit's pickled return value (nothing read back may be a pickle).
        import submitit  # lazy, as everywhere here: only the Slurm backend needs submitit

        atomic_write_json(_json_result_path(Path(submitit.JobEnvironment().paths.folder),
                                            submitit.JobEnvironment().job_id), {"value": value})
        return None

    def checkpoint(self, *args):
        """Called by submitit when the job is signalled at its time limit (or preempted): requeue the same call.
        Without this method submitit does not requeue a job that timed out (``timed-out and not checkpointable``)."""
        from submitit.helpers import DelayedSubmission  # lazy: Slurm only

        return DelayedSubmission(self, *args)


def _json_result_path(folder: Path, job_id: str) -> Path:
    return Path(folder) / f"{job_id}_result.json"


# ------------------------------------------------------------------------------------------ Slurm job status
# submitit learns that a job ended either from the job's result pickle (written by every job that ran its Python to
# the end, successfully or with an exception) or from the cluster: a job killed from outside (scancel, the node, an
# out-of-memory kill) writes nothing, so its end is seen only through the cluster's state. submitit asks ``sacct``,
# which needs Slurm's accounting (slurmdbd and a database). Where accounting is off, sacct fails at every poll
# (a warning each time, "status may be inaccurate") and a killed job is never seen to end: the study waits forever.
# There the state is read from ``squeue`` instead (slurmctld keeps an ended job for MinJobAge, 300 s by default; a
# job it no longer knows has ended). Both readers count only the states that end a job as ended (submitit's own list
# misses CONFIGURING, SUSPENDED, REQUEUE_HOLD and others, which would end a wait early and fail a sound job).
_ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
                            "REQUEUE_HOLD", "SPECIAL_EXIT", "RESV_DEL_HOLD", "PREEMPTED", "SUSPENDED", "STOPPED",
                            "SIGNALING", "STAGE_OUT", "RESIZING", "UNKNOWN", "READY"})
GONE = "GONE"
"""The state of a job slurmctld no longer lists (ended, and purged after MinJobAge)."""
_JOB_CLASSES: dict[str, type] = {}
_STATUS_READER: list[str] = []  # "sacct" or "squeue", once asked


def _job_class(reader: str) -> type:
    """A submitit SlurmJob class whose (class-level, shared) watcher reads the state with ``reader``."""
    if reader in _JOB_CLASSES:
        return _JOB_CLASSES[reader]
    from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

    class Watcher(SlurmInfoWatcher):
        def is_done(self, job_id: str, mode: str = "standard") -> bool:
            return self.get_state(job_id, mode=mode).split()[0].upper() not in _ACTIVE_STATES

    class SqueueWatcher(Watcher):
        def _make_command(self):
            ids = sorted({x.split("_")[0] for x in self._registered - self._finished})
            if not ids:
                return None
            return ["squeue", "--noheader", "--states=all", "--format=%i|%T|%N", f"--jobs={','.join(ids)}"]

        def update(self) -> None:
            command = self._make_command()
            if command is None:
                return
            self._num_calls += 1
            try:
                out = subprocess.run(command, capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as e:
                out = e
            if isinstance(out, subprocess.CompletedProcess) and (out.returncode == 0
                                                                  or "Invalid job id" in out.stderr):
                info = self.read_info("JobID|State|NodeList\n" + (out.stdout if out.returncode == 0 else ""))
                for job_id in self._registered - self._finished:  # asked for, not listed: ended and purged
                    info.setdefault(job_id, {"JobID": job_id, "State": GONE, "NodeList": ""})
                self._info_dict.update(info)
            else:  # slurmctld down or busy: keep the last known states and ask again later
                from submitit.core import logger

                detail = out.stderr.strip() if isinstance(out, subprocess.CompletedProcess) else out
                logger.get_logger().warning(f"squeue failed ({detail}); job states are from the last answer")
            self._last_status_check = time.time()
            for job_id in self._registered - self._finished:
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

    watcher = SqueueWatcher(delay_s=60) if reader == "squeue" else Watcher(delay_s=600)
    cls = type(f"SlurmJob_{reader}", (SlurmJob,), {"watcher": watcher})
    _JOB_CLASSES[reader] = cls
    return cls


def slurm_status_reader() -> str:
    """``sacct`` where Slurm's accounting answers, else ``squeue`` (a cluster without slurmdbd). Asked once."""
    if not _STATUS_READER:
        try:
            ok = subprocess.run(["sacct", "--noheader", "-X", "--starttime=now", "--format=JobID"], capture_output=True,
                                timeout=60).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        _STATUS_READER.append("sacct" if ok else "squeue")
    return _STATUS_READER[0]


def _job_failure(job) -> str:
    """Why a job that ended left no result, naming it and its log (its pickled exception is never read)."""
    if job.paths.result_pickle.exists():  # submitit's record of the call's end: here, an exception
        how = "failed: its Python raised an exception"
    else:  # killed from outside (scancel, the node, out of memory): only the cluster's state tells
        how = f"ended without a result ({job.get_info(mode='force').get('State') or job.state})"
    return f"Slurm job {job.job_id} {how}; its log: {job.paths.stderr}\n" + (job.stderr() or "")[-2000:]


def _job_name(key: str, folder: Path) -> str:
    """The Slurm job name of one run: a restarted submitting process finds the run's job still queued or running
    under it (and waits for that job instead of submitting the run again)."""
    return "aioli-" + hashlib.sha256(f"{key}\0{folder}".encode()).hexdigest()[:16]


class SlurmExecutor(Executor):
    """One submitit job per call. Calls with the same key that are in flight at once (two studies that both need
    one shared run) share one job. Thread-safe: ``run_grid`` drives many studies from threads of one process."""

    local = False

    def __init__(self, cfg: SlurmConfig, folder: str | Path):
        import submitit  # lazy: only the Slurm backend needs submitit (and its cluster probing)

        self.cfg = cfg
        self.folder = Path(cfg.folder or folder)
        self._ex = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=cfg.cluster,
                                         **{f"{cfg.cluster}_max_num_timeout": int(cfg.max_requeues)})
        params: dict[str, Any] = {"timeout_min": int(cfg.time_min), "cpus_per_task": int(cfg.cpus),
                                  "gpus_per_node": int(cfg.gpus), "nodes": 1, "tasks_per_node": 1,
                                  "name": "aioli-run"}
        # The user's lines first (they may activate the environment that holds tcmalloc), then the allocator's: a
        # job's processes preload tcmalloc where its node has it, as local workers do (same numbers, less time).
        setup = [*cfg.setup, *allocator.job_setup_lines()]
        if cfg.cluster == "slurm":
            params["mem_gb"] = float(cfg.mem_gb)
            for key in ("partition", "account", "qos", "constraint"):
                if getattr(cfg, key):
                    params[f"slurm_{key}"] = getattr(cfg, key)
            if setup:
                params["slurm_setup"] = setup
            if cfg.extra:
                params["slurm_additional_parameters"] = dict(cfg.extra)
        elif setup:
            params["local_setup"] = setup
        self._ex.update_parameters(**params)
        self.status_reader = "local"
        """How job states are read: ``sacct`` (Slurm's accounting), ``squeue`` (no accounting) or ``local``."""
        if cfg.cluster == "slurm":
            self.status_reader = slurm_status_reader()
            self._ex._executor.job_class = _job_class(self.status_reader)
        self._lock = threading.Lock()
        self._inflight: dict[str, Future] = {}
        self._slots = threading.BoundedSemaphore(cfg.max_parallel) if cfg.max_parallel else None
        self.submitted = 0
        """Jobs actually submitted (calls that joined an in-flight job, here or of an earlier process, do not
        count)."""
        self.adopted = 0
        """Calls answered by a job an earlier submitting process left queued or running (found by its name)."""

    @property
    def workers(self) -> int:
        return self.cfg.max_parallel or 1_000_000

    def _run_job(self, fn, a, fut: Future, key: str | None) -> None:
        try:
            if self._slots is not None:
                self._slots.acquire()
            try:
                with self._lock:  # submitit's submission is not documented as thread-safe
                    job = self._live_job(key)
                    if job is None:
                        self._ex.update_parameters(name=_job_name(key, self.folder) if key else "aioli-run")
                        job = self._ex.submit(_Job(fn, _forwarded_env(), self.cfg.cpus), *a)
                        self.submitted += 1
                    else:
                        self.adopted += 1
                fut.job = job  # type: ignore[attr-defined]
                job.wait()
                path = _json_result_path(job.paths.folder, job.job_id)
                if not path.exists():  # the job failed: report its log, do not unpickle its exception
                    raise RuntimeError(_job_failure(job))
                result = json.loads(path.read_text())["value"]
            finally:
                if self._slots is not None:
                    self._slots.release()
            fut.set_result(result)
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
            fut.set_exception(e)
        finally:
            if key is not None:
                with self._lock:
                    self._inflight.pop(key, None)

    def _live_job(self, key: str | None):
        """The queued or running job an earlier submitting process left for this key (the run), or None."""
        if key is None or self.cfg.cluster != "slurm":
            return None
        try:
            out = subprocess.run(["squeue", "--noheader", f"--user={os.getuid()}", f"--name={_job_name(key, self.folder)}",
                                  "--format=%i|%T"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        live = [line.split("|")[0] for line in out.stdout.split() if line.split("|")[-1] in _ACTIVE_STATES]
        if out.returncode != 0 or not live:
            return None
        return self._ex._executor.job_class(folder=self._ex._executor.folder, job_id=live[0], tasks=[0])

    def submit(self, fn: Callable, args: tuple, key: str | None = None) -> Future:
        with self._lock:
            if key is not None and key in self._inflight:
                return self._inflight[key]
            fut: Future = Future()
            if key is not None:
                self._inflight[key] = fut
        threading.Thread(target=self._run_job, args=(fn, args, fut, key), daemon=True).start()
        return fut

    def map(self, fn, args, keys=None, desc="runs", progress=True):
        args = list(args)
        keys = list(keys) if keys is not None else [None] * len(args)
        futures = [self.submit(fn, a, k) for a, k in zip(args, keys)]
        unique = list({id(f): f for f in futures}.values())
        for fut in _progress(as_completed(unique), len(unique), f"{desc} as {self.cfg.cluster} jobs", progress):
            fut.result()  # the first failed job raises here, naming its log
        return [f.result() for f in futures]


def make_executor(cfg: ExecutorConfig, runs_dir: str | Path) -> Executor:
    cfg = cfg.validate()
    if cfg.backend == "slurm":
        return SlurmExecutor(cfg.slurm, Path(runs_dir) / "_submitit")
    if cfg.jobs == 1:
        return InProcessExecutor()
    return LocalPoolExecutor(cfg.jobs, cfg.threads)


def run_key(cfg_dict: dict, runs_dir: str, keep_model: bool) -> str:
    """Identity of one training call: identical configs (names included: they name the run directory) share it."""
    return canonical_json([cfg_dict, str(runs_dir), bool(keep_model)])


_FINGERPRINTS: dict[str, dict[str, str]] = {}


def cached_result(cfg, runs_dir: str | Path, keep_model: bool = False, resolve_auto: bool = False) -> dict | None:
    """The result of a run that already finished (in ``runs_dir`` or the committed result cache), found without
    training or loading token data, or None. Lets the Slurm backend skip submitting jobs for finished runs (re-rendering
    a study's tables then needs no cluster time). Needs the device type: a config with ``device='auto'`` is found only
    with ``resolve_auto`` (this machine's device is the one that would train it; not so on a cluster's login node);
    any failure to compute the fingerprints also answers None (the job then finds the result itself)."""
    device = cfg.train.device
    if device == "auto":
        if not resolve_auto:
            return None
        device = resolve_device(device).type
    try:
        key = json.dumps([cfg.data.corpus, cfg.data.tokenizer, cfg.data.split_seed, cfg.data.val_fraction,
                          cfg.data.test_fraction, list(cfg.data.groups)])
        if key not in _FINGERPRINTS:
            d = cfg.data
            source = open_source(d.corpus, d.split_seed, d.val_fraction, d.test_fraction,
                                 groups=base_groups(d.groups))
            _FINGERPRINTS[key] = {"corpus": source.fingerprint,
                                  "tokenizer": tokenizer_fingerprint(load_tokenizer(d.tokenizer))}
        fingerprints = {**_FINGERPRINTS[key], "device": device}
        run = RunDir(cfg, run_id(cfg, fingerprints), runs_dir)
        done = run.read_result()
    except Exception:  # noqa: BLE001 - a probe only: the job computes or finds the run either way
        return None
    if done is None or (keep_model and not run.model_path.exists()):
        return None
    return done


# ------------------------------------------------------------------------------------------ what studies call
def _train_one(cfg_dict: dict, runs_dir: str, keep_model: bool) -> dict:
    return train(RunConfig.from_dict(cfg_dict), runs_dir=runs_dir, progress=False, keep_model=keep_model)


_RUNNER_LOCK = threading.Lock()


class NotCachedError(RuntimeError):
    """A runner that only reads the run cache (``cached_only``) was asked for a run nobody has finished yet."""


def run_units(runner, units: dict) -> tuple[dict, list]:
    """Runs grouped in units (one sweep, one seed's comparison): ``units`` maps a key to its configs. Every run goes
    to ``runner.run`` at once, so the units train in parallel; a runner with ``cached_only`` gives the units whose
    runs have all finished, and the keys of the others (a render lists them as not finished). A run two units share
    (the same config) is asked for once."""
    if runner.cached_only:
        found, missing = {}, []
        for key, cfgs in units.items():
            try:
                found[key] = runner.run(cfgs)
            except NotCachedError:
                missing.append(key)
        return found, missing
    unique: dict[str, RunConfig] = {}
    for cfgs in units.values():
        for c in cfgs:
            unique.setdefault(canonical_json(c.to_dict()), c)
    results = dict(zip(unique, runner.run(list(unique.values()))))
    return {key: [results[canonical_json(c.to_dict())] for c in cfgs] for key, cfgs in units.items()}, []


class Runner:
    """Executes independent runs through one of the executors above: in this process (local, jobs = 1), in a pool of
    local processes (jobs = N), or one Slurm job per run. ``executor`` is an ``ExecutorConfig``, a dict or a string
    (``local:4``, ``slurm``, a JSON file); without one, ``$AIOLI_EXECUTOR``, else local with ``jobs``.

    ``cached_only``: train nothing; a run that is neither in ``runs_dir`` nor in the committed result cache raises
    ``NotCachedError`` (used to render the finished part of a long study between sittings)."""

    def __init__(self, jobs: int = 1, runs_dir=None, progress: bool = True, executor=None, cached_only: bool = False):
        self.executor_config = resolve(executor, jobs)
        self.jobs = self.executor_config.jobs
        self.runs_dir, self.progress = str(runs_dir or default_runs_dir()), progress
        self.cached_only = cached_only
        self._executor = None

    @property
    def executor(self):
        with _RUNNER_LOCK:  # run_grid's Slurm path calls one Runner from many threads: build one executor only
            if self._executor is None:
                self._executor = make_executor(self.executor_config, self.runs_dir)
        return self._executor

    def run(self, cfgs: list[RunConfig], keep_model: bool = False) -> list[dict]:
        if not cfgs:
            return []
        if self.cached_only:  # a finished run's result is enough: the weights a caller would train with are not needed
            hits = [cached_result(c, self.runs_dir, resolve_auto=True) for c in cfgs]
            if missing := [c.name or c.method for c, h in zip(cfgs, hits) if h is None]:
                raise NotCachedError(f"not in the run cache: {', '.join(missing)}")
            return hits
        ex = self.executor
        if ex.in_process or (ex.local and len(cfgs) == 1):
            return [train(c, runs_dir=self.runs_dir, progress=self.progress, keep_model=keep_model) for c in cfgs]
        # Identical configs are trained once; on a cluster, runs that already finished are not submitted again.
        keys = [run_key(c.to_dict(), self.runs_dir, keep_model) for c in cfgs]
        todo: dict[str, RunConfig] = {}
        done: dict[str, dict] = {}
        for k, c in zip(keys, cfgs):
            if k in todo or k in done:
                continue
            if not ex.local and (hit := cached_result(c, self.runs_dir, keep_model)) is not None:
                done[k] = hit
            else:
                todo[k] = c
        if todo:
            out = ex.map(_train_one, [(c.to_dict(), self.runs_dir, keep_model) for c in todo.values()],
                         keys=list(todo), desc=f"{len(todo)} runs", progress=self.progress)
            done.update(zip(todo, out))
        return [done[k] for k in keys]

    def run_one(self, cfg: RunConfig, keep_model: bool = False) -> dict:
        return self.run([cfg], keep_model)[0]
