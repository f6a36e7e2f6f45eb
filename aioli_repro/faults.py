"""Fault injection for the reliability tests: kill this process with SIGKILL at a named point of a run.

``AIOLI_FAULT="<point>:<step>[:<n>][,<point>:<step>[:<n>]...]"`` kills the current process (``SIGKILL``: no
``finally`` blocks, no flushing, no lock release other than the kernel's) the ``n``-th time (default: the first)
this process reaches ``point`` at training step ``step``. ``n`` lets a test kill a study after some of its runs have
finished (every run passes every step). Points, where the training code calls :func:`hit`:

===================  ==============================================================================
``step``             after the optimizer step numbered ``step`` (1-based) and its logging, before any checkpoint
``checkpoint``       while writing the checkpoint (or a branch point) of ``step``: after ``model.safetensors``, before
                     the optimizer state and ``state.json``
``checkpoint_swap``  between the two renames that swap a new checkpoint in (the old one is ``checkpoint.old``)
``evaluate``         inside an evaluation at ``step`` (periodic validation, or one a policy asked for, e.g. LearnParams)
``learn_params``     after optimizer step ``step`` when it belongs to a LearnParams interval (Aioli)
``result``           after the final evaluation, just before ``result.json`` is written (``step`` = the last step)
===================  ==============================================================================

A kill anywhere inside a step's computation is equivalent to ``step`` (nothing is written between two of these
points). When ``AIOLI_FAULT`` is unset, :func:`hit` is one environment lookup: nothing else runs. The tests are
``tests/test_faults.py``; ``scripts/fault_check.py`` kills the whole notebook pipeline.
"""

from __future__ import annotations

import os
import signal

POINTS = ("step", "checkpoint", "checkpoint_swap", "evaluate", "learn_params", "result")
ENV = "AIOLI_FAULT"

_parsed: tuple[str, dict[tuple[str, int], int]] | None = None  # (raw env value, {(point, step): n})
_seen: dict[tuple[str, int], int] = {}


def parse(spec: str) -> dict[tuple[str, int], int]:
    """``"step:7,result:20:2"`` -> ``{("step", 7): 1, ("result", 20): 2}``; a malformed spec raises ValueError."""
    plan = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        if len(parts) not in (2, 3) or parts[0] not in POINTS:
            raise ValueError(f"{ENV}: expected <point>:<step>[:<n>] with point in {POINTS}, got {item!r}")
        try:
            step, n = int(parts[1]), int(parts[2]) if len(parts) == 3 else 1
        except ValueError:
            raise ValueError(f"{ENV}: step and n must be integers, got {item!r}") from None
        plan[(parts[0], step)] = n
    return plan


def hit(point: str, step: int) -> None:
    """Kill this process if ``AIOLI_FAULT`` names ``point`` at ``step`` (and this is its n-th occurrence)."""
    raw = os.environ.get(ENV)
    if not raw:
        return
    global _parsed
    if _parsed is None or _parsed[0] != raw:
        _parsed = (raw, parse(raw))
        _seen.clear()
    key = (point, int(step))
    if key in _parsed[1]:
        _seen[key] = _seen.get(key, 0) + 1
        if _seen[key] == _parsed[1][key]:
            os.kill(os.getpid(), signal.SIGKILL)
