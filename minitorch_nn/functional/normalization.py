r"""BatchNorm, LayerNorm and GroupNorm: one normalization, three choices of what to average over.

Each standardizes a set of M values (its "group") to zero mean and unit variance, then applies a
learned per-channel scale γ (weight) and shift β (bias):

    μ    = (1/M) Σ x                          the group's mean
    σ²   = (1/M) Σ (x − μ)²                   its *biased* variance (divide by M, not M − 1)
    rstd = 1 / √(σ² + ε)
    x̂    = (x − μ) · rstd
    y    = γ · x̂ + β

What a group is, for an input (N, C, *) (``*`` = any spatial dims, L or H×W):

    batch_norm   per channel c, over the batch and all positions      M = N · L       γ, β: (C,)
    layer_norm   per sample, over the trailing ``normalized_shape``   M = prod(shape) γ, β: normalized_shape
    group_norm   per sample and group of C/G channels, over those     M = C/G · L     γ, β: (C,)
                 channels and all positions

Backward. Write g = ∂L/∂x̂ = γ · dy. Because μ and σ are computed *from x*, every x̂_j in a group
depends on every x_i: ∂x̂_j/∂x_i = rstd · (δ_ij − 1/M − x̂_i x̂_j / M). Summing g_j times that over j:

    dx = rstd · ( g  −  mean(g)  −  x̂ · mean(g · x̂) )
                  ──    ───────     ─────────────────
                term 1   term 2          term 3

    term 1: the direct path, as if μ and σ were constants;
    term 2: through μ: moving any x_i shifts the mean, which every x̂_j subtracts;
    term 3: through σ: moving x_i changes the spread, which rescales every x̂_j.

(means over the group). The parameters see each element once per use:
dγ = Σ dy · x̂ and dβ = Σ dy, summed over everything except the parameter's own dimensions.

Which statistics when: LayerNorm and GroupNorm always use the statistics of the input in hand,
so they behave identically in training and evaluation. BatchNorm in training uses the batch's
statistics and updates running estimates,

    running_mean ← (1 − momentum) · running_mean + momentum · μ
    running_var  ← (1 − momentum) · running_var  + momentum · σ² · M / (M − 1)

with the *unbiased* variance (the running value estimates the population variance), and in
evaluation normalizes with those running estimates, which are constants: y is then an affine
function of x, dx = γ · rstd · dy, and terms 2 and 3 vanish. In training a channel needs more
than one value (M > 1): with one, x̂ = 0 and the unbiased variance divides by zero.

Numerics: the variance is computed in two passes (mean first, then the mean of squared
deviations), which avoids the cancellation of E[x²] − E[x]²; half-precision inputs are computed
in float32. Both passes work on x − K, with K one of the group's own values (its first), and
μ = K + mean(x − K): mathematically the same x − μ, but a constant group gives x − K = 0 exactly,
so μ = K exactly and x̂ = 0 exactly, where summing x directly leaves μ an ulp or so off, which
rstd ≈ 1/√ε then amplifies (12345.6 repeated 1000 times in float32 gave x̂ = 0.295 everywhere).
For a near-constant group (values within a factor 2 of K) each x − K is exact (Sterbenz), so
the mean's rounding error scales with the spread of the group, not with |μ|; and any group
with a large mean relative to its spread gains the same way. One of the group's own values is
the cheapest shift that is always in range (no extra pass, unlike a first-pass mean); K is a
constant of the computation (detached), since x − μ does not depend on it. torch's kernels
(Welford) give these constant groups 0 too; the compiled kernels of this project do not yet.

The backward recomputes x̂ and rstd from x with differentiable ops instead of reusing
the forward's values, so autograd can differentiate it again (double backward).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd import Function

from ._common import check_floating, check_tensors, opmath

__all__ = ["batch_norm", "group_norm", "layer_norm"]


def standardize(x: Tensor, dims: tuple[int, ...], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """x̂, μ, σ² (biased) over ``dims``, with the statistics kept as size-1 dims for broadcasting.

    Shifted by K, the group's first value (see "Numerics" in the module docstring): a constant
    group normalizes to exactly 0.
    """
    shift = x.detach()
    if x.numel():
        for d in dims:
            shift = shift.narrow(d, 0, 1)  # (…, 1, …): the first value of each group
    else:
        shift = shift.new_zeros(())
    shifted = x - shift
    offset = shifted.mean(dims, keepdim=True)
    centered = shifted - offset
    var = (centered * centered).mean(dims, keepdim=True)
    return centered * torch.rsqrt(var + eps), shift + offset, var


def standardize_backward(g: Tensor, x_hat: Tensor, rstd: Tensor, dims: tuple[int, ...]) -> Tensor:
    """dx from g = ∂L/∂x̂ when x̂ was standardized with statistics of x itself (the three terms)."""
    term1 = g
    term2 = g.mean(dims, keepdim=True)
    term3 = x_hat * (g * x_hat).mean(dims, keepdim=True)
    return rstd * (term1 - term2 - term3)


def _affine(x_hat: Tensor, weight: Tensor | None, bias: Tensor | None, shape: Sequence[int]) -> Tensor:
    """γ · x̂ + β with the parameters viewed as ``shape`` to broadcast against x̂."""
    y = x_hat if weight is None else x_hat * opmath(weight).view(shape)
    return y if bias is None else y + opmath(bias).view(shape)


def _affine_backward(
    dy: Tensor, x_hat: Tensor, weight: Tensor | None, bias: Tensor | None, shape: Sequence[int], needs: Sequence[bool]
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(g = ∂L/∂x̂, dγ, dβ) for y = γ · x̂ + β; dγ and dβ sum over every dim γ was broadcast along."""
    g = dy if weight is None else dy * opmath(weight).view(shape)
    dweight = None if weight is None or not needs[0] else (dy * x_hat).sum_to_size(shape).view(weight.shape)
    dbias = None if bias is None or not needs[1] else dy.sum_to_size(shape).view(bias.shape)
    return g, _cast(dweight, weight), _cast(dbias, bias)


