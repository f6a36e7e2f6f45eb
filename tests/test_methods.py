"""Method recipes end to end (extra runs + final run) on the tiny corpus, and the written-down scaling rules."""

import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from aioli_repro import hparams
from aioli_repro import train as train_mod
from aioli_repro.config import DataConfig, ModelConfig, TrainConfig
from aioli_repro.errors import ConfigError
from aioli_repro.executors import Runner
from aioli_repro.laws import fit_static_law, in_convex_hull, optimal_mixture
from aioli_repro.methods import METHODS, run_method
from aioli_repro.profiles import PROFILES, Profile

from .conftest import TINY_CORPUS, TINY_TOKENIZER

SETTING = hparams.Setting("tiny", "C/L", ("github", "wikipedia"), ("code", "licenses"))


@pytest.fixture(scope="module")
def tiny_profile():
    PROFILES["_tiny"] = Profile(
        "_tiny", "tests", DataConfig(corpus=str(TINY_CORPUS), tokenizer=str(TINY_TOKENIZER), context_length=32,
                                     val_fraction=0.2, test_fraction=0.2),
        ModelConfig("tiny"),
        TrainConfig(steps=24, batch_size=8, micro_batch_size=8, warmup_steps=3, eval_every=8, checkpoint_every=0,
                    eval_sequences=4, eval_batch_size=32, lr=3e-3))
    yield "_tiny"
    PROFILES.pop("_tiny")


@pytest.fixture(scope="module")
def outcomes(tiny_profile, tmp_path_factory):
    runner = Runner(jobs=1, runs_dir=tmp_path_factory.mktemp("runs"), progress=False)
    return {m: run_method(m, SETTING, tiny_profile, 0, runner) for m in METHODS}, runner


def test_every_method_reports_a_final_run_and_its_cost(outcomes):
    out, _ = outcomes
    expected_runs = {"stratified": 0, "grid": 9, "dml": 9, "skillit": 2, "doremi": 2, "doge": 1, "aioli": 0,
                     "aioli_static": 0, "aioli_diagonal": 0, "regmix": 64, "odm": 0}
    for method, o in out.items():
        assert o.extra_runs == expected_runs[method], method
        # RegMix's proxies are S/8 steps long (3 of 24) and of the smaller preset; every other extra run is a full one
        assert o.extra_steps == o.extra_runs * (3 if method == "regmix" else 24)
        assert np.isfinite(o.final["avg_test_perplexity"])
        assert sum(o.proportions) == pytest.approx(1)
        # FLOPs: RegMix sums its proxies' own (here of the same tiny preset, the smallest), the others use the final's
        assert o.extra_flops == pytest.approx(o.extra_steps * 8 * 32 * o.final["flops_per_token"])


def test_grid_search_picks_by_validation_loss_and_dml_by_its_fitted_law(outcomes):
    out, _ = outcomes
    grid, dml = out["grid"], out["dml"]
    mean_val = np.mean(grid.details["sweep_val_loss"], axis=1)
    assert grid.proportions == pytest.approx(grid.details["sweep_proportions"][int(np.argmin(mean_val))])
    P = np.array(dml.details["sweep_proportions"])
    fit = fit_static_law(P, np.array(dml.details["sweep_val_loss"]), seed=0)
    support = np.vstack([P, np.full(P.shape[1], 1 / P.shape[1])])
    # DML's mixture lies in the hull of the sweep and uniform, and the law rates it at least as well as every one
    # of those mixtures; where the simplex optimum is inside the hull, it is that optimum.
    assert in_convex_hull(dml.proportions, support)
    rated = fit.predict(np.vstack([dml.proportions, support])).mean(axis=1)
    assert rated[0] <= rated[1:].min() + 1e-9
    free = optimal_mixture(fit, seed=0)
    if in_convex_hull(free, support):
        assert dml.proportions == pytest.approx(free.tolist(), abs=1e-6)
    assert dml.final["config"]["method_config"]["proportions"] == pytest.approx(dml.proportions)


def test_proxy_methods_train_their_final_run_on_the_proxy_average(outcomes):
    out, _ = outcomes
    for method in ("doremi", "doge"):
        o = out[method]
        assert o.final["config"]["method"] == "static"
        assert o.final["config"]["method_config"]["proportions"] == pytest.approx(o.proportions)
    # Skill-it's graph comes from the one-group runs: training on a group lowers its own loss most.
    G = np.array(out["skillit"].details["graph"])
    assert G.shape == (2, 2) and np.all(np.diag(G) > 0)


