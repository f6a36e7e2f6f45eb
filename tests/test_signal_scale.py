"""Notebooks 12 (Aioli's signal) and 13 (scale): the picker, the preset override, the parameter count, the paired
differences and the two figures, each against a number worked out here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from aioli_repro import aioli_signal, claims, findings, headroom, hparams, plots, scale
from aioli_repro.config import run_id
from aioli_repro.headroom import as_setting
from aioli_repro.methods import sweep
from aioli_repro.model import PRESETS, preset_parameters
from aioli_repro.profiles import profile_config
from aioli_repro.usage import planned_cost


def _signal_table() -> pd.DataFrame:
    # variant, cosine, p, compute ratio. Holm over the five finite p-values, by hand: 0.001 x 5 = 0.005 (eval x16),
    # 0.01 x 4 = 0.04 and 0.01 x 3 -> 0.04 (rounds x2, anti), 0.03 x 2 = 0.06 (eval x4), 0.60 (released). Qualify
    # (cos > 0, adjusted p < 0.05): "rounds x2" (1.30) and "eval x16" (1.80). "eval x4" would pass unadjusted;
    # "released" is cheaper but noise; "anti" agrees in the wrong sense (cos < 0); "one round" has no later round.
    rows = [("released", 0.05, 0.60, 1.02), ("eval x4", 0.40, 0.03, 1.30), ("eval x16", 0.70, 0.001, 1.80),
            ("rounds x2", 0.35, 0.01, 1.30), ("anti", -0.50, 0.01, 1.05), ("one round", np.nan, np.nan, 1.00)]
    return pd.DataFrame([{"setting": "a_b", "label": "A/B", "variant": v, "across_seeds_cos": c, "across_seeds_p": p,
                          "compute_vs_stratified": w, "steps": 40} for v, c, p, w in rows])


def test_the_picker_takes_the_cheapest_variant_whose_later_rounds_agree_significantly():
    table = _signal_table()
    assert aioli_signal.cheapest_with_signal(table).variant == "rounds x2"
    assert aioli_signal.cheapest_with_signal(table, alpha=0.01).variant == "eval x16"
    assert aioli_signal.signal_seen(table).tolist() == [False, False, True, True, False, False]
    # Holm changes the choice: without rounds x2 and anti, eval x4's 0.03 becomes 0.03 x 2 = 0.06 (eval x16's
    # 0.001 x 3 = 0.003), so the dearer eval x16 is the cheapest that sees; unadjusted, eval x4 would be
    fewer = table[~table.variant.isin(["rounds x2", "anti"])]
    assert aioli_signal.cheapest_with_signal(fewer).variant == "eval x16"
    assert aioli_signal.cheapest_with_signal(table[table.variant.isin(["released", "anti", "one round"])]) is None
    assert aioli_signal.cheapest_with_signal(table.iloc[:0]) is None
    two = pd.concat([table, table.assign(setting="c_d")])
    with pytest.raises(ValueError, match="one setting"):
        aioli_signal.cheapest_with_signal(two)


def test_a_blind_aioli_is_seen_somewhere_at_most_5_percent_of_the_time_with_holm_and_often_without():
    rng = np.random.default_rng(0)
    seen, unadjusted = [], []
    for _ in range(2000):  # seven variants without signal: p uniform, the cosine's sign a coin
        t = pd.DataFrame({"setting": "a_b", "across_seeds_p": rng.uniform(size=7),
                          "across_seeds_cos": rng.choice([-0.1, 0.1], size=7)})
        seen.append(aioli_signal.signal_seen(t).any())
        unadjusted.append(((t.across_seeds_p < 0.05) & (t.across_seeds_cos > 0)).any())
    assert np.mean(seen) <= 0.05 and np.mean(unadjusted) > 0.12  # hand: 1 - 0.975^7 = 0.16


def test_the_signal_grid_scales_the_released_config_and_enlarges_the_validation_sample_to_fit():
    full = aioli_signal.signal_variants("full", 2, 250)
    base = hparams.aioli_config(2, 250)
    assert full["released"] == ({}, {}) and full["cumulative"] == ({"ema": None}, {})
    assert full["eval x16"] == ({"lp_eval_sequences": 16 * base["lp_eval_sequences"]},
                                {"eval_sequences": 16 * base["lp_eval_sequences"]})
    assert full["S_lp x2"][0] == {"lp_steps": 2 * base["lp_steps"]}
    assert full["rounds x2"][0] == {"update_steps": -(-base["update_steps"] // 2)}
    assert aioli_signal.signal_steps("full") == 250 and aioli_signal.signal_seeds("full") == (0, 1, 2, 3, 4)
    smoke = aioli_signal.signal_variants("smoke", 2)
    assert list(smoke) == ["released", "rounds x4"] and aioli_signal.signal_seeds("smoke") == (0, 1)
    # 4 x 2 x 1 LearnParams steps per round must fit in the shortened round
    assert smoke["rounds x4"][0]["update_steps"] > 2 * base["lp_rounds"] * 1


def test_the_signal_plan_shares_stratified_baselines_between_variants_of_one_training_config():
    st = hparams.get_setting("arxiv_stackexchange")
    variants = aioli_signal.signal_variants("full", 2, 250)
    cost = planned_cost(aioli_signal.signal_plan_configs(st, "full", [0, 1, 2], variants, 250))
    # 7 variants x 3 seeds Aioli runs; stratified per distinct training override ({}, eval x4, eval x16) x 3 seeds
    assert cost["runs"] == 7 * 3 + 3 * 3 and cost["steps"] == 30 * 250 and cost["tokens"] == 30 * 250 * 8 * 256


def test_a_preset_override_changes_the_model_and_the_run_id_and_the_profiles_own_preset_does_not():
    own = profile_config("full", ("latex", "pydocs"), "stratified", 0)
    same = profile_config("full", ("latex", "pydocs"), "stratified", 0, preset="1m")
    bigger = profile_config("full", ("latex", "pydocs"), "stratified", 0, preset="4m")
    assert own.model.preset == "1m" and bigger.model.preset == "4m"
    assert run_id(same) == run_id(own) and run_id(bigger) != run_id(own)
    assert bigger.train == own.train and bigger.data == own.data
    swept = sweep("full", ("latex", "pydocs"), 0, preset="4m")
    assert len(swept) == 9 and {c.model.preset for c in swept} == {"4m"}
    assert [run_id(c) for c in sweep("full", ("latex", "pydocs"), 0)] != [run_id(c) for c in swept]
    assert own.model.preset == "1m"  # the profile's model config is copied, never changed


@pytest.mark.parametrize("preset", ["tiny", "300k", "1m"])
def test_the_parameter_count_matches_an_independently_built_gpt_neox(preset):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    p, V = PRESETS[preset], 4096
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=V, hidden_size=p.hidden_size, num_hidden_layers=p.layers,
                                             num_attention_heads=p.heads, intermediate_size=4 * p.hidden_size,
                                             max_position_embeddings=64, tie_word_embeddings=p.tie_embeddings))
    assert preset_parameters(preset, V) == sum(t.numel() for t in model.parameters())


@pytest.mark.parametrize("preset", ["tiny", "300k", "1m", "pythia-160m"])
def test_the_flops_per_token_of_a_preset_match_those_of_the_built_model(preset):
    from aioli_repro.model import build_model, flops_per_token, preset_flops_per_token

    V, context = 4096, 64
    assert preset_flops_per_token(preset, V, context) == flops_per_token(build_model(preset, V, context, 0), context)


def test_the_parameter_count_of_an_untied_preset_counts_the_output_embedding():
    d, L, V = 768, 12, 50304  # pythia-160m (untied): the published 162,322,944 parameters
    assert preset_parameters("pythia-160m", V) == 2 * V * d + L * (12 * d * d + 13 * d) + 2 * d == 162_322_944


def _gap_runs(device: str = "cpu") -> pd.DataFrame:
    strat = {0: 100.0, 1: 102.0, 2: 98.0}
    aioli = {0: 99.0, 1: 101.5, 2: 96.0}  # differences -1.0, -0.5, -2.0
    cumul = {0: 101.0, 1: 103.0, 2: 99.5}  # differences +1.0, +1.0, +1.5
    rows = []
    for s in (0, 1, 2):
        rows.append({"preset": "4m", "parameters": 4_208_128, "device": device, "setting": "a_b", "label": "A/B",
                     "seed": s,
                     "stratified": strat[s], "aioli": aioli[s], "aioli_cumulative": cumul[s],
                     "aioli_minus_stratified": aioli[s] - strat[s],
                     "aioli_minus_stratified_pct": 100 * (aioli[s] - strat[s]) / strat[s],
                     "aioli_cumulative_minus_stratified": cumul[s] - strat[s],
                     "aioli_cumulative_minus_stratified_pct": 100 * (cumul[s] - strat[s]) / strat[s]})
    return pd.DataFrame(rows)


def test_the_paired_differences_match_a_hand_computation_and_scipys_paired_t_test():
    runs = _gap_runs()
    row = scale.gap_summary(runs).set_index("form").loc["aioli"]
    d = np.array([-1.0, -0.5, -2.0])
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t_{0.975, 2}
    assert row["mean"] == pytest.approx(-3.5 / 3)
    assert (row.ci_low, row.ci_high) == pytest.approx((-3.5 / 3 - half, -3.5 / 3 + half))
    assert row.p == pytest.approx(stats.ttest_rel([99.0, 101.5, 96.0], [100.0, 102.0, 98.0]).pvalue)
    pct = np.array([-1.0, -0.5 / 102 * 100, -2.0 / 98 * 100])
    assert row.mean_pct == pytest.approx(pct.mean()) and row.seeds == 3
    table = scale.scale_table(pd.DataFrame(), scale.gap_summary(runs)).set_index("measure")
    assert table.loc["aioli_cumulative_minus_stratified", "mean"] == pytest.approx(3.5 / 3)


class _PlantedRunner:
    """Static runs: test losses from a planted law in which the first group gains far more from its own data."""

    def __init__(self, cached_only=False, finished_presets=None):
        self.cached_only, self.finished, self.seen = cached_only, finished_presets, []

    def run(self, cfgs):
        from aioli_repro.executors import NotCachedError

        if self.finished is not None and cfgs[0].model.preset not in self.finished:
            raise NotCachedError("never trained")
        self.seen += cfgs
        out = []
        for c in cfgs:
            p = np.array(c.method_config["proportions"])
            loss = np.array([1.0, 1.2]) + np.array([3.0, 0.5]) * np.exp(-np.array([4.0, 1.0]) * p)
            out.append({"test_loss": dict(zip(c.data.groups, loss)),
                        "device": "cpu" if c.train.device == "auto" else c.train.device})
        return out


def test_the_sweep_headroom_is_measured_per_preset_against_the_swept_uniform_mixture():
    st = as_setting(("latex", "pydocs"))
    table = scale.sweep_headroom([st], ["tiny", "4m"], "full", [0], _PlantedRunner())
    assert table.preset.tolist() == ["tiny", "4m"] and table.parameters.tolist() == [
        preset_parameters("tiny", 4096), preset_parameters("4m", 4096)]
    grid = np.array([[k / 10, 1 - k / 10] for k in range(1, 10)])
    ppl = np.exp(np.array([1.0, 1.2]) + np.array([3.0, 0.5]) * np.exp(-np.array([4.0, 1.0]) * grid)).mean(axis=1)
    assert table.observed_gain_pct.iloc[0] == pytest.approx(100 * (ppl[4] - ppl.min()) / ppl[4])
    assert table.law_gain_pct.iloc[0] >= table.observed_gain_pct.iloc[0] - 1e-6  # the law fits exactly
    cached = scale.sweep_headroom([st], ["tiny", "4m"], "full", [0], _PlantedRunner(True, ["4m"]))
    assert cached.preset.tolist() == ["4m"] and cached.attrs["missing"] == ["tiny/latex/pydocs/seed 0"]
    runner = _PlantedRunner(True, ["4m"])
    gpu = scale.sweep_headroom([st], ["tiny", "4m"], "full", [0], runner, device="cuda")
    assert gpu.device.tolist() == ["cuda"] and gpu.attrs["missing"] == ["tiny on cuda/latex/pydocs/seed 0"]
    assert {c.train.device for c in runner.seen} == {"cuda"}
    assert table.device.tolist() == ["cpu", "cpu"]


def test_the_scale_plan_at_full_trains_sweeps_and_three_way_comparisons_per_preset(tmp_path, monkeypatch):
    # an empty results folder: the plan must not depend on which setting the committed notebook 10 selected
    monkeypatch.setattr(headroom, "results_dir", lambda profile: tmp_path)
    sts = scale.default_settings("full")
    assert sts[1].groups == ("latex@102400", "pydocs")
    cfgs = scale.planned_configs(sts, ("1m", "4m"), ("4m",), "full", [0], [0, 1, 2])
    cost = planned_cost(cfgs)
    assert cost["runs"] == 2 * 2 * 9 + 1 * 2 * 3 * 3 and cost["steps"] == cost["runs"] * 1000
    cumulative = [c for c in cfgs if c.method == "aioli" and c.method_config["ema"] is None]
    assert len(cumulative) == 6 and {c.model.preset for c in cumulative} == {"4m"}


def test_the_signal_figure_draws_a_point_per_variant_filled_where_it_agrees(tmp_path):
    fig = plots.plot_signal_study(_signal_table(), "smoke", path=tmp_path / "s.png")
    lines = [ln for ln in fig.axes[0].lines if ln.get_marker() == "o"]
    assert len(lines) == 6 and (tmp_path / "s.png").stat().st_size > 0
    filled = sorted(float(ln.get_xdata()[0]) for ln in lines if ln.get_markerfacecolor() != "white")
    assert filled == [1.3, 1.8]  # rounds x2, eval x16: eval x4 passes only unadjusted


def test_the_scale_figure_plots_headroom_and_the_gap_against_parameters(tmp_path):
    headrooms = pd.DataFrame({"preset": ["1m", "4m"], "parameters": [921_088, 4_208_128], "label": ["A/B", "A/B"],
                              "device": "cpu", "observed_gain_pct": [1.0, 2.0], "law_gain_pct": [1.5, 3.0]})
    gaps = scale.gap_summary(_gap_runs())
    fig = plots.plot_scale(headrooms, gaps, "smoke", path=tmp_path / "c.png")
    left, right = fig.axes
    assert left.get_xscale() == right.get_xscale() == "log"
    assert [list(ln.get_ydata()) for ln in left.lines[:2]] == [[1.0, 2.0], [1.5, 3.0]]
    ys = sorted(float(c.lines[0].get_ydata()[0]) for c in right.containers)  # one error bar per form
    assert ys == pytest.approx(sorted(gaps.mean_pct)) and len(ys) == 2


def test_the_row_variant_is_the_cheapest_that_sees_on_every_setting_else_anywhere():
    def row(setting, variant, cos, p, compute):
        return {"setting": setting, "variant": variant, "across_seeds_cos": cos, "across_seeds_p": p,
                "compute_vs_stratified": compute}
    table = pd.DataFrame([row("a", "released", 0.1, 0.4, 1.0), row("b", "released", 0.0, 0.9, 1.0),
                          row("a", "eval x4", 0.5, 0.01, 1.2), row("b", "eval x4", 0.4, 0.01, 1.3),
                          row("a", "rounds x2", 0.6, 0.001, 1.1), row("b", "rounds x2", -0.1, 0.5, 1.1)])
    # Holm within each setting, by hand: a: 0.001 x 3, 0.01 x 2 = 0.02, 0.4; b: 0.01 x 3 = 0.03, 0.5, 0.9. So eval x4
    # sees on both settings; rounds x2 is cheaper but sees on one only
    assert aioli_signal.choose_signal_variant(table) == "eval x4"
    assert aioli_signal.choose_signal_variant(table.assign(across_seeds_p=table.across_seeds_p.replace(0.01, 0.02))) \
        == "rounds x2"  # b's eval x4 at 0.02 x 3 = 0.06 no longer sees, though 0.02 < 0.05
    only_a = table[~((table.variant == "eval x4") & (table.setting == "b"))]
    assert aioli_signal.choose_signal_variant(only_a) == "rounds x2"  # hand: 1.1 < 1.25 mean of eval x4
    assert aioli_signal.choose_signal_variant(table[table.variant == "released"]) is None


def test_the_adequate_signal_table_pairs_each_form_with_stratified_by_seed():
    rows = pd.DataFrame([
        {"setting": "s", "label": "S", "seed": seed, "form": form, "avg_test_perplexity": ppl, "wall_time_s": wall,
         "compute_flops": 1000.0 * wall}
        for seed, vals in enumerate([{"stratified": (20.0, 100.0), "released": (19.0, 102.0), "cumulative": (21.0, 101.0)},
                                     {"stratified": (22.0, 110.0), "released": (21.5, 110.0), "cumulative": (22.5, 121.0)}])
        for form, (ppl, wall) in vals.items()])
    table = aioli_signal.adequate_signal_table(rows).set_index("form")
    assert table.loc["released", "minus_stratified"] == pytest.approx(-0.75)  # hand: (-1.0 - 0.5) / 2
    assert table.loc["cumulative", "minus_stratified"] == pytest.approx(0.75)
    assert table.loc["cumulative", "wall_time_vs_stratified"] == pytest.approx((1.01 + 1.1) / 2)
    assert table.loc["cumulative", "compute_vs_stratified"] == pytest.approx((1.01 + 1.1) / 2)
    half = stats.t.ppf(0.975, 1) * np.std([-1.0, -0.5], ddof=1) / np.sqrt(2)
    assert table.loc["released", "ci_low"] == pytest.approx(-0.75 - half)


def _aioli_result(history_with_A: int, **method_config) -> dict:
    return {"config": {"method": "aioli", "method_config": method_config, "train": {"eval_sequences": 16},
                       "data": {"context_length": 256}},
            "groups": ["latex", "pydocs", "books"], "train_tokens": 1000 * 8 * 256, "flops_per_token": 6.0e6,
            "policy": {"history": [{"A": None}] + [{"A": [[1.0]]}] * history_with_A}}


def test_learnparams_evaluations_are_priced_by_hand():
    # 5 LearnParams calls, m = 3, k = 2: 5 x (3·2 + 1) = 35 evaluations of 3 groups x 4 sequences x 256 tokens,
    # forward only at 6e6 / 3 = 2e6 FLOPs per token
    res = _aioli_result(5, lp_rounds=2, lp_eval_sequences=4)
    assert aioli_signal.learnparams_eval_flops(res) == pytest.approx(35 * 3 * 4 * 256 * 2.0e6)
    assert aioli_signal.training_compute(res) == pytest.approx(1000 * 8 * 256 * 6.0e6 + 35 * 3 * 4 * 256 * 2.0e6)
    # lp_eval_sequences None: the whole fixed validation sample (16); lp_rounds missing: the default k = 4
    whole = _aioli_result(1, lp_eval_sequences=None)
    assert aioli_signal.learnparams_eval_flops(whole) == pytest.approx((3 * 4 + 1) * 3 * 16 * 256 * 2.0e6)
    strat = {**res, "config": {**res["config"], "method": "stratified"}}
    assert aioli_signal.learnparams_eval_flops(strat) == 0.0
    assert aioli_signal.training_compute(strat) == pytest.approx(1000 * 8 * 256 * 6.0e6)


def test_gpu_runs_are_their_own_runs_and_their_own_rows_lines_and_legend_entries(tmp_path):
    st = [as_setting(("latex", "pydocs"))]
    cpu, gpu = (scale.gap_configs(st, ["4m"], "full", [0], device=d)[("4m", "latex+pydocs", 0)] for d in (None, "cuda"))
    assert {c.train.device for c in gpu.values()} == {"cuda"} and {c.train.device for c in cpu.values()} == {"auto"}
    assert all(run_id(gpu[k]) != run_id(cpu[k]) for k in cpu)
    assert all(gpu[k].train == dataclasses.replace(cpu[k].train, device="cuda") for k in cpu)
    plain = scale.gap_configs(st, ["4m"], "full", [0])[("4m", "latex+pydocs", 0)]
    assert [run_id(c) for c in plain.values()] == [run_id(c) for c in cpu.values()]  # no device: ids as before
    both = pd.concat([_gap_runs("cpu"), _gap_runs("cuda").assign(aioli=lambda d: d.aioli + 1.0,
                                                                  aioli_minus_stratified=lambda d: d.aioli_minus_stratified + 1.0,
                                                                  aioli_minus_stratified_pct=lambda d: 100 * d.aioli_minus_stratified / d.stratified)])
    gaps = scale.gap_summary(both)
    assert len(gaps) == 4 and set(gaps.device) == {"cpu", "cuda"}
    gpu_aioli = gaps[(gaps.device == "cuda") & (gaps.form == "aioli")].iloc[0]
    assert gpu_aioli["mean"] == pytest.approx(-3.5 / 3 + 1.0)  # hand: the cpu differences, each 1.0 higher
    fig = plots.plot_scale(pd.DataFrame(), gaps, "full", path=tmp_path / "g.png")
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "A/B, aioli" in legend and "A/B, GPU, aioli" in legend and len(legend) == 4


# ------------------------------------------------------------------------------------------------ F4, F5
def _two_presets(small_pct: dict, large_pct: dict, setting: str = "a_b") -> pd.DataFrame:
    """Per-seed gap rows at 1m and 4m with the given Aioli - stratified gaps in % (stratified at 100 ppl), both forms
    alike."""
    rows = []
    for preset, params, pct in (("1m", 921_088, small_pct), ("4m", 4_208_128, large_pct)):
        for seed, g in pct.items():
            rows.append({"preset": preset, "parameters": params, "device": "cpu", "setting": setting,
                         "label": setting.upper(), "seed": seed, "aioli_minus_stratified_pct": g,
                         "aioli_cumulative_minus_stratified_pct": g})
    return pd.DataFrame(rows)


def test_the_size_trend_pairs_the_gap_by_seed_between_the_smallest_and_largest_preset():
    runs = _two_presets({0: 1.0, 1: 0.5, 2: 2.0}, {0: -1.0, 1: -0.5, 2: -1.0})  # changes -2.0, -1.0, -3.0
    row = scale.size_trend(runs.sample(frac=1, random_state=0)).set_index("form").loc["aioli"]  # order-free
    ref = stats.ttest_1samp([-2.0, -1.0, -3.0], 0.0)
    ci = ref.confidence_interval(0.95)
    assert (row.small, row.large, row.seeds) == ("1m", "4m", 3)
    assert row.change_pct == pytest.approx(-2.0) and row.p == pytest.approx(ref.pvalue)
    assert (row.ci_low, row.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert scale.size_trend(runs[runs.preset == "4m"]).empty  # one preset: no trend


def test_f5_says_changes_with_size_only_when_a_holm_adjusted_test_says_so():
    strong = _two_presets({0: 1.0, 1: 0.9, 2: 1.1, 3: 1.0}, {0: -2.0, 1: -2.1, 2: -1.9, 3: -2.05})
    c = findings.finding_f5(scale.size_trend(strong))
    assert c.verdict == findings.CHANGES and "gains on" in c.why
    weak = _two_presets({0: 1.0, 1: -1.0, 2: 0.5}, {0: 0.0, 1: 0.2, 2: 0.4})
    assert findings.finding_f5(scale.size_trend(weak)).verdict == claims.INCONCLUSIVE
    one_seed = _two_presets({0: 1.0}, {0: -3.0})
    assert findings.finding_f5(scale.size_trend(one_seed)).verdict == claims.CANNOT_DECIDE
    assert findings.finding_f5(None).verdict == claims.NOT_RUN
    assert findings.finding_f5(scale.size_trend(strong), None, {"13_scale": ["x"]}).verdict == claims.INCONCLUSIVE
    # the GPU half, which this machine never trains, does not hold back the CPU trend's verdict; a CPU unit does
    gpu_left = {"13_scale": ["sweep 20m on cuda/a_b/seed 0 (needs a GPU: scripts/gpu_scale.py)"]}
    assert findings.finding_f5(scale.size_trend(strong), None, gpu_left).verdict == findings.CHANGES
    gpu_left["13_scale"].append("stratified vs Aioli 4m/a_b/seed 2")
    assert findings.finding_f5(scale.size_trend(strong), None, gpu_left).verdict == claims.INCONCLUSIVE


def test_f5_under_no_change_prints_changes_with_size_at_most_about_5_percent():
    rng = np.random.default_rng(0)
    verdicts = []
    for _ in range(400):  # two settings, the same gap distribution at both sizes
        tables = [_two_presets(dict(enumerate(rng.normal(0.5, 1.0, 3))), dict(enumerate(rng.normal(0.5, 1.0, 3))),
                               setting=s) for s in ("a_b", "c_d")]
        verdicts.append(findings.finding_f5(scale.size_trend(pd.concat(tables, ignore_index=True))).verdict)
    assert verdicts.count(findings.CHANGES) / len(verdicts) <= 0.08


def _adequate(minus: list[float], low: list[float], high: list[float], variant: bool = True) -> pd.DataFrame:
    rows = [{"setting": s, "label": s.upper(), "form": f, "seeds": 3, "minus_stratified": 0.0, "ci_low": -1.0,
             "ci_high": 1.0, "compute_vs_stratified": 1.02, "wall_time_vs_stratified": 1.1}
            for s in ("a_b", "c_d") for f in ("released", "cumulative")]
    if variant:
        rows += [{"setting": s, "label": s.upper(), "form": "adequate signal (eval x4)", "seeds": 3,
                  "minus_stratified": m, "ci_low": lo, "ci_high": hi, "compute_vs_stratified": 1.3,
                  "wall_time_vs_stratified": 1.4} for s, m, lo, hi in zip(("a_b", "c_d"), minus, low, high)]
    return pd.DataFrame(rows)


def test_f4_compares_the_chosen_variant_with_stratified_per_setting():
    better = findings.finding_f4(_adequate([-3.0, -0.5], [-5.0, -2.0], [-1.0, 1.0]))
    assert better.verdict == findings.BETTER and "A_B" in better.why and "1.30x" in better.ours
    unfinished = findings.finding_f4(_adequate([-3.0, -0.5], [-5.0, -2.0], [-1.0, 1.0]), {"12_aioli_signal": ["x"]})
    assert unfinished.verdict == claims.INCONCLUSIVE and "provisional" in unfinished.why
    worse = findings.finding_f4(_adequate([-3.0, 2.0], [-5.0, 0.5], [-1.0, 3.5]))
    assert worse.verdict == findings.WORSE and "C_D" in worse.why
    assert findings.finding_f4(_adequate([0.1, -0.2], [-1.0, -1.0], [1.0, 0.5])).verdict == claims.INCONCLUSIVE
    nothing = findings.finding_f4(_adequate([], [], [], variant=False))
    assert nothing.verdict == claims.CANNOT_DECIDE and "no variant" in nothing.ours
    assert findings.finding_f4(_adequate([], [], [], variant=False), {"12_aioli_signal": ["x"]}).verdict == \
        claims.NOT_RUN
    assert findings.finding_f4(None).verdict == claims.NOT_RUN
    one = _adequate([-3.0, -0.5], [np.nan, -2.0], [np.nan, 1.0])
    assert findings.finding_f4(one).verdict == claims.CANNOT_DECIDE


def test_the_scale_study_reports_a_headroom_setting_on_table_2bs_fresh_seeds_and_a_paper_setting_on_table_2s():
    # full has seeds 0-2; notebook 10 screened on seed 0 and selected on 1-3, so Table 2b's test seeds are 4-6
    paper, capped = hparams.get_setting("arxiv_stackexchange"), as_setting(("latex@102400", "code"))
    assert scale.default_seeds("full", paper) == ([0], [0, 1, 2])
    assert scale.default_seeds("full", capped) == ([4], [4, 5, 6])
    assert scale.default_seeds("quick", paper) == ([0], [0, 1])  # one seed: two for a paired interval
    plan = scale.gap_configs([paper, capped], ["1m"], "full")
    assert sorted(plan) == [("1m", "arxiv_stackexchange", s) for s in (0, 1, 2)] + [("1m", capped.key, s) for s in (4, 5, 6)]
    # so the comparison at the profile's own size is Table 2b's stratified run, not a second one
    from aioli_repro.methods import stratified_config
    assert run_id(plan[("1m", capped.key, 5)]["stratified"]) == run_id(stratified_config(capped, "full", 5))
    sweeps = scale.sweep_configs([paper, capped], ["4m"], "full")
    assert sorted({k[1:] for k in sweeps}) == [("arxiv_stackexchange", 0), (capped.key, 4)]
    # an explicit list is every setting's
    assert {k[2] for k in scale.gap_configs([paper, capped], ["1m"], "full", [7])} == {7}


def test_notebooks_12_and_13_compare_methods_on_the_same_seeds(runs_dir):
    # One rule for both: a paper setting on the profile's seeds ([0, 1] under quick's single seed, for a paired
    # interval), a headroom setting on Table 2b's test seeds (quick: screen [0], confirm [1, 2], test [3, 4]).
    from aioli_repro.executors import Runner
    paper, capped = hparams.get_setting("arxiv_stackexchange"), as_setting(("latex@102400", "code"))
    assert headroom.comparison_seeds("quick", paper) == [0, 1]
    assert headroom.comparison_seeds("quick", capped) == [3, 4]
    assert headroom.comparison_seeds("full", paper) == [0, 1, 2]
    # notebook 12's full-length rows ask for exactly those seeds (nothing is cached here, so all are listed missing)
    rows = aioli_signal.adequate_signal_rows(None, [paper, capped], "quick", Runner(runs_dir=runs_dir, progress=False,
                                                                                    cached_only=True))
    assert rows.empty and rows.attrs["missing"] == [f"{paper.label}/seed 0", f"{paper.label}/seed 1",
                                                    f"{capped.label}/seed 3", f"{capped.label}/seed 4"]
    assert [scale.default_seeds("quick", st)[1] for st in (paper, capped)] == [[0, 1], [3, 4]]


def test_a_signal_study_that_could_not_have_seen_agreement_says_so():
    # One setting, seven variants (m = 2, 3 seeds): six with 3 later rounds, floor (1/4)^3 = 1/64, and one with 7,
    # floor (1/4)^7. Holm's first factor is 7: 7/64 = 0.11 fails 0.05, 7/4^7 passes. By hand.
    floors = [1 / 64] * 6 + [4.0 ** -7]
    table = pd.DataFrame({"setting": "a_b", "variant": [f"v{i}" for i in range(7)], "across_seeds_cos": 0.0,
                          "across_seeds_p": 0.5, "across_seeds_p_floor": floors})
    assert aioli_signal.signal_detectable(table).tolist() == [False] * 6 + [True]
    assert aioli_signal.signal_detectable(table, alpha=0.2).all()  # 7/64 < 0.2
    blind = table.iloc[:6]  # a factor of 6: 6/64 = 0.094, still not below 0.05
    assert not aioli_signal.signal_detectable(blind).any()
    adequate = _adequate([], [], [], variant=False).assign(across_seeds_cos=0.1, across_seeds_p=0.3,
                                                           across_seeds_n=15)
    none = findings.finding_f4(adequate, signal=blind)
    assert none.verdict == claims.CANNOT_DECIDE and "none could have" in none.why
    assert "for 0 of the 6" in none.ours and "A_B released +0.10 (p 0.3, 15 rounds)" in none.ours
    some = findings.finding_f4(adequate, signal=table)
    assert some.verdict == claims.CANNOT_DECIDE and "for 1 of the 7" in some.ours and "none could have" not in some.why


def test_the_adequate_signal_table_carries_each_forms_full_length_agreement():
    rows = pd.DataFrame([
        {"setting": "s", "label": "S", "seed": seed, "form": form, "avg_test_perplexity": 20.0 + seed,
         "wall_time_s": 100.0, "compute_flops": 1.0, "across_seeds_cos": cos, "across_seeds_p": p,
         "across_seeds_n": n, "across_seeds_p_floor": 1e-4}
        for seed in (0, 1) for form, cos, p, n in (("stratified", np.nan, np.nan, np.nan), ("released", 0.2, 0.04, 15))])
    table = aioli_signal.adequate_signal_table(rows).set_index("form")
    assert table.loc["released", ["across_seeds_cos", "across_seeds_p", "across_seeds_n"]].tolist() == [0.2, 0.04, 15]


def test_the_full_signal_study_has_enough_seeds_to_see_two_groups_agree_in_three_later_rounds():
    from aioli_repro.aioli_estimates import estimate_agreement

    def run(rounds: int) -> dict:  # m = 2, every round pointing the same way: perfect agreement across runs
        A = [[0.7, 0.3], [0.0, 0.0]]
        return {"policy": {"history": [{"A_normalized": A}] * rounds}, "groups": ["a", "b"]}

    def detectable(n_seeds: int) -> bool:
        floor = estimate_agreement([run(4)] * n_seeds)["across_seeds_p_floor"]  # 3 later rounds, as at 250 steps
        table = pd.DataFrame({"setting": "a_b", "across_seeds_p": [0.5] * 7, "across_seeds_p_floor": [floor] * 7})
        return bool(aioli_signal.signal_detectable(table).all())

    # by hand: 3 seeds, (1/4)^3 x 7 = 0.11 > 0.05; 5 seeds, (1/16)^3 x 7 = 0.0017 < 0.05
    assert not detectable(3) and detectable(len(aioli_signal.signal_seeds("full")))
