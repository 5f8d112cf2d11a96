"""CUDA tuning sweep: each run-time tuning parameter of the CUDA kernels timed over a grid of values.

The parameters (``csrc/cuda/tuning.h``; ``csrc/README.md``, "Tuning", says what each decides) are
launch choices whose defaults were guessed on a machine without a GPU (marked MEASURE in
``csrc/cuda/norm_act.cu`` and ``conv_implicit.cu``). Here each is swept alone, the others at their
defaults, on shapes where it matters:

* ``ln_warp_row_max``, ``ln_backward_warp_row_max``: the LayerNorm+GELU forward op / backward op on
  rows of 128 to 1024 values (a warp per row against a block per row);
* ``ln_row_cache_bytes``: the forward and backward ops on rows of 2048 to 8192 values (the block
  kernels' row kept in shared memory, or read again from global memory / L2);
* ``ln_min_rows_per_worker``: the backward op (how many partial rows of dγ, dβ it writes);
* ``bn_chunk_values_nchw``, ``bn_chunk_values_cl``, ``bn_target_blocks``: BatchNorm+ReLU's training
  forward op (the statistics) and backward op (the sums), NCHW and channels_last;
* ``conv_target_blocks``, ``conv_min_span``: the weight gradient of conv2d rung 2 (``implicit``), alone
  (``conv2d_backward`` with only dW asked for), on ResNet-50's layers at batch 32.

LayerNorm and BatchNorm run in bfloat16, conv2d rung 2 in float32. Each case is one op at one shape
with one implementation per value; the default comes first and is the baseline: every other value's
result is checked against it before it is timed, and "vs torch" in this family's table is the
default's time over the value's (above 1: faster than today's default). The summary under the table
gives the best value per shape and, per parameter, the value best on the most shapes with its
geometric-mean speed-up over the default: what to write back into the defaults (then re-run).

Compile-time choices (conv_implicit.cu's tile, conv_mma.cu's tile, stages and warp grid) are not
swept here: each value is another kernel instantiation (csrc/README.md, "Tuning").

On a GPU, with a CUDA build of the extension::

    python -m benchmarks --device cuda --families cuda_tuning --min-run-time 0.2 --out /tmp/cuda_tuning

(``--quick``: two values of each parameter on one small shape, a check of the pipeline). Without a
CUDA device, or with a CPU-only build, the family is skipped and the report says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

import minitorch_nn.kernels as K

from .harness import Case, Closure, Result, numel, shape_str

# Today's defaults, as csrc/cuda/norm_act.cu and conv_implicit.cu set them: the sweep's baseline.
# (The emulator's tests check this table against the compiled one; a setup on a GPU checks it too.)
DEFAULTS = {
    "ln_warp_row_max": 1024,
    "ln_backward_warp_row_max": 1024,
    "ln_row_cache_bytes": 24 * 1024,
    "ln_min_rows_per_worker": 8,
    "bn_chunk_values_nchw": 4096,
    "bn_chunk_values_cl": 256,
    "bn_target_blocks": 2048,
    "conv_target_blocks": 512,
    "conv_min_span": 1024,
}

LN_CROSSOVER_VALUES = (0, 128, 256, 512, 768, 1024)  # 0: every row block-per-row
LN_CROSSOVER_SHAPES = [(32768, 128), (32768, 256), (16384, 512), (16384, 768), (8192, 1024)]
LN_CACHE_VALUES = (0, 8192, 16384, 24576, 32768, 40960, 48896)  # 48896: 48 KiB less the static scratch
LN_CACHE_SHAPES = [(8192, 2048), (8192, 4096), (4096, 8192)]
LN_WORKER_VALUES = (1, 2, 4, 8, 16, 32, 64)
LN_WORKER_SHAPES = [(65536, 256), (4096, 768), (32768, 1024), (8192, 4096)]
BN_SHAPES = [(32, 64, 112, 112), (32, 256, 56, 56), (32, 512, 28, 28), (32, 2048, 7, 7)]
BN_NCHW_VALUES = (1024, 2048, 4096, 8192, 16384, 32768)
BN_CL_VALUES = (64, 128, 256, 512, 1024, 2048)
BN_BLOCK_VALUES = (256, 512, 1024, 2048, 4096, 8192)
# (name, C, H, W, O, kernel, stride, padding) at batch 32: ResNet-50's layers.
CONV_LAYERS = [
    ("3x3 64->64 @56", 64, 56, 56, 64, 3, 1, 1),
    ("1x1 256->64 @56", 256, 56, 56, 64, 1, 1, 0),
    ("3x3 128->128 @28", 128, 28, 28, 128, 3, 1, 1),
    ("3x3 256->256 @14", 256, 14, 14, 256, 3, 1, 1),
    ("3x3 512->512 @7", 512, 7, 7, 512, 3, 1, 1),
]
CONV_BATCH = 32
CONV_BLOCK_VALUES = (64, 128, 256, 512, 1024, 2048, 4096)
CONV_SPAN_VALUES = (256, 512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class Sweep:
    """One parameter's grid over one op: ``kind`` names the op ("ln fwd", "ln bwd", "bn fwd", "bn bwd",
    "conv dw"), ``shapes`` its shapes (with "nchw" / "channels_last" for BatchNorm)."""

    param: str
    values: tuple[int, ...]
    kind: str
    shapes: tuple
    dtype: torch.dtype


def sweeps(quick: bool) -> list[Sweep]:
    """Every sweep: one parameter, one op, its shapes."""
    bf16, f32 = torch.bfloat16, torch.float32
    if quick:  # the pipeline only: the default and one other value, one small shape each
        ln, bn = ((64, 300),), (((4, 8, 6, 6), "nchw"), ((4, 8, 6, 6), "channels_last"))
        conv = (("3x3 8->8 @10", 2, 8, 10, 10, 8, 3, 1, 1),)
        return [
            Sweep("ln_warp_row_max", (1024, 256), "ln fwd", ln, bf16),
            Sweep("ln_backward_warp_row_max", (1024, 256), "ln bwd", ln, bf16),
            Sweep("ln_row_cache_bytes", (24576, 0), "ln fwd", ((8, 2048),), bf16),
            Sweep("ln_min_rows_per_worker", (8, 1), "ln bwd", ln, bf16),
            Sweep("bn_chunk_values_nchw", (4096, 16), "bn fwd", bn[:1], bf16),
            Sweep("bn_chunk_values_cl", (256, 16), "bn bwd", bn[1:], bf16),
            Sweep("bn_target_blocks", (2048, 1), "bn bwd", bn, bf16),
            Sweep("conv_target_blocks", (512, 1), "conv dw", conv, f32),
            Sweep("conv_min_span", (1024, 16), "conv dw", conv, f32),
        ]
    nchw = tuple((s, "nchw") for s in BN_SHAPES)
    cl = tuple((s, "channels_last") for s in BN_SHAPES)
    conv_shapes = tuple((name, CONV_BATCH, *rest) for name, *rest in CONV_LAYERS)
    out = []
    for kind in ("ln fwd", "ln bwd"):
        param = "ln_warp_row_max" if kind == "ln fwd" else "ln_backward_warp_row_max"
        out.append(Sweep(param, LN_CROSSOVER_VALUES, kind, tuple(LN_CROSSOVER_SHAPES), bf16))
        out.append(Sweep("ln_row_cache_bytes", LN_CACHE_VALUES, kind, tuple(LN_CACHE_SHAPES), bf16))
    out.append(Sweep("ln_min_rows_per_worker", LN_WORKER_VALUES, "ln bwd", tuple(LN_WORKER_SHAPES), bf16))
    for kind in ("bn fwd", "bn bwd"):
        out.append(Sweep("bn_chunk_values_nchw", BN_NCHW_VALUES, kind, nchw, bf16))
        out.append(Sweep("bn_chunk_values_cl", BN_CL_VALUES, kind, cl, bf16))
        out.append(Sweep("bn_target_blocks", BN_BLOCK_VALUES, kind, nchw + cl, bf16))
    out.append(Sweep("conv_target_blocks", CONV_BLOCK_VALUES, "conv dw", conv_shapes, f32))
    out.append(Sweep("conv_min_span", CONV_SPAN_VALUES, "conv dw", conv_shapes, f32))
    return out


def grid(sweep: Sweep) -> list[int]:
    """The values a case times, the default first (the baseline every other value is checked against)."""
    default = DEFAULTS[sweep.param]
    return [default, *(v for v in sweep.values if v != default)]


def impl_name(param: str, value: int) -> str:
    return f"{param}={value}" + (" (default)" if value == DEFAULTS[param] else "")


# ---------------------------------------------------------------------------------------------
# Applying a setting inside the timed closure


class _Tuner:
    """Sets the parameters to a setting, calling the tuning op only when it differs from the last
    setting applied: the timed closure then pays a tuple comparison, not a dozen op calls (which on
    a GPU would sit between the timing events, as idle time). ``reset`` (each case's teardown)
    brings every parameter back to its default."""

    def __init__(self) -> None:
        self.applied: tuple[tuple[str, int], ...] | None = None

    def apply(self, setting: tuple[tuple[str, int], ...]) -> None:
        if setting != self.applied:
            self.applied = None  # in case a call below fails
            ops = torch.ops.minitorch_nn
            for name, value in setting:
                ops._cuda_tuning(name, value)
            self.applied = setting

    def reset(self) -> None:
        self.apply(tuple(DEFAULTS.items()))


_TUNER = _Tuner()


def _check_defaults() -> None:
    compiled = {name: p.default for name, p in K.cuda_tuning_params().items()}
    if compiled != DEFAULTS:
        raise RuntimeError(f"benchmarks/cuda_tuning.py's DEFAULTS {DEFAULTS} differ from the compiled ones {compiled}")


def _tuned(setting: tuple[tuple[str, int], ...], make: Callable[[], Closure]) -> Callable[[], Closure]:
    """A setup: check the defaults, build the op's inputs (``make``), and time it under ``setting``."""

    def setup() -> Closure:
        _check_defaults()
        fn = make()

        def run():
            _TUNER.apply(setting)
            return fn()

        return run

    return setup


def _randn(shape, dtype, device, seed) -> torch.Tensor:
    """Seeded values drawn on the device itself (each implementation of a case builds its own inputs)."""
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=g, device=device).to(dtype)


