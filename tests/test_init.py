"""init: bit-identical to torch.nn.init under one seed, the same errors, and why the scales matter."""

from __future__ import annotations

import contextlib
import math
import signal

import mpmath
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import minitorch_nn.init as init
import minitorch_nn.nn as nn

from .compare import assert_raises_like_torch
from .strategies import dtypes

TORCH_HAS_REJECTION_TRUNC_NORMAL = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 13)
NONLINEARITIES = [
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
]

weight_shapes = st.lists(st.integers(1, 6), min_size=2, max_size=5).map(tuple)
init_dtypes = dtypes(bf16=True)
fan_modes = st.sampled_from(["fan_in", "fan_out", "FAN_IN"])
kaiming_nonlinearities = st.sampled_from(["relu", "leaky_relu", "tanh", "linear", "selu"])


def assert_same_draws(ours, theirs, shape, dtype, seed, use_generator):
    """Run both initialisers from the same random state and require identical tensors."""
    a, b = torch.empty(shape, dtype=dtype), torch.empty(shape, dtype=dtype)
    if use_generator:
        ga, gb = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        ours(a, generator=ga)
        theirs(b, generator=gb)
    else:
        torch.manual_seed(seed)
        ours(a)
        torch.manual_seed(seed)
        theirs(b)
    assert torch.equal(a, b), f"max difference {(a.double() - b.double()).abs().max().item()}"


draws = st.tuples(weight_shapes, init_dtypes, st.integers(0, 2**31), st.booleans())


@given(draws, st.floats(-3, 3), st.floats(0.01, 3))
def test_uniform_and_normal_match_torch(d, a, width):
    shape, dtype, seed, gen = d
    assert_same_draws(
        lambda t, **g: init.uniform_(t, a, a + width, **g),
        lambda t, **g: torch.nn.init.uniform_(t, a, a + width, **g),
        shape,
        dtype,
        seed,
        gen,
    )
    assert_same_draws(
        lambda t, **g: init.normal_(t, a, width, **g),
        lambda t, **g: torch.nn.init.normal_(t, a, width, **g),
        shape,
        dtype,
        seed,
        gen,
    )


@given(draws, st.floats(0.1, 3))
def test_xavier_matches_torch(d, gain):
    shape, dtype, seed, gen = d
    for name in ("xavier_uniform_", "xavier_normal_"):
        assert_same_draws(
            lambda t, name=name, **g: getattr(init, name)(t, gain, **g),
            lambda t, name=name, **g: getattr(torch.nn.init, name)(t, gain, **g),
            shape,
            dtype,
            seed,
            gen,
        )


@given(draws, st.sampled_from([0, 0.01, 0.2, math.sqrt(5)]), fan_modes, kaiming_nonlinearities)
def test_kaiming_matches_torch(d, a, mode, nonlinearity):
    shape, dtype, seed, gen = d
    for name in ("kaiming_uniform_", "kaiming_normal_"):
        assert_same_draws(
            lambda t, name=name, **g: getattr(init, name)(t, a, mode, nonlinearity, **g),
            lambda t, name=name, **g: getattr(torch.nn.init, name)(t, a, mode, nonlinearity, **g),
            shape,
            dtype,
            seed,
            gen,
        )


@pytest.mark.skipif(not TORCH_HAS_REJECTION_TRUNC_NORMAL, reason="torch < 2.13 samples trunc_normal_ by inverse CDF")
@given(
    draws,
    st.floats(-2, 2),
    st.floats(0.05, 3),
    # Intervals holding much and little probability mass, to exercise both proposal schemes.
    st.sampled_from([(-2.0, 2.0), (-0.1, 0.1), (1.5, 4.0), (-5.0, -3.0), (0.0, 10.0)]),
)
def test_trunc_normal_matches_torch(d, mean, std, bounds):
    shape, dtype, seed, gen = d
    a, b = bounds
    with pytest.warns() if (mean < a - 2 * std or mean > b + 2 * std) else contextlib.nullcontext():
        assert_same_draws(
            lambda t, **g: init.trunc_normal_(t, mean, std, a, b, **g),
            lambda t, **g: torch.nn.init.trunc_normal_(t, mean, std, a, b, **g),
            shape,
            dtype,
            seed,
            gen,
        )


