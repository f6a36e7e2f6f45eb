"""The paper's tables from cached runs: perplexity comparison (Table 2), ablations, and the statistics that decide
whether a difference is real (paired confidence intervals, power). ``run_grid`` also runs the restricted budget's
studies (Table 3), whose recipes live in :mod:`aioli_repro.restricted`.

Every number comes from ``run_method`` outcomes (each a cached training run with its seed and profile), so a table
re-renders in seconds once its runs exist. Differences are always *paired by seed*: runs of two methods with the same
seed share the initialisation and each group's data order.
"""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import hparams
from .errors import ConfigError
from .executor_config import resolve
from .executors import NotCachedError, Runner, make_executor
from .methods import regmix_proxies, run_method
from .profiles import check_study_parameters, get_profile
from .restricted import restricted_control, restricted_pair, study_sweep
from .stats import min_detectable_difference, paired_ci, seeds_needed

BASELINES = ("grid", "dml", "skillit", "doremi", "doge")
EXTENSION_METHODS = ("regmix", "odm")
"""Methods beyond the paper's (RegMix, ODM): they join Table 2 after Aioli, with no paper value beside them, and what
they show is a finding of this repository (``claims``: F1, F2), never a claim of the paper's."""
TABLE2_METHODS = ("stratified", *BASELINES, "aioli", *EXTENSION_METHODS)
NOT_RUN = "not run"
"""A Table 2 cell whose (method, setting) has no finished seed yet (``run_grid(..., cached_only=True)``)."""
ABLATIONS = ("aioli", "aioli_static", "aioli_diagonal")

# Paper numbers (Table 2, Table 20, Table 3 aggregates); differences are method minus stratified.
PAPER_TABLE2 = {
    "stratified": [16.532, 35.991, 47.192, 35.114, 41.583, 26.426],
    "grid": [-0.399, -0.407, -0.645, -0.247, 0.298, 0.490],
    "dml": [-0.241, -0.110, -0.644, -0.599, 0.242, 1.641],
    "skillit": [-0.326, 0.551, -0.728, -0.568, -0.195, -0.184],
    "doremi": [-0.307, 5.303, -0.217, -0.393, 6.898, 0.703],
    "doge": [0.419, 0.184, -0.678, 1.843, 0.604, 0.949],
    "aioli": [-0.205, -0.340, -0.439, -0.226, -0.196, -0.240],
}
PAPER_ABLATIONS = {"aioli": -0.274, "aioli_static": -0.140, "aioli_diagonal": -0.230}


# ------------------------------------------------------------------------------------------------ running
def table2_methods(methods=None) -> list[str]:
    """The methods a Table 2 study runs: all of ``TABLE2_METHODS`` by default, or a subset (a sitting of the long
    ``full`` profile may run a few methods first). Stratified is the baseline every difference is taken from."""
    if methods is None:
        return list(TABLE2_METHODS)
    if isinstance(methods, (str, bytes)) or not all(isinstance(m, str) for m in methods):
        raise ConfigError(f"methods must be a list of method names, got {methods!r} (with papermill: "
                          "-y 'methods: [stratified, aioli]')")
    unknown = [m for m in methods if m not in TABLE2_METHODS]
    if unknown:
        raise ConfigError(f"unknown Table 2 method(s) {unknown}; choose from {list(TABLE2_METHODS)}")
    if "stratified" not in methods:
        raise ConfigError("methods must include 'stratified': every difference is taken from it")
    return [m for m in TABLE2_METHODS if m in methods]


def _task(method: str, setting: str, profile: str, seed: int, runs_dir: str, budget: str,
          cached_only: bool = False) -> dict | None:
    runner = Runner(runs_dir=runs_dir, progress=False, executor="local", cached_only=cached_only)
    return _study(method, setting, profile, seed, runner, budget)


def _study(method: str, setting: str, profile: str, seed: int, runner: Runner, budget: str) -> dict | None:
    """One row of a study; None when the runner only reads the cache and a run of this study is not there."""
    try:
        if budget == "restricted":
            return restricted_pair(method, setting, profile, seed, runner)
        if budget == "restricted_control":
            return restricted_control(method, setting, profile, seed, runner)
        return _outcome_row(run_method(method, setting, profile, seed, runner), profile)
    except NotCachedError:
        if not runner.cached_only:
            raise
        return None


