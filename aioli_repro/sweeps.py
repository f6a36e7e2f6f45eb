"""Sweep mixtures for fitting mixing laws: the m = 2 grid and a well-spread Dirichlet cover for m >= 3.

* m = 2: p_1 in {0.1, ..., 0.9} (the official sweeps exclude the pure-group extremes 0 and 1).
* m >= 3: draw many Dirichlet points, then repeatedly merge the closest pair into its midpoint until n remain
  (the procedure of the official ``dirichlet_cover.py``, implemented independently here), which spreads the points
  more evenly over the simplex than n plain Dirichlet draws.
"""

from __future__ import annotations

import numpy as np

__all__ = ["grid_mixtures_2", "dirichlet_cover", "sweep_mixtures"]

# Decimals kept by the m = 2 grid, so 3 * 0.1 is stored as 0.3 and not 0.30000000000000004.
_GRID_DECIMALS = 12


def grid_mixtures_2(step: float = 0.1) -> np.ndarray:
    """The m = 2 sweep: rows (p_1, 1 - p_1) for p_1 = step, 2 step, ..., 1 - step; (9, 2) for the default step 0.1."""
    if not (isinstance(step, (int, float)) and 0 < step < 1):
        raise ValueError(f"step must be a number in (0, 1), got {step!r}")
    k = round(1.0 / step)
    if abs(k * step - 1.0) > 1e-9 or k < 2:
        raise ValueError(f"step must divide 1 into at least 2 equal parts (e.g. 0.1, 0.05), got {step!r}")
    p1 = np.round(np.arange(1, k) / k, _GRID_DECIMALS)
    p2 = np.round(1.0 - p1, _GRID_DECIMALS)
    return np.column_stack([p1, p2])


def _closest_pair(D: np.ndarray) -> tuple[int, int]:
    """Indices (i < j) of the smallest entry of a symmetric distance matrix whose diagonal and dead rows are inf."""
    flat = int(np.argmin(D))
    i, j = divmod(flat, D.shape[1])
    return (i, j) if i < j else (j, i)


def dirichlet_cover(m: int, n: int, *, alpha: float = 1.0, seed: int = 0, oversample: int = 16) -> np.ndarray:
    """n well-spread mixtures on the m-simplex, shape (n, m).

    Draws n * oversample points from Dirichlet(alpha * 1) and repeatedly replaces the closest pair (Euclidean) by its
    midpoint until n remain. The full pairwise distance matrix is kept and only the merged point's row and column are
    recomputed after each merge, so each step is one argmin over the matrix. Deterministic for a given seed; ties
    between equally close pairs go to the lowest flat index.
    """
    if not (isinstance(m, (int, np.integer)) and m >= 2):
        raise ValueError(f"m (number of groups) must be an integer >= 2, got {m!r}")
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n (number of mixtures) must be an integer >= 1, got {n!r}")
    if not (isinstance(oversample, (int, np.integer)) and oversample >= 1):
        raise ValueError(f"oversample must be an integer >= 1, got {oversample!r}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be positive, got {alpha!r}")

    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.full(m, float(alpha)), size=n * oversample)
    D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(D, np.inf)
    alive = np.ones(len(X), dtype=bool)
    for _ in range(len(X) - n):
        i, j = _closest_pair(D)
        X[i] = 0.5 * (X[i] + X[j])
        alive[j] = False
        D[j, :] = np.inf
        D[:, j] = np.inf
        d_i = np.sqrt(((X - X[i]) ** 2).sum(-1))
        d_i[~alive] = np.inf
        d_i[i] = np.inf
        D[i, :] = d_i
        D[:, i] = d_i
    out = X[alive]
    # Midpoints of simplex points are on the simplex; renormalising only removes rounding drift.
    out = np.clip(out, 0.0, None)
    return out / out.sum(axis=1, keepdims=True)


def sweep_mixtures(m: int, n: int | None = None, *, seed: int = 0) -> np.ndarray:
    """The sweep used to fit a mixing law: the grid for m = 2, a Dirichlet cover of n (default 10) points for m >= 3.

    For m = 2, ``n`` (default 9) sets the grid step to 1 / (n + 1); the grid does not depend on the seed.
    """
    if not (isinstance(m, (int, np.integer)) and m >= 2):
        raise ValueError(f"m (number of groups) must be an integer >= 2, got {m!r}")
    if m == 2:
        if n is None:
            return grid_mixtures_2()
        if not (isinstance(n, (int, np.integer)) and n >= 1):
            raise ValueError(f"n (number of mixtures) must be an integer >= 1, got {n!r}")
        return grid_mixtures_2(1.0 / (n + 1))
    return dirichlet_cover(m, 10 if n is None else n, seed=seed)
