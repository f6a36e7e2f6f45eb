"""Diagnoses of Aioli at our scale (notebook 08): how far it moves, whether its estimates carry signal, what its
LearnParams schedule costs, and how sensitive the recipe is to what the first steps see.

Each study runs (or finds cached) the runs it needs through a ``Runner`` and returns tidy tables; none of these runs
is a configuration of the paper, they are controls and variants, reported as such.

- ``reach_and_signal``: reads the finished Aioli runs. Reach: the released configs take p = softmax(η · colsum(E))
  from a uniform base, so every proportion stays in ``policies.aioli.eg_band``; per setting, that band, the spread of
  colsum(Ā^t) per round and the proportions reached. Signal: how well runs of different seeds agree on the direction
  d_t = colsum(Ā^t) - mean at the same round (cosines near 0 with large p-values mean noise).
- ``lp_cost_study``: Aioli with η = 0 beside Aioli and stratified, paired by seed. With η = 0 the mixture never
  leaves uniform but the run keeps LearnParams' schedule, so if it loses what Aioli loses, the loss comes from the
  schedule, not from the mixture Aioli learns. With ``lp_start`` T, two more runs per seed hold LearnParams back for
  the first T steps (uniform first, through Aioli's ``prior``/``prior_steps``): η = 0 and Aioli's own η.
- ``early_steps_study``: stratified with one LearnParams-style block at step 0 and at ``block_step`` (Aioli-static
  with η = 0), and stratified and the step-0 block with a longer warm-up. It separates "the block" from "the mixture
  learned from it", and "when the block comes" from "how the recipe warms up".
- ``signal_study``: Aioli's released configuration beside variants that spend more on LearnParams (more validation
  sequences per evaluation, longer intervals, fewer or more rounds), each with the cross-seed agreement of the
  directions it estimated and its compute and wall time against stratified's: the price of an Aioli that can see.
- ``lp_slots_old_vs_new``: every seven-group Aioli run of the old LearnParams slot rule in the result cache beside
  the run of the same config under the balanced rule.

Every study's ``by_step`` table is the gap in mean validation loss (over groups, nats) to the matching stratified run
at every evaluation, averaged over seeds: *when* in the run a difference is paid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import hparams
from .config import RunConfig
from .executors import NotCachedError, cached_result, run_units
from .methods import finished_finals, run_method, setting_groups
from .policies.aioli import AioliPolicy, estimate_agreement, reach_summary
from .profiles import get_profile, profile_config, profile_settings
from .report import run_metrics
from .run_cache import cache_entries, read_cache_entry, result_cache_dir
from .runs import default_runs_dir
from .stats import holm, paired_ci

__all__ = ["Diagnosis", "default_late_step", "reach_and_signal", "lp_cost_study", "early_steps_study",
           "signal_steps", "signal_seeds", "signal_variants", "signal_plan_configs", "signal_study",
           "learnparams_eval_flops", "training_compute", "cheapest_with_signal", "signal_seen", "SIGNAL_ALPHA",
           "choose_signal_variant", "adequate_signal_rows",
           "adequate_signal_table",
           "lp_slots_old_vs_new"]


@dataclass
class Diagnosis:
    runs: pd.DataFrame
    """One row per seed: each run's average test perplexity (and run ids, LearnParams steps, ...)."""
    summary: pd.DataFrame
    """Paired differences between runs (mean over seeds with its 95% t-interval)."""
    by_step: pd.DataFrame
    """Step -> gap in mean validation loss to the matching stratified run, mean over seeds, one column per run."""


def default_late_step(profile: str) -> int:
    """Where a held-back LearnParams block or a long warm-up ends by default: a tenth of the run (100 of the full
    profile's 1,000 steps, the paper's warm-up share of 500 of 5,000)."""
    return max(1, round(0.1 * get_profile(profile).train.steps))


def _paired(df: pd.DataFrame, pairs) -> list[dict]:
    rows = []
    for a, b in pairs:
        mean, lo, hi = paired_ci(df[a] - df[b])
        rows.append({"compared": f"{a} - {b}", "mean": mean, "ci_low": lo, "ci_high": hi, "seeds": len(df)})
    return rows


