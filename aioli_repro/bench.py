"""Speed benchmark: this machine's fp32 matmul peak, and training throughput / MFU / peak RSS of each preset.

Everything is measured in one invocation so the ratios (MFU = achieved model FLOP/s over the measured matmul peak)
compare like with like on a noisy VM. Each configuration runs in its own subprocess so its peak RSS is its own.
Run: ``python -m aioli_repro bench`` (writes results/bench/benchmark_speed.json and .csv) and
``python -m aioli_repro bench --overhead`` (Aioli / stratified wall-time ratio, results/bench/benchmark_aioli_overhead.json).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import allocator, hparams
from .config import TrainConfig
from .executor_config import ExecutorConfig
from .executors import Runner
from .local_executors import available_cores, default_threads
from .model import build_model, count_parameters, flops_per_token, sequence_losses, use_fused_loss
from .policies.doge import full_graph_group_gradients, group_gradients
from .profiles import get_profile, profile_config
from .run_cache import cache_entries, read_cache_entry, result_cache_dir
from .tokenizer import load_tokenizer
from .train import make_optimizer, train


def matmul_peak(sizes=(512, 1024, 2048), repeats: int = 5) -> dict:
    """Best fp32 GFLOP/s of square matmuls (what a compute-bound model could at most reach)."""
    best = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up: thread pool, caches
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t)
        best[n] = 2 * n**3 / min(times) / 1e9
    return {"gflops_by_size": best, "peak_gflops": max(best.values())}


def measure_training(preset: str, vocab: int, context: int, micro_batch: int, steps: int, threads: int | None = None,
                     compile_model: bool = False, fused_loss: bool = False, start_at: float = 0.0) -> dict:
    """Median step time of forward + backward + clip + AdamW on random tokens, with a per-phase breakdown."""
    if threads:
        torch.set_num_threads(threads)
    model = use_fused_loss(build_model(preset, vocab, context, seed=0), fused_loss)
    opt = make_optimizer(model, TrainConfig())
    fwd_model = torch.compile(model) if compile_model else model
    tokens = torch.randint(0, vocab, (micro_batch, context + 1))
    phases = {"forward": [], "backward": [], "clip": [], "optimizer": []}
    warmup = 2
    while time.time() < start_at:  # parallel measurements start their timed steps together
        time.sleep(0.01)
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        loss = sequence_losses(fwd_model, tokens, autocast=False).mean()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if i >= warmup:
            for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[k].append(v)
    med = {k: sorted(v)[len(v) // 2] for k, v in phases.items()}
    step_time = sum(med.values())
    tok_s = micro_batch * context / step_time
    fpt = flops_per_token(model, context)
    return {
        "preset": preset, "vocab": vocab, "context": context, "micro_batch": micro_batch,
        "threads": torch.get_num_threads(), "compile": compile_model, "fused_loss": fused_loss, "processes": 1,
        "parameters": count_parameters(model), "flops_per_token": fpt,
        "step_s": step_time, "tokens_per_s": tok_s, "model_gflops": fpt * tok_s / 1e9,
        "phase_s": med, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# What a measuring subprocess runs: one configuration, its result as the last line of stdout.
_MEASURE = ("import json,sys; from aioli_repro.bench import measure_training; "
            "print(json.dumps(measure_training(**json.loads(sys.argv[1]))))")


def _run_isolated(kwargs: dict) -> dict:
    """One configuration in a fresh interpreter (own peak RSS, no allocator or thread-pool carry-over)."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(kwargs)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run_parallel(kwargs: dict, processes: int, env: dict[str, str] | None = None) -> dict:
    """``processes`` copies of one configuration at once, one thread each (``--jobs N`` on this machine): the
    aggregate tokens/s is what parallel runs buy, the per-process figures what each run then takes. ``env``: the
    processes' environment (default: this one's)."""
    kw = {**kwargs, "threads": 1, "start_at": time.time() + 15.0}  # imports and model build finish before that
    procs = [subprocess.Popen([sys.executable, "-c", _MEASURE, json.dumps(kw)], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(processes)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    r = dict(outs[0])
    r["processes"] = processes
    r["tokens_per_s"] = sum(o["tokens_per_s"] for o in outs)
    r["model_gflops"] = sum(o["model_gflops"] for o in outs)
    r["per_process_tokens_per_s"] = [o["tokens_per_s"] for o in outs]
    r["peak_rss_mb"] = max(o["peak_rss_mb"] for o in outs)
    return r


def run_benchmark(presets=("1m", "4m", "20m"), steps: int = 8, out: str | Path = "results/bench/benchmark_speed.json",
                  vocab: int | None = None, context: int = 256, micro_batch: int = 8, knobs: bool = True) -> dict:
    if vocab is None:
        vocab = len(load_tokenizer("embedded"))
    configs = [dict(preset=p, vocab=vocab, context=context, micro_batch=micro_batch, steps=steps) for p in presets]
    if knobs:  # the knobs that mattered on this CPU, measured on the 1m preset
        base = dict(preset="1m", vocab=vocab, context=context, micro_batch=micro_batch, steps=steps)
        configs += [{**c, "fused_loss": True} for c in configs if c["preset"] in ("300k", "1m", "4m")]
        configs += [
            {**base, "vocab": 8192}, {**base, "vocab": 50304},
            {**base, "threads": 1},
            {**base, "context": 128, "micro_batch": 16}, {**base, "context": 512, "micro_batch": 4},
            {**base, "micro_batch": 16}, {**base, "micro_batch": 32},
        ]
        # --jobs 2 on 2 cores: two one-thread runs at once, against one two-thread run (the rows above)
        configs += [{**c, "processes": 2} for c in configs[:len(presets)] if c["preset"] in ("300k", "1m")]
        configs += [{**c, "processes": 2, "fused_loss": True} for c in configs[:len(presets)]
                    if c["preset"] in ("300k", "1m")]
    peak = matmul_peak()
    rows = []
    for kw in tqdm(configs, desc="benchmark", unit="config"):
        processes = kw.pop("processes", 1)
        r = _run_parallel(kw, processes) if processes > 1 else _run_isolated(kw)
        r["mfu"] = r["model_gflops"] / peak["peak_gflops"]
        rows.append(r)
    peak_after = matmul_peak()  # the VM's speed drifts; report both so a reader sees the noise band
    report = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "matmul_peak_gflops": peak["peak_gflops"], "matmul_peak_gflops_after": peak_after["peak_gflops"],
        "matmul_by_size": peak["gflops_by_size"], "runs": rows,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["preset", "vocab", "context", "micro_batch", "threads", "processes", "fused_loss", "parameters",
                    "tokens_per_s",
                    "model_gflops", "mfu", "forward_s", "backward_s", "clip_s", "optimizer_s", "peak_rss_mb"])
        for r in rows:
            w.writerow([r["preset"], r["vocab"], r["context"], r["micro_batch"], r["threads"], r["processes"],
                        r["fused_loss"], r["parameters"],
                        round(r["tokens_per_s"]), round(r["model_gflops"], 1), round(r["mfu"], 3),
                        *(round(r["phase_s"][k], 4) for k in ("forward", "backward", "clip", "optimizer")),
                        round(r["peak_rss_mb"])])
    print(f"matmul peak {peak['peak_gflops']:.1f} GFLOP/s (after: {peak_after['peak_gflops']:.1f})")
    for r in rows:
        print(f"{r['preset']:>5s} V={r['vocab']:<6d} T={r['context']:<4d} b={r['micro_batch']:<3d} "
              f"thr={r['threads']} x{r['processes']} fused={int(r['fused_loss'])} {r['tokens_per_s']:8.0f} tok/s {r['model_gflops']:6.1f} GFLOP/s "
              f"MFU {r['mfu']:.2f} RSS {r['peak_rss_mb']:.0f} MB  phases {json.dumps({k: round(v, 4) for k, v in r['phase_s'].items()})}")
    return report


def allocator_speed(preset: str = "1m", steps: int = 20, processes: int = 2, repeats: int = 3,
                    out: str | Path = "results/bench/benchmark_allocator.json") -> dict:
    """Training throughput with the system's malloc against tcmalloc (see :mod:`aioli_repro.allocator`), as the
    local pool runs: ``processes`` one-thread runs at once. The two alternate ``repeats`` times, so a drift of the
    machine's speed falls on both; the ratio is of the medians."""
    library = allocator.find_tcmalloc()
    if library is None:
        raise SystemExit("no tcmalloc on this machine: apt-get install libtcmalloc-minimal4 (or conda install -c "
                         "conda-forge gperftools), then measure again")
    kw = dict(preset=preset, vocab=len(load_tokenizer("embedded")), context=256, micro_batch=8, steps=steps)
    system_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    envs = {"system": system_env, "tcmalloc": allocator.child_env(system_env, library)}
    rows = []
    for i in tqdm(range(repeats * len(envs)), desc="allocator benchmark", unit="measurement"):
        name = list(envs)[i % len(envs)]
        r = _run_parallel(kw, processes, env=envs[name])
        rows.append({"allocator": name, "repeat": i // len(envs), "tokens_per_s": r["tokens_per_s"],
                     **{f"{k}_s": v for k, v in r["phase_s"].items()}})
    median = {name: statistics.median(r["tokens_per_s"] for r in rows if r["allocator"] == name) for name in envs}
    report = {"date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "preset": preset, "processes": processes, "steps": steps, "library": str(library),
              "median_tokens_per_s": median, "speedup": median["tcmalloc"] / median["system"], "runs": rows}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    print(f"{preset}, {processes} one-thread runs at once: system malloc {median['system']:.0f} tok/s, tcmalloc "
          f"{median['tcmalloc']:.0f} tok/s (median of {repeats}): {report['speedup']:.2f}x")
    return report


def aioli_overhead(profile: str = "full", settings=("arxiv_stackexchange", "arxiv_book_stackexchange", "slimpajama"),
                   steps: int | None = None, out: str | Path = "results/bench/benchmark_aioli_overhead.json") -> dict:
    """Wall-time ratio of an Aioli run to a stratified run of the same length, measured back to back per setting
    (fresh run directories, so nothing is cached). The extra cost is LearnParams' validation passes."""
    os.environ["AIOLI_RESULT_CACHE"] = "off"  # time real runs, never a cached result
    rows = []
    for key in settings:
        st = hparams.get_setting(key)
        m = len(st.groups)
        kw = {"steps": steps} if steps else {}
        strat = profile_config(profile, st.groups, "stratified", 0, **kw)
        S = strat.train.steps
        mc = hparams.aioli_config(m, S, batch_size=strat.train.batch_size)
        aioli = profile_config(profile, st.groups, "aioli", 0, mc, **kw)
        with tempfile.TemporaryDirectory() as tmp:
            rs = train(strat, runs_dir=tmp, progress=False)
            ra = train(aioli, runs_dir=tmp, progress=False)
        rows.append({"setting": st.label, "m": m, "steps": S, "aioli_config": mc,
                     "stratified_s": rs["wall_time_s"], "aioli_s": ra["wall_time_s"],
                     "ratio": ra["wall_time_s"] / rs["wall_time_s"],
                     "learn_params_steps": ra["learn_params_steps"]})
        print(f"{st.label:10s} m={m} S={S}: stratified {rs['wall_time_s']:.1f} s, Aioli {ra['wall_time_s']:.1f} s, "
              f"ratio {rows[-1]['ratio']:.3f} ({ra['learn_params_steps']} LearnParams steps)", flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "profile": profile, "rows": rows}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def doge_gradients(preset: str = "1m", context: int = 256, batch: int = 8, group_counts=(2, 3, 7), repeats: int = 5,
                   threads: int = 1, out: str | Path = "results/bench/benchmark_doge_gradients.json") -> dict:
    """Seconds per DoGE step for its per-group gradients: one forward and backward pass per group's sequences
    (``group_gradients``, used since 2026-11-30) against one full-batch graph differentiated once per group
    (``full_graph_group_gradients``, before). Both are timed alternately in this process, on the full profile's
    model and batch with a stratified batch of m groups; the ratio is what matters on a shared VM."""
    torch.set_num_threads(threads)
    model = build_model(preset, 4096, context, 0)
    params = [p for p in model.parameters() if p.requires_grad]
    tokens = torch.randint(0, 4096, (batch, context + 1), generator=torch.Generator().manual_seed(0))
    rows = []
    for m in group_counts:
        groups = torch.arange(batch) % m
        times = {"per_group": [], "full_graph": []}
        for r in range(repeats + 1):  # the first round warms up
            for name, fn in (("per_group", group_gradients), ("full_graph", full_graph_group_gradients)):
                t = time.perf_counter()
                fn(model, tokens, groups, m, params)
                if r:
                    times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"m": m, "per_group_s": med["per_group"], "full_graph_s": med["full_graph"],
                     "speedup": med["full_graph"] / med["per_group"]})
        print(f"DoGE gradients, {preset}, batch {batch} x {context}, m={m}: per group {med['per_group']:.3f} s, "
              f"full graph {med['full_graph']:.3f} s, speed-up {rows[-1]['speedup']:.2f}x", flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "preset": preset, "context": context, "batch": batch,
              "threads": threads, "repeats": repeats, "rows": rows}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def in_run_throughput(profile: str = "full", peak_gflops: float | None = None,
                      speed_report: str | Path = "results/bench/benchmark_speed.json",
                      out: str | Path | None = "results/bench/in_run_throughput.csv"):
    """Throughput of the profile's real training runs, read from their cached results (no training): tokens/s and
    model GFLOP/s of each run's training loop (sampling, periodic evaluations and checkpoints included; the final
    evaluation excluded), against the matmul peak that ``run_benchmark`` measured (``peak_gflops`` overrides it).

    ``mfu_of_machine`` is one run's share of the whole machine's peak; with ``jobs`` runs training at once (the
    profile's default), the machine's utilisation is about ``jobs`` times that. The summary leaves out the proxy runs
    of DoReMi and DoGE: their extra forward/backward passes (reference model, per-group gradients) are real work that
    the model-FLOP count of a training step does not include."""
    # Lazy: the measuring subprocesses import this module, and their peak RSS should be the model's, not pandas'.
    import pandas as pd

    prof = get_profile(profile)
    if peak_gflops is None:
        report = Path(speed_report)
        if not report.exists():
            raise FileNotFoundError(f"{report} not found: run `python -m aioli_repro bench` first, or pass peak_gflops")
        peak_gflops = json.loads(report.read_text())["matmul_peak_gflops"]
    cache = result_cache_dir()
    if cache is None:
        raise ValueError("the result cache is off (AIOLI_RESULT_CACHE=off): there are no finished runs to read")
    rows = []
    for path in cache_entries(cache):
        res = read_cache_entry(path)["result"]
        c = res["config"]
        if (c["model"]["preset"], c["data"]["context_length"], c["train"]["batch_size"], c["train"]["steps"]) != (
                prof.model.preset, prof.data.context_length, prof.train.batch_size, prof.train.steps):
            continue
        if res.get("branch") or c["train"].get("stop_at") or res.get("device") != "cpu" or not res["wall_time_s"]:
            continue  # children and prefixes are short; GPU runs are not this machine's
        gflops = res["train_tokens_per_s"] * res["flops_per_token"] / 1e9
        rows.append({"run_id": res["run_id"][:12], "name": res["name"], "method": res["method"],
                     "groups": len(res["groups"]), "seed": res["seed"], "threads": res.get("threads"),
                     "tokens_per_s": res["train_tokens_per_s"], "model_gflops": gflops,
                     "mfu_of_machine": gflops / peak_gflops, "wall_time_s": res["wall_time_s"],
                     "eval_time_s": res["eval_time_s"], "peak_rss_mb": res["peak_rss_mb"]})
    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError(f"no finished CPU run of the {profile} profile's recipe in the result cache")
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    plain = df[~df.method.str.endswith("_proxy")]
    if plain.empty:
        raise ValueError(f"only proxy runs of the {profile} profile are in the result cache: nothing to summarise")
    q = plain[["tokens_per_s", "mfu_of_machine", "peak_rss_mb"]].quantile([0.1, 0.5, 0.9])
    print(f"{len(plain)} finished {profile} runs with plain training steps ({len(df) - len(plain)} proxy runs left "
          f"out; {prof.model.preset}, context {prof.data.context_length}, {prof.train.steps} steps); matmul peak "
          f"{peak_gflops:.0f} GFLOP/s")
    for name, label in (("tokens_per_s", "tokens/s per run"), ("mfu_of_machine", "one run's share of the peak"),
                        ("peak_rss_mb", "peak RSS (MB)")):
        print(f"  {label:28s} p10 {q.loc[0.1, name]:8.3f}  median {q.loc[0.5, name]:8.3f}  p90 {q.loc[0.9, name]:8.3f}")
    print(f"  with {prof.jobs} runs at once (the profile's --jobs): machine MFU about "
          f"{prof.jobs * q.loc[0.5, 'mfu_of_machine']:.2f} (median), {prof.jobs * q.loc[0.9, 'mfu_of_machine']:.2f} (p90)")
    return df


