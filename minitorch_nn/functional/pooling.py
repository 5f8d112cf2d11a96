r"""Max, average and adaptive average pooling over 2-D windows, with hand-written backward passes.

Dimensions: N batch, C channels, H × W input, k kernel, s stride, p padding, d dilation (max
pooling only), H' × W' output. Each channel is pooled separately.

Output size. A window spans d·(k − 1) + 1 input pixels; it must start inside the padded input:

    H' = ⌊(H + 2p − d·(k − 1) − 1) / s⌋ + 1                       (floor mode)
    H' = ⌈(H + 2p − d·(k − 1) − 1) / s⌉ + 1,                       (ceil_mode=True)
         minus one if that last window would start in the right padding ((H' − 1)·s >= H + p)

Ceil mode keeps a last, partial window that hangs off the end instead of dropping the leftover
pixels. Padding may be at most half the kernel (p <= k/2), so every window holds a real pixel.

Max pooling: y = max over the window. Its gradient flows only to the element that was the
maximum (the "argmax", which ``return_indices`` reports as h·W + w in the unpadded input), all
others get zero:  dx[argmax] += dy. Ties go to the first maximum in row-major window order; a
NaN in a window wins (the output is NaN, and the index points at the last NaN).

Average pooling: y = (1/D) Σ_window x with the divisor D = ``divisor_override`` if given, else the
window's size counting padding but not the ceil-mode overhang (``count_include_pad=True``), or
only its real pixels (``False``). Backward: every element of the window gets dy / D.

Adaptive average pooling picks the windows from the output size instead: output row i averages
input rows ⌊i·H/H'⌋ to ⌈(i + 1)·H/H'⌉ − 1 (windows may overlap or differ in size). A window is
a product of a row range and a column range, so the pooling is separable: average each column
over the row windows, then each resulting row over the column windows,

    y = A_h · x · A_wᵀ,   A_h (H', H) with A_h[i, r] = 1/|rows_i| on the window's rows,
    dx = A_hᵀ · dy · A_w                                   (the adjoint, the same matrices)

but each product is formed as a sum over the window's gathered rows (``window_mean``), not as a
matmul: a matmul multiplies every input row by A's zeros too, and 0 · NaN = NaN, so one NaN or
Inf would spread over whole output rows and columns. torch confines it to the windows that
contain it, and so does a sum over each window's own elements.

``output_size = 1`` is global average pooling: the head of a CNN that accepts any input size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd import Function

from ._common import check_floating, check_tensors, opmath, pair
from .conv import col2im, crop2d, im2col

__all__ = ["adaptive_avg_pool2d", "avg_pool2d", "max_pool2d"]

Pair = tuple[int, int]


def pool_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """torch's rule, including ceil mode's "the last window must start inside" correction."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _windows(x: Tensor, kernel: Pair, stride: Pair, pad: Pair, dilation: Pair, out_hw: Pair, fill: float):
    """(windows, padded size): (N, C, H', W', kh·kw) views of x padded with ``fill``.

    The padding covers p on the top/left and whatever the last (ceil-mode) window needs on the
    bottom/right, so every window lies inside the padded tensor.
    """
    n, c, h, w = x.shape
    need = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out_hw, stride, dilation, kernel, strict=True)]
    padded_hw = (max(need[0], h + pad[0]), max(need[1], w + pad[1]))
    xp = x.new_full((n, c, *padded_hw), fill)
    xp[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + w] = x
    cols = im2col(xp, kernel, stride, dilation, out_hw)  # (N, C, kh, kw, H', W')
    return cols.permute(0, 1, 4, 5, 2, 3).reshape(n, c, *out_hw, kernel[0] * kernel[1]), padded_hw


