"""The CUDA kernels of the fused LayerNorm/BatchNorm + activation ops (csrc/cuda/norm_act.cu).

Every test needs a CUDA device and is skipped without one (marker ``cuda``), unless
``MINITORCH_CUDA_TEST_DEVICE`` says where else to run them. Oracles: torch eager in float64
(``F.layer_norm`` / ``F.batch_norm`` and the activation, through autograd) and the CPU kernels of the
same ops at the same dtype.

``MINITORCH_CUDA_TEST_DEVICE=emu`` runs the same tests, properties and tolerances against the CUDA
kernels compiled for the CPU on the CUDA emulator (csrc/emu/: ``torch.ops.minitorch_nn_emu``, built
on first use and cached under build/cuda_emu/). Outputs and workspaces start as NaN / 0xFF there, so
an element a kernel does not write fails the comparison. ``MINITORCH_CUDA_EMU_VARIANT`` picks the
build (plain, capped, asan, tsan: see csrc/emu/build.py; .ci/cuda_emu.sh runs them), and
``MINITORCH_CUDA_EMU_FULL=1`` adds the largest shapes (slow on the emulator). The CUDA-only tests
(streams, graphs, devices) still skip.

``MINITORCH_CUDA_TEST_DEVICE=cpu`` runs the device-independent tests against the CPU kernels
instead: a check of the tests themselves.

Tolerances (stated, not tuned): for a value computed from reductions of length ``k`` in the
accumulation type (float32 for bfloat16 and float16), with unit roundoffs ``u_acc`` and ``u_out`` (the
output dtype's) and ``γ_k = k·u_acc/(1 − k·u_acc)`` (Higham §3.1, any summation order),

    rtol = 2·u_out + 2·γ_k + 64·u_acc,    atol = rtol · scale

where ``scale`` is the magnitude the result is built from (the largest |value| of the oracle, or
for dβ the largest per-column Σ|dz|, for dγ Σ|dz·x̂| + Σ|dz|·(1 + D), x̂ carrying an absolute error
of order u·(1 + D) with D = max mean|x|·rstd, how far a row sits from zero relative to its spread:
rounding x − μ costs u·|x|, and rstd multiplies it), so cancellation near zero is judged against
the size of the terms, not of the result. (torch's float64 backward does carry it: for a row of
one value, x̂ = 0 exactly, its dγ comes out ~D·u, as rstd = 1/√eps makes D ≈ 300·|x|.)
The 64·u_acc covers the pointwise math (f, f', rsqrt).
CUDA against the CPU kernel: twice that (both sides carry the error).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

import minitorch_nn.kernels as K

from .compare import TORCH_ACT

MODE = os.environ.get("MINITORCH_CUDA_TEST_DEVICE", "cuda")  # cuda | emu | cpu
ON_GPU = MODE == "cuda"
EMULATED = MODE == "emu"
DEV = "cuda" if ON_GPU else "cpu"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(not K.AVAILABLE, reason=f"compiled ops unavailable: {K.UNAVAILABLE_REASON}"),
]
gpu_only = pytest.mark.skipif(not ON_GPU, reason="a CUDA-only behaviour")
cuda_kernels = pytest.mark.skipif(MODE == "cpu", reason="compares the CUDA kernels with the CPU op")
large = pytest.mark.skipif(
    EMULATED and os.environ.get("MINITORCH_CUDA_EMU_FULL") != "1",
    reason="large shapes: slow on the emulator (MINITORCH_CUDA_EMU_FULL=1 runs them)",
)

cpu_ops = torch.ops.minitorch_nn
ops = cpu_ops  # the namespace under test: minitorch_nn (GPU, CPU), or minitorch_nn_emu (set below)


@pytest.fixture(scope="module", autouse=True)
def _emulated_ops():
    """In emulated mode, build (or take from the cache) and load the emulator's ops."""
    global ops
    if EMULATED:
        ops = emulator_build().load(os.environ.get("MINITORCH_CUDA_EMU_VARIANT", "plain"))


def emulator_build():
    """csrc/emu/build.py as a module, kept in sys.modules (its torch.library.Library must stay alive)."""
    name = "minitorch_nn_cuda_emu_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "csrc/emu/build.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def layer_norm_act(x, normalized_shape, weight=None, bias=None, eps=1e-5, activation="gelu"):
    """K.layer_norm_act on the op namespace under test."""
    shape = [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)
    return ops.layer_norm_act(x, shape, weight, bias, float(eps), activation)[0]


def batch_norm_act(x, running_mean, running_var, weight=None, bias=None, *, training, activation, momentum=0.1):
    """K.batch_norm_act on the op namespace under test (the running statistics updated in place)."""
    out, _mean, _rstd, new_rm, new_rv = ops.batch_norm_act(
        x, weight, bias, running_mean, running_var, training, momentum, 1e-5, activation
    )
    if training and running_mean is not None:
        with torch.no_grad():
            running_mean.copy_(new_rm)
            running_var.copy_(new_rv)
    return out


DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
ACTS = list(K.ACTIVATIONS)


def rel_tol(dtype: torch.dtype, k: int) -> float:
    acc = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
    u_acc, u_out = torch.finfo(acc).eps / 2, torch.finfo(dtype).eps / 2
    gamma = k * u_acc / (1 - k * u_acc)
    return 2 * u_out + 2 * gamma + 64 * u_acc


