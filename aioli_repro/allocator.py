"""The memory allocator of the processes that train: tcmalloc where the machine has it.

Why: every training step frees and re-allocates the same activation and gradient buffers (a few MB to tens of MB
on the 1m model). glibc's malloc serves buffers that size with fresh ``mmap``s and returns them to the kernel when
freed, so each step page-faults its whole working set in again, and the kernel zeroes every page: on this 2-core
machine a one-thread 1m run spent about a quarter of its CPU time in the kernel. tcmalloc keeps freed memory for
reuse. ``python -m aioli_repro bench --allocator`` measures the difference (``results/bench/benchmark_allocator.csv``).

The numbers do not change: torch aligns each CPU buffer itself (64 bytes), so which allocator hands out the memory
does not touch the arithmetic. ``tests/test_allocator.py`` trains one run both ways and requires identical metrics,
bit for bit, which is why the allocator is not part of a run id.

``AIOLI_MALLOC`` chooses: ``auto`` (default: tcmalloc if found, else the system's malloc), ``system``, or the path
of a shared library to preload. The allocator must be chosen before a process starts (``LD_PRELOAD``), so it applies
to the processes this one starts: a local pool's workers and the notebooks' kernels, and, through lines in the job
script (``job_setup_lines``), a Slurm job's processes. Install it with
``apt-get install libtcmalloc-minimal4`` (Debian, Ubuntu) or ``conda install -c conda-forge gperftools``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError

ENV = "AIOLI_MALLOC"
LIBRARY_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
SYSTEM_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
               "/lib/x86_64-linux-gnu", "/lib64")


def _default_dirs(conda_prefix: str | None) -> tuple[str, ...]:
    """Where tcmalloc is looked for, in order: this environment's ``lib`` (conda), the active conda environment's,
    then the system's library folders."""
    prefixes = [sys.prefix, *filter(None, [conda_prefix])]
    return (*(str(Path(p) / "lib") for p in prefixes), *SYSTEM_DIRS)


def find_tcmalloc(dirs: tuple[str, ...] | None = None) -> Path | None:
    """The first tcmalloc library in this environment's ``lib`` (conda), then the system's library folders."""
    if dirs is None:
        dirs = _default_dirs(os.environ.get("CONDA_PREFIX"))
    for d in dirs:
        for name in LIBRARY_NAMES:
            path = Path(d) / name
            if path.is_file():
                return path
    return None


def _chosen(setting: str | None) -> str:
    """``setting``, or ``AIOLI_MALLOC`` when None; empty means ``auto``."""
    return (os.environ.get(ENV, "auto") if setting is None else setting).strip() or "auto"


def preload_library(setting: str | None = None, dirs: tuple[str, ...] | None = None) -> Path | None:
    """The library ``AIOLI_MALLOC`` (or ``setting``) asks child processes to preload, or None for the system's
    malloc. A path that does not exist is an error, not a silent fallback: the user asked for it by name."""
    setting = _chosen(setting)
    if setting == "system":
        return None
    if setting == "auto":
        return find_tcmalloc(dirs)
    path = Path(setting)
    if not path.is_file():
        raise ConfigError(f"{ENV}={setting!r}: no such library (use 'auto', 'system' or the path of a shared "
                          "library such as libtcmalloc_minimal.so.4)")
    return path


def child_env(env: dict[str, str] | None = None, library: Path | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with ``library`` first in ``LD_PRELOAD``, for a process about to start."""
    env = dict(os.environ if env is None else env)
    if library is None:
        return env
    preload = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p and p != str(library)]
    env["LD_PRELOAD"] = " ".join([str(library), *preload])
    return env


@contextlib.contextmanager
def for_children(setting: str | None = None) -> Iterator[Path | None]:
    """While inside, the processes this one starts (spawned pool workers, kernels) preload the chosen allocator;
    this process's own allocator cannot change any more. ``LD_PRELOAD`` is restored on the way out."""
    library = preload_library(setting)
    if library is None:
        yield None
        return
    before = os.environ.get("LD_PRELOAD")
    os.environ["LD_PRELOAD"] = child_env(library=library)["LD_PRELOAD"]
    try:
        yield library
    finally:
        if before is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = before


def job_setup_lines(setting: str | None = None, dirs: tuple[str, ...] | None = None) -> list[str]:
    """Shell lines for a batch job's script that make the job's processes preload the allocator ``AIOLI_MALLOC``
    (or ``setting``) asks for: none for ``system``; for ``auto``, a search that runs on the node when the job starts
    (the submitting host's folders say nothing about a compute node's), in ``find_tcmalloc``'s order, with the job's
    own ``$CONDA_PREFIX``, and no preload where nothing is found; for a path, that path. ``LD_PRELOAD`` keeps what
    it held, after the library."""
    setting = _chosen(setting)
    keep = '"${LD_PRELOAD:+ $LD_PRELOAD}"'
    if setting == "system":
        return []
    if setting != "auto":
        return [f"export LD_PRELOAD={shlex.quote(str(preload_library(setting)))}{keep}"]
    # The job's own $CONDA_PREFIX takes the submitter's place, expanded by the job's shell (to "" where unset).
    dirs = _default_dirs("$CONDA_PREFIX") if dirs is None else dirs
    candidates = [f'"${{CONDA_PREFIX:+{d}/{n}}}"' if d.startswith("$CONDA_PREFIX/") else shlex.quote(f"{d}/{n}")
                  for d in dirs for n in LIBRARY_NAMES]
    return [f'for _aioli_malloc in {" ".join(candidates)}; do if [ -f "$_aioli_malloc" ]; then '
            f'export LD_PRELOAD="$_aioli_malloc"{keep}; break; fi; done']
