"""Does the headroom, and Aioli's gap to stratified, change with model size? (notebook 13, issue 31 part 4)

Every run keeps the profile's recipe (data, context, batch, learning-rate schedule, steps) and swaps only the model
size preset (``profiles.profile_config(..., preset=...)``; the preset is part of the run id). The learning rate is
not re-tuned per size: a trend here is the trend *under one recipe*.

- ``sweep_headroom``: per preset, setting and seed, a static sweep (``methods.sweep``, the mixtures grid search and
  DML use) and the gain of the best mixture over uniform in % of uniform's average **test** perplexity: observed
  (the best swept mixture against the swept uniform mixture) and by the static law fitted to the sweep
  (``decidability.headroom``, the best mixture anywhere on the simplex: the number notebook 04's decidability table
  reports). The law is monotone in each p_j, so for a capped group that over-fits when repeated the observed gain is
  the one to trust.
- ``aioli_gap``: per preset, setting and seed, stratified against Aioli in both forms (the released EMA form,
  p^t ∝ exp(η·colsum(EMA of Ā)), and the paper's Algorithm-1 cumulative form, ``ema=None``), and the paired
  differences Aioli − stratified of average test perplexity by seed with 95% t-intervals (``stats.paired_ci``) and
  the paired t-test's p-value (``stats.t_pvalue``, equal to ``scipy.stats.ttest_rel``).

Both take a runner; with ``cached_only`` they read the finished (preset, setting, seed) units and list the others in
``table.attrs["missing"]``. x-axes use ``model.preset_parameters`` (a closed form, tested against a built model).

``device="cuda"`` asks for the same runs trained on a GPU (``GPU_PRESETS``; ``scripts/gpu_scale.py`` trains them on a
lent GPU machine and brings their results into the run cache). A GPU run is a different run (its own run id, bf16
autocast), so every row carries the device its runs trained on, and 4m is measured on both: the bridge that shows
how much of a difference between the CPU and the GPU points is the device's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from . import hparams
from .decidability import headroom
from .executors import run_units
from .headroom import as_setting, comparison_seeds, default_headroom_groups, uniform_index
from .methods import setting_groups, sweep
from .model import PRESETS, preset_parameters
from .profiles import get_profile, profile_config
from .stats import paired_ci, t_pvalue
from .tokenizer import load_tokenizer

__all__ = ["AIOLI_FORMS", "GPU_PRESETS", "NEEDS_GPU", "default_presets", "default_seeds", "default_gpu_presets", "default_settings", "sweep_points",
           "scale_steps", "vocab_size", "parameters", "sweep_configs", "gap_configs", "sweep_headroom", "aioli_gap", "gap_summary", "size_trend", "planned_configs", "scale_table"]

AIOLI_FORMS: dict[str, dict] = {"aioli": {}, "aioli_cumulative": {"ema": None}}
"""Aioli's two forms, as overrides of ``hparams.aioli_config``: the released EMA form (the run named ``aioli`` is
Table 2's run at the profile's own preset) and the paper's Algorithm-1 cumulative form."""


def default_presets(profile: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(presets swept for the headroom, presets where stratified meets Aioli). A profile with ``small_studies``
    (smoke, quick): ``tiny`` and ``300k`` for both, a pipeline check. Otherwise the issue's: the headroom at ``1m``
    and ``4m`` (``20m`` if affordable: pass it), Aioli at ``1m`` (the profile's Table 2 size, mostly cached) and
    ``4m``."""
    if get_profile(profile).small_studies:
        return ("tiny", "300k"), ("tiny", "300k")
    return ("1m", "4m"), ("1m", "4m")


GPU_PRESETS: tuple[str, ...] = ("4m", "20m", "pythia-160m")
"""Presets of the GPU half of the study: 4m again (the bridge to the CPU points), then the sizes two CPU cores cannot
afford. ``pythia-160m`` is the paper's architecture with the profile's own tokenizer and recipe."""


NEEDS_GPU = "needs a GPU: scripts/gpu_scale.py"
"""How notebook 13 marks a missing unit of the GPU half in ``not_finished.json``. It never trains those (a lent GPU
does, a preset at a time), so F5 does not count them as unfinished: their absence leaves the CPU trend complete."""


def default_seeds(profile: str, setting: hparams.Setting) -> tuple[list[int], list[int]]:
    """(sweep seeds, comparison seeds) of ``setting`` in notebook 13 and ``scripts/gpu_scale.py``: the comparison
    seeds are ``headroom.comparison_seeds`` (the profile's on a paper setting, as Table 2; Table 2b's fresh test
    seeds on a headroom setting), and the one sweep per preset takes the first of them. The seeds that screened and
    selected a headroom setting would flatter its headroom at the selecting size only, and so bias the trend with
    size."""
    seeds = comparison_seeds(profile, setting)
    return seeds[:1], seeds


def _seeds_of(setting: hparams.Setting, profile: str, seeds, which: int) -> list[int]:
    """``seeds`` if given (one list for every setting), else ``default_seeds``' sweep (0) or comparison (1) seeds."""
    return list(seeds) if seeds is not None else default_seeds(profile, setting)[which]


def default_gpu_presets(profile: str) -> tuple[str, ...]:
    """Presets notebook 13 reads from GPU runs: ``GPU_PRESETS``, none under a profile with ``small_studies``."""
    return () if get_profile(profile).small_studies else GPU_PRESETS


def _on_device(cfg, device: str | None):
    """``cfg`` trained on ``device`` (None: the profile's own device setting, the CPU runs' ids unchanged)."""
    if device is None:
        return cfg
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device))
    cfg.validate()
    return cfg


