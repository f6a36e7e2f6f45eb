import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nbtools import write_notebook  # noqa: E402

write_notebook("notebooks/07_claims.ipynb", [
("md", """
# 07 · The paper's claims at our scale

Reads the tables notebooks 01-06 wrote for this profile and the benchmark results, and writes
`results/<profile>/claims.md`: first whether each setting can show Aioli beating stratified at all (notebook 04's
decidability table), then each claim, the paper's figure, ours, and a verdict from a stated rule (reproduced / not
reproduced / inconclusive / cannot decide / not tested), and each rule with what it prints for a method identical
to the baseline. The rules are in `aioli_repro/claims.py`.
"""),
("params", """
profile = "quick"
jobs = 1
cached_only = False  # this notebook never trains: it reads the other notebooks' tables
"""),
("code", """
from IPython.display import Markdown

from aioli_repro.claims import build_claims, claims_markdown, read_decidability
from aioli_repro.report import results_dir

claims = build_claims(profile)
text = claims_markdown(claims, profile, read_decidability(profile))
(results_dir(profile) / "claims.md").write_text(text)
Markdown(text)
"""),
])
