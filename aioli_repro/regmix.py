"""RegMix (Liu et al. 2024, "RegMix: Data Mixture as Regression for Language Model Pre-training"), the regression part.

The method: train N small proxy runs on random mixtures, fit a regression (LightGBM) from mixture to validation loss,
score many simulated random mixtures with it, and average the top-k predicted ones into the final static mixture.
:func:`methods.run_method` trains the proxies (cached, in parallel through the Runner) and the final run; this module
holds the parts that need no training, so that they can be tested on planted laws:

* :func:`sample_mixtures`: N mixtures from a Dirichlet around the prior, with a concentration drawn per sample from
  15 log-spaced strengths in [0.1, 5] (small strengths give near-vertex mixtures, large ones near-prior mixtures),
  entries below ``minimum`` set to 0 and the rest rounded to multiples of it, as the released mixture synthesiser does
  (without its rejection of mixtures above 4 times a group's prior share, a repetition cap that with a uniform prior
  binds only from five groups on; the released regression simulates from one Dirichlet(prior), we reuse this scheme).
  The prior is uniform here (the paper uses the corpus's token distribution, softened by a temperature of 0.5; our
  groups are mixed from their own streams, and uniform is the bench's baseline);
* :func:`fit_regression`: LightGBM gradient-boosted trees, seeded and single-threaded with ``deterministic`` on, so
  that the same proxies give the same trees on any machine;
* :func:`regmix_mixture`: the simulation and the top-k average.

Implied A. RegMix has no natural A^t in LMO terms: it is a static method (one mixture, no rounds), and its regression
maps a mixture to one scalar, the average validation loss, not to each group's loss, so there is no m x m matrix to
read off. What the fit does give is a vector of sensitivities, the change of the predicted average loss when the final
mixture moves a step towards each group (``sensitivities``); it is recorded as a descriptive artefact, not as an A.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["RegMixPlan", "sample_mixtures", "fit_regression", "regmix_mixture", "sensitivities",
           "cross_validated_spearman"]

STRENGTHS = np.logspace(np.log10(0.1), np.log10(5.0), 15)
"""The Dirichlet concentrations the released synthesiser draws from (MIN_STRENGTH 0.1, MAX_STRENGTH 5, 15 steps)."""
_PROXY_STREAM, _SIM_STREAM, _FOLD_STREAM = 0x7267, 0x7369, 0x6376  # separate seeded streams: proxies, simulation, folds


@dataclass(frozen=True)
class RegMixPlan:
    """RegMix's hyperparameters for one setting (``hparams.regmix_config`` builds it from the step budget)."""

    n_proxies: int = 64
    """N, proxy runs on random mixtures (paper: 512)."""
    proxy_steps: int = 125
    """Steps of each proxy run."""
    proxy_preset: str = "300k"
    """Model preset of the proxies (paper: 1M parameters for 1B targets)."""
    proxy_warmup_steps: int = 4
    """Warm-up of the proxies' learning rate schedule (the profile's, scaled to the proxy length)."""
    proxy_eval_sequences: int = 256
    """Validation windows per group scoring each proxy (evenly spaced; the profile's cap if smaller)."""
    simulations: int = 100_000
    """Simulated mixtures scored by the fitted regression (paper: 100,000)."""
    top_k: int = 128
    """The best-predicted simulated mixtures averaged into the final mixture (paper: 128)."""
    minimum: float = 1e-3
    """Proxy mixture entries below this are 0, the rest rounded to multiples of it (paper: 2e-4 for 1B-token proxies;
    ours see about 1,000 sequences, so a group below 1e-3 would get no sequence at all)."""
    lgbm: dict = field(default_factory=lambda: {"learning_rate": 0.01, "num_iterations": 1000,
                                                "min_data_in_leaf": 4})
    """LightGBM settings beyond the defaults (paper: learning rate 1e-2, 1,000 iterations, LightGBM's default
    min_data_in_leaf of 20 for 512 proxies; ours keeps about the same share of the proxies per leaf)."""

    def to_dict(self) -> dict:
        return {"n_proxies": self.n_proxies, "proxy_steps": self.proxy_steps, "proxy_preset": self.proxy_preset,
                "proxy_warmup_steps": self.proxy_warmup_steps, "proxy_eval_sequences": self.proxy_eval_sequences,
                "simulations": self.simulations, "top_k": self.top_k, "minimum": self.minimum, "lgbm": dict(self.lgbm)}


def _dirichlet(rng: np.random.Generator, m: int, n: int, prior=None) -> np.ndarray:
    prior = np.full(m, 1.0 / m) if prior is None else np.asarray(prior, dtype=float) / np.sum(prior)
    strengths = rng.choice(STRENGTHS, size=n)
    # Gamma draws per row with shape prior * strength: Dirichlet(prior * strength) row by row, vectorised.
    g = rng.gamma(np.outer(strengths, prior))
    s = g.sum(axis=1, keepdims=True)
    bad = (s[:, 0] <= 0) | ~np.isfinite(s[:, 0])  # all entries underflowed (tiny concentrations): redraw as uniform
    g[bad], s[bad] = 1.0, m
    return g / s


