r"""Fused normalization + activation: ``act(layer_norm(x))`` and ``act(batch_norm(x))`` in one kernel.

Unfused, ``gelu(layer_norm(x))`` reads x, writes the normalized tensor, reads it back and
writes the activation: two round trips through memory and two allocations for an op that does
a few flops per byte. The fused kernel reads x once and writes y once:

.. math::

    \hat x = (x - \mu)\,\mathrm{rstd}, \qquad z = \gamma \hat x + \beta, \qquad y = f(z)

Its backward saves only μ and rstd (one value per row or channel), and recomputes x̂, z and
f'(z) from x instead of keeping the pre-activation z, which would cost a tensor the size of x
in memory and another read:

.. math::

    dz = dy \cdot f'(z), \qquad d\beta = \sum dz, \qquad d\gamma = \sum dz\,\hat x,

    dx = \gamma\,\mathrm{rstd}\,\bigl(dz - \overline{dz} - \hat x\,\overline{dz\,\hat x}\bigr)
    \quad\text{(training; } \gamma\,\mathrm{rstd}\,dz \text{ for BatchNorm in eval)}

with the means over the normalized values. The reference derivation of the three terms is in
:mod:`minitorch_nn.functional.normalization`, and f and f' are in ``csrc/activation.h``.

Activations: ``'none'``, ``'relu'``, ``'gelu'`` (exact, erf), ``'gelu_tanh'``, ``'silu'``, ``'mish'``.
dtypes: float32, float64, bfloat16 and float16 (for the 16-bit types, statistics and arithmetic in
float32).

LayerNorm+act is also a kernel ladder, every rung selectable with ``layer_norm_act(..., rung=)``:

=====  ==========================================================  ===========================================
rung   CPU (``csrc/cpu/ln_ladder.cpp``)                            CUDA (``csrc/cuda/ln_ladder.cu``)
=====  ==========================================================  ===========================================
1      the definition: scalar loops, one row after another         a thread per row (dγ, dβ: a thread per
                                                                   column)
2      rows in parallel; dγ, dβ from per-chunk partial rows        a warp per row, shuffle reductions; dγ, dβ
                                                                   from per-chunk partial rows
3      SIMD (``at::vec::Vectorized``), a scalar tail               a warp per row with 128-bit loads (rung 2
                                                                   where N or alignment does not allow them)
4      the production kernel (``csrc/cpu/norm_act.cpp``)           the production kernels (``norm_act.cu``)
=====  ==========================================================  ===========================================

``rung=None`` (the default) is rung 4, the fastest. Rungs 1-3 are the ops ``layer_norm_act_ladder`` and
``layer_norm_act_ladder_backward``, same arguments as the production ops plus ``rung``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..functional._common import check_tensors
from ..nn.normalization import BatchNorm2d, LayerNorm
from ._loader import AVAILABLE, require

__all__ = ["ACTIVATIONS", "LADDER_RUNGS", "BatchNormAct2d", "LayerNormAct", "batch_norm_act", "layer_norm_act"]

ACTIVATIONS = ("none", "relu", "gelu", "gelu_tanh", "silu", "mish")
LADDER_RUNGS = (1, 2, 3, 4)  # layer_norm_act's kernel ladder; 4 is the production kernel (the default)


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def _check_rung(rung: int | None) -> None:
    if rung is not None and (type(rung) is not int or rung not in LADDER_RUNGS):
        raise ValueError(f"rung must be None (the production kernel) or one of {LADDER_RUNGS}, got {rung!r}")


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics are kept in the accumulation type: float32 for bfloat16 and float16 input."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


# ---------------------------------------------------------------------------------------------
# Fake implementations (shapes, dtypes and strides only) and autograd, registered with torch.library.

if AVAILABLE:
    _ops = torch.ops.minitorch_nn

    @torch.library.register_fake("minitorch_nn::layer_norm_act")
    def _layer_norm_act_fake(input, normalized_shape, weight, bias, eps, activation):
        batch = input.shape[: input.dim() - len(normalized_shape)]
        stat = input.new_empty(batch, dtype=_stat_dtype(input.dtype))
        return input.new_empty(input.shape), stat, torch.empty_like(stat)

    @torch.library.register_fake("minitorch_nn::layer_norm_act_backward")
    def _layer_norm_act_backward_fake(grad_out, input, mean, rstd, normalized_shape, weight, bias, activation, mask):
        def grad_like(t, wanted):
            return input.new_empty(t.shape) if wanted and t is not None else input.new_empty(0)

        return grad_like(input, mask[0]), grad_like(weight, mask[1]), grad_like(bias, mask[2])

    @torch.library.register_fake("minitorch_nn::layer_norm_act_ladder")
    def _layer_norm_act_ladder_fake(*args):
        return _layer_norm_act_fake(*args[:-1])  # the last argument is the rung

    @torch.library.register_fake("minitorch_nn::layer_norm_act_ladder_backward")
    def _layer_norm_act_ladder_backward_fake(*args):
        return _layer_norm_act_backward_fake(*args[:-1])  # the last argument is the rung

    @torch.library.register_fake("minitorch_nn::batch_norm_act")
    def _batch_norm_act_fake(input, weight, bias, running_mean, running_var, training, momentum, eps, activation):
        stat = input.new_empty(input.shape[1], dtype=_stat_dtype(input.dtype))
        update = training and running_mean is not None
        new_rm = torch.empty_like(running_mean) if update else stat.new_empty(0)
        new_rv = torch.empty_like(running_var) if update else stat.new_empty(0)
        return torch.empty_like(input), stat, torch.empty_like(stat), new_rm, new_rv

    @torch.library.register_fake("minitorch_nn::batch_norm_act_backward")
    def _batch_norm_act_backward_fake(grad_out, input, save_mean, save_rstd, weight, bias, training, activation, mask):
        grad_input = torch.empty_like(input) if mask[0] else input.new_empty(0)
        grad_weight = torch.empty_like(weight) if mask[1] and weight is not None else input.new_empty(0)
        grad_bias = torch.empty_like(bias) if mask[2] and bias is not None else input.new_empty(0)
        return grad_input, grad_weight, grad_bias

    def _layer_norm_act_setup(ctx, inputs, output):
        input, normalized_shape, weight, bias, _eps, activation = inputs
        _out, mean, rstd = output
        ctx.save_for_backward(input, mean, rstd, weight, bias)
        ctx.normalized_shape, ctx.activation = normalized_shape, activation
        ctx.mark_non_differentiable(mean, rstd)

    def _layer_norm_act_backward(ctx, grad_out, _grad_mean, _grad_rstd):
        input, mean, rstd, weight, bias = ctx.saved_tensors
        need = ctx.needs_input_grad
        mask = [need[0], weight is not None and need[2], bias is not None and need[3]]
        args = (grad_out, input, mean, rstd, ctx.normalized_shape, weight, bias, ctx.activation, mask)
        rung = getattr(ctx, "rung", None)  # set by the ladder's setup: its backward is the same rung's
        if rung is None:
            dx, dw, db = _ops.layer_norm_act_backward(*args)
        else:
            dx, dw, db = _ops.layer_norm_act_ladder_backward(*args, rung)
        grads = (dx if mask[0] else None), None, (dw if mask[1] else None), (db if mask[2] else None), None, None
        return grads if rung is None else (*grads, None)

    torch.library.register_autograd(
        "minitorch_nn::layer_norm_act", _layer_norm_act_backward, setup_context=_layer_norm_act_setup
    )

    def _layer_norm_act_ladder_setup(ctx, inputs, output):
        _layer_norm_act_setup(ctx, inputs[:6], output)
        ctx.rung = inputs[6]

    torch.library.register_autograd(
        "minitorch_nn::layer_norm_act_ladder", _layer_norm_act_backward, setup_context=_layer_norm_act_ladder_setup
    )

    def _batch_norm_act_setup(ctx, inputs, output):
        input, weight, bias, _rm, _rv, training, _momentum, _eps, activation = inputs
        _out, save_mean, save_rstd, new_rm, new_rv = output
        ctx.save_for_backward(input, save_mean, save_rstd, weight, bias)
        ctx.training, ctx.activation = training, activation
        ctx.mark_non_differentiable(save_mean, save_rstd, new_rm, new_rv)

    def _batch_norm_act_backward(ctx, grad_out, *_grad_stats):
        input, save_mean, save_rstd, weight, bias = ctx.saved_tensors
        need = ctx.needs_input_grad
        mask = [need[0], weight is not None and need[1], bias is not None and need[2]]
        dx, dw, db = _ops.batch_norm_act_backward(
            grad_out, input, save_mean, save_rstd, weight, bias, ctx.training, ctx.activation, mask
        )
        grads = (dx if mask[0] else None), (dw if mask[1] else None), (db if mask[2] else None)
        return (*grads, None, None, None, None, None, None)

    torch.library.register_autograd(
        "minitorch_nn::batch_norm_act", _batch_norm_act_backward, setup_context=_batch_norm_act_setup
    )


# ---------------------------------------------------------------------------------------------
# Functions


def layer_norm_act(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    activation: str = "gelu",
    rung: int | None = None,
) -> Tensor:
    r"""``act(layer_norm(input, normalized_shape, weight, bias, eps))`` in one pass, by a compiled kernel.

    Normalizes over the trailing ``normalized_shape`` dims with the biased variance, as
    :func:`torch.nn.functional.layer_norm`, then applies ``activation``.

    Args:
        input: ``(*, *normalized_shape)``, float32, float64, bfloat16 or float16, any strides.
        normalized_shape: the trailing dims to normalize over (an int for the last dim).
        weight, bias: γ and β of shape ``normalized_shape``, or None.
        eps: added to the variance. Default: 1e-5.
        activation: one of :data:`ACTIVATIONS`. Default: ``'gelu'`` (exact).
        rung: the rung of the kernel ladder, one of :data:`LADDER_RUNGS` (see the module docstring),
            forward and backward. Default: None, the production kernel (rung 4), the fastest.

    Returns:
        A contiguous tensor of ``input``'s shape and dtype.

    Differs from torch (on purpose): the float32 gradients of a constant or near-constant row are
    the exact ones; torch's backward recomputes x − μ with its rounded μ, which rstd ≈ 1/√eps
    amplifies (a 2-value row of 6167.73: dx = 252, −248 for ±248.34; docs/findings.md).

    Example::

        >>> import minitorch_nn.kernels as K
        >>> x = torch.randn(4, 8)
        >>> y = K.layer_norm_act(x, 8, activation="relu")
        >>> torch.allclose(y, torch.relu(torch.nn.functional.layer_norm(x, (8,))), atol=1e-6)
        True
    """
    require()
    _check_activation(activation)
    _check_rung(rung)
    check_tensors("layer_norm_act", input=input, weight=weight, bias=bias)
    shape = [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)
    if rung is None or rung == 4:
        out, _mean, _rstd = torch.ops.minitorch_nn.layer_norm_act(input, shape, weight, bias, float(eps), activation)
    else:
        out, _mean, _rstd = torch.ops.minitorch_nn.layer_norm_act_ladder(
            input, shape, weight, bias, float(eps), activation, rung
        )
    return out


def batch_norm_act(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    activation: str = "relu",
) -> Tensor:
    r"""``act(batch_norm(input, ...))`` in one kernel; arguments as :func:`torch.nn.functional.batch_norm`.

    Normalizes each channel (dim 1) over every other dim. With ``training=True`` the batch
    statistics normalize, and ``running_mean`` / ``running_var`` (if given) are updated in place,
    ``running = (1 - momentum) * running + momentum * batch`` with the unbiased batch variance.
    With ``training=False`` the running statistics normalize.

    Args:
        input: ``(N, C, *)``, float32, float64, bfloat16 or float16; NCHW, channels_last or any strides.
            The output has the same layout.
        running_mean, running_var: ``(C,)`` buffers, or None (then ``training`` must be True).
        weight, bias: γ and β of shape ``(C,)``, or None.
        activation: one of :data:`ACTIVATIONS`. Default: ``'relu'``.

    Example::

        >>> import minitorch_nn.kernels as K
        >>> x = torch.randn(8, 3, 4, 4)
        >>> rm, rv = torch.zeros(3), torch.ones(3)
        >>> y = K.batch_norm_act(x, rm, rv, training=True)
        >>> torch.allclose(y, torch.relu(torch.nn.functional.batch_norm(x, None, None, training=True)), atol=1e-5)
        True
        >>> torch.allclose(rm, 0.1 * x.mean((0, 2, 3)))
        True
    """
    require()
    _check_activation(activation)
    check_tensors(
        "batch_norm_act", input=input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias
    )
    if training and input.dim() >= 2 and input.shape[0] * math.prod(input.shape[2:]) == 1:
        # torch.nn.functional.batch_norm checks this before anything else (the op checks it too).
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
    if training and eps <= 0.0:  # torch's checks, in its order
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    if not training:  # then torch's, before the input's dtype and the parameters' shapes
        for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
            if stat is None:
                raise RuntimeError(f"{name} must be defined in evaluation mode")
    elif (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    # torch takes γ and β of any shape with C elements ((C, 1), or () for C = 1), as flat vectors.
    channels = input.shape[1] if input.dim() >= 2 else -1
    weight, bias = (p.reshape(channels) if _flat_vector(p, channels) else p for p in (weight, bias))
    out, _mean, _rstd, new_running_mean, new_running_var = torch.ops.minitorch_nn.batch_norm_act(
        input, weight, bias, running_mean, running_var, training, float(momentum), float(eps), activation
    )
    if training and running_mean is not None:
        # The op is functional (see its schema in csrc/ops.cpp): it returns the updated statistics.
        with torch.no_grad():
            running_mean.copy_(new_running_mean)
            running_var.copy_(new_running_var)
    return out


def _flat_vector(p: Tensor | None, channels: int) -> bool:
    """A parameter of another shape that torch reads as the (C,) vector it holds."""
    return p is not None and p.dim() != 1 and p.numel() == channels


# ---------------------------------------------------------------------------------------------
# Modules


class LayerNormAct(LayerNorm):
    r"""LayerNorm followed by an activation, fused into one compiled kernel.

    Same arguments, parameters and ``state_dict`` as :class:`minitorch_nn.nn.LayerNorm` (and so
    :class:`torch.nn.LayerNorm`), plus ``activation``; ``LayerNormAct(..., activation='gelu')``
    computes what ``Sequential(LayerNorm(...), GELU())`` does. ``rung`` picks the kernel ladder's
    rung, forward and backward, as :func:`layer_norm_act`'s does (default None: the production
    kernel, the fastest).

    Example::

        >>> from minitorch_nn.kernels import LayerNormAct
        >>> m = LayerNormAct(16, activation="silu")
        >>> m.load_state_dict(torch.nn.LayerNorm(16).state_dict())
        <All keys matched successfully>
        >>> m(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, *args, activation: str = "gelu", rung: int | None = None, **kwargs) -> None:
        _check_activation(activation)
        _check_rung(rung)
        super().__init__(*args, **kwargs)
        self.activation = activation
        self.rung = rung

    def forward(self, input: Tensor) -> Tensor:
        return layer_norm_act(
            input, self.normalized_shape, self.weight, self.bias, self.eps, self.activation, self.rung
        )

    def extra_repr(self) -> str:
        rung = "" if self.rung is None else f", rung={self.rung}"
        return f"{super().extra_repr()}, activation={self.activation!r}{rung}"


