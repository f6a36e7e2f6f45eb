"""results/<profile>/README.md from a tiny fake results folder, against a page written out by hand."""

import json

import pytest

from aioli_repro.errors import ConfigError
from aioli_repro.results_page import md_table, results_markdown, write_results_readme

CLAIMS = """# Claims of the paper at our scale (full profile)

Generated from the tables in this folder.

## Verdicts

| claim | verdict |
|---|---|
| **C1** | **cannot decide** |

## Rules

- **C1.** a rule.
"""

EXPECTED = """# Results of profile `full`

`./run_all.sh --profile full`; every number on this page is read from the tables in this folder by \
`aioli_repro.results_page.write_results_readme("full")`, which notebook 07 calls.

**Not yet run for this profile:** notebooks 02, 03 (their tables appear here once `./run_all.sh` has finished \
them; every finished run is cached, so it resumes).

**Parts not finished yet** at the latest render from the run cache (`results/full/not_finished.json` lists them): \
05 2 part(s); 06 all.

**Table 2 so far covers** stratified, aioli: A/SE with seeds [0, 1]; GH/C4 with seeds [0]. Not yet run: grid, dml, \
skillit, doremi, doge, regmix, odm.

## Claims
Generated from the tables in this folder.

### Verdicts

| claim | verdict |
|---|---|
| **C1** | **cannot decide** |

### Rules

- **C1.** a rule.

## Table 2: average test perplexity (stratified) and difference from stratified (others)
| method | A/SE | GH/C4 |
|---|---|---|
| stratified | 81.474 ± 0.449 | not run |
| aioli | +0.100 ± 1.000 | -0.050 |

The paper's values for the same cells are in `aioli_repro/tables.py` (`PAPER_TABLE2`) and in \
`results/full/04_table2.csv` (columns marked *(paper)*).

## Table 3 (restricted budget): Aioli on top of a method's proportions improves it in 3 of 4 (method, setting) \
pairs, mean +1.235, median -0.500, max +12.000 (paper: 28 of 30, mean 1.202, max 12.012).

## Ablations (difference from stratified)
| method | A/SE | paper |
|---|---|---|
| aioli | -0.250 | -0.274 |

## Static log-linear law fits (paper R² 0.991)
| label | r2 | fits |
|---|---|---|
| A/SE | 0.9952 | 6 |
| all | 0.5 | 12 |

Figures: [01_static_law](../../figures/full/01_static_law.png), \
[04_perplexity_differences](../../figures/full/04_perplexity_differences.png)
"""


def _fake_repository(root):
    res = root / "results" / "full"
    res.mkdir(parents=True)
    (res / "claims.md").write_text(CLAIMS)
    (res / "not_finished.json").write_text(json.dumps({"05_restricted_budget": ["grid/a/seed 0", "dml/a/seed 0"],
                                                       "06_ablations": ["every study (none has finished)"]}))
    # Table 2 has run stratified and Aioli, on A/SE with two seeds and on GH/C4 with one
    (res / "04_runs.csv").write_text("setting,method,seed\n" + "".join(
        f"{s},{m},{seed}\n" for m in ("stratified", "aioli")
        for s, seed in (("arxiv_stackexchange", 0), ("arxiv_stackexchange", 1), ("github_c4", 0))))
    (res / "04_table2.csv").write_text("method,A/SE,A/SE (paper),GH/C4\n"
                                       "stratified,81.474 ± 0.449,16.532,not run\n"
                                       "aioli,+0.100 ± 1.000,-0.205,-0.050\n")
    (res / "05_summary.json").write_text(json.dumps({
        "improved": 3, "pairs": 4, "mean": 1.2346, "median": -0.5, "max": 12.0,
        "paper": {"improved": 28, "pairs": 30, "mean": 1.202, "max": 12.012}}))
    (res / "06_ablations.csv").write_text("method,A/SE,paper\naioli,-0.250,-0.274\n")
    (res / "01_static_law_summary.csv").write_text("setting,label,r2,fits\narxiv_stackexchange,A/SE,0.995213,6\n"
                                                   ",all,0.5,12\n")
    figures = root / "figures" / "full"
    figures.mkdir(parents=True)
    for name in ("04_perplexity_differences.png", "01_static_law.png"):
        (figures / name).write_bytes(b"")


def test_results_page_from_a_fake_results_folder(tmp_path):
    _fake_repository(tmp_path)
    assert results_markdown("full", tmp_path) == EXPECTED
    path = write_results_readme("full", tmp_path)
    assert path == tmp_path / "results" / "full" / "README.md"
    assert path.read_text() == EXPECTED


def test_results_page_of_an_empty_folder_says_what_has_not_run(tmp_path):
    (tmp_path / "results" / "full").mkdir(parents=True)
    assert results_markdown("full", tmp_path) == (
        "# Results of profile `full`\n\n`./run_all.sh --profile full`; every number on this page is read from the "
        "tables in this folder by `aioli_repro.results_page.write_results_readme(\"full\")`, which notebook 07 "
        "calls.\n\n**Not yet run for this profile:** notebooks 01, 02, 03, 04, 05, 06 (their tables appear here once "
        "`./run_all.sh` has finished them; every finished run is cached, so it resumes).\n")


