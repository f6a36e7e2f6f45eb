"""Command lines that must fail before training with a clear error, shared by the CLI tests (a fresh runs folder
stays empty) and the reliability tests (a runs folder holding a finished run is left untouched)."""

import json

from .conftest import TINY_CORPUS, TINY_TOKENIZER

AIOLI = {"eta": 0.5, "lp_rounds": 1, "lp_steps": 1, "one_hot_factor": 0.5, "ema": 0.1, "update_steps": 10}
"""A tiny Aioli config: rounds of 10 steps, one LearnParams step per group."""
CLI_BASE = ["train", "--quiet", "--corpus", str(TINY_CORPUS), "--tokenizer", str(TINY_TOKENIZER), "--preset", "tiny",
            "--context-length", "32", "--val-fraction", "0.2", "--test-fraction", "0.2", "--eval-sequences", "4",
            "--steps", "20"]
AIOLI2 = {**AIOLI, "one_hot_factor": 0.75}  # two groups: h must exceed 1/2

BAD_CLI = [
    (["--groups", "code,nope"], "unknown group(s) ['nope']; this corpus has"),
    (["--groups", "code"], "a mixture needs at least two groups"),
    (["--groups", "code,code"], "duplicate group names: ['code']"),
    (["--groups", "code,licenses", "--proportions", "1,-1"], "proportions must be non-negative"),
    (["--groups", "code,licenses", "--proportions", "nan,1"], "NaN"),
    (["--groups", "code,licenses", "--proportions", "0,0"], "sum to zero"),
    (["--groups", "code,licenses", "--proportions", "1,1,1"], "expected 2 proportions"),
    (["--groups", "code,licenses", "--steps", "0"], "train.steps must be a positive integer"),
    (["--groups", "code,licenses", "--batch-size", "6", "--micro-batch-size", "4"], "must be a multiple of"),
    (["--groups", "code,licenses", "--method", "nope"], "unknown method 'nope'"),
    (["--groups", "code,licenses", "--preset", "huge"], "unknown model preset 'huge'"),
    (["--groups", "code,licenses", "--device", "tpu"], "train.device must be auto, cpu, cuda or mps"),
    (["--groups", "code,licenses", "--stop-at", "30"], "train.stop_at must lie in [0, steps=20]"),
    (["--groups", "code,licenses", "--lr", "-1"], "train.lr must be a positive number"),
    (["--groups", "code,licenses", "--val-fraction", "0.7"], "data.val_fraction must lie in (0, 0.5)"),
    (["--groups", "code,licenses", "--context-length", "4"], "data.context_length must be >= 8"),
    (["--groups", "code,licenses", "--method", "aioli", "--method-config", json.dumps({**AIOLI2, "one_hot_factor": 0.4})],
     "one_hot_factor must lie in (1/m, 1]"),
    (["--groups", "code,licenses", "--method", "aioli", "--method-config", json.dumps({**AIOLI2, "one_hot_factor": 1.5})],
     "one_hot_factor must lie in (1/m, 1]"),
    (["--groups", "code,licenses", "--method", "aioli", "--method-config", json.dumps({**AIOLI2, "lp_steps": 5})],
     "does not fit in a round of 10 steps"),
    (["--groups", "code,licenses", "--method", "aioli", "--method-config",
      json.dumps({**AIOLI2, "prior": [0.5, 0.5], "prior_steps": 20})], "prior_steps must lie in [0, total steps=20)"),
    (["--groups", "code,licenses", "--method", "aioli", "--method-config", json.dumps({**AIOLI2, "etaa": 1})],
     "unknown option(s) ['etaa'] for method 'aioli'"),
    (["--groups", "code,licenses", "--method-config", "{not json"], "--method-config must be a JSON object"),
    (["--groups", "code,licenses", "--method-config", "[1, 2]"], "--method-config must be a JSON object"),
    (["--groups", "code,licenses", "--corpus", "/nonexistent/corpus"], "no corpus manifest at /nonexistent/corpus"),
    (["--groups", "code,licenses", "--tokenizer", "/nonexistent/tok"], "no tokenizer at /nonexistent/tok"),
    (["--groups", "arxiv,book", "--corpus", "slimpajama"],
     "is not cached here and the Hugging Face hub cannot be reached. Use the embedded offline corpus"),
]
