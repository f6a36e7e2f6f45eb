"""Mixing-law fidelity: do the laws fit our runs, and does each method's A^t point the way the truth does?

Three studies (paper §4, spec §4; official analysis notebooks, spec official-code §3), each a function that runs
(or finds cached) the training runs it needs and returns tidy tables; notebooks 01-03 only call these.

1. ``static_law_study``: sweep runs over fixed mixtures (m = 2: the grid; m >= 3: a Dirichlet cover), then the
   log-linear law L_i(p) = c_i + b_i exp(-sum_j A_ij p_j) fitted per group to the final validation losses, in sample
   and leave-one-mixture-out. Paper: R^2 0.991.
2. ``dynamic_law_study``: parents are static runs at a few sweep mixtures, stopped at the break step t with their full
   state kept; children branch from that state and train a short horizon h under every sweep mixture. The linear law
   L^{t+h}_i = L^t_i - sum_j A_ij p_j is fitted per parent. Paper: R^2 0.947 (break 2000, 100-step children of
   5,000-step runs).
3. ``fidelity_study``: for each online method, the method's own trajectory is broken at t, children branch over the
   sweep, and the fitted A^{t*} is compared with the matrix M the method used at t, sim = 0.5 cos + 0.5 Spearman of
   the normalised column sums of (scale * M) and A^{t*}, ``laws.similarity``. sim is then set against the method's
   improvement over stratified sampling (paper: R^2 0.491 across method x setting points, Aioli highest).
   ``colsum_ordering_study`` follows A^{t*} along the stratified trajectory to see whether the ranking of its column
   sums changes over training (paper C5: GH/C4 favours GitHub early and C4 later).

Branching reuses the parent's saved state (model, optimizer, sampler, policy) by construction: a child's config
names the parent's run id and step (``RunConfig.branch``), and the loop loads that state instead of training from
scratch. Parents are *prefix* runs (``train.stop_at = t``): identical to the first t steps of the full run because
the LR schedule and every policy are defined over ``train.steps``, not over ``stop_at``, so a branch point costs t
steps instead of a full run.

Which trajectory, and which matrix M at the break point t (from the branch's ``policy_summary``):

| method | trajectory run | M |
|---|---|---|
| aioli | its final (online) run | mean of the raw LearnParams A of the last up to 4 rounds recorded by t (spec §4.2) |
| skillit | its final (online) run | the last recorded A^t = diag(L^t) G^T |
| doremi | the proxy run | the last recorded diag(excess loss), unclipped, averaged over the last 5 steps |
| doge | the proxy run | the last recorded per-group gradient inner-product matrix |

Break steps default to the paper's share of the run: 20% for Aioli and Skill-it, 10% for DoReMi and DoGE
(A/SE breaks at 1000 and 500 of 5,000 steps). A break step that comes before the method has recorded any A is moved
to just after its first record, and the table says which step was used.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import hparams
from .config import RunConfig, canonical_json
from .errors import ConfigError
from .executors import NotCachedError, Runner, cached_result
from .laws import DynamicLawFit, fit_dynamic_law, fit_method_scale, fit_static_law, similarity_parts
from .methods import ensure_reference_weights, run_method, setting_groups, stratified_config, sweep
from .profiles import get_profile, study_seeds
from .runs import RunDir
from .train import load_data, train

__all__ = [
    "PAPER",
    "ONLINE_METHODS",
    "BREAK_FRACTION",
    "break_step",
    "default_horizon",
    "run_configs",
    "child_config",
    "Branches",
    "branch_children",
    "parent_indices",
    "StaticLawStudy",
    "static_law_study",
    "DynamicLawStudy",
    "dynamic_law_study",
    "method_matrix",
    "trajectory_config",
    "fidelity_break_step",
    "diagonalise_2",
    "FidelityStudy",
    "fidelity_study",
    "OrderingStudy",
    "colsum_ordering_study",
    "paper_line",
    "static_reading",
    "dynamic_reading",
    "fidelity_reading",
    "ordering_reading",
]

PAPER = {
    "static_r2": 0.991,  # paper §4.1 (log-linear static law, sweeps over the simplex)
    "dynamic_r2": 0.947,  # paper §4.1 (linear dynamic law, branched children)
    "mean_mse": 5e-4,  # paper: "0.0005 MSE and 0.969 R^2" on average over the two laws
    "sim_improvement_r2": 0.491,  # paper Fig. 3: sim vs improvement over stratified, m = 2 and 3 settings
}
"""The paper's numbers each study is compared with."""

