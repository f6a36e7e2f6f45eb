"""Claim by claim: the paper's figure, ours, and a verdict from a stated rule that can come out either way.

Reads the tables the numbered notebooks wrote to ``results/<profile>/`` and writes ``results/<profile>/claims.md``.
Verdicts: **reproduced** (the rule's evidence for the paper's direction), **not reproduced** (evidence against it),
**inconclusive** (neither), **cannot decide** (the setting or measure could not show the effect even if it were
there: too little headroom for the seeds, or a measure that is mostly seed noise), **not tested** (out of reach at
our scale). Every claim carries its rule and what the rule prints for a method identical to the baseline (its
behaviour under the null); ``tests/test_claim_rules.py`` checks those rates by simulation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import hparams, restricted, table2b, tables
from .findings import FINDINGS, finding, finding_f3, finding_f4, finding_f5, finding_f6
from .report import read_not_finished, results_dir
from .stats import detectable_effect, reliability, stratified_ci
from .verdicts import (
    ALPHA,
    CANNOT_DECIDE,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    NOT_RUN,
    NOT_TESTED,
    REPRODUCED,
    Claim,
    control_direction,
    gain_over_control,
    log_ratios,
    provisional,
    setting_tests,
    significant_settings,
    unfinished_parts,
)

RELIABILITY_FLOOR = 0.5
"""A per-dot measure whose unit means are less than half signal (``stats.reliability``) cannot rank the dots."""

# The paper's claims (paper-spec.md, section 7) and its figures, in the words the table prints.
_CLAIMS = {"C1": ("Aioli beats stratified sampling on 6 of 6 settings", "6/6; mean -0.274, max -0.439"),
           "C2": ("No existing method beats stratified on all settings",
                  "GS 4, DML 4, Skill-it 5, DoReMi 3, DoGE 1 of 6"),
           "C3": ("Static log-linear and dynamic linear mixing laws fit training well",
                  "R² 0.991 (static), 0.947 (dynamic); MSE ~5e-4"),
           "C4": ("Methods whose A^t is closer to the truth improve more; Aioli's A^t is closest",
                  "R² 0.491; Aioli's similarity highest"),
           "C5": ("The column-sum ordering of the true A^t changes over training (GH/C4: GitHub, then C4)",
                  "GitHub first, C4 later"),
           "C7": ("Restricted budget: Aioli on top of a method's proportions improves it",
                  "28/30 pairs; mean 1.202, max 12.012"),
           "C8": ("Both ablations keep some but not all of Aioli's gain",
                  "Aioli -0.274, diagonal -0.230, static -0.140")}


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


def read_decidability(profile: str) -> pd.DataFrame | None:
    """Notebook 04's decidability table of ``profile`` (None if it has not been written)."""
    return _read(results_dir(profile) / "04_decidability.csv")


RULE_C1 = ("Primary: the pooled relative difference, the mean over settings of each setting's mean over seeds of "
           "ln(ppl_Aioli / ppl_stratified) (paired by seed), with a 95% t-interval stratified by setting "
           "(Welch-Satterthwaite df). Per setting: paired t-tests, Holm-adjusted over the settings. Reproduced: the "
           "pooled interval lies below 0 and no setting is significantly worse. Not reproduced: the pooled interval "
           "lies above 0, or a setting is significantly worse. Cannot decide: neither, and the static law's headroom "
           "in Aioli's reachable band (pooled, relative) is below the pooled difference the seeds detect with 80% "
           "power. Otherwise inconclusive.")
NULL_C1 = ("A method identical to stratified: the pooled interval excludes 0 with probability 5% (2.5% each side) "
           "and Holm keeps the chance of any 'significantly worse' setting at or below 5%, so it prints reproduced "
           "at most 2.5% of the time, not reproduced at most 7.5%, else inconclusive or cannot decide (simulated in "
           "tests/test_claim_rules.py).")


def pooled_headroom(decidability: pd.DataFrame | None, settings) -> float:
    """Mean over ``settings`` of ln(ppl_uniform / ppl_best_in_band) from the decidability table (nan if absent)."""
    if decidability is None:
        return float("nan")
    labels = [hparams.SETTINGS[s].label for s in settings if s in hparams.SETTINGS]
    d = decidability.set_index("setting").reindex(labels)
    if d.headroom_in_band_pct.isna().any():
        return float("nan")
    return float(np.mean(-np.log1p(-d.headroom_in_band_pct / 100)))


