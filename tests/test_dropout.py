"""Dropout: the mask statistics, the exact scaling, mask reuse in backward, edge cases, module."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import minitorch_nn.functional as F
import minitorch_nn.nn as nn

from .compare import Tol, assert_raises_like_torch, assert_same_as_torch, check_gradients, constructor_signature
from .strategies import dtypes, shapes, tensors

EXACT = Tol(rtol=0, atol=0)
probabilities = st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]) | st.floats(0, 1)


def seeded(fn, seed: int):
    """``fn`` that re-seeds torch's global generator first, so every call draws the same mask."""

    def call(*args, **kwargs):
        torch.manual_seed(seed)
        return fn(*args, **kwargs)

    return call


@given(tensors(shapes(), dtypes(bf16=True)), probabilities, st.integers(0, 2**31))
def test_same_mask_as_torch_on_cpu_under_the_same_seed(x, p, seed):
    # Both draw Bernoulli(1 - p) into a tensor shaped like the input, then divide by 1 - p,
    # so on the CPU the outputs and gradients agree bit for bit.
    x.requires_grad_()
    assert_same_as_torch(
        seeded(lambda t: F.dropout(t, p), seed), seeded(lambda t: TF.dropout(t, p), seed), {"input": x}, tol=EXACT
    )


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_is_one_minus_p(p):
    n = 200_000
    kept = (F.dropout(torch.ones(n), p) != 0).double().mean().item()
    # Binomial(n, 1 - p) / n has standard deviation sqrt(p(1 - p)/n) <= 0.0012: allow 5 of them.
    assert abs(kept - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / n)


@given(tensors(shapes(allow_empty=False), dtypes(bf16=True), regimes=("normal", "wide")), st.floats(0.01, 0.99))
def test_survivors_are_scaled_by_exactly_one_over_keep_probability(x, p):
    y = F.dropout(x, p)
    scale = torch.ones((), dtype=x.dtype).div(1 - p)  # 1/(1-p), rounded to the dtype once
    kept = y != 0
    assert torch.equal(y[kept], x[kept] * scale)
    assert torch.equal(y[~kept], torch.zeros_like(y[~kept]))


def test_inverted_dropout_preserves_the_expected_activation():
    # E[y] = (1 - p) · x/(1 - p) = x: no rescaling is needed at evaluation time.
    x = torch.full((1_000_000,), 3.0, dtype=torch.float64)
    p = 0.3
    sigma = 3.0 * math.sqrt(p / (1 - p) / x.numel())  # std of the sample mean
    assert abs(F.dropout(x, p).mean().item() - 3.0) < 5 * sigma


@given(tensors(shapes(allow_empty=False), dtypes(), regimes=("normal",)), st.floats(0.01, 0.99))
def test_backward_reuses_the_forward_mask(x, p):
    x.requires_grad_()
    y = F.dropout(x, p)
    dy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, dy)
    scale = torch.ones((), dtype=x.dtype).div(1 - p)
    kept = y != 0  # x has no exact zeros, so a zero output means a dropped element
    assert torch.equal(dx, torch.where(kept, dy * scale, torch.zeros_like(dy)))


def test_eval_mode_and_p_zero_return_the_input_itself():
    x = torch.randn(5)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    state = torch.get_rng_state()
    F.dropout(x, 0.0)
    assert torch.equal(state, torch.get_rng_state()), "p = 0 must not consume random numbers"


def test_p_one_zeroes_output_and_gradient_like_torch():
    x = torch.tensor([1.0, -2.0, math.inf, 0.5], requires_grad=True)
    assert_same_as_torch(lambda t: F.dropout(t, 1.0), lambda t: TF.dropout(t, 1.0), {"input": x}, tol=EXACT)
    y = F.dropout(x[[0, 1, 3]], 1.0)
    assert torch.equal(y, torch.zeros(3))


def test_reproducible_under_manual_seed():
    x = torch.randn(1000)
    torch.manual_seed(7)
    a = F.dropout(x, 0.5)
    torch.manual_seed(7)
    b = F.dropout(x, 0.5)
    assert torch.equal(a, b)
    assert not torch.equal(a, F.dropout(x, 0.5))


def test_gradcheck_and_gradgradcheck_with_a_fixed_mask():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    with torch.random.fork_rng():
        check_gradients(seeded(lambda t: F.dropout(t, 0.4), 3), [x])


@given(tensors(shapes(allow_empty=False), dtypes()), st.floats(0.01, 0.99), st.integers(0, 2**31))
def test_inplace_writes_into_input_and_matches_torch(base, p, seed):
    base.requires_grad_()

    def run(fn):
        def call(b):
            x = b * 1
            y = seeded(fn, seed)(x, p, inplace=True)
            assert y is x
            return y

        return call

    assert_same_as_torch(run(F.dropout), run(TF.dropout), {"input": base}, tol=EXACT)


@given(st.floats(allow_nan=False).filter(lambda p: p < 0 or p > 1))
def test_probability_outside_unit_interval_raises_value_error_like_torch(p):
    x = torch.randn(3)
    assert_raises_like_torch(lambda: F.dropout(x, p), lambda: TF.dropout(x, p))
    assert_raises_like_torch(lambda: nn.Dropout(p), lambda: torch.nn.Dropout(p))


def test_integer_input_raises_like_torch():
    x = torch.arange(6)
    assert_raises_like_torch(lambda: F.dropout(x, 0.5), lambda: TF.dropout(x, 0.5))


def test_module_follows_train_and_eval_mode():
    ours, theirs = nn.Dropout(0.25), torch.nn.Dropout(0.25)
    assert repr(ours) == repr(theirs)
    assert constructor_signature(nn.Dropout) == constructor_signature(torch.nn.Dropout)
    assert repr(nn.Dropout(0.1, inplace=True)) == repr(torch.nn.Dropout(0.1, inplace=True))
    x = torch.randn(64, 32)
    torch.manual_seed(0)
    a = ours(x)
    torch.manual_seed(0)
    assert torch.equal(a, theirs(x))
    assert (a == 0).any()
    ours.eval()
    assert ours(x) is x
