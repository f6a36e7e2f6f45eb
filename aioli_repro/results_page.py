"""A profile's results page, ``results/<profile>/README.md``, written from the tables in that folder.

Every number on the page is read from ``results/<profile>/`` (claims, Table 2, power, Table 3, ablations, law fits);
none is typed by hand. Notebook 07 calls :func:`write_results_readme` after it has written ``claims.md``; the
repository's README links to the pages and never copies their numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .hparams import SETTINGS
from .paths import REPO_ROOT
from .pipeline import not_finished_summary, notebooks
from .profiles import get_profile, profile_settings
from .restricted import extension_table
from .tables import TABLE2_METHODS

PAGE = "README.md"
"""The page's file name inside ``results/<profile>/`` (so a browser of the repository shows it with the folder)."""


def md_table(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table: floats to 4 significant digits, missing cells empty."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v)
                                       for v in row) + " |")
    return "\n".join(lines)


def _table2_coverage(df: pd.DataFrame, profile: str) -> str | None:
    """What a partly run Table 2 covers so far ("method: settings with seeds; ..."), or None when it is complete."""
    methods_left = [m for m in TABLE2_METHODS if m not in set(df.method)]
    cover: dict[str, list[str]] = {}  # what a method ran ("A/SE, GH/C4 with seeds [0, 1]; ...") -> methods
    for m in [m for m in TABLE2_METHODS if m in set(df.method)]:
        sub = df[df.method == m]
        by_seeds: dict[tuple, list[str]] = {}
        for key in [k for k in SETTINGS if k in set(sub.setting)]:
            by_seeds.setdefault(tuple(sorted(set(sub[sub.setting == key].seed))), []).append(SETTINGS[key].label)
        cover.setdefault("; ".join(f"{', '.join(labels)} with seeds {list(seeds)}"
                                   for seeds, labels in by_seeds.items()), []).append(m)
    seed_sets = {tuple(sorted(set(df[df.setting == k].seed))) for k in set(df.setting)}
    complete = (not methods_left and set(df.setting) >= set(profile_settings(profile)) and len(cover) == 1
                and len(seed_sets) == 1)
    if complete:
        return None
    return ("**Table 2 so far covers** " + " | ".join(f"{', '.join(ms)}: {what}" for what, ms in cover.items())
            + (f". Not yet run: {', '.join(methods_left)}." if methods_left else "."))


