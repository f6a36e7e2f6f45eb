"""The committed run cache: one small file per finished run (its result and metrics, no weights), so tables re-render
and long studies continue across sittings and machines (``results/run_cache``).

An entry is named by the run id's first 20 hex digits: ``{"result", "metrics", "sha256"}`` as the JSON bytes of
``paths.json_bytes``, gzipped (``<id20>.json.gz``, about 4x smaller). Entries written before 2026-12-06 are plain
``<id20>.json``; every reader accepts both, preferring the .json.gz, and ``python -m aioli_repro cache --compress``
converts them. Read and write entries only through the helpers here; ``runs.RunDir`` writes a run's entry when it
finishes and restores a run from it.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Any

from .paths import REPO_ROOT, atomic_write_bytes, json_bytes


def result_cache_dir() -> Path | None:
    """Committed copies of finished runs' results and metrics (small gzipped JSON files, no weights), so tables
    re-render and long studies continue across sittings and machines. ``AIOLI_RESULT_CACHE=off`` (or ``0``,
    ``false``, ``no``) disables it; any other value is the cache's directory."""
    value = os.environ.get("AIOLI_RESULT_CACHE", str(REPO_ROOT / "results" / "run_cache"))
    # "0" is a switch, not a directory: it once made a folder named 0 in the working directory.
    return None if value.strip().lower() in ("off", "0", "false", "no", "") else Path(value)


CACHE_SUFFIX = ".json.gz"
LEGACY_CACHE_SUFFIX = ".json"
_CACHE_SUFFIXES = (CACHE_SUFFIX, LEGACY_CACHE_SUFFIX)  # the order readers prefer


class CorruptCacheEntry(ValueError):
    """A run cache file that does not decode (not gzip, truncated, not UTF-8, not JSON)."""


def cache_entry_id(path: Path | str) -> str:
    """The run id prefix a cache file is named by (``<id20>.json.gz``, or a legacy ``<id20>.json``)."""
    name = Path(path).name
    for suffix in _CACHE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise ValueError(f"{path} is not a run cache entry (neither {CACHE_SUFFIX} nor {LEGACY_CACHE_SUFFIX})")


def cache_entry_files(root: Path, key: str) -> list[Path]:
    """The files that may hold the entry of run id prefix ``key`` under ``root``, the preferred one first."""
    return [Path(root) / f"{key}{suffix}" for suffix in _CACHE_SUFFIXES]


def find_cache_entry(root: Path | None, key: str) -> Path | None:
    """The file holding the entry of run id prefix ``key`` (20 hex digits): the .json.gz, else a legacy .json."""
    if root is None:
        return None
    return next((p for p in cache_entry_files(root, key) if p.is_file()), None)


def cache_entries(root: Path | None) -> list[Path]:
    """Every entry file of the run cache at ``root``, one per run id (its .json.gz where a legacy .json twin exists
    too), sorted by run id. Empty if the cache is off or absent."""
    if root is None or not Path(root).is_dir():
        return []
    found: dict[str, Path] = {}
    for suffix in reversed(_CACHE_SUFFIXES):  # the preferred suffix last, so it wins
        for path in Path(root).glob("*" + suffix):  # "*.json" does not match "x.json.gz"; temp files end in .tmp
            found[cache_entry_id(path)] = path
    return [found[k] for k in sorted(found)]


def _gzip(data: bytes) -> bytes:
    """gzip at level 9 with mtime 0: the same bytes in always give the same file, so rewriting an entry changes
    nothing git sees."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def encode_cache_entry(entry: Any) -> bytes:
    """The bytes of a cache entry file: ``_gzip`` of the JSON bytes plain entries had."""
    return _gzip(json_bytes(entry))


def read_cache_entry(path: Path | str) -> Any:
    """The decoded content of a cache entry file of either suffix. Raises OSError (e.g. FileNotFoundError) if it
    cannot be read and :class:`CorruptCacheEntry` (a ValueError) if it does not decode; its content is not checked
    (``RunDir`` verifies the checksums of what it restores)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        if path.name.endswith(CACHE_SUFFIX):
            data = gzip.decompress(data)
        return json.loads(data.decode("utf-8"))
    except (OSError, EOFError, zlib.error, ValueError) as e:  # gzip raises BadGzipFile (an OSError) or EOFError
        raise CorruptCacheEntry(f"{path.name} does not decode ({e.__class__.__name__}: {e})") from e


def write_cache_entry(path: Path | str, entry: Any) -> None:
    """Write ``entry`` to ``path`` (a ``<id20>.json.gz``) atomically, then remove a legacy ``.json`` twin, which
    it supersedes."""
    path = Path(path)
    if not path.name.endswith(CACHE_SUFFIX):
        raise ValueError(f"{path}: new run cache entries are {CACHE_SUFFIX} files")
    atomic_write_bytes(path, encode_cache_entry(entry))
    path.with_name(cache_entry_id(path) + LEGACY_CACHE_SUFFIX).unlink(missing_ok=True)


def remove_cache_entry(path: Path | str) -> None:
    """Delete a run's cache entry in every format (so pruning a .json.gz does not bring back a legacy twin)."""
    for twin in cache_entry_files(Path(path).parent, cache_entry_id(path)):
        twin.unlink(missing_ok=True)


def _cache_size(root: Path) -> tuple[int, int]:
    files = [p for suffix in _CACHE_SUFFIXES for p in root.glob("*" + suffix)]
    return len(files), sum(p.stat().st_size for p in files)


def compress_cache(root: Path | str) -> dict[str, Any]:
    """Convert every legacy ``<id20>.json`` entry under ``root`` into ``<id20>.json.gz`` (one-shot migration,
    idempotent). A legacy file is deleted only once the .json.gz written for it has been read back from disk and
    decodes to the same object (compared as canonical JSON bytes, so NaN equals NaN). A legacy file whose .json.gz
    twin holds the same object is just deleted; one whose twin differs is left as it is and reported (a conflict to
    resolve by hand); an undecodable twin is replaced; an undecodable legacy file is left and reported.

    Returns the counts and the files and bytes of the cache's entries before and after."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory: no run cache to compress")
    files_before, bytes_before = _cache_size(root)
    converted, twins, conflicts, unreadable = 0, 0, [], []
    for legacy in sorted(root.glob("*" + LEGACY_CACHE_SUFFIX)):
        try:
            original = json_bytes(read_cache_entry(legacy))
        except CorruptCacheEntry:
            unreadable.append(legacy.name)
            continue
        target = legacy.with_name(cache_entry_id(legacy) + CACHE_SUFFIX)
        if target.exists():
            try:
                twin = json_bytes(read_cache_entry(target))
            except CorruptCacheEntry:
                twin = None  # replaced below by the legacy file's content
            if twin == original:
                legacy.unlink()
                twins += 1
                continue
            if twin is not None:
                conflicts.append(legacy.name)
                continue
        atomic_write_bytes(target, _gzip(original))
        if json_bytes(read_cache_entry(target)) != original:
            raise RuntimeError(f"{target} does not read back as {legacy.name}; {legacy.name} is kept")
        legacy.unlink()
        converted += 1
    files_after, bytes_after = _cache_size(root)
    return {"converted": converted, "twins_removed": twins, "conflicts": conflicts, "unreadable": unreadable,
            "files_before": files_before, "bytes_before": bytes_before, "files_after": files_after,
            "bytes_after": bytes_after, "entries": len(cache_entries(root))}
