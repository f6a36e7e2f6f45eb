"""Train (or re-read from the run cache) a subset of Table 2: some methods, settings and seeds of a profile.

A sitting of the long ``full`` profile can spend its time where it matters most (e.g. stratified and Aioli on the
2- and 3-group settings, all seeds) before notebook 04 renders the table from the cache:

    python scripts/run_table2_subset.py --profile full --methods stratified aioli \\
        --settings arxiv_stackexchange github_c4 book_stackexchange arxiv_book_stackexchange --jobs 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from aioli_repro import tables
    from aioli_repro.profiles import get_profile, profile_settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="full")
    ap.add_argument("--methods", nargs="+", default=None, help="default: every method of Table 2")
    ap.add_argument("--settings", nargs="+", default=None, help="default: the profile's settings")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the profile's seeds")
    ap.add_argument("--jobs", type=int, default=None, help="default: the profile's")
    args = ap.parse_args(argv)
    df = tables.run_grid(tables.table2_methods(args.methods), args.settings or profile_settings(args.profile),
                         args.profile, args.seeds, jobs=args.jobs or get_profile(args.profile).jobs)
    print(df[["label", "method", "seed", "avg_test_perplexity"]].to_string(index=False))
    return 0


if __name__ == "__main__":  # worker processes are spawned: they re-import this file
    raise SystemExit(main())
