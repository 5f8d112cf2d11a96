r"""The compiled activation math (csrc/activation.h), tested through the op that ships it.

The fused LayerNorm+act op computes ``z = x̂·γ + β``, ``y = f(z)`` and, in its backward,
``dz = dy·f'(z)``, ``dβ = Σ_rows dz``. With γ = 0 and β = z the affine step is exact
(x̂·0 + β = β for any finite x̂), so for one row with dy = 1 the op's output *is* f(z) and its
dβ *is* f'(z), each as the kernel computed it. Those are compared with f and f' evaluated in
50-digit arithmetic (mpmath) at the same z, on a grid that reaches into both tails.

Row lengths: the CPU kernels run ``Vectorized`` loops (8 float / 4 double lanes with AVX2, 16 / 8
with AVX-512) and finish a row with one masked partial vector. The grid is fed in rows of 64
values (whole vectors only), of 1603 values (1603 = 16·100 + 3: whole vectors and a 3-lane tail
on every ISA), and of 3 (a tail alone).

Error bounds (derived, not tuned)
---------------------------------
Errors are in units of ``eps`` (2^-52 float64, 2^-23 float32), relative to the *scale* of each
formula: ``|f(z)|`` for the output, ``Σ_i |t_i(z)|`` for a derivative written as a sum of terms
``f' = Σ t_i``. (Near a zero of f', e.g. GELU's at z ≈ −0.75, the terms cancel in any
evaluation, so the error is judged against them, not against f'.) For each term the bound adds,
to first order in eps:

* 0.5 per rounded ``+ − × /`` on its path (0.5 eps = the unit roundoff; a sum of same-signed
  numbers is as accurate as its parts) and 0.5 per rounded constant (3κ: 1, two roundings);
* the primitives' maximum errors, ``P_exp`` and ``P_erfc`` ulps (1 ulp ≤ 1 eps relative): on
  the CPU in float64, SLEEF's Sleef_expd4_u10 (1.0) and Sleef_erfcd4_u15 (1.5); float lanes use
  csrc/cpu/vec_math.h's inline exp (1.26, measured over every float) and its Φ built on the
  Gaussian, whose bound is derived there and in ``_normal_fast_eps``: 7.6 + z²/4 at z. On a GPU,
  the CUDA C++ Programming Guide's table: expf 2, erfcf 4, exp 1, erfc 5;
* the *argument* amplification: if w carries a relative error δ, exp(w) carries |w|·δ more,
  and erfc(a) carries S(a)·δ with S(a) = |a·erfc'(a)/erfc(a)| = 2|a|e^{−a²}/(√π erfc(a))
  (≈ 2a² + 1 in the tail a ≫ 1). This is the only growth with z: rounding z² or z³ is
  unavoidable in working precision, so a value like Φ(−20) ≈ 3e-89 is good to ~400 eps.

Per activation (the formulas are those of csrc/activation.h; v = 2u, 𝜎± = σ(±v)):

* gelu   f = z·Φ(z), Φ = ½erfc(a), a = z·fl(−1/√2) (δ_a ≤ 1):     f:  P_Φ + 0.5
         with P_Φ = P_erfc + S(a) (on the CPU's float lanes, ``_normal_fast_eps(z)`` instead);
         f' = Φ + z·φ,  φ = c·exp(w), w = (−½z)·z (δ_w ≤ 0.5):
         t1: P_Φ;   t2: P_exp + |w|/2 + 1.5
* gelu_tanh  v = fl(2√(2/π))·(z + ((κz)z)z): δ_v ≤ 3.5 (seven roundings);
         f = z/(1 + exp(−v)):                           f:  σ(−v)·(P_exp + 3.5|v|) + 1.5
         f' = 𝜎+ + (2z𝜎+)·(u'𝜎−), the pair from e = exp(−|v|) (δ_e = P_exp + 3.5|v|):
         σ(|v|) = 1/(1 + e): σ(−|v|)·δ_e + 1;   σ(−|v|) = e·σ(|v|): δ_e + δ(σ(|v|)) + 0.5;
         u' = c'(1 + 3κ·z²): 3.5;   t1: δ(𝜎+);   t2: δ(𝜎+) + δ(𝜎−) + 3.5 + 1.5
* silu   f = z/(1 + exp(−z)) (z is exact):                f:  σ(−z)·P_exp + 1.5
         f' = 𝜎+·(1 + z𝜎−), pair from e = exp(−|z|) (δ_e = P_exp):
         t1 = 𝜎+: δ(𝜎+) + 0.5;   t2 = 𝜎+z𝜎−: δ(𝜎+) + δ(𝜎−) + 1
* mish   w = exp(z), n = w(w + 2) (δ_n ≤ 2P_exp + 1), t = tanh(softplus z) = n/(n + 2):
         δ_t ≤ δ_n·2/(n + 2) + 1.5 (as n·r in f');          f = z·t:  δ_t + 0.5
         f' = t + z·sech²·σ(z), sech² = 4(n + 1)r², r = 1/(n + 2) (sensitivity to n ≤ 1):
         sech²: δ_n + 3.5;  σ(z) = w/(1 + w): P_exp + 1;      t1: δ_t;  t2: δ(sech²) + δ(σ) + 1
  Above z = 30 the kernel takes f = z, f' = 1: off by 4z·e^{−2z} < 1e-24, far below an eps.

Every derivative also gets 0.5·|f'| for the final sum's rounding. Domains: z in [−20, 20] in
float64 and [−10, 10] in float32, so that every intermediate stays a normal number (σ(v) of
GELU-tanh at z = −10 is 1.2e-38, just above float32's smallest normal); beyond them the tails
underflow and an absolute error of a subnormal ulp is all that is left to measure.

Before this test: the textbook forms 1 + erf and 1 ± tanh lost every digit of GELU and
GELU-tanh in the left tail (f(−10) and f'(−10) were 0 or 100% off in both dtypes; f'(−8) of
exact GELU was 1e11 eps off in float64).
"""

