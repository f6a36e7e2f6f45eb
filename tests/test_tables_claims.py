"""The statistics behind the tables and the claim verdicts, on synthetic run tables with known answers."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from aioli_repro import claims, restricted, tables
from aioli_repro.errors import ConfigError
from aioli_repro.hparams import SETTINGS


def _runs(diffs_by_method: dict[str, list[float]], settings=("arxiv_stackexchange", "github_c4"), base=100.0):
    """A run table: stratified at base + seed, each method at stratified + its per-seed difference."""
    rows = []
    for s in settings:
        for seed, _ in enumerate(next(iter(diffs_by_method.values()))):
            rows.append({"setting": s, "label": SETTINGS[s].label, "method": "stratified", "seed": seed,
                         "avg_test_perplexity": base + seed, "extra_runs": 0, "extra_tokens": 0})
            for m, diffs in diffs_by_method.items():
                rows.append({"setting": s, "label": SETTINGS[s].label, "method": m, "seed": seed,
                             "avg_test_perplexity": base + seed + diffs[seed], "extra_runs": 2,
                             "extra_tokens": 4096})
    return pd.DataFrame(rows)


def test_paired_ci_is_the_t_interval_and_undefined_for_one_seed():
    d = [-1.0, -2.0, -0.5, -1.5]
    mean, lo, hi = tables.paired_ci(d)
    half = stats.t.ppf(0.975, 3) * np.std(d, ddof=1) / 2
    assert mean == pytest.approx(-1.25) and lo == pytest.approx(-1.25 - half) and hi == pytest.approx(-1.25 + half)
    m1, lo1, hi1 = tables.paired_ci([3.0])
    assert m1 == 3.0 and math.isnan(lo1) and math.isnan(hi1)


def test_min_detectable_difference_shrinks_with_seeds_and_grows_with_noise():
    a, b, c = (tables.min_detectable_difference(sd, n) for sd, n in ((1.0, 3), (1.0, 10), (2.0, 10)))
    assert a > b and c == pytest.approx(2 * b)
    assert math.isnan(tables.min_detectable_difference(1.0, 1))


def test_differences_and_table2_pair_by_seed_and_count_settings_beaten():
    runs = _runs({"aioli": [-1.0, -2.0, -3.0], "grid": [1.0, 1.0, 4.0]})
    d = tables.differences(runs)
    assert sorted(d[d.method == "aioli"]["diff"].round(6).unique()) == [-3.0, -2.0, -1.0]
    t2 = tables.table2(runs).set_index("method")
    assert t2.loc["stratified", "A/SE"] == "101.000 ± 1.000"
    assert t2.loc["aioli", "A/SE"] == "-2.000 ± 1.000" and t2.loc["aioli", "# beats stratified"] == "2/2"
    assert t2.loc["grid", "# beats stratified"] == "0/2"
    assert t2.loc["aioli", "extra tokens (M, mean)"] == pytest.approx(0.0)  # rounds 4096 tokens to 0.00 M
    power = tables.power_table(runs).set_index(["setting", "method"])
    assert list(power.seeds) == [3, 3, 3, 3]
    # Each method's own paired sd: aioli's differences -1, -2, -3 have sd 1; grid's 1, 1, 4 have sd sqrt(3).
    assert power.loc[("A/SE", "aioli"), "paired_diff_sd"] == pytest.approx(1.0)
    assert power.loc[("A/SE", "grid"), "paired_diff_sd"] == pytest.approx(math.sqrt(3))
    assert power.loc[("A/SE", "aioli"), "min_detectable_diff"] == pytest.approx(3.26, abs=0.02)  # 3.26 sd at n = 3
    # The paper's A/SE Aioli effect, -0.205 of 16.532, is -1.24% of our stratified 101.0.
    assert power.loc[("A/SE", "aioli"), "paper_effect_here"] == pytest.approx(-0.205 / 16.532 * 101.0)


def test_table2_says_not_run_and_counts_only_the_settings_a_method_ran_on():
    runs = _runs({"aioli": [-1.0, -2.0, -3.0]})
    runs = runs[~((runs.method == "aioli") & (runs.setting == "github_c4"))]  # a sitting that has not reached it
    t2 = tables.table2(runs).set_index("method")
    assert t2.loc["aioli", "GH/C4"] == tables.NOT_RUN and t2.loc["aioli", "GH/C4 95% CI"] == ""
    assert t2.loc["aioli", "# beats stratified"] == "1/1"


def test_table2_methods_validates_subsets():
    assert tables.table2_methods(None) == list(tables.TABLE2_METHODS)
    assert tables.table2_methods(["aioli", "stratified"]) == ["stratified", "aioli"]
    with pytest.raises(ConfigError, match="include 'stratified'"):
        tables.table2_methods(["aioli"])
    with pytest.raises(ConfigError, match="unknown Table 2 method"):
        tables.table2_methods(["stratified", "magic"])
    with pytest.raises(ConfigError, match="list of method names"):
        tables.table2_methods("stratified,aioli")


@pytest.mark.parametrize("diffs, verdict", [
    ([-1.0, -1.2, -0.9], claims.REPRODUCED),      # better on every setting, interval below 0
    ([1.0, 1.2, 0.9], claims.NOT_REPRODUCED),     # significantly worse
    ([-1.0, 1.0, -0.1], claims.INCONCLUSIVE),     # interval includes 0
    ([-1.0], claims.INCONCLUSIVE),                # one seed: no interval
])
def test_claim_c1_verdict_follows_the_intervals(diffs, verdict):
    assert claims.claim_c1(_runs({"aioli": diffs}, settings=tuple(SETTINGS))).verdict == verdict


def test_claim_c2_calls_one_seed_counts_noise():
    """A baseline with one seed on some setting can neither settle the claim nor refute it: one short run's sign
    flips with the seed at our scale."""
    every = {m: [1.0, 1.0] for m in tables.BASELINES} | {"dml": [1.0, -1.0]}
    runs = _runs(every)
    thin = runs[~((runs.method == "skillit") & (runs.seed == 1) & (runs.setting == "github_c4"))]
    c = claims.claim_c2(thin)
    assert c.verdict == claims.INCONCLUSIVE and "skillit" in c.why and "skillit 0/2 (1 seed)" in c.ours
    # One seed that wins everywhere is not yet a refutation either.
    lucky = _runs(every | {"doge": [-1.0, 1.0]})
    lucky = lucky[~((lucky.method == "doge") & (lucky.seed == 1))]
    assert claims.claim_c2(lucky).verdict == claims.INCONCLUSIVE


def test_claim_c8_waits_for_both_ablations():
    assert claims.claim_c8(_runs({"aioli": [-1.0, -1.0]})).verdict == claims.NOT_RUN
    assert claims.claim_c8(_runs({"aioli": [-1.0, -1.1], "aioli_static": [-0.5, -0.4],
                                  "aioli_diagonal": [-0.6, -0.5]})).verdict != claims.NOT_RUN


def test_claim_c8_says_when_aioli_has_no_gain_to_keep():
    none = claims.claim_c8(_runs({"aioli": [0.5, 0.4, 0.6], "aioli_static": [0.3, 0.6, 0.5],
                                  "aioli_diagonal": [0.6, 0.5, 0.4]}))
    assert none.verdict == claims.CANNOT_DECIDE and "no gain for the ablations to keep" in none.why
    some = claims.claim_c8(_runs({"aioli": [-0.5, -0.4, -0.6], "aioli_static": [-0.3, -0.6, -0.5],
                                  "aioli_diagonal": [-0.6, -0.5, -0.4]}))
    assert some.verdict == claims.INCONCLUSIVE and "no gain" not in some.why


def test_ablations_compare_only_cells_where_all_three_have_finished():
    """Mid-sitting, Aioli may have finished a (setting, seed) where an ablation has not: such a cell must not enter
    the comparison, or a gap between Aioli and an ablation would mix different seeds and settings."""
    done = _runs({"aioli": [-1.0, -1.2, -0.9], "aioli_static": [-0.5, -0.6, -0.4],
                  "aioli_diagonal": [-0.7, -0.8, -0.6]})
    ref_table, ref_claim = tables.ablation_table(done), claims.claim_c8(done)
    assert list(ref_table.columns[1:3]) == ["A/SE", "GH/C4"] and ref_table["seeds"].tolist() == [3, 3, 3]
    # Aioli alone on a third setting and a fourth seed (wildly off), an ablation missing on one cell:
    extra = _runs({"aioli": [50.0] * 4}, settings=("book_stackexchange",))
    extra = pd.concat([extra, _runs({"aioli": [0, 0, 0, 60.0]}, settings=("arxiv_stackexchange",)).query("seed == 3")])
    partial = pd.concat([done, extra], ignore_index=True)
    assert tables.ablation_table(partial).equals(ref_table)
    assert claims.claim_c8(partial) == ref_claim
    gap = done[~((done.method == "aioli_static") & (done.seed == 2) & (done.setting == "github_c4"))]
    t = tables.ablation_table(gap).set_index("method")
    assert t.loc["aioli", "GH/C4"] == pytest.approx(-1.1) and t["seeds"].tolist() == [2, 2, 2]
    assert "(2 settings, 2 seed(s))" in claims.claim_c8(gap).ours  # seed 2 lacks GH/C4


def test_build_claims_marks_the_tables_a_profile_has_not_produced(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "results_dir", lambda profile: tmp_path / profile)
    (tmp_path / "full").mkdir()
    _runs({"aioli": [-1.0, -1.2, -0.9]}, settings=tuple(SETTINGS)).to_csv(tmp_path / "full" / "04_runs.csv",
                                                                           index=False)
    got = {c.key: c.verdict for c in claims.build_claims("full")}
    assert got["C1"] == claims.REPRODUCED
    partial = claims.claim_c1(_runs({"aioli": [-1.0, -1.2, -0.9]}))  # better on both settings run, 2 of 6
    assert partial.verdict == claims.INCONCLUSIVE and "only 2 of the paper's six" in partial.why
    assert all(got[k] == claims.NOT_RUN for k in ("C2", "C3", "C4", "C5", "C7", "C8"))
    assert got["C9"] == claims.NOT_TESTED
    md = claims.claims_markdown(claims.build_claims("full"), "full")
    assert "needs notebook 01_static_mixing_law" in md


def test_studies_that_reuse_runs_are_taken_after_the_studies_that_compute_them():
    from aioli_repro.tables import REUSES, TABLE2_METHODS, study_order

    settings, seeds = ["arxiv_stackexchange", "github_c4", "slimpajama"], [0, 1]
    order = study_order(TABLE2_METHODS, settings, seeds)
    assert sorted(order) == sorted((m, s, k) for k in seeds for s in settings for m in TABLE2_METHODS)
    for user, source in REUSES.items():  # DML after every grid search, DoReMi after every stratified run
        assert min(i for i, t in enumerate(order) if t[0] == user) > max(i for i, t in enumerate(order)
                                                                          if t[0] == source)
    independent = [t for t in order if t[0] not in REUSES]
    assert independent[:len(TABLE2_METHODS) - 2] == [(m, "arxiv_stackexchange", 0) for m in TABLE2_METHODS
                                                     if m not in REUSES]


class _RecordingRunner:
    """Records the configs each ``run`` call asks for, then stops the caller (nothing trains)."""

    calls: list = []

    def __init__(self, *a, **k):
        self.cached_only, self.runs_dir = False, "unused"

    def run(self, cfgs, keep_model=False):
        _RecordingRunner.calls.append([c.to_dict() for c in cfgs])
        raise _Stop


class _Stop(Exception):
    pass


@pytest.mark.parametrize("budget", ["unrestricted", "restricted"])
def test_the_prefetched_sweep_is_the_one_grid_and_dml_train(budget):
    from aioli_repro.methods import run_method

    _RecordingRunner.calls = []
    with pytest.raises(_Stop):
        if budget == "restricted":
            restricted.restricted_pair("dml", "arxiv_book_stackexchange", "smoke", 1, _RecordingRunner())
        else:
            run_method("dml", "arxiv_book_stackexchange", "smoke", 1, _RecordingRunner())
    expected = [c.to_dict() for c in restricted.study_sweep("arxiv_book_stackexchange", "smoke", 1, budget)]
    assert _RecordingRunner.calls == [expected] and len(expected) >= 5


def test_run_grid_trains_every_sweep_as_one_queue_before_the_studies(monkeypatch):
    class NoStudies:  # the studies' executor: every study "not finished", so run_grid stops after the prefetch
        in_process = False

        def map(self, fn, args, **k):
            return [None] * len(args)

    class Prefetch(_RecordingRunner):
        def run(self, cfgs, keep_model=False):
            _RecordingRunner.calls.append([c.to_dict() for c in cfgs])
            return []

    _RecordingRunner.calls = []
    monkeypatch.setattr(tables, "Runner", Prefetch)
    monkeypatch.setattr(tables, "make_executor", lambda *a, **k: NoStudies())
    settings, seeds = ["arxiv_stackexchange", "arxiv_book_stackexchange"], [0, 1]
    with pytest.raises(tables.NotCachedError):
        tables.run_grid(["stratified", "grid", "dml"], settings, "smoke", seeds, jobs=2, progress=False)
    expected = [c.to_dict() for k in seeds for s in settings for c in restricted.study_sweep(s, "smoke", k)]
    assert _RecordingRunner.calls == [expected]
    _RecordingRunner.calls = []  # one worker, or no sweep method: nothing to prefetch
    with pytest.raises(tables.NotCachedError):
        tables.run_grid(["stratified", "aioli"], settings, "smoke", seeds, jobs=2, progress=False)
    assert _RecordingRunner.calls == []


def test_c11_names_the_recipe_its_overhead_was_measured_under():
    runs = pd.DataFrame({"method": ["aioli", "dml"], "extra_runs": [0, 9]})
    overhead = {"profile": "full", "rows": [{"setting": "A/SE", "ratio": 1.03}, {"setting": "SlimPajama", "ratio": 1.01}]}
    c = claims.claim_c11(runs, overhead)
    assert c.verdict == claims.REPRODUCED and "(full recipe" in c.ours and "A/SE 1.03x, SlimPajama 1.01x" in c.ours
    assert claims.claim_c11(runs.assign(extra_runs=[1, 9]), overhead).verdict == claims.NOT_REPRODUCED
    assert "not measured" in claims.claim_c11(runs, None).ours


def test_c3_waits_for_the_dynamic_law_and_for_unfinished_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "results_dir", lambda profile: tmp_path / profile)
    res = tmp_path / "full"
    res.mkdir()
    good = pd.DataFrame([{"setting": "all", "r2": 0.99, "loo_r2": 0.95, "mse": 5e-4, "loo_mse": 1e-3, "fits": 2,
                          "seeds": 1}])
    good.to_csv(res / "01_static_law_summary.csv", index=False)

    def c3():
        return next(c for c in claims.build_claims("full") if c.key == "C3")

    assert c3().verdict == claims.INCONCLUSIVE and "dynamic law" in c3().why  # static alone is not the claim
    good.assign(r2=0.95, loo_r2=0.8).to_csv(res / "02_dynamic_law_summary.csv", index=False)
    assert c3().verdict == claims.REPRODUCED
    (res / "not_finished.json").write_text(json.dumps({"02_dynamic_mixing_law": ["A/SE seed 1", "A/SE seed 2"],
                                                       "05_restricted_budget": ["all"]}))
    assert c3().verdict == claims.INCONCLUSIVE
    assert c3().why.startswith("provisional, 2 part(s) of 02_dynamic_mixing_law not finished yet; the finished part "
                               "says reproduced")
    bad = claims.Claim("C3", "c", "p", "o", claims.NOT_RUN, "w")  # only reproduced / not reproduced are held back
    assert claims.provisional(bad, {"01_static_mixing_law": ["x"]}, ("01_static_mixing_law",)) == bad


def _restricted(improvements: dict[int, dict[tuple[str, str], float]]) -> pd.DataFrame:
    return pd.DataFrame([{"setting": s, "label": SETTINGS[s].label, "method": m, "seed": seed, "improvement": v}
                         for seed, cells in improvements.items() for (s, m), v in cells.items()])


def test_whole_seeds_prefers_a_setting_set_that_several_seeds_share():
    d = pd.DataFrame([{"seed": seed, "setting": s} for seed, have in {0: "abcd", 1: "abc", 2: "abc", 3: "a"}.items()
                      for s in have])
    kept = tables.whole_seeds(d)
    assert sorted(kept.seed.unique()) == [0, 1, 2] and sorted(kept.setting.unique()) == list("abc")
    lone = tables.whole_seeds(d[d.seed == 0])
    assert len(lone) == 4  # one seed: all of its rows (no interval can be drawn from it anyway)


def test_whole_seeds_keeps_the_most_cells_so_two_seeds_ahead_do_not_drop_the_third():
    def kept(have):
        d = pd.DataFrame([{"seed": seed, "setting": s} for seed, sets in have.items() for s in sets])
        k = tables.whole_seeds(d)
        return sorted(k.seed.unique()), "".join(sorted(k.setting.unique()))

    assert kept({0: "abcd", 1: "abcd", 2: "abc"}) == ([0, 1, 2], "abc")  # 3 x 3 cells beat 2 x 4
    assert kept({0: "abcde", 1: "abcde", 2: "ab"}) == ([0, 1], "abcde")  # 2 x 5 beat 3 x 2
    assert kept({0: "abc", 1: "abd"}) == ([0, 1], "ab")  # the common settings of two seeds are a candidate


def test_restricted_summary_averages_seeds_per_pair_and_reports_a_median():
    """One far-off pair moves the mean but not the median; a pair's seeds are averaged before counting."""
    pairs = [("arxiv_stackexchange", "grid"), ("github_c4", "grid"), ("github_c4", "dml")]
    df = _restricted({0: dict(zip(pairs, [1.0, -2.0, 30.0], strict=True)),
                      1: dict(zip(pairs, [0.0, 1.0, 34.0], strict=True))})
    s = restricted.restricted_summary(df)
    assert (s["improved"], s["pairs"]) == (2, 3)  # per pair: +0.5, -0.5, +32
    assert s["mean"] == pytest.approx(32.0 / 3) and s["median"] == pytest.approx(0.5) and s["max"] == 32.0
    assert "median +0.500" in claims.claim_c7(df).ours


