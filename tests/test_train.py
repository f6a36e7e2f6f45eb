import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import aioli_repro.train as train_mod
from aioli_repro.config import run_id
from aioli_repro.errors import ConfigError
from aioli_repro.model import build_model, sequence_losses
from aioli_repro.policies import MixingPolicy, Segment
from aioli_repro.policies.base import REGISTRY, register
from aioli_repro.run_cache import read_cache_entry
from aioli_repro.runs import RunDir, RunLockedError
from aioli_repro.train import TrainingDiverged, evaluate, load_data, lr_at, train


def test_sequence_and_group_losses_match_a_hand_computation():
    model = build_model("tiny", 50, 8, seed=0)
    tokens = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(input_ids=tokens[:, :-1]).logits
    hand = []
    for b in range(3):
        nll = []
        for t in range(5):
            row = logits[b, t].double()
            nll.append(float(torch.logsumexp(row, 0) - row[tokens[b, t + 1]]))
        hand.append(sum(nll) / len(nll))
    got = sequence_losses(model, tokens, autocast=False)
    assert np.allclose(got.detach().numpy(), hand, atol=1e-5)
    per_group = evaluate(model, {"a": tokens[:2], "b": tokens[2:]}, batch_size=2, device=torch.device("cpu"))
    assert math.isclose(per_group["a"], (hand[0] + hand[1]) / 2, abs_tol=1e-5)
    assert math.isclose(per_group["b"], hand[2], abs_tol=1e-5)


def test_lr_schedule_warms_up_then_decays_to_the_floor(tiny_cfg):
    t = tiny_cfg(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4).train
    lrs = [lr_at(s, t) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-4)


def test_smoke_run_lowers_the_loss_and_writes_a_result(tiny_cfg, runs_dir):
    cfg = tiny_cfg(steps=40, method_config={"proportions": [0.5, 0.3, 0.2]})
    res = train(cfg, runs_dir=runs_dir, progress=False)
    start = math.log(512)  # a random model predicts about uniformly over the 512-token vocabulary
    assert np.mean(list(res["test_loss"].values())) < start - 0.5
    assert res["avg_test_perplexity"] == pytest.approx(np.mean([math.exp(v) for v in res["test_loss"].values()]))
    assert res["policy"]["history"][0]["proportions"] == pytest.approx([0.5, 0.3, 0.2])
    run = RunDir(cfg, res["run_id"], runs_dir)
    assert (run.path / "config.json").exists() and not run.ckpt.exists()
    vals = [r for r in run.read_metrics() if "val_loss" in r]
    assert [r["step"] for r in vals] == [0, 10, 20, 30, 40]


def test_finished_run_is_not_recomputed(tiny_cfg, runs_dir):
    cfg = tiny_cfg(steps=10)
    first = train(cfg, runs_dir=runs_dir, progress=False)
    calls = []
    second = train(cfg, runs_dir=runs_dir, progress=False, on_step=calls.append)
    assert calls == [] and second == first
    # The display name is not part of the identity; any numeric change is.
    cfg.name = "renamed"
    assert train(cfg, runs_dir=runs_dir, progress=False, on_step=calls.append)["test_loss"] == first["test_loss"]
    cfg2 = tiny_cfg(steps=10, seed=1)
    assert run_id(cfg2) != run_id(cfg)


class Interrupt(Exception):
    pass


def _interrupt_at(step):
    def hook(s):
        if s == step:
            raise Interrupt
    return hook


