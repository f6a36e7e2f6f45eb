"""Mixing laws: fitting the static and dynamic laws of the LMO framework, and comparing a method's A with the truth.

Conventions (shared by every function here):

* m data groups; ``P`` is an (n, m) array of mixtures, one row p per run, each row on the simplex.
* Loss arrays are (n, m): column i is the validation loss of group i under the mixture in the same row.
* Sign convention: A_ij > 0 means that training on group j LOWERS the loss of group i.

The two laws (paper §1.3 of the spec):

* static, log-linear (T = 1, sigma = exp):   L_i(p) = c_i + b_i * exp(-sum_j A_ij p_j)
* dynamic, linear (T > 1, sigma = Id):       L^{t+1}_i = L^t_i - sum_j A_ij p_j

Fidelity (spec §4.3): ``similarity`` is sim(A_method, A_true) = 0.5 cos(a, b) + 0.5 Spearman(a, b) on the normalised
column sums, the quantity exponentiated gradient uses to rank groups.

R^2 is always 1 - SS_res / SS_tot with SS_tot taken about the mean of the *observed* losses (the official m = 2
notebooks swap the arguments of ``sklearn.r2_score``; we do not).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

__all__ = [
    "StaticLawFit",
    "DynamicLawFit",
    "fit_static_law",
    "optimal_mixture",
    "fit_dynamic_law",
    "fit_method_scale",
    "similarity",
    "similarity_parts",
    "r2_score",
]

# Rows of P must sum to 1 within this. Loose enough for mixtures written with 6 decimals (the official
# dirichlet_weights files), tight enough to catch unnormalised weights.
SIMPLEX_ATOL = 1e-4
# The static-law slopes are bounded so exp() can never overflow; |A_ij| = 50 already means exp(-50) ~ 2e-22.
_T_BOUND = 50.0


# ----------------------------------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------------------------------


def _as_finite_array(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {x!r}") from e
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))
        raise ValueError(f"{name} contains NaN or infinity (first at index {tuple(int(v) for v in bad[0])})")
    return arr


def _check_mixtures(P: Any, m: int | None = None, name: str = "P") -> np.ndarray:
    """Return P as a float (n, m) array with rows renormalised onto the simplex; raise ValueError if it is not one."""
    arr = _as_finite_array(P, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n mixtures, m groups) array, got shape {arr.shape}")
    n, m_got = arr.shape
    if n == 0:
        raise ValueError(f"{name} has no mixtures (shape {arr.shape})")
    if m is not None and m_got != m:
        raise ValueError(f"{name} has {m_got} groups (columns) but {m} were expected")
    if m_got < 2:
        raise ValueError(f"{name} must have at least 2 groups (columns), got {m_got}")
    if np.any(arr < -1e-12):
        k = int(np.argwhere(arr < -1e-12)[0, 0])
        raise ValueError(f"{name} row {k} has a negative proportion, not on the simplex: {arr[k].tolist()}")
    sums = arr.sum(axis=1)
    off = np.abs(sums - 1.0) > SIMPLEX_ATOL
    if np.any(off):
        k = int(np.argmax(off))
        raise ValueError(
            f"{name} row {k} sums to {sums[k]:.6g}, not 1: rows of {name} must lie on the simplex "
            f"(tolerance {SIMPLEX_ATOL:g})"
        )
    arr = np.clip(arr, 0.0, None)
    return arr / arr.sum(axis=1, keepdims=True)


def _check_losses(L: Any, shape: tuple[int, int], name: str) -> np.ndarray:
    arr = _as_finite_array(L, name)
    if arr.shape != shape:
        raise ValueError(
            f"{name} has shape {arr.shape} but shape {shape} (n mixtures, m groups) matching P was expected"
        )
    return arr


def _check_prev_losses(L_prev: Any, n: int, m: int, name: str = "L_prev") -> np.ndarray:
    """L^t as an (n, m) array: a single parent's (m,) losses are broadcast to every row."""
    arr = _as_finite_array(L_prev, name)
    if arr.shape == (m,):
        return np.broadcast_to(arr, (n, m)).copy()
    if arr.shape == (n, m):
        return arr
    raise ValueError(f"{name} must have shape ({m},) (one parent) or ({n}, {m}) (one parent per row), got {arr.shape}")


def _check_square(A: Any, name: str, m: int | None = None) -> np.ndarray:
    arr = _as_finite_array(A, name)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square (m, m) matrix, got shape {arr.shape}")
    if m is not None and arr.shape[0] != m:
        raise ValueError(f"{name} is {arr.shape[0]}x{arr.shape[0]} but there are {m} groups")
    return arr


