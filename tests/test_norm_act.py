"""Fused LayerNorm/BatchNorm + activation (minitorch_nn.kernels): against torch and the references.

The compiled ops compute ``act(layer_norm(x))`` and ``act(batch_norm(x))`` in one kernel. Here they
meet two oracles: torch eager (``act(torch.nn.functional.layer_norm(x))``) and our readable
references (``act(minitorch_nn.functional.layer_norm(x))``); values, the gradients of x, γ and β,
the running statistics, layouts, bad input, ``opcheck``, ``gradcheck`` and ``torch.compile``.

Every test runs on each device present: ``cpu`` always, ``cuda`` (marked ``cuda``) where a GPU is.
"""

from __future__ import annotations

import copy
import math
import os
import re

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import example, given, settings
from hypothesis import strategies as st

import minitorch_nn.functional as F
import minitorch_nn.kernels as K
import minitorch_nn.nn as nn

from .compare import (
    TORCH_ACT,
    Tol,
    assert_close,
    assert_raises_like_torch,
    assert_same_as_torch,
    check_gradients,
    pointwise_tol,
    upstream_gradient,
)
from .strategies import layouts, tensors, values
from .test_normalization import (
    channel_grouping,
    contiguous,
    norm_tolerances,
    running_stat_tolerances,
    trailing_grouping,
)

REQUIRE_EXTENSION = os.environ.get("MINITORCH_REQUIRE_EXTENSION") == "1"


def test_extension_is_built_where_ci_requires_it():
    # CI sets MINITORCH_REQUIRE_EXTENSION=1, so a broken build fails here instead of silently
    # skipping every test below.
    if not REQUIRE_EXTENSION:
        pytest.skip("MINITORCH_REQUIRE_EXTENSION is not set to 1")
    assert K.AVAILABLE, f"the compiled kernels are required but unavailable: {K.UNAVAILABLE_REASON}"


if not K.AVAILABLE and not REQUIRE_EXTENSION:
    pytest.skip(f"minitorch_nn's compiled kernels are unavailable: {K.UNAVAILABLE_REASON}", allow_module_level=True)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]
