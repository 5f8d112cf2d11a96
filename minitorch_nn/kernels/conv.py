r"""conv2d by a compiled kernel ladder, with an optional fused bias + activation epilogue.

The C++ side (``csrc/cpu/conv/``) keeps every rung of a CPU kernel ladder, each one idea
faster than the one before, and all of them selectable here with ``algorithm=``:

=============  =====================================================================================
``direct``     rung 1: the definition, seven loops, any strides (``direct.cpp``)
``im2col``     rung 2: im2col + ``at::mm`` (a tuned BLAS); col2im for the input gradient (``im2col.cpp``)
``gemm``       rung 3: im2col + our own packed, register-tiled GEMM (``gemm.h``, ``gemm_conv.cpp``)
``implicit``   rung 4: the same GEMM packing its panels straight from the input: no im2col matrix
               (``implicit.cpp``)
``depthwise``  ``groups == in_channels``: a direct vectorised kernel (``depthwise.cpp``)
``auto``       the fastest that applies (the default)
=============  =====================================================================================

On a GPU (``csrc/cuda/conv_*.cu``, a CUDA build) the ladder is CUDA's own:

=============  =====================================================================================
``direct``     rung 1: a thread per output (and per input / weight element for the gradients); any
               strides, every dtype (``conv_direct.cu``); also the depthwise kernel
``implicit``   rung 2: implicit GEMM, tiles of the GEMM view staged in shared memory, a register
               tile per thread (``conv_implicit.cu``)
``mma``        rung 3: tensor cores (``mma.sync``) for float16 / bfloat16, channels_last, a
               ``cp.async`` pipeline (``conv_mma.cu``); the forward only, its gradients are rung 2's;
               needs C and O multiples of 8 and groups 1 (else ValueError; ``auto`` takes rung 2)
``auto``       rung 3 where it runs, rung 1 for depthwise, rung 2 otherwise
=============  =====================================================================================

With ``activation`` other than ``'none'`` the kernel computes ``f(conv2d(x, W) + b)`` while the
output tile is still in registers or cache, instead of writing the convolution and reading it
back for the activation. Its backward recomputes the pre-activation (one more forward) to form
``dz = dy·f'(z)``, then runs the ladder's own input and weight gradients; nothing is saved but
the inputs. The math of the forward and the backward is derived in
:mod:`minitorch_nn.functional.conv`.

dtypes: float32 and float64 on the CPU; float16 and bfloat16 as well on CUDA. Layouts: NCHW,
channels_last or any strides; the output is channels_last when the input or the weight is
(torch's rule), NCHW otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..functional._common import check_tensors
from ..functional.conv import _check_conv_args as check_conv_args
from ..functional.conv import batched_conv_args, resolve_padding
from ..nn.conv import Conv2d
from ._loader import AVAILABLE, require
from .norm_act import _check_activation

__all__ = [
    "ALGORITHMS",
    "CPU_ALGORITHMS",
    "CUDA_ALGORITHMS",
    "Conv2dAct",
    "conv2d",
    "fold_batch_norm",
    "use_conv_kernels",
]

CPU_ALGORITHMS = ("auto", "direct", "im2col", "gemm", "implicit", "depthwise")
CUDA_ALGORITHMS = ("auto", "direct", "implicit", "mma", "depthwise")
ALGORITHMS = (*CPU_ALGORITHMS, "mma")  # every name; each device's op says which of them it has


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")


def _memory_format(input: Tensor, weight: Tensor) -> torch.memory_format:
    """channels_last if either operand is (by stride order), as torch's CPU convolution decides."""
    from torch._prims_common import suggest_memory_format

    if torch.channels_last in (suggest_memory_format(input), suggest_memory_format(weight)):
        return torch.channels_last
    return torch.contiguous_format


