"""The restricted budget's extension methods (RegMix, ODM) and finding F6: what each learns p_init from, checked
against hand computations and the configs Table 2 trains; F6's rule by cases and under the null."""

import numpy as np
import pandas as pd
import pytest

from aioli_repro import findings, restricted, tables
from aioli_repro.methods import regmix_proxies
from aioli_repro.model import PRESETS
from aioli_repro.profiles import get_profile
from aioli_repro.tokenizer import load_tokenizer

from .test_claim_rules import control_gain_cases, pairs_and_control


def test_the_restricted_methods_are_the_paper_baselines_and_the_extensions():
    assert restricted.METHODS == (*tables.BASELINES, *tables.EXTENSION_METHODS)


def test_regmix_proxy_count_is_the_flops_budget_by_hand():
    # 500 target steps x 6e6 FLOPs/token = 3e9 per token of batch; a 125-step proxy of 2.5e6: 3.125e8 -> 9.6 proxies
    assert restricted.regmix_restricted_proxies(64, 500, 125, 6e6, 2.5e6) == 9
    assert restricted.regmix_restricted_proxies(5, 500, 125, 6e6, 2.5e6) == 5  # never more than Table 2 trains
    assert restricted.regmix_restricted_proxies(64, 500, 125, 6e6, 6e6) == 4
    with pytest.raises(ValueError, match="at least two"):
        restricted.regmix_restricted_proxies(64, 100, 125, 6e6, 6e6)


@pytest.mark.parametrize("preset,context", [("300k", 128), ("1m", 256)])
def test_run_flops_match_a_hand_count_of_the_model(preset, context):
    # GPT-NeoX with tied embeddings: the V x d matrix once, per layer QKV (3d^2 + 3d), dense (d^2 + d), MLP
    # (8d^2 + 5d), two layer norms (4d); the final layer norm (2d). FLOPs per token: 6N + 12 L d ctx (PaLM).
    p = PRESETS[preset]
    d, L, V = p.hidden_size, p.layers, len(load_tokenizer("embedded"))
    n = V * d + L * (12 * d * d + 13 * d) + 2 * d
    cfg = type("Cfg", (), {"model": type("M", (), {"preset": preset})(),
                           "data": type("D", (), {"tokenizer": "embedded", "context_length": context})()})()
    assert restricted._run_flops(cfg) == pytest.approx(6 * n + 12 * L * d * context)


class _Recorder:
    """Records what a study asks to train, then stops it (nothing trains)."""

    def __init__(self):
        self.cached_only, self.runs_dir, self.calls = False, "unused", []

    def run(self, cfgs, keep_model=False):
        self.calls.append([c.to_dict() for c in cfgs])
        raise _Stop

    def run_one(self, cfg, keep_model=False):
        self.calls.append([cfg.to_dict()])
        raise _Stop


class _Stop(Exception):
    pass


