r"""Elementwise activations, each an ``autograd.Function`` with its derivative written out.

Every activation here is ``y = f(x)`` applied to each element, so the chain rule is a single
product: given the upstream gradient ``dy = ∂L/∂y``, the input gradient is

    dx = dy · f'(x)                                             (elementwise)

Each ``backward`` below computes exactly that product, with ``f'`` derived in the class
docstring. Most save the *input* and recompute what they need from it; ``sigmoid`` and
``tanh`` save the *output*, because their derivatives are cheapest in terms of it
(σ' = σ(1 − σ), tanh' = 1 − tanh²), which is what torch does too.

The backward passes are written with ordinary differentiable tensor ops, so autograd can
differentiate them again: second derivatives (``gradgradcheck``) work without extra code.

Which activation when (the tutorial's flowchart): ReLU for CNNs; GELU in transformers; SiLU
(Swish) in EfficientNet-style CNNs; Mish where a smoother SiLU is worth its cost; LeakyReLU
when units die (get stuck at ReLU's zero gradient); sigmoid and tanh for gates, not hidden
layers. None goes on a classifier's output: the loss applies it, stably (see the losses).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function

from . import _math
from ._common import check_floating, check_tensors, maybe_inplace, opmath

__all__ = ["gelu", "leaky_relu", "mish", "relu", "sigmoid", "silu", "softplus", "tanh"]

# GELU's tanh approximation: gelu(x) ≈ ½x(1 + tanh(√(2/π)(x + κx³))), κ fitted by Hendrycks & Gimpel.
_KAPPA = 0.044715


def _promote_to_float(input: Tensor, op: str) -> Tensor:
    """Integer inputs to sigmoid/tanh are promoted to the default float dtype, as torch does.

    Complex input is refused (NotImplementedError), where torch computes the complex function:
    a deliberate difference. The stable real formulas here would silently drop the imaginary
    part, and the complex ones (with their poles at iπ/2 + kπi for tanh) are not what these
    references teach. Pinned by
    ``tests/test_fuzz.py::test_activations_refuse_complex_input_torch_computes_the_complex_function``.
    """
    if input.is_complex():
        raise NotImplementedError(f"{op}: complex input is not supported by the reference (torch accepts it)")
    return input if input.is_floating_point() else input.to(torch.get_default_dtype())


class ReLUFunction(Function):
    r"""relu(x) = max(0, x).

    Derivative: relu'(x) = 1 for x > 0, 0 for x < 0. At x = 0 it is undefined; torch
    (and we) use 0. A NaN input propagates to the output and passes its gradient through,
    as torch's does. Half of a ReLU's inputs typically get zero gradient: that is why
    He initialisation doubles the weight variance relative to Xavier (see ``init``).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        # `x < 0` (not `x > 0`) as the test so that NaN, which compares false, passes through.
        return torch.where(x < 0, torch.zeros_like(x), x)

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return torch.where(x <= 0, torch.zeros_like(dy), dy)


class LeakyReLUFunction(Function):
    r"""leaky_relu(x) = x for x > 0, negative_slope · x otherwise.

    Derivative: 1 for x > 0, negative_slope for x <= 0. The small slope keeps a gradient
    flowing for negative inputs, so a unit pushed into the negative region can recover
    (a plain ReLU unit there gets zero gradient and can "die").
    """

    @staticmethod
    def forward(ctx, x: Tensor, negative_slope: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.negative_slope = negative_slope
        return torch.where(x > 0, x, x * negative_slope)

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, dy, dy * ctx.negative_slope), None


