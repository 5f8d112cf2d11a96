"""Comparing our ops with torch's: tolerances, the comparison helper, gradient checks.

Tolerances (written down here, set from the dtype and the reduction size, never tuned to pass)
---------------------------------------------------------------------------------------------
Let ``eps`` be the dtype's machine epsilon (2^-52 float64, 2^-23 float32, 2^-7 bfloat16) and
``u = eps / 2`` its unit roundoff. Both sides carry rounding error, so a bound on the
*difference* is the sum of the two sides' error bounds.

* Pointwise ops (:func:`pointwise_tol`): ``rtol = atol = 32 · eps``. Measured against
  50-digit values (mpmath) on a grid over [-40, 40], in eps (relative above 1, absolute below):
  torch's own kernels are off by up to 21 eps in float64 and 8.5 eps in float32, in the backward
  of GELU-tanh, SiLU and Mish, whose ``1 − σ`` and ``1 ± tanh`` terms cancel; ours by at most
  2.6 eps (we write those terms with sigmoids instead). The upstream gradient is drawn from
  U(−1, 1), so these per-unit errors bound the gradients too, and 32 covers their sum; atol
  covers results near zero whose terms are of order one.
  float16 / bfloat16 are computed in float32 and rounded once, by both us and torch, so the
  results are at most one ulp of the half type apart (``rtol = eps`` of the half type), plus
  the float32 atol for results near zero.

* Reductions of length ``k`` (:func:`reduction_tol`). Any summation order of k products has
  error at most ``γ_k · S`` where ``γ_k = k·u / (1 − k·u)`` and ``S = Σ |terms|`` (Higham,
  *Accuracy and Stability of Numerical Algorithms*, §3.1). The bound for the difference is
  ``2 · γ_k · S`` (both sides), plus one rounding to the output type on each side
  (``2 · u_out · S``). Half types accumulate in float32 (``u`` of float32 in ``γ_k``). The
  caller passes ``S``, the largest absolute-value sum of the output, computed in float64.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as TF
from torch import Tensor

_HALF_TYPES = (torch.float16, torch.bfloat16)

# torch's activation for each name the compiled ops take (minitorch_nn.kernels.ACTIVATIONS).
TORCH_ACT = {
    "none": lambda z: z,
    "relu": TF.relu,
    "gelu": TF.gelu,
    "gelu_tanh": lambda z: TF.gelu(z, approximate="tanh"),
    "silu": TF.silu,
    "mish": TF.mish,
}


@dataclass(frozen=True)
class Tol:
    rtol: float
    atol: float


def pointwise_tol(dtype: torch.dtype, ulps: int = 32) -> Tol:
    """Tolerance for an elementwise op in ``dtype``; see the module docstring."""
    if dtype in _HALF_TYPES:
        return Tol(rtol=torch.finfo(dtype).eps, atol=ulps * torch.finfo(torch.float32).eps)
    eps = torch.finfo(dtype).eps
    return Tol(rtol=ulps * eps, atol=ulps * eps)


def reduction_tol(dtype: torch.dtype, k: int, abs_sum: float) -> Tol:
    """Tolerance for a length-``k`` reduction whose absolute-value sums are at most ``abs_sum``."""
    acc = torch.float32 if dtype in _HALF_TYPES else dtype
    u_acc = torch.finfo(acc).eps / 2
    u_out = torch.finfo(dtype).eps / 2
    gamma = k * u_acc / (1 - k * u_acc)
    atol = 2 * (gamma + u_out) * abs_sum
    return Tol(rtol=2 * u_out, atol=max(atol, torch.finfo(dtype).tiny))


def describe(t: Tensor) -> str:
    """dtype, shape and memory layout of ``t``, for failure messages."""
    layout = "contiguous" if t.is_contiguous() else f"strides={t.stride()}"
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)} {layout} offset={t.storage_offset()}"


def _worst_element(actual: Tensor, expected: Tensor) -> tuple[int, ...] | None:
    if actual.shape != expected.shape or actual.numel() == 0:
        return None
    diff = (actual.double() - expected.double()).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    flat = int(diff.argmax())
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))


def assert_close(
    actual: Tensor, expected: Tensor, tol: Tol, what: str, context: Mapping[str, Tensor] | None = None
) -> None:
    """``torch.testing.assert_close`` with NaNs compared equal and a message naming the inputs."""
    context = context or {}

    def message(default: str) -> str:
        lines = [f"{what} differs from torch (rtol={tol.rtol:.3g}, atol={tol.atol:.3g})"]
        lines += [f"  {name}: {describe(t)}" for name, t in context.items()]
        index = _worst_element(actual, expected)
        if index is not None:
            lines.append(f"  worst element at {index}: ours={actual[index].item()!r} torch={expected[index].item()!r}")
            for name, t in context.items():
                if t.shape == actual.shape:
                    lines.append(f"    where {name} = {t[index].item()!r}")
        return "\n".join([*lines, default])

    torch.testing.assert_close(actual, expected, rtol=tol.rtol, atol=tol.atol, equal_nan=True, msg=message)


def _tol_for(tol: Tol | Mapping[str, Tol], name: str) -> Tol:
    return tol if isinstance(tol, Tol) else tol[name]


def upstream_gradient(shape: Sequence[int], dtype: torch.dtype, seed: int = 0) -> Tensor:
    """The fixed random ``dL/d(output)`` that :func:`assert_same_as_torch` back-propagates.

    Uniform on [-1, 1]: random, so a transposed or mis-summed gradient cannot pass by symmetry,
    and bounded, so an op's error per unit of upstream gradient bounds its gradient's error.
    """
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(tuple(shape), generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def assert_same_as_torch(
    ours: Callable[..., Tensor],
    oracle: Callable[..., Tensor],
    inputs: Mapping[str, Tensor | None],
    *,
    tol: Tol | Mapping[str, Tol],
    ours_params: Mapping[str, Tensor] | None = None,
    oracle_params: Mapping[str, Tensor] | None = None,
    seed: int = 0,
) -> None:
    """Run ``ours(*inputs)`` and ``oracle(*inputs)`` and compare values and gradients.

    ``inputs`` maps names to the positional arguments, shared by both sides. Gradients are
    taken with ``torch.autograd.grad`` (nothing accumulates in ``.grad``) with respect to
    every input that requires grad and, for modules, every parameter in ``ours_params`` /
    ``oracle_params`` (matched by name). The upstream gradient is a fixed random tensor, so
    a transposed or mis-summed gradient cannot pass by symmetry. ``tol`` is one ``Tol`` or a
    mapping from ``"output"`` and each input / parameter name to a ``Tol``.

    Also checks that ``ours`` did not modify its inputs.
    """
    args = list(inputs.values())
    tensors = {name: t for name, t in inputs.items() if isinstance(t, Tensor)}
    before = {name: t.detach().clone() for name, t in tensors.items()}

    out = ours(*args)
    for name, t in tensors.items():
        torch.testing.assert_close(
            t.detach(), before[name], rtol=0, atol=0, equal_nan=True, msg=f"ours modified {name}"
        )
    expected = oracle(*args)
    assert_close(out, expected, _tol_for(tol, "output"), "output", tensors)

    leaves = {name: t for name, t in tensors.items() if t.requires_grad}
    ours_leaves = dict(leaves, **(ours_params or {}))
    oracle_leaves = dict(leaves, **(oracle_params or {}))
    ours_leaves = {k: v for k, v in ours_leaves.items() if v.requires_grad}
    if not ours_leaves or not out.requires_grad:
        return
    assert ours_leaves.keys() == {k for k, v in oracle_leaves.items() if v.requires_grad}
    grad_out = upstream_gradient(out.shape, out.dtype, seed).to(out.device)
    names = list(ours_leaves)
    ours_grads = torch.autograd.grad(out, [ours_leaves[n] for n in names], grad_out, allow_unused=True)
    oracle_grads = torch.autograd.grad(expected, [oracle_leaves[n] for n in names], grad_out, allow_unused=True)
    for name, a, b, leaf in zip(names, ours_grads, oracle_grads, (ours_leaves[n] for n in names), strict=True):
        a = torch.zeros_like(leaf) if a is None else a
        b = torch.zeros_like(leaf) if b is None else b
        assert_close(a, b, _tol_for(tol, name), f"gradient wrt {name}", tensors)


def assert_raises_like_torch(ours: Callable[[], object], oracle: Callable[[], object]) -> BaseException:
    """``oracle()`` must raise; ``ours()`` must raise the same exception type. Returns ours."""
    try:
        oracle()
    except Exception as e:
        expected_type = type(e)
    else:
        raise AssertionError("torch accepted the input this test calls bad; fix the test")
    with pytest.raises(Exception) as ours_error:  # noqa: PT011 (the type is checked exactly below)
        ours()
    assert type(ours_error.value) is expected_type, (
        f"torch raised {expected_type.__name__}, we raised {type(ours_error.value).__name__}: {ours_error.value}"
    )
    assert str(ours_error.value), "the error has no message"
    return ours_error.value


def constructor_signature(cls: type) -> list[tuple]:
    """(name, kind, default) of each ``__init__`` parameter, to compare a module with torch's."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()]


def check_gradients(fn: Callable[..., Tensor], inputs: Sequence[Tensor], *, second_order: bool = True) -> None:
    """``gradcheck`` and (unless disabled) ``gradgradcheck`` of ``fn`` at float64 ``inputs``.

    Finite differences in float64 with gradcheck's defaults (eps=1e-6, atol=1e-5, rtol=1e-3):
    the numerical derivative's truncation error is O(eps²·f''') and its rounding error
    O(u/eps) ≈ 1e-10, both far inside those tolerances for the smooth points the tests draw.
    """
    assert all(t.dtype == torch.float64 for t in inputs if isinstance(t, Tensor))
    assert torch.autograd.gradcheck(fn, tuple(inputs))
    if second_order:
        assert torch.autograd.gradgradcheck(fn, tuple(inputs))
