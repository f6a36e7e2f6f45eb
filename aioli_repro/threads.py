"""The thread count of a worker process, set before numpy and torch load.

OpenBLAS (numpy) and OpenMP (torch) size their thread pools from ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` when
they load, and a BLAS thread count can change the last bits of numpy's results (see ``methods.config_mixture``). So a
local pool's worker sets them first, from an initializer that lives here: this module imports neither numpy nor torch,
so unpickling the initializer in a fresh worker loads nothing else (``executors`` imports the training code, and with
it numpy and torch).
"""

from __future__ import annotations

import os


def set_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch  # deliberately here, after the variables above (see the module docstring)

    torch.set_num_threads(threads)


def init_worker(threads: int, env: dict[str, str], unset: tuple[str, ...] = ()) -> None:
    """A local pool worker's initializer: the submitting process's forwarded environment without ``unset``, then the
    thread count."""
    os.environ.update(env)
    for name in unset:
        os.environ.pop(name, None)
    set_threads(threads)
