"""The headroom settings' confirmation and Table 2b's share of the headroom, against hand computations, scipy's t-test
and simulations of the rule under the null."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from aioli_repro import claims, findings, headroom, hparams, table2b
from aioli_repro.errors import ConfigError
from aioli_repro.profiles import check_study_parameters
from aioli_repro.stats import ratio_ci


# ------------------------------------------------------------------------------------------------ Fieller
def test_fiellers_bounds_are_where_the_paired_t_test_of_x_minus_rho_y_turns_significant():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = 2 + rng.normal(0, 0.3, 4)
        x = 0.6 * y + rng.normal(0, 0.2, 4)
        ratio, low, high = ratio_ci(x, y)
        assert ratio == pytest.approx(x.mean() / y.mean())
        for rho in (low, high):  # the bounds: p = 0.05 exactly
            assert stats.ttest_1samp(x - rho * y, 0).pvalue == pytest.approx(0.05, abs=1e-9)
        assert stats.ttest_1samp(x - ratio * y, 0).pvalue > 0.05  # inside: kept
        for rho in (low - 0.05, high + 0.05):  # outside: rejected
            assert stats.ttest_1samp(x - rho * y, 0).pvalue < 0.05


def test_fiellers_interval_is_unbounded_exactly_when_the_denominator_is_not_significant():
    y = np.array([0.5, -0.2, 0.4])  # its own t-test keeps 0
    assert stats.ttest_1samp(y, 0).pvalue > 0.05
    _, low, high = ratio_ci(np.array([0.3, 0.1, 0.2]), y)
    assert low == -np.inf and high == np.inf
    # no spread in y and x: the ratio is known exactly (hand: 1.0 / 2.0)
    assert ratio_ci([1.0, 1.0], [2.0, 2.0]) == (0.5, 0.5, 0.5)
    assert np.isnan(ratio_ci([1.0], [2.0])[1])
    with pytest.raises(ValueError, match="paired"):
        ratio_ci([1.0, 2.0], [1.0])


# ------------------------------------------------------------------------------------------------ the rule
def test_the_share_rule_names_each_case():
    assert table2b.share_verdict(0.6, 1.2, 0.1) == table2b.FINDS
    assert table2b.share_verdict(-0.3, 0.4, 0.1) == table2b.MISSES
    assert table2b.share_verdict(0.2, 0.9, 0.1) == table2b.INCONCLUSIVE
    assert table2b.share_verdict(0.6, 1.2, -0.1) == table2b.CANNOT_DECIDE  # p* itself not significant
    assert table2b.share_verdict(np.nan, np.nan, np.nan) == table2b.CANNOT_DECIDE  # one seed


@pytest.mark.parametrize("true_share, never", [(0.0, table2b.FINDS), (1.0, table2b.MISSES)])
def test_under_the_null_the_rule_rarely_says_the_opposite(true_share, never):
    """A method identical to stratified (share 0) or as good as p* (share 1), 3 seeds, headroom 4 ppl with seed
    noise 1 ppl on every run: the wrong verdict at most 2.5% of the time (plus simulation error)."""
    rng = np.random.default_rng(1)
    wrong, n = 0, 4000
    for _ in range(n):
        strat = 100 + rng.normal(0, 3, 3)  # seeds differ a lot; the pairing removes it
        best = strat - 4 + rng.normal(0, 1, 3)
        method = strat - true_share * 4 + rng.normal(0, 1, 3)
        _, lo, hi = ratio_ci(strat - method, strat - best)
        _, h_lo, _ = ratio_ci(strat - best, np.ones(3))
        wrong += table2b.share_verdict(lo, hi, h_lo) == never
    assert wrong / n < 0.025 + 3 * np.sqrt(0.025 * 0.975 / n)


# ------------------------------------------------------------------------------------------------ share table
def _runs(rows):
    return pd.DataFrame([{"setting": "latex@1000+pydocs", "method": m, "seed": s, "avg_test_perplexity": v}
                         for m, vals in rows.items() for s, v in enumerate(vals)])


def test_the_share_table_pairs_by_seed_and_divides_the_mean_gain_by_the_mean_headroom():
    runs = _runs({"stratified": [20.0, 22.0, 21.0, 30.0], table2b.BEST_STATIC: [17.0, 18.5, 18.0, np.nan],
                  "grid": [17.5, 18.0, 18.5, 25.0], "aioli": [19.0, 22.5, 20.0, 29.0]})
    share = table2b.share_table(runs.dropna()).set_index("method")
    # hand: seeds 0-2 pair (p* has no seed 3); H = 3.0, 3.5, 3.0 -> 9.5/3; grid G = 2.5, 4.0, 2.5 -> 9/3
    assert share.loc["grid", "seeds"] == 3
    assert share.loc["grid", "headroom"] == pytest.approx(9.5 / 3)
    assert share.loc["grid", "gain"] == pytest.approx(3.0)
    assert share.loc["grid", "share"] == pytest.approx(9.0 / 9.5)
    assert share.loc["aioli", "share"] == pytest.approx((1.0 - 0.5 + 1.0) / 9.5)  # G = 1, -0.5, 1
    assert share.loc["grid", "headroom_pct"] == pytest.approx(100 * (9.5 / 3) / 21.0)
    assert share.loc[table2b.BEST_STATIC, "share"] == pytest.approx(1.0)
    assert set(share.verdict) <= {table2b.FINDS, table2b.MISSES, table2b.INCONCLUSIVE, table2b.CANNOT_DECIDE}
    shown = table2b.table2b(share.reset_index())
    assert list(shown.method) == ["grid", "aioli", table2b.BEST_STATIC]
    assert shown.loc[0, "latex@1k/pydocs share"].startswith("0.95")


# ------------------------------------------------------------------------------------------------ notebook 10
def _confirmation(gains):
    """Two seeds of a 3-point sweep (p_1 = 0.25, 0.5, 0.75) per candidate, with given validation perplexities."""
    rows = []
    for groups, per_seed in gains.items():
        for seed, ppl in enumerate(per_seed):
            rows.append({"groups": groups, "seed": seed, "mixtures_p": [[0.25, 0.75], [0.5, 0.5], [0.75, 0.25]],
                         "ppl_mixtures": ppl})
    return pd.DataFrame(rows)


def test_the_confirmation_chooses_p_star_by_the_mean_and_confirms_only_a_gain_whose_interval_excludes_0():
    table = _confirmation({
        "latex@1000+pydocs": [[90.0, 100.0, 101.0], [92.0, 100.0, 99.0], [91.0, 102.0, 100.0]],
        "code+books": [[99.0, 100.0, 98.0], [101.0, 100.0, 103.0], [100.0, 100.0, 99.5]],
    })
    chosen = headroom.choose_settings(table, k=1).set_index("setting")
    # hand: latex p* = [0.25, 0.75]; gains 10%, 8%, 100*(102-91)/102
    gains = [10.0, 8.0, 100 * 11 / 102]
    row = chosen.loc["latex@1000+pydocs"]
    assert json.loads(row.p_star) == [0.25, 0.75]
    assert row.val_gain_pct == pytest.approx(np.mean(gains))
    half = stats.t.ppf(0.975, 2) * np.std(gains, ddof=1) / np.sqrt(3)
    assert row.ci_low == pytest.approx(np.mean(gains) - half)
    assert row.confirmed and row.selected and row.meets_aim and row.label == "latex@1k/pydocs"
    other = chosen.loc["code+books"]  # best by the mean: p = 0.75 (mean 100.83 vs uniform 100); gains mixed
    assert json.loads(other.p_star) == [0.5, 0.5] or not other.confirmed
    assert not other.selected


def test_confirmation_candidates_rescale_caps_and_skip_candidates_without_gain():
    summary = pd.DataFrame({"groups": ["latex@25600+pydocs", "code+books", "books+pydocs@25600"],
                            "observed_gain_pct": [6.0, -0.5, 2.0]})
    cands = headroom.confirmation_candidates(summary, "full", screen_steps=250, k=3)
    # full: 1,000 steps, four times the screen's 250: the cap repeats as many epochs at 102,400 tokens
    assert cands == [("latex@102400", "pydocs"), ("books", "pydocs@102400")]
    assert headroom.confirmation_candidates(summary, "full", 250, k=1) == [("latex@102400", "pydocs")]


def test_the_control_is_the_median_candidate_at_full_length_and_none_when_the_median_is_in_the_top():
    summary = pd.DataFrame({"groups": ["a+b", "c+d@25600", "e+f", "g+h", "i+j", "k+l", "m+n"],
                            "observed_gain_pct": [0.1, 3.0, -1.0, 5.0, 0.4, 2.0, -0.2]})
    # descending by gain: g+h 5.0, c+d 3.0, k+l 2.0, i+j 0.4, a+b 0.1, m+n -0.2, e+f -1.0: the median (4th of 7)
    assert headroom.control_candidate(summary, "full", 250, k=3) == ("i", "j")
    # with 3 candidates the median is the 2nd, inside the top 2: no control; of two, the second is the control
    assert headroom.control_candidate(summary.head(3), "full", 250, k=2) is None
    assert headroom.control_candidate(summary.head(2), "full", 250, k=1) == ("a", "b")
    # a capped median candidate has its cap rescaled like the top ones (250 -> 1,000 steps: x4)
    capped = pd.DataFrame({"groups": ["x+y", "c+d@25600", "e+f"], "observed_gain_pct": [3.0, 1.0, -1.0]})
    assert headroom.control_candidate(capped, "full", 250, k=1) == ("c", "d@102400")


def test_a_control_is_reported_but_never_selected_even_when_it_confirms_the_largest_gain():
    table = _confirmation({
        "latex@1000+pydocs": [[95.0, 100.0, 101.0], [96.0, 100.0, 99.0], [95.5, 100.0, 100.0]],
        "code+books": [[90.0, 100.0, 101.0], [91.0, 100.0, 99.0], [90.5, 100.0, 100.0]],
    })
    chosen = headroom.choose_settings(table, k=3, controls=["code+books"]).set_index("setting")
    assert chosen.loc["code+books", "confirmed"] and not chosen.loc["code+books", "selected"]
    assert chosen.loc["code+books", "role"] == "control"
    assert chosen.loc["latex@1000+pydocs", "selected"] and chosen.loc["latex@1000+pydocs", "role"] == "screen's best"


def test_screen_vs_full_length_lines_up_each_confirmed_candidate_with_its_screen_rank_and_gains():
    summary = pd.DataFrame({"groups": ["code+books", "latex@250+pydocs", "a+b"], "observed_gain_pct": [1.0, 6.0, 0.5],
                            "law_gain_pct": [0.8, 2.0, 0.1]})
    confirmation = _confirmation({
        "latex@1000+pydocs": [[95.0, 100.0, 101.0], [96.0, 100.0, 99.0], [95.5, 100.0, 100.0]],
        "code+books": [[99.0, 100.0, 101.0], [99.5, 100.0, 99.0], [99.0, 100.0, 100.0]],
    })
    confirmation["law_gain_pct"] = [3.0, 4.0, 5.0, 0.2, 0.4, 0.6]
    chosen = headroom.choose_settings(confirmation, k=1, controls=["code+books"])
    # the screen ran a quarter of full's 1,000 steps: latex@250 at 250 steps is latex@1000 at full length
    table = headroom.screen_vs_full_length(summary, confirmation, chosen, "full", screen_steps=250).set_index("label")
    top, control = table.loc["latex@1k/pydocs"], table.loc["code/books"]
    assert (top.screen_rank, control.screen_rank, top.screen_candidates) == (1, 2, 3)
    assert (top.screen_observed_gain_pct, top.screen_law_gain_pct) == (6.0, 2.0)
    assert top.full_gain_pct == pytest.approx(np.mean([5.0, 4.0, 4.5]))  # 100 * (100 - p*) / 100 per seed
    assert top.full_law_gain_pct == pytest.approx(4.0) and control.full_law_gain_pct == pytest.approx(0.4)
    assert control.role == "control" and top.role == "screen's best"
    with pytest.raises(ValueError, match="not a screened candidate"):
        headroom.screen_vs_full_length(summary, confirmation, chosen, "full", screen_steps=500)


def test_the_fallback_setting_of_a_profile_that_confirms_nothing_is_never_the_control(tmp_path, monkeypatch):
    table = pd.DataFrame({"setting": ["a+b", "c+d"], "role": ["control", "screen's best"], "selected": [False, False],
                          "val_gain_pct": [9.0, 1.0]})
    monkeypatch.setattr(table2b, "results_dir", lambda profile: tmp_path)
    table.to_csv(tmp_path / headroom.SETTINGS_FILE, index=False)
    assert table2b.read_settings("smoke", confirmed_only=False).setting.tolist() == ["c+d"]


def test_the_three_stages_use_disjoint_seeds():
    full = headroom.stage_seeds("full")
    assert full == {"screen": [0], "confirm": [1, 2, 3], "test": [4, 5, 6]}
    smoke = headroom.stage_seeds("smoke")
    assert len(smoke["confirm"]) >= 2 and len(smoke["test"]) >= 2
    assert not set(smoke["screen"]) & set(smoke["confirm"]) and not set(smoke["confirm"]) & set(smoke["test"])


# ------------------------------------------------------------------------------------------------ settings by groups
def test_a_setting_named_by_its_groups_resolves_anywhere_and_bad_groups_are_named():
    st = hparams.get_setting("latex@102400+pydocs")
    assert st.groups == ("latex@102400", "pydocs") and st.label == "latex@102.4k/pydocs"
    assert headroom.as_setting(("latex@102400", "pydocs")) == st
    check_study_parameters("full", settings=["latex@102400+pydocs", "github_c4"])
    with pytest.raises(ConfigError, match="licenses"):
        hparams.get_setting("latex+licenses")
    with pytest.raises(ConfigError, match="unknown setting"):
        check_study_parameters("full", settings=["nothing"])


def test_table2b_needs_notebook_10s_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(table2b, "results_dir", lambda profile: tmp_path)
    from aioli_repro.executors import NotCachedError

    with pytest.raises(NotCachedError, match="notebook 10"):  # a render from the cache skips notebook 11
        table2b.read_settings("full")
    pd.DataFrame({"setting": ["code+books"], "selected": [False], "p_star": ["[0.5, 0.5]"]}).to_csv(
        tmp_path / table2b.SETTINGS_FILE, index=False)
    with pytest.raises(table2b.NoConfirmedSetting, match="no setting"):
        table2b.read_settings("full")


# ------------------------------------------------------------------------------------------------ F3
def test_f3_counts_the_methods_that_find_most_of_the_headroom_on_every_deciding_setting():
    base = dict(label="x", headroom=4.0, headroom_pct=5.0, headroom_low=1.0, headroom_high=7.0, seeds=3)
    share = pd.DataFrame([
        {**base, "setting": "a", "method": "grid", "share": 0.9, "verdict": table2b.FINDS},
        {**base, "setting": "b", "method": "grid", "share": 0.8, "verdict": table2b.FINDS},
        {**base, "setting": "a", "method": "aioli", "share": 0.1, "verdict": table2b.MISSES},
        {**base, "setting": "b", "method": "aioli", "share": 0.6, "verdict": table2b.FINDS},
        {**base, "setting": "a", "method": "doge", "share": 0.0, "verdict": table2b.MISSES},
        {**base, "setting": "b", "method": "doge", "share": 0.1, "verdict": table2b.MISSES},
    ])
    c = findings.finding_f3(share)
    assert c.verdict == "found by 1 of 3"
    assert c.why == ("finds most of it on every setting: grid; misses most of it on every setting: doge; finds most "
                     "of it on some settings, inconclusive on the others: none; misses most of it on some, "
                     "inconclusive on the others: none; finds on some and misses on others: aioli; inconclusive on "
                     "every setting: none")
    assert c.ours.endswith("Shares (settings in that order): grid 0.90/0.80, aioli 0.10/0.60, doge 0.00/0.10")
    # Full's pattern: finds on two settings and inconclusive on the third is not counted as found, and is told apart
    # from a method that misses on two and is inconclusive on the third; a setting a method lacks shows "-".
    third = pd.DataFrame([
        {**base, "setting": "c", "method": "grid", "share": 0.7, "verdict": table2b.INCONCLUSIVE},
        {**base, "setting": "c", "method": "aioli", "share": 0.2, "verdict": table2b.INCONCLUSIVE},
    ])
    mixed = pd.concat([share[share.method != "aioli"].assign(
        verdict=lambda d: d.verdict.where(d.method != "doge", table2b.MISSES)), third,
        share[share.method == "aioli"].assign(verdict=table2b.MISSES)], ignore_index=True)
    c = findings.finding_f3(mixed)
    assert c.verdict == "found by 0 of 3"
    assert "inconclusive on the others: grid (2 of 3); misses most of it on some, inconclusive on the others: " \
           "aioli (2 of 3); finds on some and misses on others: none" in c.why
    assert "misses most of it on every setting: doge;" in c.why
    assert c.ours.endswith("grid 0.90/0.80/0.70, doge 0.00/0.10/-, aioli 0.10/0.60/0.20")
    assert findings.finding_f3(None).verdict == claims.NOT_RUN
    none = share.assign(verdict=table2b.CANNOT_DECIDE)
    assert findings.finding_f3(none).verdict == claims.CANNOT_DECIDE
    assert findings.finding_f3(share, {"11_table2b_headroom": ["grid/a/seed 4"]}).verdict == claims.INCONCLUSIVE


def test_f3_cannot_be_decided_when_notebook_10_confirmed_no_setting():
    settings = pd.DataFrame({"setting": ["a+b", "c+d"], "label": ["a/b", "c/d"], "selected": [False, False],
                             "val_gain_pct": [0.4, 1.5], "ci_low": [-1.0, -0.2], "ci_high": [1.8, 3.2]})
    c = findings.finding_f3(None, None, settings)
    assert c.verdict == claims.CANNOT_DECIDE and "no candidate's headroom was confirmed" in c.why
    assert c.ours == "best candidate c/d: +1.50% [-0.20, +3.20]"
    # once a setting is selected, the share decides as before (here: none yet, so not run)
    assert findings.finding_f3(None, None, settings.assign(selected=[False, True])).verdict == claims.NOT_RUN


def test_the_smoke_fallback_takes_the_largest_gain_when_nothing_is_confirmed(tmp_path, monkeypatch):
    monkeypatch.setattr(table2b, "results_dir", lambda profile: tmp_path)
    pd.DataFrame({"setting": ["code+books", "latex+pydocs"], "selected": [False, False], "val_gain_pct": [0.5, 2.0],
                  "p_star": ["[0.5, 0.5]", "[0.25, 0.75]"]}).to_csv(tmp_path / table2b.SETTINGS_FILE, index=False)
    assert list(table2b.read_settings("smoke", confirmed_only=False).setting) == ["latex+pydocs"]


def test_the_share_figure_draws_bounded_and_unbounded_intervals(tmp_path):
    from aioli_repro import plots

    base = dict(setting="a", label="a/b", headroom=4.0, headroom_pct=5.0, share=0.5)
    share = pd.DataFrame([{**base, "method": "grid", "share_low": 0.2, "share_high": 0.9},
                          {**base, "method": "aioli", "share_low": -np.inf, "share_high": np.inf}])
    fig = plots.plot_headroom_share(share, "smoke", path=tmp_path / "s.png")
    ax = fig.axes[0]
    assert (tmp_path / "s.png").exists() and [t.get_text() for t in ax.get_yticklabels()] == ["grid", "aioli"]
    styles = [line.get_linestyle() for line in ax.lines[:4]]
    assert styles[0] == "-" and styles[2] == "--"  # grid's bounded interval solid, aioli's unbounded one dashed


def test_notebooks_12_and_13_take_notebook_10s_first_selected_setting_once_there_is_one(tmp_path, monkeypatch):
    monkeypatch.setattr(headroom, "results_dir", lambda profile: tmp_path)
    assert headroom.default_headroom_groups("full") == ("latex@102400", "pydocs")  # nothing chosen yet
    pd.DataFrame({"setting": ["code+books", "books@9000+pydocs"], "selected": [False, True]}).to_csv(
        tmp_path / table2b.SETTINGS_FILE, index=False)
    assert headroom.default_headroom_groups("full") == ("books@9000", "pydocs")


def test_the_cost_line_counts_each_methods_runs_and_the_run_on_p_star():
    # hand: stratified 1 + grid's 9-point sweep + the run on p* = 11 runs per (setting, seed); x 2 settings x 3 seeds
    line = table2b.estimated_cost("full", 2, [4, 5, 6], methods=("stratified", "grid"))
    assert line.startswith("about 66 runs of 1000 steps") and f"{66 * 3.7 / 2 / 60:.1f} h" in line
