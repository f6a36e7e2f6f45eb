"""Method fidelity (notebook 03): does each method's A^t point the way the truth does? (paper §4, spec §4)

``fidelity_study``: for each online method, the method's own trajectory is broken at t, children branch over the
sweep (:mod:`aioli_repro.branching`), and the fitted A^{t*} is compared with the matrix M the method used at t,
sim = 0.5 cos + 0.5 Spearman of the normalised column sums of (scale * M) and A^{t*}, ``laws.similarity``. sim is
then set against the method's improvement over stratified sampling (paper: R^2 0.491 across method x setting points,
Aioli highest). ``colsum_ordering_study`` follows A^{t*} along the stratified trajectory to see whether the ranking of
its column sums changes over training (paper C5: GH/C4 favours GitHub early and C4 later).

Which trajectory, and which matrix M at the break point t (from the branch's ``policy_summary``):

| method | trajectory run | M |
|---|---|---|
| aioli | its final (online) run | mean of the raw LearnParams A of the last up to 4 rounds recorded by t (spec §4.2) |
| skillit | its final (online) run | the last recorded A^t = diag(L^t) G^T |
| doremi | the proxy run | the last recorded diag(excess loss), unclipped, averaged over the last 5 steps |
| doge | the proxy run | the last recorded per-group gradient inner-product matrix |
| odm (extension) | its final (online) run | the last recorded diag(R̂^t), its smoothed importance-weighted rewards |

Break steps default to the paper's share of the run: 20% for Aioli and Skill-it (and ODM), 10% for DoReMi and DoGE
(A/SE breaks at 1000 and 500 of 5,000 steps). A break step that comes before the method has recorded any A is moved
to just after its first record, and the table says which step was used.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import hparams
from .branching import (
    as_setting,
    branch_children,
    break_step,
    check_found,
    default_horizon,
    skip_unfinished,
    study_runner,
)
from .config import RunConfig
from .executors import NotCachedError, Runner
from .laws import fit_method_scale, similarity_parts
from .methods import ensure_reference_weights, run_method, setting_groups, stratified_config, sweep
from .profiles import get_profile, study_seeds
from .report import paper_line

__all__ = ["PAPER", "ONLINE_METHODS", "EXTENSION_ONLINE_METHODS", "BREAK_FRACTION", "method_matrix",
           "trajectory_config", "fidelity_break_step",
           "diagonalise_2", "FidelityStudy", "sim_improvement_relation", "fidelity_study", "OrderingStudy",
           "colsum_ordering_study", "fidelity_reading", "ordering_reading", "sim_by_method"]

PAPER = {"sim_improvement_r2": 0.491}  # paper Fig. 3: sim vs improvement over stratified, m = 2 and 3 settings
"""The paper's number the fidelity study is compared with."""

ONLINE_METHODS = ("skillit", "doremi", "doge", "aioli")
EXTENSION_ONLINE_METHODS = ("odm",)
"""Online methods beyond the paper's (ODM, whose A^t is diag(R̂^t)): notebook 03 studies them apart, and they never
enter the paper's sim-improvement relation (C4)."""
BREAK_FRACTION = {"aioli": 0.2, "skillit": 0.2, "doremi": 0.1, "doge": 0.1, "odm": 0.2}
"""Break step as a share of the run, per method (paper, A/SE: 1000 of 5000 for Aioli and Skill-it, 500 for the
proxies)."""
AIOLI_ROUNDS_AVERAGED = 4  # the m = 3 notebook's choice (the m = 2 notebook averages every round)

# ----------------------------------------------------------------------------------------------------------------------
# 3. Fidelity of each method's A^t
# ----------------------------------------------------------------------------------------------------------------------


def method_matrix(method: str, history: Sequence[dict], t: int | None = None) -> np.ndarray:
    """The matrix M a method acted on at step ``t``, from its policy history (records with an ``A``, step <= t).

    Aioli (and its ablations): the mean of the raw LearnParams A of the last up to 4 rounds; Skill-it, DoReMi, DoGE:
    the last recorded A. NaN entries (DoReMi's excess of a group absent from the last batches) become 0.
    """
    recs = [r for r in history if r.get("A") is not None and (t is None or int(r["step"]) <= t)]
    if not recs:
        raise ValueError(f"{method} recorded no matrix A" + (f" by step {t}" if t is not None else ""))
    if method.startswith("aioli"):
        M = np.mean([np.asarray(r["A"], dtype=float) for r in recs[-AIOLI_ROUNDS_AVERAGED:]], axis=0)
    else:
        M = np.asarray(recs[-1]["A"], dtype=float)
    return np.nan_to_num(M, nan=0.0)


