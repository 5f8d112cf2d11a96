"""Shared Hypothesis strategies: shapes, dtypes, values (ordinary and extreme), memory layouts.

Every op test draws its inputs from here, so each op meets the same awkward cases:

* shapes with size-1 dimensions and, now and then, a zero-size batch;
* float32, float64 and (where torch supports the op on CPU) bfloat16;
* values from four regimes: standard normal, a wide log-uniform spread (1e-4 .. 1e4), normal
  values salted with "extreme" points (where naive formulas overflow or cancel), and
  element-by-element Hypothesis floats, which shrink to minimal failing examples;
* memory layouts that are not the default: permuted dimensions, strided slices and storage
  offsets, with everything outside the view filled with NaN so an op that reads memory it
  should not gives a visibly wrong answer.
"""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import torch
from hypothesis import strategies as st

FLOAT_DTYPES = (torch.float32, torch.float64)

# Points where textbook formulas break, per dtype (both signs are used):
#   exp(x) overflows past 88.72 (float32, bfloat16) / 709.78 (float64) and underflows to 0
#   below -103.9 / -745.1; x**3 overflows past ~6.98e12 / ~5.6e102; softplus switches to the
#   identity at its default threshold of 20; expm1/log1p matter near 0.
_COMMON_POINTS = (0.0, 1e-30, 1e-8, 1e-3, 0.5, 1.0, 5.0, 10.0, 20.0, 20.5, 30.0, 40.0, 100.0, 1e4)
_WIDE_POINTS = {
    torch.float32: (88.5, 88.8, 89.0, 104.0, 1e6, 1e13, 1e18),
    torch.bfloat16: (88.5, 89.0, 104.0, 1e6, 1e13, 1e18),
    torch.float64: (709.5, 709.9, 710.0, 746.0, 1e6, 1e13, 1e103, 1e150),
}


def extreme_points(dtype: torch.dtype) -> tuple[float, ...]:
    """The special magnitudes for ``dtype``, with both signs."""
    points = _COMMON_POINTS + _WIDE_POINTS[dtype]
    return tuple(sorted({s * p for p in points for s in (1.0, -1.0)}))


def dtypes(*, bf16: bool = False) -> st.SearchStrategy[torch.dtype]:
    """float32 and float64, plus bfloat16 when ``bf16`` (ops torch supports in bf16 on CPU)."""
    return st.sampled_from((*FLOAT_DTYPES, torch.bfloat16) if bf16 else FLOAT_DTYPES)


@st.composite
def shapes(draw, *, min_dims: int = 1, max_dims: int = 4, max_side: int = 5, allow_empty: bool = True):
    """A shape with ``min_dims..max_dims`` dimensions of size 1..max_side.

    With ``allow_empty``, about one shape in eight has a zero-size first (batch) dimension.
    Sizes shrink toward 1, so size-1 dimensions are common.
    """
    ndim = draw(st.integers(min_dims, max_dims))
    dims = [draw(st.integers(1, max_side)) for _ in range(ndim)]
    if allow_empty and ndim and draw(st.integers(0, 7)) == 7:
        dims[0] = 0
    return tuple(dims)


REGIMES = ("normal", "wide", "extreme", "elements")


def _seeded_values(regime: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if regime == "normal":
        return torch.randn(shape, generator=g, dtype=torch.float64) * scale
    if regime == "wide":
        magnitude = 10 ** torch.empty(shape, dtype=torch.float64).uniform_(-4, 4, generator=g)
        sign = torch.randint(0, 2, shape, generator=g) * 2 - 1
        return magnitude * sign
    # "extreme": normal values with a fraction of the entries replaced by special points.
    points = torch.tensor(extreme_points(dtype), dtype=torch.float64)
    values = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    pick = points[torch.randint(len(points), shape, generator=g)]
    replace = torch.rand(shape, generator=g) < (0.25 if scale < 2 else 1.0)
    return torch.where(replace, pick, values)


@st.composite
def values(draw, shape: tuple[int, ...], dtype: torch.dtype, *, regimes: tuple[str, ...] = REGIMES) -> torch.Tensor:
    """A contiguous tensor of ``shape`` and ``dtype`` with values from one of ``regimes``."""
    regime = draw(st.sampled_from(regimes))
    numel = math.prod(shape)
    if regime == "elements" and numel <= 256:
        elements = st.one_of(
            st.floats(-30, 30, allow_nan=False, allow_infinity=False, width=64),
            st.sampled_from(extreme_points(dtype)),
        )
        array = draw(hnp.arrays(np.float64, shape, elements=elements))
        return torch.from_numpy(array).to(dtype)
    if regime == "elements":
        regime = "extreme"
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from((1.0, 4.0)))
    return _seeded_values(regime, shape, dtype, seed, scale).to(dtype)


def strided_copy(t: torch.Tensor, perm: tuple[int, ...], steps: tuple[int, ...], offset: int) -> torch.Tensor:
    """A view with the values of ``t`` whose memory layout is set by ``perm``, ``steps``, ``offset``.

    Logical dimension ``perm[0]`` is outermost in memory, ``perm[-1]`` innermost; dimension
    ``d`` is stored every ``steps[d]``-th slot; the view starts ``offset`` elements into its
    storage. Every storage slot the view does not cover holds NaN (or the maximum for
    integer dtypes).
    """
    physical_shape = [t.shape[d] * steps[d] for d in perm]
    fill = math.nan if t.is_floating_point() else torch.iinfo(t.dtype).max
    storage = torch.full((offset + math.prod(physical_shape),), fill, dtype=t.dtype)
    physical = storage[offset:].view(physical_shape)
    physical = physical[tuple(slice(None, None, steps[d]) for d in perm)]
    inverse = [perm.index(d) for d in range(t.dim())]
    view = physical.permute(inverse)
    view.copy_(t)
    return view


@st.composite
def layouts(draw, t: torch.Tensor) -> torch.Tensor:
    """``t`` re-laid-out: contiguous, permuted, strided, offset in storage, or all at once."""
    ndim = t.dim()
    kind = draw(st.sampled_from(("contiguous", "permuted", "strided", "offset", "mixed")))
    if kind == "contiguous":
        return t.contiguous()
    perm = tuple(range(ndim))
    steps = (1,) * ndim
    offset = 0
    if kind in ("permuted", "mixed"):
        perm = tuple(draw(st.permutations(range(ndim))))
    if kind in ("strided", "mixed"):
        steps = tuple(draw(st.lists(st.sampled_from((1, 2, 3)), min_size=ndim, max_size=ndim)))
    if kind in ("offset", "mixed"):
        offset = draw(st.sampled_from((1, 3, 5)))
    return strided_copy(t, perm, steps, offset)


@st.composite
def tensors(
    draw,
    shape: tuple[int, ...] | st.SearchStrategy[tuple[int, ...]] | None = None,
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] | None = None,
    *,
    regimes: tuple[str, ...] = REGIMES,
    layout: bool = True,
) -> torch.Tensor:
    """A tensor drawn from :func:`values`, in an arbitrary layout (unless ``layout=False``)."""
    if shape is None:
        shape = shapes()
    if isinstance(shape, st.SearchStrategy):
        shape = draw(shape)
    if dtype is None:
        dtype = dtypes()
    if isinstance(dtype, st.SearchStrategy):
        dtype = draw(dtype)
    t = draw(values(tuple(shape), dtype, regimes=regimes))
    return draw(layouts(t)) if layout else t
