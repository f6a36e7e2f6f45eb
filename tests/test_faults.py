"""Reliability: runs killed with SIGKILL at every fault point resume to exactly the uninterrupted result; corrupt
files are detected and recomputed; NaN stops cleanly; concurrent runs are computed once; an interrupted study does
not recompute finished runs; bad input fails before training and writes nothing; nothing is unpickled and a run
never touches the network.

Processes are killed for real (``AIOLI_FAULT``, see :mod:`aioli_repro.faults`). Most victims are ``os.fork()``
children of the test process (they start in milliseconds with the data already loaded); one test kills and restarts
the ``python -m aioli_repro train`` command in fresh interpreters. Everything runs on one thread.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

import aioli_repro.train as train_mod
from aioli_repro import faults, hparams, profiles
from aioli_repro.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from aioli_repro.errors import ConfigError
from aioli_repro.runs import RunDir, RunLockedError
from aioli_repro.train import TrainingDiverged, train

from .cli_cases import AIOLI, AIOLI2, BAD_CLI, CLI_BASE
from .conftest import TINY_CORPUS, TINY_GROUPS, TINY_TOKENIZER, tiny_config

REPO = Path(__file__).resolve().parent.parent
COMPARED = ("val_loss", "test_loss", "policy", "final_train_loss", "learn_params_steps", "steps", "train_tokens")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

pytestmark = [pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
              pytest.mark.usefixtures("one_torch_thread")]


def make_cfg(steps=20, method="static", method_config=None, groups=TINY_GROUPS, **train_kw) -> RunConfig:
    """The conftest ``tiny_config`` recipe (3-group tiny corpus, tiny model), named "fault"."""
    return tiny_config(steps, method, method_config, groups, name="fault", **train_kw)


def static_cfg():
    return make_cfg(method_config={"proportions": [0.2, 0.5, 0.3]})


def aioli_cfg():
    # Rounds of 10 steps, LearnParams = steps 1-3 and 11-13 (one interval per group, each followed by an
    # evaluation); checkpoints every 4 steps, so the one at step 12 falls inside LearnParams.
    return make_cfg(method="aioli", method_config=AIOLI, checkpoint_every=4)


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted results (and metrics) of the static and the Aioli run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIOLI_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setenv("AIOLI_RESULT_CACHE", "off")
        mp.delenv(faults.ENV, raising=False)
        root = tmp_path_factory.mktemp("reference")
        out = {"root": root}
        for name, cfg in (("static", static_cfg()), ("aioli", aioli_cfg())):
            res = train(cfg, runs_dir=root, progress=False)
            out[name] = (res, RunDir(cfg, res["run_id"], root).read_metrics())
    return out


# ------------------------------------------------------------------------------------------------ helpers
def start_child(fn, env: dict[str, str] | None = None) -> int:
    """Run ``fn`` in a forked child (exit status 0, or 4 if it raised); returns the child's pid. The child never
    returns into pytest."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.environ.update(env or {})
            fn()
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 4
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def in_child(fn, env: dict[str, str] | None = None) -> int:
    """Run ``fn`` in a forked child and wait for it; returns its wait status."""
    return os.waitpid(start_child(fn, env), 0)[1]


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def kill_run(cfg, runs_dir, fault: str) -> None:
    status = in_child(lambda: train(cfg, runs_dir=runs_dir, progress=False), {faults.ENV: fault})
    assert killed(status), f"the fault {fault} did not kill the run (status {status})"


def run_path(runs_dir) -> Path:
    (path,) = [p for p in Path(runs_dir).iterdir() if p.is_dir()]
    return path


def assert_same_result(res, metrics, ref):
    ref_res, ref_metrics = ref
    for key in COMPARED:
        assert res[key] == ref_res[key], key
    assert metrics == ref_metrics


def copy_finished(references, runs: Path, method: str = "static") -> Path:
    """A copy of the reference run's finished directory under ``runs``; returns the copy's path."""
    cfg = static_cfg() if method == "static" else aioli_cfg()
    rid = references[method][0]["run_id"]
    dst = RunDir(cfg, rid, runs).path
    shutil.copytree(RunDir(cfg, rid, references["root"]).path, dst)
    return dst


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file under ``root`` (to prove nothing was written or overwritten)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


