"""Mixing-law fitting: planted laws are recovered, fidelity metrics match hand computations, bad input is refused."""

import json

import numpy as np
import pytest

from aioli_repro.laws import (
    DynamicLawFit,
    StaticLawFit,
    fit_dynamic_law,
    fit_method_scale,
    fit_static_law,
    optimal_mixture,
    r2_score,
    similarity,
    similarity_parts,
)
from aioli_repro.sweeps import dirichlet_cover, grid_mixtures_2

# ----------------------------------------------------------------------------------------------------------------------
# Planted static laws
# ----------------------------------------------------------------------------------------------------------------------

STATIC_LAWS = {
    2: dict(c=np.array([2.6, 3.0]), b=np.array([0.8, 1.2]), A=np.array([[2.2, 0.4], [0.3, 1.8]])),
    3: dict(
        c=np.array([2.6, 2.9, 3.0]),
        b=np.array([1.0, 0.7, 1.3]),
        A=np.array([[2.0, 0.5, 0.3], [0.4, 1.5, 0.2], [0.6, 0.3, 2.4]]),
    ),
}


def static_truth(m, P):
    law = STATIC_LAWS[m]
    return law["c"] + law["b"] * np.exp(-P @ law["A"].T)


def train_mixtures(m):
    return grid_mixtures_2() if m == 2 else dirichlet_cover(3, 12, seed=0)


def heldout_mixtures(m, n=40, seed=123):
    rng = np.random.default_rng(seed)
    if m == 2:
        p1 = rng.uniform(0.1, 0.9, n)
        return np.column_stack([p1, 1 - p1])
    return rng.dirichlet(np.ones(m), n)


def noisy(L, seed=7, sd=1e-3):
    return L + np.random.default_rng(seed).normal(0.0, sd, L.shape)


@pytest.fixture(scope="module", params=[2, 3], ids=["m2", "m3"])
def noisy_static(request):
    m = request.param
    P = train_mixtures(m)
    return m, P, fit_static_law(P, noisy(static_truth(m, P)), n_starts=8)


@pytest.mark.parametrize("m", [2, 3])
def test_static_law_noise_free_is_recovered(m):
    P = train_mixtures(m)
    fit = fit_static_law(P, static_truth(m, P), n_starts=8)
    Q = heldout_mixtures(m)
    np.testing.assert_allclose(fit.predict(Q), static_truth(m, Q), atol=1e-4)
    # Parameters up to the documented normalisation A_im = 0 (b_i absorbs exp(-A_im)).
    law = STATIC_LAWS[m]
    np.testing.assert_array_equal(fit.A[:, -1], 0.0)
    np.testing.assert_allclose(fit.A, law["A"] - law["A"][:, -1:], atol=1e-3)
    np.testing.assert_allclose(fit.b, law["b"] * np.exp(-law["A"][:, -1]), rtol=1e-3)
    np.testing.assert_allclose(fit.c, law["c"], atol=1e-3)


def test_static_law_noisy_fits_in_and_out_of_sample(noisy_static):
    m, P, fit = noisy_static
    assert fit.r2.shape == fit.mse.shape == (m,)
    assert np.all(fit.r2 > 0.99), fit.r2
    assert np.all(fit.mse < 1e-5), fit.mse
    assert fit.loo_r2 is None and fit.loo_mse is None
    Q = heldout_mixtures(m)
    assert np.all(r2_score(static_truth(m, Q), fit.predict(Q)) > 0.99)
    assert np.all(fit.c >= 0) and np.all(fit.c <= static_truth(m, P).min(axis=0) + 0.01)


