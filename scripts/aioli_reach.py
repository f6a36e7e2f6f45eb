#!/usr/bin/env python
"""How far Aioli moved its mixture in a profile's finished runs, and whether the direction it moved in was signal.

Reach: the released configs take p = softmax(η · colsum(E)) from a uniform base, where E is an EMA of normalised Ā^t
(unit total), so every proportion stays in [1, e^η] / (e^η + m - 1) (``policies.aioli.eg_band``). Per setting:
that band, the spread of colsum(Ā^t) per round and the proportions actually reached (``reach_summary``).

Signal: exponentiated gradient follows d_t = colsum(Ā^t) - mean, one direction per LearnParams round. Per setting:
how well runs of different seeds agree on d_t at the same round, how well one run's consecutive rounds agree, and
the first round apart (``estimate_agreement``); cosines near 0 with large p-values mean noise.

Reads the finished Aioli runs (nothing trains):

    python scripts/aioli_reach.py --profile full   # -> results/full/aioli_reach.csv, results/full/aioli_signal.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="full")
    ap.add_argument("--out", default=None, help="folder for the CSVs (default: results/PROFILE)")
    args = ap.parse_args(argv)

    import pandas as pd

    from aioli_repro import hparams
    from aioli_repro.methods import finished_finals
    from aioli_repro.policies.aioli import estimate_agreement, reach_summary
    from aioli_repro.profiles import profile_settings

    reach, signal = [], []
    for key in profile_settings(args.profile):
        results = finished_finals("aioli", key, args.profile)
        if results:
            head = {"setting": key, "label": hparams.get_setting(key).label}
            reach.append({**head, **reach_summary(results)})
            signal.append({**head, **estimate_agreement(results)})
    if not reach:
        raise SystemExit(f"no finished Aioli run under the {args.profile} profile")
    out = Path(args.out) if args.out else REPO / "results" / args.profile
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("aioli_reach", reach), ("aioli_signal", signal)):
        df = pd.DataFrame(rows)
        df.round(4).to_csv(out / f"{name}.csv", index=False)
        print(f"{name}.csv\n{df.round(3).to_string(index=False)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
