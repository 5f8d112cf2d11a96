"""The documentation's promises are checked: every relative link resolves, and every test it cites exists.

The README's tour cites a test for each claim (``tests/test_x.py::test_name``, then ``::other`` for
more tests of the same file in the same line). A renamed or deleted test would leave the claim
unbacked; this test fails instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "csrc" / "README.md", ROOT / "csrc" / "cpu" / "conv" / "README.md"]
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_CITED = re.compile(r"(tests/[\w/]+\.py)?::(\w+)")


def cited_tests(text: str) -> list[tuple[str, str, int]]:
    """(test file, test name, line number) for every citation; '::name' takes the line's last file."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        current = None
        for match in _CITED.finditer(line):
            current = match.group(1) or current
            if current is not None:
                found.append((current, match.group(2), number))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    missing = []
    for target in _LINK.findall(doc.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (doc.parent / target).exists():
            missing.append(target)
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_test_exists(doc):
    citations = cited_tests(doc.read_text())
    missing = []
    for file, name, line in citations:
        path = ROOT / file
        if not path.exists() or not re.search(rf"^(async )?def {name}\(", path.read_text(), re.MULTILINE):
            missing.append(f"line {line}: {file}::{name}")
    assert not missing, f"{doc.name} cites tests that do not exist: {missing}"


def test_the_readme_cites_tests_at_all():
    # The parser must find the tour's citations (a regex that matched nothing would pass vacuously).
    assert len(cited_tests((ROOT / "README.md").read_text())) > 40
