"""Execute the numbered notebooks in order with papermill (what ``run_all.sh`` calls).

Each notebook receives ``profile`` (and ``jobs``) through its ``parameters`` cell, writes its tables to
``results/<profile>/`` and its figures to ``figures/<profile>/``, and is saved executed to
``notebooks/executed/<profile>/``. Training runs are cached by config hash, so a second invocation only re-renders.
The pipeline stops at the first failing notebook and names the notebook and the cell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import allocator
from .paths import REPO_ROOT, atomic_write_json
from .profiles import PROFILES
from .usage import read_used, runs_cost

NOTEBOOKS = REPO_ROOT / "notebooks"


def notebooks(only: list[str] | None = None) -> list[Path]:
    found = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.name.startswith(o) or p.stem == o for o in only)]
        if not found:
            raise SystemExit(f"no notebook matches {only}")
    return found


SUMMARY_NOTEBOOK = "07_claims"
"""The notebook that reads every study's tables (its findings F3-F5 come from notebooks 11-13), so ``run_all`` runs it
after the other notebooks it runs, whatever its number."""


def run_order(paths: list[Path]) -> list[Path]:
    """``paths`` in the order ``run_all`` executes them: by number, the summary notebook last."""
    return sorted(paths, key=lambda p: (p.stem == SUMMARY_NOTEBOOK, p.name))


def accepts_cached_only(path: Path) -> bool:
    """Whether a notebook can render from the run cache alone (it declares a ``cached_only`` parameter)."""
    import papermill as pm  # lazy, here and below: papermill brings the Jupyter client, needed only to run notebooks

    return "cached_only" in pm.inspect_notebook(str(path))


def own_package_first(pythonpath: str | None) -> str:
    """``PYTHONPATH`` for the kernels: this checkout's root first, then what it held. A kernel starts in
    ``notebooks/``, so without it ``import aioli_repro`` finds whatever the environment installed. With one virtual
    environment shared by two checkouts, its editable install points at one of them, and the other's notebooks would
    run the first's code and write into the first's ``results/``."""
    rest = [p for p in (pythonpath or "").split(os.pathsep) if p and Path(p) != REPO_ROOT]
    return os.pathsep.join([str(REPO_ROOT), *rest])


def run_notebook(path: Path, profile: str, jobs: int, out_dir: Path, cached_only: bool = False,
                 used_log: Path | None = None) -> float | None:
    """Execute one notebook; its wall time, or None when ``cached_only`` finds none of its runs finished (the
    notebook is then skipped, and an executed copy from an earlier invocation is kept). With ``used_log``, every run
    the notebook reads or trains appends its id to that file (see :mod:`aioli_repro.usage`)."""
    import papermill as pm  # lazy: see accepts_cached_only

    if used_log is not None:
        used_log.unlink(missing_ok=True)
        os.environ["AIOLI_USED_RUNS"] = str(used_log)  # the kernel and its training workers inherit it
    os.environ["PYTHONPATH"] = own_package_first(os.environ.get("PYTHONPATH"))  # and this one too
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    t = time.perf_counter()
    params = {"profile": profile, "jobs": jobs, **({"cached_only": True} if cached_only else {})}
    target = out.with_name(out.stem + ".running.ipynb") if cached_only else out
    try:
        # The notebooks' own progress bars (tqdm, on stderr) reach the terminal as they run; tables stay in the notebook.
        # The kernel trains runs itself at --jobs 1, so it too preloads tcmalloc where the machine has it.
        with allocator.for_children():
            pm.execute_notebook(str(path), str(target), parameters=params, kernel_name="python3",
                                cwd=str(NOTEBOOKS), progress_bar=False, log_output=False, stderr_file=sys.stderr)
        if target != out:
            os.replace(target, out)
    except pm.PapermillExecutionError as e:
        if cached_only and e.ename == "NotCachedError":
            target.unlink(missing_ok=True)
            print(f"[run_all] {path.name}: none of its runs has finished under this profile yet; skipped")
            # Lazy, here and below: report brings pandas, which run_all's own process (and the command line, which
            # shares its options) otherwise never needs.
            from .report import NONE_FINISHED, not_finished, results_dir

            not_finished(results_dir(profile), path.stem, [NONE_FINISHED])
            return None
        raise SystemExit(f"\n[run_all] FAILED: notebook {path.name}, cell {e.exec_count} ({e.ename}: {e.evalue}).\n"
                         f"[run_all] The executed notebook with the traceback is {target}") from None
    return time.perf_counter() - t


def write_logs(profile: str, jobs: int, cached_only: bool, timings: dict[str, float], used: dict[str, list[str]],
               total: float) -> None:
    """Update ``results/<profile>/run_all_timings.json`` and ``used_runs.json`` for the notebooks just executed; the
    entries of notebooks this invocation did not run are kept (a sitting may run only some).

    Each notebook's timing also says how many runs it used and the training seconds they recorded: its cost on a
    fresh clone without the committed result cache, measured even by a re-render that trained nothing."""
    folder = REPO_ROOT / "results" / profile
    folder.mkdir(parents=True, exist_ok=True)
    log, used_path = folder / "run_all_timings.json", folder / "used_runs.json"
    previous = json.loads(log.read_text()).get("notebooks", {}) if log.exists() else {}
    used_before = json.loads(used_path.read_text()) if used_path.exists() else {}
    for name, seconds in timings.items():
        cost = runs_cost(used.get(name, []))
        previous[name] = {"seconds": round(seconds, 1), "jobs": jobs, "date": time.strftime("%Y-%m-%d %H:%M"),
                          "cached_only": cached_only,  # a re-render from the cache, not a training sitting
                          "runs_used": cost["runs"], "runs_recorded_train_s": cost["recorded_s"]}
        used_before[name] = sorted(used.get(name, []))
    atomic_write_json(log, {"profile": profile, "notebooks": previous,
                            "last_invocation": {"jobs": jobs, "total_s": total, "notebooks": list(timings),
                                                "cached_only": cached_only}})
    atomic_write_json(used_path, dict(sorted(used_before.items())))


def not_finished_summary(profile: str, stems: list[str], folder: Path | None = None) -> str:
    """One line: how many parts each of these notebooks left out at its latest render (empty when none), from the
    ``not_finished.json`` of ``folder`` (default ``results/<profile>/``)."""
    from .report import NONE_FINISHED, read_not_finished  # lazy: see run_notebook

    record = read_not_finished(REPO_ROOT / "results" / profile if folder is None else folder)

    return "; ".join(f"{stem[:2]} all" if record[stem] == [NONE_FINISHED] else f"{stem[:2]} {len(record[stem])} part(s)"
                     for stem in stems if record.get(stem))


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``run_all.sh`` (and of ``python -m aioli_repro run-all``, which shares them)."""
    ap.add_argument("--profile", default="quick", choices=list(PROFILES), help="see aioli_repro/profiles.py")
    ap.add_argument("--jobs", type=int, default=None,
                    help="independent training runs executed in parallel (default: the profile's, see profiles.py)")
    ap.add_argument("--only", nargs="*", help="run only these notebooks (number prefix or name)")
    ap.add_argument("--cached-only", action="store_true",
                    help="train nothing: re-render, from finished runs only, the notebooks that can (01-07), listing "
                         "what is not finished yet; the others are skipped (e.g. between sittings of the full profile)")
    return ap


