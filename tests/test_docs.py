"""The README stays a short, results-first page, and every relative link of the documentation resolves."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLAIMS = ROOT / "results" / "full" / "claims.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "results").glob("*/README.md"))]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    """Markdown without fenced blocks and inline code, where brackets are not links and # is not a heading."""
    return CODE.sub("", FENCE.sub("", text))


def _anchors(path: Path) -> set[str]:
    """The heading anchors GitHub gives a Markdown file: lower case, punctuation dropped, spaces to hyphens."""
    found: set[str] = set()
    for line in _prose_keeping_headings(path.read_text()).splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if m:
            base = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            slug, n = base, 0
            while slug in found:  # a repeated heading gets -1, -2, ...
                n += 1
                slug = f"{base}-{n}"
            found.add(slug)
    return found


def _prose_keeping_headings(text: str) -> str:
    return FENCE.sub("", text).replace("`", "")


def _links(path: Path) -> list[str]:
    return LINK.findall(_prose(path.read_text()))


def test_pages_exist():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/results.md", "docs/changelog.md", "results/full/README.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_and_none_leaves_the_repository(page):
    text = page.read_text()
    assert not re.search(r"https?://|www\.", text), f"{page.name} links outside the repository"
    bad = []
    for target in _links(page):
        assert not re.match(r"[a-z][a-z0-9+.-]*:", target), f"{page.name}: {target} is not a relative link"
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists() or ROOT not in dest.parents and dest != ROOT:
            bad.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(target)
    assert not bad, f"{page.relative_to(ROOT)}: links that do not resolve: {bad}"


def test_the_link_check_catches_a_broken_link(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## A `code` heading: yes\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#a-code-heading-yes) [bad](a.md#nope) [gone](missing.md) `[not](a link)`\n"
                    "```\n[nor](this)\n```\n")
    assert _links(page) == ["a.md#a-code-heading-yes", "a.md#nope", "missing.md"]
    assert _anchors(tmp_path / "a.md") == {"top", "a-code-heading-yes"}


def test_readme_is_short():
    assert len(README.read_text()) <= 12_500


def _verdict_rows(text: str) -> dict[str, str]:
    """claim -> its row, from a verdict table whose rows start with the claim's bold id."""
    return {m.group(1): line for line in text.splitlines() if (m := re.match(r"\| \*\*(C\d+)\*\*", line))}


def test_readme_opens_with_the_verdicts_of_claims_md():
    head = "\n".join(README.read_text().splitlines()[:60])
    ours, theirs = _verdict_rows(head), _verdict_rows(CLAIMS.read_text())
    assert {"C1", "C2", "C3", "C4", "C5", "C7", "C8", "C11"} <= set(ours)
    for claim, row in ours.items():
        verdict = re.findall(r"\*\*([a-z ]+)\*\*", theirs[claim])[-1]  # claims.md's verdict column
        assert row.rstrip().endswith(f"**{verdict}** |"), f"{claim}: README and claims.md disagree"
    rest = re.search(r"^\| C\d+(, C\d+)* .*\| not tested \|$", head, re.M)  # the claims not tested, in one row
    for claim in re.findall(r"C\d+", rest.group(0).split("|")[1]):
        assert "**not tested**" in theirs[claim]
    assert set(ours) | set(re.findall(r"C\d+", rest.group(0).split("|")[1])) == set(theirs)


def test_readme_verdict_numbers_come_from_claims_md():
    """Every decimal number of the README's verdict table is one claims.md prints: none is typed by hand."""
    claims = CLAIMS.read_text()
    rows = [r for r in README.read_text().splitlines()[:60] if re.match(r"\| \*?\*?C\d+", r)]
    numbers = {n for r in rows for n in re.findall(r"\d+\.\d+", r)}
    assert numbers and not {n for n in numbers if n not in claims}
