"""The notebooks are their own source: a user edits them in JupyterLab, and these checks keep such an edit honest.

What is checked here is what breaks a papermill run or a committed diff: outputs left in a source notebook, a
parameters cell papermill cannot find or cannot override, and lint. The smoke profile executes every notebook in CI
(``.ci/run`` runs ``./run_all.sh --profile smoke``).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from aioli_repro import pipeline, plots, report
from aioli_repro.errors import ConfigError

NOTEBOOKS = pipeline.notebooks()
CLEAR = "clear them with: jupyter nbconvert --clear-output --inplace notebooks/*.ipynb"


def test_the_numbered_notebooks_are_found():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))]
    assert len(NOTEBOOKS) >= 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_source_notebook_carries_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs or execution counts; {CLEAR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_has_one_parameters_cell_of_plain_assignments_first(path):
    """papermill injects its values after the one cell tagged ``parameters``; that cell must come before any code
    that uses them and hold only ``name = literal`` lines, or an injected profile would be read too late or not at
    all."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [0], f"{path.name}: the parameters cell must be the first code cell and the only one tagged"
    names = []
    for stmt in ast.parse(code[0].source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, f"{path.name}: {ast.unparse(stmt)}"
        ast.literal_eval(stmt.value)  # a literal papermill can override; raises otherwise
        names.append(stmt.targets[0].id)
    assert names[0] == "profile" and "jobs" in names


@pytest.mark.skipif(shutil.which("ruff") is None and not (pipeline.REPO_ROOT / ".venv" / "bin" / "ruff").exists(),
                    reason="ruff is not installed (scripts/setup_env.sh installs it)")
def test_the_source_notebooks_lint_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", *map(str, NOTEBOOKS)], capture_output=True,
                            text=True, cwd=pipeline.REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_study_setup_fills_in_the_defaults_and_sends_a_partial_run_to_subset(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "REPO_ROOT", tmp_path)
    whole = report.study_setup("full")
    assert whole.results == tmp_path / "results" / "full" and whole.figures == tmp_path / "figures" / "full"
    assert whole.seeds == [0, 1, 2] and len(whole.settings) == 6  # full: three seeds, the paper's six settings
    assert report.study_setup("smoke", "static").settings == ["arxiv_stackexchange", "arxiv_book_stackexchange"]
    assert report.study_setup("full", "static").settings[1] == "github_c4"  # full's laws use all five 2/3-group
    part = report.study_setup("full", seeds=[2], methods=["aioli"])
    assert part.results == whole.results / "subset" and part.seeds == [2] and part.settings == whole.settings
    assert "A/SE" in capsys.readouterr().out
    results, figures, settings, seeds = report.study_setup("full", settings=["github_c4"], jobs=2)
    assert results.name == "subset" and settings == ["github_c4"] and seeds == [0, 1, 2]


@pytest.mark.parametrize("bad", [dict(seeds="0,1"), dict(settings="github_c4"), dict(settings=["nope"]),
                                 dict(jobs=0)])
def test_study_setup_refuses_papermills_unchecked_strings_before_making_folders(bad, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "REPO_ROOT", tmp_path)
    with pytest.raises(ConfigError):
        report.study_setup("full", **bad)
    assert not (tmp_path / "results").exists()


def _diffs():
    rows = [dict(method=m, label=s, seed=seed, diff=d)
            for s, base in (("A/SE", 0.0), ("GH/C4", 1.0)) for m, step in (("aioli", -0.5), ("grid", 0.25))
            for seed, d in ((0, base + step), (1, base + 2 * step))]
    return pd.DataFrame(rows)


def test_the_perplexity_difference_figure_has_a_panel_per_setting_and_a_dot_per_run(tmp_path):
    fig = plots.plot_perplexity_differences(_diffs(), ["stratified", "aioli", "grid"], "smoke", tmp_path / "d.png")
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["label = A/SE", "label = GH/C4"]
    dots = sum(len(c.get_offsets()) for c in axes[1].collections)
    assert dots == 4 and (tmp_path / "d.png").stat().st_size > 0
    ys = sorted(y for c in axes[1].collections for _, y in c.get_offsets())
    assert ys == [0.0, 0.5, 1.25, 1.5]  # GH/C4 as planted: aioli 1 - 0.5 and 1 - 2 * 0.5, grid 1.25 and 1.5


def test_the_ablation_figure_draws_one_bar_per_method_and_setting_at_the_mean(tmp_path):
    fig = plots.plot_ablations(_diffs().assign(seed=0).drop_duplicates(["method", "label"]), "smoke", tmp_path / "a.png")
    heights = sorted(p.get_height() for p in fig.axes[0].patches if p.get_width() > 0)
    assert heights == [-0.5, 0.25, 0.5, 1.25]


def test_run_all_renders_the_claims_after_every_notebook_whose_tables_they_read():
    """claims.md reads tables of notebooks numbered after it (F3-F5 from 11-13), so run_all runs it last."""
    import re
    from pathlib import Path

    from aioli_repro import claims

    order = [p.stem for p in pipeline.run_order(NOTEBOOKS)]
    reads = set(re.findall(r'res / "([^"]+\.csv)"', Path(claims.__file__).read_text()))
    writers = {}
    for p in NOTEBOOKS:
        source = "\n".join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")
        for name in re.findall(r'RESULTS / "([^"]+\.csv)"', source):
            writers.setdefault(name, p.stem)
    read_from_notebooks = reads & writers.keys()
    assert {"04_runs.csv", "05_restricted_extensions_control.csv", "11_table2b_share.csv", "12_adequate_signal.csv",
            "13_scale_trend.csv"} <= read_from_notebooks
    assert all(order.index(writers[f]) < order.index(pipeline.SUMMARY_NOTEBOOK) for f in read_from_notebooks)
    assert order[-1] == pipeline.SUMMARY_NOTEBOOK and order[:-1] == sorted(order[:-1])
    assert [p.stem[:2] for p in pipeline.run_order(pipeline.notebooks(["13", "07", "10"]))] == ["10", "13", "07"]


def test_each_notebook_records_its_unfinished_parts_under_its_own_name():
    """run_all records a notebook with nothing cached under its file's stem, and sums the record up by stem; a notebook
    recording under another name would leave that entry behind once it renders (full's '11_table2b_headroom' did)."""
    import re

    for p in NOTEBOOKS:
        source = "\n".join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")
        assert set(re.findall(r'not_finished\(RESULTS, "([^"]+)"', source)) <= {p.stem}, p.name
