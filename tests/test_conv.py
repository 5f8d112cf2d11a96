"""conv2d and Conv2d: values and gradients against torch (oneDNN), argument errors, the module."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import minitorch_nn.functional as F
import minitorch_nn.nn as nn

from .compare import (
    Tol,
    assert_raises_like_torch,
    assert_same_as_torch,
    check_gradients,
    constructor_signature,
    reduction_tol,
    upstream_gradient,
)
from .strategies import dtypes, layouts, values

REGIMES = ("normal", "wide")  # sums of 1e150-sized products overflow by design


def conv_abs_sums(x, w, b, conf, gather_copies: int = 1) -> dict[str, tuple[int, float]]:
    """For the output and each gradient: (reduction length k, largest absolute-value sum S).

    Every output of a convolution is a dot product, so its error is at most γ_k · Σ|terms|.
    The sums Σ|terms| are themselves convolutions of absolute values, which torch computes
    here in float64 (the forward for y, its adjoints for dx and dW):

        y:  k = (C/g)·kh·kw + 1     S = max conv(|x|, |W|) + |b|
        dx: k = (O/g)·kh·kw         S = max conv_transposed(|dy|, |W|)
        dW: k = N·H'·W'             S = max Σ_n |dy| ⋆ |x|
        db: k = N·H'·W'             S = max Σ |dy|

    ``gather_copies``: when x was padded by copying its pixels (reflect, replicate, circular),
    a pixel's gradient also sums those of its copies: k and S grow by that factor.
    """
    xa = x.detach().double().abs().requires_grad_()
    wa = w.detach().double().abs().requires_grad_()
    ya = TF.conv2d(xa, wa, None, **conf)
    dya = upstream_gradient(ya.shape, x.dtype).double().abs()
    dxa, dwa = torch.autograd.grad(ya, (xa, wa), dya)
    o, c_per_group, kh, kw = w.shape
    positions = ya.numel() // max(o, 1)  # N·H'·W'

    def biggest(t):
        return float(t.detach().max()) if t.numel() else 0.0

    bias = biggest(b.detach().double().abs()) if b is not None else 0.0
    sums = {
        "output": (c_per_group * kh * kw + 1, biggest(ya) + bias),
        "input": (gather_copies * (o // conf["groups"]) * kh * kw, gather_copies * biggest(dxa)),
        "weight": (positions, biggest(dwa)),
    }
    if b is not None:
        sums["bias"] = (positions, biggest(dya.sum_to_size(1, o, 1, 1)) if dya.numel() else 0.0)
    return sums


def conv_tolerances(x, w, b, conf, gather_copies: int = 1) -> dict[str, Tol]:
    """Reduction bounds (compare.py) with each output's absolute-value sum computed exactly (conv_abs_sums)."""
    return {name: reduction_tol(x.dtype, k, s) for name, (k, s) in conv_abs_sums(x, w, b, conf, gather_copies).items()}


