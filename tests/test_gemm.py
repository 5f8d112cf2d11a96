"""The conv ladder's own GEMM (csrc/cpu/conv/gemm.h), through ``torch.ops.minitorch_nn._gemm``.

Rungs 3 and 4 of the conv ladder are built on it, so it is proven here on its own first: against
``torch.mm`` over odd sizes (M, N, K not multiples of the register tile or of the cache blocks),
transposed, sliced and expanded operands (its packers read any strides), empty dimensions,
several cache blockings, and bitwise equality across thread counts.

Tolerance: each element of C is a length-K dot product, so any summation order is within
``γ_K · (|A| @ |B|)`` of the exact value, elementwise (``γ_K = K·u / (1 − K·u)``, u the unit
roundoff); ours and torch's can be ``2·γ_K·(|A| @ |B|)`` apart, plus one rounding to the output
each (tests/compare.py's ``reduction_tol``, applied per element rather than to the largest sum).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minitorch_nn.kernels as K

from .compare import reduction_tol

REQUIRE_EXTENSION = os.environ.get("MINITORCH_REQUIRE_EXTENSION") == "1"

if not K.AVAILABLE and not REQUIRE_EXTENSION:
    pytest.skip(f"minitorch_nn's compiled kernels are unavailable: {K.UNAVAILABLE_REASON}", allow_module_level=True)


def gemm(a: torch.Tensor, b: torch.Tensor, blocking: tuple[int, ...] = ()) -> torch.Tensor:
    return torch.ops.minitorch_nn._gemm(a, b, list(blocking))


# Blockings that make every loop of gemm.h take more than one trip at these sizes, next to the
# default ([]): tiny blocks (many edge tiles, a K loop in slices of 7), blocks that are not
# multiples of the 6×NR register tile (the driver rounds them up), and one larger than anything.
BLOCKINGS = [(), (6, 7, 16), (13, 64, 40), (50, 100, 500), (1000, 1000, 10000)]


def assert_matches_mm(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """c == a @ b within the elementwise reduction bound, against torch.mm in the same dtype."""
    expected = torch.mm(a, b)
    assert c.shape == expected.shape
    assert c.dtype == expected.dtype
    assert c.is_contiguous()
    k = a.shape[1]
    # 2·(γ_K + u)·(|A| @ |B|), elementwise, from reduction_tol's factor for an absolute sum of 1.
    factor = reduction_tol(a.dtype, k, 1.0).atol if k else 0.0
    bound = factor * (a.double().abs() @ b.double().abs())
    diff = (c.double() - expected.double()).abs()
    worst = (diff - bound).max() if diff.numel() else torch.tensor(0.0)
    assert (diff <= bound).all(), (
        f"{a.dtype} {tuple(a.shape)} @ {tuple(b.shape)}: |ours − torch.mm| exceeds 2·γ_K·(|A|@|B|) "
        f"by up to {float(worst):.3g}"
    )


def with_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same matrix stored another way: row-major, column-major, or a strided slice of a bigger one."""
    if layout == "row-major":
        return t.contiguous()
    if layout == "column-major":
        return t.t().contiguous().t()
    big = torch.zeros(2 * t.shape[0] + 1, 3 * t.shape[1] + 2, dtype=t.dtype)  # storage offset, strides (2W, 3)
    view = big[1::2, 2::3][: t.shape[0], : t.shape[1]]
    view.copy_(t)
    return view


@settings(max_examples=60)
@given(
    m=st.integers(1, 300),
    n=st.integers(1, 300),
    k=st.integers(1, 300),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    a_layout=st.sampled_from(["row-major", "column-major", "strided"]),
    b_layout=st.sampled_from(["row-major", "column-major", "strided"]),
    blocking=st.sampled_from(BLOCKINGS),
    seed=st.integers(0, 2**16),
)
def test_gemm_matches_torch_mm_for_any_sizes_layouts_and_blockings(m, n, k, dtype, a_layout, b_layout, blocking, seed):
    g = torch.Generator().manual_seed(seed)
    a = with_layout(torch.randn(m, k, generator=g, dtype=dtype), a_layout)
    b = with_layout(torch.randn(k, n, generator=g, dtype=dtype), b_layout)
    assert_matches_mm(gemm(a, b, blocking), a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("m", "n", "k"),
    [(1, 1, 1), (6, 16, 256), (7, 17, 257), (64, 3136 // 16, 576), (300, 1, 300), (1, 300, 300), (5, 3, 1000)],
)
def test_gemm_matches_torch_mm_at_tile_and_block_edges(m, n, k, dtype):
    torch.manual_seed(m * 1000 + n + k)
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for blocking in BLOCKINGS:
        assert_matches_mm(gemm(a, b, blocking), a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gemm_reads_transposed_and_expanded_operands_in_place(dtype):
    torch.manual_seed(0)
    a = torch.randn(40, 33, dtype=dtype)
    b = torch.randn(29, 33, dtype=dtype)
    assert_matches_mm(gemm(a, b.t()), a, b.t())  # B transposed: column stride 33, row stride 1
    assert_matches_mm(gemm(b, a.t()), b, a.t())
    row = torch.randn(1, 33, dtype=dtype).expand(40, 33)  # row stride 0
    assert_matches_mm(gemm(row, b.t()), row, b.t())
    col = torch.randn(33, 1, dtype=dtype).expand(33, 50)  # column stride 0
    assert_matches_mm(gemm(a, col, (6, 7, 16)), a, col)


@pytest.mark.parametrize(("m", "n", "k"), [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0), (0, 5, 0)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gemm_with_an_empty_dimension_returns_what_torch_mm_returns(m, n, k, dtype):
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    c = gemm(a, b)
    expected = torch.mm(a, b)  # (m, n) zeros when only k is 0
    assert c.shape == expected.shape
    assert c.dtype == dtype
    assert torch.equal(c, expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("m", "n", "k"), [(64, 500, 300), (301, 77, 129), (5, 1000, 100)])
@pytest.mark.parametrize("blocking", [(), (12, 50, 64)])
def test_gemm_is_bitwise_the_same_on_one_and_two_threads(m, n, k, dtype, blocking):
    torch.manual_seed(1)
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = gemm(a, b, blocking)
        torch.set_num_threads(2)
        two = gemm(a, b, blocking)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert torch.equal(gemm(a, b, blocking), gemm(a, b, blocking))


def test_gemm_rejects_bad_arguments_with_clear_messages():
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        gemm(a, torch.randn(5, 4))
    with pytest.raises(RuntimeError, match="2-D"):
        gemm(a[0], b)
    with pytest.raises(RuntimeError, match="same dtype"):
        gemm(a, b.double())
    with pytest.raises(RuntimeError, match="float32 and float64"):
        gemm(a.half(), b.half())
    with pytest.raises(RuntimeError, match=r"\[MC, KC, NC\]"):
        gemm(a, b, (8, 8))
    with pytest.raises(RuntimeError, match="positive"):
        gemm(a, b, (8, 0, 8))
