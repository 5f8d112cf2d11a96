"""Linear: values and gradients against torch.nn, gradcheck, errors, the module and its init."""

from __future__ import annotations

import math

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
from .strategies import dtypes, tensors


def linear_tolerances(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> dict[str, Tol]:
    """Per-output reduction bounds (see compare.py) from the absolute values of the operands.

    y  = x Wᵀ + b      reduces over I (plus one bias term)   S = max(|x| |W|ᵀ + |b|)
    dx = dy W          reduces over O                        S = max(|dy| |W|)
    dW = dyᵀ x         reduces over the N rows               S = max(|dy|ᵀ |x|)
    db = Σ dy          reduces over the rows it broadcast to S = max(Σ |dy|)
    dy is the fixed upstream gradient that assert_same_as_torch back-propagates.
    """
    out_shape = (*x.shape[:-1], w.shape[0])
    (o, i), n = w.shape, math.prod(x.shape[:-1])
    X = x.detach().double().abs().reshape(n, i)
    W = w.detach().double().abs()
    dY = upstream_gradient(out_shape, x.dtype).double().abs().reshape(n, o)
    B = torch.zeros(()) if b is None else b.detach().double().abs()

    def biggest(t: torch.Tensor) -> float:
        return float(t.max()) if t.numel() else 0.0

    tol = {
        "output": reduction_tol(x.dtype, i + 1, biggest(X @ W.t() + B)),
        "input": reduction_tol(x.dtype, o, biggest(dY @ W)),
        "weight": reduction_tol(x.dtype, n, biggest(dY.t() @ X)),
    }
    if b is not None:
        rows = (n * o) // max(b.numel(), 1)
        tol["bias"] = reduction_tol(x.dtype, rows, biggest(dY.reshape(out_shape).sum_to_size(b.shape)))
    return tol


@st.composite
def linear_args(draw, dtype=dtypes(bf16=True), regimes=("normal", "wide"), min_size=0):
    """(x, W, b) for ``(*, I) x (O, I)``, with 0-3 leading dims, sizes min_size..9, any layout.

    No "extreme" regime: sums of 1e150-sized products overflow by design, not by mistake.
    """
    dtype = draw(dtype)
    lead = tuple(draw(st.lists(st.integers(min_size, 5), max_size=3)))
    i, o = draw(st.integers(min_size, 9)), draw(st.integers(min_size, 9))
    x = draw(tensors((*lead, i), dtype, regimes=regimes)).requires_grad_()
    w = draw(tensors((o, i), dtype, regimes=regimes)).requires_grad_()
    b = draw(st.none() | tensors((o,), dtype, regimes=regimes))
    return x, w, b if b is None else b.requires_grad_()


@given(linear_args())
def test_matches_torch(args):
    x, w, b = args
    assert_same_as_torch(F.linear, TF.linear, {"input": x, "weight": w, "bias": b}, tol=linear_tolerances(x, w, b))


# Standard-normal values only: finite differences of 1e-6 on sums of 1e4 x 1e4 products lose
# the small Jacobian entries to rounding (an artefact of the numerical side, not of ours).
# No empty tensors: gradcheck refuses the zero strides an empty view may carry (and has
# nothing to check there).
@given(linear_args(st.just(torch.float64), regimes=("normal",), min_size=1))
def test_gradcheck_and_gradgradcheck(args):
    x, w, b = args
    if x.shape[0] * w.numel() > 40:  # numerical Jacobians cost one evaluation per input element
        x, w = x[..., :2], w[:, :2]
    check_gradients(F.linear, [t.detach().requires_grad_() for t in (x, w, b) if t is not None])


def test_one_dimensional_weight_is_a_dot_product_per_row():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    tol = Tol(rtol=1e-15, atol=1e-15)
    assert_same_as_torch(F.linear, TF.linear, {"input": x, "weight": w}, tol=tol)
    assert_same_as_torch(F.linear, TF.linear, {"input": x[0], "weight": w}, tol=tol)


def test_bias_broadcast_over_rows_sums_its_gradient_over_them():
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    for b in (torch.randn(5), torch.randn(1), torch.randn(())):
        b = b.double().requires_grad_()
        assert_same_as_torch(F.linear, TF.linear, {"input": x, "weight": w, "bias": b}, tol=linear_tolerances(x, w, b))


@pytest.mark.parametrize(
    ("x", "w", "b"),
    [
        pytest.param(torch.randn(2, 3), torch.randn(4, 5), None, id="in-features-mismatch"),
        pytest.param(torch.randn(2, 3), torch.randn(4, 3, dtype=torch.float64), None, id="dtype-mismatch"),
        pytest.param(torch.tensor(1.0), torch.randn(4, 3), None, id="0d-input"),
        pytest.param(torch.randn(2, 3), torch.randn(4, 3, 1), None, id="3d-weight"),
        pytest.param(torch.randn(2, 3), torch.randn(4, 3), torch.randn(3), id="bias-wrong-size"),
        pytest.param(torch.randn(2, 3), torch.randn(4, 3), torch.randn(3, 4), id="bias-wrong-rank"),
        pytest.param(torch.randn(2, 3), torch.randn(3), torch.randn(2), id="bias-with-1d-weight"),
    ],
)
def test_bad_arguments_raise_like_torch(x, w, b):
    assert_raises_like_torch(lambda: F.linear(x, w, b), lambda: TF.linear(x, w, b))


# --- module ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
@given(st.integers(0, 8), st.integers(0, 8), st.booleans(), st.integers(0, 2**31))
def test_default_init_is_torchs_bit_for_bit(in_features, out_features, bias, seed):
    torch.manual_seed(seed)
    ours = nn.Linear(in_features, out_features, bias)
    torch.manual_seed(seed)
    theirs = torch.nn.Linear(in_features, out_features, bias)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_default_init_range_is_one_over_sqrt_fan_in():
    # kaiming_uniform_(a=√5): bound = √3 · √(2/(1+5)) / √fan_in = 1/√fan_in.
    m = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    assert m.weight.abs().max() <= bound
    assert m.weight.abs().max() > 0.99 * bound  # 120,000 draws reach the edge of the range
    assert m.bias.abs().max() <= bound


def test_state_dict_round_trip_with_torch_gives_same_outputs_and_gradients():
    theirs = torch.nn.Linear(6, 4, dtype=torch.float64)
    ours = nn.Linear(6, 4, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    back = torch.nn.Linear(6, 4, dtype=torch.float64)
    back.load_state_dict(ours.state_dict())
    assert all(torch.equal(back.state_dict()[k], v) for k, v in theirs.state_dict().items())
    x = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert_same_as_torch(
        ours,
        theirs,
        {"input": x},
        ours_params=dict(ours.named_parameters()),
        oracle_params=dict(theirs.named_parameters()),
        tol=linear_tolerances(x, theirs.weight, theirs.bias),
    )


def test_module_options_match_torch():
    for kwargs in ({"bias": False}, {"dtype": torch.float64}, {"device": "cpu", "dtype": torch.bfloat16}):
        ours, theirs = nn.Linear(3, 2, **kwargs), torch.nn.Linear(3, 2, **kwargs)
        assert repr(ours) == repr(theirs)
        assert [(n, p.shape, p.dtype, p.device) for n, p in ours.named_parameters()] == [
            (n, p.shape, p.dtype, p.device) for n, p in theirs.named_parameters()
        ]
    for cls in ("Linear", "Flatten", "Identity"):
        assert constructor_signature(getattr(nn, cls)) == constructor_signature(getattr(torch.nn, cls)), cls


def test_identity_and_flatten_match_torch():
    x = torch.randn(2, 3, 4, 5)
    assert nn.Identity(54, unused="ignored")(x) is x
    for args in ((), (0,), (1, 2), (-3, -1)):
        assert torch.equal(nn.Flatten(*args)(x), torch.nn.Flatten(*args)(x))
        assert repr(nn.Flatten(*args)) == repr(torch.nn.Flatten(*args))
