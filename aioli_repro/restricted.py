"""The restricted budget (the paper's Table 3, notebook 05): each method learns its proportions p_init with at most
0.5·S extra training steps, then (a) p_init is used alone for a full run and (b) Aioli starts from it (S_init steps
on p_init, then its own updates); C7's control trains p_init for S_init steps and then stratified.

The paper's five baselines (``tables.BASELINES``) and the two extension methods (RegMix, ODM) learn p_init here;
the extensions' rows are this repository's finding F6, never part of C7's 30 pairs.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist

from . import hparams
from .executors import Runner
from .methods import (
    _val_curve,
    dml_mixture,
    doremi_proxy,
    regmix_fit,
    regmix_proxies,
    setting_groups,
    sweep,
)
from .model import preset_flops_per_token
from .policies.skillit import skillit_weights, skills_graph
from .profiles import get_profile, profile_config
from .tokenizer import load_tokenizer

METHODS = ("grid", "dml", "skillit", "doremi", "doge", "regmix", "odm")
"""The methods that learn a p_init under the budget: the paper's five baselines (C7) and RegMix and ODM (F6)."""
PAPER_RESTRICTED = {"improved": 28, "pairs": 30, "mean": 1.202, "max": 12.012}


@dataclass(frozen=True)
class RestrictedPlan:
    """How each method spends at most 0.5·S extra steps to learn its proportions (the paper's Table 3)."""

    budget_fraction: float = 0.5
    prior_fraction: float = 0.05
    """S_init as a share of S: the released scripts define PRIOR_STEPS = 250 of 5,000."""


def study_sweep(setting: str, profile: str, seed: int, budget: str = "unrestricted",
                plan: RestrictedPlan = RestrictedPlan()) -> list:
    """The sweep runs grid search and DML share in a study: full length, or, under the restricted budget, each of
    0.5·S / n steps."""
    groups = setting_groups(setting, profile)
    cfgs = sweep(profile, groups, seed)
    if budget in ("restricted", "restricted_control"):
        short = int(plan.budget_fraction * get_profile(profile).train.steps) // len(cfgs)
        cfgs = sweep(profile, groups, seed, steps=short)
    return cfgs


def restricted_pair(method: str, setting: str, profile: str, seed: int, runner: Runner,
                    plan: RestrictedPlan = RestrictedPlan()) -> dict:
    """(a) the method's proportions learned within 0.5·S extra steps, used alone; (b) Aioli starting from them.

    Budget split: grid/DML: their sweep with each run 0.5·S / n steps; Skill-it: m one-group runs of 0.5·S / m;
    DoReMi: reference and proxy of 0.25·S each; DoGE: one proxy of 0.5·S; RegMix: its first proxies, as many as fit
    in the FLOPs of 0.5·S steps of the final model (``regmix_restricted_proxies``); ODM: one run of 0.5·S, its mean
    mixture. Aioli then trains S_init steps on the
    prior p_init and adapts, restarting exponentiated gradient from uniform as released (Skill-it's prior is its
    initial mixture exp(η·G·1), the static part of its schedule).
    """
    start = restricted_start(method, setting, profile, seed, runner, plan)
    with_aioli = runner.run_one(start["cfg"](f"aioli+{method}", "aioli", start["aioli_config"]))
    alone = start["alone"]
    return {"setting": setting, "label": start["label"], "method": method, "seed": seed,
            "p_init": [round(float(x), 4) for x in start["p_init"]], "extra_steps": start["extra_steps"],
            "method_ppl": alone["avg_test_perplexity"], "aioli_ppl": with_aioli["avg_test_perplexity"],
            "improvement": alone["avg_test_perplexity"] - with_aioli["avg_test_perplexity"]}


def restricted_control(method: str, setting: str, profile: str, seed: int, runner: Runner,
                       plan: RestrictedPlan = RestrictedPlan()) -> dict:
    """C7's control: p_init for S_init steps, then stratified for the rest (Aioli's restricted schedule without
    Aioli). Released Aioli restarts exponentiated gradient from uniform after S_init steps, so from any start it ends
    near stratified; its gain over p_init alone then mostly measures how bad p_init was. Its gain over this control
    (``gain_vs_control`` = control - Aioli, positive when Aioli is better) is what Aioli's adaptation adds."""
    start = restricted_start(method, setting, profile, seed, runner, plan)
    prior = {"prior": [float(x) for x in start["p_init"]], "prior_steps": start["s_init"]}
    control = runner.run_one(start["cfg"](f"control+{method}", "static", prior))
    with_aioli = runner.run_one(start["cfg"](f"aioli+{method}", "aioli", start["aioli_config"]))
    return {"setting": setting, "label": start["label"], "method": method, "seed": seed,
            "method_ppl": start["alone"]["avg_test_perplexity"], "control_ppl": control["avg_test_perplexity"],
            "aioli_ppl": with_aioli["avg_test_perplexity"],
            "gain_vs_control": control["avg_test_perplexity"] - with_aioli["avg_test_perplexity"]}