def sample_mixtures(m: int, n: int, seed: int, minimum: float = 1e-3, prior=None) -> np.ndarray:
    """N proxy mixtures: Dirichlet draws around ``prior`` (uniform if None), entries below ``minimum`` zeroed, the rest
    rounded to multiples of ``minimum`` and renormalised. Seeded by ``seed`` alone."""
    rng = np.random.default_rng([int(seed), _PROXY_STREAM, m])
    P = _dirichlet(rng, m, n, prior)
    P = np.where(P < minimum, 0.0, P)
    P = np.round(P / P.sum(axis=1, keepdims=True) / minimum) * minimum
    empty = P.sum(axis=1) <= 0
    P[empty] = np.eye(m)[rng.integers(m, size=int(empty.sum()))]
    return P / P.sum(axis=1, keepdims=True)


def fit_regression(P, y, seed: int, params: dict | None = None):
    """A LightGBM regression from mixtures ``P`` (n, m) to targets ``y`` (n,): seeded, one thread, deterministic."""
    import lightgbm as lgb  # lazy: only RegMix needs it

    params = dict(params or {})
    rounds = int(params.pop("num_iterations", 1000))
    full = {"objective": "regression", "boosting": "gbdt", "seed": int(seed), "deterministic": True,
            "force_row_wise": True, "num_threads": 1, "verbosity": -1, "min_data_in_bin": 1,
            "feature_pre_filter": False, **params}
    data = lgb.Dataset(np.asarray(P, dtype=float), np.asarray(y, dtype=float), params=full)
    return lgb.train(full, data, num_boost_round=rounds)


def sensitivities(model, p, h: float = 0.1) -> list[float]:
    """Change of the predicted target per unit step from ``p`` towards each group's vertex: (f(p + h(e_j - p)) -
    f(p)) / h. Negative: moving towards group j lowers the predicted average validation loss."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    Q = np.vstack([p] + [p + h * (np.eye(m)[j] - p) for j in range(m)])
    f = model.predict(Q)
    return ((f[1:] - f[0]) / h).tolist()


def regmix_mixture(P, y, seed: int, plan: RegMixPlan = RegMixPlan()) -> tuple[np.ndarray, dict]:
    """RegMix's final mixture from proxy mixtures ``P`` (n, m) and their average validation losses ``y`` (n,): fit,
    score ``plan.simulations`` simulated mixtures, average the ``plan.top_k`` lowest-predicted. Returns the mixture and
    the details recorded with the outcome (fit quality, the top-k's spread, sensitivities)."""
    P, y = np.asarray(P, dtype=float), np.asarray(y, dtype=float)
    if P.ndim != 2 or len(P) != len(y) or len(y) < 2:
        raise ValueError(f"RegMix needs at least two proxies with one target each; got P {P.shape}, y {y.shape}")
    m = P.shape[1]
    model = fit_regression(P, y, seed, plan.lgbm)
    rng = np.random.default_rng([int(seed), _SIM_STREAM, m])
    S = _dirichlet(rng, m, plan.simulations)
    pred = model.predict(S)
    k = min(plan.top_k, len(S))
    top = np.argsort(pred, kind="stable")[:k]
    p = S[top].mean(axis=0)
    p = p / p.sum()
    fitted = model.predict(P)
    spearman = float(np.corrcoef(np.argsort(np.argsort(fitted)), np.argsort(np.argsort(y)))[0, 1]) \
        if np.ptp(y) > 0 and np.ptp(fitted) > 0 else float("nan")
    details = {"plan": plan.to_dict(), "fit_rmse": float(np.sqrt(np.mean((fitted - y) ** 2))),
               "fit_spearman": spearman, "top_k_predicted": [float(pred[top].min()), float(pred[top].max())],
               "top_k_spread": S[top].std(axis=0).tolist(), "sensitivities": sensitivities(model, p)}
    return p, details


def cross_validated_spearman(P, y, seed: int, plan: RegMixPlan = RegMixPlan(), folds: int = 8) -> float:
    """Out-of-sample quality of RegMix's regression: split the proxies into ``folds`` seeded folds, fit on the others
    with the plan's settings, predict each held-out fold, and return the Spearman correlation of all out-of-fold
    predictions with the proxies' targets. The in-sample ``fit_spearman`` of 1,000 boosting rounds is close to 1
    whether or not the mixture predicts the loss; this is close to 0 when it does not."""
    from scipy.stats import spearmanr

    P, y = np.asarray(P, dtype=float), np.asarray(y, dtype=float)
    if P.ndim != 2 or len(P) != len(y) or not 2 <= folds <= len(y):
        raise ValueError(f"cross-validation needs 2 <= folds <= proxies; got {folds} folds, P {P.shape}, y {y.shape}")
    order = np.random.default_rng([int(seed), _FOLD_STREAM, len(y)]).permutation(len(y))
    out = np.empty(len(y))
    for held in np.array_split(order, folds):
        train = np.setdiff1d(order, held)
        out[held] = fit_regression(P[train], y[train], seed, plan.lgbm).predict(P[held])
    if np.ptp(out) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(out, y).statistic)
