"""Why RegMix wins or loses (notebook 04, beside finding F1): does the mixture its proxies prefer beat uniform at
the proxies' own scale, on a seed the fit never saw, and at the final model's scale?

RegMix picks a mixture with proxies, a smaller model trained for S/8 steps, and trusts that what lowers their
validation loss lowers the final model's. Three things can break that, and this study separates them per
(setting, seed), from the cached Table 2 runs plus four proxy runs:

* **the regression**: ``cv_spearman``, the out-of-fold Spearman correlation of the LightGBM fit with the proxies' own
  losses (``regmix.cross_validated_spearman``). Near 0, the fit cannot rank mixtures even where it was trained;
* **the seed's luck**: the proxy recipe trained on RegMix's chosen mixture and on the uniform one, once at the fit's
  seed (``proxy_loss_diff_fit_seed``) and once at a fresh one (``proxy_loss_diff``, seed + ``FRESH_SEED_OFFSET``).
  The fit's proxies share their seed's initialisation and data order (common random numbers), so the best of
  100,000 predictions also picks whatever that seed happened to favour; re-scored at the same seed, the choice keeps
  that luck (the winner's curse), at a fresh seed it does not. A gain at the fit's seed that vanishes at a fresh one
  was the seed's, not the mixture's;
* **the transfer**: ``final_loss_diff``, RegMix's final run minus stratified's, the same measure at the final scale.
  A choice that wins at the proxies' scale on a fresh seed and loses at the final one is a transfer gap.

Differences are chosen - uniform (or RegMix - stratified) in the mean validation loss over groups, paired by seed;
:func:`summarise` gives each setting's mean with a paired t-interval and the mean over settings with a stratified
one. The uniform proxy stands in for stratified sampling at the proxies' scale (a static uniform run draws groups at
random; stratified gives exact counts), so at the final scale the two baselines differ slightly in kind, not in
mixture.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .branching import as_setting, skip_unfinished, study_runner
from .executors import NotCachedError, Runner
from .methods import regmix_proxies, regmix_proxy_config, run_method, setting_groups
from .profiles import get_profile
from .regmix import cross_validated_spearman
from .stats import paired_ci, stratified_ci

__all__ = ["transfer_study", "summarise", "FRESH_SEED_OFFSET"]

FRESH_SEED_OFFSET = 1000
"""The transfer check's proxy pair trains at ``seed + 1000``, a seed no study of the profile uses."""
_PART = "RegMix transfer check (extension)"
"""How ``df.attrs["missing"]`` names an unfinished row: an extension method's part (``verdicts.extension_part``)
that is not one of F1's Table 2 studies (those start with "regmix/")."""


def _mean_val_loss(result: dict, groups: list[str]) -> float:
    return float(np.mean([result["val_loss"][g] for g in groups]))


def transfer_study(settings, profile: str, seeds=None, runner: Runner | None = None) -> pd.DataFrame:
    """One row per (setting, seed) whose RegMix and stratified runs have finished: the regression's in-sample and
    out-of-fold Spearman, the proxy-scale (fresh and fit seed) and final-scale loss differences, and Table 2's
    relative perplexity difference. Trains the four proxy runs per row (cached); a cache-only runner leaves
    unfinished rows out and lists them in ``df.attrs["missing"]``."""
    runner = study_runner(runner)
    seeds = list(get_profile(profile).seeds if seeds is None else seeds)
    studies, missing = [], []
    for s in settings:
        st = as_setting(s)
        groups = setting_groups(st, profile)
        for seed in seeds:
            try:
                regmix = run_method("regmix", st, profile, seed, runner)
                strat = run_method("stratified", st, profile, seed, runner).final
            except NotCachedError:
                skip_unfinished(runner, missing, f"{_PART}/{st.label}/seed {seed}")
                continue
            plan = regmix_proxies(st, profile, seed)[0]
            # chosen and uniform at a fresh seed, then at the fit's own seed
            pair = [regmix_proxy_config(plan, profile, groups, proxy_seed, p)
                    for proxy_seed in (seed + FRESH_SEED_OFFSET, seed)
                    for p in (regmix.proportions, np.full(len(groups), 1.0 / len(groups)))]
            studies.append((st, seed, groups, plan, regmix, strat, pair))
    if not runner.cached_only:  # every proxy pair at once, so that a pool of workers trains them side by side
        runner.run([c for *_, pair in studies for c in pair])
    rows = []
    for st, seed, groups, plan, regmix, strat, pair in studies:
        try:
            chosen, uniform, chosen_fit_seed, uniform_fit_seed = runner.run(pair)
        except NotCachedError:
            skip_unfinished(runner, missing, f"{_PART}/{st.label}/seed {seed}")
            continue
        d = regmix.details
        rows.append({
            "setting": st.key, "label": st.label, "seed": seed, "proxy_seed": seed + FRESH_SEED_OFFSET,
            "m": len(groups),
            "fit_spearman": d["fit_spearman"],
            "cv_spearman": cross_validated_spearman(d["proxy_proportions"], d["proxy_val_loss"], seed, plan),
            "proxy_loss_regmix": _mean_val_loss(chosen, groups), "proxy_loss_uniform": _mean_val_loss(uniform, groups),
            "proxy_loss_diff_fit_seed": (_mean_val_loss(chosen_fit_seed, groups)
                                         - _mean_val_loss(uniform_fit_seed, groups)),
            "final_loss_regmix": _mean_val_loss(regmix.final, groups),
            "final_loss_stratified": _mean_val_loss(strat, groups),
            "final_ppl_log_ratio": float(np.log(regmix.final["avg_test_perplexity"] / strat["avg_test_perplexity"])),
        })
    df = pd.DataFrame(rows)
    if len(df):
        df["proxy_loss_diff"] = df.proxy_loss_regmix - df.proxy_loss_uniform
        df["final_loss_diff"] = df.final_loss_regmix - df.final_loss_stratified
    df.attrs["missing"] = missing
    return df


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per setting and pooled over settings: mean out-of-fold Spearman, and the proxy-scale (at the fit's seed and at
    a fresh one) and final-scale loss differences with 95% intervals (paired over seeds per setting; stratified by
    setting when pooled)."""
    cols = ("proxy_loss_diff_fit_seed", "proxy_loss_diff", "final_loss_diff", "final_ppl_log_ratio")
    rows = []
    for (key, label), g in df.groupby(["setting", "label"], sort=False):
        row = {"setting": key, "label": label, "seeds": len(g), "cv_spearman": g.cv_spearman.mean()}
        for c in cols:
            row[c], row[f"{c} low"], row[f"{c} high"] = paired_ci(g[c])
        rows.append(row)
    if len(df):
        row = {"setting": "pooled", "label": "pooled", "seeds": int(df.groupby("setting").size().min()),
               "cv_spearman": df.groupby("setting").cv_spearman.mean().mean()}
        for c in cols:
            ci = stratified_ci(df[c], df.setting)
            row[c], row[f"{c} low"], row[f"{c} high"] = ci["mean"], ci["low"], ci["high"]
        rows.append(row)
    return pd.DataFrame(rows)
