"""Token store: each (group, split) tokenised once into a uint16 memory-map, documents separated by EOS.

The store's folder is keyed by the fingerprints of the text source and the tokenizer, so changing either builds a
new store instead of silently reusing stale tokens. Each ``.bin`` has a ``.json`` beside it with its token count and
sha256; a file that does not match is rebuilt. Files are written to a temporary name and renamed, so a crash never
leaves a half-written file under the final name. Memory-mapping keeps resident memory independent of corpus size.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from .paths import REPO_ROOT, atomic_write_bytes, atomic_write_json, sha256_file
from .tokenizer import eos_id, tokenizer_fingerprint

STORE_FORMAT = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("AIOLI_CACHE", REPO_ROOT / ".cache"))


class TextSource(Protocol):
    """What the store reads from a text source (the embedded corpus, a corpus folder, SlimPajama): its groups, a
    content fingerprint that keys the store, and each group split's documents."""

    name: str
    groups: tuple[str, ...]

    @property
    def fingerprint(self) -> str: ...

    def documents(self, group: str, split: str) -> list[str]: ...


class TokenStore:
    """uint16 token arrays for every (group, split) of a text source under one tokenizer."""

    def __init__(self, source: TextSource, tokenizer, cache_dir: Path | str | None = None, verbose: bool = True):
        self.source, self.tokenizer, self.verbose = source, tokenizer, verbose
        if len(tokenizer) > 65535:
            raise ValueError(f"vocabulary of {len(tokenizer)} tokens does not fit uint16")
        self.eos = eos_id(tokenizer)
        key = hashlib.sha256(
            json.dumps([STORE_FORMAT, source.fingerprint, tokenizer_fingerprint(tokenizer)]).encode()
        ).hexdigest()
        self.key = key
        self.root = Path(cache_dir or default_cache_dir()) / "tokens" / key[:16]
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

    def path(self, group: str, split: str) -> Path:
        return self.root / group / f"{split}.bin"

    def tokens(self, group: str, split: str) -> np.ndarray:
        """The memory-mapped uint16 token stream of one group split (built on first use)."""
        k = (group, split)
        if k not in self._arrays:
            path = self.path(group, split)
            if not self._valid(path):
                self._build(group, split)
            self._arrays[k] = np.memmap(path, dtype=np.uint16, mode="r")
        return self._arrays[k]

    def _valid(self, path: Path) -> bool:
        meta_path = path.with_suffix(".json")
        if not path.is_file():
            return False
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):  # missing, unreadable or not JSON
            meta = None
        ok = isinstance(meta, dict) and meta.get("store", self.key) == self.key \
            and meta.get("bytes") == path.stat().st_size and meta.get("sha256") == sha256_file(path)
        if not ok and self.verbose:
            print(f"[token store] {path} does not match its checksum (or was built for another corpus or "
                  "tokenizer); rebuilding it")
        return ok

    def _build(self, group: str, split: str) -> None:
        hook = getattr(self.source, "build_token_files", None)
        if hook is not None:  # a source that builds at scale itself (SlimPajama: parallel, resumable shards)
            hook(self, group, split)
            return
        self.build_from_documents(group, split)

    def build_from_documents(self, group: str, split: str) -> None:
        """Tokenise one group split from the source's document list, in this process, and write it atomically."""
        docs = self.source.documents(group, split)
        backend = self.tokenizer.backend_tokenizer
        pieces = []
        it = range(0, len(docs), 512)
        if self.verbose:
            it = tqdm(it, desc=f"tokenising {group}/{split}", unit="x512 docs", leave=False)
        eos = np.array([self.eos], dtype=np.uint16)
        for start in it:
            # encode_batch runs on all cores; one EOS after every document marks the boundary.
            for enc in backend.encode_batch(docs[start:start + 512], add_special_tokens=False):
                pieces.append(np.asarray(enc.ids, dtype=np.uint16))
                pieces.append(eos)
        arr = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)
        path = self.path(group, split)
        data = arr.tobytes()
        atomic_write_bytes(path, data)
        atomic_write_json(path.with_suffix(".json"), {
            "group": group, "split": split, "documents": len(docs), "tokens": int(arr.size), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "source": self.source.name, "store": self.key,
        })

    def prepare(self, groups, splits=("train", "val", "test")) -> dict[str, dict[str, int]]:
        """Build (or verify) every listed group split; returns token counts."""
        return {g: {s: int(self.tokens(g, s).size) for s in splits} for g in groups}
