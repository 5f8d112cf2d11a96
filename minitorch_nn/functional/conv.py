r"""2-D convolution by im2col: gather every receptive field into a column, then one matmul.

Dimensions, named once: N batch, C input channels, H × W input size, O output channels,
kh × kw kernel, g groups (each sees C/g inputs and makes O/g outputs), H' × W' output size,
L = H'·W' output positions, K = (C/g)·kh·kw the length of one receptive field.

Output size. With padding p, dilation d (kernel taps d apart) and stride s, the kernel spans
d·(k − 1) + 1 input pixels, and fits in the padded input this many times:

    H' = ⌊(H + p_top + p_bottom − d_h·(kh − 1) − 1) / s_h⌋ + 1        (the same for W')

(``padding=1`` with a 3×3 kernel and stride 1 gives H' = H: "same" size.)

Receptive field. Stacking two 3×3 convolutions (stride 1) lets an output see a 5×5 patch of the
input, exactly what one 5×5 convolution sees, with 2·9 = 18 weights per channel pair instead of
25 and a nonlinearity in between; three 3×3 layers see 7×7 for 27 weights instead of 49. Each
extra layer of kernel k widens the field by d·(k − 1).

Forward, in four steps with shapes:

    1. pad:     xp  (N, C, H + p_top + p_bottom, W + p_left + p_right)        zeros around x
    2. im2col:  cols (N, g, K, L)     a view of xp: cols[n, :, (c, a, b), (i, j)] =
                                      xp[n, c, i·s_h + a·d_h, j·s_w + b·d_w], no copy until reshaped
    3. matmul:  y   (N, g, O/g, L) = W (g, O/g, K) @ cols
    4. bias:    y   (N, O, H', W') + b[o]

Backward, given dy (N, O, H', W') viewed as (N, g, O/g, L):

    dW  = Σ_n dy @ colsᵀ        (g, O/g, L) @ (L, K) summed over N  -> (O, C/g, kh, kw)
    db  = Σ_{n, i, j} dy                                            -> (O,)
    dcols = Wᵀ @ dy             (g, K, O/g) @ (O/g, L)              -> (N, g, K, L)
    dx  = col2im(dcols): every input pixel was copied into each column that read it, so its
          gradient is the *sum* over those columns: for each kernel tap (a, b), add
          dcols[:, :, a, b] back into the strided positions xp[..., a·d_h :: s_h, b·d_w :: s_w]
          it was read from (a scatter-add), then drop the padding.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd import Function

from ._common import check_tensors, opmath, pair

__all__ = ["conv2d"]

Pair = tuple[int, int]
Padding = tuple[int, int, int, int]  # (top, bottom, left, right)


def pad2d(x: Tensor, padding: Padding) -> Tensor:
    """Zero-pad the last two dims of ``x``: (..., H, W) -> (..., H + top + bottom, W + left + right)."""
    top, bottom, left, right = padding
    if not any(padding):
        return x
    h, w = x.shape[-2:]
    out = x.new_zeros((*x.shape[:-2], h + top + bottom, w + left + right))
    out[..., top : top + h, left : left + w] = x  # a recorded copy: differentiable when x is
    return out


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _source_index(size: int, before: int, after: int, mode: str) -> Tensor:
    """For each position of the padded dim, the input position it copies (reflect/replicate/circular).

    reflect:   ... 2 1 | 0 1 2 ... W-1 | W-2 W-3 ...    (mirror, edge not repeated)
    replicate: ... 0 0 | 0 1 2 ... W-1 | W-1 W-1 ...    (edge repeated)
    circular:  ... W-2 W-1 | 0 1 ... W-1 | 0 1 ...     (wrap around)
    """
    i = torch.arange(-before, size + after)
    if mode == "reflect":
        i = i.abs()
        return torch.where(i >= size, 2 * (size - 1) - i, i)
    if mode == "replicate":
        return i.clamp(0, size - 1)
    return i % size  # circular


def pad2d_mode(x: Tensor, padding: Padding, mode: str) -> Tensor:
    """Pad the last two dims with ``mode`` (see ``PADDING_MODES``), as a gather of input pixels.

    The gather (``index_select``) is differentiable: its backward adds each padded pixel's
    gradient back onto the pixel it copied.
    """
    if mode == "zeros":
        return pad2d(x, padding)
    if x.dim() not in (3, 4):  # torch's F.pad: four padding values need 3-D or 4-D input
        raise NotImplementedError(f"Padding size 4 is not supported for {x.dim()}D input tensor.")
    top, bottom, left, right = padding
    h, w = x.shape[-2:]
    for size, before, after in ((h, top, bottom), (w, left, right)):
        if mode == "reflect" and max(before, after) >= size:
            raise RuntimeError(
                f"Padding size should be less than the corresponding input dimension, but got padding "
                f"({before}, {after}) for a dimension of size {size} (input {list(x.shape)})"
            )
        if mode == "circular" and max(before, after) > size:
            raise RuntimeError("Padding value causes wrapping around more than once.")
    rows = _source_index(h, top, bottom, mode).to(x.device)
    cols = _source_index(w, left, right, mode).to(x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """⌊(size + pad_total − dilation·(kernel − 1) − 1) / stride⌋ + 1."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def im2col(xp: Tensor, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair) -> Tensor:
    """The receptive fields of a padded (N, C, Hp, Wp) input as a view (N, C, kh, kw, H', W')."""
    xp = xp.contiguous()
    sn, sc, sh, sw = xp.stride()
    return xp.as_strided(
        (xp.shape[0], xp.shape[1], kernel[0], kernel[1], out_hw[0], out_hw[1]),
        (sn, sc, dilation[0] * sh, dilation[1] * sw, stride[0] * sh, stride[1] * sw),
        xp.storage_offset(),
    )


