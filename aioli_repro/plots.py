"""Every figure the notebooks save, one function per figure.

Figures are drawn here rather than in the notebooks so that all eight notebooks draw the same way, a figure is
re-drawn identically by ``run_all.sh --cached-only`` whichever notebook calls it, and each function is exercised on a
tiny table by the tests. A notebook passes the table it has just computed and the path to save to, then shows the
figure; to try another look, copy the function into the notebook and edit it there.

Every function returns the matplotlib ``Figure`` and saves it at ``dpi=120`` when ``path`` is given. Nothing here
draws from a random number generator (no jitter; seaborn's bootstrap gets ``seed=0``), so a re-render of the same runs
writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .aioli_signal import signal_seen
from .fidelity import PAPER, FidelityStudy, OrderingStudy, sim_improvement_relation
from .law_studies import DynamicLawStudy, StaticLawStudy
from .tables import BASELINES, EXTENSION_METHODS

__all__ = ["plot_static_law", "plot_dynamic_law", "plot_fidelity", "plot_colsum_ordering", "plot_stratified_curves",
           "plot_perplexity_differences", "plot_restricted", "plot_control_gains", "plot_ablations",
           "plot_validation_gaps", "plot_headroom_screen", "plot_headroom_share", "plot_custom_method",
           "plot_signal_study", "plot_scale", "plot_regmix_transfer"]


def _panels(n: int, width: float = 4.2, height: float = 3.6):

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _save(fig, path: str | Path | None):
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _identity_line(ax, d: pd.DataFrame, observed: str, fitted: str) -> None:
    """The y = x line across the range of both columns: a fitted-against-observed panel's reference."""
    lo, hi = d[[observed, fitted]].min().min(), d[[observed, fitted]].max().max()
    ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls="--")


def _r2_title(ax, study, key: str, label: str) -> None:
    r2 = study.table.loc[study.table["setting"] == key, "r2"].mean()
    ax.set_title(f"{label}: mean R² {r2:.3f}")


def plot_static_law(study: StaticLawStudy, path: str | Path | None = None):
    """Per setting: m = 2, observed final validation loss vs p_1 with the fitted curve per group (each seed);
    m >= 3, fitted vs observed with the identity line."""
    pts = study.points
    keys = list(dict.fromkeys(pts["setting"]))
    fig, axes = _panels(len(keys))
    colors = {}
    for ax, key in zip(axes, keys):
        d = pts[pts["setting"] == key]
        label = d["label"].iloc[0]
        groups = list(dict.fromkeys(d["group"]))
        for g in groups:
            colors.setdefault(g, f"C{len(colors) % 10}")
        if len(groups) == 2:
            grid = np.linspace(0.02, 0.98, 97)
            for (seed, g), dd in d.groupby(["seed", "group"], sort=False):
                ax.scatter(dd["p1"], dd["observed"], color=colors[g], s=18, label=g if seed == d["seed"].min() else None)
                fit = study.fits[(key, seed)]
                curve = fit.predict(np.column_stack([grid, 1 - grid]))[:, groups.index(g)]
                ax.plot(grid, curve, color=colors[g], lw=1, alpha=0.8)
            ax.set(xlabel=f"p({groups[0]})", ylabel="final validation loss")
        else:
            for g, dd in d.groupby("group", sort=False):
                ax.scatter(dd["observed"], dd["predicted"], color=colors[g], s=18, label=g)
            _identity_line(ax, d, "observed", "predicted")
            ax.set(xlabel="observed loss", ylabel="fitted log-linear law")
        _r2_title(ax, study, key, label)
        ax.legend(fontsize=8)
    fig.suptitle(f"Static log-linear mixing law ({study.profile} profile)", y=1.02)
    fig.tight_layout()
    return _save(fig, path)


