"""The in-run throughput summary (``bench --in-runs``): read from cached results, nothing trained."""

import gzip
import json

import pytest

from aioli_repro.bench import in_run_throughput
from aioli_repro.profiles import get_profile


def _entry(run_id, tokens_per_s, stop_at=0, branch=None, device="cpu", preset=None, method="stratified"):
    prof = get_profile("full")
    cfg = {"model": {"preset": preset or prof.model.preset}, "data": {"context_length": prof.data.context_length},
           "train": {"batch_size": prof.train.batch_size, "steps": prof.train.steps, "stop_at": stop_at}}
    return {"result": {"run_id": run_id, "name": "x", "method": method, "groups": ["a", "b"], "seed": 0,
                       "config": cfg, "branch": branch, "device": device, "train_tokens_per_s": tokens_per_s,
                       "flops_per_token": 5e6, "wall_time_s": 100.0, "eval_time_s": 10.0, "peak_rss_mb": 900.0}}


def test_in_run_throughput_reads_only_full_length_cpu_runs_of_the_recipe(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    entries = {"a" * 20: _entry("a" * 64, 8000.0), "b" * 20: _entry("b" * 64, 4000.0),
               "c" * 20: _entry("c" * 64, 9e9, stop_at=400), "d" * 20: _entry("d" * 64, 9e9, branch={"parent": "a"}),
               "e" * 20: _entry("e" * 64, 9e9, device="cuda"), "f" * 20: _entry("f" * 64, 9e9, preset="20m"),
               "g" * 20: _entry("g" * 64, 10.0, method="doge_proxy")}
    for i, (name, entry) in enumerate(entries.items()):  # legacy .json entries and .json.gz ones
        data = json.dumps(entry).encode()
        if i % 2:
            (cache / f"{name}.json.gz").write_bytes(gzip.compress(data))
        else:
            (cache / f"{name}.json").write_bytes(data)
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(cache))
    df = in_run_throughput("full", peak_gflops=100.0, out=tmp_path / "t.csv")
    assert sorted(df.run_id) == ["a" * 12, "b" * 12, "g" * 12]  # the table keeps the proxy run; the summary does not
    plain = df[df.method == "stratified"]
    assert sorted(plain.model_gflops) == pytest.approx([20.0, 40.0]) and sorted(
        plain.mfu_of_machine) == pytest.approx([0.2, 0.4])
    assert (tmp_path / "t.csv").exists() and "machine MFU about 0.60 (median)" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="run `python -m aioli_repro bench` first"):
        in_run_throughput("full", speed_report=tmp_path / "missing.json", out=None)
