import numpy as np

from aioli_repro.corpus import FolderCorpus
from aioli_repro.token_store import TokenStore
from aioli_repro.tokenizer import load_tokenizer, train_tokenizer

from .conftest import TINY_CORPUS, TINY_TOKENIZER


def test_documents_are_tokenised_once_with_eos_between(tmp_path):
    src = FolderCorpus(TINY_CORPUS, val_fraction=0.2, test_fraction=0.2)
    tok = load_tokenizer(str(TINY_TOKENIZER))
    store = TokenStore(src, tok, cache_dir=tmp_path, verbose=False)
    arr = store.tokens("code", "val")
    docs = src.documents("code", "val")
    assert arr.dtype == np.uint16 and isinstance(arr, np.memmap)
    assert int((arr == tok.eos_token_id).sum()) == len(docs)
    first = tok(docs[0], add_special_tokens=False)["input_ids"]
    assert arr[: len(first)].tolist() == first and arr[len(first)] == tok.eos_token_id
    mtime = store.path("code", "val").stat().st_mtime_ns
    again = TokenStore(src, tok, cache_dir=tmp_path, verbose=False).tokens("code", "val")
    assert store.path("code", "val").stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert np.array_equal(arr, again)


def test_store_key_changes_with_tokenizer_and_split(tmp_path):
    src = FolderCorpus(TINY_CORPUS, val_fraction=0.2, test_fraction=0.2)
    tok = load_tokenizer(str(TINY_TOKENIZER))
    other = train_tokenizer(src.documents("code", "train"), vocab_size=300)
    assert TokenStore(src, tok, tmp_path).root != TokenStore(src, other, tmp_path).root
    src2 = FolderCorpus(TINY_CORPUS, val_fraction=0.1, test_fraction=0.2)
    assert TokenStore(src, tok, tmp_path).root != TokenStore(src2, tok, tmp_path).root


def test_corrupted_token_file_is_detected_and_rebuilt(tmp_path, capsys):
    src = FolderCorpus(TINY_CORPUS, val_fraction=0.2, test_fraction=0.2)
    tok = load_tokenizer(str(TINY_TOKENIZER))
    good = np.array(TokenStore(src, tok, tmp_path, verbose=False).tokens("licenses", "train"))
    path = TokenStore(src, tok, tmp_path).path("licenses", "train")
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data[:-4]))  # flipped and truncated
    rebuilt = TokenStore(src, tok, tmp_path, verbose=True).tokens("licenses", "train")
    assert "does not match its checksum" in capsys.readouterr().out
    assert np.array_equal(np.array(rebuilt), good)