if AVAILABLE:
    _ops = torch.ops.minitorch_nn

    @torch.library.register_fake("minitorch_nn::conv2d")
    def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups, activation, algorithm):
        n, _c, h, w = input.shape
        o, _cg, kh, kw = weight.shape
        oh = (h + padding[0] + padding[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        ow = (w + padding[2] + padding[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        return input.new_empty((n, o, oh, ow)).contiguous(memory_format=_memory_format(input, weight))

    @torch.library.register_fake("minitorch_nn::conv2d_backward")
    def _conv2d_backward_fake(
        grad_out, input, weight, bias, stride, padding, dilation, groups, activation, algorithm, mask
    ):
        fmt = _memory_format(input, weight)
        dx = input.new_empty(input.shape).contiguous(memory_format=fmt) if mask[0] else input.new_empty(0)
        dw = input.new_empty(weight.shape).contiguous(memory_format=fmt) if mask[1] else input.new_empty(0)
        db = input.new_empty(bias.shape) if mask[2] and bias is not None else input.new_empty(0)
        return dx, dw, db

    def _conv2d_setup(ctx, inputs, output):
        input, weight, bias, stride, padding, dilation, groups, activation, algorithm = inputs
        ctx.save_for_backward(input, weight, bias)
        ctx.conf = stride, padding, dilation, groups, activation, algorithm

    def _conv2d_backward(ctx, grad_out):
        input, weight, bias = ctx.saved_tensors
        need = ctx.needs_input_grad
        mask = [need[0], need[1], bias is not None and need[2]]
        dx, dw, db = _ops.conv2d_backward(grad_out, input, weight, bias, *ctx.conf, mask)
        grads = (dx if mask[0] else None), (dw if mask[1] else None), (db if mask[2] else None)
        return (*grads, None, None, None, None, None, None)

    torch.library.register_autograd("minitorch_nn::conv2d", _conv2d_backward, setup_context=_conv2d_setup)

    def _conv2d_backward_setup(ctx, inputs, output):
        grad_out, input, weight, bias, *conf, mask = inputs
        ctx.save_for_backward(grad_out, input, weight, bias)
        ctx.conf, ctx.mask = conf, mask

    def _conv2d_double_backward(ctx, *grad_grads):
        """The backward op's own backward is the reference's: autograd through the reference's VJP.

        conv2d_backward maps (dy, x, W, b) to (dx, dW, db). Its vector-Jacobian product with the
        incoming (ddx, ddW, ddb) is computed by differentiating the same map built from the
        reference conv (:class:`~minitorch_nn.functional.conv.Conv2dFunction`, whose backward is
        written in differentiable ops) and the reference activations.
        """
        from .. import functional as F
        from ..functional.conv import Conv2dFunction

        stride, padding, dilation, groups, activation, _algorithm = ctx.conf
        act = {
            "none": lambda z: z,
            "relu": F.relu,
            "gelu": F.gelu,
            "gelu_tanh": lambda z: F.gelu(z, "tanh"),
            "silu": F.silu,
            "mish": F.mish,
        }[activation]
        saved = ctx.saved_tensors
        with torch.enable_grad():
            dy, x, w, b = (t.detach().requires_grad_() if t is not None else None for t in saved)
            y = act(Conv2dFunction.apply(x, w, b, tuple(stride), tuple(padding), tuple(dilation), groups))
            wrt = [t for t in (x, w, b) if t is not None]
            first = dict(zip(("x", "w", "b"), torch.autograd.grad(y, wrt, dy, create_graph=True), strict=False))
            outputs, cotangents = [], []
            for name, wanted, gg in zip(("x", "w", "b"), ctx.mask, grad_grads, strict=True):
                if wanted and gg is not None and name in first and first[name].requires_grad:
                    outputs.append(first[name])
                    cotangents.append(gg)
            leaves = [t for t in (dy, x, w, b) if t is not None]
            grads = torch.autograd.grad(outputs, leaves, cotangents, allow_unused=True) if outputs else [None] * 4
        grads = iter(grads)
        result = [next(grads) if t is not None else None for t in (dy, x, w, b)]
        return (*result, None, None, None, None, None, None, None)

    torch.library.register_autograd(
        "minitorch_nn::conv2d_backward", _conv2d_double_backward, setup_context=_conv2d_backward_setup
    )


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    activation: str = "none",
    algorithm: str = "auto",
) -> Tensor:
    r"""``activation(conv2d(input, weight, bias, ...))`` by a compiled kernel.

    Arguments as :func:`torch.nn.functional.conv2d`, plus:

    Args:
        activation: one of :data:`~minitorch_nn.kernels.ACTIVATIONS`, fused into the kernel's
            output stage. Default: ``'none'``.
        algorithm: the rung of the kernel ladder, one of :data:`ALGORITHMS` (see the module
            docstring). Default: ``'auto'``.

    Shape: ``(N, C, H, W)`` or unbatched ``(C, H, W)`` -> ``(N, O, H', W')`` (or ``(O, H', W')``).

    Raises:
        RuntimeError: what torch raises for the same arguments (bad stride, padding, dilation,
            groups, shapes or dtypes, a kernel larger than the padded input).
        NotImplementedError: a dtype other than float32 / float64.
        ValueError: an unknown ``activation`` or ``algorithm``.

    Example::

        >>> import minitorch_nn.kernels as K
        >>> x, w, b = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
        >>> y = K.conv2d(x, w, b, padding=1, activation="relu", algorithm="im2col")
        >>> torch.allclose(y, torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1)), atol=1e-5)
        True
    """
    require()
    _check_activation(activation)
    _check_algorithm(algorithm)
    check_tensors("conv2d", input=input, weight=weight, bias=bias)
    x, stride_, padding_, dilation_ = batched_conv_args(input, weight, stride, padding, dilation)
    # torch's checks, in torch's order (the reference's), before the op's own dtype check: a
    # bfloat16 input with a bad stride is torch's RuntimeError, not our NotImplementedError.
    check_conv_args(x, weight, bias, stride_, padding_, dilation_, groups)
    y = torch.ops.minitorch_nn.conv2d(
        x, weight, bias, list(stride_), list(padding_), list(dilation_), groups, activation, algorithm
    )
    return y if input.dim() == 4 else y.squeeze(0)


class Conv2dAct(Conv2d):
    r"""Conv2d (and an optional activation) computed by the compiled conv2d kernel ladder.

    Same arguments, parameters, initialisation and ``state_dict`` as
    :class:`minitorch_nn.nn.Conv2d` and :class:`torch.nn.Conv2d`, plus ``activation`` (fused
    into the kernel; default ``'none'``) and ``algorithm`` (the rung; default ``'auto'``).
    ``padding_mode`` other than ``'zeros'`` pads explicitly first, as the reference does.

    Example::

        >>> from minitorch_nn.kernels import Conv2dAct
        >>> m = Conv2dAct(3, 8, 3, padding=1, activation="relu")
        >>> m.load_state_dict(torch.nn.Conv2d(3, 8, 3, padding=1).state_dict())
        <All keys matched successfully>
        >>> m(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """

    def __init__(self, *args, activation: str = "none", algorithm: str = "auto", **kwargs) -> None:
        _check_activation(activation)
        _check_algorithm(algorithm)
        super().__init__(*args, **kwargs)
        self.activation = activation
        self.algorithm = algorithm

    def forward(self, input: Tensor) -> Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            from ..functional.conv import pad2d_mode

            pads = resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation)
            input, padding = pad2d_mode(input, pads, self.padding_mode), 0
        return conv2d(
            input,
            self.weight,
            self.bias,
            self.stride,
            padding,
            self.dilation,
            self.groups,
            self.activation,
            self.algorithm,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation!r}, algorithm={self.algorithm!r}"


def use_conv_kernels(model: torch.nn.Module, algorithm: str = "auto") -> torch.nn.Module:
    """Replace, in place, every reference :class:`minitorch_nn.nn.Conv2d` in ``model`` by a :class:`Conv2dAct`.

    The new layers hold the same Parameter objects (an optimizer built before keeps working) and
    compute the same function with a compiled kernel. Returns ``model``.

    Example::

        >>> from minitorch_nn.models import SmallCNN
        >>> from minitorch_nn.kernels import Conv2dAct, use_conv_kernels
        >>> model = use_conv_kernels(SmallCNN(in_channels=1, num_classes=10))
        >>> sum(isinstance(m, Conv2dAct) for m in model.modules()) > 0
        True
    """
    _check_algorithm(algorithm)
    for name, child in list(model.named_children()):
        if type(child) is Conv2d:
            new = Conv2dAct.__new__(Conv2dAct)
            new.__dict__.update(child.__dict__)  # parameters, buffers, hooks and settings, shared
            new.activation, new.algorithm = "none", algorithm
            setattr(model, name, new)
        else:
            use_conv_kernels(child, algorithm)
    return model


@torch.no_grad()
def fold_batch_norm(
    conv: torch.nn.Conv2d, bn: torch.nn.Module, activation: str = "none", algorithm: str = "auto"
) -> Conv2dAct:
    r"""One :class:`Conv2dAct` computing ``activation(bn(conv(x)))`` for inference, BatchNorm folded in.

    In eval mode BatchNorm is an affine map per output channel o, with its running statistics:

    .. math::

        \mathrm{bn}(z)_o = (z_o - \mu_o)\,s_o + \beta_o, \qquad s_o = \frac{\gamma_o}{\sqrt{\sigma^2_o + \epsilon}}

    and ``z_o = Σ W[o]·x + b_o`` is linear in the weights, so the two fold into one convolution:
    ``W'[o] = s_o·W[o]`` and ``b'_o = (b_o − μ_o)·s_o + β_o`` (``b_o = 0`` without a conv bias). The
    kernel then applies BatchNorm with the bias add of its epilogue, while the output tile is in
    registers, at no cost; the activation follows in the same epilogue. The folded parameters are
    computed in float64 and rounded once to the conv's dtype.

    ``conv`` is a :class:`torch.nn.Conv2d` (or ours) with zero padding; ``bn`` a BatchNorm2d (torch's
    or ours) with running statistics. For training, keep them apart: BatchNorm's batch statistics
    change with every batch.

    Example::

        >>> import torch
        >>> from minitorch_nn.kernels import fold_batch_norm
        >>> conv, bn = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8).eval()
        >>> fused = fold_batch_norm(conv, bn, activation="relu")
        >>> x = torch.randn(2, 3, 8, 8)
        >>> torch.allclose(fused(x), torch.relu(bn(conv(x))), atol=1e-5)
        True
    """
    if getattr(bn, "running_mean", None) is None or getattr(bn, "running_var", None) is None:
        raise ValueError("fold_batch_norm needs a BatchNorm with running statistics (track_running_stats=True)")
    if conv.padding_mode != "zeros":
        raise ValueError(f"fold_batch_norm needs a zero-padded conv, got padding_mode={conv.padding_mode!r}")
    o = conv.out_channels
    if bn.running_mean.shape != (o,):
        raise ValueError(f"the BatchNorm has {bn.running_mean.numel()} channels; the conv has {o} outputs")
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros(o, dtype=torch.float64, device=scale.device)
    bias = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    fused = Conv2dAct(
        conv.in_channels,
        o,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        activation=activation,
        algorithm=algorithm,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    fused.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
    fused.bias.copy_(bias)
    return fused
