"""This repository's findings (not claims of the paper), each from a stated rule that can come out either way:
F1 RegMix and F2 ODM against stratified sampling (Table 2), F3 each method's share of the headroom where a better
mixture exists (Table 2b), F4 an Aioli whose estimates carry signal against stratified (notebook 12), F5 whether
Aioli's gap to stratified changes with model size (notebook 13), F6 Aioli on top of RegMix's and ODM's
restricted-budget proportions (notebook 05). ``claims.build_claims`` collects them beside the paper's claims."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import table2b
from .aioli_signal import signal_detectable
from .scale import NEEDS_GPU
from .stats import holm, stratified_ci
from .verdicts import (
    ALPHA,
    CANNOT_DECIDE,
    INCONCLUSIVE,
    NOT_RUN,
    Claim,
    control_direction,
    gain_over_control,
    log_ratios,
    provisional,
    setting_tests,
    significant_settings,
    unfinished_parts,
)

# ------------------------------------------------------------------------------------------------ findings
# RegMix and ODM are not in the paper: what Table 2 shows about them is a finding of this repository, phrased as one,
# under a rule that can come out either way (keys F1, F2; ``claims_markdown`` gives them their own section).
BETTER, WORSE = "better than stratified", "worse than stratified"
FINDINGS = {"F1": ("regmix", "RegMix (Liu et al. 2024): its static mixture against stratified sampling"),
            "F2": ("odm", "ODM (Albalak et al. 2023): its online mixture against stratified sampling")}
NOT_A_CLAIM = "not a claim of the paper"
RULE_F = ("C1's primary test applied to the method: the pooled relative difference, the mean over settings of each "
          "setting's mean over seeds of ln(ppl_method / ppl_stratified) (paired by seed), with a 95% t-interval "
          "stratified by setting; per setting, paired t-tests Holm-adjusted over the settings. Better than "
          "stratified: the pooled interval lies below 0 and no setting is significantly worse. Worse than "
          "stratified: the pooled interval lies above 0, or a setting is significantly worse. Cannot decide: the "
          "method has no finished run paired with stratified, or a setting has a single seed (no interval). "
          "Otherwise inconclusive; a verdict drawn while some of the method's Table 2 studies are unfinished is "
          "inconclusive (provisional).")
NULL_F = ("A method identical to stratified: the pooled interval excludes 0 with probability 5% (2.5% each side) and "
          "Holm keeps the chance of any 'significantly worse' setting at or below 5%, so it prints better at most "
          "2.5% of the time and worse at most 7.5% (the rule of C1, simulated in tests/test_claim_rules.py).")


def finding(key: str, runs: pd.DataFrame | None, unfinished: dict[str, list[str]] | None = None) -> Claim:
    """F1 (RegMix) or F2 (ODM) from Table 2's runs (``04_runs.csv``): this repository's finding, never the paper's."""
    method, what = FINDINGS[key]
    d = log_ratios(runs, method) if runs is not None and method in set(runs.method) else None
    if d is None or d.empty:
        return Claim(key, what, NOT_A_CLAIM, "-", CANNOT_DECIDE,
                     f"no finished {method} run paired with stratified under this profile yet (notebook 04 trains "
                     "them)", RULE_F, NULL_F)
    per = setting_tests(d, "log_ratio")
    pooled = stratified_ci(d.log_ratio, d.setting)
    worse, better = significant_settings(per, 1), significant_settings(per, -1)
    pct = lambda x: 100 * np.expm1(x)  # noqa: E731
    ours = (f"pooled relative difference {pct(pooled['mean']):+.2f}%"
            + ("" if np.isnan(pooled["low"]) else f", 95% CI [{pct(pooled['low']):+.2f}%, {pct(pooled['high']):+.2f}%]")
            + f" over {len(per)} setting(s), {d.seed.nunique()} seed(s); below stratified by the mean in "
            f"{int((per['mean'] < 0).sum())}/{len(per)}; significantly better (Holm) in {len(better)}, significantly "
            f"worse in {len(worse)}" + (f" ({', '.join(worse)})" if worse else ""))
    if np.isnan(pooled["low"]):
        verdict, why = CANNOT_DECIDE, "a setting with one seed: no interval"
    elif worse or pooled["low"] > 0:
        verdict, why = WORSE, ("the pooled interval lies above 0" if pooled["low"] > 0 else
                               f"significantly worse on {', '.join(worse)}")
    elif pooled["high"] < 0:
        verdict, why = BETTER, "the pooled interval lies below 0 and no setting is significantly worse"
    else:
        verdict, why = INCONCLUSIVE, "the pooled interval includes 0 and no setting is significantly worse"
    left = [x for x in (unfinished or {}).get("04_perplexity_comparison", []) if x.startswith(f"{method}/")]
    if left and verdict in (BETTER, WORSE):
        verdict, why = INCONCLUSIVE, (f"provisional, {len(left)} of its Table 2 studies not finished yet; the "
                                      f"finished part says {verdict}: {why}")
    return Claim(key, what, NOT_A_CLAIM, ours, verdict, why, RULE_F, NULL_F)