def _clone_without_weights(runner, dest, monkeypatch):
    """What a clone has: ``runner``'s finished runs copied to ``dest`` without their weights. Returns ``dest`` and
    the list that records the name of every run trained from then on."""
    shutil.copytree(runner.runs_dir, dest)
    removed = list(dest.glob("*/model.safetensors"))
    assert removed  # the stratified reference kept its weights when it was trained
    for weights in removed:
        weights.unlink()
    trained = []
    monkeypatch.setattr(train_mod, "_train_locked", lambda cfg, *a, **k: trained.append(cfg.name))
    return dest, trained


def test_doremi_names_its_reference_relative_to_the_runs_directory(outcomes, tiny_profile, tmp_path, monkeypatch):
    """The proxy's run id must not hold this machine's path: a clone elsewhere then finds the committed result."""
    out, runner = outcomes
    ref = out["doremi"].details["proxy_config"]["method_config"]["reference_model"]
    assert not Path(ref).is_absolute() and (Path(runner.runs_dir) / ref).is_file()
    moved, trained = _clone_without_weights(runner, tmp_path / "elsewhere", monkeypatch)
    again = run_method("doremi", SETTING, tiny_profile, 0, Runner(jobs=1, runs_dir=moved, progress=False))
    assert trained == []
    assert again.details["proxy_config"] == out["doremi"].details["proxy_config"]
    assert sorted(p.name for p in moved.glob("doremi-proxy-*")) == sorted(
        p.name for p in Path(runner.runs_dir).glob("doremi-proxy-*"))  # same run id: found, not trained again


def test_a_clone_with_results_but_no_weights_trains_nothing_for_any_method(outcomes, tiny_profile, tmp_path,
                                                                             monkeypatch):
    """What a fresh clone has: finished results, no model weights. Stratified (also DoReMi's reference) once asked
    for its weights and so was trained again on every clone; now no method trains anything to re-render."""
    out, runner = outcomes
    moved, trained = _clone_without_weights(runner, tmp_path / "clone", monkeypatch)
    clone = Runner(jobs=1, runs_dir=moved, progress=False)
    again = {m: run_method(m, SETTING, tiny_profile, 0, clone) for m in METHODS}
    assert trained == []
    for m, o in again.items():
        assert o.final["run_id"] == out[m].final["run_id"] and o.proportions == pytest.approx(out[m].proportions), m


def test_reruns_hit_the_cache(outcomes, tiny_profile, monkeypatch):
    out, runner = outcomes
    trained = []
    monkeypatch.setattr(train_mod, "_train_locked", lambda cfg, *a, **k: trained.append(cfg.name))
    again = run_method("dml", SETTING, tiny_profile, 0, runner)
    assert trained == []  # nothing was trained again: every run came from the cache
    assert again.final == out["dml"].final


def test_unknown_method_or_setting():
    with pytest.raises(ConfigError, match="unknown method"):
        run_method("magic", "arxiv_stackexchange", "smoke")
    with pytest.raises(ConfigError, match="unknown setting"):
        run_method("aioli", "reddit", "smoke")


def test_scaling_reproduces_the_paper_configs_at_the_paper_budget():
    for m in (2, 3):
        scaled = hparams.aioli_config(m, 5000)
        scaled.pop("lp_eval_sequences")
        assert scaled == hparams.AIOLI_PAPER[m]
    c = hparams.aioli_config(2, 1000)
    lp = 2 * c["lp_rounds"] * c["lp_steps"]
    assert c["lp_steps"] == 1 and lp / c["update_steps"] <= 0.128 + 1e-9 and 1000 / c["update_steps"] <= 20
    assert hparams.doremi_config(2, 1000)["mu"] == pytest.approx(0.05)
    assert hparams.doge_config(2, 1000, 3e-3)["mu"] == pytest.approx(0.012)
    assert hparams.skillit_config(2, 1000)["update_steps"] == 100


