"""The GPU training path on CPU: torch.compile in the loop (eager backend: Inductor takes ~40 s to compile on 2
cores), the run id of the new option, and scripts/gpu_check.py end to end with the tiny preset."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from aioli_repro.config import run_id
from aioli_repro.errors import ConfigError
from aioli_repro.train import train

from .conftest import TINY_CORPUS, TINY_TOKENIZER, load_script

REPO = TINY_CORPUS.parents[2]


def test_compiled_training_gives_the_eager_result_and_its_own_run_id(tiny_cfg, runs_dir, monkeypatch):
    monkeypatch.setenv("AIOLI_COMPILE_BACKEND", "eager")  # the same graph capture, no code generation
    eager = train(tiny_cfg(steps=10, eval_every=5, checkpoint_every=5), runs_dir=runs_dir, progress=False)
    compiled_cfg = tiny_cfg(steps=10, eval_every=5, checkpoint_every=5, compile=True)

    class Stop(Exception):
        pass

    def stop_at_7(step):
        if step == 7:
            raise Stop

    with pytest.raises(Stop):  # interrupted after the checkpoint of step 5 (written from the plain module)
        train(compiled_cfg, runs_dir=runs_dir, progress=False, on_step=stop_at_7)
    compiled = train(compiled_cfg, runs_dir=runs_dir, progress=False)  # resumes into the compiled model
    assert compiled["run_id"] != eager["run_id"] and compiled["config"]["train"]["compile"] is True
    for split in ("val_loss", "test_loss"):
        for g, v in eager[split].items():
            assert compiled[split][g] == pytest.approx(v, rel=1e-5)


def test_compile_is_off_by_default_and_leaves_existing_run_ids_unchanged(tiny_cfg):
    cfg = tiny_cfg()
    assert cfg.train.compile is False
    # Ids of runs cached before these options existed: pinned literally in tests/test_run_ids.py (whose configs
    # leave both at their defaults) and re-hashed from committed cache entries there. Turning one on is a new run.
    assert run_id(cfg, {"x": 1}) != run_id(tiny_cfg(compile=True), {"x": 1}) != run_id(tiny_cfg(fused_loss=True),
                                                                                        {"x": 1})
    cfg.train.compile = "yes"
    with pytest.raises(ConfigError, match="train.compile must be true or false"):
        cfg.validate()


def test_the_paper_profile_compiles_on_cuda():
    from aioli_repro.profiles import get_profile

    t = get_profile("paper").train
    assert t.device == "cuda" and t.compile is True and get_profile("full").train.compile is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_with_pinned_batches_and_compile(tiny_cfg, runs_dir):
    res = train(tiny_cfg(steps=6, device="cuda", compile=True), runs_dir=runs_dir, progress=False)
    assert res["device"] == "cuda" and math.isfinite(res["avg_test_perplexity"])


def _gpu_check_module():
    return load_script("gpu_check")


def test_the_full_profile_estimate_agrees_with_the_cpu_cost_count():
    """At the 2-core VM's measured rate (two runs at once, 6.7k tokens/s each) the token count gives back the
    34-hour estimate of docs/profiles_and_cost.md within the evaluation time it leaves out; at the H200's measured
    16-run rate, minutes."""
    mod = _gpu_check_module()
    cpu_hours = mod.full_profile_minutes(mod.CPU_REFERENCE["tokens_per_s"]) / 60
    assert 0.85 * mod.CPU_REFERENCE["full_profile_hours"] < cpu_hours < mod.CPU_REFERENCE["full_profile_hours"]
    assert mod.full_profile_minutes(664_655) == pytest.approx(38.5, abs=0.1)


def test_datasheet_peaks_match_device_names():
    peak = _gpu_check_module().table_peak
    assert peak("NVIDIA H100 80GB HBM3") == 989.4 and peak("NVIDIA H100 PCIe") == 756.0
    assert peak("NVIDIA H200") == 989.4 and peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak("NVIDIA L4") == 121.0 and peak("NVIDIA L40S") == 362.1 and peak("NVIDIA A10") == 125.0
    assert peak("NVIDIA GeForce RTX 4090") == 165.2 and peak("Some Future GPU") is None


def test_gpu_check_script_runs_every_phase_on_cpu_with_the_tiny_preset(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), str(out), "--device", "cpu", "--preset", "tiny",
         "--compile-backend", "eager", "--corpus", str(TINY_CORPUS), "--tokenizer", str(TINY_TOKENIZER),
         "--groups", "code,licenses", "--share-jobs", "1"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["errors"] == {} and set(report["phases"]) == {"env", "peak", "throughput", "smoke", "share"}
    rows = report["phases"]["throughput"]
    assert [r["compiled"] for r in rows] == [False, True]
    for r in rows:
        assert r["tokens_per_s"] > 0 and 0 < r["mfu_vs_measured_peak"] < 1.5 and math.isfinite(r["loss_last"])
    smoke = report["phases"]["smoke"]
    # The paper's A/SE Aioli schedule: the first round opens with m·k·S_lp = 2·4·4 LearnParams steps.
    assert smoke["learn_params_steps"] == 32 and smoke["config"]["compile"] is True
    assert all(sum(p) == pytest.approx(1) for p in smoke["proportions"])
    assert report["phases"]["share"][0]["jobs"] == 1 and report["phases"]["share"][0]["wall_s"] > 0
