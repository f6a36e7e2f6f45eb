"""SlimPajama-6B (``DKYoon/SlimPajama-6B``) as a text source, for users with network access or a local copy.

Groups are the RedPajama set names in ``meta.redpajama_set_name``. As in the paper, train documents come from the
``train`` split; the ``test`` split of each group is shuffled with seed 42 and halved: even positions become
validation, odd positions test. Without network (and without a cached copy) it fails fast with a message that
points to the embedded offline corpus.

At scale (SlimPajama-6B: 5.49M training documents, 24 GB of text, about 6B tokens), the train split is tokenised by
:func:`build_train_tokens`, which the token store calls for it: the memory-mapped Arrow table is cut into shards of
``shard_rows`` consecutive rows; worker processes tokenise shards (one tokenizer thread each) and append each
group's tokens to a per-shard part file as they go (memory stays bounded by one batch of rows per worker); a part
is marked done by a small JSON written after its file is complete. Every wanted group of the split is built in the
same pass over the data. The parts are then concatenated in shard order, so the result is exactly the serial build
(same documents, same order, an EOS after each) whatever the number of workers. An interrupted build resumes: done
parts are kept, unfinished ones are redone from their start, and the final ``.bin`` is renamed into place before its
checksummed ``.json`` is written, so a file that passes the checksum is always complete. Progress is a tqdm bar over
shards with the token rate.

Needs (measured tokenizer rates in docs/data.md): the Hugging Face download (14 GB of parquet) and its Arrow copy
(24 GB) in the ``datasets`` cache, plus 2 bytes per token in the token store (about 12 GB for all seven train
groups, and as much again transiently for the parts while a build runs).

``python -m aioli_repro.slimpajama --groups arxiv,stackexchange --tokenizer pythia --workers 16`` prepares groups
ahead of training (all three splits).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import socket
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from .errors import ConfigError, CorpusError
from .paths import atomic_write_json, exclusive, sha256_file
from .token_store import TokenStore
from .tokenizer import load_tokenizer

DATASET = "DKYoon/SlimPajama-6B"
SET_NAMES = {
    "arxiv": "RedPajamaArXiv",
    "book": "RedPajamaBook",
    "c4": "RedPajamaC4",
    "commoncrawl": "RedPajamaCommonCrawl",
    "github": "RedPajamaGithub",
    "stackexchange": "RedPajamaStackExchange",
    "wikipedia": "RedPajamaWikipedia",
}
EVAL_SHUFFLE_SEED = 42


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # a Slurm job's allocation, not the node's core count
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


class SlimPajamaSource:
    """Text source over SlimPajama-6B, or over local files in the same schema (``data_files``)."""

    def __init__(self, groups=None, dataset: str = DATASET, data_files: dict[str, str] | None = None,
                 cache_dir: str | None = None, workers: int | None = None, shard_rows: int = 20_000):
        self.groups = tuple(SET_NAMES)
        if groups is not None:
            self.check_groups(groups)
        self.wanted = tuple(groups) if groups else self.groups
        """Groups tokenised together when the train split is built (the groups of the run that opened the source)."""
        self.dataset, self.data_files, self.cache_dir = dataset, data_files, cache_dir
        self.name = "slimpajama" if data_files is None else "slimpajama-local"
        self.workers = int(workers or os.environ.get("AIOLI_TOKENIZE_WORKERS") or _available_cores())
        self.shard_rows = int(shard_rows)
        self._splits: dict[str, object] = {}

    def __getstate__(self):  # workers reopen the (memory-mapped) dataset themselves
        return {**self.__dict__, "_splits": {}}

    def check_groups(self, groups) -> None:
        unknown = [g for g in groups if g not in SET_NAMES]
        if unknown:
            raise ConfigError(f"unknown SlimPajama group(s) {unknown}; choose from {list(SET_NAMES)}")

    @property
    def fingerprint(self) -> str:
        if self.data_files is None:
            payload = [self.dataset]
        else:
            payload = {k: sha256_file(Path(v)) for k, v in sorted(self.data_files.items())}
        return hashlib.sha256(json.dumps([payload, EVAL_SHUFFLE_SEED]).encode()).hexdigest()

    def _load(self, hf_split: str):
        if hf_split in self._splits:
            return self._splits[hf_split]
        import datasets  # lazy, here and below: a heavy import (pyarrow, pandas) only SlimPajama needs

        if self.data_files is not None:
            ds = datasets.load_dataset("json", data_files={hf_split: self.data_files[hf_split]}, split=hf_split,
                                       cache_dir=self.cache_dir)
        else:
            ds = self._load_hub(hf_split)
        self._splits[hf_split] = ds
        return ds

    def _load_hub(self, hf_split: str):
        import datasets  # lazy: see _load

        # A cached copy works offline; only go to the network when it is not there, and fail fast without one.
        old = os.environ.get("HF_DATASETS_OFFLINE")
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        try:
            return datasets.load_dataset(self.dataset, split=hf_split, cache_dir=self.cache_dir)
        except Exception:  # noqa: BLE001 - any failure of the offline attempt means "not cached"
            pass
        finally:
            if old is None:
                os.environ.pop("HF_DATASETS_OFFLINE", None)
            else:
                os.environ["HF_DATASETS_OFFLINE"] = old
        if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1" \
                or not hub_reachable():
            raise CorpusError(
                f"SlimPajama ({self.dataset}) is not cached here and the Hugging Face hub cannot be reached. "
                "Use the embedded offline corpus instead (data.corpus='embedded', the default; "
                "`python -m aioli_repro groups` lists its seven groups), or run once with network access."
            )
        # One download and Arrow conversion of the whole dataset (14 GB parquet -> 24 GB Arrow), on all workers.
        return datasets.load_dataset(self.dataset, split=hf_split, cache_dir=self.cache_dir,
                                     num_proc=max(1, self.workers))

    def documents(self, group: str, split: str) -> list[str]:
        self.check_groups([group])
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        ds = self._load("train" if split == "train" else "test")
        set_name = SET_NAMES[group]
        ds = ds.filter(lambda ex: ex["meta"]["redpajama_set_name"] == set_name)
        if split == "train":
            return list(ds["text"])
        ds = ds.shuffle(seed=EVAL_SHUFFLE_SEED)
        texts = list(ds["text"])
        return texts[0::2] if split == "val" else texts[1::2]

    # ------------------------------------------------------------------------------------------ token store hook
    def build_token_files(self, store, group: str, split: str) -> None:
        """Called by :class:`TokenStore` for a missing or invalid group split. The train split is built in parallel
        shards together with every other wanted group whose files are missing; validation and test (9,346 documents
        in all) are built serially from :meth:`documents`."""
        if split != "train":
            store.build_from_documents(group, split)
            return
        others = [g for g in self.wanted if g != group
                  and not (store.path(g, split).is_file() and store.path(g, split).with_suffix(".json").is_file())]
        build_train_tokens(self, store, [group, *others], workers=self.workers, shard_rows=self.shard_rows)


# ---------------------------------------------------------------------------------------------- parallel build
_WORKER: dict[str, object] = {}


def _worker_state(source: SlimPajamaSource, split: str, tok_json: str):
    """The dataset and tokenizer of this worker process, opened once."""
    key = (source.dataset, json.dumps(source.data_files, sort_keys=True), source.cache_dir, split, tok_json)
    if _WORKER.get("key") != key:
        _WORKER.clear()
        _WORKER.update(key=key, ds=source._load(split).with_format("arrow"), tok=Tokenizer.from_str(tok_json))
    return _WORKER["ds"], _WORKER["tok"]


def _part_paths(parts: Path, shard: int, group: str) -> tuple[Path, Path]:
    d = parts / f"shard_{shard:05d}"
    return d / f"{group}.bin", d / f"{group}.json"


def _part_done(parts: Path, shard: int, group: str) -> bool:
    bin_path, meta_path = _part_paths(parts, shard, group)
    try:
        return bin_path.stat().st_size == json.loads(meta_path.read_text())["bytes"]
    except (OSError, ValueError, KeyError):
        return False


def _tokenize_shard(source: SlimPajamaSource, split: str, shard: int, start: int, stop: int, groups: list[str],
                    tok_json: str, eos: int, parts: str, batch_rows: int = 1000) -> dict:
    """Tokenise rows [start, stop) of the split for ``groups``: each group's tokens (an EOS after every document)
    are appended to ``<parts>/shard_<n>/<group>.bin`` batch by batch, then the part is marked done."""
    import pyarrow.compute as pc  # lazy: comes with datasets, which only SlimPajama needs

    t0 = time.perf_counter()
    ds, tok = _worker_state(source, split, tok_json)
    parts_dir = Path(parts)
    out, hashes, counts = {}, {}, {}
    for g in groups:
        bin_path, _ = _part_paths(parts_dir, shard, g)
        bin_path.parent.mkdir(parents=True, exist_ok=True)
        out[g] = open(bin_path.with_name(f".{g}.bin.tmp"), "wb")  # an unfinished part restarts from its beginning
        hashes[g], counts[g] = hashlib.sha256(), {"documents": 0, "tokens": 0}
    eos_arr = np.array([eos], dtype=np.uint16)
    try:
        for b in range(start, stop, batch_rows):
            table = ds[b:min(b + batch_rows, stop)]
            names = pc.struct_field(table.column("meta"), "redpajama_set_name")
            for g in groups:
                texts = table.column("text").filter(pc.equal(names, SET_NAMES[g])).to_pylist()
                if not texts:
                    continue
                pieces = []
                for enc in tok.encode_batch(texts, add_special_tokens=False):
                    pieces.append(np.asarray(enc.ids, dtype=np.uint16))
                    pieces.append(eos_arr)
                data = np.concatenate(pieces).tobytes()
                out[g].write(data)
                hashes[g].update(data)
                counts[g]["documents"] += len(texts)
                counts[g]["tokens"] += len(data) // 2
        for g in groups:
            f = out[g]
            f.flush()
            os.fsync(f.fileno())
            f.close()
            bin_path, meta_path = _part_paths(parts_dir, shard, g)
            os.replace(f.name, bin_path)
            atomic_write_json(meta_path, {**counts[g], "bytes": 2 * counts[g]["tokens"], "rows": [start, stop],
                                          "sha256": hashes[g].hexdigest()})
    finally:
        for f in out.values():
            f.close()
    return {"shard": shard, "tokens": sum(c["tokens"] for c in counts.values()), "rows": stop - start,
            "seconds": time.perf_counter() - t0}


def _init_tokenize_worker() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one tokenizer thread per worker process: no oversubscription
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def build_train_tokens(source: SlimPajamaSource, store, groups, workers: int | None = None,
                       shard_rows: int | None = None, split: str = "train", batch_rows: int = 1000) -> dict:
    """Tokenise ``split`` of ``groups`` into ``store`` with ``workers`` processes (see the module docstring).
    Returns per-group token counts. Safe to run from several processes at once (the build is locked) and to
    interrupt (it resumes)."""
    workers = max(1, int(workers or source.workers))
    shard_rows = max(1, int(shard_rows or source.shard_rows))
    ds = source._load(split)
    n = len(ds)
    shards = [(i, a, min(a + shard_rows, n)) for i, a in enumerate(range(0, n, shard_rows))]
    parts = store.root / "_parts" / f"{split}-rows{shard_rows}"
    parts.mkdir(parents=True, exist_ok=True)
    # another process building the same store: wait, then reuse its files
    with exclusive(store.root / f".{split}.build.lock"):
        groups = [g for g in groups if not (store.path(g, split).is_file() and store._valid(store.path(g, split)))]
        for attempt in range(2):
            if not groups:
                break
            todo = [(i, a, b, [g for g in groups if not _part_done(parts, i, g)]) for i, a, b in shards]
            todo = [t for t in todo if t[3]]
            _run_shards(source, split, todo, len(shards), store, parts, workers, batch_rows)
            bad = _assemble(store, split, groups, shards, parts, atomic_write_json)
            if not bad:
                break
            if attempt:
                raise RuntimeError(f"token parts {bad} failed their checksums twice; is the disk healthy?")
        counts = {g: int(json.loads(store.path(g, split).with_suffix(".json").read_text())["tokens"])
                  for g in groups}
        if not any(parts.rglob("*.bin")):  # every group of this split is built: drop the empty part folders
            shutil.rmtree(parts, ignore_errors=True)
            try:
                parts.parent.rmdir()
            except OSError:
                pass  # parts of another split or shard size remain
        return counts


def _run_shards(source, split, todo, total, store, parts, workers, batch_rows) -> None:
    if not todo:
        return
    tok_json = store.tokenizer.backend_tokenizer.to_str()
    args = [(source, split, i, a, b, gs, tok_json, store.eos, str(parts), batch_rows) for i, a, b, gs in todo]
    bar = None
    if store.verbose:
        bar = tqdm(total=total, initial=total - len(todo), unit="shard", dynamic_ncols=True,
                   desc=f"tokenising {split} of {','.join(sorted({g for t in todo for g in t[3]}))} on {workers} proc")
    t0, tokens = time.perf_counter(), 0

    def done(r):
        nonlocal tokens
        tokens += r["tokens"]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(tokens=f"{tokens / 1e6:.1f}M", rate=f"{tokens / (time.perf_counter() - t0) / 1e3:.0f}k tok/s",
                            refresh=False)

    try:
        if workers == 1 or len(args) == 1:
            for a in args:
                done(_tokenize_shard(*a))
        else:
            with ProcessPoolExecutor(min(workers, len(args)), mp_context=mp.get_context("spawn"),
                                     initializer=_init_tokenize_worker) as pool:
                futures = [pool.submit(_tokenize_shard, *a) for a in args]
                try:
                    for fut in as_completed(futures):
                        done(fut.result())
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()


def _assemble(store, split, groups, shards, parts: Path, atomic_write_json) -> list[tuple[int, str]]:
    """Concatenate each group's parts in shard order into its final file (temporary name, checksummed while
    copying, renamed, then its .json written). Parts that fail their checksum are deleted and returned."""
    bad: list[tuple[int, str]] = []
    for g in groups:
        final = store.path(g, split)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.assemble.tmp")
        total, documents, whole = 0, 0, hashlib.sha256()
        with open(tmp, "wb") as out:
            for i, _, _ in shards:
                bin_path, meta_path = _part_paths(parts, i, g)
                meta = json.loads(meta_path.read_text())
                h = hashlib.sha256()
                with open(bin_path, "rb") as f:
                    while chunk := f.read(1 << 24):
                        h.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                if h.hexdigest() != meta["sha256"]:
                    bad.append((i, g))
                    bin_path.unlink(missing_ok=True)
                    meta_path.unlink(missing_ok=True)
                total += meta["bytes"]
                documents += meta["documents"]
            out.flush()
            os.fsync(out.fileno())
        if any(b[1] == g for b in bad):
            tmp.unlink(missing_ok=True)
            continue
        os.replace(tmp, final)
        atomic_write_json(final.with_suffix(".json"), {
            "group": g, "split": split, "documents": documents, "tokens": total // 2, "bytes": total,
            "sha256": whole.hexdigest(), "source": store.source.name, "store": store.key,
            "shards": len(shards)})
        for i, _, _ in shards:  # this group is complete: its parts are no longer needed
            for p in _part_paths(parts, i, g):
                p.unlink(missing_ok=True)
    return bad


def main(argv=None) -> int:
    """Prepare SlimPajama groups in the token store ahead of training (train in parallel shards, then val/test)."""
    ap = argparse.ArgumentParser(prog="python -m aioli_repro.slimpajama", description=main.__doc__)
    ap.add_argument("--groups", default=",".join(SET_NAMES), help="comma-separated SlimPajama groups (default: all)")
    ap.add_argument("--tokenizer", default="pythia", help="pythia (the paper's), embedded, or a tokenizer folder")
    ap.add_argument("--workers", type=int, default=0, help="tokenising processes (default: all cores)")
    ap.add_argument("--shard-rows", type=int, default=20_000, help="rows per resumable shard")
    ap.add_argument("--train", default=None, help="local train file(s) in the hub schema instead of the hub")
    ap.add_argument("--test", default=None, help="local test file in the hub schema (with --train)")
    args = ap.parse_args(argv)
    groups = [g for g in args.groups.split(",") if g]
    data_files = {"train": args.train, "test": args.test} if args.train else None
    src = SlimPajamaSource(groups=groups, data_files=data_files, workers=args.workers or None,
                           shard_rows=args.shard_rows)
    t = time.perf_counter()
    counts = TokenStore(src, load_tokenizer(args.tokenizer)).prepare(groups)
    print(json.dumps({"tokens": counts, "seconds": round(time.perf_counter() - t, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
