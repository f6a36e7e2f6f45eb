"""ODM's overhead: wall time per training step of an ODM run against a stratified run of the same recipe.

ODM recomputes its mixture after every step from the step's own training losses (no extra forward pass, no
evaluation), so its cost is a little Python per step: the reward update, the new mixture, and a new one-step segment.
This script measures it two ways and writes ``results/bench/odm_overhead.json``:

* end to end: runs of each method, interleaved (stratified, ODM, stratified, ...) so that the machine's load drifts
  over both alike, without periodic evaluations; the ratios of the fastest and of the median wall seconds per step
  (on a shared machine the spread between repeats is far larger than ODM's cost: the fastest repeat is the least
  disturbed one);
* inside the loop: the seconds the ODM runs spent in the policy's per-step calls (``observe_batch`` and
  ``next_segment``, timed in place), as a share of the same runs' training wall time. These calls are all that an ODM
  step does beyond a stratified step (the batch, the forward and backward passes and the optimizer step are the same
  work), so this share is the overhead, measured without the noise of comparing two runs.

Usage: PYTHONPATH=. python scripts/odm_overhead.py [--repeats 5] [--recipes tiny smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("AIOLI_RESULT_CACHE", "off")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from aioli_repro import hparams  # noqa: E402
from aioli_repro.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from aioli_repro.policies import make_policy  # noqa: E402
from aioli_repro.policies.odm import ODMPolicy  # noqa: E402
from aioli_repro.profiles import profile_config  # noqa: E402
from aioli_repro.sampler import Batch  # noqa: E402
from aioli_repro.train import train  # noqa: E402


def recipe(name: str, method: str, steps: int) -> RunConfig:
    mc = hparams.odm_config(2, steps) if method == "odm" else None
    if name == "tiny":  # the tests' recipe (tests/conftest.py): the tiny model on the committed tiny corpus
        assets = ROOT / "tests" / "assets"
        return RunConfig(DataConfig(groups=("code", "licenses"), corpus=str(assets / "tiny_corpus"),
                                    tokenizer=str(assets / "tiny_tokenizer"), context_length=32, val_fraction=0.2,
                                    test_fraction=0.2),
                         ModelConfig("tiny"), TrainConfig(steps=steps, batch_size=8, micro_batch_size=8, warmup_steps=3,
                                                          eval_every=0, checkpoint_every=0, eval_sequences=4,
                                                          test_max_sequences=8, lr=3e-3),
                         method=method, method_config=mc or {}, name=f"overhead-{method}")
    groups = hparams.SETTINGS["arxiv_stackexchange"].groups
    return profile_config(name, groups, method, 0, mc, name=f"overhead-{method}", steps=steps, eval_every=0,
                          checkpoint_every=0)


IN_POLICY = [0.0]
"""Seconds spent in ODM's per-step calls since the last reset (the timed wrappers below add to it)."""


def _timed(fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            IN_POLICY[0] += time.perf_counter() - t0
    return wrapper


ODMPolicy.observe_batch = _timed(ODMPolicy.observe_batch)
ODMPolicy.next_segment = _timed(ODMPolicy.next_segment)


def per_step(cfg: RunConfig) -> tuple[float, float]:
    """Wall seconds per step of a fresh run of ``cfg``, and the share of its wall time spent in ODM's calls."""
    IN_POLICY[0] = 0.0
    with tempfile.TemporaryDirectory() as d:
        res = train(cfg, runs_dir=d, progress=False)
    return res["wall_time_s"] / res["steps"], IN_POLICY[0] / res["wall_time_s"]


def policy_seconds_per_step(steps: int, m: int = 2, batch: int = 8, reps: int = 2000) -> float:
    """observe_batch + next_segment, the work ODM adds to each step, timed on a fixed batch."""
    policy = make_policy("odm", hparams.odm_config(m, steps), [f"g{i}" for i in range(m)], steps, 0)
    rng = np.random.default_rng(0)
    b = Batch(torch.zeros(batch, 2, dtype=torch.long), torch.as_tensor(rng.integers(m, size=batch)))
    losses = torch.as_tensor(rng.uniform(3, 5, batch), dtype=torch.float32)
    t0 = time.perf_counter()
    for i in range(reps):
        policy.observe_batch(i % (steps - 1), b, losses)
        policy.next_segment(i % (steps - 1))
    return (time.perf_counter() - t0) / reps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--recipes", nargs="*", default=["tiny", "smoke"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "odm_overhead.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in args.recipes:
        times, shares = {"stratified": [], "odm": []}, []
        per_step(recipe(name, "stratified", 20))  # warm the data cache and the allocator
        for _ in range(args.repeats):
            for method in ("stratified", "odm"):
                seconds, share = per_step(recipe(name, method, args.steps))
                times[method].append(seconds)
                if method == "odm":
                    shares.append(share)
        strat, odm = statistics.median(times["stratified"]), statistics.median(times["odm"])
        fastest = min(times["odm"]) / min(times["stratified"])
        policy = policy_seconds_per_step(args.steps)
        rows.append({"recipe": name, "steps": args.steps, "repeats": args.repeats,
                     "stratified_s_per_step": strat, "odm_s_per_step": odm, "ratio_of_medians": odm / strat,
                     "ratio_of_fastest": fastest, "in_loop_policy_share": statistics.median(shares),
                     "policy_s_per_step_isolated": policy,
                     "all_stratified": times["stratified"], "all_odm": times["odm"], "all_shares": shares})
        print(f"{name}: stratified {strat * 1e3:.2f} ms/step, ODM {odm * 1e3:.2f} ms/step (medians; ratio "
              f"{odm / strat:.3f}, of the fastest repeats {fastest:.3f}); inside the loop ODM's calls take "
              f"{100 * statistics.median(shares):.2f}% of its wall time ({policy * 1e6:.0f} us/step in isolation)")
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "threads": 1, "note": "2-core CPU shared with other training; "
           "runs interleaved, medians", "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
