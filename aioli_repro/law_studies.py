"""The mixing laws of notebooks 01 and 02: do they fit our runs? (paper §4.1, spec §4; official analysis notebooks,
spec official-code §3). Each study runs (or finds cached) the training runs it needs and returns tidy tables.

1. ``static_law_study``: sweep runs over fixed mixtures (m = 2: the grid; m >= 3: a Dirichlet cover), then the
   log-linear law L_i(p) = c_i + b_i exp(-sum_j A_ij p_j) fitted per group to the final validation losses, in sample
   and leave-one-mixture-out. Paper: R^2 0.991.
2. ``dynamic_law_study``: parents are static runs at a few sweep mixtures, stopped at the break step t with their full
   state kept; children branch from that state (:mod:`aioli_repro.branching`) and train a short horizon h under every
   sweep mixture. The linear law L^{t+h}_i = L^t_i - sum_j A_ij p_j is fitted per parent. Paper: R^2 0.947 (break
   2000, 100-step children of 5,000-step runs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import hparams
from .branching import (
    as_setting,
    branch_children,
    break_step,
    check_found,
    default_horizon,
    run_configs,
    skip_unfinished,
    study_runner,
)
from .executors import NotCachedError, Runner
from .laws import fit_static_law
from .methods import setting_groups, sweep
from .profiles import get_profile, study_seeds
from .report import paper_line

__all__ = ["PAPER", "DYNAMIC_BREAK_FRACTION", "parent_indices", "LawStudy", "StaticLawStudy", "static_law_study",
           "DynamicLawStudy", "dynamic_law_study", "static_reading", "dynamic_reading"]

PAPER = {
    "static_r2": 0.991,  # paper §4.1 (log-linear static law, sweeps over the simplex)
    "dynamic_r2": 0.947,  # paper §4.1 (linear dynamic law, branched children)
    "mean_mse": 5e-4,  # paper: "0.0005 MSE and 0.969 R^2" on average over the two laws
}
"""The paper's numbers each law study is compared with."""

DYNAMIC_BREAK_FRACTION = 0.4
"""The dynamic-law parents break at 0.4 S (paper: 2000 of 5000)."""


def parent_indices(P, n_parents: int) -> list[int]:
    """Indices of ``n_parents`` well-spread mixtures of a sweep, used as dynamic-law parents.

    m = 2: evenly spaced along p_1 (both ends and the middle for 3). m >= 3: the mixture closest to uniform, then
    greedy farthest-point picks, so the parents differ as much as the sweep allows.
    """
    P = np.asarray(P, dtype=float)
    n, m = P.shape
    k = min(int(n_parents), n)
    if k < 1:
        raise ValueError(f"n_parents must be >= 1, got {n_parents}")
    if m == 2:
        order = np.argsort(P[:, 0], kind="stable")
        return sorted({int(order[i]) for i in np.round(np.linspace(0, n - 1, k)).astype(int)})
    chosen = [int(np.argmin(np.linalg.norm(P - 1.0 / m, axis=1)))]
    while len(chosen) < k:
        d = np.min(np.linalg.norm(P[:, None, :] - P[chosen][None, :, :], axis=2), axis=1)
        d[chosen] = -1.0
        chosen.append(int(np.argmax(d)))
    return sorted(chosen)


def _sweep_losses(setting: hparams.Setting, profile: str, seed: int, runner: Runner):
    groups = setting_groups(setting, profile)
    cfgs = sweep(profile, groups, seed)
    results = run_configs(cfgs, runner)
    P = np.array([c.method_config["proportions"] for c in cfgs], dtype=float)
    L = np.array([[r["val_loss"][g] for g in groups] for r in results], dtype=float)
    return groups, cfgs, P, L


# ----------------------------------------------------------------------------------------------------------------------
# 1. Static log-linear law
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class LawStudy:
    """What a mixing-law study returns: goodness of fit per fitted law, the points it was fitted to, the fits."""

    table: pd.DataFrame
    """One row per fitted law and group: r2, mse, loo_r2, loo_mse, and the law's own columns."""
    points: pd.DataFrame
    """One row per observation and group: the observed loss and the fit's prediction."""
    fits: dict = field(repr=False)
    """Study key -> the fit (StaticLawFit or DynamicLawFit)."""
    profile: str = ""
    missing: list = field(default_factory=list)
    """With a runner that only reads the cache: the (setting, seed) parts left out because they have not finished."""

    def summary(self) -> pd.DataFrame:
        """Mean R^2 and MSE per setting, in sample and leave-one-mixture-out, and over everything ('all')."""
        return _summary(self.table, ["r2", "mse", "loo_r2", "loo_mse"])