def plot_dynamic_law(study: DynamicLawStudy, path: str | Path | None = None):
    """Per setting: the loss drop L^t - L^{t+h} of each child; m = 2 against p_1 with each parent's fitted line,
    m >= 3 fitted vs observed."""
    pts = study.points.assign(drop=lambda x: x["L_t"] - x["observed"], drop_fit=lambda x: x["L_t"] - x["predicted"])
    keys = list(dict.fromkeys(pts["setting"]))
    fig, axes = _panels(len(keys))
    colors, markers = {}, ["o", "s", "^", "D", "v", "P"]
    for ax, key in zip(axes, keys):
        d = pts[pts["setting"] == key]
        groups = list(dict.fromkeys(d["group"]))
        for g in groups:
            colors.setdefault(g, f"C{len(colors) % 10}")
        parents = list(dict.fromkeys(d["parent"]))
        for (seed, k, g), dd in d.groupby(["seed", "parent", "group"], sort=False):
            mk = markers[parents.index(k) % len(markers)]
            lab = f"{g}, parent {dd['parent_p'].iloc[0]}" if seed == d["seed"].min() else None
            if len(groups) == 2:
                dd = dd.sort_values("p1")
                ax.scatter(dd["p1"], dd["drop"], color=colors[g], marker=mk, s=18, label=lab)
                ax.plot(dd["p1"], dd["drop_fit"], color=colors[g], lw=1, alpha=0.8)
            else:
                ax.scatter(dd["drop"], dd["drop_fit"], color=colors[g], marker=mk, s=18, label=lab)
        if len(groups) == 2:
            ax.set(xlabel=f"child's p({groups[0]})", ylabel="loss drop over the horizon")
        else:
            _identity_line(ax, d, "drop", "drop_fit")
            ax.set(xlabel="observed loss drop", ylabel="fitted linear law")
        _r2_title(ax, study, key, d["label"].iloc[0])
        ax.legend(fontsize=6)
    fig.suptitle(f"Dynamic linear mixing law ({study.profile} profile)", y=1.02)
    fig.tight_layout()
    return _save(fig, path)


def plot_fidelity(study: FidelityStudy, path: str | Path | None = None):
    """sim(Ã^t, A^{t*}) against improvement over stratified, one dot per (method, setting), with the linear fit."""
    summ = study.summary()
    rel = sim_improvement_relation(summ)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    markers = ["o", "s", "^", "D", "v", "P"]
    settings = list(dict.fromkeys(summ["label"]))
    methods = list(dict.fromkeys(summ["method"]))
    for _, r in summ.iterrows():
        ax.scatter(r["sim"], r["improvement"], color=f"C{methods.index(r['method'])}",
                   marker=markers[settings.index(r["label"]) % len(markers)], s=50, edgecolor="k", lw=0.5)
    for i, mth in enumerate(methods):
        ax.scatter([], [], color=f"C{i}", label=mth)
    for i, lab in enumerate(settings):
        ax.scatter([], [], color="white", edgecolor="k", marker=markers[i % len(markers)], label=lab)
    if np.isfinite(rel["r2"]):
        xs = np.linspace(summ["sim"].min(), summ["sim"].max(), 20)
        ax.plot(xs, rel["slope"] * xs + rel["intercept"], color="gray", lw=1, ls="--")
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xlabel="sim(scaled method A, fitted A*)", ylabel="improvement over stratified (perplexity)",
           title=f"Fidelity vs improvement: R² {rel['r2']:.3f} (paper {PAPER['sim_improvement_r2']}); "
                 f"Aioli's sim highest in {rel['aioli_highest_in']}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def plot_colsum_ordering(study: OrderingStudy, path: str | Path | None = None):
    """Per trained group, how much its column sum of A^{t*} stands out (solid; above 0 = favoured by exponentiated
    gradient) and the same for the diagonal alone (dashed), over training; means over seeds."""
    tab = study.table
    keys = list(dict.fromkeys(tab["setting"]))
    fig, axes = _panels(len(keys))
    for ax, key in zip(axes, keys):
        d = tab[tab["setting"] == key].groupby(["group", "break_step"], sort=False)[
            ["colsum_advantage", "diagonal_advantage"]].mean().reset_index()
        for i, (g, dd) in enumerate(d.groupby("group", sort=False)):
            ax.plot(dd["break_step"], dd["colsum_advantage"], marker="o", color=f"C{i}", label=f"{g}: column sum")
            ax.plot(dd["break_step"], dd["diagonal_advantage"], marker="x", ls="--", color=f"C{i}", alpha=0.7,
                    label=f"{g}: diagonal only")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="break step t", ylabel="(value - mean) / mean |value|",
               title=f"{tab.loc[tab['setting'] == key, 'label'].iloc[0]}: which trained group A* favours")
        ax.legend(fontsize=7)
    fig.suptitle(f"Column sums of A^t* along the stratified trajectory ({study.profile} profile)", y=1.02)
    fig.tight_layout()
    return _save(fig, path)