ONLINE_METHODS = ("skillit", "doremi", "doge", "aioli")
BREAK_FRACTION = {"aioli": 0.2, "skillit": 0.2, "doremi": 0.1, "doge": 0.1}
"""Break step as a share of the run, per method (paper, A/SE: 1000 of 5000 for Aioli and Skill-it, 500 for the
proxies). The dynamic-law parents break at 0.4 S (paper: 2000 of 5000)."""
DYNAMIC_BREAK_FRACTION = 0.4
HORIZON_FRACTION = 0.02  # paper: 100-step children of 5,000-step runs
AIOLI_ROUNDS_AVERAGED = 4  # the m = 3 notebook's choice (the m = 2 notebook averages every round)

# ----------------------------------------------------------------------------------------------------------------------
# Study sizes
# ----------------------------------------------------------------------------------------------------------------------


def break_step(steps: int, fraction: float) -> int:
    """round(fraction * steps), at least 1 and at most steps - 1."""
    if not 0 < fraction < 1:
        raise ValueError(f"a break fraction must lie in (0, 1), got {fraction}")
    return int(min(max(1, round(fraction * steps)), steps - 1))


def default_horizon(steps: int) -> int:
    """Children's horizon h = max(2, round(0.02 * S)): the paper's 100 of 5,000 steps, at least 2 steps."""
    return max(2, round(HORIZON_FRACTION * steps))


def _setting(setting: str | hparams.Setting) -> hparams.Setting:
    return setting if isinstance(setting, hparams.Setting) else hparams.get_setting(setting)


def _runner(runner: Runner | None, jobs: int = 1) -> Runner:
    return runner or Runner(jobs=jobs, progress=False)


def _not_finished(runner: Runner, missing: list[str], what: str) -> None:
    """Inside ``except NotCachedError``: a runner that only reads the cache notes the unfinished part of a study
    (which is then left out of it); any other runner lets the error through."""
    if not runner.cached_only:
        raise
    missing.append(what)


def _check_found(rows: list, missing: list[str], study: str) -> None:
    if missing and not rows:
        raise NotCachedError(f"no part of the {study} study is in the run cache yet ({len(missing)} parts "
                             "missing); run it without cached_only")


# ----------------------------------------------------------------------------------------------------------------------
# Running many runs, and branching children off a parent
# ----------------------------------------------------------------------------------------------------------------------


def run_configs(cfgs: Sequence[RunConfig], runner: Runner, keep_steps: tuple[int, ...] = ()) -> list[dict]:
    """Results of ``cfgs`` (trained, or found in the cache), in order.

    With one job the data (token streams and evaluation windows) is loaded once per data config and shared by the
    runs, which saves about a second per run, cached or not; with several jobs the runner's process pool is used.
    """
    cfgs = list(cfgs)
    if not cfgs:
        return []
    if runner.cached_only:  # read the cache, train nothing (raises NotCachedError for a run nobody finished)
        return runner.run(cfgs)
    if runner.jobs > 1 and len(cfgs) > 1 and not keep_steps:
        return runner.run(cfgs)
    loaded: dict[str, Any] = {}
    out = []
    it = cfgs
    if runner.progress and len(cfgs) > 1:
        it = tqdm(cfgs, desc=f"{len(cfgs)} runs", unit="run")
    for c in it:
        key = canonical_json({"data": dataclasses.asdict(c.data), "eval_sequences": c.train.eval_sequences})
        if key not in loaded:
            loaded[key] = load_data(c, verbose=False)
        out.append(train(c, runs_dir=runner.runs_dir, progress=False, data=loaded[key], keep_steps=keep_steps))
    return out


def child_config(parent_cfg: RunConfig, parent_id: str, step: int, proportions, horizon: int) -> RunConfig:
    """A child that loads ``parent_id``'s state at ``step`` and trains ``horizon`` more steps on a static mixture,
    on the parent's LR schedule, scoring only the validation split at the end."""
    train_cfg = dataclasses.replace(parent_cfg.train, stop_at=step + horizon, final_eval="val")
    cfg = dataclasses.replace(parent_cfg, train=train_cfg, method="static",
                              method_config={"proportions": [float(x) for x in proportions]},
                              branch={"parent": parent_id, "step": int(step)}, name=f"{parent_cfg.name}-child")
    cfg.validate()
    return cfg


@dataclass
class Branches:
    """The children of one branch point: the parent's losses L^t and the children's L^{t+h} under mixtures P."""

    parent: dict = field(repr=False)
    """result.json of the parent (prefix) run."""
    step: int
    horizon: int
    groups: tuple[str, ...]
    P: np.ndarray
    """(n, m) children's mixtures."""
    L_prev: np.ndarray
    """(m,) the parent's validation loss at the branch step (same windows as the children's final evaluation)."""
    L_next: np.ndarray
    """(n, m) each child's validation loss after ``horizon`` steps."""
    policy_summary: dict = field(repr=False)
    """The parent's policy history up to the branch step."""
    children: list[dict] = field(repr=False, default_factory=list)

    def fit(self, loo: bool = False) -> DynamicLawFit:
        """The linear dynamic law fitted to these children: A^{t*}."""
        return fit_dynamic_law(self.P, self.L_next, self.L_prev, loo=loo)