class GELUFunction(Function):
    r"""gelu(x) = x · Φ(x), where Φ is the standard normal CDF.

    The "probabilistic" reading: gate the input by the probability that a standard normal
    variable is below it. Very negative x is gated to ~0, very positive x passes as ~x, and
    the transition is smooth (unlike ReLU's corner).

    exact ('none'):  y  = x·Φ(x)                         Φ(x) = ½·erfc(−x/√2)
                     y' = Φ(x) + x·φ(x)                  φ(x) = e^{−x²/2}/√(2π)

    'tanh':          u  = √(2/π)·(x + κx³),  κ = 0.044715
                     y  = ½x·(1 + tanh(u)) = x·σ(2u)                  (as 1 + tanh(u) = 2σ(2u))
                     y' = σ(2u)·(1 + 2x·u'·σ(−2u)),   u' = √(2/π)·(1 + 3κx²)

    Stability: erfc computes the left tail without the cancellation of 1 + erf. The tanh form
    is written with σ(2u) instead of 1 + tanh(u) and 1 − tanh²(u) = 4σ(2u)σ(−2u): the
    textbook ``1 + t`` and ``1 − t²`` cancel catastrophically once |t| is near 1 (|x| ≳ 3),
    and the derivative multiplies that error by up to ~20. For large |x| every factor
    saturates to an exact 0 or 1, so outputs and gradients stay finite.
    """

    @staticmethod
    def forward(ctx, input: Tensor, approximate: str) -> Tensor:
        ctx.save_for_backward(input)
        ctx.approximate = approximate
        x = opmath(input)
        if approximate == "tanh":
            y = x * _math.sigmoid(2 * _math.SQRT_2_OVER_PI * (x + _KAPPA * x * x * x))
        else:
            y = x * _math.normal_cdf(x)
        return y.to(input.dtype)

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, None]:
        (input,) = ctx.saved_tensors
        x = opmath(input)
        if ctx.approximate == "tanh":
            two_u = 2 * _math.SQRT_2_OVER_PI * (x + _KAPPA * x * x * x)
            du_dx = _math.SQRT_2_OVER_PI * (1 + 3 * _KAPPA * x * x)
            s, s_neg = _math.sigmoid(two_u), _math.sigmoid(-two_u)
            # Grouped so that no product overflows before x² does (~1.8e19 in float32):
            # x·u' alone grows like x³, but one of s, s_neg is exactly 0 once |x| is large.
            dy_dx = s + (2 * x * s) * (du_dx * s_neg)
        else:
            dy_dx = _math.normal_cdf(x) + x * _math.normal_pdf(x)
        return (opmath(dy) * dy_dx).to(dy.dtype), None


class SiLUFunction(Function):
    r"""silu(x) = x · σ(x)   (Swish with β = 1).

    "Self-gated": the gate σ(x) is computed from the same input it scales, with no extra
    parameters (an LSTM gate, by contrast, has weights of its own).

    Derivative (product rule, with σ' = σ(1 − σ) and 1 − σ(x) = σ(−x)):
        y' = σ(x) + x·σ(x)σ(−x) = σ(x)·(1 + x·σ(−x))

    σ(−x) is evaluated directly rather than as 1 − σ(x), which cancels for large x.
    """

    @staticmethod
    def forward(ctx, input: Tensor) -> Tensor:
        ctx.save_for_backward(input)
        x = opmath(input)
        return (x * _math.sigmoid(x)).to(input.dtype)

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tensor:
        (input,) = ctx.saved_tensors
        x = opmath(input)
        return (opmath(dy) * _math.sigmoid(x) * (1 + x * _math.sigmoid(-x))).to(dy.dtype)


class MishFunction(Function):
    r"""mish(x) = x · tanh(softplus(x)),  softplus(x) = log(1 + eˣ).

    Derivative, with s = softplus(x), softplus' = σ and tanh' = 1 − tanh² = sech²:
        y' = tanh(s) + x · sech²(s) · σ(x),     sech²(s) = 4σ(2s)σ(−2s)

    Stability: softplus is evaluated without overflow (see ``_math.softplus``). For large x
    it equals x to working precision, so tanh(s) = 1 and y = x: the same as torch's softplus
    switching to the identity above its threshold of 20. sech² is written with sigmoids
    because 1 − tanh² cancels once tanh(s) is near 1.
    """

    @staticmethod
    def forward(ctx, input: Tensor) -> Tensor:
        ctx.save_for_backward(input)
        x = opmath(input)
        return (x * _math.tanh(_math.softplus(x))).to(input.dtype)

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tensor:
        (input,) = ctx.saved_tensors
        x = opmath(input)
        s = _math.softplus(x)
        sech2 = 4 * _math.sigmoid(2 * s) * _math.sigmoid(-2 * s)
        return (opmath(dy) * (_math.tanh(s) + x * sech2 * _math.sigmoid(x))).to(dy.dtype)