RULE_F3 = ("Notebook 11, per (method, headroom setting) on seeds the search never used: the share of the headroom captured, "
           "mean over seeds of (ppl_stratified - ppl_method) divided by the mean of (ppl_stratified - ppl_p*), p* "
           "being notebook 10's confirmed best mixture, with Fieller's 95% interval. Cannot decide where p*'s own "
           "paired gain has an interval that includes 0; finds most of it where the share's interval lies above "
           "0.5; misses most of it where it lies below 0.5; otherwise inconclusive. A method is counted as finding the "
           "headroom when it finds most of it on every setting that can decide.")
NULL_F3 = ("A method identical to stratified has a true share of 0: it prints 'finds most of it' at most 2.5% of the "
           "time (the interval's upper tail) and 'misses most of it' whenever the headroom is measured well enough; "
           "a method as good as p* prints 'misses' at most 2.5% of the time. Checked by simulation in "
           "tests/test_table2b.py.")


def finding_f3(share: pd.DataFrame | None, unfinished: dict[str, list[str]] | None = None,
               settings: pd.DataFrame | None = None) -> Claim:
    """F3 from notebook 11's ``11_table2b_share.csv``: where a better mixture exists, does each method find it?
    ``settings``: notebook 10's ``10_headroom_settings.csv``; when it selects nothing and notebook 11 therefore
    ran nothing, no setting with headroom was confirmed and F3 cannot be decided."""
    what = "Where a better mixture exists (notebook 10's headroom settings), each method's share of it"
    nothing_selected = settings is not None and not settings.selected.astype(bool).any()
    if (share is None or share.empty) and nothing_selected:  # smoke and quick fall back to an unconfirmed one
        best = settings.loc[settings.val_gain_pct.idxmax()]
        tried = f"best candidate {best.label}: {best.val_gain_pct:+.2f}% [{best.ci_low:+.2f}, {best.ci_high:+.2f}]"
        return Claim("F3", what, NOT_A_CLAIM, tried, CANNOT_DECIDE, "no candidate's headroom was confirmed at full "
                     "length on the confirmation seeds (notebook 10): no setting where a better mixture is known to "
                     "exist", RULE_F3, NULL_F3)
    if share is None or share.empty:
        return Claim("F3", what, NOT_A_CLAIM, "-", NOT_RUN, "needs notebooks 10 and 11 under this profile",
                     RULE_F3, NULL_F3)
    share = share[share.method != table2b.BEST_STATIC]  # p*'s share is 1 by construction
    decided = share[share.verdict != table2b.CANNOT_DECIDE]
    settings = share.drop_duplicates("setting")
    room = "; ".join(f"{r.label}: headroom {r.headroom:.2f} ppl ({r.headroom_pct:.1f}%) [{r.headroom_low:+.2f}, "
                     f"{r.headroom_high:+.2f}], {r.seeds} seeds" for r in settings.itertuples())
    if decided.empty:
        return Claim("F3", what, NOT_A_CLAIM, room, CANNOT_DECIDE, "p*'s gain over stratified is not significant "
                     "on any setting at these seeds, so no share can be bounded", RULE_F3, NULL_F3)
    per = {m: list(g.verdict) for m, g in decided.groupby("method", sort=False)}
    finds = [m for m, v in per.items() if all(x == table2b.FINDS for x in v)]
    misses = [m for m, v in per.items() if all(x == table2b.MISSES for x in v)]

    def some(mark: str, never: str) -> str:  # the methods that get `mark` on some deciding settings, `never` on none
        hits = [f"{m} ({v.count(mark)} of {len(v)})" for m, v in per.items()
                if m not in finds + misses and mark in v and never not in v]
        return ", ".join(hits) or "none"

    both = [m for m, v in per.items() if table2b.FINDS in v and table2b.MISSES in v]
    labels = list(settings.setting)
    by_method = {m: dict(zip(g.setting, g.share)) for m, g in decided.groupby("method", sort=False)}
    shares = ", ".join(m + " " + "/".join(f"{s[k]:.2f}" if k in s else "-" for k in labels)
                       for m, s in by_method.items())
    ours = f"{room}. Shares (settings in that order): {shares}"
    verdict = f"found by {len(finds)} of {len(per)}"
    # The verdict counts a method only where it finds most of the headroom on every setting that decides; the
    # reason says how near the others came, so a method inconclusive on one setting is not read as one that missed.
    why = (f"finds most of it on every setting: {', '.join(finds) or 'none'}; misses most of it on every setting: "
           f"{', '.join(misses) or 'none'}; finds most of it on some settings, inconclusive on the others: "
           f"{some(table2b.FINDS, table2b.MISSES)}; misses most of it on some, inconclusive on the others: "
           f"{some(table2b.MISSES, table2b.FINDS)}; finds on some and misses on others: {', '.join(both) or 'none'}; "
           "inconclusive on every setting: "
           f"{', '.join(m for m, v in per.items() if table2b.FINDS not in v and table2b.MISSES not in v) or 'none'}")
    left = (unfinished or {}).get("11_table2b_headroom", [])
    if left:
        verdict, why = INCONCLUSIVE, f"provisional, {len(left)} Table 2b runs not finished yet; the finished part: {why}"
    return Claim("F3", what, NOT_A_CLAIM, ours, verdict, why, RULE_F3, NULL_F3)


