"""Run records of a render: which runs a notebook used, what they recorded for training, which cached runs are unused."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aioli_repro import pipeline, usage
from aioli_repro.cli import main
from aioli_repro.profiles import profile_config
from aioli_repro.train import train
from aioli_repro.usage import ID_CHARS, matches_recipe, read_used, runs_cost, unused_cache_entries


def test_a_run_read_or_trained_is_logged_and_its_recorded_seconds_summed(tiny_cfg, tmp_path, monkeypatch):
    log, cache = tmp_path / "used.txt", tmp_path / "cache"
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(cache))
    monkeypatch.setenv("AIOLI_USED_RUNS", str(log))
    first = train(tiny_cfg(steps=6), runs_dir=tmp_path / "a", progress=False)  # trained
    train(tiny_cfg(steps=6), runs_dir=tmp_path / "a", progress=False)  # read back from its run directory
    train(tiny_cfg(steps=6), runs_dir=tmp_path / "b", progress=False)  # restored from the result cache
    other = train(tiny_cfg(steps=4), runs_dir=tmp_path / "a", progress=False)
    lines = log.read_text().split()
    assert lines.count(first["run_id"]) >= 3 and other["run_id"] in lines
    assert read_used(log) == [first["run_id"][:ID_CHARS], other["run_id"][:ID_CHARS]]

    cost = runs_cost(read_used(log) + ["f" * ID_CHARS], cache=cache, runs_dir=tmp_path / "a")
    expected = sum(r["wall_time_s"] + r["eval_time_s"] for r in (first, other))
    assert cost["runs"] == 2 and cost["recorded_s"] == pytest.approx(expected, abs=0.1) and expected > 0
    assert list(cost["by_method_s"]) == ["static"] and cost["not_found"] == ["f" * ID_CHARS]
    # Without the cache the run directories answer.
    assert runs_cost(read_used(log), cache=tmp_path / "none", runs_dir=tmp_path / "a")["runs"] == 2


def test_without_the_variable_nothing_is_logged(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("AIOLI_USED_RUNS", raising=False)
    train(tiny_cfg(steps=4), runs_dir=tmp_path / "a", progress=False)
    assert not list(tmp_path.glob("*.txt"))


def test_a_garbled_run_record_is_refused(tmp_path):
    (tmp_path / "used.txt").write_text("0123456789abcdef0123456789\nnot-a-run-id-at-all-really\n")
    with pytest.raises(ValueError, match="not a run id"):
        read_used(tmp_path / "used.txt")


def _entry(cache, rid, cfg, fmt="json"):
    """A cache entry as a legacy ``<rid>.json``, a ``<rid>.json.gz`` (``fmt="gz"``) or both (``"both"``)."""
    cache.mkdir(exist_ok=True)
    data = json.dumps({"result": {"config": cfg.to_dict(), "name": cfg.name}}).encode()
    if fmt in ("json", "both"):
        (cache / f"{rid}.json").write_bytes(data)
    if fmt in ("gz", "both"):
        (cache / f"{rid}.json.gz").write_bytes(gzip.compress(data))


def test_unused_entries_are_those_of_the_recipe_no_notebook_read(tmp_path):
    groups = ("latex", "pydocs")
    quick = profile_config("quick", groups, "stratified", seed=0)
    assert matches_recipe(quick.to_dict(), "quick")
    assert matches_recipe(profile_config("quick", groups, "aioli", seed=3, steps=40).to_dict(), "quick")
    assert not matches_recipe(profile_config("full", groups).to_dict(), "quick")
    assert not matches_recipe(profile_config("quick", groups, lr=1e-3).to_dict(), "quick")  # another recipe
    cache = tmp_path / "cache"
    _entry(cache, "a" * ID_CHARS, quick, "gz")
    _entry(cache, "b" * ID_CHARS, quick, "both")
    _entry(cache, "c" * ID_CHARS, profile_config("full", groups))
    _entry(cache, "e" * ID_CHARS, quick, "gz")
    (cache / f"{'d' * ID_CHARS}.json").write_text("{broken")
    (cache / f"{'f' * ID_CHARS}.json.gz").write_bytes(b"{broken")  # not gzip
    assert [p.name for p in unused_cache_entries("quick", ["a" * 64], cache)] == ["b" * ID_CHARS + ".json.gz",
                                                                                   "e" * ID_CHARS + ".json.gz"]
    assert [p.name for p in unused_cache_entries("full", [], cache)] == ["c" * ID_CHARS + ".json"]


def test_run_all_records_each_notebooks_runs_and_keeps_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("AIOLI_RUNS", str(tmp_path / "runs"))
    folder = tmp_path / "results" / "smoke"
    folder.mkdir(parents=True)
    (folder / "run_all_timings.json").write_text(json.dumps({"notebooks": {"00_a.ipynb": {"seconds": 1.0}}}))
    (folder / "used_runs.json").write_text(json.dumps({"00_a.ipynb": ["e" * ID_CHARS]}))
    pipeline.write_logs("smoke", 2, True, {"01_b.ipynb": 5.0}, {"01_b.ipynb": ["f" * ID_CHARS]}, 6.0)
    timings = json.loads((folder / "run_all_timings.json").read_text())
    assert timings["notebooks"]["00_a.ipynb"] == {"seconds": 1.0}
    assert timings["notebooks"]["01_b.ipynb"]["runs_used"] == 0  # its run is in no cache here
    assert json.loads((folder / "used_runs.json").read_text()) == {"00_a.ipynb": ["e" * ID_CHARS],
                                                                     "01_b.ipynb": ["f" * ID_CHARS]}


@pytest.mark.parametrize("fmt", ["json", "gz", "both"])
def test_cache_command_prunes_only_unused_entries_of_the_recipe_and_only_after_a_full_render(tmp_path, monkeypatch,
                                                                                            capsys, fmt):
    monkeypatch.setattr(usage, "REPO_ROOT", tmp_path)
    assert main(["cache", "--profile", "quick"]) == 2  # no run records yet
    assert "used_runs.json does not exist: run ./run_all.sh --profile quick first" in capsys.readouterr().err
    cache = tmp_path / "cache"
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(cache))
    monkeypatch.setenv("AIOLI_RUNS", str(tmp_path / "runs"))
    quick = profile_config("quick", ("latex", "pydocs"), "stratified", seed=0)
    for rid in ("a", "b"):
        _entry(cache, rid * ID_CHARS, quick, fmt)
    _entry(cache, "c" * ID_CHARS, profile_config("full", ("latex", "pydocs")), fmt)
    files = {"json": 1, "gz": 1, "both": 2}[fmt]  # per entry
    folder = tmp_path / "results" / "quick"
    folder.mkdir(parents=True)
    names = [p.name for p in pipeline.notebooks()]
    (folder / "run_all_timings.json").write_text(json.dumps({"notebooks": {n: {"seconds": 1.0} for n in names}}))
    used = {n: [] for n in names[1:]}  # the first notebook has no run record yet
    used[names[1]] = ["a" * ID_CHARS]
    (folder / "used_runs.json").write_text(json.dumps(used))
    assert main(["cache", "--profile", "quick", "--prune"]) == 2
    assert "error: refusing to prune" in capsys.readouterr().err
    assert sorted(p.name[0] for p in cache.iterdir()) == sorted(["a", "b", "c"] * files)
    used[names[0]] = []
    (folder / "used_runs.json").write_text(json.dumps(used))
    assert main(["cache", "--profile", "quick"]) == 0  # lists, prunes nothing
    out = capsys.readouterr().out
    assert "1 committed cached run(s) of the quick recipe that no notebook used" in out and "b" * ID_CHARS in out
    assert sorted(p.name[0] for p in cache.iterdir()) == sorted(["a", "b", "c"] * files)
    assert main(["cache", "--profile", "quick", "--prune"]) == 0
    # b: the quick recipe, unused (in every format it had); c: another recipe
    assert sorted(p.name[0] for p in cache.iterdir()) == sorted(["a", "c"] * files)
    assert "pruned 1 entries" in capsys.readouterr().out


def test_unfinished_parts_are_recorded_per_notebook_and_summed_up(tmp_path, monkeypatch, capsys):
    from aioli_repro import report

    monkeypatch.setattr(report, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(pipeline, "REPO_ROOT", tmp_path)
    full = report.results_dir("full")
    report.not_finished(full, "04_perplexity_comparison", ["grid/A/SE/seed 1", "dml/A/SE/seed 1"])
    report.not_finished(full, "05_restricted_budget", [report.NONE_FINISHED])
    report.not_finished(full, "06_ablations", [])
    assert "left out (2): grid/A/SE/seed 1, dml/A/SE/seed 1" in capsys.readouterr().out
    path = tmp_path / "results" / "full" / "not_finished.json"
    assert list(json.loads(path.read_text())) == ["04_perplexity_comparison", "05_restricted_budget"]
    stems = ["04_perplexity_comparison", "05_restricted_budget", "06_ablations"]
    assert pipeline.not_finished_summary("full", stems) == "04 2 part(s); 05 all"
    report.not_finished(full, "04_perplexity_comparison", [])  # finished since: its entry goes
    assert pipeline.not_finished_summary("full", stems) == "05 all"
    assert pipeline.not_finished_summary("quick", stems) == ""


def test_two_processes_recording_unfinished_parts_at_once_keep_both_entries(tmp_path):
    # Another run_all of the profile reads the record, and writes it back with its own entry a moment later. A second
    # process recording in between must wait for it, or the first write drops the second's entry.
    import subprocess
    import sys
    import time

    from aioli_repro import report
    from aioli_repro.paths import REPO_ROOT, atomic_write_json, exclusive

    folder = tmp_path / "full"
    folder.mkdir()
    ready = tmp_path / "ready"
    child = (f"import pathlib; from aioli_repro import report; pathlib.Path({str(ready)!r}).touch(); "
             f"report.not_finished(pathlib.Path({str(folder)!r}), '13_scale', ['sweep 4m'])")
    with exclusive(folder / ".not_finished.lock"):
        record = report.read_not_finished(folder)
        proc = subprocess.Popen([sys.executable, "-c", child], cwd=REPO_ROOT)
        while not ready.exists() and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)  # without the lock the child has written its entry by now
        atomic_write_json(folder / "not_finished.json", {**record, "11_table2b_headroom": ["x"]})
    assert proc.wait(timeout=60) == 0
    assert sorted(report.read_not_finished(folder)) == ["11_table2b_headroom", "13_scale"]


def test_a_partial_notebook_run_writes_beside_the_profiles_tables_not_over_them(tmp_path, monkeypatch, capsys):
    from aioli_repro import report

    monkeypatch.setattr(report, "REPO_ROOT", tmp_path)
    whole = report.output_dirs("full", seeds=None, settings=None)
    assert whole == (tmp_path / "results" / "full", tmp_path / "figures" / "full")
    report.not_finished(whole[0], "05_restricted_budget", ["grid/A/SE/seed 2"])

    results, figures = report.output_dirs("full", seeds=[2], settings=None, methods=None)
    assert (results, figures) == (whole[0] / "subset", whole[1] / "subset") and results.is_dir() and figures.is_dir()
    assert "(seeds set)" in capsys.readouterr().out
    report.not_finished(results, "05_restricted_budget", [])  # the subset finished: the profile did not
    assert json.loads((whole[0] / "not_finished.json").read_text()) == {"05_restricted_budget": ["grid/A/SE/seed 2"]}
    assert not (results / "not_finished.json").exists()


@pytest.mark.parametrize("name", ["01_static_mixing_law", "02_dynamic_mixing_law", "03_method_fidelity",
                                  "04_perplexity_comparison", "05_restricted_budget", "06_ablations"])
def test_every_study_parameter_of_a_notebook_routes_a_partial_run_to_the_subset_folder(name):
    """A parameter that narrows or changes the study (None: the profile's own) must reach ``study_setup`` (which hands
    it to ``output_dirs``), and every
    ``not_finished`` record must go to the folder it chose; else a partial run overwrites the profile's tables."""
    import ast

    cells = [c for c in json.loads((pipeline.REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
             if c["cell_type"] == "code"]
    params = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    narrowing = [t.targets[0].id for t in ast.parse("".join(params["source"])).body
                 if isinstance(t, ast.Assign) and isinstance(t.value, ast.Constant) and t.value.value is None]
    assert {"seeds", "settings"} <= set(narrowing)
    code = "\n".join("".join(c["source"]) for c in cells)
    calls = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    call = next((n for n in calls if n.func.id == "study_setup"), None)
    assert call is not None, f"{name} does not choose its folders with study_setup"
    assert sorted(k.arg for k in call.keywords if k.arg != "jobs") == sorted(narrowing)
    assert all(k.value.id == k.arg for k in call.keywords)  # seeds=seeds, not seeds=None
    records = [n for n in calls if n.func.id == "not_finished"]
    assert records and all(getattr(n.args[0], "id", "") == "RESULTS" for n in records)
    assert "results_dir(" not in code and "figures_dir(" not in code


def test_fit_tables_written_from_noisy_refits_are_byte_identical(tmp_path):
    """Refitting the same runs on another CPU moves R² and MSE at the 1e-9 level; the committed fit CSV must not."""
    import numpy as np
    import pandas as pd

    from aioli_repro import report

    rng = np.random.default_rng(0)
    values = rng.uniform(1e-4, 1e3, size=(50, 2))
    table = pd.DataFrame({"label": [f"s{i}" for i in range(50)], "fits": np.arange(50), "r2": values[:, 0],
                          "mse": values[:, 1]})
    noisy = table.assign(r2=table.r2 * (1 + 1e-9), mse=table.mse * (1 - 1e-9))
    a = report.write_fit_csv(table, tmp_path / "a.csv").read_bytes()
    b = report.write_fit_csv(noisy, tmp_path / "b.csv").read_bytes()
    assert a == b
    back = pd.read_csv(tmp_path / "a.csv")
    assert back.label.tolist() == table.label.tolist() and back.fits.tolist() == list(range(50))
    np.testing.assert_allclose(back[["r2", "mse"]].to_numpy(), values, rtol=5e-6)  # six significant digits kept
    with_index = report.write_fit_csv(table.set_index("label"), tmp_path / "c.csv", index=True)
    assert pd.read_csv(with_index, index_col=0).index.tolist() == table.label.tolist()
    # notebook 03's relation table: one object column mixing floats, ints and text
    named = {"dots": 8, "slope": 5.019580590448649, "aioli_highest_in": "0 of 2 settings", "missing": float("nan")}
    c = report.write_fit_csv(pd.Series(named).to_frame("value"), tmp_path / "d.csv", index=True).read_bytes()
    d = report.write_fit_csv(pd.Series({**named, "slope": named["slope"] * (1 - 1e-15)}).to_frame("value"),
                             tmp_path / "e.csv", index=True).read_bytes()
    assert c == d and c.decode().splitlines() == [",value", "dots,8", "slope,5.01958", "aioli_highest_in,0 of 2 settings",
                                                  "missing,"]


@pytest.mark.parametrize("figure", ["04_perplexity_differences.png", "06_ablations.png"])
def test_a_figure_of_several_seeds_redraws_byte_for_byte(figure, tmp_path):
    """seaborn's strip jitter and bootstrap error bars are random unless seeded, so re-rendering the same runs used
    to rewrite the figure (and show other error bars). Draw the notebook's figure twice from five seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from aioli_repro import plots, tables

    rng = np.random.default_rng(0)
    methods = ["stratified", "aioli", "aioli_static"]
    runs = pd.DataFrame([{"setting": s, "label": s.upper(), "method": m, "seed": seed,
                          "avg_test_perplexity": 80 + rng.normal()}
                         for s in ("a_b", "c_d") for m in methods for seed in range(5)])
    drawn = []
    for attempt in range(2):
        path = tmp_path / f"{attempt}_{figure}"
        if figure.startswith("04"):
            plots.plot_perplexity_differences(tables.differences(runs), methods, "test", path)
        else:
            plots.plot_ablations(tables.differences(runs), "test", path)
        plt.close("all")
        drawn.append(path.read_bytes())
    assert drawn[0] == drawn[1]


def test_each_run_all_invocation_logs_its_used_runs_to_its_own_file(tmp_path, monkeypatch):
    # Two invocations of one profile at once (a cached re-render beside a long study) must not share the scratch log:
    # each notebook empties the log when it starts, which would erase the other's record of the runs it used.
    monkeypatch.setattr(pipeline, "REPO_ROOT", tmp_path)
    here = pipeline.used_log_path("full")
    code = ("import sys; from pathlib import Path; from aioli_repro import pipeline; "
            "pipeline.REPO_ROOT = Path(sys.argv[1]); print(pipeline.used_log_path('full'))")
    other = Path(subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True,
                                text=True).stdout.strip())
    assert here.parent == other.parent == tmp_path / "runs" / "logs"
    assert here != other and here.name.startswith("used_runs_full") and other.name.startswith("used_runs_full")


def test_kernels_import_this_checkouts_package_before_any_installed_one(tmp_path, monkeypatch):
    # A second checkout sharing the first's virtual environment: the editable install (here a decoy package on
    # PYTHONPATH) points elsewhere, and a kernel starts in notebooks/, where no package is. The kernel must still
    # import this checkout's code, or it writes into the other checkout's results.
    import papermill

    decoy = tmp_path / "other_checkout"
    (decoy / "aioli_repro").mkdir(parents=True)
    (decoy / "aioli_repro" / "__init__.py").write_text("")
    seen = {}
    monkeypatch.setenv("PYTHONPATH", str(decoy))
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: seen.setdefault("path", os.environ["PYTHONPATH"]))
    pipeline.run_notebook(pipeline.NOTEBOOKS / "07_claims.ipynb", "smoke", 1, tmp_path / "out")
    found = subprocess.run([sys.executable, "-c", "import aioli_repro; print(aioli_repro.__file__)"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": seen["path"]}, check=True, capture_output=True, text=True)
    assert Path(found.stdout.strip()).parent == pipeline.REPO_ROOT / "aioli_repro"
    assert seen["path"].split(os.pathsep) == [str(pipeline.REPO_ROOT), str(decoy)]
