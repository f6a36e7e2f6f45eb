"""Each method end to end: its extra runs (sweeps, skills graph, reference and proxy), then its final run.

A method is a recipe of training runs; every run goes through the one loop and the run cache, and independent runs
can execute in parallel (``executors.Runner(jobs=N)``). ``run_method`` returns the final run's result (the one whose
test perplexity the tables report), the proportions the method settled on, and its extra training cost.

| method | extra runs (unrestricted) | final run |
|---|---|---|
| stratified | 0 | p = uniform |
| grid | the sweep (m = 2: p1 in 0.1..0.9; m >= 3: Dirichlet cover of 10) | the sweep run with the lowest mean validation loss |
| dml | the same sweep | static run at the minimiser of the fitted log-linear law |
| skillit | m one-group runs (the skills graph) | Skill-it online |
| doremi | reference (= the stratified run) + proxy | static run at the proxy's average weights |
| doge | proxy | static run at the proxy's average weights |
| aioli | 0 | Aioli online |
| regmix | N proxies of a smaller model on random mixtures (S/8 steps each) | static run at the top-k average of the LightGBM-predicted best simulated mixtures |
| odm | 0 | ODM online (EXP3 over groups, rewards from the training loss) |

RegMix and ODM are not among the paper's methods: they extend the bench (``tables.EXTENSION_METHODS``), and what
they show is a finding of this repository.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import hparams
from .config import RunConfig
from .errors import ConfigError
from .executors import NotCachedError, Runner, cached_result
from .laws import fit_static_law, supported_optimal_mixture
from .policies.skillit import skills_graph
from .profiles import get_profile, profile_config
from .regmix import RegMixPlan, regmix_mixture, sample_mixtures
from .runs import RunDir
from .sweeps import sweep_mixtures

METHODS = ("stratified", "grid", "dml", "skillit", "doremi", "doge", "aioli", "aioli_static", "aioli_diagonal",
           "regmix", "odm")


@dataclass
class MethodOutcome:
    method: str
    setting: str
    seed: int
    final: dict = field(repr=False)
    """result.json of the run whose test perplexity is reported."""
    proportions: list[float]
    """The static mixture the method chose, or the time-average of an online method's mixtures."""
    extra_runs: int
    extra_steps: int
    details: dict = field(default_factory=dict)
    """Method-specific artefacts: sweep losses, fitted law, skills graph, proxy weights."""
    extra_flops: float = 0.0
    """Training FLOPs of the extra runs (``model.flops_per_token`` x their tokens): RegMix's proxies are a smaller
    model, so its extra steps and tokens alone understate how much cheaper they are than a sweep's."""

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["final"] = {k: self.final[k] for k in ("run_id", "avg_test_perplexity", "test_perplexity",
                                                  "avg_val_perplexity", "val_loss", "wall_time_s")}
        return d


def _avg_proportions(result: dict) -> list[float]:
    """Time-average of the mixtures an online run used (each record weighted by how long it lasted)."""
    hist = result["policy"]["history"]
    steps = [r["step"] for r in hist] + [result["steps"]]
    w = np.diff(steps).clip(min=0)
    P = np.array([r["proportions"] for r in hist])
    return (w @ P / max(w.sum(), 1)).tolist() if w.sum() else P[-1].tolist()


def setting_groups(setting: str | hparams.Setting, profile: str) -> tuple[str, ...]:
    """The groups a setting trains on under ``profile``: SlimPajama's own domains for a SlimPajama profile, else their
    embedded-corpus analogues."""
    st = setting if isinstance(setting, hparams.Setting) else hparams.get_setting(setting)
    return tuple(st.paper_groups if get_profile(profile).data.corpus == "slimpajama" else st.groups)