def _layer_norm(kind: str, rows: int, hidden: int, dtype: torch.dtype, device: torch.device) -> Callable[[], Closure]:
    def make() -> Closure:
        ops = torch.ops.minitorch_nn
        x = _randn((rows, hidden), dtype, device, 0)
        w, b = _randn(hidden, dtype, device, 1) * 0.5 + 1, _randn(hidden, dtype, device, 2)
        if kind == "ln fwd":
            return lambda: ops.layer_norm_act(x, [hidden], w, b, 1e-5, "gelu")[0]
        dy = _randn((rows, hidden), dtype, device, 3)
        _, mean, rstd = ops.layer_norm_act(x, [hidden], w, b, 1e-5, "gelu")
        return lambda: ops.layer_norm_act_backward(dy, x, mean, rstd, [hidden], w, b, "gelu", [True] * 3)

    return make


def _batch_norm(kind: str, shape, layout: str, dtype: torch.dtype, device: torch.device) -> Callable[[], Closure]:
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

    def make() -> Closure:
        ops = torch.ops.minitorch_nn
        x = _randn(shape, dtype, device, 0).contiguous(memory_format=fmt)
        c = shape[1]
        w, b = _randn(c, torch.float32, device, 1) * 0.5 + 1, _randn(c, torch.float32, device, 2)
        if kind == "bn fwd":
            return lambda: ops.batch_norm_act(x, w, b, None, None, True, 0.1, 1e-5, "relu")[:3]
        dy = _randn(shape, dtype, device, 3).contiguous(memory_format=fmt)
        _, mean, rstd, _, _ = ops.batch_norm_act(x, w, b, None, None, True, 0.1, 1e-5, "relu")
        return lambda: ops.batch_norm_act_backward(dy, x, mean, rstd, w, b, True, "relu", [True] * 3)

    return make