devices = pytest.mark.parametrize("device", DEVICES)
activations = pytest.mark.parametrize("activation", K.ACTIVATIONS)
# The Hypothesis tests below run once per activation (and device): a third of the profile's
# examples each keeps the file near a minute under the ``ci`` profile, and scales with ``thorough``.
per_activation = settings(max_examples=max(5, settings.default.max_examples // 3))

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
REDUCED = (torch.bfloat16, torch.float16)  # stored in 16 bits, computed in float32
# Well-conditioned values, as in test_normalization ("extreme" mixes 1e18 with 1 in one row).
REGIMES = ("normal", "wide")
eps_values = st.sampled_from([1e-5, 1e-3, 0.1])
# Row lengths around the vector width (8 or 16 lanes) and the kernels' 4-vector unrolling and
# 1024-value blocks, so every tail path runs: none of them but 64 is a multiple of 16.
ROW_LENGTHS = (1, 2, 3, 7, 15, 17, 33, 64, 65, 127, 1023, 1025, 2041)
# Channel counts for BatchNorm's channels-last path, where the vector runs across channels.
CHANNELS = (1, 3, 5, 7, 13, 17, 19, 33)

REFERENCE_ACT = {
    "none": lambda z: z,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda z: F.gelu(z, "tanh"),
    "silu": F.silu,
    "mish": F.mish,
}
# (sup |f'|, sup |f''|) over the reals, rounded up (test_derivative_bounds_hold checks them):
# GELU 1.1289 at z ≈ 1.41 and f''(0) = 2φ(0) = 0.798; GELU-tanh the same to 4 digits; SiLU 1.0998
# and f''(0) = 1/2; Mish 1.0885 and 0.644. ReLU's f'' is a jump at 0, handled apart (act_oracle).
DERIVATIVE_BOUNDS = {
    "none": (1.0, 0.0),
    "relu": (1.0, 0.0),
    "gelu": (1.13, 0.8),
    "gelu_tanh": (1.13, 0.8),
    "silu": (1.1, 0.5),
    "mish": (1.09, 0.65),
}


# --- tolerances -----------------------------------------------------------------------------


def norm_act_tolerances(x, grouping, weight, bias, eps, activation, stats=None) -> tuple[dict[str, Tol], float]:
    """Bounds on |fused − oracle| per output, and the bound on |z_fused − z_oracle| (relu's band).

    Start from test_normalization's error model for the normalization alone (``norm_tolerances``):
    it bounds the error δz of the pre-activation z = γ·x̂ + β by ``atol_z + rtol_z·max|z|``, and
    the errors of dx, dγ, dβ for a given upstream gradient g. The activation adds, with
    L1 = sup|f'| and L2 = sup|f''| (DERIVATIVE_BOUNDS) and e_f the pointwise evaluation error of
    f and f' (``pointwise_tol`` of the arithmetic type: 32 eps, relative above 1, absolute below,
    which covers torch's up-to-21-eps and our SLEEF-based kernels together):

        y  = f(z):       |δy| <= L1·δz + e_f(y)                   (mean value theorem)
        dz = dy·f'(z):   |δdz| <= |dy|·E,  E = L2·δz + e_f(f')     (f' at a perturbed z, evaluated)
        dx, dγ, dβ:      the normalization's bounds with dy replaced by dz, |dz| <= L1·|dy|, so
                         its atol scales by L1; plus the propagation of δdz through the linear
                         maps dx = γ·rstd·(dz − mean dz − x̂·mean(dz·x̂)) (gain <= Γ·R·(2 + X²)),
                         dγ = Σ dz·x̂ (gain <= Σ|dy|·X) and dβ = Σ dz (gain <= Σ|dy|).

    Everything is made absolute with the largest |z| (and |y| <= L1·|z|, as f(0) = 0), except the
    one rounding of each side's result to the output dtype, kept relative (``rtol_z``).

    bfloat16 and float16: the fused kernel computes in float32 and rounds y once, whereas torch
    eager rounds the LayerNorm output to the 16-bit type before the activation, a second rounding
    the kernel rightly does not make. So a 16-bit dtype is compared with a float64 computation from
    the same 16-bit inputs, rounded once to that dtype. Then everything but that last rounding is
    float32 arithmetic: the model runs with float32's unit roundoff (16-bit inputs are exact in
    float32), e_f is float32's, relu's band is float32's, and the rounding of each side's result to
    the 16-bit dtype is the relative part, rtol = 2·u = eps of that dtype. (The upstream gradient
    is rounded to it, up to u larger than its float32 value used by the model: gradients' atol ×
    (1 + u).)
    """
    dtype = x.dtype
    arith = torch.float32 if dtype in REDUCED else dtype  # what the kernel computes in
    x, weight, bias = (None if t is None else t.detach().cpu().to(arith) for t in (x, weight, bias))
    stats = None if stats is None else tuple(s.detach().cpu().to(arith) for s in stats)
    base = norm_tolerances(x, grouping, weight, bias, eps, stats)
    if x.numel() == 0:
        return base, 0.0
    rtol = max(base["output"].rtol, torch.finfo(dtype).eps if dtype in REDUCED else 0.0)
    dy_scale = 1 + torch.finfo(dtype).eps / 2 if dtype in REDUCED else 1.0
    l1, l2 = DERIVATIVE_BOUNDS[activation]
    exact = activation in ("none", "relu")  # f and f' are exact: no evaluation error
    e_f = Tol(0.0, 0.0) if exact else pointwise_tol(arith)

    xd = x.double()
    if stats is None:
        mean = xd.mean(grouping.dims, keepdim=True)
        rstd = (((xd - mean) ** 2).mean(grouping.dims, keepdim=True) + eps).rsqrt()
    else:
        mean, var = (s.double().view(grouping.param_shape) for s in stats)
        rstd = (var + eps).rsqrt()
    x_hat = (xd - mean) * rstd
    w = 1.0 if weight is None else weight.double().view(grouping.param_shape)
    b = 0.0 if bias is None else bias.double().view(grouping.param_shape)
    z = x_hat * w + b

    X, R, Z = float(x_hat.abs().max()), float(rstd.max()), float(z.abs().max())
    gamma = 1.0 if weight is None else float(weight.double().abs().max()) if weight.numel() else 0.0
    dy = upstream_gradient(x.shape, dtype).double().abs()
    dy_max, dy_sum = float(dy.max()), float(dy.sum_to_size(grouping.param_shape).max())

    dz_err = base["output"].atol + base["output"].rtol * Z
    deriv_err = l2 * dz_err + e_f.rtol * l1 + e_f.atol
    tols = {
        "output": Tol(rtol, l1 * dz_err + e_f.rtol * l1 * Z + e_f.atol),
        "input": Tol(rtol, dy_scale * l1 * base["input"].atol + R * gamma * dy_max * deriv_err * (2 + X * X)),
        "weight": Tol(rtol, dy_scale * l1 * base["weight"].atol + dy_sum * deriv_err * X),
        "bias": Tol(rtol, dy_scale * l1 * base["bias"].atol + dy_sum * deriv_err),
    }
    return tols, dz_err


def act_oracle(acts, activation, z, fused_out, band):
    """``acts[activation](z)``, cast to the fused output's dtype, with relu's kink pinned.

    ReLU's derivative jumps at 0. Where the oracle's z lies within ``band`` (the bound on
    |z_fused − z_oracle|) of 0, the two sides may rightly land on opposite sides of the kink, and
    neither output nor gradient is then determined by the math; there the oracle follows the
    fused kernel's side (z·[y_fused > 0], a value within ``band`` of relu(z) either way).
    Everywhere else the sides must agree, so a wrongly zeroed output still fails.
    """
    y = acts[activation](z)
    if activation == "relu" and band > 0:
        ambiguous = z.detach().abs() <= band
        y = torch.where(ambiguous, z * (fused_out > 0).to(z.dtype), y)
    return y.to(fused_out.dtype)


def wide(t):
    """The oracle's precision: float64 for 16-bit tensors (see norm_act_tolerances)."""
    return t.double() if t is not None and t.dtype in REDUCED else t


def assert_norm_act_matches(fused, norm, acts, activation, inputs, *, tol, band, **params):
    """``assert_same_as_torch(fused, act(norm(...)))``, the oracle seeing the fused output for relu."""
    seen = {}

    def run_fused(*args):
        seen["y"] = y = fused(*args)
        return y

    def run_oracle(*args):
        return act_oracle(acts, activation, norm(*args), seen["y"].detach(), band)

    assert_same_as_torch(run_fused, run_oracle, inputs, tol=tol, **params)


def on_device(t, device):
    """``t`` on ``device`` with its strides, storage offset and NaN-fenced storage intact."""
    if t is None or torch.device(device).type == "cpu":
        return t
    t = t.detach()
    size = t.untyped_storage().nbytes() // t.element_size()
    flat = torch.empty(0, dtype=t.dtype).set_(t.untyped_storage(), 0, (size,), (1,))
    return flat.to(device).as_strided(t.shape, t.stride(), t.storage_offset())


# --- layer_norm_act -------------------------------------------------------------------------


@st.composite
def affine_params(draw, shape, dtype, device):
    """(weight, bias): weight only, bias only, both or neither, in any layout."""
    which = draw(st.sampled_from(("none", "weight", "bias", "both")))

    def param():
        return on_device(draw(tensors(shape, dtype, regimes=("normal",))), device).requires_grad_()

    return (param() if which in ("weight", "both") else None), (param() if which in ("bias", "both") else None)


@st.composite
def layer_norm_inputs(draw, device, dtypes=DTYPES):
    """x of shape (*batch, *normalized_shape), normalized over 1 or 2 trailing dims, any layout."""
    dtype = draw(st.sampled_from(dtypes))
    n = draw(st.sampled_from(ROW_LENGTHS) | st.integers(1, 40))
    shape = (n,) if draw(st.booleans()) else (draw(st.integers(1, 4)), min(n, 300))
    batch = draw(st.lists(st.integers(1, 4), max_size=2))
    if math.prod(shape) > 300:
        batch = batch[:1]
    if draw(st.integers(0, 7)) == 7:
        batch = [0, *batch[1:]]  # no rows at all
    x = draw(values((*batch, *shape), dtype, regimes=REGIMES))
    x = on_device(draw(layouts(x)), device).requires_grad_()
    weight, bias = draw(affine_params(shape, dtype, device))
    return x, shape, weight, bias, draw(eps_values)


def layer_norm_oracle(norm, shape, eps):
    return lambda x, w, b: norm(wide(x), shape, wide(w), wide(b), eps)


@devices
@activations
@per_activation
@given(data=st.data())
def test_layer_norm_act_matches_torch_and_the_reference(device, activation, data):
    x, shape, weight, bias, eps = data.draw(layer_norm_inputs(device))
    tol, band = norm_act_tolerances(x, trailing_grouping(x, len(shape)), weight, bias, eps, activation)
    spelled = shape[0] if len(shape) == 1 and data.draw(st.booleans()) else shape

    def fused(x, w, b):
        y = K.layer_norm_act(x, spelled, w, b, eps, activation)
        assert y.dtype == x.dtype
        assert y.shape == x.shape
        assert y.device == x.device
        return y

    inputs = {"input": x, "weight": weight, "bias": bias}
    for norm, acts in ((TF.layer_norm, TORCH_ACT), (F.layer_norm, REFERENCE_ACT)):
        oracle = layer_norm_oracle(norm, shape, eps)
        assert_norm_act_matches(fused, oracle, acts, activation, inputs, tol=tol, band=band)


# --- the LayerNorm+act kernel ladder (csrc/cpu/ln_ladder.cpp, rung 4 = csrc/cpu/norm_act.cpp) ---------


@st.composite
def ladder_cases(draw):
    """layer_norm_inputs (dtypes, odd row lengths, 0 to 16 rows, layouts, affine or not) and an activation."""
    x, shape, weight, bias, eps = draw(layer_norm_inputs("cpu"))
    return x, shape, weight, bias, eps, draw(st.sampled_from(K.ACTIVATIONS))


def ladder_case(rows, n, dtype, activation):
    """A fixed case: ``rows`` rows of ``n`` values, γ and β present."""
    g = torch.Generator().manual_seed(n)
    x, w, b = (torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for shape in ((rows, n), n, n))
    return x.requires_grad_(), (n,), w.requires_grad_(), b.requires_grad_(), 1e-5, activation


# Each rung, forward and the three gradients, against torch at the error model's tolerances (which
# hold for any summation order: the rungs sum in different orders). The explicit examples always run:
# no rows, one row, and rows longer than a vector that are no multiple of its width.
@pytest.mark.parametrize("rung", K.LADDER_RUNGS)
@given(case=ladder_cases())
@example(case=ladder_case(0, 7, torch.float32, "silu"))
@example(case=ladder_case(1, 17, torch.bfloat16, "gelu_tanh"))
@example(case=ladder_case(1, 1, torch.float64, "mish"))
@example(case=ladder_case(3, 1041, torch.float32, "gelu"))
def test_every_ladder_rung_matches_torch(rung, case):
    x, shape, weight, bias, eps, activation = case
    tol, band = norm_act_tolerances(x, trailing_grouping(x, len(shape)), weight, bias, eps, activation)

    def fused(x, w, b):
        y = K.layer_norm_act(x, shape, w, b, eps, activation, rung=rung)
        assert (y.dtype, y.shape) == (x.dtype, x.shape)
        return y

    oracle = layer_norm_oracle(TF.layer_norm, shape, eps)
    inputs = {"input": x, "weight": weight, "bias": bias}
    assert_norm_act_matches(fused, oracle, TORCH_ACT, activation, inputs, tol=tol, band=band)


@pytest.mark.parametrize("rung", [0, 5, -1, 2.0, True, "1"])
def test_an_invalid_rung_is_a_value_error_naming_the_valid_ones(rung):
    with pytest.raises(ValueError, match=r"rung must be None \(the production kernel\) or one of \(1, 2, 3, 4\)"):
        K.layer_norm_act(torch.randn(2, 3), 3, rung=rung)


@pytest.mark.parametrize("rung", [None, *K.LADDER_RUNGS])
def test_layer_norm_act_module_runs_the_rung_it_was_built_with(rung):
    # The module is the function with its parameters: the same bits, forward and gradients, as
    # layer_norm_act(..., rung=rung) (the ladder's rungs sum in different orders, so this tells them apart
    # only where the bits differ; the property above checks each rung against torch).
    m = K.LayerNormAct(33, activation="silu", rung=rung)
    with torch.no_grad():
        m.weight.copy_(torch.randn(33))
        m.bias.copy_(torch.randn(33))
    x = torch.randn(5, 33, requires_grad=True)
    y = m(x)
    (dx, dw, db) = torch.autograd.grad(y, (x, m.weight, m.bias), torch.ones_like(y))
    w, b = m.weight.detach().requires_grad_(), m.bias.detach().requires_grad_()
    y_fn = K.layer_norm_act(x, 33, w, b, m.eps, "silu", rung=rung)
    expected = (y_fn, *torch.autograd.grad(y_fn, (x, w, b), torch.ones_like(y_fn)))
    for got, want in zip((y, dx, dw, db), expected, strict=True):
        assert torch.equal(got, want)
    assert m.rung == rung
    assert ("rung=" in repr(m)) == (rung is not None)


def test_layer_norm_act_module_refuses_an_invalid_rung_when_built():
    with pytest.raises(ValueError, match=r"rung must be None \(the production kernel\) or one of \(1, 2, 3, 4\)"):
        K.LayerNormAct(8, rung=5)


@pytest.mark.parametrize("rung", [0, 4])
def test_the_ladder_op_itself_refuses_a_rung_it_does_not_have(rung):
    # Rung 4 is layer_norm_act itself; the ladder ops run rungs 1-3 (and say so).
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="rung must be 1, 2 or 3"):
        torch.ops.minitorch_nn.layer_norm_act_ladder(x, [3], None, None, 1e-5, "gelu", rung)
    mean, rstd = torch.zeros(2), torch.ones(2)
    with pytest.raises(ValueError, match="rung must be 1, 2 or 3"):
        torch.ops.minitorch_nn.layer_norm_act_ladder_backward(
            x, x, mean, rstd, [3], None, None, "gelu", [True] * 3, rung
        )


@devices
@pytest.mark.parametrize("rows", [0, 1, 5])
def test_layer_norm_act_handles_zero_and_few_rows(device, rows):
    x = torch.randn(rows, 17, device=device, requires_grad=True)
    w = torch.randn(17, device=device, requires_grad=True)
    b = torch.randn(17, device=device, requires_grad=True)
    y = K.layer_norm_act(x, 17, w, b, activation="silu")
    assert y.shape == x.shape
    dx, dw, db = torch.autograd.grad(y, (x, w, b), torch.ones_like(y))
    assert dx.shape == x.shape
    assert dw.shape == db.shape == (17,)
    if rows == 0:
        assert torch.equal(dw, torch.zeros_like(dw))
        assert torch.equal(db, torch.zeros_like(db))


@devices
def test_layer_norm_act_of_a_constant_row_is_the_activation_of_beta(device):
    # σ² = 0: x̂ = 0, so z = β exactly and y = f(β); the gradient is finite.
    x = torch.full((3, 9), 2.5, device=device, dtype=torch.float64, requires_grad=True)
    b = torch.linspace(-2, 2, 9, device=device, dtype=torch.float64, requires_grad=True)
    y = K.layer_norm_act(x, 9, None, b, activation="gelu")
    torch.testing.assert_close(y, TF.gelu(b.detach()).expand(3, 9))
    dx, db = torch.autograd.grad(y.sum(), (x, b))
    assert torch.isfinite(dx).all()
    assert torch.isfinite(db).all()


@devices
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [7, 1000, 4099])
def test_a_constant_row_normalizes_to_exactly_zero_at_any_magnitude(device, dtype, n):
    # Σx/N of N copies of c can be an ulp off c, and rstd ≈ 1/√eps amplified that into x̂ ≈ 0.3
    # (c = 12345.6, N = 1000 in float32). The kernel sums x − x[0] instead: exactly 0 here.
    for c in (12345.6, -3.1e5, 1e4 + 0.3, 7.0e-30, 2.5):
        if c > torch.finfo(dtype).max or -c > torch.finfo(dtype).max:
            continue  # -3.1e5 is -inf in float16
        x = torch.full((3, n), c, device=device, dtype=dtype)
        y, mean, _rstd = torch.ops.minitorch_nn.layer_norm_act(x, [n], None, None, 1e-5, "none")
        assert torch.equal(y, torch.zeros_like(y)), f"c={c}: {y.abs().max()}"
        assert torch.equal(mean, torch.full_like(mean, float(x[0, 0]))), f"c={c}"