def col2im(cols: Tensor, padded_hw: Pair, stride: Pair, dilation: Pair) -> Tensor:
    """The adjoint of :func:`im2col`: (N, C, kh, kw, H', W') summed back into (N, C, Hp, Wp)."""
    n, c, kh, kw, oh, ow = cols.shape
    out = cols.new_zeros((n, c, *padded_hw))
    for a in range(kh):
        for b in range(kw):
            rows = slice(a * dilation[0], a * dilation[0] + stride[0] * (oh - 1) + 1, stride[0])
            columns = slice(b * dilation[1], b * dilation[1] + stride[1] * (ow - 1) + 1, stride[1])
            out[:, :, rows, columns] += cols[:, :, a, b]
    return out


def crop2d(x: Tensor, padding: Padding) -> Tensor:
    """Undo :func:`pad2d`."""
    top, bottom, left, right = padding
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


class Conv2dFunction(Function):
    """y = conv2d(x, W) + b by im2col and matmul; see the module docstring for the backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride: Pair, padding: Padding, dilation: Pair, groups: int):
        ctx.save_for_backward(x, weight, bias)
        ctx.conf = stride, padding, dilation, groups
        # Half types are accumulated in float32 and rounded once at the end (opmath).
        cols, out_hw = Conv2dFunction._columns(opmath(x), weight, stride, padding, dilation, groups)
        o = weight.shape[0]
        w = opmath(weight).reshape(groups, o // groups, cols.shape[2])  # (g, O/g, K)
        y = w.matmul(cols)  # (g, O/g, K) @ (N, g, K, L) -> (N, g, O/g, L)
        y = y.reshape(x.shape[0], o, *out_hw)
        if bias is not None:
            y = y + opmath(bias).view(1, o, 1, 1)
        return y.to(x.dtype)

    @staticmethod
    def _columns(x, weight, stride, padding, dilation, groups) -> tuple[Tensor, Pair]:
        """im2col of x as (N, g, K, L), and (H', W')."""
        n, c = x.shape[:2]
        kernel = tuple(weight.shape[2:])
        xp = pad2d(x, padding)
        out_hw = (
            output_size(x.shape[2], kernel[0], stride[0], padding[0] + padding[1], dilation[0]),
            output_size(x.shape[3], kernel[1], stride[1], padding[2] + padding[3], dilation[1]),
        )
        cols = im2col(xp, kernel, stride, dilation, out_hw)  # (N, C, kh, kw, H', W')
        k = (c // groups) * kernel[0] * kernel[1]
        return cols.reshape(n, groups, k, out_hw[0] * out_hw[1]), out_hw  # copies once, here

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, weight, bias = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        n, o = dy.shape[:2]
        # Explicit sizes, never -1: with a zero-size dim, -1 would be ambiguous.
        dy_g = opmath(dy).reshape(n, groups, o // groups, dy.shape[2] * dy.shape[3])  # (N, g, O/g, L)
        k = weight[0].numel()  # K = (C/g)·kh·kw
        dx = dw = db = None
        if need_w:
            cols, _ = Conv2dFunction._columns(opmath(x), weight, stride, padding, dilation, groups)  # (N, g, K, L)
            dw = dy_g.matmul(cols.transpose(-1, -2)).sum(0).reshape(weight.shape)  # Σ_n (O/g, L) @ (L, K)
            dw = dw.to(weight.dtype)
        if need_x:
            w = opmath(weight).reshape(groups, o // groups, k)  # (g, O/g, K)
            dcols = w.transpose(-1, -2).matmul(dy_g)  # (g, K, O/g) @ (N, g, O/g, L) -> (N, g, K, L)
            kh, kw = weight.shape[2:]
            dcols = dcols.reshape(n, x.shape[1], kh, kw, *dy.shape[2:])  # (N, C, kh, kw, H', W')
            padded_hw = (x.shape[2] + padding[0] + padding[1], x.shape[3] + padding[2] + padding[3])
            dx = crop2d(col2im(dcols, padded_hw, stride, dilation), padding).to(x.dtype)
        if need_b and bias is not None:
            db = opmath(dy).sum((0, 2, 3)).to(bias.dtype)
        return dx, dw, db, None, None, None, None


def resolve_padding(padding: str | int | Sequence[int], kernel: Pair, stride: Pair, dilation: Pair) -> Padding:
    """(top, bottom, left, right) from an int, a pair, 'valid' or 'same'.

    'same' pads a total of d·(k − 1) per dim so that H' = H at stride 1; when that total is odd,
    the extra row / column goes at the bottom / right, as in torch.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise RuntimeError(f"Invalid padding string: {padding!r}")
        if stride != (1, 1):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        if any(t % 2 for t in totals):
            warnings.warn(
                "Using padding='same' with even kernel lengths and odd dilation pads asymmetrically "
                "(the extra row/column at the bottom/right)",
                stacklevel=3,
            )
        (th, tw) = totals
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = pair(padding, "padding")
    return (ph, ph, pw, pw)


