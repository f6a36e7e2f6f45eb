"""The statistics every verdict rests on: paired intervals, exact power, multiple testing, reliability.

Runs of two methods with the same seed share the initialisation and each group's data order, so every comparison is
*paired by seed*: a difference per seed, and a one-sample t-test on those differences. Three seeds give 2 degrees of
freedom, so power is low and the noncentral t (not its normal approximation) says what such a test can see.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats


def paired_ci(diffs, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-seed paired differences and its t-interval; (mean, nan, nan) with a single seed, all nan with
    none."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return float(d[0]) if d.size else float("nan"), float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def t_pvalue(diffs) -> float:
    """Two-sided p-value of the one-sample t-test of the paired differences against 0 (nan with < 2 values or none
    of their spread)."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2 or not d.std(ddof=1) > 0:
        return float("nan")
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def t_power(noncentrality: float, df: float, alpha: float = 0.05) -> float:
    """Power of a two-sided t-test with ``df`` degrees of freedom when the true mean is ``noncentrality`` standard
    errors away from 0: P(|T'| > t_crit), T' noncentral t."""
    crit = stats.t.ppf(1 - alpha / 2, df)
    # scipy's nct returns nan for a tail far beyond its bulk (|nc| in the tens); that tail is 0.
    upper, lower = stats.nct.sf(crit, df, noncentrality), stats.nct.cdf(-crit, df, noncentrality)
    return float(np.nan_to_num(upper, nan=float(noncentrality > 0))
                 + np.nan_to_num(lower, nan=float(noncentrality < 0)))


def t_test_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample t-test on n paired differences with true mean ``effect`` and sd ``sd``
    (n - 1 df, noncentrality effect·√n / sd)."""
    if n < 2 or not sd > 0:
        return float("nan")
    return t_power(effect * np.sqrt(n) / sd, n - 1, alpha)


def detectable_effect(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean a two-sided t-test with standard error ``se`` and ``df`` degrees of freedom detects with
    the given power (exact, by the noncentral t)."""
    if not (np.isfinite(se) and se > 0 and np.isfinite(df) and df > 0):
        return float("nan")
    return float(optimize.brentq(lambda nc: t_power(nc, df, alpha) - power, 0.0, 60.0) * se)


def min_detectable_difference(sd_diff: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true paired difference a two-sided t-test on n seeds detects with the given power (exact, by the
    noncentral t; the normal approximation (z_{1-α/2} + z_power)·sd/√n understates it badly at n = 3)."""
    if n < 2 or not (np.isfinite(sd_diff) and sd_diff > 0):
        return float("nan")
    return detectable_effect(sd_diff / np.sqrt(n), n - 1, alpha, power)


def stratified_ci(values, strata, level: float = 0.95) -> dict:
    """Mean over strata of each stratum's mean (e.g. settings, each with its seeds), with a t-interval whose
    standard error sums the strata's own variances, se² = Σ_s v_s/n_s / S², and Welch–Satterthwaite degrees of
    freedom. Strata with fewer than two values make it undefined (nan interval). Returns mean, low, high, se, df,
    strata, p (two-sided, against 0)."""
    d = pd.DataFrame({"v": np.asarray(values, dtype=float), "s": list(strata)}).dropna()
    g = d.groupby("s", sort=False)["v"]
    means, var, n = g.mean(), g.var(ddof=1), g.count()
    out = {"mean": float(means.mean()) if len(means) else float("nan"), "low": float("nan"), "high": float("nan"),
           "se": float("nan"), "df": float("nan"), "strata": int(len(means)), "p": float("nan")}
    if not len(means) or (n < 2).any():
        return out
    k = var / n
    se = float(np.sqrt(k.sum()) / len(means))
    if not se > 0:
        return out
    df = float(k.sum() ** 2 / (k**2 / (n - 1)).sum())
    half = stats.t.ppf(0.5 + level / 2, df) * se
    p = float(2 * stats.t.sf(abs(out["mean"]) / se, df))
    return {**out, "low": out["mean"] - half, "high": out["mean"] + half, "se": se, "df": df, "p": p}


def seeds_needed(sd_diff: float, effect: float, alpha: float = 0.05, power: float = 0.8, max_seeds: int = 1000) -> float:
    """Fewest seeds whose paired t-test detects a true difference ``effect`` with the given power (nan if the sd is
    unknown; inf past ``max_seeds``)."""
    if not (np.isfinite(sd_diff) and sd_diff > 0) or effect == 0:
        return float("nan") if not np.isfinite(sd_diff) else float("inf")
    for n in range(2, max_seeds + 1):
        if t_test_power(abs(effect), sd_diff, n, alpha) >= power:
            return float(n)
    return float("inf")


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control over the given tests); nan stays nan."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    k, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p[i]))
        out[i] = running
    return out


def sign_test(values) -> tuple[int, int, float]:
    """(positives, non-zero values, two-sided exact binomial p-value against 1/2)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v != 0)]
    if not v.size:
        return 0, 0, float("nan")
    pos = int((v > 0).sum())
    return pos, int(v.size), float(stats.binomtest(pos, v.size, 0.5).pvalue)


