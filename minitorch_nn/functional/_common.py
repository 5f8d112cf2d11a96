"""Plumbing shared by the reference ops: precision, argument checks, in-place writes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

_HALF_TYPES = (torch.float16, torch.bfloat16)


def opmath(t: Tensor) -> Tensor:
    """Return ``t`` in the type its math is done in: float32 for float16/bfloat16, else ``t``.

    torch's kernels load half-precision values, compute in float32 and round once on store.
    Doing the same keeps a reduced-precision reference within one rounding of torch instead
    of accumulating a rounding per intermediate.
    """
    return t.float() if t.dtype in _HALF_TYPES else t


def check_floating(input: Tensor, op: str) -> None:
    """Reject integer, bool and complex inputs with the exception type torch raises for them."""
    if not input.is_floating_point():
        raise NotImplementedError(f'"{op}" not implemented for {input.dtype}: expected a floating-point tensor')


def maybe_inplace(op: Callable[..., Tensor], input: Tensor, inplace: bool, *args: object) -> Tensor:
    """``op(input, *args)``, or with ``inplace=True`` the same result written into ``input``.

    The reference computes out of place and copies back: the op saves its own (cloned) input
    for the backward pass, so the overwrite cannot corrupt it, and ``copy_`` records the write
    for autograd exactly as a fused in-place kernel would. Semantics match torch (the result
    lives in ``input``, a leaf that requires grad is refused, views update their base); the
    memory saving of a true in-place kernel is not the point of a reference.
    """
    if not inplace:
        return op(input, *args)
    return input.copy_(op(input.clone(), *args))


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """(rows, columns) from an int or a 1- or 2-sequence: the 2-D ops' size arguments."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    if len(value) == 1:
        return (value[0], value[0])
    if len(value) != 2:
        raise RuntimeError(f"{name} must be a single int or a pair of ints, but got {name}={list(value)}")
    return value


def check_tensors(op: str, **arguments: object) -> None:
    """TypeError, as torch's argument parser raises, for an argument that is not a Tensor.

    ``None`` is accepted (the optional parameters); pass only the arguments that must be
    tensors when given. Without this a list or a float would fail later with an AttributeError
    that names neither the argument nor the problem.
    """
    for position, (name, value) in enumerate(arguments.items(), start=1):
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(
                f"{op}(): argument '{name}' (position {position}) must be Tensor, not {type(value).__name__}"
            )