from __future__ import annotations

import functools

import mpmath
import pytest
import torch

import minitorch_nn.kernels as K

pytestmark = pytest.mark.skipif(not K.AVAILABLE, reason=f"compiled ops unavailable: {K.UNAVAILABLE_REASON}")

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]


def _normal_fast_eps(z):
    """Error bound (float eps) of Φ(z) as csrc/cpu/vec_math.h's normal_fast computes it for float lanes.

    Φ(−|z|) = t·R(t)·exp(w), t = 1/(1 + 0.32|z|), w = (−½z)·z, R of degree 9; Φ(z) = 1 − Φ(−z) for z > 0.
    0.44: the fit, with its coefficients rounded to float (against 30 digits, t dense in (0, 1]);
    1.46: R's nine Horner FMAs, Σ_k ½|p_k(t)|·t^k/R(t) at its maximum on (0, 1] (t = 1, z = 0);
    2.97: t's error, 1.19 (fl(0.32) 0.19, the FMA and the division 0.5 each), times the
    sensitivity of t·R(t) to t, |1 + t·R'(t)/R(t)| ≤ 2.49; 1.26 + z²/4: exp (1.26 ulp, measured)
    and its argument, of size z²/2, rounded once; 1: the products t·R and (t·R)·exp(w);
    0.5: 1 − Φ(−z) for z > 0 (Φ(−z) ≤ ½ ≤ Φ(z): its error does not grow).
    """
    return 0.44 + 1.46 + 2.97 + 1.26 + z * z / 4 + 1 + (0.5 if z > 0 else 0)


def _phi_by_erfc(p_erfc):
    """Error bound (eps) of Φ(z) = ½erfc(a), a = z·fl(−1/√2) rounded (δ_a ≤ 1): P_erfc + S(a)."""

    def bound(z):
        a = -z / mpmath.sqrt(2)
        return p_erfc + 2 * abs(a) * mpmath.exp(-(a**2)) / (mpmath.sqrt(mpmath.pi) * mpmath.erfc(a))

    return bound


# Maximum errors of the exp (ulps) each device's kernels call and of their Φ (eps, as a function
# of z; see the docstring).
PRIMITIVE_ULPS = {
    ("cpu", torch.float32): (1.26, _normal_fast_eps),
    ("cpu", torch.float64): (1.0, _phi_by_erfc(1.5)),
    ("cuda", torch.float32): (2.0, _phi_by_erfc(4.0)),
    ("cuda", torch.float64): (1.0, _phi_by_erfc(5.0)),
}
DOMAIN = {torch.float64: (-20.0, 20.0), torch.float32: (-10.0, 10.0)}
GRID_POINTS = 1603  # 16·100 + 3: a partial vector at the end of a full-length row on every ISA
ROW_LENGTHS = (64, GRID_POINTS, 3)
SMOOTH = ("gelu", "gelu_tanh", "silu", "mish")

