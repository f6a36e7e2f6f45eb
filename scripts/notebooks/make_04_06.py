import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nbtools import write_notebook  # noqa: E402

COMMON_IMPORTS = """
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from aioli_repro import hparams, tables
from aioli_repro.profiles import check_study_parameters, get_profile, profile_settings
from aioli_repro.report import not_finished, output_dirs

pd.set_option("display.max_columns", 40)
pd.set_option("display.width", 200)
check_study_parameters(profile, seeds, settings, jobs)  # papermill passes -p values unchecked
RESULTS, FIGURES = output_dirs(profile, seeds=seeds, settings=settings)
settings = settings or profile_settings(profile)
seeds = seeds if seeds is not None else list(get_profile(profile).seeds)
print(get_profile(profile).description, "| seeds", seeds, "| settings", [hparams.SETTINGS[s].label for s in settings])
"""
PARAMS = """
profile = "quick"   # smoke | quick | full | paper
jobs = 1            # independent (method, setting, seed) studies run in parallel processes
seeds = None        # None: the profile's seeds
settings = None     # None: the profile's settings (all six of the paper; three in quick, two in smoke)
cached_only = False  # True: train nothing; show the finished (method, setting, seed) studies, list the others
"""

write_notebook("notebooks/04_perplexity_comparison.ipynb", [
("md", """
# 04 · Perplexity comparison (the paper's Table 2)

Every method on the six settings, paired by seed with stratified sampling. Stratified: absolute average test
perplexity (mean over groups of exp(group test loss)); the others: difference from stratified (negative = better),
mean ± sd over seeds, with the paired 95% confidence interval of the difference, the number of settings where the
method beats stratified, and the method's extra training cost. The paper's numbers stand beside ours; absolute
perplexities are not comparable (different data, model and scale), the signs and relative sizes of the differences
are what can reproduce.
"""),
("params", PARAMS + """methods = None     # None: every method of Table 2; a subset must include stratified (the baseline)
"""),
("code", COMMON_IMPORTS.replace("settings=settings)", "settings=settings, methods=methods)")),
("code", """
methods = tables.table2_methods(methods)
runs = tables.run_grid(methods, settings, profile, seeds, jobs=jobs, cached_only=cached_only)
not_finished(RESULTS, "04_perplexity_comparison", runs.attrs["missing"])
runs.to_csv(RESULTS / "04_runs.csv", index=False)
t2 = tables.table2(runs)
t2.to_csv(RESULTS / "04_table2.csv", index=False)
t2
"""),
("md", "## How small a difference can this study see?"),
("code", """
power = tables.power_table(runs)
power.to_csv(RESULTS / "04_power.csv", index=False)
power.round(3)
"""),
("md", """
## Can a setting show a gain at all?

The static log-linear law, fitted per seed to the test losses of the sweep grid search and DML share, predicts the
average test perplexity of any static mixture: its best gain over uniform anywhere, and within the mixtures Aioli's
released (EMA) form can reach, against the difference Aioli's paired test detects now (80% power). Where the band's
headroom is below the detectable difference, the setting cannot show Aioli beating stratified whatever Aioli does.
"""),
("code", """
from aioli_repro import decidability
from aioli_repro.methods import NotCachedError, Runner

try:  # the sweeps are grid search's runs: nothing new is trained
    if not {"grid", "dml"} & set(methods):
        raise NotCachedError("grid search's sweep is not part of this study")
    headrooms = decidability.headroom_table(settings, profile, seeds, Runner(progress=False, cached_only=True))
    headrooms.to_csv(RESULTS / "04_headroom.csv", index=False)
    decide = decidability.decidability_table(headrooms, power)
    decide.to_csv(RESULTS / "04_decidability.csv", index=False)
    display(decide.round(3))
except NotCachedError as e:
    print(f"no decidability table: {e}")
"""),
("md", "## Differences from stratified, per seed"),
("code", """
diffs = tables.differences(runs)
# seeds side by side (dodge), not jittered: seaborn's jitter draws from numpy's global RNG, so every re-render of
# the same runs moved the points and rewrote the figure
g = sns.catplot(diffs.assign(seed=diffs.seed.astype(str)), x="method", y="diff", col="label", kind="strip",
                col_wrap=3, sharey=False, height=2.8, aspect=1.3, order=[m for m in methods if m != "stratified"],
                hue="seed", dodge=True, jitter=False)
for ax in g.axes.flat:
    ax.axhline(0, color="grey", lw=0.8)
    ax.tick_params(axis="x", rotation=45)
g.set_axis_labels("", "test perplexity - stratified")
g.figure.suptitle(f"Average test perplexity difference from stratified ({profile} profile; below 0 = better)", y=1.02)
plt.savefig(FIGURES / "04_perplexity_differences.png", dpi=120, bbox_inches="tight")
plt.show()
"""),
("md", "## The mixtures each method chose"),
("code", """
mix = runs[["label", "method", "seed", "proportions"]].copy()
mix["groups"] = [", ".join(hparams.SETTINGS[s].groups) for s in runs.setting]
mix.to_csv(RESULTS / "04_proportions.csv", index=False)
mix[mix.seed == seeds[0]].pivot(index="method", columns="label", values="proportions")
"""),
("md", """
## Which groups each method trades for which

Table 2 averages perplexities over groups, so a group a method starves can outweigh its gains on all the others.
Each cell: the group's test perplexity under the method divided by stratified's on the same seeds (below 1 =
better on that group).
"""),
("code", """
trade = tables.group_tradeoffs(runs)
trade.to_csv(RESULTS / "04_group_tradeoffs.csv", index=False)
trade.pivot_table(index=["label", "group"], columns="method", values="ratio_to_baseline", sort=False)[
    [m for m in methods if m != "stratified" and m in set(trade.method)]].round(2)
"""),
])