def used_log_path(profile: str) -> Path:
    """The scratch file this invocation's notebooks log the runs they use into. One per process: a re-render of
    some notebooks while a long study runs under the same profile must neither delete the study's log (each
    notebook starts by emptying its log) nor read the study's runs as its own."""
    return REPO_ROOT / "runs" / "logs" / f"used_runs_{profile}_{os.getpid()}.txt"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="run_all.sh", description="Regenerate every table and figure.")
    return run_all(add_arguments(ap).parse_args(argv))


def run_all(args: argparse.Namespace) -> int:
    """Execute the chosen notebooks of a profile in order (``run_order``: the claims last), then write the timing and
    run-usage logs."""
    todo = run_order(notebooks(args.only))
    if args.cached_only:
        skipped = [p.name for p in todo if not accepts_cached_only(p)]
        todo = [p for p in todo if p.name not in skipped]
        if skipped:
            print(f"[run_all] --cached-only: skipping {', '.join(skipped)} (they would train)")
        if not todo:
            raise SystemExit("[run_all] --cached-only: none of the chosen notebooks can render without training")
    if args.jobs is None:
        args.jobs = PROFILES[args.profile].jobs
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    if args.profile == "smoke":
        # CI's smoke runs are throwaway: keep their results out of the committed run cache (results/run_cache),
        # so a clean clone really trains them instead of re-rendering cached numbers.
        os.environ.setdefault("AIOLI_RESULT_CACHE", str(REPO_ROOT / "runs" / "smoke_result_cache"))
    # In a kernel without ipywidgets, tqdm.auto warns that it falls back to text bars, once per notebook: the text bars
    # are what run_all forwards to the terminal, so the warning is only noise there.
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:IProgress not found"]))
    out_dir = NOTEBOOKS / "executed" / args.profile
    print(f"[run_all] profile {args.profile} ({args.jobs} run(s) at once): {PROFILES[args.profile].description}")
    timings, used = {}, {}
    used_log = used_log_path(args.profile)
    used_log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, nb in enumerate(todo, 1):
        print(f"[run_all] ({i}/{len(todo)}) {nb.name} ...", flush=True)
        seconds = run_notebook(nb, args.profile, args.jobs, out_dir, args.cached_only, used_log)
        if seconds is not None:
            timings[nb.name] = seconds
            used[nb.name] = read_used(used_log) if used_log.exists() else []
            print(f"[run_all] ({i}/{len(todo)}) {nb.name} done in {seconds:.0f} s", flush=True)
    os.environ.pop("AIOLI_USED_RUNS", None)
    used_log.unlink(missing_ok=True)
    total = time.perf_counter() - t0
    write_logs(args.profile, args.jobs, args.cached_only, timings, used, total)
    left = not_finished_summary(args.profile, [p.stem for p in todo])
    if left:
        print(f"[run_all] not finished yet under {args.profile} (results/{args.profile}/not_finished.json): {left}")
    print(f"[run_all] all {len(todo)} notebooks done in {total:.0f} s; results in results/{args.profile}/, "
          f"figures in figures/{args.profile}/, executed notebooks in {out_dir.relative_to(REPO_ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
