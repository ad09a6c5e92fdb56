"""Every relative link in README.md and docs/*.md leads somewhere: the file exists, and a
``#fragment`` names a heading of the target (GitHub's anchors), so moving text cannot leave a
link dangling."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# [text](target) outside code; the target ends at the first space or closing parenthesis
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def unfenced(text: str) -> list[str]:
    """The lines of the text outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans."""
    return "\n".join(re.sub(r"`[^`]*`", "", line) for line in unfenced(text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped, spaces to
    hyphens, a repeated heading numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    for line in unfenced(path.read_text(encoding="utf-8")):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    text = prose(path.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_the_checker_sees_links_and_anchors(tmp_path: Path) -> None:
    """The helpers find a link, skip code and URLs, and number a repeated heading."""
    doc = tmp_path / "a.md"
    doc.write_text(
        "# Speed\n## Speed\n### A: `b` (c)\n```\n# not a heading\n```\n"
        "[x](b.md#top) [u](https://e.org) `[y](z.md)`\n```\n[w](v.md)\n```\n",
        encoding="utf-8",
    )
    assert relative_links(doc) == ["b.md#top"]
    assert anchors(doc) == {"speed", "speed-1", "a-b-c"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in relative_links(doc):
        file_part, _, fragment = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def tables(path: Path) -> list[tuple[int, list[int]]]:
    """Each Markdown table outside code: its first line number and its rows' cell counts (cells
    split at unescaped ``|``, as GitHub splits them, code spans included)."""
    found: list[tuple[int, list[int]]] = []
    current: list[int] = []
    start = 0
    lines = path.read_text(encoding="utf-8").split("\n")
    fenced = False
    for number, line in enumerate([*lines, ""], start=1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        row = not fenced and line.startswith("|")
        if row:
            if not current:
                start = number
            current.append(len(re.split(r"(?<!\\)\|", line.strip().strip("|"))))
        elif current:
            found.append((start, current))
            current = []
    return found


def test_the_table_checker_counts_cells(tmp_path: Path) -> None:
    doc = tmp_path / "t.md"
    doc.write_text("| a | b |\n|---|---|\n| `x` | y \\| z |\n\n```\n| not | a | table |\n```\n")
    assert tables(doc) == [(1, [2, 2, 2])]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_row_has_the_header_columns(doc: Path) -> None:
    """A row with more cells than its header loses them on GitHub; one with fewer shifts."""
    bad = [
        f"line {start}: header {counts[0]} cells, rows {sorted(set(counts[1:]))}"
        for start, counts in tables(doc)
        if any(c != counts[0] for c in counts[1:])
    ]
    assert not bad, f"{doc.name}: " + "; ".join(bad)
