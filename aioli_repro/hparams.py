"""The six data settings and each method's hyperparameters, at the paper's scale and scaled to a step budget.

Paper values come from the released scripts (A/SE, A/B/SE, all seven); the three settings without released
scripts (GH/C4, B/SE, CC/GH/W) reuse the released configuration with the same number of groups.

Scaling to a budget of S steps (CPU profiles), written down once here:

* Aioli keeps the paper's k, h, η, γ, and scores LearnParams on ``lp_eval_budget`` validation sequences per group
  (the most that keeps its evaluations near 10% of the training time). S_lp = max(1, round(S_lp_paper · S / S_paper)). The round length keeps the
  paper's number of rounds, R = round(R_paper · S / S_paper), unless the 1-step floor of S_lp would then make
  LearnParams a larger share of each round than in the paper; then R grows to ceil(m·k·S_lp / δ_paper), which
  keeps the LearnParams share δ at the paper's value. A run has at most 20 rounds (the paper's count for 2 and 3
  groups; its 7-group config has 200 rounds of which 70% is LearnParams, which at 1,000 steps would leave 6 steps
  per round of mixture training and make LearnParams' evaluations dominate the cost). R never exceeds S.
* Skill-it keeps η and the window, and its rounds keep their share of the run: update_steps = round(U_paper·S/S_paper).
* DoReMi's log-weights move by μ·excess per step, so μ·S is kept: μ = μ_paper · S_paper / S.
* DoGE's log-weights move by score/μ per step with score ∝ lr, so (lr/μ)·S is kept: μ = μ_paper · (lr / lr_paper) ·
  (S / S_paper). (Until 2026-11-30 the last factor was inverted, S_paper / S, which made μ 25x too large for 2 and
  3 groups and 1,600x for 7 at 1,000 steps, and DoGE's mixtures stayed at uniform.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Setting:
    key: str
    label: str
    """The paper's name of the setting."""
    paper_groups: tuple[str, ...]
    """SlimPajama groups (paper profile)."""
    groups: tuple[str, ...]
    """Embedded-corpus analogue groups (CPU profiles), in the same order."""


ANALOGUE = {"arxiv": "latex", "book": "books", "c4": "kerneldocs", "commoncrawl": "webdocs", "github": "code",
            "stackexchange": "pydocs", "wikipedia": "dictionary"}


def _setting(key: str, label: str, paper_groups: tuple[str, ...]) -> Setting:
    return Setting(key, label, paper_groups, tuple(ANALOGUE[g] for g in paper_groups))


SETTINGS: dict[str, Setting] = {s.key: s for s in [
    _setting("arxiv_stackexchange", "A/SE", ("arxiv", "stackexchange")),
    _setting("github_c4", "GH/C4", ("github", "c4")),
    _setting("book_stackexchange", "B/SE", ("book", "stackexchange")),
    _setting("arxiv_book_stackexchange", "A/B/SE", ("arxiv", "book", "stackexchange")),
    _setting("commoncrawl_github_wikipedia", "CC/GH/W", ("commoncrawl", "github", "wikipedia")),
    _setting("slimpajama", "SlimPajama", ("arxiv", "book", "c4", "commoncrawl", "github", "stackexchange",
                                          "wikipedia")),
]}


def get_setting(key: str) -> Setting:
    if key not in SETTINGS:
        raise ConfigError(f"unknown setting {key!r}; choose one of {list(SETTINGS)}")
    return SETTINGS[key]


# Released configurations, by number of groups. S_paper: 5,000 steps for m = 2, 3 and 40,000 for m = 7.
PAPER_STEPS = {2: 5000, 3: 5000, 7: 40000}
PAPER_LR = 5e-4
AIOLI_PAPER = {
    2: dict(eta=0.2, lp_rounds=4, lp_steps=4, one_hot_factor=0.625, ema=0.1, update_steps=250),
    3: dict(eta=0.1, lp_rounds=4, lp_steps=6, one_hot_factor=0.5, ema=0.5, update_steps=250),
    7: dict(eta=1.0, lp_rounds=2, lp_steps=10, one_hot_factor=0.75, ema=0.1, update_steps=200),
}
SKILLIT_PAPER = {2: dict(eta=0.2, window=3, update_steps=500), 3: dict(eta=0.2, window=3, update_steps=500),
                 7: dict(eta=0.2, window=3, update_steps=400)}
DOREMI_PAPER = {m: dict(mu=0.01, smoothing=1e-3) for m in (2, 3, 7)}
DOGE_PAPER = {2: dict(mu=0.01, val_batch_size=2), 3: dict(mu=0.01, val_batch_size=4),
              7: dict(mu=0.1, val_batch_size=4)}


def _paper_key(m: int) -> int:
    if m in PAPER_STEPS:
        return m
    return 3 if m <= 5 else 7  # no released config: borrow the nearest one


def aioli_config(m: int, steps: int, paper_scale: bool = False, batch_size: int = 8, **overrides) -> dict:
    p = dict(AIOLI_PAPER[_paper_key(m)])
    if not paper_scale:
        s_paper = PAPER_STEPS[_paper_key(m)]
        delta = m * p["lp_rounds"] * p["lp_steps"] / p["update_steps"]
        p["lp_steps"] = max(1, round(p["lp_steps"] * steps / s_paper))
        lp_total = m * p["lp_rounds"] * p["lp_steps"]
        rounds_kept = round(p["update_steps"] * steps / s_paper)
        at_most_20_rounds = math.ceil(steps / 20)
        p["update_steps"] = min(steps, max(rounds_kept, math.ceil(lp_total / delta - 1e-9), at_most_20_rounds))
        p["lp_eval_sequences"] = lp_eval_budget(m, p["lp_rounds"], p["update_steps"], batch_size)
    return {**p, **overrides}


def lp_eval_budget(m: int, k: int, round_steps: int, batch_size: int, overhead: float = 0.10,
                   eval_speedup: float = 3.0) -> int:
    """Validation sequences per group for LearnParams evaluations so that they cost about ``overhead`` of the
    round's training: a round trains round_steps·batch_size sequences and evaluates (m·k + 1)·m·n sequences, and a
    forward-only pass costs about 1/``eval_speedup`` of a training step per sequence (measured 3.1 on 2 cores)."""
    return max(1, math.floor(overhead * eval_speedup * round_steps * batch_size / ((m * k + 1) * m)))


def skillit_config(m: int, steps: int, paper_scale: bool = False, **overrides) -> dict:
    p = dict(SKILLIT_PAPER[_paper_key(m)])
    if not paper_scale:
        p["update_steps"] = max(1, round(p["update_steps"] * steps / PAPER_STEPS[_paper_key(m)]))
    return {**p, **overrides}


def doremi_config(m: int, steps: int, paper_scale: bool = False, **overrides) -> dict:
    p = dict(DOREMI_PAPER[_paper_key(m)])
    if not paper_scale:
        p["mu"] = p["mu"] * PAPER_STEPS[_paper_key(m)] / steps
    return {**p, **overrides}


def doge_config(m: int, steps: int, lr: float, paper_scale: bool = False, **overrides) -> dict:
    p = dict(DOGE_PAPER[_paper_key(m)])
    if not paper_scale:
        p["mu"] = p["mu"] * (lr / PAPER_LR) * steps / PAPER_STEPS[_paper_key(m)]
    return {**p, **overrides}
