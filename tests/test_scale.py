"""The compiled ops past 2^31 elements: no 32-bit index overflows anywhere.

An index computed in 32 bits wraps once a tensor has more than 2^31 elements; the element
after the boundary is then read from (or written to) the wrong place, or the process crashes.
Each test here runs one compiled op on a tensor of more than 2^31 elements, in the smallest
dtype the op takes on the CPU (16 bits for the norms, float32 for conv2d), and checks the
elements on both sides of the boundary, the last ones, and the reductions that run over the
whole tensor.

How each is checked:

* Rows and output elements across the boundary are computed again by torch from the same
  input values, in float64, and compared with the tolerances of tests/compare.py.
* Sums over the whole tensor (BatchNorm's mean, the bias and weight gradients) are made exact:
  the values are drawn from {-1, 0, 1}, so every partial sum is an integer far below 2^24
  (a random walk of n steps strays about sqrt(n) from 0), and any summation order gives the
  exact integer. A skipped or doubled element changes the sum. Sums of irrational terms
  (LayerNorm's dγ, BatchNorm's variance) are compared with a float64 reference at a relative
  1e-3: past 2^29 terms the worst-case bound of compare.reduction_tol exceeds 1 and says
  nothing, while an indexing fault is off by far more than 1e-3.

Sized for a 24 GiB machine: the largest test holds 18 GiB (conv2d's input gradient). Slow:
about 5-10 minutes in all on 2 cores. Not part of the default run; select it with

    .venv/bin/python -m pytest -m scale tests/test_scale.py

The im2col and gemm rungs of conv2d are left out: their column matrix would be nine times
the input (72 GiB here); the rungs that have none (implicit, depthwise, direct) are tested.
"""

from __future__ import annotations

import gc
import math

import pytest
import torch
import torch.nn.functional as TF

import minitorch_nn.kernels as K

from .compare import reduction_tol

pytestmark = [
    pytest.mark.scale,
    pytest.mark.skipif(not K.AVAILABLE, reason=f"the compiled kernels are unavailable: {K.UNAVAILABLE_REASON}"),
]
ops = torch.ops.minitorch_nn
BOUNDARY = 2**31
bf16 = torch.bfloat16


@pytest.fixture(autouse=True)
def _release_memory():
    yield
    gc.collect()  # the next test needs the gigabytes this one held


