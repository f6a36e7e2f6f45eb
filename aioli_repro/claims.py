"""Claim by claim: the paper's figure, ours, and a verdict justified by confidence intervals.

Reads the tables the numbered notebooks wrote to ``results/<profile>/`` and writes ``results/<profile>/claims.md``.
Verdicts: **reproduced** (same direction, and the interval excludes the opposite), **not reproduced** (the interval
excludes the paper's direction), **inconclusive** (the interval includes both, or a single seed gives no interval),
**not tested** (out of reach at our scale; the reason is given).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import hparams, tables
from .report import read_not_finished, results_dir

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTED = "reproduced", "not reproduced", "inconclusive", "not tested"
NOT_RUN = "not run yet"

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


@dataclass
class Claim:
    key: str
    claim: str
    paper: str
    ours: str
    verdict: str
    why: str


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


def _setting_cis(d: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """Per setting of one method's paired differences: (mean, lower, upper) of the 95% t-interval over seeds."""
    return {s: tables.paired_ci(v) for s, v in d.groupby("setting")["diff"].agg(list).items()}


def _worse_significantly(cis: dict[str, tuple[float, float, float]]) -> list[str]:
    """Labels of the settings whose interval lies above 0: the method is worse than stratified there."""
    return [hparams.SETTINGS[s].label for s, (_, lo, _) in cis.items() if lo > 0]


def claim_c1(runs: pd.DataFrame) -> Claim:
    d = tables.differences(runs)
    a = d[d.method == "aioli"]
    cis = _setting_cis(a)
    n_better = sum(m < 0 for m, _, _ in cis.values())
    worse_sig = _worse_significantly(cis)
    better_sig = [hparams.SETTINGS[s].label for s, (_, _, hi) in cis.items() if hi < 0]
    mean, lo, hi, seeds = tables.seed_ci(a)
    ours = (f"Aioli below stratified in {n_better}/{len(cis)} settings by the mean "
            f"({len(better_sig)} with the 95% CI below 0); mean difference {mean:+.3f}"
            + ("" if np.isnan(lo) else f", 95% CI [{lo:+.3f}, {hi:+.3f}] over {seeds} seeds"))
    if seeds < 2:
        verdict, why = INCONCLUSIVE, "one seed: no confidence interval"
    elif worse_sig or lo > 0:
        verdict, why = NOT_REPRODUCED, f"Aioli is significantly worse than stratified on {worse_sig or 'average'}"
    elif n_better == len(cis) and hi < 0 and len(cis) < len(hparams.SETTINGS):
        verdict, why = INCONCLUSIVE, f"better on every setting run so far, but only {len(cis)} of the paper's six"
    elif n_better == len(cis) and hi < 0:
        verdict, why = REPRODUCED, "better on every setting, and the pooled interval lies below 0"
    else:
        verdict, why = INCONCLUSIVE, "the intervals include 0"
    return Claim("C1", *_CLAIMS["C1"], ours, verdict, why)


def claim_c2(runs: pd.DataFrame) -> Claim:
    d = tables.differences(runs).dropna(subset=["diff"])
    n_settings = runs.setting.nunique()
    parts, winners, missing, partial, one_seed, significant = [], [], [], [], [], {}
    for method in tables.BASELINES:
        sub = d[d.method == method]
        if sub.empty:
            missing.append(method)
            continue
        cis = _setting_cis(sub)
        beaten = sum(m < 0 for m, _, _ in cis.values())
        # Firm evidence that a baseline does not win everywhere: a setting where its paired 95% CI lies above 0.
        if loses_sig := _worse_significantly(cis):
            significant[method] = loses_sig
        # A method's count is only as firm as its thinnest setting: one seed of a noisy setting can flip a sign.
        seeds = int(sub.groupby("setting")["seed"].nunique().min())
        parts.append(f"{method} {beaten}/{len(cis)}" + (" (1 seed)" if seeds < 2 else ""))
        if len(cis) < n_settings:
            partial.append(method)  # a sitting of a long profile has not reached all its settings
            continue
        if seeds < 2:
            one_seed.append(method)  # whether it wins everywhere or not, one seed cannot say
        elif beaten == len(cis):
            winners.append(method)
    if not parts:
        return _pending("C2", "04_perplexity_comparison (the baselines)")
    ours = "settings beaten by the mean: " + ", ".join(parts)
    if missing:
        ours += f" (not run yet: {', '.join(missing)})"
    if winners:
        verdict, why = NOT_REPRODUCED, f"{winners} beat stratified on every setting"
    elif missing or partial:
        gaps = ([f"{', '.join(missing)} not run yet"] if missing else []) + (
            [f"{', '.join(partial)} not on every setting yet"] if partial else [])
        verdict, why = INCONCLUSIVE, "no baseline that has run everywhere wins everywhere, but " + "; ".join(gaps)
    elif one_seed:
        verdict, why = INCONCLUSIVE, (f"no baseline wins everywhere, but {', '.join(one_seed)} have one seed on some "
                                      "setting, where a count is noise")
    else:
        # The paper counts by the mean, and so does the verdict; the reason says how firm each count is.
        firm = "; ".join(f"{m} on {', '.join(v)}" for m, v in significant.items())
        by_mean = [m for m in tables.BASELINES if m not in significant]
        why = ("no existing method beats stratified on every setting"
               + (f"; significantly worse than stratified (95% CI above 0): {firm}" if firm else "")
               + (f"; {', '.join(by_mean)} lose only by the mean (their intervals include 0)" if by_mean else ""))
        verdict = REPRODUCED
    return Claim("C2", *_CLAIMS["C2"], ours, verdict, why)


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
    return Claim("C3", *_CLAIMS["C3"], ours, verdict, why)


