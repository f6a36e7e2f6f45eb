"""Every method runs end to end on the committed tiny corpus, deterministically, and resumes exactly."""

import numpy as np
import pytest

from aioli_repro.runs import RunDir
from aioli_repro.train import train

GRAPH = [[0.3, 0.1, 0.1], [0.1, 0.3, 0.1], [0.05, 0.1, 0.4]]
AIOLI = {"eta": 0.5, "lp_rounds": 1, "lp_steps": 1, "one_hot_factor": 0.5, "ema": 0.1, "update_steps": 10}


def _methods(ref_path):
    return {
        "stratified": {},
        "static": {"proportions": [0.6, 0.3, 0.1]},
        "skillit": {"graph": GRAPH, "update_steps": 8, "eta": 0.2, "window": 3},
        "doremi_proxy": {"reference_model": str(ref_path), "mu": 0.05, "record_every": 5},
        "doge_proxy": {"mu": 0.01, "val_batch_size": 2, "record_every": 5},
        "aioli": AIOLI,
        "aioli-diagonal": {**AIOLI, "diagonal": True},
        "aioli-static": {**AIOLI, "static": True},
        "aioli-cumulative": {**AIOLI, "ema": None},
        "aioli-restricted": {**AIOLI, "prior": [0.7, 0.2, 0.1], "prior_steps": 4},
    }


@pytest.fixture(scope="module")
def ref_path(tmp_path_factory):
    import os

    from aioli_repro.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    from .conftest import TINY_CORPUS, TINY_TOKENIZER

    os.environ.setdefault("AIOLI_CACHE", str(tmp_path_factory.mktemp("cache")))
    cfg = RunConfig(data=DataConfig(groups=("code", "changelogs", "licenses"), corpus=str(TINY_CORPUS),
                                    tokenizer=str(TINY_TOKENIZER), context_length=32, val_fraction=0.2,
                                    test_fraction=0.2),
                    model=ModelConfig("tiny"),
                    train=TrainConfig(steps=20, batch_size=8, micro_batch_size=4, warmup_steps=3, eval_sequences=4,
                                      eval_batch_size=16, eval_every=10, checkpoint_every=5),
                    method="stratified", name="reference")
    runs = tmp_path_factory.mktemp("ref")
    res = train(cfg, runs_dir=runs, progress=False, keep_model=True)
    return RunDir.from_result(res, runs).model_path


def _cfg(tiny_cfg, label, mc):
    method = label.split("-")[0]
    return tiny_cfg(steps=20, method=method, method_config=mc)


@pytest.mark.slow
@pytest.mark.parametrize("label", list(_methods("x")))
def test_method_is_deterministic_and_resumes_exactly(tiny_cfg, tmp_path, ref_path, label):
    mc = _methods(ref_path)[label]
    cfg = _cfg(tiny_cfg, label, mc)
    a = train(cfg, runs_dir=tmp_path / "a", progress=False)
    b = train(cfg, runs_dir=tmp_path / "b", progress=False)
    assert a["test_loss"] == b["test_loss"] and a["policy"] == b["policy"]

    class Stop(Exception):
        pass

    def stop_at_13(step):
        if step == 13:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, runs_dir=tmp_path / "c", progress=False, on_step=stop_at_13)
    c = train(cfg, runs_dir=tmp_path / "c", progress=False)
    assert c["test_loss"] == a["test_loss"] and c["policy"] == a["policy"]
    hist = a["policy"]["history"]
    assert hist and all(abs(sum(r["proportions"]) - 1) < 1e-9 for r in hist)
    if label.startswith("aioli"):
        assert a["learn_params_steps"] > 0 and any(r["A"] is not None for r in hist)
    if label in ("doremi_proxy", "doge_proxy"):
        w = np.array(a["policy"]["average_weights"])
        assert w.sum() == pytest.approx(1) and len(hist) > 1 and hist[-1]["A"] is not None


def test_doremi_weights_do_not_depend_on_micro_batching(tiny_cfg, tmp_path, ref_path):
    mc = {"reference_model": str(ref_path), "mu": 0.05}
    one = train(tiny_cfg(steps=12, method="doremi_proxy", method_config=mc, micro_batch_size=8),
                runs_dir=tmp_path / "a", progress=False)
    two = train(tiny_cfg(steps=12, method="doremi_proxy", method_config=mc, micro_batch_size=4),
                runs_dir=tmp_path / "b", progress=False)
    assert np.allclose(one["policy"]["average_weights"], two["policy"]["average_weights"], atol=1e-5)
    for g in one["test_loss"]:
        assert one["test_loss"][g] == pytest.approx(two["test_loss"][g], abs=1e-4)


@pytest.mark.slow
def test_every_policy_runs_on_the_embedded_corpus(tmp_path):
    """The same policies on two real embedded groups (tokenised on first use), 12 steps each."""
    from aioli_repro.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    def cfg(label, mc):
        return RunConfig(data=DataConfig(groups=("code", "books"), context_length=32),
                         model=ModelConfig("tiny"),
                         train=TrainConfig(steps=12, batch_size=8, micro_batch_size=8, warmup_steps=2,
                                           eval_every=6, eval_sequences=4, test_max_sequences=8, checkpoint_every=0),
                         method=label.split("-")[0], method_config=mc, name=label)

    graph = [[0.3, 0.1], [0.1, 0.3]]
    aioli = {"eta": 0.5, "lp_rounds": 1, "lp_steps": 1, "one_hot_factor": 0.75, "ema": 0.1, "update_steps": 6}
    for label, mc in {"stratified": {}, "static": {"proportions": [0.7, 0.3]},
                      "skillit": {"graph": graph, "update_steps": 4}, "doge_proxy": {"mu": 0.01},
                      "aioli": aioli}.items():
        res = train(cfg(label, mc), runs_dir=tmp_path, progress=False)
        assert set(res["test_loss"]) == {"code", "books"} and np.isfinite(res["avg_test_perplexity"]), label
