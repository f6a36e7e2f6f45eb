"""Which finished runs a render used, what they cost to train, and which cached runs no table uses any more.

``run_all.sh`` points ``AIOLI_USED_RUNS`` at a scratch file while each notebook executes; every run the notebook
reads or trains appends its id there (:func:`aioli_repro.runs.note_used`). From those ids this module sums the
training seconds the runs recorded, which is what the notebook would cost on a fresh clone without the committed
result cache, so a re-render measures the from-scratch cost instead of guessing it. ``scripts/cache_usage.py`` lists
the committed cache entries of a profile's recipe that no notebook read (left by earlier code or recipes).

The recorded seconds are each run's own wall time (training loop plus its final test evaluation) on the machine and
with the contention it had when it trained; a fresh clone with ``--jobs 2`` on 2 cores divides their sum by about 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .profiles import get_profile
from .runs import default_runs_dir, result_cache_dir

ID_CHARS = 20
"""Run ids are kept by their first 20 hex digits: the name of a run's committed cache entry."""

# The fields that make up a profile's recipe (the rest of a run's config is its groups, method, seed and length).
_RECIPE_TRAIN_FIELDS = ("lr", "min_lr", "warmup_steps", "batch_size", "eval_sequences", "eval_every",
                        "test_max_sequences", "weight_decay", "beta1", "beta2")


def read_used(path: str | Path) -> list[str]:
    """The distinct run ids (first 20 digits) a ``AIOLI_USED_RUNS`` file lists, in first-use order."""
    seen: dict[str, None] = {}
    for line in Path(path).read_text().splitlines():
        rid = line.strip()
        if rid:
            if len(rid) < ID_CHARS or any(c not in "0123456789abcdef" for c in rid):
                raise ValueError(f"{path}: {rid!r} is not a run id")
            seen.setdefault(rid[:ID_CHARS])
    return list(seen)


def _find_result(rid: str, cache: Path | None, runs_dir: Path) -> dict | None:
    if cache is not None and (cache / f"{rid}.json").is_file():
        return json.loads((cache / f"{rid}.json").read_text())["result"]
    for found in runs_dir.glob(f"*-{rid[:12]}/result.json"):
        res = json.loads(found.read_text())
        if res.get("run_id", "").startswith(rid):
            return res
    return None


def run_seconds(result: dict) -> float:
    """What a finished run recorded for training it: its training loop plus its final test evaluation."""
    return float(result.get("wall_time_s") or 0.0) + float(result.get("eval_time_s") or 0.0)


def runs_cost(ids: Iterable[str], cache: Path | None = None, runs_dir: Path | None = None) -> dict:
    """Number of runs, their recorded training seconds (sum), seconds by method, and ids whose result is nowhere."""
    cache = result_cache_dir() if cache is None else cache
    runs_dir = Path(runs_dir or default_runs_dir())
    total, by_method, unknown, n = 0.0, {}, [], 0
    for rid in ids:
        res = _find_result(rid[:ID_CHARS], cache, runs_dir)
        if res is None:
            unknown.append(rid)
            continue
        n += 1
        seconds = run_seconds(res)
        total += seconds
        by_method[res.get("method", "?")] = by_method.get(res.get("method", "?"), 0.0) + seconds
    return {"runs": n, "recorded_s": round(total, 1),
            "by_method_s": {k: round(v, 1) for k, v in sorted(by_method.items(), key=lambda kv: -kv[1])},
            "not_found": unknown}


def matches_recipe(config: dict, profile: str) -> bool:
    """Whether a run's config was trained under ``profile``'s recipe (model, context and training settings)."""
    p = get_profile(profile)
    try:
        if config["model"].get("preset") != p.model.preset:
            return False
        if config["data"]["context_length"] != p.data.context_length:
            return False
        return all(config["train"].get(f) == getattr(p.train, f) for f in _RECIPE_TRAIN_FIELDS)
    except (KeyError, TypeError, AttributeError):
        return False


def unused_cache_entries(profile: str, used: Iterable[str], cache: Path | None = None) -> list[Path]:
    """Committed cache entries trained under ``profile``'s recipe whose run no notebook used (``used``: run ids)."""
    cache = result_cache_dir() if cache is None else cache
    if cache is None or not cache.is_dir():
        return []
    used = {u[:ID_CHARS] for u in used}
    out = []
    for path in sorted(cache.glob("*.json")):
        if path.stem in used:
            continue
        try:
            config = json.loads(path.read_text())["result"]["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge: the run cache itself reports corrupt entries when one is read
        if matches_recipe(config, profile):
            out.append(path)
    return out
