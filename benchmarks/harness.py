"""Benchmark machinery: cases, validation, timing, and the measured machine limits.

A :class:`Case` is one op at one shape, dtype and mode ("fwd" or "fwd+bwd") with several
implementations ("torch", "reference", later "kernel", "torch.compile"). Each implementation
is a *setup* function that allocates its inputs and returns the closure to time, so inputs
are built once and never timed. The harness

1. runs every implementation once and checks its result against the baseline's (a fast
   wrong answer must never post a time),
2. times it: ``torch.utils.benchmark`` on the CPU (threads = the machine's cores), CUDA
   events on a GPU with warm-up and an L2 flush before every repetition,
3. turns the median time into GB/s (from the case's minimum bytes moved) and/or GFLOP/s, the
   fraction of the copy bandwidth measured in the same run, and the speed relative to the
   baseline.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.benchmark as tbench

Closure = Callable[[], Any]


@dataclass
class Case:
    family: str  # op family, as the file names: "activation", "linear", "dropout"
    op: str  # "gelu(tanh)"
    shape: str  # "8192x1024"
    dtype: torch.dtype
    mode: str  # "fwd" or "fwd+bwd"
    impls: dict[str, Callable[[], Closure]]  # implementation name -> setup returning the timed closure
    baseline: str = "torch"
    bytes_moved: int | None = None  # minimum memory traffic of one call, for GB/s
    flops: int | None = None  # floating-point operations of one call, for GFLOP/s
    copy_elements: int | None = None  # compare GB/s with a copy of this many elements
    validate: bool = True  # check each implementation's result against the baseline's
    note: str = ""
    teardown: Callable[[], None] | None = None  # run after the case's last timing (restores global state)


@dataclass
class Result:
    family: str
    op: str
    shape: str
    dtype: str
    mode: str
    impl: str
    median_us: float | None
    iqr_us: float | None
    gbps: float | None = None
    pct_copy_bw: float | None = None
    gflops: float | None = None
    pct_peak: float | None = None  # GFLOP/s as a percentage of the measured FMA peak (compute-bound rows)
    speedup_vs_baseline: float | None = None
    error: str | None = None
    flag: str | None = None  # a figure the harness refuses to print (e.g. above the memory floor)


# A case of the backward op alone is named as its forward+backward case with this suffix inserted
# ("layer_norm+gelu backward op" beside "layer_norm+gelu").
BACKWARD_OP = " backward op"


def flag_inconsistent(rows: list[Result]) -> list[Result]:
    """Flag each forward, or backward op, row slower than the same implementation's forward+backward.

    A forward+backward includes the forward and the backward, so such a pair cannot both be right:
    one of them caught the machine or the allocator in another state (the 8192x4096 LayerNorm
    forward once measured 182 ms against 174 ms for its forward+backward, and 55 ms timed alone; the
    8192x1024 LayerNorm+GELU backward op 34 ms against 27 ms). The row keeps its median and says why
    it should not be trusted; rerun the case.
    """
    both = {(r.family, r.op, r.shape, r.dtype, r.impl): r for r in rows if r.mode == "fwd+bwd" and r.median_us}
    for r in rows:
        if r.mode not in ("fwd", "bwd") or not r.median_us or r.flag is not None:
            continue
        op = r.op.replace(BACKWARD_OP, "", 1) if r.mode == "bwd" else r.op
        pair = both.get((r.family, op, r.shape, r.dtype, r.impl))
        if pair is not None and r.median_us > pair.median_us:
            what = "forward" if r.mode == "fwd" else "backward op"
            r.flag = (
                f"{what} ({r.median_us / 1e3:.3f} ms) slower than this implementation's forward+backward "
                f"({pair.median_us / 1e3:.3f} ms): an outlier of this run, rerun the case"
            )
    return rows


def cpu_threads() -> int:
    """Cores this process may run on (what torch should use for a fair CPU timing)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Timer:
    """Median time of a closure on one device, in microseconds."""

    def __init__(self, device: torch.device, min_run_time: float):
        self.device = device
        self.min_run_time = min_run_time
        self.threads = cpu_threads()
        self._flush_buffer = None
        if device.type == "cuda":
            l2 = torch.cuda.get_device_properties(device).L2_cache_size
            self._flush_buffer = torch.empty(2 * l2 // 4 + 1, dtype=torch.float32, device=device)

    def __call__(self, fn: Closure) -> tuple[float, float | None]:
        """(median, interquartile range) in microseconds; no IQR from fewer than 4 samples."""
        if self.device.type == "cuda":
            return self._time_cuda(fn)
        timer = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=self.threads)
        m = timer.blocked_autorange(min_run_time=self.min_run_time)
        return m.median * 1e6, (m.iqr * 1e6 if len(m.times) >= 4 else None)

    def best_us(self, fn: Closure) -> float:
        """The fastest of many repetitions, in microseconds: a sustained best, for measuring limits."""
        if self.device.type == "cuda":
            return self._time_cuda(fn)[0]
        timer = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=self.threads)
        m = timer.blocked_autorange(min_run_time=self.min_run_time)
        return min(m.times) * 1e6

    def _time_cuda(self, fn: Closure) -> tuple[float, float | None]:
        for _ in range(3):
            fn()
        torch.cuda.synchronize(self.device)
        # Estimate the repetitions that fill min_run_time, then time each with events,
        # writing a buffer twice the L2 size first so no input is served from cache.
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        reps = max(5, min(1000, int(self.min_run_time / max(start.elapsed_time(end) * 1e-3, 1e-6))))
        times = []
        for _ in range(reps):
            self._flush_buffer.zero_()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        q = statistics.quantiles(times, n=4)
        return statistics.median(times), q[2] - q[0]


