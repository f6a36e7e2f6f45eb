"""Children branch from a parent's saved state (dynamic-law and fidelity analyses) without retraining it."""

import dataclasses

import pytest

from aioli_repro.errors import ConfigError
from aioli_repro.runs import RunDir
from aioli_repro.train import train


def _child(parent_cfg, parent_id, step, p, horizon):
    train_cfg = dataclasses.replace(parent_cfg.train, stop_at=step + horizon, final_eval="val")
    return dataclasses.replace(parent_cfg, train=train_cfg, method="static", method_config={"proportions": p},
                               branch={"parent": parent_id, "step": step}, name="child")


def test_child_continues_exactly_where_the_parent_was(tiny_cfg, runs_dir):
    parent_cfg = tiny_cfg(steps=30, method_config={"proportions": [0.5, 0.3, 0.2]})
    parent = train(parent_cfg, runs_dir=runs_dir, progress=False, keep_steps=(10,))
    branch = RunDir.from_result(parent, runs_dir).branch_path(10)
    assert (branch / "state.json").exists()

    steps_seen = []
    child = train(_child(parent_cfg, parent["run_id"], 10, [0.5, 0.3, 0.2], 6), runs_dir=runs_dir, progress=False,
                  on_step=steps_seen.append)
    assert steps_seen == list(range(11, 17))  # the parent's first 10 steps are not retrained
    # Same mixture as the parent: the child is the parent's own trajectory stopped at step 16.
    stopped = train(dataclasses.replace(parent_cfg, train=dataclasses.replace(parent_cfg.train, stop_at=16,
                                                                             final_eval="val")),
                    runs_dir=runs_dir, progress=False)
    assert child["val_loss"] == pytest.approx(stopped["val_loss"], abs=1e-6)
    assert child["test_loss"] == {} and child["train_tokens"] == 6 * 8 * 32

    other = train(_child(parent_cfg, parent["run_id"], 10, [0.1, 0.1, 0.8], 6), runs_dir=runs_dir, progress=False)
    assert other["val_loss"] != child["val_loss"] and other["run_id"] != child["run_id"]


def test_missing_branch_point_and_bad_branch_config(tiny_cfg, runs_dir):
    parent_cfg = tiny_cfg(steps=20)
    parent = train(parent_cfg, runs_dir=runs_dir, progress=False)
    with pytest.raises(RuntimeError, match="no branch point at step 5"):
        train(_child(parent_cfg, parent["run_id"], 5, [1, 1, 1], 4), runs_dir=runs_dir, progress=False)
    # Asking for the branch point retrains the cached parent once, then children work.
    train(parent_cfg, runs_dir=runs_dir, progress=False, keep_steps=(5,))
    child = train(_child(parent_cfg, parent["run_id"], 5, [1, 1, 1], 4), runs_dir=runs_dir, progress=False)
    assert child["branch"] == {"parent": parent["run_id"], "step": 5} and child["steps"] == 9
    assert child["train_tokens"] == 4 * parent_cfg.train.batch_size * parent_cfg.data.context_length
    bad = _child(parent_cfg, parent["run_id"], 12, [1, 1, 1], 4)
    bad.train.stop_at = 10
    with pytest.raises(ConfigError, match="branch must be"):
        train(bad, runs_dir=runs_dir, progress=False)