def claim_c4(relation: pd.DataFrame, summary: pd.DataFrame) -> Claim:
    rel = relation.set_index(relation.columns[0])[relation.columns[1]]
    r2, slope, dots = float(rel["r2"]), float(rel["slope"]), int(float(rel["dots"]))
    sims = summary.groupby("method").sim.mean()
    aioli_top = bool(sims.idxmax() == "aioli") if "aioli" in sims else False
    ours = (f"R² {r2:.3f} (slope {slope:+.2f}) over {dots} (method, setting) dots; mean sim "
            + ", ".join(f"{m} {v:.2f}" for m, v in sims.items()) + f"; Aioli highest: {aioli_top}")
    if slope > 0 and r2 >= 0.25 and aioli_top:
        verdict, why = REPRODUCED, "positive relation of similar strength, and Aioli's estimate is the most faithful"
    elif dots >= 10 and (slope <= 0 or r2 < 0.1):
        verdict, why = NOT_REPRODUCED, "no positive relation between fidelity and improvement at our scale"
    else:
        verdict, why = INCONCLUSIVE, "too few dots or a weak relation"
    return Claim("C4", *_CLAIMS["C4"], ours, verdict, why)


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
    return Claim("C5", *_CLAIMS["C5"], ours, verdict, why)


def claim_c7(pairs: pd.DataFrame) -> Claim:
    s = tables.restricted_summary(pairs)
    # Each seed's mean must cover the same (method, setting) pairs, so a pair is the unit seed_ci checks per seed.
    keyed = pairs.dropna(subset=["improvement"]).assign(setting=pairs.setting + "/" + pairs.method)
    _, lo, hi, seeds = tables.seed_ci(keyed, "improvement")
    shared = tables.whole_seeds(keyed).setting.nunique()
    ours = (f"Aioli improves {s['improved']}/{s['pairs']} pairs; mean {s['mean']:+.3f}, median {s['median']:+.3f}, "
            f"max {s['max']:+.3f}"
            + ("" if np.isnan(lo) else f"; 95% CI of the mean [{lo:+.3f}, {hi:+.3f}] over "
               + (f"the {seeds} seeds that have every pair" if shared == keyed.setting.nunique()
                  else f"{seeds} seeds, on the {shared} pair(s) they all have")))
    if seeds < 2:
        verdict, why = INCONCLUSIVE, "fewer than two seeds share the pairs: no confidence interval"
    elif hi < 0:
        verdict, why = NOT_REPRODUCED, "Aioli on top makes the methods worse on average"
    elif lo > 0 and s["improved"] >= 0.8 * s["pairs"]:
        verdict, why = REPRODUCED, "improves most pairs and the mean improvement's interval lies above 0"
    else:
        verdict, why = INCONCLUSIVE, "the interval includes 0 or too few pairs improve"
    return Claim("C7", *_CLAIMS["C7"], ours, verdict, why)


