"""The headroom screen on a planted law: its numbers are set against a brute-force search written here."""

from __future__ import annotations

import numpy as np
import pytest

from aioli_repro import headroom
from aioli_repro.profiles import PROFILES


class PlantedRunner:
    """Answers each static run with validation losses from a planted law instead of training."""

    def __init__(self, law, cached_only=False, finished=None):
        self.law, self.seen, self.cached_only, self.finished = law, [], cached_only, finished

    def run(self, cfgs):
        from aioli_repro.executors import NotCachedError

        if self.finished is not None and cfgs[0].data.groups not in self.finished:
            raise NotCachedError(f"{cfgs[0].data.groups} never trained")
        self.seen += cfgs
        return [{"val_loss": dict(zip(c.data.groups, self.law(np.array(c.method_config["proportions"]))))}
                for c in cfgs]


def planted(p):
    # group 1 gains far more from its own data than group 0: the best mixture is p_1 = 0.185, far from uniform
    c, b, a = np.array([1.0, 1.2]), np.array([0.5, 3.0]), np.array([1.0, 4.0])
    return c + b * np.exp(-a * p)


def test_pair_candidates_cap_each_group_against_each_other():
    cands = headroom.pair_candidates(("a", "b", "c"), caps=[1000])
    assert len(cands) == 3 + 6 and ("a", "b") in cands and ("a@1000", "b") in cands and ("a", "b@1000") in cands
    assert len(headroom.pair_candidates()) == 21
    assert headroom.label(("books@300000", "pydocs")) == "books@300k/pydocs"


def test_the_screen_reports_the_observed_and_the_law_headroom_of_a_planted_pair():
    runner = PlantedRunner(planted)
    table = headroom.screen([("code", "licenses")], "full", [0], runner, n_points=5)
    row = table.iloc[0]
    grid = np.array([[k / 6, 1 - k / 6] for k in range(1, 6)])  # n = 5: p1 in 1/6 .. 5/6, 0.5 included
    ppl = np.exp(np.array([planted(p) for p in grid])).mean(axis=1)
    uniform = np.exp(planted(np.array([0.5, 0.5]))).mean()
    assert row.ppl_uniform == pytest.approx(uniform)
    assert row.observed_gain_pct == pytest.approx(100 * (uniform - ppl.min()) / uniform)
    assert row.p_best_observed == pytest.approx(list(grid[ppl.argmin()]), abs=1e-4)
    # the screen reads validation losses only: its runs skip the test split's evaluation (their own run ids)
    assert {c.train.final_eval for c in runner.seen} == {"val"}
    fine = np.linspace(0, 1, 100001)
    best = np.exp(np.array([planted(np.array([x, 1 - x])) for x in fine])).mean(axis=1).min()
    assert row.law_gain_pct == pytest.approx(100 * (uniform - best) / uniform, rel=1e-3)  # the law fits exactly
    assert row.law_gain_pct > row.observed_gain_pct > 0
    assert len(runner.seen) == 5 and all(c.train.steps == PROFILES["full"].train.steps for c in runner.seen)


def test_a_shortened_screen_trains_shorter_runs_and_the_summary_ranks_by_observed_gain():
    flat = PlantedRunner(lambda p: np.array([2.0, 2.0]))  # no mixture matters
    table = headroom.screen([("code", "licenses"), ("code@5000", "licenses")], "full", [0, 1],
                            PlantedRunner(planted), n_points=3, steps=200)
    assert set(table.steps) == {200} and len(table) == 4
    summary = headroom.screen_summary(table)
    assert summary.seeds.tolist() == [2, 2] and summary.observed_gain_pct.is_monotonic_decreasing
    none = headroom.screen([("code", "licenses")], "full", [0], flat, n_points=3)
    assert none.observed_gain_pct.iloc[0] == pytest.approx(0) and abs(none.law_gain_pct.iloc[0]) < 1e-6


def test_a_chosen_candidate_becomes_a_setting_every_method_accepts():
    st = headroom.as_setting(("pydocs@300000", "code"))
    assert st.groups == ("pydocs@300000", "code") and st.label == "pydocs@300k/code"
    from aioli_repro.methods import setting_groups

    assert setting_groups(st, "full") == ("pydocs@300000", "code")


def test_a_cap_repeats_the_group_as_often_in_a_shortened_screen_as_in_a_full_run():
    # full: 1,000 steps x 8 sequences x 256 tokens = 2,048,000 tokens; half of them over 10 epochs = 102,400
    assert headroom.cap_for_epochs("full", 10) == 102_400
    assert headroom.cap_for_epochs("full", 10, steps=250) == 25_600
    assert len(headroom.default_candidates("full")) == 21 * 3
    smoke = headroom.default_candidates("smoke")
    assert len(smoke) == 2 and smoke[1][0].startswith("latex@")


def test_the_screen_figure_draws_both_estimates_for_the_top_candidates(tmp_path):
    import pandas as pd

    from aioli_repro import plots

    summary = pd.DataFrame({"candidate": ["a@1k/b", "a/b", "c/d"], "observed_gain_pct": [6.0, 0.5, 0.1],
                            "law_gain_pct": [9.0, 1.0, -0.2], "steps": [40, 40, 40]})
    fig = plots.plot_headroom_screen(summary, "smoke", top=2, path=tmp_path / "s.png")
    widths = sorted(round(p.get_width(), 6) for p in fig.axes[0].patches)
    assert widths == [0.5, 1.0, 6.0, 9.0] and (tmp_path / "s.png").exists()  # the third candidate is cut


def test_a_render_from_the_cache_keeps_the_finished_candidates_and_lists_the_others():
    runner = PlantedRunner(planted, cached_only=True, finished=[("code", "licenses")])
    table = headroom.screen([("code", "licenses"), ("code@5000", "licenses")], "full", [0, 1], runner, n_points=3)
    assert table.candidate.tolist() == ["code/licenses", "code/licenses"]
    assert table.attrs["missing"] == ["code@5k/licenses/seed 0", "code@5k/licenses/seed 1"]
    nothing = headroom.screen([("code@5000", "licenses")], "full", [0], runner, n_points=3)
    assert nothing.empty and nothing.attrs["missing"] == ["code@5k/licenses/seed 0"]