@pytest.mark.parametrize("m", [2, 3, 7])
@pytest.mark.parametrize("steps,lr", [(200, 3e-3), (1000, 3e-3), (1000, 1e-3), (20000, 5e-4)])
def test_scaled_proxies_move_their_weights_as_far_as_the_paper_over_a_run(m, steps, lr):
    """The scaling rule's invariant, not a pinned value: over a whole run DoReMi's log-weights can move mu*S*excess
    and DoGE's S*(score bound 5 lr)/mu, so mu*S and (lr/mu)*S must equal the paper's."""
    s_paper = hparams.PAPER_STEPS[m]
    doremi, doge = hparams.doremi_config(m, steps), hparams.doge_config(m, steps, lr)
    assert doremi["mu"] * steps == pytest.approx(hparams.DOREMI_PAPER[m]["mu"] * s_paper)
    assert lr / doge["mu"] * steps == pytest.approx(hparams.PAPER_LR / hparams.DOGE_PAPER[m]["mu"] * s_paper)
    assert hparams.doge_config(m, steps, lr, paper_scale=True)["mu"] == hparams.DOGE_PAPER[m]["mu"]


@pytest.mark.parametrize("m", [2, 3, 7])
@pytest.mark.parametrize("steps", [40, 200, 1000, 5000, 40000])
def test_scaled_round_schedules_keep_the_papers_shape(m, steps):
    """Invariants of the round-based methods' scaling, not pinned values. Skill-it keeps its number of rounds (so
    its η moves the mixture as often as in the paper). Aioli's rounds fit in the run, number at most 20 (or the
    paper's count, if that is larger at the paper's budget), and spend at most the paper's share δ of each round in
    LearnParams; both keep the paper's η, which is scale-free because A^t is normalised before the update."""
    s_paper = hparams.PAPER_STEPS[m]
    skillit, paper = hparams.skillit_config(m, steps), hparams.SKILLIT_PAPER[m]
    assert skillit["eta"] == paper["eta"] and skillit["window"] == paper["window"]
    exact = paper["update_steps"] * steps / s_paper  # the round length that keeps the paper's count exactly
    if exact >= 1:  # otherwise one step per round is the floor
        assert abs(skillit["update_steps"] - exact) <= 0.5
    aioli, paper = hparams.aioli_config(m, steps), hparams.AIOLI_PAPER[m]
    assert aioli["eta"] == paper["eta"] and aioli["ema"] == paper["ema"] and aioli["lp_rounds"] == paper["lp_rounds"]
    assert 1 <= aioli["update_steps"] <= steps
    rounds, paper_rounds = steps / aioli["update_steps"], s_paper / paper["update_steps"]
    assert rounds <= max(20, paper_rounds if steps >= s_paper else 20) + 1e-9
    share = m * aioli["lp_rounds"] * aioli["lp_steps"] / aioli["update_steps"]
    paper_share = m * paper["lp_rounds"] * paper["lp_steps"] / paper["update_steps"]
    assert share <= paper_share + 1e-9 or aioli["update_steps"] == steps
    assert aioli["lp_eval_sequences"] >= 1


def test_settings_map_every_paper_group_to_its_analogue():
    assert [s.label for s in hparams.SETTINGS.values()] == ["A/SE", "GH/C4", "B/SE", "A/B/SE", "CC/GH/W", "SlimPajama"]
    assert hparams.SETTINGS["slimpajama"].groups == ("latex", "books", "kerneldocs", "webdocs", "code", "pydocs",
                                                     "dictionary")


def test_a_fitted_mixture_enters_a_config_without_its_last_bits():
    """Measured on the quick seven-group DML fit: 1 vs 2 BLAS threads gave entries of 1.9e-17 vs 2.6e-17 where the
    optimum is 0, so the run id changed and a clone rendering with other threads trained the run again."""
    from aioli_repro.methods import config_mixture

    two_threads = [2.6160881441413676e-17, 0.0, 0.19460741096191528, 0.0, 0.8053925890380847, 1.33e-18, 7.58e-18]
    one_thread = [1.9326711644816395e-17, 0.0, 0.19460741096191528, 0.0, 0.8053925890380847, 3.16e-18, 7.57e-19]
    assert config_mixture(two_threads) == config_mixture(one_thread)
    q = config_mixture(two_threads)
    assert sum(q) == pytest.approx(1, abs=1e-12) and q[0] == 0 and q[2] == pytest.approx(0.194607, abs=1e-6)
    for bad in ([0.0, 0.0], [float("nan"), 1.0]):
        with pytest.raises(ValueError, match="not a mixture"):
            config_mixture(bad)