def check(actual, expected, dtype, k, scale=None, what="", factor=1.0):
    """assert_close at the module docstring's tolerance; NaNs compare equal."""
    expected = expected.to(actual.device)
    if scale is None:
        scale = expected.double().abs().max().item() if expected.numel() else 1.0
    rtol = factor * rel_tol(dtype, k)
    torch.testing.assert_close(
        actual.double(),
        expected.double(),
        rtol=rtol,
        atol=rtol * max(scale, 1e-30),
        equal_nan=True,
        msg=lambda m: f"{what}: {m}",
    )


def seeded(shape, dtype=torch.float32, seed=0, device=DEV):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Float64 oracles with autograd, and the scales of the parameter-gradient sums.


def layer_norm_reference(x, w, b, act, dy):
    """Float64 torch eager on the CPU: y, (dx, dw, db), and the per-column Σ|terms| of dw and db."""
    n = x.shape[-1]
    xd = x.detach().cpu().double().requires_grad_()
    wd = w.detach().cpu().double().requires_grad_()
    bd = b.detach().cpu().double().requires_grad_()
    z = F.layer_norm(xd, (n,), wd, bd)
    y = TORCH_ACT[act](z)
    dxd, dwd, dbd = torch.autograd.grad(y, (xd, wd, bd), dy.cpu().double())
    (dz,) = torch.autograd.grad(TORCH_ACT[act](z), z, dy.cpu().double())  # dy·f'(z)
    with torch.no_grad():
        xh = F.layer_norm(xd, (n,))
        s_w = (dz.abs() * xh.abs()).reshape(-1, n).sum(0).max().item()
        s_b = dz.abs().reshape(-1, n).sum(0).max().item()
    return y.detach(), (dxd, dwd, dbd), (s_w, s_b)


def batch_norm_reference(x, w, b, rm, rv, training, act, dy, momentum=0.1, eps=1e-5):
    xd = x.detach().cpu().double().requires_grad_()
    wd = w.detach().cpu().double().requires_grad_()
    bd = b.detach().cpu().double().requires_grad_()
    rmd, rvd = rm.detach().cpu().double().clone(), rv.detach().cpu().double().clone()
    z = F.batch_norm(xd, rmd, rvd, wd, bd, training=training, momentum=momentum, eps=eps)
    y = TORCH_ACT[act](z)
    dxd, dwd, dbd = torch.autograd.grad(y, (xd, wd, bd), dy.cpu().double())
    dims = [d for d in range(x.dim()) if d != 1]
    (dz,) = torch.autograd.grad(TORCH_ACT[act](z), z, dy.cpu().double())  # dy·f'(z)
    with torch.no_grad():
        stats = (None, None) if training else (rm.detach().cpu().double(), rv.detach().cpu().double())
        xh = F.batch_norm(xd, *stats, training=training, eps=eps)
        s_w = (dz.abs() * xh.abs()).sum(dims).max().item()
        s_b = dz.abs().sum(dims).max().item()
    return y.detach(), (dxd, dwd, dbd), (s_w, s_b), (rmd, rvd)


def run_layer_norm(x, w, b, act, dy, fn=None):
    xr = x.detach().clone().requires_grad_()
    wr = w.detach().clone().requires_grad_()
    br = b.detach().clone().requires_grad_()
    y = (fn or layer_norm_act)(xr, x.shape[-1], wr, br, activation=act)
    dx, dw, db = torch.autograd.grad(y, (xr, wr, br), dy)
    return y, (dx, dw, db)


def run_batch_norm(x, w, b, rm, rv, training, act, dy, fn=None):
    xr = x.detach().clone().requires_grad_()
    wr = w.detach().clone().requires_grad_()
    br = b.detach().clone().requires_grad_()
    rm, rv = rm.clone(), rv.clone()
    y = (fn or batch_norm_act)(xr, rm, rv, wr, br, training=training, activation=act)
    dx, dw, db = torch.autograd.grad(y, (xr, wr, br), dy)
    return y, (dx, dw, db), (rm, rv)


