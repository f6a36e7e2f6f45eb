"""Sweep mixtures: the exact m = 2 grid and the Dirichlet cover (on the simplex, deterministic, better spread)."""


import numpy as np
import pytest
from scipy.spatial.distance import pdist

from aioli_repro.sweeps import dirichlet_cover, grid_mixtures_2, sweep_mixtures


def assert_on_simplex(P, atol=1e-12):
    assert np.all(P >= 0)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=atol)


def test_grid_mixtures_2_exact_values():
    G = grid_mixtures_2()
    expected = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6], [0.5, 0.5],
                         [0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]])  # fmt: skip
    assert G.shape == (9, 2)
    np.testing.assert_array_equal(G, expected)  # exact decimals: 0.3, not 0.30000000000000004
    np.testing.assert_array_equal(G.sum(axis=1), 1.0)


def test_grid_mixtures_2_other_steps_and_bad_steps():
    G = grid_mixtures_2(0.05)
    assert G.shape == (19, 2)
    assert G[2, 0] == 0.15 and G[-1, 0] == 0.95
    assert_on_simplex(G)
    for bad in (0.0, 1.0, -0.1, 0.3, 0.7):
        with pytest.raises(ValueError, match="step"):
            grid_mixtures_2(bad)


@pytest.mark.parametrize("m,n", [(3, 10), (7, 16), (4, 1)])
def test_dirichlet_cover_shape_and_simplex(m, n):
    P = dirichlet_cover(m, n, seed=1)
    assert P.shape == (n, m)
    assert_on_simplex(P)
    assert len(np.unique(P.round(12), axis=0)) == n  # merged points, not copies


def test_dirichlet_cover_is_deterministic_by_seed():
    np.testing.assert_array_equal(dirichlet_cover(3, 10, seed=5), dirichlet_cover(3, 10, seed=5))
    assert not np.allclose(dirichlet_cover(3, 10, seed=5), dirichlet_cover(3, 10, seed=6))
    assert not np.allclose(dirichlet_cover(3, 10, alpha=1.0, seed=5), dirichlet_cover(3, 10, alpha=3.0, seed=5))


def test_dirichlet_cover_without_oversampling_is_the_plain_draws():
    plain = np.random.default_rng(3).dirichlet(np.ones(4), size=6)
    np.testing.assert_allclose(dirichlet_cover(4, 6, seed=3, oversample=1), plain, rtol=0, atol=1e-15)


@pytest.mark.parametrize("m,n", [(3, 10), (5, 12)])
def test_dirichlet_cover_is_better_spread_than_plain_draws(m, n):
    seeds = range(5)
    cover = np.mean([pdist(dirichlet_cover(m, n, seed=s)).min() for s in seeds])
    plain = np.mean([pdist(np.random.default_rng(s).dirichlet(np.ones(m), size=n)).min() for s in seeds])
    assert cover > 1.5 * plain, (cover, plain)


def test_dirichlet_cover_searches_the_distance_matrix_once_per_merge(monkeypatch):
    # What keeps it fast is its structure, counted rather than timed: n·oversample - n merges, one closest-pair search
    # each over the incrementally updated matrix.
    from aioli_repro import sweeps

    calls = []
    real = sweeps._closest_pair
    monkeypatch.setattr(sweeps, "_closest_pair", lambda D: calls.append(1) or real(D))
    out = dirichlet_cover(7, 16, seed=0)
    assert out.shape == (16, 7) and len(calls) == 16 * 16 - 16


def test_dirichlet_cover_bad_arguments():
    with pytest.raises(ValueError, match="m"):
        dirichlet_cover(1, 5)
    with pytest.raises(ValueError, match="n"):
        dirichlet_cover(3, 0)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_cover(3, 5, alpha=0.0)
    with pytest.raises(ValueError, match="oversample"):
        dirichlet_cover(3, 5, oversample=0)


def test_sweep_mixtures_dispatch():
    np.testing.assert_array_equal(sweep_mixtures(2), grid_mixtures_2())
    np.testing.assert_array_equal(sweep_mixtures(2, seed=9), grid_mixtures_2())  # the grid has no randomness
    np.testing.assert_array_equal(sweep_mixtures(2, 19), grid_mixtures_2(0.05))
    np.testing.assert_array_equal(sweep_mixtures(3, seed=2), dirichlet_cover(3, 10, seed=2))
    assert sweep_mixtures(5, 7, seed=1).shape == (7, 5)
    with pytest.raises(ValueError, match="m"):
        sweep_mixtures(1)
