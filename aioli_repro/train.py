"""The one training loop every method shares.

A run is: build the data and the model from the config, then repeatedly ask the mixing policy for the next segment
(proportions, steps, batch mode, evaluate-after?) and carry it out. Methods never see the optimizer or the data;
the loop never knows which method it runs. Everything a resumed run needs (model, optimizer, sampler, policy, the
segment in progress) is checkpointed, so an interrupted run ends with exactly the result of an uninterrupted one.

Headline metric (the paper's "average test perplexity"): for each group, the mean next-token cross-entropy over
every predicted token of its test split (EOS separators included), exponentiated; then the mean over groups:
``avg_test_perplexity = mean_i exp(L_i^test)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_model
from tqdm.auto import tqdm

from . import faults
from .config import RunConfig, base_groups, run_id, split_group
from .corpus import open_source
from .errors import ConfigError
from .model import build_model, count_parameters, flops_per_token, resolve_device, sequence_losses, use_fused_loss
from .policies import Observation, PolicyContext, Segment, make_policy
from .runs import RunDir
from .sampler import MixtureSampler, eval_windows
from .token_store import TokenStore
from .tokenizer import eos_id, load_tokenizer, tokenizer_fingerprint


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Data:
    """Everything a run reads: token streams and the fixed evaluation windows."""

    groups: tuple[str, ...]
    tokenizer: Any
    store: TokenStore
    train_streams: dict[str, np.ndarray]
    val_sample: dict[str, torch.Tensor]
    """Fixed small validation sample per group (periodic evaluation, and methods that read L^t)."""


_DATA_CACHE: dict[str, Data] = {}


def load_data(cfg: RunConfig, verbose: bool = True) -> Data:
    """Tokenizer, token store and evaluation windows for a config; reused within a process (a study trains
    hundreds of runs on the same data, and reloading costs about a second each time)."""
    key = json.dumps([dataclasses.asdict(cfg.data), cfg.train.eval_sequences], sort_keys=True, default=str)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one data configuration at a time: memory stays flat across studies
        _DATA_CACHE[key] = _load_data(cfg, verbose)
    return _DATA_CACHE[key]


def _load_data(cfg: RunConfig, verbose: bool = True) -> Data:
    d = cfg.data
    source = open_source(d.corpus, d.split_seed, d.val_fraction, d.test_fraction, groups=base_groups(d.groups))
    if hasattr(source, "check_groups"):
        source.check_groups(base_groups(d.groups))
    tokenizer = load_tokenizer(d.tokenizer)
    store = TokenStore(source, tokenizer, verbose=verbose)
    streams = {g: capped_train_tokens(store, g) for g in d.groups}
    # Evenly spaced windows (no seed): the same validation tokens for every run of every method.
    val = {g: eval_windows(store.tokens(split_group(g)[0], "val"), d.context_length, cfg.train.eval_sequences)
           for g in d.groups}
    return Data(tuple(d.groups), tokenizer, store, streams, val)


def lr_at(step: int, t) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr`` at the last step."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    span = max(1, t.steps - 1 - t.warmup_steps)
    progress = min(1.0, (step - t.warmup_steps) / span)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model, t) -> torch.optim.AdamW:
    # Decay matrices only: biases and LayerNorm gains are not regularised (as in the paper's code and nanoGPT).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), eps=1e-8)


@torch.no_grad()
def evaluate(model, windows: dict[str, torch.Tensor], batch_size: int, device: torch.device,
             autocast: bool = False) -> dict[str, float]:
    """Per-group mean token loss. All groups' windows go through the model together in large batches."""
    was_training = model.training
    model.eval()
    names = list(windows)
    all_windows = torch.cat([windows[g] for g in names])
    if device.type == "cuda":  # page-locked host memory: the copies below run asynchronously
        all_windows = all_windows.pin_memory()
    owner = torch.cat([torch.full((len(windows[g]),), i) for i, g in enumerate(names)])
    losses = torch.empty(len(all_windows))
    for s in range(0, len(all_windows), batch_size):
        chunk = all_windows[s:s + batch_size].to(device, non_blocking=True)
        losses[s:s + batch_size] = sequence_losses(model, chunk, autocast).float().cpu()
    model.train(was_training)
    # Every window has the same number of predicted tokens, so the window mean is the token mean.
    return {g: float(losses[owner == i].double().mean()) for i, g in enumerate(names)}