def check_layer_norm(x, act, what, *, against_cpu=MODE != "cpu", fn=None):
    """``fn`` (default: layer_norm_act on the namespace under test) against torch, and the CPU op."""
    dtype, (M, N) = x.dtype, (x.numel() // x.shape[-1], x.shape[-1])
    w, b = 1 + 0.5 * seeded(N, dtype, 1, x.device), 0.5 * seeded(N, dtype, 2, x.device)
    dy = (torch.rand(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1).to(
        x.device, dtype
    )
    y, (dx, dw, db) = run_layer_norm(x, w, b, act, dy, fn=fn)
    y_ref, (dx_ref, dw_ref, db_ref), (s_w, s_b) = layer_norm_reference(x, w, b, act, dy)
    assert y.is_contiguous()
    assert y.dtype == dtype
    assert y.device == x.device
    check(y, y_ref, dtype, N, what=f"{what} y")
    rstd_max, centering, dx_max = 1.0, 0.0, 0.0  # no rows
    if M:
        rstd = (x.double().var(-1, unbiased=False) + 1e-5).rsqrt()
        rstd_max = rstd.max().item()
        centering = (x.double().abs().mean(-1) * rstd).max().item()  # D of the docstring
        dx_max = dx_ref.abs().max().item()
    check(dx, dx_ref, dtype, N, scale=rstd_max * (1 + dx_max) * 4, what=f"{what} dx")
    check(dw, dw_ref, dtype, M, scale=s_w + s_b * (1 + centering), what=f"{what} dw")
    check(db, db_ref, dtype, M, scale=s_b, what=f"{what} db")
    if against_cpu:
        y_cpu, grads_cpu = run_layer_norm(x.cpu(), w.cpu(), b.cpu(), act, dy.cpu(), fn=K.layer_norm_act)
        check(y, y_cpu, dtype, N, what=f"{what} y vs CPU", factor=2)
        s_dw = s_w + s_b * (1 + centering)
        for name, g, g_cpu, k, s in (("dw", dw, grads_cpu[1], M, s_dw), ("db", db, grads_cpu[2], M, s_b)):
            check(g, g_cpu, dtype, k, scale=s, what=f"{what} {name} vs CPU", factor=2)


# ---------------------------------------------------------------------------------------------
# LayerNorm + activation

# Row lengths: both sides of the warp/block crossovers (1024; 256 for the float64 backward),
# vector-width multiples and odd lengths (the scalar path), and rows too long for the block
# kernel's shared-memory cache.
ROW_LENGTHS = [1, 3, 64, 100, 256, 257, 1023, 1024, 1025, 2041, 4096, 13000]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("N", ROW_LENGTHS)
def test_layer_norm_act_matches_torch_for_every_row_length(dtype, N):
    x = seeded((37, N), dtype, seed=N)
    check_layer_norm(x, "gelu", f"{dtype} N={N}")


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("N", [96, 3001])
def test_layer_norm_act_matches_torch_for_every_activation(act, N):
    for dtype in DTYPES:
        check_layer_norm(seeded((19, N), dtype, seed=7), act, f"{act} {dtype} N={N}")


@pytest.mark.parametrize("N", [64, 1021, 2048, 2041])
def test_layer_norm_act_handles_misaligned_storage_offsets(N):
    for dtype in DTYPES:
        buf = seeded(5 * N + 1, dtype, seed=11)
        x = buf[1:].view(5, N)  # the data starts 1 element past a 16-byte boundary: the scalar path
        assert x.data_ptr() % 16 != 0
        check_layer_norm(x, "silu", f"offset {dtype} N={N}")


def test_layer_norm_act_handles_non_contiguous_input_and_3d_normalized_shape():
    x = seeded((6, 4, 10), seed=5).transpose(0, 1)  # (4, 6, 10), non-contiguous
    w = seeded((6, 10), seed=6)
    y = layer_norm_act(x, (6, 10), w, None, activation="relu")
    expected = F.relu(F.layer_norm(x.cpu().double(), (6, 10), w.cpu().double()))
    check(y, expected, torch.float32, 60)


@large
@pytest.mark.parametrize(("M", "N"), [(300_000, 8), (70_001, 1100)])
def test_layer_norm_act_handles_more_rows_than_one_grid_covers(M, N):
    # 300k rows exceed the warp kernel's 65535 blocks × 4 rows, 70k the block kernel's 65535.
    x = seeded((M, N), seed=M)
    check_layer_norm(x, "silu", f"M={M} N={N}", against_cpu=False)  # smooth: no kink at 0


@pytest.mark.parametrize("shape", [(0, 8), (3, 0), (0, 2000), (2, 0, 5)])
def test_layer_norm_act_on_empty_tensors_matches_the_cpu_op(shape):
    x = torch.zeros(shape, device=DEV)
    n = shape[-1]
    w = torch.ones(n, device=DEV, requires_grad=True)
    out, mean, rstd = ops.layer_norm_act(x, [n], w, None, 1e-5, "gelu")
    out_c, mean_c, rstd_c = cpu_ops.layer_norm_act(x.cpu(), [n], w.detach().cpu(), None, 1e-5, "gelu")
    for a, c in ((out, out_c), (mean, mean_c), (rstd, rstd_c)):
        assert a.shape == c.shape
        assert a.dtype == c.dtype
        torch.testing.assert_close(a.cpu(), c, equal_nan=True)
    grads = ops.layer_norm_act_backward(x, x, mean, rstd, [n], w, None, "gelu", [True, True, False])
    assert grads[0].shape == x.shape
    assert grads[2].numel() == 0
    torch.testing.assert_close(grads[1].cpu(), torch.zeros(n))  # Σ over no rows (or of no values)


def test_layer_norm_act_backward_respects_output_mask():
    x, dy = seeded((9, 40), seed=1), seeded((9, 40), seed=2)
    w, b = seeded(40, seed=3), seeded(40, seed=4)
    _out, mean, rstd = ops.layer_norm_act(x, [40], w, b, 1e-5, "mish")
    full = ops.layer_norm_act_backward(dy, x, mean, rstd, [40], w, b, "mish", [True, True, True])
    for mask in ([False, True, False], [False, False, True], [True, False, False]):
        part = ops.layer_norm_act_backward(dy, x, mean, rstd, [40], w, b, "mish", mask)
        for wanted, p, f in zip(mask, part, full, strict=True):
            if wanted:
                assert torch.equal(p, f)
            else:
                assert p.numel() == 0


# ---------------------------------------------------------------------------------------------
# The LayerNorm+act kernel ladder (csrc/cuda/ln_ladder.cu); rung 4 is norm_act.cu's kernels


def ladder_rung(rung):
    """layer_norm_act by one rung of the ladder, on the op namespace under test."""
    if rung == 4:
        return layer_norm_act

    def run(x, normalized_shape, weight=None, bias=None, eps=1e-5, activation="gelu"):
        return ops.layer_norm_act_ladder(x, [normalized_shape], weight, bias, float(eps), activation, rung)[0]

    return run


def rows_at(M, N, dtype=torch.float32, offset=0, seed=0):
    """M rows of N values starting ``offset`` elements into their storage (1: no row 16-byte aligned)."""
    return seeded(M * N + offset, dtype, seed)[offset:].view(M, N)


@st.composite
def ladder_rows(draw):
    """rows_at's arguments and an activation: 0 to 9 rows, or 33 or 70 (rungs 2-3 sum dγ, dβ in chunks
    of 32 rows); row lengths below, at and above the warp's 32 lanes, multiples of the 128-bit vector
    (2 to 8 values), odd ones and storage offsets (where rung 3 falls back to rung 2). Drawn as
    numbers, not tensors: the explicit examples are made at import, before any device is known to work."""
    dtype = draw(st.sampled_from(DTYPES))
    M = draw(st.integers(0, 9) | st.sampled_from([33, 70]))
    N = draw(
        st.sampled_from([1, 3, 8, 31, 32, 33, 64, 100, 257, 1024, 1030])
        | st.integers(1, 300)
        | st.integers(1, 40).map(lambda k: 8 * k)  # whole 128-bit vectors of every dtype
    )
    offset = draw(st.sampled_from([0, 0, 0, 1]))
    return (M, N, dtype, offset, draw(st.integers(0, 1000))), draw(st.sampled_from(ACTS))


# Each rung, forward and the three gradients, against torch (float64) and the CPU op at the module
# docstring's tolerances. The explicit examples always run: no rows; one row; bfloat16 rows of
# 8-value vectors (rung 3's vector path); an odd row length over a storage offset (its fallback);
# 70 rows (three chunks of dγ, dβ partial sums).
@pytest.mark.parametrize("rung", [1, 2, 3, 4])
@given(case=ladder_rows())
@example(case=((0, 7, torch.float32, 0, 0), "silu"))
@example(case=((1, 17, torch.float64, 0, 0), "gelu_tanh"))
@example(case=((5, 64, torch.bfloat16, 0, 0), "mish"))
@example(case=((3, 1041, torch.float32, 1, 0), "gelu"))
@example(case=((70, 40, torch.float32, 0, 0), "silu"))
def test_every_ladder_rung_matches_torch(rung, case):
    rows, act = case
    x = rows_at(*rows)
    check_layer_norm(x, act, f"rung {rung} {x.dtype} {tuple(x.shape)} {act}", fn=ladder_rung(rung))


# ---------------------------------------------------------------------------------------------
# BatchNorm + activation


def bn_layouts(dtype, seed):
    """(name, x): NCHW, channels_last, a permuted (neither) layout, 2-D, 3-D and a storage offset."""
    x4 = seeded((6, 5, 7, 9), dtype, seed)
    buf = seeded(6 * 8 * 4 * 4 + 1, dtype, seed + 1)
    return [
        ("nchw", x4),
        ("channels_last", x4.to(memory_format=torch.channels_last)),
        ("permuted", seeded((6, 7, 5, 9), dtype, seed).transpose(1, 2)),
        ("2d", seeded((33, 12), dtype, seed)),
        ("3d", seeded((4, 6, 31), dtype, seed)),
        ("offset", buf[1:].view(6, 8, 4, 4)),
        ("offset_channels_last", buf[1:].view(6, 4, 4, 8).permute(0, 3, 1, 2)),
    ]


def check_batch_norm(x, act, training, what, *, against_cpu=MODE != "cpu"):
    dtype, C = x.dtype, x.shape[1]
    R = x.numel() // max(C, 1)
    w, b = 1 + 0.5 * seeded(C, torch.float32, 1), 0.5 * seeded(C, torch.float32, 2)
    if dtype == torch.float64:
        w, b = w.double(), b.double()
    rm, rv = 0.1 * seeded(C, w.dtype, 3), 1 + 0.5 * seeded(C, w.dtype, 4).abs()
    dy = (torch.rand(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2 - 1).to(DEV, dtype)
    y, (dx, dw, db), (rm1, rv1) = run_batch_norm(x, w, b, rm, rv, training, act, dy)
    y_ref, (dx_ref, dw_ref, db_ref), (s_w, s_b), (rm_ref, rv_ref) = batch_norm_reference(
        x, w, b, rm, rv, training, act, dy
    )
    assert y.stride() == torch.empty_like(x).stride(), f"{what}: output layout differs from the input's"
    check(y, y_ref, dtype, R, what=f"{what} y")
    check(dx, dx_ref, dtype, R, scale=4 * (1 + dx_ref.abs().max().item()), what=f"{what} dx")
    check(dw, dw_ref, dtype, R, scale=s_w + s_b, what=f"{what} dw")
    check(db, db_ref, dtype, R, scale=s_b, what=f"{what} db")
    check(rm1, rm_ref, w.dtype, R, what=f"{what} running_mean")
    check(rv1, rv_ref, w.dtype, R, what=f"{what} running_var")
    if against_cpu:
        y_c, (_dx_c, dw_c, db_c), (rm_c, rv_c) = run_batch_norm(
            x.cpu(), w.cpu(), b.cpu(), rm.cpu(), rv.cpu(), training, act, dy.cpu(), fn=K.batch_norm_act
        )
        check(y, y_c, dtype, R, what=f"{what} y vs CPU", factor=2)
        check(dw, dw_c, dtype, R, scale=s_w + s_b, what=f"{what} dw vs CPU", factor=2)
        check(db, db_c, dtype, R, scale=s_b, what=f"{what} db vs CPU", factor=2)
        check(rm1, rm_c, w.dtype, R, what=f"{what} running_mean vs CPU", factor=2)
        check(rv1, rv_c, w.dtype, R, what=f"{what} running_var vs CPU", factor=2)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_batch_norm_act_matches_torch_in_every_layout(dtype, training):
    for name, x in bn_layouts(dtype, seed=21):
        check_batch_norm(x, "relu", training, f"{name} {dtype} training={training}")


@pytest.mark.parametrize("act", ACTS)
def test_batch_norm_act_matches_torch_for_every_activation(act):
    for dtype in DTYPES:
        for name, x in bn_layouts(dtype, seed=31)[:2]:
            check_batch_norm(x, act, True, f"{act} {name} {dtype}")


@large
@pytest.mark.parametrize(
    "shape_layout",
    [
        ((2, 3, 512, 513), "nchw"),  # few channels, long reductions: many chunks per channel
        ((64, 3, 64, 65), "channels_last"),
        ((2, 70_000, 3), "nchw"),  # more channels than gridDim.y ≤ 65535
        ((5, 70_001), "2d"),
    ],
)
def test_batch_norm_act_handles_large_reductions_and_many_channels(shape_layout):
    shape, layout = shape_layout
    x = seeded(shape, seed=3)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    check_batch_norm(x, "silu", True, f"{shape} {layout}", against_cpu=False)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (4, 0, 2, 2), (0, 5)])
def test_batch_norm_act_on_empty_tensors_matches_the_cpu_op(shape, training):
    x = torch.zeros(shape, device=DEV)
    C = shape[1]
    w, rm, rv = torch.ones(C, device=DEV), torch.zeros(C, device=DEV), torch.ones(C, device=DEV)
    got = ops.batch_norm_act(x, w, None, rm, rv, training, 0.1, 1e-5, "relu")
    want = cpu_ops.batch_norm_act(x.cpu(), w.cpu(), None, rm.cpu(), rv.cpu(), training, 0.1, 1e-5, "relu")
    for a, c in zip(got, want, strict=True):
        assert a.shape == c.shape
        assert a.dtype == c.dtype
        torch.testing.assert_close(a.cpu(), c, equal_nan=True)
    grads = ops.batch_norm_act_backward(x, x, got[1], got[2], w, None, training, "relu", [True, True, True])
    grads_c = cpu_ops.batch_norm_act_backward(
        x.cpu(), x.cpu(), want[1], want[2], w.cpu(), None, training, "relu", [True, True, True]
    )
    for a, c in zip(grads, grads_c, strict=True):
        assert a.shape == c.shape
        torch.testing.assert_close(a.cpu(), c, equal_nan=True)


def test_batch_norm_act_running_stats_in_another_dtype():
    # bfloat16 input with float32 statistics and parameters: torch's mixed-precision rule (float64
    # ones it rejects, "mixed dtype (CPU): expect parameter to have scalar type of Float", as do the ops).
    x = seeded((8, 4, 3, 3), torch.bfloat16, seed=1)
    rm, rv = torch.zeros(4, device=DEV, dtype=torch.float32), torch.ones(4, device=DEV, dtype=torch.float32)
    w = torch.ones(4, device=DEV, dtype=torch.float32, requires_grad=True)
    batch_norm_act(x, rm, rv, w, None, training=True, activation="none").sum().backward()
    assert rm.dtype == torch.float32
    assert w.grad.dtype == torch.float32
    torch.testing.assert_close(rm.cpu(), 0.1 * x.float().mean((0, 2, 3)).cpu(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# The op contract: opcheck, gradcheck, torch.compile


def op_samples():
    x = seeded((4, 6, 10), seed=1)
    w, b = seeded((10,), seed=2), seeded((10,), seed=3)
    xb = seeded((4, 3, 5, 5), seed=4)
    wb, bb, rm, rv = seeded(3, seed=5), seeded(3, seed=6), torch.zeros(3, device=DEV), torch.ones(3, device=DEV)
    return [
        (ops.layer_norm_act.default, (x, [10], w, b, 1e-5, "gelu")),
        (ops.layer_norm_act.default, (x, [6, 10], None, None, 1e-5, "mish")),
        (ops.batch_norm_act.default, (xb, wb, bb, rm, rv, True, 0.1, 1e-5, "silu")),
        (
            ops.batch_norm_act.default,
            (xb.to(memory_format=torch.channels_last), wb, bb, rm, rv, False, 0.1, 1e-5, "relu"),
        ),
        (ops.batch_norm_act.default, (xb, None, None, None, None, True, 0.1, 1e-5, "gelu_tanh")),
    ]


@pytest.mark.parametrize("index", range(5))
def test_opcheck(index):
    op, args = op_samples()[index]
    differentiable = (0, 2, 3) if op is ops.layer_norm_act.default else (0, 1, 2)  # input, weight, bias
    args = tuple(
        a.requires_grad_() if i in differentiable and isinstance(a, torch.Tensor) else a for i, a in enumerate(args)
    )
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("act", ACTS)
def test_gradcheck_float64(act):
    x = seeded((3, 2, 17), torch.float64, seed=1).requires_grad_()
    w = seeded((2, 17), torch.float64, seed=2).requires_grad_()
    b = seeded((2, 17), torch.float64, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: layer_norm_act(x, (2, 17), w, b, activation=act), (x, w, b))
    xb = seeded((4, 3, 3, 2), torch.float64, seed=4).requires_grad_()
    wb = seeded(3, torch.float64, seed=5).requires_grad_()
    bb = seeded(3, torch.float64, seed=6).requires_grad_()
    for training in (True, False):
        rm, rv = torch.zeros(3, device=DEV, dtype=torch.float64), torch.ones(3, device=DEV, dtype=torch.float64)
        fn = lambda x, w, b, t=training, rm=rm, rv=rv: batch_norm_act(  # noqa: E731
            x, rm.clone(), rv.clone(), w, b, training=t, activation=act
        )
        assert torch.autograd.gradcheck(fn, (xb, wb, bb))


def test_torch_compile_fullgraph_matches_eager():
    def f(x, w, b, xb, wb, bb):
        y = layer_norm_act(x, 32, w, b, activation="gelu")
        z = batch_norm_act(xb, None, None, wb, bb, training=True, activation="relu")
        return y.sum() + z.sum()

    args = [seeded((8, 32), seed=1), seeded(32, seed=2), seeded(32, seed=3)]
    args += [seeded((4, 3, 5, 5), seed=4), seeded(3, seed=5), seeded(3, seed=6)]
    args = [a.requires_grad_() for a in args]
    eager = f(*args)
    g_eager = torch.autograd.grad(eager, args)
    compiled = torch.compile(f, fullgraph=True)(*args)
    g_compiled = torch.autograd.grad(compiled, args)
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(g_compiled, g_eager, strict=True):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------
# CUDA behaviour: streams, graphs, determinism, devices


@gpu_only
def test_ops_run_on_the_current_stream():
    x_new = seeded((256, 1000), seed=1)
    w = seeded(1000, seed=2)
    expected = K.layer_norm_act(x_new, 1000, w, None, activation="gelu")
    xb_new = seeded((8, 16, 9, 9), seed=3)
    expected_b = K.batch_norm_act(xb_new, None, None, None, None, training=True, activation="relu")
    x, xb = torch.zeros_like(x_new), torch.zeros_like(xb_new)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        # The side stream is busy for a while before its copies land; an op that ignored the
        # current stream would run on the default stream first and read the zeros.
        torch.cuda._sleep(100_000_000)
        x.copy_(x_new)
        xb.copy_(xb_new)
        y = K.layer_norm_act(x, 1000, w, None, activation="gelu")
        yb = K.batch_norm_act(xb, None, None, None, None, training=True, activation="relu")
    side.synchronize()
    assert torch.equal(y, expected)
    assert torch.equal(yb, expected_b)


@gpu_only
def test_cuda_graph_capture_and_replay():
    x, dy = seeded((64, 700), seed=1), seeded((64, 700), seed=2)
    w, b = seeded(700, seed=3), seeded(700, seed=4)
    xb, dyb = seeded((4, 8, 6, 6), seed=5), seeded((4, 8, 6, 6), seed=6)
    wb, bb = seeded(8, seed=7), seeded(8, seed=8)
    rm, rv = torch.zeros(8, device=DEV), torch.ones(8, device=DEV)

    def step():
        out, mean, rstd = ops.layer_norm_act(x, [700], w, b, 1e-5, "gelu")
        grads = ops.layer_norm_act_backward(dy, x, mean, rstd, [700], w, b, "gelu", [True, True, True])
        outb, sm, sr, nrm, nrv = ops.batch_norm_act(xb, wb, bb, rm, rv, True, 0.1, 1e-5, "silu")
        gradsb = ops.batch_norm_act_backward(dyb, xb, sm, sr, wb, bb, True, "silu", [True, True, True])
        return (out, *grads, outb, nrm, nrv, *gradsb)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up outside the capture (allocator, lazy init)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for seed in (10, 20):
        for t, s in ((x, seed), (dy, seed + 1), (xb, seed + 2), (dyb, seed + 3)):
            t.copy_(seeded(t.shape, seed=s))
        graph.replay()
        torch.cuda.synchronize()
        for got, want in zip(captured, step(), strict=True):
            assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_is_bitwise_repeatable(dtype):
    for N in (256, 3000):
        x, dy = seeded((2000, N), dtype, seed=1), seeded((2000, N), dtype, seed=2)
        w, b = seeded(N, dtype, seed=3), seeded(N, dtype, seed=4)
        _, mean, rstd = ops.layer_norm_act(x, [N], w, b, 1e-5, "gelu")
        runs = [ops.layer_norm_act_backward(dy, x, mean, rstd, [N], w, b, "gelu", [True, True, True]) for _ in range(3)]
        for run in runs[1:]:
            assert all(torch.equal(a, c) for a, c in zip(run, runs[0], strict=True)), f"LayerNorm N={N}"
    for layout in (torch.contiguous_format, torch.channels_last):
        xb = seeded((32, 24, 17, 17), dtype, seed=5).to(memory_format=layout)
        dyb = seeded((32, 24, 17, 17), dtype, seed=6).to(memory_format=layout)
        wb = seeded(24, seed=7) if dtype != torch.float64 else seeded(24, dtype, seed=7)
        runs = []
        for _ in range(3):
            out = ops.batch_norm_act(xb, wb, wb, None, None, True, 0.1, 1e-5, "silu")
            runs.append(
                (*out[:3], *ops.batch_norm_act_backward(dyb, xb, out[1], out[2], wb, wb, True, "silu", [True] * 3))
            )
        for run in runs[1:]:
            assert all(torch.equal(a, c) for a, c in zip(run, runs[0], strict=True)), f"BatchNorm {layout}"


@gpu_only
def test_inputs_on_different_devices_are_rejected():
    x = seeded((4, 8), seed=1)
    with pytest.raises(RuntimeError, match="weight is on cpu but input is on cuda"):
        ops.layer_norm_act(x, [8], torch.ones(8), None, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="running_mean is on cpu but input is on cuda"):
        ops.batch_norm_act(x, None, None, torch.zeros(8), torch.ones(8, device=DEV), True, 0.1, 1e-5, "relu")
    _, mean, rstd = ops.layer_norm_act(x, [8], None, None, 1e-5, "relu")
    with pytest.raises(RuntimeError, match="mean is on cpu but input is on cuda"):
        ops.layer_norm_act_backward(x, x, mean.cpu(), rstd, [8], None, None, "relu", [True, False, False])


@cuda_kernels
def test_bad_input_raises_as_on_the_cpu():
    for bad in (
        lambda o, d: o.layer_norm_act(torch.zeros(2, 3, device=d, dtype=torch.int32), [3], None, None, 1e-5, "relu"),
        lambda o, d: o.layer_norm_act(torch.zeros(2, 3, device=d), [4], None, None, 1e-5, "relu"),
        lambda o, d: o.layer_norm_act(torch.zeros(2, 3, device=d), [3], None, None, 1e-5, "tanh"),
        lambda o, d: o.batch_norm_act(torch.zeros(1, 3, device=d), None, None, None, None, True, 0.1, 1e-5, "relu"),
        lambda o, d: o.batch_norm_act(torch.zeros(2, 3, device=d), None, None, None, None, False, 0.1, 1e-5, "relu"),
    ):
        with pytest.raises(Exception) as cpu_error:  # noqa: PT011  (the type is whatever the CPU op raises)
            bad(cpu_ops, "cpu")
        with pytest.raises(type(cpu_error.value)) as cuda_error:
            bad(ops, DEV)
        assert str(cuda_error.value).splitlines()[0] == str(cpu_error.value).splitlines()[0]


@pytest.mark.parametrize("n", [7, 1000, 1500])  # warp per row, and block per row
def test_a_constant_row_normalizes_to_exactly_zero_at_any_magnitude(n):
    for c in (12345.6, -3.1e5, 1e4 + 0.3, 7.0e-30):
        x = torch.full((3, n), c, device=DEV)
        out, mean, _rstd = ops.layer_norm_act(x, [n], None, None, 1e-5, "none")
        assert torch.equal(out, torch.zeros_like(out)), f"c={c}: {out.abs().max()}"
        assert torch.equal(mean.cpu(), torch.full((3,), float(x[0, 0]))), f"c={c}"


def test_rstd_is_finite_for_constant_rows():
    x = torch.full((5, 1500), 3.0, device=DEV)
    out, _mean, rstd = ops.layer_norm_act(x, [1500], None, None, 1e-5, "none")
    assert torch.isfinite(rstd).all()
    assert torch.all(out == 0)
    torch.testing.assert_close(rstd.cpu(), torch.full((5,), 1 / math.sqrt(1e-5)))


def test_relu_passes_the_gradient_through_a_nan_pre_activation_like_torch():
    # torch's relu backward passes dy where the output is NaN (NaN ≤ 0 is false); see test_norm_act.
    x = torch.randn(4, 6, dtype=torch.float64, device=DEV, requires_grad=True)
    b = torch.zeros(6, dtype=torch.float64, device=DEV)
    b[2] = float("nan")
    b.requires_grad_()
    dy = torch.randn(4, 6, dtype=torch.float64, device=DEV)
    ours = torch.autograd.grad(layer_norm_act(x, 6, None, b, activation="relu"), (x, b), dy)
    theirs = torch.autograd.grad(F.relu(F.layer_norm(x, (6,), None, b)), (x, b), dy)
    for a, t in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, t, equal_nan=True)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
def test_eval_batch_norm_act_gradient_at_an_infinite_input_is_finite_like_torch(memory_format):
    # In eval dx = γ·rstd·dz: an infinite x must not make it ∞·0 = NaN; see test_norm_act.
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64, device=DEV).contiguous(memory_format=memory_format)
    x[1, 2, 3, 4] = float("inf")
    x[0, 1, 0, 0] = -float("inf")
    x.requires_grad_()
    rm = torch.randn(3, dtype=torch.float64, device=DEV)
    rv = torch.rand(3, dtype=torch.float64, device=DEV) + 0.5
    w = torch.randn(3, dtype=torch.float64, device=DEV)
    dy = torch.randn(2, 3, 4, 8, dtype=torch.float64, device=DEV)
    (ours,) = torch.autograd.grad(batch_norm_act(x, rm, rv, w, None, training=False, activation="none"), x, dy)
    (theirs,) = torch.autograd.grad(F.batch_norm(x, rm, rv, w, None), x, dy)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs)


