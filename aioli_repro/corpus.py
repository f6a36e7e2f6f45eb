"""Text sources: the embedded offline corpus (seven real data groups) and its document-level splits.

A *text source* is anything with ``groups``, a content ``fingerprint`` and ``documents(group, split)``
(:class:`aioli_repro.token_store.TextSource`, what the token store reads), so the embedded corpus, a user's own
folder in the same format and SlimPajama (:mod:`aioli_repro.slimpajama`) are interchangeable; :func:`open_source`
picks one from ``DataConfig.corpus``.

Corpus folder format: ``manifest.json`` plus one ``<group>.jsonl.gz`` per group with ``{"text": ..., "source": ...}``
lines. The manifest records each file's sha256, and a file that does not match is refused (never silently used).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError, CorpusError
from .paths import REPO_ROOT, sha256_file
from .slimpajama import SlimPajamaSource
from .token_store import TextSource

EMBEDDED_CORPUS = REPO_ROOT / "data" / "corpus"
SPLITS = ("train", "val", "test")


def split_documents(docs: list[str], seed: int, val_fraction: float, test_fraction: float) -> dict[str, list[str]]:
    """Random, seeded, document-level split by bytes.

    Documents are shuffled with ``seed``; the first ones go to test until ``test_fraction`` of the group's bytes is
    reached, the next to validation until ``val_fraction``, the rest to train. A split by file position would put
    whole sub-collections (one package, one book) into the test set and skew it.
    """
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    sizes = [len(d.encode("utf-8")) for d in docs]
    total = sum(sizes)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    acc = 0
    for i in order:
        if not out["test"] or acc < test_fraction * total:
            out["test"].append(i)
        elif not out["val"] or acc < (test_fraction + val_fraction) * total:
            out["val"].append(i)
        else:
            out["train"].append(i)
        acc += sizes[i]
    if not out["val"] or not out["test"] or not out["train"]:
        raise CorpusError(f"too few documents ({len(docs)}) for a train/val/test split")
    # Keep file order inside each split: the split is random, the order within it is irrelevant but stable.
    return {s: [docs[i] for i in sorted(idx)] for s, idx in out.items()}


class FolderCorpus:
    """A corpus folder (``manifest.json`` + ``<group>.jsonl.gz``), verified against its manifest."""

    def __init__(self, root: Path | str = EMBEDDED_CORPUS, split_seed: int = 0, val_fraction: float = 0.05,
                 test_fraction: float = 0.05):
        self.root = Path(root)
        manifest = self.root / "manifest.json"
        if not manifest.is_file():
            raise CorpusError(
                f"no corpus manifest at {manifest}. The embedded corpus ships in data/corpus; rebuild it with "
                "`python3 scripts/build_corpus.py`."
            )
        try:
            self.manifest = json.loads(manifest.read_text())
            self.manifest["groups"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CorpusError(f"corpus manifest {manifest} is malformed ({e}); restore it with "
                              "`git checkout -- data/corpus` or rebuild with `python3 scripts/build_corpus.py`") from e
        self.name = "embedded" if self.root.resolve() == EMBEDDED_CORPUS.resolve() else str(self.root)
        self.groups = tuple(self.manifest["groups"])
        self.split_seed, self.val_fraction, self.test_fraction = split_seed, val_fraction, test_fraction

    @property
    def fingerprint(self) -> str:
        files = {g: self.manifest["groups"][g]["sha256"] for g in self.groups}
        split = [self.split_seed, self.val_fraction, self.test_fraction]
        return hashlib.sha256(json.dumps([files, split], sort_keys=True).encode()).hexdigest()

    def check_groups(self, groups) -> None:
        unknown = [g for g in groups if g not in self.groups]
        if unknown:
            raise ConfigError(f"unknown group(s) {unknown}; this corpus has {list(self.groups)}")

    def raw_documents(self, group: str) -> list[str]:
        self.check_groups([group])
        return list(_read_group(self.root / self.manifest["groups"][group]["file"],
                                self.manifest["groups"][group]["sha256"]))

    def documents(self, group: str, split: str) -> list[str]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        docs = self.raw_documents(group)
        return split_documents(docs, self.split_seed, self.val_fraction, self.test_fraction)[split]


@lru_cache(maxsize=16)
def _read_group(path: Path, expected_sha256: str) -> tuple[str, ...]:
    if not path.is_file():
        raise CorpusError(f"corpus file {path} is missing; rebuild it with `python3 scripts/build_corpus.py`")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise CorpusError(
            f"corpus file {path} does not match its manifest (sha256 {actual[:12]}... != {expected_sha256[:12]}...): "
            "it was altered or truncated. Restore it with `git checkout -- data/corpus` or rebuild it with "
            "`python3 scripts/build_corpus.py`."
        )
    docs = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                docs.append(json.loads(line)["text"])
            except (json.JSONDecodeError, KeyError) as e:
                raise CorpusError(f"{path}:{n}: malformed corpus line ({e})") from e
    return tuple(docs)


def write_corpus(root: Path | str, groups: dict[str, list[str]], sources: dict[str, str] | None = None) -> Path:
    """Write a corpus folder that ``DataConfig.corpus = str(root)`` trains on: one ``<group>.jsonl.gz`` per group
    (``{"source": ..., "text": ...}`` lines, gzip mtime 0, so the same texts give the same bytes) and a
    ``manifest.json`` recording each file's sha256, document count and text bytes. ``groups`` maps each group name to
    its documents (one string each); ``sources`` optionally names where each group came from (the manifest's
    ``description``). Returns the manifest's path. See docs/data.md, "Bring your own data"."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"format_version": 1, "groups": {}}
    for name, docs in groups.items():
        if not name or any(c in name for c in "/@\\") or name.startswith("."):
            raise ConfigError(f"group name {name!r} must be a plain name (no '/', '@' or '\\')")
        docs = [d for d in docs if d]
        if len(docs) < 3:
            raise CorpusError(f"group {name!r} needs at least 3 non-empty documents (one per split), got {len(docs)}")
        path = root / f"{name}.jsonl.gz"
        lines = "".join(json.dumps({"source": f"{name}#{i:06d}", "text": d}, ensure_ascii=False) + "\n"
                        for i, d in enumerate(docs))
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            f.write(lines.encode("utf-8"))
        manifest["groups"][name] = {"file": path.name, "sha256": sha256_file(path), "documents": len(docs),
                                    "raw_bytes": sum(len(d.encode("utf-8")) for d in docs),
                                    **({"description": sources[name]} if sources and name in sources else {})}
    out = root / "manifest.json"
    out.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return out


def open_source(corpus: str, split_seed: int = 0, val_fraction: float = 0.05, test_fraction: float = 0.05,
                groups=None) -> TextSource:
    """Resolve ``DataConfig.corpus`` to a text source."""
    if corpus == "slimpajama":
        return SlimPajamaSource(groups=groups)
    root = EMBEDDED_CORPUS if corpus == "embedded" else Path(corpus)
    return FolderCorpus(root, split_seed, val_fraction, test_fraction)