@dataclass
class StaticLawStudy(LawStudy):
    """``table``: one row per (setting, seed, group) with the fitted c, b; ``points``: one row per (setting, seed,
    mixture, group) with the mixture; ``fits``: (setting key, seed) -> StaticLawFit."""


def _summary(table: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    per = table.groupby(["setting", "label"], sort=False)[cols].mean().reset_index()
    per["fits"] = table.groupby(["setting", "label"], sort=False).size().values
    per["seeds"] = table.groupby(["setting", "label"], sort=False)["seed"].nunique().values
    allrow = {"setting": "all", "label": "all", **table[cols].mean().to_dict(), "fits": len(table),
              "seeds": table["seed"].nunique()}
    return pd.concat([per, pd.DataFrame([allrow])], ignore_index=True)


def static_law_study(settings: Iterable[str | hparams.Setting], profile: str, seeds: Iterable[int] | None = None,
                     runner: Runner | None = None, n_starts: int = 16) -> StaticLawStudy:
    """Sweep each setting (cached runs shared with grid search and DML), fit the static law per group with
    leave-one-mixture-out, and tabulate goodness of fit.

    ``n_starts`` per fit (leave-one-out refits it n + 1 times): 16, not ``fit_static_law``'s 64, because on the quick
    profile's five sweeps 8, 16 and 64 starts gave the same in-sample and leave-one-out R^2 to 4 decimals, and 64 made
    this study the slowest part of re-rendering notebook 01 (about 30 s per setting against 8 s)."""
    runner = study_runner(runner)
    rows, pts, fits, missing = [], [], {}, []
    for s in settings:
        st = as_setting(s)
        for seed in study_seeds(profile, seeds):
            try:
                groups, _, P, L = _sweep_losses(st, profile, seed, runner)
            except NotCachedError:
                skip_unfinished(runner, missing, f"{st.label}/seed {seed}")
                continue
            fit = fit_static_law(P, L, loo=True, n_starts=n_starts, seed=seed)
            fits[(st.key, seed)] = fit
            pred = fit.predict(P)
            for i, g in enumerate(groups):
                rows.append({"setting": st.key, "label": st.label, "seed": seed, "m": len(groups), "group": g,
                             "n_mixtures": len(P), "r2": fit.r2[i], "mse": fit.mse[i], "loo_r2": fit.loo_r2[i],
                             "loo_mse": fit.loo_mse[i], "c": fit.c[i], "b": fit.b[i]})
                for k in range(len(P)):
                    pts.append({"setting": st.key, "label": st.label, "seed": seed, "mixture": k,
                                "p": P[k].tolist(), "p1": P[k, 0], "group": g, "observed": L[k, i],
                                "predicted": pred[k, i]})
    check_found(rows, missing, "static-law")
    return StaticLawStudy(pd.DataFrame(rows), pd.DataFrame(pts), fits, profile, missing)


# ----------------------------------------------------------------------------------------------------------------------
# 2. Dynamic linear law
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class DynamicLawStudy(LawStudy):
    """``table``: one row per (setting, seed, parent, group) with the break step and horizon; ``points``: one row per
    (setting, seed, parent, child, group) with L^t and the observed and predicted L^{t+h}; ``fits``: (setting key,
    seed, parent index) -> DynamicLawFit."""


def dynamic_law_study(settings: Iterable[str | hparams.Setting], profile: str, seeds: Iterable[int] | None = None,
                      runner: Runner | None = None, n_parents: int = 3,
                      break_fraction: float = DYNAMIC_BREAK_FRACTION, horizon: int | None = None) -> DynamicLawStudy:
    """Parents at ``n_parents`` sweep mixtures break at t = break_fraction * S; children branch over every sweep
    mixture for ``horizon`` steps (default ``default_horizon``); the linear law is fitted per parent."""
    runner = study_runner(runner)
    S = get_profile(profile).train.steps
    t = break_step(S, break_fraction)
    h = default_horizon(S) if horizon is None else int(horizon)
    rows, pts, fits, missing = [], [], {}, []
    for s in settings:
        st = as_setting(s)
        for seed in study_seeds(profile, seeds):
            groups = setting_groups(st, profile)
            cfgs = sweep(profile, groups, seed)
            P = np.array([c.method_config["proportions"] for c in cfgs], dtype=float)
            try:  # every parent of this (setting, seed) first, so that a part left out is left out whole
                branches = {k: branch_children(cfgs[k], t, P, h, runner)[t] for k in parent_indices(P, n_parents)}
            except NotCachedError:
                skip_unfinished(runner, missing, f"{st.label}/seed {seed}")
                continue
            for k, br in branches.items():
                fit = br.fit(loo=True)
                fits[(st.key, seed, k)] = fit
                pred = fit.predict(P, br.L_prev)
                parent_p = [round(float(x), 4) for x in P[k]]
                for i, g in enumerate(groups):
                    rows.append({"setting": st.key, "label": st.label, "seed": seed, "m": len(groups),
                                 "parent": k, "parent_p": parent_p, "break_step": t, "horizon": h, "group": g,
                                 "n_children": len(P), "r2": fit.r2[i], "mse": fit.mse[i], "loo_r2": fit.loo_r2[i],
                                 "loo_mse": fit.loo_mse[i], "L_t": br.L_prev[i]})
                    for j in range(len(P)):
                        pts.append({"setting": st.key, "label": st.label, "seed": seed, "parent": k,
                                    "parent_p": parent_p, "child": j, "p": P[j].tolist(), "p1": P[j, 0],
                                    "group": g, "L_t": br.L_prev[i], "observed": br.L_next[j, i],
                                    "predicted": pred[j, i]})
    check_found(rows, missing, "dynamic-law")
    return DynamicLawStudy(pd.DataFrame(rows), pd.DataFrame(pts), fits, profile, missing)


# ----------------------------------------------------------------------------------------------------------------------
# Plain-words readings (data-dependent sentences the notebooks print under their tables)
# ----------------------------------------------------------------------------------------------------------------------


def _worst(table: pd.DataFrame, col: str) -> str:
    r = table.loc[table[col].idxmin()]
    return f"{r['label']} / {r['group']} (seed {r['seed']}): {col} {r[col]:.3f}"


def static_reading(study: StaticLawStudy) -> str:
    t = study.table
    n_mix, m = int(t["n_mixtures"].min()), int(t["m"].max())
    lines = [paper_line("Static log-linear law, mean in-sample R²", t["r2"].mean(), PAPER["static_r2"]),
             paper_line("Static log-linear law, mean leave-one-mixture-out R²", t["loo_r2"].mean(),
                        PAPER["static_r2"]),
             f"Mean in-sample MSE {t['mse'].mean():.2e}, leave-one-out {t['loo_mse'].mean():.2e} "
             f"(paper, averaged over both laws: {PAPER['mean_mse']:.0e}).",
             f"Worst fit: {_worst(t, 'r2')}; worst held-out: {_worst(t, 'loo_r2')}.",
             f"Caution: each group's law has m + 1 free parameters and some sweeps here have only {n_mix} mixtures "
             f"(up to m = {m}), so an in-sample R² near 1 says little by itself; the leave-one-mixture-out R² is the "
             "test of the law's shape."]
    return "\n".join(lines)


def dynamic_reading(study: DynamicLawStudy) -> str:
    t = study.table
    spread = study.points.groupby(["setting", "seed", "parent", "group"])["observed"].agg(np.ptp)
    lines = [paper_line("Dynamic linear law, mean in-sample R²", t["r2"].mean(), PAPER["dynamic_r2"]),
             paper_line("Dynamic linear law, mean leave-one-child-out R²", t["loo_r2"].mean(), PAPER["dynamic_r2"]),
             f"Mean in-sample MSE {t['mse'].mean():.2e}; the children's losses after {int(t['horizon'].iloc[0])} "
             f"steps from step {int(t['break_step'].iloc[0])} span {spread.median():.4f} nats (median over fits), "
             "which is the signal the law has to explain.",
             f"Worst fit: {_worst(t, 'r2')}; worst held-out: {_worst(t, 'loo_r2')}."]
    return "\n".join(lines)