def _conv_weight_grad(layer, dtype: torch.dtype, device: torch.device) -> Callable[[], Closure]:
    _name, n, c, h, w, o, k, s, p = layer

    def make() -> Closure:
        ops = torch.ops.minitorch_nn
        x = _randn((n, c, h, w), dtype, device, 0)
        wt = _randn((o, c, k, k), dtype, device, 1) / (c * k * k) ** 0.5
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        dy = _randn((n, o, oh, ow), dtype, device, 2)
        conf = ([s, s], [p, p, p, p], [1, 1], 1, "none", "implicit")
        return lambda: ops.conv2d_backward(dy, x, wt, None, *conf, [False, True, False])[1]

    return make


def _case(sweep: Sweep, shape, device: torch.device) -> Case:
    esize = torch.tensor([], dtype=sweep.dtype).element_size()
    flops = bytes_moved = None
    if sweep.kind.startswith("ln"):
        rows, hidden = shape
        make = _layer_norm(sweep.kind, rows, hidden, sweep.dtype, device)
        label, op = shape_str(shape), "layer_norm+gelu " + ("forward op" if sweep.kind == "ln fwd" else "backward op")
        bytes_moved = (2 if sweep.kind == "ln fwd" else 3) * rows * hidden * esize
    elif sweep.kind.startswith("bn"):
        bn_shape, layout = shape
        make = _batch_norm(sweep.kind, bn_shape, layout, sweep.dtype, device)
        label = shape_str(bn_shape)
        op = f"batch_norm+relu {'forward op (training)' if sweep.kind == 'bn fwd' else 'backward op'}, {layout}"
        bytes_moved = (2 if sweep.kind == "bn fwd" else 3) * numel(bn_shape) * esize
    else:
        name, n, c, h, w, o, k, s, p = shape
        make = _conv_weight_grad(shape, sweep.dtype, device)
        label, op = f"{n}x{c}x{h}x{w}", f"conv2d rung 2 weight gradient, {name}"
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        flops = 2 * n * o * oh * ow * c * k * k
    others = tuple((name, value) for name, value in DEFAULTS.items() if name != sweep.param)
    impls = {impl_name(sweep.param, v): _tuned(((sweep.param, v), *others), make) for v in grid(sweep)}
    return Case(
        "cuda_tuning",
        f"{sweep.param}: {op}",
        label,
        sweep.dtype,
        "fwd" if sweep.kind in ("ln fwd", "bn fwd") else "bwd",
        impls,
        baseline=impl_name(sweep.param, DEFAULTS[sweep.param]),
        bytes_moved=bytes_moved,
        flops=flops,
        teardown=_TUNER.reset,
    )