def claim_c1(runs: pd.DataFrame, decidability: pd.DataFrame | None = None) -> Claim:
    d = log_ratios(runs, "aioli")
    per = setting_tests(d, "log_ratio")
    pooled = stratified_ci(d.log_ratio, d.setting)
    worse, better = significant_settings(per, 1), significant_settings(per, -1)
    pct = lambda x: 100 * np.expm1(x)  # noqa: E731
    n_better = int((per["mean"] < 0).sum())
    ours = (f"pooled relative difference {pct(pooled['mean']):+.2f}%"
            + ("" if np.isnan(pooled["low"]) else f", 95% CI [{pct(pooled['low']):+.2f}%, {pct(pooled['high']):+.2f}%]")
            + f" over {len(per)} settings; Aioli below stratified by the mean in {n_better}/{len(per)}; "
            f"significantly better (Holm) in {len(better)}, significantly worse in {len(worse)}"
            + (f" ({', '.join(worse)})" if worse else ""))
    mdd = detectable_effect(pooled["se"], pooled["df"])
    room = pooled_headroom(decidability, per.setting)
    if not np.isnan(mdd):
        ours += f"; detectable (80% power) {pct(mdd):.2f}%"
    if not np.isnan(room):
        ours += f", headroom in Aioli's band {pct(room):.2f}%"
    if np.isnan(pooled["low"]):
        verdict, why = INCONCLUSIVE, "a setting with one seed: no interval"
    elif pooled["low"] > 0 or worse:
        verdict, why = NOT_REPRODUCED, ("Aioli is significantly worse than stratified "
                                        + (f"on {', '.join(worse)}" if worse else "on average"))
    elif pooled["high"] < 0 and len(per) < len(hparams.SETTINGS):
        verdict, why = INCONCLUSIVE, f"better on average, but only {len(per)} of the paper's six settings have run"
    elif pooled["high"] < 0:
        verdict, why = REPRODUCED, ("the pooled interval lies below 0 and no setting is significantly worse; "
                                    f"significantly better on {len(better)} of {len(per)} settings")
    elif room < mdd:
        verdict, why = CANNOT_DECIDE, (f"even the best mixture in Aioli's band would gain {pct(room):.2f}%, below "
                                       f"the {pct(mdd):.2f}% these seeds detect")
    else:
        verdict, why = INCONCLUSIVE, "the pooled interval includes 0 and no setting is significantly worse"
    return Claim("C1", *_CLAIMS["C1"], ours, verdict, why, RULE_C1, NULL_C1)


RULE_C2 = ("Per baseline, paired t-tests per setting, Holm-adjusted over its settings. A baseline 'fails somewhere' "
           "if it is significantly worse than stratified on some setting, 'wins everywhere' if it is significantly "
           "better on every setting. Reproduced: every baseline fails somewhere. Not reproduced: some baseline wins "
           "everywhere. Otherwise inconclusive, naming the baselines the data cannot place. The counts by the mean "
           "(the paper's figures) are descriptive only: a method identical to stratified 'loses somewhere by the "
           "mean' with probability 63/64 on six settings.")
NULL_C2 = ("Five baselines identical to stratified: each 'fails somewhere' with probability at most 5% (Holm), so "
           "all five do with at most 5% (about 0.05^5 if their noise were independent; they share the stratified "
           "runs), and each 'wins everywhere' with at most 0.025^6: the rule prints inconclusive.")