class MaxPool2dFunction(Function):
    """y = max over each window; the gradient goes to the argmax. Returns (y, indices)."""

    @staticmethod
    def forward(ctx, x, kernel: Pair, stride: Pair, pad: Pair, dilation: Pair, ceil_mode: bool):
        n, c, h, w = x.shape
        out_hw = tuple(pool_output_size(*a, ceil_mode) for a in zip((h, w), kernel, stride, pad, dilation, strict=True))
        # Padding holds the lowest value, so it never beats a real pixel.
        lowest = -math.inf if x.is_floating_point() else torch.iinfo(x.dtype).min
        values, _ = _windows(x, kernel, stride, pad, dilation, out_hw, lowest)  # (N, C, H', W', kh·kw)
        positions = torch.arange(h * w, device=x.device).view(1, 1, h, w)  # h·W + w of each pixel
        index, _ = _windows(positions, kernel, stride, pad, dilation, out_hw, -1)  # (1, 1, H', W', kh·kw)
        slot = values.argmax(-1, keepdim=True)  # the first maximum, in row-major window order
        # torch's kernel scans each window keeping `if (v > best || isnan(v))`, starting from
        # best = lowest at the window's first tap inside the input: so a NaN wins (the last one
        # scanned), and a window whose maximum is the lowest value reports that first tap.
        nan = values.isnan()
        has_nan = nan.any(-1, keepdim=True)
        last_nan = nan.shape[-1] - 1 - nan.flip(-1).int().argmax(-1, keepdim=True)
        slot = torch.where(has_nan, last_nan, slot)
        y = values.gather(-1, slot).squeeze(-1)  # (N, C, H', W')
        indices = index.expand(n, c, *index.shape[2:]).gather(-1, slot).squeeze(-1)
        at_lowest = (y == lowest) & ~has_nan.squeeze(-1)
        indices = torch.where(at_lowest, _first_tap_index((h, w), out_hw, stride, pad, dilation), indices)
        # With dilation and padding a window can hold no input pixel at all (its taps all land in
        # the padding): its maximum is the lowest value, and its gradient goes nowhere.
        ctx.save_for_backward(indices, (index >= 0).any(-1).squeeze(0).squeeze(0))
        ctx.input_shape = x.shape
        ctx.mark_non_differentiable(indices)
        return y, indices

    @staticmethod
    def backward(ctx, dy: Tensor, _dindices):
        indices, has_pixel = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
        # dx[n, c, argmax] += dy: overlapping windows may share an argmax, hence the scatter-*add*.
        dy = torch.where(has_pixel, dy, torch.zeros_like(dy))
        indices = torch.where(has_pixel, indices, torch.zeros_like(indices))
        out_positions = dy.shape[2] * dy.shape[3]
        dx = dy.new_zeros((n, c, h * w)).scatter_add(
            2, indices.reshape(n, c, out_positions), dy.reshape(n, c, out_positions)
        )
        return dx.view(n, c, h, w), None, None, None, None, None