@pytest.mark.parametrize("m", [2, 3])
def test_static_law_leave_one_out(m):
    P = train_mixtures(m)
    fit = fit_static_law(P, noisy(static_truth(m, P)), n_starts=3, loo=True)
    assert fit.loo_r2.shape == fit.loo_mse.shape == (m,)
    assert np.all(fit.loo_r2 > 0.95), fit.loo_r2
    # Leave-one-out by hand: refit on the other n - 1 mixtures through the public API, predict the held-out one.
    L = noisy(static_truth(m, P))
    held = np.array([fit_static_law(np.delete(P, k, 0), np.delete(L, k, 0), n_starts=3).predict(P[k:k + 1])[0]
                     for k in range(len(P))])
    np.testing.assert_allclose(fit.loo_mse, ((L - held) ** 2).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(fit.loo_r2, r2_score(L, held), rtol=1e-6)


def test_static_law_is_deterministic_and_serialisable(noisy_static):
    m, P, fit = noisy_static
    L = noisy(static_truth(m, P))
    again = fit_static_law(P, L, n_starts=8)
    np.testing.assert_array_equal(again.A, fit.A)
    np.testing.assert_array_equal(again.c, fit.c)
    d = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    back = StaticLawFit.from_dict(d)
    np.testing.assert_allclose(back.predict(P), fit.predict(P), rtol=0, atol=0)
    assert d["loo_r2"] is None


def test_static_law_huber_resists_one_outlier():
    P = grid_mixtures_2()
    L = noisy(static_truth(2, P))
    L[4, 0] += 0.3  # one corrupted evaluation
    fit = fit_static_law(P, L, n_starts=8)
    Q = heldout_mixtures(2)
    # A least-squares fit would be dragged ~0.3/9 = 0.03 towards the outlier everywhere; Huber stays close.
    assert np.max(np.abs(fit.predict(Q)[:, 0] - static_truth(2, Q)[:, 0])) < 0.01


def test_static_law_constant_group_gives_nan_r2():
    P = grid_mixtures_2()
    L = static_truth(2, P)
    L[:, 1] = 3.0
    fit = fit_static_law(P, L, n_starts=4)
    assert np.isnan(fit.r2[1]) and fit.r2[0] > 0.999
    np.testing.assert_allclose(fit.predict(P)[:, 1], 3.0, atol=1e-6)
    assert json.loads(json.dumps(fit.to_dict(), allow_nan=False))["r2"][1] is None


# ----------------------------------------------------------------------------------------------------------------------
# Optimal mixture
# ----------------------------------------------------------------------------------------------------------------------


def simplex_grid(m, step):
    k = round(1 / step)
    if m == 2:
        p1 = np.arange(k + 1) / k
        return np.column_stack([p1, 1 - p1])
    i, j = np.meshgrid(np.arange(k + 1), np.arange(k + 1), indexing="ij")
    keep = i + j <= k
    return np.column_stack([i[keep], j[keep], k - i[keep] - j[keep]]) / k


def planted_fit(c, b, A):
    m = len(c)
    return StaticLawFit(
        c=np.asarray(c, float), b=np.asarray(b, float), A=np.asarray(A, float), r2=np.ones(m), mse=np.zeros(m)
    )


@pytest.mark.parametrize("m", [2, 3])
def test_optimal_mixture_matches_brute_force(m):
    law = STATIC_LAWS[m]
    fit = planted_fit(law["c"], law["b"], law["A"])
    G = simplex_grid(m, 0.002)
    p_grid = G[np.argmin(fit.predict(G).mean(axis=1))]
    p = optimal_mixture(fit)
    assert p.shape == (m,) and np.all(p >= 0) and abs(p.sum() - 1) < 1e-12
    assert np.max(np.abs(p - p_grid)) < 0.01, (p, p_grid)
    # It is not the uniform mixture, so the test can tell a no-op from an optimiser.
    assert np.max(np.abs(p - 1 / m)) > 0.05


def test_supported_optimum_stays_in_the_hull_and_matches_a_brute_force_search():
    from aioli_repro.laws import in_convex_hull, supported_optimal_mixture

    m = 3
    P = train_mixtures(m)
    fit = fit_static_law(P, static_truth(m, P), n_starts=4)
    free = optimal_mixture(fit)
    # A support that excludes the free optimum: three mixtures near the first group's vertex.
    V = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.6, 0.1, 0.3]])
    assert not in_convex_hull(free, V)
    p = supported_optimal_mixture(fit, V)
    assert in_convex_hull(p, V, tol=1e-7)
    # Brute force over convex combinations of V on a fine grid of weights.
    grid = np.array([(a, b, 1 - a - b) for a in np.linspace(0, 1, 201) for b in np.linspace(0, 1, 201) if a + b <= 1])
    best = fit.predict(grid @ V).mean(axis=1).min()
    assert fit.predict(p[None])[0].mean() <= best + 1e-9
    # A support whose hull holds the free optimum leaves it alone.
    wide = np.vstack([np.eye(3), np.full(3, 1 / 3)])
    np.testing.assert_array_equal(supported_optimal_mixture(fit, wide), free)