# ------------------------------------------------------------------------------------------------ kill and resume
@pytest.mark.parametrize("method,faults_in_order,resumes_from", [
    ("static", ["step:7"], [5]),                      # mid-run, between checkpoints
    ("static", ["checkpoint:10"], [5]),               # model written, optimizer state and state.json not
    ("static", ["checkpoint_swap:10"], [5]),          # old checkpoint moved aside, new one not yet in place
    ("static", ["evaluate:10"], [5]),                 # inside the periodic evaluation
    ("static", ["result:20"], [15]),                  # final evaluation done, result.json not written
    ("static", ["step:3", "step:12"], [0, 10]),       # before the first checkpoint, then again after resuming
    ("aioli", ["learn_params:2"], [0]),               # inside the first LearnParams
    ("aioli", ["learn_params:13"], [12]),             # inside LearnParams, resuming from a checkpoint taken in it
    ("aioli", ["evaluate:12"], [12]),                 # inside a LearnParams evaluation (one is pending at resume)
    ("aioli", ["checkpoint:12"], [8]),
    ("aioli", ["evaluate:10", "learn_params:11", "result:20"], [8, 8, 16]),  # killed three times
])
def test_killed_run_resumes_to_the_uninterrupted_result(references, tmp_path, method, faults_in_order,
                                                        resumes_from, monkeypatch):
    """``resumes_from[i]``: the step the start after the (i+1)-th kill resumes from (0: from scratch)."""
    cfg = static_cfg() if method == "static" else aioli_cfg()
    runs = tmp_path / "runs"
    for i, fault in enumerate(faults_in_order):
        expected_first = resumes_from[i - 1] + 1 if i else 1
        status = in_child(lambda first=expected_first: _train_expecting_first_step(cfg, runs, first),
                          {faults.ENV: fault})
        assert killed(status), f"{fault}: not killed by SIGKILL (status {status})"
        assert not (run_path(runs) / "result.json").exists()
    loads = []
    real_load = torch.load

    def checked_load(*args, **kwargs):  # what a resume reads back goes through weights_only=True
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", checked_load)
    steps = []
    res = train(cfg, runs_dir=runs, progress=False, on_step=steps.append)
    assert steps[0] == resumes_from[-1] + 1 and steps[-1] == 20
    assert_same_result(res, RunDir(cfg, res["run_id"], runs).read_metrics(), references[method])
    path = run_path(runs)
    assert not [p.name for p in path.iterdir() if p.name.startswith("checkpoint")]  # cleaned up
    assert json.loads((path / "result.json").read_text())["run_id"] == res["run_id"]
    assert loads == ([True] if resumes_from[-1] else [])


def _train_expecting_first_step(cfg, runs, first: int):
    """Train in a child; exit with status 5 (not a kill) if the run does not start at step ``first``."""
    def check(step):
        if check.first:
            check.first = False
            if step != first:
                print(f"resumed at step {step}, expected {first}", file=sys.stderr)
                os._exit(5)
    check.first = True
    train(cfg, runs_dir=runs, progress=False, on_step=check)


def test_fault_specs_are_checked():
    assert faults.parse("step:7, result:20:2") == {("step", 7): 1, ("result", 20): 2}
    for bad in ("nope:3", "step", "step:x", "step:1:2:3"):
        with pytest.raises(ValueError, match="AIOLI_FAULT"):
            faults.parse(bad)


# ------------------------------------------------------------------------------------------------ corrupt files
def _flip(path: Path, at: int = 100):
    data = bytearray(path.read_bytes())
    data[min(at, len(data) - 1)] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_json(path: Path, fn):
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))


CHECKPOINT_DAMAGE = {
    "truncated model": lambda c: _truncate(c / "model.safetensors"),
    "flipped optimizer byte": lambda c: _flip(c / "trainer_state.pt", 200),
    "missing optimizer state": lambda c: (c / "trainer_state.pt").unlink(),
    "truncated state.json": lambda c: _truncate(c / "state.json"),
    "state.json step altered": lambda c: _edit_json(c / "state.json", lambda s: s.update(step=5)),
    "state.json key missing": lambda c: _edit_json(c / "state.json", lambda s: s.pop("sampler")),
    "state.json not an object": lambda c: (c / "state.json").write_text("[1, 2]"),
}


@pytest.mark.parametrize("damage", list(CHECKPOINT_DAMAGE))
def test_corrupt_checkpoint_is_reported_and_not_used(references, tmp_path, capsys, damage):
    cfg = static_cfg()
    runs = tmp_path / "runs"
    kill_run(cfg, runs, "step:13")  # the last checkpoint is step 10's
    ckpt = run_path(runs) / "checkpoint"
    assert json.loads((ckpt / "state.json").read_text())["step"] == 10
    CHECKPOINT_DAMAGE[damage](ckpt)
    steps = []
    res = train(cfg, runs_dir=runs, progress=False, on_step=steps.append)
    assert "is corrupt" in capsys.readouterr().out
    assert steps[0] == 1  # restarted from scratch: the damaged checkpoint was not used
    assert_same_result(res, RunDir(cfg, res["run_id"], runs).read_metrics(), references["static"])


