#!/usr/bin/env python
"""Hand mutations of the formulas behind the tables and verdicts: each must make its guarding tests fail.

Every mutation is applied to a copy of the repository (never to this working tree, where a study may be training),
the named tests run against the copy, and the table says which mutations were caught. A mutation that survives
means a formula can be wrong with the suite green.

    python scripts/mutation_check.py            # all (about 10 minutes on 2 cores)
    python scripts/mutation_check.py -k doge    # the mutations whose name contains "doge"
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
P, S, L, C = "aioli_repro/policies", "aioli_repro/stats.py", "aioli_repro/laws.py", "aioli_repro/claims.py"
POL, RULES, STATS = "tests/test_policies.py", "tests/test_claim_rules.py", "tests/test_stats.py"

# (name, file, original text, mutated text, tests that must catch it)
MUTATIONS = [
    ("aioli EMA ignores rounds after the first", f"{P}/aioli.py",
     "(1 - c.ema) * A_bar + c.ema * self.ema_matrix", "self.ema_matrix", POL),
    ("aioli EMA weights swapped", f"{P}/aioli.py",
     "(1 - c.ema) * A_bar + c.ema * self.ema_matrix", "c.ema * A_bar + (1 - c.ema) * self.ema_matrix", POL),
    ("aioli cumulative form restarts from the base", f"{P}/aioli.py",
     "self.p = eg_update(self.p, A_bar, c.eta)", "self.p = eg_update(self.base, A_bar, c.eta)", POL),
    ("LearnParams solves with the nominal mixtures", f"{P}/aioli.py",
     "A = solve_interaction_matrix(beta, P_round, c.diagonal)",
     "A = solve_interaction_matrix(beta, self.P, c.diagonal)", POL),
    ("LearnParams solve transposed", f"{P}/aioli.py",
     "return np.linalg.solve(P, beta.T).T", "return np.linalg.solve(P.T, beta.T).T", POL),
    ("normalisation without the shift", f"{P}/aioli.py",
     "shifted = A - min(A.min(), 0.0)", "shifted = np.abs(A)", POL),
    ("balanced slots back to lowest index", "aioli_repro/sampler.py",
     "key=lambda j: (-owed[j], j)", "key=lambda j: j", "tests/test_sampler.py tests/test_run_ids.py"),
    ("slot rule left out of the run id", f"{P}/aioli.py",
     'values["lp_slots"] = rule', "pass", "tests/test_run_ids.py"),
    ("loop reports counts without resetting them", "aioli_repro/train.py",
     "seg_counts[:] = 0", "pass", "tests/test_train.py -k policy_segments"),
    ("old checkpoints resume without their interval counts", f"{P}/aioli.py",
     "self.C[j] += largest_remainder_counts(self.P[j], self.ctx.batch_size) * self.config.lp_steps", "pass",
     "tests/test_policies.py -k before_counts"),
    ("DoGE multiplies by mu", f"{P}/doge.py", "log_w = log_w + scores / mu", "log_w = log_w + scores * mu", POL),
    ("DoGE divides by the max norm", f"{P}/doge.py", "scale = norms.mean() + 1e-6", "scale = norms.max() + 1e-6",
     POL),
    ("DoGE without the upper clip", f"{P}/doge.py", "np.clip(scores, 0.0, 5.0 * lr)", "np.clip(scores, 0.0, None)",
     POL),
    ("DoReMi drops mu", f"{P}/doremi.py", "log_w = log_w + mu * excess", "log_w = log_w + excess", POL),
    ("Skill-it weights use the graph transposed", f"{P}/skillit.py",
     "softmax(eta * np.asarray(graph) @ np.asarray(loss_sum))",
     "softmax(eta * np.asarray(graph).T @ np.asarray(loss_sum))", POL),
    ("Skill-it graph not relative", f"{P}/skillit.py", "return (start - end) / start", "return start - end", POL),
    ("static-law leave-one-out leaks the held-out mixture", L,
     "ck, bk, Ak = _fit_static_params(P[keep], L[keep], n_starts, seed, huber_delta)",
     "ck, bk, Ak = _fit_static_params(P, L, n_starts, seed, huber_delta)", "tests/test_laws.py"),
    ("dynamic-law leave-one-out leaks the held-out child", L,
     "Ak = _fit_dynamic_A(P[keep], delta[keep])", "Ak = _fit_dynamic_A(P, delta)", "tests/test_laws.py"),
    ("DML optimum leaves the data's support", L, "    if in_convex_hull(p, V):\n        return p",
     "    if True:\n        return p", "tests/test_laws.py"),
    ("paired CI divides by n", S, "d.std(ddof=1) / np.sqrt(d.size)", "d.std(ddof=1) / d.size", STATS),
    ("detectable difference by the normal approximation", S,
     "return detectable_effect(sd_diff / np.sqrt(n), n - 1, alpha, power)",
     "return (1.959964 + 0.841621) * sd_diff / np.sqrt(n)", STATS),
    ("detectable difference without the power term", S,
     "return detectable_effect(sd_diff / np.sqrt(n), n - 1, alpha, power)",
     "return float(stats.t.ppf(1 - alpha / 2, n - 1) * sd_diff / np.sqrt(n))", STATS),
    ("detectable difference over n, not sqrt(n)", S,
     "return detectable_effect(sd_diff / np.sqrt(n), n - 1, alpha, power)",
     "return detectable_effect(sd_diff / n, n - 1, alpha, power)", STATS),
    ("Holm without monotonicity", S, "running = max(running, min(1.0, (k - rank) * p[i]))",
     "running = min(1.0, (k - rank) * p[i])", STATS),
    ("Holm becomes Bonferroni", S, "min(1.0, (k - rank) * p[i])", "min(1.0, k * p[i])", STATS),
    ("stratified CI with n - 1 degrees of freedom", S, "df = float(k.sum() ** 2 / (k**2 / (n - 1)).sum())",
     "df = float(n.sum() - 1)", STATS),
    ("sign test one-sided", S, "stats.binomtest(pos, v.size, 0.5).pvalue",
     "stats.binomtest(pos, v.size, 0.5, alternative='greater').pvalue", STATS),
    ("C1 per-setting tests without Holm", C, "r.p_holm < ALPHA", "r.p < ALPHA", RULES),
    ("C1 cannot-decide branch removed", C, "elif room < mdd:", "elif False:", RULES),
    ("C2 back to counts by the mean", C, "elif not missing and not open_:", "elif not missing:", RULES),
    ("C4 reliability ignored", C, 'if rel_sim["reliability"] < RELIABILITY_FLOOR:', "if False:", RULES),
    ("C7 without the interval", C, 'elif pooled["low"] > 0 and p_sign < ALPHA and pos > n / 2:',
     'elif pooled["mean"] > 0:', RULES),
    ("C8 keeps gains Aioli does not have", C, 'elif not against["aioli"]["high"] < 0:', "elif False:", RULES),
    ("C3 drops the held-out bar", C, "ok = st.r2 >= 0.94 and st.loo_r2 >= 0.5", "ok = st.r2 >= 0.94", RULES),
]


def copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith("results/run_cache/") or f.startswith("notebooks/executed/"):
            continue  # large and not read by these tests (the run-id test samples the cache: copied below)
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, target)
    shutil.copytree(REPO / "results" / "run_cache", dest / "results" / "run_cache")


def run_tests(root: Path, tests: str) -> bool:
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-m", "", "-p", "no:cacheprovider", *tests.split()]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True).returncode == 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="only mutations whose name contains this")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.k in m[0]]
    with tempfile.TemporaryDirectory(prefix="aioli-mutants-") as tmp:
        root = Path(tmp)
        copy_repo(root)
        probe = subprocess.run([sys.executable, "-c", "import aioli_repro; print(aioli_repro.__file__)"],
                               cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(root)):
            raise SystemExit(f"the copy's package is not the one imported ({probe.stdout.strip()}); aborting")
        suites = sorted({t for m in chosen for t in m[4].split()})
        if not run_tests(root, " ".join(suites)):
            raise SystemExit("the unmutated tests fail: fix them first")
        survived = 0
        print(f"{'mutation':<55} {'caught':<7} {'s':>5}  tests")
        for name, path, old, new, tests in chosen:
            src = (root / path).read_text()
            if src.count(old) != 1:
                raise SystemExit(f"{name}: {old!r} occurs {src.count(old)} times in {path}; update the mutation")
            (root / path).write_text(src.replace(old, new))
            t0 = time.perf_counter()
            caught = not run_tests(root, tests)
            (root / path).write_text(src)
            survived += not caught
            print(f"{name:<55} {'yes' if caught else 'NO':<7} {time.perf_counter() - t0:5.0f}  {tests}", flush=True)
    print(f"{len(chosen) - survived} of {len(chosen)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
