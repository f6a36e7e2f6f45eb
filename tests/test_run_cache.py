"""The run cache's storage format: entries are gzipped JSON (``<id20>.json.gz``, deterministic bytes), the plain
``<id20>.json`` entries of before are still read, and ``cache --compress`` converts them.

Expected bytes come from the standard library (``gzip``, ``json``, ``hashlib``), not from the helpers under test.
"""

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from aioli_repro.cli import main
from aioli_repro.config import RunConfig
from aioli_repro.executors import cached_result
from aioli_repro.run_cache import cache_entries, read_cache_entry
from aioli_repro.runs import RunDir
from aioli_repro.train import train
from aioli_repro.usage import runs_cost

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results" / "run_cache"


def old_bytes(obj) -> bytes:
    """How a cache entry was written before it was gzipped (``atomic_write_json``)."""
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def seal(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def hand_result(cfg, loss: float) -> dict:
    groups = list(cfg.data.groups)
    return {"config": cfg.to_dict(), "name": cfg.name, "method": cfg.method, "val_loss": dict.fromkeys(groups, loss),
            "test_loss": dict.fromkeys(groups, loss + 0.25), "policy": {"kind": "hand-built"},
            "wall_time_s": 10.0, "eval_time_s": 2.0}


def finish(cfg, rid, runs_dir, loss=3.0, metrics=({"step": 1, "loss": 4.0}, {"step": 2, "loss": 3.5})) -> RunDir:
    """A finished run written without training: metrics.jsonl, then ``write_result`` (which writes the cache)."""
    run = RunDir(cfg, rid, runs_dir)
    run.path.mkdir(parents=True)
    for rec in metrics:
        run.append_metrics(dict(rec))
    run.write_result(hand_result(cfg, loss))
    return run


def to_legacy(path: Path) -> Path:
    legacy = path.with_name(path.name.removesuffix(".gz"))
    legacy.write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    return legacy


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_new_run_writes_a_gzipped_entry_holding_the_json_of_the_old_format(tiny_cfg, cache, tmp_path):
    res = train(tiny_cfg(steps=4), runs_dir=tmp_path / "a", progress=False)
    run = RunDir.from_result(res, tmp_path / "a")
    (path,) = cache.iterdir()
    assert path.name == res["run_id"][:20] + ".json.gz" and run.cache_path == path
    data = path.read_bytes()
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"  # gzip, mtime 0
    raw = gzip.decompress(data)
    entry = json.loads(raw)
    assert raw == old_bytes(entry)  # the bytes a plain entry held
    assert data == gzip.compress(raw, compresslevel=9, mtime=0)
    metrics = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert entry == {"result": res, "metrics": metrics, "sha256": seal({"result": res, "metrics": metrics})}
    assert read_cache_entry(path) == entry


def test_writing_the_same_entry_twice_gives_the_same_bytes(tiny_cfg, cache, tmp_path):
    cfg = tiny_cfg()
    run = finish(cfg, "1" * 64, tmp_path / "a")
    first = run.cache_path.read_bytes()
    run.write_result(hand_result(cfg, 3.0))
    assert run.cache_path.read_bytes() == first
    finish(cfg, "1" * 64, tmp_path / "b")  # another machine, the same run
    assert run.cache_path.read_bytes() == first
    assert [p.name for p in cache.iterdir()] == ["1" * 20 + ".json.gz"]  # no temporary file left


def test_a_legacy_json_entry_is_found_and_restored(tiny_cfg, cache, tmp_path):
    cfg = tiny_cfg()
    run = finish(cfg, "2" * 64, tmp_path / "a")
    legacy = to_legacy(run.cache_path)
    assert [p.name for p in cache.iterdir()] == ["2" * 20 + ".json"]
    clone = RunDir(cfg, "2" * 64, tmp_path / "clone")
    assert clone.read_result() == run.read_result() and clone.read_metrics() == run.read_metrics()
    assert cache_entries(cache) == [legacy]
    assert runs_cost(["2" * 20], cache=cache, runs_dir=tmp_path / "none")["recorded_s"] == 12.0
    # Writing the run's entry again replaces the legacy file by the .json.gz.
    run.write_result(run.read_result())
    assert [p.name for p in cache.iterdir()] == ["2" * 20 + ".json.gz"]
    assert gzip.decompress(run.cache_path.read_bytes()) == legacy_bytes(run)


def legacy_bytes(run) -> bytes:
    result = json.loads((run.path / "result.json").read_text())
    metrics = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    return old_bytes({"result": result, "metrics": metrics, "sha256": seal({"result": result, "metrics": metrics})})


def test_the_gzipped_entry_wins_over_a_legacy_twin(tiny_cfg, cache, tmp_path):
    cfg = tiny_cfg()
    run = finish(cfg, "3" * 64, tmp_path / "a", loss=3.0)
    stale = gzip.decompress(run.cache_path.read_bytes())
    finish(cfg, "3" * 64, tmp_path / "b", loss=2.0)
    (cache / ("3" * 20 + ".json")).write_bytes(stale)  # a legacy twin of other (valid) content
    clone = RunDir(cfg, "3" * 64, tmp_path / "clone")
    assert clone.read_result()["val_loss"] == dict.fromkeys(cfg.data.groups, 2.0)
    assert [p.name for p in cache_entries(cache)] == ["3" * 20 + ".json.gz"]


@pytest.mark.parametrize("damage", ["truncated", "byte flipped", "not gzip", "gzip of no JSON", "emptied"])
def test_a_corrupt_gzipped_entry_is_reported_and_not_used(tiny_cfg, cache, tmp_path, capsys, damage):
    cfg = tiny_cfg()
    path = finish(cfg, "4" * 64, tmp_path / "a").cache_path
    data = path.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "byte flipped": data[:40] + bytes([data[40] ^ 0xFF]) + data[41:],
               "not gzip": gzip.decompress(data), "gzip of no JSON": gzip.compress(b"{not json"), "emptied": b""}
    path.write_bytes(damaged[damage])
    capsys.readouterr()
    assert RunDir(cfg, "4" * 64, tmp_path / "clone").read_result() is None  # train() would recompute it
    assert f"cached result {path} is corrupt" in capsys.readouterr().out