_C = mpmath.sqrt(2 / mpmath.pi)
_KAPPA = mpmath.mpf("0.044715")


def _sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def _sigmoid_pair_bounds(v, abs_v_error, p_exp):
    """Error bounds (eps) of σ(v), σ(−v) from e = exp(−|v|) whose argument has absolute error abs_v_error/eps."""
    d_e = p_exp + abs_v_error
    s_small = _sigmoid(-abs(v))
    d_big = s_small * d_e + 1  # 1/(1 + e): the sum's share of e's error, two roundings
    d_small = d_e + d_big + 0.5  # e·σ(|v|)
    return (d_big, d_small) if v >= 0 else (d_small, d_big)


def _exact(name, z, p_exp, p_phi):
    """(f, f', f's bound, scale of f', bound for f') at z, in 50 digits; bounds in eps (see the docstring)."""
    if name == "gelu":
        cdf, pdf = mpmath.ncdf(z), mpmath.npdf(z)
        terms = [(cdf, p_phi(z)), (z * pdf, p_exp + z * z / 4 + 1.5)]
        return z * cdf, p_phi(z) + 0.5, terms
    if name == "gelu_tanh":
        v = 2 * _C * (z + _KAPPA * z**3)
        du = _C * (1 + 3 * _KAPPA * z**2)
        s_pos, s_neg = _sigmoid(v), _sigmoid(-v)
        d_pos, d_neg = _sigmoid_pair_bounds(v, 3.5 * abs(v), p_exp)
        terms = [(s_pos, d_pos), (2 * z * s_pos * du * s_neg, d_pos + d_neg + 3.5 + 1.5)]
        return z * s_pos, s_neg * (p_exp + 3.5 * abs(v)) + 1.5, terms
    if name == "silu":
        s_pos, s_neg = _sigmoid(z), _sigmoid(-z)
        d_pos, d_neg = _sigmoid_pair_bounds(z, 0, p_exp)
        terms = [(s_pos, d_pos + 0.5), (s_pos * z * s_neg, d_pos + d_neg + 1)]
        return z * s_pos, s_neg * p_exp + 1.5, terms
    # mish
    w = mpmath.exp(z)
    n = w * (w + 2)
    t = n / (n + 2)
    d_n = 2 * p_exp + 1
    d_t = d_n * 2 / (n + 2) + 1.5
    sech2 = 4 * (n + 1) / (n + 2) ** 2
    terms = [(t, d_t), (z * sech2 * w / (1 + w), (d_n + 3.5) + (p_exp + 1) + 1)]
    return z * t, d_t + 0.5, terms


@functools.cache
def oracle(name, dtype, device):
    """z and, per z: f, f', and the allowed errors of f and f' (absolute, float64 tensors)."""
    mpmath.mp.dps = 50
    lo, hi = DOMAIN[dtype]
    z = torch.linspace(lo, hi, GRID_POINTS, dtype=torch.float64).to(dtype)
    p_exp, p_phi = PRIMITIVE_ULPS[(device, dtype)]
    eps = torch.finfo(dtype).eps
    rows = []
    for value in z.double().tolist():
        f, f_bound, terms = _exact(name, mpmath.mpf(value), p_exp, p_phi)
        df = sum(t for t, _ in terms)
        allowed_df = sum(abs(t) * b for t, b in terms) + abs(df) / 2
        rows.append((float(f), float(df), float(abs(f) * f_bound) * eps, float(allowed_df) * eps))
    f, df, allowed_f, allowed_df = torch.tensor(rows, dtype=torch.float64).unbind(1)
    return z, f, df, allowed_f, allowed_df


