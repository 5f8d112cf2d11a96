"""Fused normalization + activation: the compiled kernels against torch eager, torch.compile and the reference.

Implementations of each case:

* ``torch``: eager and unfused, ``act(F.layer_norm(x))`` / ``act(F.batch_norm(x))``: the baseline;
* ``kernel``: ``minitorch_nn.kernels`` (csrc/cpu/norm_act.cpp, csrc/cuda/norm_act.cu);
* ``kernel rung 1`` .. ``kernel rung 3`` (LayerNorm+act only): the kernel ladder's rungs
  (csrc/cpu/ln_ladder.cpp, csrc/cuda/ln_ladder.cu), ``kernel`` being rung 4: the step from one row
  to the next shows what each rung's idea buys. Rung 1 (one thread on the CPU, a thread per row on a
  GPU) runs only on shapes of at most ``RUNG1_MAX_ELEMENTS`` values, to keep the suite short;
* ``torch.compile``: the same two torch calls compiled (``dynamic=False``; compile time excluded),
  which fuses them too: the strongest baseline. Skipped by ``--quick``, where compiling would
  take longer than the whole run;
* ``reference``: our Python references (minitorch_nn.functional), unfused.

Memory-bound: ``bytes_moved`` counts one read of x and one write of y for the forward, plus a
read of x and dy and a write of dx for the backward (statistics and parameters are
negligible). GB/s is compared with the copy bandwidth measured in the same run, ``x.clone()``:
the floor for any op that allocates its output.

The "where the time goes" cases take the forward apart, on the same input:
``clone`` (allocate + read + write), ``copy into a buffer`` (read + write into memory already
mapped), ``clone, huge pages`` (a fresh output backed by 2 MiB pages, as the kernels allocate
theirs), ``kernel, act=none`` (the normalization alone) and ``kernel, act=gelu``. Allocation
costs clone minus copy (page faults: an output of 32 MiB or more is a fresh mapping); the
kernels' outputs fault 2 MiB at a time, so their floor is the huge-page clone; GELU's
arithmetic costs gelu minus none.
"""

from __future__ import annotations

import ctypes
import itertools
import sys

import torch
import torch.nn.functional as TF

import minitorch_nn.functional as F
import minitorch_nn.kernels as K

from .harness import Case, autograd_setup, numel, seeded_inputs, shape_str

TORCH_ACT = {
    "gelu": TF.gelu,
    "relu": TF.relu,
    "silu": TF.silu,
}
REFERENCE_ACT = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}
# LayerNorm+act's ladder rungs below the production kernel (rung 4, "kernel"); rung 1 only up to
# this many values (4096x1024: ~0.1-0.3 s a call on one core for the forward).
LADDER_RUNGS = (1, 2, 3)
RUNG1_MAX_ELEMENTS = 4096 * 1024


def ladder_rungs(rows: int, hidden: int) -> tuple[int, ...]:
    return tuple(r for r in LADDER_RUNGS if r > 1 or rows * hidden <= RUNG1_MAX_ELEMENTS)


def _compiled(fn):
    return torch.compile(fn, dynamic=False, fullgraph=True)


def _compile_setup(fn, inputs, mode, grad_args):
    """autograd_setup of a compiled fn, run once in setup so compilation is not timed."""
    inner = autograd_setup(_compiled(fn), inputs, mode, grad_args)

    def setup():
        closure = inner()
        closure()
        return closure

    return setup


def _impls(ours, theirs, reference, inputs, mode, grad_args, compile_too, rungs=None):
    """torch, then ours (each ladder rung of ``rungs``, a function of the rung, then the kernel), ..."""
    impls = {"torch": autograd_setup(theirs, inputs, mode, grad_args)}
    for rung, fn in (rungs or {}).items():
        impls[f"kernel rung {rung}"] = autograd_setup(fn, inputs, mode, grad_args)
    impls["kernel"] = autograd_setup(ours, inputs, mode, grad_args)
    if compile_too:
        impls["torch.compile"] = _compile_setup(theirs, inputs, mode, grad_args)
    impls["reference"] = autograd_setup(reference, inputs, mode, grad_args)
    return impls