def forward_backward(model, policy, step: int, batch, t, device, autocast: bool) -> torch.Tensor:
    """Accumulate the gradient of the batch loss over micro-batches; returns the per-sequence losses.

    The loss is the mean over sequences, or Σ_g w_g · (mean loss of group g) when the policy returns weights w
    (DoReMi), written as a per-sequence weight so that it splits exactly over micro-batches. A policy that reads the
    batch's losses before choosing w gets them from a no-grad pass when there are several micro-batches (so the
    weights always see the whole batch, and the optimizer steps once per batch).
    """
    n_micro = t.batch_size // t.micro_batch_size
    micro = [slice(k * t.micro_batch_size, (k + 1) * t.micro_batch_size) for k in range(n_micro)]
    seq_loss_all = torch.empty(t.batch_size)
    pending = None  # single micro-batch: keep the graph, choose the weights, then backward
    if policy.needs_batch_losses:
        if n_micro == 1:
            pending = sequence_losses(model, batch.tokens.to(device, non_blocking=True), autocast)
            seq_loss_all[:] = pending.detach().float().cpu()
        else:
            with torch.no_grad():
                for sl in micro:
                    seq_loss_all[sl] = sequence_losses(model, batch.tokens[sl].to(device, non_blocking=True),
                                                       autocast).float().cpu()
        weights = policy.loss_weights(step, batch, seq_loss_all.clone())
    else:
        weights = policy.loss_weights(step, batch, None)
    if weights is None:
        seq_weight = torch.ones(t.batch_size)
    else:
        counts = np.bincount(batch.groups.numpy(), minlength=len(weights))
        per_group = np.where(counts > 0, np.asarray(weights) * t.batch_size / np.maximum(counts, 1), 0.0)
        seq_weight = torch.as_tensor(per_group, dtype=torch.float32)[batch.groups]
    for sl in micro:
        if pending is not None:
            seq_loss = pending
        else:
            seq_loss = sequence_losses(model, batch.tokens[sl].to(device, non_blocking=True), autocast)
            seq_loss_all[sl] = seq_loss.detach().float().cpu()
        loss = (seq_loss * seq_weight[sl].to(device)).sum() / t.batch_size
        loss.backward()
    return seq_loss_all


def compile_model(model):
    """``torch.compile`` of the model (``TrainConfig.compile``), sharing its parameters: the loop trains and evaluates
    through the compiled module and checkpoints, clips and hands policies the plain one. Backend and mode come from
    ``AIOLI_COMPILE_BACKEND`` (default ``inductor``) and ``AIOLI_COMPILE_MODE`` (e.g. ``max-autotune-no-cudagraphs``);
    the CPU tests use the ``eager`` backend, since Inductor takes about 40 s to compile even the tiny model on 2 cores.
    Shapes: training has one; evaluation batches of varying size recompile once with a dynamic batch dimension
    (PyTorch's automatic dynamic shapes), not once per size."""
    backend = os.environ.get("AIOLI_COMPILE_BACKEND", "inductor")
    mode = os.environ.get("AIOLI_COMPILE_MODE") or None
    return torch.compile(model, backend=backend, **({"mode": mode} if mode else {}))


def capped_train_tokens(store: TokenStore, group: str):
    """A group's training tokens: the whole split, or its first ``tokens`` for a capped group ``name@tokens``."""
    base, cap = split_group(group)
    tokens = store.tokens(base, "train")
    if cap is not None and cap > tokens.size:
        raise ConfigError(f"group {group!r} caps {base!r} at {cap} training tokens, but it has only {tokens.size}")
    return tokens if cap is None else tokens[:cap]


def _final_windows(data: Data, cfg: RunConfig, split: str) -> dict[str, torch.Tensor]:
    """Evaluation windows of a whole split (capped at ``test_max_sequences`` per group, evenly spaced); a capped
    group is evaluated on its corpus group's whole split."""
    return {g: eval_windows(data.store.tokens(split_group(g)[0], split), cfg.data.context_length,
                            cfg.train.test_max_sequences)
            for g in data.groups}


