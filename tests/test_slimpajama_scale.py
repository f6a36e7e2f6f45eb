"""SlimPajama at scale on the local fixture: the parallel, sharded, resumable train-split build gives exactly the
serial build, resumes after an interruption without redoing finished shards, and never leaves a file that passes
its checksum but is incomplete."""

import json

import numpy as np
import pytest

import aioli_repro.slimpajama as sp
from aioli_repro.slimpajama import SET_NAMES, SlimPajamaSource, build_train_tokens
from aioli_repro.token_store import TokenStore
from aioli_repro.tokenizer import load_tokenizer

from .conftest import ASSETS

FIXTURE = {"train": str(ASSETS / "slimpajama_fixture" / "train.jsonl"),
           "test": str(ASSETS / "slimpajama_fixture" / "test.jsonl")}
GROUPS = list(SET_NAMES)


class SerialSource(SlimPajamaSource):
    build_token_files = None  # the plain TokenStore path: one process, the whole document list


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("embedded")


@pytest.fixture(scope="module")
def serial(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("serial")
    store = TokenStore(SerialSource(data_files=FIXTURE, cache_dir=str(root / "hf")), tok, cache_dir=root / "tok",
                       verbose=False)
    return {g: np.array(store.tokens(g, "train")) for g in GROUPS}


def _store(tmp_path, tok, workers=1, shard_rows=10, groups=None):
    src = SlimPajamaSource(groups=groups, data_files=FIXTURE, cache_dir=str(tmp_path / "hf"), workers=workers,
                           shard_rows=shard_rows)
    return TokenStore(src, tok, cache_dir=tmp_path / "tok", verbose=False)


def test_parallel_build_equals_the_serial_build_and_builds_every_wanted_group_in_one_pass(tmp_path, tok, serial):
    store = _store(tmp_path, tok, workers=2, shard_rows=7)  # 84 rows: 12 shards over 2 processes
    first = np.array(store.tokens("github", "train"))  # one pass builds all seven groups' train files
    assert all(store.path(g, "train").is_file() for g in GROUPS)
    assert np.array_equal(first, serial["github"])
    for g in GROUPS:
        assert np.array_equal(np.array(store.tokens(g, "train")), serial[g]), g
        meta = json.loads(store.path(g, "train").with_suffix(".json").read_text())
        assert meta["documents"] == 12 and meta["tokens"] == serial[g].size and meta["store"] == store.key
    assert not (store.root / "_parts").exists()  # the parts are removed once every group is assembled
    assert store.tokens("github", "val").size > 0  # validation/test: the serial path, as before


def test_an_interrupted_build_resumes_and_redoes_only_unfinished_shards(tmp_path, tok, serial, monkeypatch):
    store = _store(tmp_path, tok, workers=1, shard_rows=10, groups=["arxiv", "book"])
    real, calls = sp._tokenize_shard, []

    def crash_after_three(*a):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the machine goes away mid-build
        calls.append(a[2])
        return real(*a)

    monkeypatch.setattr(sp, "_tokenize_shard", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        store.tokens("arxiv", "train")
    assert not store.path("arxiv", "train").exists() and not store.path("book", "train").exists()
    parts = store.root / "_parts" / "train-rows10"
    # A half-written part of the shard that was running: a temporary file, never marked done.
    (parts / "shard_00003").mkdir(parents=True, exist_ok=True)
    (parts / "shard_00003" / ".arxiv.bin.tmp").write_bytes(b"\x01\x00" * 5)

    calls.clear()
    monkeypatch.setattr(sp, "_tokenize_shard", lambda *a: calls.append(a[2]) or real(*a))
    fresh = _store(tmp_path, tok, workers=1, shard_rows=10, groups=["arxiv", "book"])
    assert np.array_equal(np.array(fresh.tokens("arxiv", "train")), serial["arxiv"])
    assert np.array_equal(np.array(fresh.tokens("book", "train")), serial["book"])
    assert calls == list(range(3, 9))  # shards 0-2 were kept; 84 rows / 10 = 9 shards


def test_a_corrupt_part_is_caught_at_assembly_and_retokenised(tmp_path, tok, serial, monkeypatch):
    store = _store(tmp_path, tok, workers=1, shard_rows=30, groups=["wikipedia", "c4"])
    real = sp._assemble
    flipped = []

    def corrupt_then_assemble(store_, split, groups, shards, parts, writer):
        if not flipped:  # flip one byte of a finished part, keeping its size
            part = next(p for p in sorted(parts.glob("shard_*/wikipedia.bin")) if p.stat().st_size)
            data = bytearray(part.read_bytes())
            data[0] ^= 0xFF
            part.write_bytes(bytes(data))
            flipped.append(part)
        return real(store_, split, groups, shards, parts, writer)

    monkeypatch.setattr(sp, "_assemble", corrupt_then_assemble)
    counts = build_train_tokens(store.source, store, ["wikipedia", "c4"])
    assert counts == {"wikipedia": serial["wikipedia"].size, "c4": serial["c4"].size}
    assert np.array_equal(np.array(store.tokens("wikipedia", "train")), serial["wikipedia"])


def test_a_final_file_without_its_checksum_record_is_never_used(tmp_path, tok, serial):
    store = _store(tmp_path, tok, workers=1, shard_rows=40, groups=["github", "book"])
    path = store.path("github", "train")
    path.parent.mkdir(parents=True)
    path.write_bytes(serial["github"][: serial["github"].size // 2].tobytes())  # renamed in, then a crash
    assert np.array_equal(np.array(store.tokens("github", "train")), serial["github"])