def test_optimal_mixture_on_the_boundary():
    # Training on group 0 helps everyone most: the optimum is the vertex e_0.
    fit = planted_fit([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], [[3.0, 0.0, 0.0], [3.0, 0.5, 0.0], [3.0, 0.0, 0.5]])
    p = optimal_mixture(fit)
    np.testing.assert_allclose(p, [1.0, 0.0, 0.0], atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# Dynamic law
# ----------------------------------------------------------------------------------------------------------------------


def planted_dynamic_A(m, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.uniform(-0.05, 0.1, (m, m))
    A[np.diag_indices(m)] = rng.uniform(0.2, 0.5, m)
    return A


def dynamic_mixtures(m, n=None, seed=0):
    return grid_mixtures_2() if m == 2 else dirichlet_cover(m, n or 4 * m, seed=seed)


@pytest.mark.parametrize("m", [2, 3, 7])
def test_dynamic_law_noise_free_is_exact(m):
    A = planted_dynamic_A(m)
    P = dynamic_mixtures(m)
    L_prev = np.linspace(2.5, 3.5, m)
    fit = fit_dynamic_law(P, L_prev - P @ A.T, L_prev)
    np.testing.assert_allclose(fit.A, A, atol=1e-8)
    Q = dirichlet_cover(m, 5, seed=99)
    np.testing.assert_allclose(fit.predict(Q, L_prev), L_prev - Q @ A.T, atol=1e-10)


@pytest.mark.parametrize("m", [2, 3, 7])
def test_dynamic_law_noisy_generalises(m):
    A = planted_dynamic_A(m, seed=m)
    P = dynamic_mixtures(m, seed=1)
    L_prev = np.linspace(2.5, 3.5, m)
    fit = fit_dynamic_law(P, noisy(L_prev - P @ A.T), L_prev, loo=True)
    assert np.all(fit.r2 > 0.99) and np.all(fit.loo_r2 > 0.95), (fit.r2, fit.loo_r2)
    # Ordinary least squares without intercept: the leave-one-out residual is e_k / (1 - h_kk), with the hat
    # matrix H = P (PᵀP)⁻¹ Pᵀ of the in-sample fit (no refit needed).
    L_next = noisy(L_prev - P @ A.T)
    H = P @ np.linalg.inv(P.T @ P) @ P.T
    e = L_next - fit.predict(P, L_prev)
    loo_resid = e / (1 - np.diag(H))[:, None]
    np.testing.assert_allclose(fit.loo_mse, (loo_resid**2).mean(axis=0), rtol=1e-8)
    np.testing.assert_allclose(fit.loo_r2, r2_score(L_next, L_next - loo_resid), rtol=1e-8)
    Q = heldout_mixtures(m, seed=5)
    assert np.all(r2_score(L_prev - Q @ A.T, fit.predict(Q, L_prev)) > 0.99)
    back = DynamicLawFit.from_dict(json.loads(json.dumps(fit.to_dict(), allow_nan=False)))
    np.testing.assert_array_equal(back.A, fit.A)


def test_dynamic_law_with_one_parent_per_row():
    m = 3
    A = planted_dynamic_A(m)
    P = dirichlet_cover(m, 10, seed=2)
    L_prev = 3.0 + np.random.default_rng(0).uniform(-0.3, 0.3, (10, m))
    fit = fit_dynamic_law(P, L_prev - P @ A.T, L_prev)
    np.testing.assert_allclose(fit.A, A, atol=1e-8)
    # A shared parent (m,) and per-row parents must agree when they are the same losses.
    np.testing.assert_allclose(fit.predict(P, L_prev[0]), fit.predict(P, np.tile(L_prev[0], (10, 1))))


@pytest.mark.parametrize("m", [2, 3])
def test_fit_method_scale_recovers_a_planted_scale(m):
    M = planted_dynamic_A(m, seed=11)
    P = dynamic_mixtures(m)
    L_prev = np.full(m, 3.0)
    s_true = 0.37
    assert fit_method_scale(M, P, L_prev - s_true * P @ M.T, L_prev) == pytest.approx(s_true, rel=1e-12)
    assert fit_method_scale(M, P, noisy(L_prev - s_true * P @ M.T), L_prev) == pytest.approx(s_true, rel=0.05)
    # A method that has the sign backwards gets a negative scale.
    assert fit_method_scale(-M, P, L_prev - s_true * P @ M.T, L_prev) == pytest.approx(-s_true, rel=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# Similarity and R^2
# ----------------------------------------------------------------------------------------------------------------------


def test_similarity_identity_and_scale_invariance():
    A = planted_dynamic_A(4)
    assert similarity(A, A) == pytest.approx(1.0)
    assert similarity(A, 3.7 * A) == pytest.approx(1.0)
    assert similarity(0.01 * A, A) == pytest.approx(1.0)


def test_similarity_is_symmetric():
    rng = np.random.default_rng(3)
    for _ in range(5):
        A, B = rng.normal(size=(2, 5, 5))
        assert similarity(A, B) == pytest.approx(similarity(B, A), abs=1e-12)


def test_similarity_hand_computed_3x3():
    A_method = np.array([[0.5, 1.0, 2.0], [0.3, 0.5, -0.5], [0.2, 0.5, 1.5]])  # column sums (1, 2, 3)
    A_true = np.array([[1.5, 2.0, 0.2], [0.5, 0.5, 0.3], [0.0, 0.5, 0.5]])  # column sums (2, 3, 1)
    cos = (1 * 2 + 2 * 3 + 3 * 1) / (np.sqrt(1 + 4 + 9) * np.sqrt(4 + 9 + 1))  # 11/14
    ranks_a, ranks_b = np.array([1, 2, 3]), np.array([2, 3, 1])
    n = 3
    rho = 1 - 6 * np.sum((ranks_a - ranks_b) ** 2) / (n * (n**2 - 1))  # -0.5
    got_cos, got_rho = similarity_parts(A_method, A_true)
    assert got_cos == pytest.approx(cos) and got_rho == pytest.approx(rho)
    assert similarity(A_method, A_true) == pytest.approx(0.5 * cos + 0.5 * rho)
    assert similarity(A_method, A_true) == pytest.approx(1 / 7)


def test_similarity_spearman_is_one_when_rankings_match():
    A = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    B = np.array([[0.1, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.5, 9.0]])  # column sums (0.1, 2.5, 9): same order
    cos, rho = similarity_parts(A, B)
    assert rho == pytest.approx(1.0)
    assert cos < 0.99
    assert 0.9 < similarity(A, B) < 1.0


def test_similarity_two_groups_spearman_is_plus_or_minus_one():
    rng = np.random.default_rng(4)
    for _ in range(5):
        A, B = rng.normal(size=(2, 2, 2))
        _, rho = similarity_parts(A, B)
        assert abs(rho) == pytest.approx(1.0)


def test_similarity_zero_column_sums_is_an_error():
    with pytest.raises(ValueError, match="column sums of A_true are all zero"):
        similarity(np.eye(3), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="A_method"):
        similarity(np.array([[1.0, 1.0], [-1.0, -1.0]]), np.eye(2))


def test_r2_score_conventions():
    y = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0], [4.0, 2.0]])
    assert np.allclose(r2_score(y, y)[0], 1.0)
    r2 = r2_score(y, np.full_like(y, 2.5))
    assert r2[0] == pytest.approx(0.0) and np.isnan(r2[1])  # mean predictor; constant column
    yt, yp = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.0, 1.0, 1.5])
    ss_res = np.sum((yt - yp) ** 2)
    assert r2_score(yt, yp) == pytest.approx(1 - ss_res / 5.0)
    assert r2_score(yt, yp) != pytest.approx(r2_score(yp, yt))  # the argument order matters


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------------