def through_the_op(z, activation, row_length, device):
    """f(z) and f'(z) as LayerNorm+act computes them: γ = 0, β = z, one row of dy = 1 per call."""
    outputs, derivatives = [], []
    g = torch.Generator().manual_seed(0)
    for beta in z.split(row_length):
        n = beta.numel()
        x = torch.randn(1, n, generator=g, dtype=z.dtype).to(device)
        weight = torch.zeros(n, dtype=z.dtype, device=device)
        beta = beta.to(device)
        y, mean, rstd = torch.ops.minitorch_nn.layer_norm_act(x, [n], weight, beta, 1e-5, activation)
        _, _, dbeta = torch.ops.minitorch_nn.layer_norm_act_backward(
            torch.ones_like(x), x, mean, rstd, [n], weight, beta, activation, [False, False, True]
        )
        outputs.append(y[0].cpu())
        derivatives.append(dbeta.cpu())
    return torch.cat(outputs).double(), torch.cat(derivatives).double()


def _worst(error, allowed, z):
    ratio = error / allowed
    i = int(ratio.argmax())
    where = f"z = {z[i].item():.4g} (error {error[i].item():.3g}, bound {allowed[i].item():.3g})"
    return f"{ratio[i].item():.3g}× its bound at {where}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("row_length", ROW_LENGTHS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("activation", SMOOTH)
def test_compiled_activation_and_derivative_are_within_their_error_bounds_of_50_digit_values(
    activation, dtype, row_length, device
):
    z, f, df, allowed_f, allowed_df = oracle(activation, dtype, device)
    y, dy_dz = through_the_op(z, activation, row_length, device)
    error_f, error_df = (y - f).abs(), (dy_dz - df).abs()
    assert (error_f <= allowed_f).all(), f"{activation} f: {_worst(error_f, allowed_f, z)}"
    assert (error_df <= allowed_df).all(), f"{activation} f': {_worst(error_df, allowed_df, z)}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("activation", SMOOTH)
def test_compiled_activations_keep_their_digits_in_the_left_tail(activation, dtype, device):
    # The tail values the textbook forms lost entirely: relative error, not error against the
    # scale, at points where f and f' are tiny (GELU-tanh's f'(−8) = −4.7e-20 came out 0).
    z = torch.tensor([-8.0, -9.5], dtype=dtype)
    mpmath.mp.dps = 50
    p_exp, p_phi = PRIMITIVE_ULPS[(device, dtype)]
    y, dy_dz = through_the_op(z, activation, z.numel(), device)
    eps = torch.finfo(dtype).eps
    for i, value in enumerate(z.tolist()):
        f, f_bound, terms = _exact(activation, mpmath.mpf(value), p_exp, p_phi)
        df = sum(t for t, _ in terms)
        assert abs(y[i].item() - float(f)) <= float(f_bound) * eps * abs(float(f)), (activation, value, "f")
        # In this tail the terms of f' share a sign or differ in size by z², so |f'| ≈ Σ|t_i|.
        bound = float(sum(abs(t) * b for t, b in terms) + abs(df) / 2) * eps
        assert abs(dy_dz[i].item() - float(df)) <= bound <= 1e3 * eps * abs(float(df)), (activation, value, "f'")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_relu_and_identity_are_exact(dtype, device):
    z = torch.linspace(-10, 10, 101, dtype=dtype)
    for activation, f, df in (
        ("none", z, torch.ones_like(z)),
        ("relu", z.clamp(min=0), (z > 0).to(dtype)),
    ):
        y, dy_dz = through_the_op(z, activation, z.numel(), device)
        assert torch.equal(y, f.double()), activation
        assert torch.equal(dy_dz, df.double()), activation


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("activation", SMOOTH)
def test_compiled_activations_saturate_to_their_limits_without_nan(activation, dtype):
    # Far out, exp and erfc under- or overflow; every formula must land on the limit, not on
    # inf/inf or 0·inf. For z >= 100, f(z) = z and f'(z) = 1 to far below an eps; for z <= -100,
    # |f| and |f'| are below 1e-39 (SiLU and Mish vanish slowest: f'(−100) ≈ −99·e^−100 ≈ −4e-42).
    big = torch.finfo(dtype).max ** (1 / 4)  # z³ and z·u' stay finite
    z = torch.tensor([-big, -1e4, -800.0, -100.0, 100.0, 800.0, 1e4, big], dtype=dtype)
    y, dy_dz = through_the_op(z, activation, z.numel(), "cpu")
    positive = z > 0
    assert torch.equal(y[positive], z[positive].double()), activation
    assert torch.equal(dy_dz[positive], torch.ones_like(dy_dz[positive])), activation
    assert (y[~positive].abs() <= 1e-39).all(), activation
    assert (dy_dz[~positive].abs() <= 1e-39).all(), activation
