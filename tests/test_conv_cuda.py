"""The CUDA conv2d kernel ladder (csrc/cuda/conv_*.cu): every rung against torch in float64.

Like tests/test_norm_act_cuda.py, every test needs a CUDA device and is skipped without one, unless
``MINITORCH_CUDA_TEST_DEVICE=emu``: then the same properties and tolerances check the CUDA kernels
compiled for the CPU on the CUDA emulator (``torch.ops.minitorch_nn_emu``, csrc/emu/), outputs and
workspaces poisoned (NaN / 0xFF) so an element a kernel does not write fails the comparison.
``MINITORCH_CUDA_EMU_VARIANT`` picks the build (plain, capped, asan, tsan); .ci/cuda_emu.sh runs them.

The oracle is torch's convolution in float64 on the same (already rounded) inputs, its result
rounded to the dtype under test. Tolerances are test_conv_kernels.conv_act_tolerances': the
convolution's reduction bound γ_k·Σ|terms| with every Σ|terms| computed exactly, the activation's
Lipschitz constants on top. For float16 and bfloat16 every sum runs in float32 (γ_k of float32)
and the result is rounded once (2·u of the dtype, both sides rounding); the activation and its
derivative are computed in float32 (pointwise_tol's 32 float32 ulps). The backward rounds z and
dz = dy·f'(z) to the dtype before the adjoint sums: one more u of the dtype on each term, inside
reduction_tol's 2·u·Σ|terms| (the oracle rounds once, at the end).
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minitorch_nn.kernels as K
from minitorch_nn.functional.conv import batched_conv_args

from .compare import assert_same_as_torch
from .strategies import values
from .test_conv import conv_args
from .test_conv_kernels import conv_act_tolerances
from .test_norm_act import TORCH_ACT
from .test_norm_act_cuda import DEV, EMULATED, MODE, ON_GPU, emulator_build

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(MODE == "cpu", reason="the CUDA conv ladder has no CPU-op mode (test_conv_kernels is that)"),
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(not K.AVAILABLE, reason=f"compiled ops unavailable: {K.UNAVAILABLE_REASON}"),
]

RUNGS = ("direct", "implicit", "mma")
# The property over any convolution: rung 3 takes only some (its own property below), so 'auto'.
GENERAL = ("direct", "implicit", "auto")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
ops = torch.ops.minitorch_nn  # minitorch_nn_emu in emulated mode (set by the fixture)


@pytest.fixture(scope="module", autouse=True)
def _emulated_ops():
    global ops
    if EMULATED:
        ops = emulator_build().load(os.environ.get("MINITORCH_CUDA_EMU_VARIANT", "plain"))


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, activation="none", algorithm="auto"):
    """K.conv2d on the op namespace under test (the same argument normalisation)."""
    x4, stride_, padding_, dilation_ = batched_conv_args(x, w, stride, padding, dilation)
    y = ops.conv2d(x4, w, b, list(stride_), list(padding_), list(dilation_), groups, activation, algorithm)
    return y if x.dim() == 4 else y.squeeze(0)


def on_device(t):
    return None if t is None else t.detach().to(DEV).requires_grad_(t.requires_grad)


def oracle(activation, conf):
    """torch's conv and activation in float64, rounded to the input's dtype."""
    act = TORCH_ACT[activation]

    def run(x, w, b):
        b64 = None if b is None else b.double()
        return act(TF.conv2d(x.double(), w.double(), b64, **conf)).to(x.dtype)

    return run


def check_rung(x, w, b, conf, activation, algorithm):
    x4 = x if x.dim() == 4 else x.unsqueeze(0)
    tol = conv_act_tolerances(x4, w, b, conf, activation)
    x, w, b = on_device(x), on_device(w), on_device(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'same' with an even span pads asymmetrically; every side warns
        assert_same_as_torch(
            lambda x, w, b: conv2d(x, w, b, **conf, activation=activation, algorithm=algorithm),
            oracle(activation, conf),
            {"input": x, "weight": w, "bias": b},
            tol=tol,
        )


@pytest.mark.parametrize("algorithm", GENERAL)
@settings(max_examples=max(10, settings.default.max_examples), deadline=None)
@given(data=st.data())
def test_every_rung_matches_torch_in_float64(algorithm, data):
    x, w, b, conf = data.draw(conv_args(dtype=st.sampled_from(DTYPES)))
    if x.dtype == torch.float16:
        # Where the pre-activation overflows float16, the output is inf on both sides, and the
        # backward's z (stored in float16, as torch's float16 eager stores it) is inf, where f'
        # is inf·0 for GELU: the float64 oracle has no such value to compare with.
        z = TF.conv2d(x.detach().double(), w.detach().double(), None if b is None else b.detach().double(), **conf)
        assume(not z.numel() or z.abs().max() < torch.finfo(torch.float16).max)
    check_rung(x, w, b, conf, data.draw(st.sampled_from(K.ACTIVATIONS)), algorithm)


@st.composite
def tensor_core_args(draw):
    """Convolutions rung 3 takes: float16 / bfloat16, channels_last, C and O multiples of 8, groups 1."""
    dtype = draw(st.sampled_from((torch.float16, torch.bfloat16)))
    c, o = 8 * draw(st.integers(1, 3)), 8 * draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    spans = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    h = draw(st.integers(max(1, spans[0] - 2 * padding[0]), spans[0] + 6))
    w_ = draw(st.integers(max(1, spans[1] - 2 * padding[1]), spans[1] + 6))
    n = draw(st.integers(1, 2))
    cl = torch.channels_last
    x = draw(values((n, c, h, w_), dtype, regimes=("normal",))).contiguous(memory_format=cl).requires_grad_()
    weight = draw(values((o, c, kh, kw), dtype, regimes=("normal",))).contiguous(memory_format=cl).requires_grad_()
    bias = draw(st.none() | values((o,), dtype, regimes=("normal",)))
    conf = {"stride": stride, "padding": padding, "dilation": dilation, "groups": 1}
    return x, weight, None if bias is None else bias.requires_grad_(), conf


@settings(max_examples=max(10, settings.default.max_examples), deadline=None)
@given(args=tensor_core_args(), activation=st.sampled_from(K.ACTIVATIONS))
def test_the_tensor_core_rung_runs_and_matches_torch_where_it_applies(args, activation):
    x, w, b, conf = args  # algorithm='mma' raises where rung 3 cannot run: no silent fallback here
    check_rung(x, w, b, conf, activation, "mma")


def test_mma_refuses_what_it_cannot_run_and_auto_runs_rung_2_instead():
    x, w = torch.randn(1, 4, 5, 5, device=DEV), torch.randn(8, 4, 3, 3, device=DEV)  # float32, NCHW
    with pytest.raises(ValueError, match="algorithm='mma' needs float16 or bfloat16"):
        conv2d(x, w, algorithm="mma")
    half = x.half().contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="channels a multiple of 8"):  # C = 4
        conv2d(half, w.half().contiguous(memory_format=torch.channels_last), algorithm="mma")
    y = conv2d(x, w, algorithm="auto")
    torch.testing.assert_close(y.cpu(), TF.conv2d(x.cpu(), w.cpu()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("algorithm", GENERAL)
@pytest.mark.parametrize(
    ("n", "c", "h", "w", "o", "k", "stride", "padding", "groups"),
    [
        (2, 3, 9, 9, 5, 9, 1, 0, 1),  # kernel as large as the input: a 1x1 output
        (3, 7, 5, 6, 70, 1, 1, 0, 1),  # 1x1, more output channels than a tile (64)
        (1, 13, 6, 5, 3, 2, 2, 1, 1),  # even kernel, strided, padded
        (2, 6, 11, 12, 9, 3, 2, 1, 3),  # groups
        (2, 8, 9, 7, 8, 3, 1, 1, 8),  # depthwise
        (4, 2, 13, 11, 4, 3, 1, 1, 1),  # more output pixels than a tile: several row tiles
    ],
)
def test_odd_shapes_match_torch(algorithm, n, c, h, w, o, k, stride, padding, groups):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(o, c // groups, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(o, generator=g, dtype=torch.float64, requires_grad=True)
    conf = {"stride": stride, "padding": padding, "dilation": 1, "groups": groups}
    check_rung(x, wt, b, conf, "silu", algorithm)


def test_a_long_weight_gradient_reduction_is_split_and_added_in_order():
    # N·OH·OW = 2·40·40 = 3200 > 1024 (the shortest slice): the weight gradient runs in slices
    # whose partial sums a second kernel adds; float64 so the bound is tight.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 40, 40, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    check_rung(x, w, None, {"stride": 1, "padding": 1, "dilation": 1, "groups": 1}, "none", "implicit")


# The weight gradient's split under non-default tunings (csrc/cuda/tuning.h): N·OH·OW = 3200 values
# to reduce. Many short slices (span 16, the tile's depth), one slice (no workspace, no second kernel),
# and slices of 1072 (3200/3 rounded up to the tile's depth: the last one shorter).
SPLIT_TUNINGS = {
    "short slices": {"conv_min_span": 16, "conv_target_blocks": 65535},
    "one slice": {"conv_target_blocks": 1},
    "uneven slices": {"conv_min_span": 1100, "conv_target_blocks": 65535},
}


@pytest.mark.parametrize("name", SPLIT_TUNINGS)
def test_the_weight_gradient_matches_torch_under_non_default_split_tunings(name):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 40, 40, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    with K.cuda_tuning(ops, **SPLIT_TUNINGS[name]):
        check_rung(x, w, b, {"stride": 1, "padding": 1, "dilation": 1, "groups": 1}, "silu", "implicit")


@pytest.mark.parametrize("algorithm", GENERAL)
def test_an_empty_batch_gives_torchs_shape_and_gradients(algorithm):
    x = torch.randn(0, 4, 5, 5, device=DEV, requires_grad=True)
    w = torch.randn(8, 4, 1, 3, device=DEV, requires_grad=True)
    b = torch.randn(8, device=DEV, requires_grad=True)
    ours = conv2d(x, w, b, padding=(1, 1), activation="relu", algorithm=algorithm)
    theirs = TF.relu(TF.conv2d(x, w, b, padding=(1, 1)))
    torch.testing.assert_close(ours, theirs)
    grads = zip(torch.autograd.grad(ours.sum(), (x, w, b)), torch.autograd.grad(theirs.sum(), (x, w, b)), strict=True)
    for a, e in grads:
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("algorithm", GENERAL)
def test_no_input_channels_leaves_the_activation_of_the_bias(algorithm):
    # Every sum is empty: y = f(b) at every pixel, as the CPU op and the definition give. (torch
    # returns a tensor of 0 output channels here instead; we keep the definition's answer.)
    x = torch.randn(2, 0, 5, 5, device=DEV, requires_grad=True)
    w = torch.randn(8, 0, 1, 3, device=DEV, requires_grad=True)
    b = torch.randn(8, device=DEV, requires_grad=True)
    y = conv2d(x, w, b, padding=(1, 1), activation="relu", algorithm=algorithm)
    assert y.shape == (2, 8, 7, 5)
    torch.testing.assert_close(y, TF.relu(b).view(1, 8, 1, 1).expand(2, 8, 7, 5))
    dx, dw, db = torch.autograd.grad(y.sum(), (x, w, b))
    assert dx.shape == x.shape
    assert dw.shape == w.shape
    torch.testing.assert_close(db, (b > 0).to(b.dtype) * 2 * 7 * 5)


@pytest.mark.parametrize("algorithm", GENERAL)
def test_layouts_come_back_as_torch_returns_them(algorithm):
    for fx in (torch.contiguous_format, torch.channels_last):
        for fw in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(2, 8, 7, 6, device=DEV).contiguous(memory_format=fx).requires_grad_()
            w = torch.randn(16, 8, 3, 3, device=DEV).contiguous(memory_format=fw).requires_grad_()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ours = conv2d(x, w, padding=1, algorithm=algorithm)
            theirs = TF.conv2d(x, w, padding=1)
            assert ours.stride() == theirs.stride()
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
            dx, dw = torch.autograd.grad(ours, (x, w), torch.ones_like(ours))
            tx, tw = torch.autograd.grad(theirs, (x, w), torch.ones_like(theirs))
            assert dx.stride() == tx.stride()
            assert dw.stride() == tw.stride()
            torch.testing.assert_close(dx, tx, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(dw, tw, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("algorithm", RUNGS)
def test_results_are_bitwise_repeatable(algorithm):
    # No atomics: every sum runs in a fixed order whatever order the blocks and threads run in
    # (the emulator's MTNN_EMU_ORDER=random changes that order from run to run).
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 9, 11, generator=g).to(DEV).contiguous(memory_format=torch.channels_last)
    w = torch.randn(16, 8, 3, 3, generator=g).to(DEV).contiguous(memory_format=torch.channels_last)
    b = torch.randn(16, generator=g).to(DEV)
    x, w, b = (t.to(torch.bfloat16).requires_grad_() for t in (x, w, b))

    def run():
        y = conv2d(x, w, b, padding=1, activation="gelu", algorithm=algorithm)
        return (y, *torch.autograd.grad(y, (x, w, b), torch.ones_like(y)))

    for first, second in zip(run(), run(), strict=True):
        assert torch.equal(first, second)


@pytest.mark.parametrize("algorithm", ["direct", "implicit"])
@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_gradcheck_in_float64(algorithm, activation):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64).to(DEV).requires_grad_()
    w = torch.randn(6, 2, 3, 2, generator=g, dtype=torch.float64).to(DEV).requires_grad_()
    b = torch.randn(6, generator=g, dtype=torch.float64).to(DEV).requires_grad_()

    def fn(x, w, b):
        return conv2d(
            x,
            w,
            b,
            stride=(2, 1),
            padding=1,
            groups=2,
            activation=activation,
            algorithm=algorithm,
        )

    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_opcheck_passes_for_both_ops():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8, 6, 5, generator=g).to(DEV).requires_grad_()
    w = torch.randn(8, 8, 3, 3, generator=g).to(DEV).requires_grad_()
    b = torch.randn(8, generator=g).to(DEV)
    conf = ([1, 1], [1, 1, 1, 1], [1, 1], 1, "relu", "implicit")
    torch.library.opcheck(ops.conv2d, (x, w, b, *conf))
    dy = torch.randn(2, 8, 6, 5, generator=g).to(DEV)
    torch.library.opcheck(ops.conv2d_backward, (dy, x.detach(), w.detach(), b, *conf, [True, True, True]))


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (
            lambda: conv2d(torch.ones(1, 2, 4, 4, dtype=torch.int32), torch.ones(3, 2, 1, 1, dtype=torch.int32)),
            NotImplementedError,
        ),
        (lambda: conv2d(torch.ones(1, 2, 4, 4), torch.ones(3, 3, 1, 1)), RuntimeError),  # channels
        (lambda: conv2d(torch.ones(1, 2, 2, 2), torch.ones(3, 2, 3, 3)), RuntimeError),  # kernel too large
        (lambda: conv2d(torch.ones(1, 2, 4, 4), torch.ones(3, 2, 1, 1), stride=0), RuntimeError),
        (lambda: conv2d(torch.ones(1, 2, 4, 4), torch.ones(3, 2, 1, 1), algorithm="gemm"), ValueError),
        (lambda: conv2d(torch.ones(1, 2, 4, 4), torch.ones(3, 2, 1, 1), activation="tanh"), ValueError),
    ],
)
def test_bad_arguments_raise_torchs_exception_type(make, error):
    with pytest.raises(error):
        make()
