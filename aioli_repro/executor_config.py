"""Which executor runs a study's independent training runs, and its settings.

An explicit ``executor`` argument (an :class:`ExecutorConfig`, a dict, or a string), else the ``AIOLI_EXECUTOR``
environment variable, else ``local`` with the ``jobs`` the caller passed. Strings: ``local``, ``local:N``, ``slurm``,
``slurm-local``, a JSON object, or the path of a JSON file holding one, e.g.::

    {"backend": "slurm", "slurm": {"partition": "gpu", "gpus": 1, "cpus": 8, "mem_gb": 48, "time_min": 360,
                                   "setup": ["source /path/to/aioli-repro/.venv/bin/activate"]}}

so ``AIOLI_EXECUTOR=slurm.json ./run_all.sh --profile paper`` runs the notebooks' training runs on the cluster.
The backends themselves live in ``local_executors`` and ``slurm``; ``executors.make_executor`` builds one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

ENV = "AIOLI_EXECUTOR"


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