def train(cfg: RunConfig, runs_dir=None, progress: bool = True, keep_model: bool = False,
          on_step: Callable[[int], None] | None = None, data: Data | None = None,
          keep_steps: tuple[int, ...] = ()) -> dict[str, Any]:
    """Run (or resume, or just return the cached result of) one training run.

    ``keep_model`` saves the final weights; ``keep_steps`` keeps the full training state at those steps as branch
    points for child runs (``RunConfig.branch``). Neither changes the result, so neither is part of the run's
    identity; a cached run that lacks them is trained again.
    """
    cfg.validate()
    t = cfg.train
    device = resolve_device(t.device)
    policy = make_policy(cfg.method, cfg.method_config, cfg.data.groups, t.steps, t.seed)  # validates early
    data = data or load_data(cfg, verbose=progress)
    fingerprints = {"corpus": data.store.source.fingerprint, "tokenizer": tokenizer_fingerprint(data.tokenizer),
                    "device": device.type}
    run = RunDir(cfg, run_id(cfg, fingerprints), runs_dir)

    def finished():
        done = run.read_result()
        # A caller that needs the final weights (e.g. DoReMi's reference) retrains a run cached without them.
        complete = (not keep_model or run.model_path.exists()) and run.has_branches(keep_steps)
        return done if done is not None and complete else None

    if (done := finished()) is not None:
        return done
    # Parallel study workers wait for a shared run (e.g. DoReMi's reference) that another worker is computing.
    run.acquire(wait=os.environ.get("AIOLI_WAIT_FOR_LOCKS") == "1")
    try:
        if (done := finished()) is not None:  # finished by another process while we waited
            return done
        # A finished run trained again only for what its result does not hold (final weights, branch states) keeps
        # its first result and metrics: the retrain is equivalent but not bitwise equal (thread counts change float
        # sums), and the committed copy is what every clone renders from, so it must not move under this machine.
        previous = run.read_result()
        previous = (previous, run.read_metrics()) if previous is not None else run.read_first_result()
        if previous is not None:
            run.keep_first_result(*previous)
        run.write_config(fingerprints)
        return _train_locked(cfg, run, policy, data, device, progress, keep_model, on_step, set(keep_steps),
                             runs_dir, previous)
    finally:
        run.release()


def _train_locked(cfg, run, policy, data, device, progress, keep_model, on_step, keep_steps, runs_dir,
                  previous=None):
    t = cfg.train
    end = t.stop_at or t.steps
    autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()  # bf16 is 15-30x slower on AVX2 CPUs
    model, net, optimizer, sampler = _setup(cfg, data, device, policy, run, autocast)
    step, segment, seg_done, wall, lp_steps, seg_counts = _resume(cfg, run, model, optimizer, sampler, policy,
                                                                  len(data.groups), runs_dir, progress)
    # A fresh start (a resumed run or a child starts past step 0): the curve begins where an untrained model scores
    # about ln(vocabulary size).
    if step == 0 and t.eval_every:
        run.append_metrics({"step": 0, "val_loss": evaluate(net, data.val_sample, t.eval_batch_size, device, autocast)})

    def observe(seg: Segment) -> Observation:
        windows = {g: w[: seg.eval_sequences] for g, w in data.val_sample.items()} if seg.eval_sequences \
            else data.val_sample
        losses = evaluate(net, windows, t.eval_batch_size, device, autocast)
        faults.hit("evaluate", step)
        return Observation(step, np.array([losses[g] for g in data.groups]), seg_counts.copy())

    bar = tqdm(total=end, initial=step, desc=run.path.name, unit="step", dynamic_ncols=True) if progress else None
    t0, last_loss = time.perf_counter(), float("nan")
    while step < end:
        if segment is None or seg_done >= segment.steps:  # the policy answers an evaluation, then says what is next
            if segment is not None and segment.evaluate:
                policy.observe(observe(segment))
            segment, seg_done = policy.next_segment(step), 0
            seg_counts[:] = 0
            if segment.steps < 0 or step + segment.steps > t.steps:
                raise RuntimeError(f"policy {policy.name} asked for {segment.steps} steps at step {step} "
                                   f"of {t.steps}")
            continue
        # ---- one optimizer step on the segment's mixture
        lr = lr_at(step, t)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = sampler.next_batch(segment.proportions, t.batch_size, exact=segment.exact, slots=segment.slots)
        seg_counts += np.bincount(batch.groups.numpy(), minlength=len(data.groups))
        if device.type == "cuda":  # pinned host batch: the micro-batch copies to the GPU are non_blocking
            batch.tokens = batch.tokens.pin_memory()
        seq_loss_all = policy.compute_gradients(step, batch, lr)  # DoGE builds its own update
        if seq_loss_all is None:
            seq_loss_all = forward_backward(net, policy, step, batch, t, device, autocast)
        if not torch.isfinite(seq_loss_all).all():
            bad = sorted({data.groups[int(g)] for g in batch.groups[~torch.isfinite(seq_loss_all)]})
            raise TrainingDiverged(f"non-finite training loss at step {step + 1} of {t.steps} on group(s) {bad}; the "
                                   f"last good checkpoint in {run.ckpt} is kept and no result is written")
        policy.observe_batch(step, batch, seq_loss_all)  # online rewards from the step's own losses (ODM)
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        seg_done += 1
        if segment.kind == "learn_params":
            lp_steps += 1
            faults.hit("learn_params", step)
        # ---- after the step: log, evaluate, keep a branch point, checkpoint
        last_loss = float(seq_loss_all.mean())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}", refresh=False)
        if step % 10 == 0 or step == end:
            run.append_metrics({"step": step, "lr": lr, "train_loss": last_loss, "kind": segment.kind,
                                "proportions": segment.proportions})
        if t.eval_every and (step % t.eval_every == 0 or step == end):
            val = evaluate(net, data.val_sample, t.eval_batch_size, device, autocast)
            faults.hit("evaluate", step)
            run.append_metrics({"step": step, "val_loss": val})
        if step in keep_steps:  # a branch point: the full state plus the validation losses children start from
            val = evaluate(net, _final_windows(data, cfg, "val"), t.eval_batch_size, device, autocast)
            run.save_branch(step, model, {"optimizer": optimizer.state_dict()}, {
                "step": step, "sampler": sampler.state_dict(), "policy": policy.state_dict(), "val_loss": val,
                "policy_summary": policy.summary()})
        if on_step is not None:
            on_step(step)
        faults.hit("step", step)
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < end:
            wall += time.perf_counter() - t0
            t0 = time.perf_counter()
            run.save_checkpoint(model, {"optimizer": optimizer.state_dict()}, {  # all that _resume restores
                "step": step, "sampler": sampler.state_dict(), "policy": policy.state_dict(),
                "segment": segment.to_dict() if segment else None, "seg_done": seg_done, "wall": wall,
                "lp_steps": lp_steps, "seg_counts": seg_counts.tolist()})
    if segment is not None and segment.evaluate:  # a policy's last evaluation request still gets its answer
        policy.observe(observe(segment))
    wall += time.perf_counter() - t0
    if bar is not None:
        bar.close()
    final, eval_wall = _final_evaluation(net, data, cfg, device, autocast)
    result = _result_record(cfg, data, policy, model, device, final, end=end, wall=wall, eval_wall=eval_wall,
                            lp_steps=lp_steps, last_loss=last_loss)
    return _finish(run, result, model, keep_model, keep_steps, previous, end)


