r"""Inverted dropout, with the mask drawn once in forward and reused in backward.

During training each element is zeroed with probability ``p``; the survivors are scaled up by
``1 / (1 − p)``:

    m_i ~ Bernoulli(1 − p)                  (1 keeps the element, 0 drops it)
    y_i = x_i · m_i / (1 − p)

so E[y_i] = x_i: the expected activation is unchanged, and at evaluation time the layer is the
identity, with no rescaling of weights. ("Inverted" because the scaling happens during
training, not at test time as in the original formulation, which scaled by (1 − p) at
inference.)

Backward: y is linear in x with the mask held fixed, so

    ∂L/∂x_i = ∂L/∂y_i · m_i / (1 − p)

using the very mask of the forward pass, which is why it is saved rather than redrawn.

Edge cases, as torch: ``p = 0`` or ``training=False`` returns the input itself (no copy, no
random numbers drawn); ``p = 1`` drops everything (output and gradient all zeros).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function

from ._common import check_tensors, maybe_inplace

__all__ = ["dropout"]


class DropoutFunction(Function):
    """y = x · s with the scaled mask s = m / (1 − p); dx = dy · s."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        if p == 1.0:
            scaled_mask = torch.zeros_like(x)
        else:
            # Same draw as torch's CPU kernel (a Bernoulli(1 − p) tensor shaped like x, then
            # divided by 1 − p), so under one seed the two masks agree element for element.
            scaled_mask = torch.empty_like(x).bernoulli_(1 - p).div_(1 - p)
        ctx.save_for_backward(scaled_mask)
        return x * scaled_mask

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, None]:
        (scaled_mask,) = ctx.saved_tensors
        return dy * scaled_mask, None


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    r"""Zero each element with probability ``p`` and scale the rest by ``1/(1-p)`` (training).

    See the module docstring for the math.

    Args:
        input: tensor of any shape ``(*)``.
        p: probability of an element being zeroed, in ``[0, 1]``. Default: 0.5.
        training: apply dropout if ``True``; otherwise return ``input`` unchanged.
        inplace: write the result into ``input`` and return it.

    Raises:
        ValueError: ``p`` outside ``[0, 1]`` (as torch).

    Example::

        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> dropout(torch.ones(8), p=0.5)
        tensor([0., 0., 2., 0., 0., 0., 2., 2.])
    """
    check_tensors("dropout", input=input)
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0 or input.numel() == 0:
        return input
    return maybe_inplace(DropoutFunction.apply, input, inplace, p)