def diagonalise_2(A) -> np.ndarray:
    """For m = 2, the official notebooks' one-degree-of-freedom form diag(A_11 - A_12, A_22 - A_21): how much more
    training on group i lowers its own loss than training on the other group does."""
    A = np.asarray(A, dtype=float)
    if A.shape != (2, 2):
        raise ValueError(f"diagonalise_2 needs a 2x2 matrix, got shape {A.shape}")
    return np.diag([A[0, 0] - A[0, 1], A[1, 1] - A[1, 0]])


def trajectory_config(method: str, setting: str | hparams.Setting, profile: str, seed: int, runner: Runner,
                      outcome=None) -> RunConfig:
    """The run whose A^t is compared with the truth: Aioli's and Skill-it's final (online) run, DoReMi's and DoGE's
    proxy run, exactly as ``methods.run_method`` configured it (so it is the same cached trajectory)."""
    known = (*ONLINE_METHODS, *EXTENSION_ONLINE_METHODS)
    if method not in known and method not in ("aioli_static", "aioli_diagonal"):
        raise ValueError(f"no trajectory for method {method!r}; choose one of {list(known)}")
    outcome = outcome or run_method(method, as_setting(setting), profile, seed, runner)
    if method in ("doremi", "doge"):
        return RunConfig.from_dict(outcome.details["proxy_config"])
    return RunConfig.from_dict(outcome.final["config"])


def _trajectory_history(method: str, outcome) -> list[dict]:
    if method in ("doremi", "doge"):
        return outcome.details["proxy_history"]
    return outcome.final["policy"]["history"]


def fidelity_break_step(history: Sequence[dict], steps: int, fraction: float, horizon: int) -> int:
    """t = round(fraction * S), moved to just after the method's first recorded A if that comes later (a branch
    taken at the step of a record may not include it yet); raises if t + horizon passes the end of the run."""
    t = break_step(steps, fraction)
    recorded = [int(r["step"]) for r in history if r.get("A") is not None]
    if not recorded:
        raise ValueError("the trajectory recorded no matrix A at all")
    t = max(t, recorded[0] + 1)
    if t + horizon > steps:
        raise ValueError(f"break step {t} + horizon {horizon} passes the end of the run ({steps} steps): the method "
                         f"records its first A at step {recorded[0]}")
    return t


def _check_same_trajectory(method: str, branch_history: list[dict], full_history: list[dict], t: int) -> None:
    """The prefix run must retrace the full run's first t steps; warn if its mixtures drifted (a config mismatch)."""
    a = [(int(r["step"]), r["proportions"]) for r in branch_history if int(r["step"]) <= t]
    b = [(int(r["step"]), r["proportions"]) for r in full_history if int(r["step"]) <= t - 1]
    n = len(b)
    same = len(a) >= n and all(sa == sb and np.allclose(pa, pb, atol=1e-3) for (sa, pa), (sb, pb) in zip(a, b))
    if not same:
        warnings.warn(f"the {method} prefix run's policy history differs from the full run's before step {t}: the "
                      "branch may not sit on the method's own trajectory", stacklevel=3)


@dataclass
class FidelityStudy:
    table: pd.DataFrame
    """One row per (method, setting, seed): break step, horizon, scale, sim, cos, Spearman, the m = 2 diagonalised
    sim, column sums of A^{t*} and of scale * M, the dynamic-law R^2 of A^{t*}, perplexities and improvement."""
    matrices: dict = field(repr=False)
    """(method, setting, seed) -> {"A_true", "M", "scale", "P", "L_prev", "L_next"}."""
    profile: str = ""
    missing: list = field(default_factory=list)
    """With a runner that only reads the cache: the (method, setting, seed) parts left out as unfinished."""

    def summary(self) -> pd.DataFrame:
        """One dot per (method, setting): sim and improvement averaged over seeds."""
        cols = ["sim", "cos", "spearman", "sim_diag", "improvement", "A_true_r2"]
        g = self.table.groupby(["method", "setting", "label"], sort=False)
        out = g[cols].mean().reset_index()
        out["seeds"] = g.size().values
        return out

    def relation(self) -> dict[str, Any]:
        """The linear fit of improvement on sim across the (method, setting) dots, and where Aioli stands."""
        return sim_improvement_relation(self.summary())


