r"""Models from the tutorial, built only from :mod:`minitorch_nn.nn` layers.

* :class:`FlexibleMLP`: a multi-layer perceptron of any depth, from a list of hidden sizes.
* :class:`ConvBlock`: ``Conv2d -> BatchNorm2d -> activation``, the unit of a modern CNN.
* :class:`ResidualBlock`: two ConvBlocks plus a shortcut, ``act(F(x) + shortcut(x))``.
* :class:`SmallCNN`: a stem, residual stages and a global-average-pool head, so it accepts
  any input resolution.

No model puts an activation on its output: a classifier returns raw logits (scores), and the
loss (``cross_entropy``, ``binary_cross_entropy_with_logits``) applies log-softmax or
log-sigmoid itself, fused with the log, which is numerically stable where ``log(softmax(z))``
underflows to ``log(0)``.

Parameter and buffer names are fixed (documented per class), so a ``state_dict`` loads into
the same model converted to torch.nn (``minitorch_nn.convert(model, to="torch")``) and back.

Activations are given by name (``"relu"``, ``"gelu"``, ...; see :data:`ACTIVATIONS`) or as a
zero-argument factory that returns a fresh Module: a class such as ``nn.GELU``, or
``functools.partial(nn.LeakyReLU, 0.2)``. A factory rather than an instance, so every layer
gets its own module, as it would written out by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from . import init as _init
from . import nn

__all__ = ["ACTIVATIONS", "ConvBlock", "FlexibleMLP", "ResidualBlock", "SmallCNN"]

ActivationSpec = str | Callable[[], nn.Module]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}
"""Activation names accepted by the models, and the module each builds."""


def make_activation(spec: ActivationSpec | None) -> nn.Module:
    """A fresh activation Module from a name in :data:`ACTIVATIONS`, a factory, or ``None`` (Identity).

    Example::

        >>> import functools
        >>> make_activation("gelu")
        GELU(approximate='none')
        >>> make_activation(functools.partial(nn.LeakyReLU, 0.2))
        LeakyReLU(negative_slope=0.2)
    """
    if spec is None:
        return nn.Identity()
    if isinstance(spec, str):
        if spec not in ACTIVATIONS:
            raise ValueError(f"unknown activation {spec!r}; expected one of {sorted(ACTIVATIONS)} or a Module factory")
        return ACTIVATIONS[spec]()
    if isinstance(spec, nn.Module):
        raise TypeError("pass an activation factory (e.g. nn.ReLU), not an instance, so each layer gets its own")
    module = spec()
    if not isinstance(module, nn.Module):
        raise TypeError(f"the activation factory returned {type(module).__name__}, not a Module")
    return module


def _nonlinearity(activation: nn.Module) -> tuple[str, float | None]:
    """The :func:`minitorch_nn.init.calculate_gain` name (and slope) for the activation after a layer.

    calculate_gain knows relu, leaky_relu, tanh and sigmoid. GELU, SiLU, Mish and Softplus have no
    entry (torch has none either); they pass roughly the positive half of a zero-mean input, like
    ReLU, so they get ReLU's gain √2. An Identity (no activation: the output layer) is 'linear'.
    """
    if isinstance(activation, nn.Identity):
        return "linear", None
    if isinstance(activation, nn.LeakyReLU):
        return "leaky_relu", activation.negative_slope
    if isinstance(activation, nn.Tanh):
        return "tanh", None
    if isinstance(activation, nn.Sigmoid):
        return "sigmoid", None
    return "relu", None


INIT_SCHEMES = ("default", "xavier", "kaiming")


def init_linear_(layer: nn.Linear, scheme: str, activation: nn.Module) -> None:
    r"""Re-initialise ``layer`` for the ``activation`` that follows it (Identity for an output layer).

    * ``'default'``: torch.nn.Linear's own U(±1/√fan_in) for weight and bias (left as built).
    * ``'xavier'``: weight from U(±gain·√(6/(fan_in+fan_out))), bias 0.
    * ``'kaiming'``: weight from U(±gain·√(3/fan_in)) (He, fan_in mode), bias 0; for ReLU
      gain = √2, so ±√(6/fan_in).

    ``gain`` is :func:`~minitorch_nn.init.calculate_gain` of the activation (see ``_nonlinearity``).
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init {scheme!r}; expected one of {INIT_SCHEMES}")
    if scheme == "default":
        return
    name, slope = _nonlinearity(activation)
    if scheme == "xavier":
        _init.xavier_uniform_(layer.weight, gain=_init.calculate_gain(name, slope))
    else:
        _init.kaiming_uniform_(layer.weight, a=slope or 0.0, nonlinearity=name)
    if layer.bias is not None:
        _init.zeros_(layer.bias)