# ---------------------------------------------------------------------------------------------
# Run-time tuning parameters (csrc/cuda/tuning.h): any value in range computes the same function.
# Each setting below sends the shapes down another path than the defaults do, on small shapes.
tuned = pytest.mark.skipif(MODE == "cpu", reason="the CUDA launchers' tuning parameters: the CPU ops have none")

TUNINGS = {
    # A row of 300 goes block-per-row, forward and backward (default: a warp per row up to 1024).
    "crossover at 256": ({"ln_warp_row_max": 256, "ln_backward_warp_row_max": 256}, [(37, 300), (9, 256)]),
    # Every row block-per-row, even rows of 1 and 7 values (a block of 256 threads, mostly idle).
    "crossover at 0": ({"ln_warp_row_max": 0, "ln_backward_warp_row_max": 0}, [(5, 1), (37, 7), (3, 64)]),
    # No row cached in shared memory: the block kernels read x (and dy) again from global memory.
    "no row cache": ({"ln_row_cache_bytes": 0}, [(9, 1500), (7, 2041)]),
    # 4 KiB: a bfloat16 row of 1500 is cached in the forward (3000 bytes), not in the backward (6000).
    "4 KiB row cache": ({"ln_row_cache_bytes": 4096}, [(9, 1500)]),
    # One row a worker (37 partial rows of dγ, dβ), then one worker for every row.
    "a worker per row": ({"ln_min_rows_per_worker": 1}, [(37, 64), (37, 1500)]),
    "one worker": ({"ln_min_rows_per_worker": 1 << 30}, [(37, 64), (37, 1500)]),
}