def test_restricted_regmix_trains_the_first_proxies_of_table_2_within_the_flops_budget():
    profile, setting = "full", "arxiv_stackexchange"
    runner = _Recorder()
    with pytest.raises(_Stop):
        restricted.restricted_pair("regmix", setting, profile, 1, runner)
    plan, proxies = regmix_proxies(setting, profile, 1)
    # 1m target vs 300k proxies at context 256, by the hand count above: 6.31e6 vs 2.57e6 FLOPs per token
    V = len(load_tokenizer("embedded"))

    def fpt(preset, ctx=256):
        p = PRESETS[preset]
        d, L = p.hidden_size, p.layers
        return 6 * (V * d + L * (12 * d * d + 13 * d) + 2 * d) + 12 * L * d * ctx

    budget = get_profile(profile).train.steps // 2
    n = int(budget * fpt("1m") // (plan.proxy_steps * fpt("300k")))
    assert 4 <= n < plan.n_proxies
    assert runner.calls == [[c.to_dict() for c in proxies[:n]]]


def test_restricted_odm_learns_p_init_from_a_run_of_half_the_budget():
    runner = _Recorder()
    with pytest.raises(_Stop):
        restricted.restricted_pair("odm", "arxiv_stackexchange", "smoke", 1, runner)
    (proxy,), = runner.calls
    S = get_profile("smoke").train.steps
    assert proxy["method"] == "odm" and proxy["train"]["steps"] == S // 2 and proxy["train"]["seed"] == 1
    assert proxy["method_config"]["warmup_steps"] == round(0.02 * (S // 2))  # ODM's 2% warm-up, of the proxy


def test_an_unknown_method_names_the_ones_the_budget_runs():
    with pytest.raises(ValueError, match="regmix"):
        restricted.restricted_pair("aioli", "arxiv_stackexchange", "smoke", 1, _Recorder())


def test_extension_table_pairs_the_studies_by_seed():
    keys = {"setting": "s", "label": "S", "method": "odm"}
    pairs = pd.DataFrame([{**keys, "seed": k, "extra_steps": 50, "method_ppl": 10.0 + k, "aioli_ppl": 9.0,
                           "improvement": 1.0 + k} for k in range(3)])
    control = pd.DataFrame([{**keys, "seed": k, "control_ppl": 9.5, "gain_vs_control": 0.5} for k in (0, 1)])
    t = restricted.extension_table(pairs, control).loc[("S", "odm")]
    assert t.seeds == 2 and t.improvement == pytest.approx(1.5) and t.method_ppl == pytest.approx(10.5)


# ----------------------------------------------------------------------------------------------------- F6
def _extensions(gains):
    return pairs_and_control(gains, methods=tables.EXTENSION_METHODS)


F6_VERDICTS = {"beats the control": findings.ADDS, "loses to the control": findings.TAKES_AWAY,
               "within noise": findings.INCONCLUSIVE, "one seed": findings.CANNOT_DECIDE}  # no interval: F1's words
F6_CASES = [(name, gains, F6_VERDICTS[name]) for name, gains in control_gain_cases(12).items()]


@pytest.mark.parametrize("gains,verdict", [c[1:] for c in F6_CASES], ids=[c[0] for c in F6_CASES])
def test_f6_branches(gains, verdict):
    assert findings.finding_f6(*_extensions(gains)).verdict == verdict


def test_f6_reports_the_gain_per_method_and_waits_for_its_notebook():
    pairs, control = _extensions(np.full((12, 3), 0.5) + np.array([0, 0.1, -0.1]))
    got = findings.finding_f6(pairs, control)
    assert "mean gain +0.500" in got.ours and "regmix +0.500; odm +0.500" in got.ours and "12/12 pairs" in got.ours
    assert got.ours.startswith("Aioli's gain over p_init alone (the paper's figure): regmix +1.000, odm +1.000.")
    assert findings.finding_f6(None, None).verdict == findings.NOT_RUN
    late = findings.finding_f6(pairs, control, {"05_restricted_budget": ["grid/A/SE/seed 2", "control odm/A/SE/seed 2"]})
    assert late.verdict == findings.INCONCLUSIVE and late.why.startswith("provisional, 1 part(s)")
    # the paper's methods' unfinished studies are C7's concern, not F6's
    assert findings.finding_f6(pairs, control, {"05_restricted_budget": ["grid/A/SE/seed 2"]}).verdict == findings.ADDS


def test_f6_null_rate():
    rng = np.random.default_rng(11)
    got = [findings.finding_f6(*_extensions(rng.normal(0, 1, size=(12, 3)))).verdict for _ in range(300)]
    assert got.count(findings.ADDS) / 300 <= 0.05 and got.count(findings.TAKES_AWAY) / 300 <= 0.08


def test_the_control_gain_figure_puts_the_paper_methods_first_and_marks_each_mean(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from aioli_repro import plots

    rows = [{"setting": "s", "label": "S", "method": m, "seed": k, "gain_vs_control": g}
            for m, gains in (("odm", (1.0, 3.0)), ("grid", (-1.0, 0.0)), ("regmix", (4.0, 4.0)))
            for k, g in enumerate(gains)]
    fig = plots.plot_control_gains(pd.DataFrame(rows), "test", tmp_path / "g.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["grid", "regmix", "odm"]
    means = next(c for c in ax.collections if c.get_label() == "mean").get_offsets()
    assert np.asarray(means).tolist() == [[0, -0.5], [1, 4.0], [2, 2.0]]  # by hand
    plots.plot_control_gains(pd.DataFrame(rows), "test", tmp_path / "again.png")
    assert (tmp_path / "g.png").read_bytes() == (tmp_path / "again.png").read_bytes()  # no jitter: same bytes


def test_unfinished_extension_studies_wait_for_f6_never_for_c7(tmp_path, monkeypatch):
    import json

    from aioli_repro import claims

    monkeypatch.setattr(claims, "results_dir", lambda profile: tmp_path)
    pairs, control = pairs_and_control(control_gain_cases(30)["loses to the control"])
    pairs.to_csv(tmp_path / "05_restricted_runs.csv", index=False)
    control.to_csv(tmp_path / "05_restricted_control.csv", index=False)

    def c7(parts):
        (tmp_path / "not_finished.json").write_text(json.dumps({"05_restricted_budget": parts}))
        return next(c for c in claims.build_claims("full") if c.key == "C7").verdict

    assert c7(["every extension study", "control odm/A/SE/seed 1"]) == claims.NOT_REPRODUCED
    assert c7(["control grid/A/SE/seed 1", "regmix/A/SE/seed 0"]) == claims.INCONCLUSIVE  # provisional
    from aioli_repro.verdicts import unfinished_parts

    split = {"03_method_fidelity": ["fidelity every extension study (odm)", "fidelity doge/A/SE/seed 0", "ordering GH/C4/seed 1"]}
    assert unfinished_parts(split, extension=True) == {"03_method_fidelity": ["fidelity every extension study (odm)"]}
    assert unfinished_parts(split, extension=False)["03_method_fidelity"] == split["03_method_fidelity"][1:]
