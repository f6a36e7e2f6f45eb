"""Aioli: estimate the interaction matrix A^t online (LearnParams), update p by exponentiated gradient.

One round of R steps (Algorithm 1 of the paper, control flow as released):

1. evaluate L^0 on the fixed validation sample;
2. LearnParams: train K = m·k short intervals of S_lp steps, each on a smoothed one-hot mixture
   p^(j) = h·e_j + (1-h)/(m-1)·(1 - e_j), in k random permutations of the m groups, with exact per-batch group
   counts; after each interval evaluate, and add every group's loss drop to column j of B;
   β = B / k, and A^t solves β_i = P·A^t_i for every evaluated group i (``solve_interaction_matrix``);
3. normalise: shift A^t by its minimum if negative, divide by the sum of all entries (``normalize_interaction``);
4. update p: EMA form of the released configs, E^t = (1-γ)·Ā^t + γ·E^{t-1} and p^t ∝ base ⊙ exp(η·colsum(E^t)),
   or the cumulative form of the paper's Algorithm 1, p^t ∝ p^{t-1} ⊙ exp(η·colsum(Ā^t));
5. train the rest of the round on p^t (i.i.d. group draws).

LearnParams steps are ordinary optimizer steps under the run's one LR schedule and count against its step budget:
Aioli needs no extra runs. Sign convention: A_ij > 0 means training on group j lowers group i's loss.

Deviations from the released code, on purpose: exact per-batch counts, and the linear solve uses the *realised*
one-hot mixtures (what the batches of each mixture held, averaged over its intervals), so the estimate stays exact
when h·B is not an integer (the released m = 7 config builds malformed batches there); the step budget counts only
steps taken. When (1-h)·B/(m-1) is not an integer (m = 7, h = 0.75, B = 8: 1/3 of a sequence per other group), the
leftover slots of each batch are spread so that every one-hot mixture's realised counts track its target over the
run (``lp_slots="balanced"``). Until that fix they always went to the lowest-index other groups
(``lp_slots="lowest_index"``, kept to reproduce those runs), which skewed the training mixture towards them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..sampler import SLOT_RULES, check_proportions, largest_remainder_counts
from .base import MixingPolicy, Observation, Segment, register, softmax


def smoothed_one_hots(m: int, h: float) -> np.ndarray:
    """P with row j = the LearnParams mixture for group j: h on group j, (1-h)/(m-1) on each other group."""
    P = np.full((m, m), (1.0 - h) / (m - 1))
    np.fill_diagonal(P, h)
    return P


def solve_interaction_matrix(beta: np.ndarray, P: np.ndarray, diagonal: bool = False) -> np.ndarray:
    """A^t from the average loss drops β (β[i, j] = drop of group i during the intervals on mixture j).

    Under the linear dynamic law β[i, j] = Σ_l P[j, l]·A[i, l], i.e. β_i = P A_i for each row i, so
    A = solve(P, βᵀ)ᵀ. Row j of P is the mixture the intervals on target j realised, averaged over them: the law is
    linear in the mixture, so the average drop is exactly the law at the average mixture. With ``diagonal`` (the
    Aioli-diagonal ablation) only A_ii = β_ii / P_ii is kept.
    """
    beta = np.asarray(beta, dtype=float)
    if diagonal:
        return np.diag(np.diag(beta) / np.diag(P))
    return np.linalg.solve(P, beta.T).T


def normalize_interaction(A: np.ndarray) -> np.ndarray:
    """Ā = (A - min(A, 0)) / Σ_ij (A - min(A, 0)): a global shift if anything is negative, then unit total.

    Normalising makes the update's scale independent of how fast the losses fall (early rounds would otherwise
    take huge steps). Returns zeros if A is identically zero (no information: the update then leaves p alone).
    """
    A = np.asarray(A, dtype=float)
    shifted = A - min(A.min(), 0.0)
    total = shifted.sum()
    return shifted / total if total > 0 else np.zeros_like(A)


def eg_update(base: np.ndarray, A_bar: np.ndarray, eta: float) -> np.ndarray:
    """p ∝ base ⊙ exp(η · Σ_i Ā_ij): exponentiated gradient on the linear mixing law (column sums = how much
    training on group j lowers the total loss)."""
    return softmax(np.log(np.asarray(base, dtype=float)) + eta * np.asarray(A_bar).sum(axis=0))


def eg_band(m: int, eta: float) -> tuple[float, float]:
    """The proportions the released (EMA) form can reach from a uniform base: [1, e^η] / (e^η + m - 1).

    Each Ā is non-negative with unit total, so is their EMA E, and p = softmax(η · colsum(E)) with colsum(E) >= 0
    summing to 1. A group's proportion is largest when its column holds all the mass and smallest when another's
    does. With the released η: [0.450, 0.550] for m = 2 (η 0.2), [0.322, 0.356] for m = 3 (η 0.1), [0.115, 0.312]
    for m = 7 (η 1), however the losses move."""
    e = float(np.exp(eta))
    return 1.0 / (e + m - 1), e / (e + m - 1)


@register
class AioliPolicy(MixingPolicy):
    name = "aioli"

    @dataclass
    class Config:
        eta: float = 0.2
        """η, the exponentiated-gradient step size (applied to the normalised Ā, so comparable across settings)."""
        lp_rounds: int = 4
        """k: interleaved sweeps over the m smoothed one-hot mixtures per LearnParams call (K = m·k intervals)."""
        lp_steps: int = 4
        """S_lp: optimizer steps per LearnParams interval."""
        one_hot_factor: float = 0.625
        """h: weight of the target group in its smoothed one-hot mixture; must lie in (1/m, 1] (1 = pure one-hot)."""
        ema: float | None = 0.1
        """γ of the EMA form (released configs; weight on the *past* average). None selects the cumulative
        exponentiated gradient of the paper's Algorithm 1."""
        update_steps: int = 250
        """R: steps per round (LearnParams included). The last round may be shorter."""
        diagonal: bool = False
        """Aioli-diagonal ablation: keep only the diagonal of A^t."""
        static: bool = False
        """Aioli-static ablation: learn A once, in a single round spanning the whole run (as released)."""
        prior: list[float] | None = None
        """Restricted setting: p_init, a mixture learned by another method, trained for ``prior_steps`` first."""
        prior_steps: int = 0
        """S_init: steps trained on ``prior`` before the first Aioli round."""
        lp_eval_sequences: int | None = None
        """Validation sequences per group scored after each LearnParams interval (the first n of the run's fixed
        validation sample); None uses the whole sample. Each round costs m·k + 1 such evaluations."""
        eg_from_prior: bool = False
        """Restricted setting: start exponentiated gradient from the prior (True) or from uniform (False, the
        released behaviour: the prior then only shapes the model state, not p^1)."""
        lp_slots: str = "balanced"
        """Where a LearnParams batch's leftover slots go when (1-h)·B/(m-1) is not a whole number of sequences:
        ``balanced`` (each one-hot mixture's realised counts track its target over the run) or ``lowest_index``
        (the lowest-index other groups, the rule before that fix; it skewed m = 7 runs towards latex and books).
        Part of the run id only where it changes the batches (see :meth:`identity_config`)."""

    @classmethod
    def identity_config(cls, values: dict, groups, batch_size: int) -> dict:
        """The method config as it enters the run id. ``lp_slots`` only matters when a LearnParams quota is
        fractional; there the balanced rule (the default) gets its own ids, while ``lowest_index``, the rule every
        run before it used, keeps theirs. Where all quotas are whole, both rules give identical batches and the
        ids of m = 2 and 3 runs stay as they were."""
        values = dict(values)
        rule = values.pop("lp_slots", "balanced")
        h = values.get("one_hot_factor", cls.Config.one_hot_factor)
        quotas = smoothed_one_hots(len(groups), h).ravel() * batch_size
        if rule == "balanced" and np.any(np.abs(quotas - np.round(quotas)) > 1e-9):
            values["lp_slots"] = rule
        return values

    def __init__(self, config, groups, total_steps, seed):
        super().__init__(config, groups, total_steps, seed)
        c = config
        m = self.m
        if m < 2:
            raise ConfigError("Aioli needs at least two groups")
        if not (1.0 / m < c.one_hot_factor <= 1.0):
            raise ConfigError(f"aioli one_hot_factor must lie in (1/m, 1] = ({1 / m:.3f}, 1] for m = {m}; "
                              f"got {c.one_hot_factor} (at 1/m the mixtures are all uniform and A is unidentifiable)")
        if c.lp_rounds < 1 or c.lp_steps < 1:
            raise ConfigError(f"aioli lp_rounds and lp_steps must be >= 1, got {c.lp_rounds}, {c.lp_steps}")
        if c.eta < 0 or (c.ema is not None and not 0 <= c.ema < 1):
            raise ConfigError(f"aioli eta must be >= 0 and ema in [0, 1) or None; got eta={c.eta}, ema={c.ema}")
        if not 0 <= c.prior_steps < total_steps:
            raise ConfigError(f"aioli prior_steps must lie in [0, total steps={total_steps}), got {c.prior_steps}")
        self.prior = None if c.prior is None else check_proportions(c.prior, m, groups)
        if c.prior_steps > 0 and self.prior is None:
            raise ConfigError("aioli prior_steps > 0 needs a prior mixture (p_init)")
        dynamic = total_steps - c.prior_steps
        self.round_steps = dynamic if c.static else int(c.update_steps)
        self.lp_total = m * c.lp_rounds * c.lp_steps
        if self.lp_total >= min(self.round_steps, dynamic):
            raise ConfigError(
                f"LearnParams takes m·k·S_lp = {m}·{c.lp_rounds}·{c.lp_steps} = {self.lp_total} steps, which does not "
                f"fit in a round of {min(self.round_steps, dynamic)} steps; lower lp_rounds/lp_steps or raise "
                "update_steps")
        if c.lp_slots not in SLOT_RULES:
            raise ConfigError(f"aioli lp_slots must be one of {list(SLOT_RULES)}, got {c.lp_slots!r}")
        self.P = smoothed_one_hots(m, c.one_hot_factor)
        # Mutable state (all JSON-able, see state_dict)
        base = self.prior if (c.eg_from_prior and self.prior is not None) else self.uniform()
        self.p = base.copy()
        self.base = base.copy()
        self.ema_matrix: np.ndarray | None = None
        self.phase = "prior" if c.prior_steps > 0 else "start"
        self.round = 0
        self.order: list[int] = []
        self.tau = 0
        self.B = np.zeros((m, m))
        self.C = np.zeros((m, m))  # C[j, l]: sequences of group l trained in this round's intervals on mixture j
        self.L_prev: np.ndarray | None = None

    def setup(self, ctx) -> None:
        super().setup(ctx)
        # What one batch of each one-hot mixture holds on its own: its first batch, the same under both slot rules
        # (with nothing owed yet, the balanced rule is largest remainder). The solve itself uses the counts the
        # loop reports; this only checks that A can be solved at this batch size.
        first = np.stack([largest_remainder_counts(row, ctx.batch_size) / ctx.batch_size for row in self.P])
        if not self.config.diagonal and np.linalg.matrix_rank(first) < self.m:
            raise ConfigError(
                f"with batch size {ctx.batch_size} the realised one-hot mixtures (h={self.config.one_hot_factor}, "
                f"m={self.m}) are linearly dependent, so A cannot be solved; use a batch size with h·B an integer")

    # ------------------------------------------------------------------ the round state machine
    def next_segment(self, step: int) -> Segment:
        c = self.config
        if self.phase == "prior":
            self.phase = "start"
            self.record(step, self.prior, None, phase="prior")
            return Segment(self.prior.tolist(), c.prior_steps, kind="train")
        if self.phase == "start":
            remaining = self.total_steps - step
            if remaining <= self.lp_total:  # a last round too short to estimate A: keep training on p
                self.phase = "done"
                return Segment(self.p.tolist(), remaining, kind="train")
            rng = np.random.default_rng([self.seed, 0xA101, self.round])
            self.order = [int(j) for _ in range(c.lp_rounds) for j in rng.permutation(self.m)]
            self.tau, self.B, self.C = 0, np.zeros((self.m, self.m)), np.zeros((self.m, self.m))
            self.phase = "lp"
            return Segment(self.p.tolist(), 0, evaluate=True, kind="learn_params",  # L^0 of this round
                           eval_sequences=c.lp_eval_sequences)
        if self.phase == "lp":
            j = self.order[self.tau]
            return Segment(self.P[j].tolist(), c.lp_steps, exact=True, slots=c.lp_slots, evaluate=True,
                           kind="learn_params", eval_sequences=c.lp_eval_sequences)
        if self.phase == "train":
            self.phase = "start"
            self.round += 1
            round_end = c.prior_steps + self.round * self.round_steps
            return Segment(self.p.tolist(), min(round_end, self.total_steps) - step, kind="train")
        if self.phase == "done":
            return Segment(self.p.tolist(), self.total_steps - step, kind="train")
        raise AssertionError(self.phase)

    def observe(self, obs: Observation) -> None:
        if self.phase != "lp":
            return
        if self.L_prev is None:  # the evaluation-only segment that opens the round: L^0
            self.L_prev = obs.val_losses.copy()
            return
        j = self.order[self.tau]
        self.B[:, j] += self.L_prev - obs.val_losses  # every group's drop during an interval on mixture j
        if obs.group_counts is None:
            raise ValueError("Aioli's LearnParams needs the group counts of each interval's batches "
                             "(Observation.group_counts)")
        self.C[j] += obs.group_counts
        self.L_prev = obs.val_losses.copy()
        self.tau += 1
        if self.tau == len(self.order):
            self._finish_learn_params(obs.step)

    def _finish_learn_params(self, step: int) -> None:
        c = self.config
        beta = self.B / c.lp_rounds
        # Row j: the mixture the intervals on target j really trained on, over all of them (exact integer sums, so
        # a rule whose batches never vary gives counts / B to the last bit).
        P_round = self.C / self.C.sum(axis=1, keepdims=True)
        A = solve_interaction_matrix(beta, P_round, c.diagonal)
        A_bar = normalize_interaction(A)
        if c.ema is None:  # Algorithm 1: cumulative exponentiated gradient
            self.p = eg_update(self.p, A_bar, c.eta)
        else:  # released configs: softmax of the EMA of normalised matrices, from a fixed base
            self.ema_matrix = A_bar if self.ema_matrix is None else (1 - c.ema) * A_bar + c.ema * self.ema_matrix
            self.p = eg_update(self.base, self.ema_matrix, c.eta)
        round_len = min(self.round_steps, self.total_steps - (c.prior_steps + self.round * self.round_steps))
        self.record(step, self.p, A, A_normalized=A_bar.tolist(), lp_fraction=self.lp_total / round_len,
                    round=self.round)
        self.phase, self.L_prev = "train", None

    # ------------------------------------------------------------------ state
    def state_dict(self):
        return {**super().state_dict(), "p": self.p.tolist(), "base": self.base.tolist(),
                "ema_matrix": None if self.ema_matrix is None else self.ema_matrix.tolist(), "phase": self.phase,
                "round": self.round, "order": self.order, "tau": self.tau, "B": self.B.tolist(), "C": self.C.tolist(),
                "L_prev": None if self.L_prev is None else self.L_prev.tolist()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.p, self.base = np.array(state["p"]), np.array(state["base"])
        self.ema_matrix = None if state["ema_matrix"] is None else np.array(state["ema_matrix"])
        self.phase, self.round, self.order, self.tau = state["phase"], state["round"], state["order"], state["tau"]
        self.B = np.array(state["B"])
        if "C" in state:
            self.C = np.array(state["C"])
        else:  # a checkpoint from before the loop reported counts: its intervals held the old rule's nominal counts
            self.C = np.zeros_like(self.B)
            for j in self.order[:self.tau]:
                self.C[j] += largest_remainder_counts(self.P[j], self.ctx.batch_size) * self.config.lp_steps
        self.L_prev = None if state["L_prev"] is None else np.array(state["L_prev"])

    def summary(self):
        return {**super().summary(), "final_proportions": self.p.tolist(),
                "form": "cumulative" if self.config.ema is None else "ema"}