def _setup(cfg, data, device, policy, run, autocast):
    """The freshly initialised model, the module the loop runs forward (``net``: the compiled one under ``compile``,
    else the model itself; ``model`` owns the state), the optimizer and the sampler; and the policy, set up with what
    the loop lends it."""
    t = cfg.train

    def model_factory():
        # A compiled module forwards attribute lookups to the plain one, so a fused-loss mark would route the loss
        # around the compiled graph: under ``compile`` the fused loss is off, as TrainConfig.fused_loss documents.
        return use_fused_loss(build_model(cfg.model.preset, len(data.tokenizer), cfg.data.context_length, t.seed,
                                          eos_id(data.tokenizer), data.tokenizer.pad_token_id),
                              t.fused_loss and not t.compile).to(device)

    model = model_factory().train()
    net = compile_model(model) if t.compile else model
    optimizer = make_optimizer(model, t)
    sampler = MixtureSampler(data.train_streams, cfg.data.context_length, t.seed)
    policy.setup(PolicyContext(batch_size=t.batch_size, device=device, model=model, model_factory=model_factory,
                               val_sample=data.val_sample, eval_batch_size=t.eval_batch_size, autocast=autocast,
                               runs_dir=run.path.parent))
    return model, net, optimizer, sampler


def _resume(cfg, run, model, optimizer, sampler, policy, n_groups: int, runs_dir, progress: bool):
    """Where the loop starts: ``(step, segment, seg_done, wall, lp_steps, seg_counts)``.

    An interrupted run restores all of it from its own last checkpoint (model, optimizer, sampler and policy state,
    the segment in progress), so it ends with exactly the result of an uninterrupted one. A child
    (``RunConfig.branch``) starts from its parent's state at the branch step, with a segment of its own. Anything else
    starts at step 0. ``metrics.jsonl`` is cut back to the step the loop starts from, so no record is written twice.
    """
    seg_counts = np.zeros(n_groups, dtype=np.int64)  # sequences of each group trained in the current segment
    if (ckpt := run.load_checkpoint(model)) is not None:
        tensors, state = ckpt
        optimizer.load_state_dict(tensors["optimizer"])
        sampler.load_state_dict(state["sampler"])
        policy.load_state_dict(state["policy"])
        segment = Segment(**state["segment"]) if state["segment"] else None
        seg_counts = np.asarray(state.get("seg_counts", seg_counts), dtype=np.int64)  # older checkpoints lack them
        run.truncate_metrics(state["step"])
        if progress:
            print(f"[train] resuming {run.path.name} from step {state['step']}")
        return state["step"], segment, state["seg_done"], state["wall"], state["lp_steps"], seg_counts
    if cfg.branch is not None:
        tensors, state = RunDir.load_branch(cfg.branch["parent"], int(cfg.branch["step"]), runs_dir, model)
        optimizer.load_state_dict(tensors["optimizer"])
        sampler.load_state_dict(state["sampler"])
        run.truncate_metrics(-1)
        return state["step"], None, 0, 0.0, 0, seg_counts
    run.truncate_metrics(-1)
    return 0, None, 0, 0.0, 0, seg_counts


