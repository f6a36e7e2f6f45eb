"""The Slurm backend: one Slurm job per run, through ``submitit``.

Jobs write into the shared run directory and the shared result cache, so the submitting process (and every later one)
reads their results from there; ``submitit`` also returns them. A job that reaches its time limit is requeued and
resumes from its checkpoint. A job is named after its run, so a restarted submitting process waits for a run's job
that is still queued or running instead of submitting the run again. Job states come from ``sacct`` where Slurm's
accounting answers, else from ``squeue`` (see :func:`slurm_status_reader`). ``SlurmConfig.cluster = "local"`` runs the
same code path through ``submitit``'s local executor on this machine (no cluster needed);
``scripts/slurm_local_cluster.sh`` starts a real one-node cluster (``tests/test_slurm_cluster.py``).

Cross-machine locking relies on ``flock`` over the shared file system: NFSv4 and most cluster file systems support it
(Lustre needs the ``flock`` mount option); without it, two jobs could compute the same run at once (each still writes
a complete result atomically, so nothing is corrupted, but GPU time is wasted).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, as_completed
from pathlib import Path
from typing import Any

from . import allocator
from .executor_config import ENV, SlurmConfig
from .local_executors import Executor, forwarded_env, progress_bar
from .paths import atomic_write_json
from .threads import set_threads


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
                        job = self._ex.submit(_Job(fn, forwarded_env(), self.cfg.cpus), *a)
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
        for fut in progress_bar(as_completed(unique), len(unique), f"{desc} as {self.cfg.cluster} jobs", progress):
            fut.result()  # the first failed job raises here, naming its log
        return [f.result() for f in futures]
