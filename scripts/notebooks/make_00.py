import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nbtools import write_notebook  # noqa: E402

write_notebook("notebooks/00_data_and_baseline.ipynb", [
("md", """
# 00 · The embedded corpus and a stratified baseline

Seven real data groups ship with the repository as offline analogues of SlimPajama's seven (see `data/corpus/README.md`).
This notebook lists them with their token counts under the embedded 4k BPE, then trains one stratified run
(p = uniform) on all seven under the chosen profile and shows each group's validation loss over training.
"""),
("params", """
profile = "quick"   # smoke | quick | full | paper (see aioli_repro/profiles.py)
jobs = 1            # parallel training runs (unused here: one run)
seed = 0
"""),
("code", """
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from aioli_repro.corpus import FolderCorpus
from aioli_repro.profiles import get_profile, profile_config
from aioli_repro.report import corpus_table, figures_dir, results_dir, run_metrics
from aioli_repro.train import load_data, train

RESULTS, FIGURES = results_dir(profile), figures_dir(profile)
groups = FolderCorpus().groups
print(get_profile(profile).description)
"""),
("md", "## The seven groups"),
("code", """
cfg = profile_config(profile, groups, "stratified", seed=seed, name="stratified-all7")
data = load_data(cfg, verbose=False)
table = corpus_table(data.store)
table.to_csv(RESULTS / "00_corpus.csv", index=False)
table
"""),
("md", "## Stratified training on all seven groups"),
("code", """
result = train(cfg, progress=False, data=data)
ppl = pd.DataFrame({"group": list(result["test_perplexity"]),
                    "test_loss": list(result["test_loss"].values()),
                    "test_perplexity": list(result["test_perplexity"].values())})
ppl.to_csv(RESULTS / "00_stratified_all7.csv", index=False)
print(f"average test perplexity (mean over groups of exp(group loss)): {result['avg_test_perplexity']:.2f}; "
      f"{result['steps']} steps, seed {seed}, {result['train_tokens_per_s']:.0f} tokens/s, "
      f"peak RSS {result['peak_rss_mb']:.0f} MB")
ppl
"""),
("code", """
curves = run_metrics(result)
ax = sns.lineplot(curves, x="step", y="val_loss", hue="group", marker="o")
ax.set(title=f"Stratified mixing of 7 groups ({profile} profile, seed {seed})", ylabel="validation loss (nats/token)")
plt.tight_layout()
plt.savefig(FIGURES / "00_stratified_curves.png", dpi=120)
plt.show()
"""),
])
