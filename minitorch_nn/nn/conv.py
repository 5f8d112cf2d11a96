"""``Conv2d`` on :func:`minitorch_nn.functional.conv2d`, with torch.nn's arguments and init."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import Module, Parameter

from .. import functional as F
from .. import init
from ..functional._common import pair
from ..functional.conv import PADDING_MODES, pad2d_mode, resolve_padding

__all__ = ["Conv2d"]


class Conv2d(Module):
    r"""2-D convolution layer: ``y = conv2d(x, weight) + bias``.

    Args:
        in_channels (C), out_channels (O): channel counts; both must be divisible by ``groups``.
        kernel_size, stride, dilation: an int or a pair.
        padding: an int, a pair, ``'valid'`` or ``'same'`` (stride 1 only).
        groups: independent channel groups (``groups = C = O``: depthwise).
        bias: learn an additive bias. Default: ``True``.
        padding_mode: ``'zeros'`` (default), ``'reflect'``, ``'replicate'`` or ``'circular'``.
        device, dtype: where and in what type to create the parameters.

    Attributes:
        weight: ``(O, C/groups, kh, kw)`` and bias ``(O,)``, both from U(−1/√fan_in, 1/√fan_in)
        with fan_in = (C/groups)·kh·kw: torch's ``kaiming_uniform_(a=√5)`` (see ``Linear``).

    Shape: ``(N, C, H, W)`` -> ``(N, O, H', W')``; see :mod:`minitorch_nn.functional.conv`.

    Example::

        >>> import torch
        >>> Conv2d(3, 16, 3, padding=1)(torch.randn(2, 3, 32, 32)).shape   # 'same' size
        torch.Size([2, 16, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        if not isinstance(groups, int) or groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and pair(stride, "stride") != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {set(PADDING_MODES)}, but got padding_mode={padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding")
        self.dilation = pair(dilation, "dilation")
        self.transposed = False
        self.output_padding = (0, 0)
        self.groups = groups
        self.padding_mode = padding_mode
        self.weight = Parameter(torch.empty((out_channels, in_channels // groups, *self.kernel_size), **factory_kwargs))
        if bias:
            self.bias = Parameter(torch.empty(out_channels, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            # Unlike Linear, torch draws no bias values when fan_in is 0; same here, so that the
            # random stream (and every later draw) matches torch's.
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        if self.padding_mode == "zeros":
            return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        # Other modes pad explicitly (a gather of edge pixels), then convolve without padding.
        padding = resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation)
        padded = pad2d_mode(input, padding, self.padding_mode)
        return F.conv2d(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * len(self.padding):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s