def default_settings(profile: str, headroom_groups: Sequence[str] | None = None) -> list[hparams.Setting]:
    """One paper-analogue setting (A/SE) and one headroom setting (``headroom_groups``, default
    ``headroom.default_headroom_groups``: latex capped to repeat ten times at p = 0.5 in a full-length run, with
    pydocs)."""
    return [hparams.get_setting("arxiv_stackexchange"),
            as_setting(tuple(headroom_groups) if headroom_groups else default_headroom_groups(profile))]


def sweep_points(profile: str) -> int | None:
    """Mixtures per sweep: the paper's (None: 9 for two groups, p_1 in 0.1..0.9), or for a profile with
    ``small_studies`` (smoke, quick) 3 (p_1 in 0.25, 0.5, 0.75: the fewest that identify the law for two groups).
    Odd, so that the uniform mixture is one of them."""
    return 3 if get_profile(profile).small_studies else None


def scale_steps(profile: str) -> int | None:
    """Run length of the scale study: the profile's own (None), or half of it for a profile with ``small_studies``
    (a pipeline check of about 40 short runs)."""
    prof = get_profile(profile)
    return max(1, prof.train.steps // 2) if prof.small_studies else None


def vocab_size(profile: str) -> int:
    """Vocabulary size of the profile's tokenizer (the embedded 4k BPE, or Pythia's)."""
    return len(load_tokenizer(get_profile(profile).data.tokenizer))


def parameters(presets: Sequence[str], profile: str) -> dict[str, int]:
    """Preset -> parameter count of the model the profile would build with it."""
    V = vocab_size(profile)
    return {p: preset_parameters(p, V) for p in presets}


def _check_presets(presets: Sequence[str]) -> None:
    if isinstance(presets, str) or not all(p in PRESETS for p in presets):
        raise ValueError(f"presets must be a list of model presets from {list(PRESETS)}, got {presets!r}")


def sweep_configs(settings: Sequence[hparams.Setting], presets: Sequence[str], profile: str, seeds=None,
                  n_points: int | None = None, device: str | None = None) -> dict[tuple, list]:
    """(preset, setting key, seed) -> the sweep's run configs (on ``device``; None: the profile's). ``seeds``: one
    list for every setting, or None for each setting's own (``default_seeds``)."""
    _check_presets(presets)
    n = n_points or sweep_points(profile)
    return {(pr, st.key, seed): [_on_device(c, device) for c in sweep(profile, setting_groups(st, profile), seed,
                                                                      steps=scale_steps(profile), n=n, preset=pr)]
            for pr in presets for st in settings for seed in _seeds_of(st, profile, seeds, 0)}


def gap_configs(settings: Sequence[hparams.Setting], presets: Sequence[str], profile: str, seeds=None,
                device: str | None = None) -> dict[tuple, dict]:
    """(preset, setting key, seed) -> {"stratified": cfg, "aioli": cfg, "aioli_cumulative": cfg}, each under the
    profile's recipe and Aioli's scaled config (``hparams.aioli_config``, as Table 2), on ``device`` (None: the
    profile's). ``seeds``: one list for every setting, or None for each setting's own (``default_seeds``)."""
    _check_presets(presets)
    steps = scale_steps(profile)
    S = steps or get_profile(profile).train.steps
    length = {"steps": steps} if steps else {}
    plan = {}
    for pr in presets:
        for st in settings:
            groups = setting_groups(st, profile)
            for seed in _seeds_of(st, profile, seeds, 1):
                cfgs = {"stratified": profile_config(profile, groups, "stratified", seed, name="stratified", preset=pr,
                                                     **length)}
                for form, over in AIOLI_FORMS.items():
                    mc = hparams.aioli_config(len(groups), S, **over)
                    cfgs[form] = profile_config(profile, groups, "aioli", seed, mc, name=form.replace("_", "-"),
                                                preset=pr, **length)
                plan[(pr, st.key, seed)] = {k: _on_device(c, device) for k, c in cfgs.items()}
    return plan


def _label(settings, device: str | None = None) -> Callable[[tuple], str]:
    names = {st.key: st.label for st in settings}
    on = f" on {device}" if device else ""
    return lambda key: f"{key[0]}{on}/{names[key[1]]}/seed {key[2]}"


def sweep_headroom(settings: Sequence[hparams.Setting], presets: Sequence[str], profile: str, seeds, runner,
                   n_points: int | None = None, device: str | None = None) -> pd.DataFrame:
    """One row per (preset, setting, seed): the sweep's observed and law headroom over uniform, in % of uniform's
    average test perplexity (see the module docstring), with the model's parameter count and the device the runs
    trained on. ``seeds`` None: each setting's own (``default_seeds``)."""
    plan = sweep_configs(settings, presets, profile, seeds, n_points, device)
    found, left = run_units(runner, plan)
    missing = [_label(settings, device)(key) for key in left]
    n_params = parameters(presets, profile)
    by_key = {st.key: st for st in settings}
    S = scale_steps(profile) or get_profile(profile).train.steps
    rows = []
    for (pr, key, seed), results in found.items():
        st, cfgs = by_key[key], plan[(pr, key, seed)]
        groups = setting_groups(st, profile)
        P = np.array([c.method_config["proportions"] for c in cfgs])
        L = np.array([[r["test_loss"][g] for g in groups] for r in results])
        ppl = np.exp(L).mean(axis=1)  # average test perplexity of each swept mixture
        u = uniform_index(P)
        law = headroom(P, L, hparams.aioli_config(len(groups), S)["eta"], seed=seed)
        best = int(np.argmin(ppl))
        observed = 100 * (ppl[u] - ppl[best]) / ppl[u] if u is not None else float("nan")
        rows.append({"preset": pr, "parameters": n_params[pr], "device": results[0]["device"], "setting": key,
                     "label": st.label, "seed": seed, "mixtures": len(P),
                     "ppl_uniform": float(ppl[u]) if u is not None else float("nan"),
                     "ppl_best_observed": float(ppl[best]), "p_best_observed": [round(float(x), 4) for x in P[best]],
                     "observed_gain_pct": float(observed),
                     "law_gain_pct": 100 * law["headroom_anywhere"] / law["ppl_uniform"],
                     "law_p_best": law["p_best"], "law_r2_min": law["fit_r2_min"]})
    table = pd.DataFrame(rows)
    table.attrs["missing"] = missing
    return table


def aioli_gap(settings: Sequence[hparams.Setting], presets: Sequence[str], profile: str, seeds,
              runner, device: str | None = None) -> pd.DataFrame:
    """One row per (preset, setting, seed): average test perplexity of stratified and of each Aioli form, and each
    form's difference to stratified, in perplexity and in % of stratified's; with the device the runs trained on.
    ``seeds`` None: each setting's own (``default_seeds``)."""
    plan = gap_configs(settings, presets, profile, seeds, device)
    names = list(next(iter(plan.values()))) if plan else []
    found, left = run_units(runner, {k: list(v.values()) for k, v in plan.items()})
    missing = [_label(settings, device)(key) for key in left]
    n_params = parameters(presets, profile)
    by_key = {st.key: st for st in settings}
    rows = []
    for (pr, key, seed), results in found.items():
        ppl = {name: r["avg_test_perplexity"] for name, r in zip(names, results)}
        row = {"preset": pr, "parameters": n_params[pr], "device": results[0]["device"], "setting": key,
               "label": by_key[key].label, "seed": seed, **ppl}
        for form in AIOLI_FORMS:
            row[f"{form}_minus_stratified"] = ppl[form] - ppl["stratified"]
            row[f"{form}_minus_stratified_pct"] = 100 * (ppl[form] - ppl["stratified"]) / ppl["stratified"]
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["missing"] = missing
    return table


def gap_summary(runs: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (preset, device, setting, Aioli form): the paired differences Aioli − stratified over seeds, their mean
    with its t-interval (perplexity and % of stratified, each per seed then averaged) and the paired t-test's
    p-value."""
    rows = []
    if runs.empty:
        return pd.DataFrame(rows)
    for (pr, device, key), g in runs.groupby(["preset", "device", "setting"], sort=False):
        for form in AIOLI_FORMS:
            d, pct = g[f"{form}_minus_stratified"], g[f"{form}_minus_stratified_pct"]
            mean, lo, hi = paired_ci(d, level)
            mean_pct, lo_pct, hi_pct = paired_ci(pct, level)
            rows.append({"preset": pr, "parameters": int(g.parameters.iloc[0]), "device": device, "setting": key,
                         "label": g.label.iloc[0], "form": form, "seeds": len(g), "mean": mean, "ci_low": lo,
                         "ci_high": hi, "mean_pct": mean_pct, "ci_low_pct": lo_pct, "ci_high_pct": hi_pct,
                         "p": t_pvalue(d)})
    return pd.DataFrame(rows)


def size_trend(runs: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """How Aioli's gap to stratified changes with model size: per (device, setting, Aioli form), between the smallest
    and the largest preset with runs of that setting, the per-seed change of the gap, (Aioli - stratified)/stratified
    in % at the larger preset minus the same at the smaller, paired by seed (the presets share their seeds), with its
    mean, t-interval and the paired t-test's p-value. Below 0: Aioli gains on stratified as the model grows. ``runs``:
    ``aioli_gap``'s per-seed rows."""
    rows = []
    if runs.empty:
        return pd.DataFrame(rows)
    for (device, key), g in runs.groupby(["device", "setting"], sort=False):
        sizes = g.drop_duplicates("preset").sort_values("parameters")
        if len(sizes) < 2:
            continue
        small, large = sizes.iloc[0], sizes.iloc[-1]
        for form in AIOLI_FORMS:
            gap = g.pivot_table(index="seed", columns="preset", values=f"{form}_minus_stratified_pct")
            d = (gap[large.preset] - gap[small.preset]).dropna()
            mean, lo, hi = paired_ci(d, level)
            rows.append({"device": device, "setting": key, "label": g.label.iloc[0], "form": form,
                         "small": small.preset, "large": large.preset, "parameters_small": int(small.parameters),
                         "parameters_large": int(large.parameters), "seeds": len(d), "change_pct": mean,
                         "ci_low": lo, "ci_high": hi, "p": t_pvalue(d)})
    return pd.DataFrame(rows)


def planned_configs(settings, sweep_presets, gap_presets, profile: str, sweep_seeds=None, gap_seeds=None,
                    device: str | None = None) -> list:
    """Every run config the scale study would train (for ``usage.planned_cost``, or ``scripts/gpu_scale.py`` with
    ``device="cuda"``); nothing trains. Seeds None: each setting's own (``default_seeds``)."""
    return ([c for cfgs in sweep_configs(settings, sweep_presets, profile, sweep_seeds, device=device).values()
             for c in cfgs]
            + [c for cfgs in gap_configs(settings, gap_presets, profile, gap_seeds, device).values()
               for c in cfgs.values()])


def scale_table(headrooms: pd.DataFrame, gaps: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Notebook 13's table, one row per (preset, device, setting, measure): the headroom over the sweep seeds (observed
    and by the law, % of uniform's average test perplexity; mean with its t-interval across seeds, none for one seed)
    and each Aioli form's paired difference to stratified (``gap_summary``, in perplexity and in %)."""
    rows = []
    if len(headrooms):
        for (pr, device, key), g in headrooms.groupby(["preset", "device", "setting"], sort=False):
            head = {"preset": pr, "parameters": int(g.parameters.iloc[0]), "device": device, "setting": key,
                    "label": g.label.iloc[0]}
            for measure in ("observed_gain_pct", "law_gain_pct"):
                mean, lo, hi = paired_ci(g[measure].dropna(), level)
                rows.append({**head, "measure": f"headroom_{measure}", "seeds": int(g[measure].notna().sum()),
                             "mean": mean, "ci_low": lo, "ci_high": hi, "p": float("nan")})
    if len(gaps):
        for _, r in gaps.iterrows():
            head = {"preset": r.preset, "parameters": int(r.parameters), "device": r.device, "setting": r.setting,
                    "label": r.label}
            rows.append({**head, "measure": f"{r.form}_minus_stratified", "seeds": int(r.seeds), "mean": r["mean"],
                         "ci_low": r.ci_low, "ci_high": r.ci_high, "p": r.p})
            rows.append({**head, "measure": f"{r.form}_minus_stratified_pct", "seeds": int(r.seeds),
                         "mean": r.mean_pct, "ci_low": r.ci_low_pct, "ci_high": r.ci_high_pct, "p": r.p})
    return pd.DataFrame(rows)