def test_results_page_refuses_an_unknown_profile(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile"):
        write_results_readme("nope", tmp_path)
    assert not (tmp_path / "results").exists()


def test_md_table_formats_floats_and_blanks():
    import pandas as pd

    df = pd.DataFrame({"a": ["x", "y"], "b": [0.123456, float("nan")], "c": [3, 4]})
    assert md_table(df) == "| a | b | c |\n|---|---|---|\n| x | 0.1235 | 3 |\n| y |  | 4 |"


def test_the_headroom_bench_gets_its_sections_in_the_order_of_the_notebooks(tmp_path):
    res = tmp_path / "results" / "full"
    res.mkdir(parents=True)
    (res / "10_headroom_prediction.csv").write_text(
        "setting,label,role,screen_rank,full_gain_pct,confirmed\nc+d,C/D,screen's best,1,24.58403,True\n")
    (res / "11_table2b.csv").write_text('method,C/D gain,C/D verdict\ngrid,"+56.66 [-74.34, +187.66]",finds most\n')
    (res / "12_aioli_signal.csv").write_text("setting,label,variant,across_seeds_cos,across_seeds_p,extra\n"
                                             "c+d,C/D,eval x4,0.41234,0.0312,9\n")
    (res / "12_adequate_signal.csv").write_text("setting,label,form,seeds,minus_stratified\nc+d,C/D,released,3,-1.2345\n")
    (res / "13_scale_trend.csv").write_text("device,setting,label,form,change_pct\ncpu,c+d,C/D,aioli,-0.5\n")
    (res / "13_scale.csv").write_text("preset,parameters,device,setting,label,measure,seeds,mean,ci_low\n"
                                      "1m,921088,cpu,c+d,C/D,headroom_observed_gain_pct,1,7.25,\n"
                                      "1m,921088,cpu,c+d,C/D,aioli_minus_stratified,3,-0.5,-1\n")
    page = results_markdown("full", tmp_path)
    heads = [line for line in page.splitlines() if line.startswith("## ")]
    assert [h.split(":")[0] for h in heads] == ["## Where mixing matters", "## Table 2b", "## Aioli's signal",
                                                "## An Aioli that can see", "## Scale"]
    assert "| C/D | screen's best | 1 | 24.58 | True |" in page  # rounded to 2 decimals, the setting key dropped
    assert '| grid | +56.66 [-74.34, +187.66] | finds most |' in page  # Table 2b as written
    assert "| C/D | eval x4 | 0.412 | 0.031 |" in page and "extra" not in page  # only the agreement columns
    assert "| 1m | 921088 | cpu | C/D | headroom_observed_gain_pct | 1 | 7.25 |" in page
    assert "aioli_minus_stratified" not in page  # the gap rows of 13_scale.csv are in the trend table instead


def test_the_restricted_budget_extensions_get_a_table_of_means_over_seeds(tmp_path):
    res = tmp_path / "results" / "full"
    res.mkdir(parents=True)
    keys = "setting,label,method,seed"
    (res / "05_restricted_extensions.csv").write_text(
        f"{keys},p_init,extra_steps,method_ppl,aioli_ppl,improvement\n"
        's,S,odm,0,"[0.5, 0.5]",500,100.0,98.0,2.0\ns,S,odm,1,"[0.4, 0.6]",500,104.0,100.0,4.0\n')
    (res / "05_restricted_extensions_control.csv").write_text(
        f"{keys},method_ppl,control_ppl,aioli_ppl,gain_vs_control\ns,S,odm,0,100.0,99.0,98.0,1.0\n"
        "s,S,odm,1,104.0,99.0,100.0,-1.0\n")
    page = results_markdown("full", tmp_path)
    # means over the two seeds, by hand: alone 102, control 99, Aioli 99, improvement 3, gain 0
    assert "| S | odm | 102 | 99 | 99 | 3 | 0 | 500 | 2 |" in page and "finding F6" in page
    (res / "05_restricted_extensions_control.csv").unlink()  # half a study: no table
    assert "finding F6" not in results_markdown("full", tmp_path)


def test_the_regmix_transfer_summary_gets_its_section(tmp_path):
    res = tmp_path / "results" / "full"
    res.mkdir(parents=True)
    (res / "04_regmix_transfer_summary.csv").write_text(
        "setting,label,seeds,cv_spearman,proxy_loss_diff,final_ppl_log_ratio\ns,S,3,0.51234,-0.02,0.1\n"
        "pooled,pooled,3,0.51234,-0.02,0.1\n")
    page = results_markdown("full", tmp_path)
    assert "its pick at the proxies' scale" in page and "| S | 3 | 0.5123 | -0.02 |" in page
    assert "final_ppl" not in page  # Table 2 has it
    (res / "04_regmix_transfer_summary.csv").unlink()
    assert "its pick at the proxies' scale" not in results_markdown("full", tmp_path)