# --- batch_norm_act -------------------------------------------------------------------------


@st.composite
def batch_norm_inputs(draw, device, dtypes=DTYPES, training=None):
    """x of shape (N, C), (N, C, L) or (N, C, H, W), NCHW, channels_last or any other layout."""
    dtype = draw(st.sampled_from(dtypes))
    ndim = draw(st.sampled_from((2, 3, 4)))
    c = draw(st.sampled_from(CHANNELS))
    shape = [draw(st.integers(1, 4)), c, *(draw(st.integers(1, 6)) for _ in range(ndim - 2))]
    training = draw(st.booleans()) if training is None else training
    if training and math.prod(shape) // c == 1:
        shape[0] = 2  # training needs more than one value per channel (tested separately)
    x = draw(values(tuple(shape), dtype, regimes=REGIMES))
    if ndim == 4 and draw(st.booleans()):
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = draw(layouts(x))
    return on_device(x, device).requires_grad_(), training


@st.composite
def running_stats(draw, c, dtype, device):
    """(running_mean, running_var) in the input's dtype, or float32 for 16-bit input (AMP's choice)."""
    if dtype in REDUCED:
        dtype = draw(st.sampled_from((dtype, torch.float32)))
    rm = draw(values((c,), dtype, regimes=("normal",)))
    rv = draw(values((c,), dtype, regimes=("normal",))).abs() + 0.5
    return rm.to(device), rv.to(device)


