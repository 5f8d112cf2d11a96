"""init: bit-identical to torch.nn.init under one seed, the same errors, and why the scales matter."""

from __future__ import annotations

import contextlib
import math

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