def _copy_committed(dest: Path, n: int = 12) -> list[Path]:
    """A few committed entries (legacy .json ones where the committed cache is not migrated yet)."""
    files = sorted(COMMITTED.glob("*.json")) or sorted(COMMITTED.glob("*.json.gz"))
    picked = files[:: max(1, len(files) // n)][:n]
    dest.mkdir(parents=True, exist_ok=True)
    for f in picked:
        shutil.copy2(f, dest / f.name)
    return picked


def test_compress_converts_a_legacy_cache_idempotently_and_lookups_find_the_same_results(tiny_cfg, cache, tmp_path,
                                                                                      capsys):
    cfg = tiny_cfg()
    trained_cfg = tiny_cfg(steps=4)
    trained = train(trained_cfg, runs_dir=tmp_path / "t", progress=False)
    to_legacy(RunDir.from_result(trained, tmp_path / "t").cache_path)
    legacy = {}
    for i, loss in enumerate((3.0, 2.5, 2.0)):
        run = finish(cfg, f"{i + 5}" * 64, tmp_path / "a", loss=loss)
        legacy[to_legacy(run.cache_path).name] = run.read_result()
    committed = _copy_committed(cache)
    originals = {p.name: p.read_bytes() for p in cache.iterdir()}
    if committed[0].name.endswith(".json"):
        assert len(originals) == 1 + len(legacy) + len(committed)
    n_legacy = sum(name.endswith(".json") for name in originals)

    assert main(["cache", "--compress"]) == 0
    out = capsys.readouterr().out
    assert f"{n_legacy} .json entries compressed to .json.gz, 0 .json removed" in out
    assert f"before: {len(originals)} files" in out and f"after: {len(originals)} files" in out
    after = {p.name: p.read_bytes() for p in cache.iterdir()}
    assert sorted(after) == sorted(n if n.endswith(".gz") else n + ".gz" for n in originals)
    for name, data in originals.items():
        if name.endswith(".json"):
            raw = gzip.decompress(after[name + ".gz"])
            assert raw == old_bytes(json.loads(data)) == data  # the committed files were written this way
            assert after[name + ".gz"] == gzip.compress(raw, compresslevel=9, mtime=0)

    assert main(["cache", "--compress"]) == 0  # again: nothing to do
    assert "0 .json entries compressed to .json.gz, 0 .json removed" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == after

    for result in legacy.values():  # a lookup without a run directory restores each from its .json.gz
        assert RunDir(cfg, result["run_id"], tmp_path / "clone").read_result() == result
    assert cached_result(trained_cfg, tmp_path / "clone", resolve_auto=True) == trained  # as a cached-only render
    for f in committed:  # real entries: their checksums still verify, and the same results come back
        original = json.loads(f.read_bytes()) if f.name.endswith(".json") else read_cache_entry(f)
        res = original["result"]
        run = RunDir(RunConfig.from_dict(res["config"]), res["run_id"], tmp_path / "clone")
        assert old_bytes(run.read_result()) == old_bytes(res)  # NaN-safe comparison
        assert old_bytes(run.read_metrics()) == old_bytes(original["metrics"])


def test_compress_removes_identical_twins_and_keeps_conflicts_and_undecodable_files(tiny_cfg, cache, tmp_path,
                                                                                    capsys):
    cfg = tiny_cfg()
    twin = finish(cfg, "a" * 64, tmp_path / "a").cache_path
    (cache / ("a" * 20 + ".json")).write_bytes(gzip.decompress(twin.read_bytes()))  # the same entry in both formats
    conflict = finish(cfg, "b" * 64, tmp_path / "a", loss=3.0).cache_path
    other = gzip.decompress(conflict.read_bytes()).replace(b"3.0", b"3.5")
    (cache / ("b" * 20 + ".json")).write_bytes(other)
    (cache / ("c" * 20 + ".json")).write_text("{broken")
    broken_gz = finish(cfg, "d" * 64, tmp_path / "a").cache_path  # an undecodable .json.gz beside a good .json
    good = gzip.decompress(broken_gz.read_bytes())
    (cache / ("d" * 20 + ".json")).write_bytes(good)
    broken_gz.write_bytes(b"garbage")

    assert main(["cache", "--compress"]) == 1
    out = capsys.readouterr().out
    assert "1 .json entries compressed to .json.gz, 1 .json removed beside an identical .json.gz; 4 entries" in out
    assert f"warning: {'b' * 20}.json was kept" in out and f"warning: {'c' * 20}.json was kept" in out
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        ["a" * 20 + ".json.gz", "b" * 20 + ".json", "b" * 20 + ".json.gz", "c" * 20 + ".json", "d" * 20 + ".json.gz"])
    assert (cache / ("b" * 20 + ".json")).read_bytes() == other
    assert gzip.decompress(broken_gz.read_bytes()) == good


def test_compress_refuses_without_a_cache_and_beside_prune(monkeypatch, capsys, cache):
    assert main(["cache", "--compress", "--prune"]) == 2
    assert "separate steps" in capsys.readouterr().err
    monkeypatch.setenv("AIOLI_RESULT_CACHE", "off")
    assert main(["cache", "--compress"]) == 2
    assert "nothing to compress" in capsys.readouterr().err
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(cache / "absent"))
    assert main(["cache", "--compress"]) == 2
    assert "no run cache to compress" in capsys.readouterr().err