write_notebook("notebooks/05_restricted_budget.ipynb", [
("md", """
# 05 · Restricted budget (the paper's Table 3)

Each existing method learns its proportions with at most 0.5·S extra training steps. Then (a) the method's
proportions are used alone for a full run, and (b) Aioli starts from them: it trains S_init = 5% of S on the
learned mixture p_init and then adapts (exponentiated gradient restarts from uniform, as in the released code).
The paper: Aioli improves the method in 28 of 30 (method, setting) pairs, by 1.202 perplexity on average, at most 12.012.
"""),
("params", PARAMS),
("code", COMMON_IMPORTS.replace("output_dirs\n", "output_dirs, write_json\n")),  # 05 also writes a JSON summary,
("code", """
pairs = tables.run_grid(tables.BASELINES, settings, profile, seeds, jobs=jobs, budget="restricted",
                        cached_only=cached_only)
not_finished(RESULTS, "05_restricted_budget", pairs.attrs["missing"])
pairs.to_csv(RESULTS / "05_restricted_runs.csv", index=False)
table3 = pairs.groupby(["label", "method"])[["method_ppl", "aioli_ppl", "improvement"]].mean().round(3)
table3.to_csv(RESULTS / "05_table3.csv")
table3
"""),
("code", """
summary = tables.restricted_summary(pairs)
write_json(summary, RESULTS / "05_summary.json")
print(f"Aioli improves the method in {summary['improved']} of {summary['pairs']} pairs "
      f"(paper: {summary['paper']['improved']} of {summary['paper']['pairs']}); mean improvement "
      f"{summary['mean']:+.3f} (paper {summary['paper']['mean']:+.3f}), median {summary['median']:+.3f} (the paper "
      f"gives none), max {summary['max']:+.3f} (paper {summary['paper']['max']:+.3f})")
"""),
("md", """
## Where does Aioli gain?

Split by how each method's proportions did alone against stratified sampling (same setting and seed, read from the
run cache that notebook 04 fills; nothing is trained here). Regression to the mean inflates the first row's gain.
"""),
("code", """
try:
    stratified = tables.run_grid(["stratified"], settings, profile, seeds, cached_only=True, progress=False)
    by_start = tables.restricted_by_start(pairs, stratified)
    by_start.to_csv(RESULTS / "05_by_start.csv", index=False)
    display(by_start.round(3))
except tables.NotCachedError:
    (RESULTS / "05_by_start.csv").unlink(missing_ok=True)  # derived from the cache: never leave an older split behind
    print("no stratified run of these settings and seeds is cached yet (notebook 04 trains them)")
"""),
("md", """
## The control: p_init, then stratified

Released Aioli restarts from uniform after S_init steps, so from any start it ends near stratified, and its gain
over p_init alone mostly measures how bad p_init was. The control trains p_init for the same S_init steps and then
stratified: Aioli's gain over it (control - Aioli, paired by seed) is what Aioli's adaptation adds (claim C7).
"""),
("code", """
try:
    control = tables.run_grid(tables.BASELINES, settings, profile, seeds, jobs=jobs, budget="restricted_control",
                              cached_only=cached_only)
    control_missing = control.attrs["missing"]
    control.to_csv(RESULTS / "05_restricted_control.csv", index=False)
    display(control.groupby(["label", "method"])[["control_ppl", "aioli_ppl", "gain_vs_control"]].mean().round(3))
except tables.NotCachedError as e:
    control_missing = ["every control study"]
    (RESULTS / "05_restricted_control.csv").unlink(missing_ok=True)  # never leave an older control table behind
    print(e)
not_finished(RESULTS, "05_restricted_budget", pairs.attrs["missing"] + [f"control {x}" for x in control_missing])
"""),
("md", """
## How far do the methods' proportions move between seeds?

The largest total-variation distance between two seeds' p_init on a setting (0: the same mixture; 1: disjoint),
and the sd over seeds of p_init's own perplexity. A method whose p_init moves far with the seed learns mostly noise
from its 0.5·S extra steps.
"""),
("code", """
spread = tables.p_init_spread(pairs)
spread.to_csv(RESULTS / "05_p_init_spread.csv", index=False)
spread.pivot(index="method", columns="label", values="max_tv_between_seeds").round(3)
"""),
("code", """
ax = sns.scatterplot(pairs, x="method_ppl", y="aioli_ppl", hue="method", style="label")
lims = [min(pairs.method_ppl.min(), pairs.aioli_ppl.min()), max(pairs.method_ppl.max(), pairs.aioli_ppl.max())]
ax.plot(lims, lims, color="grey", lw=0.8)
# Log axes: one failed p_init (DML on SlimPajama) would squash the other pairs into a corner.
ax.set(xscale="log", yscale="log")
for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not 10^2
    axis.set_major_formatter(lambda v, _: f"{v:g}")
    axis.set_minor_formatter(lambda v, _: f"{v:g}" if str(int(v))[0] in "2468" else "")
ax.set(xlabel="method's proportions alone: test perplexity", ylabel="Aioli from those proportions",
       title=f"Restricted budget ({profile}): below the diagonal = Aioli improves")
ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=7)
plt.savefig(FIGURES / "05_restricted.png", dpi=120, bbox_inches="tight")
plt.show()
"""),
])

