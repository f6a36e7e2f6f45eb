"""Skill-it: a static skills graph from m one-group runs, online exponentiated updates from recent losses.

Graph (``skills_graph``): for the run trained only on group j, G[j, i] = (L_i(start) - L_i(end)) / L_i(start), the
relative drop of group i's validation loss. G is indexed [trained, evaluated], the transpose of the LMO matrix A.

Online rule (as released): every round of ``update_steps``, evaluate, and set p ∝ exp(η · G @ ΣL), where ΣL is the
*sum* of the last ``window`` validation-loss vectors. The update is not cumulative (the base is uniform every round).
Initial p ∝ exp(η · G @ 1). In LMO terms Skill-it uses A^t_ij = L^t_i · G[j, i], i.e. A^t = diag(L^t) Gᵀ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .base import MixingPolicy, Observation, Segment, register, softmax


def skills_graph(start_losses: np.ndarray, end_losses: np.ndarray) -> np.ndarray:
    """G[j, i] = (L_i(start) - L_i(end_j)) / L_i(start), with ``end_losses[j]`` the losses after training on j only.

    ``start_losses`` is (m,) (the shared initial losses: every one-group run starts from the same init) or (m, m).
    """
    start = np.asarray(start_losses, dtype=float)
    end = np.asarray(end_losses, dtype=float)
    if start.ndim == 1:
        start = np.broadcast_to(start, end.shape)
    return (start - end) / start


def skillit_weights(graph: np.ndarray, loss_sum: np.ndarray, eta: float) -> np.ndarray:
    """p_j ∝ exp(η · Σ_i G[j, i] · ΣL_i): prefer groups whose training lowers the currently high losses."""
    return softmax(eta * np.asarray(graph) @ np.asarray(loss_sum))


@register
class SkillitPolicy(MixingPolicy):
    name = "skillit"

    @dataclass
    class Config:
        graph: list[list[float]] | None = None
        """The skills graph G[trained j][evaluated i] from m one-group runs (see ``skills_graph``); required."""
        eta: float = 0.2
        """η, the exponentiated update's step size (paper: 0.2)."""
        window: int = 3
        """Number of most recent validation-loss vectors summed into ΣL (paper: 3)."""
        update_steps: int = 500
        """Steps per round: p is recomputed after each round from a fresh evaluation (paper: 500 of 5,000)."""

    def __init__(self, config, groups, total_steps, seed):
        super().__init__(config, groups, total_steps, seed)
        if config.graph is None:
            raise ConfigError("skillit needs a skills graph (method_config['graph']); learn it with m one-group runs")
        self.G = np.asarray(config.graph, dtype=float)
        if self.G.shape != (self.m, self.m) or not np.all(np.isfinite(self.G)):
            raise ConfigError(f"skillit graph must be a finite {self.m}x{self.m} matrix, got shape {self.G.shape}")
        if config.window < 1 or config.update_steps < 1 or config.eta < 0:
            raise ConfigError("skillit window and update_steps must be >= 1 and eta >= 0")
        self.p = skillit_weights(self.G, np.ones(self.m), config.eta)
        self.losses: list[list[float]] = []

    def next_segment(self, step: int) -> Segment:
        if not self.history:
            self.record(step, self.p, None)
        end = min(self.total_steps, (step // self.config.update_steps + 1) * self.config.update_steps)
        return Segment(self.p.tolist(), end - step, evaluate=end < self.total_steps)

    def observe(self, obs: Observation) -> None:
        self.losses = (self.losses + [obs.val_losses.tolist()])[-self.config.window:]
        loss_sum = np.sum(self.losses, axis=0)
        self.p = skillit_weights(self.G, loss_sum, self.config.eta)
        # The LMO matrix Skill-it acts on: A^t = diag(L^t) Gᵀ (rows: evaluated groups).
        self.record(obs.step, self.p, np.diag(obs.val_losses) @ self.G.T)

    def state_dict(self):
        return {**super().state_dict(), "p": self.p.tolist(), "losses": self.losses}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.p, self.losses = np.array(state["p"]), [list(x) for x in state["losses"]]
