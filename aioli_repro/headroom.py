"""Where does mixing matter? Screening combinations of groups for the gain of the best static mixture over uniform.

At our scale the paper-analogue settings have almost none: the static law puts the best mixture 0.08-1.7% of
average test perplexity above uniform (``decidability``), below what a few seeds detect. A bench that can tell
mixing methods apart needs settings with headroom, found on *validation* losses so that the test results on fresh
seeds are not flattered by the search.

``screen`` trains a short sweep of static mixtures per candidate (the same sweep grid search and DML use, with
fewer points and optionally fewer steps) and reports two estimates of the headroom, relative to the uniform mixture's
average validation perplexity:

- ``observed_gain_pct``: the best swept mixture against uniform, both as trained (model-free; what grid search sees);
- ``law_gain_pct``: the best mixture anywhere under the static log-linear law fitted to the sweep. The law is
  monotone in each p_j, so it cannot represent a group that over-fits when it is repeated (a capped group,
  ``name@tokens``); there the observed gain is the one to trust, and the two disagreeing is itself a finding.

A candidate is a tuple of group names (``pair_candidates`` builds all pairs, capped or not); ``as_setting`` turns a
chosen one into an ``hparams.Setting`` every method can run.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from . import hparams
from .config import CAP_SEPARATOR, split_group, validate_groups
from .decidability import headroom
from .executors import run_units
from .methods import sweep
from .profiles import get_profile
from .report import results_dir
from .stats import paired_ci

__all__ = ["EMBEDDED_GROUPS", "as_setting", "cap_for_epochs", "choose_settings", "comparison_seeds",
           "confirmation_candidates", "control_candidate", "default_candidates", "default_headroom_groups",
           "default_screen_steps", "pair_candidates", "screen", "screen_summary", "screen_vs_full_length", "stage_seeds",
           "uniform_index", "SETTINGS_FILE"]

SETTINGS_FILE = "10_headroom_settings.csv"
"""Notebook 10's chosen settings (``choose_settings``) in ``results/<profile>/``: Table 2b and notebooks 12-13 read it."""

EMBEDDED_GROUPS = tuple(hparams.ANALOGUE.values())
"""The seven groups of the embedded corpus, in the order of their SlimPajama counterparts."""


def pair_candidates(groups: Sequence[str] = EMBEDDED_GROUPS, caps: Iterable[int] = ()) -> list[tuple[str, ...]]:
    """Every pair of ``groups``, and for each cap every pair with one of its two groups capped at that many training
    tokens (both orders, so each group is capped against each other group)."""
    pairs = list(itertools.combinations(groups, 2))
    out = [tuple(p) for p in pairs]
    for cap in caps:
        for a, b in pairs:
            out += [(f"{a}{CAP_SEPARATOR}{int(cap)}", b), (a, f"{b}{CAP_SEPARATOR}{int(cap)}")]
    return out


def cap_for_epochs(profile: str, epochs: float, steps: int | None = None, share: float = 0.5) -> int:
    """The training-token cap at which a group trained at ``share`` of a run of ``steps`` (default: the profile's)
    repeats its tokens ``epochs`` times. Screens of shortened runs scale the cap with the run, so that the capped
    group is repeated as often as in a full-length run."""
    prof = get_profile(profile)
    tokens = (steps or prof.train.steps) * prof.train.batch_size * prof.data.context_length
    return max(prof.data.context_length + 1, int(round(share * tokens / epochs)))