ADEQUATE_FORM = "adequate signal"
"""The prefix of the form notebook 12's ``12_adequate_signal.csv`` gives the variant it chose
(``aioli_signal.adequate_signal_rows``)."""
RULE_F4 = ("Notebook 12 picks, on short runs, the cheapest variant of LearnParams (more validation sequences per "
           "evaluation, more evaluation steps, more rounds, the cumulative form) whose estimates agree across seeds in "
           "the later rounds (mean cosine between seeds of colsum(A^t) minus its mean above 0, one-sided p < 0.05 "
           "against seeds whose directions are drawn at random, after Holm's adjustment over the setting's variants). That variant then trains at full length "
           "beside stratified, on Table 2's seeds (A/SE) and on Table 2b's fresh seeds (the headroom setting). Per "
           "setting, the paired difference in average test "
           "perplexity to stratified with its 95% t-interval. Better than stratified: an interval lies below 0 and "
           "none above. Worse: an interval lies above 0. Cannot decide: no variant's estimates agreed (no Aioli that "
           "can see was found), or a setting has a single seed. Otherwise inconclusive.")
NULL_F4 = ("A variant identical to stratified: each setting's interval lies below 0 with probability 2.5% and above "
           "with 2.5%, so over the two settings it prints better at most 5% of the time and worse at most 5%. The "
           "variant is chosen on the agreement of its estimates in other, shorter runs, never on perplexity, so the "
           "choice does not bias the test.")