def _cast(t: Tensor | None, like: Tensor | None) -> Tensor | None:
    return None if t is None else t.to(like.dtype)


class LayerNormFunction(Function):
    """y = γ·x̂ + β, x̂ standardized over the last ``len(normalized_shape)`` dims (see module doc)."""

    @staticmethod
    def forward(ctx, input: Tensor, normalized_shape: tuple[int, ...], weight, bias, eps: float) -> Tensor:
        ctx.save_for_backward(input, weight, bias)
        ctx.dims = tuple(range(input.dim() - len(normalized_shape), input.dim()))
        ctx.shape, ctx.eps = normalized_shape, eps
        x_hat, _, _ = standardize(opmath(input), ctx.dims, eps)
        return _affine(x_hat, weight, bias, normalized_shape).to(input.dtype)

    @staticmethod
    def backward(ctx, dy: Tensor):
        input, weight, bias = ctx.saved_tensors
        x = opmath(input)
        x_hat, _, var = standardize(x, ctx.dims, ctx.eps)
        g, dweight, dbias = _affine_backward(opmath(dy), x_hat, weight, bias, ctx.shape, ctx.needs_input_grad[2:4])
        dx = None
        if ctx.needs_input_grad[0]:
            dx = standardize_backward(g, x_hat, torch.rsqrt(var + ctx.eps), ctx.dims).to(input.dtype)
        return dx, None, dweight, dbias, None


class GroupNormFunction(Function):
    """y = γ·x̂ + β, x̂ standardized per sample over groups of C/G channels and all positions."""

    @staticmethod
    def forward(ctx, input: Tensor, num_groups: int, weight, bias, eps: float) -> Tensor:
        ctx.save_for_backward(input, weight, bias)
        ctx.num_groups, ctx.eps = num_groups, eps
        x = opmath(input)
        x_hat, _, _ = standardize(_grouped(x, num_groups), (2,), eps)
        return _affine(x_hat.reshape(x.shape), weight, bias, _channel_shape(input)).to(input.dtype)

    @staticmethod
    def backward(ctx, dy: Tensor):
        input, weight, bias = ctx.saved_tensors
        x = opmath(input)
        grouped = _grouped(x, ctx.num_groups)
        x_hat, _, var = standardize(grouped, (2,), ctx.eps)
        shape = _channel_shape(input)
        g, dweight, dbias = _affine_backward(
            opmath(dy), x_hat.reshape(x.shape), weight, bias, shape, ctx.needs_input_grad[2:4]
        )
        dx = None
        if ctx.needs_input_grad[0]:
            dx = standardize_backward(g.reshape(grouped.shape), x_hat, torch.rsqrt(var + ctx.eps), (2,))
            dx = dx.reshape(x.shape).to(input.dtype)
        return dx, None, dweight, dbias, None


