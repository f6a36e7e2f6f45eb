"""Table 2b: every method on settings where mixing matters (notebook 11).

Table 2's settings leave the best static mixture within 0.08-1.7% of uniform at our scale, so no method can be seen
to find it. Notebook 10 screens pairs of the embedded groups, confirms the best on full-recipe sweeps and writes the
chosen settings with their best swept mixture p* (``10_headroom_settings.csv``, chosen on validation losses of the
confirmation seeds). Here every method, both Aioli ablations and the two extension methods train on those settings
at *fresh* seeds (``headroom.stage_seeds``), and the question is the one a user of a mixing method asks: where a
better mixture exists, does the method find it?

Per setting and seed, the headroom is H = ppl(stratified) - ppl(p*) in average test perplexity (``best_static``: a
static run on p*, fixed before these seeds were drawn), and a method's gain is G = ppl(stratified) - ppl(method).
The share of the headroom it captures is mean(G) / mean(H), with Fieller's interval (``stats.ratio_ci``), which is
unbounded exactly when H itself is not significantly above 0 on these seeds: then nothing can be said.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from . import hparams
from .errors import ConfigError
from .executors import NotCachedError, Runner
from .headroom import SETTINGS_FILE
from .methods import setting_groups
from .profiles import get_profile, profile_config
from .report import results_dir
from .stats import paired_ci, ratio_ci
from .tables import ABLATIONS, BASELINES, EXTENSION_METHODS, run_grid

METHODS = ("stratified", *BASELINES, *ABLATIONS, *EXTENSION_METHODS)
"""Every method of Table 2, both Aioli ablations, and the extension methods."""
BEST_STATIC = "best_static"
"""The static run on notebook 10's p*: the mixture the headroom is measured to."""
MOST = 0.5
"""A method "finds most of the headroom" when its share's interval lies above this."""
FINDS, MISSES, INCONCLUSIVE, CANNOT_DECIDE = ("finds most of it", "misses most of it", "inconclusive",
                                              "cannot decide")


class NoConfirmedSetting(ConfigError):
    """Notebook 10 ran, but no candidate's headroom was confirmed at full length: there is no setting where a
    better mixture is known to exist, so Table 2b has nothing to test and F3 cannot be decided."""


def read_settings(profile: str, confirmed_only: bool = True) -> pd.DataFrame:
    """The settings notebook 10 selected under ``profile`` (with p*), in its order. ``confirmed_only=False`` (smoke
    and quick: pipeline demonstrations whose short runs and two seeds confirm nothing) falls back to the candidate
    with the largest validation gain, so that the pipeline still runs end to end; the verdicts then say "cannot
    decide" unless p*'s gain shows on the test seeds."""
    path = results_dir(profile) / SETTINGS_FILE
    if not path.exists():  # NotCachedError: a render from the cache skips the notebook until notebook 10 has chosen
        raise NotCachedError(f"{path} does not exist: notebook 10 (headroom search) chooses Table 2b's settings; "
                             f"run it first under the {profile!r} profile")
    table = pd.read_csv(path)
    chosen = table[table.selected.astype(bool)].reset_index(drop=True)
    if chosen.empty and not confirmed_only and len(table):
        print(f"no candidate confirmed under {profile!r}; using the largest validation gain, unconfirmed")
        screened = table[table.role != "control"] if "role" in table else table  # a control is never a setting
        chosen = screened.sort_values("val_gain_pct", ascending=False, kind="stable").head(1).reset_index(drop=True)
    if chosen.empty:
        raise NoConfirmedSetting(f"{path} selects no setting: no candidate's headroom was confirmed on the "
                                 "confirmation seeds, so there is no setting where a better mixture is known to exist")
    return chosen


def best_static_config(setting: str, p_star, profile: str, seed: int):
    """The static run on p*. Its config is the one of the sweep point p* in any sweep (the display name does not
    enter the run id), so grid search's sweep on the same seed trains it already."""
    groups = setting_groups(hparams.get_setting(setting), profile)
    return profile_config(profile, groups, "static", seed, {"proportions": [float(x) for x in p_star]},
                          name="best-static")


