"""Children branch from a parent's saved state (dynamic-law and fidelity analyses) without retraining it."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from aioli_repro import hparams
from aioli_repro.branching import branch_children, break_step, child_config, default_horizon
from aioli_repro.errors import ConfigError
from aioli_repro.executors import Runner
from aioli_repro.methods import sweep
from aioli_repro.run_cache import read_cache_entry
from aioli_repro.runs import RunDir
from aioli_repro.train import train

from .conftest import STUDY_BATCH, STUDY_CONTEXT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SET2 = hparams.Setting("tiny2", "C/L", ("github", "wikipedia"), ("code", "licenses"))


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    return Runner(jobs=1, runs_dir=tmp_path_factory.mktemp("branch_runs"), progress=False)


def test_break_steps_and_horizons():
    assert break_step(5000, 0.4) == 2000 and break_step(40, 0.1) == 4
    assert break_step(10, 0.01) == 1
    assert default_horizon(5000) == 100 and default_horizon(40) == 2
    with pytest.raises(ValueError):
        break_step(100, 1.0)


def test_child_continues_exactly_where_the_parent_was(tiny_cfg, runs_dir):
    parent_cfg = tiny_cfg(steps=30, method_config={"proportions": [0.5, 0.3, 0.2]})
    parent = train(parent_cfg, runs_dir=runs_dir, progress=False, keep_steps=(10,))
    branch = RunDir.from_result(parent, runs_dir).branch_path(10)
    assert (branch / "state.json").exists()

    steps_seen = []
    child = train(child_config(parent_cfg, parent["run_id"], 10, [0.5, 0.3, 0.2], 6), runs_dir=runs_dir, progress=False,
                  on_step=steps_seen.append)
    assert steps_seen == list(range(11, 17))  # the parent's first 10 steps are not retrained
    # Same mixture as the parent: the child is the parent's own trajectory stopped at step 16.
    stopped = train(dataclasses.replace(parent_cfg, train=dataclasses.replace(parent_cfg.train, stop_at=16,
                                                                             final_eval="val")),
                    runs_dir=runs_dir, progress=False)
    assert child["val_loss"] == pytest.approx(stopped["val_loss"], abs=1e-6)
    assert child["test_loss"] == {} and child["train_tokens"] == 6 * 8 * 32

    other = train(child_config(parent_cfg, parent["run_id"], 10, [0.1, 0.1, 0.8], 6), runs_dir=runs_dir, progress=False)
    assert other["val_loss"] != child["val_loss"] and other["run_id"] != child["run_id"]


def test_missing_branch_point_and_bad_branch_config(tiny_cfg, runs_dir):
    parent_cfg = tiny_cfg(steps=20)
    parent = train(parent_cfg, runs_dir=runs_dir, progress=False)
    with pytest.raises(RuntimeError, match="no branch point at step 5"):
        train(child_config(parent_cfg, parent["run_id"], 5, [1, 1, 1], 4), runs_dir=runs_dir, progress=False)
    # Asking for the branch point retrains the cached parent once, then children work.
    train(parent_cfg, runs_dir=runs_dir, progress=False, keep_steps=(5,))
    child = train(child_config(parent_cfg, parent["run_id"], 5, [1, 1, 1], 4), runs_dir=runs_dir, progress=False)
    assert child["branch"] == {"parent": parent["run_id"], "step": 5} and child["steps"] == 9
    assert child["train_tokens"] == 4 * parent_cfg.train.batch_size * parent_cfg.data.context_length
    bad = child_config(parent_cfg, parent["run_id"], 12, [1, 1, 1], 4)
    bad.train.stop_at = 10
    with pytest.raises(ConfigError, match="branch must be"):
        train(bad, runs_dir=runs_dir, progress=False)


# ------------------------------------------------------------------------------------ children of a prefix run


def test_children_branch_from_the_parents_saved_state(tiny_study, runner):
    cfgs = sweep(tiny_study, SET2.groups, 0)
    P = np.array([c.method_config["proportions"] for c in cfgs])
    t, h = 10, 3
    br = branch_children(cfgs[0], t, P, h, runner)[t]
    assert br.parent["steps"] == t and br.parent["config"]["train"]["stop_at"] == t  # a prefix run, not a full one
    state = RunDir.from_result(br.parent, runner.runs_dir).branch_path(t) / "state.json"
    assert state.exists()
    for p, child in zip(P, br.children):
        assert child["branch"] == {"parent": br.parent["run_id"], "step": t}
        assert child["train_tokens"] == h * STUDY_BATCH * STUDY_CONTEXT  # only the horizon is trained
        assert child["steps"] == t + h and child["test_loss"] == {}
        assert child["config"]["method_config"]["proportions"] == pytest.approx(p)
    assert br.L_next.shape == (4, 2) and br.L_prev.shape == (2,)
    assert br.L_prev == pytest.approx([br.parent["val_loss"][g] for g in SET2.groups])  # same windows, same state
    fit = br.fit(loo=True)
    assert fit.A.shape == (2, 2) and np.all(np.isfinite(fit.r2))


def test_a_clone_with_every_child_cached_does_not_retrain_the_parent(tiny_study, tmp_path, monkeypatch):
    """A fresh clone has the committed result cache but not runs/: branching must not retrain a parent whose
    children are all cached, and must retrain it (to get its weights) as soon as one child is missing."""
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(tmp_path / "cache"))
    cfgs = sweep(tiny_study, SET2.groups, 0)
    P = np.array([c.method_config["proportions"] for c in cfgs])
    t, h = 10, 3
    here = Runner(jobs=1, runs_dir=tmp_path / "here", progress=False)
    br = branch_children(cfgs[0], t, P, h, here)[t]
    assert br.parent["branch_points"][str(t)]["val_loss"] == pytest.approx(dict(zip(SET2.groups, br.L_prev)))

    # A parent cached before results recorded their branch points gets them from its local branch state.
    run = RunDir.from_result(br.parent, here.runs_dir)
    run.write_result({k: v for k, v in br.parent.items() if k != "branch_points"})
    assert "branch_points" not in read_cache_entry(run.cache_path)["result"]
    again = branch_children(cfgs[0], t, P, h, here)[t]
    assert str(t) in read_cache_entry(run.cache_path)["result"]["branch_points"]
    assert again.L_prev == pytest.approx(br.L_prev)

    clone = Runner(jobs=1, runs_dir=tmp_path / "clone", progress=False)
    cached = branch_children(cfgs[0], t, P, h, clone)[t]
    assert not list(Path(clone.runs_dir).rglob("branches"))  # nothing was trained: no parent state exists there
    assert cached.L_prev == pytest.approx(br.L_prev) and cached.L_next == pytest.approx(br.L_next)

    missing = RunDir.from_result(br.children[1], here.runs_dir).cache_path
    missing.unlink()
    clone2 = Runner(jobs=1, runs_dir=tmp_path / "clone2", progress=False)
    rerun = branch_children(cfgs[0], t, P, h, clone2)[t]
    assert RunDir.from_result(rerun.parent, clone2.runs_dir).has_branches([t])  # the parent was trained for its weights
    assert rerun.L_next == pytest.approx(br.L_next, rel=1e-5) and missing.exists()
