"""Shared fixtures: a tiny committed corpus + tokenizer, and a factory of tiny run configs.

Tests never touch the network: the hub is forced offline, and caches and run directories live in tmp folders.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Set at import, not per test: module-scoped fixtures train before any per-test monkeypatch applies, and tests must
# never write into the committed run cache (results/run_cache).
os.environ["AIOLI_RESULT_CACHE"] = "off"

ASSETS = Path(__file__).parent / "assets"
TINY_CORPUS = ASSETS / "tiny_corpus"
TINY_TOKENIZER = ASSETS / "tiny_tokenizer"
TINY_GROUPS = ("code", "changelogs", "licenses")


def load_script(name: str):
    """A script of scripts/ (not a package) imported as a module, so its functions can be tested."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ASSETS.parents[1] / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # One token cache per test session (building it is the slow part); run dirs per test.
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("AIOLI_CACHE", str(cache))
    monkeypatch.setenv("AIOLI_RESULT_CACHE", "off")  # tests never write into the committed run cache


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


def tiny_config(steps=20, method="static", method_config=None, groups=TINY_GROUPS, name="test", **train):
    """A tiny, fast run config on the committed 3-group test corpus (module-scoped fixtures call this directly)."""
    from aioli_repro.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    train = {"steps": steps, "batch_size": 8, "micro_batch_size": 4, "warmup_steps": 3, "eval_every": 10,
             "checkpoint_every": 5, "eval_sequences": 4, "eval_batch_size": 16, "lr": 3e-3, **train}
    return RunConfig(
        data=DataConfig(groups=tuple(groups), corpus=str(TINY_CORPUS), tokenizer=str(TINY_TOKENIZER),
                        context_length=32, val_fraction=0.2, test_fraction=0.2),
        model=ModelConfig("tiny"), train=TrainConfig(**train), method=method,
        method_config=dict(method_config or {}), name=name)


@pytest.fixture
def tiny_cfg():
    """Factory of tiny, fast run configs (:func:`tiny_config`)."""
    return tiny_config


@pytest.fixture(scope="module")
def one_torch_thread():
    """Train a module's runs on one intra-op thread, then restore the setting. Tiny models gain nothing from a second
    thread, and on a shared 2-core machine two threads per run contend with other work (a tenfold slowdown measured).
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


STUDY_STEPS, STUDY_BATCH, STUDY_CONTEXT = 24, 8, 32
"""Runs of the tiny study profile: steps, batch size and context length."""


@pytest.fixture(scope="module")
def tiny_study():
    """A tiny profile for the branching and mixing-law studies (24-step runs, 4-mixture sweeps), registered in
    ``PROFILES`` for the module; yields its name."""
    from aioli_repro.config import DataConfig, ModelConfig, TrainConfig
    from aioli_repro.profiles import PROFILES, Profile

    PROFILES["_tinyfid"] = Profile(
        "_tinyfid", "tests", DataConfig(corpus=str(TINY_CORPUS), tokenizer=str(TINY_TOKENIZER),
                                        context_length=STUDY_CONTEXT, val_fraction=0.2, test_fraction=0.2),
        ModelConfig("tiny"),
        TrainConfig(steps=STUDY_STEPS, batch_size=STUDY_BATCH, micro_batch_size=STUDY_BATCH, warmup_steps=3,
                    eval_every=8, checkpoint_every=0, eval_sequences=4, eval_batch_size=32, test_max_sequences=8,
                    lr=3e-3),
        notes={"sweep_points": 4})
    yield "_tinyfid"
    PROFILES.pop("_tinyfid")