@pytest.mark.parametrize("damage,message", [
    (lambda path: _truncate(path / "config.json"), "config.json is corrupt; rewriting it"),
    (lambda path: (path / "metrics.jsonl").open("a").write('{"step": 13, "train_lo'), ""),  # a line cut by a kill
])
def test_damaged_run_files_outside_the_checkpoint_do_not_change_the_result(references, tmp_path, capsys, damage,
                                                                          message):
    cfg = static_cfg()
    runs = tmp_path / "runs"
    kill_run(cfg, runs, "step:13")
    damage(run_path(runs))
    steps = []
    res = train(cfg, runs_dir=runs, progress=False, on_step=steps.append)
    assert steps[0] == 11 and message in capsys.readouterr().out
    assert_same_result(res, RunDir(cfg, res["run_id"], runs).read_metrics(), references["static"])


RESULT_DAMAGE = {
    "truncated": _truncate,
    "a loss altered": lambda p: _edit_json(p, lambda r: r["test_loss"].update(code=1.0)),
    "a key removed": lambda p: _edit_json(p, lambda r: r.pop("val_loss")),
    "not an object": lambda p: p.write_text("[]"),
    "not UTF-8": lambda p: p.write_bytes(b"\xff\xfe" + p.read_bytes()),
}


@pytest.mark.parametrize("damage", list(RESULT_DAMAGE))
def test_corrupt_result_is_reported_and_recomputed(references, tmp_path, capsys, damage):
    cfg = static_cfg()
    runs = tmp_path / "runs"
    path = copy_finished(references, runs) / "result.json"
    RESULT_DAMAGE[damage](path)
    steps = []
    res = train(cfg, runs_dir=runs, progress=False, on_step=steps.append)
    assert "will be recomputed" in capsys.readouterr().out
    assert steps  # recomputed, not used
    assert_same_result(res, RunDir(cfg, res["run_id"], runs).read_metrics(), references["static"])
    assert json.loads(path.read_text())["test_loss"] == references["static"][0]["test_loss"]


def test_corrupt_metrics_of_a_finished_run_are_recomputed(references, tmp_path, capsys):
    cfg = static_cfg()
    runs = tmp_path / "runs"
    metrics = copy_finished(references, runs) / "metrics.jsonl"
    metrics.write_text(metrics.read_text().replace('"step":10', '"step":11', 1))
    steps = []
    res = train(cfg, runs_dir=runs, progress=False, on_step=steps.append)
    assert "metrics.jsonl" in capsys.readouterr().out and steps
    assert_same_result(res, RunDir(cfg, res["run_id"], runs).read_metrics(), references["static"])


def _edit_entry(path: Path, fn):
    """Alter the JSON inside a gzipped cache entry and gzip it again: the file decodes, its content is wrong."""
    obj = json.loads(gzip.decompress(path.read_bytes()))
    fn(obj)
    path.write_bytes(gzip.compress(json.dumps(obj, indent=1, sort_keys=True).encode()))


def _as_legacy(path: Path) -> Path:
    """Turn a .json.gz cache entry into the plain .json entry of before 2026-12-06; returns the new file."""
    legacy = path.with_name(path.name.removesuffix(".gz"))
    legacy.write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    return legacy


CACHE_DAMAGE = {
    "truncated": _truncate,  # a cut gzip stream
    "a byte flipped": _flip,  # gzip's CRC-32
    "not gzip": lambda p: p.write_text("{not json"),
    "not JSON": lambda p: p.write_bytes(gzip.compress(b"{not json")),
    "a loss altered": lambda p: _edit_entry(p, lambda e: e["result"]["test_loss"].update(code=1.0)),
    "a metric altered": lambda p: _edit_entry(p, lambda e: e["metrics"][1].update(step=99)),
    "metrics missing": lambda p: _edit_entry(p, lambda e: e.pop("metrics")),
    "not an object": lambda p: p.write_bytes(gzip.compress(b"[]")),
    # entries of the plain .json format are verified the same way
    "legacy .json truncated": lambda p: _truncate(_as_legacy(p)),
    "legacy .json, a loss altered": lambda p: _edit_json(_as_legacy(p), lambda e: e["result"]["test_loss"].update(
        code=1.0)),
    "legacy .json not an object": lambda p: _as_legacy(p).write_text("[]"),
}


