"""Rebuild the tiny committed test assets: a 3-group corpus (~50 KB per group) and a 512-token BPE.

Sources are files present on any Debian machine with Python 3.11: standard-library modules (``code``), Debian
changelogs (``changelogs``) and licence texts (``licenses``). The assets are committed, so tests never run this.
Usage: python tests/assets/make_tiny_assets.py [--slimpajama]  (the latter rebuilds only the SlimPajama fixture)
"""

import glob
import gzip
import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
CAP = 50_000


def take(paths, reader):
    docs, total = [], 0
    for p in sorted(paths):
        try:
            text = reader(p)
        except (OSError, UnicodeDecodeError):
            continue
        text = text.replace("\r\n", "\n").strip()[:1500]
        if len(text) < 200:
            continue
        docs.append({"text": text, "source": os.path.basename(os.path.dirname(p)) + "/" + os.path.basename(p)})
        total += len(text.encode())
        if total >= CAP:
            break
    return docs


def main():
    stdlib = sysconfig.get_paths()["stdlib"]
    groups = {
        "code": take(glob.glob(f"{stdlib}/*.py"), lambda p: open(p, encoding="utf-8").read()),
        "changelogs": take(glob.glob("/usr/share/doc/*/changelog.Debian.gz"),
                           lambda p: gzip.open(p, "rt", encoding="utf-8").read()),
        "licenses": take(glob.glob("/usr/share/common-licenses/*"), lambda p: open(p, encoding="utf-8").read()),
    }
    out = HERE / "tiny_corpus"
    out.mkdir(exist_ok=True)
    manifest = {"format_version": 1, "groups": {}}
    for name, docs in groups.items():
        raw = "".join(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n" for d in docs).encode()
        path = out / f"{name}.jsonl.gz"
        with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
            gz.write(raw)
        manifest["groups"][name] = {"file": path.name, "documents": len(docs),
                                    "raw_bytes": sum(len(d["text"].encode()) for d in docs),
                                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    from aioli_repro.corpus import FolderCorpus
    from aioli_repro.tokenizer import train_tokenizer

    corpus = FolderCorpus(out)
    texts = [t for g in corpus.groups for t in corpus.documents(g, "train")]
    train_tokenizer(texts, vocab_size=512, out_dir=HERE / "tiny_tokenizer")
    print({g: m["raw_bytes"] for g, m in manifest["groups"].items()})


if __name__ == "__main__" and "--slimpajama" not in sys.argv:
    main()


def make_slimpajama_fixture():
    """A few documents per RedPajama set in the DKYoon/SlimPajama-6B schema (text, meta.redpajama_set_name,
    __index_level_0__), taken from the embedded corpus' analogue groups."""
    from aioli_repro.corpus import FolderCorpus
    from aioli_repro.slimpajama import SET_NAMES

    corpus = FolderCorpus()
    analogue = {m["slimpajama_analogue"]: g for g, m in corpus.manifest["groups"].items()}
    out = HERE / "slimpajama_fixture"
    out.mkdir(exist_ok=True)
    index = 0
    for split, (start, count) in {"train": (0, 12), "test": (100, 8)}.items():
        with open(out / f"{split}.jsonl", "w") as f:
            for group, set_name in SET_NAMES.items():
                docs = corpus.raw_documents(analogue[group])[start:start + count]
                for d in docs:
                    row = {"text": d[:600], "meta": {"redpajama_set_name": set_name}, "__index_level_0__": index}
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    index += 1


if __name__ == "__main__" and "--slimpajama" in sys.argv:
    make_slimpajama_fixture()
