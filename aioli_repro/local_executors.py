"""The executor interface, and the two backends on this machine: in this process, or a pool of processes.

``jobs`` = 1 runs in this process. ``jobs`` = N > 1 runs N worker processes (spawned, so CUDA works in each), each
with ``threads`` torch threads (default: cores // N, so one thread per worker when N = cores). On one GPU machine every
worker shares the GPU: one process per run, many runs at a time.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from tqdm.auto import tqdm

from . import allocator
from .executor_config import ENV
from .threads import init_worker

# Environment a job inherits from the submitting process (caches, run cache, offline switches, fault injection).
_FORWARDED_ENV_PREFIXES = ("AIOLI_", "HF_", "TOKENIZERS_", "TRANSFORMERS_")


def available_cores() -> int:
    """Cores this process may use (a Slurm job's allocation, not the node's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(jobs: int) -> int:
    return max(1, available_cores() // max(1, jobs))


def forwarded_env() -> dict[str, str]:
    """The environment a worker or job inherits: the forwarded variables, lock waiting on, no executor of its own."""
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


def progress_bar(it, total: int, desc: str, progress: bool):
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
                                       initializer=init_worker, initargs=(self.threads, forwarded_env(), (ENV,)))
            try:
                futures = {pool.submit(fn, *a): i for i, a in enumerate(args)}
                for fut in progress_bar(as_completed(futures), len(futures), f"{desc} on {self.jobs} workers",
                                     progress):
                    results[futures[fut]] = fut.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # running runs finish (their locks stay consistent)
                raise
            pool.shutdown(wait=True)
        return results
