"""Every verdict rule of claims.md: a table of cases reaching each branch, and the rule's behaviour under the null
(a method identical to its baseline) and under a planted effect, by simulation."""

import numpy as np
import pandas as pd
import pytest

from aioli_repro import claims, findings, tables
from aioli_repro.hparams import SETTINGS

SIX = tuple(SETTINGS)


def runs_from_ratios(ratios: dict[str, np.ndarray], settings=SIX, base=None, rng=None) -> pd.DataFrame:
    """A run table: stratified perplexity per (setting, seed), each method's = stratified · exp(ratio[s, seed])."""
    n_seeds = next(iter(ratios.values())).shape[1]
    base = base if base is not None else 100.0 + (rng.normal(0, 2, size=(len(settings), n_seeds)) if rng is not None
                                                  else np.zeros((len(settings), n_seeds)))
    rows = []
    for i, s in enumerate(settings):
        for seed in range(n_seeds):
            strat = float(base[i, seed])
            rows.append({"setting": s, "label": SETTINGS[s].label, "method": "stratified", "seed": seed,
                         "avg_test_perplexity": strat, "extra_runs": 0, "extra_tokens": 0})
            rows += [{"setting": s, "label": SETTINGS[s].label, "method": m, "seed": seed,
                      "avg_test_perplexity": strat * float(np.exp(r[i, seed])), "extra_runs": 0, "extra_tokens": 0}
                     for m, r in ratios.items()]
    return pd.DataFrame(rows)


def noise(rng, sd=0.01, seeds=3, settings=6, mean=0.0):
    return mean + rng.normal(0, sd, size=(settings, seeds))


# ----------------------------------------------------------------------------------------------------- C1
def _decide(headroom_pct):
    return pd.DataFrame({"setting": [SETTINGS[s].label for s in SIX], "headroom_in_band_pct": headroom_pct})


C1_CASES = [  # (per-(setting, seed) log ratios, decidability headroom %, verdict)
    ("better everywhere", np.full((6, 3), -0.03) + np.array([0, 0.001, -0.001]), None, claims.REPRODUCED),
    ("worse on average", np.full((6, 3), 0.03) + np.array([0, 0.001, -0.001]), None, claims.NOT_REPRODUCED),
    ("one setting clearly worse", np.vstack([np.full((5, 3), -0.001) + np.array([0, 0.02, -0.02]),
                                             [[0.30, 0.3001, 0.2999]]]), None, claims.NOT_REPRODUCED),
    ("noise, no headroom", np.array([[0.01, -0.01, 0.0]] * 6), [0.05] * 6, claims.CANNOT_DECIDE),
    ("noise, headroom", np.array([[0.01, -0.01, 0.0]] * 6), [20.0] * 6, claims.INCONCLUSIVE),
    ("noise, no table", np.array([[0.01, -0.01, 0.0]] * 6), None, claims.INCONCLUSIVE),
    ("one seed", np.full((6, 1), -0.05), None, claims.INCONCLUSIVE),
]


@pytest.mark.parametrize("ratios,headroom,verdict", [c[1:] for c in C1_CASES], ids=[c[0] for c in C1_CASES])
def test_c1_branches(ratios, headroom, verdict):
    runs = runs_from_ratios({"aioli": ratios})
    got = claims.claim_c1(runs, _decide(headroom) if headroom is not None else None)
    assert got.verdict == verdict
    assert got.rule and got.null


def test_c1_better_on_two_settings_of_six_is_not_yet_the_claim():
    runs = runs_from_ratios({"aioli": np.full((2, 3), -0.03) + np.array([0, 0.001, -0.001])}, settings=SIX[:2])
    got = claims.claim_c1(runs)
    assert got.verdict == claims.INCONCLUSIVE and "only 2 of the paper's six" in got.why


@pytest.mark.slow
def test_c1_null_and_planted_rates():
    rng = np.random.default_rng(0)
    null = [claims.claim_c1(runs_from_ratios({"aioli": noise(rng)}, rng=rng)).verdict for _ in range(300)]
    rate = {v: null.count(v) / len(null) for v in set(null)}
    assert rate.get(claims.REPRODUCED, 0) <= 0.05  # documented: at most 2.5%
    assert rate.get(claims.NOT_REPRODUCED, 0) <= 0.12  # documented: at most 7.5%
    planted = [claims.claim_c1(runs_from_ratios({"aioli": noise(rng, mean=-0.03)}, rng=rng)).verdict
               for _ in range(100)]
    assert planted.count(claims.REPRODUCED) >= 90


