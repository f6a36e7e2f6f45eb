"""Rewrite the README's results section from the tables in results/<profile>/ (numbers are never typed by hand).

Usage: python scripts/update_readme_results.py [--profiles full quick]
The section between the markers <!-- results:start --> and <!-- results:end --> is replaced, one part per profile
(in the order given) that has any results.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aioli_repro.hparams import SETTINGS  # noqa: E402
from aioli_repro.pipeline import not_finished_summary, notebooks  # noqa: E402
from aioli_repro.profiles import get_profile, profile_settings  # noqa: E402
from aioli_repro.tables import TABLE2_METHODS  # noqa: E402


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v)
                                       for v in row) + " |")
    return "\n".join(lines)


def section(profile: str) -> str:
    res = ROOT / "results" / profile
    out = [f"### Profile `{profile}`", "",
           f"`./run_all.sh --profile {profile}`; every number below is read from `results/{profile}/` by "
           "`scripts/update_readme_results.py`."]
    if profile in ("smoke", "quick"):
        p = get_profile(profile)
        out.append(f"\n> The `{profile}` profile is a **pipeline demonstration**: one seed of a {p.model.preset}-parameter "
                   f"model trained for {p.train.steps} steps on {len(profile_settings(profile))} settings. Its numbers "
                   "show that every table and figure regenerates; they are not evidence for or against the paper (see "
                   "the verdicts' reasons).")
    missing = [nb for nb in ("01", "02", "03", "04", "05", "06") if not list(res.glob(f"{nb}_*"))]
    if missing:
        out.append(f"\n**Not yet run for this profile:** notebooks {', '.join(missing)} (their tables appear here "
                   "once `./run_all.sh` has finished them; every finished run is cached, so it resumes).")
    left = not_finished_summary(profile, [nb.stem for nb in notebooks()])
    if left:
        out.append(f"\n**Parts not finished yet** at the latest render from the run cache "
                   f"(`results/{profile}/not_finished.json` lists them): {left}.")
    runs = res / "04_runs.csv"
    if runs.exists():  # a long profile may have run Table 2 on part of its methods, settings or seeds so far
        df = pd.read_csv(runs)
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
        complete = not methods_left and set(df.setting) >= set(profile_settings(profile)) and len(cover) == 1 and len(
            seed_sets) == 1
        if not complete:
            out.append("\n**Table 2 so far covers** " + " | ".join(f"{', '.join(ms)}: {what}"
                                                                   for what, ms in cover.items())
                       + (f". Not yet run: {', '.join(methods_left)}." if methods_left else "."))
    claims = res / "claims.md"
    if claims.exists():
        body = claims.read_text().split("\n", 2)[2]
        # claims.md's own sections (##) sit under this profile's heading (###) here
        body = "\n".join("##### " + line[3:] if line.startswith("## ") else line for line in body.splitlines())
        out += ["\n#### Claims", body.strip()]
    t2 = res / "04_table2.csv"
    if t2.exists():
        df = pd.read_csv(t2, dtype=str, keep_default_na=False)  # keep the signs and rounding as written
        keep = [c for c in df.columns if not c.endswith("(paper)")]
        out += ["\n#### Table 2: average test perplexity (stratified) and difference from stratified (others)",
                md_table(df[keep]),
                "\nThe paper's values for the same cells are in `aioli_repro/tables.py` (`PAPER_TABLE2`) and in "
                f"`results/{profile}/04_table2.csv` (columns marked *(paper)*)."]
    power = res / "04_power.csv"
    if power.exists():
        df = pd.read_csv(power)
        if "method" in df.columns:  # one row per (setting, method): the README shows Aioli's, the CSV has them all
            df = df[df.method == "aioli"].drop(columns=["method"])
        out += ["\n#### How small a difference Aioli's paired test can detect (80% power; `04_power.csv` has every "
                "method)", md_table(df)]
    t3 = res / "05_summary.json"
    if t3.exists():
        s = json.loads(t3.read_text())
        out += [f"\n#### Table 3 (restricted budget): Aioli on top of a method's proportions improves it in "
                f"{s['improved']} of {s['pairs']} (method, setting) pairs, mean {s['mean']:+.3f}, "
                f"median {s['median']:+.3f}, max {s['max']:+.3f} "
                f"(paper: {s['paper']['improved']} of {s['paper']['pairs']}, mean {s['paper']['mean']}, "
                f"max {s['paper']['max']})."]
    by_start = res / "05_by_start.csv"
    if by_start.exists():
        out += ["\nWhere Aioli gains (`05_by_start.csv`; perplexity, runs of every seed, regression to the mean inflates "
                "the first row):\n", md_table(pd.read_csv(by_start).round(3))]
    spread = res / "05_p_init_spread.csv"
    df = pd.read_csv(spread) if spread.exists() else None
    if df is not None and df.max_tv_between_seeds.notna().any():  # one seed (quick, smoke) has no spread to show
        wide = df.pivot(index="method", columns="label", values="max_tv_between_seeds")
        order = [st.label for st in SETTINGS.values() if st.label in wide.columns]  # Table 2's order
        wide = wide[order].round(3).reset_index()
        out += ["\nHow far each method's p_init moves between seeds (`05_p_init_spread.csv`; the largest "
                "total-variation distance between two seeds' mixtures, 0 = same, 1 = disjoint):\n", md_table(wide)]
    abl = res / "06_ablations.csv"
    if abl.exists():
        out += ["\n#### Ablations (difference from stratified)",
                md_table(pd.read_csv(abl, dtype=str, keep_default_na=False))]
    for name, title in (("01_static_law_summary.csv", "Static log-linear law fits (paper R² 0.991)"),
                        ("02_dynamic_law_summary.csv", "Dynamic linear law fits (paper R² 0.947)")):
        if (res / name).exists():
            df = pd.read_csv(res / name).drop(columns=["setting"], errors="ignore")
            out += [f"\n#### {title}", md_table(df)]
    figs = sorted((ROOT / "figures" / profile).glob("*.png"))
    if figs:
        out += ["\nFigures: " + ", ".join(f"[{f.stem}](figures/{profile}/{f.name})" for f in figs)]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", nargs="+", default=["full", "quick"])
    args = ap.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    parts = [section(p) for p in args.profiles if (ROOT / "results" / p).is_dir()]
    new = "<!-- results:start -->\n" + "\n".join(parts) + "<!-- results:end -->"
    if "<!-- results:start -->" not in text:
        raise SystemExit("README.md has no <!-- results:start --> marker")
    readme.write_text(re.sub(r"<!-- results:start -->.*?<!-- results:end -->", lambda _: new, text, flags=re.S))
    print(f"README results section rewritten from {', '.join(f'results/{p}/' for p in args.profiles)}")


if __name__ == "__main__":
    main()
