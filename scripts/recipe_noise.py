"""Measure seed-to-seed noise of candidate CPU recipes: the evidence the `full` profile's recipe rests on.

For each recipe (model preset, context, steps) and setting, trains uniform (stratified) and one skewed static
mixture for several seeds and reports, per recipe:
  * the mean and sd over seeds of stratified average test perplexity, and sd / mean (target <= 1%);
  * the sd over seeds of the paired difference skewed - uniform (what a paired comparison's power rests on);
  * the wall time per run on this machine (with ``--jobs`` runs at once).

    python scripts/recipe_noise.py                      # the default candidates, seeds 0-3
    python scripts/recipe_noise.py --seeds 0 1 2 --recipes 300k:128:500 1m:256:1000

Runs go through the run cache, so a rerun only re-renders. Writes results/bench/recipe_noise{,_summary}.csv.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aioli_repro.config import DataConfig, ModelConfig, RunConfig  # noqa: E402
from aioli_repro.executors import Runner  # noqa: E402
from aioli_repro.hparams import get_setting  # noqa: E402
from aioli_repro.profiles import get_profile  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "bench"


def recipe_config(recipe: str, groups, proportions, seed: int) -> RunConfig:
    preset, context, steps, *flags = recipe.split(":")
    base = get_profile("full").train
    eval_every = max(1, int(steps) // 10)
    t = dataclasses.replace(base, steps=int(steps), seed=seed, eval_every=eval_every, checkpoint_every=eval_every,
                            test_max_sequences=0, fused_loss="fused" in flags)
    return RunConfig(data=DataConfig(groups=tuple(groups), context_length=int(context)), model=ModelConfig(preset),
                     train=t, method="static", method_config={"proportions": list(proportions)},
                     name="recipe-noise")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=["300k:128:500", "300k:128:1000"],
                    help="preset:context:steps[:fused] (batch 8 sequences, the full profile's optimiser)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (one torch thread each when 2)")
    ap.add_argument("--settings", nargs="+", default=["arxiv_stackexchange", "book_stackexchange"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    ap.add_argument("--skew", type=float, default=0.75, help="first group's share in the skewed mixture")
    args = ap.parse_args(argv)

    keys, cfgs = [], []
    for recipe in args.recipes:
        for setting in args.settings:
            groups = get_setting(setting).groups
            m = len(groups)
            mixtures = {"uniform": [1 / m] * m,
                        "skewed": [args.skew] + [(1 - args.skew) / (m - 1)] * (m - 1)}
            for seed in args.seeds:
                for name, p in mixtures.items():
                    keys.append((recipe, setting, seed, name))
                    cfgs.append(recipe_config(recipe, groups, p, seed))
    results = Runner(jobs=args.jobs).run(cfgs)
    rows = [{"recipe": recipe, "setting": setting, "seed": seed, "mixture": name,
             "avg_test_perplexity": r["avg_test_perplexity"],
             "wall_time_s": r["wall_time_s"] + r.get("eval_time_s", 0.0), "jobs": args.jobs,
             "tokens_per_s": r["train_tokens_per_s"], "run_id": r["run_id"][:20]}
            for (recipe, setting, seed, name), r in zip(keys, results)]
    df = pd.DataFrame(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    df.to_csv(OUT / "recipe_noise.csv", index=False)

    summary = []
    for (recipe, setting), d in df.groupby(["recipe", "setting"], sort=False):
        u = d[d.mixture == "uniform"].set_index("seed").avg_test_perplexity
        s = d[d.mixture == "skewed"].set_index("seed").avg_test_perplexity
        diff = (s - u).dropna()
        summary.append({"recipe": recipe, "setting": setting, "seeds": len(u),
                        "stratified_mean": round(u.mean(), 3), "stratified_sd": round(u.std(ddof=1), 3),
                        "sd_over_mean_pct": round(100 * u.std(ddof=1) / u.mean(), 2),
                        "skewed_minus_uniform_mean": round(diff.mean(), 3),
                        "paired_diff_sd": round(diff.std(ddof=1), 3),
                        "s_per_run": round(float(d.wall_time_s.mean()), 1)})
    out = pd.DataFrame(summary)
    out.to_csv(OUT / "recipe_noise_summary.csv", index=False)
    print(out.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