def layer_norm_cases(device, shapes, act, dtype, compile_too) -> list[Case]:
    out = []
    for rows, hidden in shapes:
        size = rows * hidden * torch.tensor([], dtype=dtype).element_size()
        inputs = seeded_inputs(
            lambda r=rows, h=hidden: torch.randn(r, h, device=device, dtype=dtype),
            lambda h=hidden: torch.rand(h, device=device, dtype=dtype) + 0.5,
            lambda h=hidden: torch.randn(h, device=device, dtype=dtype),
        )
        for mode in ("fwd", "fwd+bwd"):
            out.append(
                Case(
                    "norm_act",
                    f"layer_norm+{act}",
                    shape_str((rows, hidden)),
                    dtype,
                    mode,
                    _impls(
                        lambda x, w, b: K.layer_norm_act(x, x.shape[-1], w, b, activation=act),
                        lambda x, w, b: TORCH_ACT[act](TF.layer_norm(x, x.shape[-1:], w, b)),
                        lambda x, w, b: REFERENCE_ACT[act](F.layer_norm(x, x.shape[-1:], w, b)),
                        inputs,
                        mode,
                        (0, 1, 2),
                        compile_too,
                        rungs={
                            rung: lambda x, w, b, rung=rung: K.layer_norm_act(
                                x, x.shape[-1], w, b, activation=act, rung=rung
                            )
                            for rung in ladder_rungs(rows, hidden)
                        },
                    ),
                    bytes_moved=(2 if mode == "fwd" else 5) * size,
                    copy_elements=rows * hidden,
                )
            )
    return out


