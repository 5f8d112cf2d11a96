"""Activations: values and gradients against torch.nn, gradcheck, in-place forms, modules."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import mpmath
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import minitorch_nn.functional as F
import minitorch_nn.nn as nn

from .compare import (
    assert_raises_like_torch,
    assert_same_as_torch,
    check_gradients,
    constructor_signature,
    pointwise_tol,
)
from .strategies import dtypes, shapes, tensors


@dataclass(frozen=True)
class Activation:
    name: str
    ours: Callable[..., torch.Tensor]
    oracle: Callable[..., torch.Tensor]
    options: st.SearchStrategy[dict] = field(default_factory=lambda: st.just({}))
    # x where the derivative jumps; gradcheck's finite differences must not straddle them.
    kinks: Callable[[dict], tuple[float, ...]] = lambda opts: ()
    inplace: bool = False


ACTIVATIONS = [
    Activation("relu", F.relu, TF.relu, kinks=lambda o: (0.0,), inplace=True),
    Activation(
        "leaky_relu",
        F.leaky_relu,
        TF.leaky_relu,
        st.fixed_dictionaries({"negative_slope": st.floats(-2, 2, allow_nan=False)}),
        kinks=lambda o: (0.0,),
        inplace=True,
    ),
    Activation("gelu", F.gelu, TF.gelu, st.fixed_dictionaries({"approximate": st.sampled_from(["none", "tanh"])})),
    Activation("silu", F.silu, TF.silu, inplace=True),
    Activation("mish", F.mish, TF.mish, inplace=True),
    Activation("sigmoid", F.sigmoid, torch.sigmoid),
    Activation("tanh", F.tanh, torch.tanh),
    Activation(
        "softplus",
        F.softplus,
        TF.softplus,
        # threshold <= 40 keeps torch's own log1p(exp(beta*x)) below float32 overflow (~88.7);
        # past that torch returns inf where we stay finite (see SoftplusFunction).
        st.fixed_dictionaries({"beta": st.floats(0.25, 8), "threshold": st.floats(-5, 40)}),
        kinks=lambda o: (o["threshold"] / o["beta"],),
    ),
]
BY_NAME = {a.name: a for a in ACTIVATIONS}
params = pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: a.name)
inplace_params = pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a.inplace], ids=lambda a: a.name)


@params
@given(data=st.data())
def test_matches_torch(act, data):
    x = data.draw(tensors(shapes(), dtypes(bf16=True))).requires_grad_()
    opts = data.draw(act.options)
    assert_same_as_torch(
        lambda t: act.ours(t, **opts), lambda t: act.oracle(t, **opts), {"input": x}, tol=pointwise_tol(x.dtype)
    )


@st.composite
def smooth_points(draw, kinks: tuple[float, ...], shape=shapes(max_dims=3, max_side=4, allow_empty=False)):
    """float64 inputs at least 1e-3 from every kink (gradcheck perturbs by 1e-6).

    Magnitudes stay below 1e4 ("normal" and "wide" regimes): at 1e150 a perturbation of 1e-6
    is lost to rounding and the finite difference reads 0.
    """
    x = draw(tensors(shape, torch.float64, regimes=("normal", "wide")))
    for k in kinks:
        near = (x - k).abs() < 1e-3
        x = torch.where(near, x + 2e-3, x)  # values: not a view, a fresh tensor
    return draw(st.sampled_from([x, x.t() if x.dim() == 2 else x]))


@params
@given(data=st.data())
def test_gradcheck_and_gradgradcheck(act, data):
    opts = data.draw(act.options)
    x = data.draw(smooth_points(act.kinks(opts))).requires_grad_()
    check_gradients(lambda t: act.ours(t, **opts), [x])


@pytest.mark.parametrize("name", ["gelu", "silu", "mish", "sigmoid", "tanh", "softplus"])
def test_second_derivative_is_exact_where_stable_formulas_switch_branch(name):
    # The stable formulas switch branch at 0 (see _math): the double-where must differentiate
    # the picked branch there too, including its second derivative.
    x = torch.tensor([0.0, -0.0, 1e-7, -1e-7, 1.0, -1.0], dtype=torch.float64, requires_grad=True)
    check_gradients(BY_NAME[name].ours, [x])


@params
def test_outputs_and_gradients_stay_finite_at_extremes(act):
    # |x| up to 1e4 and the overflow points of the naive formulas (exp(89) = inf in float32).
    x = torch.tensor([-1e4, -1000.0, -104.0, -89.0, -20.5, 20.5, 89.0, 104.0, 1000.0, 1e4], requires_grad=True)
    y = act.ours(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(y).all(), y
    assert torch.isfinite(g).all(), g


@inplace_params
@given(data=st.data())
def test_inplace_writes_into_input_and_matches_torch(act, data):
    # torch refuses to differentiate its in-place leaky_relu with a negative slope (see below).
    opts = data.draw(act.options.filter(lambda o: o.get("negative_slope", 0.0) >= 0))
    base = data.draw(tensors(shapes(allow_empty=False), dtypes())).requires_grad_()

    def run(fn):
        x = base * 1  # a non-leaf, so autograd allows the in-place write
        y = fn(x, **opts, inplace=True)
        assert y is x
        return y

    assert_same_as_torch(
        lambda b: run(act.ours), lambda b: run(act.oracle), {"input": base}, tol=pointwise_tol(base.dtype)
    )


def test_inplace_leaky_relu_with_negative_slope_differentiates_like_out_of_place():
    # torch's in-place kernel saves only its output, and with a negative slope the output's
    # sign no longer tells which side of 0 the input was, so it raises. The reference saves
    # its input, so the in-place form has the out-of-place gradient.
    base = torch.tensor([-2.0, -0.5, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    assert_same_as_torch(
        lambda b: F.leaky_relu(b * 1, -0.5, inplace=True),
        lambda b: TF.leaky_relu(b * 1, -0.5),
        {"input": base},
        tol=pointwise_tol(base.dtype),
    )


@inplace_params
def test_inplace_on_a_leaf_that_requires_grad_raises_like_torch(act):
    x = torch.randn(3, requires_grad=True)
    assert_raises_like_torch(lambda: act.ours(x, inplace=True), lambda: act.oracle(x, inplace=True))


@pytest.mark.parametrize("name", ["leaky_relu", "gelu", "silu", "mish", "softplus"])
def test_integer_input_raises_like_torch(name):
    x = torch.arange(4)
    assert_raises_like_torch(lambda: BY_NAME[name].ours(x), lambda: BY_NAME[name].oracle(x))


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_integer_input_is_accepted_like_torch(name):
    x = torch.arange(-3, 4)
    expected = BY_NAME[name].oracle(x)
    actual = BY_NAME[name].ours(x)
    assert actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected)


def test_gelu_rejects_unknown_approximation_like_torch():
    x = torch.randn(3)
    assert_raises_like_torch(lambda: F.gelu(x, approximate="fast"), lambda: TF.gelu(x, approximate="fast"))


def test_nan_propagates_like_torch():
    x = torch.tensor([math.nan, -1.0, 1.0], requires_grad=True)
    for act in ACTIVATIONS:
        assert_same_as_torch(act.ours, act.oracle, {"input": x}, tol=pointwise_tol(x.dtype))


# 50-digit references (mpmath ships with torch, through sympy): (f, f') per activation.
def _mp_sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


_C, _K = mpmath.sqrt(2 / mpmath.pi), mpmath.mpf("0.044715")
EXACT = {
    "gelu": (lambda x: x * mpmath.ncdf(x), lambda x: mpmath.ncdf(x) + x * mpmath.npdf(x)),
    "gelu(tanh)": (
        lambda x: x / 2 * (1 + mpmath.tanh(_C * (x + _K * x**3))),
        lambda x: (
            (1 + mpmath.tanh(_C * (x + _K * x**3))) / 2
            + x / 2 * mpmath.sech(_C * (x + _K * x**3)) ** 2 * _C * (1 + 3 * _K * x**2)
        ),
    ),
    "silu": (lambda x: x * _mp_sigmoid(x), lambda x: _mp_sigmoid(x) * (1 + x * (1 - _mp_sigmoid(x)))),
    "mish": (
        lambda x: x * mpmath.tanh(mpmath.log1p(mpmath.exp(x))),
        lambda x: (
            mpmath.tanh(mpmath.log1p(mpmath.exp(x)))
            + x * mpmath.sech(mpmath.log1p(mpmath.exp(x))) ** 2 * _mp_sigmoid(x)
        ),
    ),
    "sigmoid": (_mp_sigmoid, lambda x: _mp_sigmoid(x) * (1 - _mp_sigmoid(x))),
    "tanh": (mpmath.tanh, lambda x: mpmath.sech(x) ** 2),
    "softplus": (lambda x: mpmath.log1p(mpmath.exp(x)), _mp_sigmoid),  # below its threshold of 20
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(EXACT))
def test_error_against_50_digit_arithmetic_is_at_most_4_eps(name, dtype):
    # Accuracy against an independent oracle, in eps: relative above 1, absolute below. (torch's
    # own kernels reach 21 eps in float64 on this grid, in the GELU-tanh, SiLU and Mish
    # backward; see compare.py.)
    mpmath.mp.dps = 50
    f, df = EXACT[name]
    bound = 19.9 if name == "softplus" else 40.0
    x = torch.linspace(-bound, bound, 1601).to(dtype)
    points = [mpmath.mpf(v) for v in x.double().tolist()]
    exact = torch.tensor([float(f(p)) for p in points], dtype=torch.float64)
    exact_grad = torch.tensor([float(df(p)) for p in points], dtype=torch.float64)
    ours = (lambda t: F.gelu(t, "tanh")) if name == "gelu(tanh)" else BY_NAME[name].ours
    x.requires_grad_()
    y = ours(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    eps = torch.finfo(dtype).eps
    for what, got, want in (("output", y, exact), ("gradient", grad, exact_grad)):
        error = ((got.double() - want).abs() / want.abs().clamp(min=1) / eps).max().item()
        assert error <= 4, f"{name} {what}: {error:.1f} eps from the 50-digit value"


# --- named lessons -------------------------------------------------------------------------


def test_gelu_gates_input_by_probability_a_standard_normal_is_below_it():
    # GELU(x) = x · P(X <= x), X ~ N(0, 1), with the CDF from the standard library as an
    # independent oracle.
    xs = [-4.0, -1.5, -0.3, 0.0, 0.7, 2.0, 5.0]
    expected = torch.tensor([x * statistics.NormalDist().cdf(x) for x in xs], dtype=torch.float64)
    torch.testing.assert_close(F.gelu(torch.tensor(xs, dtype=torch.float64)), expected, rtol=1e-14, atol=1e-15)


def test_gelu_tanh_approximation_stays_within_1e_3_of_exact():
    x = torch.linspace(-8, 8, 10001, dtype=torch.float64)
    assert (F.gelu(x, "tanh") - F.gelu(x)).abs().max() < 1e-3


def test_silu_is_its_input_gated_by_its_own_sigmoid():
    x = torch.linspace(-10, 10, 101, dtype=torch.float64)
    torch.testing.assert_close(F.silu(x), x * F.sigmoid(x), rtol=1e-15, atol=1e-15)
    assert F.silu(torch.tensor(0.0)) == 0  # the gate is half open at 0, and 0 · ½ = 0


def test_softplus_is_exactly_linear_above_its_threshold():
    x = torch.tensor([20.001, 25.0, 1e4], dtype=torch.float64, requires_grad=True)
    y = F.softplus(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(y, x.detach())
    assert torch.equal(g, torch.ones_like(x))


def test_sigmoid_and_tanh_saturate_without_overflow():
    x = torch.tensor([-1e4, -800.0, 800.0, 1e4], dtype=torch.float64)
    assert torch.equal(F.sigmoid(x), torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64))
    assert torch.equal(F.tanh(x), torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64))


def test_relu_gives_zero_gradient_to_negative_inputs_leaky_relu_does_not():
    x = torch.tensor([-3.0, -0.5, 2.0], requires_grad=True)
    (g_relu,) = torch.autograd.grad(F.relu(x).sum(), x)
    (g_leaky,) = torch.autograd.grad(F.leaky_relu(x, 0.1).sum(), x)
    assert g_relu.tolist() == [0.0, 0.0, 1.0]
    assert g_leaky.tolist() == pytest.approx([0.1, 0.1, 1.0])


# --- modules --------------------------------------------------------------------------------

MODULES = [
    ("ReLU", {}),
    ("ReLU", {"inplace": True}),
    ("LeakyReLU", {"negative_slope": 0.2}),
    ("LeakyReLU", {"negative_slope": 0.2, "inplace": True}),
    ("GELU", {"approximate": "tanh"}),
    ("GELU", {}),
    ("SiLU", {}),
    ("SiLU", {"inplace": True}),
    ("Mish", {}),
    ("Sigmoid", {}),
    ("Tanh", {}),
    ("Softplus", {"beta": 2.0, "threshold": 10.0}),
]


@pytest.mark.parametrize(("cls", "kwargs"), MODULES)
def test_module_matches_torch(cls, kwargs):
    ours, theirs = getattr(nn, cls)(**kwargs), getattr(torch.nn, cls)(**kwargs)
    assert repr(ours) == repr(theirs)
    base = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert_same_as_torch(
        lambda b: ours(b * 1), lambda b: theirs(b * 1), {"input": base}, tol=pointwise_tol(torch.float64)
    )


@pytest.mark.parametrize("cls", sorted({cls for cls, _ in MODULES}))
def test_module_constructor_signature_matches_torch(cls):
    assert constructor_signature(getattr(nn, cls)) == constructor_signature(getattr(torch.nn, cls))