@pytest.mark.parametrize("stop", [7, 10, 13])
def test_resume_equals_uninterrupted(tiny_cfg, tmp_path, stop):
    cfg = tiny_cfg(steps=20, method_config={"proportions": [0.2, 0.5, 0.3]})
    ref = train(cfg, runs_dir=tmp_path / "a", progress=False)
    with pytest.raises(Interrupt):
        train(cfg, runs_dir=tmp_path / "b", progress=False, on_step=_interrupt_at(stop))
    resumed_from = []
    res = train(cfg, runs_dir=tmp_path / "b", progress=False, on_step=resumed_from.append)
    # on_step runs before the step is checkpointed, so the last checkpoint is the multiple of 5 below `stop`.
    assert resumed_from[0] == ((stop - 1) // 5) * 5 + 1
    for key in ("val_loss", "test_loss", "policy", "final_train_loss"):
        assert res[key] == ref[key], key
    ma = [r for r in RunDir(cfg, ref["run_id"], tmp_path / "a").read_metrics()]
    mb = [r for r in RunDir(cfg, res["run_id"], tmp_path / "b").read_metrics()]
    assert ma == mb


def test_non_finite_loss_stops_with_step_and_group_and_keeps_the_checkpoint(tiny_cfg, runs_dir, monkeypatch):
    cfg = tiny_cfg(steps=20)
    real = train_mod.sequence_losses
    calls = {"n": 0}

    def poisoned(model, tokens, autocast):
        out = real(model, tokens, autocast)
        calls["n"] += model.training  # count training forward passes only (evaluations run in eval mode)
        if model.training and calls["n"] > 2 * 7:  # two micro-batches per step: poison the 8th step
            out = out.clone()
            out[0] = float("nan")
        return out

    monkeypatch.setattr(train_mod, "sequence_losses", poisoned)
    with pytest.raises(TrainingDiverged, match=r"at step 8 of 20 on group\(s\) \['\w+'(, '\w+')*\]"):
        train(cfg, runs_dir=runs_dir, progress=False)
    run_dirs = list(runs_dir.iterdir())
    assert len(run_dirs) == 1
    assert not (run_dirs[0] / "result.json").exists()
    state = json.loads((run_dirs[0] / "checkpoint" / "state.json").read_text())
    assert state["step"] == 5


def test_a_locked_run_is_not_computed_twice(tiny_cfg, runs_dir):
    cfg = tiny_cfg(steps=5)
    data = load_data(cfg, verbose=False)
    from aioli_repro.corpus import FolderCorpus  # noqa: F401  (data already resolved the corpus)
    from aioli_repro.tokenizer import tokenizer_fingerprint

    fp = {"corpus": data.store.source.fingerprint, "tokenizer": tokenizer_fingerprint(data.tokenizer), "device": "cpu"}
    holder = RunDir(cfg, run_id(cfg, fp), runs_dir)
    holder.acquire()
    try:
        with pytest.raises(RunLockedError):
            train(cfg, runs_dir=runs_dir, progress=False, data=data)
    finally:
        holder.release()
    assert train(cfg, runs_dir=runs_dir, progress=False, data=data)["steps"] == 5


def test_bad_config_fails_before_training(tiny_cfg, runs_dir):
    with pytest.raises(ConfigError, match="multiple of"):
        train(tiny_cfg(batch_size=6, micro_batch_size=4), runs_dir=runs_dir, progress=False)
    with pytest.raises(ValueError, match="expected 3 proportions"):
        train(tiny_cfg(method_config={"proportions": [1, 1]}), runs_dir=runs_dir, progress=False)
    with pytest.raises(ConfigError, match="unknown group"):
        train(tiny_cfg(groups=("code", "nope")), runs_dir=runs_dir, progress=False)
    with pytest.raises(ConfigError, match="unknown method"):
        train(tiny_cfg(method="nope"), runs_dir=runs_dir, progress=False)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.fixture
def probe_policy():
    """A policy that exercises every part of the interface: eval-only, exact, learn_params and weighted segments."""

    @register
    class Probe(MixingPolicy):
        name = "_probe"

        @dataclass
        class Config:
            weights: bool = False

        def __init__(self, config, groups, total_steps, seed):
            super().__init__(config, groups, total_steps, seed)
            self.plan = [Segment(self.uniform().tolist(), 0, evaluate=True)]
            for j in range(self.m):
                onehot = np.full(self.m, 0.1 / (self.m - 1))
                onehot[j] = 0.9
                self.plan.append(Segment(onehot.tolist(), 2, exact=True, evaluate=True, kind="learn_params"))
            self.observed, self.counts_seen, self.counts_reported = [], [], []

        def next_segment(self, step):
            if self.plan:
                return self.plan.pop(0)
            return Segment(self.uniform().tolist(), self.total_steps - step)

        def observe(self, obs):
            self.observed.append((obs.step, obs.val_losses.tolist()))
            self.counts_reported.append(obs.group_counts.tolist())

        def loss_weights(self, step, batch, seq_losses):
            self.counts_seen.append(np.bincount(batch.groups.numpy(), minlength=self.m).tolist())
            return np.full(self.m, 1.0 / self.m) if self.config.weights else None

        def state_dict(self):
            return {**super().state_dict(), "observed": self.observed}

        def summary(self):
            return {**super().summary(), "observed": self.observed, "counts_seen": self.counts_seen,
                    "counts_reported": self.counts_reported}

    yield Probe
    REGISTRY.pop("_probe")


def test_policy_segments_evaluations_and_learn_params_accounting(tiny_cfg, runs_dir, probe_policy):
    cfg = tiny_cfg(steps=12, method="_probe", checkpoint_every=0)
    res = train(cfg, runs_dir=runs_dir, progress=False)
    observed = res["policy"]["observed"]
    assert [s for s, _ in observed] == [0, 2, 4, 6]  # eval at start, then after each 2-step learn interval
    assert all(len(v) == 3 for _, v in observed)
    assert res["learn_params_steps"] == 6
    # Each evaluation reports what its segment's batches held: nothing for the eval-only segment, then the sum of
    # the interval's two batches (0.9 of 8 = 7.2 sequences: 7 plus a leftover slot that moves between the others).
    seen, reported = res["policy"]["counts_seen"], res["policy"]["counts_reported"]
    assert reported[0] == [0, 0, 0]
    assert reported[1:] == [np.add(seen[2 * k], seen[2 * k + 1]).tolist() for k in range(3)]
    assert all(r[j] == 14 and sum(r) == 16 for j, r in enumerate(reported[1:]))


def test_loss_weights_change_training(tiny_cfg, tmp_path, probe_policy):
    plain = train(tiny_cfg(steps=8, method="_probe"), runs_dir=tmp_path / "a", progress=False)
    weighted = train(tiny_cfg(steps=8, method="_probe", method_config={"weights": True}), runs_dir=tmp_path / "b",
                     progress=False)
    assert plain["test_loss"] != weighted["test_loss"]


def test_committed_result_cache_restores_a_run_finished_elsewhere(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg(steps=10)
    first = train(cfg, runs_dir=tmp_path / "machine_a", progress=False)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    calls = []
    second = train(cfg, runs_dir=tmp_path / "machine_b", progress=False, on_step=calls.append)
    assert calls == [] and second == first
    run_b = RunDir.from_result(second, tmp_path / "machine_b")
    assert run_b.read_metrics() == RunDir.from_result(first, tmp_path / "machine_a").read_metrics()
    # A corrupt cache entry is reported and recomputed, never used.
    entry = next((tmp_path / "cache").iterdir())
    entry.write_text("{not json")
    again = train(cfg, runs_dir=tmp_path / "machine_c", progress=False, on_step=calls.append)
    assert calls and again["test_loss"] == first["test_loss"]


def _perturbed(build):
    """``build_model`` with slightly moved weights: stands in for another thread count (same run id, other floats)."""
    def perturbed(*a, **k):
        model = build(*a, **k)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1e-3 * torch.randn_like(p))
        return model
    return perturbed


def test_a_run_trained_again_for_its_weights_keeps_its_first_result(tiny_cfg, tmp_path, monkeypatch):
    """A clone has committed results but no weights; a retrain for them (e.g. DoReMi's reference) is equivalent but
    not bitwise equal. Its first result and metrics stay, here and in the cache, so every clone renders the same
    tables; only the weights are new."""
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg(steps=10)
    first = train(cfg, runs_dir=tmp_path / "clone", progress=False)
    first_metrics = RunDir.from_result(first, tmp_path / "clone").read_metrics()
    build = train_mod.build_model
    monkeypatch.setattr(train_mod, "build_model", _perturbed(build))
    calls = []
    again = train(cfg, runs_dir=tmp_path / "clone", progress=False, keep_model=True, on_step=calls.append)
    run = RunDir.from_result(again, tmp_path / "clone")
    assert calls and run.model_path.is_file()  # it did train, and kept the weights
    assert again == first and run.read_metrics() == first_metrics
    cached = read_cache_entry(run.cache_path)
    assert cached["result"] == first and cached["metrics"] == first_metrics
    monkeypatch.setattr(train_mod, "build_model", build)
    assert train(cfg, runs_dir=tmp_path / "clone", progress=False, keep_model=True, on_step=calls.append) == first


def _interrupted_retrain(cfg, runs_dir, monkeypatch):
    """Train ``cfg`` with the result cache off, then start a retrain for its weights and interrupt it at step 6.
    Returns the first result, its metrics and the run's directory."""
    monkeypatch.setenv("AIOLI_RESULT_CACHE", "off")
    first = train(cfg, runs_dir=runs_dir, progress=False)
    run = RunDir.from_result(first, runs_dir)
    first_metrics = run.read_metrics()

    def interrupt(step):
        if step == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "build_model", _perturbed(train_mod.build_model))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, runs_dir=runs_dir, progress=False, keep_model=True, on_step=interrupt)
    return first, first_metrics, run


