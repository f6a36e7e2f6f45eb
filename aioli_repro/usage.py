"""Which finished runs a render used, what they cost to train, and which cached runs no table uses any more.

``run_all.sh`` points ``AIOLI_USED_RUNS`` at a scratch file while each notebook executes; every run the notebook
reads or trains appends its id there (:func:`aioli_repro.runs.note_used`). From those ids this module sums the
training seconds the runs recorded, which is what the notebook would cost on a fresh clone without the committed
result cache, so a re-render measures the from-scratch cost instead of guessing it. :func:`cache_report` (``python -m
aioli_repro cache``) prints that cost per notebook and lists, or prunes, the committed cache entries of a profile's
recipe that no notebook read (left by earlier code or recipes).

The recorded seconds are each run's own wall time (training loop plus its final test evaluation) on the machine and
with the contention it had when it trained; a fresh clone with ``--jobs 2`` on 2 cores divides their sum by about 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .config import RunConfig, canonical_json
from .paths import REPO_ROOT
from .profiles import get_profile
from .run_cache import (
    cache_entries,
    cache_entry_id,
    find_cache_entry,
    read_cache_entry,
    remove_cache_entry,
    result_cache_dir,
)
from .runs import default_runs_dir

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
    if (entry := find_cache_entry(cache, rid)) is not None:
        return read_cache_entry(entry)["result"]
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
    for path in cache_entries(cache):
        if cache_entry_id(path) in used:
            continue
        try:
            config = read_cache_entry(path)["result"]["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge: the run cache itself reports corrupt entries when one is read
        if matches_recipe(config, profile):
            out.append(path)
    return out


def cache_report(profile: str, notebooks: Iterable[str], jobs: int = 2, prune: bool = False) -> None:
    """What a profile's notebooks cost from scratch, and which committed cached runs none of them uses.

    Reads ``results/<profile>/used_runs.json`` (written by ``run_all.sh``: the runs each notebook read or trained) and
    prints, per notebook and for the whole profile, the runs used and the training seconds they recorded. A run shared
    by several notebooks (stratified feeds 04, 05 and 06) counts once in the total: on a fresh clone it trains once.
    ``notebooks`` names every numbered notebook, so one without a run record is pointed out. ``prune`` deletes the
    unused entries from the result cache; only after a render of every notebook of the profile (``./run_all.sh
    --profile P``, or ``--cached-only`` once every study has finished): an entry of a study still in progress is
    unused too, and pruning it loses that run."""
    folder = REPO_ROOT / "results" / profile
    path = folder / "used_runs.json"
    if not path.exists():
        raise RuntimeError(f"{path} does not exist: run ./run_all.sh --profile {profile} first")
    used = json.loads(path.read_text())
    timings = json.loads((folder / "run_all_timings.json").read_text()).get("notebooks", {})
    missing = [name for name in notebooks if name not in used]
    if missing:
        print(f"note: no run record for {', '.join(missing)} (not rendered since run records exist)")
    print(f"{'notebook':32s} {'runs':>5s} {'recorded train s':>17s} {'render s':>9s}")
    all_ids: dict[str, None] = {}
    for name, ids in used.items():
        cost = runs_cost(ids)
        render = timings.get(name, {}).get("seconds", float("nan"))
        print(f"{name:32s} {cost['runs']:5d} {cost['recorded_s']:17.0f} {render:9.0f}")
        all_ids.update(dict.fromkeys(ids))
    total = runs_cost(all_ids)
    render = sum(t.get("seconds", 0.0) for n, t in timings.items() if n in used)
    print(f"{'all (each run once)':32s} {total['runs']:5d} {total['recorded_s']:17.0f}")
    print("by method (s): " + ", ".join(f"{k} {v:.0f}" for k, v in total["by_method_s"].items()))
    if total["not_found"]:
        print(f"warning: {len(total['not_found'])} used run(s) have no result here or in the cache")
    print(f"from scratch with {jobs} runs at once: about {total['recorded_s'] / jobs / 60:.0f} min of "
          f"training (recorded seconds / {jobs}; dependencies between runs can only add to it), plus rendering"
          + (f" (the latest execution of these notebooks took {render / 60:.0f} min)" if render else ""))
    unused = unused_cache_entries(profile, all_ids)
    print(f"{len(unused)} committed cached run(s) of the {profile} recipe that no notebook used")
    for p in unused[:20]:
        res = read_cache_entry(p)["result"]
        print(f"  {p.name}  {res.get('name')}  steps {res.get('steps')}  groups {res.get('groups')}")
    if len(unused) > 20:
        print(f"  ... and {len(unused) - 20} more")
    if prune and unused:
        if missing:
            raise RuntimeError("refusing to prune: some notebooks have no run record, their runs would look unused")
        for p in unused:
            remove_cache_entry(p)  # a legacy .json twin too
        print(f"pruned {len(unused)} entries")


def planned_cost(cfgs: Iterable[RunConfig]) -> dict:
    """What a study's runs cost before any trains: distinct runs (configs equal but for their display name count
    once, as the run cache trains them once), their optimizer steps and training tokens in total. Whether some have
    finished already is not asked: this is the cost on a fresh clone without the result cache."""
    distinct: dict[str, RunConfig] = {}
    for c in cfgs:
        d = c.to_dict()
        d.pop("name", None)
        distinct.setdefault(canonical_json(d), c)
    steps = sum(c.train.steps for c in distinct.values())
    tokens = sum(c.train.steps * c.train.batch_size * c.data.context_length for c in distinct.values())
    return {"runs": len(distinct), "steps": steps, "tokens": tokens, "train_hours": _bench_hours(distinct.values())}


BENCH_SPEED = REPO_ROOT / "results" / "bench" / "benchmark_speed.csv"
"""The speed benchmark (``python -m aioli_repro bench``): training tokens/s per preset on the 2-core CPU."""


def _bench_hours(cfgs) -> float | None:
    """Training hours of ``cfgs`` one at a time at the benchmark's tokens/s (one run, 2 threads, the embedded 4k
    vocabulary, same preset, context and micro-batch; evaluation and contention not counted, so a lower bound), or
    None when the benchmark lacks one of them."""
    import csv  # lazy: only a cost estimate reads the benchmark

    if not BENCH_SPEED.exists():
        return None
    with BENCH_SPEED.open() as f:
        speed = {(r["preset"], int(r["context"]), int(r["micro_batch"])): float(r["tokens_per_s"])
                 for r in csv.DictReader(f) if r["vocab"] == "4096" and r["threads"] == "2"
                 and r["processes"] == "1" and r["fused_loss"] == "False"}
    seconds = 0.0
    for c in cfgs:
        rate = speed.get((c.model.preset, c.data.context_length, c.train.micro_batch_size))
        if c.data.tokenizer != "embedded":
            return None
        if rate is None:
            return None
        seconds += c.train.steps * c.train.batch_size * c.data.context_length / rate
    return seconds / 3600