def skip_reason(device: torch.device) -> str | None:
    """Why the sweep cannot run on ``device``, or None when it can."""
    if device.type != "cuda":
        return f"the CUDA tuning sweep needs a CUDA device (this run is on {device.type})"
    if not torch.cuda.is_available():
        return "the CUDA tuning sweep needs a CUDA device (torch sees none)"
    if not K.AVAILABLE:
        return f"the compiled kernels are unavailable: {K.UNAVAILABLE_REASON}"
    if not hasattr(torch.ops.minitorch_nn, "_cuda_tuning"):
        return "the extension was built without CUDA (no tuning parameters to sweep)"
    return None


def cases(device: torch.device, quick: bool) -> list[Case]:
    """Every sweep's cases on a CUDA device; none elsewhere (``skip_reason`` says why)."""
    if device.type != "cuda":
        return []
    return [_case(sweep, shape, device) for sweep in sweeps(quick) for shape in sweep.shapes]


def summary(rows: Sequence[Result]) -> str:
    """Markdown: the best value of each case, then per parameter the value best on the most cases and
    each value's geometric-mean speed-up over the default across the cases."""
    timed = [r for r in rows if r.family == "cuda_tuning" and r.median_us]
    if not timed:
        return ""
    cases: dict[tuple, list[Result]] = {}
    for r in timed:
        cases.setdefault((r.op, r.shape, r.dtype, r.mode), []).append(r)
    lines = ["Best value per shape (time against the default's):", ""]
    lines += ["| parameter: op | shape | best | time (us) | default (us) | speed-up |", "|---|---|---|---|---|---|"]
    wins: dict[str, dict[str, int]] = {}
    ratios: dict[str, dict[str, list[float]]] = {}
    for (op, shape, _dtype, _mode), case_rows in cases.items():
        param = op.split(":")[0]
        default = next((r for r in case_rows if r.impl.endswith("(default)")), None)
        best = min(case_rows, key=lambda r: r.median_us)
        value = best.impl.split("=")[1].removesuffix(" (default)")
        wins.setdefault(param, {}).setdefault(value, 0)
        wins[param][value] += 1
        if default is None:
            continue
        for r in case_rows:
            v = r.impl.split("=")[1].removesuffix(" (default)")
            ratios.setdefault(param, {}).setdefault(v, []).append(default.median_us / r.median_us)
        lines.append(
            f"| {op} | {shape} | {value} | {best.median_us:.1f} | {default.median_us:.1f} | "
            f"{default.median_us / best.median_us:.2f}x |"
        )
    lines += ["", "Per parameter (over every shape and op it was swept on):", ""]
    for param, counts in wins.items():
        most = max(counts, key=lambda v: counts[v])
        geo = {v: math.exp(sum(map(math.log, rs)) / len(rs)) for v, rs in ratios.get(param, {}).items()}
        spread = ", ".join(f"{v}: {g:.2f}x" for v, g in sorted(geo.items(), key=lambda kv: int(kv[0])))
        lines.append(
            f"- `{param}` (default {DEFAULTS.get(param)}): best on {counts[most]} of {sum(counts.values())} "
            f"cases at {most}; geometric-mean speed-up over the default per value: {spread}"
        )
    return "\n".join(lines)