def _check_conv_args(x: Tensor, weight: Tensor, bias, stride: Pair, padding: Padding, dilation: Pair, groups: int):
    if weight.dim() != 4:
        raise RuntimeError(
            f"conv2d: weight must be 4-D (out_channels, in_channels/groups, kh, kw), got {weight.dim()}-D"
        )
    if any(s <= 0 for s in stride):
        raise RuntimeError("non-positive stride is not supported")
    if any(p < 0 for p in padding):
        raise RuntimeError("negative padding is not supported")
    if any(d <= 0 for d in dilation):
        raise RuntimeError("non-positive dilation is not supported")
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    o, c_per_group = weight.shape[:2]
    if o == 0 or o % groups != 0:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0 (and at least 1), "
            f"but got weight of size {list(weight.shape)} instead"
        )
    if x.shape[1] != c_per_group * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected input{list(x.shape)} to have "
            f"{c_per_group * groups} channels, but got {x.shape[1]} channels instead"
        )
    if x.dtype != weight.dtype:
        raise RuntimeError(f"Input type ({x.dtype}) and weight type ({weight.dtype}) should be the same")
    if bias is not None and (bias.shape != (o,) or bias.dtype != x.dtype):
        raise RuntimeError(
            f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with {o} elements "
            f"of type {x.dtype}, but got bias of size {list(bias.shape)} and type {bias.dtype} instead"
        )
    if x.numel() == 0 and x.shape[0] != 0 and x.shape[1] != 0:
        raise RuntimeError(
            f"Only zero batch or zero channel inputs are supported, but got input shape: {list(x.shape)}"
        )
    if 0 in weight.shape[2:]:
        # torch (oneDNN) refuses an empty kernel; an empty sum would silently give bias-only output.
        raise RuntimeError(f"conv2d: kernel size must be positive, got weight of size {list(weight.shape)}")
    padded = (x.shape[2] + padding[0] + padding[1], x.shape[3] + padding[2] + padding[3])
    span = tuple(d * (k - 1) + 1 for d, k in zip(dilation, weight.shape[2:], strict=True))
    if any(s > p for s, p in zip(span, padded, strict=True)):
        raise RuntimeError(
            f"Calculated padded input size per channel: ({padded[0]} x {padded[1]}). Kernel size: "
            f"({span[0]} x {span[1]}). Kernel size can't be greater than actual input size"
        )