def _filled(shape, dtype, seed, draw):
    """A tensor of ``draw(n, generator)`` values, generated in slices to bound the memory."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(shape, dtype=dtype)
    flat = out.view(-1)
    step = 1 << 26
    for i in range(0, flat.numel(), step):
        n = min(step, flat.numel() - i)
        flat[i : i + n] = draw(n, g).to(dtype)
    return out


def trits(*shape, dtype, seed):
    """Values from {-1, 0, 1}, exact in every dtype."""
    return _filled(shape, dtype, seed, lambda n, g: torch.randint(-1, 2, (n,), generator=g, dtype=torch.int8))


def normals(*shape, dtype, seed):
    return _filled(shape, dtype, seed, lambda n, g: torch.randn(n, generator=g))


def exact_sum(t, dims, times=None):
    """Σ over ``dims`` of an integer-valued tensor (times ``times``, if given), exactly, in int64.

    Computed in slices along dim 0, so no full-size temporary is made.
    """
    total, step = 0, max(1, t.shape[0] // 64)
    for i in range(0, t.shape[0], step):
        part = t[i : i + step].to(torch.int64)
        if times is not None:
            part = part * times[i : i + step].to(torch.int64)
        total = total + part.sum(dims)
    return total


def boundary_rows(rows, n):
    """Row indices around the one holding element 2^31 (and the last rows)."""
    r = BOUNDARY // n
    return torch.tensor(sorted({r - 1, r, r + 1, rows - 2, rows - 1}))


# ---- LayerNorm + activation -------------------------------------------------------------------


def test_layer_norm_act_past_2_to_the_31_elements():
    n = 3001  # not a power of two: the row holding element 2^31 straddles it
    rows = BOUNDARY // n + 3
    assert (BOUNDARY // n) * n < BOUNDARY < (BOUNDARY // n + 1) * n < rows * n
    x = normals(rows, n, dtype=bf16, seed=0)
    w = torch.linspace(0.5, 1.5, n)
    b = torch.linspace(-0.25, 0.25, n)
    eps = 1e-5
    y, mean, rstd = ops.layer_norm_act(x, [n], w, b, eps, "gelu")
    sel = boundary_rows(rows, n)
    xs = x[sel].double()
    ref = TF.gelu(TF.layer_norm(xs, (n,), w.double(), b.double(), eps))
    # Ours: the row's sums in float32 (length n, reduction_tol), then one rounding to bfloat16
    # (half an ulp, relative). The mean's error is scaled by rstd·γ; x̂'s relative error by 1.
    rstd_max, w_max = float(rstd[sel].max()), float(w.abs().max())
    tol = reduction_tol(torch.float32, n, float(xs.abs().mean(1).max()) * rstd_max * w_max)
    gamma_n = n * 2**-24 / (1 - n * 2**-24)
    torch.testing.assert_close(y[sel].double(), ref, rtol=2**-8 + 2 * gamma_n, atol=tol.atol)
    del y
    gc.collect()

    # Backward: dy from {-1, 0, 1}, so dβ = Σ_rows dz is an exact integer sum with 'none'.
    dy = trits(rows, n, dtype=bf16, seed=1)
    dx, dw, db = ops.layer_norm_act_backward(dy, x, mean, rstd, [n], w, b, "none", [True, True, True])
    # (dγ and dβ come back in the input's dtype: the exact sum, rounded once.)
    assert torch.equal(db, exact_sum(dy, 0).to(db.dtype))
    xg = xs.clone().requires_grad_()
    TF.layer_norm(xg, (n,), w.double(), b.double(), eps).backward(dy[sel].double())
    # dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·γ: two length-n sums in float32, then one
    # rounding to bfloat16.
    g = dy[sel].double() * w.double()
    xhat = (xs - xs.mean(1, keepdim=True)) * rstd[sel, None].double()
    s = (g.abs().sum(1) + xhat.abs().max(1).values * (g * xhat).abs().sum(1)).max() / n
    tol = reduction_tol(torch.float32, n, float(s) * rstd_max)
    torch.testing.assert_close(dx[sel].double(), xg.grad, rtol=2**-8, atol=tol.atol)
    # dγ = Σ_rows dy·x̂ over every row: against float64, in slices.
    ref_dw = torch.zeros(n, dtype=torch.float64)
    step = 1 << 14
    for i in range(0, rows, step):
        xh = (x[i : i + step].double() - mean[i : i + step, None].double()) * rstd[i : i + step, None].double()
        ref_dw += (dy[i : i + step].double() * xh).sum(0)
    rtol = 1e-3 + torch.finfo(dw.dtype).eps / 2  # and one rounding to dw's dtype
    torch.testing.assert_close(dw.double(), ref_dw, rtol=rtol, atol=1e-3 * math.sqrt(rows))


# ---- BatchNorm + activation -------------------------------------------------------------------


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
def test_batch_norm_act_past_2_to_the_31_elements(memory_format):
    c, h, w_ = 3, 181, 182  # 98826 values per sample and channel
    b = BOUNDARY // (c * h * w_) + 2
    assert b * c * h * w_ > BOUNDARY
    x = trits(b, c, h, w_, dtype=bf16, seed=2).contiguous(memory_format=memory_format)
    weight = torch.tensor([0.5, 1.0, 2.0])
    bias = torch.tensor([0.1, -0.2, 0.3])
    rm, rv = torch.zeros(c), torch.ones(c)
    y, save_mean, save_rstd, new_rm, new_rv = ops.batch_norm_act(x, weight, bias, rm, rv, True, 0.1, 1e-5, "relu")
    r = b * h * w_  # values per channel
    sums = exact_sum(x, (0, 2, 3)).double()
    # The mean: an exact integer sum divided by r, rounded once to float32.
    torch.testing.assert_close(save_mean.double(), sums / r, rtol=2**-23, atol=0)
    sq = exact_sum(x, (0, 2, 3), times=x).double()  # x² is in {0, 1}: exact too
    var = sq / r - (sums / r) ** 2
    torch.testing.assert_close(save_rstd.double(), 1 / torch.sqrt(var + 1e-5), rtol=1e-3, atol=0)
    torch.testing.assert_close(new_rm.double(), 0.1 * sums / r, rtol=1e-6, atol=0)
    torch.testing.assert_close(new_rv.double(), 0.9 + 0.1 * var * r / (r - 1), rtol=1e-3, atol=0)
    # Output elements on both sides of element 2^31 of the storage, and the last ones.
    flat_y, flat_x = y.permute(*_storage_order(y)).reshape(-1), x.permute(*_storage_order(x)).reshape(-1)
    idx = torch.tensor([BOUNDARY - 2, BOUNDARY - 1, BOUNDARY, BOUNDARY + 1, flat_x.numel() - 1])
    chan = _channel_of_storage_index(idx, x)
    ref = torch.relu(
        (flat_x[idx].double() - save_mean[chan].double()) * save_rstd[chan].double() * weight[chan].double()
        + bias[chan].double()
    )
    torch.testing.assert_close(flat_y[idx].double(), ref, rtol=2**-8, atol=1e-6)
    del y, flat_y
    gc.collect()

    dy = trits(b, c, h, w_, dtype=bf16, seed=3).contiguous(memory_format=memory_format)
    dx, dw, db = ops.batch_norm_act_backward(
        dy, x, save_mean, save_rstd, weight, bias, True, "none", [True, True, True]
    )
    assert dx.is_contiguous(memory_format=memory_format)
    sdy = exact_sum(dy, (0, 2, 3)).double()
    assert torch.equal(db, sdy.to(db.dtype))
    # dγ = Σ dy·x̂ = rstd·(Σ dy·x − mean·Σ dy), with both sums exact integers.
    sdx = exact_sum(dy, (0, 2, 3), times=x).double()
    ref_dw = save_rstd.double() * (sdx - save_mean.double() * sdy)
    rtol = 1e-3 + torch.finfo(dw.dtype).eps / 2  # and one rounding to dw's dtype
    torch.testing.assert_close(dw.double(), ref_dw, rtol=rtol, atol=1e-3 * math.sqrt(r))
    # dx = γ·rstd·(dy − dβ/r − x̂·dγ/r) at the boundary elements.
    flat_dx, flat_dy = dx.permute(*_storage_order(dx)).reshape(-1), dy.permute(*_storage_order(dy)).reshape(-1)
    xhat = (flat_x[idx].double() - save_mean[chan].double()) * save_rstd[chan].double()
    ref_dx = (
        weight[chan].double()
        * save_rstd[chan].double()
        * (flat_dy[idx].double() - sdy[chan] / r - xhat * ref_dw[chan] / r)
    )
    torch.testing.assert_close(flat_dx[idx].double(), ref_dx, rtol=2**-7, atol=1e-5)


def _storage_order(t):
    """The permutation of t's dims that lists them outermost (largest stride) first."""
    return sorted(range(t.dim()), key=lambda d: -t.stride(d))


