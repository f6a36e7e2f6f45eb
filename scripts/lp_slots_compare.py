#!/usr/bin/env python
"""Old vs new LearnParams slot rule, side by side, for every seven-group Aioli run of a profile in the result cache.

Before the fix, every LearnParams batch of a seven-group run (h = 0.75, B = 8: 6 target sequences and 1/3 of a
sequence for each other group) gave its two leftover slots to the two lowest-index other groups, which skewed the
training mixture towards latex and books. The runs of that rule stay in the cache under their ids (their configs
with ``lp_slots = "lowest_index"``); this pairs each with the run of the same config under the balanced rule, where
that run has finished.

    python scripts/lp_slots_compare.py --profile full     # -> results/full/lp_slots_old_vs_new.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="full")
    ap.add_argument("--out", default=None, help="CSV path (default: results/PROFILE/lp_slots_old_vs_new.csv)")
    args = ap.parse_args(argv)

    import pandas as pd

    from aioli_repro.config import RunConfig
    from aioli_repro.executors import cached_result
    from aioli_repro.profiles import get_profile
    from aioli_repro.runs import default_runs_dir, result_cache_dir

    prof = get_profile(args.profile)
    rows = []
    for path in sorted(result_cache_dir().glob("*.json")):
        res = json.loads(path.read_text())["result"]
        cfg = RunConfig.from_dict(res["config"])
        if (cfg.method != "aioli" or len(cfg.data.groups) != 7 or res.get("branch") or "lp_slots" in cfg.method_config
                or cfg.model != prof.model or cfg.train.steps != prof.train.steps or cfg.data.corpus != prof.data.corpus):
            continue
        old = RunConfig.from_dict(res["config"])
        old.method_config = {**old.method_config, "lp_slots": "lowest_index"}
        old_res = cached_result(old, default_runs_dir(), resolve_auto=True)
        if old_res is None or old_res["run_id"] != res["run_id"]:
            continue  # this entry is a run of the balanced rule (its config hashes to a new id)
        new_res = cached_result(cfg, default_runs_dir(), resolve_auto=True)
        mc = cfg.method_config
        rows.append({"run": cfg.name, "seed": cfg.train.seed, "eta": mc.get("eta"), "static": mc.get("static", False),
                     "diagonal": mc.get("diagonal", False), "prior_steps": mc.get("prior_steps", 0),
                     "old_ppl": res["avg_test_perplexity"],
                     "new_ppl": None if new_res is None else new_res["avg_test_perplexity"],
                     "new_minus_old": None if new_res is None else
                     new_res["avg_test_perplexity"] - res["avg_test_perplexity"],
                     "old_run_id": res["run_id"][:20], "new_run_id": None if new_res is None else new_res["run_id"][:20],
                     **{f"old_{g}": v for g, v in res["test_perplexity"].items()},
                     **({} if new_res is None else {f"new_{g}": v for g, v in new_res["test_perplexity"].items()})})
    df = pd.DataFrame(rows).sort_values(["run", "seed"]).reset_index(drop=True)
    out = Path(args.out) if args.out else REPO / "results" / args.profile / "lp_slots_old_vs_new.csv"
    df.to_csv(out, index=False)
    print(df[["run", "seed", "old_ppl", "new_ppl", "new_minus_old"]].to_string(index=False))
    print(f"{df.new_ppl.notna().sum()} of {len(df)} old runs have their balanced-rule run; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