@pytest.mark.parametrize(
    ("mean", "std", "a", "b"), [(0.0, 1.0, -2.0, 2.0), (0.0, 1.0, 1.0, 1.5), (1.0, 0.5, -1.0, 0.0)]
)
def test_trunc_normal_has_the_truncated_distributions_mean_and_variance(mean, std, a, b):
    t = init.trunc_normal_(torch.empty(400_000, dtype=torch.float64), mean, std, a, b)
    assert a <= t.min()
    assert t.max() <= b
    # Moments of N(mean, std²) truncated to [a, b], with α, β the standardised bounds.
    alpha, beta = (a - mean) / std, (b - mean) / std

    def pdf(z):
        return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    def cdf(z):
        return (1 + math.erf(z / math.sqrt(2))) / 2

    mass = cdf(beta) - cdf(alpha)
    shift = (pdf(alpha) - pdf(beta)) / mass
    expected_mean = mean + std * shift
    expected_var = std**2 * (1 + (alpha * pdf(alpha) - beta * pdf(beta)) / mass - shift**2)
    standard_error = math.sqrt(expected_var / t.numel())
    assert abs(t.mean().item() - expected_mean) < 5 * standard_error
    assert abs(t.var().item() / expected_var - 1) < 0.02  # the sample variance's relative sd is ~0.2%


# --- trunc_normal_: each claim of its docstring ------------------------------------------------


def truncated_moments(mean: float, std: float, a: float, b: float) -> tuple[float, float]:
    """Mean and variance of N(mean, std²) truncated to [a, b], to 50 digits (mpmath): no
    underflow however far the tail, and no cancellation in the variance (≈ 1/d² there)."""
    with mpmath.workdps(50):
        alpha, beta = (mpmath.mpf(a) - mean) / std, (mpmath.mpf(b) - mean) / std
        sign = 1
        if beta <= 0:  # a lower tail: use the mirror image, whose mass erfc keeps accurate
            alpha, beta, sign = -beta, -alpha, -1
        mass = (mpmath.erfc(alpha / mpmath.sqrt(2)) - mpmath.erfc(beta / mpmath.sqrt(2))) / 2

        def pdf(z):
            return mpmath.exp(-z * z / 2) / mpmath.sqrt(2 * mpmath.pi)

        shift = (pdf(alpha) - pdf(beta)) / mass
        var = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / mass - shift**2
        return float(mean + sign * std * shift), float(std**2 * var)


def assert_truncated_normal_sample(t: torch.Tensor, mean: float, std: float, a: float, b: float) -> None:
    """Inside [fl(a), fl(b)], and the sample mean and variance those of the truncated normal.

    Tolerances: the mean within 5 standard errors √(var/N), plus half an ulp of the largest value
    (each value was rounded to t's dtype); the variance within 5 of its relative standard errors
    √((κ − 1)/N), with the kurtosis κ <= 9 (an exponential's, the far-tail limit; 1.8 to 3
    elsewhere), plus the rounding's share, ulp²/12 per value. The draws are seeded, so a pass
    is no accident of the seed.
    """
    lo, hi = t.new_tensor(a).item(), t.new_tensor(b).item()
    assert lo <= t.min().item()
    assert t.max().item() <= hi
    expected_mean, expected_var = truncated_moments(mean, std, a, b)
    n, x = t.numel(), t.double()
    half_ulp = (torch.finfo(t.dtype).eps * max(abs(lo), abs(hi))) / 2
    assert abs(x.mean().item() - expected_mean) <= 5 * math.sqrt(expected_var / n) + half_ulp
    rounding_var = (2 * half_ulp) ** 2 / 12
    assert abs(x.var().item() - expected_var) <= 5 * math.sqrt(8 / n) * expected_var + rounding_var


