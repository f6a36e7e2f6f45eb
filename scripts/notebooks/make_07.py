import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nbtools import write_notebook  # noqa: E402

write_notebook("notebooks/07_claims.ipynb", [
("md", """
# 07 · The paper's claims at our scale

Reads the tables notebooks 01-06 wrote for this profile and the benchmark results, and writes
`results/<profile>/claims.md`: each claim, the paper's figure, ours, and a verdict justified by the confidence
intervals (reproduced / not reproduced / inconclusive / not tested). The rules behind each verdict are in
`aioli_repro/claims.py`.
"""),
("params", """
profile = "quick"
jobs = 1
cached_only = False  # this notebook never trains: it reads the other notebooks' tables
"""),
("code", """
from IPython.display import Markdown

from aioli_repro.claims import build_claims, claims_markdown
from aioli_repro.report import results_dir

claims = build_claims(profile)
text = claims_markdown(claims, profile)
(results_dir(profile) / "claims.md").write_text(text)
Markdown(text)
"""),
])
