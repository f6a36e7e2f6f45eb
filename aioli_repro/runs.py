"""Run directories you can trust: identity by config hash, atomic writes, checksummed checkpoints, one writer.

Layout of ``runs/<name>-<id12>/``::

    config.json        resolved config + run id (written once)
    metrics.jsonl      one JSON record per logged step / evaluation
    checkpoint/        model.safetensors, trainer_state.pt (tensors, loaded with weights_only=True), state.json
    result.json        written last, atomically; its presence means the run finished

A finished run is never recomputed. An unfinished one resumes from its last checkpoint. A checkpoint whose files do
not match the checksums in its ``state.json`` is reported and ignored (the run restarts), never silently used.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from . import faults
from .config import RunConfig, canonical_json
from .paths import REPO_ROOT, atomic_write_bytes, atomic_write_json, sha256_file
from .run_cache import (
    CACHE_SUFFIX,
    find_cache_entry,
    read_cache_entry,
    result_cache_dir,
    write_cache_entry,
)

RESULT_FORMAT = 1


def default_runs_dir() -> Path:
    return Path(os.environ.get("AIOLI_RUNS", REPO_ROOT / "runs"))


def note_used(run_id: str) -> None:
    """Append ``run_id`` to the file named by ``AIOLI_USED_RUNS``, if set: the runs a render read or trained, so
    ``python -m aioli_repro cache`` can sum what they cost and list the cached runs no table uses any more. One short
    ``O_APPEND`` write per run, so the parallel workers of a study can share the file."""
    path = os.environ.get("AIOLI_USED_RUNS")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (run_id + "\n").encode())
        finally:
            os.close(fd)


class RunLockedError(RuntimeError):
    """Another process is computing this run."""


class RunDir:
    def __init__(self, cfg: RunConfig, rid: str, runs_dir: Path | str | None = None):
        self.cfg, self.id = cfg, rid
        label = (cfg.name or cfg.method).replace("/", "_").replace(" ", "_")
        self.path = Path(runs_dir or default_runs_dir()) / f"{label}-{rid[:12]}"
        self._lock_fd: int | None = None

    @classmethod
    def from_result(cls, result: dict[str, Any], runs_dir: Path | str | None = None) -> RunDir:
        """The directory of a finished run, from its result.json content."""
        return cls(RunConfig.from_dict(result["config"]), result["run_id"], runs_dir)

    # ------------------------------------------------------------ locking
    def acquire(self, wait: bool = False) -> None:
        """Take the run's lock so two processes never compute the same run at once."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(f"run {self.path.name} is being computed by another process") from None
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------ config, metrics, result
    def write_config(self, extra: dict[str, Any]) -> None:
        path = self.path / "config.json"
        payload = {"run_id": self.id, "config": self.cfg.to_dict(), "fingerprints": extra}
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError):
                old = None
            if isinstance(old, dict) and "run_id" in old:
                if old["run_id"] != self.id:
                    raise RuntimeError(f"{path} belongs to run {old['run_id']}, not {self.id}; refusing to overwrite")
                return
            print(f"[runs] {path} is corrupt; rewriting it")
        atomic_write_json(path, payload)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(canonical_json(record) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Drop records logged after ``step`` (they are recomputed when a run resumes from that step)."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if rec.get("step", 0) <= step:
                keep.append(line)
        atomic_write_bytes(path, "".join(k + "\n" for k in keep).encode())

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl by ``records`` (a finished run's own, kept when it is trained again for weights)."""
        atomic_write_bytes(self.path / "metrics.jsonl", "".join(canonical_json(r) + "\n" for r in records).encode())

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @property
    def cache_path(self) -> Path | None:
        """Where this run's cache entry is written (``<id20>.json.gz``); reading also accepts a legacy ``.json``
        (:meth:`cached_entry_path`)."""
        root = result_cache_dir()
        return None if root is None else root / f"{self.id[:20]}{CACHE_SUFFIX}"

    @property
    def cached_entry_path(self) -> Path | None:
        """The file that holds this run's cache entry now, in either format, or None."""
        return find_cache_entry(result_cache_dir(), self.id[:20])

    def read_result(self) -> dict[str, Any] | None:
        res = self._read_result()
        if res is not None:
            note_used(self.id)
        return res

    def _read_result(self) -> dict[str, Any] | None:
        path = self.path / "result.json"
        if not path.exists():
            return self._restore_from_cache()
        try:
            res = json.loads(path.read_text())
        except (OSError, ValueError):
            res = None
        if (problem := self._result_problem(res)) is not None:
            print(f"[runs] {path} {problem}; the run will be recomputed unless a verified cached copy exists")
            return self._restore_from_cache()
        return res

    def _result_problem(self, res, check_metrics: bool = True) -> str | None:
        """Why a result.json content must not be used (None if it is sound): wrong run or format, a checksum that
        does not match (results written since checksums exist carry one), missing keys, altered metrics."""
        if not isinstance(res, dict):
            return "is corrupt (not a JSON object)"
        if res.get("run_id") != self.id or res.get("format") != RESULT_FORMAT:
            return "does not belong to this run or has an old format"
        if not _seal_ok(res, "sha256"):
            return "is corrupt (does not match its checksum)"
        if missing := [k for k in ("config", "val_loss", "test_loss", "policy") if k not in res]:
            return f"is corrupt (lacks {missing})"
        metrics = self.path / "metrics.jsonl"
        if check_metrics and "metrics_sha256" in res and (not metrics.is_file()
                                                          or sha256_file(metrics) != res["metrics_sha256"]):
            return "is corrupt (its metrics.jsonl does not match the checksum recorded when the run finished)"
        return None

    def write_result(self, result: dict[str, Any]) -> None:
        result = {**{k: v for k, v in result.items() if k not in ("sha256", "metrics_sha256")},
                  "run_id": self.id, "format": RESULT_FORMAT}
        if (self.path / "metrics.jsonl").is_file():
            result["metrics_sha256"] = sha256_file(self.path / "metrics.jsonl")
        result["sha256"] = config_digest(result)
        atomic_write_json(self.path / "result.json", result)
        note_used(self.id)
        if self.cache_path is not None:
            entry = {"result": result, "metrics": self.read_metrics()}
            write_cache_entry(self.cache_path, {**entry, "sha256": config_digest(entry)})

    # A finished run trained again for what its result does not hold (weights, branch states) keeps its first result.
    # That result is set aside here for the retrain's duration, so an interrupted retrain still finds it even where
    # result.json no longer verifies (its metrics are rewritten) and the result cache is off.
    @property
    def first_result_path(self) -> Path:
        return self.path / "first_result.json"

    def keep_first_result(self, result: dict[str, Any], metrics: list[dict[str, Any]]) -> None:
        if not self.first_result_path.exists():
            kept = {"result": result, "metrics": metrics}
            atomic_write_json(self.first_result_path, {**kept, "sha256": config_digest(kept)})

    def read_first_result(self) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        if not self.first_result_path.exists():
            return None
        try:
            kept = json.loads(self.first_result_path.read_text())
            # Unlike a cache entry, this file is never committed, so a missing checksum is no excuse.
            if "sha256" in kept and _seal_ok(kept, "sha256") and kept["result"].get("run_id") == self.id:
                return kept["result"], kept["metrics"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        print(f"[runs] {self.first_result_path} is unreadable or corrupt; the retrain's own result will stand")
        return None

    def drop_first_result(self) -> None:
        self.first_result_path.unlink(missing_ok=True)

    def _restore_from_cache(self) -> dict[str, Any] | None:
        """A run finished elsewhere (its compact copy is committed): rebuild result.json and metrics.jsonl here."""
        path = self.cached_entry_path
        if path is None:
            return None
        try:
            entry = read_cache_entry(path)
            res, metrics = entry["result"], entry["metrics"]
            problem = None if isinstance(metrics, list) and _seal_ok(entry, "sha256") else "is corrupt (checksum)"
            problem = problem or self._result_problem(res, check_metrics=False)
        except (OSError, ValueError, KeyError, TypeError) as e:  # CorruptCacheEntry: a ValueError
            problem = f"is corrupt ({(e.__cause__ or e).__class__.__name__})"
        if problem is not None:
            print(f"[runs] cached result {path} {problem}; the run will be recomputed")
            return None
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path / "metrics.jsonl", "".join(canonical_json(r) + "\n" for r in metrics).encode())
        if (problem := self._result_problem(res)) is not None:
            print(f"[runs] cached result {path} {problem}; the run will be recomputed")
            return None
        atomic_write_json(self.path / "result.json", res)
        return res

    @property
    def model_path(self) -> Path:
        """Final weights, saved only for runs asked to keep them (``train(..., keep_model=True)``)."""
        return self.path / "model.safetensors"

    # ------------------------------------------------------------ checkpoints
    @property
    def ckpt(self) -> Path:
        return self.path / "checkpoint"

    def _write_state(self, folder: Path, model, tensors: dict[str, Any], state: dict[str, Any]) -> None:
        """Model (safetensors), tensors (torch.save, read back with weights_only=True) and a JSON state that records
        both files' checksums, written into ``folder`` (which must not exist yet)."""
        folder.mkdir(parents=True)
        save_model(model, str(folder / "model.safetensors"))
        faults.hit("checkpoint", state.get("step", -1))
        torch.save(tensors, folder / "trainer_state.pt")
        state = {**state, "run_id": self.id,
                 "sha256": {f: sha256_file(folder / f) for f in ("model.safetensors", "trainer_state.pt")}}
        state["state_sha256"] = config_digest(state)
        atomic_write_json(folder / "state.json", state)

    def _read_state(self, folder: Path, model, run_id: str | None = None):
        """Load a folder written by ``_write_state``; None (with a message) if it is missing, corrupt or foreign."""
        state_path = folder / "state.json"
        if not state_path.exists():
            return None
        try:
            state = json.loads(state_path.read_text())
            bad = [f for f, h in state["sha256"].items() if sha256_file(folder / f) != h]
            bad += [] if _seal_ok(state, "state_sha256") else ["state.json (checksum)"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            state, bad = {}, [f"state.json ({e.__class__.__name__})"]
        if bad or state.get("run_id") != (run_id or self.id):
            print(f"[runs] checkpoint {folder} is corrupt or foreign ({bad or 'run id'}); ignoring it")
            return None
        load_model(model, str(folder / "model.safetensors"))
        return torch.load(folder / "trainer_state.pt", weights_only=True), state

    def save_checkpoint(self, model, tensors: dict[str, Any], state: dict[str, Any]) -> None:
        """Write a complete checkpoint to a temporary folder, then swap it in with renames."""
        tmp = self.path / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self._write_state(tmp, model, tensors, state)
        old = self.path / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.ckpt.exists():
            os.replace(self.ckpt, old)
            faults.hit("checkpoint_swap", state.get("step", -1))
        os.replace(tmp, self.ckpt)
        shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, model) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Load the last good checkpoint into ``model``; returns (tensors, state) or None if there is none."""
        for folder in (self.ckpt, self.path / "checkpoint.old"):  # .old survives a crash between the two renames
            if (loaded := self._read_state(folder, model)) is not None:
                return loaded
        return None

    # ------------------------------------------------------------ branch points (kept after the run ends)
    def branch_path(self, step: int) -> Path:
        return self.path / "branches" / f"step_{step}"

    def save_branch(self, step: int, model, tensors: dict[str, Any], state: dict[str, Any]) -> None:
        """A permanent copy of the training state at ``step``, from which child runs branch."""
        final = self.branch_path(step)
        if final.exists():
            return
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self._write_state(tmp, model, tensors, state)
        os.replace(tmp, final)

    def has_branches(self, steps) -> bool:
        return all((self.branch_path(s) / "state.json").exists() for s in steps)

    def branch_points(self, steps) -> dict[str, dict[str, Any]]:
        """{step: the validation losses and policy summary at that branch point} for the saved ``steps`` (JSON only:
        a child's L^t and the parent's policy history, without the weights), as recorded in the run's result."""
        out = {}
        for s in sorted(int(x) for x in steps):
            path = self.branch_path(s) / "state.json"
            if path.exists():
                state = json.loads(path.read_text())
                out[str(s)] = {"val_loss": state["val_loss"], "policy_summary": state.get("policy_summary", {})}
        return out

    @staticmethod
    def load_branch(parent_id: str, step: int, runs_dir, model):
        """Find the parent run's branch point and load it into ``model``; (tensors, state)."""
        matches = list(Path(runs_dir or default_runs_dir()).glob(f"*-{parent_id[:12]}"))
        for parent_dir in matches:
            shell = RunDir.__new__(RunDir)
            shell.id, shell.path = parent_id, parent_dir
            if (loaded := shell._read_state(shell.branch_path(step), model)) is not None:
                return loaded
        raise RuntimeError(f"no branch point at step {step} of parent run {parent_id[:12]} in {runs_dir}: train the "
                           "parent with keep_steps=(step,) first")

    def remove_checkpoint(self) -> None:
        for folder in ("checkpoint", "checkpoint.tmp", "checkpoint.old"):
            shutil.rmtree(self.path / folder, ignore_errors=True)


def config_digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def _seal_ok(obj: dict[str, Any], key: str) -> bool:
    """True if ``obj[key]`` is the digest of the rest of ``obj``, or if ``obj`` has no ``key`` (written before
    checksums were added; committed copies of those are protected by git's own hashes)."""
    return key not in obj or obj[key] == config_digest({k: v for k, v in obj.items() if k != key})
