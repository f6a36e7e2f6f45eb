#!/usr/bin/env python
"""One short check of the paper-scale path on a GPU: everything measured in one go, written to OUT/gpu_check.json.

    python scripts/gpu_check.py OUT                        # on a CUDA machine: about 4 minutes (H200, 2026-11-30)
    python scripts/gpu_check.py OUT --device cpu --preset tiny --compile-backend eager   # what the CPU test runs

Phases (each is timed and recorded; a phase that fails records its error and the next one still runs):

1. ``env``: GPU name, memory, compute capability, torch/CUDA versions, bf16 support, which SDPA kernels are on.
2. ``peak``: the GPU's dense bf16 peak from the datasheet table below (by device name) and a measured bf16 matmul
   peak (best of square 4096/8192 matmuls); on CPU the fp32 matmul peak.
3. ``throughput``: Pythia-160M at context 2048, 8 sequences per step (the paper's recipe), through the training code's
   own pieces (bf16 autocast, SDPA attention, pinned host batch copied non_blocking, AdamW, clipping, one host sync
   per step as in the loop), eager and ``torch.compile``d: tokens/s, step time, first-step (compile) time, peak GPU
   memory, and model-FLOP utilisation = FLOPs per token (6N + 12·layers·d·T) x tokens/s over each peak. Vocabulary:
   the Pythia tokenizer's 50,277 (what the paper profile trains) and 50,304 (Pythia's padded embedding) eager.
4. ``smoke``: a few dozen steps of an Aioli run under the ``paper`` profile's recipe (Pythia-160M, context 2048,
   batch 8, lr schedule, torch.compile as the profile sets it, the released A/SE Aioli hyperparameters: the first 32
   steps are LearnParams, then an exponentiated-gradient update) on the embedded offline corpus (latex/pydocs, the
   arxiv/stackexchange analogues), so it needs no network; then the run's final validation and test evaluation.
5. ``share``: K runs at once sharing the one GPU (one process per run, the local executor with jobs = K) of the
   ``full`` profile's recipe (1M-parameter model, context 256, batch 8), for each K in ``--share-jobs``: wall time,
   aggregate training tokens/s, and the resulting estimate for the ``full`` profile (its training tokens over that
   rate; about 34 hours on the project's 2-core VM).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' datasheets; the first pattern that matches
# the device name wins, so the specific variants come before the generic names.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    (r"H200 NVL", 835.0), (r"H200", 989.4), (r"GH200", 989.4),
    (r"H100 NVL", 835.0), (r"H100 PCIe", 756.0), (r"H100", 989.4), (r"H800", 989.4),
    (r"B200", 2250.0), (r"B100", 1750.0),
    (r"A100", 312.0), (r"A800", 312.0),
    (r"L40S", 362.1), (r"L40\b", 181.0), (r"\bL4\b", 121.0),
    (r"RTX 6000 Ada", 364.2), (r"RTX A6000", 154.8), (r"\bA40\b", 149.7), (r"\bA30\b", 165.0), (r"\bA10\b", 125.0),
    (r"RTX 4090", 165.2), (r"RTX 3090", 71.0),
    (r"MI300X", 1307.4), (r"MI250X", 383.0),
]
# The full profile's size, from the cost count in docs/profiles_and_cost.md: about 250 run-equivalents per seed
# (Table 2's sweeps and proxies, the restricted budget, the ablations, the law studies), 3 seeds, each run 1,000
# steps of 8 x 256 tokens. Its estimate on a GPU is those training tokens over the measured aggregate rate of K runs
# at once; each share run is a whole full-profile run (start-up, 1,000 steps, the final evaluation on the full
# splits), so the rate carries those overheads as the real profile does.
FULL_PROFILE = {"run_equivalents": 750, "tokens_per_run": 1000 * 8 * 256}
CPU_REFERENCE = {"tokens_per_s": 2 * 6_700, "full_profile_hours": 34.0,
                 "what": "the full profile on the project's 2-core AMD EPYC VM: two runs at once, median in-run "
                         "6.7k tokens/s each (bench --in-runs, docs/performance.md, 2026-11-29)"}


def full_profile_minutes(tokens_per_s: float) -> float:
    """The full profile's training tokens over an aggregate training rate, in minutes."""
    return FULL_PROFILE["run_equivalents"] * FULL_PROFILE["tokens_per_run"] / tokens_per_s / 60

