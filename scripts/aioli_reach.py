#!/usr/bin/env python
"""How far Aioli moved its mixture in a profile's finished runs, against how far the released form lets it move.

The released configs take p = softmax(η · colsum(E)) from a uniform base, where E is an EMA of normalised Ā^t (unit
total), so every proportion stays in [1, e^η] / (e^η + m - 1) (``policies.aioli.eg_band``). This script reads the
finished Aioli runs of each setting (nothing trains) and writes, per setting, that band, the spread of colsum(Ā^t)
per round and the proportions actually reached:

    python scripts/aioli_reach.py --profile full      # -> results/full/aioli_reach.csv
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
    ap.add_argument("--out", default=None, help="folder for the CSV (default: results/PROFILE)")
    args = ap.parse_args(argv)

    import pandas as pd

    from aioli_repro import hparams
    from aioli_repro.methods import finished_finals
    from aioli_repro.policies.aioli import reach_summary
    from aioli_repro.profiles import profile_settings

    rows = []
    for key in profile_settings(args.profile):
        results = finished_finals("aioli", key, args.profile)
        if results:
            rows.append({"setting": key, "label": hparams.get_setting(key).label, **reach_summary(results)})
    if not rows:
        raise SystemExit(f"no finished Aioli run under the {args.profile} profile")
    df = pd.DataFrame(rows)
    out = Path(args.out) if args.out else REPO / "results" / args.profile
    out.mkdir(parents=True, exist_ok=True)
    df.round(4).to_csv(out / "aioli_reach.csv", index=False)
    print(df.round(4).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