def finding_f4(adequate: pd.DataFrame | None, unfinished: dict[str, list[str]] | None = None,
               signal: pd.DataFrame | None = None) -> Claim:
    """F4 from notebook 12's ``12_adequate_signal.csv``: does an Aioli whose estimates carry signal beat stratified?
    The table holds the released and cumulative forms always, and the chosen variant's rows only if one was chosen.
    ``signal`` (``12_aioli_signal.csv``) says, when none was chosen, whether the short runs could have shown any
    variant agree (``aioli_signal.signal_detectable``)."""
    what = "An Aioli that can see (notebook 12): LearnParams given enough evaluation to agree across seeds"
    if adequate is None or adequate.empty:
        return Claim("F4", what, NOT_A_CLAIM, "-", NOT_RUN, "needs notebook 12 under this profile", RULE_F4, NULL_F4)
    rows = adequate[adequate.form.str.startswith(ADEQUATE_FORM)]
    left = (unfinished or {}).get("12_aioli_signal", [])
    if rows.empty and left:  # the variant is chosen from the whole signal study: not yet
        return Claim("F4", what, NOT_A_CLAIM, "-", NOT_RUN, f"{len(left)} part(s) of notebook 12 not finished yet",
                     RULE_F4, NULL_F4)
    if rows.empty:
        ours, why = "no variant's later rounds agree across seeds on any setting", (
            "no configuration tried gives Aioli's estimates a direction it can see, so there is no such Aioli to "
            "compare")
        if signal is not None and "across_seeds_p_floor" in signal:
            could = signal_detectable(signal)
            ours += (f"; perfect agreement would have passed the test for {int(could.sum())} of the {len(signal)} "
                     "(setting, variant) pairs")
            if not could.any():
                why = ("no variant agreed, and with these seeds and rounds none could have: the short runs cannot tell "
                       "an Aioli that sees from one that does not")
        if "across_seeds_p" in adequate:
            full = adequate[adequate.across_seeds_p.notna()]
            ours += "; at full length: " + ", ".join(
                f"{r.label} {r.form} {r.across_seeds_cos:+.2f} (p {r.across_seeds_p:.2g}, {int(r.across_seeds_n)} "
                "rounds)" for r in full.itertuples())
        return Claim("F4", what, NOT_A_CLAIM, ours, CANNOT_DECIDE, why, RULE_F4, NULL_F4)
    ours = f"{rows.form.iloc[0]}: " + "; ".join(
        f"{r.label} {r.minus_stratified:+.2f} ppl" + ("" if np.isnan(r.ci_low) else f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]")
        + f", {r.seeds} seeds, {r.compute_vs_stratified:.2f}x stratified's compute, {r.wall_time_vs_stratified:.2f}x "
        "its wall time" for r in rows.itertuples())
    below = [r.label for r in rows.itertuples() if r.ci_high < 0]
    above = [r.label for r in rows.itertuples() if r.ci_low > 0]
    if rows.ci_low.isna().any():
        verdict, why = CANNOT_DECIDE, "a setting with one seed: no interval"
    elif above:
        verdict, why = WORSE, f"its interval lies above 0 on {', '.join(above)}"
    elif below:
        verdict, why = BETTER, f"its interval lies below 0 on {', '.join(below)} and above 0 nowhere"
    else:
        verdict, why = INCONCLUSIVE, "every interval includes 0"
    return provisional(Claim("F4", what, NOT_A_CLAIM, ours, verdict, why, RULE_F4, NULL_F4), unfinished or {},
                       ("12_aioli_signal",), (BETTER, WORSE))


CHANGES = "changes with size"
RULE_F5 = ("Notebook 13, per (device, setting, Aioli form): Aioli's gap to stratified, (ppl_Aioli - ppl_stratified) / "
           "ppl_stratified in %, at the largest preset with runs minus at the smallest (1m and 4m on the CPU under "
           "full), paired by seed (`13_scale_trend.csv`), with paired t-tests Holm-adjusted over all pairs. Changes "
           "with size: some adjusted p < 0.05 (the sign says whether Aioli gains or loses on stratified as the model "
           "grows). Cannot decide: no pair has two presets with two paired seeds. Otherwise inconclusive, with the "
           "intervals showing how large a change the seeds could miss. The static headroom per preset (one sweep "
           "seed, no interval) is reported beside it, without a verdict.")
NULL_F5 = ("Gaps that do not depend on size (a true change of 0 for every pair): Holm keeps the chance of printing "
           "'changes with size' at or below 5%; simulated in tests/test_signal_scale.py.")


def finding_f5(trend: pd.DataFrame | None, scale_table: pd.DataFrame | None = None,
               unfinished: dict[str, list[str]] | None = None) -> Claim:
    """F5 from notebook 13's ``13_scale_trend.csv`` (``scale.size_trend``) and, for the headroom per preset, its
    ``13_scale.csv``: does Aioli's gap to stratified change with model size?"""
    what = "Scale (notebook 13): does Aioli's gap to stratified change with model size?"
    if trend is None or trend.empty:
        return Claim("F5", what, NOT_A_CLAIM, "-", NOT_RUN, "needs notebook 13 under this profile, with runs at two "
                     "presets", RULE_F5, NULL_F5)
    room = ""
    if scale_table is not None and len(scale_table):
        h = scale_table[scale_table.measure == "headroom_observed_gain_pct"]
        room = "; headroom over uniform (observed, one seed): " + ", ".join(
            f"{r.label} {r.preset}{'' if r.device == 'cpu' else ' ' + r.device} {r.mean:.1f}%" for r in h.itertuples())
    tested = trend[trend.seeds >= 2].copy()
    ours = "; ".join(
        f"{r.label} {r.form} {r.small} to {r.large}{'' if r.device == 'cpu' else ' (' + r.device + ')'}: "
        f"{r.change_pct:+.2f} points" + ("" if np.isnan(r.ci_low) else f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]")
        + f", {r.seeds} seeds" for r in trend.itertuples()) + room
    if tested.empty:
        return Claim("F5", what, NOT_A_CLAIM, ours, CANNOT_DECIDE, "no (setting, form) has two presets with two "
                     "paired seeds", RULE_F5, NULL_F5)
    tested["p_holm"] = holm(tested.p.fillna(1.0).to_numpy())
    hit = tested[tested.p_holm < ALPHA]
    if len(hit):
        verdict = CHANGES
        why = "; ".join(f"{r.label} {r.form}: Aioli {'gains on' if r.change_pct < 0 else 'loses to'} stratified "
                        f"from {r.small} to {r.large} (Holm p = {r.p_holm:.3g})" for r in hit.itertuples())
    else:
        widest = float(np.nanmax(np.abs(tested[["ci_low", "ci_high"]].to_numpy())))
        verdict, why = INCONCLUSIVE, (f"no Holm-adjusted p < {ALPHA}; the intervals allow changes of up to "
                                      f"{widest:.2f} points")
    # the GPU half's missing units (never trained on this machine) leave the trends above complete; others do not
    left = {nb: [u for u in units if NEEDS_GPU not in u] for nb, units in (unfinished or {}).items()}
    return provisional(Claim("F5", what, NOT_A_CLAIM, ours, verdict, why, RULE_F5, NULL_F5), left, ("13_scale",),
                       (CHANGES,))