@contextlib.contextmanager
def finishes_within(seconds: float):
    """Turns a hang into a failure (POSIX; elsewhere, a hang stays a hang)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expired(*_):
        raise TimeoutError(f"did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.filterwarnings("ignore:mean is more than 2 std")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trunc_normal_far_tail_10_to_11_is_torchs_sampler_accepting_a_tenth_with_the_truncated_moments(dtype):
    # A = (1/W)·∫₀^W exp(−d·t − t²/2) dt with d = 10, W = 1, to 50 digits: 0.0990...
    acceptance = float(mpmath.quad(lambda t: mpmath.exp(-10 * t - t * t / 2), [0, 1]))
    assert init._uniform_acceptance(0.0, 1.0, 10.0, 11.0) == pytest.approx(acceptance, rel=1e-12)
    assert 0.099 < acceptance < 0.0991
    with finishes_within(60):  # ~110 rounds: well under a second; the limit only catches a hang
        ours = init.trunc_normal_(
            torch.empty(20_000, dtype=dtype), 0.0, 1.0, 10.0, 11.0, torch.Generator().manual_seed(0)
        )
    theirs = torch.nn.init.trunc_normal_(
        torch.empty(20_000, dtype=dtype), 0.0, 1.0, 10.0, 11.0, torch.Generator().manual_seed(0)
    )
    assert torch.equal(ours, theirs)  # torch's path, draw for draw
    assert_truncated_normal_sample(ours, 0.0, 1.0, 10.0, 11.0)
    assert truncated_moments(0.0, 1.0, 10.0, 11.0)[0] == pytest.approx(10.098, abs=5e-4)  # the docstring's figure


# (mean, std, a, b): wide far tails, above and below the mean, a bound at 0.6 std (P = 0.27,
# uniform proposals over 10⁶ std), a tiny std, and a far interval 1 std wide.
WIDE_TAILS = [
    (0.0, 1.0, 10.0, 1e4),
    (0.0, 1.0, 0.6, 1e6),
    (0.0, 1e-3, 1.0, 2.0),
    (0.0, 1.0, -1e4, -10.0),
    (5.0, 1.0, -1e5, 0.0),
]


@pytest.mark.filterwarnings("ignore:mean is more than 2 std")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("mean", "std", "a", "b"), WIDE_TAILS)
def test_trunc_normal_wide_far_tails_finish_by_exponential_proposals_with_the_truncated_moments(mean, std, a, b, dtype):
    # Below 10⁻⁴ torch's loop would take over 10⁴·ln(N) passes over the tensor (hours here).
    assert init._uniform_acceptance(mean, std, a, b) < init._SLOWEST_ACCEPTANCE
    with finishes_within(60):  # a few rounds of 20,000: milliseconds
        t = init.trunc_normal_(torch.empty(20_000, dtype=dtype), mean, std, a, b, torch.Generator().manual_seed(0))
    again = init.trunc_normal_(torch.empty(20_000, dtype=dtype), mean, std, a, b, torch.Generator().manual_seed(0))
    assert torch.equal(t, again)  # a generator makes it repeatable
    assert_truncated_normal_sample(t, mean, std, a, b)


@pytest.mark.filterwarnings("ignore:mean is more than 2 std")
def test_trunc_normal_exponential_path_refuses_the_bounds_torch_refuses():
    # In float32, 1e300 is out of the dtype's range: torch's uniform_ raises before its loop starts.
    for a, b in ((10.0, 1e300), (1e39, 1e40)):
        assert init._uniform_acceptance(0.0, 1.0, a, b) < init._SLOWEST_ACCEPTANCE
        assert_raises_like_torch(
            lambda a=a, b=b: init.trunc_normal_(torch.empty(3), 0.0, 1.0, a, b),
            lambda a=a, b=b: torch.nn.init.trunc_normal_(torch.empty(3), 0.0, 1.0, a, b),
        )


def test_trunc_normal_parity_test_draws_only_intervals_on_torchs_path():
    """test_trunc_normal_matches_torch must still compare torch's own sampler everywhere: the
    slowest interval it can draw (the mean 2 std-units of 0.05 from a bound, i.e. 40 std, and
    200 std wide) accepts 1.25·10⁻⁴ of the candidates, above the 10⁻⁴ where ours switches."""
    corners = [
        (m, 0.05, a, b)
        for m in (-2.0, 2.0)
        for a, b in [(-2.0, 2.0), (-0.1, 0.1), (1.5, 4.0), (-5.0, -3.0), (0.0, 10.0)]
    ]
    slowest = min(init._uniform_acceptance(*c) for c in corners)
    assert init._SLOWEST_ACCEPTANCE < 1.2e-4 < slowest


@pytest.mark.parametrize(("dtype", "bits"), [(torch.float16, 12), (torch.bfloat16, 9)])
def test_uniform_draws_in_low_precision_are_exactly_zero_one_time_in_two_to_the_bits(dtype, bits):
    # The grid trunc_normal_'s acceptance draws u live on: P(u = 0) = 2⁻ᵖ. Binomial counts: the
    # expected n·2⁻ᵖ within 5 standard deviations √(n·2⁻ᵖ).
    n = 1 << 20
    zeros = int((torch.empty(n, dtype=dtype).uniform_(generator=torch.Generator().manual_seed(0)) == 0).sum())
    expected = n / 2**bits
    assert abs(zeros - expected) <= 5 * math.sqrt(expected)


@pytest.mark.filterwarnings("ignore:mean is more than 2 std")
def test_trunc_normal_low_precision_far_tail_is_biased_as_torchs():
    """bfloat16 on [10, 100] (mean 0, std 1): u = 0 comes one draw in 512 and accepts any
    candidate, while a candidate's true acceptance is ~1/900; most samples are then uniform on
    [10, 100]. The truth is 10.098; ours, like torch's, bit for bit, averages ~25."""
    ours = init.trunc_normal_(
        torch.empty(2000, dtype=torch.bfloat16), 0.0, 1.0, 10.0, 100.0, torch.Generator().manual_seed(0)
    )
    theirs = torch.nn.init.trunc_normal_(
        torch.empty(2000, dtype=torch.bfloat16), 0.0, 1.0, 10.0, 100.0, torch.Generator().manual_seed(0)
    )
    assert torch.equal(ours, theirs)
    assert ours.double().mean().item() > 20


