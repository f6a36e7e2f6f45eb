import pytest

from aioli_repro.errors import CorpusError
from aioli_repro.tokenizer import load_tokenizer, tokenizer_fingerprint, train_tokenizer

from .conftest import TINY_TOKENIZER

SAMPLES = ["def f(x):\n    return x ** 2\n", "To be, or not to be: that is the question.", "naïve café — ünïcödé ✓",
           "\\begin{equation} e^{i\\pi} + 1 = 0 \\end{equation}", "  leading spaces\n\n\ttabs\r\n"]


@pytest.mark.parametrize("name", ["embedded", str(TINY_TOKENIZER)])
def test_round_trip_is_exact(name):
    tok = load_tokenizer(name)
    for text in SAMPLES:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text


def test_embedded_tokenizer_shape():
    tok = load_tokenizer("embedded")
    assert len(tok) == 4096
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0
    # Byte-level BPE compresses English: fewer tokens than characters by a clear margin.
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert len(tok(text)["input_ids"]) < len(text) / 2


def test_training_is_deterministic_and_fingerprint_tracks_vocab(tmp_path):
    texts = SAMPLES * 50
    a = train_tokenizer(texts, vocab_size=300)
    b = train_tokenizer(texts, vocab_size=300)
    c = train_tokenizer(texts, vocab_size=320)
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b) != tokenizer_fingerprint(c)
    saved = train_tokenizer(texts, vocab_size=300, out_dir=tmp_path / "tok")
    assert tokenizer_fingerprint(load_tokenizer(str(tmp_path / "tok"))) == tokenizer_fingerprint(saved)


def test_bad_vocab_and_missing_tokenizer():
    with pytest.raises(ValueError, match="uint16"):
        train_tokenizer(SAMPLES, vocab_size=70000)
    with pytest.raises(CorpusError, match="no tokenizer"):
        load_tokenizer("/nonexistent/tokenizer")