def claim_c2(runs: pd.DataFrame) -> Claim:
    d = tables.differences(runs).dropna(subset=["diff"])
    n_settings = runs.setting.nunique()
    parts, fails, wins, open_, missing, partial = [], {}, [], [], [], []
    for method in tables.BASELINES:
        sub = d[d.method == method]
        if sub.empty:
            missing.append(method)
            continue
        t = setting_tests(sub)
        beaten = int((t["mean"] < 0).sum())
        parts.append(f"{method} {beaten}/{len(t)}" + (" (1 seed)" if t.seeds.min() < 2 else ""))
        if len(t) < n_settings:
            partial.append(method)
        if worse := significant_settings(t, 1):
            fails[method] = worse
        elif len(t) == n_settings and len(significant_settings(t, -1)) == len(t):
            wins.append(method)
        else:
            open_.append(method)
    if not parts:
        return _pending("C2", "04_perplexity_comparison (the baselines)")
    ours = "settings beaten by the mean: " + ", ".join(parts) + "; significantly worse somewhere (Holm): " + (
        "; ".join(f"{m} on {', '.join(v)}" for m, v in fails.items()) or "none")
    if missing:
        ours += f" (not run yet: {', '.join(missing)})"
    if wins:
        verdict, why = NOT_REPRODUCED, f"{', '.join(wins)} significantly beat stratified on every setting"
    elif not missing and not open_:
        verdict, why = REPRODUCED, "every baseline is significantly worse than stratified on some setting"
    else:
        undecided = open_ + missing
        why = (f"consistent with the paper for {', '.join(fails) or 'none'}; uninformative for "
               f"{', '.join(undecided)} (no setting where they are significantly worse, nor significant wins "
               "everywhere" + (f"; {', '.join(missing)} not run yet" if missing else "")
               + (f"; {', '.join(partial)} not on every setting yet" if partial else "") + ")")
        verdict = INCONCLUSIVE
    return Claim("C2", *_CLAIMS["C2"], ours, verdict, why, RULE_C2, NULL_C2)


def _fit_note(row) -> str:
    """A law summary's MSE, with its fits and seeds where the summary records them (older ones do not)."""
    return f"MSE {row.mse:.1e}" + (f"; {row.fits} fits, {row.seeds} seed(s)" if "seeds" in row else "")


def claim_c3(static: pd.DataFrame, dynamic: pd.DataFrame | None) -> Claim:
    st = static[static.setting == "all"].iloc[0]
    ours = f"static log-linear R² {st.r2:.3f} in-sample, {st.loo_r2:.3f} leave-one-mixture-out ({_fit_note(st)})"
    ok = st.r2 >= 0.94 and st.loo_r2 >= 0.5
    bad = st.r2 < 0.8
    if dynamic is not None:
        dy = dynamic[dynamic.setting == "all"].iloc[0]
        ours += f"; dynamic linear R² {dy.r2:.3f} in-sample, {dy.loo_r2:.3f} leave-one-out ({_fit_note(dy)})"
        ok = ok and dy.r2 >= 0.90 and dy.loo_r2 >= 0.5
        bad = bad or dy.r2 < 0.7
    if ok and dynamic is None:
        verdict, why = INCONCLUSIVE, ("the static law fits as in the paper, but the dynamic law (notebook "
                                      "02_dynamic_mixing_law) has not run under this profile yet")
    elif ok:
        verdict, why = REPRODUCED, "in-sample R² near the paper's, and the laws predict held-out mixtures"
    elif bad:
        verdict, why = NOT_REPRODUCED, "the laws explain far less of the variation than in the paper"
    else:
        verdict, why = INCONCLUSIVE, ("in-sample fits match the paper but held-out prediction is weak: with few "
                                      "mixtures and small loss differences the fits are partly noise")
    return Claim("C3", *_CLAIMS["C3"], ours, verdict, why, RULE_C3, NULL_C3)


RULE_C3 = ("Reproduced: pooled in-sample R² >= 0.94 (static) and >= 0.90 (dynamic), and leave-one-mixture-out R² "
           ">= 0.5 for both. Not reproduced: in-sample R² < 0.8 (static) or < 0.7 (dynamic). Otherwise inconclusive.")
NULL_C3 = ("A law with no predictive power has held-out R² near or below 0, so it cannot pass the 0.5 leave-one-out "
           "bar; the in-sample bar alone could be met by over-fitting, which is why both are required.")


RULE_C4 = ("Reliability first: over (method, setting) dots, the share of the variance of the per-dot mean "
           "similarity that is not seed noise (1 - seed variance of a dot's mean / variance between dot means). "
           f"Below {RELIABILITY_FLOOR}: cannot decide (the measure cannot rank methods). Otherwise, a least-squares "
           "line of improvement on similarity over the dots: reproduced if its slope is positive with p < 0.05 and "
           "Aioli's similarity is the highest; not reproduced if the slope is negative with p < 0.05; else "
           "inconclusive.")