@pytest.mark.parametrize("damage", list(CACHE_DAMAGE))
def test_corrupt_committed_cache_entry_is_reported_and_recomputed(references, tmp_path, capsys, monkeypatch,
                                                                  damage):
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(tmp_path / "cache"))
    cfg = static_cfg()
    copy_finished(references, tmp_path / "a")
    run_a = RunDir(cfg, references["static"][0]["run_id"], tmp_path / "a")
    run_a.write_result({k: v for k, v in run_a.read_result().items() if k not in ("run_id", "format")})
    (entry,) = (tmp_path / "cache").iterdir()
    assert entry.name == references["static"][0]["run_id"][:20] + ".json.gz"
    CACHE_DAMAGE[damage](entry)
    steps = []
    res = train(cfg, runs_dir=tmp_path / "b", progress=False, on_step=steps.append)
    assert "cached result" in capsys.readouterr().out and steps
    assert_same_result(res, RunDir(cfg, res["run_id"], tmp_path / "b").read_metrics(), references["static"])
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]  # a damaged legacy .json is replaced
    # The recomputed run rewrote a good entry, which a third machine now restores without training.
    again = []
    assert train(cfg, runs_dir=tmp_path / "c", progress=False, on_step=again.append)["test_loss"] == res["test_loss"]
    assert again == []


def test_corrupt_result_json_falls_back_to_a_verified_cache_entry(references, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(tmp_path / "cache"))
    cfg = static_cfg()
    first = train(cfg, runs_dir=tmp_path / "a", progress=False)
    path = RunDir.from_result(first, tmp_path / "a").path / "result.json"
    _truncate(path)
    steps = []
    assert train(cfg, runs_dir=tmp_path / "a", progress=False, on_step=steps.append) == first
    assert steps == [] and "is corrupt" in capsys.readouterr().out
    assert json.loads(path.read_text()) == first


TOKEN_DAMAGE = {
    "flipped byte": lambda b, m: _flip(b, 10),
    "truncated": lambda b, m: _truncate(b),
    "meta not JSON": lambda b, m: m.write_text("{"),
    "meta not an object": lambda b, m: m.write_text("[]"),
    "meta missing": lambda b, m: m.unlink(),
}