def default_screen_steps(profile: str) -> int:
    """Run length of notebook 10's screen: a quarter of the profile's run, or the whole run for a profile with
    ``small_studies``."""
    prof = get_profile(profile)
    return prof.train.steps if prof.small_studies else max(1, prof.train.steps // 4)


def default_candidates(profile: str, epochs: Sequence[float] = (10.0,), steps: int | None = None
                       ) -> list[tuple[str, ...]]:
    """What notebook 10 screens: a profile with ``small_studies`` (smoke, quick) two pairs, one of them capped; else
    all 21 pairs of the embedded groups, plain and with either group capped to repeat ``epochs`` times at p = 0.5."""
    caps = [cap_for_epochs(profile, e, steps) for e in epochs]
    if get_profile(profile).small_studies:
        return [("latex", "pydocs"), (f"latex{CAP_SEPARATOR}{caps[0]}", "pydocs")]
    return pair_candidates(EMBEDDED_GROUPS, caps)


def default_headroom_groups(profile: str, epochs: float = 10.0) -> tuple[str, ...]:
    """The headroom setting notebooks 12 and 13 use by default: the first setting notebook 10 selected under
    ``profile`` (``10_headroom_settings.csv``, confirmed on full-length sweeps), or, until it has, latex capped so
    that at p = 0.5 a full-length run repeats it ``epochs`` times (``latex@102400`` under full), with pydocs."""
    path = results_dir(profile) / SETTINGS_FILE
    if path.exists():
        chosen = pd.read_csv(path)
        chosen = chosen[chosen.selected.astype(bool)]
        if len(chosen):
            return tuple(chosen.setting.iloc[0].split(hparams.GROUP_SEPARATOR))
    return (f"latex{CAP_SEPARATOR}{cap_for_epochs(profile, epochs)}", "pydocs")


def label(groups: Sequence[str]) -> str:
    """A short name for a candidate: ``books/pydocs@300k``."""
    return hparams.group_label(groups)


def as_setting(groups: Sequence[str]) -> hparams.Setting:
    """A setting on the embedded corpus's ``groups`` that ``methods.run_method`` and the tables accept; its key is the
    groups joined with ``+``, which ``hparams.get_setting`` resolves in any process without registration."""
    return hparams.get_setting(hparams.GROUP_SEPARATOR.join(validate_groups(groups)))


def uniform_index(P: np.ndarray) -> int | None:
    hit = np.flatnonzero(np.all(np.isclose(P, 1.0 / P.shape[1], atol=1e-6), axis=1))
    return int(hit[0]) if hit.size else None


def screen(candidates: Sequence[Sequence[str]], profile: str, seeds: Sequence[int], runner, n_points: int = 5,
           steps: int | None = None) -> pd.DataFrame:
    """One row per (candidate, seed): a static sweep of ``n_points`` mixtures (for pairs, p_1 on a grid that holds
    0.5 when ``n_points`` is odd) trained under ``profile`` (``steps`` shortens the runs), and the headroom of the
    best mixture over uniform on average *validation* perplexity, observed and by the static law. All runs go to the
    runner at once, so they train in parallel and are cached like every other run. A runner with ``cached_only``
    reads the finished (candidate, seed) sweeps and lists the others in ``table.attrs["missing"]``.

    Both stages (the screen and the confirmation) read validation losses only, so their runs end with a validation
    evaluation alone (``final_eval="val"``): the test evaluation of the whole split took about 40% of a 250-step
    screen run."""
    prof = get_profile(profile)
    S = steps or prof.train.steps
    plan = {(tuple(c), seed): sweep(profile, tuple(c), seed, steps=steps, n=n_points, final_eval="val")
            for c in candidates for seed in seeds}
    results, left = run_units(runner, plan)
    missing = [f"{label(groups)}/seed {seed}" for groups, seed in left]
    found = [(groups, seed, plan[(groups, seed)], res) for (groups, seed), res in results.items()]
    rows = []
    for groups, seed, cfgs, res in found:
        P = np.array([c.method_config["proportions"] for c in cfgs])
        L = np.array([[r["val_loss"][g] for g in groups] for r in res])
        ppl = np.exp(L).mean(axis=1)  # average validation perplexity of each swept mixture
        u = uniform_index(P)
        m = len(groups)
        law = headroom(P, L, hparams.aioli_config(m, S)["eta"], seed=seed)
        uniform = float(ppl[u]) if u is not None else law["ppl_uniform"]
        best = int(np.argmin(ppl))
        rows.append({"candidate": label(groups), "groups": "+".join(groups), "seed": seed, "m": m,
                     "mixtures": len(P), "steps": S, "ppl_uniform": uniform, "ppl_best_observed": float(ppl[best]),
                     "p_best_observed": [round(float(x), 4) for x in P[best]],
                     "observed_gain_pct": 100 * (uniform - float(ppl[best])) / uniform,
                     "law_gain_pct": 100 * law["headroom_anywhere"] / law["ppl_uniform"],
                     "mixtures_p": [[round(float(x), 4) for x in q] for q in P],
                     "ppl_mixtures": [round(float(x), 4) for x in ppl],
                     "law_p_best": law["p_best"], "law_r2_min": law["fit_r2_min"]})
    table = pd.DataFrame(rows)
    table.attrs["missing"] = missing
    return table


def screen_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per candidate, means over seeds, the largest observed gain first."""
    agg = table.groupby(["candidate", "groups", "m", "steps"], sort=False).agg(
        seeds=("seed", "nunique"), ppl_uniform=("ppl_uniform", "mean"),
        observed_gain_pct=("observed_gain_pct", "mean"), law_gain_pct=("law_gain_pct", "mean"),
        law_r2_min=("law_r2_min", "min")).reset_index()
    return agg.sort_values("observed_gain_pct", ascending=False, kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ confirmation
def stage_seeds(profile: str) -> dict[str, list[int]]:
    """Disjoint seeds for the three stages, so that no stage's result is flattered by the selection before it: the
    screen uses the profile's first seed; the confirmation (full-recipe sweeps, selection on validation losses) the
    next as many seeds as the profile has (at least 2, for an interval); Table 2b (test perplexity) as many fresh
    ones after those. ``full``: screen [0], confirmation [1, 2, 3], Table 2b [4, 5, 6]."""
    seeds = get_profile(profile).seeds
    first, n = int(seeds[0]), max(2, len(seeds))
    return {"screen": [first], "confirm": list(range(first + 1, first + 1 + n)),
            "test": list(range(first + 1 + n, first + 1 + 2 * n))}


def comparison_seeds(profile: str, setting: hparams.Setting) -> list[int]:
    """The seeds a method comparison on ``setting`` is reported on, in notebooks 12 and 13 alike. A paper setting:
    the profile's seeds, or [0, 1] under a one-seed profile (a paired interval needs two). A headroom setting:
    Table 2b's fresh test seeds (``stage_seeds``), never those that screened and selected it, which would flatter
    it; with them its stratified and released Aioli runs are Table 2b's, not a second set."""
    if setting.key in hparams.SETTINGS:
        seeds = [int(s) for s in get_profile(profile).seeds]
        return seeds if len(seeds) >= 2 else [0, 1]
    return stage_seeds(profile)["test"]


def full_length(groups: Sequence[str], factor: float) -> tuple[str, ...]:
    """A screened candidate at the run length ``factor`` times the screen's: each cap scaled by ``factor``, so the
    capped group repeats as many epochs in the longer run (``cap_for_epochs``)."""
    out = []
    for g in groups:
        base, cap = split_group(g)
        out.append(g if cap is None else f"{base}{CAP_SEPARATOR}{int(round(cap * factor))}")
    return tuple(out)


def _by_observed_gain(summary: pd.DataFrame) -> pd.DataFrame:
    """The screen's candidates ranked as the screen ranks them: largest observed gain first, ties in order."""
    return summary.sort_values("observed_gain_pct", ascending=False, kind="stable").reset_index(drop=True)


def _at_full_length(groups: str, profile: str, screen_steps: int) -> tuple[str, ...]:
    """A screened candidate (groups joined with ``+``) at the profile's full run length (``full_length``)."""
    return full_length(groups.split(hparams.GROUP_SEPARATOR), get_profile(profile).train.steps / screen_steps)


def confirmation_candidates(summary: pd.DataFrame, profile: str, screen_steps: int, k: int = 3
                            ) -> list[tuple[str, ...]]:
    """The ``k`` candidates with the largest positive observed gain in the screen (``screen_summary``: means over
    its seeds, validation losses), at the profile's full run length (caps rescaled, ``full_length``)."""
    top = _by_observed_gain(summary[summary.observed_gain_pct > 0])
    return [_at_full_length(g, profile, screen_steps) for g in top.groups.head(k)]


def control_candidate(summary: pd.DataFrame, profile: str, screen_steps: int, k: int = 3
                      ) -> tuple[str, ...] | None:
    """A negative control for the screen's ranking: the candidate at the screen's median observed gain (the
    (n//2 + 1)-th largest of n, so the second of two), at full length like ``confirmation_candidates``. Confirmed
    beside the top ``k`` on the same seeds, it shows whether the screen discriminates: if it gains as much at full
    length as the candidates the screen put first, the screen's ranking did not carry over. None when the median
    falls among the top ``k`` (too few candidates for a control)."""
    median = len(summary) // 2
    if median < k:
        return None
    return _at_full_length(_by_observed_gain(summary).groups.iloc[median], profile, screen_steps)


def choose_settings(confirmation: pd.DataFrame, k: int = 3, aim_pct: float = 5.0, level: float = 0.95,
                    controls: Iterable[str] = ()) -> pd.DataFrame:
    """From full-recipe sweeps on the confirmation seeds (``screen(..., steps=None)``), per candidate: the mixture
    p* with the lowest mean validation perplexity over those seeds, and its paired gain over uniform, 100·(uniform -
    p*)/uniform per seed, with a t-interval. A candidate is ``confirmed`` when the interval excludes 0 (the
    choice of p* on these same seeds makes the interval optimistic; Table 2b's fresh seeds are the unbiased test);
    the ``k`` confirmed candidates with the largest gain are ``selected``; ``meets_aim``: gain >= ``aim_pct``.
    ``controls`` (groups joined with ``+``, as in ``confirmation.groups``) are the screen's negative controls
    (``control_candidate``): reported with ``role`` "control" and never selected."""
    controls = set(controls)
    rows = []
    for groups, g in confirmation.groupby("groups", sort=False):
        P = np.array(g.mixtures_p.iloc[0], dtype=float)
        ppl = np.array(g.ppl_mixtures.tolist(), dtype=float)  # seeds x mixtures
        u = uniform_index(P)
        if u is None:
            raise ValueError(f"the sweep of {groups} has no uniform mixture to measure the gain from")
        best = int(np.argmin(ppl.mean(axis=0)))
        gain = 100 * (ppl[:, u] - ppl[:, best]) / ppl[:, u]
        mean, low, high = paired_ci(gain, level)
        rows.append({"setting": groups, "label": label(groups.split(hparams.GROUP_SEPARATOR)),
                     "role": "control" if groups in controls else "screen's best", "seeds": len(g),
                     "p_star": json.dumps([round(float(x), 4) for x in P[best]]),
                     "val_ppl_uniform": float(ppl[:, u].mean()), "val_ppl_p_star": float(ppl[:, best].mean()),
                     "val_gain_pct": mean, "ci_low": low, "ci_high": high,
                     "confirmed": bool(low > 0), "meets_aim": bool(mean >= aim_pct)})
    out = pd.DataFrame(rows).sort_values("val_gain_pct", ascending=False, kind="stable").reset_index(drop=True)
    out["selected"] = False
    out.loc[out.index[out.confirmed & (out.role != "control")][:k], "selected"] = True
    return out


def screen_vs_full_length(summary: pd.DataFrame, confirmation: pd.DataFrame, chosen: pd.DataFrame, profile: str,
                          screen_steps: int) -> pd.DataFrame:
    """How well the screen predicted the full-recipe headroom, per confirmed candidate (top and control): its rank
    and gains in the screen (observed and by the law, ``screen_summary``) beside its gain at full length on the
    confirmation seeds, at the common p* with its interval (``choose_settings``) and by the law fitted to each
    seed's full-length sweep (mean over seeds). The screen ranks by observed gain; the control row says whether
    a candidate it ranked in the middle does worse at full length."""
    ranked = _by_observed_gain(summary)
    at_full = {hparams.GROUP_SEPARATOR.join(_at_full_length(g, profile, screen_steps)): i
               for i, g in enumerate(ranked.groups)}
    law_full = confirmation.groupby("groups", sort=False).law_gain_pct.mean()
    rows = []
    for _, c in chosen.iterrows():
        i = at_full.get(c.setting)
        if i is None:
            raise ValueError(f"{c.setting} is not a screened candidate at full length (screen steps {screen_steps})")
        s = ranked.iloc[i]
        rows.append({"setting": c.setting, "label": c.label, "role": c.role, "screen_rank": i + 1,
                     "screen_candidates": len(ranked), "screen_observed_gain_pct": s.observed_gain_pct,
                     "screen_law_gain_pct": s.law_gain_pct, "full_gain_pct": c.val_gain_pct,
                     "full_ci_low": c.ci_low, "full_ci_high": c.ci_high,
                     "full_law_gain_pct": float(law_full[c.setting]), "confirmed": c.confirmed})
    return pd.DataFrame(rows).sort_values("screen_rank", kind="stable").reset_index(drop=True)
