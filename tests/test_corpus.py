import gzip
import json
import shutil

import pytest

from aioli_repro.corpus import EMBEDDED_CORPUS, FolderCorpus, split_documents
from aioli_repro.errors import CorpusError

from .conftest import TINY_CORPUS


def _docs(n=200):
    return [f"document {i} " + "x" * (50 + 7 * (i % 13)) for i in range(n)]


def test_split_is_seeded_disjoint_and_complete():
    docs = _docs()
    a = split_documents(docs, seed=3, val_fraction=0.1, test_fraction=0.1)
    b = split_documents(docs, seed=3, val_fraction=0.1, test_fraction=0.1)
    c = split_documents(docs, seed=4, val_fraction=0.1, test_fraction=0.1)
    assert a == b
    assert a["test"] != c["test"]
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(docs)
    assert not set(a["train"]) & set(a["test"]) and not set(a["val"]) & set(a["test"])


def test_split_fractions_are_by_bytes_and_random_not_positional():
    docs = _docs(1000)
    s = split_documents(docs, seed=0, val_fraction=0.05, test_fraction=0.05)
    total = sum(map(len, docs))
    for split in ("val", "test"):
        share = sum(map(len, s[split])) / total
        assert 0.045 < share < 0.06, (split, share)
    # A positional split would put only the last documents into test; ours draws from the whole range.
    idx = sorted(int(d.split()[1]) for d in s["test"])
    assert idx[0] < 200 and idx[-1] > 800


def test_every_split_gets_a_document_even_with_few_large_ones():
    docs = ["y" * 1000 for _ in range(3)]
    docs = [d + str(i) for i, d in enumerate(docs)]
    s = split_documents(docs, seed=0, val_fraction=0.05, test_fraction=0.05)
    assert all(len(s[k]) == 1 for k in ("train", "val", "test"))


def test_altered_corpus_file_is_refused(tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(TINY_CORPUS, root)
    path = root / "code.jsonl.gz"
    lines = gzip.open(path, "rt").read().splitlines()
    lines[0] = json.dumps({"text": "tampered " * 40, "source": "x"})
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match="does not match its manifest"):
        FolderCorpus(root).documents("code", "train")


def test_missing_corpus_is_reported(tmp_path):
    with pytest.raises(CorpusError, match="no corpus manifest"):
        FolderCorpus(tmp_path)


def test_embedded_corpus_has_seven_real_groups_of_5_to_8_mb():
    corpus = FolderCorpus(EMBEDDED_CORPUS)
    manifest = corpus.manifest["groups"]
    assert len(manifest) == 7
    analogues = {m["slimpajama_analogue"] for m in manifest.values()}
    assert analogues == {"arxiv", "book", "c4", "commoncrawl", "github", "stackexchange", "wikipedia"}
    for name, meta in manifest.items():
        assert 5_000_000 <= meta["raw_bytes"] <= 8_500_000, name
        assert meta["sources"] and all(s["licence"] and s["version"] for s in meta["sources"]), name


def test_embedded_group_matches_manifest_counts():
    corpus = FolderCorpus(EMBEDDED_CORPUS)
    docs = corpus.raw_documents("code")  # verifies the sha256 on the way
    meta = corpus.manifest["groups"]["code"]
    assert len(docs) == meta["documents"]
    assert sum(len(d.encode()) for d in docs) == meta["raw_bytes"]
    assert any("def " in d for d in docs[:20])