def away_from_kink(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, margin: float = 1e-3) -> torch.Tensor:
    """x moved so that no pre-activation z = γ·x̂ + β of batch_norm lies within ``margin`` of 0.

    ReLU's gradient jumps at z = 0. Among millions of values a few z land within rounding
    of 0, and float32 implementations that round differently then disagree there by a whole
    |dy| (torch's NCHW and channels_last kernels do, on (32, 64, 56, 56)). Validating a kernel
    against torch needs the gradient to be well defined, so such x are pushed 2·margin away;
    this shifts each channel's statistics by ~1e-9, far below the margin.
    """
    dims = [d for d in range(x.dim()) if d != 1]
    view = [1, -1] + [1] * (x.dim() - 2)
    x64 = x.double()
    mean = x64.mean(dims, keepdim=True)
    rstd = (x64.var(dims, unbiased=False, keepdim=True) + 1e-5).rsqrt()
    scale = rstd * weight.double().view(view)
    z = (x64 - mean) * scale + bias.double().view(view)
    near = z.abs() < margin
    x64 = torch.where(near, x64 + torch.where(z < 0, -2 * margin, 2 * margin) / scale, x64)
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return x64.to(x.dtype).contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def batch_norm_cases(device, shapes, act, dtype, compile_too) -> list[Case]:
    out = []
    for shape in shapes:
        channels = shape[1]
        size = numel(shape) * torch.tensor([], dtype=dtype).element_size()
        for layout in ("nchw", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

            def inputs(shape=shape, fmt=fmt, channels=channels):
                torch.manual_seed(0)
                x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
                w = torch.rand(channels, device=device, dtype=dtype) + 0.5
                b = torch.randn(channels, device=device, dtype=dtype)
                running = torch.zeros(channels, device=device, dtype=dtype), torch.ones_like(w)
                return [away_from_kink(x, w, b) if act == "relu" else x, w, b, *running]

            for mode in ("fwd", "fwd+bwd"):
                out.append(
                    Case(
                        "norm_act",
                        f"batch_norm+{act} (training, {layout})",
                        shape_str(shape),
                        dtype,
                        mode,
                        _impls(
                            lambda x, w, b, rm, rv: K.batch_norm_act(x, rm, rv, w, b, True, activation=act),
                            lambda x, w, b, rm, rv: TORCH_ACT[act](TF.batch_norm(x, rm, rv, w, b, True)),
                            lambda x, w, b, rm, rv: REFERENCE_ACT[act](F.batch_norm(x, rm, rv, w, b, True)),
                            inputs,
                            mode,
                            (0, 1, 2),
                            compile_too,
                        ),
                        bytes_moved=(2 if mode == "fwd" else 5) * size,
                        copy_elements=numel(shape),
                    )
                )
    return out


def backward_op_cases(device, ln_shapes, bn_shapes, dtype) -> list[Case]:
    """The backward ops timed directly, without autograd's bookkeeping around them.

    ``torch`` runs what its autograd runs for the unfused pair: the activation's backward on the
    saved pre-activation z (``aten.gelu_backward`` / ``aten.threshold_backward``), then
    ``aten.native_layer_norm_backward`` / ``aten.native_batch_norm_backward``; ``kernel`` runs
    ``minitorch_nn::*_act_backward``, which recomputes z from x. Inputs (saved statistics, z) are
    made in setup; each call returns (dx, dγ, dβ). Minimum traffic: read x and dy, write dx.
    """
    aten, ops = torch.ops.aten, torch.ops.minitorch_nn
    out = []
    for rows, hidden in ln_shapes:
        size = rows * hidden * torch.tensor([], dtype=dtype).element_size()

        def setup(kind, rows=rows, hidden=hidden, rung=None):
            def make():
                torch.manual_seed(0)
                x = torch.randn(rows, hidden, device=device, dtype=dtype)
                w = torch.rand(hidden, device=device, dtype=dtype) + 0.5
                b = torch.randn(hidden, device=device, dtype=dtype)
                dy = torch.randn_like(x)
                if kind == "kernel":
                    _, mean, rstd = ops.layer_norm_act(x, [hidden], w, b, 1e-5, "gelu")
                    args = (dy, x, mean, rstd, [hidden], w, b, "gelu", [True] * 3)
                    if rung is not None:
                        return lambda: ops.layer_norm_act_ladder_backward(*args, rung)
                    return lambda: ops.layer_norm_act_backward(*args)
                z, mean, rstd = aten.native_layer_norm(x, [hidden], w, b, 1e-5)

                def torch_backward():
                    dz = aten.gelu_backward(dy, z)
                    return aten.native_layer_norm_backward(dz, x, [hidden], mean, rstd, w, b, [True] * 3)

                return torch_backward

            return make

        impls = {"torch": setup("torch")}
        impls |= {f"kernel rung {rung}": setup("kernel", rung=rung) for rung in ladder_rungs(rows, hidden)}
        impls["kernel"] = setup("kernel")
        out.append(
            Case(
                "norm_act",
                "layer_norm+gelu backward op",
                shape_str((rows, hidden)),
                dtype,
                "bwd",
                impls,
                bytes_moved=3 * size,
                copy_elements=rows * hidden,
            )
        )
    for shape, layout in itertools.product(bn_shapes, ("nchw", "channels_last")):
        size = numel(shape) * torch.tensor([], dtype=dtype).element_size()
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

        def setup(kind, shape=shape, fmt=fmt):
            def make():
                torch.manual_seed(0)
                c = shape[1]
                w = torch.rand(c, device=device, dtype=dtype) + 0.5
                b = torch.randn(c, device=device, dtype=dtype)
                x = away_from_kink(torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt), w, b)
                dy = torch.randn_like(x)
                if kind == "kernel":
                    _, mean, rstd, _, _ = ops.batch_norm_act(x, w, b, None, None, True, 0.1, 1e-5, "relu")
                    return lambda: ops.batch_norm_act_backward(dy, x, mean, rstd, w, b, True, "relu", [True] * 3)
                z, mean, invstd = aten.native_batch_norm(x, w, b, None, None, True, 0.1, 1e-5)[:3]
                y = torch.relu(z)

                def torch_backward():
                    dz = aten.threshold_backward(dy, y, 0)
                    return aten.native_batch_norm_backward(dz, x, w, None, None, mean, invstd, True, 1e-5, [True] * 3)

                return torch_backward

            return make

        out.append(
            Case(
                "norm_act",
                f"batch_norm+relu backward op (training, {layout})",
                shape_str(shape),
                dtype,
                "bwd",
                {"torch": setup("torch"), "kernel": setup("kernel")},
                bytes_moved=3 * size,
                copy_elements=numel(shape),
            )
        )
    return out