PRESETS = {
    # model, context, batch, vocabularies to time, throughput steps, smoke steps, share recipe
    "paper": dict(model="pythia-160m", context=2048, batch=8, vocabs=(50277, 50304), warmup=3, steps=20,
                  smoke_steps=48, share_profile="full", share_steps=1000),
    "tiny": dict(model="tiny", context=32, batch=8, vocabs=(512,), warmup=1, steps=3,
                 smoke_steps=36, share_profile=None, share_steps=10),
}


def table_peak(name: str) -> float | None:
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, name):
            return tflops
    return None


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def phase_env(device) -> dict:
    import torch

    info = {"date": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "device": device.type,
            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
                    sdpa={"flash": torch.backends.cuda.flash_sdp_enabled(),
                          "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                          "math": torch.backends.cuda.math_sdp_enabled()},
                    gpu_count=torch.cuda.device_count())
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def phase_peak(device) -> dict:
    import torch

    if device.type != "cuda":
        from aioli_repro.bench import matmul_peak

        m = matmul_peak(sizes=(256, 512), repeats=3)
        return {"dtype": "fp32", "measured_tflops": m["peak_gflops"] / 1e3, "table_tflops": None}
    out = {"dtype": "bf16", "by_size": {}}
    for n in (4096, 8192):
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        sync(device)
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(10):
                a @ b
            sync(device)
            best = min(best, (time.perf_counter() - t) / 10)
        out["by_size"][n] = 2 * n**3 / best / 1e12
        del a, b
    out["measured_tflops"] = max(out["by_size"].values())
    out["table_tflops"] = table_peak(torch.cuda.get_device_name(device))
    return out


def measure(device, model_preset: str, vocab: int, context: int, batch: int, warmup: int, steps: int,
            compiled: bool) -> dict:
    """Training steps on random tokens through the loop's own functions; median-free: total time of ``steps``."""
    import torch

    from aioli_repro.config import TrainConfig
    from aioli_repro.model import build_model, count_parameters, flops_per_token, sequence_losses
    from aioli_repro.train import compile_model, make_optimizer

    torch.manual_seed(0)
    model = build_model(model_preset, vocab, context, seed=0).to(device).train()
    net = compile_model(model) if compiled else model
    opt = make_optimizer(model, TrainConfig(lr=1e-4))
    autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()
    host = torch.randint(0, vocab, (batch, context + 1))
    if device.type == "cuda":
        host = host.pin_memory()
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        tokens = host.to(device, non_blocking=True)
        seq = sequence_losses(net, tokens, autocast)
        (seq.sum() / batch).backward()
        losses = seq.detach().float().cpu()  # the loop reads every step's losses (NaN check, logging)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return losses

    t = time.perf_counter()
    first = step()
    sync(device)
    first_s = time.perf_counter() - t
    for _ in range(warmup):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        last = step()
    sync(device)
    step_s = (time.perf_counter() - t) / steps
    fpt = flops_per_token(model, context)
    tok_s = batch * context / step_s
    out = {"model": model_preset, "vocab": vocab, "context": context, "batch": batch, "compiled": compiled,
           "parameters": count_parameters(model), "flops_per_token": fpt, "first_step_s": first_s, "step_s": step_s,
           "tokens_per_s": tok_s, "model_tflops": fpt * tok_s / 1e12,
           "loss_first": float(first.mean()), "loss_last": float(last.mean()), "timed_steps": steps}
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def phase_throughput(device, preset: dict, peak: dict, skip_compile: bool) -> list[dict]:
    rows = []
    plans = [(preset["vocabs"][0], False)] + ([] if skip_compile else [(preset["vocabs"][0], True)])
    plans += [(v, False) for v in preset["vocabs"][1:]]
    for vocab, compiled in plans:
        r = measure(device, preset["model"], vocab, preset["context"], preset["batch"], preset["warmup"],
                    preset["steps"], compiled)
        if device.type == "cuda":
            import torch

            torch.cuda.empty_cache()  # the previous model's memory back before the next one
        for key in ("measured", "table"):
            p = peak.get(f"{key}_tflops")
            r[f"mfu_vs_{key}_peak"] = r["model_tflops"] / p if p else None
        print(f"[gpu_check] {r['model']} V={vocab} T={r['context']} B={r['batch']} "
              f"{'compiled' if compiled else 'eager   '}: {r['tokens_per_s']:,.0f} tokens/s, step {r['step_s']*1e3:.1f} ms, "
              f"MFU {_pct(r['mfu_vs_table_peak'])} of the datasheet peak, {_pct(r['mfu_vs_measured_peak'])} of the "
              f"measured matmul peak (first step {r['first_step_s']:.1f} s)", flush=True)
        rows.append(r)
    return rows


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _local_data(args) -> dict:
    """Data fields of the smoke/share runs: the embedded corpus (or --corpus) with its own tokenizer."""
    return {"corpus": args.corpus, "tokenizer": args.tokenizer}


def phase_smoke(device, preset: dict, args, runs_dir: Path) -> dict:
    from aioli_repro import hparams
    from aioli_repro.profiles import profile_config
    from aioli_repro.train import train

    groups = tuple(args.groups.split(","))
    m = len(groups)
    mc = hparams.aioli_config(m, hparams.PAPER_STEPS[hparams._paper_key(m)], paper_scale=True)
    over = dict(stop_at=preset["smoke_steps"], device=device.type, test_max_sequences=args.eval_cap,
                checkpoint_every=0, eval_every=0)
    if args.preset == "tiny":
        over.update(eval_sequences=4, eval_batch_size=16)
    cfg = profile_config("paper", groups, "aioli", 0, mc, name="gpu-check-aioli", **over)
    for k, v in _local_data(args).items():
        setattr(cfg.data, k, v)
    if args.preset == "tiny":
        cfg.model.preset, cfg.data.context_length = "tiny", preset["context"]
        cfg.data.val_fraction = cfg.data.test_fraction = 0.2
    cfg.validate()
    t = time.perf_counter()
    res = train(cfg, runs_dir=str(runs_dir), progress=False)
    wall = time.perf_counter() - t
    hist = res["policy"]["history"]
    out = {"config": {"model": cfg.model.preset, "context": cfg.data.context_length, "batch": cfg.train.batch_size,
                      "compile": cfg.train.compile, "steps_run": res["steps"], "of_schedule": cfg.train.steps,
                      "groups": list(groups), "corpus": cfg.data.corpus, "aioli": mc},
           "wall_s": wall, "train_loop_s": res["wall_time_s"], "eval_s": res["eval_time_s"],
           "train_tokens_per_s": res["train_tokens_per_s"], "learn_params_steps": res["learn_params_steps"],
           "final_train_loss": res["final_train_loss"], "avg_val_perplexity": res["avg_val_perplexity"],
           "avg_test_perplexity": res["avg_test_perplexity"],
           "proportions": [r["proportions"] for r in hist], "device": res["device"]}
    print(f"[gpu_check] Aioli smoke: {res['steps']} steps ({res['learn_params_steps']} LearnParams) in {wall:.1f} s, "
          f"{res['train_tokens_per_s']:,.0f} training tokens/s, mixtures {out['proportions']}, "
          f"avg val ppl {res['avg_val_perplexity']:.1f}", flush=True)
    return out


def phase_share(device, preset: dict, args, runs_root: Path) -> list[dict]:
    from aioli_repro.executor_config import ExecutorConfig
    from aioli_repro.executors import Runner
    from aioli_repro.local_executors import default_threads
    from aioli_repro.profiles import profile_config

    jobs_list = [int(j) for j in args.share_jobs.split(",") if j.strip()]
    groups = tuple(args.groups.split(","))
    steps = args.share_steps or preset["share_steps"]
    rows = []
    for k, jobs in enumerate(jobs_list):
        over = dict(steps=steps, device=device.type)
        if preset["share_profile"]:
            cfgs = [profile_config(preset["share_profile"], groups, "stratified", seed, name=f"share-{seed}", **over)
                    for seed in range(jobs)]
        else:  # tiny: the smoke's tiny recipe
            cfgs = [profile_config("paper", groups, "stratified", seed, name=f"share-{seed}", **over,
                                   eval_sequences=4, eval_batch_size=16, test_max_sequences=8, checkpoint_every=0,
                                   compile=False, warmup_steps=2, eval_every=0)
                    for seed in range(jobs)]
            for c in cfgs:
                c.model.preset, c.data.context_length = "tiny", preset["context"]
                c.data.val_fraction = c.data.test_fraction = 0.2
        for c in cfgs:
            for key, v in _local_data(args).items():
                setattr(c.data, key, v)
            c.validate()
        threads = default_threads(jobs)
        runner = Runner(runs_dir=str(runs_root / f"share{k}"), progress=False,
                        executor=ExecutorConfig(jobs=jobs, threads=threads))
        t = time.perf_counter()
        res = runner.run(cfgs)
        wall = time.perf_counter() - t
        tokens = sum(r["train_tokens"] for r in res)
        row = {"jobs": jobs, "threads_per_job": threads, "steps_per_run": steps, "wall_s": wall,
               "train_tokens_per_s_total": tokens / wall,
               "train_loop_tokens_per_s_per_run": sum(r["train_tokens_per_s"] for r in res) / len(res),
               "model": cfgs[0].model.preset, "context": cfgs[0].data.context_length}
        if preset["share_profile"] == "full":
            speedup = row["train_tokens_per_s_total"] / CPU_REFERENCE["tokens_per_s"]
            row["speedup_vs_2core_cpu"] = speedup
            row["full_profile_estimate_min"] = full_profile_minutes(row["train_tokens_per_s_total"])
        print(f"[gpu_check] share: {jobs} runs at once x {steps} steps in {wall:.1f} s, "
              f"{row['train_tokens_per_s_total']:,.0f} training tokens/s in all"
              + (f", full profile ~{row['full_profile_estimate_min']:.0f} min" if "full_profile_estimate_min" in row
                 else ""), flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder for gpu_check.json (created)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--preset", default="paper", choices=list(PRESETS))
    ap.add_argument("--phases", default="env,peak,throughput,smoke,share", help="comma-separated subset")
    ap.add_argument("--skip-compile", action="store_true", help="throughput: eager only")
    ap.add_argument("--compile-backend", default=None,
                    help="torch.compile backend (default inductor; the CPU test uses eager: Inductor compiles slowly)")
    ap.add_argument("--corpus", default="embedded", help="smoke/share data: the embedded corpus or a corpus folder")
    ap.add_argument("--tokenizer", default="embedded", help="smoke/share tokenizer: embedded, pythia or a folder")
    ap.add_argument("--groups", default="latex,pydocs", help="smoke/share groups (default: the A/SE analogues)")
    ap.add_argument("--eval-cap", type=int, default=32, help="smoke: test/val sequences per group at the end")
    ap.add_argument("--share-jobs", default=None, help="share: K values, e.g. 1,8,16 (default: 1,8,16 on CUDA, "
                                                       "none on CPU)")
    ap.add_argument("--share-steps", type=int, default=0, help="share: steps per run")
    args = ap.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("[gpu_check] no CUDA device here; use --device cpu --preset tiny for the CPU path", file=sys.stderr)
        return 2
    if args.compile_backend:
        os.environ["AIOLI_COMPILE_BACKEND"] = args.compile_backend
    if args.share_jobs is None:
        args.share_jobs = "1,8,16" if args.device == "cuda" else ""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["AIOLI_RESULT_CACHE"] = "off"  # measurements never enter the committed run cache
    device = torch.device(args.device)
    preset = PRESETS[args.preset]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"script": "scripts/gpu_check.py", "argv": sys.argv[1:] if argv is None else list(argv),
                    "preset": args.preset, "compile_backend": os.environ.get("AIOLI_COMPILE_BACKEND", "inductor"),
                    "phases": {}, "errors": {}}
    phases = [p for p in args.phases.split(",") if p]
    t_all = time.perf_counter()

    def save():
        report["total_s"] = time.perf_counter() - t_all
        (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")

    with tempfile.TemporaryDirectory(prefix="gpu_check_runs_") as runs:
        for name in phases:
            t = time.perf_counter()
            try:
                if name == "env":
                    value = phase_env(device)
                elif name == "peak":
                    value = phase_peak(device)
                elif name == "throughput":
                    value = phase_throughput(device, preset, report["phases"].get("peak", {}), args.skip_compile)
                elif name == "smoke":
                    value = phase_smoke(device, preset, args, Path(runs))
                elif name == "share":
                    value = phase_share(device, preset, args, Path(runs)) if args.share_jobs else []
                else:
                    raise ValueError(f"unknown phase {name!r}")
                report["phases"][name] = value
            except Exception as e:  # noqa: BLE001 - record it, go on with the next phase
                report["errors"][name] = f"{e.__class__.__name__}: {e}\n{traceback.format_exc(limit=8)}"
                print(f"[gpu_check] phase {name} FAILED: {e.__class__.__name__}: {e}", file=sys.stderr, flush=True)
            report.setdefault("phase_s", {})[name] = time.perf_counter() - t
            save()
    print(f"[gpu_check] wrote {out_dir / 'gpu_check.json'} in {time.perf_counter() - t_all:.0f} s"
          f"{'; FAILED phases: ' + ', '.join(report['errors']) if report['errors'] else ''}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
