#!/usr/bin/env python
"""Diagnose what Aioli's LearnParams costs: Aioli with eta = 0 beside Aioli and stratified, paired by seed.

With eta = 0 the exponentiated-gradient update never moves the mixture, so the run keeps LearnParams' schedule (the
same blocks of smoothed one-hot batches at the start of every round) on a uniform mixture. If it loses to stratified
by what Aioli loses, the loss comes from the schedule, not from the mixture Aioli learns.

    python scripts/aioli_lp_cost.py --profile full --setting slimpajama --jobs 2   # -> results/full/aioli_lp_cost_*.csv

Besides the test perplexities (``aioli_lp_cost_SETTING.csv`` and its paired summary), it writes the gap in mean
validation loss to stratified at every evaluation (``..._by_step.csv``): when in the run the loss is paid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _max_deviation(result: dict, m: int) -> float:
    return max(abs(x - 1 / m) for h in result["policy"]["history"] for x in h["proportions"])


def _val_curve(result: dict, runs_dir: str) -> dict[int, float]:
    """Step -> mean validation loss over the groups, from the run's metrics (restored from the committed result
    cache when this machine never trained the run)."""
    import numpy as np

    from aioli_repro.runs import RunDir

    run = RunDir.from_result(result, runs_dir)
    return {int(m["step"]): float(np.mean(list(m["val_loss"].values())))
            for m in run.read_metrics() if "val_loss" in m}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="full")
    ap.add_argument("--setting", default="slimpajama")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the profile's seeds")
    ap.add_argument("--jobs", type=int, default=None, help="default: the profile's")
    ap.add_argument("--cached-only", action="store_true", help="train nothing; fail if a run is missing")
    ap.add_argument("--out", default=None, help="folder for the CSVs (default: results/PROFILE)")
    ap.add_argument("--runs-dir", default=None, help="default: the project's runs directory")
    args = ap.parse_args(argv)

    import pandas as pd

    from aioli_repro import hparams
    from aioli_repro.methods import Runner, run_method
    from aioli_repro.profiles import get_profile, profile_config
    from aioli_repro.tables import paired_ci

    prof = get_profile(args.profile)
    st = hparams.get_setting(args.setting)
    groups = st.paper_groups if prof.data.corpus == "slimpajama" else st.groups
    m, S = len(groups), prof.train.steps
    seeds = args.seeds if args.seeds is not None else list(prof.seeds)
    runner = Runner(jobs=args.jobs or prof.jobs, runs_dir=args.runs_dir, progress=False,
                    cached_only=args.cached_only)
    frozen = [profile_config(args.profile, groups, "aioli", seed, hparams.aioli_config(m, S, eta=0.0),
                             name="aioli-eta0") for seed in seeds]
    frozen_res = runner.run(frozen)  # the new runs first, in parallel; the others are normally cached
    rows, curves = [], []
    for seed, fr in zip(seeds, frozen_res):
        strat = run_method("stratified", st, args.profile, seed, runner).final
        aioli = run_method("aioli", st, args.profile, seed, runner).final
        rows.append({"setting": st.key, "label": st.label, "seed": seed,
                     "stratified": strat["avg_test_perplexity"], "aioli": aioli["avg_test_perplexity"],
                     "aioli_eta0": fr["avg_test_perplexity"], "learn_params_steps": fr["learn_params_steps"],
                     "steps": fr["steps"], "aioli_eta0_run_id": fr["run_id"],
                     # how far each run's mixture ever moved from uniform (0 for the frozen one, by construction)
                     "aioli_eta0_max_dev": _max_deviation(fr, m), "aioli_max_dev": _max_deviation(aioli, m)})
        # When is the loss paid? The gap in mean validation loss to stratified at every evaluation of the run.
        base = _val_curve(strat, runner.runs_dir)
        for col, res in (("aioli", aioli), ("aioli_eta0", fr)):
            curve = _val_curve(res, runner.runs_dir)
            curves += [{"seed": seed, "run": col, "step": t, "val_loss_minus_stratified": curve[t] - base[t]}
                       for t in sorted(curve) if t in base and t > 0]
    df = pd.DataFrame(rows)
    summary = []
    for col in ("aioli", "aioli_eta0"):
        mean, lo, hi = paired_ci(df[col] - df["stratified"])
        summary.append({"compared": f"{col} - stratified", "mean": mean, "ci_low": lo, "ci_high": hi,
                        "seeds": len(df)})
    mean, lo, hi = paired_ci(df["aioli"] - df["aioli_eta0"])
    summary.append({"compared": "aioli - aioli_eta0", "mean": mean, "ci_low": lo, "ci_high": hi, "seeds": len(df)})
    out = Path(args.out) if args.out else REPO / "results" / args.profile
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"aioli_lp_cost_{st.key}.csv", index=False)
    pd.DataFrame(summary).to_csv(out / f"aioli_lp_cost_{st.key}_summary.csv", index=False)
    by_step = pd.DataFrame(curves).pivot_table(index="step", columns="run", values="val_loss_minus_stratified",
                                               aggfunc="mean")
    by_step.columns = [f"{c} - stratified (mean val loss, nats; mean over seeds)" for c in by_step.columns]
    by_step.round(4).to_csv(out / f"aioli_lp_cost_{st.key}_by_step.csv")
    print(df.to_string(index=False))
    print(pd.DataFrame(summary).to_string(index=False))
    print(by_step.round(4).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