def test_c1_pooled_statistic_is_the_mean_log_ratio_and_its_stratified_interval():
    ratios = np.array([[-0.01, -0.02, 0.0], [0.02, 0.01, 0.015]] + [[0.0, 0.001, -0.001]] * 4)
    got = claims.claim_c1(runs_from_ratios({"aioli": ratios}))
    mean = ratios.mean(axis=1).mean()
    assert f"pooled relative difference {100 * np.expm1(mean):+.2f}%" in got.ours


# ----------------------------------------------------------------------------------------------------- C2
def _baselines(**special):
    rng = np.random.default_rng(5)
    out = {m: noise(rng, 0.001) for m in tables.BASELINES}
    out.update(special)
    return out


def _worse_on_one(mean=0.2):
    r = np.zeros((6, 3)) + np.array([0, 0.001, -0.001])
    r[0] += mean
    return r


C2_CASES = [
    ("every baseline fails somewhere", {m: _worse_on_one() for m in tables.BASELINES}, claims.REPRODUCED),
    ("one wins everywhere", _baselines(grid=np.full((6, 3), -0.2) + np.array([0, 0.001, -0.001])),
     claims.NOT_REPRODUCED),
    ("uninformative", _baselines(), claims.INCONCLUSIVE),
    ("some fail, others uninformative", _baselines(skillit=_worse_on_one()), claims.INCONCLUSIVE),
]


@pytest.mark.parametrize("ratios,verdict", [c[1:] for c in C2_CASES], ids=[c[0] for c in C2_CASES])
def test_c2_branches(ratios, verdict):
    got = claims.claim_c2(runs_from_ratios(ratios))
    assert got.verdict == verdict
    if verdict == claims.INCONCLUSIVE:
        assert "uninformative for" in got.why


def test_c2_waits_for_baselines_and_names_those_not_run():
    assert claims.claim_c2(runs_from_ratios({"aioli": np.zeros((6, 3))})).verdict == claims.NOT_RUN
    part = claims.claim_c2(runs_from_ratios({m: _worse_on_one() for m in ("grid", "dml")}))
    assert part.verdict == claims.INCONCLUSIVE and "skillit, doremi, doge not run yet" in part.why


@pytest.mark.slow
def test_c2_null_prints_inconclusive():
    rng = np.random.default_rng(1)
    got = [claims.claim_c2(runs_from_ratios({m: noise(rng) for m in tables.BASELINES}, rng=rng)).verdict
           for _ in range(100)]
    assert got.count(claims.INCONCLUSIVE) >= 97


# ----------------------------------------------------------------------------------------------------- C4
def _fidelity(sim_true, improvement_slope, seed_noise, rng, seeds=3):
    methods, settings = ["aioli", "doge", "doremi", "skillit"], list(SIX[:5])
    per_seed, dots = [], []
    for k, (m, s) in enumerate([(m, s) for m in methods for s in settings]):
        for seed in range(seeds):
            sim = sim_true[k] + rng.normal(0, seed_noise)
            per_seed.append({"method": m, "setting": s, "seed": seed, "sim": sim})
        mean_sim = np.mean([r["sim"] for r in per_seed[-seeds:]])
        dots.append({"method": m, "setting": s, "sim": mean_sim,
                     "improvement": improvement_slope * sim_true[k] + rng.normal(0, 0.05)})
    summary = pd.DataFrame(dots)
    fit = np.polyfit(summary.sim, summary.improvement, 1)
    r2 = np.corrcoef(summary.sim, summary.improvement)[0, 1] ** 2
    relation = pd.DataFrame({"": ["dots", "r2", "slope"], "value": [len(summary), r2, fit[0]]})
    return relation, summary, pd.DataFrame(per_seed)


@pytest.mark.parametrize("slope,noise_sd,aioli_best,verdict", [
    (2.0, 0.01, True, claims.REPRODUCED),
    (2.0, 0.01, False, claims.INCONCLUSIVE),  # a relation, but Aioli's estimate is not the closest
    (-2.0, 0.01, True, claims.NOT_REPRODUCED),
    (0.0, 0.01, True, claims.INCONCLUSIVE),
    (2.0, 1.0, True, claims.CANNOT_DECIDE),  # seed noise swamps the spread between dots
])
def test_c4_branches(slope, noise_sd, aioli_best, verdict):
    rng = np.random.default_rng(4)
    sim_true = np.linspace(1.0, 0.0, 20)  # the first 5 dots are Aioli's: the highest similarity
    if not aioli_best:
        sim_true = sim_true[::-1]
    got = claims.claim_c4(*_fidelity(sim_true, slope, noise_sd, rng))
    assert got.verdict == verdict


