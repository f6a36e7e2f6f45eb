"""Aioli's estimates in finished runs (``aioli_estimates``): reach, and agreement across seeds against a
random-direction null whose chances are worked out by hand."""

import numpy as np
import pytest


def test_reach_summary_reads_spreads_and_extremes_from_a_runs_history():
    from aioli_repro.aioli_estimates import reach_summary

    history = [{"proportions": [0.5, 0.5]},
               {"proportions": [0.52, 0.48], "A_normalized": [[0.4, 0.1], [0.3, 0.2]]},  # colsums 0.7, 0.3
               {"proportions": [0.47, 0.53], "A_normalized": [[0.2, 0.3], [0.2, 0.3]]}]  # colsums 0.4, 0.6
    res = {"policy": {"history": history}, "groups": ["a", "b"], "config": {"method_config": {"eta": 0.2}}}
    r = reach_summary([res, res])
    assert r["m"] == 2 and r["runs"] == 2 and r["rounds"] == 4
    assert r["colsum_spread_median"] == pytest.approx(0.3) and r["colsum_spread_max"] == pytest.approx(0.4)
    assert (r["p_min"], r["p_max"]) == (0.47, 0.53) and r["max_dev_from_uniform"] == pytest.approx(0.03)
    assert r["band_low"] == pytest.approx(0.4502, abs=1e-4)


def _agreement_result(colsums: list[list[float]]) -> dict:
    """A finished-run stand-in whose LearnParams rounds have Ā^t with the given column sums (one row holds them)."""
    m = len(colsums[0])
    history = [{"proportions": [1 / m] * m}]
    for c in colsums:
        A = np.zeros((m, m))
        A[0] = c
        history.append({"proportions": [1 / m] * m, "A_normalized": A.tolist()})
    return {"policy": {"history": history}, "groups": [f"g{i}" for i in range(m)]}


def test_estimate_agreement_separates_a_shared_direction_from_noise():
    from aioli_repro.aioli_estimates import estimate_agreement

    # Three seeds that agree at every round and keep their direction: cosines of 1.
    rng = np.random.default_rng(0)
    steady = [[0.5 + 0.01 * rng.random(), 0.3, 0.2] for _ in range(12)]
    same = estimate_agreement([_agreement_result(steady)] * 3)
    assert same["m"] == 3 and same["runs"] == 3 and same["rounds"] == 12 and same["across_seeds_n"] == 11
    assert same["across_seeds_cos"] == pytest.approx(1.0) and same["lag1_cos"] == pytest.approx(1.0, abs=1e-3)
    assert same["first_round_cos"] == pytest.approx(1.0)
    # Directions drawn at random for every seed and round: both means near 0 and not significant.
    noise = estimate_agreement([_agreement_result(rng.dirichlet(np.ones(3), size=60).tolist()) for _ in range(3)])
    assert abs(noise["across_seeds_cos"]) < 0.2 and noise["across_seeds_p"] > 0.01
    assert abs(noise["lag1_cos"]) < 0.2 and noise["lag1_p"] > 0.01
    # Two seeds pointing opposite ways (m = 2): a cosine of -1 at every round.
    up, down = [[0.7, 0.3]] * 5, [[0.3, 0.7]] * 5
    assert estimate_agreement([_agreement_result(up), _agreement_result(down)])["across_seeds_cos"] == pytest.approx(-1.0)
    # One run: nothing to compare across seeds, but its consecutive rounds still are.
    alone = estimate_agreement([_agreement_result(up)])
    assert alone["across_seeds_n"] == 0 and np.isnan(alone["first_round_cos"]) and np.isnan(alone["across_seeds_cos"])
    assert alone["lag1_n"] == 3 and alone["lag1_cos"] == pytest.approx(1.0)


def _signs(pattern: list[list[int]]) -> list[dict]:
    """m = 2 runs whose round k points up (+1, colsum (0.7, 0.3)) or down (-1): ``pattern[run][round]``."""
    return [_agreement_result([[0.7, 0.3] if s > 0 else [0.3, 0.7] for s in row]) for row in pattern]


