"""Numerically stable elementwise building blocks shared by the reference ops.

Nothing here is an autograd.Function: these are plain tensor expressions that the ops'
forward and backward passes are written in. Because a backward pass is itself differentiated
when you ask for a second derivative (``gradgradcheck``, ``create_graph=True``), every helper
must be safe to *differentiate*, not only to evaluate. Two rules follow.

1. ``exp`` never sees a large positive argument. ``sigmoid(x) = 1 / (1 + exp(-x))`` overflows
   ``exp`` for x < -88.7 in float32 (-709.8 in float64); the stable forms below only ever
   exponentiate non-positive numbers, so every intermediate stays in [0, 1].

2. The "double where" rule. ``torch.where(c, a, b)`` sends a zero gradient to the branch it
   did not pick, but ``0 * inf`` and ``0 * nan`` are ``nan``: if the unpicked branch overflows,
   its gradient poisons the result. So each branch gets its argument clamped into the region
   where that branch is used. ``clamp`` passes the gradient through at its boundary
   (its mask is ``min <= x <= max``), so the picked branch is differentiated exactly, including
   at the switch point itself.

"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SQRT_2 = math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def sigmoid(x: Tensor) -> Tensor:
    r"""σ(x) = 1 / (1 + e^{-x}), evaluated so that ``exp`` only sees x <= 0.

    For x >= 0:  σ(x) = 1 / (1 + e^{-x})        (e^{-x} in (0, 1])
    For x <  0:  σ(x) = e^{x} / (1 + e^{x})      (e^{x} in (0, 1))
    """
    e_pos = torch.exp(-x.clamp(min=0))
    e_neg = torch.exp(x.clamp(max=0))
    return torch.where(x >= 0, 1 / (1 + e_pos), e_neg / (1 + e_neg))


def tanh(x: Tensor) -> Tensor:
    r"""tanh(x) = (1 − e^{−2x}) / (1 + e^{−2x}) for x >= 0, odd-symmetric for x < 0.

    ``1 − e^{−2x}`` cancels catastrophically for small x (x = 1e-8 loses half the digits of a
    float64), so it is written with ``expm1(z) = e^z − 1``, which is exact near 0:
    tanh(x) = −expm1(−2x) / (2 + expm1(−2x)) for x >= 0.
    """
    m_pos = torch.expm1(-2 * x.clamp(min=0))
    m_neg = torch.expm1(2 * x.clamp(max=0))
    return torch.where(x >= 0, -m_pos / (2 + m_pos), m_neg / (2 + m_neg))


def softplus(x: Tensor) -> Tensor:
    r"""softplus(x) = log(1 + e^x) without overflow.

    For x > 0:   log(1 + e^x) = x + log(1 + e^{−x})   (``log1p`` keeps the tail exact)
    For x <= 0:  log(1 + e^x) = log1p(e^x)
    The derivative of either branch is σ(x), including at the switch point x = 0.
    """
    pos = x.clamp(min=0)
    neg = x.clamp(max=0)
    return torch.where(x > 0, pos + torch.log1p(torch.exp(-pos)), torch.log1p(torch.exp(neg)))


def normal_cdf(x: Tensor) -> Tensor:
    r"""Φ(x) = P(X <= x) for X ~ N(0, 1) = ½·(1 + erf(x / √2)) = ½·erfc(−x / √2).

    The textbook form ``1 + erf(x/√2)`` cancels in the left tail (at x = −5 in float32 it keeps
    about one significant digit); ``erfc`` computes the small tail directly.
    """
    return 0.5 * torch.erfc(-x / SQRT_2)


def normal_pdf(x: Tensor) -> Tensor:
    r"""φ(x) = e^{−x²/2} / √(2π), the derivative of Φ."""
    return INV_SQRT_2PI * torch.exp(-0.5 * x * x)