@pytest.mark.parametrize("damage", list(TOKEN_DAMAGE))
def test_corrupt_token_store_file_is_rebuilt_and_training_is_unchanged(references, tmp_path, capsys, monkeypatch,
                                                                       damage):
    # A private copy of the token cache: the session's is memory-mapped by other tests.
    shared = Path(os.environ["AIOLI_CACHE"])
    shutil.copytree(shared, tmp_path / "cache")
    monkeypatch.setenv("AIOLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(train_mod, "_DATA_CACHE", {})
    cfg = static_cfg()
    data = train_mod.load_data(cfg, verbose=False)
    path = data.store.path("licenses", "train")
    good = path.read_bytes()
    monkeypatch.setattr(train_mod, "_DATA_CACHE", {})
    TOKEN_DAMAGE[damage](path, path.with_suffix(".json"))
    res = train(cfg, runs_dir=tmp_path / "runs", progress=True)
    out = capsys.readouterr()
    assert "does not match its checksum" in out.out + out.err
    assert path.read_bytes() == good
    assert_same_result(res, RunDir(cfg, res["run_id"], tmp_path / "runs").read_metrics(), references["static"])


def test_token_file_of_another_tokenizer_is_not_used(tmp_path, capsys):
    """Token files copied between stores (another tokenizer's ids under this tokenizer's key) are refused."""
    from aioli_repro.corpus import FolderCorpus
    from aioli_repro.token_store import TokenStore
    from aioli_repro.tokenizer import load_tokenizer, train_tokenizer

    src = FolderCorpus(TINY_CORPUS, val_fraction=0.2, test_fraction=0.2)
    tok = load_tokenizer(str(TINY_TOKENIZER))
    other = train_tokenizer(src.documents("licenses", "train"), vocab_size=300)
    mine = TokenStore(src, tok, tmp_path, verbose=False)
    good = np.array(mine.tokens("licenses", "val"))
    theirs = TokenStore(src, other, tmp_path, verbose=False)
    theirs.tokens("licenses", "val")
    for suffix in (".bin", ".json"):  # a self-consistent pair from the other store
        shutil.copy(theirs.path("licenses", "val").with_suffix(suffix), mine.path("licenses", "val").with_suffix(suffix))
    again = TokenStore(src, tok, tmp_path, verbose=True).tokens("licenses", "val")
    assert "does not match" in capsys.readouterr().out
    assert np.array_equal(np.array(again), good)


# ------------------------------------------------------------------------------------------------ NaN
def test_diverging_run_stops_naming_step_and_group_keeps_its_checkpoint_and_writes_no_result(tmp_path):
    cfg = make_cfg(steps=20, lr=1e30, warmup_steps=1, checkpoint_every=1, eval_every=0)
    runs = tmp_path / "runs"
    with pytest.raises(TrainingDiverged, match=r"non-finite training loss at step (\d+) of 20 on group\(s\) \['") \
            as err:
        train(cfg, runs_dir=runs, progress=False)
    bad_step = int(re.search(r"at step (\d+)", str(err.value)).group(1))
    assert "checkpoint" in str(err.value) and "no result" in str(err.value)
    path = run_path(runs)
    assert not (path / "result.json").exists()
    state = json.loads((path / "checkpoint" / "state.json").read_text())
    assert state["step"] == bad_step - 1 >= 1
    # The kept checkpoint is intact (checksums) and finite, and a retry fails the same way without a result.
    from aioli_repro.model import build_model

    run = RunDir(cfg, state["run_id"], runs)
    model = build_model("tiny", 512, 32, 0)
    assert run.load_checkpoint(model) is not None
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(TrainingDiverged, match=f"at step {bad_step} of 20"):
        train(cfg, runs_dir=runs, progress=False)
    assert not (path / "result.json").exists()


# ------------------------------------------------------------------------------------------------ two processes
def test_two_processes_compute_a_run_once(references, tmp_path, monkeypatch, capsys):
    from aioli_repro.cli import build_config, main, make_parser

    args = ["train", "--quiet", "--runs-dir", str(tmp_path / "runs"), "--corpus", str(TINY_CORPUS), "--tokenizer",
            str(TINY_TOKENIZER), "--preset", "tiny", "--context-length", "32", "--val-fraction", "0.2",
            "--test-fraction", "0.2", "--eval-sequences", "4", "--groups", "code,licenses", "--steps", "10",
            "--checkpoint-every", "5", "--eval-every", "5"]
    cfg = build_config(make_parser().parse_args(args))
    started, gate = tmp_path / "started", tmp_path / "go"

    def first_process():
        def hold(step):
            if step == 1:
                started.touch()
                deadline = time.time() + 30
                while not gate.exists() and time.time() < deadline:
                    time.sleep(0.01)
        res = train(cfg, runs_dir=tmp_path / "runs", progress=False, on_step=hold)
        (tmp_path / "a.json").write_text(json.dumps(res))

    def second_process():
        steps = []
        res = train(cfg, runs_dir=tmp_path / "runs", progress=False, on_step=steps.append)
        (tmp_path / "b.json").write_text(json.dumps({"result": res, "steps": steps, "t": time.time()}))

    monkeypatch.delenv("AIOLI_WAIT_FOR_LOCKS", raising=False)
    pid_a, pid_b = start_child(first_process), None
    try:
        deadline = time.time() + 30
        while not started.exists() and time.time() < deadline:
            time.sleep(0.01)
        assert started.exists()
        # Fail fast: the library raises RunLockedError, the command line says so and exits 2.
        with pytest.raises(RunLockedError, match="being computed by another process"):
            train(cfg, runs_dir=tmp_path / "runs", progress=False)
        capsys.readouterr()
        assert main(args) == 2
        assert "being computed by another process" in capsys.readouterr().err
        # Wait: the second process blocks on the lock, then takes the finished result without computing.
        pid_b = start_child(second_process, {"AIOLI_WAIT_FOR_LOCKS": "1"})
        time.sleep(0.5)
        assert os.waitpid(pid_b, os.WNOHANG) == (0, 0), "the waiting process did not wait"
    finally:
        gate.touch()
        statuses = [os.waitpid(pid, 0)[1] for pid in (pid_a, pid_b) if pid is not None]
    assert statuses == [0, 0]
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    path = run_path(tmp_path / "runs")
    assert b["steps"] == [] and b["result"] == a
    assert b["t"] >= (path / "result.json").stat().st_mtime
    assert sorted(p.name for p in path.iterdir()) == [".lock", "config.json", "metrics.jsonl", "result.json"]
    assert [r["step"] for r in RunDir(cfg, a["run_id"], tmp_path / "runs").read_metrics() if "val_loss" in r] \
        == [0, 5, 10]
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["test_perplexity"] == a["test_perplexity"]


# ------------------------------------------------------------------------------------------------ a study
@pytest.fixture
def tiny_study():
    from aioli_repro.profiles import PROFILES, Profile

    PROFILES["_faults"] = Profile(
        "_faults", "fault tests", DataConfig(corpus=str(TINY_CORPUS), tokenizer=str(TINY_TOKENIZER),
                                             context_length=32, val_fraction=0.2, test_fraction=0.2),
        ModelConfig("tiny"),
        TrainConfig(steps=12, batch_size=8, micro_batch_size=8, warmup_steps=3, eval_every=6, checkpoint_every=4,
                    eval_sequences=4, eval_batch_size=32, lr=3e-3),
        notes={"sweep_points": 3})
    hparams.SETTINGS["_faults"] = hparams.Setting("_faults", "F/L", ("github", "wikipedia"), ("code", "licenses"))
    yield "_faults"
    PROFILES.pop("_faults")
    hparams.SETTINGS.pop("_faults")


def test_interrupted_study_does_not_recompute_finished_runs(tiny_study, tmp_path, monkeypatch):
    from aioli_repro.tables import run_grid

    methods, settings = ("stratified", "grid"), ["_faults"]  # 1 + 3 runs of 12 steps
    reference = run_grid(methods, settings, tiny_study, [0], runs_dir=tmp_path / "ref", progress=False)
    runs = tmp_path / "runs"
    status = in_child(lambda: run_grid(methods, settings, tiny_study, [0], runs_dir=runs, progress=False),
                      {faults.ENV: "step:6:3"})  # killed inside the third run, after two finished
    assert killed(status)
    finished = {p: (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) for p in runs.glob("*/result.json")}
    assert len(finished) == 2
    computed = []
    real = train_mod._train_locked

    def counting(cfg, run, *args, **kwargs):
        computed.append(run.path.name)
        return real(cfg, run, *args, **kwargs)

    monkeypatch.setattr(train_mod, "_train_locked", counting)
    again = run_grid(methods, settings, tiny_study, [0], runs_dir=runs, progress=False)
    assert len(computed) == 2 and not {runs / c / "result.json" for c in computed} & set(finished)
    for p, (mtime, ino, data) in finished.items():
        assert (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) == (mtime, ino, data)
    assert again.drop(columns=["run_id"]).equals(reference.drop(columns=["run_id"]))
    assert list(again.run_id) == list(reference.run_id)
    computed.clear()
    run_grid(methods, settings, tiny_study, [0], runs_dir=runs, progress=False)
    assert computed == []


def test_cached_only_renders_the_finished_part_of_a_study_and_trains_nothing(tiny_study, tmp_path, monkeypatch):
    from aioli_repro.executors import NotCachedError
    from aioli_repro.tables import run_grid

    runs, settings = tmp_path / "runs", ["_faults"]
    with pytest.raises(NotCachedError, match="no unrestricted study"):
        run_grid(("stratified",), settings, tiny_study, [0], runs_dir=runs, progress=False, cached_only=True)
    done = run_grid(("stratified", "doremi"), settings, tiny_study, [0], runs_dir=runs, progress=False)
    computed = []
    real = train_mod._train_locked
    monkeypatch.setattr(train_mod, "_train_locked", lambda cfg, run, *a, **k: computed.append(run) or real(
        cfg, run, *a, **k))
    for model in runs.glob("*/model.safetensors"):
        model.unlink()  # DoReMi's reference weights: re-reading its finished result must not need them
    part = run_grid(("stratified", "doremi", "aioli"), settings, tiny_study, [0, 1], runs_dir=runs, progress=False,
                    cached_only=True)
    assert computed == [] and not list(runs.glob("aioli-*"))
    assert list(part.method) == ["doremi", "stratified"] and list(part.run_id) == sorted(
        done.run_id, key=lambda r: list(done.run_id).index(r))
    assert part.attrs["missing"] == ["aioli/_faults/seed 0", "stratified/_faults/seed 1", "doremi/_faults/seed 1",
                                     "aioli/_faults/seed 1"]


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("option,value", [("eta", "big"), ("lp_steps", 1.5), ("ema", [0.1])])
def test_method_option_of_the_wrong_type_is_refused(tmp_path, capsys, monkeypatch, option, value):
    from aioli_repro.cli import main

    monkeypatch.setattr(train_mod, "_train_locked", _no_training)
    args = ["--groups", "code,licenses", "--method", "aioli", "--method-config", json.dumps({**AIOLI2, option: value})]
    assert main([*CLI_BASE, "--runs-dir", str(tmp_path / "runs"), *args]) == 2
    assert f"aioli option {option} must be" in capsys.readouterr().err


@pytest.fixture
def finished_run(tmp_path, references):
    """A runs folder holding a finished run, to prove that bad input does not touch it."""
    copy_finished(references, tmp_path / "runs")
    return tmp_path / "runs"


@pytest.mark.parametrize("extra,message", BAD_CLI, ids=[" ".join(e)[:60] for e, _ in BAD_CLI])
def test_bad_command_line_fails_before_training_and_writes_nothing(finished_run, tmp_path, capsys, monkeypatch, extra,
                                                                  message):
    from aioli_repro.cli import main

    monkeypatch.setattr(train_mod, "_train_locked", _no_training)
    cache = Path(os.environ["AIOLI_CACHE"])
    before, cache_before = snapshot(finished_run), snapshot(cache)
    assert main([*CLI_BASE, "--runs-dir", str(finished_run), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert snapshot(finished_run) == before and snapshot(cache) == cache_before


def _no_training(*args, **kwargs):
    raise AssertionError("training started")


def test_bad_corpus_files_fail_before_training(tmp_path, capsys, monkeypatch):
    from aioli_repro.cli import main

    monkeypatch.setattr(train_mod, "_train_locked", _no_training)
    monkeypatch.setattr(train_mod, "_DATA_CACHE", {})
    monkeypatch.setenv("AIOLI_CACHE", str(tmp_path / "cold-cache"))  # a warm cache holds tokens verified at build
    for name, damage, message in [
        ("missing", lambda c: (c / "licenses.jsonl.gz").unlink(), "licenses.jsonl.gz is missing"),
        ("altered", lambda c: _flip(c / "licenses.jsonl.gz", 50), "does not match its manifest"),
        ("no manifest", lambda c: (c / "manifest.json").unlink(), "no corpus manifest at"),
    ]:
        corpus = tmp_path / name
        shutil.copytree(TINY_CORPUS, corpus)
        damage(corpus)
        runs = tmp_path / f"runs-{name}"
        code = main([*CLI_BASE, "--runs-dir", str(runs), "--groups", "code,licenses", "--corpus", str(corpus)])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (name, err)
        # No run folder; the damaged group was never tokenised (the sound group's verified tokens may be cached).
        assert not runs.exists() and not list((tmp_path / "cold-cache").rglob("licenses/*"))


def test_corrupt_corpus_manifest_is_named(tmp_path, capsys, monkeypatch):
    from aioli_repro.cli import main

    monkeypatch.setattr(train_mod, "_train_locked", _no_training)
    shutil.copytree(TINY_CORPUS, tmp_path / "corpus")
    (tmp_path / "corpus" / "manifest.json").write_text("{")
    assert main([*CLI_BASE, "--runs-dir", str(tmp_path / "runs"), "--groups", "code,licenses", "--corpus",
                 str(tmp_path / "corpus")]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_run_all_cached_only_renders_only_notebooks_that_can_and_refuses_the_others():
    from aioli_repro import pipeline

    can = [p.name[:2] for p in pipeline.notebooks() if pipeline.accepts_cached_only(p)]
    assert can == ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13"]  # 00 trains its baseline
    with pytest.raises(SystemExit, match="none of the chosen notebooks can render without training"):
        pipeline.main(["--profile", "smoke", "--cached-only", "--only", "00"])


def test_unknown_profile_setting_and_method_for_studies(capsys, tmp_path):
    from aioli_repro import pipeline
    from aioli_repro.cli import main

    with pytest.raises(SystemExit) as e:
        pipeline.main(["--profile", "nope"])
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    for args, message in [(["method", "aioli", "--profile", "nope"], "unknown profile 'nope'"),
                          (["method", "magic", "--profile", "smoke"], "unknown method 'magic'"),
                          (["method", "aioli", "--setting", "reddit", "--profile", "smoke"], "unknown setting 'reddit'"),
                          (["method", "aioli", "--profile", "smoke", "--jobs", "0"], "jobs must be"),
                          ]:
        assert main([*args, "--runs-dir", str(tmp_path / "runs")]) == 2
        assert message in capsys.readouterr().err, args
    assert not (tmp_path / "runs").exists()


def test_notebook_parameters_of_the_wrong_type_fail_early(tmp_path, monkeypatch):
    """papermill passes -p values through unchecked: ``-p seeds 0,1`` arrives as the string "0,1"."""
    from aioli_repro import report, tables
    from aioli_repro.profiles import check_study_parameters

    monkeypatch.setattr(train_mod, "_train_locked", _no_training)
    for kwargs, message in [
        ({"profile": 3}, "unknown profile 3"),
        ({"profile": "nope"}, "unknown profile 'nope'"),
        ({"profile": "smoke", "seeds": "0,1"}, "seeds must be a list of integers"),
        ({"profile": "smoke", "seeds": 0}, "seeds must be a list of integers"),
        ({"profile": "smoke", "seeds": [0.5]}, "seeds must be a list of integers"),
        ({"profile": "smoke", "settings": "arxiv_stackexchange"}, "settings must be a list"),
        ({"profile": "smoke", "settings": ["reddit"]}, "unknown setting 'reddit'"),
        ({"profile": "smoke", "jobs": "2"}, "jobs must be an integer >= 1"),
        ({"profile": "smoke", "jobs": 0}, "jobs must be an integer >= 1"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_study_parameters(**kwargs)
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        report.results_dir("nope")
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        report.figures_dir("nope")
    assert not (REPO / "results" / "nope").exists() and not (REPO / "figures" / "nope").exists()
    with pytest.raises(ConfigError, match="seeds must be a list of integers"):
        tables.run_grid(("aioli",), ["arxiv_stackexchange"], "smoke", "0,1", runs_dir=tmp_path)
    with pytest.raises(ConfigError, match="settings must be a list"):
        tables.run_grid(("aioli",), "arxiv_stackexchange", "smoke", [0], runs_dir=tmp_path)
    with pytest.raises(ConfigError, match="seeds must be a list of integers"):
        profiles.study_seeds("smoke", "0")
    assert not tmp_path.joinpath("runs").exists()


# ------------------------------------------------------------------------------------------------ safety
UNSAFE = [
    (r"\bimport\s+(pickle|cPickle|dill|joblib|shelve|marshal)\b|\bfrom\s+(pickle|dill|joblib)\b", "a pickle module"),
    (r"\bread_pickle\s*\(|\bto_pickle\s*\(", "pandas pickle"),
    (r"\byaml\.load\s*\(", "yaml.load (use safe_load)"),
    (r"allow_pickle\s*=\s*True", "np.load(allow_pickle=True)"),
]


def test_nothing_read_back_is_unpickled():
    sources = [*(REPO / "aioli_repro").rglob("*.py"), *(REPO / "scripts").rglob("*.py")]
    texts = {str(p.relative_to(REPO)): p.read_text() for p in sources}
    for nb in (REPO / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        texts[str(nb.relative_to(REPO))] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    problems = []
    for name, text in texts.items():
        for pattern, what in UNSAFE:
            problems += [f"{name}: {what}" for _ in re.finditer(pattern, text)]
        for call in re.finditer(r"torch\.load\s*\(", text):  # every torch.load passes weights_only=True
            args = text[call.end(): text.find(")", call.end()) + 1]
            if "weights_only=True" not in args:
                problems.append(f"{name}: torch.load without weights_only=True")
    assert not problems, problems
    assert "torch.load" in texts["aioli_repro/runs.py"]  # the check above did look at the one real call


GUARD = """
import json, socket, sys
attempts = []
_real_socket = socket.socket

class NoNetworkSocket(_real_socket):
    def __init__(self, family=-1, *args, **kwargs):
        if family in (socket.AF_INET, socket.AF_INET6, -1):
            attempts.append(f"socket({family})")
            raise OSError("network access is disabled in this test")
        super().__init__(family, *args, **kwargs)

def _deny(*args, **kwargs):
    attempts.append(f"getaddrinfo{args[:2]}")
    raise OSError("network access is disabled in this test")

socket.socket = NoNetworkSocket
socket.getaddrinfo = _deny
import torch
torch.set_num_threads(1)
from aioli_repro.cli import main
try:
    code = main(sys.argv[1:])
finally:
    print("NETWORK_ATTEMPTS=" + json.dumps(attempts), file=sys.stderr)
sys.exit(code)
"""


def test_fresh_processes_killed_and_restarted_resume_exactly_without_network(tmp_path):
    """The command line in fresh interpreters: killed by SIGKILL inside LearnParams, restarted with the network
    cut off (and the Hugging Face offline switches removed, so a library reaching out would show)."""
    from aioli_repro.cli import build_config, make_parser

    args = [*CLI_BASE[:-2], "--steps", "20", "--groups", ",".join(TINY_GROUPS), "--method", "aioli",
            "--method-config", json.dumps(AIOLI), "--batch-size", "8", "--micro-batch-size", "4", "--warmup-steps",
            "3", "--eval-every", "10", "--checkpoint-every", "4", "--eval-batch-size", "16", "--runs-dir",
            str(tmp_path / "runs")]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                             "TRANSFORMERS_OFFLINE")}
    env.update(ONE_THREAD, PYTHONPATH=str(REPO))
    killed_proc = subprocess.run([sys.executable, "-m", "aioli_repro", *args], cwd=tmp_path, capture_output=True,
                                 text=True, env={**env, faults.ENV: "learn_params:13"}, timeout=120)
    assert killed_proc.returncode == -signal.SIGKILL, killed_proc.stderr[-2000:]
    restarted = subprocess.run([sys.executable, "-c", GUARD, *args], cwd=tmp_path, capture_output=True, text=True,
                               env=env, timeout=120)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "NETWORK_ATTEMPTS=[]" in restarted.stderr, restarted.stderr[-2000:]
    # Exactly the uninterrupted result (computed here, in this process).
    cfg = build_config(make_parser().parse_args(args))
    ref = train(cfg, runs_dir=tmp_path / "ref", progress=False)
    res = json.loads((run_path(tmp_path / "runs") / "result.json").read_text())
    for key in COMPARED:
        assert res[key] == ref[key], key
    assert json.loads(restarted.stdout)["test_perplexity"] == ref["test_perplexity"]