def test_a_fitted_mixture_at_a_rounding_boundary_reuses_the_committed_neighbour(monkeypatch):
    """DML's CC/GH/W seed-1 optimum once came out 0.29162151 where the committed run had rounded it to 0.291621: the
    cached neighbour must be found, the exact rounding preferred when it is cached, and nothing invented when neither
    is."""
    from aioli_repro import methods
    from aioli_repro.methods import config_mixture, settle_mixture

    raw = [0.35516608, 0.35321241, 0.29162151]
    exact = config_mixture(raw)
    committed = config_mixture([0.355166, 0.353212, 0.291621])
    assert exact != committed
    runner = types.SimpleNamespace(runs_dir="unused")

    def with_cache(*mixtures):
        keys = {tuple(m) for m in mixtures}
        monkeypatch.setattr(methods, "cached_result",
                            lambda cfg, runs_dir, resolve_auto=False: {"ok": 1} if tuple(cfg) in keys else None)

    make = list  # the "config" is the mixture itself: cached_result is faked above
    with_cache(committed)
    assert settle_mixture(raw, make, runner) == committed
    with_cache(committed, exact)
    assert settle_mixture(raw, make, runner) == exact
    with_cache()
    assert settle_mixture(raw, make, runner) == exact
    with_cache(config_mixture([0.355167, 0.353212, 0.291621]), config_mixture([0.3, 0.3, 0.4]))
    # the neighbour rounded the other way is found; a far mixture is never a candidate
    assert settle_mixture(raw, make, runner) == config_mixture([0.355167, 0.353212, 0.291621])
    with_cache(config_mixture([0.3, 0.3, 0.4]))
    assert settle_mixture(raw, make, runner) == exact


def test_the_learn_params_cost_diagnosis_pairs_a_frozen_aioli_with_aioli_and_stratified(tiny_profile, tmp_path,
                                                                                         monkeypatch):
    from aioli_repro import diagnostics

    monkeypatch.setitem(hparams.SETTINGS, SETTING.key, SETTING)
    runner = Runner(jobs=1, runs_dir=tmp_path / "runs", progress=False)
    d = diagnostics.lp_cost_study(SETTING.key, tiny_profile, [0, 1], runner)
    df = d.runs
    assert list(df["seed"]) == [0, 1] and (df["learn_params_steps"] > 0).all()
    assert d.summary["compared"].iloc[2] == "aioli - aioli_eta0"
    assert d.summary["mean"].iloc[2] == pytest.approx((df["aioli"] - df["aioli_eta0"]).mean())
    # eta = 0: LearnParams ran, and the mixture never left uniform (Aioli's own did)
    assert (df["aioli_eta0_max_dev"] < 1e-12).all() and (df["aioli_max_dev"] > 0).all()
    assert df["aioli_eta0_run_id"].nunique() == 2
    by_step = d.by_step
    assert by_step.index.tolist() == [8, 16, 24] and by_step.shape[1] == 2  # every evaluation after step 0
    assert by_step.notna().all().all() and (by_step.abs() < 5).all().all()
    # lp_start: two more runs per seed (eta = 0, and Aioli itself) hold LearnParams back for the first steps; the
    # first two are reused.
    late_d = diagnostics.lp_cost_study(SETTING.key, tiny_profile, [0, 1], runner, lp_start=8)
    late = late_d.runs
    assert late.drop(columns=[c for c in late.columns if "late" in c]).equals(df)
    assert (late["aioli_eta0_late_max_dev"] < 1e-12).all() and late["aioli_eta0_late_run_id"].nunique() == 2
    assert (late["late_learn_params_steps"] > 0).all()
    assert (late["aioli_late_max_dev"] > 0).all() and late["aioli_late_run_id"].nunique() == 2  # Aioli's mixture moves
    late_runs = sorted((tmp_path / "runs").glob("aioli-*lp8-*/metrics.jsonl"))
    assert len(late_runs) == 4
    for metrics in late_runs:
        kinds = [json.loads(line) for line in metrics.read_text().splitlines()]
        assert min(r["step"] for r in kinds if r.get("kind") == "learn_params") >= 8  # none in the first 8 steps
    summary = late_d.summary
    assert summary["compared"].tolist()[-2:] == ["aioli_eta0 - aioli_eta0_late", "aioli - aioli_late"]
    assert summary["mean"].iloc[-1] == pytest.approx((late["aioli"] - late["aioli_late"]).mean())
    with pytest.raises(ValueError, match="lp_start"):
        diagnostics.lp_cost_study(SETTING.key, tiny_profile, [0], runner, lp_start=24)