def results_markdown(profile: str, root: Path = REPO_ROOT) -> str:
    """The text of ``results/<profile>/README.md`` under ``root`` (the repository, or a test's folder): the profile's
    claims (``claims.md``), then its generated tables, each present only if its file is; links to the figures in
    ``figures/<profile>/`` are relative to the page."""
    res = root / "results" / profile
    out = [f"# Results of profile `{profile}`", "",
           f"`./run_all.sh --profile {profile}`; every number on this page is read from the tables in this folder by "
           f"`aioli_repro.results_page.write_results_readme(\"{profile}\")`, which notebook 07 calls."]
    if profile in ("smoke", "quick"):
        p = get_profile(profile)
        out.append(f"\n> The `{profile}` profile is a **pipeline demonstration**: one seed of a "
                   f"{p.model.preset}-parameter model trained for {p.train.steps} steps on "
                   f"{len(profile_settings(profile))} settings. Its numbers show that every table and figure "
                   "regenerates; they are not evidence for or against the paper (see the verdicts' reasons).")
    missing = [nb for nb in ("01", "02", "03", "04", "05", "06") if not list(res.glob(f"{nb}_*"))]
    if missing:
        out.append(f"\n**Not yet run for this profile:** notebooks {', '.join(missing)} (their tables appear here "
                   "once `./run_all.sh` has finished them; every finished run is cached, so it resumes).")
    left = not_finished_summary(profile, [nb.stem for nb in notebooks()], folder=res)
    if left:
        out.append(f"\n**Parts not finished yet** at the latest render from the run cache "
                   f"(`results/{profile}/not_finished.json` lists them): {left}.")
    runs = res / "04_runs.csv"
    if runs.exists():  # a long profile may have run Table 2 on part of its methods, settings or seeds so far
        coverage = _table2_coverage(pd.read_csv(runs), profile)
        if coverage:
            out.append("\n" + coverage)
    claims = res / "claims.md"
    if claims.exists():
        body = claims.read_text().split("\n", 2)[2]  # without claims.md's own title
        # claims.md's sections (##) sit under this page's "Claims" (##)
        body = "\n".join("### " + line[3:] if line.startswith("## ") else line for line in body.splitlines())
        out += ["\n## Claims", body.strip()]
    t2 = res / "04_table2.csv"
    if t2.exists():
        df = pd.read_csv(t2, dtype=str, keep_default_na=False)  # keep the signs and rounding as written
        keep = [c for c in df.columns if not c.endswith("(paper)")]
        out += ["\n## Table 2: average test perplexity (stratified) and difference from stratified (others)",
                md_table(df[keep]),
                "\nThe paper's values for the same cells are in `aioli_repro/tables.py` (`PAPER_TABLE2`) and in "
                f"`results/{profile}/04_table2.csv` (columns marked *(paper)*)."]
    power = res / "04_power.csv"
    if power.exists():
        df = pd.read_csv(power)
        if "method" in df.columns:  # one row per (setting, method): the page shows Aioli's, the CSV has them all
            df = df[df.method == "aioli"].drop(columns=["method"])
        out += ["\n## How small a difference Aioli's paired test can detect (80% power; `04_power.csv` has every "
                "method)", md_table(df)]
    transfer = res / "04_regmix_transfer_summary.csv"
    if transfer.exists():
        out += ["\n## RegMix: its regression, and its pick at the proxies' scale and the final one "
                "(`04_regmix_transfer*.csv`; mean validation loss over groups: chosen - uniform for the proxy recipe "
                "at the fit's own seed and at a fresh one, RegMix - stratified for the final runs; 95% intervals over "
                "seeds; `cv_spearman`: the fit's out-of-fold rank correlation)",
                md_table(pd.read_csv(transfer).drop(columns=["setting"]).filter(regex="^(?!final_ppl)").round(4))]
    t3 = res / "05_summary.json"
    if t3.exists():
        s = json.loads(t3.read_text())
        out += [f"\n## Table 3 (restricted budget): Aioli on top of a method's proportions improves it in "
                f"{s['improved']} of {s['pairs']} (method, setting) pairs, mean {s['mean']:+.3f}, "
                f"median {s['median']:+.3f}, max {s['max']:+.3f} "
                f"(paper: {s['paper']['improved']} of {s['paper']['pairs']}, mean {s['paper']['mean']}, "
                f"max {s['paper']['max']})."]
    by_start = res / "05_by_start.csv"
    if by_start.exists():
        out += ["\nWhere Aioli gains (`05_by_start.csv`; perplexity, runs of every seed, regression to the mean "
                "inflates the first row):\n", md_table(pd.read_csv(by_start).round(3))]
    spread = res / "05_p_init_spread.csv"
    df = pd.read_csv(spread) if spread.exists() else None
    if df is not None and df.max_tv_between_seeds.notna().any():  # one seed (quick, smoke) has no spread to show
        wide = df.pivot(index="method", columns="label", values="max_tv_between_seeds")
        order = [st.label for st in SETTINGS.values() if st.label in wide.columns]  # Table 2's order
        wide = wide[order].round(3).reset_index()
        out += ["\nHow far each method's p_init moves between seeds (`05_p_init_spread.csv`; the largest "
                "total-variation distance between two seeds' mixtures, 0 = same, 1 = disjoint):\n", md_table(wide)]
    ext, ext_control = res / "05_restricted_extensions.csv", res / "05_restricted_extensions_control.csv"
    if ext.exists() and ext_control.exists():
        t = extension_table(pd.read_csv(ext), pd.read_csv(ext_control)).round(3).reset_index()
        out += ["\nRegMix and ODM under the same budget (finding F6; `05_restricted_extensions*.csv`; perplexity, "
                "means over seeds; `gain_vs_control` > 0: Aioli beats p_init-then-stratified):\n", md_table(t)]
    abl = res / "06_ablations.csv"
    if abl.exists():
        out += ["\n## Ablations (difference from stratified)",
                md_table(pd.read_csv(abl, dtype=str, keep_default_na=False))]
    out += _headroom_sections(res)
    for name, title in (("01_static_law_summary.csv", "Static log-linear law fits (paper R² 0.991)"),
                        ("02_dynamic_law_summary.csv", "Dynamic linear law fits (paper R² 0.947)")):
        if (res / name).exists():
            df = pd.read_csv(res / name).drop(columns=["setting"], errors="ignore")
            out += [f"\n## {title}", md_table(df)]
    figs = sorted((root / "figures" / profile).glob("*.png"))
    if figs:  # the page sits two folders below the root
        out += ["\nFigures: " + ", ".join(f"[{f.stem}](../../figures/{profile}/{f.name})" for f in figs)]
    return "\n".join(out) + "\n"