def _prefix_config(cfg: RunConfig, stop_at: int) -> RunConfig:
    """The first ``stop_at`` steps of ``cfg`` (same schedule and policy), scoring only validation at the end."""
    if not 0 < stop_at < cfg.train.steps:
        raise ConfigError(f"a break step must lie in (0, {cfg.train.steps}), got {stop_at}")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, stop_at=stop_at, final_eval="val"),
                               name=f"{cfg.name}-prefix")


def branch_children(parent_cfg: RunConfig, steps: int | Iterable[int], P, horizon: int, runner: Runner,
                    parent_result: dict | None = None,
                    before_training: Callable[[], object] | None = None) -> dict[int, Branches]:
    """Break ``parent_cfg``'s trajectory at each of ``steps`` and run one child per mixture in ``P`` from each.

    The parent is trained once as a prefix run (stopped at the last break step) with its full state kept at every
    break step; pass ``parent_result`` to branch off a run that already has those branch points instead. Children
    train ``horizon`` steps (``steps + horizon`` must not pass the run's end).

    When the parent and every child are already in the result cache (a fresh clone re-rendering committed results),
    nothing is trained: the parent's L^t and policy history come from the ``branch_points`` of its cached result.
    The parent's weights are needed, and the prefix trained again, only when a child is missing;
    ``before_training`` is then called first (e.g. to put back the weights a DoReMi proxy's prefix reads).
    """
    ts = sorted({int(steps)} if isinstance(steps, (int, np.integer)) else {int(s) for s in steps})
    if not ts:
        raise ValueError("branch_children needs at least one break step")
    if horizon < 1:
        raise ValueError(f"the children's horizon must be >= 1 step, got {horizon}")
    if ts[-1] + horizon > parent_cfg.train.steps:
        raise ValueError(f"break step {ts[-1]} + horizon {horizon} passes the run's end ({parent_cfg.train.steps})")
    P = np.asarray(P, dtype=float)
    groups = tuple(parent_cfg.data.groups)
    if P.ndim != 2 or P.shape[1] != len(groups):
        raise ValueError(f"P must be (n mixtures, {len(groups)} groups), got shape {P.shape}")
    cached = None  # {t: the children's results} when every child has finished
    if parent_result is not None:
        points = _branch_points(parent_result, runner, ts, local_only=True)
        if points is None:
            raise RuntimeError(f"run {parent_result['run_id'][:12]} has no saved branch point at every step of {ts}")
    else:
        prefix = _prefix_config(parent_cfg, ts[-1])
        parent_result = cached_result(prefix, runner.runs_dir, resolve_auto=True)
        points = _branch_points(parent_result, runner, ts) if parent_result is not None else None
        cached = _cached_children(parent_result, ts, P, horizon, runner) if points is not None else None
        if cached is None:
            if runner.cached_only:
                raise NotCachedError(f"not in the run cache: {prefix.name} or its children at steps {ts}")
            if before_training is not None:
                before_training()
            parent_result = run_configs([prefix], runner, keep_steps=tuple(ts))[0]  # trains only what is missing
            points = _branch_points(parent_result, runner, ts, local_only=True)
    run_cfg = RunConfig.from_dict(parent_result["config"])
    out: dict[int, Branches] = {}
    for t in ts:
        results = cached[t] if cached is not None else run_configs(
            [child_config(run_cfg, parent_result["run_id"], t, p, horizon) for p in P], runner)
        out[t] = Branches(parent=parent_result, step=t, horizon=horizon, groups=groups, P=P,
                          L_prev=np.array([points[t]["val_loss"][g] for g in groups]),
                          L_next=np.array([[r["val_loss"][g] for g in groups] for r in results]),
                          policy_summary=points[t].get("policy_summary", {}), children=results)
    return out


def _branch_points(parent_result: dict, runner: Runner, ts: list[int], local_only: bool = False):
    """{t: {"val_loss", "policy_summary"}} of a parent at each break step, or None if one is missing. Read from the
    run's saved branch states (which also hold the weights children need); else, unless ``local_only``, from its
    result (recorded there since the result cache started keeping them; earlier results lack them)."""
    run = RunDir.from_result(parent_result, runner.runs_dir)
    if run.has_branches(ts):
        points = run.branch_points(ts)
        if any(k not in (parent_result.get("branch_points") or {}) for k in points):
            # A result written before results recorded their branch points: record them now (result and cache),
            # so that a clone without this machine's runs/ finds them too. Nothing else in the result changes.
            run.write_result({**parent_result, "branch_points": {**(parent_result.get("branch_points") or {}),
                                                                 **points}})
            parent_result.update(run.read_result() or {})
        return {int(k): v for k, v in points.items()}
    recorded = parent_result.get("branch_points") or {}
    if local_only or not all(str(t) in recorded for t in ts):
        return None
    return {t: recorded[str(t)] for t in ts}