def _flatten(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, Sequence):
        return [t for r in result for t in _flatten(r)]
    return []


# Normwise tolerance of the pre-timing check, per dtype: max|a − b| <= tol · max|b|.
_CHECK_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def check_same(result: Any, expected: Any) -> None:
    """Raise if two implementations' results differ by more than rounding can explain.

    Normwise (the largest difference against the largest value), so reductions over millions of
    elements pass while a wrong answer, off by a sizeable fraction of the output, cannot. This
    is a guard against timing broken code, not the correctness proof (the tests are).
    """
    got, want = _flatten(result), _flatten(expected)
    if len(got) != len(want):
        raise AssertionError(f"returned {len(got)} tensors, the baseline {len(want)}")
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise AssertionError(f"result {i}: {a.dtype}{list(a.shape)}, the baseline {b.dtype}{list(b.shape)}")
        if a.numel() == 0:
            continue
        a64, b64 = a.detach().double(), b.detach().double()
        if not torch.equal(torch.isnan(a64), torch.isnan(b64)):
            raise AssertionError(f"result {i}: NaN where the baseline has none, or the reverse")
        scale = float(b64.nan_to_num().abs().max())
        error = float((a64 - b64).nan_to_num().abs().max())
        if error > _CHECK_TOL.get(a.dtype, 0.0) * max(scale, 1e-30):
            raise AssertionError(f"result {i} differs from the baseline by {error:.3g} (largest value {scale:.3g})")


def copy_bandwidth_gbps(timer: Timer, numel: int, dtype: torch.dtype) -> float:
    """The memory floor: GB/s of ``y.copy_(x)`` (read + write) for ``numel`` elements into memory
    already mapped and warm, the best of many repetitions.

    No op that reads its input once and writes an output of the same size can beat it, so a
    memory-bound row is reported as a percentage of it, and a row above ~100% means the floor
    or the row's byte count is wrong (run_case flags it instead of printing it). It is not
    ``x.clone()``: a fresh output of 32 MiB or more is a new mapping whose first touch faults
    every 4 KiB page, which on these machines costs more than the copy; that cost is reported
    apart (:func:`clone_bandwidth_gbps`).
    """
    x = torch.randn(numel, device=timer.device).to(dtype)
    y = torch.empty_like(x)
    y.copy_(x)  # map and warm the destination
    return 2 * numel * x.element_size() / (timer.best_us(lambda: y.copy_(x)) * 1e-6) / 1e9


def clone_bandwidth_gbps(timer: Timer, numel: int, dtype: torch.dtype) -> float:
    """GB/s of ``x.clone()``: allocate (and fault in) a fresh output, then copy. Its own row in the report."""
    x = torch.randn(numel, device=timer.device).to(dtype)
    median_us, _ = timer(lambda: x.clone())
    return 2 * numel * x.element_size() / (median_us * 1e-6) / 1e9


# A row may not claim more than this percentage of its floor or peak: above it the limit is not a limit
# (or the row's bytes or flops are miscounted), and the row is flagged instead of printed.
FLOOR_GUARD_PCT = 105.0


def peak_gflops(dtype: torch.dtype) -> float | None:
    """The machine's multiply-add peak for ``dtype`` on the benchmark's threads, measured now.

    The probe is ours (``csrc/cpu/peak.cpp``): independent vector FMA chains in registers, in
    the vector ISA the extension was built for, best of five. None without the extension.
    """
    import minitorch_nn.kernels as K

    if not K.AVAILABLE or dtype not in (torch.float32, torch.float64):
        return None
    return float(torch.ops.minitorch_nn._fma_peak_gflops(dtype, cpu_threads()))


