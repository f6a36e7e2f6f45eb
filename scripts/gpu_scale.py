#!/usr/bin/env python
"""Notebook 13's scale study at the sizes two CPU cores cannot afford, on one lent GPU (issue 31, part 4).

    python scripts/gpu_scale.py OUT                                   # on a CUDA machine (see docs/headroom.md)
    python scripts/gpu_scale.py --import OUT/gpu_scale_runs.tar.gz    # back here: the runs into results/run_cache
    python scripts/gpu_scale.py OUT --profile smoke --presets tiny --device cpu --jobs 1   # what the CPU test runs

For each preset in ``--presets`` (default ``scale.GPU_PRESETS``: 4m, the bridge to the CPU points, then 20m and
pythia-160m, cheapest first), every run of notebook 13's two halves on ``--device``: the static sweep and stratified
against Aioli in both forms, on notebook 13's settings (A/SE and notebook 10's first selected headroom setting), each
at its own seeds (``scale.default_seeds``: the profile's for A/SE, Table 2b's fresh test seeds for the other). All of a
preset's runs go to the pool at once (``--jobs`` processes sharing the GPU: 16 one-thread workers saturated an H200 on
the ``full`` recipe, docs/scaling.md).

After each preset it rewrites, in OUT (at most three files, so they all come back from a device machine):
- ``gpu_scale_runs.tar.gz``: the run-cache entries of every finished run (JSON, no weights);
- ``gpu_scale.json``: the machine, the versions, and per preset its runs, wall time and training tokens/s;
- ``gpu_scale.csv``: notebook 13's table (``scale.scale_table``) for these presets, for a first look.
A preset is not started once ``--deadline-s`` seconds have passed, so a device call with a time limit still brings
back every preset that finished. Back here, ``--import`` copies the entries into the run cache (an entry already
there with other content is reported and left alone), and notebook 13 renders the GPU rows from the cache.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from aioli_repro.paths import atomic_write_bytes  # noqa: E402  (reads no environment at import)
from aioli_repro.run_cache import cache_entries  # noqa: E402

ENTRY = re.compile(r"^[0-9a-f]{20}\.json(\.gz)?$")  # a run-cache entry's file name; nothing else is imported


def pack(cache: Path, out: Path) -> int:
    """Every entry of ``cache`` into ``out/gpu_scale_runs.tar.gz``; returns how many."""
    paths = cache_entries(cache)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in paths:
            tar.add(path, arcname=path.name)
    atomic_write_bytes(out / "gpu_scale_runs.tar.gz", buf.getvalue())
    return len(paths)


def import_runs(archive: Path, cache: Path | None = None) -> dict[str, int]:
    """Copy the entries of ``archive`` into the run cache (``cache``, default ``run_cache.result_cache_dir()``): new ones
    are added, identical ones skipped, and one whose name is taken by other content is reported, never
    overwritten."""
    from aioli_repro.run_cache import result_cache_dir

    cache = Path(cache or result_cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    counts = {"added": 0, "identical": 0, "conflicting": 0}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            if not (member.isfile() and ENTRY.match(member.name)):
                raise SystemExit(f"{archive}: {member.name!r} is not a run-cache entry; nothing more imported")
            data = tar.extractfile(member).read()
            target = cache / member.name
            if target.exists():
                same = target.read_bytes() == data
                counts["identical" if same else "conflicting"] += 1
                if not same:
                    print(f"[gpu_scale] {target} exists with other content: left as it is")
                continue
            atomic_write_bytes(target, data)
            counts["added"] += 1
    print(f"[gpu_scale] {archive} -> {cache}: {counts}")
    return counts


def environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(), "device": device}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", help="output folder (created)")
    ap.add_argument("--import", dest="archive", help="copy this archive's runs into results/run_cache, then stop")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--presets", nargs="+", default=None, help="default: scale.GPU_PRESETS")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--jobs", type=int, default=16, help="runs at once (one process each)")
    ap.add_argument("--headroom-groups", nargs="+", default=None,
                    help="the headroom setting's groups; default notebook 13's (notebook 10's first selected)")
    ap.add_argument("--settings", nargs="+", default=None,
                    help="settings by key (arxiv_stackexchange, latex@102400+pydocs, ...) instead of notebook 13's two")
    ap.add_argument("--deadline-s", type=float, default=420.0, help="start no preset after this many seconds")
    args = ap.parse_args(argv)
    if args.archive:
        import_runs(Path(args.archive))
        return 0
    if not args.out:
        ap.error("give an output folder, or --import ARCHIVE")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_scale_"))
    # Results go to a cache of their own, packed after each preset: the repository's cache is not touched there.
    os.environ["AIOLI_RESULT_CACHE"] = str(work / "cache")

    import pandas as pd

    from aioli_repro import hparams, scale
    from aioli_repro.executors import Runner
    from aioli_repro.usage import planned_cost

    t0 = time.perf_counter()
    presets = list(args.presets or scale.GPU_PRESETS)
    settings = ([hparams.get_setting(k) for k in args.settings] if args.settings
                else scale.default_settings(args.profile, args.headroom_groups))
    report = {"profile": args.profile, "environment": environment(args.device), "jobs": args.jobs,
              "settings": [st.key for st in settings], "presets": {},
              "seeds": {st.key: dict(zip(("sweep", "comparison"), scale.default_seeds(args.profile, st)))
                        for st in settings}}
    runner = Runner(jobs=args.jobs, runs_dir=work / "runs", progress=True)
    reader = Runner(runs_dir=work / "runs", progress=False, cached_only=True)  # the tables read finished runs
    headrooms, gaps = [], []
    for preset in presets:
        if time.perf_counter() - t0 > args.deadline_s:
            report["presets"][preset] = {"skipped": f"the {args.deadline_s:.0f} s deadline had passed"}
            continue
        cfgs = scale.planned_configs(settings, [preset], [preset], args.profile, device=args.device)
        t1 = time.perf_counter()
        runner.run(cfgs)  # every run of the preset at once, so they share the GPU
        wall = time.perf_counter() - t1
        headrooms.append(scale.sweep_headroom(settings, [preset], args.profile, None, reader, device=args.device))
        gaps.append(scale.aioli_gap(settings, [preset], args.profile, None, reader, device=args.device))
        tokens = planned_cost(cfgs)["tokens"]
        report["presets"][preset] = {"runs": len(cfgs), "wall_s": round(wall, 1),
                                     "training_tokens_per_s": round(tokens / wall)}
        report["entries"] = pack(work / "cache", out)
        table = scale.scale_table(pd.concat(headrooms), scale.gap_summary(pd.concat(gaps)))
        table.to_csv(out / "gpu_scale.csv", index=False)
        report["wall_s"] = round(time.perf_counter() - t0, 1)
        atomic_write_bytes(out / "gpu_scale.json", json.dumps(report, indent=1).encode())
        print(f"[gpu_scale] {preset}: {len(cfgs)} runs in {wall:.0f} s", flush=True)
    atomic_write_bytes(out / "gpu_scale.json", json.dumps(report, indent=1).encode())
    return 0


if __name__ == "__main__":  # workers are spawned: the guard keeps them from running the study again
    sys.exit(main())
