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


def round_colsums(result: dict) -> list[np.ndarray]:
    """colsum(Ā^t), one per LearnParams round of a finished run (the rounds its policy history records Ā^t for)."""
    return [np.asarray(rec["A_normalized"], dtype=float).sum(axis=0)
            for rec in result["policy"]["history"] if rec.get("A_normalized") is not None]


def reach_summary(results: list[dict]) -> dict:
    """How far Aioli runs (finished results of one setting) moved their mixture, against :func:`eg_band`: the spread
    of colsum(Ā^t) per round (max - min; what η multiplies), and the extreme proportions reached."""
    spreads = [float(col.max() - col.min()) for res in results for col in round_colsums(res)]
    props = np.asarray([rec["proportions"] for res in results for rec in res["policy"]["history"]], dtype=float)
    cfg = results[0]["config"]["method_config"]
    m = len(results[0]["groups"])
    low, high = eg_band(m, cfg["eta"])
    return {"m": m, "eta": cfg["eta"], "runs": len(results), "rounds": len(spreads), "band_low": low,
            "band_high": high, "colsum_spread_median": float(np.median(spreads)) if spreads else float("nan"),
            "colsum_spread_max": float(np.max(spreads)) if spreads else float("nan"),
            "p_min": float(props.min()), "p_max": float(props.max()),
            "max_dev_from_uniform": float(np.abs(props - 1.0 / m).max())}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b)) / norm if norm > 0 else float("nan")


NULL_DRAWS = 10_000
"""Draws of the random-direction null behind ``estimate_agreement``'s p-values (p resolves to 1e-4)."""


def random_directions(rng: np.random.Generator, shape: tuple[int, ...], m: int) -> np.ndarray:
    """Unit vectors drawn uniformly from the sphere of the sum-zero subspace of R^m (where a centred colsum lives):
    an isotropic Gaussian, centred (a projection keeps it isotropic in the subspace), then normalised. For m = 2 this
    is ±(1, -1)/√2 with probability 1/2 each. Shape ``shape + (m,)``."""
    z = rng.standard_normal((*shape, m))
    z -= z.mean(axis=-1, keepdims=True)
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def _unit(d: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(d, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, d / np.where(norm > 0, norm, 1.0), np.nan)


def _across_statistic(units: np.ndarray) -> np.ndarray:
    """Mean over rounds of the mean pairwise cosine between runs. ``units``: (..., rounds, runs, m) unit vectors."""
    cos = np.einsum("...rim,...rjm->...rij", units, units)
    i, j = np.triu_indices(units.shape[-2], k=1)
    per_round = np.nanmean(cos[..., i, j], axis=-1)
    return np.nanmean(per_round, axis=-1)


def _upper_p(observed: float, null: np.ndarray) -> float:
    """One-sided p-value of ``observed`` against draws of its null: (1 + #{null >= observed}) / (1 + draws). The
    tolerance counts the ties of a discrete null (m = 2: every cosine is ±1) as at least as extreme."""
    return float((1 + np.count_nonzero(null >= observed - 1e-9)) / (1 + len(null)))


def estimate_agreement(results: list[dict], draws: int = NULL_DRAWS) -> dict:
    """Is Aioli's estimate of where to move p signal or noise? Finished runs of one setting (different seeds).

    For round k, the direction d_k = colsum(Ā^t) - mean is what exponentiated gradient follows. If it reflects the
    data, runs of different seeds should point the same way at the same round (``across_seeds_cos``: mean pairwise
    cosine, averaged over rounds), and one run's consecutive rounds should too (``lag1_cos``). The first round
    (taken a few steps into training) is reported apart (``first_round_cos``): every group's loss is falling fast
    there, and it is the round most likely to carry signal.

    p-values are one-sided (agreement above chance) against the random-direction null: every run's d_k drawn
    independently and uniformly from the directions available (``random_directions``), the same runs and rounds,
    ``draws`` seeded draws. Rounds are independent under it: each round's Ā^t is estimated afresh (the EMA acts on
    the update, not on the recorded Ā^t). ``across_seeds_p_floor`` is the p-value perfect agreement (a cosine of 1
    at every later round) would get from the same runs and rounds: the smallest p they allow. For m = 2 it is
    2^((1 - n)·r) for n seeds and r later rounds (1/64 for 3 seeds and 3 rounds), so too few of either cannot show
    agreement whatever the estimates do. A t-test would not do: for m = 2 a pair's cosine is ±1, so with 3 seeds a
    round's mean is 1 (probability 1/4 by chance) or -1/3, and three rounds all at -1/3 (probability 27/64) have no
    variance, which a t-test reads as p = 0.
    """
    # Centred: the only part of colsum(Ā^t) the update acts on (a softmax ignores a common shift).
    dirs = [[col - col.mean() for col in round_colsums(r)] for r in results]
    dirs = [d for d in dirs if d]
    if not dirs:
        raise ValueError("no LearnParams round with A_normalized in these results")
    m = len(dirs[0][0])
    n_rounds = min(len(d) for d in dirs)
    rng = np.random.default_rng(0)  # the null's draws: seeded, so a table re-renders byte-identical

    units = _unit(np.array([[d[k] for d in dirs] for k in range(n_rounds)]))  # (rounds, runs, m)
    first = float(_across_statistic(units[:1])) if len(dirs) > 1 else float("nan")
    later = units[1:]
    finite = later[np.isfinite(later).all(axis=(1, 2))]  # a round with a zero direction has no cosine: left out
    if len(dirs) > 1 and len(finite):
        a_mean = float(_across_statistic(finite))
        null = _across_statistic(random_directions(rng, (draws, *finite.shape[:2]), m))
        a_p = _upper_p(a_mean, null) if len(finite) >= 2 else float("nan")
        a_floor = _upper_p(1.0, null) if len(finite) >= 2 else float("nan")
    else:
        a_mean, a_p, a_floor = float("nan"), float("nan"), float("nan")

    lag1 = np.array([_cosine(d[k], d[k + 1]) for d in dirs for k in range(1, len(d) - 1)], dtype=float)
    lag1 = lag1[np.isfinite(lag1)]
    l_p = float("nan")
    if len(lag1) >= 2:
        # the same pairs of consecutive rounds, each run's rounds 1.. drawn afresh
        null = np.concatenate([np.einsum("bkm,bkm->bk", u[:, :-1], u[:, 1:]) for u in
                               (random_directions(rng, (draws, len(d) - 1), m) for d in dirs if len(d) > 2)], axis=1)
        l_p = _upper_p(float(lag1.mean()), null.mean(axis=1))
    return {"m": len(results[0]["groups"]), "runs": len(dirs), "rounds": n_rounds,
            "first_round_cos": first,
            "across_seeds_cos": a_mean, "across_seeds_p": a_p, "across_seeds_n": len(finite) if len(dirs) > 1 else 0,
            "across_seeds_p_floor": a_floor,
            "lag1_cos": float(lag1.mean()) if len(lag1) else float("nan"), "lag1_p": l_p, "lag1_n": len(lag1)}


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