NULL_C4 = ("No relation between fidelity and improvement: the slope test is significant with probability 5%, "
           "2.5% on each side, so the rule prints reproduced at most 2.5% of the time (less, as Aioli must also be "
           "highest) and not reproduced 2.5%; with an unreliable measure it prints cannot decide.")


def claim_c4(relation: pd.DataFrame, summary: pd.DataFrame, per_seed: pd.DataFrame | None = None) -> Claim:
    rel = relation.set_index(relation.columns[0])[relation.columns[1]]
    r2, slope, dots = float(rel["r2"]), float(rel["slope"]), int(float(rel["dots"]))
    sims = summary.groupby("method").sim.mean()
    aioli_top = bool(sims.idxmax() == "aioli") if "aioli" in sims else False
    fit = sps.linregress(summary.sim, summary.improvement) if len(summary) >= 3 else None
    p = float(fit.pvalue) if fit is not None else float("nan")
    rel_sim = (reliability(per_seed.sim, per_seed.method + "/" + per_seed.setting, per_seed.seed)
               if per_seed is not None else {"reliability": float("nan")})
    ours = (f"R² {r2:.3f} (slope {slope:+.2f}, p {p:.2f}) over {dots} (method, setting) dots; mean sim "
            + ", ".join(f"{m} {v:.2f}" for m, v in sims.items()) + f"; Aioli highest: {aioli_top}")
    if not np.isnan(rel_sim["reliability"]):
        ours += (f"; reliability of a dot's similarity {rel_sim['reliability']:.2f} (variance between dots "
                 f"{rel_sim['between_var']:.3f}, seed noise of a dot's mean {rel_sim['noise_var']:.3f})")
    if rel_sim["reliability"] < RELIABILITY_FLOOR:
        verdict, why = CANNOT_DECIDE, ("not measurable: seed noise explains most of the spread of similarity "
                                       "between dots, so no ranking of methods by fidelity can be read from it")
    elif fit is None or np.isnan(p):
        verdict, why = INCONCLUSIVE, "too few dots for a slope test"
    elif slope > 0 and p < ALPHA and aioli_top:
        verdict, why = REPRODUCED, "a significant positive relation, and Aioli's estimate is the most faithful"
    elif slope < 0 and p < ALPHA:
        verdict, why = NOT_REPRODUCED, "a significant negative relation between fidelity and improvement"
    else:
        verdict, why = INCONCLUSIVE, "no significant relation, or Aioli's estimate is not the most faithful"
    return Claim("C4", *_CLAIMS["C4"], ours, verdict, why, RULE_C4, NULL_C4)


def claim_c5(changes: pd.DataFrame) -> Claim:
    gh = changes[changes.setting == "github_c4"]
    flips = int(gh.ordering_changes.sum()) if len(gh) else 0
    paths = "; ".join(f"seed {r.seed}: {r.favoured_over_time}" for r in gh.itertuples()) or "-"
    others = changes[changes.setting != "github_c4"]
    ours = f"GH/C4 favoured group over training: {paths}" + (
        f"; ordering changes in {int(others.ordering_changes.sum())}/{len(others)} other (setting, seed)"
        if len(others) else "")
    if not len(gh):
        verdict, why = NOT_TESTED, "GH/C4 not in this profile's ordering study"
    elif len(gh) < 2:
        verdict, why = INCONCLUSIVE, "one seed: an ordering seen once may be noise"
    elif flips > len(gh) / 2 and all(str(p).split(" -> ")[0] == "code" for p in gh.favoured_over_time):
        verdict, why = REPRODUCED, "code (GitHub) first, then a change, in most seeds"
    elif flips == 0:
        verdict, why = NOT_REPRODUCED, "A*'s column-sum ordering is stable over training here"
    else:
        verdict, why = INCONCLUSIVE, "the ordering changes in some seeds only, or not from GitHub first"
    return Claim("C5", *_CLAIMS["C5"], ours, verdict, why, RULE_C5, NULL_C5)


RULE_C5 = ("On GH/C4, the group whose column of the fitted A^t has the largest sum, at each break point: reproduced "
           "if it starts at code (GitHub) and changes in most seeds; not reproduced if it never changes in any seed; "
           "otherwise inconclusive (also with one seed).")