def sim_improvement_relation(summary: pd.DataFrame) -> dict[str, Any]:
    """R^2 (squared Pearson correlation), slope and intercept of improvement ~ sim over the dots; per setting,
    whether Aioli's sim is the highest; and Aioli's lowest sim against the other methods' median."""
    d = summary.dropna(subset=["sim", "improvement"])
    out: dict[str, Any] = {"dots": int(len(d)), "r2": float("nan"), "slope": float("nan"),
                           "intercept": float("nan"), "paper_r2": PAPER["sim_improvement_r2"]}
    if len(d) >= 3 and np.ptp(d["sim"]) > 0 and np.ptp(d["improvement"]) > 0:
        slope, intercept = np.polyfit(d["sim"], d["improvement"], 1)
        out.update(r2=float(np.corrcoef(d["sim"], d["improvement"])[0, 1] ** 2), slope=float(slope),
                   intercept=float(intercept))
    highest = {}
    for key, grp in d.groupby("setting", sort=False):
        if "aioli" in set(grp["method"]):
            a = float(grp.loc[grp["method"] == "aioli", "sim"].iloc[0])
            others = grp.loc[grp["method"] != "aioli", "sim"]
            highest[key] = bool(len(others) == 0 or a >= others.max() - 1e-12)
    out["aioli_highest"] = highest
    out["aioli_highest_in"] = f"{sum(highest.values())} of {len(highest)} settings"
    a_sims = d.loc[d["method"] == "aioli", "sim"]
    o_sims = d.loc[d["method"] != "aioli", "sim"]
    out["aioli_min_sim"] = float(a_sims.min()) if len(a_sims) else float("nan")
    out["others_median_sim"] = float(o_sims.median()) if len(o_sims) else float("nan")
    return out


def fidelity_study(settings: Iterable[str | hparams.Setting], profile: str, seeds: Iterable[int] | None = None,
                   methods: Iterable[str] = ONLINE_METHODS, runner: Runner | None = None,
                   break_fraction: dict[str, float] | float | None = None,
                   horizon: int | None = None) -> FidelityStudy:
    """For each method, setting and seed: run the method (cached, shared with the perplexity tables) and stratified,
    break the method's own trajectory at t, branch children over the sweep mixtures for h steps, fit A^{t*}, and
    compare it with the method's matrix M at t (one positive or negative scale fitted by ``laws.fit_method_scale``).

    ``break_fraction`` is a share of S per method (default ``BREAK_FRACTION``) or one share for all.
    """
    runner = study_runner(runner)
    S = get_profile(profile).train.steps
    h = default_horizon(S) if horizon is None else int(horizon)
    fractions = dict(BREAK_FRACTION)
    if isinstance(break_fraction, (int, float)):
        fractions = dict.fromkeys(fractions, float(break_fraction))
    elif break_fraction:
        fractions.update(break_fraction)
    methods = list(methods)
    for method in methods:
        if method not in fractions:
            raise ValueError(f"no break fraction for method {method!r}")
    rows, mats, missing = [], {}, []
    for s in settings:
        st = as_setting(s)
        groups = setting_groups(st, profile)
        for seed in study_seeds(profile, seeds):
            try:
                strat = run_method("stratified", st, profile, seed, runner).final
            except NotCachedError:
                skip_unfinished(runner, missing, f"stratified/{st.label}/seed {seed}")
                continue
            P = np.array([c.method_config["proportions"] for c in sweep(profile, groups, seed)], dtype=float)
            for method in methods:
                try:
                    outcome = run_method(method, st, profile, seed, runner)
                    full_history = _trajectory_history(method, outcome)
                    t = fidelity_break_step(full_history, S, fractions[method], h)
                    traj = trajectory_config(method, st, profile, seed, runner, outcome)
                    # DoReMi's proxy reads its reference's weights, which a fresh clone's cache does not hold.
                    prepare = functools.partial(ensure_reference_weights, st, profile, seed, runner) \
                        if method == "doremi" else None
                    br = branch_children(traj, t, P, h, runner, before_training=prepare)[t]
                except NotCachedError:
                    skip_unfinished(runner, missing, f"{method}/{st.label}/seed {seed}")
                    continue
                hist = br.policy_summary.get("history", [])
                _check_same_trajectory(method, hist, full_history, t)
                M = method_matrix(method, hist, t)
                true = br.fit()
                scale = fit_method_scale(M, P, br.L_next, br.L_prev) if np.any(M) else 0.0
                A_m = scale * M
                cos = rho = sim = sim_diag = float("nan")
                if np.any(A_m.sum(axis=0)) and np.any(true.A.sum(axis=0)):
                    cos, rho = similarity_parts(A_m, true.A)
                    sim = 0.5 * cos + 0.5 * rho
                if len(groups) == 2:
                    d_m, d_t = diagonalise_2(A_m), diagonalise_2(true.A)
                    if np.any(np.diag(d_m)) and np.any(np.diag(d_t)):
                        c2, r2_ = similarity_parts(d_m, d_t)
                        sim_diag = 0.5 * c2 + 0.5 * r2_
                ppl = outcome.final["avg_test_perplexity"]
                mats[(method, st.key, seed)] = {"A_true": true.A, "M": M, "scale": scale, "P": P,
                                                "L_prev": br.L_prev, "L_next": br.L_next}
                rows.append({
                    "method": method, "setting": st.key, "label": st.label, "seed": seed, "m": len(groups),
                    "break_step": t, "break_fraction": round(t / S, 4), "horizon": h, "records_used": sum(
                        1 for r in hist if r.get("A") is not None and int(r["step"]) <= t),
                    "scale": scale, "sim": sim, "cos": cos, "spearman": rho, "sim_diag": sim_diag,
                    "A_true_r2": float(np.nanmean(true.r2)),
                    "A_true_colsum": np.round(true.A.sum(axis=0), 6).tolist(),
                    "method_colsum": np.round(A_m.sum(axis=0), 6).tolist(),
                    "trained_first_true": groups[int(np.argmax(true.A.sum(axis=0)))],
                    "trained_first_method": groups[int(np.argmax(A_m.sum(axis=0)))],
                    "stratified_ppl": strat["avg_test_perplexity"], "method_ppl": ppl,
                    "improvement": strat["avg_test_perplexity"] - ppl,
                })
    check_found(rows, missing, "fidelity")
    return FidelityStudy(pd.DataFrame(rows), mats, profile, missing)