class SigmoidFunction(Function):
    r"""sigmoid(x) = σ(x) = 1 / (1 + e^{−x}).

    Derivative in terms of the output: σ'(x) = σ(x)·(1 − σ(x)) = y·(1 − y), so the output is
    saved instead of the input.

    Stability: never exponentiates a positive number (see ``_math.sigmoid``), so x = −1e4
    gives 0 and x = 1e4 gives 1 with no overflow.
    """

    @staticmethod
    def forward(ctx, input: Tensor) -> Tensor:
        y = _math.sigmoid(opmath(input)).to(input.dtype)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        y32 = opmath(y)
        return (opmath(dy) * y32 * (1 - y32)).to(dy.dtype)


class TanhFunction(Function):
    r"""tanh(x) = (eˣ − e^{−x}) / (eˣ + e^{−x}).

    Derivative in terms of the output: tanh'(x) = 1 − tanh²(x) = 1 − y².

    Stability: written with ``expm1`` of a non-positive argument (see ``_math.tanh``), exact
    near 0 and saturating to ±1 without overflow.
    """

    @staticmethod
    def forward(ctx, input: Tensor) -> Tensor:
        y = _math.tanh(opmath(input)).to(input.dtype)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        y32 = opmath(y)
        return (opmath(dy) * (1 - y32 * y32)).to(dy.dtype)