@devices
@activations
@per_activation
@given(data=st.data())
def test_batch_norm_act_matches_torch_and_the_reference(device, activation, data):
    x, training = data.draw(batch_norm_inputs(device))
    c = x.shape[1]
    stats = data.draw(running_stats(c, x.dtype, device)) if not training or data.draw(st.booleans()) else None
    # torch's rule: γ, β and the running statistics share one dtype (16-bit input's, or float32).
    weight, bias = data.draw(affine_params((c,), stats[0].dtype if stats else x.dtype, device))
    momentum, eps = data.draw(st.floats(0, 1)), data.draw(eps_values)
    tol, band = norm_act_tolerances(x, channel_grouping(x), weight, bias, eps, activation, None if training else stats)
    inputs = {"input": x, "weight": weight, "bias": bias}

    for norm, acts in ((TF.batch_norm, TORCH_ACT), (F.batch_norm, REFERENCE_ACT)):
        fused_stats = [s.clone() for s in stats] if stats else [None, None]
        # For bfloat16 input the oracle runs in float64, float32 running statistics included.
        oracle_stats = [s.to(wide(x).dtype).clone() for s in stats] if stats else [None, None]

        def fused(x, w, b, fused_stats=fused_stats):
            y = K.batch_norm_act(x, *fused_stats, w, b, training, momentum, eps, activation)
            assert y.stride() == torch.empty_like(x).stride(), "the output does not keep the input's layout"
            return y

        def oracle(x, w, b, norm=norm, oracle_stats=oracle_stats):
            # Dense copies: torch 2.13's CPU batch_norm backward mishandles some layouts (see contiguous()).
            # (γ, β in the oracle's dtype too: float32 beside 16-bit input is widened with it.)
            x, w, b = (contiguous(None if t is None else t.to(wide(x).dtype)) for t in (x, w, b))
            return norm(x, *oracle_stats, w, b, training, momentum, eps)

        assert_norm_act_matches(fused, oracle, acts, activation, inputs, tol=tol, band=band)
        if training and stats:
            m = x.numel() // c
            tol_mean, tol_var = running_stat_tolerances([x.detach().cpu()], stats[0].dtype, m, steps=1)
            for name, ours, theirs, t in zip(
                ("mean", "var"), fused_stats, oracle_stats, (tol_mean, tol_var), strict=True
            ):
                assert ours.dtype == stats[0].dtype
                assert_close(ours, theirs.to(ours.dtype), t, f"running_{name}")
        elif stats:
            for ours, before in zip(fused_stats, stats, strict=True):
                assert torch.equal(ours, before), "eval changed the running statistics"


@devices
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_batch_norm_act_output_and_input_gradient_keep_the_input_layout(device, memory_format):
    x = torch.randn(3, 5, 4, 6, device=device).to(memory_format=memory_format).requires_grad_()
    y = K.batch_norm_act(x, None, None, training=True, activation="mish")
    assert y.is_contiguous(memory_format=memory_format)
    (dx,) = torch.autograd.grad(y, x, torch.randn_like(y))
    assert dx.is_contiguous(memory_format=memory_format)


@devices
def test_batch_norm_act_on_an_empty_batch_leaves_running_stats_alone_like_torch(device):
    x = torch.randn(0, 3, 4, device=device, requires_grad=True)
    ours = (torch.zeros(3, device=device), torch.ones(3, device=device))
    theirs = (torch.zeros(3, device=device), torch.ones(3, device=device))
    y = K.batch_norm_act(x, *ours, training=True, activation="relu")
    TF.batch_norm(x, *theirs, training=True)
    assert y.shape == x.shape
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    (dx,) = torch.autograd.grad(y.sum(), x)
    assert dx.shape == x.shape


@devices
def test_relu_passes_the_gradient_through_a_nan_pre_activation_like_torch(device):
    # torch's relu backward zeroes dy where the output is ≤ 0; a NaN compares false, so dy passes.
    # Found by the fuzzer (OPEN[22], its ReLU half): the kernels' derivative was 0 there.
    x = torch.randn(4, 6, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.zeros(6, dtype=torch.float64, device=device)
    b[2] = float("nan")
    b.requires_grad_()
    dy = torch.randn(4, 6, dtype=torch.float64, device=device)
    ours = torch.autograd.grad(K.layer_norm_act(x, 6, None, b, activation="relu"), (x, b), dy)
    theirs = torch.autograd.grad(TF.relu(TF.layer_norm(x, (6,), None, b)), (x, b), dy)
    assert torch.isfinite(ours[1][[0, 1, 3, 4, 5]]).all()
    for a, t in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, t, equal_nan=True)


@devices
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
def test_eval_batch_norm_act_gradient_at_an_infinite_input_is_finite_like_torch(device, memory_format):
    # In eval dx = γ·rstd·dz: x̂ does not enter, so an infinite x must not make it ∞·0 = NaN.
    # Found by the fuzzer (OPEN[14]).
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=device).contiguous(memory_format=memory_format)
    x[1, 2, 3, 4] = float("inf")
    x[0, 1, 0, 0] = -float("inf")
    x.requires_grad_()
    rm = torch.randn(3, dtype=torch.float64, device=device)
    rv = torch.rand(3, dtype=torch.float64, device=device) + 0.5
    w = torch.randn(3, dtype=torch.float64, device=device)
    dy = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=device)
    (ours,) = torch.autograd.grad(K.batch_norm_act(x, rm, rv, w, None, activation="none"), x, dy)
    (theirs,) = torch.autograd.grad(TF.batch_norm(x, rm, rv, w, None), x, dy)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs)


@devices
def test_batch_norm_act_running_var_is_unbiased_and_normalization_biased(device):
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]], dtype=torch.float64, device=device)  # one channel, m = 4
    rm, rv = torch.zeros(1, dtype=torch.float64, device=device), torch.zeros(1, dtype=torch.float64, device=device)
    y = K.batch_norm_act(x, rm, rv, training=True, momentum=1.0, eps=1e-300, activation="none")  # eps > 0, as torch
    assert rm.item() == pytest.approx(3.0)
    assert rv.item() == pytest.approx(14 / 3)  # unbiased, not the biased 14/4
    assert y.pow(2).mean().item() == pytest.approx(1.0)  # normalized by the biased variance


