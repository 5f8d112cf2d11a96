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

:func:`cuda_tuning` sets the CUDA launchers' run-time tuning parameters for a block of code (the
sweep of ``benchmarks/cuda_tuning.py``); :func:`cuda_tuning_params` lists them.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

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
    "CudaTuningParam",
    "LayerNormAct",
    "batch_norm_act",
    "conv2d",
    "cuda_tuning",
    "cuda_tuning_params",
    "fold_batch_norm",
    "layer_norm_act",
    "require",
    "use_conv_kernels",
]


# ---------------------------------------------------------------------------------------------
# The CUDA launchers' run-time tuning parameters (csrc/cuda/tuning.h)


class CudaTuningParam(NamedTuple):
    """One tuning parameter: its value now, its default (today's guess), and the range allowed."""

    value: int
    default: int
    min: int
    max: int


def _tuning_ops(ops: Any) -> Any:
    require()
    ops = torch.ops.minitorch_nn if ops is None else ops
    if not hasattr(ops, "_cuda_tuning"):
        raise RuntimeError(
            "the CUDA tuning parameters exist only where the CUDA kernels do: a CUDA build of the extension, "
            "or the CUDA emulator's ops (ops=torch.ops.minitorch_nn_emu, see csrc/emu/build.py); "
            f"{ops} has none"
        )
    return ops


def cuda_tuning_params(ops: Any = None) -> dict[str, CudaTuningParam]:
    """Every CUDA tuning parameter by name, in the order of ``csrc/cuda/tuning.h``'s tables.

    Args:
        ops: the op namespace whose kernels to ask: ``torch.ops.minitorch_nn`` (the default; a CUDA
            build) or the CUDA emulator's ``torch.ops.minitorch_nn_emu``.

    Raises:
        RuntimeError: the namespace has no CUDA kernels (a CPU-only build).
    """
    ops = _tuning_ops(ops)
    return {name: CudaTuningParam(*ops._cuda_tuning(name)) for name in ops._cuda_tuning_names()}


@contextlib.contextmanager
def cuda_tuning(ops: Any = None, **params: int) -> Iterator[dict[str, CudaTuningParam]]:
    """Run a block with some CUDA tuning parameters set; the previous values come back after it.

    The parameters are the launch choices the CUDA kernels make at run time (which kernel a row
    length goes to, how much of a row is cached in shared memory, how a reduction is split), with
    today's guesses as defaults; ``csrc/README.md`` ("Tuning") lists them and
    ``benchmarks/cuda_tuning.py`` sweeps them. Any value in range gives correct results (the tests
    run non-default ones); only the speed, and the order of floating-point sums, change.

    The values are process-wide, read by every launch: set them between ops, not while another
    thread runs one (an op reads them to size its workspace and again to launch).

    Args:
        ops: the op namespace to tune: ``torch.ops.minitorch_nn`` (default) or the CUDA emulator's.
        **params: name=value for each parameter to set.

    Yields:
        :func:`cuda_tuning_params` as set inside the block.

    Raises:
        ValueError: an unknown name (the message lists the names) or a value out of range (it
            gives the range); nothing is changed then.
        TypeError: a value that is not an integer.
        RuntimeError: no CUDA kernels in ``ops`` (a CPU-only build).

    Example::

        >>> import minitorch_nn.kernels as K
        >>> with K.cuda_tuning(ln_warp_row_max=256):  # doctest: +SKIP
        ...     y = K.layer_norm_act(x.cuda(), 300)      # a row of 300: one block per row now
    """
    ops = _tuning_ops(ops)
    values = {name: operator.index(value) for name, value in params.items()}
    previous: dict[str, int] = {}
    try:
        for name, value in values.items():
            previous[name] = ops._cuda_tuning(name, value)[0]
        yield cuda_tuning_params(ops)
    finally:
        for name, value in reversed(previous.items()):
            ops._cuda_tuning(name, value)