class BatchNormFunction(Function):
    """y = γ·x̂ + β, x̂ standardized per channel with batch (training) or running (eval) statistics."""

    @staticmethod
    def forward(ctx, input, running_mean, running_var, weight, bias, training: bool, momentum: float, eps: float):
        ctx.save_for_backward(input, running_mean, running_var, weight, bias)
        ctx.training, ctx.eps = training, eps
        x = opmath(input)
        dims = _batch_dims(input)
        shape = _channel_shape(input)
        if training:
            x_hat, mean, var = standardize(x, dims, eps)
            if running_mean is not None:
                _update_running_stats(running_mean, running_var, mean, var, x.numel() // x.shape[1], momentum)
        else:
            x_hat = (x - opmath(running_mean).view(shape)) * torch.rsqrt(opmath(running_var).view(shape) + eps)
        return _affine(x_hat, weight, bias, shape).to(input.dtype)

    @staticmethod
    def backward(ctx, dy: Tensor):
        input, running_mean, running_var, weight, bias = ctx.saved_tensors
        x = opmath(input)
        dims, shape = _batch_dims(input), _channel_shape(input)
        if ctx.training:
            x_hat, _, var = standardize(x, dims, ctx.eps)
        else:
            rstd = torch.rsqrt(opmath(running_var).view(shape) + ctx.eps)
            x_hat = (x - opmath(running_mean).view(shape)) * rstd
        g, dweight, dbias = _affine_backward(opmath(dy), x_hat, weight, bias, shape, ctx.needs_input_grad[3:5])
        dx = None
        if ctx.needs_input_grad[0]:
            if ctx.training:
                dx = standardize_backward(g, x_hat, torch.rsqrt(var + ctx.eps), dims)
            else:
                dx = g * rstd  # constants μ and σ: only term 1 remains
            dx = dx.to(input.dtype)
        return dx, None, None, dweight, dbias, None, None, None


@torch.no_grad()
def _update_running_stats(running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, m: int, momentum):
    """Exponential moving averages of the batch mean and the *unbiased* batch variance."""
    unbiased = var.flatten() * (m / (m - 1))
    running_mean.copy_(momentum * mean.flatten() + (1 - momentum) * opmath(running_mean))
    running_var.copy_(momentum * unbiased + (1 - momentum) * opmath(running_var))


def _grouped(x: Tensor, num_groups: int) -> Tensor:
    """(N, C, *) viewed as (N, G, M), M = C/G · prod(*): one row per (sample, group)."""
    n, c = x.shape[:2]
    return x.reshape(n, num_groups, (c // num_groups) * math.prod(x.shape[2:]))


def _batch_dims(input: Tensor) -> tuple[int, ...]:
    """Every dim but the channel dim 1: (0, 2, 3, ...)."""
    return (0, *range(2, input.dim()))


def _channel_shape(input: Tensor) -> tuple[int, ...]:
    """(1, C, 1, ..., 1): a per-channel (C,) tensor viewed to broadcast against (N, C, *)."""
    return (1, input.shape[1], *([1] * (input.dim() - 2)))


def _check_vector_size(name: str, t: Tensor | None, size: int) -> None:
    if t is not None and t.numel() != size:
        raise RuntimeError(f"{name} should contain {size} elements not {t.numel()}")


def _check_vector_dtype(name: str, t: Tensor | None, input: Tensor) -> None:
    if t is None:
        return
    if t.dtype != input.dtype and not (input.dtype in (torch.float16, torch.bfloat16) and t.dtype == torch.float32):
        raise RuntimeError(f"{name} has dtype {t.dtype} but input has {input.dtype}: expected the same")


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    r"""Batch normalization of ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)`` input, per channel.

    See the module docstring for the math, the backward and which statistics are used when.

    Args:
        input: ``(N, C, *)``.
        running_mean, running_var: ``(C,)`` running estimates; updated in place when
            ``training``; used for normalization when not. May be ``None`` in training.
        weight, bias: optional ``(C,)`` scale γ and shift β.
        training: normalize with the batch's statistics (and update the running ones).
        momentum: weight of the new batch in the running averages.
        eps: added to the variance for stability.

    Shape: ``(N, C, *)`` -> ``(N, C, *)``.

    Raises:
        ValueError: training with one value per channel (N · L == 1), as torch.
        RuntimeError: a running statistic or parameter whose size is not C, or missing running
            statistics in evaluation, as torch.
        IndexError: input with fewer than 2 dims (no channel dim), as torch.

    Example::

        >>> import torch
        >>> x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
        >>> batch_norm(x, None, None, training=True)
        tensor([[-1.0000, -1.0000],
                [ 1.0000,  1.0000]])
    """
    check_tensors(
        "batch_norm", input=input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias
    )
    # torch's order: the Python-level checks (values per channel, eps), then the op's own.
    if training:
        if input.dim() == 0:
            raise IndexError("batch_norm: a 0-D input has no batch dimension (expected (N, C, *))")
        if input.shape[0] * math.prod(input.shape[2:]) == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
    if training and not eps > 0.0 and not math.isnan(eps):
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    if not training and (running_mean is None or running_var is None):
        raise RuntimeError("running_mean and running_var must be defined in evaluation mode")
    # torch's order: every size (against C, or 0 for input without a channel dim), the pairing of
    # the running statistics, the input's rank and dtype, then the parameters' dtypes.
    channels = input.shape[1] if input.dim() >= 2 else 0
    vectors = (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias))
    for name, t in vectors:
        _check_vector_size(name, t, channels)
    if training and (running_mean is None) != (running_var is None):
        # Checked before anything is computed, so running_mean is left as it was.
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if input.dim() < 2:  # there is no channel dim 1 to normalize over: torch's IndexError
        rank = max(input.dim(), 1)
        raise IndexError(
            f"batch_norm: expected an input of shape (N, C, *), got {input.dim()}-D input: dimension 1 is out of "
            f"range (expected to be in range of [{-rank}, {rank - 1}])"
        )
    check_floating(input, "batch_norm")
    for name, t in vectors:
        _check_vector_dtype(name, t, input)
    if input.numel() == 0:
        # No values, no statistics: return the empty result without touching the running ones.
        training = False
        running_mean = torch.zeros(channels, dtype=input.dtype, device=input.device)
        running_var = torch.ones(channels, dtype=input.dtype, device=input.device)
    return BatchNormFunction.apply(input, running_mean, running_var, weight, bias, training, momentum, eps)


def layer_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    r"""Layer normalization over the trailing ``normalized_shape`` dims of each sample.

    See the module docstring for the math and the backward.

    Args:
        input: ``(*, *normalized_shape)``.
        normalized_shape: an int (the last dim) or the sizes of the trailing dims to normalize.
        weight, bias: optional scale γ and shift β of shape ``normalized_shape``.
        eps: added to the variance for stability; a constant row (σ² = 0) gives x̂ = 0 and
            finite gradients.

    Shape: ``(*, *normalized_shape)`` -> the same.

    Raises:
        RuntimeError: the input's trailing dims or a parameter do not match ``normalized_shape``.

    Example::

        >>> import torch
        >>> layer_norm(torch.tensor([[1.0, 2.0, 3.0]]), 3)
        tensor([[-1.2247,  0.0000,  1.2247]])
    """
    check_tensors("layer_norm", input=input, weight=weight, bias=bias)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or input.dim() < k or tuple(input.shape[input.dim() - k :]) != shape:
        raise RuntimeError(
            f"Given normalized_shape={list(shape)}, expected input with shape [*, {', '.join(map(str, shape))}], "
            f"but got input of size {list(input.shape)}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                f"{list(t.shape)} and normalized_shape = {list(shape)}"
            )
        if t is not None and t.dtype != input.dtype and input.dtype not in (torch.float16, torch.bfloat16):
            raise RuntimeError(f"layer_norm: {name} has dtype {t.dtype} but input has {input.dtype}")
    check_floating(input, "layer_norm")
    return LayerNormFunction.apply(input, shape, weight, bias, eps)


def group_norm(
    input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    r"""Group normalization: per sample, over groups of ``C / num_groups`` channels and all positions.

    ``num_groups = 1`` normalizes each sample over everything (LayerNorm over (C, *) with
    per-channel γ, β); ``num_groups = C`` normalizes each channel of each sample separately
    (InstanceNorm). Unlike BatchNorm it never mixes samples, so it works at batch size 1.

    Args:
        input: ``(N, C, *)``.
        num_groups: G, which must divide C.
        weight, bias: optional ``(C,)`` scale γ and shift β.
        eps: added to the variance for stability.

    Shape: ``(N, C, *)`` -> ``(N, C, *)``.

    Raises:
        RuntimeError: fewer than 2 dims, C not divisible by G, or parameters not of size C.
        ValueError: a single sample whose groups hold one value each, as torch.

    Example::

        >>> import torch
        >>> group_norm(torch.tensor([[1.0, 3.0, 10.0, 30.0]]), 2)
        tensor([[-1.0000,  1.0000, -1.0000,  1.0000]])
    """
    check_tensors("group_norm", input=input, weight=weight, bias=bias)
    if input.dim() < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.dim()}")
    channels = input.shape[1]
    if num_groups == 0:  # torch's Python check divides by it first; same class, clearer message
        raise ZeroDivisionError(f"group_norm: num_groups must be positive, got 0 (input of shape {list(input.shape)})")
    # torch's own guard, kept for parity: it multiplies the batch into the count, so it refuses
    # only a single sample whose groups hold one value each (x̂ would be all zeros).
    if input.shape[0] * channels // num_groups * math.prod(input.shape[2:]) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(input.shape)}")
    if num_groups < 0:
        raise RuntimeError(f"Expected num groups to be greater than 0, got {num_groups}")
    if channels % num_groups != 0:
        raise RuntimeError(
            "Expected number of channels in input to be divisible by num_groups, but got input of shape "
            f"{list(input.shape)} and num_groups={num_groups}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.dim() != 1 or t.numel() != channels):
            raise RuntimeError(
                f"Expected {name} to be a vector of size equal to the number of channels in input, but got "
                f"{name} of shape {list(t.shape)} and input of shape {list(input.shape)}"
            )
    check_floating(input, "group_norm")
    return GroupNormFunction.apply(input, num_groups, weight, bias, eps)