def batched_conv_args(input: Tensor, weight: Tensor, stride, padding, dilation) -> tuple[Tensor, Pair, Padding, Pair]:
    """(4-D input, stride, (top, bottom, left, right) padding, dilation) from conv2d's arguments.

    Shared by this reference and the compiled op's wrapper (minitorch_nn.kernels.conv2d), so both
    accept and reject the same input ranks with torch's message.
    """
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: {list(input.shape)}"
        )
    stride_, dilation_ = pair(stride, "stride"), pair(dilation, "dilation")
    kernel = tuple(weight.shape[2:]) if weight.dim() == 4 else (1, 1)
    padding_ = resolve_padding(padding, kernel, stride_, dilation_)
    return (input if input.dim() == 4 else input.unsqueeze(0)), stride_, padding_, dilation_


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    r"""2-D convolution (cross-correlation, as in every deep learning library) by im2col.

    See the module docstring for the output size, the receptive field and the backward.

    Args:
        input: ``(N, C, H, W)`` or unbatched ``(C, H, W)``.
        weight: ``(O, C/groups, kh, kw)``.
        bias: optional ``(O,)``.
        stride, dilation: an int or a pair (rows, columns).
        padding: an int, a pair, ``'valid'`` (no padding) or ``'same'`` (output size = input
            size; stride 1 only).
        groups: split the channels into ``groups`` independent convolutions; ``groups = C``
            with ``O = C`` is a depthwise convolution.

    Shape: ``(N, C, H, W)`` -> ``(N, O, H', W')`` (the batch dim dropped for unbatched input).

    Raises:
        RuntimeError: every argument torch rejects (non-positive stride, dilation or groups,
            negative padding, groups that do not divide the channels, a weight that is not 4-D,
            a kernel larger than the padded input, mismatched dtypes or sizes), as torch.

    Example::

        >>> import torch
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> conv2d(x, torch.ones(1, 1, 2, 2), stride=2)    # sums of 2x2 blocks
        tensor([[[[10., 18.],
                  [42., 50.]]]])
    """
    check_tensors("conv2d", input=input, weight=weight, bias=bias)
    x, stride_, padding_, dilation_ = batched_conv_args(input, weight, stride, padding, dilation)
    _check_conv_args(x, weight, bias, stride_, padding_, dilation_, groups)
    y = Conv2dFunction.apply(x, weight, bias, stride_, padding_, dilation_, groups)
    return y if input.dim() == 4 else y.squeeze(0)
