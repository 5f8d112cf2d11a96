"""The test harness itself: strategies produce what they promise, checks can fail."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import minitorch_nn.functional as F

from .compare import Tol, assert_same_as_torch, pointwise_tol, reduction_tol
from .strategies import extreme_points, layouts, shapes, strided_copy, tensors, values


@given(st.data())
def test_layouts_keep_the_values_and_change_the_memory(data):
    shape = data.draw(shapes(allow_empty=False))
    t = data.draw(values(shape, torch.float64))
    view = data.draw(layouts(t))
    assert torch.equal(view, t)
    assert view.shape == t.shape


def test_strided_copy_is_non_contiguous_offset_and_fenced_with_nan():
    t = torch.arange(12.0).reshape(3, 4)
    view = strided_copy(t, perm=(1, 0), steps=(2, 1), offset=3)
    assert torch.equal(view, t)
    assert not view.is_contiguous()
    assert view.storage_offset() == 3
    whole_storage = view.as_strided((view.untyped_storage().nbytes() // view.element_size(),), (1,), 0)
    assert torch.isnan(whole_storage).sum() == whole_storage.numel() - t.numel()  # everything else is NaN


def test_extreme_values_include_the_overflow_points_of_each_dtype():
    assert 89.0 in extreme_points(torch.float32)
    assert -89.0 in extreme_points(torch.float32)
    assert 710.0 in extreme_points(torch.float64)
    assert all(math.isfinite(torch.tensor(v, dtype=torch.bfloat16).item()) for v in extreme_points(torch.bfloat16))


@given(tensors(shapes(), regimes=("extreme",), layout=False))
def test_extreme_regime_draws_finite_values(t):
    assert torch.isfinite(t).all()


def test_comparison_fails_on_a_wrong_value():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(AssertionError, match="output differs from torch"):
        assert_same_as_torch(lambda t: F.gelu(t) * (1 + 1e-9), TF.gelu, {"input": x}, tol=pointwise_tol(x.dtype))


def test_comparison_fails_on_a_wrong_gradient():
    class WrongGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return TF.silu(x)

        @staticmethod
        def backward(ctx, dy):
            return dy  # forgets the derivative

    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(AssertionError, match="gradient wrt input differs"):
        assert_same_as_torch(WrongGrad.apply, TF.silu, {"input": x}, tol=pointwise_tol(x.dtype))


def test_comparison_fails_when_the_op_writes_into_its_input():
    x = torch.randn(3)
    with pytest.raises(AssertionError, match="modified input"):
        assert_same_as_torch(lambda t: t.mul_(2), lambda t: t * 2, {"input": x}, tol=Tol(0, 0))


def test_reduction_tolerance_grows_with_the_reduction_length_and_the_dtype():
    assert reduction_tol(torch.float32, 1000, 1.0).atol > reduction_tol(torch.float32, 10, 1.0).atol
    assert reduction_tol(torch.float64, 1000, 1.0).atol < reduction_tol(torch.float32, 1000, 1.0).atol
    # Dropping one of a thousand unit terms is far outside the bound (2·γ_1000·1000 ≈ 0.12).
    x = torch.ones(1000, dtype=torch.float32)
    tol = reduction_tol(torch.float32, 1000, float(x.abs().sum()))
    assert abs(x[1:].sum().item() - x.sum().item()) > 5 * tol.atol
