"""The reference ops never call the torch implementation of what they teach.

DESIGN.md allows tensor primitives (creation, views, indexing, elementwise math, reductions,
matmul) and forbids ``torch.nn.functional``, ``torch.nn`` modules and the torch ops that
implement a layer. The forbidden op names are taken from torch itself: every public function
of ``torch.nn.functional`` that also exists as ``torch.<name>`` or ``Tensor.<name>`` (relu,
sigmoid, tanh, softmax, dropout, conv2d, layer_norm, batch_norm, max_pool2d, ...), plus the
few layer ops that live elsewhere (logsumexp, special.expit, ...). ``torch.nn.init`` is
forbidden in ``init.py`` for the same reason.

The scan reads the syntax tree, so docstrings and comments may name these ops freely.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as TF

PACKAGE = Path(__file__).resolve().parents[1] / "minitorch_nn"

_PUBLIC_F = {n for n in dir(TF) if not n.startswith("_") and callable(getattr(TF, n))}
_NOT_OPS = {"Tensor", "Callable", "DType", "Optional", "ScalingType", "SwizzleType"}
# Tensor.unfold is the sliding-window *view* DESIGN.md allows for im2col (F.unfold is the op).
_ALLOWED_METHODS = {"unfold"}
EXTRA_FORBIDDEN = {"logsumexp", "expit", "log_sigmoid", "native_layer_norm", "native_batch_norm", "native_dropout"}
FORBIDDEN_TORCH = {n for n in _PUBLIC_F if hasattr(torch, n)} - _NOT_OPS | EXTRA_FORBIDDEN
FORBIDDEN_METHODS = {n for n in _PUBLIC_F if hasattr(torch.Tensor, n)} - _ALLOWED_METHODS | {"logsumexp"}
FORBIDDEN_MODULES = ("torch.nn", "torch._C", "torch.ops", "torch._VF", "torch._refs", "torch._decomp")


def _dotted(node: ast.AST) -> str | None:
    """``torch.nn.functional.relu`` for the expression that spells it, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def violations(source: str, *, allow_modules: tuple[str, ...] = ()) -> list[str]:
    """Forbidden imports, module uses and calls in ``source``, as 'line: what' strings."""
    found = []
    forbidden_modules = tuple(m for m in FORBIDDEN_MODULES if m not in allow_modules)

    def forbidden_module(name: str) -> bool:
        return any(name == m or name.startswith(m + ".") for m in forbidden_modules)

    tree = ast.parse(source)
    # Names bound to our own modules (``from . import _math``, ``from .. import functional as F``):
    # ``_math.sigmoid(x)`` is our stable sigmoid, not Tensor.sigmoid.
    own = {
        a.asname or a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("minitorch_nn"))
        for a in node.names
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if forbidden_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                bad_module = forbidden_module(node.module) or forbidden_module(f"{node.module}.{a.name}")
                bad_op = node.module.startswith("torch") and a.name in FORBIDDEN_TORCH
                if bad_module or bad_op:
                    found.append(f"{node.lineno}: from {node.module} import {a.name}")
        elif isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name and forbidden_module(name):
                found.append(f"{node.lineno}: {name}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = _dotted(node.func) or ""
            root = name.split(".")[0]
            if root == "torch" and node.func.attr in FORBIDDEN_TORCH:
                found.append(f"{node.lineno}: {name}()")
            elif root not in own and root != "torch" and node.func.attr in FORBIDDEN_METHODS:
                found.append(f"{node.lineno}: .{node.func.attr}() method")
    return sorted(set(found))


def _reference_files():
    return [*sorted((PACKAGE / "functional").rglob("*.py")), PACKAGE / "init.py"]


@pytest.mark.parametrize("path", _reference_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_reference_code_does_not_call_the_torch_op_it_teaches(path):
    found = violations(path.read_text())
    assert not found, f"{path.relative_to(PACKAGE.parent)} calls torch implementations:\n" + "\n".join(found)


@pytest.mark.parametrize("path", sorted((PACKAGE / "nn").rglob("*.py")), ids=lambda p: p.name)
def test_modules_compute_with_our_functional_ops(path):
    # Modules may subclass torch.nn.Module and use Parameter, but compute through our ops.
    found = violations(path.read_text(), allow_modules=("torch.nn",))
    found += [f"uses {m}" for m in ("torch.nn.functional", "torch.nn.init") if m in path.read_text()]
    assert not found, f"{path.name}:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch.nn.functional as F",
        "from torch.nn import functional",
        "from torch import nn",
        "import torch\ny = torch.nn.functional.gelu(x)",
        "import torch\ny = torch.relu(x)",
        "import torch\ny = torch.sigmoid(x)",
        "import torch\ny = torch.special.expit(x)",
        "import torch\ny = torch.layer_norm(x, (3,))",
        "import torch\ny = torch.logsumexp(x, 1)",
        "import torch\ny = torch._C._nn.gelu(x)",
        "import torch\ny = torch.ops.aten.gelu(x)",
        "y = x.softmax(-1)",
        "y = x.relu()",
        "from torch import dropout",
        "from . import _math\ny = x.sigmoid()",
    ],
)
def test_scanner_catches_forbidden_calls(snippet):
    assert violations(snippet), f"the scan missed: {snippet!r}"


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ny = torch.exp(-x.clamp(min=0))",
        "import torch\ny = torch.erfc(x) + torch.expm1(x) + torch.log1p(x)",
        "import torch\ny = x.matmul(w.t()).sum_to_size(3)",
        "y = x.unfold(2, 3, 1)",
        "from . import _math\ny = _math.sigmoid(x)",
        "from .. import functional as F\ny = F.relu(x)",
        '"""torch.nn.functional.relu in a docstring is fine"""',
    ],
)
def test_scanner_allows_primitives(snippet):
    assert not violations(snippet)
