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

Two methods beyond the paper's five (findings of this repository, not the paper's; their own papers' values beside
ours in ``ODM_PAPER`` and ``REGMIX_PAPER``):

* ODM keeps α, the update every step and the EXP3 exploration schedule ε_t = min(1/K, sqrt(ln K/(K·t))), a function
  of the step count alone (the algorithm's, not a tuned constant); its warm-up keeps the released scripts' share of
  the run: warmup_steps = round(0.02·S).
* RegMix keeps the simulation (100,000 mixtures), top-k (128), the Dirichlet scheme and LightGBM's learning rate and
  iterations; the proxies are sized to cost about what grid search's sweep costs (see ``regmix_config``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import split_group, validate_groups
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


GROUP_SEPARATOR = "+"
"""Joins the groups of a setting named by its groups (``latex@102400+pydocs``): the headroom settings."""


def group_label(groups) -> str:
    """A short name for a setting of embedded groups: ``latex@102.4k/pydocs``."""
    def short(g):
        base, cap = split_group(g)
        return base if cap is None else f"{base}@{cap / 1000:g}k"
    return "/".join(short(g) for g in groups)


def get_setting(key: str) -> Setting:
    """A paper setting by its key (``SETTINGS``), or a setting named by its embedded groups joined with ``+``
    (``latex@102400+pydocs``: a headroom setting of notebook 10; a capped group is ``name@tokens``). A setting named
    by its groups needs no registration, so worker processes resolve it from the key alone; it has no SlimPajama
    counterpart, so its paper groups are its own."""
    if key in SETTINGS:
        return SETTINGS[key]
    if isinstance(key, str) and GROUP_SEPARATOR in key:
        groups = validate_groups(key.split(GROUP_SEPARATOR))
        unknown = [g for g in groups if split_group(g)[0] not in ANALOGUE.values()]
        if unknown:
            raise ConfigError(f"setting {key!r} names group(s) {unknown} the embedded corpus does not have; its "
                              f"groups are {sorted(ANALOGUE.values())}")
        return Setting(key, group_label(groups), groups, groups)
    raise ConfigError(f"unknown setting {key!r}; choose one of {list(SETTINGS)}, or name embedded groups joined with "
                      f"{GROUP_SEPARATOR!r} (e.g. 'latex@102400+pydocs')")


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


# ODM (Albalak et al. 2023): the paper's Algorithm 1 and the released scripts (train_*_exp3*.sh: 100,000 steps,
# data_sampling_warmup_steps 2,000, data_sampling_update_frequency 1; smoothing factor 0.9).
ODM_PAPER = dict(alpha=0.9, warmup_steps=2000, update_every=1, steps=100_000)


def odm_config(m: int, steps: int, paper_scale: bool = False, **overrides) -> dict:
    """ODM's config for a run of ``steps``: α and the per-step update as released, the warm-up at the released share
    of the run (2,000 of 100,000 steps; the paper profile's 5,000 steps are Aioli's scale, not ODM's, so it is scaled
    there too). ``m`` and ``paper_scale`` are accepted for the same call shape as the other methods."""
    p = {"alpha": ODM_PAPER["alpha"], "update_every": ODM_PAPER["update_every"],
         "warmup_steps": round(ODM_PAPER["warmup_steps"] * steps / ODM_PAPER["steps"])}
    return {**p, **overrides}


# RegMix (Liu et al. 2024): 512 proxies of 1M parameters trained on 1B tokens each (1,000 steps of 512 x 2,048) for
# 1B-parameter targets on 25B tokens; LightGBM with learning rate 1e-2 and 1,000 iterations (default leaves and
# min_data_in_leaf 20); 100,000 simulated mixtures; the top 128 averaged.
REGMIX_PAPER = dict(n_proxies=512, proxy_params="1M", proxy_tokens=1e9, target_params="1B", target_tokens=25e9,
                    simulations=100_000, top_k=128, learning_rate=0.01, num_iterations=1000, min_data_in_leaf=20)
REGMIX_PROXY_PRESET = {"tiny": "tiny", "300k": "tiny", "1m": "300k", "4m": "1m", "20m": "4m", "pythia-160m": "20m"}
"""The proxies' model: the preset below the profile's own (the paper's proxies are 1,000x smaller than its targets;
our presets span less, so one step down is what keeps a proxy's cost a fraction of a final run's)."""


def regmix_min_data_in_leaf(n_proxies: int) -> int:
    """LightGBM's min_data_in_leaf for a fit to ``n_proxies`` proxies: the paper's share of them per leaf (20 of 512
    is 4%: N/16), at least 2."""
    return max(2, n_proxies // 16)


def regmix_config(m: int, steps: int, preset: str, warmup_steps: int, eval_cap: int = 0, n_proxies: int | None = None):
    """RegMix's plan for a setting of ``m`` groups and runs of ``steps`` with the model ``preset``.

    Proxies: N = 64 (``n_proxies`` overrides it; the smoke and quick profiles use fewer) of the next smaller preset,
    each S/8 steps long with the profile's warm-up scaled alike. 64 x S/8 = 8·S proxy steps of a model about a third
    the size, less than grid search's sweep (9-10 runs of S steps of the profile's model), so the extra cost is of the
    same order as the sweep baselines'. Each proxy is scored on at most 256 validation windows per group (``eval_cap``,
    the profile's test cap, if smaller). min_data_in_leaf keeps the paper's share of the proxies per leaf (20 of 512
    is 4%: N/16, at least 2)."""
    from .regmix import RegMixPlan  # lazy: hparams is imported everywhere, regmix only by RegMix

    n = int(n_proxies or 64)
    proxy_steps = max(2, round(steps / 8))
    return RegMixPlan(
        n_proxies=n, proxy_steps=proxy_steps, proxy_preset=REGMIX_PROXY_PRESET.get(preset, preset),
        proxy_warmup_steps=max(1, round(warmup_steps * proxy_steps / steps)),
        proxy_eval_sequences=min(256, eval_cap) if eval_cap else 256,
        lgbm={"learning_rate": REGMIX_PAPER["learning_rate"], "num_iterations": REGMIX_PAPER["num_iterations"],
              "min_data_in_leaf": regmix_min_data_in_leaf(n)})
