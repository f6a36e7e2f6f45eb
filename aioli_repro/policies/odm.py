"""Online Data Mixing (ODM; Albalak et al. 2023, "Efficient Online Data Mixing For Language Model Pre-Training").

A multi-armed bandit over the groups (EXP3 with a decaying exploration floor), whose reward for a group is the
training loss of that group's sequences in the batch just trained: groups the model still finds hard are sampled
more. No extra runs, no evaluations: the rewards come from the forward pass the step computes anyway (the loop hands
them to ``observe_batch``).

The update after step t (t = 1, 2, ... counts the steps trained), for the K groups, with π the mixture the batch was
drawn from:

    R̂_i ← α·R̂_i + (1 - α)·L_i / π_i          for each group i in the batch (L_i: its sequences' mean loss)
    ε_t  = min(1/K, sqrt(ln K / (K·t)))
    π_i  = (1 - K·ε_t)·exp(ε_{t-1}·R̂_i) / Σ_j exp(ε_{t-1}·R̂_j) + ε_t

which is the paper's Algorithm 1 (importance-weighted, smoothed reward; the policy's exponent uses the previous
step's ε, its floor the current one; ε_0 = 1/K, R̂ = 0 at the start). The released code (``data_sampling_utils.py``)
differs in two ways, both selectable here: its ``SmoothedMeanWeightUpdater`` smooths exp(L_i) without the importance
weight (``reward="exp_loss"``), and the mixed-minibatch loop that calls it normalises the smoothed rewards linearly
instead of through the softmax (not offered: it is not the algorithm the paper describes). Like the released
``UpdateScheduler``, nothing is learnt during ``warmup_steps`` (stratified sampling there), and t keeps counting the
warm-up's steps, so the floor ε_t has already decayed when the bandit starts; its first update's exponent is still
ε_0 = 1/K (ε is only recomputed by an update), exactly as the released updater's ``prev_eps``.

Sampling. The released loop draws the group of each micro-batch independently from π (several micro-batches per
step, one group each) and takes one reward per group present: the mean loss of its micro-batches. Our loop draws the
group of each *sequence* independently from π (a micro-batch of one sequence, so B draws per step) and takes one
reward per group present, the mean loss of its sequences in the batch, with one smoothing update per group per step
(the released ``group_update``). A group absent from a batch keeps its R̂.

In LMO terms (p^{t+1} ∝ exp(η·A^t·1) with a floor), ODM's A^t is diagonal, A^t = diag(R̂^t), the smoothed
importance-weighted training losses, with step size η = ε_{t-1}; it is recorded every ``record_every`` steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .base import MixingPolicy, Segment, register, softmax
from .doremi import group_means

REWARDS = ("importance_weighted", "exp_loss")


def odm_epsilon(t: int, m: int) -> float:
    """ε_t = min(1/K, sqrt(ln K / (K·t))): the exploration floor (and the next step's exponent scale) after step t."""
    if t < 1:
        raise ValueError(f"ODM counts steps from 1, got t={t}")
    return min(1.0 / m, math.sqrt(math.log(m) / (m * t)))


def odm_policy(rewards, eps_prev: float, eps: float) -> np.ndarray:
    """π = (1 - K·ε)·softmax(ε_prev·R̂) + ε."""
    r = np.asarray(rewards, dtype=float)
    return (1.0 - len(r) * eps) * softmax(eps_prev * r) + eps


def odm_rewards(rewards, losses, pi, alpha: float, reward: str = "importance_weighted") -> np.ndarray:
    """The smoothed rewards after one batch: groups with a loss (not NaN) move, the others keep theirs."""
    r = np.asarray(rewards, dtype=float).copy()
    losses = np.asarray(losses, dtype=float)
    seen = ~np.isnan(losses)
    if reward == "importance_weighted":
        new = losses[seen] / np.asarray(pi, dtype=float)[seen]
    elif reward == "exp_loss":
        new = np.exp(losses[seen])
    else:
        raise ValueError(f"unknown ODM reward {reward!r}; choose one of {REWARDS}")
    r[seen] = alpha * r[seen] + (1.0 - alpha) * new
    return r


@register
class ODMPolicy(MixingPolicy):
    name = "odm"

    @dataclass
    class Config:
        alpha: float = 0.9
        """α, the smoothing of each group's reward (paper and released code: 0.9)."""
        warmup_steps: int = 0
        """Steps of stratified sampling before the bandit learns (released scripts: 2,000 of 100,000)."""
        update_every: int = 1
        """Steps between recomputations of π (released scripts: 1). Rewards are taken from every step after the
        warm-up either way; only the mixture waits."""
        reward: str = "importance_weighted"
        """``importance_weighted`` (the paper's L_i / π_i) or ``exp_loss`` (the released SmoothedMeanWeightUpdater's
        exp(L_i))."""
        record_every: int = 0
        """Steps between recorded (π, A^t = diag(R̂)) entries in the history; 0 = 20 records per run."""

    def __init__(self, config, groups, total_steps, seed):
        super().__init__(config, groups, total_steps, seed)
        if not 0 <= config.alpha < 1:
            raise ConfigError(f"odm alpha must lie in [0, 1), got {config.alpha}")
        if config.update_every < 1 or config.warmup_steps < 0 or config.record_every < 0:
            raise ConfigError("odm update_every must be >= 1, warmup_steps and record_every >= 0")
        if not config.warmup_steps < total_steps:
            raise ConfigError(f"odm warmup_steps must be below the run's {total_steps} steps, got "
                              f"{config.warmup_steps}")
        if config.reward not in REWARDS:
            raise ConfigError(f"odm reward must be one of {REWARDS}, got {config.reward!r}")
        self.record_every = config.record_every or max(1, total_steps // 20)
        self.rewards = np.zeros(self.m)
        self.pi = self.uniform()
        self.eps = 1.0 / self.m  # ε_0
        self.weight_sum = np.zeros(self.m)
        self.steps_seen = 0

    def next_segment(self, step: int) -> Segment:
        warm = self.config.warmup_steps
        if not self.history:
            self.record(step, self.pi, None, epsilon=self.eps, phase="warmup" if warm else "bandit")
        if step < warm:
            return Segment(self.uniform().tolist(), warm - step)
        k = self.config.update_every
        end = min(self.total_steps, (step // k + 1) * k)
        return Segment(self.pi.tolist(), end - step)

    def observe_batch(self, step, batch, seq_losses) -> None:
        t = step + 1
        self.weight_sum += self.pi  # the mixture this batch was drawn from (uniform during the warm-up)
        self.steps_seen += 1
        if t <= self.config.warmup_steps:
            return
        losses = group_means(np.asarray(seq_losses, dtype=float), batch.groups.numpy(), self.m)
        self.rewards = odm_rewards(self.rewards, losses, self.pi, self.config.alpha, self.config.reward)
        if t % self.config.update_every == 0:
            eps_prev, self.eps = self.eps, odm_epsilon(t, self.m)
            self.pi = odm_policy(self.rewards, eps_prev, self.eps)
        if t % self.record_every == 0 and t < self.total_steps:
            self.record(t, self.pi, np.diag(self.rewards), epsilon=self.eps)

    @property
    def average_weights(self) -> np.ndarray:
        """The mixture averaged over every step trained (each step's π counted once)."""
        return self.weight_sum / max(self.steps_seen, 1)

    def state_dict(self):
        return {**super().state_dict(), "rewards": self.rewards.tolist(), "pi": self.pi.tolist(), "eps": self.eps,
                "weight_sum": self.weight_sum.tolist(), "steps_seen": self.steps_seen}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.rewards, self.pi = np.array(state["rewards"], dtype=float), np.array(state["pi"], dtype=float)
        self.eps, self.steps_seen = float(state["eps"]), int(state["steps_seen"])
        self.weight_sum = np.array(state["weight_sum"], dtype=float)

    def summary(self):
        return {**super().summary(), "average_weights": self.average_weights.tolist(),
                "final_rewards": self.rewards.tolist(), "final_proportions": self.pi.tolist()}