def test_c4_with_too_few_dots_for_a_slope_test_is_inconclusive():
    rng = np.random.default_rng(4)
    relation, summary, per_seed = _fidelity(np.linspace(1.0, 0.0, 20), 2.0, 0.01, rng)
    keep = summary.iloc[:2]  # two dots, both reliable
    got = claims.claim_c4(relation, keep, per_seed)
    assert got.verdict == claims.INCONCLUSIVE and "too few dots" in got.why


@pytest.mark.slow
def test_c4_null_rates():
    rng = np.random.default_rng(6)
    got = [claims.claim_c4(*_fidelity(rng.uniform(0, 1, 20), 0.0, 0.01, rng)).verdict for _ in range(200)]
    assert got.count(claims.REPRODUCED) / 200 <= 0.04 and got.count(claims.NOT_REPRODUCED) / 200 <= 0.07


# ----------------------------------------------------------------------------------------------------- C5
def _ordering(paths, flips):
    return pd.DataFrame({"setting": ["github_c4"] * len(paths), "seed": range(len(paths)),
                         "favoured_over_time": paths, "ordering_changes": flips})


@pytest.mark.parametrize("paths,flips,verdict", [
    (["code -> books", "code -> books", "code -> code"], [1, 1, 0], claims.REPRODUCED),
    (["code -> code", "books -> books"], [0, 0], claims.NOT_REPRODUCED),
    (["books -> code", "code -> code"], [1, 0], claims.INCONCLUSIVE),
    (["code -> books"], [1], claims.INCONCLUSIVE),
])
def test_c5_branches(paths, flips, verdict):
    assert claims.claim_c5(_ordering(paths, flips)).verdict == verdict


def test_c5_without_gh_c4_is_not_tested():
    other = _ordering(["a -> b"], [1]).assign(setting="arxiv_stackexchange")
    assert claims.claim_c5(other).verdict == claims.NOT_TESTED


# ----------------------------------------------------------------------------------------------------- C7
def pairs_and_control(gains, improvement=1.0, methods=tables.BASELINES):
    """Table 3's two tables for (method, setting) pairs on the six settings, with planted control - Aioli gains."""
    pairs, control = [], []
    for k, (s, m) in enumerate([(s, m) for s in SIX for m in methods][: gains.shape[0]]):
        for seed in range(gains.shape[1]):
            pairs.append({"setting": s, "label": SETTINGS[s].label, "method": m, "seed": seed, "method_ppl": 110.0,
                          "aioli_ppl": 110.0 - improvement, "improvement": improvement})
            control.append({"setting": s, "label": SETTINGS[s].label, "method": m, "seed": seed,
                            "method_ppl": 110.0, "control_ppl": 109.0 + gains[k, seed], "aioli_ppl": 109.0,
                            "gain_vs_control": gains[k, seed]})
    return pd.DataFrame(pairs), pd.DataFrame(control)


def control_gain_cases(n: int) -> dict[str, np.ndarray]:
    """Planted (pair, seed) gains over the restricted budget's control for ``n`` pairs, one per branch of C7's rule
    (and F6's): clearly positive, clearly negative, within noise (pairs of both signs), and a single seed."""
    jitter = np.array([0, 0.1, -0.1])
    return {"beats the control": np.full((n, 3), 0.5) + jitter, "loses to the control": np.full((n, 3), -0.5) + jitter,
            "within noise": np.tile([0.3, -0.3, 0.01], (n, 1)) * np.linspace(-1, 1, n)[:, None],
            "one seed": np.full((n, 1), 0.5)}


C7_VERDICTS = {"beats the control": claims.REPRODUCED, "loses to the control": claims.NOT_REPRODUCED,
               "within noise": claims.INCONCLUSIVE, "one seed": claims.INCONCLUSIVE}
C7_CASES = [(name, gains, C7_VERDICTS[name]) for name, gains in control_gain_cases(30).items()]


@pytest.mark.parametrize("gains,verdict", [c[1:] for c in C7_CASES], ids=[c[0] for c in C7_CASES])
def test_c7_branches(gains, verdict):
    pairs, control = pairs_and_control(gains)
    assert claims.claim_c7(pairs, control).verdict == verdict


def test_c7_without_the_control_says_why_the_gain_over_p_init_is_no_evidence():
    pairs, _ = pairs_and_control(np.zeros((30, 3)), improvement=5.0)
    got = claims.claim_c7(pairs, None)
    assert got.verdict == claims.INCONCLUSIVE and "confounded" in got.why and "improves 30/30" in got.ours