def sweep(profile: str, groups, seed: int, steps: int | None = None, n: int | None = None,
          preset: str | None = None, **train_overrides) -> list[RunConfig]:
    """Static runs over the sweep mixtures (shared by grid search, DML and the mixing-law fits). The number of
    mixtures is the paper's (9 for two groups, 10 otherwise) unless the profile caps it (``notes['sweep_points']``).
    ``preset`` trains another model size under the same recipe (``profiles.profile_config``); ``train_overrides``
    change the training config (e.g. ``final_eval="val"`` for a study that reads validation losses only)."""
    overrides = {**({"steps": steps} if steps else {}), **train_overrides}
    n = n or get_profile(profile).notes.get("sweep_points")
    if n is not None and len(groups) > 2:
        n = max(n, len(groups) + 2)  # the log-linear law has m + 1 parameters per group: keep it identifiable
    return [profile_config(profile, groups, "static", seed, {"proportions": [float(x) for x in p]},
                           name="sweep", preset=preset, **overrides)
            for p in sweep_mixtures(len(groups), n, seed=seed)]


def run_method(method: str, setting: str | hparams.Setting, profile: str, seed: int = 0,
               runner: Runner | None = None, **overrides) -> MethodOutcome:
    """Run ``method`` on ``setting`` (a key of ``hparams.SETTINGS`` or a Setting) under ``profile`` and seed, with
    all its extra runs (cached)."""
    outcome = _run_method(method, setting, profile, seed, runner, **overrides)
    if not outcome.extra_flops and outcome.extra_steps:
        # Every extra run but RegMix's proxies trains the final run's model on the same batches: its FLOPs per token.
        prof = get_profile(profile)
        tokens = outcome.extra_steps * prof.train.batch_size * prof.data.context_length
        outcome.extra_flops = float(tokens * outcome.final["flops_per_token"])
    return outcome