def benchmark_jobs(n_runs: int = 6, steps: int = 50, profile: str = "quick", jobs_list=(1, 2),
                   setting: str = "arxiv_stackexchange", out: str | Path | None = None, threads_list=None) -> dict:
    """Total wall time of ``n_runs`` short runs of the same recipe (seeds 0..n-1, so none is cached) with each
    ``jobs`` value: jobs = 1 trains them one after another in this process with every core's thread; jobs = N trains
    N at a time, one process each with cores // N threads (process start-up and data loading included).
    ``threads_list`` (one entry per ``jobs_list`` entry, 0 = that default) sets the threads per run explicitly.
    Records the 1-minute load average before each configuration (other work on the machine skews the figures).
    Prints and returns the figures (a measurement, not a test)."""
    os.environ["AIOLI_RESULT_CACHE"] = "off"  # time real runs
    groups = hparams.get_setting(setting).groups
    cfgs = [profile_config(profile, groups, "stratified", seed, steps=steps, name=f"bench-jobs-{seed}")
            for seed in range(n_runs)]
    cores = available_cores()
    rows = []
    for jobs, threads in zip(jobs_list, threads_list or [0] * len(jobs_list)):
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = float("nan")
        with tempfile.TemporaryDirectory() as tmp:
            threads = threads or default_threads(jobs)
            before = torch.get_num_threads()
            if jobs == 1:
                torch.set_num_threads(threads)
            t = time.perf_counter()
            res = Runner(runs_dir=tmp, progress=False, executor=ExecutorConfig(jobs=jobs, threads=threads)).run(cfgs)
            wall = time.perf_counter() - t
            torch.set_num_threads(before)
        tok = sum(r["train_tokens"] for r in res)
        rows.append({"jobs": jobs, "threads_per_run": threads, "load_avg_1min_before": load, "wall_s": wall,
                     "runs": n_runs,
                     "train_tokens_per_s_total": tok / wall,
                     "mean_run_train_s": sum(r["wall_time_s"] for r in res) / n_runs})
        print(f"[bench jobs] jobs={jobs} x {threads} thread(s), load {load:.1f} before: {n_runs} runs of {steps} steps in {wall:.1f} s "
              f"({tok / wall:,.0f} training tokens/s overall; one run's training loop {rows[-1]['mean_run_train_s']:.1f} s)",
              flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "cores": cores, "profile": profile, "steps": steps, "rows": rows,
              "speedup": rows[0]["wall_s"] / rows[-1]["wall_s"] if len(rows) > 1 else None}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1) + "\n")
    return report