def test_bad_mixtures_are_refused():
    P = grid_mixtures_2()
    L = static_truth(2, P)
    with pytest.raises(ValueError, match="2-D"):
        fit_static_law(P[:, 0], L)
    with pytest.raises(ValueError, match="not 1"):
        fit_static_law(P * 1.2, L)
    bad = P.copy()
    bad[0] = [1.1, -0.1]
    with pytest.raises(ValueError, match="negative"):
        fit_static_law(bad, L)
    nan_p = P.copy()
    nan_p[2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_dynamic_law(nan_p, L, L[0])
    with pytest.raises(ValueError, match="2 groups"):
        fit_dynamic_law(np.ones((5, 1)), np.ones((5, 1)), np.ones(1))


def test_bad_losses_are_refused():
    P = grid_mixtures_2()
    L = static_truth(2, P)
    with pytest.raises(ValueError, match=r"shape \(9, 3\).*\(9, 2\)"):
        fit_static_law(P, np.ones((9, 3)))
    L_nan = L.copy()
    L_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="L contains NaN"):
        fit_static_law(P, L_nan)
    with pytest.raises(ValueError, match="positive losses"):
        fit_static_law(P, L - 10)
    with pytest.raises(ValueError, match="L_prev must have shape"):
        fit_dynamic_law(P, L, np.ones(3))
    with pytest.raises(ValueError, match="L_next has shape"):
        fit_dynamic_law(P, L[:5], L[0])


