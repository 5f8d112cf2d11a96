"""Differential fuzzer: every public reference op against torch.nn.functional, valid and invalid input.

Each op family draws calls (tests/fuzz_ops.py): odd and zero sizes, wrong ranks, dtypes torch's
CPU kernels take and ones they refuse (int, bool, complex, float16), mismatched parameter shapes,
negative, zero and huge hyper-parameters, permuted, strided, offset and stride-0 (expanded) views,
NaN, ±Inf, huge, subnormal, constant and near-constant values, a list where a tensor belongs.
:func:`fuzz_ops.check_call` holds each to the contract: torch's exception class exactly, or
torch's values, gradients and argument updates within the error model, inputs untouched.

Profiles:

* quick (the default, part of ``pytest``): ``QUICK_EXAMPLES`` calls per family, a fixed seed.
* long: ``MINITORCH_FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest tests/test_fuzz.py -x``
  draws that many calls per family from a fresh random seed each run; run it for hours.
  ``MINITORCH_FUZZ_SEED=<n>`` makes a long run repeatable; ``MINITORCH_FUZZ_STATS=<file>`` appends
  each family's counts (calls; torch raised, returned, or returned and differentiated) to a file.

A failing call prints as ``Call(...)``; paste it into ``REGRESSIONS`` below (with what was wrong)
so it is replayed on every run.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, seed, settings

import minitorch_nn.functional as F
import minitorch_nn.kernels as K
import minitorch_nn.nn as nn

from . import fuzz_ops
from .fuzz_ops import Call, IndexTarget, T, check_call

f32, f64, bf16, f16 = torch.float32, torch.float64, torch.bfloat16, torch.float16

QUICK_EXAMPLES = 60
EXAMPLES = int(os.environ.get("MINITORCH_FUZZ_EXAMPLES", QUICK_EXAMPLES))
LONG = "MINITORCH_FUZZ_EXAMPLES" in os.environ
STATS = os.environ.get("MINITORCH_FUZZ_STATS")  # a file to append each family's outcome counts to

profile = settings(max_examples=EXAMPLES, derandomize=not LONG, database=None if not LONG else settings().database)


def _seeded(test):
    if LONG and "MINITORCH_FUZZ_SEED" in os.environ:
        return seed(int(os.environ["MINITORCH_FUZZ_SEED"]))(test)
    return test


@pytest.mark.parametrize("family", sorted(fuzz_ops.CALLS))
def test_fuzz_family_behaves_like_torch(family):
    if family in fuzz_ops.KERNEL_FAMILIES and not K.AVAILABLE:
        if os.environ.get("MINITORCH_REQUIRE_EXTENSION") == "1":
            pytest.fail(f"the compiled kernels are required but unavailable: {K.UNAVAILABLE_REASON}")
        pytest.skip(f"minitorch_nn's compiled kernels are unavailable: {K.UNAVAILABLE_REASON}")
    outcomes = collections.Counter()

    @_seeded
    @profile
    @given(call=fuzz_ops.CALLS[family])
    def run(call):
        outcomes[check_call(call)] += 1

    run()
    if STATS:  # one JSON line per family: what torch did with the calls drawn (docs/testing.md's table)
        with open(STATS, "a") as f:
            f.write(json.dumps({"family": family, "calls": sum(outcomes.values()), **outcomes}) + "\n")


# Calls the fuzzer found failing, with what was wrong; each passes now.
REGRESSIONS = [
    (
        "Conv2dAct with padding_mode='reflect' on a 5-D input raised RuntimeError, torch NotImplementedError",
        fuzz_ops.ModuleCall(
            "K.Conv2dAct",
            (1, 1, 1),
            {"padding": 0, "padding_mode": "reflect"},
            (T((1, 1, 3, 3, 0), f32, "normal", 0, "contiguous", True),),
            False,
        ),
    ),
    ("layer_norm of a constant row was 0.295, not 0", Call("layer_norm", (T((1, 1000), f32, "constant", 3), (1000,)))),
    ("a list input raised AttributeError", Call("silu", ([1.0, 2.0],))),
    ("relu accepted bool", Call("relu", (T((4, 5, 3), torch.bool, "wide", 25736, "permuted", True),))),
    ("gelu checked approximate before the input's type", Call("gelu", ([1.0, 2.0],), {"approximate": "exact"})),
    ("sigmoid of complex dropped the imaginary part", Call("sigmoid", (T((2, 3), torch.complex64, "normal", 1),))),
    (
        "softmax checked dtype before dim",
        Call("softmax", (T((1,), torch.int64, "special", 7414, "strided", True),), {"dim": -2}),
    ),
    (
        "batch_norm: int input raised RuntimeError",
        Call("batch_norm", (T((2, 3), torch.int64), T((3,)), T((3,), f32, "positive"))),
    ),
    (
        "batch_norm: negative eps in training accepted",
        Call("batch_norm", (T((2, 3, 4)), None, None), {"training": True, "eps": -1.0}),
    ),
    (
        "batch_norm: zero channels raised ZeroDivisionError",
        Call("batch_norm", (T((2, 0, 3)), None, None), {"training": True}),
    ),
    ("layer_norm accepted complex", Call("layer_norm", (T((2, 3), torch.complex64), (3,)))),
    ("group_norm: num_groups=0", Call("group_norm", (T((2, 4, 3)), 0))),
    (
        "adaptive_avg_pool2d spread a NaN",
        Call("adaptive_avg_pool2d", (T((2, 3, 5, 7), f32, "special", 5, "contiguous", True), (3, 4))),
    ),
    ("max_pool2d on bool raised TypeError", Call("max_pool2d", (T((1, 3, 3), torch.bool),), {"kernel_size": 2})),
    (
        "avg_pool2d checked dtype before padding",
        Call("avg_pool2d", (T((3, 3, 5, 1), torch.int32, "special", 547, "expand"), 3), {"stride": 2, "padding": -1}),
    ),
    ("conv2d accepted an empty kernel", Call("conv2d", (T((2, 3, 4, 4)), T((2, 3, 0, 3))))),
    # The compiled ops (the torch composition they fuse as the oracle):
    ("batch_norm_act: a list input raised RuntimeError", Call("K.batch_norm_act", ([[1.5]], None, None))),
    (
        "batch_norm_act refused a 0-d bias for one channel",
        Call(
            "K.batch_norm_act",
            (T((4, 1)), None, None),
            {"weight": T((1, 1)), "bias": T((), grad=True), "training": True},
        ),
    ),
    (
        "batch_norm_act checked the weight's shape before the batch size",
        Call("K.batch_norm_act", (T((1, 1)), None, None), {"weight": T((1, 0)), "training": True}),
    ),
    (
        "batch_norm_act accepted bfloat16 γ beside float32 running statistics",
        Call(
            "K.batch_norm_act",
            (T((2, 1), bf16, grad=True), T((1,)), T((1,), f32, "positive")),
            {"weight": T((1,), bf16, grad=True), "training": False, "activation": "none"},
        ),
    ),
    (
        "batch_norm_act accepted eps = 0 in training",
        Call("K.batch_norm_act", (T((4, 3)), None, None), {"training": True, "eps": 0.0}),
    ),
    (
        "batch_norm_act accepted eps < 0 in eval",
        Call("K.batch_norm_act", (T((4, 3)), T((3,)), T((3,), f32, "positive")), {"eps": -1.0}),
    ),
    (
        "batch_norm_act: integer input in eval without running statistics raised NotImplementedError",
        Call("K.batch_norm_act", (T((4, 3), torch.int64), None, None)),
    ),
    (
        "batch_norm_act checked the input's dtype before the running statistics' sizes",
        Call("K.batch_norm_act", (T((4, 1), torch.int64), T((1,)), T((0,), f32, "positive"))),
    ),
    (
        "layer_norm_act: integer input with γ, β of two dtypes raised NotImplementedError (long run)",
        Call("K.layer_norm_act", (T((2, 3), torch.int64), (3,)), {"weight": T((3,)), "bias": T((3,), bf16)}),
    ),
    (
        "compiled conv2d: a float16 input with a kernel too large raised NotImplementedError",
        Call("K.conv2d", (T((1, 1, 1, 1), f16, grad=True), T((1, 1, 1, 2), f16, grad=True), T((1,), f16, grad=True))),
    ),
    (
        "torch's float32 backward of a constant row is off (the oracle computes in float64)",
        Call(
            "K.layer_norm_act",
            (T((2,), f32, "constant", 1, "contiguous", True), (2,)),
            {"weight": T((2,), grad=True), "activation": "none"},
        ),
    ),
    (
        "cross_entropy refused reduction='elementwise_mean'",
        Call(
            "cross_entropy",
            (T((3, 5), f32, "normal", 0, "contiguous", True), IndexTarget((3,), 5, 1)),
            {"reduction": "elementwise_mean"},
        ),
    ),
]


@pytest.mark.parametrize("call", [pytest.param(c, id=why) for why, c in REGRESSIONS])
def test_fuzz_regression(call):
    kernel = (
        call.module in fuzz_ops.KERNEL_MODULE_BASES
        if isinstance(call, fuzz_ops.ModuleCall)
        else call.op in fuzz_ops.COMPOSED
    )
    if kernel and not K.AVAILABLE:
        pytest.skip(f"minitorch_nn's compiled kernels are unavailable: {K.UNAVAILABLE_REASON}")
    check_call(call)


def test_every_deliberate_difference_names_a_test_that_exists():
    sources = "".join(path.read_text() for path in Path(__file__).parent.glob("test_*.py"))
    for why, test in fuzz_ops.DELIBERATE.items():
        assert f"def {test}(" in sources, f"{why}: no test named {test}"


# --- pinned fixes and deliberate differences ---------------------------------------------------


def test_constant_rows_normalize_to_exactly_zero():
    x = torch.full((1, 1000), 12345.6)
    assert F.layer_norm(x, (1000,)).abs().max() == 0
    assert F.group_norm(x.view(1, 4, 250), 2).abs().max() == 0
    assert F.batch_norm(x.view(1000, 1), None, None, training=True).abs().max() == 0
    assert TF.layer_norm(x, (1000,)).abs().max() == 0  # torch agrees


def test_adaptive_avg_pool2d_confines_nan_and_inf_to_their_windows():
    x = torch.randn(1, 1, 5, 7, dtype=f64)
    x[0, 0, 0, 0], x[0, 0, 4, 6] = float("nan"), float("inf")
    ours, theirs = F.adaptive_avg_pool2d(x, (3, 4)), TF.adaptive_avg_pool2d(x, (3, 4))
    assert ours.isnan().sum() == 1
    assert ours.isinf().sum() == 1
    torch.testing.assert_close(ours, theirs, equal_nan=True)


def test_batch_norm_with_one_running_stat_raises_value_error_and_leaves_it_alone():
    running_mean = torch.zeros(3)
    with pytest.raises(ValueError, match="both be None"):
        F.batch_norm(torch.randn(4, 3), running_mean, None, training=True)
    assert running_mean.eq(0).all()


def test_a_non_tensor_input_is_a_type_error_first():
    """Deliberate: torch raises AttributeError here ('list' object has no attribute 'sigmoid')."""
    for op, args in [("sigmoid", ([1.0],)), ("softmax", ([1.0], 0)), ("group_norm", ([[1.0, 2.0]], 1))]:
        with pytest.raises(TypeError, match="must be Tensor, not list"):
            getattr(F, op)(*args)
        with pytest.raises(AttributeError):
            getattr(TF, op)(*args)


def test_activations_refuse_complex_input_torch_computes_the_complex_function():
    """Deliberate: torch computes the complex functions; our real formulas would drop the imaginary part.

    (With a complex input that requires grad, torch raises RuntimeError: no autograd for complex
    outputs. Ours raises NotImplementedError there too: the refusal comes first.)
    """
    z = torch.tensor([1 + 2j])
    assert fuzz_ops.COMPLEX_FUNCTIONS == ("sigmoid", "tanh", "silu")
    for op in fuzz_ops.COMPLEX_FUNCTIONS:
        for grad in (False, True):
            with pytest.raises(NotImplementedError, match="complex"):
                getattr(F, op)(z.clone().requires_grad_(grad))
        assert getattr(TF, op)(z).is_complex()


def test_bce_with_logits_computes_in_the_promoted_dtype_not_the_targets():
    """Deliberate: with a float16 target, torch computes the loss in float16 ((1 − t).mul_(x) stays in
    the target's dtype) and returns float16; ours promotes, as every other op does, and keeps the digits."""
    x = torch.linspace(-3, 3, 7)
    t = torch.linspace(0, 1, 7).half()
    exact = TF.binary_cross_entropy_with_logits(x.double(), t.double())
    ours, theirs = F.binary_cross_entropy_with_logits(x, t), TF.binary_cross_entropy_with_logits(x, t)
    assert ours.dtype == torch.float32
    assert theirs.dtype == torch.float16
    assert abs(ours.double() - exact) < 4 * torch.finfo(torch.float32).eps * exact
    assert abs(theirs.double() - exact) > abs(ours.double() - exact)


def test_batch_norm_of_a_1d_input_is_torchs_index_error():
    with pytest.raises(IndexError, match="dimension 1 is out of range"):
        F.batch_norm(torch.randn(2), None, None, training=True)
    with pytest.raises(IndexError):
        TF.batch_norm(torch.randn(2), None, None, training=True)


def test_layer_norm_backward_of_a_constant_row_is_exact_where_torchs_float32_is_not():
    """Deliberate: torch's float32 backward recomputes x − μ with its rounded μ, an ulp of 6167.7 that
    rstd = 1/√eps ≈ 316 amplifies to x̂ ≈ 0.15 where it is 0: dx comes out 252 and −248 where the
    exact values are ±248.34, and dγ −0.057 for 0. Ours (reference and compiled) keep x̂ = 0 exactly,
    so its gradients are the float64 ones. The fuzzer's norm oracles compute in float64 for this."""
    x = torch.full((2,), 6167.7255859375)
    w = torch.tensor([1.5409960746765137, -0.293428897857666])
    dy = fuzz_ops.upstream_gradient((2,), f32)  # the fuzzer's, which found it

    def grads(op, dtype=f32):
        xs, ws = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
        return torch.autograd.grad(op(xs, ws), (xs, ws), dy.to(dtype))

    exact = grads(lambda x, w: TF.layer_norm(x, (2,), w), f64)
    ours = [lambda x, w: F.layer_norm(x, (2,), w)]
    if K.AVAILABLE:
        ours += [lambda x, w, r=r: K.layer_norm_act(x, 2, w, activation="none", rung=r) for r in (None, 1, 2, 3)]
    for op in ours:
        for a, e in zip(grads(op), exact, strict=True):
            torch.testing.assert_close(a.double(), e, rtol=1e-6, atol=1e-6)
    theirs = grads(lambda x, w: TF.layer_norm(x, (2,), w))
    assert (theirs[0].double() - exact[0]).abs().max() > 1
    assert theirs[1].abs().max() > 0.01  # exact: 0


def test_group_norm_of_an_empty_group_has_zero_weight_gradient_where_torchs_is_nan():
    """Deliberate: dγ = Σ dy·x̂ over an empty group is the empty sum, 0; torch returns NaN (its x̂ is
    0/0 there). Ours gives 0 for every parameter; the input gradient is empty on both sides."""
    x = torch.randn(2, 4, 0, 3, requires_grad=True)
    w, b = torch.ones(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    for nn_module in (nn.GroupNorm(2, 4), torch.nn.GroupNorm(2, 4)):
        y = nn_module(x)
        assert y.shape == x.shape
    ours = torch.autograd.grad(F.group_norm(x, 2, w, b).sum(), (w, b))
    theirs = torch.autograd.grad(TF.group_norm(x, 2, w, b).sum(), (w, b))
    assert all(g.eq(0).all() for g in ours)
    assert theirs[0].isnan().all()
    assert theirs[1].eq(0).all()


@pytest.mark.skipif(not K.AVAILABLE, reason="needs the compiled kernels")
def test_batch_norm_act_differentiates_parameters_torchs_backward_refuses():
    """Deliberate: torch's forward takes γ, β of any shape with C elements, and its backward then
    fails (RuntimeError: an invalid gradient shape, or a TensorAccessor of the wrong rank). Ours
    reads them as (C,) vectors, and their gradients come back in their own shapes."""
    x = torch.randn(6, 3, dtype=f64)
    for shape in ((3, 1), (1, 3)):
        w, b = torch.rand(shape, dtype=f64) + 0.5, torch.randn(shape, dtype=f64)
        ours = [t.clone().requires_grad_() for t in (w, b)]
        y = K.batch_norm_act(x, None, None, *ours, training=True, activation="none")
        flat = [t.reshape(3).requires_grad_() for t in (w, b)]
        expected = TF.batch_norm(x, None, None, *flat, training=True)
        torch.testing.assert_close(y, expected)
        grads = torch.autograd.grad(y.sum(), ours)
        for g, e, t in zip(grads, torch.autograd.grad(expected.sum(), flat), ours, strict=True):
            assert g.shape == t.shape
            torch.testing.assert_close(g.reshape(3), e)
        theirs = [t.clone().requires_grad_() for t in (w, b)]
        with pytest.raises(RuntimeError):
            torch.autograd.grad(TF.batch_norm(x, None, None, *theirs, training=True).sum(), theirs)