def restricted_start(method: str, setting: str, profile: str, seed: int, runner: Runner,
                     plan: RestrictedPlan = RestrictedPlan()) -> dict:
    """What a method learns within the restricted budget: its p_init, the run of p_init alone, and the Aioli config
    that starts from it (S_init steps on p_init), with the config factory of the study."""
    prof = get_profile(profile)
    st = hparams.get_setting(setting)
    groups = setting_groups(st, profile)
    m, S = len(groups), prof.train.steps
    budget = extra_steps = int(plan.budget_fraction * S)

    def cfg(name, pol="static", mc=None, **kw):
        return profile_config(profile, groups, pol, seed, mc, name=name, **kw)

    if method in ("grid", "dml"):
        sweep_cfgs = study_sweep(setting, profile, seed, "restricted", plan)
        res = runner.run(sweep_cfgs)
        P = np.array([c.method_config["proportions"] for c in sweep_cfgs])
        L = np.array([[r["val_loss"][g] for g in groups] for r in res])
        if method == "grid":
            p = P[int(np.argmin(L.mean(axis=1)))]
        else:
            p = np.array(dml_mixture(P, L, seed, lambda q: cfg(f"{method}-restricted", mc={"proportions": q}),
                                     runner)[0])
        alone = runner.run_one(cfg(f"{method}-restricted", mc={"proportions": p.tolist()}))
    elif method == "skillit":
        short = budget // m
        graph_runs = runner.run([cfg("skillit-graph", mc={"proportions": np.eye(m)[j].tolist()}, steps=short)
                                 for j in range(m)])
        start = np.array(_val_curve(graph_runs[0], runner)[0])
        G = skills_graph(start, np.array([_val_curve(r, runner)[-1] for r in graph_runs]))
        mc = hparams.skillit_config(m, S, profile == "paper", graph=G.tolist())
        alone = runner.run_one(cfg("skillit-restricted", "skillit", mc))
        p = skillit_weights(G, np.ones(m), mc["eta"])
    elif method == "doremi":
        short = budget // 2
        proxy = doremi_proxy(runner, cfg("doremi-reference", "stratified", steps=short), lambda ref: cfg(
            "doremi-proxy", "doremi_proxy", hparams.doremi_config(m, short, profile == "paper", reference_model=ref),
            steps=short))
        p = np.array(proxy["policy"]["average_weights"])
        alone = runner.run_one(cfg("doremi-restricted", mc={"proportions": p.tolist()}))
    elif method == "doge":
        mc = hparams.doge_config(m, budget, prof.train.lr, profile == "paper")
        proxy = runner.run_one(cfg("doge-proxy", "doge_proxy", mc, steps=budget))
        p = np.array(proxy["policy"]["average_weights"])
        alone = runner.run_one(cfg("doge-restricted", mc={"proportions": p.tolist()}))
    elif method == "regmix":
        # The first n of Table 2's proxies (the same runs, so the cache shares them), n as many as fit in FLOPs
        full_plan, proxy_cfgs = regmix_proxies(st, profile, seed)
        target = cfg("regmix-restricted", "stratified")
        n = regmix_restricted_proxies(full_plan.n_proxies, budget, full_plan.proxy_steps, _run_flops(target),
                                      _run_flops(proxy_cfgs[0]))
        plan_n = replace(full_plan, n_proxies=n,
                         lgbm={**full_plan.lgbm, "min_data_in_leaf": hparams.regmix_min_data_in_leaf(n)})
        p = np.array(regmix_fit(plan_n, proxy_cfgs[:n], seed, runner,
                                lambda q: cfg("regmix-restricted", mc={"proportions": q}))[0])
        alone = runner.run_one(cfg("regmix-restricted", mc={"proportions": p.tolist()}))
        extra_steps = n * full_plan.proxy_steps  # steps of the smaller proxy model
    elif method == "odm":
        # ODM learns online: like DoGE's proxy, a run of the budget's length, whose mean mixture is p_init
        proxy = runner.run_one(cfg("odm-proxy", "odm", hparams.odm_config(m, budget, profile == "paper"),
                                   steps=budget))
        p = np.array(proxy["policy"]["average_weights"])
        alone = runner.run_one(cfg("odm-restricted", mc={"proportions": p.tolist()}))
    else:
        raise ValueError(f"the restricted budget runs {list(METHODS)}, not {method!r}")

    s_init = max(1, round(plan.prior_fraction * S))
    amc = hparams.aioli_config(m, S - s_init, profile == "paper", batch_size=prof.train.batch_size,
                               prior=[float(x) for x in p], prior_steps=s_init)
    return {"label": st.label, "p_init": p, "alone": alone, "s_init": s_init, "extra_steps": extra_steps,
            "aioli_config": amc, "cfg": cfg}


