r"""Linear (fully connected) layer: ``y = x Wᵀ + b``, forward and backward by matmul.

Dimensions, named once: N rows (all leading dimensions ``*`` flattened together), I input
features, O output features.

Forward::

    x  (*, I)     W  (O, I)     b  (O,)
    y = x @ Wᵀ + b                       (*, O)     y[n, o] = Σ_i x[n, i]·W[o, i] + b[o]

Backward, given dy = ∂L/∂y of shape (*, O). Each weight is used once per row, so its
gradient sums over the rows; each input is used once per output feature, so its gradient
sums over O:

    dx = dy @ W                          (*, O) @ (O, I) -> (*, I)
    dW = dyᵀ @ x  (rows flattened)       (O, N) @ (N, I) -> (O, I)
    db = Σ_rows dy                       (N, O)          -> (O,)

Each is a contraction: dx reduces over O, dW and db over N. (So their rounding error grows
with those sizes, which is how the tests set their tolerances.) Half-precision operands are
multiplied in float32 and rounded once, as torch's GEMMs accumulate.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd import Function

from ._common import check_tensors, opmath

__all__ = ["linear"]


class LinearFunction(Function):
    """y = x Wᵀ + b for a 2-D weight; see the module docstring for the backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight, bias)
        y = opmath(x).matmul(opmath(weight).t())  # (*, I) @ (I, O) -> (*, O)
        if bias is not None:
            y = y + opmath(bias)
        return y.to(x.dtype)  # half types: accumulated in float32, rounded once

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight, bias = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        dx = dw = db = None
        g = opmath(dy)
        if need_x:
            dx = g.matmul(opmath(weight)).to(x.dtype)  # (*, O) @ (O, I) -> (*, I)
        if need_w:
            n = math.prod(x.shape[:-1])  # not reshape(-1, ...): -1 is ambiguous when I or O is 0
            dy_rows = g.reshape(n, dy.shape[-1])  # (N, O)
            x_rows = opmath(x).reshape(n, x.shape[-1])  # (N, I)
            dw = dy_rows.t().matmul(x_rows).to(weight.dtype)  # (O, N) @ (N, I) -> (O, I)
        if need_b:
            # Sum over every dimension the bias was broadcast along: (*, O) -> bias.shape.
            db = g.sum_to_size(bias.shape).to(bias.dtype)
        return dx, dw, db


def _check_args(input: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    if input.dim() < 1 or weight.dim() < 1:
        raise RuntimeError(
            f"both arguments to linear need to be at least 1D, but they are {input.dim()}D and {weight.dim()}D"
        )
    if weight.dim() > 2:
        raise RuntimeError(f"linear: weight must be 1-D or 2-D (out_features, in_features), got {weight.dim()}-D")
    if weight.dim() == 1 and bias is not None:
        raise RuntimeError("linear: a bias needs a 2-D weight (out_features, in_features); got a 1-D weight")
    if input.shape[-1] != weight.shape[-1]:
        raise RuntimeError(
            f"linear: input's last dimension ({input.shape[-1]}) must equal weight's in_features "
            f"({weight.shape[-1]}); input {tuple(input.shape)}, weight {tuple(weight.shape)}"
        )
    if input.dtype != weight.dtype:
        raise RuntimeError(
            f"linear: expected input and weight to have the same dtype, got {input.dtype} and {weight.dtype}"
        )
    if bias is not None:
        if bias.dtype != input.dtype:
            raise RuntimeError(f"linear: expected bias to have dtype {input.dtype}, got {bias.dtype}")
        out_shape = (*input.shape[:-1], weight.shape[0])
        try:
            expanded = torch.broadcast_shapes(bias.shape, out_shape)
        except RuntimeError:
            expanded = None
        if expanded != torch.Size(out_shape):
            raise RuntimeError(
                f"linear: bias of shape {tuple(bias.shape)} cannot be broadcast to the output shape {out_shape}"
            )


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    r"""Apply ``y = x Wᵀ + b``. See the module docstring for the math.

    Args:
        input: ``(*, in_features)``, any number of leading dimensions (including none).
        weight: ``(out_features, in_features)``; a 1-D ``(in_features,)`` weight (no bias) gives
            one dot product per row, with the output feature dimension dropped, as in torch.
        bias: ``(out_features,)`` or anything that broadcasts to the output; optional.

    Shape: ``(*, in_features)`` -> ``(*, out_features)``.

    Raises:
        RuntimeError: mismatched feature sizes, dtypes or a bias that does not broadcast (as torch).

    Example::

        >>> import torch
        >>> x = torch.ones(2, 3)
        >>> linear(x, torch.full((4, 3), 0.5), torch.arange(4.0))
        tensor([[1.5000, 2.5000, 3.5000, 4.5000],
                [1.5000, 2.5000, 3.5000, 4.5000]])
    """
    check_tensors("linear", input=input, weight=weight, bias=bias)
    _check_args(input, weight, bias)
    if weight.dim() == 1:
        # One output feature: the 2-D op with O = 1, that dimension dropped again.
        return LinearFunction.apply(input, weight.unsqueeze(0), None).squeeze(-1)
    return LinearFunction.apply(input, weight, bias)