def test_restricted_by_start_splits_by_the_method_alone_against_stratified():
    pairs = pd.DataFrame({"setting": ["a", "a", "b", "c"], "seed": [0, 1, 0, 0], "method": ["grid"] * 4,
                          "method_ppl": [12.0, 10.5, 20.0, 9.0], "aioli_ppl": [10.0, 11.0, 21.0, 8.0]})
    pairs["improvement"] = pairs.method_ppl - pairs.aioli_ppl
    stratified = pd.DataFrame({"setting": ["a", "a", "b"], "seed": [0, 1, 0], "avg_test_perplexity": [10.0] * 3})
    t = restricted.restricted_by_start(pairs, stratified).set_index("runs")  # c has no stratified run: left out
    poor, rest, both = t.to_dict("records")
    assert (poor["aioli_improves"], poor["mean_improvement"]) == (1, 0.5)  # a/0 (+2) and b/0 (-1): >1 worse
    assert poor["median_improvement"] == 0.5 and poor["aioli_minus_stratified"] == pytest.approx(5.5)
    assert poor["method_minus_stratified"] == pytest.approx(6.0)
    assert list(t.index) == [2, 1, 3] and rest["mean_improvement"] == -0.5 and both["aioli_improves"] == 1


def test_p_init_spread_is_the_largest_total_variation_between_seeds():
    pairs = pd.DataFrame({"setting": ["a"] * 3 + ["b"], "label": ["A"] * 3 + ["B"], "method": ["dml"] * 4,
                          "seed": [0, 1, 2, 0], "method_ppl": [10.0, 12.0, 14.0, 9.0],
                          # as read back from 05_restricted_runs.csv (strings) and as run_grid returns them (lists)
                          "p_init": ["[0.6, 0.4]", [0.9, 0.1], [0.5, 0.5], [0.2, 0.8]]})
    t = restricted.p_init_spread(pairs).set_index("label")
    assert t.loc["A", "max_tv_between_seeds"] == pytest.approx(0.4)  # seeds 1 and 2: |0.9-0.5| + |0.1-0.5| = 0.8
    assert t.loc["A", "method_ppl_sd"] == pytest.approx(2.0) and t.loc["A", "seeds"] == 3
    assert np.isnan(t.loc["B", "max_tv_between_seeds"]) and np.isnan(t.loc["B", "method_ppl_sd"])