def _run_method(method: str, setting, profile: str, seed: int, runner: Runner | None, **overrides) -> MethodOutcome:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    runner = runner or Runner()
    prof = get_profile(profile)
    st = setting if isinstance(setting, hparams.Setting) else hparams.get_setting(setting)
    setting = st.key
    groups = setting_groups(st, profile)
    m, S = len(groups), prof.train.steps
    paper_scale = profile == "paper"

    def cfg(name, pol="static", mc=None, **kw):
        return profile_config(profile, groups, pol, seed, mc, name=f"{name}", **kw)

    if method == "stratified":
        # Stratified is also DoReMi's reference, so a run trained here keeps its weights. A finished run without them
        # (a fresh clone's committed result) is not trained again for them: only training DoReMi's proxy, or a
        # prefix of it, needs them, and those callers ask for them (doremi_proxy, ensure_reference_weights).
        c = stratified_config(st, profile, seed)
        res = (None if runner.cached_only else cached_result(c, runner.runs_dir, resolve_auto=True)) \
            or runner.run_one(c, keep_model=True)
        return MethodOutcome(method, setting, seed, res, [1 / m] * m, 0, 0)

    if method in ("grid", "dml"):
        sweep_cfgs = sweep(profile, groups, seed)
        results = runner.run(sweep_cfgs)
        P = np.array([c.method_config["proportions"] for c in sweep_cfgs])
        L_val = np.array([[r["val_loss"][g] for g in groups] for r in results])
        details = {"sweep_proportions": P.tolist(), "sweep_val_loss": L_val.tolist()}
        if method == "grid":
            best = int(np.argmin(L_val.mean(axis=1)))  # by validation loss, never test
            return MethodOutcome(method, setting, seed, results[best], P[best].tolist(), len(results),
                                 len(results) * S, details)
        p_star, fit = dml_mixture(P, L_val, seed, lambda p: cfg("dml", mc={"proportions": p}), runner)
        res = runner.run_one(cfg("dml", mc={"proportions": p_star}))
        details["law"] = fit.to_dict()
        return MethodOutcome(method, setting, seed, res, p_star, len(results), len(results) * S, details)

    if method == "skillit":
        graph_steps = overrides.get("graph_steps", S)
        one_hot = [cfg("skillit-graph", mc={"proportions": np.eye(m)[j].tolist()}, steps=graph_steps)
                   for j in range(m)]
        graph_runs = runner.run(one_hot)
        start = np.array(_val_curve(graph_runs[0], runner)[0])
        end = np.array([_val_curve(r, runner)[-1] for r in graph_runs])
        G = skills_graph(start, end)
        mc = hparams.skillit_config(m, S, paper_scale, graph=G.tolist())
        res = runner.run_one(cfg("skillit", "skillit", mc))
        return MethodOutcome(method, setting, seed, res, _avg_proportions(res), m, m * graph_steps,
                             {"graph": G.tolist()})

    if method == "doremi":
        proxy = doremi_proxy(runner, stratified_config(st, profile, seed), lambda ref: cfg(
            "doremi-proxy", "doremi_proxy", hparams.doremi_config(m, S, paper_scale, reference_model=ref)))
        p = proxy["policy"]["average_weights"]
        res = runner.run_one(cfg("doremi", mc={"proportions": p}))
        return MethodOutcome(method, setting, seed, res, p, 2, 2 * S, {"proxy_history": proxy["policy"]["history"],
                                                                       "proxy_config": proxy["config"]})

    if method == "doge":
        mc = hparams.doge_config(m, S, prof.train.lr, paper_scale)
        proxy = runner.run_one(cfg("doge-proxy", "doge_proxy", mc))
        p = proxy["policy"]["average_weights"]
        res = runner.run_one(cfg("doge", mc={"proportions": p}))
        return MethodOutcome(method, setting, seed, res, p, 1, S, {"proxy_history": proxy["policy"]["history"],
                                                                   "proxy_config": proxy["config"]})

    if method == "regmix":
        plan, proxy_cfgs = regmix_proxies(st, profile, seed)
        p, results, details = regmix_fit(plan, proxy_cfgs, seed, runner, lambda q: cfg("regmix", mc={"proportions": q}))
        res = runner.run_one(cfg("regmix", mc={"proportions": p}))
        return MethodOutcome(method, setting, seed, res, p, len(results), len(results) * plan.proxy_steps, details,
                             extra_flops=float(sum(r["flops_per_token"] * r["train_tokens"] for r in results)))

    if method == "odm":
        res = runner.run_one(cfg("odm", "odm", hparams.odm_config(m, S, paper_scale)))
        return MethodOutcome(method, setting, seed, res, res["policy"]["average_weights"], 0, 0,
                             {"history": res["policy"]["history"]})

    # Aioli and its ablations: no extra runs.
    extra = {"aioli_static": {"static": True}, "aioli_diagonal": {"diagonal": True}}.get(method, {})
    mc = hparams.aioli_config(m, S, paper_scale, **extra, **overrides.get("aioli", {}))
    # ``train``: overrides of the training config (a larger validation sample for a variant that scores LearnParams
    # on more sequences, notebook 12); none by default, so Table 2's runs keep their ids
    res = runner.run_one(cfg(method, "aioli", mc, **overrides.get("train", {})))
    return MethodOutcome(method, setting, seed, res, _avg_proportions(res), 0, 0,
                         {"history": res["policy"]["history"]})


def regmix_proxies(setting: str | hparams.Setting, profile: str, seed: int) -> tuple[RegMixPlan, list[RunConfig]]:
    """RegMix's plan and its proxy runs for ``setting`` and ``seed`` under ``profile``: static runs of the smaller
    preset on the seeded Dirichlet mixtures, scored on the validation split only (the proxies never see the test
    split), without periodic evaluations or checkpoints."""
    prof = get_profile(profile)
    groups = setting_groups(setting, profile)
    t = prof.train
    plan = hparams.regmix_config(len(groups), t.steps, prof.model.preset, t.warmup_steps, t.test_max_sequences,
                                 prof.notes.get("regmix_proxies"))
    cfgs = [regmix_proxy_config(plan, profile, groups, seed, p)
            for p in sample_mixtures(len(groups), plan.n_proxies, seed, plan.minimum)]
    return plan, cfgs


