"""Aioli's estimates in finished runs: how far they moved the mixture (``reach_summary``, against the band the
released update allows, ``policies.aioli.eg_band``) and whether the direction they point p in repeats across seeds
and rounds (``estimate_agreement``, with p-values from a random-direction null). Notebooks 08 and 12 read runs with
them; nothing here trains, and the policy itself (``policies.aioli``) does not need it.
"""

from __future__ import annotations

import numpy as np

from .policies.aioli import eg_band


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
    """``d`` scaled to unit length along its last axis; NaN where it is zero (a direction with no cosine)."""
    norm = np.linalg.norm(d, axis=-1, keepdims=True)
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