def test_c7_names_a_setting_that_drives_the_verdict_and_pools_the_others_without_it():
    # 25 pairs on five settings with seed gains (+0.3, -0.3, 0): each pair's mean 0; the sixth setting's 5 pairs
    # (-1.4, -1.5, -1.6): mean -1.5. Pooled: 5 x -1.5 / 30 = -0.25, se = sqrt(25 x 0.09/3 + 5 x 0.01/3) / 30 = 0.029
    gains = np.vstack([np.tile([0.3, -0.3, 0.0], (25, 1)), np.tile([-1.4, -1.5, -1.6], (5, 1))])
    got = claims.claim_c7(*pairs_and_control(gains))
    last = SETTINGS[SIX[-1]].label
    assert got.verdict == claims.NOT_REPRODUCED and "mean gain -0.250" in got.ours
    assert f"excludes 0: {last} -1.500 [" in got.ours and "the other settings pooled +0.000 [" in got.ours
    assert got.why.endswith(f"(driven by {last}: the other settings pooled are within noise)")
    flat = claims.claim_c7(*pairs_and_control(np.full((30, 3), -0.5) + np.array([0, 0.1, -0.1])))
    assert "excludes 0" not in flat.ours and "driven" not in flat.why  # every setting apart: nothing to split


@pytest.mark.slow
def test_c7_null_rate():
    rng = np.random.default_rng(7)
    got = [claims.claim_c7(*pairs_and_control(rng.normal(0, 1, size=(30, 3)))).verdict for _ in range(200)]
    assert got.count(claims.REPRODUCED) / 200 <= 0.05 and got.count(claims.NOT_REPRODUCED) / 200 <= 0.08


# ----------------------------------------------------------------------------------------------------- C8
def _c8(aioli, static, diagonal):
    return claims.claim_c8(runs_from_ratios({"aioli": aioli, "aioli_static": static, "aioli_diagonal": diagonal}))


J = np.array([0, 0.001, -0.001])
C8_CASES = [
    ("keep some, not all", (np.full((6, 3), -0.05) + J, np.full((6, 3), -0.02) + J, np.full((6, 3), -0.03) + J),
     claims.REPRODUCED),
    ("an ablation beats Aioli", (np.full((6, 3), -0.02) + J, np.full((6, 3), -0.05) + J, np.full((6, 3), -0.03) + J),
     claims.NOT_REPRODUCED),
    ("an ablation keeps none", (np.full((6, 3), -0.05) + J, np.full((6, 3), 0.02) + J, np.full((6, 3), -0.03) + J),
     claims.NOT_REPRODUCED),
    ("no gain to keep", (np.full((6, 3), 0.0) + J * 10, np.full((6, 3), 0.01) + J, np.full((6, 3), 0.01) + J),
     claims.CANNOT_DECIDE),
    ("within noise", (np.full((6, 3), -0.05) + J, np.full((6, 3), -0.05) + J * 30, np.full((6, 3), -0.05) + J * 30),
     claims.INCONCLUSIVE),
    ("one seed", (np.full((6, 1), -0.05), np.full((6, 1), -0.02), np.full((6, 1), -0.03)), claims.INCONCLUSIVE),
]


@pytest.mark.parametrize("ratios,verdict", [c[1:] for c in C8_CASES], ids=[c[0] for c in C8_CASES])
def test_c8_branches(ratios, verdict):
    assert _c8(*ratios).verdict == verdict


@pytest.mark.slow
def test_c8_null_rate():
    rng = np.random.default_rng(8)
    got = []
    for _ in range(200):
        a = noise(rng, mean=-0.05)
        got.append(_c8(a, a + noise(rng), a + noise(rng)).verdict)
    assert got.count(claims.REPRODUCED) / 200 <= 0.03 and got.count(claims.NOT_REPRODUCED) / 200 <= 0.08


# ----------------------------------------------------------------------------------------------------- C3, C11
@pytest.mark.parametrize("static,dynamic,verdict", [
    ((0.99, 0.95), (0.95, 0.8), claims.REPRODUCED),
    ((0.99, 0.95), None, claims.INCONCLUSIVE),
    ((0.70, 0.2), (0.95, 0.8), claims.NOT_REPRODUCED),
    ((0.99, 0.95), (0.6, 0.1), claims.NOT_REPRODUCED),
    ((0.99, 0.3), (0.95, 0.8), claims.INCONCLUSIVE),  # in-sample only: over-fitting is not a law
])
def test_c3_branches(static, dynamic, verdict):
    def table(r2, loo):
        return pd.DataFrame([{"setting": "all", "r2": r2, "loo_r2": loo, "mse": 1e-3, "fits": 3, "seeds": 1}])

    got = claims.claim_c3(table(*static), table(*dynamic) if dynamic else None)
    assert got.verdict == verdict