def test_too_few_mixtures_are_refused():
    P3 = dirichlet_cover(3, 3, seed=0)
    L3 = static_truth(3, P3)
    with pytest.raises(ValueError, match="fewer than the 4 parameters"):
        fit_static_law(P3, L3)
    P4 = dirichlet_cover(3, 4, seed=0)
    with pytest.raises(ValueError, match="leave-one-out"):
        fit_static_law(P4, static_truth(3, P4), loo=True)
    with pytest.raises(ValueError, match="fewer than the 3 parameters"):
        fit_dynamic_law(P3[:2], L3[:2], L3[0])
    with pytest.raises(ValueError, match="leave-one-out"):
        fit_dynamic_law(P3, L3, L3[0], loo=True)
    # Enough rows but all the same mixture: A is not identifiable.
    same = np.tile([0.2, 0.3, 0.5], (5, 1))
    with pytest.raises(ValueError, match="rank 1"):
        fit_dynamic_law(same, np.ones((5, 3)), np.full(3, 2.0))


def test_bad_matrices_are_refused():
    P = grid_mixtures_2()
    L = static_truth(2, P)
    with pytest.raises(ValueError, match="square"):
        similarity(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        similarity(np.eye(2) + 1, np.eye(3) + 1)
    with pytest.raises(ValueError, match="M is 3x3 but there are 2 groups"):
        fit_method_scale(np.eye(3), P, L, L[0])
    with pytest.raises(ValueError, match="M p is zero"):
        fit_method_scale(np.zeros((2, 2)), P, L, L[0])
    with pytest.raises(TypeError):
        optimal_mixture(fit_dynamic_law(P, L, L[0] + 0.1))


def test_similarity_when_a_ranking_is_undefined():
    # Column sums (1, 1, 1) have no ranking. Both constant: identical (all-tied) rankings, sim = 1.
    cos, rho = similarity_parts(np.eye(3), 2 * np.eye(3))
    assert cos == pytest.approx(1.0) and rho == 1.0
    assert similarity(np.eye(3), 2 * np.eye(3)) == pytest.approx(1.0)
    # Only one constant: the rank term carries no information and counts 0.
    other = np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 3]])
    cos, rho = similarity_parts(np.eye(3), other)
    assert rho == 0.0 and similarity(np.eye(3), other) == pytest.approx(0.5 * cos)