def _outcome_row(o, profile: str) -> dict:
    prof = get_profile(profile)
    tokens_per_step = prof.train.batch_size * prof.data.context_length
    return {"setting": o.setting, "label": hparams.get_setting(o.setting).label, "method": o.method, "seed": o.seed,
            "avg_test_perplexity": o.final["avg_test_perplexity"], "avg_val_perplexity": o.final["avg_val_perplexity"],
            "proportions": [round(x, 4) for x in o.proportions],
            # JSON, not a dict: the CSV must read back as data (pandas writes a dict as its Python repr)
            "group_test_perplexity": json.dumps({g: round(v, 3) for g, v in o.final["test_perplexity"].items()}),
            "extra_runs": o.extra_runs,
            "extra_steps": o.extra_steps, "extra_tokens": o.extra_steps * tokens_per_step,
            "extra_flops": o.extra_flops, "run_id": o.final["run_id"]}


REUSES = {"dml": "grid", "doremi": "stratified"}
"""Methods whose study reads runs another method's study computes: DML fits its law to grid search's sweep, DoReMi's
reference model is the stratified run (under both budgets)."""


def study_order(methods, settings, seeds) -> list[tuple[str, str, int]]:
    """The (method, setting, seed) studies in the order workers take them: by seed, setting and method, except that
    the studies of ``REUSES`` come after every other study. A worker that took DML next to grid search of the same
    setting would wait on each sweep run's lock while the other worker computed it: on 2 cores, half the machine
    idle for the whole sweep (seen in the full profile's grid/DML sitting)."""
    tasks = [(m, s, seed) for seed in seeds for s in settings for m in methods]
    return sorted(tasks, key=lambda t: t[0] in REUSES)  # stable: the order within each part is kept


def run_grid(methods, settings, profile: str, seeds=None, jobs: int = 1, runs_dir=None, budget: str = "unrestricted",
             progress: bool = True, executor=None, cached_only: bool = False) -> pd.DataFrame:
    """Every (method, setting, seed) of a study. Runs shared between methods (the stratified run is DoReMi's
    reference; grid search and DML share one sweep) are computed once: a worker that needs a run another worker is
    computing waits for it.

    The executor (``aioli_repro.executors``: the ``executor`` argument, else ``$AIOLI_EXECUTOR``, else local with
    ``jobs``) decides where: local with jobs = 1 runs every study here, one after another; local with jobs = N runs
    N studies at a time in worker processes; ``slurm`` drives every study from a thread of this process and submits
    each of their training runs as its own Slurm job (runs two studies share are submitted once).

    ``cached_only`` trains nothing: the table holds the (method, setting, seed) studies whose runs have all finished
    (here or in the committed result cache), and ``df.attrs["missing"]`` lists the others. A sitting of the long
    ``full`` profile renders its finished part this way."""
    check_study_parameters(profile, seeds, settings, jobs)  # notebook parameters arrive unchecked
    seeds = list(seeds if seeds is not None else get_profile(profile).seeds)
    ex_cfg = resolve("local" if cached_only else executor, 1 if cached_only else jobs)  # reading needs no workers
    runs_dir = str(runs_dir or Runner(executor="local").runs_dir)
    tasks = study_order(methods, settings, seeds)
    desc = f"{budget} {profile}"
    missing: list[str] = []  # cached_only (always local): studies not finished yet
    if ex_cfg.backend == "slurm":
        runner = Runner(runs_dir=runs_dir, progress=False, executor=ex_cfg)  # one executor: shared in-flight jobs
        cap = ex_cfg.slurm.max_parallel or len(tasks)
        with ThreadPoolExecutor(max(1, min(len(tasks), cap))) as pool:
            futures = [pool.submit(_study, m, s, profile, seed, runner, budget) for m, s, seed in tasks]
            done = as_completed(futures)
            if progress:
                done = tqdm(done, total=len(futures), desc=f"{desc} on slurm", unit="method")
            rows = [f.result() for f in done]
    else:
        if not cached_only and ex_cfg.jobs > 1 and {"grid", "dml"} & set(methods):
            # Each study trains its runs one after another inside one worker, so the sweeps (9-10 runs per setting
            # and seed) would end on a single busy worker. Train every sweep of the sitting first, as one flat queue
            # that keeps all workers busy; the studies then find them finished.
            sweeps = [c for seed in seeds for s in settings for c in study_sweep(s, profile, seed, budget)]
            Runner(runs_dir=runs_dir, progress=progress, executor=ex_cfg).run(sweeps)
        if not cached_only and ex_cfg.jobs > 1 and "regmix" in methods and budget == "unrestricted":
            # RegMix's proxies likewise: dozens of short runs, one flat queue over every worker.
            proxies = [c for seed in seeds for s in settings for c in regmix_proxies(s, profile, seed)[1]]
            Runner(runs_dir=runs_dir, progress=progress, executor=ex_cfg).run(proxies)
        ex = make_executor(ex_cfg, runs_dir)
        args = [(m, s, profile, seed, runs_dir, budget, cached_only) for m, s, seed in tasks]
        if ex.in_process and progress:
            rows = [_task(*a) for a in tqdm(args, desc=desc, unit="method")]
        else:
            rows = ex.map(_task, args, desc=f"{desc} x{ex_cfg.jobs}", progress=progress)
        by_task = dict(zip(tasks, rows))  # reported in the natural order (seed, setting, method), not the queue's
        missing = [f"{m}/{s}/seed {seed}" for seed in seeds for s in settings for m in methods
                   if by_task[(m, s, seed)] is None]
    found = [r for r in rows if r is not None]
    if not found:
        raise NotCachedError(f"no {budget} study of {profile} with these methods, settings and seeds is in the run "
                             "cache yet; run it without cached_only")
    df = pd.DataFrame(found).sort_values(["setting", "method", "seed"]).reset_index(drop=True)
    df.attrs["missing"] = missing
    return df


