"""The compiled conv2d kernel ladder (csrc/cpu/conv/): every rung against torch and the reference.

The rungs are backends of one test suite (as minitorch runs one suite over its backends): the
same Hypothesis property, with the same tolerances, checks each one's values and every gradient
against torch's convolution (oneDNN) and against our reference (im2col in Python). Then
``opcheck``, float64 ``gradcheck`` / ``gradgradcheck``, ``torch.compile``, layouts, repeatability,
bad input and the kernel-backed module.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import minitorch_nn.functional as F
import minitorch_nn.kernels as K
import minitorch_nn.nn as nn

from .compare import Tol, assert_raises_like_torch, assert_same_as_torch, pointwise_tol, reduction_tol
from .strategies import dtypes, layouts, values
from .test_conv import conv_abs_sums, conv_args

if not K.AVAILABLE and os.environ.get("MINITORCH_REQUIRE_EXTENSION") != "1":
    pytest.skip(f"minitorch_nn's compiled kernels are unavailable: {K.UNAVAILABLE_REASON}", allow_module_level=True)

from .test_norm_act import DERIVATIVE_BOUNDS, REFERENCE_ACT, TORCH_ACT

RUNGS = tuple(a for a in K.CPU_ALGORITHMS if a != "auto")
GENERAL_RUNGS = tuple(a for a in RUNGS if a != "depthwise")  # the rungs that take every conv
algorithms = pytest.mark.parametrize("algorithm", K.CPU_ALGORITHMS)
# One property per rung and activation would be slow; the activation is drawn instead, and each
# rung gets the profile's examples.
per_rung = settings(max_examples=max(10, settings.default.max_examples))


def conv_act_tolerances(x, w, b, conf, activation: str) -> dict[str, Tol]:
    """The conv's reduction bounds (test_conv.conv_abs_sums) with the activation's error on top.

    Output. y = f(z) with f Lipschitz: |f(z₁) − f(z₂)| ≤ L1·|z₁ − z₂| (L1 = sup|f'|,
    DERIVATIVE_BOUNDS), so the conv's bound on z scales by L1, and each side evaluates f with
    its own error e_f (``pointwise_tol``: 32 eps).

    Gradients. They are the conv's adjoints applied to dz = dy·f'(z) instead of dy. |dz| ≤ L1·|dy|
    scales the reductions' bounds by L1; and the two sides' f'(z) differ by at most
    L2·Δz + e_f' (L2 = sup|f''|, Δz the output bound of z), which the adjoint sums with the same
    absolute values S, adding (L2·Δz + 32 eps)·S. ReLU's f' jumps at 0: an output whose z lies
    within rounding of 0 could flip it, which the well-conditioned draws here do not produce.
    """
    sums = conv_abs_sums(x, w, b, conf)
    tol = {name: reduction_tol(x.dtype, k, s) for name, (k, s) in sums.items()}
    if activation == "none":
        return tol
    l1, l2 = DERIVATIVE_BOUNDS[activation]
    pt = pointwise_tol(x.dtype)
    out = tol["output"]
    dz_error = l2 * (out.atol + out.rtol * sums["output"][1]) + pt.atol
    result = {"output": Tol(rtol=out.rtol + pt.rtol, atol=l1 * out.atol + pt.atol)}
    for name, t in tol.items():
        if name != "output":
            result[name] = Tol(rtol=t.rtol, atol=l1 * t.atol + dz_error * sums[name][1])
    return result


@st.composite
def ladder_args(draw, algorithm: str):
    """(x, W, b, conf, activation) valid for ``algorithm``: any conv, or a depthwise one for 'depthwise'."""
    activation = draw(st.sampled_from(K.ACTIVATIONS))
    if algorithm != "depthwise":
        x, w, b, conf = draw(conv_args(dtype=dtypes()))
        return x, w, b, conf, activation
    dtype = draw(dtypes())
    c, m = draw(st.integers(2, 5)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 12))
    w_ = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 20))
    x = draw(layouts(draw(values((draw(st.integers(0, 2)), c, h, w_), dtype, regimes=("normal", "wide")))))
    weight = draw(values((c * m, 1, kh, kw), dtype, regimes=("normal", "wide")))
    bias = draw(st.none() | values((c * m,), dtype, regimes=("normal",)))
    conf = {"stride": stride, "padding": padding, "dilation": dilation, "groups": c}
    grad = [t.requires_grad_() for t in (x, weight) + ((bias,) if bias is not None else ())]
    return grad[0], grad[1], bias, conf, activation


@pytest.mark.parametrize("algorithm", RUNGS)
@per_rung
@given(data=st.data())
def test_every_rung_matches_torch_and_the_reference(algorithm, data):
    x, w, b, conf, activation = data.draw(ladder_args(algorithm))
    x4 = x if x.dim() == 4 else x.unsqueeze(0)
    tol = conv_act_tolerances(x4, w, b, conf, activation)
    ours = lambda x, w, b: K.conv2d(x, w, b, **conf, activation=activation, algorithm=algorithm)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'same' with an even span pads asymmetrically; every side warns
        for conv, act in ((TF.conv2d, TORCH_ACT[activation]), (F.conv2d, REFERENCE_ACT[activation])):
            assert_same_as_torch(
                ours,
                lambda x, w, b, conv=conv, act=act: act(conv(x, w, b, **conf)),
                {"input": x, "weight": w, "bias": b},
                tol=tol,
            )


@pytest.mark.parametrize("algorithm", GENERAL_RUNGS)
@pytest.mark.parametrize(
    ("n", "c", "h", "w", "o", "k", "stride", "padding"),
    [
        (1, 3, 9, 9, 5, 9, 1, 0),  # kernel as large as the input: a 1x1 output
        (2, 7, 5, 6, 11, 1, 1, 0),  # 1x1, prime channel counts: the no-im2col path
        (1, 13, 6, 5, 3, 2, 2, 1),  # even kernel, strided, padded
        (3, 2, 1, 1, 4, 1, 1, 0),  # 1x1 images
    ],
)
def test_odd_shapes_match_torch(algorithm, n, c, h, w, o, k, stride, padding):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(o, c, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(o, generator=g, dtype=torch.float64, requires_grad=True)
    conf = {"stride": stride, "padding": padding}
    assert_same_as_torch(
        lambda x, w, b: K.conv2d(x, w, b, **conf, algorithm=algorithm),
        lambda x, w, b: TF.conv2d(x, w, b, **conf),
        {"input": x, "weight": wt, "bias": b},
        tol=conv_act_tolerances(x, wt, b, {**conf, "dilation": 1, "groups": 1}, "none"),
    )


@algorithms
@pytest.mark.parametrize("shape", [(0, 4, 5, 5), (0, 4, 1, 3)])
def test_an_empty_batch_gives_torchs_shape_and_zero_gradients(algorithm, shape):
    x = torch.randn(shape, requires_grad=True)
    groups = 4 if algorithm == "depthwise" else 1
    w, b = torch.randn(8, 4 // groups, 1, 3, requires_grad=True), torch.randn(8, requires_grad=True)
    conf = {"padding": (1, 1), "groups": groups}
    ours, theirs = K.conv2d(x, w, b, **conf, algorithm=algorithm), TF.conv2d(x, w, b, **conf)
    assert ours.shape == theirs.shape
    grads = torch.autograd.grad(ours.sum(), (x, w, b))
    expected = torch.autograd.grad(theirs.sum(), (x, w, b))
    for a, e in zip(grads, expected, strict=True):
        assert torch.equal(a, e)


@pytest.mark.parametrize("algorithm", GENERAL_RUNGS)
def test_no_input_channels_leaves_the_activation_of_the_bias(algorithm):
    # Every sum over taps is empty: y = f(b) at every pixel, and db = Σ f'(b)·dy over the pixels.
    # (torch returns a tensor of 0 output channels here instead; we keep the definition's answer.)
    x = torch.randn(2, 0, 5, 5, requires_grad=True)
    w = torch.randn(8, 0, 1, 3, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    y = K.conv2d(x, w, b, padding=(1, 1), activation="relu", algorithm=algorithm)
    assert y.shape == (2, 8, 7, 5)
    torch.testing.assert_close(y, torch.relu(b).view(1, 8, 1, 1).expand(2, 8, 7, 5))
    dx, dw, db = torch.autograd.grad(y.sum(), (x, w, b))
    assert dx.shape == x.shape
    assert dw.shape == w.shape
    torch.testing.assert_close(db, (b > 0).to(b.dtype) * 2 * 7 * 5)


@algorithms
@pytest.mark.parametrize(
    ("input_format", "weight_format"),
    [
        (torch.contiguous_format, torch.contiguous_format),
        (torch.channels_last, torch.contiguous_format),
        (torch.contiguous_format, torch.channels_last),
        (torch.channels_last, torch.channels_last),
    ],
)
def test_output_and_gradients_come_back_in_the_layout_torch_returns(algorithm, input_format, weight_format):
    groups = 4 if algorithm == "depthwise" else 1
    x = torch.randn(2, 4, 7, 6).contiguous(memory_format=input_format).requires_grad_()
    w = torch.randn(8, 4 // groups, 3, 3).contiguous(memory_format=weight_format).requires_grad_()
    ours = K.conv2d(x, w, padding=1, groups=groups, algorithm=algorithm)
    theirs = TF.conv2d(x, w, padding=1, groups=groups)
    assert ours.stride() == theirs.stride()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    dx, dw = torch.autograd.grad(ours, (x, w), torch.ones_like(ours))
    assert dx.shape == x.shape
    assert dw.shape == w.shape


@algorithms
def test_results_are_bitwise_repeatable(algorithm):
    # Every sum runs in a fixed order at a fixed thread count, whichever thread ran which part.
    g = torch.Generator().manual_seed(2)
    c, groups = (16, 16) if algorithm == "depthwise" else (16, 1)
    x = torch.randn(4, c, 17, 19, generator=g, requires_grad=True)
    w = torch.randn(24 if groups == 1 else 16, c // groups, 3, 3, generator=g, requires_grad=True)
    b = torch.randn(w.shape[0], generator=g, requires_grad=True)

    def run():
        y = K.conv2d(x, w, b, padding=1, groups=groups, activation="silu", algorithm=algorithm)
        return (y, *torch.autograd.grad(y, (x, w, b), torch.ones_like(y)))

    for a, b_ in zip(run(), run(), strict=True):
        assert torch.equal(a, b_)


# --- opcheck, gradcheck, torch.compile ------------------------------------------------------


def sample_inputs(*, requires_grad: bool):
    """(op name, args) for both ops, over rungs, dtypes, layouts, groups and activations."""
    g = torch.Generator().manual_seed(0)

    def make(*shape, dtype=torch.float32, grad=requires_grad):
        return torch.randn(shape, generator=g, dtype=dtype).requires_grad_(grad)

    forward = [
        (make(2, 4, 7, 6), make(6, 4, 3, 3), make(6), [1, 1], [1, 1, 1, 1], [1, 1], 1, "relu", "direct"),
        (
            make(1, 6, 9, 8, dtype=torch.float64),
            make(4, 3, 2, 3, dtype=torch.float64),
            None,
            [2, 1],
            [0, 1, 2, 0],
            [1, 2],
            2,
            "gelu",
            "im2col",
        ),
        (
            make(2, 4, 5, 5).to(memory_format=torch.channels_last),
            make(8, 4, 1, 1),
            make(8),
            [1, 1],
            [0, 0, 0, 0],
            [1, 1],
            1,
            "none",
            "auto",
        ),
    ]
    forward += [(make(2, 3, 6, 6), make(5, 3, 3, 3), None, [1, 2], [1, 1, 0, 0], [1, 1], 1, "silu", a) for a in RUNGS]
    for args in forward:
        if args[-1] == "depthwise":
            continue
        yield "conv2d", args
    if requires_grad:
        return
    for args, mask in zip(forward, [[True, True, True], [False, True, False], [True, False, True]] * 3, strict=False):
        if args[-1] == "depthwise":
            continue
        out = torch.ops.minitorch_nn.conv2d(*args)
        yield "conv2d_backward", (torch.randn_like(out), *args, mask)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_passes_for_both_ops(requires_grad):
    checked = set()
    for name, args in sample_inputs(requires_grad=requires_grad):
        torch.library.opcheck(getattr(torch.ops.minitorch_nn, name).default, args)
        checked.add(name)
    assert checked == ({"conv2d"} if requires_grad else {"conv2d", "conv2d_backward"})


@pytest.mark.parametrize("algorithm", RUNGS)
@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_gradcheck_and_gradgradcheck_in_float64(algorithm, activation):
    # gradcheck: each rung's backward op is the Jacobian of its forward. gradgradcheck then checks
    # the backward op's own backward, which is one function for every rung (the reference's VJP,
    # registered once in kernels/conv.py): it runs on one rung per activation. On every rung it
    # repeated that check at ~10 s a case (most of the conv tests' time in CI).
    g = torch.Generator().manual_seed(3)
    groups = 3 if algorithm == "depthwise" else 1
    x = torch.randn(1, 3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3 if groups == 3 else 4, 3 // groups, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(w.shape[0], generator=g, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return K.conv2d(
            x, w, b, stride=(2, 1), padding=(1, 0), groups=groups, activation=activation, algorithm=algorithm
        )

    assert torch.autograd.gradcheck(fn, (x, w, b))
    if algorithm == "direct":
        assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_torch_compile_fullgraph_gives_the_eager_values_and_gradients():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, generator=g, requires_grad=True)
    b = torch.randn(5, generator=g, requires_grad=True)

    def fn(x, w, b):
        return K.conv2d(x, w, b, padding=1, activation="gelu")

    compiled = torch.compile(fn, fullgraph=True)
    eager_value, compiled_value = fn(x, w, b), compiled(x, w, b)
    # The compiled graph calls the same kernels on the same values: bitwise equal.
    assert torch.equal(eager_value, compiled_value)
    dy = torch.randn(eager_value.shape, generator=g)
    eager_grads = torch.autograd.grad(eager_value, (x, w, b), dy)
    compiled_grads = torch.autograd.grad(compiled_value, (x, w, b), dy)
    for a, c in zip(eager_grads, compiled_grads, strict=True):
        assert torch.equal(a, c)


# --- bad input -------------------------------------------------------------------------------

BAD = {
    "non-positive stride": {"stride": 0},
    "negative padding": {"padding": -1},
    "dilation below 1": {"dilation": 0},
    "groups not dividing channels": {"groups": 5},
    "non-positive groups": {"groups": 0},
    "same with stride": {"padding": "same", "stride": 2},
    "unknown padding string": {"padding": "full"},
}


@pytest.mark.parametrize("algorithm", GENERAL_RUNGS)
@pytest.mark.parametrize("mutation", sorted(BAD))
def test_bad_arguments_raise_like_torch(algorithm, mutation):
    x, w = torch.randn(2, 4, 6, 6), torch.randn(6, 4, 3, 3)
    conf = BAD[mutation]
    assert_raises_like_torch(
        lambda: K.conv2d(x, w, None, **conf, algorithm=algorithm), lambda: TF.conv2d(x, w, None, **conf)
    )


@pytest.mark.parametrize(
    ("x", "w", "b"),
    [
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3), None, id="3d-weight"),
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 4, 7, 7), None, id="kernel-larger-than-input"),
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 4, 0, 3), None, id="zero-size-kernel"),
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3).double(), None, id="dtype-mismatch"),
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 3, 3, 3), None, id="in-channels"),
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3), torch.randn(5), id="bias-size"),
        pytest.param(torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3), torch.randn(6).double(), id="bias-dtype"),
        pytest.param(torch.randn(2, 4, 0, 5), torch.randn(6, 4, 1, 1), None, id="zero-height-image"),
        pytest.param(torch.randn(5, 5), torch.randn(6, 4, 3, 3), None, id="2d-input"),
        pytest.param(torch.randn(1, 2, 4, 5, 5), torch.randn(6, 4, 3, 3), None, id="5d-input"),
    ],
)
def test_bad_shapes_raise_like_torch(x, w, b):
    assert_raises_like_torch(lambda: K.conv2d(x, w, b), lambda: TF.conv2d(x, w, b))


def test_the_op_itself_checks_its_arguments():
    # torch.compile and opcheck call the op directly, past the Python function's checks.
    x, w = torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3)
    with pytest.raises(RuntimeError, match="non-positive stride"):
        torch.ops.minitorch_nn.conv2d(x, w, None, [0, 1], [0, 0, 0, 0], [1, 1], 1, "none", "auto")
    with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
        torch.ops.minitorch_nn.conv2d(x[..., :2], w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1, "none", "auto")
    with pytest.raises(RuntimeError, match="grad_out of shape"):
        torch.ops.minitorch_nn.conv2d_backward(
            torch.randn(2, 6, 2, 2), x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1, "none", "auto", [True] * 3
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.int64])
def test_unsupported_dtypes_raise_not_implemented_naming_the_supported_ones(dtype):
    x, w = torch.ones(1, 2, 4, 4, dtype=dtype), torch.ones(3, 2, 3, 3, dtype=dtype)
    with pytest.raises(NotImplementedError, match="supports float32, float64 on cpu"):
        K.conv2d(x, w)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"activation": "tanh"}, "activation must be one of"), ({"algorithm": "winograd"}, "algorithm must be one of")],
)
def test_unknown_activation_or_algorithm_is_a_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        K.conv2d(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3), **kwargs)
    with pytest.raises(ValueError, match=match):
        K.Conv2dAct(2, 3, 3, **kwargs)


def test_the_depthwise_rung_refuses_a_conv_that_is_not_depthwise():
    if "depthwise" not in RUNGS:
        pytest.skip("no depthwise rung in this build")
    with pytest.raises(ValueError, match="groups == in_channels"):
        K.conv2d(torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3), groups=2, algorithm="depthwise")


# --- the module ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [torch.nn.Conv2d, nn.Conv2d])
def test_state_dict_moves_between_torch_reference_and_kernel_modules(source):
    torch.manual_seed(0)
    theirs = source(4, 6, 3, stride=2, padding=1, groups=2)
    ours = K.Conv2dAct(4, 6, 3, stride=2, padding=1, groups=2, activation="relu")
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(ours(x), torch.relu(theirs(x)), rtol=1e-5, atol=1e-5)
    back = source(4, 6, 3, stride=2, padding=1, groups=2)
    back.load_state_dict(ours.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), theirs.state_dict().values(), strict=True))


def test_module_initialises_like_torch_and_names_its_rung_in_repr():
    torch.manual_seed(0)
    theirs = torch.nn.Conv2d(3, 8, 5, padding="same", padding_mode="reflect")
    torch.manual_seed(0)
    ours = K.Conv2dAct(3, 8, 5, padding="same", padding_mode="reflect", algorithm="direct")
    assert torch.equal(ours.weight, theirs.weight)
    assert torch.equal(ours.bias, theirs.bias)
    x = torch.randn(1, 3, 10, 11)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert "algorithm='direct'" in repr(ours)
    assert "activation='none'" in repr(ours)


def test_unbatched_input_gives_an_unbatched_output_like_torch():
    x, w = torch.randn(3, 7, 7), torch.randn(5, 3, 3, 3)
    ours, theirs = K.conv2d(x, w, padding="same"), TF.conv2d(x, w, padding="same")
    assert ours.shape == theirs.shape == (5, 7, 7)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_the_digits_model_trains_on_the_kernels_to_torchs_curve_and_accuracy():
    pytest.importorskip("sklearn")
    from minitorch_nn.examples import digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the example does
    try:
        res = digits.train(epochs=2, seed=0, log=lambda line: None, conv_kernels=True)
    finally:
        torch.set_num_threads(threads)
    assert sum(isinstance(m, K.Conv2dAct) for m in res.ours.model.modules()) >= 2
    # The example's own per-step tolerance (float32 vs float64 drift of torch itself).
    assert res.agree, f"max |dL|/tol = {res.worst_ratio}"
    assert res.ours.test_accuracy == pytest.approx(res.theirs.test_accuracy, abs=1 / 360)  # at most one digit
    assert res.ours.test_accuracy[-1] > 0.8


@pytest.mark.parametrize("bn_type", [torch.nn.BatchNorm2d, nn.BatchNorm2d])
@pytest.mark.parametrize(("conv_bias", "affine", "activation"), [(True, True, "relu"), (False, False, "silu")])
def test_batch_norm_folds_into_the_conv_for_inference(bn_type, conv_bias, affine, activation):
    # act(bn(conv(x))) with eval-mode statistics, as one conv whose bias carries the BatchNorm. The
    # fold rounds W' = s·W and b' once each (u per term), inside reduction_tol's 2·u·Σ|terms|.
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, stride=2, bias=conv_bias, dtype=torch.float64)
    bn = bn_type(6, affine=affine, dtype=torch.float64)
    with torch.no_grad():  # running statistics and an affine part that are not the identity
        for _ in range(3):
            bn.train()(conv(torch.randn(5, 4, 9, 9, dtype=torch.float64) * 3 + 1))
        if affine:
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    bn.eval()
    fused = K.fold_batch_norm(conv, bn, activation=activation)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        expected = TORCH_ACT[activation](bn(conv(x)))
        got = fused(x)
    conf = {"stride": 2, "padding": 1, "dilation": 1, "groups": 1}
    tol = conv_act_tolerances(x, fused.weight, fused.bias, conf, activation)["output"]
    torch.testing.assert_close(got, expected, rtol=tol.rtol, atol=tol.atol)


def test_fold_batch_norm_refuses_what_it_cannot_fold():
    conv = torch.nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="running statistics"):
        K.fold_batch_norm(conv, torch.nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="channels"):
        K.fold_batch_norm(conv, torch.nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match="zero-padded"):
        K.fold_batch_norm(torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), torch.nn.BatchNorm2d(4))