# ----------------------------------------------------------------------------------------------------------------------
# Goodness of fit
# ----------------------------------------------------------------------------------------------------------------------


def r2_score(y_true: Any, y_pred: Any) -> np.ndarray | float:
    """Coefficient of determination R^2 = 1 - SS_res / SS_tot, per column (per group, over mixtures).

    Accepts (n,) -> float or (n, m) -> (m,) array. A column whose observed values are all equal has SS_tot = 0 and no
    meaningful R^2: it gets NaN instead of a division error.
    """
    yt = _as_finite_array(y_true, "y_true")
    yp = _as_finite_array(y_pred, "y_pred")
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has shape {yt.shape} but y_pred has shape {yp.shape}")
    if yt.ndim not in (1, 2) or yt.shape[0] == 0:
        raise ValueError(f"r2_score expects a non-empty (n,) or (n, m) array, got shape {yt.shape}")
    col = yt.ndim == 1
    yt2, yp2 = (yt[:, None], yp[:, None]) if col else (yt, yp)
    ss_res = np.sum((yt2 - yp2) ** 2, axis=0)
    ss_tot = np.sum((yt2 - yt2.mean(axis=0)) ** 2, axis=0)
    # ptp == 0 is the exact test for a constant column (the mean of equal floats need not equal them exactly).
    constant = np.ptp(yt2, axis=0) == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(constant, np.nan, 1.0 - ss_res / np.where(constant, 1.0, ss_tot))
    return float(r2[0]) if col else r2


def _mse(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    return np.mean((y_true - y_pred) ** 2, axis=0)


def _jsonable(x: np.ndarray | None) -> Any:
    """Nested lists with NaN -> None, so json.dumps(..., allow_nan=False) accepts the result."""
    if x is None:
        return None
    arr = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(arr), arr, None).tolist() if arr.ndim else (float(arr) if np.isfinite(arr) else None)