# ------------------------------------------------------------------------------------------------ statistics
def differences(df: pd.DataFrame, baseline: str = "stratified", value: str = "avg_test_perplexity") -> pd.DataFrame:
    """Per (setting, method, seed): the method's value minus the baseline's with the same seed."""
    base = df[df.method == baseline].set_index(["setting", "seed"])[value]
    out = df[df.method != baseline].copy()
    out["diff"] = [getattr(row, value) - base.get((row.setting, row.seed), np.nan) for row in out.itertuples()]
    return out


def table2(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = methods, columns = settings: 'mean ± sd' (absolute for stratified, difference for the others), the
    paired 95% CI of each difference, settings beaten, and extra cost; plus the paper's value beside ours."""
    settings = [s for s in hparams.SETTINGS if s in set(df.setting)]
    diffs = differences(df)
    rows = []
    for method in [m for m in TABLE2_METHODS if m in set(df.method)]:
        row = {"method": method}
        beaten = ran = 0
        for s in settings:
            label = hparams.SETTINGS[s].label
            paper = PAPER_TABLE2.get(method, [None] * 6)[list(hparams.SETTINGS).index(s)]
            if method == "stratified":
                v = df[(df.method == method) & (df.setting == s)].avg_test_perplexity
                row[label] = _fmt(v.mean(), v.std(ddof=1) if len(v) > 1 else np.nan) if len(v) else NOT_RUN
                row[f"{label} 95% CI"] = ""
            else:
                d = diffs[(diffs.method == method) & (diffs.setting == s)]["diff"].dropna()
                mean, lo, hi = paired_ci(d)
                row[label] = _fmt(mean, d.std(ddof=1) if len(d) > 1 else np.nan, signed=True) if len(d) else NOT_RUN
                row[f"{label} 95% CI"] = "" if np.isnan(lo) else f"[{lo:+.3f}, {hi:+.3f}]"
                beaten += mean < 0
                ran += len(d) > 0
            row[f"{label} (paper)"] = paper
        if method != "stratified":
            row["# beats stratified"] = f"{beaten}/{ran}"  # of the settings where it ran (paired with stratified)
        sub = df[df.method == method]
        row["extra runs (mean)"] = round(float(sub.extra_runs.mean()), 1)
        row["extra tokens (M, mean)"] = round(float(sub.extra_tokens.mean()) / 1e6, 2)
        if "extra_flops" in sub:  # runs tables written before the FLOPs column have none
            row["extra PFLOPs (mean)"] = round(float(sub.extra_flops.mean()) / 1e15, 3)
        rows.append(row)
    return pd.DataFrame(rows)


def group_tradeoffs(df: pd.DataFrame, baseline: str = "stratified") -> pd.DataFrame:
    """Per (setting, group, method): the mean over seeds of the group's test perplexity and its ratio to the
    baseline's on the same seeds. Table 2 averages perplexities over groups, so one group a method starves can
    outweigh gains on all the others; this table shows which groups each method traded for which.

    ``group_test_perplexity`` may hold dicts or JSON strings (the form ``04_runs.csv`` stores)."""
    if "group_test_perplexity" not in df:
        raise KeyError("group_tradeoffs needs the runs' group_test_perplexity column (tables.run_grid writes it)")
    long = []
    for row in df.itertuples():
        per_group = row.group_test_perplexity
        per_group = json.loads(per_group) if isinstance(per_group, str) else per_group
        long += [{"setting": row.setting, "label": row.label, "method": row.method, "seed": row.seed, "group": g,
                  "ppl": v} for g, v in per_group.items()]
    long = pd.DataFrame(long)
    base = long[long.method == baseline].set_index(["setting", "group", "seed"]).ppl
    rows = []
    for (setting, label, method), g in long.groupby(["setting", "label", "method"], sort=False):
        groups = list(hparams.SETTINGS[setting].groups) if setting in hparams.SETTINGS else list(dict.fromkeys(g.group))
        for group in groups:
            part = g[g.group == group]
            b = np.array([base.get((setting, group, seed), np.nan) for seed in part.seed])
            rows.append({"setting": setting, "label": label, "group": group, "method": method, "seeds": len(part),
                         "test_perplexity": part.ppl.mean(),
                         f"{baseline}_same_seeds": np.nanmean(b) if np.isfinite(b).any() else np.nan,
                         "ratio_to_baseline": np.nanmean(part.ppl.to_numpy() / b) if np.isfinite(b).any() else np.nan})
    out = pd.DataFrame(rows)
    order = {s: i for i, s in enumerate(hparams.SETTINGS)}
    methods = {m: i for i, m in enumerate(TABLE2_METHODS)}
    return out.sort_values(["setting", "method"], key=lambda c: c.map(order if c.name == "setting" else methods),
                           kind="stable").reset_index(drop=True)


def _fmt(mean: float, sd: float, signed: bool = False) -> str:
    m = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return m if np.isnan(sd) else f"{m} ± {sd:.3f}"


def power_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, method): what this study can see. The method's own paired sd over seeds, the smallest true
    difference from stratified a two-sided paired t-test detects with 80% power at these seeds (exact, noncentral t),
    the paper's difference for the cell as a share of the paper's stratified perplexity, that share applied to our
    stratified perplexity, and the seeds our paired sd would need to detect it (80% power)."""
    diffs = differences(df)
    rows = []
    for s in [s for s in hparams.SETTINGS if s in set(df.setting)]:
        strat = df[(df.method == "stratified") & (df.setting == s)].avg_test_perplexity
        k = list(hparams.SETTINGS).index(s)
        for method in [m for m in TABLE2_METHODS[1:] if m in set(diffs[diffs.setting == s].method)]:
            d = diffs[(diffs.setting == s) & (diffs.method == method)]["diff"].dropna()
            n = int(d.size)
            sd = float(d.std(ddof=1)) if n > 1 else float("nan")
            paper = PAPER_TABLE2[method][k] if method in PAPER_TABLE2 else np.nan  # RegMix, ODM: not in the paper
            rel = paper / PAPER_TABLE2["stratified"][k]
            effect = rel * float(strat.mean())
            mdd = min_detectable_difference(sd, n)
            rows.append({"setting": hparams.SETTINGS[s].label, "method": method, "seeds": n,
                         "stratified_mean": float(strat.mean()),
                         "stratified_sd": float(strat.std(ddof=1)) if strat.size > 1 else np.nan,
                         "paired_diff_sd": sd, "min_detectable_diff": mdd,
                         "min_detectable_pct": 100 * mdd / float(strat.mean()),
                         "paper_diff": paper, "paper_diff_pct": 100 * rel,
                         "paper_effect_here": effect,
                         "seeds_needed": seeds_needed(sd, effect) if np.isfinite(effect) else np.nan})
    return pd.DataFrame(rows)


def complete_cells(diffs: pd.DataFrame, methods) -> pd.DataFrame:
    """The rows of ``differences(...)`` for ``methods`` restricted to the (setting, seed) cells where every one of
    them has finished (paired against stratified), so that a comparison between them never mixes cells: a sitting
    of the long profile may have finished Aioli on a seed where an ablation has not run yet."""
    d = diffs[diffs.method.isin(methods) & diffs["diff"].notna()]
    n = d.groupby(["setting", "seed"])["method"].nunique()
    full = n[n == len(set(methods))].index
    return d[d.set_index(["setting", "seed"]).index.isin(full)]


def whole_seeds(d: pd.DataFrame) -> pd.DataFrame:
    """The rows of the seeds that share one set of settings, restricted to those settings (a CI over seeds must not
    mix setting subsets). The set is the one that keeps the most (seed, setting) cells with at least two seeds, ties
    to more seeds; candidates are each seed's settings and each two seeds' common ones. So a seed that has run further
    (one seed of a new setting) leaves its extra settings out rather than the other seeds, and two seeds ahead of a
    third do not drop it (2 seeds x 28 pairs < 3 x 26). With fewer than two seeds: the seeds that have every setting."""
    sets = {seed: frozenset(g) for seed, g in d.groupby("seed")["setting"]}
    candidates = set(sets.values()) | {a & b for a, b in itertools.combinations(sets.values(), 2)}
    best: tuple[int, int, frozenset] | None = None
    for candidate in candidates:
        covering = sum(candidate <= have for have in sets.values())
        if covering >= 2 and candidate and (best is None or (covering * len(candidate), covering) > best[:2]):
            best = (covering * len(candidate), covering, candidate)
    if best is None:
        per_seed = d.groupby("seed")["setting"].nunique()
        return d[d.seed.isin(per_seed[per_seed == d.setting.nunique()].index)]
    keep = [seed for seed, have in sets.items() if best[2] <= have]
    return d[d.seed.isin(keep) & d.setting.isin(best[2])]


def seed_ci(d: pd.DataFrame, value: str = "diff") -> tuple[float, float, float, int]:
    """Mean, 95% CI and number of seeds of the per-seed means of ``value`` over the seeds and settings that
    ``whole_seeds`` keeps: seeds are the replicates, and no seed's mean may cover other settings than the rest."""
    per_seed = whole_seeds(d.dropna(subset=[value])).groupby("seed")[value].mean()
    return (*paired_ci(per_seed), per_seed.size)


def ablation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean difference from stratified per setting and overall for Aioli and its two ablations, over the (setting,
    seed) cells where all of them have finished; the CI is over the seeds that have every one of those settings."""
    present = [m for m in ABLATIONS if m in set(df.method)]
    diffs = complete_cells(differences(df), present)
    order = [s for s in hparams.SETTINGS if s in set(diffs.setting)]
    rows = []
    for method in present:
        d = diffs[diffs.method == method]
        per_setting = d.groupby("setting")["diff"].mean().reindex(order)
        _, lo, hi, seeds = seed_ci(d)
        row = {"method": method, **{hparams.SETTINGS[s].label: round(v, 3) for s, v in per_setting.items()},
               "mean over settings": round(float(per_setting.mean()), 3),
               "95% CI (over seeds)": "" if np.isnan(lo) else f"[{lo:+.3f}, {hi:+.3f}]",
               "seeds": seeds, "paper": PAPER_ABLATIONS[method]}
        rows.append(row)
    return pd.DataFrame(rows)
