"""What a profile's notebooks cost from scratch, and which committed cached runs none of them uses.

Reads ``results/<profile>/used_runs.json`` (written by ``run_all.sh``: the runs each notebook read or trained) and
prints, per notebook and for the whole profile, the runs used and the training seconds they recorded. A run shared by
several notebooks (stratified feeds 04, 05 and 06) counts once in the total: on a fresh clone it trains once.

    python scripts/cache_usage.py --profile quick            # cost table + cached runs no notebook used
    python scripts/cache_usage.py --profile quick --prune    # delete those unused entries from results/run_cache/

Prune only after a render of every notebook of the profile (``./run_all.sh --profile P``, or ``--cached-only`` once
every study has finished): an entry of a study still in progress is unused too, and pruning it loses that run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aioli_repro.paths import REPO_ROOT  # noqa: E402
from aioli_repro.pipeline import notebooks  # noqa: E402
from aioli_repro.usage import runs_cost, unused_cache_entries  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once on a fresh clone (default 2: the 2-core CPU)")
    ap.add_argument("--prune", action="store_true", help="delete the cached runs of this recipe no notebook used")
    args = ap.parse_args(argv)
    folder = REPO_ROOT / "results" / args.profile
    path = folder / "used_runs.json"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run ./run_all.sh --profile {args.profile} first")
    used = json.loads(path.read_text())
    timings = json.loads((folder / "run_all_timings.json").read_text()).get("notebooks", {})
    missing = [p.name for p in notebooks() if p.name not in used]
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
    print(f"from scratch with {args.jobs} runs at once: about {total['recorded_s'] / args.jobs / 60:.0f} min of "
          f"training (recorded seconds / {args.jobs}; dependencies between runs can only add to it), plus rendering"
          + (f" (the latest execution of these notebooks took {render / 60:.0f} min)" if render else ""))
    unused = unused_cache_entries(args.profile, all_ids)
    print(f"{len(unused)} committed cached run(s) of the {args.profile} recipe that no notebook used")
    for p in unused[:20]:
        res = json.loads(p.read_text())["result"]
        print(f"  {p.name}  {res.get('name')}  steps {res.get('steps')}  groups {res.get('groups')}")
    if len(unused) > 20:
        print(f"  ... and {len(unused) - 20} more")
    if args.prune and unused:
        if missing:
            raise SystemExit("refusing to prune: some notebooks have no run record, their runs would look unused")
        for p in unused:
            p.unlink()
        print(f"pruned {len(unused)} entries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