# ----------------------------------------------------------------------------------------------------------------------
# 3b. How the ranking of A^{t*}'s column sums moves along the stratified trajectory
# ----------------------------------------------------------------------------------------------------------------------


def _advantage(v: np.ndarray) -> np.ndarray:
    """(v_j - mean v) / mean |v|: how much group j stands out, the part of v exponentiated gradient acts on (a
    softmax ignores a common shift), relative to v's size (loss drops shrink over training)."""
    v = np.asarray(v, dtype=float)
    scale = float(np.mean(np.abs(v))) or 1.0
    return (v - v.mean()) / scale


@dataclass
class OrderingStudy:
    table: pd.DataFrame
    """One row per (setting, seed, break step, trained group): column sum and diagonal entry of A^{t*}."""
    summary: pd.DataFrame
    """One row per (setting, seed, break step): the group favoured by the column sums and by the diagonal."""
    profile: str = ""
    missing: list = field(default_factory=list)
    """With a runner that only reads the cache: the (setting, seed) parts left out as unfinished."""

    def changes(self) -> pd.DataFrame:
        """Per (setting, seed): does the favoured group change over training, and does the diagonal ever disagree
        with the full matrix (paper C5)?"""
        rows = []
        for (key, label, seed), g in self.summary.groupby(["setting", "label", "seed"], sort=False):
            order = list(g.sort_values("break_step")["favoured_colsum"])
            rows.append({"setting": key, "label": label, "seed": seed, "favoured_over_time": " -> ".join(order),
                         "ordering_changes": len(set(order)) > 1,
                         "diagonal_disagrees_at": [int(x) for x in g.loc[~g["diagonal_agrees"], "break_step"]]})
        return pd.DataFrame(rows)


