"""max/avg/adaptive-avg pooling: values, indices and gradients against torch, errors, modules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given
from hypothesis import strategies as st

import minitorch_nn.functional as F
import minitorch_nn.nn as nn

from .compare import (
    Tol,
    assert_close,
    assert_raises_like_torch,
    assert_same_as_torch,
    check_gradients,
    constructor_signature,
    reduction_tol,
    upstream_gradient,
)
from .strategies import dtypes, layouts, values

EXACT = Tol(0.0, 0.0)


@st.composite
def pool_args(draw, *, dilation=True, dtype=dtypes(bf16=True), regimes=("normal", "wide", "extreme", "elements")):
    """(x, kernel, stride, padding, dilation, ceil_mode), valid by construction."""
    dtype = draw(dtype)
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    ceil_mode = draw(st.booleans())
    spans = [d * (k - 1) + 1 for d, k in zip(dil, kernel, strict=True)]
    hw = [draw(st.integers(max(1, s - 2 * p), s + 5)) for s, p in zip(spans, padding, strict=True)]
    n = draw(st.integers(0, 3))
    shape = (draw(st.integers(1, 3)), *hw) if draw(st.booleans()) else (n, draw(st.integers(1, 3)), *hw)
    x = draw(layouts(draw(values(shape, dtype, regimes=regimes)))).requires_grad_()
    return x, kernel, stride, padding, dil, ceil_mode


def overlap(kernel, stride, dilation=(1, 1)) -> int:
    """How many windows can contain one pixel: the terms its gradient sums."""
    stride = stride or kernel
    return math.prod(math.ceil((d * (k - 1) + 1) / s) for k, s, d in zip(kernel, stride, dilation, strict=True))


# --- max pooling ----------------------------------------------------------------------------


@given(pool_args())
def test_max_pool_matches_torch_including_indices(args):
    x, kernel, stride, padding, dilation, ceil_mode = args
    conf = {"stride": stride, "padding": padding, "dilation": dilation, "ceil_mode": ceil_mode}
    _, i = F.max_pool2d(x, kernel, return_indices=True, **conf)
    _, i_ref = TF.max_pool2d(x, kernel, return_indices=True, **conf)
    assert torch.equal(i, i_ref), "argmax indices differ"  # ties: first; NaN: the last one
    # Windows made only of padding: torch sends their gradient through an index outside the
    # input plane (see test_window_of_only_padding_gets_no_gradient); compare the rest.
    assume(torch.isfinite(TF.max_pool2d(torch.zeros(x.shape), kernel, **conf)).all())
    # The gradient is dy scattered to the argmax; overlapping windows may add several dy.
    k = overlap(kernel, stride, dilation)
    assert_same_as_torch(
        lambda x: F.max_pool2d(x, kernel, **conf),
        lambda x: TF.max_pool2d(x, kernel, **conf),
        {"input": x},
        tol={"output": EXACT, "input": reduction_tol(x.dtype, k, k)},  # |dy| <= 1
    )


def test_max_pool_gradient_goes_to_the_returned_index():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    y, indices = F.max_pool2d(x, 2, return_indices=True)
    (dx,) = torch.autograd.grad(y.sum(), x)
    expected = torch.zeros(2, 3, 36, dtype=torch.float64).scatter(2, indices.view(2, 3, -1), 1.0)
    assert torch.equal(dx.view(2, 3, 36), expected)


def test_max_pool_propagates_nan_and_breaks_ties_like_torch():
    nan = math.nan
    x = torch.tensor([[[[1.0, nan, nan, 2.0], [5.0, nan, 2.0, 2.0]]]], requires_grad=True)
    ours, theirs = F.max_pool2d(x, 2, return_indices=True), TF.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(ours[1], theirs[1])
    assert torch.isnan(ours[0][0, 0, 0, 0])
    assert ours[1].tolist() == [[[[5, 2]]]]  # the last NaN of the first window; the first 2 of the second


def test_max_pool_window_of_only_minus_infinity_points_at_a_real_pixel():
    x = torch.full((1, 1, 3, 3), -math.inf)
    ours, theirs = (
        F.max_pool2d(x, 2, padding=1, return_indices=True),
        TF.max_pool2d(x, 2, padding=1, return_indices=True),
    )
    assert torch.equal(ours[1], theirs[1])


def test_window_of_only_padding_gets_no_gradient():
    # Kernel (1, 2) with dilation 2 and padding 1 on a 1-pixel-wide input: the window's taps
    # sit at padded columns 0 and 2, both padding, with the one real pixel between them.
    # Its max is -inf and it depends on no input. torch 2.13 reports index 1 for it, outside
    # the 1-pixel plane, and its backward adds that window's gradient into the *next channel*.
    # We report the same index, but send the gradient nowhere.
    x = torch.tensor([[[[1.5]], [[-0.3]]]], requires_grad=True)
    conf = {"kernel_size": (1, 2), "padding": (0, 1), "dilation": (1, 2)}
    y, indices = F.max_pool2d(x, return_indices=True, **conf)
    _, indices_ref = TF.max_pool2d(x, return_indices=True, **conf)
    assert torch.equal(indices, indices_ref)
    assert torch.equal(y, torch.full_like(y, -math.inf))
    (dx,) = torch.autograd.grad(y, x, torch.tensor([[[[0.5]], [[0.25]]]]))
    assert torch.equal(dx, torch.zeros_like(x))


@given(pool_args(dtype=st.just(torch.float64), regimes=("normal",)))
def test_max_pool_gradcheck_and_gradgradcheck(args):
    x, kernel, stride, padding, dilation, ceil_mode = args
    if x.numel() == 0:
        return
    # No ties: a tie makes the function non-differentiable, and finite differences see it.
    distinct = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0)).double().view(x.shape)
    x = (distinct / x.numel()).requires_grad_()
    # A dilated window can hold only padding; its output is -inf, where finite differences are NaN.
    assume(torch.isfinite(F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)).all())
    check_gradients(lambda t: F.max_pool2d(t, kernel, stride, padding, dilation, ceil_mode), [x])


def test_max_pool_accepts_integers_and_avg_pool_int64_like_torch():
    x = torch.randint(-50, 50, (2, 3, 5, 5))
    assert torch.equal(F.max_pool2d(x, 2, padding=1), TF.max_pool2d(x, 2, padding=1))
    # torch's average of int64 divides as integers, truncating toward zero: mirrored.
    for kwargs in ({}, {"padding": 1}, {"padding": 1, "count_include_pad": False}, {"divisor_override": 3}):
        assert torch.equal(F.avg_pool2d(x, 2, **kwargs), TF.avg_pool2d(x, 2, **kwargs)), kwargs


# --- average pooling ------------------------------------------------------------------------


def avg_pool_tolerances(x, kernel, conf) -> dict[str, Tol]:
    """y = Σ_window x / D and dx = Σ_windows dy / D: bounds from the same pools of |x| and |dy|."""
    xa = x.detach().double().abs().requires_grad_()
    ya = TF.avg_pool2d(xa, kernel, **conf)
    (dxa,) = torch.autograd.grad(ya, xa, upstream_gradient(ya.shape, x.dtype).double().abs())

    def biggest(t):
        return float(t.max()) if t.numel() else 0.0

    window = math.prod(kernel)
    return {
        "output": reduction_tol(x.dtype, window + 1, biggest(ya)),
        "input": reduction_tol(x.dtype, overlap(kernel, conf["stride"]) + 1, biggest(dxa)),
    }


@given(pool_args(dilation=False, regimes=("normal", "wide")), st.booleans(), st.none() | st.integers(1, 7))
def test_avg_pool_matches_torch(args, count_include_pad, divisor_override):
    x, kernel, stride, padding, _, ceil_mode = args
    conf = {
        "stride": stride,
        "padding": padding,
        "ceil_mode": ceil_mode,
        "count_include_pad": count_include_pad,
        "divisor_override": divisor_override,
    }
    assert_same_as_torch(
        lambda x: F.avg_pool2d(x, kernel, **conf),
        lambda x: TF.avg_pool2d(x, kernel, **conf),
        {"input": x},
        tol=avg_pool_tolerances(x, kernel, conf),
    )


@given(pool_args(dilation=False, dtype=st.just(torch.float64), regimes=("normal",)), st.booleans())
def test_avg_pool_gradcheck_and_gradgradcheck(args, count_include_pad):
    x, kernel, stride, padding, _, ceil_mode = args
    if x.numel() == 0:
        return
    x = x.detach().clone().requires_grad_()
    check_gradients(lambda t: F.avg_pool2d(t, kernel, stride, padding, ceil_mode, count_include_pad), [x])


def test_count_include_pad_decides_whether_zero_padding_dilutes_the_mean():
    x = torch.ones(1, 1, 2, 2)
    assert F.avg_pool2d(x, 2, padding=1, count_include_pad=True)[0, 0, 0, 0] == 0.25  # 1 of 4 real
    assert F.avg_pool2d(x, 2, padding=1, count_include_pad=False)[0, 0, 0, 0] == 1.0
    assert F.avg_pool2d(x, 2, padding=1, divisor_override=1)[0, 0, 0, 0] == 1.0


def test_ceil_mode_keeps_the_last_partial_window():
    x = torch.arange(25.0).view(1, 1, 5, 5)
    assert F.max_pool2d(x, 2).shape[-1] == 2  # ⌊(5 − 2)/2⌋ + 1: the last column is dropped
    assert F.max_pool2d(x, 2, ceil_mode=True).shape[-1] == 3  # ⌈(5 − 2)/2⌉ + 1: kept
    assert F.max_pool2d(x, 2, ceil_mode=True)[0, 0, 0, 2] == x[0, 0, 1, 4]
    # ...but a window may not start in the right padding: ⌈(5 + 2 − 2)/2⌉ + 1 = 4 would, so 3.
    assert F.max_pool2d(x, 2, padding=1, ceil_mode=True).shape[-1] == 3


# --- adaptive average pooling ---------------------------------------------------------------


@st.composite
def adaptive_args(draw, dtype=dtypes(bf16=True), regimes=("normal", "wide")):
    dtype = draw(dtype)
    hw = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    n = draw(st.integers(0, 3))
    shape = (draw(st.integers(1, 3)), *hw) if draw(st.booleans()) else (n, draw(st.integers(1, 3)), *hw)
    x = draw(layouts(draw(values(shape, dtype, regimes=regimes)))).requires_grad_()
    size = st.integers(1, 11)
    output_size = draw(size | st.tuples(size | st.none(), size | st.none()))
    return x, output_size


@given(adaptive_args())
def test_adaptive_avg_pool_matches_torch(args):
    x, output_size = args
    xa = x.detach().double().abs().requires_grad_()
    ya = TF.adaptive_avg_pool2d(xa, output_size)
    (dxa,) = torch.autograd.grad(ya, xa, upstream_gradient(ya.shape, x.dtype).double().abs())
    h, w = x.shape[-2:]
    oh, ow = ya.shape[-2:]
    window = (math.ceil(h / oh) + 1) * (math.ceil(w / ow) + 1)  # the widest window
    covering = (math.ceil(oh / h) + 1) * (math.ceil(ow / w) + 1)  # windows over one pixel
    biggest = [float(t.max()) if t.numel() else 0.0 for t in (ya, dxa)]
    assert_same_as_torch(
        lambda x: F.adaptive_avg_pool2d(x, output_size),
        lambda x: TF.adaptive_avg_pool2d(x, output_size),
        {"input": x},
        # +2: the two matmuls and the 1/|window| factor round on their own
        tol={
            "output": reduction_tol(x.dtype, window + 2, biggest[0]),
            "input": reduction_tol(x.dtype, covering + 2, biggest[1]),
        },
    )


@given(adaptive_args(dtype=st.just(torch.float64), regimes=("normal",)))
def test_adaptive_avg_pool_gradcheck_and_gradgradcheck(args):
    x, output_size = args
    if x.numel() == 0:
        return
    check_gradients(lambda t: F.adaptive_avg_pool2d(t, output_size), [x.detach().clone().requires_grad_()])


def test_global_average_pooling_accepts_any_input_size():
    pool = nn.AdaptiveAvgPool2d(1)
    for size in [(7, 7), (32, 48), (1, 3)]:
        x = torch.randn(2, 5, *size, dtype=torch.float64)
        y = pool(x)
        assert y.shape == (2, 5, 1, 1)
        torch.testing.assert_close(y, x.mean((2, 3), keepdim=True))


def test_adaptive_windows_overlap_when_they_do_not_divide():
    # 5 rows into 3: windows ⌊i·5/3⌋ .. ⌈(i+1)·5/3⌉ − 1 = rows 0-1, 1-3, 3-4.
    x = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0], dtype=torch.float64).view(1, 5, 1)
    assert F.adaptive_avg_pool2d(x, (3, 1)).flatten().tolist() == pytest.approx([1.5, 14.0 / 3, 12.0], rel=1e-15)


# --- bad arguments --------------------------------------------------------------------------

BAD_POOL = {
    "padding beyond half the kernel": {"kernel_size": 3, "padding": 2},
    "zero stride": {"kernel_size": 2, "stride": 0},
    "negative padding": {"kernel_size": 2, "padding": -1},
    "kernel larger than input": {"kernel_size": 9},
    "zero kernel": {"kernel_size": 0},
}


@given(st.sampled_from(sorted(BAD_POOL)), st.sampled_from(["max", "avg"]), st.integers(0, 2), st.integers(5, 8))
def test_pool_bad_arguments_raise_like_torch(case, pool, n, size):
    x = torch.randn(n, 3, size, size)
    ours, theirs = (F.max_pool2d, TF.max_pool2d) if pool == "max" else (F.avg_pool2d, TF.avg_pool2d)
    assert_raises_like_torch(lambda: ours(x, **BAD_POOL[case]), lambda: theirs(x, **BAD_POOL[case]))


@pytest.mark.parametrize(
    ("call", "args"),
    [
        pytest.param("max_pool2d", (torch.randn(5, 5), 2), id="max-2d-input"),
        pytest.param("max_pool2d", (torch.randn(2, 0, 5, 5), 2), id="max-zero-channels"),
        pytest.param("max_pool2d", (torch.randn(1, 1, 5, 5), 2, None, 0, 0), id="max-zero-dilation"),
        pytest.param("avg_pool2d", (torch.randn(1, 1, 4, 4), 2, None, 0, False, True, 0), id="avg-zero-divisor"),
        pytest.param("avg_pool2d", (torch.arange(16, dtype=torch.int32).view(1, 1, 4, 4), 2), id="avg-int32"),
        pytest.param("adaptive_avg_pool2d", (torch.randn(2, 3, 5, 5), -1), id="adaptive-negative"),
        pytest.param("adaptive_avg_pool2d", (torch.randn(2, 3, 0, 4), 2), id="adaptive-empty-plane"),
        pytest.param("adaptive_avg_pool2d", (torch.randn(5, 5), 2), id="adaptive-2d-input"),
        pytest.param("adaptive_avg_pool2d", (torch.randn(2, 3, 5, 5), (1, 2, 3)), id="adaptive-three-sizes"),
        pytest.param("adaptive_avg_pool2d", (torch.randn(2, 3, 5, 5), None), id="adaptive-bare-none"),
    ],
)
def test_pool_bad_inputs_raise_like_torch(call, args):
    assert_raises_like_torch(lambda: getattr(F, call)(*args), lambda: getattr(TF, call)(*args))


# --- modules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "args", "kwargs"),
    [
        ("MaxPool2d", (2,), {}),
        ("MaxPool2d", (3, 2, 1), {"dilation": 1, "ceil_mode": True}),
        ("MaxPool2d", ((2, 3),), {"stride": (1, 2), "return_indices": True}),
        ("AvgPool2d", (3, 2, 1), {}),
        ("AvgPool2d", (2,), {"ceil_mode": True, "count_include_pad": False, "divisor_override": 3}),
        ("AdaptiveAvgPool2d", ((None, 3),), {}),
        ("AdaptiveAvgPool2d", (1,), {}),
    ],
)
def test_modules_match_torch(cls, args, kwargs):
    ours, theirs = getattr(nn, cls)(*args, **kwargs), getattr(torch.nn, cls)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    assert constructor_signature(type(ours)) == constructor_signature(type(theirs))
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    a, b = ours(x), theirs(x)
    if kwargs.get("return_indices"):
        assert torch.equal(a[1], b[1])
        a, b = a[0], b[0]
    assert_close(a, b, Tol(1e-14, 1e-14), "output")