@pytest.mark.filterwarnings("ignore:mean is more than 2 std")
@pytest.mark.parametrize("sampler", [init.trunc_normal_, torch.nn.init.trunc_normal_], ids=["ours", "torch"])
def test_trunc_normal_accepts_any_candidate_when_u_is_exactly_zero(sampler, monkeypatch):
    """The acceptance test is log u <= log r: u = 0 passes it for any r. Made certain here by
    drawing every u ~ U[0, 1) as 0: the first round's candidates, uniform on [10, 100] where
    almost all the mass is below 11, are all kept, in float32, by both samplers."""
    uniform = torch.Tensor.uniform_

    def zero_for_u(self, low=0.0, high=1.0, *, generator=None):
        drawn = uniform(self, low, high, generator=generator)
        return drawn.zero_() if (low, high) == (0.0, 1.0) else drawn

    monkeypatch.setattr(torch.Tensor, "uniform_", zero_for_u)
    g = torch.Generator().manual_seed(0)
    t = sampler(torch.empty(1000), 0.0, 1.0, 10.0, 100.0, generator=g)
    candidates = torch.empty(1000).uniform_(10.0, 100.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, candidates)
    assert (t > 11).float().mean() > 0.95  # a true sample exceeds 11 with probability e^(−10.5)·... < 10⁻⁴


def test_trunc_normal_keeps_draws_on_the_bounds_rounded_to_the_dtype():
    # ±1.895 round to ±1.8984375 in bfloat16 (spacing 2⁻⁷ in [1, 2)): the interval is
    # [−1.8984375, 1.8984375], closed, so draws that round to a bound are kept, even though
    # they lie (slightly) outside [a, b]. P = 0.94 > 0.3: the redrawing branch.
    a, b = -1.895, 1.895
    lo, hi = torch.tensor([a, b], dtype=torch.bfloat16).tolist()
    assert (lo, hi) == (-1.8984375, 1.8984375)
    ours = init.trunc_normal_(
        torch.empty(20_000, dtype=torch.bfloat16), 0.0, 1.0, a, b, torch.Generator().manual_seed(0)
    )
    theirs = torch.nn.init.trunc_normal_(
        torch.empty(20_000, dtype=torch.bfloat16), 0.0, 1.0, a, b, torch.Generator().manual_seed(0)
    )
    assert torch.equal(ours, theirs)
    assert ours.min().item() == lo
    assert ours.max().item() == hi  # ~0.1% of the draws each: ~20 of 20,000


@pytest.mark.filterwarnings("ignore:mean is more than 2 std")
def test_torch_before_2_13_inverse_cdf_gave_b_everywhere_in_a_far_tail():
    """What the docstring contrasts: torch < 2.13's inverse-CDF sampler, as it was written
    (u ~ U(2Φ(α) − 1, 2Φ(β) − 1), erfinv, scale, clamp). At a = 10, b = 11, Φ(α) = Φ(β) = 1 in
    float64, u = 1, erfinv(1) = inf, and the clamp returns b for every element."""
    a, b = 10.0, 11.0
    lo, hi = init._normal_cdf(a), init._normal_cdf(b)
    assert lo == hi == 1.0
    t = torch.empty(1000).uniform_(2 * lo - 1, 2 * hi - 1).erfinv_().mul_(math.sqrt(2.0)).clamp_(min=a, max=b)
    assert bool((t == b).all())
    ours = init.trunc_normal_(torch.empty(1000), 0.0, 1.0, a, b)
    assert bool((ours < b).all())


