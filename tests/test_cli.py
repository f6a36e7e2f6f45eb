import argparse
import json
import subprocess
import sys

import pytest

from aioli_repro import cli, pipeline
from aioli_repro.cli import main

from .cli_cases import BAD_CLI, CLI_BASE
from .conftest import TINY_CORPUS, TINY_TOKENIZER

TINY = ["--corpus", str(TINY_CORPUS), "--tokenizer", str(TINY_TOKENIZER), "--preset", "tiny", "--context-length",
        "32", "--val-fraction", "0.2", "--test-fraction", "0.2", "--eval-sequences", "4"]


def test_one_subcommand_per_stage():
    actions = [a for a in cli.make_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = list(actions[0].choices)
    stages = ["prepare", "train", "method", "run-all", "bench", "cache"]
    assert [c for c in commands if c in stages] == stages  # in the order of the stages
    assert set(commands) - set(stages) == {"groups", "tokenizer"}  # the data stage's helpers, beside prepare


def test_run_all_takes_run_all_shs_options_and_runs_its_pipeline(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "run_all", lambda args: seen.append(args) or 0)
    argv = ["--profile", "smoke", "--jobs", "2", "--only", "00", "04", "--cached-only"]
    assert main(["run-all", *argv]) == 0
    expected = vars(pipeline.add_arguments(argparse.ArgumentParser()).parse_args(argv))
    assert {k: v for k, v in vars(seen[0]).items() if k != "command"} == expected
    assert expected == {"profile": "smoke", "jobs": 2, "only": ["00", "04"], "cached_only": True}


def test_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "aioli_repro", "train", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ("--groups", "--proportions", "--steps", "--lr", "--warmup-steps", "--seed", "--preset",
                 "--micro-batch-size", "--checkpoint-every", "--device"):
        assert flag in out
    assert "common random numbers" in out  # the field docstrings are the help text


def test_train_command_runs_and_reuses(tmp_path, capsys):
    args = ["train", "--groups", "code,licenses", "--proportions", "0.7,0.3", "--steps", "6", "--quiet",
            "--runs-dir", str(tmp_path), *TINY]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["groups"] == ["code", "licenses"] and first["steps"] == 6
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == first


@pytest.mark.parametrize("extra,message", BAD_CLI, ids=[" ".join(e)[:60] for e, _ in BAD_CLI])
def test_bad_input_gives_a_clear_error_and_writes_nothing(tmp_path, capsys, extra, message):
    code = main([*CLI_BASE, "--runs-dir", str(tmp_path / "runs"), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_argument_of_the_wrong_type_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--steps", "many"])
    assert "invalid int value" in capsys.readouterr().err
