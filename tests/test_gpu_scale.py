"""scripts/gpu_scale.py: notebook 13's study on another device, packed, and imported into the run cache here."""

from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_scale.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_import_adds_new_entries_skips_identical_ones_and_never_overwrites_other_content(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ("a" * 20 + ".json")).write_bytes(b"same")
    (cache / ("b" * 20 + ".json")).write_bytes(b"ours")
    archive = _archive(tmp_path / "r.tar.gz", {"a" * 20 + ".json": b"same", "b" * 20 + ".json": b"theirs",
                                               "c" * 20 + ".json.gz": b"new"})
    counts = _script().import_runs(archive, cache)
    assert counts == {"added": 1, "identical": 1, "conflicting": 1}
    assert (cache / ("b" * 20 + ".json")).read_bytes() == b"ours" and (cache / ("c" * 20 + ".json.gz")).read_bytes() == b"new"
    bad = _archive(tmp_path / "bad.tar.gz", {"../" + "d" * 20 + ".json": b"x"})
    with pytest.raises(SystemExit, match="not a run-cache entry"):
        _script().import_runs(bad, cache)
    assert not (tmp_path / ("d" * 20 + ".json")).exists()


@pytest.mark.slow
def test_the_study_runs_on_the_named_device_and_its_runs_render_from_the_cache_after_import(tmp_path, monkeypatch):
    from aioli_repro import hparams, scale
    from aioli_repro.executors import Runner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIOLI_RESULT_CACHE", "off")  # the script points it at its own folder; restored after the test
    out = tmp_path / "out"
    assert _script().main([str(out), "--profile", "smoke", "--presets", "tiny", "--device", "cpu", "--jobs", "1",
                           "--settings", "arxiv_stackexchange"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["gpu_scale.csv", "gpu_scale.json", "gpu_scale_runs.tar.gz"]
    written = pd.read_csv(out / "gpu_scale.csv")
    assert set(written.device) == {"cpu"} and set(written.preset) == {"tiny"}
    cache = tmp_path / "cache"
    counts = _script().import_runs(out / "gpu_scale_runs.tar.gz", cache)
    assert counts["added"] == 3 + 2 * 3  # a 3-point sweep, and stratified + two Aioli forms for each of 2 seeds
    # With only the imported cache and an empty runs folder, the device's own configs find every run; none trains
    monkeypatch.setenv("AIOLI_RESULT_CACHE", str(cache))
    reader = Runner(cached_only=True, runs_dir=tmp_path / "no_runs", progress=False)
    gaps = scale.gap_summary(scale.aioli_gap([hparams.get_setting("arxiv_stackexchange")], ["tiny"], "smoke", [0, 1],
                                             reader, device="cpu"))
    row = written[written.measure == "aioli_minus_stratified"].iloc[0]
    assert gaps.set_index("form").loc["aioli", "mean"] == pytest.approx(row["mean"])
    plain = scale.aioli_gap([hparams.get_setting("arxiv_stackexchange")], ["tiny"], "smoke", [0, 1], reader)
    assert plain.empty and len(plain.attrs["missing"]) == 2  # the profile's own device: other run ids, not run