@pytest.mark.parametrize(
    ("op", "shape", "training"),
    [
        pytest.param("layer_norm", (3, 2500), True, id="layer_norm-N2500"),
        pytest.param("batch_norm", (2, 5, 33, 35), True, id="nchw-S1155-train"),
        pytest.param("batch_norm", (2, 5, 33, 35), False, id="nchw-S1155-eval"),
        pytest.param("batch_norm_cl", (2, 19, 33, 35), True, id="channels_last-R2310-train"),
        pytest.param("batch_norm_cl", (2, 19, 33, 35), False, id="channels_last-R2310-eval"),
        pytest.param("batch_norm", (2100, 17), True, id="2d-R2100-train"),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, *REDUCED])
@devices
def test_long_reductions_across_the_kernels_summation_blocks_match_torch(device, dtype, op, shape, training):
    # The kernels sum at most 1024 values (or 64 rows of channels) in float before adding in
    # double, and split rows into per-thread chunks: these sizes cross both boundaries.
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1).to(dtype)
    if op == "batch_norm_cl":
        x = x.contiguous(memory_format=torch.channels_last)
    c = shape[-1] if op == "layer_norm" else shape[1]
    w, b = ((torch.randn(c, generator=g, dtype=torch.float64) + 1).to(dtype) for _ in range(2))
    x, w, b = (t.to(device).requires_grad_() for t in (x, w, b))
    # In γ and β's dtype: torch refuses 16-bit γ, β beside float32 running statistics.
    stats = (
        torch.linspace(-1, 1, c, device=device, dtype=dtype),
        torch.linspace(0.5, 2, c, device=device, dtype=dtype),
    )

    def fused(x, w, b):
        if op == "layer_norm":
            return K.layer_norm_act(x, c, w, b, activation="gelu")
        return K.batch_norm_act(x, *stats, w, b, training, 0.0, activation="gelu")

    def oracle(x, w, b):
        if op == "layer_norm":
            return TF.layer_norm(wide(x), (c,), wide(w), wide(b))
        wide_stats = [s.to(wide(x).dtype) for s in stats]
        return TF.batch_norm(wide(x).contiguous(), *wide_stats, wide(w), wide(b), training, 0.0)

    if op == "layer_norm":
        tol, band = norm_act_tolerances(x, trailing_grouping(x, 1), w, b, 1e-5, "gelu")
    else:
        tol, band = norm_act_tolerances(x, channel_grouping(x), w, b, 1e-5, "gelu", None if training else stats)
    inputs = {"input": x, "weight": w, "bias": b}
    assert_norm_act_matches(fused, oracle, TORCH_ACT, "gelu", inputs, tol=tol, band=band)


# --- modules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("momentum", "affine", "track_running_stats", "memory_format"),
    [
        (0.1, True, True, torch.contiguous_format),
        (None, True, True, torch.channels_last),  # cumulative average
        (0.7, False, True, torch.contiguous_format),
        (0.1, True, False, torch.channels_last),  # batch statistics in eval too
    ],
)
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@devices
def test_batch_norm_act2d_module_matches_torch_over_training_steps_and_eval(
    device, activation, momentum, affine, track_running_stats, memory_format
):
    kwargs = {"momentum": momentum, "affine": affine, "track_running_stats": track_running_stats}
    theirs = torch.nn.BatchNorm2d(5, **kwargs).to(device)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p))
    ours = K.BatchNormAct2d(5, activation=activation, **kwargs).to(device)
    ours.load_state_dict(theirs.state_dict())
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(3, 5, 4, 3, generator=g) * (i + 1) + i).to(device).to(memory_format=memory_format)
        for i in range(3)
    ]
    params = {"ours_params": dict(ours.named_parameters()), "oracle_params": dict(theirs.named_parameters())}

    def oracle(x):
        return theirs(contiguous(x))  # see contiguous(): torch's CPU backward and odd layouts

    for x in batches:
        x.requires_grad_()
        tol, band = norm_act_tolerances(x, channel_grouping(x), ours.weight, ours.bias, ours.eps, activation)
        assert_norm_act_matches(ours, oracle, TORCH_ACT, activation, {"input": x}, tol=tol, band=band, **params)
    if track_running_stats:
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
        cpu_batches = [x.detach().cpu() for x in batches]
        tol_mean, tol_var = running_stat_tolerances(cpu_batches, torch.float32, batches[0].numel() // 5, steps=3)
        assert_close(ours.running_mean, theirs.running_mean, tol_mean, "running_mean")
        assert_close(ours.running_var, theirs.running_var, tol_var, "running_var")
    ours.eval()
    theirs.eval()
    x = batches[0]
    stats = (theirs.running_mean, theirs.running_var) if track_running_stats else None
    tol, band = norm_act_tolerances(x, channel_grouping(x), ours.weight, ours.bias, ours.eps, activation, stats)
    assert_norm_act_matches(ours, oracle, TORCH_ACT, activation, {"input": x}, tol=tol, band=band, **params)


def test_momentum_none_running_stats_are_the_average_of_the_batch_statistics():
    m = K.BatchNormAct2d(2, momentum=None, activation="silu")
    batches = [torch.randn(8, 2, 3, 3, dtype=torch.float32) * (i + 1) + i for i in range(4)]
    for x in batches:
        m(x)
    per_batch = [x.transpose(0, 1).reshape(2, -1) for x in batches]
    torch.testing.assert_close(m.running_mean, torch.stack([b.mean(1) for b in per_batch]).mean(0))
    torch.testing.assert_close(m.running_var, torch.stack([b.var(1) for b in per_batch]).mean(0))
    assert int(m.num_batches_tracked) == 4


@pytest.mark.parametrize(
    ("fused_cls", "sources", "args", "kwargs"),
    [
        (K.LayerNormAct, (torch.nn.LayerNorm, nn.LayerNorm), (6,), {}),
        (K.LayerNormAct, (torch.nn.LayerNorm, nn.LayerNorm), ((2, 3),), {"bias": False}),
        (K.LayerNormAct, (torch.nn.LayerNorm, nn.LayerNorm), ((5,),), {"elementwise_affine": False}),
        (K.BatchNormAct2d, (torch.nn.BatchNorm2d, nn.BatchNorm2d), (5,), {}),
        (K.BatchNormAct2d, (torch.nn.BatchNorm2d, nn.BatchNorm2d), (3,), {"affine": False}),
        (K.BatchNormAct2d, (torch.nn.BatchNorm2d, nn.BatchNorm2d), (4,), {"track_running_stats": False}),
    ],
)
def test_state_dict_moves_between_fused_torch_and_reference_modules(fused_cls, sources, args, kwargs):
    fused = fused_cls(*args, activation="mish", **kwargs)
    for source_cls in sources:
        source = source_cls(*args, **kwargs)
        with torch.no_grad():
            for t in source.state_dict().values():
                t.copy_(torch.randint_like(t, 1, 9) if t.dtype == torch.long else torch.randn_like(t))
        fused.load_state_dict(source.state_dict())
        back = source_cls(*args, **kwargs)
        back.load_state_dict(fused.state_dict())
        assert fused.state_dict().keys() == source.state_dict().keys()
        for key, value in source.state_dict().items():
            assert torch.equal(back.state_dict()[key], value), key


@pytest.mark.parametrize("activation", ["gelu", "silu", "none"])
def test_layer_norm_act_module_computes_torch_layer_norm_then_the_activation(activation):
    theirs = torch.nn.LayerNorm((3, 7))
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p))
    ours = K.LayerNormAct((3, 7), activation=activation)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 3, 7, requires_grad=True)
    tol, band = norm_act_tolerances(x, trailing_grouping(x, 2), ours.weight, ours.bias, ours.eps, activation)
    assert_norm_act_matches(
        ours,
        theirs,
        TORCH_ACT,
        activation,
        {"input": x},
        tol=tol,
        band=band,
        ours_params=dict(ours.named_parameters()),
        oracle_params=dict(theirs.named_parameters()),
    )


