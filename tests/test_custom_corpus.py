"""Bring your own data: a two-group corpus folder written in the test, trained on like the embedded corpus."""

import gzip
import json

import numpy as np
import pytest

from aioli_repro.config import DataConfig, ModelConfig, RunConfig, TrainConfig, run_id
from aioli_repro.corpus import FolderCorpus, open_source, write_corpus
from aioli_repro.errors import ConfigError, CorpusError
from aioli_repro.train import train

from .conftest import TINY_TOKENIZER

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _documents(kind: str, n: int = 40) -> list[str]:
    """Two kinds of text a mixing method can tell apart: English-like recipes and Python-like code."""
    rng = np.random.default_rng(0 if kind == "recipes" else 1)
    if kind == "recipes":
        words = "take the flour and mix it with water then bake for an hour until golden serve warm".split()
        return [" ".join(rng.choice(words, 120)).capitalize() + "." for _ in range(n)]
    names = ["x", "y", "total", "item", "values"]
    return ["\n".join(f"def f{i}_{j}({rng.choice(names)}):\n    return {rng.choice(names)} + {j}" for j in range(12))
            for i in range(n)]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("my_corpus")
    write_corpus(root, {"recipes": _documents("recipes"), "snippets": _documents("code")},
                 sources={"recipes": "generated recipes", "snippets": "generated Python"})
    return root


def _cfg(corpus: str, method="static", mc=None, steps=12) -> RunConfig:
    return RunConfig(
        data=DataConfig(groups=("recipes", "snippets"), corpus=corpus, tokenizer=str(TINY_TOKENIZER),
                        context_length=32, val_fraction=0.2, test_fraction=0.2),
        model=ModelConfig("tiny"),
        train=TrainConfig(steps=steps, batch_size=8, micro_batch_size=8, warmup_steps=2, eval_every=6,
                          checkpoint_every=0, eval_sequences=4, eval_batch_size=16, lr=3e-3),
        method=method, method_config=mc or {}, name="custom-corpus")


def test_the_written_folder_is_a_verified_corpus_with_seeded_document_splits(corpus_dir):
    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    assert sorted(manifest["groups"]) == ["recipes", "snippets"]
    assert manifest["groups"]["recipes"]["documents"] == 40
    assert manifest["groups"]["snippets"]["description"] == "generated Python"
    with gzip.open(corpus_dir / "snippets.jsonl.gz", "rt") as f:
        first = json.loads(f.readline())
    assert set(first) == {"source", "text"} and first["text"].startswith("def f0_0(")
    src = open_source(str(corpus_dir), split_seed=0, val_fraction=0.2, test_fraction=0.2)
    splits = {s: src.documents("recipes", s) for s in ("train", "val", "test")}
    assert sum(len(v) for v in splits.values()) == 40 and all(splits.values())
    assert not set(splits["train"]) & set(splits["test"])
    # the fingerprint keys the token store and every run id: it moves with the split seed and with the content
    assert FolderCorpus(corpus_dir, split_seed=1).fingerprint != src.fingerprint
    again = corpus_dir.parent / "same_texts"
    write_corpus(again, {"recipes": _documents("recipes"), "snippets": _documents("code")},
                 sources={"recipes": "generated recipes", "snippets": "generated Python"})
    assert (again / "recipes.jsonl.gz").read_bytes() == (corpus_dir / "recipes.jsonl.gz").read_bytes()
    assert FolderCorpus(again).fingerprint == FolderCorpus(corpus_dir).fingerprint  # content, not location


def test_a_tiny_run_trains_on_the_custom_corpus(corpus_dir, tmp_path):
    res = train(_cfg(str(corpus_dir), mc={"proportions": [0.7, 0.3]}), runs_dir=tmp_path / "runs", progress=False)
    assert res["groups"] == ["recipes", "snippets"] and res["steps"] == 12
    assert np.isfinite(res["avg_test_perplexity"]) and set(res["test_loss"]) == {"recipes", "snippets"}
    # an online method runs on it too (ODM: its rewards come from the training loss of each group)
    odm = train(_cfg(str(corpus_dir), "odm", {"reward": "exp_loss"}), runs_dir=tmp_path / "runs", progress=False)
    assert sum(odm["policy"]["average_weights"]) == pytest.approx(1)
    cfg = _cfg(str(corpus_dir))
    assert run_id(cfg, {"corpus": "a"}) != run_id(cfg, {"corpus": "b"})  # the corpus fingerprint enters the run id


def test_a_corpus_with_unknown_groups_or_altered_files_is_refused(corpus_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown group"):
        FolderCorpus(corpus_dir).check_groups(["recipes", "poems"])
    copy = tmp_path / "altered"
    write_corpus(copy, {"recipes": _documents("recipes"), "snippets": _documents("code")})
    with gzip.open(copy / "recipes.jsonl.gz", "wt") as f:
        f.write(json.dumps({"source": "x", "text": "changed"}) + "\n")
    with pytest.raises(CorpusError, match="does not match its manifest"):
        FolderCorpus(copy).raw_documents("recipes")
    with pytest.raises(CorpusError, match="at least 3"):
        write_corpus(tmp_path / "small", {"a": ["one", "two"]})
    with pytest.raises(ConfigError, match="plain name"):
        write_corpus(tmp_path / "bad", {"books@100": ["a", "b", "c"]})
