"""Children branched off a parent's trajectory: the runs the dynamic law (notebook 02) and the fidelity studies
(notebook 03) fit their matrices A^{t*} to; and the plumbing every mixing-law study shares.

A child's config names the parent's run id and a step (``RunConfig.branch``), and the loop loads the parent's saved
state at that step (model, optimizer, sampler, policy) instead of training from scratch. Parents are *prefix* runs
(``train.stop_at = t``): identical to the first t steps of the full run because the LR schedule and every policy are
defined over ``train.steps``, not over ``stop_at``, so a branch point costs t steps instead of a full run. Children
train a short horizon h on a static mixture and score only the validation split.

Break steps are shares of the run (``break_step``), horizons the paper's 100 of 5,000 steps (``default_horizon``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import hparams
from .config import RunConfig, canonical_json
from .errors import ConfigError
from .executors import NotCachedError, Runner, cached_result
from .laws import DynamicLawFit, fit_dynamic_law
from .runs import RunDir
from .train import load_data, train

__all__ = ["HORIZON_FRACTION", "break_step", "default_horizon", "run_configs", "child_config", "Branches",
           "branch_children", "as_setting", "study_runner", "skip_unfinished", "check_found"]

HORIZON_FRACTION = 0.02  # paper: 100-step children of 5,000-step runs

# ----------------------------------------------------------------------------------------------------------------------
# Break steps and horizons
# ----------------------------------------------------------------------------------------------------------------------


def break_step(steps: int, fraction: float) -> int:
    """round(fraction * steps), at least 1 and at most steps - 1."""
    if not 0 < fraction < 1:
        raise ValueError(f"a break fraction must lie in (0, 1), got {fraction}")
    return int(min(max(1, round(fraction * steps)), steps - 1))


def default_horizon(steps: int) -> int:
    """Children's horizon h = max(2, round(0.02 * S)): the paper's 100 of 5,000 steps, at least 2 steps."""
    return max(2, round(HORIZON_FRACTION * steps))



# ----------------------------------------------------------------------------------------------------------------------
# What every study shares: a runner, and renders from the cache that leave unfinished parts out
# ----------------------------------------------------------------------------------------------------------------------


def as_setting(setting: str | hparams.Setting) -> hparams.Setting:
    """A setting given by its key or as itself."""
    return setting if isinstance(setting, hparams.Setting) else hparams.get_setting(setting)


def study_runner(runner: Runner | None, jobs: int = 1) -> Runner:
    """The caller's runner, else a quiet local one."""
    return runner or Runner(jobs=jobs, progress=False)


def skip_unfinished(runner: Runner, missing: list[str], what: str) -> None:
    """Inside ``except NotCachedError``: a runner that only reads the cache notes the unfinished part of a study
    (which is then left out of it); any other runner lets the error through."""
    if not runner.cached_only:
        raise
    missing.append(what)


def check_found(rows: list, missing: list[str], study: str) -> None:
    """A study with nothing found at all is not rendered: it raises ``NotCachedError`` (``run_all`` skips it)."""
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