NULL_C5 = ("Not calibrated: under a stable ordering, noise in the fitted A^t can flip two close column sums, and "
           "the rate depends on how close they are. Requiring the same path (code first, then a change) in most "
           "seeds is what guards against it.")


RULE_C7 = ("Against the control 'p_init for S_init steps, then stratified' (Aioli's restricted schedule without "
           "Aioli), paired by seed: gain = control - Aioli per (method, setting, seed). Pooled over pairs with a "
           "95% t-interval stratified by pair, and a sign test over the pairs' mean gains. Reproduced: interval "
           "above 0 and the sign test significant with most pairs positive. Not reproduced: interval below 0, or "
           "the sign test significant with most pairs negative. Otherwise inconclusive. The gain over p_init alone "
           "(the paper's figure) is reported, but it is no evidence for Aioli: released Aioli restarts from uniform "
           "after S_init steps, so from any start it ends near stratified, and its gain over p_init measures how "
           "bad p_init was.")
NULL_C7 = ("Aioli identical to the control: the pooled interval excludes 0 with probability 5% and the sign test "
           "rejects with at most 5%, so the rule prints reproduced at most 2.5% of the time and not reproduced at "
           "most 5%. The old rule (improvement over p_init alone) would print reproduced whenever the methods' "
           "p_init lose to stratified.")


def claim_c7(pairs: pd.DataFrame, control: pd.DataFrame | None = None, stratified: pd.DataFrame | None = None) -> Claim:
    s = restricted.restricted_summary(pairs)
    ours = (f"gain over p_init alone: Aioli improves {s['improved']}/{s['pairs']} pairs; mean {s['mean']:+.3f}, "
            f"median {s['median']:+.3f}, max {s['max']:+.3f}")
    if stratified is not None:
        st = stratified[["setting", "seed", "avg_test_perplexity"]]
        d = pairs.merge(st, on=["setting", "seed"])
        if len(d) > 2:
            r = float(np.corrcoef(d.improvement, d.method_ppl - d.avg_test_perplexity)[0, 1])
            ours += f"; that gain correlates r = {r:.3f} with how much worse p_init alone is than stratified"
    if control is None or control.empty:
        return Claim("C7", *_CLAIMS["C7"], ours, INCONCLUSIVE,
                     "the control (p_init, then stratified) has not run under this profile; without it the gain "
                     "over p_init is confounded with how bad p_init was", RULE_C7, NULL_C7)
    c, pooled, per_pair, pos, n, p_sign = gain_over_control(control)
    ours += (f"; against the control: mean gain {pooled['mean']:+.3f}"
             + ("" if np.isnan(pooled["low"]) else f", 95% CI [{pooled['low']:+.3f}, {pooled['high']:+.3f}]")
             + f", median {per_pair.median():+.3f}, {pos}/{n} pairs positive (sign test p {p_sign:.3f})")
    # Descriptive, not part of the rule: the settings whose own interval excludes 0, and the others pooled without them
    by_setting = {key: stratified_ci(g.gain_vs_control, g.pair) for key, g in c.groupby("setting", sort=False)}
    apart = [key for key, ci in by_setting.items() if ci["low"] > 0 or ci["high"] < 0]
    driven = ""
    if apart and len(apart) < len(by_setting):
        label = dict(zip(c.setting, c.label))
        rest = c[~c.setting.isin(apart)]
        others = stratified_ci(rest.gain_vs_control, rest.pair)
        ours += ("; settings whose own interval excludes 0: " + ", ".join(
            f"{label[k]} {by_setting[k]['mean']:+.3f} [{by_setting[k]['low']:+.3f}, {by_setting[k]['high']:+.3f}]"
            for k in apart) + f"; the other settings pooled {others['mean']:+.3f}"
            + ("" if np.isnan(others["low"]) else f" [{others['low']:+.3f}, {others['high']:+.3f}]"))
        if others["low"] <= 0 <= others["high"]:
            driven = f" (driven by {', '.join(label[k] for k in apart)}: the other settings pooled are within noise)"
    verdict, why = {None: (INCONCLUSIVE, "a pair with one seed: no interval"),
                    1: (REPRODUCED, "Aioli beats the control on average and on most pairs" + driven),
                    -1: (NOT_REPRODUCED, "Aioli does worse than simply switching to stratified after S_init" + driven),
                    0: (INCONCLUSIVE, "Aioli's gain over the control is within noise")}[
        control_direction(pooled, pos, n, p_sign)]
    return Claim("C7", *_CLAIMS["C7"], ours, verdict, why, RULE_C7, NULL_C7)


