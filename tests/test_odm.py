"""ODM (Online Data Mixing): EXP3 updates by hand, a simulated bandit, the run loop's rewards, and exact resume."""

import math

import numpy as np
import pytest
import torch

from aioli_repro import hparams
from aioli_repro.errors import ConfigError
from aioli_repro.policies import make_policy
from aioli_repro.policies.odm import odm_epsilon
from aioli_repro.runs import RunDir
from aioli_repro.sampler import Batch
from aioli_repro.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(groups):
    return Batch(torch.zeros(len(groups), 2, dtype=torch.long), torch.as_tensor(groups, dtype=torch.long))


def _step(policy, step, groups, losses):
    """What the loop does around one optimizer step: ask for the segment (once per segment), train, report."""
    policy.observe_batch(step, _batch(groups), torch.as_tensor(losses, dtype=torch.float32))


def test_exp3_updates_by_hand():
    """Three steps of two groups, every number written out (alpha = 0.9, importance-weighted rewards)."""
    pol = make_policy("odm", {"alpha": 0.9, "record_every": 1}, ["a", "b"], 100, 0)
    assert pol.next_segment(0).proportions == [0.5, 0.5] and pol.next_segment(0).steps == 1
    # t = 1: a's sequences lost 2 and 4 (mean 3), b's 6; pi = (1/2, 1/2).
    _step(pol, 0, [0, 0, 1], [2.0, 4.0, 6.0])
    r = [0.1 * 3 / 0.5, 0.1 * 6 / 0.5]  # 0.6, 1.2
    assert pol.rewards.tolist() == pytest.approx(r)
    # eps_1 = min(1/2, sqrt(ln 2 / 2) = 0.589) = 1/2: pi = (1 - 2 * 1/2) * softmax + 1/2 = uniform
    assert pol.eps == 0.5 and pol.pi.tolist() == pytest.approx([0.5, 0.5])
    # t = 2: a 1, b mean(2, 4) = 3.
    _step(pol, 1, [0, 1, 1], [1.0, 2.0, 4.0])
    r = [0.9 * 0.6 + 0.1 * 1 / 0.5, 0.9 * 1.2 + 0.1 * 3 / 0.5]  # 0.74, 1.68
    assert pol.rewards.tolist() == pytest.approx(r)
    eps2 = math.sqrt(math.log(2) / 4)  # 0.4163
    ea, eb = math.exp(0.5 * 0.74), math.exp(0.5 * 1.68)  # the exponent uses the previous step's eps, 1/2
    pi = [(1 - 2 * eps2) * ea / (ea + eb) + eps2, (1 - 2 * eps2) * eb / (ea + eb) + eps2]
    assert pol.eps == pytest.approx(eps2) and pol.pi.tolist() == pytest.approx(pi)
    assert pi[1] > 0.5  # the group with the higher loss is sampled more
    # t = 3: only a in the batch (loss 2): b keeps its reward; a's is weighted by the pi it was drawn with.
    assert pol.next_segment(2).proportions == pytest.approx(pi)
    _step(pol, 2, [0, 0], [2.0, 2.0])
    r = [0.9 * 0.74 + 0.1 * 2 / pi[0], 1.68]
    assert pol.rewards.tolist() == pytest.approx(r)
    eps3 = math.sqrt(math.log(2) / 6)
    ea, eb = math.exp(eps2 * r[0]), math.exp(eps2 * r[1])
    assert pol.pi.tolist() == pytest.approx([(1 - 2 * eps3) * ea / (ea + eb) + eps3,
                                             (1 - 2 * eps3) * eb / (ea + eb) + eps3])
    # the recorded LMO matrix is diagonal, the smoothed rewards
    rec = pol.history[-1]
    assert rec["step"] == 3 and np.allclose(rec["A"], np.diag(r))


def test_the_released_exp_loss_reward_and_the_exploration_schedule_by_hand():
    pol = make_policy("odm", {"alpha": 0.5, "reward": "exp_loss"}, ["a", "b", "c"], 50, 0)
    _step(pol, 0, [0, 1, 2], [1.0, 2.0, 0.0])
    assert pol.rewards.tolist() == pytest.approx([0.5 * math.e, 0.5 * math.e ** 2, 0.5])
    # K = 3: eps_t = min(1/3, sqrt(ln 3 / (3 t))); sqrt(ln 3 / 3) = 0.605 at t = 1, so 1/3 until t = 4
    assert [odm_epsilon(t, 3) for t in (1, 3, 4)] == pytest.approx([1 / 3, 1 / 3, math.sqrt(math.log(3) / 12)])
    assert pol.pi.tolist() == pytest.approx([1 / 3] * 3)  # 1 - K eps = 0: all exploration


def test_warm_up_is_stratified_and_learns_nothing_but_the_step_count_runs_on():
    pol = make_policy("odm", {"warmup_steps": 3}, ["a", "b"], 20, 0)
    seg = pol.next_segment(0)
    assert seg.proportions == [0.5, 0.5] and seg.steps == 3 and pol.history[0]["phase"] == "warmup"
    for s in range(3):
        _step(pol, s, [0, 1], [1.0, 9.0])
    assert pol.rewards.tolist() == [0.0, 0.0] and pol.eps == 0.5
    _step(pol, 3, [0, 1], [1.0, 9.0])  # t = 4: the first update, with eps_4 and the initial eps_0 = 1/2 as exponent
    r = np.array([0.1 * 1 / 0.5, 0.1 * 9 / 0.5])
    e4 = math.sqrt(math.log(2) / 8)
    w = np.exp(0.5 * r) / np.exp(0.5 * r).sum()
    assert pol.pi.tolist() == pytest.approx(((1 - 2 * e4) * w + e4).tolist())
    assert pol.average_weights.tolist() == pytest.approx([0.5, 0.5])  # four steps, each drawn from uniform