def test_fused_modules_name_their_activation_in_repr():
    assert "activation='silu'" in repr(K.LayerNormAct(8, activation="silu"))
    assert "activation='gelu_tanh'" in repr(K.BatchNormAct2d(8, activation="gelu_tanh"))
    # ...after what the plain module prints, so a reader sees the same options as torch's.
    assert repr(K.LayerNormAct(8)).startswith("LayerNormAct(" + torch.nn.LayerNorm(8).extra_repr())
    assert repr(K.BatchNormAct2d(8)).startswith("BatchNormAct2d(" + torch.nn.BatchNorm2d(8).extra_repr())


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: K.LayerNormAct(4, activation="tanh"), id="LayerNormAct"),
        pytest.param(lambda: K.BatchNormAct2d(4, activation="GELU"), id="BatchNormAct2d"),
        pytest.param(lambda: K.layer_norm_act(torch.randn(2, 4), 4, activation="swish"), id="layer_norm_act"),
        pytest.param(
            lambda: K.batch_norm_act(torch.randn(2, 4), None, None, training=True, activation=""), id="batch_norm_act"
        ),
        pytest.param(
            lambda: torch.ops.minitorch_nn.layer_norm_act(torch.randn(2, 4), [4], None, None, 1e-5, "elu"),
            id="raw-op",
        ),
    ],
)
def test_unknown_activation_raises_value_error_listing_the_choices(make):
    with pytest.raises(ValueError, match="gelu_tanh"):
        make()


def test_batch_norm_act2d_checks_input_rank_like_torch():
    x = torch.randn(2, 3, 4)
    assert_raises_like_torch(lambda: K.BatchNormAct2d(3)(x), lambda: torch.nn.BatchNorm2d(3)(x))


# --- opcheck, gradcheck, torch.compile ------------------------------------------------------


def sample_inputs(device, *, requires_grad):
    """(op name, args) for every op: dtypes, 1-2 normalized dims, layouts, affine or not, each mode.

    One generator for all the checks, as pytorch/extension-cpp's tests build theirs. The backward
    ops get their saved statistics from the forward ops on the same inputs. With ``requires_grad``
    only the forward ops are sampled: the backward ops are not differentiable (no double backward).
    """
    g = torch.Generator().manual_seed(0)

    def make(*shape, dtype=torch.float32, grad=requires_grad, positive=False):
        t = torch.randn(shape, generator=g, dtype=dtype)
        t = t.abs() + 0.5 if positive else t
        return t.to(device).requires_grad_(grad)

    def stats(c, dtype=torch.float32):
        return make(c, dtype=dtype, grad=False), make(c, dtype=dtype, grad=False, positive=True)

    layer_norm = [
        (make(3, 7), [7], make(7), make(7), 1e-5, "gelu"),
        (make(2, 3, 5, dtype=torch.float64), [3, 5], None, None, 1e-3, "mish"),
        (make(4, 17, dtype=torch.bfloat16), [17], make(17, dtype=torch.bfloat16), None, 1e-5, "relu"),
        (make(5, 6).t(), [5], None, make(5), 1e-5, "silu"),  # non-contiguous
    ]
    batch_norm = [
        (make(4, 3, 2, 5), make(3), make(3), *stats(3), True, 0.1, 1e-5, "relu"),
        (make(2, 5, 3, 3).to(memory_format=torch.channels_last), make(5), None, *stats(5), False, 0.1, 1e-5, "silu"),
        (make(6, 7, dtype=torch.float64), None, None, None, None, True, 0.1, 1e-5, "gelu_tanh"),
        (make(3, 4, 5, dtype=torch.bfloat16), None, make(4), *stats(4), True, 0.3, 1e-3, "gelu"),  # float32 params
    ]
    # The ladder's ops (rungs 1-3; rung 4 is layer_norm_act): the same registration for every rung, so
    # two samples, each with its own rung (None: not sampled).
    rungs = (None, 1, None, 3)
    for args in layer_norm:
        yield "layer_norm_act", args
    for args, rung in zip(layer_norm, rungs, strict=True):
        if rung is not None:
            yield "layer_norm_act_ladder", (*args, rung)
    for args in batch_norm:
        yield "batch_norm_act", args
    if requires_grad:
        return
    # Every gradient, or only some (output_mask), alternately.
    masks = ([True, True, True], [False, True, False], [True, False, True], [True, True, True])
    for (x, shape, w, b, eps, act), mask, rung in zip(layer_norm, masks, rungs, strict=True):
        out, mean, rstd = torch.ops.minitorch_nn.layer_norm_act(x, shape, w, b, eps, act)
        yield "layer_norm_act_backward", (torch.randn_like(out), x, mean, rstd, shape, w, b, act, mask)
        if rung is not None:
            dy = torch.randn_like(out)
            yield "layer_norm_act_ladder_backward", (dy, x, mean, rstd, shape, w, b, act, mask, rung)
    for (x, w, b, rm, rv, training, momentum, eps, act), mask in zip(batch_norm, masks, strict=True):
        out, mean, rstd, _, _ = torch.ops.minitorch_nn.batch_norm_act(x, w, b, rm, rv, training, momentum, eps, act)
        yield "batch_norm_act_backward", (torch.randn_like(out), x, mean, rstd, w, b, training, act, mask)


@devices
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_passes_for_every_op(device, requires_grad):
    checked = set()
    for name, args in sample_inputs(device, requires_grad=requires_grad):
        torch.library.opcheck(getattr(torch.ops.minitorch_nn, name).default, args)
        checked.add(name)
    expected = {"layer_norm_act", "layer_norm_act_ladder", "batch_norm_act"}
    if not requires_grad:
        expected |= {"layer_norm_act_backward", "layer_norm_act_ladder_backward", "batch_norm_act_backward"}
    assert checked == expected


def smooth_float64_inputs(shape, param_shape, device, z_of, seed=0):
    """x, γ, β in float64 whose pre-activation z stays >= 0.05 from relu's kink at 0.

    gradcheck's finite differences (step 1e-6) must not straddle the kink; for continuous random
    data a seed or two suffices. The check is on every activation, harmlessly.
    """
    for s in range(seed, seed + 100):
        g = torch.Generator().manual_seed(s)
        x, w, b = (torch.randn(t, generator=g, dtype=torch.float64) for t in (shape, param_shape, param_shape))
        if z_of(x, w, b).abs().min() >= 0.05:
            return [t.to(device).requires_grad_() for t in (x, w, b)]
    raise AssertionError("no seed gave inputs away from the kink")