def claim_c8(runs: pd.DataFrame) -> Claim:
    if any(m not in set(runs.method) for m in tables.ABLATIONS):
        return _pending("C8", "06_ablations (both ablations)")
    # Cells where all three have finished, and, like the table's CI, the seeds that have all those settings.
    d = tables.whole_seeds(tables.complete_cells(tables.differences(runs), tables.ABLATIONS))
    if d.empty:
        return _pending("C8", "06_ablations (both ablations)")
    means = d.groupby("method")["diff"].mean()
    seeds = d.seed.nunique()
    gaps = {}
    for abl in ("aioli_static", "aioli_diagonal"):
        a = d[d.method == "aioli"].set_index(["setting", "seed"])["diff"]
        b = d[d.method == abl].set_index(["setting", "seed"])["diff"]
        gaps[abl] = tables.paired_ci((b - a).groupby(level="seed").mean())
    ours = ", ".join(f"{m} {means.get(m, np.nan):+.3f}" for m in tables.ABLATIONS) + "; " + ", ".join(
        f"{k} - aioli {v[0]:+.3f}" + ("" if np.isnan(v[1]) else f" [{v[1]:+.3f}, {v[2]:+.3f}]") for k, v in gaps.items()) \
        + f" ({d.setting.nunique()} settings, {seeds} seed(s))"
    if seeds < 2:
        verdict, why = INCONCLUSIVE, "one seed: no confidence interval"
    elif all(v[1] > 0 for v in gaps.values()) and all(means[m] < 0 for m in tables.ABLATIONS):
        verdict, why = REPRODUCED, "both ablations keep some gain but are significantly worse than Aioli"
    elif any(v[2] < 0 for v in gaps.values()):
        verdict, why = NOT_REPRODUCED, "an ablation is significantly better than full Aioli"
    else:
        verdict, why = INCONCLUSIVE, "the differences between Aioli and its ablations are within noise"
        if means["aioli"] >= 0:
            why += "; Aioli itself shows no gain over stratified here, so there is no gain for them to keep"
    return Claim("C8", *_CLAIMS["C8"], ours, verdict, why)


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
                 "LearnParams steps count against the run's own budget")


def not_tested(key: str, claim: str, paper: str, why: str) -> Claim:
    return Claim(key, claim, paper, "-", NOT_TESTED, why)


def provisional(claim: Claim, unfinished: dict[str, list[str]], notebooks: tuple[str, ...]) -> Claim:
    """A verdict drawn from a study that has not finished all its parts (``unfinished``: ``not_finished.json``) is
    only provisional: reproduced or not reproduced becomes inconclusive, and the reason says what the finished part
    shows."""
    left = {nb: len(unfinished[nb]) for nb in notebooks if unfinished.get(nb)}
    if not left or claim.verdict not in (REPRODUCED, NOT_REPRODUCED):
        return claim
    parts = ", ".join(f"{n} part(s) of {nb}" for nb, n in left.items())
    return replace(claim, verdict=INCONCLUSIVE,
                   why=f"provisional, {parts} not finished yet; the finished part says {claim.verdict}: {claim.why}")


def _pending(key: str, notebook: str) -> Claim:
    """A claim whose table this profile has not produced yet (a long profile run in sittings)."""
    claim, paper = _CLAIMS[key]
    return Claim(key, claim, paper, "-", NOT_RUN, f"needs notebook {notebook} under this profile")


def build_claims(profile: str, extra: list[Claim] | None = None) -> list[Claim]:
    """Every claim the tables of ``profile`` can speak to (``extra``: claims built by the fidelity notebooks)."""
    res = results_dir(profile)
    out: list[Claim] = []
    runs = _read(res / "04_runs.csv")
    out += [claim_c1(runs), claim_c2(runs)] if runs is not None else \
        [_pending("C1", "04_perplexity_comparison"), _pending("C2", "04_perplexity_comparison")]
    static, dynamic = _read(res / "01_static_law_summary.csv"), _read(res / "02_dynamic_law_summary.csv")
    # Studies a render from the cache left partly out (notebooks write not_finished.json): their verdicts wait.
    left = read_not_finished(res)
    out.append(provisional(claim_c3(static, dynamic), left, ("01_static_mixing_law", "02_dynamic_mixing_law"))
               if static is not None else _pending("C3", "01_static_mixing_law"))
    relation, fsum = _read(res / "03_fidelity_relation.csv"), _read(res / "03_fidelity_summary.csv")
    out.append(provisional(claim_c4(relation, fsum), left, ("03_method_fidelity",))
               if relation is not None and fsum is not None else _pending("C4", "03_method_fidelity"))
    changes = _read(res / "03_colsum_ordering_changes.csv")
    out.append(provisional(claim_c5(changes), left, ("03_method_fidelity",)) if changes is not None
               else _pending("C5", "03_method_fidelity"))
    out += extra or []
    pairs = _read(res / "05_restricted_runs.csv")
    out.append(provisional(claim_c7(pairs), left, ("05_restricted_budget",)) if pairs is not None
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
    return sorted(out, key=lambda c: int(c.key[1:]))


def claims_markdown(claims: list[Claim], profile: str) -> str:
    lines = [f"# Claims of the paper at our scale ({profile} profile)", "",
             "Generated by `notebooks/07_claims.ipynb` from the tables in this folder. Verdicts: reproduced / "
             "not reproduced / inconclusive (the 95% interval includes both outcomes, or one seed) / not tested / "
             "not run yet (the notebook has not run under this profile).", "",
             "| claim | paper | ours | verdict | why |", "|---|---|---|---|---|"]
    for c in claims:
        lines.append(f"| **{c.key}** {c.claim} | {c.paper} | {c.ours} | **{c.verdict}** | {c.why} |")
    return "\n".join(lines) + "\n"