_HEADROOM_TABLES = (  # file, section title, the columns shown (None: all but the setting key), decimals (None: as written)
    ("10_headroom_prediction.csv", "Where mixing matters: the settings notebook 10 chose (validation, confirmation "
     "seeds; [how](../../docs/headroom.md))", None, 2),
    ("11_table2b.csv", "Table 2b: each method's gain over stratified and share of the headroom (test seeds; F3)", None,
     None),
    ("12_aioli_signal.csv", "Aioli's signal: agreement of its later-round estimates across seeds, per LearnParams "
     "variant (short runs; p_floor: the p of perfect agreement, what these seeds and rounds allow)",
     ["label", "variant", "rounds", "across_seeds_cos", "across_seeds_p", "across_seeds_p_floor", "across_seeds_n",
      "compute_vs_stratified", "wall_time_vs_stratified"], 3),
    ("12_adequate_signal.csv", "An Aioli that can see: each form against stratified, with its price (F4)", None, 3),
    ("13_scale_trend.csv", "Scale: the change of Aioli's gap to stratified from the smallest to the largest preset, "
     "in points of % (F5)", None, 3),
)


def _headroom_sections(res: Path) -> list[str]:
    """The tables of notebooks 10-13 (where mixing matters; ``docs/headroom.md``), each only if its file exists."""
    out = []
    for name, title, columns, decimals in _HEADROOM_TABLES:
        if not (res / name).exists():
            continue
        if decimals is None:  # formatted by its notebook: keep the signs and rounding as written
            df = pd.read_csv(res / name, dtype=str, keep_default_na=False)
        else:
            df = pd.read_csv(res / name).drop(columns=["setting"], errors="ignore")
            df = df[[c for c in columns if c in df.columns]] if columns else df
            df = df.round(decimals)
        out += [f"\n## {title}", md_table(df)]
    scale = res / "13_scale.csv"
    if scale.exists():
        df = pd.read_csv(scale)
        df = df[df.measure.str.startswith("headroom")][["preset", "parameters", "device", "label", "measure",
                                                         "seeds", "mean"]].round(3)
        if len(df):
            out += ["\nHeadroom of the best static mixture over uniform per preset (% of uniform's average test "
                    "perplexity; `13_scale.csv`):\n", md_table(df)]
    return out


def write_results_readme(profile: str, root: Path = REPO_ROOT) -> Path:
    """Write ``results/<profile>/README.md`` under ``root`` from the tables in that folder (see
    :func:`results_markdown`) and return its path. Notebook 07 calls it with its ``profile`` once ``claims.md`` is
    written; ``python -c 'from aioli_repro.results_page import write_results_readme; write_results_readme("full")'``
    re-writes one page by hand."""
    get_profile(profile)  # refuse an unknown profile before writing anything
    path = root / "results" / profile / PAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(results_markdown(profile, root))
    return path
