#!/usr/bin/env python
"""Is Aioli's online estimate of where to move the mixture signal or noise? Reads a profile's finished runs.

Exponentiated gradient follows d_t = colsum(Ā^t) - mean, one direction per LearnParams round. This script reads the
finished Aioli runs of each setting (nothing trains) and writes, per setting (``policies.aioli.estimate_agreement``):
how well runs of different seeds agree on d_t at the same round, how well one run's consecutive rounds agree, and
the first round apart. Cosines near 0 with large p-values mean the estimate is dominated by noise at this scale:

    python scripts/aioli_signal.py --profile full      # -> results/full/aioli_signal.csv
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
    ap.add_argument("--method", default="aioli", help="an Aioli variant of the tables (aioli, aioli_static, ...)")
    ap.add_argument("--out", default=None, help="folder for the CSV (default: results/PROFILE)")
    args = ap.parse_args(argv)

    import pandas as pd

    from aioli_repro import hparams
    from aioli_repro.methods import finished_finals
    from aioli_repro.policies.aioli import estimate_agreement
    from aioli_repro.profiles import profile_settings

    rows = []
    for key in profile_settings(args.profile):
        results = finished_finals(args.method, key, args.profile)
        if results:
            rows.append({"setting": key, "label": hparams.get_setting(key).label, "method": args.method,
                         **estimate_agreement(results)})
    if not rows:
        raise SystemExit(f"no finished {args.method} run under the {args.profile} profile")
    df = pd.DataFrame(rows)
    out = Path(args.out) if args.out else REPO / "results" / args.profile
    out.mkdir(parents=True, exist_ok=True)
    name = "aioli_signal.csv" if args.method == "aioli" else f"aioli_signal_{args.method}.csv"
    df.round(4).to_csv(out / name, index=False)
    print(df.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