def plot_stratified_curves(curves: pd.DataFrame, profile: str, seed: int, path: str | Path | None = None):
    """Notebook 00: each group's validation loss over training of one stratified run (``report.run_metrics``)."""
    fig, ax = plt.subplots()  # a figure of its own: seaborn would draw on whatever figure is current
    sns.lineplot(curves, x="step", y="val_loss", hue="group", marker="o", ax=ax)
    ax.set(title=f"Stratified mixing of 7 groups ({profile} profile, seed {seed})",
           ylabel="validation loss (nats/token)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_perplexity_differences(diffs: pd.DataFrame, methods, profile: str, path: str | Path | None = None):
    """Notebook 04: each method's test-perplexity difference from stratified, one panel per setting, one dot per seed
    (``tables.differences``)."""
    # seeds side by side (dodge), not jittered: seaborn's jitter draws from numpy's global RNG, so every re-render of
    # the same runs moved the points and rewrote the figure
    g = sns.catplot(diffs.assign(seed=diffs.seed.astype(str)), x="method", y="diff", col="label", kind="strip",
                    col_wrap=3, sharey=False, height=2.8, aspect=1.3,
                    order=[m for m in methods if m != "stratified" and m in set(diffs.method)],  # ran, in order
                    hue="seed", dodge=True, jitter=False)
    for ax in g.axes.flat:
        ax.axhline(0, color="grey", lw=0.8)
        ax.tick_params(axis="x", rotation=45)
    g.set_axis_labels("", "test perplexity - stratified")
    g.figure.suptitle(f"Average test perplexity difference from stratified ({profile} profile; below 0 = better)",
                      y=1.02)
    if path is not None:
        g.figure.savefig(path, dpi=120, bbox_inches="tight")
    return g.figure


def plot_restricted(pairs: pd.DataFrame, profile: str, path: str | Path | None = None):
    """Notebook 05: Aioli started from a method's p_init against that p_init alone, one dot per (method, setting,
    seed); below the diagonal, Aioli improves."""
    fig, ax = plt.subplots()
    sns.scatterplot(pairs, x="method_ppl", y="aioli_ppl", hue="method", style="label", ax=ax)
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
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def plot_control_gains(control: pd.DataFrame, profile: str, path: str | Path | None = None):
    """Notebook 05: what Aioli's adaptation adds in the restricted budget, control - Aioli in test perplexity (the
    control: p_init for S_init steps, then stratified), one dot per (setting, seed) and a bar at each method's mean;
    above 0, Aioli beats the control. The paper's methods (C7) first, then the extension methods (F6)."""
    order = [m for m in (*BASELINES, *EXTENSION_METHODS) if m in set(control.method)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(order) + 2), 3.6))
    # settings side by side (dodge), not jittered: seaborn's jitter draws from numpy's global RNG (see above)
    sns.stripplot(control, x="method", y="gain_vs_control", hue="label", order=order, dodge=True, jitter=False, ax=ax,
                  size=4, alpha=0.8)
    means = control.groupby("method").gain_vs_control.mean().reindex(order)
    ax.scatter(range(len(order)), means, marker="_", s=600, color="black", zorder=3, label="mean")
    ax.axhline(0, color="grey", lw=0.8)
    if set(order) & set(EXTENSION_METHODS) and set(order) & set(BASELINES):
        ax.axvline(len([m for m in order if m in BASELINES]) - 0.5, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="the paper's methods (C7) | extensions (F6)" if set(order) & set(EXTENSION_METHODS) else "",
           ylabel="control - Aioli (test perplexity)",
           title=f"Restricted budget ({profile}): above 0 = Aioli's adaptation helps")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=7)
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def plot_ablations(diffs: pd.DataFrame, profile: str, path: str | Path | None = None):
    """Notebook 06: Aioli and its ablations, difference from stratified per setting, with 95% bootstrap intervals
    over seeds where there are several."""
    # the error bars are bootstrap intervals: a fixed seed keeps a re-render of the same runs byte for byte the same
    fig, ax = plt.subplots()
    sns.barplot(diffs, x="label", y="diff", hue="method", errorbar=("ci", 95) if diffs.seed.nunique() > 1 else None,
                seed=0, ax=ax)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="", ylabel="test perplexity - stratified", title=f"Aioli and its ablations ({profile})")
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def plot_validation_gaps(panels: dict[str, pd.DataFrame], profile: str, setting: str,
                         path: str | Path | None = None):
    """Notebook 08: per panel, a ``by_step`` table of ``diagnostics`` (step -> gap in mean validation loss to the
    matching stratified run, one column per run) as one line per run; above 0 = behind stratified."""
    fig, axes = _panels(len(panels), width=5.6, height=3.8)
    for ax, (title, by_step) in zip(axes, panels.items()):
        for i, col in enumerate(by_step.columns):
            ax.plot(by_step.index, by_step[col], color=f"C{i}", lw=1.2, label=col.split(" (")[0])
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xlabel="step", ylabel="mean val loss - stratified (nats)", title=title)
        ax.legend(fontsize=7)
    fig.suptitle(f"When the difference is paid ({setting}, {profile} profile; mean over seeds)", y=1.02)
    fig.tight_layout()
    return _save(fig, path)