def best_static_rows(settings: pd.DataFrame, profile: str, seeds, runner: Runner) -> tuple[list[dict], list[str]]:
    """One row per (setting, seed) of the static run on p*, like ``run_grid``'s rows; and the ones not finished
    (``runner.cached_only``)."""
    rows, missing = [], []
    for st in settings.itertuples():
        p_star = json.loads(st.p_star)
        for seed in seeds:
            try:
                res = runner.run_one(best_static_config(st.setting, p_star, profile, seed))
            except NotCachedError:
                if not runner.cached_only:
                    raise
                missing.append(f"{BEST_STATIC}/{st.setting}/seed {seed}")
                continue
            rows.append({"setting": st.setting, "label": hparams.get_setting(st.setting).label,
                         "method": BEST_STATIC, "seed": seed, "avg_test_perplexity": res["avg_test_perplexity"],
                         "avg_val_perplexity": res["avg_val_perplexity"], "proportions": p_star,
                         "group_test_perplexity": json.dumps({g: round(v, 3)
                                                              for g, v in res["test_perplexity"].items()}),
                         "extra_runs": 0, "extra_steps": 0, "extra_tokens": 0, "extra_flops": 0.0,
                         "run_id": res["run_id"]})
    return rows, missing


def run(settings: pd.DataFrame, profile: str, seeds, jobs: int = 1, methods=METHODS,
        cached_only: bool = False) -> pd.DataFrame:
    """Every (method, setting, seed) of Table 2b plus the static run on p*; ``df.attrs["missing"]`` lists what a
    ``cached_only`` render did not find."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or "stratified" not in methods:
        raise ConfigError(f"Table 2b methods must include 'stratified' and come from {list(METHODS)}; got {unknown}")
    keys = list(settings.setting)
    try:
        df = run_grid(list(methods), keys, profile, seeds, jobs=jobs, cached_only=cached_only)
        missing = list(df.attrs["missing"])
    except NotCachedError:
        if not cached_only:
            raise
        df, missing = pd.DataFrame(), [f"{m}/{s}/seed {seed}" for seed in seeds for s in keys for m in methods]
    best, best_missing = best_static_rows(settings, profile, seeds, Runner(jobs=jobs, progress=False,
                                                                            cached_only=cached_only))
    out = pd.concat([df, pd.DataFrame(best)], ignore_index=True)
    if out.empty:
        raise NotCachedError(f"no Table 2b run of {profile} is in the run cache yet; run notebook 11 without "
                             "cached_only")
    out = out.sort_values(["setting", "method", "seed"]).reset_index(drop=True)
    out.attrs["missing"] = missing + best_missing
    return out


def share_verdict(share_low: float, share_high: float, headroom_low: float) -> str:
    """The rule: cannot decide when the headroom's own interval does not exclude 0 (or one seed gives none); finds
    most of it when the share's interval lies above ``MOST``; misses most of it when it lies below; else
    inconclusive. A method identical to stratified has a true share of 0: it prints "finds most" with probability
    at most 2.5% (the interval's upper tail), and "misses most" whenever the headroom is measured well enough."""
    if not np.isfinite(headroom_low) or headroom_low <= 0:
        return CANNOT_DECIDE
    if share_low > MOST:
        return FINDS
    if share_high < MOST:
        return MISSES
    return INCONCLUSIVE


def share_table(runs: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (setting, method): the paired gain over stratified G (test perplexity, positive = better), the headroom H
    to p* on the same seeds, and the share mean(G)/mean(H) with Fieller's interval and the rule's verdict. Only
    seeds where stratified, p* and the method all finished are paired."""
    rows = []
    for setting, sub in runs.groupby("setting", sort=False):
        ppl = sub.pivot_table(index="seed", columns="method", values="avg_test_perplexity")
        if "stratified" not in ppl or BEST_STATIC not in ppl:
            continue
        # p* itself last: its share is 1 by construction, the row shows the headroom it is measured against
        for method in [m for m in (*METHODS, BEST_STATIC) if m != "stratified" and m in ppl]:
            both = ppl[list(dict.fromkeys(["stratified", BEST_STATIC, method]))].dropna()
            gain = (both.stratified - both[method]).to_numpy()
            room = (both.stratified - both[BEST_STATIC]).to_numpy()
            g_mean, g_low, g_high = paired_ci(gain, level)
            h_mean, h_low, h_high = paired_ci(room, level)
            share, s_low, s_high = ratio_ci(gain, room, level)
            rows.append({"setting": setting, "label": hparams.get_setting(setting).label, "method": method,
                         "seeds": len(both), "ppl_stratified": float(both.stratified.mean()),
                         "gain": g_mean, "gain_low": g_low, "gain_high": g_high,
                         "headroom": h_mean, "headroom_low": h_low, "headroom_high": h_high,
                         "headroom_pct": 100 * h_mean / float(both.stratified.mean()),
                         "share": share, "share_low": s_low, "share_high": s_high,
                         "verdict": share_verdict(s_low, s_high, h_low)})
    return pd.DataFrame(rows)


def table2b(share: pd.DataFrame) -> pd.DataFrame:
    """Rows = methods, columns = settings: the gain over stratified with its interval, and the share of the headroom
    captured with its interval (``-`` where unbounded)."""
    def interval(lo, hi, fmt):
        return "-" if not (np.isfinite(lo) and np.isfinite(hi)) else f"[{lo:{fmt}}, {hi:{fmt}}]"
    out = []
    for method in [m for m in (*METHODS, BEST_STATIC) if m in set(share.method)]:
        row = {"method": method}
        for r in share[share.method == method].itertuples():
            row[f"{r.label} gain"] = f"{r.gain:+.2f} {interval(r.gain_low, r.gain_high, '+.2f')}"
            row[f"{r.label} share"] = (f"{r.share:.2f} {interval(r.share_low, r.share_high, '.2f')}"
                                       if np.isfinite(r.share) else "-")
            row[f"{r.label} verdict"] = r.verdict
        out.append(row)
    return pd.DataFrame(out)


RUNS_PER_SEED = {"stratified": 1, "grid": 9, "dml": 1, "skillit": 3, "doremi": 2, "doge": 2, "aioli": 1,
                 "aioli_static": 1, "aioli_diagonal": 1, "regmix": 2, "odm": 1}
"""Full-length-run equivalents each method adds per (two-group setting, seed) once the methods before it have run, as
counted in ``full``'s Table 2 (``extra_steps``): grid search's 9-point sweep (shared with DML and holding p*),
Skill-it's two one-group runs, DoReMi's proxy (its reference is the stratified run), DoGE's proxy, RegMix's short
proxies (about one run in all) and each method's final run."""


def estimated_cost(profile: str, n_settings: int, seeds, methods=METHODS, minutes_per_run: float = 3.7,
                   jobs: int = 2) -> str:
    """A cost line for the notebook: full-length runs from ``RUNS_PER_SEED``, times ``minutes_per_run`` (the median
    wall time of ``full``'s 351 two-group 1,000-step runs in the run cache, trained two at a time on 2 cores), over
    ``jobs`` workers."""
    # + the static run on p*: notebook 10's 5-point grid is not the 9-point sweep of grid search, so it is its own run
    runs = (sum(RUNS_PER_SEED[m] for m in methods) + 1) * n_settings * len(seeds)
    hours = runs * minutes_per_run / jobs / 60 * get_profile(profile).train.steps / 1000
    return (f"about {runs} runs of {get_profile(profile).train.steps} steps ({n_settings} settings x "
            f"{len(seeds)} seeds), about {hours:.1f} h at {jobs} workers if a run takes as long as full's")
