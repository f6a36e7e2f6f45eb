"""Named profiles: one training recipe and study size per use, from CI smoke tests to the paper's GPU scale.

A profile fixes everything but the groups, the method and the seed, so a notebook asks for
``profile_config("quick", groups, method, seed)`` and every run of a study shares one recipe.

CPU recipes: a 1M-parameter GPT-NeoX with our 4k BPE at context 256 and batches of 8 sequences (2,048 tokens per
step) trains at about 10-13k tokens/s on 2 cores. The learning rate (3e-3, 30 warm-up steps, cosine to a tenth) is
the one measured to give a seed-to-seed spread of stratified perplexity under 1% at 1,000 steps.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Integral

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .errors import ConfigError
from .hparams import SETTINGS, get_setting


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    seeds: tuple[int, ...] = (0,)
    """Seeds of every study run under this profile (paired across methods)."""
    jobs: int = 1
    """Training runs executed at once by ``run_all.sh`` unless ``--jobs`` says otherwise. On the 2-core CPU two
    one-thread runs at once train 21-57% more tokens per second than one two-thread run (``results/bench``)."""
    settings: tuple[str, ...] | None = None
    """Settings the comparison notebooks use by default (keys of ``hparams.SETTINGS``); None = all six."""
    small_studies: bool = False
    """The law and fidelity studies (notebooks 01-03) use one 2-group and one 3-group setting (GH/C4 alone for the
    ordering study) instead of the paper's five 2- and 3-group settings."""
    notes: dict = field(default_factory=dict)


_CPU_TRAIN = dict(batch_size=8, micro_batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=30, weight_decay=0.01,
                  beta1=0.9, beta2=0.95, eval_sequences=16, eval_batch_size=64, device="auto")

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke", "CI: every notebook end to end in a few minutes; numbers are meaningless.",
        DataConfig(context_length=64), ModelConfig("300k"),
        TrainConfig(steps=40, eval_every=20, checkpoint_every=0, test_max_sequences=16,
                    **{**_CPU_TRAIN, "warmup_steps": 5, "eval_sequences": 8}),
        settings=("arxiv_stackexchange", "arxiv_book_stackexchange"), small_studies=True,
        notes={"sweep_points": 4, "regmix_proxies": 16},
    ),
    "quick": Profile(
        "quick", "Pipeline demonstration: every table and figure from one seed (a 300k-parameter model, 100 steps of "
                 "8 x 128 tokens, three settings: A/SE, A/B/SE and SlimPajama; minutes to re-render from the committed "
                 "run cache, see the README for the cost from scratch); not evidence for or against the paper.",
        DataConfig(context_length=128), ModelConfig("300k"),
        # Sized for about 20 minutes from scratch on 2 cores (the target): 100 steps and a 64-sequence test
        # sample per group halve the training and evaluation of the earlier 200-step, 256-sequence recipe, and three
        # settings (one per group count) instead of six halve the number of runs. The chunked LM-head loss trains
        # the 300k preset (whose head is most of the model) 37% faster (docs/performance.md).
        TrainConfig(steps=100, eval_every=50, checkpoint_every=50, test_max_sequences=64, fused_loss=True,
                    **{**_CPU_TRAIN, "warmup_steps": 10}),
        jobs=2, settings=("arxiv_stackexchange", "arxiv_book_stackexchange", "slimpajama"), small_studies=True,
        notes={"sweep_points": 5, "regmix_proxies": 32},
    ),
    "full": Profile(
        "full", "The statistically powered CPU reproduction: 1,000-step runs, several seeds, paired by seed.",
        DataConfig(context_length=256), ModelConfig("1m"),
        TrainConfig(steps=1000, eval_every=100, checkpoint_every=100, test_max_sequences=0, **_CPU_TRAIN),
        seeds=(0, 1, 2), jobs=2,
    ),
    "paper": Profile(
        "paper", "The paper's setting for GPU users: Pythia-160M on SlimPajama-6B, context 2048, batch 8.",
        DataConfig(corpus="slimpajama", tokenizer="pythia", context_length=2048,
                   groups=("arxiv", "stackexchange")),
        ModelConfig("pythia-160m"),
        TrainConfig(steps=5000, batch_size=8, micro_batch_size=8, lr=5e-4, min_lr=1e-4, warmup_steps=500,
                    weight_decay=0.01, beta1=0.9, beta2=0.999, eval_every=250, eval_sequences=64,
                    eval_batch_size=16, checkpoint_every=500, test_max_sequences=0, device="cuda", compile=True),
        seeds=(0, 1, 2, 3, 4),
        notes={"steps_m7": 40000, "seeds_m7": (0, 1, 2)},
    ),
}