def _final_evaluation(net, data: Data, cfg: RunConfig, device, autocast: bool) -> tuple[dict, float]:
    """Per-group losses on the whole validation and test splits (``val`` only for a branched child), the tokens each
    scored, and the seconds it took."""
    t1 = time.perf_counter()
    final = {"test": {}, "test_tokens": {}}
    for split in ("val", "test") if cfg.train.final_eval == "val+test" else ("val",):
        windows = _final_windows(data, cfg, split)
        final[split] = evaluate(net, windows, cfg.train.eval_batch_size, device, autocast)
        final[f"{split}_tokens"] = {g: int(w.shape[0] * cfg.data.context_length) for g, w in windows.items()}
    return final, time.perf_counter() - t1


def _result_record(cfg: RunConfig, data: Data, policy, model, device, final: dict, *, end: int, wall: float,
                   eval_wall: float, lp_steps: int, last_loss: float) -> dict[str, Any]:
    """``result.json``: what the tables read (per-group and average perplexities), what the run cost (tokens, wall
    time, throughput, memory) and what it was (config, policy summary, model size, versions)."""
    t = cfg.train
    start = int(cfg.branch["step"]) if cfg.branch else 0  # children are charged only their own steps
    tokens = (end - start) * t.batch_size * cfg.data.context_length
    test_ppl = {g: math.exp(v) for g, v in final["test"].items()}
    val_ppl = {g: math.exp(v) for g, v in final["val"].items()}
    return {
        "name": cfg.name, "method": cfg.method, "groups": list(data.groups), "seed": t.seed, "steps": end,
        "branch": cfg.branch,
        "config": cfg.to_dict(),
        "val_loss": final["val"], "test_loss": final["test"],
        "val_perplexity": val_ppl, "test_perplexity": test_ppl,
        "avg_val_perplexity": float(np.mean(list(val_ppl.values()))),
        "avg_test_perplexity": float(np.mean(list(test_ppl.values()))) if test_ppl else None,
        "eval_tokens": {"val": final["val_tokens"], "test": final["test_tokens"]},
        "train_tokens": tokens,
        "learn_params_steps": lp_steps,
        "final_train_loss": last_loss,
        "policy": policy.summary(),
        "parameters": count_parameters(model),
        "flops_per_token": flops_per_token(model, cfg.data.context_length),
        "wall_time_s": wall, "eval_time_s": eval_wall,
        "train_tokens_per_s": tokens / wall if wall > 0 else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": device.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
    }


def _finish(run: RunDir, result: dict, model, keep_model: bool, keep_steps, previous, end: int) -> dict[str, Any]:
    """Write the result (and the final weights, if kept), then drop the checkpoint: the run is finished.

    A run trained again only for what its first result lacked (weights, branch points) keeps that first result and
    its metrics, plus any new branch points (see :func:`train`)."""
    if keep_steps:  # what children need from their parent besides its weights, kept with the (committed) result
        result["branch_points"] = run.branch_points(keep_steps)
    if keep_model:
        save_model(model, str(run.model_path))
    faults.hit("result", end)
    if previous is not None:
        first, first_metrics = previous
        run.write_metrics(first_metrics)
        result = {**first, **({"branch_points": {**(first.get("branch_points") or {}), **result["branch_points"]}}
                              if keep_steps else {})}
    run.write_result(result)
    run.drop_first_result()
    run.remove_checkpoint()
    return run.read_result()