ADDS, TAKES_AWAY = "Aioli adds to it", "Aioli does worse than the control"
RULE_F6 = ("C7's rule on the extension methods (notebook 05, `05_restricted_extensions_control.csv`): RegMix and ODM "
           "learn p_init within the restricted budget (RegMix: as many of its proxies as fit in the FLOPs of 0.5·S "
           "steps of the final model; ODM: a run of 0.5·S steps, its mean mixture), and Aioli starts from it. Gain = "
           "control - Aioli per (method, setting, seed), the control training p_init for S_init steps and then "
           "stratified. Pooled over the (method, setting) pairs with a 95% t-interval stratified by pair, and a sign "
           "test over the pairs' mean gains. Aioli adds to it: the interval lies above 0 and the sign test is "
           "significant with most pairs positive. Aioli does worse than the control: the interval lies below 0, or "
           "the sign test is significant with most pairs negative. Cannot decide: no finished pair, or a pair with "
           "one seed (no interval). Otherwise inconclusive; provisional while some of the studies are unfinished.")
NULL_F6 = ("Aioli identical to the control: the pooled interval excludes 0 with probability 5% and the sign test "
           "rejects with at most 5%, so the rule prints 'adds to it' at most 2.5% of the time and 'does worse' at "
           "most 5%, as C7's.")


def finding_f6(pairs: pd.DataFrame | None, control: pd.DataFrame | None,
               unfinished: dict[str, list[str]] | None = None) -> Claim:
    """F6 from notebook 05's extension rows: does Aioli improve on RegMix's and ODM's restricted-budget proportions
    beyond what switching to stratified after S_init does?"""
    what = "Restricted budget: Aioli on top of RegMix's and ODM's proportions, against the control"
    if pairs is None or pairs.empty or control is None or control.empty:
        return Claim("F6", what, NOT_A_CLAIM, "-", NOT_RUN, "needs the extension rows of notebook 05 under this "
                     "profile", RULE_F6, NULL_F6)
    alone = "Aioli's gain over p_init alone (the paper's figure): " + ", ".join(
        f"{m} {g.improvement.mean():+.3f}" for m, g in pairs.groupby("method", sort=False))
    c, pooled, per_pair, pos, n, p_sign = gain_over_control(control)
    by_method = "; ".join(f"{m} {g.gain_vs_control.mean():+.3f}" for m, g in c.groupby("method", sort=False))
    ours = (f"{alone}. Against the control: mean gain {pooled['mean']:+.3f}"
            + ("" if np.isnan(pooled["low"]) else f", 95% CI [{pooled['low']:+.3f}, {pooled['high']:+.3f}]")
            + f" ({by_method}), {pos}/{n} pairs positive (sign test p {p_sign:.3f}), {c.seed.nunique()} seed(s)")
    verdict, why = {None: (CANNOT_DECIDE, "a pair with one seed: no interval"),
                    1: (ADDS, "Aioli beats the control on average and on most pairs"),
                    -1: (TAKES_AWAY, "switching to stratified after S_init does better than Aioli's updates"),
                    0: (INCONCLUSIVE, "Aioli's gain over the control is within noise")}[
        control_direction(pooled, pos, n, p_sign)]
    # Only the extension methods' unfinished studies make F6 provisional (the paper's methods' are C7's concern)
    return provisional(Claim("F6", what, NOT_A_CLAIM, ours, verdict, why, RULE_F6, NULL_F6),
                       unfinished_parts(unfinished or {}, extension=True), ("05_restricted_budget",), (ADDS, TAKES_AWAY))
