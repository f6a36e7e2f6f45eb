import json
import subprocess
import sys

import pytest

from aioli_repro.cli import main

from .conftest import TINY_CORPUS, TINY_TOKENIZER

TINY = ["--corpus", str(TINY_CORPUS), "--tokenizer", str(TINY_TOKENIZER), "--preset", "tiny", "--context-length",
        "32", "--val-fraction", "0.2", "--test-fraction", "0.2", "--eval-sequences", "4"]


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


@pytest.mark.parametrize("extra,message", [
    (["--groups", "code,nope"], "unknown group"),
    (["--groups", "code"], "at least two groups"),
    (["--groups", "code,code"], "duplicate group"),
    (["--groups", "code,licenses", "--proportions", "1,-1"], "non-negative"),
    (["--groups", "code,licenses", "--proportions", "1,1,1"], "expected 2 proportions"),
    (["--groups", "code,licenses", "--proportions", "0,0"], "sum to zero"),
    (["--groups", "code,licenses", "--proportions", "nan,1"], "NaN"),
    (["--groups", "code,licenses", "--steps", "0"], "steps must be a positive"),
    (["--groups", "code,licenses", "--batch-size", "6", "--micro-batch-size", "4"], "multiple of"),
    (["--groups", "code,licenses", "--method", "nope"], "unknown method"),
    (["--groups", "code,licenses", "--device", "tpu"], "device"),
    (["--groups", "code,licenses", "--preset", "huge"], "unknown model preset"),
])
def test_bad_input_gives_a_clear_error_and_writes_nothing(tmp_path, capsys, extra, message):
    code = main(["train", "--quiet", "--runs-dir", str(tmp_path / "runs"), *TINY, *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_argument_of_the_wrong_type_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--steps", "many"])
    assert "invalid int value" in capsys.readouterr().err
