"""The README's line counts of a rule (issue 8: "say in the README how many lines Adam's rule and
functor take") are recounted from the sources, so they cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPTIM = ROOT / "src" / "optimist" / "optim"


def python_lines(module: str, rule: str) -> int:
    """Non-blank lines from ``def _scalars`` to the closing parenthesis of ``RULE = Rule(``."""
    lines = (OPTIM / f"{module}.py").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("def _scalars"))
    begin = lines.index(f"{rule} = Rule(")
    end = next(i for i in range(begin, len(lines)) if lines[i] == ")")
    return sum(1 for line in lines[start : end + 1] if line.strip())


def cpp_lines(functor: str) -> int:
    """Non-blank lines of ``struct <functor>`` in ``csrc/rules.h``, its ``template`` line to
    ``};``."""
    lines = (OPTIM / "csrc" / "rules.h").read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if line.startswith(f"struct {functor} {{"))
    assert lines[begin - 1].startswith("template")
    end = next(i for i in range(begin, len(lines)) if lines[i] == "};")
    return sum(1 for line in lines[begin - 1 : end + 1] if line.strip())


def test_readme_line_counts_of_adam_and_lion_match_the_sources():
    readme = " ".join((ROOT / "README.md").read_text().split())
    adam = re.search(r"Adam's rule is (\d+) lines of Python .*? and (\d+) lines of C\+\+", readme)
    lion = re.search(r"Lion's is (\d+) and (\d+)", readme)
    assert adam and lion, "the README no longer states the counts"
    assert (int(adam[1]), int(adam[2])) == (python_lines("adam", "ADAM"), cpp_lines("Adam"))
    assert (int(lion[1]), int(lion[2])) == (python_lines("lion", "LION"), cpp_lines("Lion"))