@given(weight_shapes, init_dtypes, st.floats(-5, 5))
def test_constant_ones_zeros_match_torch(shape, dtype, val):
    for ours, theirs in ((init.ones_, torch.nn.init.ones_), (init.zeros_, torch.nn.init.zeros_)):
        assert torch.equal(ours(torch.empty(shape, dtype=dtype)), theirs(torch.empty(shape, dtype=dtype)))
    a = init.constant_(torch.empty(shape, dtype=dtype), val)
    assert torch.equal(a, torch.nn.init.constant_(torch.empty(shape, dtype=dtype), val))


@pytest.mark.parametrize("name", NONLINEARITIES)
@pytest.mark.parametrize("param", [None, 0, 0.2, 3])
def test_calculate_gain_matches_torch(name, param):
    assert init.calculate_gain(name, param) == torch.nn.init.calculate_gain(name, param)


@pytest.mark.parametrize(("name", "param"), [("softmax", None), ("leaky_relu", True), ("leaky_relu", "0.1")])
def test_calculate_gain_rejects_like_torch(name, param):
    assert_raises_like_torch(
        lambda: init.calculate_gain(name, param), lambda: torch.nn.init.calculate_gain(name, param)
    )


@pytest.mark.parametrize("shape", [(), (5,)])
@pytest.mark.parametrize("name", ["xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"])
def test_fans_need_two_dimensions_like_torch(name, shape):
    assert_raises_like_torch(
        lambda: getattr(init, name)(torch.empty(shape)), lambda: getattr(torch.nn.init, name)(torch.empty(shape))
    )


def test_kaiming_rejects_unknown_mode_like_torch():
    w = torch.empty(3, 4)
    assert_raises_like_torch(
        lambda: init.kaiming_uniform_(w, mode="fan_avg"), lambda: torch.nn.init.kaiming_uniform_(w, mode="fan_avg")
    )


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_on_zero_element_tensor_warns_and_leaves_it(name):
    w = torch.empty(0, 4)
    with pytest.warns(UserWarning, match="no-op"):
        assert getattr(init, name)(w) is w


def test_fan_in_and_fan_out_count_the_receptive_field():
    assert init._calculate_fan_in_and_fan_out(torch.empty(64, 32)) == (32, 64)
    assert init._calculate_fan_in_and_fan_out(torch.empty(64, 32, 3, 3)) == (32 * 9, 64 * 9)


# --- named lessons -------------------------------------------------------------------------


def test_he_range_is_wider_than_xavier_for_the_same_layer():
    # A 128 -> 64 layer: Xavier a = √(6/(128+64)) ≈ 0.177, He (ReLU) a = √(6/128) ≈ 0.217.
    w = torch.empty(64, 128)
    xavier = init.xavier_uniform_(w.clone())
    he = init.kaiming_uniform_(w.clone(), nonlinearity="relu")
    xavier_bound, he_bound = math.sqrt(6 / (128 + 64)), math.sqrt(6 / 128)
    assert he_bound > xavier_bound
    for t, bound in ((xavier, xavier_bound), (he, he_bound)):
        assert t.abs().max() <= bound
        assert t.abs().max() > 0.99 * bound  # 8192 uniform draws come within 1% of the edge
        assert abs(t.std().item() / (bound / math.sqrt(3)) - 1) < 0.05  # U(-a, a) has std a/√3


def test_he_init_keeps_the_signal_alive_through_a_deep_relu_stack_xavier_does_not():
    # Each ReLU layer halves the second moment unless the weights make up for it (gain² = 2).
    torch.manual_seed(0)
    x = torch.randn(512, 256, dtype=torch.float64)
    depth = 30
    moments = {}
    for name, fill in (
        ("xavier", init.xavier_uniform_),
        ("he", lambda w: init.kaiming_uniform_(w, nonlinearity="relu")),
    ):
        h = x
        for _ in range(depth):
            h = nn.ReLU()(h @ fill(torch.empty(256, 256, dtype=torch.float64)).t())
        moments[name] = h.pow(2).mean().item() / x.pow(2).mean().item()
    assert 0.1 < moments["he"] < 10  # stays within an order of magnitude after 30 layers
    assert moments["xavier"] < 1e-6  # ~ (1/2)^30 ≈ 1e-9: the signal has vanished