@st.composite
def conv_args(draw, dtype=dtypes(bf16=True), regimes=REGIMES, max_batch=3, min_size=0):
    """(x, W, b, conf) valid by construction: sizes from the kernel's span and the padding."""
    dtype = draw(dtype)
    groups = draw(st.integers(1, 3))
    c, o = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.sampled_from(["int", "pair", "valid", "same"] if stride == (1, 1) else ["int", "pair", "valid"]))
    if padding == "int":
        padding = draw(st.integers(0, 2))
    elif padding == "pair":
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    pads = F.conv.resolve_padding(padding, (kh, kw), stride, dilation) if padding != "same" else (0, 0, 0, 0)
    spans = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    h = draw(st.integers(max(1, spans[0] - pads[0] - pads[1]), spans[0] + 4))
    w_ = draw(st.integers(max(1, spans[1] - pads[2] - pads[3]), spans[1] + 4))
    n = draw(st.integers(min_size, max_batch))
    unbatched = draw(st.booleans()) and n == 1
    x_shape = (c, h, w_) if unbatched else (n, c, h, w_)
    x = draw(layouts(draw(values(x_shape, dtype, regimes=regimes)))).requires_grad_()
    weight = draw(layouts(draw(values((o, c // groups, kh, kw), dtype, regimes=regimes)))).requires_grad_()
    bias = draw(st.none() | values((o,), dtype, regimes=regimes))
    conf = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return x, weight, None if bias is None else bias.requires_grad_(), conf


@given(conv_args())
def test_matches_torch(args):
    x, w, b, conf = args
    x4 = x if x.dim() == 4 else x.unsqueeze(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'same' with an even span pads asymmetrically; both sides warn
        assert_same_as_torch(
            lambda x, w, b: F.conv2d(x, w, b, **conf),
            lambda x, w, b: TF.conv2d(x, w, b, **conf),
            {"input": x, "weight": w, "bias": b},
            tol=conv_tolerances(x4, w, b, conf),
        )


@given(conv_args(dtype=st.just(torch.float64), regimes=("normal",), max_batch=2, min_size=1))
def test_gradcheck_and_gradgradcheck(args):
    x, w, b, conf = args
    inputs = [t.detach().clone().requires_grad_() for t in (x, w, b) if t is not None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_gradients(lambda *t: F.conv2d(*t, **conf), inputs)


def test_channels_last_input_and_weight():
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    conf = {"stride": (1, 1), "padding": 1, "dilation": (1, 1), "groups": 1}
    assert_same_as_torch(
        lambda x, w: F.conv2d(x, w, None, **conf),
        lambda x, w: TF.conv2d(x, w, None, **conf),
        {"input": x, "weight": w},
        tol=conv_tolerances(x, w, None, conf),
    )


# --- bad arguments: one mutation of a valid configuration at a time -------------------------

BAD = {
    "non-positive stride": lambda x, w, k: dict(k, stride=0),
    "negative stride": lambda x, w, k: dict(k, stride=(1, -1)),
    "negative padding": lambda x, w, k: dict(k, padding=-1),
    "dilation below 1": lambda x, w, k: dict(k, dilation=0),
    "groups not dividing channels": lambda x, w, k: dict(k, groups=5),
    "non-positive groups": lambda x, w, k: dict(k, groups=0),
    "same with stride": lambda x, w, k: dict(k, padding="same", stride=2),
    "unknown padding string": lambda x, w, k: dict(k, padding="full"),
    "three strides": lambda x, w, k: dict(k, stride=(1, 1, 1)),
}


@given(st.sampled_from(sorted(BAD)), st.integers(1, 3), st.integers(1, 3))
def test_bad_arguments_raise_like_torch(mutation, n, k):
    x, w = torch.randn(n, 4, 6, 6), torch.randn(6, 4, k, k)
    conf = BAD[mutation](x, w, {"stride": 1, "padding": 0, "dilation": 1, "groups": 1})
    assert_raises_like_torch(lambda: F.conv2d(x, w, None, **conf), lambda: TF.conv2d(x, w, None, **conf))


@pytest.mark.parametrize(
    ("x", "w", "b", "conf"),
    [
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3), None, {}, id="3d-weight"),
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 4, 7, 7), None, {}, id="kernel-larger-than-input"),
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3), None, {"dilation": 3}, id="dilated-too-wide"),
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3).double(), None, {}, id="dtype-mismatch"),
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 3, 3, 3), None, {}, id="in-channels"),
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(5, 2, 3, 3), None, {"groups": 2}, id="out-not-divisible"),
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3), torch.randn(5), {}, id="bias-size"),
        pytest.param(torch.randn(5, 5), torch.randn(6, 4, 3, 3), None, {}, id="2d-input"),
        pytest.param(torch.randn(1, 2, 4, 5, 5), torch.randn(6, 4, 3, 3), None, {}, id="5d-input"),
    ],
)
def test_bad_shapes_raise_like_torch(x, w, b, conf):
    assert_raises_like_torch(lambda: F.conv2d(x, w, b, **conf), lambda: TF.conv2d(x, w, b, **conf))


# --- named lessons -------------------------------------------------------------------------