RULE_C8 = ("Per (setting, seed), the gap ln(ppl_ablation / ppl_Aioli), pooled over settings with a 95% interval "
           "stratified by setting; likewise each run's ln ratio to stratified. Cannot decide: Aioli's own pooled "
           "interval against stratified does not lie below 0 (there is no gain to keep), unless an ablation is "
           "significantly better than Aioli. Reproduced: both gaps' intervals lie above 0 and both ablations' "
           "intervals against stratified lie below 0. Not reproduced: an ablation's gap interval lies below 0 (it "
           "keeps more than all), or an ablation is significantly worse than stratified (it keeps none). Otherwise "
           "inconclusive.")
NULL_C8 = ("Ablations identical to Aioli: each gap interval excludes 0 with probability 5%, so reproduced needs two "
           "false positives on the same side (at most 2.5%) and not reproduced is printed at most 5% of the time "
           "from the gaps.")


def claim_c8(runs: pd.DataFrame) -> Claim:
    if any(m not in set(runs.method) for m in tables.ABLATIONS):
        return _pending("C8", "06_ablations (both ablations)")
    # Cells where all three have finished, and, like the table's CI, the seeds that have all those settings.
    cells = tables.whole_seeds(tables.complete_cells(tables.differences(runs), tables.ABLATIONS))
    if cells.empty:
        return _pending("C8", "06_ablations (both ablations)")
    keep = cells.set_index(["setting", "seed"]).index
    runs = runs[runs.set_index(["setting", "seed"]).index.isin(keep)]
    ratio = {m: log_ratios(runs, m).set_index(["setting", "seed"]).log_ratio for m in tables.ABLATIONS}
    against = {m: stratified_ci(v, v.index.get_level_values("setting")) for m, v in ratio.items()}
    gaps = {}
    for abl in ("aioli_static", "aioli_diagonal"):
        g = (ratio[abl] - ratio["aioli"]).dropna()
        gaps[abl] = stratified_ci(g, g.index.get_level_values("setting"))
    pct = lambda x: 100 * np.expm1(x)  # noqa: E731
    seeds = cells.seed.nunique()
    ours = ", ".join(f"{m} {pct(v['mean']):+.2f}%" for m, v in against.items()) + " against stratified; " + ", ".join(
        f"{k} vs aioli {pct(v['mean']):+.2f}%" + ("" if np.isnan(v["low"]) else
                                                   f" [{pct(v['low']):+.2f}%, {pct(v['high']):+.2f}%]")
        for k, v in gaps.items()) + f" ({cells.setting.nunique()} settings, {seeds} seed(s))"
    better_than_aioli = [k for k, v in gaps.items() if v["high"] < 0]
    if seeds < 2 or any(np.isnan(v["low"]) for v in gaps.values()):
        verdict, why = INCONCLUSIVE, "one seed: no confidence interval"
    elif better_than_aioli:
        verdict, why = NOT_REPRODUCED, f"{', '.join(better_than_aioli)} is significantly better than full Aioli"
    elif not against["aioli"]["high"] < 0:
        verdict, why = CANNOT_DECIDE, ("Aioli itself shows no significant gain over stratified here, so there is no "
                                       "gain for the ablations to keep")
    elif all(v["low"] > 0 for v in gaps.values()) and all(against[k]["high"] < 0 for k in gaps):
        verdict, why = REPRODUCED, "both ablations keep some gain but are significantly worse than Aioli"
    elif any(against[k]["low"] > 0 for k in gaps):
        verdict, why = NOT_REPRODUCED, "an ablation is significantly worse than stratified: it keeps none of the gain"
    else:
        verdict, why = INCONCLUSIVE, "the differences between Aioli and its ablations are within noise"
    return Claim("C8", *_CLAIMS["C8"], ours, verdict, why, RULE_C8, NULL_C8)


