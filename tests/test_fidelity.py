"""The mixing-law studies (notebooks 01-02) and the method fidelity studies (notebook 03) end to end on the tiny
corpus, and their pure helpers."""

import json
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from aioli_repro import branching, fidelity, hparams, law_studies, plots, profiles, report
from aioli_repro.executors import Runner
from aioli_repro.methods import run_method, stratified_config, sweep
from aioli_repro.runs import RunDir

from .conftest import STUDY_STEPS

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SET2 = hparams.Setting("tiny2", "C/L", ("github", "wikipedia"), ("code", "licenses"))
SET3 = hparams.Setting("tiny3", "C/Ch/L", ("github", "c4", "wikipedia"), ("code", "changelogs", "licenses"))


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    return Runner(jobs=1, runs_dir=tmp_path_factory.mktemp("fid_runs"), progress=False)


def runner_dirs(runner, name):
    return sorted(Path(runner.runs_dir).glob(f"{name}-*"))


# ---------------------------------------------------------------------------------------------------- pure helpers


def _rec(step, A=None):
    return {"step": step, "proportions": [0.5, 0.5], "A": None if A is None else np.asarray(A, float).tolist()}


def test_method_matrix_picks_the_matrix_the_method_used_at_t():
    hist = [_rec(0)] + [_rec(10 * k, k * np.eye(2)) for k in range(1, 7)]  # A = k I recorded at step 10 k
    # Aioli: mean of the last up to 4 raw A recorded by t.
    assert fidelity.method_matrix("aioli", hist, t=45) == pytest.approx(np.eye(2) * np.mean([1, 2, 3, 4]))
    assert fidelity.method_matrix("aioli", hist, t=60) == pytest.approx(np.eye(2) * np.mean([3, 4, 5, 6]))
    assert fidelity.method_matrix("aioli", hist, t=25) == pytest.approx(np.eye(2) * 1.5)  # fewer than 4 rounds
    assert fidelity.method_matrix("aioli_diagonal", hist, t=10) == pytest.approx(np.eye(2))
    for method in ("skillit", "doremi", "doge"):  # the last record by t
        assert fidelity.method_matrix(method, hist, t=45) == pytest.approx(4 * np.eye(2))
        assert fidelity.method_matrix(method, hist) == pytest.approx(6 * np.eye(2))
    nan_hist = [_rec(3, [[np.nan, 0.0], [0.0, 0.2]])]  # DoReMi: a group absent from the last batches
    assert fidelity.method_matrix("doremi", nan_hist, 5) == pytest.approx(np.diag([0.0, 0.2]))
    with pytest.raises(ValueError, match="no matrix A by step 5"):
        fidelity.method_matrix("skillit", hist, t=5)


def test_fidelity_break_steps_and_dynamic_law_parents():
    hist = [_rec(0), _rec(8, np.eye(2)), _rec(16, np.eye(2))]
    assert fidelity.fidelity_break_step(hist, 40, 0.1, 2) == 9  # moved to just after the first record
    assert fidelity.fidelity_break_step(hist, 40, 0.5, 2) == 20
    with pytest.raises(ValueError, match="passes the end"):
        fidelity.fidelity_break_step(hist, 10, 0.1, 2)
    assert fidelity.diagonalise_2([[3.0, 1.0], [0.5, 2.0]]) == pytest.approx(np.diag([2.0, 1.5]))

    grid = np.column_stack([np.arange(1, 10) / 10, 1 - np.arange(1, 10) / 10])
    assert [grid[k, 0] for k in law_studies.parent_indices(grid, 3)] == pytest.approx([0.1, 0.5, 0.9])
    P3 = np.random.default_rng(0).dirichlet(np.ones(3), size=10)
    idx = law_studies.parent_indices(P3, 3)
    assert len(set(idx)) == 3 and int(np.argmin(np.linalg.norm(P3 - 1 / 3, axis=1))) in idx