def _channel_of_storage_index(idx, t):
    """The channel (dim 1) of t's elements at storage offsets ``idx`` (t dense, no overlap)."""
    return (idx // t.stride(1)) % t.shape[1]


# ---- conv2d -------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["implicit", "depthwise", "direct"])
def test_conv2d_forward_past_2_to_the_31_elements(algorithm):
    # One plane past 2^31 (c = 1), or for the depthwise rung 2048 planes of 1025² (it copies a
    # whole plane per thread into a padded buffer: 4.3 GB each for a plane of 2^30).
    c = groups = 2048 if algorithm == "depthwise" else 1
    side = 1025 if algorithm == "depthwise" else math.isqrt(BOUNDARY) + 2  # c·side² > 2^31, in and out
    x = trits(1, c, side, side, dtype=torch.float32, seed=4)
    w = trits(c, 1, 3, 3, dtype=torch.float32, seed=5)
    y = ops.conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], groups, "none", algorithm)
    assert y.numel() > BOUNDARY
    # Integer products and sums of nine of them: every order is exact. Output rows around the
    # one holding element 2^31 of the output (and the last rows), against torch on the input
    # rows they read.
    flat = BOUNDARY % (side * side)
    ch = BOUNDARY // (side * side)  # the channel holding element 2^31
    r = flat // side
    for rr in (r - 1, r, r + 1, side - 1):
        # Output row rr reads input rows rr-1..rr+1 (zero rows beyond the edges: padding 1).
        crop = x[:, ch : ch + 1, max(rr - 1, 0) : min(rr + 2, side)].double()
        crop = TF.pad(crop, (1, 1, 1 if rr == 0 else 0, 1 if rr == side - 1 else 0))
        ref = TF.conv2d(crop, w[ch : ch + 1].double())
        assert torch.equal(y[:, ch, rr].double(), ref[:, 0, 0]), f"output row {rr} of channel {ch}"


