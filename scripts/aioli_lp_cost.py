#!/usr/bin/env python
"""Diagnose what Aioli's LearnParams costs: Aioli with eta = 0 beside Aioli and stratified, paired by seed.

With eta = 0 the exponentiated-gradient update never moves the mixture, so the run keeps LearnParams' schedule (the
same blocks of smoothed one-hot batches at the start of every round) on a uniform mixture. If it loses to stratified
by what Aioli loses, the loss comes from the schedule, not from the mixture Aioli learns.

    python scripts/aioli_lp_cost.py --profile full --setting slimpajama --jobs 2   # -> results/full/aioli_lp_cost_*.csv

Besides the test perplexities (``aioli_lp_cost_SETTING.csv`` and its paired summary), it writes the gap in mean
validation loss to stratified at every evaluation (``..._by_step.csv``): when in the run the loss is paid.

``--lp-start T`` adds two runs per seed with LearnParams held back for the first T steps (the uniform mixture is
trained first, through Aioli's ``prior``/``prior_steps``, the paper's p_init and S_init; the rounds after it keep
their length): eta = 0, and Aioli itself (its configured eta). If the eta = 0 run does not lose, the loss comes from
LearnParams' first blocks, early in the run, rather than from its share of it; the Aioli run then says whether Aioli
gains once those blocks move past the start. Neither is the paper's configuration for Table 2: report them as
variants.
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
    ap.add_argument("--lp-start", type=int, default=0,
                    help="also run eta = 0 with LearnParams from this step on (0: do not)")
    ap.add_argument("--cached-only", action="store_true", help="train nothing; fail if a run is missing")
    ap.add_argument("--out", default=None, help="folder for the CSVs (default: results/PROFILE)")
    ap.add_argument("--runs-dir", default=None, help="default: the project's runs directory")
    args = ap.parse_args(argv)

    import pandas as pd

    from aioli_repro import hparams
    from aioli_repro.methods import Runner, run_method, setting_groups
    from aioli_repro.profiles import get_profile, profile_config
    from aioli_repro.tables import paired_ci

    prof = get_profile(args.profile)
    st = hparams.get_setting(args.setting)
    groups = setting_groups(st, args.profile)
    m, S = len(groups), prof.train.steps
    if not 0 <= args.lp_start < S:
        raise SystemExit(f"--lp-start must lie in [0, {S}), got {args.lp_start}")
    seeds = args.seeds if args.seeds is not None else list(prof.seeds)
    runner = Runner(jobs=args.jobs or prof.jobs, runs_dir=args.runs_dir, progress=False,
                    cached_only=args.cached_only)
    variants = {"aioli_eta0": ("aioli-eta0", hparams.aioli_config(m, S, eta=0.0))}
    if args.lp_start:
        late = {"prior": [1.0 / m] * m, "prior_steps": args.lp_start}
        variants["aioli_eta0_late"] = (f"aioli-eta0-lp{args.lp_start}", hparams.aioli_config(m, S, eta=0.0, **late))
        variants["aioli_late"] = (f"aioli-lp{args.lp_start}", hparams.aioli_config(m, S, **late))
    cfgs = [profile_config(args.profile, groups, "aioli", seed, mc, name=name)
            for name, mc in variants.values() for seed in seeds]
    done = runner.run(cfgs)  # the new runs first, in parallel; the others are normally cached
    runs = {(col, seed): done[i * len(seeds) + k] for i, col in enumerate(variants) for k, seed in enumerate(seeds)}
    rows, curves = [], []
    for seed in seeds:
        strat = run_method("stratified", st, args.profile, seed, runner).final
        aioli = run_method("aioli", st, args.profile, seed, runner).final
        fr = runs[("aioli_eta0", seed)]
        row = {"setting": st.key, "label": st.label, "seed": seed,
               "stratified": strat["avg_test_perplexity"], "aioli": aioli["avg_test_perplexity"],
               "aioli_eta0": fr["avg_test_perplexity"], "learn_params_steps": fr["learn_params_steps"],
               "steps": fr["steps"], "aioli_eta0_run_id": fr["run_id"],
               # how far each run's mixture ever moved from uniform (0 for the frozen one, by construction)
               "aioli_eta0_max_dev": _max_deviation(fr, m), "aioli_max_dev": _max_deviation(aioli, m)}
        if args.lp_start:
            late, moving = runs[("aioli_eta0_late", seed)], runs[("aioli_late", seed)]
            row.update(aioli_eta0_late=late["avg_test_perplexity"], late_learn_params_steps=late["learn_params_steps"],
                       late_lp_start=args.lp_start, aioli_eta0_late_run_id=late["run_id"],
                       aioli_eta0_late_max_dev=_max_deviation(late, m),
                       aioli_late=moving["avg_test_perplexity"], aioli_late_run_id=moving["run_id"],
                       aioli_late_max_dev=_max_deviation(moving, m))
        rows.append(row)
        # When is the loss paid? The gap in mean validation loss to stratified at every evaluation of the run.
        base = _val_curve(strat, runner.runs_dir)
        for col, res in [("aioli", aioli)] + [(c, runs[(c, seed)]) for c in variants]:
            curve = _val_curve(res, runner.runs_dir)
            curves += [{"seed": seed, "run": col, "step": t, "val_loss_minus_stratified": curve[t] - base[t]}
                       for t in sorted(curve) if t in base and t > 0]
    df = pd.DataFrame(rows)
    summary = []
    for col in ("aioli", *variants):
        mean, lo, hi = paired_ci(df[col] - df["stratified"])
        summary.append({"compared": f"{col} - stratified", "mean": mean, "ci_low": lo, "ci_high": hi,
                        "seeds": len(df)})
    pairs = [("aioli", "aioli_eta0")] + ([("aioli_eta0", "aioli_eta0_late"), ("aioli", "aioli_late")]
                                         if args.lp_start else [])
    for a, b in pairs:
        mean, lo, hi = paired_ci(df[a] - df[b])
        summary.append({"compared": f"{a} - {b}", "mean": mean, "ci_low": lo, "ci_high": hi, "seeds": len(df)})
    out = Path(args.out) if args.out else REPO / "results" / args.profile
    out.mkdir(parents=True, exist_ok=True)
    suffix = f"_lp{args.lp_start}" if args.lp_start else ""  # the plain diagnosis keeps its own files
    df.to_csv(out / f"aioli_lp_cost_{st.key}{suffix}.csv", index=False)
    pd.DataFrame(summary).to_csv(out / f"aioli_lp_cost_{st.key}{suffix}_summary.csv", index=False)
    by_step = pd.DataFrame(curves).pivot_table(index="step", columns="run", values="val_loss_minus_stratified",
                                               aggfunc="mean")[["aioli", *variants]]
    by_step.columns = [f"{c} - stratified (mean val loss, nats; mean over seeds)" for c in by_step.columns]
    by_step.round(4).to_csv(out / f"aioli_lp_cost_{st.key}{suffix}_by_step.csv")
    print(df.to_string(index=False))
    print(pd.DataFrame(summary).to_string(index=False))
    print(by_step.round(4).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