def regmix_proxy_config(plan: RegMixPlan, profile: str, groups: list[str], seed: int, proportions) -> RunConfig:
    """One RegMix proxy run: a static run of the plan's smaller preset on ``proportions`` for ``plan.proxy_steps``,
    scored on the validation split only."""
    c = profile_config(profile, groups, "static", seed, {"proportions": config_mixture(proportions)},
                       name="regmix-proxy", steps=plan.proxy_steps, warmup_steps=plan.proxy_warmup_steps,
                       eval_every=0, checkpoint_every=0, final_eval="val", test_max_sequences=plan.proxy_eval_sequences)
    c.model.preset = plan.proxy_preset
    c.validate()
    return c


def regmix_fit(plan: RegMixPlan, proxy_cfgs: list[RunConfig], seed: int, runner: Runner,
               make_cfg: Callable[[list[float]], RunConfig]) -> tuple[list[float], list[dict], dict]:
    """RegMix's mixture from its proxy runs: train (or read) them, regress their mean validation loss on their
    mixtures, and settle the fitted mixture's rounding against the cache (``make_cfg(q)``: the final run's config).
    Returns the mixture, the proxies' results and the fit's details."""
    results = runner.run(proxy_cfgs)
    groups = proxy_cfgs[0].data.groups
    P = np.array([c.method_config["proportions"] for c in proxy_cfgs])
    y = np.array([np.mean([r["val_loss"][g] for g in groups]) for r in results])  # by validation loss, never test
    p_raw, details = regmix_mixture(P, y, seed, plan)
    details.update(proxy_proportions=P.tolist(), proxy_val_loss=y.tolist())
    return settle_mixture(p_raw, make_cfg, runner), results, details


def finished_finals(method: str, setting: str | hparams.Setting, profile: str, seeds=None,
                    runs_dir=None) -> list[dict]:
    """The final runs' results of ``method`` on ``setting`` for the seeds (default: the profile's) that have
    finished, read from the run cache only (nothing trains); seeds not finished are left out."""
    runner = Runner(cached_only=True, progress=False, runs_dir=runs_dir)
    out = []
    for seed in get_profile(profile).seeds if seeds is None else seeds:
        try:
            out.append(run_method(method, setting, profile, int(seed), runner).final)
        except NotCachedError:
            continue
    return out


def config_mixture(p, decimals: int = 6) -> list[float]:
    """A computed mixture (DML's fitted optimum) as it enters a run's config, and so its run id: rounded to
    ``decimals`` and renormalised. The optimiser's last bits depend on the BLAS thread count (measured: entries of
    1e-17 vs 1e-18 on the seven-group fit with 1 vs 2 threads), and a run's identity must not, or a clone that renders
    with other threads trains the run again."""
    q = np.round(np.clip(np.asarray(p, dtype=float), 0.0, None), decimals)
    if not np.isfinite(q).all() or q.sum() <= 0:
        raise ValueError(f"not a mixture: {p!r}")
    return (q / q.sum()).tolist()


def dml_mixture(P, L_val, seed: int, make_cfg: Callable[[list[float]], RunConfig], runner: Runner):
    """DML's proportions from a sweep (mixtures P, validation losses L_val): fit the static log-linear law, take its
    optimum within what the data support, and settle the optimum's rounding (``settle_mixture``). Returns (p, the
    fit). Table 2 and the restricted budget both call this, so the two cannot drift apart.

    The support is the convex hull of the sweep's mixtures and uniform (``laws.supported_optimal_mixture``): the
    simplex optimum wherever it lies inside, as on every two- and three-group setting here. On seven groups a law
    with eight parameters per group, fitted to ten 50-step runs, put its optimum on the simplex's vertices (all of
    latex on one seed), where no run was and the law is extrapolating; the hull keeps it among mixtures like those
    that were measured. Uniform is added without a run of its own: it is the baseline every method is compared with,
    and a mixture at the centre of every sweep."""
    fit = fit_static_law(P, L_val, seed=seed)
    P = np.asarray(P, dtype=float)
    support = np.vstack([P, np.full(P.shape[1], 1.0 / P.shape[1])])
    return settle_mixture(supported_optimal_mixture(fit, support, seed=seed), make_cfg, runner), fit