def claim_c11(runs: pd.DataFrame | None, overhead: dict | None) -> Claim:
    extra = "0 extra runs" if runs is None else \
        f"{int(runs[runs.method == 'aioli'].extra_runs.max())} extra runs"
    if overhead:
        ratios = ", ".join(f"{r['setting']} {r['ratio']:.2f}x" for r in overhead["rows"])
        ours = (f"{extra}; wall time of an Aioli run over a stratified run of equal length "
                f"({overhead.get('profile', '?')} recipe, `bench --overhead`): {ratios}")
    else:
        ours = f"{extra}; overhead not measured (run `python -m aioli_repro bench --overhead`)"
    return Claim("C11", "Aioli needs no extra training runs; its cost is LearnParams' evaluations",
                 "0 extra runs", ours, REPRODUCED if "0 extra runs" in extra else NOT_REPRODUCED,
                 "LearnParams steps count against the run's own budget",
                 "Reproduced if Table 2's Aioli studies record 0 extra runs; the wall-time ratios are descriptive.",
                 "Not a measured effect: it holds by construction of the one training loop (LearnParams steps are "
                 "the run's own steps, tested in tests/test_policies.py), so no null rate applies.")


def not_tested(key: str, claim: str, paper: str, why: str) -> Claim:
    return Claim(key, claim, paper, "-", NOT_TESTED, why, "-", "-")


def _pending(key: str, notebook: str) -> Claim:
    """A claim whose table this profile has not produced yet (a long profile run in sittings)."""
    claim, paper = _CLAIMS[key]
    return Claim(key, claim, paper, "-", NOT_RUN, f"needs notebook {notebook} under this profile")


def build_claims(profile: str, extra: list[Claim] | None = None) -> list[Claim]:
    """Every claim the tables of ``profile`` can speak to (``extra``: claims built by the fidelity notebooks)."""
    res = results_dir(profile)
    out: list[Claim] = []
    runs = _read(res / "04_runs.csv")
    decidability = _read(res / "04_decidability.csv")
    out += [claim_c1(runs, decidability), claim_c2(runs)] if runs is not None else \
        [_pending("C1", "04_perplexity_comparison"), _pending("C2", "04_perplexity_comparison")]
    static, dynamic = _read(res / "01_static_law_summary.csv"), _read(res / "02_dynamic_law_summary.csv")
    # Studies a render from the cache left partly out (notebooks write not_finished.json): their verdicts wait.
    left = read_not_finished(res)
    paper_left = unfinished_parts(left, extension=False)  # RegMix's and ODM's parts wait only for F1, F2, F6
    out.append(provisional(claim_c3(static, dynamic), paper_left, ("01_static_mixing_law", "02_dynamic_mixing_law"))
               if static is not None else _pending("C3", "01_static_mixing_law"))
    relation, fsum = _read(res / "03_fidelity_relation.csv"), _read(res / "03_fidelity_summary.csv")
    out.append(provisional(claim_c4(relation, fsum, _read(res / "03_fidelity.csv")), paper_left, ("03_method_fidelity",))
               if relation is not None and fsum is not None else _pending("C4", "03_method_fidelity"))
    changes = _read(res / "03_colsum_ordering_changes.csv")
    out.append(provisional(claim_c5(changes), paper_left, ("03_method_fidelity",)) if changes is not None
               else _pending("C5", "03_method_fidelity"))
    out += extra or []
    pairs = _read(res / "05_restricted_runs.csv")
    control = _read(res / "05_restricted_control.csv")
    strat = runs[runs.method == "stratified"] if runs is not None else None
    out.append(provisional(claim_c7(pairs, control, strat), paper_left, ("05_restricted_budget",)) if pairs is not None
               else _pending("C7", "05_restricted_budget"))
    abl = _read(res / "06_runs.csv")
    out.append(claim_c8(abl) if abl is not None else _pending("C8", "06_ablations"))
    bench = results_dir("bench") / "benchmark_aioli_overhead.json"
    out.append(claim_c11(runs, json.loads(bench.read_text()) if bench.exists() else None))
    out += [
        not_tested("C6", "Exponentiated gradient recovers the optimal dynamic proportions in 2 of 3 settings",
                   "2/3", "needs a search over dynamic schedules (many full runs per setting); not run"),
        not_tested("C9", "At 1.4B parameters the laws still fit and Aioli still beats stratified",
                   "R² 0.989/0.929; -0.276, -0.403", "1.4B models are out of reach of a 2-core CPU"),
        not_tested("C10", "Perplexity correlates with downstream accuracy (r 0.53)", "r = 0.529",
                   "downstream benchmarks need models far larger than ours to score above chance"),
    ]
    out += [finding(key, runs, left) for key in FINDINGS]
    out.append(finding_f3(_read(res / "11_table2b_share.csv"), left, _read(res / table2b.SETTINGS_FILE)))
    out.append(finding_f4(_read(res / "12_adequate_signal.csv"), left, _read(res / "12_aioli_signal.csv")))
    out.append(finding_f5(_read(res / "13_scale_trend.csv"), _read(res / "13_scale.csv"), left))
    out.append(finding_f6(_read(res / "05_restricted_extensions.csv"),
                          _read(res / "05_restricted_extensions_control.csv"), left))
    return sorted(out, key=lambda c: (c.key[0] != "C", int(c.key[1:])))


