"""The compiled ops: the Python face of the C++/CUDA extension ``minitorch_nn._C``.

The extension declares its ops with ``TORCH_LIBRARY(minitorch_nn, ...)`` (``csrc/ops.cpp``) and
registers a CPU (and, in CUDA builds, a CUDA) implementation of each. This package loads it and
adds, with :mod:`torch.library`, what makes each op a first-class torch op:

* a fake (meta) implementation, so ``torch.compile`` and ``torch.library.opcheck`` can trace it
  without running it;
* its autograd formula, whose backward is itself a registered op of the extension.

Then it exposes plain functions with docstrings, and modules whose ``state_dict`` is
interchangeable with the reference modules'. Kernel-backed modules have names of their own
(``LayerNormAct``, ``BatchNormAct2d``), so a reader always knows whether a compiled kernel runs.

If the extension was not built (no compiler, a failed build, ``MINITORCH_NO_EXTENSION=1``),
importing this package still works: :data:`AVAILABLE` is False, :data:`UNAVAILABLE_REASON`
says why, and calling an op raises a ``RuntimeError`` that says the same.
"""

from __future__ import annotations

from ._loader import AVAILABLE, UNAVAILABLE_REASON, require
from .conv import ALGORITHMS, CPU_ALGORITHMS, CUDA_ALGORITHMS, Conv2dAct, conv2d, fold_batch_norm, use_conv_kernels
from .norm_act import ACTIVATIONS, LADDER_RUNGS, BatchNormAct2d, LayerNormAct, batch_norm_act, layer_norm_act

__all__ = [
    "ACTIVATIONS",
    "ALGORITHMS",
    "AVAILABLE",
    "CPU_ALGORITHMS",
    "CUDA_ALGORITHMS",
    "LADDER_RUNGS",
    "UNAVAILABLE_REASON",
    "BatchNormAct2d",
    "Conv2dAct",
    "LayerNormAct",
    "batch_norm_act",
    "conv2d",
    "fold_batch_norm",
    "layer_norm_act",
    "require",
    "use_conv_kernels",
]