def plot_headroom_screen(summary: pd.DataFrame, profile: str, top: int = 20, path: str | Path | None = None):
    """Notebook 10: the candidates with the largest observed headroom, observed (the best swept mixture) beside the
    static law's (the best mixture anywhere), in % of uniform's average validation perplexity."""
    d = summary.head(top)
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(d) + 1.2))
    y = np.arange(len(d))
    ax.barh(y - 0.2, d.observed_gain_pct, height=0.4, color="C0", label="best swept mixture (observed)")
    ax.barh(y + 0.2, d.law_gain_pct, height=0.4, color="C1", label="best mixture by the static law")
    ax.set_yticks(y, d.candidate)
    ax.invert_yaxis()
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(xlabel="gain over uniform (% of average validation perplexity)",
           title=f"Where mixing matters: headroom screen ({profile}, {int(d.steps.iloc[0])}-step runs)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_headroom_share(share: pd.DataFrame, profile: str, path: str | Path | None = None, span=(-1.0, 2.0)):
    """Notebook 11: per headroom setting, the share of the headroom to p* each method captures, mean(G)/mean(H), with
    Fieller's 95% interval; an interval the data cannot bound (p*'s own gain not significant) is drawn dashed across
    the whole ``span``. Lines at 0 (stratified), 0.5 (the rule's "most") and 1 (as good as p*)."""
    settings = list(dict.fromkeys(share.label))
    fig, axes = _panels(max(1, len(settings)), width=4.6, height=0.35 * share.method.nunique() + 1.6)
    for ax, label in zip(axes, settings):
        d = share[share.label == label].reset_index(drop=True)
        y = np.arange(len(d))
        for i, r in d.iterrows():
            bounded = np.isfinite(r.share_low) and np.isfinite(r.share_high)
            lo, hi = (r.share_low, r.share_high) if bounded else span
            ax.plot([max(lo, span[0]), min(hi, span[1])], [i, i], color="C0", lw=1.5, ls="-" if bounded else "--")
            if np.isfinite(r.share):
                ax.plot(np.clip(r.share, *span), i, "o", color="C0")
        for x, style in ((0, "-"), (0.5, ":"), (1, "--")):
            ax.axvline(x, color="grey", lw=0.8, ls=style)
        ax.set_yticks(y, d.method)
        ax.invert_yaxis()
        h = d.headroom.iloc[0]
        ax.set(xlim=span, xlabel="share of the headroom captured",
               title=f"{label}: headroom {h:.2f} ppl ({d.headroom_pct.iloc[0]:.1f}%)")
    fig.suptitle(f"Where a better mixture exists, does each method find it? ({profile})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_custom_method(table: pd.DataFrame, trajectories: dict[str, list[dict]], groups, profile: str,
                       setting: str, steps: int, path: str | Path | None = None):
    """Notebook 09: a user's own method beside stratified and Aioli. Left, each method's average test perplexity (one
    dot per seed, the bar at the mean over seeds); right, the share of the first group over the run's ``steps``, one
    line per method and seed, from each run's recorded mixtures (``result["policy"]["history"]``: a mixture holds
    until the next record, hence steps). ``table`` has columns method, seed, avg_test_perplexity; ``trajectories``
    maps "method, seed" to that history."""
    fig, (left, right) = _panels(2, width=5.2, height=3.6)
    order = list(dict.fromkeys(table.method))
    means = table.groupby("method", sort=False).avg_test_perplexity.mean().reindex(order)
    left.bar(range(len(order)), means.to_numpy(), color=[f"C{i}" for i in range(len(order))], alpha=0.35)
    for i, method in enumerate(order):
        values = table[table.method == method].avg_test_perplexity.to_numpy()
        left.plot(np.full(len(values), i), values, "o", color=f"C{i}")
    low, high = table.avg_test_perplexity.min(), table.avg_test_perplexity.max()
    pad = max(0.05 * (high - low), 0.01 * high)
    left.set(xticks=range(len(order)), xticklabels=order, ylim=(low - 3 * pad, high + pad),
             ylabel="average test perplexity", title="lower is better")
    shares = [1 / len(groups)]
    for key, history in trajectories.items():
        i = next((k for k, m in enumerate(order) if key.startswith(f"{m}, ")), 0)
        at = [r["step"] for r in history] + [steps]  # the last mixture holds to the end of the run
        share = [r["proportions"][0] for r in history]
        shares += share
        right.step(at, share + share[-1:], where="post", color=f"C{i}", lw=1.2, label=key)
    right.axhline(1 / len(groups), color="grey", lw=0.8, ls=":")
    pad = max(0.02, 0.1 * (max(shares) - min(shares)))
    right.set(xlabel="step", ylabel=f"share of {groups[0]}", ylim=(max(0, min(shares) - pad), min(1, max(shares) + pad)),
              title="the mixture over training")
    right.legend(fontsize=7)
    fig.suptitle(f"Your method beside stratified and Aioli ({setting}, {profile} profile)", y=1.02)
    fig.tight_layout()
    return _save(fig, path)


def plot_signal_study(table: pd.DataFrame, profile: str, alpha: float = 0.05, path: str | Path | None = None):
    """Notebook 12: does Aioli's estimate carry signal, and at what price? One panel per setting, one point per
    variant: the mean cosine between seeds of the later rounds' directions colsum(Ā^t) - mean (``across_seeds_cos``)
    against the variant's compute relative to stratified's (``aioli_signal.training_compute``: training plus
    LearnParams' evaluations, deterministic, unlike wall time). A filled marker: agreement above 0 at p < ``alpha``
    after Holm's adjustment over the panel's variants (``aioli_signal.signal_seen``); the legend gives each variant's
    unadjusted p-value (a legend, not labels at the points: variants often share a point, m = 2 allowing few cosines)."""
    labels = list(dict.fromkeys(table.label))
    fig, axes = _panels(len(labels), width=4.6, height=3.8)
    for ax, label in zip(axes, labels):
        d = table[table.label == label]
        seen = signal_seen(d, alpha)
        for i, (k, r) in enumerate(d.iterrows()):
            significant = bool(seen[k])
            p = "p n/a" if not np.isfinite(r.across_seeds_p) else f"p={r.across_seeds_p:.2g}"
            ax.plot(r.compute_vs_stratified, r.across_seeds_cos, "o", color=f"C{i}", ms=7,
                    markerfacecolor=f"C{i}" if significant else "white", label=f"{r.variant} ({p})")
        ax.legend(fontsize=6, loc="lower right")
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(1, color="grey", lw=0.5, ls=":")
        ax.set(xlabel="compute (FLOPs) / stratified's", ylabel="later rounds: cosine across seeds",
               title=f"{label} ({int(d.steps.iloc[0])}-step runs)", ylim=(-1.05, 1.05))
    fig.suptitle(f"Aioli's signal against its price ({profile}; filled: agreement > 0 at Holm-adjusted "
                 f"p < {alpha:g})", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_scale(headrooms: pd.DataFrame, gaps: pd.DataFrame, profile: str, path: str | Path | None = None):
    """Notebook 13: against the model's parameters (log x), left the headroom of the best static mixture over
    uniform (% of average test perplexity; observed solid, static law dashed; mean over sweep seeds), right each
    Aioli form's paired difference to stratified (% of stratified's; below 0 = Aioli better) with its 95%
    t-interval where there are two seeds or more (the cumulative form drawn 4% to the right). One colour per
    setting; runs trained on a GPU (bf16, their own run ids) are their own lines, dotted and labelled "GPU"."""
    fig, (left, right) = _panels(2, width=4.8, height=3.8)
    labels = list(dict.fromkeys(list(headrooms.get("label", [])) + list(gaps.get("label", []))))
    colour = {label: f"C{i}" for i, label in enumerate(labels)}

    def on(device):  # a device's legend tag and line style
        return ("", "-") if device == "cpu" else (f", {device.replace('cuda', 'GPU')}", ":")

    if len(headrooms):
        mean = headrooms.groupby(["label", "device", "parameters"], sort=False)[
            ["observed_gain_pct", "law_gain_pct"]].mean()
        for (label, device), g in mean.groupby(level=[0, 1], sort=False):
            x, (tag, ls) = g.index.get_level_values("parameters"), on(device)
            left.plot(x, g.observed_gain_pct, "o" + ls, color=colour[label], label=f"{label}{tag}, observed")
            left.plot(x, g.law_gain_pct, "s" + ("--" if ls == "-" else ls), color=colour[label], mfc="white",
                      label=f"{label}{tag}, static law")
    left.axhline(0, color="grey", lw=0.8)
    left.set(xscale="log", xlabel="parameters", ylabel="best static mixture vs uniform (%)",
             title="headroom (test perplexity)")
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=7)
    marker = {"aioli": "o", "aioli_cumulative": "D"}
    if len(gaps):
        for (label, form, device), g in gaps.groupby(["label", "form", "device"], sort=False):
            g, (tag, ls) = g.sort_values("parameters"), on(device)
            err = np.vstack([g.mean_pct - g.ci_low_pct, g.ci_high_pct - g.mean_pct])
            nudge = 1.0 if form == "aioli" else 1.04  # side by side on the log axis, not on top of each other
            right.errorbar(g.parameters * nudge, g.mean_pct, yerr=np.nan_to_num(err), fmt=marker.get(form, "o") + ls,
                           color=colour[label], capsize=3, mfc="white" if form != "aioli" else colour[label],
                           label=f"{label}{tag}, {form.replace('_', ' ')}")
    right.axhline(0, color="grey", lw=0.8)
    right.set(xscale="log", xlabel="parameters", ylabel="Aioli − stratified (% of stratified)",
              title="Aioli's gap to stratified (95% CI)")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=7)
    fig.suptitle(f"Scale ({profile})", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_regmix_transfer(df: pd.DataFrame, profile: str, path: str | Path | None = None):
    """Notebook 04: does RegMix's choice beat uniform where it was made, and where it is used? One row of dots per
    (setting, seed) at y, the final runs' mean validation loss, RegMix's minus stratified's. x: the proxy recipe's,
    chosen mixture minus uniform, at a fresh seed (filled dot) and at the fit's own seed (hollow dot, joined to it).
    Below 0 on an axis = the choice helps at that scale; a hollow dot left of its filled one is a gain that was the
    fit's seed's luck; filled dots in the upper-left quadrant (helps the proxies, hurts the final runs) are a transfer
    gap. ``df``: ``regmix_transfer.transfer_study``'s rows."""
    fig, (ax,) = _panels(1, width=5.8, height=4.4)
    groups = list(df.groupby("label", sort=False))
    for i, (label, g) in enumerate(groups):  # filled dots first: the fresh seed is the measurement
        ax.plot(g.proxy_loss_diff, g.final_loss_diff, "o", color=f"C{i}", label=label)
    for i, (_, g) in enumerate(groups):
        ax.plot(g.proxy_loss_diff_fit_seed, g.final_loss_diff, "o", mfc="none", color=f"C{i}")
        for _, r in g.iterrows():
            ax.plot([r.proxy_loss_diff_fit_seed, r.proxy_loss_diff], [r.final_loss_diff] * 2, color=f"C{i}", lw=0.6,
                    alpha=0.5)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(xlabel="proxies: chosen - uniform (mean val loss; filled: fresh seed, hollow: the fit's)",
           ylabel="final runs: RegMix - stratified (mean val loss)",
           title=f"RegMix's choice at the proxies' and the final scale ({profile})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the dots fill every corner
    return _save(fig, path)