def _cached_children(parent_result: dict, ts: list[int], P: np.ndarray, horizon: int, runner: Runner):
    """{t: the results of the children at break step t} if every child has finished, else None."""
    run_cfg = RunConfig.from_dict(parent_result["config"])
    out = {}
    for t in ts:
        out[t] = [cached_result(child_config(run_cfg, parent_result["run_id"], t, p, horizon), runner.runs_dir,
                                resolve_auto=True) for p in P]
        if any(r is None for r in out[t]):
            return None
    return out


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
    runner = _runner(runner)
    rows, pts, fits, missing = [], [], {}, []
    for s in settings:
        st = _setting(s)
        for seed in study_seeds(profile, seeds):
            try:
                groups, _, P, L = _sweep_losses(st, profile, seed, runner)
            except NotCachedError:
                _not_finished(runner, missing, f"{st.label}/seed {seed}")
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
    _check_found(rows, missing, "static-law")
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
    runner = _runner(runner)
    S = get_profile(profile).train.steps
    t = break_step(S, break_fraction)
    h = default_horizon(S) if horizon is None else int(horizon)
    rows, pts, fits, missing = [], [], {}, []
    for s in settings:
        st = _setting(s)
        for seed in study_seeds(profile, seeds):
            groups = setting_groups(st, profile)
            cfgs = sweep(profile, groups, seed)
            P = np.array([c.method_config["proportions"] for c in cfgs], dtype=float)
            try:  # every parent of this (setting, seed) first, so that a part left out is left out whole
                branches = {k: branch_children(cfgs[k], t, P, h, runner)[t] for k in parent_indices(P, n_parents)}
            except NotCachedError:
                _not_finished(runner, missing, f"{st.label}/seed {seed}")
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
    _check_found(rows, missing, "dynamic-law")
    return DynamicLawStudy(pd.DataFrame(rows), pd.DataFrame(pts), fits, profile, missing)


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
    if method not in ONLINE_METHODS and method not in ("aioli_static", "aioli_diagonal"):
        raise ValueError(f"no trajectory for method {method!r}; choose one of {list(ONLINE_METHODS)}")
    outcome = outcome or run_method(method, _setting(setting), profile, seed, runner)
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
    runner = _runner(runner)
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
        st = _setting(s)
        groups = setting_groups(st, profile)
        for seed in study_seeds(profile, seeds):
            try:
                strat = run_method("stratified", st, profile, seed, runner).final
            except NotCachedError:
                _not_finished(runner, missing, f"stratified/{st.label}/seed {seed}")
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
                    _not_finished(runner, missing, f"{method}/{st.label}/seed {seed}")
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
    _check_found(rows, missing, "fidelity")
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
    runner = _runner(runner)
    S = get_profile(profile).train.steps
    h = default_horizon(S) if horizon is None else int(horizon)
    ts = sorted({break_step(S, f) for f in fractions})
    if ts[-1] + h > S:
        raise ValueError(f"the last break step {ts[-1]} + horizon {h} passes the end of the run ({S})")
    rows, summ, missing = [], [], []
    for s in settings:
        st = _setting(s)
        groups = setting_groups(st, profile)
        for seed in study_seeds(profile, seeds):
            P = np.array([c.method_config["proportions"] for c in sweep(profile, groups, seed)], dtype=float)
            strat_cfg = stratified_config(st, profile, seed)
            try:
                branches = branch_children(strat_cfg, ts, P, h, runner)
            except NotCachedError:
                _not_finished(runner, missing, f"{st.label}/seed {seed}")
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
    _check_found(rows, missing, "column-sum ordering")
    return OrderingStudy(pd.DataFrame(rows), pd.DataFrame(summ), profile, missing)


# ----------------------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------------------


def paper_line(what: str, ours: float, paper: float, higher_is_better: bool = True, tol: float = 0.02) -> str:
    """One plain sentence putting our number beside the paper's."""
    if not np.isfinite(ours):
        return f"{what}: ours undefined (too few points or constant values); paper {paper:.3f}."
    gap = ours - paper
    if abs(gap) <= tol:
        verdict = "about the paper's value"
    elif (gap > 0) == higher_is_better:
        verdict = "above the paper's value"
    else:
        verdict = "below the paper's value"
    return f"{what}: ours {ours:.3f}, paper {paper:.3f} ({verdict}; difference {gap:+.3f})."


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