@devices
@activations
@pytest.mark.parametrize("shape", [(3, 5), (2, 2, 3)])
def test_layer_norm_act_passes_gradcheck(device, activation, shape):
    normalized = shape[1:]
    inputs = smooth_float64_inputs(shape, normalized, device, lambda x, w, b: TF.layer_norm(x, normalized, w, b, 1e-3))
    # Second order is not registered: the backward is an op of its own without a derivative.
    check_gradients(lambda x, w, b: K.layer_norm_act(x, normalized, w, b, 1e-3, activation), inputs, second_order=False)


@devices
@pytest.mark.parametrize(("rung", "activation"), [(1, "mish"), (2, "gelu_tanh"), (3, "gelu"), (3, "silu")])
def test_every_ladder_rung_passes_gradcheck(device, rung, activation):
    # Rows of 9 float64 values: two vectors of 4 (AVX2) and a tail. The activations' derivatives are
    # each checked against torch by test_every_ladder_rung_matches_torch; here, one per rung.
    shape, normalized = (3, 9), (9,)
    inputs = smooth_float64_inputs(shape, normalized, device, lambda x, w, b: TF.layer_norm(x, normalized, w, b, 1e-3))
    fn = lambda x, w, b: K.layer_norm_act(x, normalized, w, b, 1e-3, activation, rung=rung)  # noqa: E731
    check_gradients(fn, inputs, second_order=False)


@devices
@activations
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_act_passes_gradcheck(device, activation, training):
    stats = None
    if not training:
        stats = (
            torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64),
            torch.tensor([0.8, 1.5, 0.6], dtype=torch.float64),
        )

    def run(norm, x, w, b, **kwargs):
        rm, rv = (s.clone().to(device) for s in stats) if stats else (None, None)
        return norm(x, rm, rv, w, b, training, **kwargs)

    inputs = smooth_float64_inputs((4, 3, 2), (3,), device, lambda x, w, b: run(TF.batch_norm, x, w, b))
    check_gradients(lambda x, w, b: run(K.batch_norm_act, x, w, b, activation=activation), inputs, second_order=False)


class _Block(torch.nn.Module):
    """BatchNorm+relu on NCHW, then LayerNorm+gelu over channels: both ops, both layouts."""

    def __init__(self, c):
        super().__init__()
        self.bn = K.BatchNormAct2d(c, activation="relu")
        self.ln = K.LayerNormAct(c, activation="gelu")

    def forward(self, x):
        return self.ln(self.bn(x).permute(0, 2, 3, 1))


@devices
def test_torch_compile_fullgraph_gives_the_eager_values_gradients_and_running_stats(device):
    torch._dynamo.reset()
    eager = _Block(5).to(device)
    with torch.no_grad():
        for p in eager.parameters():
            p.copy_(torch.randn_like(p))
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True)
    x = torch.randn(3, 5, 4, 6, device=device)
    results = []
    for module, fn in ((eager, eager), (compiled_module, compiled)):
        xi = x.clone().requires_grad_()
        y = fn(xi)
        grads = torch.autograd.grad(y, [xi, *module.parameters()], upstream_gradient(y.shape, y.dtype).to(device))
        results.append((y, *grads, module.bn.running_mean, module.bn.running_var, module.bn.num_batches_tracked))
    names = ["output", "input grad", "bn.weight grad", "bn.bias grad", "ln.weight grad", "ln.bias grad"]
    names += ["running_mean", "running_var", "num_batches_tracked"]
    # The compiled graph calls the same kernels on the same values: equal to float32's pointwise tolerance.
    for name, a, b in zip(names, *results, strict=True):
        if a.is_floating_point():
            assert_close(b, a, pointwise_tol(torch.float32), f"compiled {name}")
        else:
            assert torch.equal(a, b), name


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((torch.randn(2, 3), (4,)), id="shape-mismatch"),
        pytest.param((torch.randn(3), (2, 3)), id="more-dims-than-input"),
        pytest.param((torch.randn(2, 3), ()), id="no-normalized-dims"),
        pytest.param((torch.randn(2, 3), (3,), torch.ones(4)), id="weight-shape"),
        pytest.param((torch.randn(2, 3), (3,), None, torch.ones(2)), id="bias-shape"),
        pytest.param((torch.randn(2, 3), (3,), torch.ones(3, dtype=torch.float64)), id="weight-dtype"),
        pytest.param((torch.randn(2, 3), (3,), None, torch.ones(3, dtype=torch.float64)), id="bias-dtype"),
    ],
)
@pytest.mark.parametrize("rung", [None, 1, 2, 3])
def test_layer_norm_act_bad_arguments_raise_like_torch(args, rung):
    error = assert_raises_like_torch(lambda: K.layer_norm_act(*args, rung=rung), lambda: TF.layer_norm(*args))
    assert "layer_norm_act" in str(error)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((torch.randn(4, 3), torch.zeros(4), torch.ones(4), None, None, True), id="running-mean-size"),
        pytest.param((torch.randn(4, 3), torch.zeros(3), torch.ones(3), torch.ones(4), None, True), id="weight-size"),
        pytest.param((torch.randn(4, 3), torch.zeros(3), torch.ones(3), None, torch.ones(2), False), id="bias-size"),
        pytest.param((torch.randn(4, 3), None, None, None, None, False), id="eval-without-stats"),
        pytest.param((torch.randn(3), torch.zeros(3), torch.ones(3), None, None, True), id="1d-input"),
        pytest.param((torch.randn(1, 3), None, None, None, None, True), id="one-value-per-channel"),
        pytest.param((torch.randn(1, 3, 1, 1), torch.zeros(3), torch.ones(3), None, None, True), id="one-value-4d"),
        pytest.param(
            (torch.randn(4, 3), torch.zeros(3), None, None, None, True),
            id="running-mean-without-running-var",
        ),
        pytest.param(
            (torch.randn(4, 3), None, None, torch.ones(3, dtype=torch.float64), None, True),
            id="weight-dtype",
        ),
    ],
)
def test_batch_norm_act_bad_arguments_raise_like_torch(args):
    assert_raises_like_torch(lambda: K.batch_norm_act(*args), lambda: TF.batch_norm(*args))


@pytest.mark.parametrize(
    ("fused", "theirs"),
    [
        pytest.param(
            lambda x, w: K.layer_norm_act(x, 3, w, w, activation="none"),
            lambda x, w: TF.layer_norm(x, (3,), w, w),
            id="layer_norm_act",
        ),
        pytest.param(
            lambda x, w: K.batch_norm_act(x, None, None, w, w, True, activation="none"),
            lambda x, w: TF.batch_norm(x, None, None, w, w, True),
            id="batch_norm_act",
        ),
    ],
)
@pytest.mark.parametrize("dtype", REDUCED)
def test_16_bit_input_with_float32_parameters_is_accepted_like_torch(fused, theirs, dtype):
    # Mixed precision keeps parameters in float32; torch's CPU kernels take them with 16-bit input.
    x, w = torch.randn(4, 3).to(dtype), torch.randn(3)
    expected = theirs(x, w)
    actual = fused(x, w)
    assert actual.dtype == expected.dtype == dtype
    torch.testing.assert_close(actual, expected)


