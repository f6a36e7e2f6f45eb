"""Can a setting show anything at all? Headroom of the best static mixture against what the seeds can detect.

The static law L_i(p) = c_i + b_i·exp(-Σ_j A_ij p_j), fitted per seed to the sweep's *test* losses, predicts the
average test perplexity (1/m)·Σ_i exp(L_i(p)) of any static mixture. Its gain over uniform at the best mixture
anywhere on the simplex (``headroom_anywhere``) bounds what any static method could win on the setting; the gain at
the best mixture Aioli's released EMA form can reach from uniform (p = softmax(η·c), c on the simplex; its extremes are
``policies.aioli.eg_band``) bounds what Aioli's mixture could win (``headroom_in_band``). When the in-band headroom is smaller than the difference the seeds
detect with 80% power (``stats.min_detectable_difference`` on Aioli's own paired sd), the setting cannot show Aioli
beating stratified, whatever Aioli does: a claim there says "cannot decide", not "not reproduced". (A loss can still
be detected there: a mixture or schedule can be much worse than uniform.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize

from . import hparams
from .laws import StaticLawFit, fit_static_law
from .methods import setting_groups, sweep
from .policies.aioli import eg_band
from .profiles import get_profile
from .stats import min_detectable_difference, seeds_needed


def mean_perplexity(fit: StaticLawFit, p) -> float:
    """(1/m)·Σ_i exp(L_i(p)): the average test perplexity the law predicts for mixture p."""
    return float(np.mean(np.exp(fit.predict(np.asarray(p, dtype=float)[None, :])[0])))


def best_mixture(fit: StaticLawFit, low: float = 0.0, high: float = 1.0, n_starts: int = 16,
                 seed: int = 0) -> tuple[np.ndarray, float]:
    """The mixture with the lowest predicted average perplexity among those with every p_j in [low, high] (the whole
    simplex by default), and that perplexity. SLSQP from uniform and seeded Dirichlet starts clipped into the box."""
    m = fit.m
    if not (low <= 1.0 / m <= high):
        raise ValueError(f"the box [{low}, {high}] must contain the uniform mixture 1/m = {1 / m:.4f}")

    def value(p):  # the law itself, not fit.predict: SLSQP probes points slightly off the simplex
        p = np.clip(p, 0.0, None)
        return float(np.mean(np.exp(fit.c + fit.b * np.exp(-fit.A @ (p / p.sum())))))

    rng = np.random.default_rng(seed)
    starts = [np.full(m, 1.0 / m)] + [rng.dirichlet(np.ones(m)) for _ in range(n_starts - 1)]
    best_p, best_v = np.full(m, 1.0 / m), value(np.full(m, 1.0 / m))
    for p0 in starts:
        p0 = np.clip(p0, low, high)
        p0 = p0 / p0.sum()
        res = optimize.minimize(value, p0, method="SLSQP", bounds=[(low, high)] * m,
                                constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0}],
                                options={"ftol": 1e-12, "maxiter": 300})
        p = np.clip(res.x, low, high)
        p = p / p.sum()
        if value(p) < best_v and np.all(p >= low - 1e-9) and np.all(p <= high + 1e-9):
            best_p, best_v = p, value(p)
    return best_p, best_v


def best_reachable(fit: StaticLawFit, eta: float, n_starts: int = 16, seed: int = 0) -> tuple[np.ndarray, float]:
    """The best mixture Aioli's EMA form can reach from a uniform base: p = softmax(η·c) with c = colsum(E) on the
    simplex (E is an average of non-negative matrices of unit total). Searched over c = softmax(z) from uniform and
    seeded starts."""
    m = fit.m

    def mixture(z):
        c = np.exp(z - z.max())
        return softmax_eta(c / c.sum(), eta)

    rng = np.random.default_rng(seed)
    starts = [np.zeros(m)] + [np.log(rng.dirichlet(np.ones(m))) for _ in range(n_starts - 1)]
    best_p = np.full(m, 1.0 / m)
    best_v = mean_perplexity(fit, best_p)
    for z0 in starts:
        res = optimize.minimize(lambda z: mean_perplexity(fit, mixture(z)), z0, method="L-BFGS-B")
        p = mixture(res.x)
        if (v := mean_perplexity(fit, p)) < best_v:
            best_p, best_v = p, v
    return best_p, best_v


def softmax_eta(c: np.ndarray, eta: float) -> np.ndarray:
    w = np.exp(eta * (c - c.max()))
    return w / w.sum()


def headroom(P, L_test, eta: float, seed: int = 0, n_starts: int = 16) -> dict:
    """Static-law headroom of one sweep (mixtures P, per-group test losses L_test): predicted average perplexity
    at uniform, at the best mixture anywhere and at the best Aioli's EMA form can reach with step size η (its
    band), and the gains over uniform."""
    fit = fit_static_law(P, L_test, n_starts=n_starts, seed=seed)
    m = fit.m
    uniform = mean_perplexity(fit, np.full(m, 1.0 / m))
    p_any, v_any = best_mixture(fit, seed=seed)
    p_band, v_band = best_reachable(fit, eta, seed=seed)
    return {"fit_r2_min": float(np.min(fit.r2)), "ppl_uniform": uniform, "ppl_best": v_any, "ppl_best_in_band": v_band,
            "headroom_anywhere": uniform - v_any, "headroom_in_band": uniform - v_band,
            "p_best": [round(float(x), 4) for x in p_any], "p_best_in_band": [round(float(x), 4) for x in p_band]}


def headroom_table(settings, profile: str, seeds, runner) -> pd.DataFrame:
    """``headroom`` per (setting, seed) from the full-length sweep runs grid search and DML share (cached runs)."""
    rows = []
    S = get_profile(profile).train.steps
    for s in settings:
        st = hparams.get_setting(s)
        groups = setting_groups(st, profile)
        m = len(groups)
        eta = hparams.aioli_config(m, S)["eta"]
        band = eg_band(m, eta)
        for seed in seeds:
            cfgs = sweep(profile, groups, seed)
            results = runner.run(cfgs)
            P = np.array([c.method_config["proportions"] for c in cfgs])
            L = np.array([[r["test_loss"][g] for g in groups] for r in results])
            rows.append({"setting": s, "label": st.label, "seed": seed, "m": m, "mixtures": len(P),
                         "eta": eta, "band_low": band[0], "band_high": band[1], **headroom(P, L, eta, seed=seed)})
    return pd.DataFrame(rows)


def decidability_table(headrooms: pd.DataFrame, power: pd.DataFrame, method: str = "aioli") -> pd.DataFrame:
    """Per setting: mean headroom over seeds (anywhere, in Aioli's band; perplexity and % of uniform's), the
    difference ``method``'s paired test detects now (80% power), the seeds it would need to detect the in-band
    headroom, and whether the setting can show ``method`` beating stratified at all."""
    pw = power[power.method == method].set_index("setting")
    rows = []
    for label, g in headrooms.groupby("label", sort=False):
        anywhere, in_band, uniform = g.headroom_anywhere.mean(), g.headroom_in_band.mean(), g.ppl_uniform.mean()
        sd = float(pw.paired_diff_sd.get(label, np.nan))
        seeds = int(pw.seeds.get(label, 0))
        mdd = min_detectable_difference(sd, seeds)
        rows.append({"setting": label, "sweep_seeds": len(g), "headroom_anywhere": anywhere,
                     "headroom_anywhere_pct": 100 * anywhere / uniform, "headroom_in_band": in_band,
                     "headroom_in_band_pct": 100 * in_band / uniform, f"{method}_paired_sd": sd, "seeds": seeds,
                     "detectable_now": mdd, "seeds_needed_for_band_headroom": seeds_needed(sd, in_band),
                     "can_show_a_gain": bool(np.isfinite(mdd) and in_band >= mdd)})
    return pd.DataFrame(rows)