class FlexibleMLP(nn.Module):
    r"""A multi-layer perceptron of any depth: one hidden block per entry of ``hidden_sizes``.

    Each hidden block is ``Linear -> [norm] -> activation -> [Dropout]``; the output layer is a
    bare ``Linear``. **No activation on the output layer**: the model returns logits and the loss
    applies softmax/sigmoid fused with its log (``cross_entropy``,
    ``binary_cross_entropy_with_logits``), which stays finite where a separate ``log(softmax)``
    would give ``-inf``. Apply ``softmax`` yourself only to read probabilities.

    With ``norm='batch'`` the hidden Linear layers have no bias: BatchNorm subtracts the batch
    mean of each feature, which removes any constant added before it, and adds its own shift β.

    Args:
        in_features: size of each input sample.
        hidden_sizes: widths of the hidden layers, e.g. ``[128, 64]``; ``[]`` gives a linear model.
        out_features: number of outputs (classes, for a classifier).
        activation: a name from :data:`ACTIVATIONS` or a zero-argument Module factory
            (``nn.GELU``, ``functools.partial(nn.LeakyReLU, 0.2)``). Default: ``'relu'``.
        dropout: dropout probability after each hidden activation; 0 adds no Dropout layer. Default: 0.
        norm: ``None``, ``'batch'`` (BatchNorm1d) or ``'layer'`` (LayerNorm), after each hidden
            Linear, before the activation. Default: ``None``.
        init: ``'default'`` (torch.nn.Linear's U(±1/√fan_in)), ``'xavier'`` or ``'kaiming'``
            (uniform, gain of the following activation; zero biases); see :func:`init_linear_`.
            Default: ``'kaiming'``.

    Attributes:
        hidden: ``ModuleList`` of ``Sequential`` blocks; block ``i`` holds ``0`` (Linear), then
            the norm, activation and dropout, numbered in that order.
        output: the final ``Linear``.

    Shape:
        ``(N, in_features)`` -> ``(N, out_features)`` (any leading dims with ``norm`` None/'layer').

    Example::

        >>> import torch
        >>> model = FlexibleMLP(20, [64, 32], 3, activation="gelu", dropout=0.1, norm="layer")
        >>> model(torch.randn(8, 20)).shape
        torch.Size([8, 3])
        >>> type(model.output).__name__   # the last layer is a bare Linear: no activation
        'Linear'
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int],
        out_features: int,
        activation: ActivationSpec = "relu",
        dropout: float = 0.0,
        norm: str | None = None,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if norm not in (None, "batch", "layer"):
            raise ValueError(f"norm must be None, 'batch' or 'layer', got {norm!r}")
        if init not in INIT_SCHEMES:
            raise ValueError(f"unknown init {init!r}; expected one of {INIT_SCHEMES}")
        self.in_features = in_features
        self.hidden_sizes = tuple(hidden_sizes)
        self.out_features = out_features
        self.hidden = nn.ModuleList()
        width = in_features
        for size in self.hidden_sizes:
            linear = nn.Linear(width, size, bias=norm != "batch")
            block = [linear]
            if norm == "batch":
                block.append(nn.BatchNorm1d(size))
            elif norm == "layer":
                block.append(nn.LayerNorm(size))
            act = make_activation(activation)
            block.append(act)
            if dropout > 0:
                block.append(nn.Dropout(dropout))
            init_linear_(linear, init, act)
            self.hidden.append(nn.Sequential(*block))
            width = size
        self.output = nn.Linear(width, out_features)
        init_linear_(self.output, init, nn.Identity())

    def forward(self, input: Tensor) -> Tensor:
        x = input
        for block in self.hidden:
            x = block(x)
        return self.output(x)  # logits: the loss applies the softmax

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, hidden_sizes={list(self.hidden_sizes)}, out_features={self.out_features}"
        )


class ConvBlock(nn.Module):
    r"""``Conv2d -> BatchNorm2d -> activation``, with 'same' padding (``kernel_size // 2``).

    The convolution has **no bias**. BatchNorm subtracts each channel's batch mean, so a per-channel
    constant added by the conv is removed again (in training exactly; in eval, the running mean
    has absorbed it), and BN adds its own learned shift β afterwards. A conv bias would be a
    parameter with zero gradient effect on the output: wasted memory and optimizer work.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: odd kernel size (an int). Default: 3.
        stride: 1 keeps the resolution (with 'same' padding), 2 halves it. Default: 1.
        activation: a name from :data:`ACTIVATIONS`, a Module factory, or ``None`` for none
            (as in the second block of a :class:`ResidualBlock`). Default: ``'relu'``.

    Attributes:
        conv: ``Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)``.
        bn: ``BatchNorm2d(out_channels)``.
        act: the activation (``Identity`` when ``activation=None``).

    Shape:
        ``(N, C_in, H, W)`` -> ``(N, C_out, ⌊(H − 1)/stride⌋ + 1, ⌊(W − 1)/stride⌋ + 1)``.

    Example::

        >>> import torch
        >>> ConvBlock(3, 16)(torch.randn(2, 3, 8, 10)).shape
        torch.Size([2, 16, 8, 10])
        >>> ConvBlock(3, 16).conv.bias is None
        True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        activation: ActivationSpec | None = "relu",
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = make_activation(activation)

    def forward(self, input: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(input)))