def claims_markdown(claims: list[Claim], profile: str, decidability: pd.DataFrame | None = None) -> str:
    lines = [f"# Claims of the paper at our scale ({profile} profile)", "",
             "Generated by `notebooks/07_claims.ipynb` from the tables in this folder. Verdicts: reproduced / "
             "not reproduced / inconclusive (neither) / cannot decide (the setting or measure could not show the "
             "effect even if it were there) / not tested / not run yet. Each verdict follows the rule listed below "
             "the table, with the rule's behaviour for a method identical to the baseline.", ""]
    if decidability is not None and len(decidability):
        lines += ["## Can a setting show Aioli beating stratified at all?", "",
                  "Static log-linear law fitted per seed to the full-length sweep's test losses: the predicted gain "
                  "in average test perplexity of the best static mixture over uniform, anywhere on the simplex and "
                  "within the mixtures Aioli's released (EMA) form can reach; against the difference Aioli's paired "
                  "t-test detects with 80% power at these seeds (`04_decidability.csv`).", "",
                  "| setting | headroom anywhere | headroom in Aioli's band | detectable now | seeds needed for the "
                  "band's headroom | can show a gain |", "|---|---|---|---|---|---|"]
        for r in decidability.itertuples():
            need = r.seeds_needed_for_band_headroom
            need = ("- (one seed: no sd)" if np.isnan(need) else "more than 1,000" if np.isinf(need)
                    else f"{int(need)}")
            seen = "-" if np.isnan(r.detectable_now) else f"{r.detectable_now:.2f}"
            lines.append(f"| {r.setting} | {r.headroom_anywhere:.2f} ({r.headroom_anywhere_pct:.2f}%) | "
                         f"{r.headroom_in_band:.2f} ({r.headroom_in_band_pct:.2f}%) | {seen} "
                         f"({r.seeds} seed{'s' if r.seeds != 1 else ''}) | {need} | "
                         f"{'yes' if r.can_show_a_gain else 'no'} |")
        lines.append("")
    paper_claims = [c for c in claims if not c.key.startswith("F")]
    findings = [c for c in claims if c.key.startswith("F")]
    lines += ["## Verdicts", "", "| claim | paper | ours | verdict | why |", "|---|---|---|---|---|"]
    for c in paper_claims:
        lines.append(f"| **{c.key}** {c.claim} | {c.paper} | {c.ours} | **{c.verdict}** | {c.why} |")
    if findings:
        lines += ["", "## Findings of this repository (not claims of the paper)", "",
                  "Methods the paper does not study, run on the same bench, seeds and settings (Table 2; F1, F2), and "
                  "every method on the settings where mixing matters (Table 2b; F3), an Aioli whose estimates carry "
                  "signal (F4), model size (F5), and Aioli on the extension methods' restricted-budget proportions "
                  "(F6). Verdicts: better / worse than stratified, found by k of n methods, changes with size, Aioli "
                  "adds to it / does worse than the control / inconclusive / cannot decide.", "",
                  "| finding | ours | verdict | why |", "|---|---|---|---|"]
        for c in findings:
            lines.append(f"| **{c.key}** {c.claim} | {c.ours} | **{c.verdict}** | {c.why} |")
    lines += ["", "## Rules, and what each prints for a method identical to the baseline", ""]
    for c in claims:
        if c.rule and c.rule != "-":
            lines += [f"- **{c.key}.** {c.rule} *Under the null:* {c.null}"]
    return "\n".join(lines) + "\n"
