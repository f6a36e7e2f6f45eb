
import pytest

from aioli_repro.errors import ConfigError, CorpusError
from aioli_repro.slimpajama import SET_NAMES, SlimPajamaSource
from aioli_repro.token_store import TokenStore
from aioli_repro.tokenizer import load_tokenizer

from .conftest import ASSETS

FIXTURE = {"train": str(ASSETS / "slimpajama_fixture" / "train.jsonl"),
           "test": str(ASSETS / "slimpajama_fixture" / "test.jsonl")}


def test_local_fixture_in_the_hub_schema_loads_by_group_and_split(tmp_path):
    src = SlimPajamaSource(data_files=FIXTURE, cache_dir=str(tmp_path / "hf"))
    assert set(src.groups) == set(SET_NAMES)
    train = src.documents("github", "train")
    val, test = src.documents("github", "val"), src.documents("github", "test")
    assert len(train) == 12 and len(val) == 4 and len(test) == 4
    assert not set(val) & set(test)
    assert any("def " in d or "import" in d for d in train)  # the github analogue is Python code
    # The val/test halves are a seeded shuffle: stable across loads.
    assert SlimPajamaSource(data_files=FIXTURE, cache_dir=str(tmp_path / "hf")).documents("github", "val") == val
    # And it feeds the same token store as the embedded corpus.
    store = TokenStore(src, load_tokenizer("embedded"), cache_dir=tmp_path / "tok", verbose=False)
    assert store.tokens("book", "test").size > 100


def test_unknown_group_is_rejected():
    with pytest.raises(ConfigError, match="unknown SlimPajama group"):
        SlimPajamaSource(groups=["arxiv", "reddit"])


def test_without_network_it_fails_fast_naming_the_embedded_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    from aioli_repro import slimpajama

    loads, probes = [], []
    real_load = datasets.load_dataset

    def counting_load(*a, **k):
        loads.append(a)
        return real_load(*a, **k)

    monkeypatch.setattr(datasets, "load_dataset", counting_load)
    monkeypatch.setattr(slimpajama, "hub_reachable", lambda *a, **k: probes.append(1) or False)
    with pytest.raises(CorpusError, match="embedded offline corpus"):
        SlimPajamaSource(cache_dir=str(tmp_path / "hf")).documents("arxiv", "train")
    # Fast means: one offline cache lookup, no probe of the hub and no download attempt (counts, not seconds).
    assert len(loads) == 1 and probes == []
