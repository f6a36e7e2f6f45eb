"""Diagnoses of Aioli at our scale (notebook 08): how far it moves, whether its estimates carry signal, what its
LearnParams schedule costs, and how sensitive the recipe is to what the first steps see. What it costs to give
LearnParams a signal (notebook 12) is ``aioli_signal``.

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
- ``lp_slots_old_vs_new``: every seven-group Aioli run of the old LearnParams slot rule in the result cache beside
  the run of the same config under the balanced rule.

Every study's ``by_step`` table is the gap in mean validation loss (over groups, nats) to the matching stratified run
at every evaluation, averaged over seeds: *when* in the run a difference is paid.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import hparams
from .aioli_estimates import estimate_agreement, reach_summary
from .config import RunConfig
from .executors import cached_result
from .methods import finished_finals, run_method, setting_groups
from .profiles import get_profile, profile_config, profile_settings
from .report import run_metrics
from .run_cache import cache_entries, read_cache_entry, result_cache_dir
from .runs import default_runs_dir
from .stats import paired_ci

__all__ = ["Diagnosis", "default_late_step", "reach_and_signal", "lp_cost_study", "early_steps_study",
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
