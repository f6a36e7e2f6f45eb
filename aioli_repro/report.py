"""Small helpers the notebooks share: where outputs go, corpus tables, metric curves.

Notebooks stay thin (parameters, calls into the package, a table or a figure); anything with logic lives here and
is tested.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .corpus import FolderCorpus
from .hparams import get_setting
from .paths import REPO_ROOT, atomic_write_json, exclusive
from .profiles import check_study_parameters, default_settings, get_profile, profile_settings, study_seeds
from .runs import RunDir, default_runs_dir


def results_dir(profile: str) -> Path:
    if profile != "bench":  # results/bench/ holds the speed benchmark; anything else must be a profile, checked
        get_profile(profile)  # before its folder is created (this is a notebook's first call)
    path = REPO_ROOT / "results" / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir(profile: str) -> Path:
    get_profile(profile)  # a notebook's first call: refuse an unknown profile before creating its folder
    path = REPO_ROOT / "figures" / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


SUBSET = "subset"
"""The sub-folder of ``results/<profile>/`` and ``figures/<profile>/`` that a partial notebook run writes to."""


def output_dirs(profile: str, **parameters) -> tuple[Path, Path]:
    """Where a notebook writes its tables and figures: ``results/<profile>/`` and ``figures/<profile>/`` when its
    study ``parameters`` (seeds, settings, methods, ...) are all None, i.e. the profile's own, else their ``subset/``
    sub-folders.

    A notebook run over some seeds or settings (how docs/profiles_and_cost.md trains a long profile in sittings, or a
    user's edit of the parameters cell) must not replace the profile's complete tables with partial ones: the
    committed tables and ``not_finished.json`` would then describe the subset. Its runs still land in the shared run cache, so
    ``run_all.sh --profile <profile> --cached-only`` re-renders the whole profile with them."""
    results, figures = results_dir(profile), figures_dir(profile)
    chosen = sorted(k for k, v in parameters.items() if v is not None)
    if not chosen:
        return results, figures
    results, figures = results / SUBSET, figures / SUBSET
    results.mkdir(exist_ok=True)
    figures.mkdir(exist_ok=True)
    print(f"a partial run ({', '.join(chosen)} set): its tables go to {results.relative_to(REPO_ROOT)}/ and its "
          f"figures to {figures.relative_to(REPO_ROOT)}/, not over the profile's own; "
          f"`./run_all.sh --profile {profile} --cached-only` re-renders the whole profile from the run cache")
    return results, figures


class Study(NamedTuple):
    """What a notebook studies and where it writes: ``study_setup``'s answer, unpacked in the notebook's first cell."""

    results: Path
    """``results/<profile>/``, or its ``subset/`` for a partial run (``output_dirs``)."""
    figures: Path
    """``figures/<profile>/``, or its ``subset/``."""
    settings: list[str]
    """Keys of ``hparams.SETTINGS``: the notebook's parameter, or the study's default under the profile."""
    seeds: list[int]
    """The notebook's parameter, or the profile's seeds."""


def study_setup(profile: str, study: str = "table2", *, seeds=None, settings=None, jobs: int = 1,
                **partial) -> Study:
    """The shared first cell of notebooks 01-06: check the parameters papermill passed (it passes ``-p`` values
    unchecked), pick the output folders, fill in the default settings and seeds, set the display options and print
    what will run.

    ``study`` names the default settings: ``"table2"`` the profile's settings (notebooks 04-06), or one of
    ``profiles.SMALL_STUDY_SETTINGS`` (``"static"``, ``"dynamic"``, ``"fidelity"``) for notebooks 01-03. ``partial``
    holds the notebook's other study parameters (``methods=...``): any of them, like ``seeds`` or ``settings``, not
    None makes the run partial, so its tables go to ``subset/`` and never replace the profile's own."""
    check_study_parameters(profile, seeds, settings, jobs)
    results, figures = output_dirs(profile, seeds=seeds, settings=settings, **partial)
    if settings is None:
        settings = profile_settings(profile) if study == "table2" else default_settings(profile, study)
    seeds = list(study_seeds(profile, seeds))
    pd.set_option("display.max_columns", 40)
    pd.set_option("display.width", 200)
    pd.set_option("display.precision", 4)
    print(get_profile(profile).description, "| seeds", seeds, "| settings", [get_setting(s).label for s in settings])
    return Study(results, figures, list(settings), seeds)


def corpus_table(store=None) -> pd.DataFrame:
    """One row per embedded group: analogue, documents, raw MB, and token counts per split if a store is given."""
    corpus = FolderCorpus()
    rows = []
    for name, meta in corpus.manifest["groups"].items():
        row = {"group": name, "slimpajama_analogue": meta["slimpajama_analogue"], "documents": meta["documents"],
               "raw_MB": round(meta["raw_bytes"] / 1e6, 2),
               "sources": ", ".join(f"{s['package']} {s['version']}" for s in meta["sources"])}
        if store is not None:
            for split in ("train", "val", "test"):
                row[f"{split}_tokens"] = int(store.tokens(name, split).size)
        rows.append(row)
    return pd.DataFrame(rows)


def run_metrics(result: dict, runs_dir=None) -> pd.DataFrame:
    """The periodic validation losses (on the fixed validation sample) of a finished run as a long table."""
    run = RunDir.from_result(result, runs_dir or default_runs_dir())
    return pd.DataFrame([{"step": r["step"], "group": g, "val_loss": v}
                         for r in run.read_metrics() if "val_loss" in r for g, v in r["val_loss"].items()])


FIT_FLOAT_FORMAT = "%.6g"
"""Significant digits the tables holding law fits or fitted estimates (notebooks 01-03, 10, 12, 13) keep. Refitting the same cached runs on
another machine moves their R², MSE and fitted parameters at the 1e-9 level (most likely OpenBLAS picking its kernels
by CPU: one process refits identically, at any thread count), which
full-precision CSVs turned into diffs on every re-render; six digits are far below every difference the tables report
and well above that noise. Tables of trained runs' own numbers (notebooks 00, 04-06) are arithmetic on stored results,
re-render byte for byte, and keep full precision."""


def write_fit_csv(df: pd.DataFrame, path: Path, index: bool = False) -> Path:
    """Write a table of fitted quantities with ``FIT_FLOAT_FORMAT`` floats, so a re-render from the same runs on
    another CPU diffs clean. Floats inside mixed-type columns (a table of named results, say ``{"r2": 0.04, "aioli_highest_in":
    "0 of 2 settings"}``) are formatted too: ``to_csv``'s ``float_format`` only reaches float columns."""
    def fmt(v):
        return FIT_FLOAT_FORMAT % v if isinstance(v, float) and math.isfinite(v) else v

    df = df.apply(lambda col: col.map(fmt) if col.dtype == object else col)
    df.to_csv(path, index=index, float_format=FIT_FLOAT_FORMAT)
    return path


def write_json(obj, path: Path) -> Path:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    return path


NONE_FINISHED = "every study (none has finished)"
"""The ``not_finished`` entry of a notebook that a render from the cache skipped altogether."""


def read_not_finished(folder: Path) -> dict[str, list[str]]:
    """A profile's ``not_finished.json`` (in its results ``folder``): notebook name -> parts left out; {} if none."""
    path = Path(folder) / "not_finished.json"
    return json.loads(path.read_text()) if path.exists() else {}


def not_finished(folder: Path, notebook: str, missing: list[str]) -> None:
    """Say which parts of a notebook's studies a render from the cache left out (``cached_only``), and record them in
    ``not_finished.json`` of the results ``folder`` (``results/<profile>/``, or a partial run's ``output_dirs``) under
    the notebook's name, so ``run_all.sh`` can sum up what a long profile still has to train. A render with nothing
    missing clears the notebook's entry."""
    if missing:
        print(f"not finished yet, left out ({len(missing)}):", ", ".join(missing))
    path = Path(folder) / "not_finished.json"
    with exclusive(path.with_name(".not_finished.lock")):  # another run_all of the profile may update it too
        record = read_not_finished(folder)
        record.pop(notebook, None)
        if missing:
            record[notebook] = list(missing)
        if record or path.exists():
            atomic_write_json(path, dict(sorted(record.items())))


def paper_line(what: str, ours: float, paper: float, higher_is_better: bool = True, tol: float = 0.02) -> str:
    """One plain sentence putting our number beside the paper's."""
    if not np.isfinite(ours):
        return f"{what}: ours undefined (too few points or constant values); paper {paper:.3f}."
    gap = ours - paper
    if abs(gap) <= tol:
        verdict = "about the paper's value"
    elif (gap > 0) == higher_is_better:
        verdict = "above the paper's value"
    else:
        verdict = "below the paper's value"
    return f"{what}: ours {ours:.3f}, paper {paper:.3f} ({verdict}; difference {gap:+.3f})."