def test_conv2d_backward_past_2_to_the_31_elements():
    side = math.isqrt(BOUNDARY) + 2  # input and input gradient past 2^31; stride 2 keeps dy at a quarter
    x = trits(1, 1, side, side, dtype=torch.float32, seed=6)
    w = trits(1, 1, 3, 3, dtype=torch.float32, seed=7)
    out = (side + 2 - 3) // 2 + 1
    dy = trits(1, 1, out, out, dtype=torch.float32, seed=8)
    dx, dw, _ = ops.conv2d_backward(
        dy, x, w, None, [2, 2], [1, 1, 1, 1], [1, 1], 1, "none", "implicit", [True, True, False]
    )
    assert dx.numel() > BOUNDARY
    # dW[i, j] = Σ dy[p, q]·x[2p + i − 1, 2q + j − 1]: integer sums, exact, against int64 in slices.
    ref_dw = torch.zeros(3, 3, dtype=torch.int64)
    block = 512
    for p0 in range(0, out, block):
        p1 = min(p0 + block, out)
        # dy rows p0..p1-1 read padded rows 2·p0 .. 2·p1, i.e. x rows 2·p0-1 .. 2·p1-1.
        rows = x[0, 0, max(2 * p0 - 1, 0) : min(2 * p1, side)].to(torch.int64)
        rows = TF.pad(rows, (1, 1, 1 if p0 == 0 else 0, max(0, 2 * p1 - side)))
        d = dy[0, 0, p0:p1].to(torch.int64)
        for i in range(3):
            for j in range(3):
                ref_dw[i, j] += (d * rows[i : i + 2 * (p1 - p0) : 2, j : j + 2 * out : 2]).sum()
    assert torch.equal(dw[0, 0].to(torch.int64), ref_dw)
    # dx rows around the one holding element 2^31, against torch's transposed convolution.
    r = BOUNDARY // side
    for rr in (r - 1, r, r + 1, side - 1):
        p_lo, p_hi = max((rr - 1) // 2, 0), min(rr // 2 + 2, out)
        ref = torch.nn.grad.conv2d_input(
            (1, 1, 2 * (p_hi - p_lo) + 1, side), w.double(), dy[:, :, p_lo:p_hi].double(), stride=2, padding=(0, 1)
        )
        local = rr + 1 - 2 * p_lo  # the row's index in the window ref covers (padding row excluded)
        assert 0 <= local < ref.shape[2]
        assert torch.equal(dx[0, 0, rr].double(), ref[0, 0, local]), f"input-gradient row {rr}"