def test_an_interrupted_retrain_keeps_the_first_result_without_the_cache(tiny_cfg, tmp_path, monkeypatch):
    """The retrain rewrites metrics.jsonl, so result.json stops verifying; with the result cache off, only the copy
    set aside in first_result.json can give the first result back after an interruption."""
    cfg = tiny_cfg(steps=10, checkpoint_every=4)
    first, first_metrics, run = _interrupted_retrain(cfg, tmp_path, monkeypatch)
    assert run.first_result_path.is_file() and run.read_result() is None  # result.json no longer verifies
    again = train(cfg, runs_dir=tmp_path, progress=False, keep_model=True)
    assert again == first and run.read_metrics() == first_metrics and run.model_path.is_file()
    assert not run.first_result_path.exists()  # set aside only for the retrain's duration


def test_a_tampered_first_result_is_not_trusted(tiny_cfg, tmp_path, monkeypatch):
    """first_result.json carries its own checksum: a damaged copy must not stand in for the first result."""
    cfg = tiny_cfg(steps=10, checkpoint_every=4)
    _, _, run = _interrupted_retrain(cfg, tmp_path, monkeypatch)
    assert run.read_first_result() is not None
    kept = json.loads(run.first_result_path.read_text())
    kept["result"]["test_loss"] = {k: v - 1.0 for k, v in kept["result"]["test_loss"].items()}
    run.first_result_path.write_text(json.dumps(kept))
    assert run.read_first_result() is None
    again = train(cfg, runs_dir=tmp_path, progress=False, keep_model=True)
    assert again["test_loss"] != kept["result"]["test_loss"]


def test_fused_loss_trains_like_the_plain_loss_under_its_own_run_id(tiny_cfg, tmp_path):
    plain = tiny_cfg(steps=6)
    fused = tiny_cfg(steps=6, fused_loss=True)
    a = train(plain, runs_dir=tmp_path, progress=False)
    b = train(fused, runs_dir=tmp_path, progress=False)
    assert a["run_id"] != b["run_id"]
    for g in a["val_loss"]:
        assert b["val_loss"][g] == pytest.approx(a["val_loss"][g], abs=1e-4)


@pytest.mark.parametrize("value", ["off", "0", "false", "No", ""])
def test_the_result_cache_switches_off_without_becoming_a_folder(value, monkeypatch, tmp_path):
    from aioli_repro.run_cache import result_cache_dir

    monkeypatch.setenv("AIOLI_RESULT_CACHE", value)
    assert result_cache_dir() is None
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(tmp_path / "cache"))
    assert result_cache_dir() == tmp_path / "cache"