def test_update_every_waits_for_the_mixture_but_not_for_the_rewards():
    pol = make_policy("odm", {"update_every": 3}, ["a", "b"], 20, 0)
    assert pol.next_segment(0).steps == 3 and pol.next_segment(4).steps == 2  # segments end at multiples of 3
    _step(pol, 0, [0, 1], [1.0, 5.0])
    _step(pol, 1, [0, 1], [1.0, 5.0])
    assert pol.pi.tolist() == [0.5, 0.5] and pol.rewards[1] > pol.rewards[0] > 0
    _step(pol, 2, [0, 1], [1.0, 5.0])
    assert pol.pi[1] > 0.5 and pol.eps == pytest.approx(math.sqrt(math.log(2) / 6))


@pytest.mark.parametrize("reward,margin", [("importance_weighted", 0.01), ("exp_loss", 0.5)])
def test_a_simulated_bandit_moves_the_mixture_to_the_arm_with_the_highest_loss(reward, margin):
    """Three groups, one with twice the others' training loss (ODM's reward: what the model has not learnt yet).
    The paper's importance-weighted reward moves gently (a group drawn more often earns less per draw); the released
    exp(loss) reward concentrates on the arm."""
    T, B, loss = 3000, 8, np.array([3.0, 3.0, 6.0])
    pol = make_policy("odm", {"reward": reward}, ["a", "b", "c"], T, 0)
    rng = np.random.default_rng(1)
    step = 0
    while step < T:
        seg = pol.next_segment(step)
        for _ in range(seg.steps):
            g = rng.choice(3, size=B, p=np.array(seg.proportions))
            _step(pol, step, g, loss[g] + rng.normal(0, 0.3, B))
            step += 1
    assert pol.pi.argmax() == 2 and pol.average_weights.argmax() == 2
    assert pol.pi[2] > 1 / 3 + margin and max(pol.pi[:2]) < 1 / 3
    assert pol.steps_seen == T


def test_bad_odm_configs_fail_early():
    for bad, match in (({"alpha": 1.0}, "alpha"), ({"update_every": 0}, "update_every"),
                       ({"warmup_steps": 20}, "warmup"), ({"reward": "gain"}, "reward")):
        with pytest.raises(ConfigError, match=match):
            make_policy("odm", bad, ["a", "b"], 20, 0)


def test_the_scaled_config_keeps_the_released_warm_up_share():
    assert hparams.odm_config(2, 100_000) == {"alpha": 0.9, "update_every": 1, "warmup_steps": 2000}
    assert hparams.odm_config(3, 1000)["warmup_steps"] == 20 and hparams.odm_config(2, 40)["warmup_steps"] == 1


def test_odm_in_the_loop_learns_from_every_step_and_moves_its_mixture(tiny_cfg, runs_dir):
    """The loop hands each step's losses to the policy (no extra pass): with the released reward the mixture moves."""
    cfg = tiny_cfg(steps=20, method="odm", method_config={"reward": "exp_loss", "warmup_steps": 2},
                   checkpoint_every=0)
    res = train(cfg, runs_dir=runs_dir, progress=False)
    pol = res["policy"]
    assert pol["method"] == "odm" and sum(pol["average_weights"]) == pytest.approx(1)
    assert max(abs(x - 1 / 3) for x in pol["final_proportions"]) > 0.05
    mixtures = [r["proportions"] for r in RunDir(cfg, res["run_id"], runs_dir).read_metrics() if "proportions" in r]
    assert mixtures[0] != mixtures[-1]  # the metrics log the mixture of the segment in progress
    # 20 steps: a record every step (20 per run) once the bandit learns, after the 2 warm-up steps
    assert [r["step"] for r in pol["history"]] == [0] + list(range(3, 20))


@pytest.mark.parametrize("stop", [2, 7, 13])
def test_an_interrupted_odm_run_resumes_to_the_uninterrupted_result(tiny_cfg, tmp_path, stop):
    cfg = tiny_cfg(steps=20, method="odm", method_config={"reward": "exp_loss", "warmup_steps": 3,
                                                           "update_every": 2})

    class Interrupt(Exception):
        pass

    def interrupt(step):
        if step == stop:
            raise Interrupt

    ref = train(cfg, runs_dir=tmp_path / "a", progress=False)
    with pytest.raises(Interrupt):
        train(cfg, runs_dir=tmp_path / "b", progress=False, on_step=interrupt)
    res = train(cfg, runs_dir=tmp_path / "b", progress=False)
    for key in ("val_loss", "test_loss", "policy", "final_train_loss"):
        assert res[key] == ref[key], key
    assert RunDir(cfg, ref["run_id"], tmp_path / "a").read_metrics() == \
        RunDir(cfg, res["run_id"], tmp_path / "b").read_metrics()
