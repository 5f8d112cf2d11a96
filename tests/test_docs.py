"""The documentation's promises are checked: every relative link resolves, and every test it cites exists.

The README's tour cites a test for each claim (``tests/test_x.py::test_name``, then ``::other`` for
more tests of the same file in the same line). A renamed or deleted test would leave the claim
unbacked; this test fails instead.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "benchmarks" / "README.md",
    ROOT / "csrc" / "README.md",
    ROOT / "csrc" / "cpu" / "conv" / "README.md",
]
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


def test_the_tour_cites_tests_at_all():
    # The parser must find the tour's citations (a regex that matched nothing would pass vacuously).
    assert len(cited_tests((ROOT / "docs" / "tour.md").read_text())) > 40


# The layers of the package and what each may import (README, "How the code is layered").
LAYERS = {
    "functional": set(),
    "init": set(),
    "nn": {"functional", "init"},
    "kernels": {"_C", "functional", "nn"},
    "models": {"nn", "init"},
    "conversion": {"nn", "init"},
    "examples": {"functional", "init", "nn", "models", "kernels", "conversion"},
}


ROOT_EXPORTS = {"convert": "conversion"}  # names minitorch_nn/__init__.py re-exports, and their module


def package_imports(source: str, package_parts: tuple[str, ...], layer: str) -> set[str]:
    """The top-level parts of minitorch_nn, other than ``layer``, that ``source`` imports.

    ``package_parts``: where the module sits inside minitorch_nn (``("nn",)`` for nn/conv.py,
    ``()`` for models.py), to resolve its relative imports.
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's own package
                base = package_parts[: len(package_parts) - (node.level - 1)]
                parts = [*base, *(node.module.split(".") if node.module else [])]
                names = [parts[0]] if parts else [alias.name for alias in node.names]
            elif node.module and node.module.split(".")[0] == "minitorch_nn":
                rest = node.module.split(".")[1:]
                names = [rest[0]] if rest else [alias.name for alias in node.names]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("minitorch_nn.")]
        else:
            continue
        found |= {ROOT_EXPORTS.get(n, n) for n in names} - {layer}
    return found


def test_package_imports_follow_the_stated_layers():
    package = ROOT / "minitorch_nn"
    wrong = []
    for layer, allowed in LAYERS.items():
        files = sorted((package / layer).rglob("*.py")) if (package / layer).is_dir() else [package / f"{layer}.py"]
        assert files, layer
        for path in files:
            parts = path.parent.relative_to(package).parts
            for imported in package_imports(path.read_text(), parts, layer) - allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not wrong, wrong


def test_the_layer_check_resolves_imports_and_sees_a_forbidden_one():
    # The check must be able to fail: functional/ importing nn/ is caught, in every spelling.
    source = "\n".join(
        [
            "from ..nn import Linear",
            "from . import _math",
            "import minitorch_nn.kernels",
            "from minitorch_nn import init",
        ]
    )
    assert package_imports(source, ("functional",), "functional") == {"nn", "kernels", "init"}
    assert package_imports("from .functional import conv\n", (), "models") == {"functional"}