@tuned
@pytest.mark.parametrize("name", TUNINGS)
def test_layer_norm_act_matches_torch_under_non_default_tunings(name):
    params, shapes = TUNINGS[name]
    with K.cuda_tuning(ops, **params) as now:
        assert all(now[p].value == v for p, v in params.items())
        for M, N in shapes:
            for dtype in (torch.float32, torch.bfloat16, torch.float64):
                check_layer_norm(seeded((M, N), dtype, seed=N), "gelu", f"{name}: {dtype} {M}x{N}")


BN_TUNINGS = {
    # Chunks of a few values: many chunks per channel, merged in order by the finalize kernels.
    "tiny chunks": {"bn_chunk_values_nchw": 7, "bn_chunk_values_cl": 5, "bn_target_blocks": 65535},
    # One chunk per channel whatever the shape.
    "one chunk": {"bn_target_blocks": 1},
}


@tuned
@pytest.mark.parametrize("name", BN_TUNINGS)
def test_batch_norm_act_matches_torch_under_non_default_tunings(name):
    with K.cuda_tuning(ops, **BN_TUNINGS[name]):
        for dtype in (torch.float32, torch.bfloat16):
            for layout, x in bn_layouts(dtype, seed=41)[:4]:
                check_batch_norm(x, "silu", True, f"{name}: {layout} {dtype}")