write_notebook("notebooks/06_ablations.ipynb", [
("md", """
# 06 · Ablations: Aioli-static and Aioli-diagonal

Aioli-static learns A once (a single round spanning the run); Aioli-diagonal keeps only the diagonal of A^t.
Differences from stratified in average test perplexity, per setting and averaged over settings
(paper, Table 20: Aioli −0.274, Aioli-diagonal −0.230, Aioli-static −0.140).
"""),
("params", PARAMS),
("code", COMMON_IMPORTS),
("code", """
runs = tables.run_grid(("stratified",) + tables.ABLATIONS, settings, profile, seeds, jobs=jobs,
                       cached_only=cached_only)
not_finished(RESULTS, "06_ablations", runs.attrs["missing"])
runs.to_csv(RESULTS / "06_runs.csv", index=False)
abl = tables.ablation_table(runs)
abl.to_csv(RESULTS / "06_ablations.csv", index=False)
abl
"""),
("code", """
d = tables.differences(runs)
# the error bars are bootstrap intervals: a fixed seed keeps a re-render of the same runs byte for byte the same
ax = sns.barplot(d, x="label", y="diff", hue="method", errorbar=("ci", 95) if len(seeds) > 1 else None, seed=0)
ax.axhline(0, color="grey", lw=0.8)
ax.set(xlabel="", ylabel="test perplexity - stratified", title=f"Aioli and its ablations ({profile})")
plt.savefig(FIGURES / "06_ablations.png", dpi=120, bbox_inches="tight")
plt.show()
"""),
])