def regmix_restricted_proxies(n_proxies: int, budget_steps: int, proxy_steps: int, target_flops_per_token: float,
                              proxy_flops_per_token: float) -> int:
    """How many of RegMix's ``n_proxies`` proxies fit the restricted budget: the most whose training FLOPs stay
    within ``budget_steps`` steps of the target model. A proxy step and a target step see the same batch, so tokens
    cancel: n = floor(budget_steps x target / (proxy_steps x proxy)), at most ``n_proxies``. RegMix's budget is
    counted in FLOPs, not steps, because its proxies are a smaller model: 0.5·S steps would buy four S/8-step proxies,
    too few to fit a regression to, while the same compute buys about ten."""
    n = int(budget_steps * target_flops_per_token // (proxy_steps * proxy_flops_per_token))
    if n < 2:
        raise ValueError(f"the restricted budget of {budget_steps} steps buys {n} RegMix proxies of {proxy_steps} "
                         "steps; the regression needs at least two")
    return min(n, int(n_proxies))


@functools.cache
def _vocab_size(tokenizer: str) -> int:
    return len(load_tokenizer(tokenizer))


def _run_flops(cfg) -> float:
    """Training FLOPs per token of a run's model, as the run records them (``model.preset_flops_per_token``)."""
    return preset_flops_per_token(cfg.model.preset, _vocab_size(cfg.data.tokenizer), cfg.data.context_length)


def restricted_summary(df: pd.DataFrame) -> dict:
    """Table 3's summary over (setting, method) pairs, each averaged over its seeds: how many Aioli improves, the
    mean and max improvement (the paper's three figures) and the median, which the paper does not give but which one
    far-off pair (a method whose proportions alone went badly) cannot move the way it moves the mean."""
    per_pair = df.groupby(["setting", "method"]).improvement.mean()
    return {"improved": int((per_pair > 0).sum()), "pairs": int(per_pair.size),
            "mean": float(per_pair.mean()), "median": float(per_pair.median()), "max": float(per_pair.max()),
            "paper": PAPER_RESTRICTED}


def restricted_by_start(pairs: pd.DataFrame, stratified: pd.DataFrame, margin: float = 1.0) -> pd.DataFrame:
    """Aioli's gain in the restricted budget, split by how the method's proportions did alone against stratified
    sampling on the same setting and seed: runs whose p_init alone lost to stratified by more than ``margin``
    perplexity, and the rest. Rows of ``pairs`` without a stratified run of their (setting, seed) are left out.

    Part of any link this shows is regression to the mean: an unlucky run of p_init alone counts in both the split and
    the gain. The last two columns say where p_init alone and Aioli from p_init end against stratified (negative =
    better)."""
    st = stratified[["setting", "seed", "avg_test_perplexity"]].rename(columns={"avg_test_perplexity": "stratified"})
    d = pairs.merge(st, on=["setting", "seed"])
    poor = d.method_ppl - d.stratified > margin
    rows = []
    for name, part in ((f"p_init alone worse than stratified by > {margin:g}", d[poor]),
                       (f"p_init alone within {margin:g} of stratified, or better", d[~poor]), ("all", d)):
        rows.append({"p_init": name, "runs": len(part), "aioli_improves": int((part.improvement > 0).sum()),
                     "mean_improvement": part.improvement.mean(), "median_improvement": part.improvement.median(),
                     "method_minus_stratified": (part.method_ppl - part.stratified).mean(),
                     "aioli_minus_stratified": (part.aioli_ppl - part.stratified).mean()})
    return pd.DataFrame(rows)


def p_init_spread(pairs: pd.DataFrame) -> pd.DataFrame:
    """How much each method's restricted-budget proportions p_init move between seeds on one setting.

    ``max_tv_between_seeds`` is the largest total-variation distance between two seeds' p_init (half the L1
    distance: 0 for the same mixture, 1 for disjoint ones); ``method_ppl_sd`` is the sd over seeds of the perplexity
    of p_init used alone. A method whose p_init moves far with the seed learns mostly noise from its 0.5·S extra
    steps, and a single seed of Table 3 then says little about it. NaN where a pair has one seed."""
    rows = []
    for (setting, label, method), g in pairs.groupby(["setting", "label", "method"], sort=False):
        P = np.array([json.loads(p) if isinstance(p, str) else list(p) for p in g.p_init], dtype=float)
        tv = 0.5 * pdist(P, "cityblock")  # one distance per pair of seeds; empty for one seed
        rows.append({"setting": setting, "label": label, "method": method, "seeds": len(P),
                     "max_tv_between_seeds": tv.max() if tv.size else np.nan,
                     "method_ppl_sd": g.method_ppl.std(ddof=1) if len(P) > 1 else np.nan})
    return pd.DataFrame(rows)




def extension_table(pairs: pd.DataFrame, control: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, method) of the extension rows, means over seeds: p_init alone, the control, Aioli from p_init,
    Aioli's gain over p_init alone (``improvement``, the paper's figure) and over the control (``gain_vs_control``,
    what F6 tests), with the seeds and the extra steps spent learning p_init. Only (method, setting, seed) studies
    present in both tables."""
    keys = ["setting", "label", "method", "seed"]
    d = pairs[keys + ["extra_steps", "method_ppl", "aioli_ppl", "improvement"]].merge(
        control[keys + ["control_ppl", "gain_vs_control"]], on=keys)
    g = d.groupby(["label", "method"], sort=False)
    out = g[["method_ppl", "control_ppl", "aioli_ppl", "improvement", "gain_vs_control", "extra_steps"]].mean()
    out["seeds"] = g.size()
    return out