def _first_tap_index(size_hw: Pair, out_hw: Pair, stride: Pair, pad: Pair, dilation: Pair) -> Tensor:
    """(H', W') flat index h·W + w of each window's first tap at or after the input's top-left.

    For a window that holds input pixels this is its first one, in row-major order. For one
    that holds none it is torch's answer too, though it points outside the input (or wraps
    into the next row): such an index is reported, never used for the gradient.
    """
    firsts = []
    for out, s, p, d in zip(out_hw, stride, pad, dilation, strict=True):
        start = torch.arange(out) * s - p
        firsts.append(start + torch.where(start < 0, (-start + d - 1) // d * d, 0))  # skip taps in the padding
    return firsts[0][:, None] * size_hw[1] + firsts[1][None, :]


def avg_pool_divisor(
    size_hw: Pair, out_hw: Pair, kernel: Pair, stride: Pair, pad: Pair, count_include_pad: bool, divisor
) -> Tensor:
    """(H', W') divisors: torch's window sizes, with or without padding, or the override."""
    if divisor is not None:
        return torch.full(out_hw, float(divisor), dtype=torch.float64)
    sizes = []
    for size, out, k, s, p in zip(size_hw, out_hw, kernel, stride, pad, strict=True):
        start = torch.arange(out) * s - p
        end = torch.clamp(start + k, max=size + p)  # padding counts, the ceil-mode overhang does not
        with_pad = end - start
        without_pad = torch.clamp(end, max=size) - torch.clamp(start, min=0)
        sizes.append((with_pad if count_include_pad else without_pad).double())
    return sizes[0][:, None] * sizes[1][None, :]


class AvgPool2dFunction(Function):
    """y = Σ_window x / D; dx = dy / D spread over each window (col2im)."""

    @staticmethod
    def forward(ctx, x, kernel: Pair, stride: Pair, pad: Pair, ceil_mode: bool, count_include_pad: bool, divisor):
        h, w = x.shape[2:]
        out_hw = tuple(pool_output_size(*a, 1, ceil_mode) for a in zip((h, w), kernel, stride, pad, strict=True))
        values, padded_hw = _windows(opmath(x), kernel, stride, pad, (1, 1), out_hw, 0)  # (N, C, H', W', kh·kw)
        d = avg_pool_divisor((h, w), out_hw, kernel, stride, pad, count_include_pad, divisor).to(values)
        ctx.save_for_backward(d)
        ctx.conf = x.shape, kernel, stride, pad, padded_hw
        if not x.is_floating_point():  # int64, as torch: integer division, truncated toward zero
            return torch.div(values.sum(-1), d, rounding_mode="trunc")
        return (values.sum(-1) / d).to(x.dtype)

    @staticmethod
    def backward(ctx, dy: Tensor):
        (d,) = ctx.saved_tensors
        shape, kernel, stride, pad, padded_hw = ctx.conf
        n, c, h, w = shape
        per_slot = (opmath(dy) / d).view(n, c, 1, 1, *dy.shape[2:]).expand(n, c, *kernel, *dy.shape[2:])
        dxp = col2im(per_slot, padded_hw, stride, (1, 1))  # (N, C, Hp, Wp)
        bottom, right = padded_hw[0] - pad[0] - h, padded_hw[1] - pad[1] - w
        dx = crop2d(dxp, (pad[0], bottom, pad[1], right)).to(dy.dtype)
        return dx, None, None, None, None, None, None


def adaptive_windows(size: int, out: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """(index, inside, count): window i covers rows ⌊i·size/out⌋ .. ⌈(i+1)·size/out⌉ − 1.

    ``index`` (out, L) lists each window's rows, padded to the longest window L with its last
    row; ``inside`` (out, L) marks the real ones; ``count`` (out,) is each window's size.
    """
    i = torch.arange(out, device=device)
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)  # ceil
    longest = int((end - start).max()) if out else 0
    offsets = torch.arange(longest, device=device)
    inside = offsets[None, :] < (end - start)[:, None]
    index = torch.minimum(start[:, None] + offsets[None, :], end[:, None] - 1)
    return index, inside, end - start


def _along(t: Tensor, dim: int, ndim: int) -> list[int]:
    """The shape that views ``t`` (whose dims are the window dims) at ``dim`` of an ``ndim``-D tensor."""
    return [1] * dim + list(t.shape) + [1] * (ndim - dim - t.dim())


def window_mean(x: Tensor, dim: int, out: int) -> Tensor:
    """Average ``x`` along ``dim`` over ``out`` adaptive windows: A · x along that dim.

    Gathers each window's own elements, (…, out, L, …), and sums them: no element outside a
    window is ever multiplied by zero, so NaN and Inf stay inside the windows that hold them.
    """
    index, inside, count = adaptive_windows(x.shape[dim], out, x.device)
    gathered = x.index_select(dim, index.flatten()).unflatten(dim, tuple(index.shape))  # (…, out, L, …)
    gathered = torch.where(inside.view(_along(inside, dim, gathered.dim())), gathered, torch.zeros_like(gathered))
    return gathered.sum(dim + 1) / count.to(x.dtype).view(_along(count, dim, x.dim()))


def window_mean_adjoint(dy: Tensor, dim: int, size: int) -> Tensor:
    """Aᵀ · dy along ``dim``: each window's dy / |window| added back to the ``size`` rows it covers."""
    index, inside, count = adaptive_windows(size, dy.shape[dim], dy.device)
    share = (dy / count.to(dy.dtype).view(_along(count, dim, dy.dim()))).unsqueeze(dim + 1)  # (…, out, 1, …)
    share = share.expand(*dy.shape[: dim + 1], index.shape[1], *dy.shape[dim + 1 :])
    share = torch.where(inside.view(_along(inside, dim, share.dim())), share, torch.zeros_like(share))
    result = dy.new_zeros((*dy.shape[:dim], size, *dy.shape[dim + 1 :]))
    return result.index_add(dim, index.flatten(), share.flatten(dim, dim + 1))


class AdaptiveAvgPool2dFunction(Function):
    """y = A_h x A_wᵀ; dx = A_hᵀ dy A_w, each product a sum over windows (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, out_hw: Pair):
        ctx.input_hw = tuple(x.shape[2:])
        rows = window_mean(opmath(x), 2, out_hw[0])  # (N, C, H', W)
        return window_mean(rows, 3, out_hw[1]).to(x.dtype)  # (N, C, H', W')

    @staticmethod
    def backward(ctx, dy: Tensor):
        h, w = ctx.input_hw
        cols = window_mean_adjoint(opmath(dy), 3, w)  # (N, C, H', W)
        return window_mean_adjoint(cols, 2, h).to(dy.dtype), None  # (N, C, H, W)


def _check_pool_args(x: Tensor, kernel: Pair, stride: Pair, pad: Pair, dilation: Pair, ceil_mode: bool, name: str):
    if x.dim() not in (3, 4) or any(s == 0 for s in x.shape[-3:]):
        raise RuntimeError(f"{name}: expected a non-empty 3D or 4D (batch mode) tensor, got size {list(x.shape)}")
    if any(k <= 0 for k in kernel):
        raise RuntimeError(f"{name}: kernel size should be greater than zero, but got {kernel}")
    if any(s == 0 for s in stride):
        raise RuntimeError("stride should not be zero")
    if any(s < 0 for s in stride):
        raise RuntimeError(f"{name}: stride should be greater than zero, but got {stride}")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"dilation should be greater than zero, but got dilation {dilation}")
    if any(p < 0 for p in pad):
        raise RuntimeError(f"pad must be non-negative, but got pad: {pad}")
    if any(p > k // 2 for p, k in zip(pad, kernel, strict=True)):
        raise RuntimeError(
            f"pad should be at most half of effective kernel size, but got pad={pad}, kernel_size={kernel}"
        )
    out = [pool_output_size(*a, ceil_mode) for a in zip(x.shape[-2:], kernel, stride, pad, dilation, strict=True)]
    if any(o < 1 for o in out):
        raise RuntimeError(
            f"Given input size: {tuple(x.shape[-3:])}. Calculated output size: {out}. Output size is too small"
        )


def _stride_or_kernel(stride, kernel: Pair) -> Pair:
    """The stride, defaulting (None or an empty sequence, as torch allows) to the kernel size."""
    if stride is None or (not isinstance(stride, int) and len(stride) == 0):
        return kernel
    return pair(stride, "stride")


def _batched(input: Tensor) -> Tensor:
    return input if input.dim() == 4 else input.unsqueeze(0)


def max_pool2d(
    input: Tensor,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    r"""Max over each (dilated) window. See the module docstring for the size rule and gradient.

    Args:
        input: ``(N, C, H, W)`` or ``(C, H, W)``.
        kernel_size, stride, padding, dilation: an int or a pair; ``stride`` defaults to the kernel.
        ceil_mode: keep a last, partial window (see the module docstring).
        return_indices: also return the argmax of each window, as ``h * W + w``.

    Shape: ``(N, C, H, W)`` -> ``(N, C, H', W')``.

    Raises:
        RuntimeError: the arguments torch rejects (zero stride, padding beyond half the kernel,
            an empty output, ...).

    Example::

        >>> import torch
        >>> max_pool2d(torch.tensor([[[1.0, 2.0], [4.0, 3.0]]]), 2, return_indices=True)
        (tensor([[[4.]]]), tensor([[[2]]]))
    """
    check_tensors("max_pool2d", input=input)
    kernel = pair(kernel_size, "kernel_size")
    stride_ = _stride_or_kernel(stride, kernel)
    pad, dilation_ = pair(padding, "padding"), pair(dilation, "dilation")
    _check_pool_args(input, kernel, stride_, pad, dilation_, ceil_mode, "max_pool2d")
    if input.dtype == torch.bool or input.is_complex():  # no order to take a maximum in
        raise NotImplementedError(f'"max_pool2d" not implemented for {input.dtype}')
    y, indices = MaxPool2dFunction.apply(_batched(input), kernel, stride_, pad, dilation_, ceil_mode)
    if input.dim() == 3:
        y, indices = y.squeeze(0), indices.squeeze(0)
    return (y, indices) if return_indices else y


def avg_pool2d(
    input: Tensor,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    r"""Mean over each window. See the module docstring for the divisor rules and the gradient.

    Args:
        input: ``(N, C, H, W)`` or ``(C, H, W)``, floating point.
        kernel_size, stride, padding: an int or a pair; ``stride`` defaults to the kernel.
        ceil_mode: keep a last, partial window.
        count_include_pad: whether zero padding counts in the divisor.
        divisor_override: divide by this instead.

    Shape: ``(N, C, H, W)`` -> ``(N, C, H', W')``.

    Example::

        >>> import torch
        >>> avg_pool2d(torch.tensor([[[1.0, 2.0], [4.0, 3.0]]]), 2)
        tensor([[[2.5000]]])
    """
    check_tensors("avg_pool2d", input=input)
    kernel = pair(kernel_size, "kernel_size")
    stride_ = _stride_or_kernel(stride, kernel)
    pad = pair(padding, "padding")
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("divisor must be not zero")
    _check_pool_args(input, kernel, stride_, pad, (1, 1), ceil_mode, "avg_pool2d")
    if input.dtype != torch.int64:  # torch's kernel takes floating types and int64, after its shape checks
        check_floating(input, "avg_pool2d")
    args = (kernel, stride_, pad, ceil_mode, count_include_pad, divisor_override)
    y = AvgPool2dFunction.apply(_batched(input), *args)
    return y if input.dim() == 4 else y.squeeze(0)


def adaptive_avg_pool2d(input: Tensor, output_size: int | Sequence[int | None] | None) -> Tensor:
    r"""Average pooling to a fixed output size, whatever the input size.

    Args:
        input: ``(N, C, H, W)`` or ``(C, H, W)``, floating point, with H, W > 0.
        output_size: ``H'`` for a square output, or ``(H', W')``; ``None`` keeps that input size.

    Shape: ``(N, C, H, W)`` -> ``(N, C, H', W')``.

    Example::

        >>> import torch
        >>> adaptive_avg_pool2d(torch.arange(6.0).view(1, 2, 3), 1)   # global average pooling
        tensor([[[2.5000]]])
    """
    check_tensors("adaptive_avg_pool2d", input=input)
    if input.dim() not in (3, 4):
        raise RuntimeError(f"adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got {list(input.shape)}")
    for d in range(input.dim() - 2, input.dim()):
        if input.shape[d] == 0:
            raise RuntimeError(
                "adaptive_avg_pool2d(): Expected input to have non-zero size for non-batch dimensions, "
                f"but input has sizes {list(input.shape)} with dimension {d} being empty"
            )
    check_floating(input, "adaptive_avg_pool2d")
    if output_size is None:
        raise TypeError("adaptive_avg_pool2d: output_size must be an int or a pair of ints or None, not None")
    sizes = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(sizes) != 2:
        raise RuntimeError("adaptive_avg_pool2d: output_size must be 2")
    out_hw = tuple(input.shape[-2 + i] if s is None else s for i, s in enumerate(sizes))
    if any(s < 0 for s in out_hw):
        raise RuntimeError(f"adaptive_avg_pool2d: elements of output_size must be >= 0, got {out_hw}")
    y = AdaptiveAvgPool2dFunction.apply(_batched(input), out_hw)
    return y if input.dim() == 4 else y.squeeze(0)