def _mean_val_loss(result: dict, runs_dir) -> pd.Series:
    """Step -> mean validation loss over the groups, from the run's metrics (restored from the committed result
    cache when this machine never trained the run)."""
    return run_metrics(result, runs_dir).groupby("step")["val_loss"].mean()


def _max_deviation(result: dict, m: int) -> float:
    """How far a run's mixture ever moved from uniform (0 for η = 0, by construction)."""
    return max(abs(x - 1 / m) for h in result["policy"]["history"] for x in h["proportions"])


def reach_and_signal(profile: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per setting with a finished Aioli run: its reach (``reach_summary``) and the agreement of its estimated
    directions across seeds and rounds (``estimate_agreement``). Nothing trains."""
    reach, signal = [], []
    for key in profile_settings(profile):
        results = finished_finals("aioli", key, profile)
        if results:
            head = {"setting": key, "label": hparams.get_setting(key).label}
            reach.append({**head, **reach_summary(results)})
            signal.append({**head, **estimate_agreement(results)})
    return pd.DataFrame(reach), pd.DataFrame(signal)


def _train_variants(variants: dict, setting: hparams.Setting, profile: str, seeds, runner) -> dict:
    """variants: column -> (run name, method, method config, train overrides); returns (column, seed) -> result.
    Every new run is handed to the runner at once, so they train in parallel."""
    groups = setting_groups(setting, profile)
    cfgs = [profile_config(profile, groups, method, seed, mc, name=name, **train)
            for name, method, mc, train in variants.values() for seed in seeds]
    done = runner.run(cfgs)
    return {(col, seed): done[i * len(seeds) + k] for i, col in enumerate(variants) for k, seed in enumerate(seeds)}


def lp_cost_study(setting: str, profile: str, seeds, runner, lp_start: int = 0) -> Diagnosis:
    """What Aioli's LearnParams costs (see the module docstring); ``lp_start`` 0 runs the η = 0 variant only."""
    st = hparams.get_setting(setting)
    m, S = len(setting_groups(st, profile)), get_profile(profile).train.steps
    if not 0 <= lp_start < S:
        raise ValueError(f"lp_start must lie in [0, {S}), got {lp_start}")
    variants = {"aioli_eta0": ("aioli-eta0", "aioli", hparams.aioli_config(m, S, eta=0.0), {})}
    if lp_start:
        late = {"prior": [1.0 / m] * m, "prior_steps": lp_start}
        variants["aioli_eta0_late"] = (f"aioli-eta0-lp{lp_start}", "aioli",
                                       hparams.aioli_config(m, S, eta=0.0, **late), {})
        variants["aioli_late"] = (f"aioli-lp{lp_start}", "aioli", hparams.aioli_config(m, S, **late), {})
    runs = _train_variants(variants, st, profile, seeds, runner)
    rows, curves = [], []
    for seed in seeds:
        strat = run_method("stratified", st, profile, seed, runner).final
        aioli = run_method("aioli", st, profile, seed, runner).final
        fr = runs[("aioli_eta0", seed)]
        row = {"setting": st.key, "label": st.label, "seed": seed,
               "stratified": strat["avg_test_perplexity"], "aioli": aioli["avg_test_perplexity"],
               "aioli_eta0": fr["avg_test_perplexity"], "learn_params_steps": fr["learn_params_steps"],
               "steps": fr["steps"], "aioli_eta0_run_id": fr["run_id"],
               "aioli_eta0_max_dev": _max_deviation(fr, m), "aioli_max_dev": _max_deviation(aioli, m)}
        if lp_start:
            late, moving = runs[("aioli_eta0_late", seed)], runs[("aioli_late", seed)]
            row.update(aioli_eta0_late=late["avg_test_perplexity"], late_learn_params_steps=late["learn_params_steps"],
                       late_lp_start=lp_start, aioli_eta0_late_run_id=late["run_id"],
                       aioli_eta0_late_max_dev=_max_deviation(late, m),
                       aioli_late=moving["avg_test_perplexity"], aioli_late_run_id=moving["run_id"],
                       aioli_late_max_dev=_max_deviation(moving, m))
        rows.append(row)
        base = _mean_val_loss(strat, runner.runs_dir)
        for col, res in [("aioli", aioli)] + [(c, runs[(c, seed)]) for c in variants]:
            gap = (_mean_val_loss(res, runner.runs_dir) - base).dropna()
            curves += [{"seed": seed, "run": col, "step": int(t), "gap": float(g)} for t, g in gap.items() if t > 0]
    df = pd.DataFrame(rows)
    pairs = [(col, "stratified") for col in ("aioli", *variants)] + [("aioli", "aioli_eta0")]
    if lp_start:
        pairs += [("aioli_eta0", "aioli_eta0_late"), ("aioli", "aioli_late")]
    by_step = pd.DataFrame(curves).pivot_table(index="step", columns="run", values="gap",
                                               aggfunc="mean")[["aioli", *variants]]
    by_step.columns = [f"{c} - stratified (mean val loss, nats; mean over seeds)" for c in by_step.columns]
    return Diagnosis(df, pd.DataFrame(_paired(df, pairs)), by_step)


def early_steps_study(setting: str, profile: str, seeds, runner, block_step: int | None = None,
                      warmup_long: int | None = None) -> Diagnosis:
    """The early-step controls (see the module docstring). ``block_step`` and ``warmup_long`` default to
    ``default_late_step(profile)``."""
    st = hparams.get_setting(setting)
    m, S = len(setting_groups(st, profile)), get_profile(profile).train.steps
    block_step = default_late_step(profile) if block_step is None else block_step
    warmup_long = default_late_step(profile) if warmup_long is None else warmup_long
    block = hparams.aioli_config(m, S, static=True, eta=0.0)
    late = {"prior": [1.0 / m] * m, "prior_steps": block_step}
    wu = f"wu{warmup_long}"
    variants = {
        "lp_block_0": ("lp-block-0", "aioli", block, {}),
        f"lp_block_{block_step}": (f"lp-block-{block_step}", "aioli", {**block, **late}, {}),
        f"stratified_{wu}": (f"stratified-{wu}", "stratified", {}, {"warmup_steps": warmup_long}),
        f"lp_block_0_{wu}": (f"lp-block-0-{wu}", "aioli", block, {"warmup_steps": warmup_long}),
    }
    runs = _train_variants(variants, st, profile, seeds, runner)
    rows, curves = [], []
    for seed in seeds:
        found = {col: runs[(col, seed)] for col in variants}
        found["stratified"] = run_method("stratified", st, profile, seed, runner).final
        found["aioli_static"] = run_method("aioli_static", st, profile, seed, runner).final
        rows.append({"setting": st.key, "label": st.label, "seed": seed,
                     **{col: res["avg_test_perplexity"] for col, res in found.items()},
                     "block_steps": found["lp_block_0"]["learn_params_steps"]})
        mean_val = {col: _mean_val_loss(res, runner.runs_dir) for col, res in found.items()}
        for col in found:
            if col.startswith("stratified"):
                continue
            base = f"stratified_{wu}" if col.endswith(wu) else "stratified"
            gap = (mean_val[col] - mean_val[base]).dropna()
            curves += [{"seed": seed, "run": f"{col} - {base}", "step": int(t), "gap": float(g)}
                       for t, g in gap.items() if t > 0]
    df = pd.DataFrame(rows)
    summary = _paired(df, [("lp_block_0", "stratified"), (f"lp_block_{block_step}", "stratified"),
                           ("aioli_static", "stratified"), ("aioli_static", "lp_block_0"),
                           (f"stratified_{wu}", "stratified"), (f"lp_block_0_{wu}", f"stratified_{wu}")])
    for col in ("stratified", f"stratified_{wu}"):  # the recipe's own seed spread
        summary.append({"compared": f"{col}: seed sd", "mean": float(df[col].std(ddof=1)), "ci_low": float("nan"),
                        "ci_high": float("nan"), "seeds": len(df)})
    by_step = pd.DataFrame(curves).pivot_table(index="step", columns="run", values="gap", aggfunc="mean")
    return Diagnosis(df, pd.DataFrame(summary), by_step)


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


def signal_steps(profile: str) -> int:
    """Run length of the signal study (notebook 12): short runs, a quarter of the profile's (250 of full's 1,000
    steps, which keeps the released m = 2 config: rounds of R = 63 steps, about four of them), or the whole run for a
    profile with ``small_studies`` (smoke, quick)."""
    prof = get_profile(profile)
    return prof.train.steps if prof.small_studies else max(1, prof.train.steps // 4)


def signal_seeds(profile: str) -> tuple[int, ...]:
    """Seeds of the signal study: agreement *across seeds* needs two at least, so a one-seed profile (smoke, quick)
    gets (0, 1); otherwise the profile's."""
    seeds = tuple(get_profile(profile).seeds)
    return seeds if len(seeds) >= 2 else (0, 1)


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


def adequate_signal_rows(variant: str | None, settings, profile: str, seeds_of, runner) -> pd.DataFrame:
    """The "Aioli, adequate signal" row beside the released configuration, at full length: per setting and seed,
    stratified, released Aioli, the paper's Algorithm-1 cumulative form (``ema=None``) and, if ``variant`` is not None,
    the variant notebook 12 chose (``signal_variants`` at the profile's full run length: the same multiples of the
    released config). ``seeds_of(setting)`` gives each setting's seeds (Table 2's for a paper setting, Table 2b's
    fresh ones for a headroom setting, so their stratified and released runs are shared). One row per (setting, seed,
    form) with average test perplexity and wall time; ``runner.cached_only`` lists what has not finished in
    ``attrs["missing"]``."""
    rows, missing = [], []
    S = get_profile(profile).train.steps
    for st in settings:
        forms = {"released": {}, "cumulative": {"aioli": {"ema": None}}}
        if variant is not None:
            aioli, train = signal_variants(profile, len(setting_groups(st, profile)), S)[variant]
            forms[f"adequate signal ({variant})"] = {"aioli": aioli, "train": train}
        for seed in seeds_of(st):
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
    table = pd.DataFrame(rows)
    table.attrs["missing"] = missing
    return table


def adequate_signal_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, form): the paired difference to stratified in average test perplexity with its 95% t-interval,
    and the price relative to stratified's (mean over seeds of the per-seed ratio): in compute (``training_compute``,
    deterministic) and in wall time (as measured; runs of different sittings ran under different machine load)."""
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
                        "wall_time_vs_stratified": float((wall[form] / wall["stratified"])[both].mean())})
    return pd.DataFrame(out)


def lp_slots_old_vs_new(profile: str) -> pd.DataFrame:
    """Each seven-group Aioli run of the old slot rule in the result cache (its config hashes with
    ``lp_slots = "lowest_index"``) beside the run of the same config under the balanced rule, where it has finished.
    Nothing trains."""
    prof = get_profile(profile)
    rows = []
    for path in cache_entries(result_cache_dir()):
        res = read_cache_entry(path)["result"]
        cfg = RunConfig.from_dict(res["config"])
        if (cfg.method != "aioli" or len(cfg.data.groups) != 7 or res.get("branch") or "lp_slots" in cfg.method_config
                or cfg.model != prof.model or cfg.train.steps != prof.train.steps or cfg.data.corpus != prof.data.corpus):
            continue
        old = RunConfig.from_dict(res["config"])
        old.method_config = {**old.method_config, "lp_slots": "lowest_index"}
        old_res = cached_result(old, default_runs_dir(), resolve_auto=True)
        if old_res is None or old_res["run_id"] != res["run_id"]:
            continue  # this entry is a run of the balanced rule (its config hashes to a new id)
        new_res = cached_result(cfg, default_runs_dir(), resolve_auto=True)
        mc = cfg.method_config
        rows.append({"run": cfg.name, "seed": cfg.train.seed, "eta": mc.get("eta"), "static": mc.get("static", False),
                     "diagonal": mc.get("diagonal", False), "prior_steps": mc.get("prior_steps", 0),
                     "old_ppl": res["avg_test_perplexity"],
                     "new_ppl": None if new_res is None else new_res["avg_test_perplexity"],
                     "new_minus_old": None if new_res is None else
                     new_res["avg_test_perplexity"] - res["avg_test_perplexity"],
                     "old_run_id": res["run_id"][:20], "new_run_id": None if new_res is None else new_res["run_id"][:20],
                     **{f"old_{g}": v for g, v in res["test_perplexity"].items()},
                     **({} if new_res is None else {f"new_{g}": v for g, v in new_res["test_perplexity"].items()})})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(["run", "seed"]).reset_index(drop=True)