def settle_mixture(p, make_cfg: Callable[[list[float]], RunConfig], runner: Runner, decimals: int = 6) -> list[float]:
    """``config_mixture(p)``, unless that run is not cached and the run of a neighbouring rounding is: then that one.

    Rounding absorbs the optimiser's last-bit noise except at a rounding boundary: on 2026-12-04 DML's CC/GH/W seed-1
    optimum came out 0.29162151 on one machine, where the committed run had rounded it to 0.291621, so the render
    asked for a new run of a mixture under 1e-6 away. The candidates are the mixtures whose every entry is ``p``'s entry
    rounded down or up (2^m of them), renormalised; the exact rounding wins whenever it is cached or none is."""
    exact = config_mixture(p, decimals)
    if cached_result(make_cfg(exact), runner.runs_dir, resolve_auto=True) is not None:
        return exact
    q = np.clip(np.asarray(p, dtype=float), 0.0, None)
    scale = 10.0 ** decimals
    lo, hi = np.floor(q * scale) / scale, np.ceil(q * scale) / scale
    seen = {tuple(exact)}
    for choice in itertools.product((0, 1), repeat=len(q)):
        cand = np.where(np.array(choice, dtype=bool), hi, lo)
        if cand.sum() <= 0:
            continue
        mix = config_mixture(cand, decimals)  # the same rounding and renormalisation as a run's config
        if tuple(mix) in seen:
            continue
        seen.add(tuple(mix))
        if cached_result(make_cfg(mix), runner.runs_dir, resolve_auto=True) is not None:
            return mix
    return exact


def reference_model_path(result: dict, runner: Runner) -> str:
    """The final weights of a run kept with ``keep_model``, as a path relative to the runs directory: DoReMi's proxy
    names its reference this way, so its run id (and cached result) is the same wherever the repository lives."""
    run = RunDir.from_result(result, runner.runs_dir)
    return f"{run.path.name}/{run.model_path.name}"  # the proxy's policy checks that the file exists


def stratified_config(setting: str | hparams.Setting, profile: str, seed: int) -> RunConfig:
    """The stratified run of ``setting`` and ``seed``: the baseline, DoReMi's reference and the colsum-ordering
    study's parent are all this one run (and cache entry)."""
    return profile_config(profile, setting_groups(setting, profile), "stratified", seed, None, name="stratified")


def ensure_reference_weights(setting: str | hparams.Setting, profile: str, seed: int, runner: Runner) -> dict:
    """DoReMi's reference run with its final weights on disk, trained again for them when only its result is cached
    (a fresh clone's committed cache holds results, never weights). Anything that trains part of DoReMi's proxy
    trajectory (e.g. the fidelity study's prefix run) needs them."""
    return runner.run_one(stratified_config(setting, profile, seed), keep_model=True)


def doremi_proxy(runner: Runner, reference_cfg: RunConfig, proxy_cfg) -> dict:
    """The result of DoReMi's proxy run, ``proxy_cfg(reference path)`` being its config.

    The reference's weights are needed only to train the proxy: when the proxy has finished (e.g. in the committed
    result cache of a fresh clone), its result is returned without retraining the reference for its weights."""
    ref = cached_result(reference_cfg, runner.runs_dir, resolve_auto=True)
    if ref is not None:
        cfg = proxy_cfg(reference_model_path(ref, runner))
        if (done := cached_result(cfg, runner.runs_dir, resolve_auto=True)) is not None:
            return done
    ref = runner.run_one(reference_cfg, keep_model=True)
    return runner.run_one(proxy_cfg(reference_model_path(ref, runner)))


def _val_curve(result: dict, runner: Runner) -> list[list[float]]:
    """Validation losses on the fixed sample at every logged evaluation, in group order."""
    groups = result["groups"]
    recs = [r for r in RunDir.from_result(result, runner.runs_dir).read_metrics() if "val_loss" in r]
    if not recs:
        raise RuntimeError("this method needs periodic validation (train.eval_every > 0) in its graph runs")
    return [[r["val_loss"][g] for g in groups] for r in recs]
