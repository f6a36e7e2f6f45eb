#!/usr/bin/env python
"""Is our recipe hypersensitive to what the first steps see? Controls for Aioli-static's loss, paired by seed.

Aioli-static spends only its first m·k·S_lp steps (14 on SlimPajama) in LearnParams, inside the warm-up, yet loses
3-4 perplexity to stratified there. These runs separate "the one block of smoothed one-hot batches" from "the
mixture Aioli learns from it", and "when the block comes" from "how the recipe warms up":

- ``lp_block_0``: stratified sampling with one LearnParams-style block at step 0 (Aioli-static with eta = 0, so the
  mixture never leaves uniform; the block uses the balanced slot rule);
- ``lp_block_100``: the same block at step 100 (the uniform mixture is trained first, through Aioli's prior);
- ``stratified_wu100`` and ``lp_block_0_wu100``: stratified and the step-0 block with a 100-step warm-up (the
  recipe warms up over 30 of 1,000 steps, 3%; the paper over 500 of 5,000, 10%).

    python scripts/early_steps_control.py --profile full --setting slimpajama --jobs 2   # -> results/full/early_steps_*

Writes the per-seed test perplexities (``early_steps_SETTING.csv``), paired differences with 95% intervals
(``..._summary.csv``) and the gap in mean validation loss to the matching stratified run at every evaluation
(``..._by_step.csv``). None of these is a configuration of the paper; they are controls.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WARMUP_LONG = 100


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="full")
    ap.add_argument("--setting", default="slimpajama")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the profile's seeds")
    ap.add_argument("--jobs", type=int, default=None, help="default: the profile's")
    ap.add_argument("--block-step", type=int, default=100, help="where the late block starts")
    ap.add_argument("--cached-only", action="store_true", help="train nothing; fail if a run is missing")
    ap.add_argument("--out", default=None, help="folder for the CSVs (default: results/PROFILE)")
    ap.add_argument("--runs-dir", default=None, help="default: the project's runs directory")
    args = ap.parse_args(argv)

    import pandas as pd

    from aioli_repro import hparams
    from aioli_repro.methods import Runner, run_method, setting_groups
    from aioli_repro.profiles import get_profile, profile_config
    from aioli_repro.report import run_metrics
    from aioli_repro.tables import paired_ci

    prof = get_profile(args.profile)
    st = hparams.get_setting(args.setting)
    groups = setting_groups(st, args.profile)
    m, S = len(groups), prof.train.steps
    seeds = args.seeds if args.seeds is not None else list(prof.seeds)
    runner = Runner(jobs=args.jobs or prof.jobs, runs_dir=args.runs_dir, progress=False,
                    cached_only=args.cached_only)
    block = hparams.aioli_config(m, S, static=True, eta=0.0)
    late = {"prior": [1.0 / m] * m, "prior_steps": args.block_step}
    variants = {  # column -> (run name, method, method config, train overrides)
        "lp_block_0": ("lp-block-0", "aioli", block, {}),
        f"lp_block_{args.block_step}": (f"lp-block-{args.block_step}", "aioli", {**block, **late}, {}),
        "stratified_wu100": ("stratified-wu100", "stratified", {}, {"warmup_steps": WARMUP_LONG}),
        "lp_block_0_wu100": ("lp-block-0-wu100", "aioli", block, {"warmup_steps": WARMUP_LONG}),
    }
    cfgs = [profile_config(args.profile, groups, method, seed, mc, name=name, **train)
            for name, method, mc, train in variants.values() for seed in seeds]
    done = runner.run(cfgs)
    runs = {(col, seed): done[i * len(seeds) + k] for i, col in enumerate(variants) for k, seed in enumerate(seeds)}
    rows, curves = [], []
    for seed in seeds:
        found = {col: runs[(col, seed)] for col in variants}
        found["stratified"] = run_method("stratified", st, args.profile, seed, runner).final
        found["aioli_static"] = run_method("aioli_static", st, args.profile, seed, runner).final
        rows.append({"setting": st.key, "label": st.label, "seed": seed,
                     **{col: res["avg_test_perplexity"] for col, res in found.items()},
                     "block_steps": found["lp_block_0"]["learn_params_steps"]})
        # Mean validation loss over the groups at every evaluation, per run.
        mean_val = {col: run_metrics(res, runner.runs_dir).groupby("step")["val_loss"].mean()
                    for col, res in found.items()}
        for col in found:
            if col.startswith("stratified"):
                continue
            base = "stratified_wu100" if col.endswith("wu100") else "stratified"
            gap = (mean_val[col] - mean_val[base]).dropna()
            curves += [{"seed": seed, "run": f"{col} - {base}", "step": int(t), "gap": float(g)}
                       for t, g in gap.items() if t > 0]
    df = pd.DataFrame(rows)
    compared = [("lp_block_0", "stratified"), (f"lp_block_{args.block_step}", "stratified"),
                ("aioli_static", "stratified"), ("aioli_static", "lp_block_0"),
                ("stratified_wu100", "stratified"), ("lp_block_0_wu100", "stratified_wu100")]
    summary = []
    for a, b in compared:
        mean, lo, hi = paired_ci(df[a] - df[b])
        summary.append({"compared": f"{a} - {b}", "mean": mean, "ci_low": lo, "ci_high": hi, "seeds": len(df)})
    for col in ("stratified", "stratified_wu100"):  # the recipe's own seed spread
        summary.append({"compared": f"{col}: seed sd", "mean": float(df[col].std(ddof=1)), "ci_low": float("nan"),
                        "ci_high": float("nan"), "seeds": len(df)})
    out = Path(args.out) if args.out else REPO / "results" / args.profile
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"early_steps_{st.key}.csv", index=False)
    pd.DataFrame(summary).to_csv(out / f"early_steps_{st.key}_summary.csv", index=False)
    by_step = pd.DataFrame(curves).pivot_table(index="step", columns="run", values="gap", aggfunc="mean")
    by_step.round(4).to_csv(out / f"early_steps_{st.key}_by_step.csv")
    print(df.to_string(index=False))
    print(pd.DataFrame(summary).to_string(index=False))
    print(by_step.round(4).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
