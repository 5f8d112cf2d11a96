"""``Linear`` and ``Identity``, built on :func:`minitorch_nn.functional.linear`."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module, Parameter

from .. import functional as F
from .. import init

__all__ = ["Identity", "Linear"]


class Identity(Module):
    """Returns its input. Accepts and ignores any constructor arguments, like torch's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:
        return input


class Linear(Module):
    r"""Applies ``y = x Wᵀ + b``.

    Args:
        in_features: size of each input sample (I).
        out_features: size of each output sample (O).
        bias: learn an additive bias. Default: ``True``.
        device, dtype: where and in what type to create the parameters.

    Shape:
        input ``(*, I)``, output ``(*, O)``.

    Attributes:
        weight: ``(O, I)``, initialised from U(−1/√I, 1/√I).
        bias: ``(O,)``, initialised from U(−1/√I, 1/√I).

    The default initialisation is torch's: ``kaiming_uniform_(weight, a=√5)``. With a = √5 the
    leaky-ReLU gain is √(2/(1+5)) = √(1/3), so the bound √3 · gain / √I is exactly 1/√I (the
    "LeCun uniform" range), and the bias gets the same bound.

    Example::

        >>> import torch
        >>> m = Linear(20, 30)
        >>> m(torch.randn(128, 20)).shape
        torch.Size([128, 30])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(torch.empty((out_features, in_features), **factory_kwargs))
        if bias:
            self.bias = Parameter(torch.empty(out_features, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