class ResidualBlock(nn.Module):
    r"""``act(F(x) + shortcut(x))`` with ``F = ConvBlock -> ConvBlock(no activation)`` (He et al., 2016).

    The second ConvBlock has no activation so that the residual branch can output negative
    corrections; the activation comes after the sum. The shortcut is the identity when the shape
    is unchanged; when the stride or channel count changes, ``x`` no longer matches ``F(x)``, and
    a 1×1 convolution (with the same stride, no bias) plus BatchNorm projects it.

    Args:
        in_channels, out_channels: channel counts.
        stride: stride of the first 3×3 convolution (and of the projection). Default: 1.
        activation: a name from :data:`ACTIVATIONS` or a Module factory. Default: ``'relu'``.

    Attributes:
        block1: ``ConvBlock(in_channels, out_channels, 3, stride, activation)``.
        block2: ``ConvBlock(out_channels, out_channels, 3, 1, activation=None)``.
        shortcut: ``Identity()``, or ``Sequential(Conv2d(in, out, 1, stride, bias=False), BatchNorm2d(out))``.
        act: the activation applied after the sum.

    Shape:
        As :class:`ConvBlock` with the same stride.

    Example::

        >>> import torch
        >>> ResidualBlock(16, 16).shortcut
        Identity()
        >>> ResidualBlock(16, 32, stride=2)(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, activation: ActivationSpec = "relu"
    ) -> None:
        super().__init__()
        self.block1 = ConvBlock(in_channels, out_channels, 3, stride, activation)
        self.block2 = ConvBlock(out_channels, out_channels, 3, 1, activation=None)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.act = make_activation(activation)

    def forward(self, input: Tensor) -> Tensor:
        return self.act(self.block2(self.block1(input)) + self.shortcut(input))


class SmallCNN(nn.Module):
    r"""A small residual CNN classifier: stem, one residual block per stage, global-average-pool head.

    ``stem = ConvBlock(in_channels, widths[0])``; stage ``i`` is
    ``ResidualBlock(widths[i-1], widths[i], stride=1 if i == 0 else 2)``, so each later stage
    halves the resolution and widens the channels; then ``AdaptiveAvgPool2d(1) -> Flatten ->
    Linear(widths[-1], num_classes)``. Global average pooling reduces any ``H × W`` to ``1 × 1``,
    so the model accepts any input resolution, and the head has ``C · classes`` weights instead of
    ``C · H · W · classes``. The output is logits (no softmax; see the module docstring).

    Args:
        in_channels: input channels (1 for grayscale). Default: 1.
        num_classes: number of outputs. Default: 10.
        widths: channels of the stem and of each stage. Default: ``(16, 32)``.
        activation: a name from :data:`ACTIVATIONS` or a Module factory. Default: ``'relu'``.

    Attributes:
        stem: a :class:`ConvBlock`.
        stages: ``Sequential`` of :class:`ResidualBlock`.
        pool, flatten, fc: the head.

    Shape:
        ``(N, in_channels, H, W)`` -> ``(N, num_classes)`` for any ``H, W >= 1``.

    Example::

        >>> import torch
        >>> model = SmallCNN(in_channels=1, num_classes=10)
        >>> model(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 10])
        >>> model(torch.randn(4, 1, 28, 20)).shape    # any resolution, thanks to the pooling head
        torch.Size([4, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32),
        activation: ActivationSpec = "relu",
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("widths needs at least one entry (the stem's channels)")
        widths = tuple(widths)
        self.stem = ConvBlock(in_channels, widths[0], 3, 1, activation)
        self.stages = nn.Sequential(
            *(
                ResidualBlock(prev, width, 1 if i == 0 else 2, activation)
                for i, (prev, width) in enumerate(zip((widths[0], *widths[:-1]), widths, strict=True))
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, input: Tensor) -> Tensor:
        x = self.stages(self.stem(input))  # (N, C, H', W')
        return self.fc(self.flatten(self.pool(x)))  # (N, C, 1, 1) -> (N, C) -> logits (N, classes)