def test_python_and_cpp_list_the_same_activations():
    # C++ lists the activations once (MTNN_FOR_EACH_ACT in csrc/activation.h); the op's error
    # for an unknown name is generated from that list, so it shows what C++ accepts.
    with pytest.raises(ValueError, match="activation must be one of") as error:
        torch.ops.minitorch_nn.layer_norm_act(torch.randn(2, 3), [3], None, None, 1e-5, "tanh")
    listed = re.findall(r"'(\w+)'", str(error.value).split(";")[0])
    assert tuple(listed) == K.ACTIVATIONS
    for name in K.ACTIVATIONS:  # and each is accepted
        torch.ops.minitorch_nn.layer_norm_act(torch.randn(2, 3), [3], None, None, 1e-5, name)


def test_one_value_per_channel_in_training_is_a_value_error_from_the_op_itself():
    # The op checks (the Python function leaves it to the op: torch.compile and opcheck call it directly).
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.ops.minitorch_nn.batch_norm_act(torch.randn(1, 3, 1), None, None, None, None, True, 0.1, 1e-5, "relu")
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        K.batch_norm_act(torch.randn(1, 3, 1), None, None, training=True)
    # In eval the running statistics normalize, so one sample is fine.
    y = K.batch_norm_act(torch.randn(1, 3), torch.zeros(3), torch.ones(3), training=False)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda x: K.layer_norm_act(x, 3), id="layer_norm_act"),
        pytest.param(lambda x: K.batch_norm_act(x, None, None, training=True), id="batch_norm_act"),
    ],
)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_input_is_rejected_with_the_supported_dtypes_named(call, dtype):
    # torch raises NotImplementedError ("not implemented for 'Long'") for integers; so do the
    # kernels, naming what they support.
    x = torch.arange(6).view(2, 3).to(dtype)
    with pytest.raises(NotImplementedError, match="float32, float64, bfloat16 or float16"):
        call(x)


def test_layer_norm_act_over_empty_rows_differentiates_like_torch():
    # normalized_shape (0,): three rows of nothing. The statistics keep the batch shape (3,), so
    # the backward must count rows from the batch shape, not from numel / N.
    x = torch.randn(3, 0, requires_grad=True)
    w = torch.randn(0, requires_grad=True)
    y = K.layer_norm_act(x, 0, w, w, activation="gelu")
    expected = TF.gelu(TF.layer_norm(x, (0,), w, w))
    assert y.shape == expected.shape == (3, 0)
    grads = torch.autograd.grad(y.sum(), (x, w))
    assert [g.shape for g in grads] == [g.shape for g in torch.autograd.grad(expected.sum(), (x, w))]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        pytest.param(
            lambda x, p: K.layer_norm_act(x, 3, p, None), lambda x, p: TF.layer_norm(x, (3,), p), id="ln-weight"
        ),
        pytest.param(
            lambda x, p: K.layer_norm_act(x, 3, None, p), lambda x, p: TF.layer_norm(x, (3,), None, p), id="ln-bias"
        ),
        pytest.param(
            lambda x, p: K.batch_norm_act(x, None, None, p, None, True),
            lambda x, p: TF.batch_norm(x, None, None, p, None, True),
            id="bn-weight",
        ),
        pytest.param(
            lambda x, p: K.batch_norm_act(x, p, p.abs() + 1, None, None, False),
            lambda x, p: TF.batch_norm(x, p, p.abs() + 1, None, None, False),
            id="bn-running-stats",
        ),
    ],
)
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_parameter_on_another_device_raises_like_torch(ours, theirs):
    x, p = torch.randn(4, 3, device="cuda"), torch.randn(3)
    error = assert_raises_like_torch(lambda: ours(x, p), lambda: theirs(x, p))
    assert "cpu" in str(error).lower()


# --- repeatability and the derivative bounds ------------------------------------------------


# Reductions that split rows into chunks: LayerNorm's dγ/dβ, and channels_last / 2-D BatchNorm's
# statistics and sums (over more than 64 rows, so several chunks).
CHUNKED_CASES = [
    pytest.param(lambda x, w, b: K.layer_norm_act(x, 67, w, b), (200, 67), 67, id="layer_norm"),
    pytest.param(lambda x, w, b: K.layer_norm_act(x, 67, w, b, rung=2), (200, 67), 67, id="layer_norm-rung2"),
    pytest.param(lambda x, w, b: K.layer_norm_act(x, 67, w, b, rung=3), (200, 67), 67, id="layer_norm-rung3"),
    pytest.param(
        lambda x, w, b: K.batch_norm_act(x, None, None, w, b, True, activation="silu"), (8, 37, 9, 7), 37, id="nchw"
    ),
    pytest.param(
        lambda x, w, b: K.batch_norm_act(
            x.contiguous(memory_format=torch.channels_last), None, None, w, b, True, activation="silu"
        ),
        (8, 37, 9, 7),
        37,
        id="channels_last",
    ),
    pytest.param(lambda x, w, b: K.batch_norm_act(x, None, None, w, b, True), (600, 37), 37, id="2d"),
]


@pytest.mark.parametrize(("op", "shape", "params"), CHUNKED_CASES)
@devices
def test_backward_is_bitwise_repeatable(device, op, shape, params):
    # dγ and dβ sum over rows in a fixed number of chunks added in a fixed order, whichever thread
    # ran which chunk.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g).to(device).requires_grad_()
    w, b = (torch.randn(params, generator=g).to(device).requires_grad_() for _ in range(2))
    dy = torch.randn(shape, generator=g).to(device)
    first, second = (torch.autograd.grad(op(x, w, b), (x, w, b), dy) for _ in range(2))
    for a, b_ in zip(first, second, strict=True):
        assert torch.equal(a, b_)


@pytest.mark.parametrize(("op", "shape", "params"), CHUNKED_CASES)
def test_results_do_not_depend_on_the_thread_count(op, shape, params):
    # The number of chunks depends on the input alone (num_chunks in csrc/cpu/norm_act.cpp), so 1, 2
    # or 3 threads compute the same partial sums and add them in the same order: bitwise equal.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=g).requires_grad_()
    w, b = (torch.randn(params, generator=g).requires_grad_() for _ in range(2))
    dy = torch.randn(shape, generator=g)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            y = op(x, w, b)
            results.append((y.detach(), *torch.autograd.grad(y, (x, w, b), dy)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b_ in zip(results[0], other, strict=True):
            assert torch.equal(a, b_)


@pytest.mark.parametrize("activation", K.ACTIVATIONS)
def test_derivative_bounds_hold(activation):
    # The L1, L2 in norm_act_tolerances must bound |f'| and |f''|; checked on a fine grid in float64.
    z = torch.linspace(-30, 30, 120001, dtype=torch.float64, requires_grad=True)
    (d1,) = torch.autograd.grad(TORCH_ACT[activation](z).sum(), z, create_graph=True)
    l1, l2 = DERIVATIVE_BOUNDS[activation]
    assert d1.abs().max() <= l1
    if d1.requires_grad:
        (d2,) = torch.autograd.grad(d1.sum(), z)
        assert d2.abs().max() <= l2