def test_c11_branches():
    runs = runs_from_ratios({"aioli": np.zeros((1, 1))}, settings=SIX[:1])
    assert claims.claim_c11(runs, None).verdict == claims.REPRODUCED
    assert claims.claim_c11(runs.assign(extra_runs=2), None).verdict == claims.NOT_REPRODUCED


def test_every_tested_claim_states_its_rule_and_null_in_the_markdown():
    rng = np.random.default_rng(9)
    runs = runs_from_ratios({m: noise(rng) for m in (*tables.BASELINES, "aioli")}, rng=rng)
    md = claims.claims_markdown([claims.claim_c1(runs), claims.claim_c2(runs)], "full",
                                _decide([0.1] * 6).assign(headroom_anywhere=0.1, headroom_anywhere_pct=0.1,
                                                         headroom_in_band=0.1, detectable_now=1.0, seeds=3,
                                                         seeds_needed_for_band_headroom=np.inf,
                                                         can_show_a_gain=False))
    assert md.count("*Under the null:*") == 2 and "| A/SE | 0.10 (0.10%)" in md and "more than 1,000" in md


# ----------------------------------------------------------------------------------------------------- F1, F2
F_CASES = [  # (runs of the method, or None for none finished; verdict)
    ("no run yet", None, claims.CANNOT_DECIDE),
    ("one seed", np.full((2, 1), -0.05), claims.CANNOT_DECIDE),
    ("better everywhere", np.full((6, 3), -0.03) + np.array([0, 0.001, -0.001]), findings.BETTER),
    ("worse on average", np.full((6, 3), 0.03) + np.array([0, 0.001, -0.001]), findings.WORSE),
    ("one setting clearly worse", np.vstack([np.full((5, 3), -0.001) + np.array([0, 0.02, -0.02]),
                                             [[0.30, 0.3001, 0.2999]]]), findings.WORSE),
    ("noise", np.array([[0.01, -0.01, 0.0]] * 6), claims.INCONCLUSIVE),
]


@pytest.mark.parametrize("key", ["F1", "F2"])
@pytest.mark.parametrize("ratios,verdict", [c[1:] for c in F_CASES], ids=[c[0] for c in F_CASES])
def test_findings_on_regmix_and_odm_come_out_either_way(key, ratios, verdict):
    method = findings.FINDINGS[key][0]
    if ratios is None:
        runs = runs_from_ratios({"aioli": noise(np.random.default_rng(0))})  # Table 2 ran, without the method
    else:
        runs = runs_from_ratios({method: ratios}, settings=SIX[:len(ratios)])
    got = findings.finding(key, runs)
    assert got.verdict == verdict and got.paper == findings.NOT_A_CLAIM and got.rule and got.null
    assert findings.finding(key, None).verdict == claims.CANNOT_DECIDE  # no Table 2 at all


def test_a_finding_from_unfinished_studies_is_provisional():
    runs = runs_from_ratios({"odm": np.full((6, 3), -0.03) + np.array([0, 0.001, -0.001])})
    left = {"04_perplexity_comparison": ["odm/slimpajama/seed 2", "regmix/github_c4/seed 0"]}
    got = findings.finding("F2", runs, left)
    assert got.verdict == claims.INCONCLUSIVE and "provisional, 1 of its Table 2 studies" in got.why
    assert findings.finding("F2", runs, {"04_perplexity_comparison": ["regmix/github_c4/seed 0"]}).verdict == \
        findings.BETTER


@pytest.mark.slow
def test_finding_null_rates():
    rng = np.random.default_rng(1)
    null = [findings.finding("F2", runs_from_ratios({"odm": noise(rng)}, rng=rng)).verdict for _ in range(300)]
    assert null.count(findings.BETTER) / len(null) <= 0.05 and null.count(findings.WORSE) / len(null) <= 0.12


def test_findings_get_their_own_section_in_claims_md():
    runs = runs_from_ratios({"aioli": noise(np.random.default_rng(0)), "odm": np.full((6, 3), 0.03)
                             + np.array([0, 0.001, -0.001])})
    md = claims.claims_markdown([claims.claim_c1(runs), findings.finding("F1", runs), findings.finding("F2", runs)],
                                "full")
    paper_part, own_part = md.split("## Findings of this repository (not claims of the paper)")
    assert "**C1**" in paper_part and "**F1**" not in paper_part
    assert "**F1**" in own_part and "**cannot decide**" in own_part and "**worse than stratified**" in own_part