@pytest.mark.slow
def test_the_signal_study_trains_each_variant_once_per_seed_and_shares_the_stratified_baselines(tiny_profile,
                                                                                              tmp_path, monkeypatch):
    from aioli_repro import aioli_signal

    monkeypatch.setitem(hparams.SETTINGS, SETTING.key, SETTING)
    runner = Runner(jobs=1, runs_dir=tmp_path / "runs", progress=False)
    asked = []
    run = runner.run
    monkeypatch.setattr(runner, "run", lambda cfgs: asked.extend(cfgs) or run(cfgs))
    variants = {"released": ({}, {}), "more eval": ({"lp_eval_sequences": 4}, {}),
                "longer": ({"lp_steps": 2, "lp_rounds": 3}, {"eval_sequences": 6})}
    table = aioli_signal.signal_study(SETTING.key, tiny_profile, [0, 1], runner, variants, steps=24)
    # 3 variants x 2 seeds, and one stratified run per distinct training config and seed: 2 x 2
    assert len(asked) == 10 and sum(c.method == "stratified" for c in asked) == 4
    assert all(c.train.steps == 24 for c in asked)
    row = table.set_index("variant")
    assert row.loc["more eval", "lp_eval_sequences"] == 4 and row.loc["longer", "lp_steps"] == 2
    assert row.loc["longer", "learn_params_share"] > row.loc["released", "learn_params_share"]
    assert (table.wall_time_vs_stratified > 0).all() and (table.runs == 2).all()
    # more evaluation sequences per LearnParams evaluation cost more compute than the released 2 (hand: the same
    # calls at twice the sequences); every Aioli variant costs more than its stratified baseline
    assert (table.compute_vs_stratified > 1).all()
    assert row.loc["more eval", "compute_vs_stratified"] > row.loc["released", "compute_vs_stratified"]
    assert {"across_seeds_cos", "across_seeds_p", "first_round_cos"} <= set(table.columns)


@pytest.mark.slow
def test_the_early_step_controls_pair_one_block_and_a_long_warm_up_with_stratified(tiny_profile, tmp_path,
                                                                                   monkeypatch):
    from aioli_repro import diagnostics

    monkeypatch.setitem(hparams.SETTINGS, SETTING.key, SETTING)
    runner = Runner(jobs=1, runs_dir=tmp_path / "runs", progress=False)
    d = diagnostics.early_steps_study(SETTING.key, tiny_profile, [0, 1], runner, block_step=8, warmup_long=6)
    df = d.runs
    assert {"lp_block_0", "lp_block_8", "stratified_wu6", "lp_block_0_wu6", "stratified", "aioli_static"} <= set(df)
    assert (df["block_steps"] > 0).all()
    wu = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*wu6*/config.json")]
    assert len(wu) == 4 and all(c["config"]["train"]["warmup_steps"] == 6 for c in wu)
    row = d.summary.set_index("compared").loc["lp_block_0_wu6 - stratified_wu6"]
    assert row["mean"] == pytest.approx((df["lp_block_0_wu6"] - df["stratified_wu6"]).mean())
    assert d.summary.set_index("compared").loc["stratified: seed sd", "mean"] == pytest.approx(df["stratified"].std())
    # each gap is taken against the stratified run of the same warm-up
    assert sorted(d.by_step.columns) == ["aioli_static - stratified", "lp_block_0 - stratified",
                                         "lp_block_0_wu6 - stratified_wu6", "lp_block_8 - stratified"]


def test_finished_finals_reads_the_finished_seeds_and_trains_nothing(outcomes, tiny_profile):
    from aioli_repro.methods import finished_finals

    out, runner = outcomes
    before = sorted(p.name for p in Path(runner.runs_dir).iterdir())
    found = finished_finals("aioli", SETTING, tiny_profile, seeds=[0, 1], runs_dir=runner.runs_dir)
    assert [r["run_id"] for r in found] == [out["aioli"].final["run_id"]]  # seed 1 never trained: left out
    assert sorted(p.name for p in Path(runner.runs_dir).iterdir()) == before