def _from_jsonable(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    return np.array(x, dtype=np.float64)  # None entries become NaN


# ----------------------------------------------------------------------------------------------------------------------
# Static log-linear law
# ----------------------------------------------------------------------------------------------------------------------


class _FitRecord:
    """JSON round trip shared by the fitted laws: every dataclass field as a (nested) list, plus the law's name."""

    law: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"law": self.law, **{f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return cls(**{f.name: _from_jsonable(d[f.name]) for f in dataclasses.fields(cls)})


@dataclass(eq=False)
class StaticLawFit(_FitRecord):
    """Fitted static law L_i(p) = c_i + b_i * exp(-sum_j A_ij p_j).

    Only m - 1 slopes per row are identifiable on the simplex (adding a constant to row i of A is absorbed by b_i), so
    the fit fixes A_im = 0: b_i = exp(beta_i) and A_ij = -t_ij of the reparameterisation
    L_i = c_i + exp(beta_i + sum_{j<m} t_ij p_j). Predictions on the simplex do not depend on this choice.
    """

    law = "static_log_linear"

    c: np.ndarray  # (m,) loss floor, 0 <= c_i <= min observed L_i
    b: np.ndarray  # (m,)
    A: np.ndarray  # (m, m), last column 0
    r2: np.ndarray  # (m,) in-sample R^2 per group
    mse: np.ndarray  # (m,) in-sample MSE per group
    loo_r2: np.ndarray | None = None  # (m,) leave-one-mixture-out R^2
    loo_mse: np.ndarray | None = None

    @property
    def m(self) -> int:
        return int(self.c.shape[0])

    def predict(self, P: Any) -> np.ndarray:
        """Predicted losses L(p), shape (n, m), for mixtures P of shape (n, m)."""
        P = _check_mixtures(P, self.m)
        return _static_predict(self.c, self.b, self.A, P)

def _static_predict(c: np.ndarray, b: np.ndarray, A: np.ndarray, P: np.ndarray) -> np.ndarray:
    return c[None, :] + b[None, :] * np.exp(-P @ A.T)


def _static_residuals(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """theta = (c, beta, t_1..t_{m-1}); X = P[:, :m-1]."""
    return theta[0] + np.exp(theta[1] + X @ theta[2:]) - y


def _static_jacobian(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    e = np.exp(theta[1] + X @ theta[2:])
    return np.column_stack([np.ones_like(e), e, e[:, None] * X])


def _static_starts(X: np.ndarray, y: np.ndarray, n_starts: int, rng: np.random.Generator) -> np.ndarray:
    """Initial (c, beta, t) points for one group.

    Half the starts take c from an even grid in [0, min y) and (beta, t) from the linear regression of log(y - c) on p,
    which is exact for noise-free data with the right c; the other half take random (beta, t), so a poor grid of c
    cannot trap every start in the same basin.
    """
    k = X.shape[1]
    y_min = float(y.min())
    n_grid = max(1, (n_starts + 1) // 2)
    starts = []
    design = np.column_stack([np.ones(len(y)), X])
    for frac in np.linspace(0.0, 0.98, n_grid):
        c0 = frac * y_min
        coef, *_ = np.linalg.lstsq(design, np.log(y - c0), rcond=None)
        starts.append(np.concatenate([[c0], coef]))
    for _ in range(n_starts - n_grid):
        c0 = rng.uniform(0.0, 0.98) * y_min
        beta0 = math.log(max(float(y.mean()) - c0, 1e-12)) + rng.uniform(-1.0, 1.0)
        t0 = rng.uniform(-3.0, 3.0, size=k)
        starts.append(np.concatenate([[c0, beta0], t0]))
    out = np.array(starts)
    out[:, 2:] = np.clip(out[:, 2:], -_T_BOUND * 0.99, _T_BOUND * 0.99)
    return out


def _fit_static_group(P: np.ndarray, y: np.ndarray, n_starts: int, seed: int, group: int, huber_delta: float):
    """Best (c, beta, t) for one group by the Huber objective over all starts."""
    X = P[:, :-1]
    k = X.shape[1]
    # beta = log b_i is L_i - c_i extrapolated to the vertex e_m; with |t| <= _T_BOUND it can be at most
    # ~exp(_T_BOUND) times the observed scale, and bounding it keeps every exponent far from overflow.
    log_scale = math.log(float(y.max()))
    lower = np.concatenate([[0.0, log_scale - 2 * _T_BOUND], np.full(k, -_T_BOUND)])
    upper = np.concatenate([[float(y.min()), log_scale + _T_BOUND], np.full(k, _T_BOUND)])
    # One independent stream per (seed, group): results do not depend on the order groups are fitted in.
    rng = np.random.default_rng([seed, group])
    best_cost, best_theta = np.inf, None
    for x0 in _static_starts(X, y, n_starts, rng):
        x0 = np.clip(x0, lower, upper)
        try:
            res = optimize.least_squares(
                _static_residuals,
                x0,
                jac=_static_jacobian,
                bounds=(lower, upper),
                loss="huber",
                f_scale=huber_delta,
                args=(X, y),
                xtol=1e-12,
                ftol=1e-12,
                gtol=1e-12,
                max_nfev=500,
            )
        except ValueError:  # defensive: a start whose residuals are not finite; the other starts cover for it
            continue
        if np.isfinite(res.cost) and res.cost < best_cost:
            best_cost, best_theta = res.cost, res.x
    if best_theta is None:
        raise RuntimeError(f"static-law fit of group {group} failed from every start")
    return best_theta


def _fit_static_params(P: np.ndarray, L: np.ndarray, n_starts: int, seed: int, huber_delta: float):
    m = P.shape[1]
    c, b, A = np.zeros(m), np.zeros(m), np.zeros((m, m))
    for i in range(m):
        theta = _fit_static_group(P, L[:, i], n_starts, seed, i, huber_delta)
        c[i], b[i] = theta[0], math.exp(theta[1])
        A[i, :-1] = -theta[2:]  # t_ij = -A_ij with A_im fixed at 0
    return c, b, A


def fit_static_law(
    P: Any,
    L: Any,
    *,
    n_starts: int = 64,
    seed: int = 0,
    huber_delta: float = 0.02,
    loo: bool = False,
) -> StaticLawFit:
    """Fit the static log-linear law L_i(p) = c_i + b_i exp(-sum_j A_ij p_j) to a sweep, each group independently.

    Each group's m + 1 free parameters (c_i, beta_i, t_i1..t_i,m-1) are fitted with a Huber loss of scale
    ``huber_delta`` (robust, as in the paper) from ``n_starts`` seeded starts, keeping the best by the robust
    objective; c_i is bounded to [0, min over mixtures of L_i]. With ``loo=True`` every mixture k is also predicted by
    a refit on the other n - 1 mixtures, giving out-of-sample R^2 and MSE per group. Cost: each start is one small
    least-squares solve (a few ms), so a fit is ~m * n_starts solves and ``loo=True`` multiplies that by n + 1.
    """
    P = _check_mixtures(P)
    n, m = P.shape
    L = _check_losses(L, (n, m), "L")
    if np.any(L <= 0):
        raise ValueError(
            "the static log-linear law needs positive losses L (it is c_i + a positive exp term, c_i >= 0)"
        )
    n_params = m + 1
    if n < n_params:
        raise ValueError(f"{n} mixtures are fewer than the {n_params} parameters per group of the static law (m = {m})")
    if loo and n - 1 < n_params:
        raise ValueError(f"leave-one-out needs n - 1 >= {n_params} mixtures (the parameters per group), got n = {n}")
    if n_starts < 1:
        raise ValueError(f"n_starts must be >= 1, got {n_starts}")
    if not huber_delta > 0:
        raise ValueError(f"huber_delta must be positive, got {huber_delta}")

    c, b, A = _fit_static_params(P, L, n_starts, seed, huber_delta)
    pred = _static_predict(c, b, A, P)
    fit = StaticLawFit(c=c, b=b, A=A, r2=r2_score(L, pred), mse=_mse(L, pred))
    if loo:
        loo_pred = np.empty_like(L)
        for k in range(n):
            keep = np.arange(n) != k
            ck, bk, Ak = _fit_static_params(P[keep], L[keep], n_starts, seed, huber_delta)
            loo_pred[k] = _static_predict(ck, bk, Ak, P[k : k + 1])[0]
        fit.loo_r2, fit.loo_mse = r2_score(L, loo_pred), _mse(L, loo_pred)
    return fit


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def optimal_mixture(fit: StaticLawFit, *, n_starts: int = 16, seed: int = 0) -> np.ndarray:
    """argmin over the simplex of the mean over groups of the predicted loss, (1/m) sum_i L_i(p).

    The objective is convex in p (a sum of exponentials of affine functions), but the softmax parameterisation is flat
    near the boundary, so we use several starts (uniform first, then seeded Dirichlet draws) and finish the best with
    SLSQP directly on the simplex, which can land exactly on a face when the optimum is there.
    """
    if not isinstance(fit, StaticLawFit):
        raise TypeError(f"optimal_mixture expects a StaticLawFit, got {type(fit).__name__}")
    if n_starts < 1:
        raise ValueError(f"n_starts must be >= 1, got {n_starts}")
    c, b, A, m = fit.c, fit.b, fit.A, fit.m

    def value_grad_p(p: np.ndarray) -> tuple[float, np.ndarray]:
        e = b * np.exp(-A @ p)  # (m,) b_i exp(-A_i . p)
        return float(np.mean(c + e)), -(A.T @ e) / m

    def value_grad_z(z: np.ndarray) -> tuple[float, np.ndarray]:
        p = _softmax(z)
        f, g = value_grad_p(p)
        return f, p * (g - g @ p)  # chain rule through the softmax Jacobian diag(p) - p p^T

    rng = np.random.default_rng(seed)
    z_starts = [np.zeros(m)] + [np.log(rng.dirichlet(np.ones(m)) + 1e-12) for _ in range(n_starts - 1)]
    best_f, best_p = np.inf, np.full(m, 1.0 / m)
    for z0 in z_starts:
        res = optimize.minimize(value_grad_z, z0, jac=True, method="L-BFGS-B", options={"maxiter": 200, "gtol": 1e-10})
        p = _softmax(res.x)
        f = value_grad_p(p)[0]
        if f < best_f:
            best_f, best_p = f, p

    polish = optimize.minimize(
        value_grad_p,
        best_p,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones_like(p)}],
        options={"ftol": 1e-14, "maxiter": 200},
    )
    if polish.success:
        p = np.clip(polish.x, 0.0, None)
        p /= p.sum()
        if value_grad_p(p)[0] <= best_f:
            best_p = p
    p = np.clip(best_p, 0.0, None)
    return p / p.sum()


def in_convex_hull(p: Any, V: Any, tol: float = 1e-9) -> bool:
    """Is mixture p a convex combination of the rows of V? (A feasibility linear programme.)"""
    V = np.asarray(V, dtype=float)
    p = np.asarray(p, dtype=float)
    n = V.shape[0]
    res = optimize.linprog(np.zeros(n), A_eq=np.vstack([V.T, np.ones(n)]), b_eq=np.append(p, 1.0),
                           bounds=[(0.0, None)] * n, method="highs", options={"primal_feasibility_tolerance": tol})
    return bool(res.status == 0)


def supported_optimal_mixture(fit: StaticLawFit, support: Any, *, n_starts: int = 16, seed: int = 0) -> np.ndarray:
    """``optimal_mixture`` kept inside the convex hull of ``support`` (mixtures the law was fitted on, plus any the
    caller trusts, e.g. uniform): the simplex optimum when it lies there, else the best convex combination
    p = λ·V, λ on the simplex (the objective is convex in λ too; SLSQP from the best vertex and seeded starts).

    A law fitted to n mixtures says nothing about mixtures far from them; on seven groups, ten 50-step sweep runs
    put the unconstrained optimum on the simplex's vertices, where no run was."""
    V = _check_mixtures(support, fit.m, "support")
    p = optimal_mixture(fit, n_starts=n_starts, seed=seed)
    if in_convex_hull(p, V):
        return p
    c, b, A, m = fit.c, fit.b, fit.A, fit.m

    def value_grad(lam: np.ndarray) -> tuple[float, np.ndarray]:
        q = lam @ V
        e = b * np.exp(-A @ q)
        return float(np.mean(c + e)), V @ (-(A.T @ e) / m)

    vals = [value_grad(np.eye(len(V))[k])[0] for k in range(len(V))]
    rng = np.random.default_rng(seed)
    starts = [np.eye(len(V))[int(np.argmin(vals))], np.full(len(V), 1.0 / len(V))]
    starts += [rng.dirichlet(np.ones(len(V))) for _ in range(max(0, n_starts - 2))]
    best_f, best = np.inf, starts[0]
    for lam0 in starts:
        res = optimize.minimize(value_grad, lam0, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * len(V),
                                constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0,
                                              "jac": lambda x: np.ones_like(x)}],
                                options={"ftol": 1e-14, "maxiter": 300})
        lam = np.clip(res.x, 0.0, None)
        lam /= lam.sum()
        if (f := value_grad(lam)[0]) < best_f:
            best_f, best = f, lam
    q = np.clip(best @ V, 0.0, None)
    return q / q.sum()


# ----------------------------------------------------------------------------------------------------------------------
# Dynamic linear law
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class DynamicLawFit(_FitRecord):
    """Fitted dynamic law L^{t+1}_i = L^t_i - sum_j A_ij p_j (A_ij > 0: training on j lowers the loss of i)."""

    law = "dynamic_linear"

    A: np.ndarray  # (m, m)
    r2: np.ndarray  # (m,) R^2 of predicted vs observed L^{t+1}, per group
    mse: np.ndarray  # (m,)
    loo_r2: np.ndarray | None = None
    loo_mse: np.ndarray | None = None

    @property
    def m(self) -> int:
        return int(self.A.shape[0])

    def predict(self, P: Any, L_prev: Any) -> np.ndarray:
        """Predicted L^{t+1}, shape (n, m), from mixtures P (n, m) and L^t of shape (m,) or (n, m)."""
        P = _check_mixtures(P, self.m)
        L_prev = _check_prev_losses(L_prev, *P.shape)
        return L_prev - P @ self.A.T

def _fit_dynamic_A(P: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Least squares for all rows at once: delta[:, i] ~ P @ A[i]  ->  A = lstsq(P, delta).T."""
    m = P.shape[1]
    rank = np.linalg.matrix_rank(P)
    if rank < m:
        # Without an intercept all m slopes are identifiable only if the mixtures span R^m.
        raise ValueError(f"the mixtures P have rank {rank} < m = {m}: the dynamic-law A is not identifiable from them")
    sol, *_ = np.linalg.lstsq(P, delta, rcond=None)
    return sol.T


def fit_dynamic_law(P: Any, L_next: Any, L_prev: Any, *, loo: bool = False) -> DynamicLawFit:
    """Fit the linear dynamic law L^{t+1}_i = L^t_i - sum_j A_ij p_j to branched child runs.

    Children branch from a parent with losses ``L_prev`` (L^t; shape (m,), or (n, m) when rows come from different
    parents assumed to share A), train a short horizon under mixture P[k] and end at ``L_next[k]`` (L^{t+1}). Each row
    of A is the no-intercept least-squares solution of Delta_i = L^t_i - L^{t+1}_i = sum_j A_ij p_j (needs n >= m).
    With ``loo=True`` every child k is also predicted from a fit on the others (needs n >= m + 1).
    """
    P = _check_mixtures(P)
    n, m = P.shape
    L_next = _check_losses(L_next, (n, m), "L_next")
    L_prev = _check_prev_losses(L_prev, n, m)
    if n < m:
        raise ValueError(f"{n} mixtures are fewer than the {m} parameters per group of the dynamic law (m = {m})")
    if loo and n - 1 < m:
        raise ValueError(f"leave-one-out needs n - 1 >= m = {m} mixtures, got n = {n}")
    delta = L_prev - L_next
    A = _fit_dynamic_A(P, delta)
    pred = L_prev - P @ A.T
    fit = DynamicLawFit(A=A, r2=r2_score(L_next, pred), mse=_mse(L_next, pred))
    if loo:
        loo_pred = np.empty_like(L_next)
        for k in range(n):
            keep = np.arange(n) != k
            Ak = _fit_dynamic_A(P[keep], delta[keep])
            loo_pred[k] = L_prev[k] - Ak @ P[k]
        fit.loo_r2, fit.loo_mse = r2_score(L_next, loo_pred), _mse(L_next, loo_pred)
    return fit


def fit_method_scale(M: Any, P: Any, L_next: Any, L_prev: Any) -> float:
    """The single scale s, shared by all groups, for which s * M best explains the observed drops.

    Under the dynamic law with A = s M, Delta_ki = L^t_ki - L^{t+1}_ki = s (M p_k)_i; s is the closed-form least-squares
    solution over all (k, i): s = <X, Delta> / <X, X> with X_ki = (M p_k)_i. This is the paper's Ã^t = b^t A^t for a
    method's own matrix M (no intercepts, as in the m = 3 notebooks).
    """
    P = _check_mixtures(P)
    n, m = P.shape
    M = _check_square(M, "M", m)
    L_next = _check_losses(L_next, (n, m), "L_next")
    L_prev = _check_prev_losses(L_prev, n, m)
    X = P @ M.T
    denom = float(np.sum(X * X))
    if denom == 0.0:
        raise ValueError("M p is zero for every mixture in P, so no scale of M can explain the loss drops")
    return float(np.sum(X * (L_prev - L_next)) / denom)


# ----------------------------------------------------------------------------------------------------------------------
# Similarity between a method's A and the truth
# ----------------------------------------------------------------------------------------------------------------------


def _unit_column_sums(A: np.ndarray, name: str) -> np.ndarray:
    s = A.sum(axis=0)  # one value per trained group j: sum_i A_ij
    norm = float(np.linalg.norm(s))
    if norm == 0.0:
        raise ValueError(
            f"the column sums of {name} are all zero, so their direction (and the similarity) is undefined"
        )
    return s / norm


def similarity_parts(A_method: Any, A_true: Any) -> tuple[float, float]:
    """(cos(a, b), Spearman(a, b)) of the unit-normalised column sums a of ``A_method`` and b of ``A_true``.

    Spearman follows ``scipy.stats.spearmanr`` (average ranks for ties). Where it is undefined because a column-sum
    vector is constant (no ranking at all), we define it as 1 when both are constant (identical, all-tied rankings)
    and 0 when only one is (the constant one carries no ranking information).
    """
    A1 = _check_square(A_method, "A_method")
    A2 = _check_square(A_true, "A_true")
    if A1.shape != A2.shape:
        raise ValueError(f"A_method has shape {A1.shape} but A_true has shape {A2.shape}")
    if A1.shape[0] < 2:
        raise ValueError("similarity needs at least 2 groups (a rank correlation of one value is undefined)")
    a = _unit_column_sums(A1, "A_method")
    b = _unit_column_sums(A2, "A_true")
    cos = float(np.clip(a @ b, -1.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        rho = float(stats.spearmanr(a, b).statistic)
    if np.isnan(rho):
        rho = 1.0 if (np.ptp(a) == 0 and np.ptp(b) == 0) else 0.0
    return cos, rho


def similarity(A_method: Any, A_true: Any) -> float:
    """The paper's sim(Ã^t, A^{t*}) = 0.5 cos(a, b) + 0.5 Spearman(a, b) on unit-normalised column sums.

    Symmetric, invariant to a positive scale of either matrix, 1 for identical matrices; for m = 2 the Spearman term is
    +-1. A constant column-sum vector (e.g. A proportional to the identity) has no ranking: see ``similarity_parts``.
    """
    cos, rho = similarity_parts(A_method, A_true)
    return 0.5 * cos + 0.5 * rho