def get_profile(name: str) -> Profile:
    if not isinstance(name, str) or name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {list(PROFILES)}")
    return PROFILES[name]


def check_study_parameters(profile, seeds=None, settings=None, jobs=1) -> None:
    """Refuse a study's parameters of the wrong type before anything runs. Notebooks get them from papermill, which
    passes ``-p`` values through unchecked (``-p seeds 0,1`` arrives as the string "0,1"; lists need
    ``-y 'seeds: [0, 1]'``), and a string would otherwise be iterated character by character."""
    get_profile(profile)
    if seeds is not None and (isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__")
                              or not all(isinstance(s, Integral) and not isinstance(s, bool) for s in seeds)):
        raise ConfigError(f"seeds must be a list of integers or None, got {seeds!r} (with papermill: "
                          "-y 'seeds: [0, 1]')")
    if settings is not None:
        if isinstance(settings, (str, bytes)) or not hasattr(settings, "__iter__"):
            raise ConfigError(f"settings must be a list of setting names or None, got {settings!r} (with papermill: "
                              "-y 'settings: [arxiv_stackexchange]')")
        for s in settings:
            if not isinstance(s, str):
                raise ConfigError(f"unknown setting {s!r}; choose one of {list(SETTINGS)}")
            get_setting(s)  # a paper setting or embedded groups joined with '+'; else a ConfigError naming it
    if not isinstance(jobs, Integral) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"jobs must be an integer >= 1, got {jobs!r}")


def profile_settings(profile: str) -> list[str]:
    return list(get_profile(profile).settings or SETTINGS)


M23_SETTINGS = ("arxiv_stackexchange", "github_c4", "book_stackexchange", "arxiv_book_stackexchange",
                "commoncrawl_github_wikipedia")
"""The paper's five 2- and 3-group settings: the law and fidelity studies of notebooks 01-03 use them all."""
SMALL_STUDY_SETTINGS = {"static": ("arxiv_stackexchange", "arxiv_book_stackexchange"),
                        "dynamic": ("arxiv_stackexchange", "arxiv_book_stackexchange"),
                        "fidelity": ("arxiv_stackexchange", "arxiv_book_stackexchange"),
                        "ordering": ("github_c4",)}
"""The settings of each law or fidelity study under a profile with ``small_studies`` (smoke, quick)."""


def default_settings(profile: str, study: str) -> tuple[str, ...]:
    """The settings a study uses by default under ``profile``: the five 2- and 3-group settings of the paper, or,
    for a profile with ``small_studies`` (smoke, quick), one 2-group and one 3-group setting (GH/C4 alone for the
    ordering study)."""
    if study not in SMALL_STUDY_SETTINGS:
        raise ValueError(f"unknown study {study!r}; choose one of {sorted(SMALL_STUDY_SETTINGS)}")
    return SMALL_STUDY_SETTINGS[study] if get_profile(profile).small_studies else M23_SETTINGS


def study_seeds(profile: str, seeds: Iterable[int] | None = None) -> tuple[int, ...]:
    """``seeds`` as a tuple, or the profile's seeds when None."""
    check_study_parameters(profile, seeds)
    return tuple(int(s) for s in seeds) if seeds is not None else tuple(get_profile(profile).seeds)


def profile_config(profile: str, groups, method: str = "stratified", seed: int = 0, method_config=None,
                   name: str = "", preset: str | None = None, **train_overrides) -> RunConfig:
    """A run config under ``profile`` for the given groups, method and seed. ``preset`` swaps the profile's model
    size preset (``model.PRESETS``) and keeps the rest of the recipe: the scale study (notebook 13). The preset is
    part of the run id, so each size is its own run; the profile's own preset gives the profile's run."""
    p = get_profile(profile)
    data = copy.deepcopy(p.data)
    data.groups = tuple(groups)
    train = dataclasses.replace(p.train, seed=seed, **train_overrides)
    model = copy.deepcopy(p.model) if preset is None else dataclasses.replace(p.model, preset=preset)
    cfg = RunConfig(data=data, model=model, train=train, method=method,
                    method_config=dict(method_config or {}), name=name or method)
    cfg.validate()
    return cfg
