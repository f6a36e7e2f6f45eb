"""The allocator of training processes (allocator.py): which library is chosen, that workers really load it, and
that it changes no number, so that leaving it out of the run id is right."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aioli_repro import allocator
from aioli_repro.errors import ConfigError
from aioli_repro.local_executors import LocalPoolExecutor

from .cli_cases import AIOLI

TCMALLOC = allocator.find_tcmalloc()
# .ci/run installs tcmalloc and sets this, so CI fails, rather than skips, the tests that need the real library.
needs_tcmalloc = pytest.mark.skipif(TCMALLOC is None and not os.environ.get("AIOLI_REQUIRE_TCMALLOC"),
                                    reason="no tcmalloc here (apt-get install libtcmalloc-minimal4)")


def test_tcmalloc_is_found_in_the_first_folder_that_holds_it(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert allocator.find_tcmalloc((str(a), str(b))) is None
    (b / "libtcmalloc.so.4").touch()
    assert allocator.find_tcmalloc((str(a), str(b))) == b / "libtcmalloc.so.4"
    (a / "libtcmalloc_minimal.so.4").touch()
    assert allocator.find_tcmalloc((str(a), str(b))) == a / "libtcmalloc_minimal.so.4"


def test_the_setting_picks_auto_system_or_a_named_library(tmp_path, monkeypatch):
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.touch()
    assert allocator.preload_library("auto", dirs=(str(tmp_path),)) == lib
    assert allocator.preload_library("system", dirs=(str(tmp_path),)) is None
    assert allocator.preload_library(str(lib)) == lib
    monkeypatch.setenv(allocator.ENV, "system")
    assert allocator.preload_library(dirs=(str(tmp_path),)) is None
    with pytest.raises(ConfigError, match="AIOLI_MALLOC='/no/such/libtcmalloc.so'"):
        allocator.preload_library("/no/such/libtcmalloc.so")


def test_the_library_goes_first_in_ld_preload_once_and_the_parent_gets_its_own_back(tmp_path, monkeypatch):
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.touch()
    env = allocator.child_env({"LD_PRELOAD": f"/x/a.so:{lib} /x/b.so", "HOME": "/h"}, lib)
    assert env == {"LD_PRELOAD": f"{lib} /x/a.so /x/b.so", "HOME": "/h"}
    assert allocator.child_env({"HOME": "/h"}, None) == {"HOME": "/h"}

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    with allocator.for_children(str(lib)) as chosen:
        assert chosen == lib and os.environ["LD_PRELOAD"] == str(lib)
    assert "LD_PRELOAD" not in os.environ
    monkeypatch.setenv("LD_PRELOAD", "/x/a.so")
    with allocator.for_children(str(lib)):
        assert os.environ["LD_PRELOAD"] == f"{lib} /x/a.so"
    assert os.environ["LD_PRELOAD"] == "/x/a.so"
    with allocator.for_children("system") as chosen:
        assert chosen is None and os.environ["LD_PRELOAD"] == "/x/a.so"


def _job_preload(lines: list[str], env: dict[str, str]) -> str:
    """What LD_PRELOAD holds after a job script's ``lines`` run in bash with ``env``."""
    script = "\n".join([*lines, 'printf %s "$LD_PRELOAD"'])
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True).stdout


def test_a_jobs_script_finds_the_library_on_the_node_when_the_job_starts(tmp_path):
    a, b = tmp_path / "no lib here", tmp_path / "b"  # a space, to check the quoting
    a.mkdir(), b.mkdir()
    lines = allocator.job_setup_lines("auto", dirs=(str(a), str(b)))
    assert _job_preload(lines, {}) == ""  # written before the library exists: nothing found, nothing preloaded
    (b / "libtcmalloc.so.4").touch()  # created after the lines were written: found when the job runs them
    assert _job_preload(lines, {}) == f"{b}/libtcmalloc.so.4"
    (a / "libtcmalloc_minimal.so.4").touch()
    assert _job_preload(lines, {"LD_PRELOAD": "/x/a.so"}) == f"{a}/libtcmalloc_minimal.so.4 /x/a.so"
    assert allocator.job_setup_lines("system", dirs=(str(a),)) == []
    named = allocator.job_setup_lines(str(b / "libtcmalloc.so.4"))
    assert _job_preload(named, {"LD_PRELOAD": "/x/a.so"}) == f"{b}/libtcmalloc.so.4 /x/a.so"
    with pytest.raises(ConfigError, match="no such library"):
        allocator.job_setup_lines(str(tmp_path / "missing.so"))


@pytest.mark.skipif(allocator.find_tcmalloc((str(Path(sys.prefix) / "lib"),)) is not None,
                    reason="this environment's own lib holds tcmalloc, which comes before the job's conda env")
def test_by_default_a_jobs_script_looks_in_the_jobs_own_conda_environment_first(tmp_path):
    lib = tmp_path / "env" / "lib" / "libtcmalloc_minimal.so.4"
    lib.parent.mkdir(parents=True)
    lib.touch()
    lines = allocator.job_setup_lines("auto")
    assert _job_preload(lines, {"CONDA_PREFIX": str(tmp_path / "env")}) == str(lib)
    expected = allocator.find_tcmalloc(allocator.SYSTEM_DIRS)  # no conda env: the node's system folders
    assert _job_preload(lines, {}) == (str(expected) if expected else "")


def _loaded_allocator() -> list[str]:
    """The tcmalloc libraries mapped into this (worker) process."""
    with open("/proc/self/maps") as f:
        return sorted({line.split()[-1] for line in f if "tcmalloc" in line})


@needs_tcmalloc
def test_pool_workers_load_tcmalloc_unless_told_to_use_the_system_malloc(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "auto")
    assert LocalPoolExecutor(jobs=1).map(_loaded_allocator, [()], progress=False) == [[os.path.realpath(TCMALLOC)]]
    monkeypatch.setenv(allocator.ENV, "system")
    assert LocalPoolExecutor(jobs=1).map(_loaded_allocator, [()], progress=False) == [[]]


def _train_and_report(cfg_dict, runs_dir):
    from aioli_repro.config import RunConfig
    from aioli_repro.train import train

    result = train(RunConfig.from_dict(cfg_dict), runs_dir=runs_dir, progress=False)
    return result, _loaded_allocator()


@needs_tcmalloc
def test_tcmalloc_changes_no_number_of_a_run(tiny_cfg, tmp_path, monkeypatch):
    """Why the allocator is not in the run id: the same run trained under each gives identical metrics, bit for bit.
    Aioli is the method with most code paths (training, LearnParams' evaluations, the final evaluation)."""
    cfg = tiny_cfg(steps=20, method="aioli", method_config=AIOLI, checkpoint_every=0, eval_every=5).to_dict()
    results = {}
    for setting in ("system", "auto"):
        monkeypatch.setenv(allocator.ENV, setting)
        [(results[setting], loaded)] = LocalPoolExecutor(jobs=1).map(
            _train_and_report, [(cfg, str(tmp_path / setting))], progress=False)
        assert bool(loaded) == (setting == "auto")
    timings = {"wall_time_s", "train_tokens_per_s", "eval_time_s", "peak_rss_mb", "sha256"}  # sha256: of the record, timings included
    system, tcmalloc = ({k: v for k, v in r.items() if k not in timings} for r in results.values())
    assert system["learn_params_steps"] > 0
    assert system == tcmalloc  # metrics_sha256 included: the whole metrics log is identical