@tuned
def test_tuning_parameters_start_at_their_defaults_and_come_back_after_a_block():
    before = K.cuda_tuning_params(ops)
    from benchmarks import cuda_tuning  # the sweep's table of defaults, checked against the compiled one

    assert {name: p.default for name, p in before.items()} == cuda_tuning.DEFAULTS
    assert all(p.value == p.default and p.min <= p.default <= p.max for p in before.values())
    assert before["ln_warp_row_max"].max == 1024  # the warp kernels' register capacity: never above it
    x, w = seeded((6, 300), seed=1), seeded(300, seed=2)
    today = ops.layer_norm_act(x, [300], w, w, 1e-5, "gelu")
    with K.cuda_tuning(ops, ln_warp_row_max=256, ln_row_cache_bytes=0):
        tuned = ops.layer_norm_act(x, [300], w, w, 1e-5, "gelu")
        assert K.cuda_tuning_params(ops)["ln_row_cache_bytes"].value == 0
    assert K.cuda_tuning_params(ops) == before
    again = ops.layer_norm_act(x, [300], w, w, 1e-5, "gelu")
    assert all(torch.equal(a, b) for a, b in zip(today, again, strict=True))
    torch.testing.assert_close(tuned, today)  # the block kernel sums in another order: not bitwise
    with pytest.raises(KeyError), K.cuda_tuning(ops, ln_min_rows_per_worker=1):
        raise KeyError("an error inside the block")
    assert K.cuda_tuning_params(ops) == before


@tuned
@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"ln_warp_row_max": 1025}, ValueError, r"ln_warp_row_max .* must be in \[0, 1024\], got 1025"),
        ({"ln_min_rows_per_worker": 0}, ValueError, r"must be in \[1, "),
        ({"ln_row_cache_bytes": 48 * 1024}, ValueError, r"ln_row_cache_bytes .* must be in \[0, 48896\]"),
        ({"bn_target_blocks": -1}, ValueError, "bn_target_blocks"),
        ({"warp_row_max": 512}, ValueError, "unknown CUDA tuning parameter 'warp_row_max'; the parameters are: ln_"),
        ({"ln_warp_row_max": 2.5}, TypeError, "integer"),
    ],
)
def test_bad_tuning_names_and_values_raise_and_change_nothing(params, error, match):
    before = K.cuda_tuning_params(ops)
    with pytest.raises(error, match=match), K.cuda_tuning(ops, conv_min_span=16, **params):
        pass
    assert K.cuda_tuning_params(ops) == before