def test_default_settings_depend_on_the_profile_through_the_package():
    assert len(profiles.default_settings("smoke", "static")) == 2
    assert profiles.default_settings("smoke", "ordering") == ("github_c4",)
    assert len(profiles.default_settings("full", "fidelity")) == 5
    assert profiles.default_settings("quick", "fidelity") == profiles.default_settings("smoke", "fidelity")
    assert profiles.study_seeds("full") == (0, 1, 2) and profiles.study_seeds("full", [4]) == (4,)
    line = report.paper_line("static R²", 0.95, 0.991)
    assert "0.950" in line and "0.991" in line and "below" in line


# ---------------------------------------------------------------------------------------------------- end to end


def test_static_law_study_tables_and_figure(tiny_study, runner, tmp_path):
    study = law_studies.static_law_study([SET2, SET3], tiny_study, runner=runner, n_starts=8)
    tab = study.table
    assert len(tab) == 2 + 3  # one row per (setting, seed, group)
    assert {"setting", "seed", "group", "r2", "mse", "loo_r2", "loo_mse"} <= set(tab.columns)
    assert tab[["r2", "mse", "loo_mse"]].notna().all().all() and (tab["mse"] >= 0).all()
    assert (tab["r2"] <= 1 + 1e-9).all()
    assert len(study.points) == 4 * 2 + 5 * 3  # sweep sizes: 4 (m = 2) and max(4, m + 2) = 5 (m = 3)
    # The same sweep runs as grid search / DML: the mixtures are methods.sweep's.
    P = [c.method_config["proportions"] for c in sweep(tiny_study, SET2.groups, 0)]
    assert study.points.query("setting == 'tiny2' and group == 'code'")["p"].tolist() == P
    summ = study.summary()
    assert list(summ["setting"]) == ["tiny2", "tiny3", "all"] and summ["fits"].tolist() == [2, 3, 5]
    assert summ["seeds"].tolist() == [1, 1, 1]
    plots.plot_static_law(study, tmp_path / "static.png")
    assert (tmp_path / "static.png").stat().st_size > 0


def test_a_clone_branches_doremis_proxy_after_retraining_its_reference_for_its_weights(tiny_study, tmp_path, monkeypatch):
    """A fresh clone's cache holds the stratified (reference) run's result but not its weights; the DoReMi proxy's
    prefix reads them, so a fidelity study that must train that prefix first retrains the reference for them."""
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(tmp_path / "cache"))
    here = Runner(jobs=1, runs_dir=tmp_path / "here", progress=False)
    run_method("doremi", SET2, tiny_study, 0, here)  # caches the reference, the proxy and the final run, not the branches
    clone = Runner(jobs=1, runs_dir=tmp_path / "clone", progress=False)
    ref = stratified_config(SET2, tiny_study, 0)
    assert not RunDir.from_result(run_method("stratified", SET2, tiny_study, 0, clone).final, clone.runs_dir) \
        .model_path.exists()  # the clone knows the reference's result only
    study = fidelity.fidelity_study([SET2], tiny_study, runner=clone, methods=["doremi"])
    assert len(study.table) == 1 and study.missing == []
    weights = RunDir.from_result(clone.run_one(ref), clone.runs_dir).model_path
    assert weights.exists()  # trained again for them, into the clone's own runs directory
    assert weights.parent.parent == Path(clone.runs_dir)


def test_dynamic_law_study_tables_and_figure(tiny_study, runner, tmp_path):
    study = law_studies.dynamic_law_study([SET2, SET3], tiny_study, runner=runner, n_parents=2)
    tab = study.table
    assert len(tab) == 2 * 2 + 2 * 3  # (setting, seed, parent, group)
    assert set(tab["break_step"]) == {branching.break_step(STUDY_STEPS, 0.4)} and set(tab["horizon"]) == {2}
    assert tab.groupby("setting")["parent"].nunique().tolist() == [2, 2]
    assert tab[["r2", "mse", "loo_r2", "loo_mse"]].notna().all().all()
    assert len(study.points) == 2 * 4 * 2 + 2 * 5 * 3
    assert study.summary().iloc[-1]["fits"] == 10
    plots.plot_dynamic_law(study, tmp_path / "dynamic.png")
    assert (tmp_path / "dynamic.png").stat().st_size > 0