def apply_limits(
    case: Case,
    rows: list[Result],
    copy_gbps: dict[tuple[int, torch.dtype], float],
    peaks: dict[torch.dtype, float] | None,
) -> None:
    """Each timed row of ``case`` as a percentage of its memory floor and FMA peak, or flagged above the guard.

    Run when the case is timed, and again at the end of the run with the best limits measured by
    then (run.py measures them before and after the cases, as a busy moment makes one measurement low).
    Until :func:`flag_inconsistent` runs, a row's flag is only ever one of these, so it is recomputed too.
    """
    for row in rows:
        if row.median_us is None:
            continue
        row.flag = row.pct_copy_bw = row.pct_peak = None
        key = (case.copy_elements, case.dtype)
        if row.gbps is not None and case.copy_elements and key in copy_gbps:
            pct = 100 * row.gbps / copy_gbps[key]
            if pct > FLOOR_GUARD_PCT:
                row.flag = f"{pct:.0f}% of the copy floor: the floor or this row's byte count is wrong"
            else:
                row.pct_copy_bw = pct
        if row.gflops is not None and peaks and peaks.get(case.dtype):
            pct = 100 * row.gflops / peaks[case.dtype]
            if pct > FLOOR_GUARD_PCT:
                row.flag = f"{pct:.0f}% of the measured FMA peak: the peak was measured low (a busy machine?)"
            else:
                row.pct_peak = pct


def run_case(
    case: Case,
    timer: Timer,
    copy_gbps: dict[tuple[int, torch.dtype], float],
    peaks: dict[torch.dtype, float] | None = None,
) -> list[Result]:
    """Validate and time every implementation of ``case``, then run its teardown (whatever happened)."""
    try:
        return _run_case(case, timer, copy_gbps, peaks)
    finally:
        if case.teardown is not None:
            case.teardown()


def _run_case(
    case: Case,
    timer: Timer,
    copy_gbps: dict[tuple[int, torch.dtype], float],
    peaks: dict[torch.dtype, float] | None,
) -> list[Result]:
    closures: dict[str, Closure] = {}
    results: dict[str, Result] = {}
    expected = None
    for name, setup in case.impls.items():
        dtype = str(case.dtype).removeprefix("torch.")
        row = Result(case.family, case.op, case.shape, dtype, case.mode, name, None, None)
        results[name] = row
        try:
            fn = setup()
            torch.manual_seed(0)  # random ops (dropout) draw the same numbers in every implementation
            out = fn()
            if name == case.baseline:
                expected = out
            elif case.validate and expected is not None:
                check_same(out, expected)
            closures[name] = fn
        except Exception as e:  # a broken implementation is reported, not timed
            row.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    for name, fn in closures.items():
        row = results[name]
        row.median_us, row.iqr_us = timer(fn)
        seconds = row.median_us * 1e-6
        if case.bytes_moved:
            row.gbps = case.bytes_moved / seconds / 1e9
        if case.flops:
            row.gflops = case.flops / seconds / 1e9
    apply_limits(case, list(results.values()), copy_gbps, peaks)
    base = results.get(case.baseline)
    for row in results.values():
        if base and base.median_us and row.median_us and row.impl != case.baseline:
            row.speedup_vs_baseline = base.median_us / row.median_us
    return list(results.values())


def autograd_setup(
    fn: Callable[..., torch.Tensor], make_inputs: Callable[[], list], mode: str, grad_args: Sequence[int] = (0,)
) -> Callable[[], Closure]:
    """A setup for ``fn(*make_inputs())``: the forward alone, or forward plus backward.

    "fwd" times the forward with no autograd graph. "fwd+bwd" times forward and
    ``torch.autograd.grad`` with respect to the arguments in ``grad_args`` (nothing
    accumulates in ``.grad``, so repetitions are independent).
    """

    def setup() -> Closure:
        inputs = make_inputs()
        if mode == "fwd":
            return lambda: fn(*inputs)
        leaves = [inputs[i].requires_grad_() for i in grad_args]
        dy = torch.randn_like(fn(*inputs))
        return lambda: torch.autograd.grad(fn(*inputs), leaves, dy)

    return setup


def seeded_inputs(*makers: Callable[[], torch.Tensor], seed: int = 0) -> Callable[[], list]:
    """Inputs built from a fixed seed, so every implementation of a case sees the same values."""

    def make() -> list:
        torch.manual_seed(seed)
        return [m() for m in makers]

    return make


MODES = ("fwd", "fwd+bwd")


def numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)
