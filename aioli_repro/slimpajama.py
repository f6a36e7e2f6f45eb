"""SlimPajama-6B (``DKYoon/SlimPajama-6B``) as a text source, for users with network access or a local copy.

Groups are the RedPajama set names in ``meta.redpajama_set_name``. As in the paper, train documents come from the
``train`` split; the ``test`` split of each group is shuffled with seed 42 and halved: even positions become
validation, odd positions test. Without network (and without a cached copy) it fails fast with a message that
points to the embedded offline corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

from .config import ConfigError
from .corpus import CorpusError, sha256_file

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


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


class SlimPajamaSource:
    """Text source over SlimPajama-6B, or over local files in the same schema (``data_files``)."""

    def __init__(self, groups=None, dataset: str = DATASET, data_files: dict[str, str] | None = None,
                 cache_dir: str | None = None):
        self.groups = tuple(SET_NAMES)
        if groups is not None:
            self.check_groups(groups)
        self.dataset, self.data_files, self.cache_dir = dataset, data_files, cache_dir
        self.name = "slimpajama" if data_files is None else "slimpajama-local"
        self._splits: dict[str, object] = {}

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
        import datasets

        if self.data_files is not None:
            ds = datasets.load_dataset("json", data_files={hf_split: self.data_files[hf_split]}, split=hf_split,
                                       cache_dir=self.cache_dir)
        else:
            ds = self._load_hub(hf_split)
        self._splits[hf_split] = ds
        return ds

    def _load_hub(self, hf_split: str):
        import datasets

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
        return datasets.load_dataset(self.dataset, split=hf_split, cache_dir=self.cache_dir)

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