def receptive_field(net, size=11):
    """Which input pixels the centre output depends on: the support of its input gradient."""
    x = torch.randn(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    y = net(x)
    (g,) = torch.autograd.grad(y[0, 0, y.shape[2] // 2, y.shape[3] // 2], x)
    rows, cols = (g[0, 0] != 0).nonzero(as_tuple=True)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_two_3x3_convolutions_see_what_one_5x5_sees_with_fewer_weights():
    torch.manual_seed(0)
    w3a, w3b = torch.randn(1, 1, 3, 3, dtype=torch.float64), torch.randn(1, 1, 3, 3, dtype=torch.float64)
    w5 = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    assert receptive_field(lambda x: F.conv2d(F.relu(F.conv2d(x, w3a)), w3b)) == (5, 5)
    assert receptive_field(lambda x: F.conv2d(x, w5)) == (5, 5)
    assert w3a.numel() + w3b.numel() == 18 < w5.numel() == 25
    # Dilation widens the field without more weights: taps 2 apart span 5 pixels.
    assert receptive_field(lambda x: F.conv2d(x, w3a, dilation=2)) == (5, 5)


def test_padding_1_keeps_the_size_of_a_3x3_convolution():
    for size in (5, 8, 13):
        y = F.conv2d(torch.randn(1, 2, size, size), torch.randn(4, 2, 3, 3), padding=1)
        assert y.shape[-2:] == (size, size)  # (size + 2·1 − 3)/1 + 1 = size
    assert F.conv2d(torch.randn(1, 2, 8, 8), torch.randn(4, 2, 3, 3), padding=1, stride=2).shape[-2:] == (4, 4)


def test_1x1_convolution_is_a_linear_layer_applied_at_every_pixel():
    x, w, b = torch.randn(2, 6, 4, 5, dtype=torch.float64), torch.randn(3, 6, 1, 1, dtype=torch.float64), torch.randn(3)
    b = b.double()
    per_pixel = F.linear(x.permute(0, 2, 3, 1), w.view(3, 6), b).permute(0, 3, 1, 2)
    torch.testing.assert_close(F.conv2d(x, w, b), per_pixel)


def test_depthwise_convolution_filters_each_channel_on_its_own():
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64)
    y = F.conv2d(x, w, groups=3)
    for c in range(3):
        torch.testing.assert_close(y[:, c : c + 1], F.conv2d(x[:, c : c + 1], w[c : c + 1]))


# --- the module -----------------------------------------------------------------------------

MODULE_CONFIGS = [
    ((3, 6, 3), {}),
    ((4, 8, (3, 5)), {"stride": 2, "padding": (1, 2), "dilation": (2, 1), "groups": 2, "bias": False}),
    ((3, 6, 3), {"padding": "same", "padding_mode": "reflect"}),
    ((3, 6, (2, 4)), {"padding": "same", "padding_mode": "replicate"}),
    ((3, 3, 3), {"groups": 3, "padding": 2, "padding_mode": "circular"}),
    ((2, 4, 1), {"padding": "valid", "dtype": torch.float64}),
]


@pytest.mark.parametrize(("args", "kwargs"), MODULE_CONFIGS)
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_module_matches_torch(args, kwargs):
    torch.manual_seed(0)
    ours = nn.Conv2d(*args, **kwargs)
    torch.manual_seed(0)
    theirs = torch.nn.Conv2d(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key  # default init, bit for bit
    x = torch.randn(2, args[0], 7, 9, dtype=kwargs.get("dtype", torch.float32), requires_grad=True)
    # Bound the errors on the explicitly padded input (every mode is "pad, then convolve"):
    # a pixel copied into the padding k times also sums the gradients of its k copies.
    padding = F.conv.resolve_padding(ours.padding, ours.kernel_size, ours.stride, ours.dilation)
    padded = F.conv.pad2d_mode(x.detach(), padding, ours.padding_mode)
    ones = torch.ones_like(x, dtype=torch.float64, requires_grad=True)
    (copies,) = torch.autograd.grad(F.conv.pad2d_mode(ones, padding, ours.padding_mode).sum(), ones)
    conf = {"stride": ours.stride, "padding": 0, "dilation": ours.dilation, "groups": ours.groups}
    assert_same_as_torch(
        ours,
        theirs,
        {"input": x},
        tol=conv_tolerances(padded, theirs.weight, theirs.bias, conf, gather_copies=int(copies.max())),
        ours_params=dict(ours.named_parameters()),
        oracle_params=dict(theirs.named_parameters()),
    )


@pytest.mark.parametrize(("args", "kwargs"), MODULE_CONFIGS)
def test_module_constructor_matches_torch(args, kwargs):
    assert constructor_signature(nn.Conv2d) == constructor_signature(torch.nn.Conv2d)
    theirs = torch.nn.Conv2d(*args, **kwargs)
    ours = nn.Conv2d(*args, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    back = torch.nn.Conv2d(*args, **kwargs)
    back.load_state_dict(ours.state_dict())
    assert all(torch.equal(back.state_dict()[k], v) for k, v in theirs.state_dict().items())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"groups": 2},  # 3 input channels
        {"groups": 0},
        {"padding_mode": "mirror"},
        {"padding": "full"},
        {"padding": "same", "stride": 2},
    ],
)
def test_module_rejects_bad_arguments_like_torch(kwargs):
    assert_raises_like_torch(lambda: nn.Conv2d(3, 6, 3, **kwargs), lambda: torch.nn.Conv2d(3, 6, 3, **kwargs))


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_padding_larger_than_the_input_raises_like_torch(mode):
    x = torch.randn(1, 3, 4, 4)
    assert_raises_like_torch(
        lambda: nn.Conv2d(3, 6, 3, padding=5, padding_mode=mode)(x),
        lambda: torch.nn.Conv2d(3, 6, 3, padding=5, padding_mode=mode)(x),
    )
