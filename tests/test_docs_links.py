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