def test_fidelity_study_compares_each_methods_matrix_with_the_truth(tiny_study, runner, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every prefix run must retrace its method's own trajectory
        study = fidelity.fidelity_study([SET2], tiny_study, runner=runner)
    tab = study.table.set_index("method")
    assert list(tab.index) == list(fidelity.ONLINE_METHODS)
    h = branching.default_horizon(STUDY_STEPS)
    assert (tab["horizon"] == h).all() and (tab["break_step"] + h <= STUDY_STEPS).all()
    assert tab.loc["skillit", "break_step"] >= branching.break_step(STUDY_STEPS, 0.2)
    assert tab.loc["doremi", "break_step"] >= branching.break_step(STUDY_STEPS, 0.1)
    assert (tab["records_used"] >= 1).all()
    finite = tab["sim"].dropna()
    assert len(finite) >= 3 and ((finite >= -1 - 1e-9) & (finite <= 1 + 1e-9)).all()
    # Improvement over stratified comes from the methods' final runs, shared with the perplexity tables.
    strat = run_method("stratified", SET2, tiny_study, 0, runner).final["avg_test_perplexity"]
    aioli = run_method("aioli", SET2, tiny_study, 0, runner).final["avg_test_perplexity"]
    assert tab.loc["aioli", "improvement"] == pytest.approx(strat - aioli)
    # The matrix compared is the method's own: Aioli's from its LearnParams rounds recorded by the break step.
    mats = study.matrices[("aioli", "tiny2", 0)]
    hist = run_method("aioli", SET2, tiny_study, 0, runner).final["policy"]["history"]
    t = int(tab.loc["aioli", "break_step"])
    assert mats["M"] == pytest.approx(fidelity.method_matrix("aioli", hist, t - 1), rel=1e-4, abs=1e-6)
    # The proxies' trajectories are configured exactly as methods.run_method configures its proxy runs.
    for method, name in (("doremi", "doremi-proxy"), ("doge", "doge-proxy")):
        full = [p for p in runner_dirs(runner, name) if "prefix" not in p.name]
        assert len(full) == 1
        stored = json.loads((full[0] / "config.json").read_text())["config"]
        assert fidelity.trajectory_config(method, SET2, tiny_study, 0, runner).to_dict() == stored
    summ = study.summary()
    assert len(summ) == 4 and set(summ["seeds"]) == {1}
    rel = study.relation()
    assert rel["dots"] == summ["sim"].notna().sum() and set(rel["aioli_highest"]) <= {"tiny2"}
    plots.plot_fidelity(study, tmp_path / "fid.png")
    assert (tmp_path / "fid.png").stat().st_size > 0


def test_odm_fidelity_branches_its_own_run_and_compares_its_diagonal(tiny_study, runner):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the prefix run must retrace ODM's own trajectory
        odm = fidelity.fidelity_study([SET2], tiny_study, methods=fidelity.EXTENSION_ONLINE_METHODS, runner=runner)
    row = odm.table.iloc[0]
    assert list(odm.table.method) == ["odm"] and row.break_step >= branching.break_step(STUDY_STEPS, 0.2)
    # The matrix is the last diag(R̂) ODM recorded by the break (a record at step t: after t steps, setting π^t)
    hist = run_method("odm", SET2, tiny_study, 0, runner).final["policy"]["history"]
    last = [r for r in hist if r.get("A") is not None and r["step"] <= row.break_step][-1]  # after t steps
    M = odm.matrices[("odm", "tiny2", 0)]["M"]
    assert M == pytest.approx(np.asarray(last["A"]), rel=1e-4) and np.count_nonzero(M - np.diag(np.diag(M))) == 0
    paper = fidelity.fidelity_study([SET2], tiny_study, runner=runner)  # cached by the test above
    table = fidelity.sim_by_method(paper, odm)
    assert list(table.index) == [*fidelity.ONLINE_METHODS, "odm"] and list(table.columns) == ["C/L", "seeds"]
    assert table.loc["odm", "C/L"] == pytest.approx(row.sim, nan_ok=True)


def test_colsum_ordering_study(tiny_study, runner, tmp_path):
    study = fidelity.colsum_ordering_study([SET2], tiny_study, runner=runner, fractions=(0.25, 0.5, 0.75))
    assert sorted(set(study.table["break_step"])) == [6, 12, 18]
    assert len(study.table) == 3 * 2 and len(study.summary) == 3
    ch = study.changes()
    assert len(ch) == 1 and ch["favoured_over_time"].iloc[0].count("->") == 2
    # By hand from the per-(break point, group) table: the favoured group is the one with the largest column sum.
    t = study.table
    path = [g.loc[g.colsum.idxmax(), "group"] for _, g in t.groupby("break_step", sort=True)]
    assert ch["favoured_over_time"].iloc[0] == " -> ".join(path)
    assert bool(ch["ordering_changes"].iloc[0]) == (len(set(path)) > 1)
    plots.plot_colsum_ordering(study, tmp_path / "ord.png")
    assert (tmp_path / "ord.png").stat().st_size > 0


def test_cached_only_studies_render_the_finished_part_and_train_nothing(tiny_study, runner, monkeypatch):
    """A sitting of the long profile renders notebooks 01-03 from the runs finished so far: with a runner that only
    reads the cache, each study keeps its finished (setting, seed) parts exactly and lists the others."""
    import aioli_repro.train as train_mod
    from aioli_repro.executors import NotCachedError

    def no_training(*a, **k):
        raise AssertionError("a cached_only study trained a run")

    monkeypatch.setattr(train_mod, "_train_locked", no_training)
    reader = Runner(jobs=1, runs_dir=runner.runs_dir, progress=False, cached_only=True)
    first = law_studies.static_law_study([SET2, SET3], tiny_study, runner=runner, n_starts=8)  # finished above
    part = law_studies.static_law_study([SET2, SET3], tiny_study, seeds=[0, 1], runner=reader, n_starts=8)
    assert part.table.equals(first.table) and part.missing == ["C/L/seed 1", "C/Ch/L/seed 1"]
    dyn = law_studies.dynamic_law_study([SET2, SET3], tiny_study, seeds=[1, 0], runner=reader, n_parents=2)
    assert set(dyn.table["seed"]) == {0} and len(dyn.table) == 2 * 2 + 2 * 3 and len(dyn.missing) == 2
    fid = fidelity.fidelity_study([SET2, SET3], tiny_study, runner=reader)
    assert set(fid.table["setting"]) == {"tiny2"} and len(fid.table) == len(fidelity.ONLINE_METHODS)
    assert fid.missing == ["stratified/C/Ch/L/seed 0"]
    order = fidelity.colsum_ordering_study([SET2], tiny_study, seeds=[0, 1], runner=reader, fractions=(0.25, 0.5, 0.75))
    assert set(order.table["seed"]) == {0} and order.missing == ["C/L/seed 1"]
    for study in (law_studies.static_law_study, law_studies.dynamic_law_study, fidelity.colsum_ordering_study):
        with pytest.raises(NotCachedError, match="no part of the"):
            study([SET2], tiny_study, seeds=[7], runner=reader)
    with pytest.raises(AssertionError, match="trained a run"):  # the ordinary runner still trains what is missing
        law_studies.static_law_study([SET2], tiny_study, seeds=[7], runner=runner)
