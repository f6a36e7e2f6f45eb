"""What it costs to give Aioli's LearnParams a signal (notebook 12, issue 31 part 3), and the "Aioli, adequate
signal" row.

At our scale, after its first round the direction d_t = colsum(Ā^t) - mean that Aioli estimates agrees across seeds
no better than chance (``diagnostics.reach_and_signal``). ``signal_study`` runs Aioli's released configuration beside
variants that spend more on LearnParams (more validation sequences per evaluation, longer intervals, more rounds,
the paper's cumulative form), each with the cross-seed agreement of the directions it estimated and its compute and
wall time against stratified's: the price of an Aioli that can see. ``cheapest_with_signal`` and
``choose_signal_variant`` pick the cheapest variant whose later rounds agree (Holm-adjusted over a setting's
variants, ``signal_seen``), and ``adequate_signal_rows`` trains it at full length beside stratified, the released
form and the cumulative form.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import hparams
from .aioli_estimates import estimate_agreement
from .config import RunConfig
from .executors import NotCachedError, run_units
from .headroom import comparison_seeds
from .methods import run_method, setting_groups
from .policies.aioli import AioliPolicy
from .profiles import get_profile, profile_config
from .stats import holm, paired_ci

__all__ = ["SIGNAL_ALPHA", "SIGNAL_MIN_SEEDS", "signal_seen", "signal_detectable", "signal_steps", "signal_seeds", "signal_variants", "signal_plan_configs",
           "learnparams_eval_flops", "training_compute", "signal_study", "cheapest_with_signal",
           "choose_signal_variant", "adequate_signal_rows", "adequate_signal_table"]


SIGNAL_ALPHA = 0.05
"""Level of the test of later-round agreement (``across_seeds_p``, Holm-adjusted over a setting's variants) at which
a variant counts as carrying signal."""


def signal_seen(table: pd.DataFrame, alpha: float = SIGNAL_ALPHA) -> pd.Series:
    """Per row of a ``signal_study`` table: whether the variant's later rounds agree across seeds, mean cosine above 0
    at a p-value below ``alpha`` after Holm's adjustment over the variants of its setting. Without it, with seven
    variants a blind Aioli would pass somewhere far more often than ``alpha``. A variant without a later round (p nan)
    is not seen and not counted."""
    adjusted = pd.Series(np.nan, index=table.index)
    for _, p in table.groupby("setting", sort=False)["across_seeds_p"]:
        p = p.astype(float).dropna()
        adjusted[p.index] = holm(p.to_numpy())
    return (adjusted < alpha) & (table["across_seeds_cos"] > 0)


def signal_detectable(table: pd.DataFrame, alpha: float = SIGNAL_ALPHA) -> pd.Series:
    """Per row of a ``signal_study`` table: whether the test could have seen the variant agree at all, i.e. whether
    perfect agreement in every later round (``across_seeds_p_floor``) would pass ``signal_seen``'s Holm adjustment
    even as the first of its setting's variants to be tested (multiplied by their number). For m = 2 with 3 seeds
    and 3 later rounds the floor is 1/64, 0.11 after a factor of 7: such a variant reads "no signal" whatever its
    estimates do, and a study whose variants are all like it cannot decide."""
    out = pd.Series(False, index=table.index)
    for _, g in table.groupby("setting", sort=False):
        k = int(g["across_seeds_p"].notna().sum())
        out[g.index] = (g["across_seeds_p_floor"] * k < alpha).to_numpy()
    return out


def signal_steps(profile: str) -> int:
    """Run length of the signal study (notebook 12): short runs, a quarter of the profile's (250 of full's 1,000
    steps, which keeps the released m = 2 config: rounds of R = 63 steps, about four of them), or the whole run for a
    profile with ``small_studies`` (smoke, quick)."""
    prof = get_profile(profile)
    return prof.train.steps if prof.small_studies else max(1, prof.train.steps // 4)


SIGNAL_MIN_SEEDS = 5
"""Seeds of the signal study under a profile without ``small_studies``. For m = 2 a seed's direction is a sign, so a
round of n seeds agrees fully by chance 2^(1-n) of the time, and r later rounds allow p >= 2^((1-n)·r) however well
the estimates agree. The short runs hold 3 later rounds: 3 seeds allow 1/64, 0.11 after Holm's factor of 7, so no
variant could pass (``signal_detectable``); 5 seeds allow 1/4096."""


def signal_seeds(profile: str) -> tuple[int, ...]:
    """Seeds of the signal study: the profile's, continued to ``SIGNAL_MIN_SEEDS`` (full: 0-4); a profile with
    ``small_studies`` (smoke, quick: a pipeline check) keeps its own, or (0, 1) for one seed, since agreement
    *across seeds* needs two."""
    prof = get_profile(profile)
    seeds = tuple(prof.seeds)
    if prof.small_studies:
        return seeds if len(seeds) >= 2 else (0, 1)
    return seeds + tuple(range(max(seeds) + 1, max(seeds) + 1 + SIGNAL_MIN_SEEDS - len(seeds)))


def signal_variants(profile: str, m: int, steps: int | None = None) -> dict[str, tuple[dict, dict]]:
    """The signal study's variants for ``m`` groups and runs of ``steps`` (default ``signal_steps``), as
    ``signal_study`` takes them: name -> (overrides of ``hparams.aioli_config``, overrides of the training config).

    Multiples are of the released (scaled) config: n = lp_eval_sequences (validation sequences per group per
    LearnParams evaluation; the run's fixed validation sample is enlarged to hold n when it is smaller), S_lp =
    lp_steps and R = update_steps (halving R doubles the number of rounds). ``cumulative`` is the paper's Algorithm 1
    (``ema=None``), which the released EMA form's band [1, e^η]/(e^η + m - 1) does not bind. A profile with
    ``small_studies`` (smoke, quick) gets two variants, the released config and four times the rounds (its one-round
    runs have no later round to test)."""
    prof = get_profile(profile)
    S = steps or signal_steps(profile)
    base = hparams.aioli_config(m, S, batch_size=prof.train.batch_size)
    n, S_lp, R, k = base["lp_eval_sequences"], base["lp_steps"], base["update_steps"], base["lp_rounds"]
    n_val = prof.train.eval_sequences

    def rounds(factor: int) -> dict:  # R / factor, but longer than the round's LearnParams steps m·k·S_lp
        return {"update_steps": max(m * k * S_lp + 1, math.ceil(R / factor))}

    def evaluate(factor: int) -> tuple[dict, dict]:
        return {"lp_eval_sequences": factor * n}, ({"eval_sequences": factor * n} if factor * n > n_val else {})

    if prof.small_studies:
        return {"released": ({}, {}), "rounds x4": (rounds(4), {})}
    ev4, ev16 = evaluate(4), evaluate(16)
    return {"released": ({}, {}),
            "eval x4": ev4,
            "eval x16": ev16,
            "S_lp x2": ({"lp_steps": 2 * S_lp}, {}),
            "rounds x2": (rounds(2), {}),
            "cumulative": ({"ema": None}, {}),
            "eval x16, S_lp x2": ({**ev16[0], "lp_steps": 2 * S_lp}, ev16[1])}


def _signal_plan(st: hparams.Setting, profile: str, seeds, variants: dict, steps: int | None):
    """The runs of ``signal_study``: per variant its Aioli configs (one per seed) and its stratified baselines (one
    per distinct training override and seed, shared between variants)."""
    groups = setting_groups(st, profile)
    m, S = len(groups), steps or get_profile(profile).train.steps
    length = {"steps": steps} if steps else {}
    plan = {}
    for name, (aioli, train) in variants.items():
        mc = hparams.aioli_config(m, S, **aioli)
        plan[name] = ([profile_config(profile, groups, "aioli", seed, mc, name=f"aioli-signal-{name}",
                                      **length, **train) for seed in seeds],
                      [profile_config(profile, groups, "stratified", seed, name="stratified", **length, **train)
                       for seed in seeds])
    return plan


def signal_plan_configs(setting: str | hparams.Setting, profile: str, seeds, variants: dict,
                        steps: int | None = None) -> list[RunConfig]:
    """Every run config ``signal_study`` would train (for ``usage.planned_cost``); nothing trains."""
    st = setting if isinstance(setting, hparams.Setting) else hparams.get_setting(setting)
    return [c for aioli, strat in _signal_plan(st, profile, seeds, variants, steps).values() for c in aioli + strat]


def learnparams_eval_flops(result: dict) -> float:
    """Forward FLOPs an Aioli run spent scoring validation sequences inside LearnParams (0 for any other method).

    Each LearnParams call (a policy history entry with A^t) makes m·k + 1 evaluations (L^0, then one after each of
    its m·k intervals), each of n validation sequences per group (``lp_eval_sequences``; None: the run's whole fixed
    sample, ``train.eval_sequences``), forward only: a third of a training token's FLOPs. The periodic evaluations
    every run makes, and the final one, are not counted: a run and its stratified baseline share them."""
    cfg = result["config"]
    if cfg["method"] != "aioli":
        return 0.0
    mc = {**{k: getattr(AioliPolicy.Config, k) for k in ("lp_rounds", "lp_eval_sequences")}, **cfg["method_config"]}
    calls = sum(h.get("A") is not None for h in result["policy"]["history"])
    m, n = len(result["groups"]), mc["lp_eval_sequences"] or cfg["train"]["eval_sequences"]
    tokens = calls * (m * mc["lp_rounds"] + 1) * m * n * cfg["data"]["context_length"]
    return float(tokens * result["flops_per_token"] / 3)


def training_compute(result: dict) -> float:
    """What a run costs in FLOPs beyond the evaluations every run makes: training tokens at the training rate plus
    LearnParams' own evaluations (``learnparams_eval_flops``). A function of the config and the policy's history
    alone, so runs trained in different sittings, under different machine load, compare fairly; wall time does
    not."""
    return float(result["train_tokens"] * result["flops_per_token"] + learnparams_eval_flops(result))


def signal_study(setting: str | hparams.Setting, profile: str, seeds, runner,
                 variants: dict[str, tuple[dict, dict]], steps: int | None = None) -> pd.DataFrame:
    """One row per variant: ``variants`` maps a name to (overrides of ``hparams.aioli_config``, overrides of the
    profile's training config, e.g. ``{"eval_sequences": 64}`` for a larger validation sample); ``steps`` shortens
    every run. Each variant trains one Aioli run per seed, and each distinct training override one stratified run per
    seed (the wall-time baseline). Columns: ``estimate_agreement`` of the variant's runs (``across_seeds_cos`` and its
    p-value are the test of signal), its LearnParams share, evaluation sequences per LearnParams evaluation, its
    compute relative to stratified's (``training_compute``: deterministic, the price the choice ranks by) and its
    wall time relative to stratified's under the same training config (mean over seeds; it depends on the load of
    the machine in each run's sitting, so it is reported, not ranked).

    A runner with ``cached_only`` reads the variants whose runs have all finished and lists the others in
    ``table.attrs["missing"]``."""
    st = setting if isinstance(setting, hparams.Setting) else hparams.get_setting(setting)
    plan = _signal_plan(st, profile, seeds, variants, steps)
    S = steps or get_profile(profile).train.steps
    done, missing = run_units(runner, {name: aioli + strat for name, (aioli, strat) in plan.items()})
    found = {name: (done[name][:len(aioli)], done[name][len(aioli):])
             for name, (aioli, _) in plan.items() if name in done}
    missing = [f"{st.label}/{name}" for name in missing]
    rows = []
    for name, (runs, baselines) in found.items():
        wall = [r["wall_time_s"] / b["wall_time_s"] for r, b in zip(runs, baselines)]
        compute = [training_compute(r) / training_compute(b) for r, b in zip(runs, baselines)]
        mc = runs[0]["config"]["method_config"]
        rows.append({"setting": st.key, "label": st.label, "variant": name, "steps": S,
                     "lp_eval_sequences": mc["lp_eval_sequences"], "lp_steps": mc["lp_steps"],
                     "lp_rounds": mc["lp_rounds"], "update_steps": mc["update_steps"], "ema": mc.get("ema"),
                     "eval_sequences": runs[0]["config"]["train"]["eval_sequences"],
                     "learn_params_share": runs[0]["learn_params_steps"] / runs[0]["steps"],
                     **estimate_agreement(runs), "compute_vs_stratified": float(np.mean(compute)),
                     "wall_time_vs_stratified": float(np.mean(wall)),
                     "avg_test_perplexity": float(np.mean([r["avg_test_perplexity"] for r in runs]))})
    table = pd.DataFrame(rows)
    table.attrs["missing"] = missing
    return table


def cheapest_with_signal(table: pd.DataFrame, alpha: float = SIGNAL_ALPHA) -> pd.Series | None:
    """The cheapest variant of one setting's ``signal_study`` table whose later rounds agree significantly across
    seeds: mean cosine of d_t = colsum(Ā^t) - mean between seeds above 0 with ``across_seeds_p`` < ``alpha`` after
    Holm's adjustment over the setting's variants (``signal_seen``), and the lowest ``compute_vs_stratified`` among
    those (ties: the smaller p-value, then the name). None when no variant qualifies (or the table is empty), i.e. no
    configuration tried gives Aioli a direction it can see."""
    if len(table) and table["setting"].nunique() > 1:
        raise ValueError("cheapest_with_signal takes one setting's rows; pick per setting")
    ok = table[signal_seen(table, alpha)] if len(table) else table
    if ok.empty:
        return None
    return ok.sort_values(["compute_vs_stratified", "across_seeds_p", "variant"], kind="stable").iloc[0]


def choose_signal_variant(table: pd.DataFrame, alpha: float = SIGNAL_ALPHA) -> str | None:
    """The variant for the "Aioli, adequate signal" row from notebook 12's table (all settings): among the variants
    ``cheapest_with_signal`` would accept on *every* setting, the one with the lowest mean compute ratio; failing
    that, among those accepted on any setting; None when no variant carries signal anywhere."""
    if table.empty:
        return None
    ok = table[signal_seen(table, alpha)]
    if ok.empty:
        return None
    n_settings = table["setting"].nunique()
    per = ok.groupby("variant").agg(settings=("setting", "nunique"), compute=("compute_vs_stratified", "mean"))
    everywhere = per[per.settings == n_settings]
    pool = everywhere if len(everywhere) else per
    return str(pool.sort_values(["compute"], kind="stable").index[0])


AGREEMENT_COLUMNS = ("across_seeds_cos", "across_seeds_p", "across_seeds_n", "across_seeds_p_floor")
"""``estimate_agreement``'s test of signal, as ``adequate_signal_rows`` adds it per (setting, Aioli form)."""


def adequate_signal_rows(variant: str | None, settings, profile: str, runner) -> pd.DataFrame:
    """The "Aioli, adequate signal" row beside the released configuration, at full length: per setting and seed,
    stratified, released Aioli, the paper's Algorithm-1 cumulative form (``ema=None``) and, if ``variant`` is not None,
    the variant notebook 12 chose (``signal_variants`` at the profile's full run length: the same multiples of the
    released config), on each setting's ``headroom.comparison_seeds`` (Table 2's for a paper setting, Table 2b's
    fresh ones for a headroom setting, so their stratified and released runs are shared; notebook 13's as well). One
    row per (setting, seed, form) with average test perplexity and wall time; ``runner.cached_only`` lists what has
    not finished in ``attrs["missing"]``."""
    rows, missing, runs_of = [], [], {}
    S = get_profile(profile).train.steps
    for st in settings:
        forms = {"released": {}, "cumulative": {"aioli": {"ema": None}}}
        if variant is not None:
            aioli, train = signal_variants(profile, len(setting_groups(st, profile)), S)[variant]
            forms[f"adequate signal ({variant})"] = {"aioli": aioli, "train": train}
        for seed in comparison_seeds(profile, st):
            try:
                strat = run_method("stratified", st, profile, seed, runner).final
                found = {name: run_method("aioli", st, profile, seed, runner, **over).final
                         for name, over in forms.items()}
            except NotCachedError:
                if not runner.cached_only:
                    raise
                missing.append(f"{st.label}/seed {seed}")
                continue
            for name, res in {"stratified": strat, **found}.items():
                rows.append({"setting": st.key, "label": st.label, "seed": seed, "form": name,
                             "avg_test_perplexity": res["avg_test_perplexity"], "wall_time_s": res["wall_time_s"],
                             "compute_flops": training_compute(res),
                             "run_id": res["run_id"]})
                if name != "stratified":
                    runs_of.setdefault((st.key, name), []).append(res)
    # The same test of signal on the full-length runs: four times the rounds of the short runs, so far more power
    agreement = {key: estimate_agreement(runs) for key, runs in runs_of.items() if len(runs) > 1}
    for row in rows:
        a = agreement.get((row["setting"], row["form"]), {})
        row.update({c: a.get(c, float("nan")) for c in AGREEMENT_COLUMNS})
    table = pd.DataFrame(rows)
    table.attrs["missing"] = missing
    return table


def adequate_signal_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, form): the paired difference to stratified in average test perplexity with its 95% t-interval,
    and the price relative to stratified's (mean over seeds of the per-seed ratio): in compute (``training_compute``,
    deterministic) and in wall time (as measured; runs of different sittings ran under different machine load); and,
    where ``rows`` has them (``AGREEMENT_COLUMNS``), the form's test of signal over its full-length runs."""
    out = []
    for key, g in rows.groupby("setting", sort=False):
        ppl = g.pivot_table(index="seed", columns="form", values="avg_test_perplexity")
        wall = g.pivot_table(index="seed", columns="form", values="wall_time_s")
        compute = g.pivot_table(index="seed", columns="form", values="compute_flops")
        for form in [f for f in dict.fromkeys(g.form) if f != "stratified"]:
            both = ppl[[form, "stratified"]].dropna().index
            mean, low, high = paired_ci((ppl[form] - ppl["stratified"])[both])
            out.append({"setting": key, "label": g.label.iloc[0], "form": form, "seeds": len(both),
                        "minus_stratified": mean, "ci_low": low, "ci_high": high,
                        "compute_vs_stratified": float((compute[form] / compute["stratified"])[both].mean()),
                        "wall_time_vs_stratified": float((wall[form] / wall["stratified"])[both].mean()),
                        **{c: g.loc[g.form == form, c].iloc[0] for c in AGREEMENT_COLUMNS if c in g}})
    return pd.DataFrame(out)