class SoftplusFunction(Function):
    r"""softplus(x) = (1/β) · log(1 + e^{βx}), and x itself where βx > threshold.

    A smooth ReLU: it approaches 0 for x → −∞ and x for x → +∞.

    Derivative: y' = σ(βx) where βx <= threshold, 1 above it (the linear piece).

    Stability: log(1 + e^{βx}) is computed as ``_math.softplus``, finite for any βx, so even a
    very large ``threshold`` cannot overflow (torch's formula returns inf once βx passes ~88 in
    float32; for the default threshold of 20 the two agree).
    """

    @staticmethod
    def forward(ctx, input: Tensor, beta: float, threshold: float) -> Tensor:
        ctx.save_for_backward(input)
        ctx.beta, ctx.threshold = beta, threshold
        x = opmath(input)
        z = x * beta
        return torch.where(z > threshold, x, _math.softplus(z) / beta).to(input.dtype)

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, None, None]:
        (input,) = ctx.saved_tensors
        z = opmath(input) * ctx.beta
        dy_dx = torch.where(z > ctx.threshold, torch.ones_like(z), _math.sigmoid(z))
        return (opmath(dy) * dy_dx).to(dy.dtype), None, None


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    r"""Rectified linear unit, ``max(0, x)`` elementwise. See :class:`ReLUFunction`.

    Args:
        input: any shape ``(*)``; integer dtypes are accepted, as in torch.
        inplace: write the result into ``input`` and return it.

    Shape: ``(*)`` to ``(*)``.

    Example::

        >>> import torch
        >>> relu(torch.tensor([-1.0, 0.0, 2.0]))
        tensor([0., 0., 2.])
    """
    check_tensors("relu", input=input)
    if input.dtype == torch.bool:
        raise RuntimeError("Boolean inputs not supported for relu")
    return maybe_inplace(ReLUFunction.apply, input, inplace)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    r"""``x`` for ``x > 0``, ``negative_slope * x`` otherwise. See :class:`LeakyReLUFunction`.

    Args:
        input: floating-point tensor of any shape ``(*)``.
        negative_slope: slope for negative inputs. Default: 0.01.
        inplace: write the result into ``input`` and return it. Unlike torch, the in-place form
            also differentiates correctly with a negative slope.

    Shape: ``(*)`` -> ``(*)``, elementwise over any number of dimensions.

    Example::

        >>> import torch
        >>> leaky_relu(torch.tensor([-2.0, 3.0]), 0.1)
        tensor([-0.2000,  3.0000])
    """
    check_tensors("leaky_relu", input=input)
    check_floating(input, "leaky_relu")
    return maybe_inplace(LeakyReLUFunction.apply, input, inplace, negative_slope)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    r"""Gaussian error linear unit, ``x * Φ(x)``. See :class:`GELUFunction`.

    Args:
        input: floating-point tensor of any shape ``(*)``.
        approximate: ``'none'`` for the exact erf form, ``'tanh'`` for the tanh approximation.

    Raises:
        RuntimeError: ``approximate`` is neither ``'none'`` nor ``'tanh'`` (as torch).

    Shape: ``(*)`` -> ``(*)``, elementwise over any number of dimensions.

    Example::

        >>> import torch
        >>> gelu(torch.tensor([-1.0, 0.0, 1.0]))
        tensor([-0.1587,  0.0000,  0.8413])
    """
    check_tensors("gelu", input=input)
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}.")
    check_floating(input, "gelu")
    return GELUFunction.apply(input, approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    r"""Sigmoid linear unit (Swish), ``x * sigmoid(x)``. See :class:`SiLUFunction`.

    Shape: ``(*)`` -> ``(*)``, elementwise over any number of dimensions.

    Example::

        >>> import torch
        >>> silu(torch.tensor([-1.0, 0.0, 1.0]))
        tensor([-0.2689,  0.0000,  0.7311])
    """
    check_tensors("silu", input=input)
    check_floating(input, "silu")
    return maybe_inplace(SiLUFunction.apply, input, inplace)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    r"""``x * tanh(softplus(x))``. See :class:`MishFunction`.

    Shape: ``(*)`` -> ``(*)``, elementwise over any number of dimensions.

    Example::

        >>> import torch
        >>> mish(torch.tensor([-1.0, 0.0, 1.0]))
        tensor([-0.3034,  0.0000,  0.8651])
    """
    check_tensors("mish", input=input)
    check_floating(input, "mish")
    return maybe_inplace(MishFunction.apply, input, inplace)


def sigmoid(input: Tensor) -> Tensor:
    r"""Logistic sigmoid ``1 / (1 + exp(-x))``, overflow-free. See :class:`SigmoidFunction`.

    Integer inputs are promoted to the default float dtype, as in torch.

    Shape: ``(*)`` -> ``(*)``, elementwise over any number of dimensions.

    Example::

        >>> import torch
        >>> sigmoid(torch.tensor([-1e4, 0.0, 1e4]))
        tensor([0.0000, 0.5000, 1.0000])
    """
    check_tensors("sigmoid", input=input)
    return SigmoidFunction.apply(_promote_to_float(input, "sigmoid"))


def tanh(input: Tensor) -> Tensor:
    r"""Hyperbolic tangent. See :class:`TanhFunction`.

    Shape: ``(*)`` -> ``(*)``, elementwise over any number of dimensions.

    Example::

        >>> import torch
        >>> tanh(torch.tensor([-1e4, 0.0, 1e4]))
        tensor([-1.,  0.,  1.])
    """
    check_tensors("tanh", input=input)
    return TanhFunction.apply(_promote_to_float(input, "tanh"))


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    r"""``(1/beta) * log(1 + exp(beta * x))``, linear where ``beta * x > threshold``.

    See :class:`SoftplusFunction`.

    Args:
        input: floating-point tensor of any shape ``(*)``.
        beta: sharpness; larger ``beta`` is closer to ReLU. Default: 1.
        threshold: above ``beta * x > threshold`` the function is ``x``. Default: 20.

    Shape: ``(*)`` -> ``(*)``, elementwise over any number of dimensions.

    Example::

        >>> import torch
        >>> softplus(torch.tensor([-1.0, 0.0, 1.0]))
        tensor([0.3133, 0.6931, 1.3133])
    """
    check_tensors("softplus", input=input)
    check_floating(input, "softplus")
    return SoftplusFunction.apply(input, beta, threshold)