def test_estimate_agreement_p_values_are_the_exact_chance_of_such_agreement_for_two_groups():
    from aioli_repro.aioli_estimates import estimate_agreement

    # m = 2: each direction is a sign, a fair coin under the null. With 3 seeds, all three agree at a round with
    # probability 2/8 = 1/4 (mean cosine 1), else one disagrees (mean (1 - 1 - 1)/3 = -1/3). Round 0 is the first
    # round, reported apart; rounds 1-3 are tested.
    agree = estimate_agreement(_signs([[1, 1, -1, 1], [1, 1, -1, 1], [1, 1, -1, 1]]))
    assert agree["across_seeds_cos"] == pytest.approx(1.0) and agree["across_seeds_n"] == 3
    assert agree["across_seeds_p"] == pytest.approx(1 / 64, abs=0.004)  # (1/4)^3, by hand
    assert agree["across_seeds_p_floor"] == pytest.approx(1 / 64, abs=0.004)  # perfect agreement: this very case
    # two of three rounds agree: mean 5/9; P(at least two agree) = 3 (1/4)^2 (3/4) + (1/4)^3 = 10/64
    two = estimate_agreement(_signs([[1, 1, 1, 1], [1, 1, 1, -1], [1, 1, 1, 1]]))
    assert two["across_seeds_cos"] == pytest.approx(5 / 9)
    assert two["across_seeds_p"] == pytest.approx(10 / 64, abs=0.012)
    # every round has one seed against the others: -1/3 each time, no variance. A t-test reads that as p = 0;
    # every draw of the null is at least -1/3, so p = 1.
    split = estimate_agreement(_signs([[1, 1, 1, 1], [1, -1, 1, -1], [-1, 1, -1, 1]]))
    assert split["across_seeds_cos"] == pytest.approx(-1 / 3) and split["across_seeds_p"] == 1.0
    assert split["across_seeds_p_floor"] == pytest.approx(1 / 64, abs=0.004)  # what these runs could have shown
    # seven later rounds: a floor of (1/4)^7 = 6e-5, below the null's resolution of 1/10,001
    assert estimate_agreement(_signs([[1] * 8] * 3))["across_seeds_p_floor"] < 5e-4
    # consecutive rounds of one run: rounds 1-3 give two lag cosines s1·s2 and s2·s3, independent fair signs under
    # the null, so both +1 with probability 1/4
    alone = estimate_agreement(_signs([[1, -1, -1, -1]]))
    assert alone["lag1_cos"] == pytest.approx(1.0) and alone["lag1_p"] == pytest.approx(0.25, abs=0.015)


def test_estimate_agreement_p_values_are_uniform_when_directions_are_noise():
    from aioli_repro.aioli_estimates import estimate_agreement, random_directions

    # Three seeds of three groups, five rounds of colsums drawn at random: a test at 5% rejects about 5% of the time
    rng = np.random.default_rng(1)
    ps = [estimate_agreement([_agreement_result((0.4 + 0.1 * random_directions(rng, (5,), 3)).tolist())
                              for _ in range(3)], draws=1000)["across_seeds_p"] for _ in range(300)]
    assert 0.02 <= np.mean(np.array(ps) <= 0.05) <= 0.09
    # random_directions is centred, unit length, and for m = 2 a fair sign
    d = random_directions(rng, (20_000,), 2)
    assert np.allclose(d.sum(axis=-1), 0) and np.allclose(np.linalg.norm(d, axis=-1), 1)
    assert np.mean(d[:, 0] > 0) == pytest.approx(0.5, abs=0.015)


def test_estimate_agreement_needs_learnparams_rounds():
    from aioli_repro.aioli_estimates import estimate_agreement

    with pytest.raises(ValueError, match="no LearnParams round"):
        estimate_agreement([{"policy": {"history": [{"proportions": [0.5, 0.5]}]}, "groups": ["a", "b"]}])


def test_reach_and_signal_summarise_the_settings_with_finished_runs(monkeypatch):
    """diagnostics.reach_and_signal on stand-in finished runs: one row per setting that has any, in both tables."""
    from aioli_repro import diagnostics

    def fake_finals(method, setting, profile):
        if setting != "github_c4":
            return []  # nothing finished on the other settings
        res = _agreement_result([[0.6, 0.4], [0.45, 0.55], [0.7, 0.3]])
        res["config"] = {"method_config": {"eta": 0.2}}
        return [res, res]

    monkeypatch.setattr(diagnostics, "finished_finals", fake_finals)
    reach, signal = diagnostics.reach_and_signal("full")
    assert reach["label"].tolist() == ["GH/C4"] and reach["rounds"].iloc[0] == 6
    assert signal["label"].tolist() == ["GH/C4"] and signal["across_seeds_cos"].iloc[0] == pytest.approx(1.0)