def huge_page_empty_like(x: torch.Tensor) -> torch.Tensor:
    """torch.empty_like(x), with the OS asked to back it with 2 MiB pages (the kernels' huge_pages()).

    What torch's own allocator does with THP_MEM_ALLOC_ENABLE=1: it shows what the copy floor
    becomes when allocation stops costing one page fault per 4 KiB.
    """
    out = torch.empty_like(x)
    if x.device.type == "cpu" and sys.platform == "linux" and out.nbytes >= 4 << 20:
        libc = ctypes.CDLL(None, use_errno=True)
        page = 4096
        start = (out.data_ptr() + page - 1) // page * page
        end = (out.data_ptr() + out.nbytes) // page * page
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 14)  # 14 = MADV_HUGEPAGE
    return out


def breakdown_case(device, rows, hidden, dtype) -> Case:
    """The forward taken apart: allocation, memory traffic, statistics, activation arithmetic."""
    size = rows * hidden * torch.tensor([], dtype=dtype).element_size()

    def setup(kind):
        def make():
            torch.manual_seed(0)
            x = torch.randn(rows, hidden, device=device, dtype=dtype)
            w = torch.rand(hidden, device=device, dtype=dtype) + 0.5
            b = torch.randn(hidden, device=device, dtype=dtype)
            if kind == "clone":
                return lambda: x.clone()
            if kind == "copy":
                buf = torch.empty_like(x)
                return lambda: buf.copy_(x)
            if kind == "clone, huge pages":
                return lambda: huge_page_empty_like(x).copy_(x)
            return lambda: K.layer_norm_act(x, hidden, w, b, activation=kind)

        return make

    return Case(
        "norm_act",
        "where the time goes (layer_norm+act fwd)",
        shape_str((rows, hidden)),
        dtype,
        "fwd",
        {
            "clone": setup("clone"),
            "copy into a buffer": setup("copy"),
            "clone, huge pages": setup("clone, huge pages"),
            "kernel, act=none": setup("none"),
            "kernel, act=gelu": setup("gelu"),
        },
        baseline="clone",
        bytes_moved=2 * size,
        copy_elements=rows * hidden,
        validate=False,  # different ops on purpose
    )


def cases(device: torch.device, quick: bool) -> list[Case]:
    if not K.AVAILABLE:  # the rest of the suite still runs; say what is missing and why
        print(f"norm_act: skipped, the compiled kernels are unavailable: {K.UNAVAILABLE_REASON}", file=sys.stderr)
        return []
    dtype = torch.float32
    compile_too = not quick
    if quick:
        ln_shapes = [(64, 96), (32, 2041 // 8)]
        bn_shapes = [(4, 8, 6, 6)]
        breakdown = [(64, 96)]
    elif device.type == "cuda":
        ln_shapes = [(8192, 1024), (8192, 4096), (4096, 1024), (4096, 2048), (4096, 4096), (4096, 8192)]
        ln_shapes += [(4096, 16384), (16384, 4096), (32768, 8192), (4096, 2041)]
        bn_shapes = [(32, 64, 112, 112), (32, 256, 56, 56), (32, 512, 28, 28), (32, 2048, 7, 7)]
        breakdown = [(8192, 4096)]
    else:
        ln_shapes = [(4096, 768), (8192, 1024), (8192, 4096), (4096, 2041)]
        bn_shapes = [(32, 64, 56, 56), (32, 256, 28, 28)]
        breakdown = [(8192, 1024), (8192, 4096)]
    out = layer_norm_cases(device, ln_shapes, "gelu", dtype, compile_too)
    out += batch_norm_cases(device, bn_shapes, "relu", dtype, compile_too)
    out += backward_op_cases(device, ln_shapes, bn_shapes, dtype)
    out += [breakdown_case(device, r, h, dtype) for r, h in breakdown]
    if device.type == "cuda" and not quick:
        out += layer_norm_cases(device, ln_shapes, "gelu", torch.bfloat16, compile_too)
        out += batch_norm_cases(device, bn_shapes, "relu", torch.bfloat16, compile_too)
    return out
