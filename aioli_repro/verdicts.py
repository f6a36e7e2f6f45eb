"""The words a verdict is given in, the record of one claim or finding, and the paired tests that claims and
findings share (``claims`` for the paper's claims, ``findings`` for this repository's own)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from . import hparams, tables
from .stats import holm, sign_test, stratified_ci, t_pvalue

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTED = "reproduced", "not reproduced", "inconclusive", "not tested"
CANNOT_DECIDE = "cannot decide"
NOT_RUN = "not run yet"
ALPHA = 0.05


@dataclass
class Claim:
    key: str
    claim: str
    paper: str
    ours: str
    verdict: str
    why: str
    rule: str = ""
    """The rule that turns the evidence into the verdict."""
    null: str = ""
    """What the rule prints for a method identical to the baseline (or an effect of size zero)."""


def log_ratios(runs: pd.DataFrame, method: str, baseline: str = "stratified") -> pd.DataFrame:
    """Per (setting, seed): ln(ppl_method / ppl_baseline), paired by seed (rows without a pair are dropped)."""
    d = tables.differences(runs, baseline)
    d = d[(d.method == method) & d["diff"].notna()].copy()
    base = d.avg_test_perplexity - d["diff"]
    d["log_ratio"] = np.log(d.avg_test_perplexity / base)
    return d[["setting", "seed", "log_ratio", "diff"]].reset_index(drop=True)


def setting_tests(d: pd.DataFrame, value: str = "diff") -> pd.DataFrame:
    """Per setting of one method: mean, paired t-test p-value over seeds, Holm-adjusted p over the settings, seeds."""
    rows = [{"setting": s, "mean": float(g[value].mean()), "p": t_pvalue(g[value]), "seeds": int(g.seed.nunique())}
            for s, g in d.groupby("setting", sort=False)]
    out = pd.DataFrame(rows, columns=["setting", "mean", "p", "seeds"])
    out["p_holm"] = holm(out.p.to_numpy()) if len(out) else []
    out["label"] = [hparams.SETTINGS[s].label if s in hparams.SETTINGS else s for s in out.setting]
    return out


def significant_settings(t: pd.DataFrame, sign: int) -> list[str]:
    return [r.label for r in t.itertuples() if r.p_holm < ALPHA and np.sign(r.mean) == sign]


def provisional(claim: Claim, unfinished: dict[str, list[str]], notebooks: tuple[str, ...],
                decisive: tuple[str, ...] = (REPRODUCED, NOT_REPRODUCED)) -> Claim:
    """A verdict drawn from a study that has not finished all its parts (``unfinished``: ``not_finished.json``) is
    only provisional: a ``decisive`` verdict (reproduced or not reproduced, for the paper's claims) becomes
    inconclusive, and the reason says what the finished part shows."""
    left = {nb: len(unfinished[nb]) for nb in notebooks if unfinished.get(nb)}
    if not left or claim.verdict not in decisive:
        return claim
    parts = ", ".join(f"{n} part(s) of {nb}" for nb, n in left.items())
    return replace(claim, verdict=INCONCLUSIVE,
                   why=f"provisional, {parts} not finished yet; the finished part says {claim.verdict}: {claim.why}")


def gain_over_control(control: pd.DataFrame) -> tuple[pd.DataFrame, dict, pd.Series, int, int, float]:
    """The restricted budget's test of Aioli against its control (C7, F6): the rows with a gain (control - Aioli,
    per method, setting and seed) and a ``pair`` key (setting/method), the pooled mean with a 95% t-interval
    stratified by pair, each pair's mean over seeds, and the sign test over those means (positives, pairs, p)."""
    c = control.dropna(subset=["gain_vs_control"])
    c = c.assign(pair=c.setting + "/" + c.method)
    per_pair = c.groupby("pair").gain_vs_control.mean()
    return (c, stratified_ci(c.gain_vs_control, c.pair), per_pair, *sign_test(per_pair))


def control_direction(pooled: dict, positives: int, pairs: int, p_sign: float) -> int | None:
    """The restricted budget's rule (C7, F6) on ``gain_over_control``'s numbers: None without an interval (a pair
    with one seed); +1 when the pooled interval lies above 0 and the sign test is significant with most pairs
    positive; -1 when the interval lies below 0, or the sign test is significant with most pairs negative; else 0."""
    if np.isnan(pooled["low"]):
        return None
    if pooled["low"] > 0 and p_sign < ALPHA and positives > pairs / 2:
        return 1
    if pooled["high"] < 0 or (p_sign < ALPHA and positives < pairs / 2):
        return -1
    return 0


def extension_part(item: str) -> bool:
    """Whether an unfinished part (a ``not_finished.json`` entry) belongs to an extension method (RegMix, ODM): such
    parts make this repository's findings provisional, never the paper's claims."""
    return "extension" in item or any(f"{m}/" in item for m in tables.EXTENSION_METHODS)


def unfinished_parts(unfinished: dict[str, list[str]], extension: bool) -> dict[str, list[str]]:
    """``unfinished`` (notebook -> parts) keeping only the extension methods' parts, or only the others'."""
    return {nb: [x for x in parts if extension_part(x) == extension] for nb, parts in unfinished.items()}
