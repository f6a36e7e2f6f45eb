"""Where independent training runs execute, and what studies call: :class:`Runner`.

Runs (sweep points, proxies, finals, children of a branch) are independent and idempotent: a run is named by the hash
of its config, its directory is locked (``flock``) while one process computes it, its result is written with atomic
renames, and an interrupted run resumes from its last checkpoint (``runs.py``). So an executor may run any set of
runs in any order and on any machine that sees the same run directory: a run asked for twice at once is computed
once (the second worker waits on the lock, then reads the result), and a job killed half-way leaves a checkpoint that
its next attempt resumes from.

Three modules hold the pieces: ``executor_config`` (which backend, its settings, ``$AIOLI_EXECUTOR``),
``local_executors`` (in this process, or a pool of ``jobs`` processes) and ``slurm`` (one Slurm job per run through
``submitit``). Studies never pick an executor themselves: they hand configs to a :class:`Runner`, which resolves the
executor once, trains each distinct config once, and with ``cached_only`` only reads the run cache.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from .config import RunConfig, base_groups, canonical_json, run_id
from .corpus import open_source
from .executor_config import ExecutorConfig, resolve
from .local_executors import Executor, InProcessExecutor, LocalPoolExecutor
from .model import resolve_device
from .runs import RunDir, default_runs_dir
from .slurm import SlurmExecutor
from .tokenizer import load_tokenizer, tokenizer_fingerprint
from .train import train


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
    """Executes independent runs through one executor: in this process (local, jobs = 1), in a pool of
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