def test_group_tradeoffs_shows_the_group_a_method_starves():
    # stratified: both groups at 100 (+ seed); skillit gains 10% on latex and loses 4x on pydocs, seed by seed
    s = "arxiv_stackexchange"
    a, b = SETTINGS[s].groups
    rows = []
    for seed in (0, 1):
        rows.append({"setting": s, "label": "A/SE", "method": "stratified", "seed": seed,
                     "group_test_perplexity": {a: 100.0 + seed, b: 100.0 + seed}})
        rows.append({"setting": s, "label": "A/SE", "method": "skillit", "seed": seed,
                     # the JSON string 04_runs.csv stores
                     "group_test_perplexity": json.dumps({a: 0.9 * (100 + seed), b: 4 * (100 + seed)})})
    t = tables.group_tradeoffs(pd.DataFrame(rows)).set_index(["method", "group"])
    assert list(t.index.get_level_values("method")[:2]) == ["stratified"] * 2  # Table 2's method order
    assert t.loc[("skillit", a), "ratio_to_baseline"] == pytest.approx(0.9)
    assert t.loc[("skillit", b), "ratio_to_baseline"] == pytest.approx(4.0)
    assert t.loc[("skillit", b), "test_perplexity"] == pytest.approx(402.0)
    assert t.loc[("skillit", b), "stratified_same_seeds"] == pytest.approx(100.5) and t.loc[("skillit", b), "seeds"] == 2
    with pytest.raises(KeyError, match="group_test_perplexity"):
        tables.group_tradeoffs(pd.DataFrame(rows).drop(columns="group_test_perplexity"))
