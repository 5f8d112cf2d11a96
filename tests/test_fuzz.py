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

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, seed, settings

import minitorch_nn.functional as F

from . import fuzz_ops
from .fuzz_ops import Call, IndexTarget, T, check_call

f32, f64, bf16 = torch.float32, torch.float64, torch.bfloat16

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
    check_call(call)


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