def colsum_ordering_study(settings: Iterable[str | hparams.Setting], profile: str,
                          seeds: Iterable[int] | None = None, runner: Runner | None = None,
                          fractions: Sequence[float] = (0.2, 0.5, 0.8), horizon: int | None = None) -> OrderingStudy:
    """A^{t*} at several break points of the stratified trajectory (one prefix parent with a branch point at each),
    with children over the sweep mixtures."""
    runner = study_runner(runner)
    S = get_profile(profile).train.steps
    h = default_horizon(S) if horizon is None else int(horizon)
    ts = sorted({break_step(S, f) for f in fractions})
    if ts[-1] + h > S:
        raise ValueError(f"the last break step {ts[-1]} + horizon {h} passes the end of the run ({S})")
    rows, summ, missing = [], [], []
    for s in settings:
        st = as_setting(s)
        groups = setting_groups(st, profile)
        for seed in study_seeds(profile, seeds):
            P = np.array([c.method_config["proportions"] for c in sweep(profile, groups, seed)], dtype=float)
            strat_cfg = stratified_config(st, profile, seed)
            try:
                branches = branch_children(strat_cfg, ts, P, h, runner)
            except NotCachedError:
                skip_unfinished(runner, missing, f"{st.label}/seed {seed}")
                continue
            for t in ts:
                fit = branches[t].fit()
                cs, dg = fit.A.sum(axis=0), np.diag(fit.A)
                adv_cs, adv_dg = _advantage(cs), _advantage(dg)
                for j, g in enumerate(groups):
                    rows.append({"setting": st.key, "label": st.label, "seed": seed, "break_step": t,
                                 "break_fraction": round(t / S, 4), "horizon": h, "group": g, "colsum": cs[j],
                                 "colsum_advantage": adv_cs[j], "diagonal": dg[j], "diagonal_advantage": adv_dg[j],
                                 "fit_r2": float(np.nanmean(fit.r2))})
                fav, fav_d = groups[int(np.argmax(cs))], groups[int(np.argmax(dg))]
                summ.append({"setting": st.key, "label": st.label, "seed": seed, "break_step": t,
                             "favoured_colsum": fav, "favoured_diagonal": fav_d, "diagonal_agrees": fav == fav_d,
                             "colsum": np.round(cs, 6).tolist()})
    check_found(rows, missing, "column-sum ordering")
    return OrderingStudy(pd.DataFrame(rows), pd.DataFrame(summ), profile, missing)


# ----------------------------------------------------------------------------------------------------------------------
# Plain-words readings (data-dependent sentences the notebooks print under their tables)
# ----------------------------------------------------------------------------------------------------------------------


def sim_by_method(*studies: FidelityStudy) -> pd.DataFrame:
    """Rows = methods (the paper's, then the extensions'), columns = settings: each (method, setting)'s sim averaged
    over its seeds, with ``seeds`` the fewest seeds behind a cell. Descriptive: with m = 2 sim is about 0 or 1."""
    summary = pd.concat([st.summary() for st in studies if len(st.table)], ignore_index=True)
    table = summary.pivot_table(index="method", columns="label", values="sim", sort=False)
    order = [m for m in (*ONLINE_METHODS, *EXTENSION_ONLINE_METHODS) if m in table.index]
    table = table.loc[order, list(dict.fromkeys(summary.label))]
    table["seeds"] = summary.groupby("method").seeds.min().reindex(order)
    return table


def fidelity_reading(study: FidelityStudy) -> str:
    summ, rel = study.summary(), study.relation()
    by_method = summ.groupby("method", sort=False)[["sim", "improvement"]].mean()
    lines = [paper_line("R² of improvement over stratified on sim, across (method, setting) dots", rel["r2"],
                        PAPER["sim_improvement_r2"]),
             f"Slope {rel['slope']:+.3f} perplexity per unit of sim over {rel['dots']} dots "
             "(the paper's relation is positive: methods whose A points the right way gain more).",
             f"Aioli's similarity is the highest in {rel['aioli_highest_in']} (paper: Aioli's lowest similarity is "
             f"well above the other methods'); Aioli's lowest sim {rel['aioli_min_sim']:.3f} vs the other methods' "
             f"median {rel['others_median_sim']:.3f}.",
             "Per method, averaged over settings: " + "; ".join(
                 f"{mth} sim {r['sim']:.3f}, improvement {r['improvement']:+.3f}" for mth, r in by_method.iterrows())]
    if (summ["seeds"] < 3).any():
        lines.append("With fewer than 3 seeds per dot the improvements carry seed noise of the same order as the "
                     "differences between methods; read the relation as a pipeline check, not as evidence.")
    return "\n".join(lines)


def ordering_reading(study: OrderingStudy) -> str:
    ch = study.changes()
    lines = []
    for _, r in ch.iterrows():
        verdict = "changes" if r["ordering_changes"] else "does not change"
        diag = (f"the diagonal alone favours another group at steps {r['diagonal_disagrees_at']}"
                if r["diagonal_disagrees_at"] else "the diagonal alone agrees at every break point")
        lines.append(f"{r['label']} (seed {r['seed']}): the group A* favours {verdict} over training "
                     f"({r['favoured_over_time']}); {diag}.")
    lines.append("Paper (C5): on GH/C4 the column sums favour GitHub early and C4 later, and the diagonal alone "
                 "(DoReMi-style) gives the wrong ordering.")
    return "\n".join(lines)