class BatchNormAct2d(BatchNorm2d):
    r"""BatchNorm2d followed by an activation, fused into one compiled kernel.

    Same arguments, parameters, buffers (running statistics, ``num_batches_tracked``) and
    ``state_dict`` as :class:`minitorch_nn.nn.BatchNorm2d` / :class:`torch.nn.BatchNorm2d`, plus
    ``activation``; the running statistics follow torch's rules exactly (``momentum=None`` is the
    cumulative average).

    Example::

        >>> from minitorch_nn.kernels import BatchNormAct2d
        >>> m = BatchNormAct2d(8, activation="relu")
        >>> m.load_state_dict(torch.nn.BatchNorm2d(8).state_dict())
        <All keys matched successfully>
        >>> m(torch.randn(4, 8, 5, 5).to(memory_format=torch.channels_last)).is_contiguous(
        ...     memory_format=torch.channels_last)
        True
    """

    def __init__(self, *args, activation: str = "relu", **kwargs) -> None:
        _check_activation(activation)
        super().__init__(*args, **kwargs)
        self.activation = activation

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        running_mean, running_var, training, momentum = self._batch_norm_arguments()
        return batch_norm_act(
            input, running_mean, running_var, self.weight, self.bias, training, momentum, self.eps, self.activation
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation!r}"
