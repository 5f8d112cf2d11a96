"""Activation modules, each a thin wrapper of :mod:`minitorch_nn.functional.activation`.

The math (forward, derivative, numerical stability) is documented on the functional ops.
Constructor arguments, defaults and ``repr`` match torch.nn.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import Module

from .. import functional as F

__all__ = ["GELU", "LeakyReLU", "LogSoftmax", "Mish", "ReLU", "SiLU", "Sigmoid", "Softmax", "Softplus", "Tanh"]


class _InplaceActivation(Module):
    """An activation whose only option is ``inplace``."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class ReLU(_InplaceActivation):
    r"""``max(0, x)`` elementwise. See :func:`minitorch_nn.functional.relu`.

    Example::

        >>> import torch
        >>> ReLU()(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input, inplace=self.inplace)


class SiLU(_InplaceActivation):
    r"""``x * sigmoid(x)`` (Swish). See :func:`minitorch_nn.functional.silu`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.silu(input, inplace=self.inplace)


class Mish(_InplaceActivation):
    r"""``x * tanh(softplus(x))``. See :func:`minitorch_nn.functional.mish`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.mish(input, inplace=self.inplace)


class LeakyReLU(Module):
    r"""``x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    See :func:`minitorch_nn.functional.leaky_relu`.

    Args:
        negative_slope: slope for negative inputs. Default: 0.01.
        inplace: do the operation in place. Default: ``False``.
    """

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self) -> str:
        inplace = ", inplace=True" if self.inplace else ""
        return f"negative_slope={self.negative_slope}{inplace}"


class GELU(Module):
    r"""``x * Φ(x)``, exact or with the tanh approximation.

    See :func:`minitorch_nn.functional.gelu`.

    Args:
        approximate: ``'none'`` (default) or ``'tanh'``.
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Sigmoid(Module):
    r"""``1 / (1 + exp(-x))``, overflow-free. See :func:`minitorch_nn.functional.sigmoid`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Tanh(Module):
    r"""Hyperbolic tangent. See :func:`minitorch_nn.functional.tanh`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class Softplus(Module):
    r"""``(1/beta) * log(1 + exp(beta * x))``, linear above ``threshold``.

    See :func:`minitorch_nn.functional.softplus`.

    Args:
        beta: sharpness. Default: 1.
        threshold: values with ``beta * x > threshold`` pass through unchanged. Default: 20.
    """

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, input: Tensor) -> Tensor:
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Softmax(Module):
    r"""``exp(x) / Σ exp(x)`` along ``dim``. See :func:`minitorch_nn.functional.softmax`.

    Not for a classifier's output during training: :class:`CrossEntropyLoss` takes the raw
    scores and applies log-softmax itself, stably.

    Args:
        dim: the dimension that sums to one. ``None`` picks one as torch does (deprecated).
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.softmax(input, self.dim, _stacklevel=5)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    r"""``x − log Σ exp(x)`` along ``dim``. See :func:`minitorch_nn.functional.log_softmax`.

    Args:
        dim: the dimension to normalize over. ``None`` picks one as torch does (deprecated).
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.log_softmax(input, self.dim, _stacklevel=5)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