def reliability(values, units, seeds) -> dict:
    """How reliably a per-unit mean over seeds ranks the units (e.g. the similarity of each (method, setting) dot).

    ``between_var``: variance of the unit means; ``noise_var``: the seed noise of one unit's mean (the mean
    within-unit variance over seeds divided by the seeds per unit); ``reliability`` = 1 - noise_var / between_var
    (the share of the unit means' spread that is not seed noise; <= 0 when noise explains it all). Units need two
    or more seeds."""
    d = pd.DataFrame({"v": np.asarray(values, dtype=float), "u": list(units), "s": list(seeds)}).dropna()
    g = d.groupby("u")["v"]
    counts = g.count()
    keep = counts[counts >= 2].index
    if len(keep) < 2:
        return {"units": int(len(keep)), "between_var": float("nan"), "noise_var": float("nan"),
                "reliability": float("nan")}
    means, within = g.mean()[keep], g.var(ddof=1)[keep]
    between = float(means.var(ddof=1))
    noise = float((within / counts[keep]).mean())
    return {"units": int(len(keep)), "between_var": between, "noise_var": noise,
            "reliability": float(1 - noise / between) if between > 0 else float("-inf")}


def ratio_ci(numerator, denominator, level: float = 0.95) -> tuple[float, float, float]:
    """Ratio of the means of paired values, mean(x) / mean(y), with Fieller's interval: every ρ for which the paired
    t-test of x_i - ρ·y_i keeps "mean 0" at ``level``. The interval is bounded only when mean(y) itself differs
    significantly from 0; otherwise the data cannot bound the ratio and (ratio, -inf, inf) comes back. (ratio, nan,
    nan) with fewer than two pairs.

    Fieller: with a, b the means, v11, v22 their variances, v12 their covariance (sample values / n) and t the
    t-quantile with n - 1 degrees of freedom, the bounds solve (a - ρ·b)² = t²·(v11 - 2ρ·v12 + ρ²·v22)."""
    x, y = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"ratio_ci needs paired values, got {x.size} numerators and {y.size} denominators")
    n = x.size
    a, b = (float(x.mean()), float(y.mean())) if n else (float("nan"), float("nan"))
    ratio = a / b if b != 0 else float("nan")
    if n < 2:
        return ratio, float("nan"), float("nan")
    cov = np.cov(x, y, ddof=1) / n
    t2 = stats.t.ppf(0.5 + level / 2, n - 1) ** 2
    qa = b * b - t2 * cov[1, 1]
    qb = a * b - t2 * cov[0, 1]
    qc = a * a - t2 * cov[0, 0]
    if qa <= 0:  # mean(y) is not significantly different from 0
        return ratio, float("-inf"), float("inf")
    root = np.sqrt(max(qb * qb - qa * qc, 0.0))
    return ratio, float((qb - root) / qa), float((qb + root) / qa)
