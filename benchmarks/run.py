"""Run the benchmark suite on the best device present.

python -m benchmarks                      # the full suite, results under benchmarks/results/<device>/
python -m benchmarks --quick              # tiny shapes, a smoke test of the whole pipeline
python -m benchmarks --families linear    # one op family
python -m benchmarks --device cpu --out /tmp/bench
python -m benchmarks --device cuda --families cuda_tuning --min-run-time 0.2 --out /tmp/cuda_tuning   # the sweep
python -m benchmarks --in-process --families norm_act   # every family in this one process (debugging)

Each family runs in a fresh child process (``python -m benchmarks --families F`` with the hidden
``--child``), which measures the limits its own cases need (memory floors, FMA peak) and writes a
results.json; this parent merges them into the one report. In one long-lived process the
large-shape rows degraded with the heap's history (an 8192x4096 LayerNorm forward measured 182 ms
in the suite and 55 ms alone), ours and torch's alike. A child that crashes (no results.json) is
reported as a failed family with its exit status, and the others go on. ``--in-process`` runs
every family in this process instead, as the suite did before: for a debugger or a profiler.

A family module may also define ``skip_reason(device)`` (why it has no cases on this device: the
report says so) and ``summary(rows)`` (markdown printed after the table and added under the
family's table in the report).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import (
    activation,
    conv,
    cuda_tuning,
    dropout,
    gemm_sweep,
    linear,
    loss,
    norm_act,
    normalization,
    pooling,
    report,
)
from .harness import (
    Case,
    Result,
    Timer,
    apply_limits,
    clone_bandwidth_gbps,
    copy_bandwidth_gbps,
    cpu_threads,
    flag_inconsistent,
    peak_gflops,
    run_case,
)

# Op families, named as their files in minitorch_nn/functional, tests/ and benchmarks/.
FAMILIES: dict[str, Callable[[torch.device, bool], list[Case]]] = {
    "activation": activation.cases,
    "conv": conv.cases,
    "dropout": dropout.cases,
    "gemm": gemm_sweep.cases,
    "linear": linear.cases,
    "loss": loss.cases,
    "norm_act": norm_act.cases,
    "normalization": normalization.cases,
    "pooling": pooling.cases,
    "cuda_tuning": cuda_tuning.cases,  # last: its cases set process-wide tuning (each case restores it)
}
RESULTS = Path(__file__).resolve().parent / "results"

# Like for like: our fused norm kernels ask the OS for 2 MiB pages for their outputs
# (csrc/huge_pages.h), which saves page faults torch's allocator pays as shipped.
# torch can do the same (THP_MEM_ALLOC_ENABLE=1, read when torch starts), so for these families
# the torch baselines are run again in a child process with it set, and "vs torch" is against
# the faster of the two. The other kernels (conv) allocate plainly, as torch does.
THP_FAMILIES = ("norm_act",)
TORCH_IMPLS = ("torch", "torch.compile")

# Test-only hook (tests/test_benchmarks.py): a child whose --families is this variable's value
# kills itself after timing its cases, before writing its results.json, as an out-of-memory kill
# would, so a test can check that the parent reports that family as failed and keeps the others.
TEST_KILL_FAMILY = "MINITORCH_BENCH_TEST_KILL_FAMILY"


def exit_status(code: int) -> str:
    """How a child process ended, in words."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"was killed by {name} (exit status {code})"


class ChildFailed(RuntimeError):
    """A child process ended without writing its results.json: a crash, not failed validation rows."""

    def __init__(self, families: list[str], status: int):
        self.status = status
        super().__init__(f"the process running {','.join(families)} {exit_status(status)} before writing its results")


def run_child(
    families: list[str],
    device: torch.device,
    args: argparse.Namespace,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> dict:
    """The results.json of ``families`` run in a fresh ``python -m benchmarks --child`` process.

    Its progress (stderr) streams to ours; its table (stdout) is dropped, the parent prints the
    merged one. A child whose implementations failed validation exits with 1 and still writes its
    results (the rows say what failed); one that writes none crashed: :class:`ChildFailed`.
    """
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "benchmarks", "--child", "--device", str(device)]
        command += ["--families", ",".join(families), "--out", out, *(extra or [])]
        command += ["--quick"] if args.quick else []
        command += ["--min-run-time", str(args.min_run_time)] if args.min_run_time else []
        status = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=False).returncode
        try:
            data = json.loads((Path(out) / "results.json").read_text())
        except (OSError, ValueError):  # no file, or one cut short: the child died
            raise ChildFailed(families, status) from None
    if status not in (0, 1):
        print(
            f"{','.join(families)}: its process {exit_status(status)} after writing its results (kept)", file=sys.stderr
        )
    return data


def result_rows(data: dict) -> list[Result]:
    """The rows of a child's results.json."""
    fields = {f.name for f in dataclasses.fields(Result)}
    return [Result(**{k: v for k, v in r.items() if k in fields}) for r in data["results"]]


def torch_with_thp(families: list[str], args: argparse.Namespace) -> list[Result]:
    """The torch baselines of ``families``, timed in a child process with THP_MEM_ALLOC_ENABLE=1."""
    env = dict(os.environ, THP_MEM_ALLOC_ENABLE="1")
    data = run_child(families, torch.device("cpu"), args, ["--only-impls", ",".join(TORCH_IMPLS)], env)
    if data["environment"].get("THP_MEM_ALLOC_ENABLE") != "1":
        raise RuntimeError("the THP child did not run with THP_MEM_ALLOC_ENABLE=1")
    rows = result_rows(data)
    for r in rows:
        r.impl += " (THP)"
    return rows


def thp_note(families: list[str]) -> str:
    return (
        f"{', '.join(families)}: as shipped and with THP_MEM_ALLOC_ENABLE=1 (rows '... (THP)'); "
        "'vs torch' is against the faster of the two"
    )


def merge_thp_rows(rows: list[Result], thp_rows: list[Result]) -> list[Result]:
    """Each case's THP rows after its own, and "vs torch" against the faster torch of the two."""

    def key(r: Result) -> tuple:
        return r.family, r.op, r.shape, r.dtype, r.mode

    extra: dict[tuple, list[Result]] = {}
    for r in thp_rows:
        extra.setdefault(key(r), []).append(r)
    merged: list[Result] = []
    for case_key in dict.fromkeys(key(r) for r in rows):
        case_rows = [r for r in rows if key(r) == case_key] + extra.get(case_key, [])
        torch_times = [r.median_us for r in case_rows if r.impl in ("torch", "torch (THP)") and r.median_us]
        if len(torch_times) == 2:
            best = min(torch_times)
            for r in case_rows:
                r.speedup_vs_baseline = best / r.median_us if r.median_us and r.impl != "torch" else None
        merged += case_rows
    return merged


def family_notes(families: list[str]) -> dict[str, str]:
    """Each family module's docstring, for the report: what it compares and where the time goes."""
    return {f: inspect.getdoc(family_module(f)) or "" for f in families}


def family_module(family: str):
    return sys.modules[FAMILIES[family].__module__]


def skipped_families(families: list[str], device: torch.device) -> dict[str, str]:
    """Each family that says it cannot run on ``device`` (its ``skip_reason``), and why."""
    reasons = {f: getattr(family_module(f), "skip_reason", lambda _device: None)(device) for f in families}
    return {f: reason for f, reason in reasons.items() if reason}


def family_summaries(families: list[str], rows: list[Result]) -> dict[str, str]:
    """Each family's ``summary`` of its rows (markdown), where it has one and rows to summarise."""
    out = {}
    for f in families:
        summarize = getattr(family_module(f), "summary", None)
        text = summarize([r for r in rows if r.family == f]) if summarize else ""
        if text:
            out[f] = text
    return out


def merge_limits(per_family: dict[str, dict]) -> dict:
    """The measured limits (memory floors, clone figures, FMA peaks) of each family's process, in one dict.

    A limit that one family measured keeps its name; one that several measured, each in its own
    process and so each a little different, appears once per family as ``name (family)``: every
    row's percentage is of its own process's figure.
    """
    count = collections.Counter(name for limits in per_family.values() for name in limits)
    return {
        (name if count[name] == 1 else f"{name} ({family})"): value
        for family, limits in per_family.items()
        for name, value in limits.items()
    }


def peak_line(gflops: float) -> str:
    return f"{gflops:.1f} GFLOP/s (measured, {cpu_threads()} threads)"


def best_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="'cpu', 'cuda', 'cuda:1' or 'auto' (a GPU if present)")
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated subset of {sorted(FAMILIES)}")
    p.add_argument("--quick", action="store_true", help="tiny shapes and short timings: checks the pipeline")
    p.add_argument("--min-run-time", type=float, default=None, help="seconds of timing per measurement")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: results/<device>/)")
    p.add_argument("--no-thp", action="store_true", help="skip the torch-with-THP rerun of the THP families' baselines")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run every family in this process, not each in a fresh one (debugging)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # started by the parent: starts no process
    p.add_argument("--only-impls", default=None, help=argparse.SUPPRESS)  # the THP child: torch's baselines only
    return p.parse_args(argv)


def progress(i: int, total: int, case: Case, rows: list[Result], started: float) -> None:
    times = ", ".join(f"{r.impl} {report._format('median_us', r.median_us) or 'FAILED'}" for r in rows)
    print(
        f"[{i:>3}/{total}] {time.monotonic() - started:6.1f}s  {case.family} · {case.op} · {case.shape} · "
        f"{case.mode}: {times}",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = best_device() if args.device == "auto" else torch.device(args.device)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(families) - FAMILIES.keys()
    if unknown:
        raise SystemExit(f"unknown families {sorted(unknown)}; choose from {sorted(FAMILIES)}")
    if args.in_process or args.child:
        return run_in_process(args, device, families)
    return run_in_children(args, device, families)


def run_in_children(args: argparse.Namespace, device: torch.device, families: list[str]) -> int:
    """Each family in a fresh child process (:func:`run_child`), then one report of them all."""
    skipped = skipped_families(families, device)
    for f, reason in skipped.items():
        print(f"{f}: skipped, {reason}", file=sys.stderr)
    env = report.environment(device)
    env["THP_MEM_ALLOC_ENABLE"] = os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")
    env["processes"] = (
        "each family ran in its own fresh process (`python -m benchmarks --families F`), which measured "
        "its own limits: in one long-lived process large-shape rows degraded with the heap's history"
    )
    print(f"minitorch_nn benchmarks on {device} ({env['gpu'] if 'gpu' in env else env['cpu']})", file=sys.stderr)
    extra = ["--only-impls", args.only_impls] if args.only_impls else []
    runnable = [f for f in families if f not in skipped]
    rows: list[Result] = []
    failed: dict[str, str] = {}
    pids: dict[str, int] = {}
    floors: dict[str, dict[str, float]] = {}
    clones: dict[str, dict[str, str]] = {}
    peaks: dict[str, dict[str, float]] = {}
    thp_done: list[str] = []
    for i, f in enumerate(runnable, 1):
        print(f"{f}: a fresh process (family {i} of {len(runnable)})", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            data = run_child([f], device, args, extra)
        except ChildFailed as e:
            failed[f] = f"{e}, so its rows are lost; to see why: `python -m benchmarks --in-process --families {f}`"
            print(f"{f}: FAILED, {e}", file=sys.stderr, flush=True)
            continue
        family_rows = result_rows(data)
        pids[f] = int(data["environment"]["pid"])
        floors[f], clones[f] = data["memory_floor_gbps"], data["clone_gbps"]
        peaks[f] = data["fma_peak_gflops"]
        skipped.update(data["skipped"])
        if f in THP_FAMILIES and device.type == "cpu" and not (args.no_thp or args.only_impls):
            print(
                f"timing torch's baselines of {f} again with THP_MEM_ALLOC_ENABLE=1 (a child process)", file=sys.stderr
            )
            try:
                family_rows = merge_thp_rows(family_rows, torch_with_thp([f], args))
                thp_done.append(f)
            except ChildFailed as e:
                failed[f"{f}, torch with THP_MEM_ALLOC_ENABLE=1"] = f"{e}; 'vs torch' is against torch as shipped"
                print(f"{f}: the THP rerun FAILED, {e}", file=sys.stderr, flush=True)
        rows += family_rows
        print(f"{f}: {time.monotonic() - started:.1f}s, process start included", file=sys.stderr, flush=True)
    merged_peaks = merge_limits(peaks)
    for name, gflops in merged_peaks.items():
        env[f"FMA peak, {name}"] = peak_line(gflops)
    if thp_done:
        env["torch baselines"] = thp_note(thp_done)
    return finish(
        args,
        device,
        families,
        env,
        rows,
        merge_limits(floors),
        merge_limits(clones),
        merged_peaks,
        skipped,
        failed=failed,
        processes=pids,
    )


def run_in_process(args: argparse.Namespace, device: torch.device, families: list[str]) -> int:
    """Every family's cases in this process: ``--in-process``, and each child (``--child``)."""
    torch.set_num_threads(cpu_threads())
    torch.backends.cudnn.benchmark = True
    min_run_time = args.min_run_time or (0.05 if args.quick else 0.5)
    timer = Timer(device, min_run_time)
    skipped = skipped_families(families, device)
    for f, reason in skipped.items():
        print(f"{f}: skipped, {reason}", file=sys.stderr)
    cases = [c for f in families if f not in skipped for c in FAMILIES[f](device, args.quick)]
    if args.only_impls:
        keep = args.only_impls.split(",")
        cases = [dataclasses.replace(c, impls={k: v for k, v in c.impls.items() if k in keep}) for c in cases]

    env = report.environment(device)
    env["THP_MEM_ALLOC_ENABLE"] = os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")
    if args.child:
        env["pid"] = str(os.getpid())  # the parent reports it: proof that each family had its own process
    else:
        env["processes"] = "every family in this one process (--in-process)"
        print(f"minitorch_nn benchmarks on {device} ({env['gpu'] if 'gpu' in env else env['cpu']})", file=sys.stderr)
    copy_gbps: dict[tuple[int, torch.dtype], float] = {}
    clone_gbps: dict[str, str] = {}
    for key in sorted({(c.copy_elements, c.dtype) for c in cases if c.copy_elements}, key=str):
        copy_gbps[key] = copy_bandwidth_gbps(timer, *key)
        name = f"{key[0]} x {str(key[1]).removeprefix('torch.')}"
        clone_gbps[f"allocate + fault + copy (`x.clone()`), {name}"] = f"{clone_bandwidth_gbps(timer, *key):.1f} GB/s"
        print(f"memory floor, {name}: {copy_gbps[key]:.1f} GB/s", file=sys.stderr)

    peaks: dict[torch.dtype, float] = {}
    if device.type == "cpu":
        for dtype in sorted({c.dtype for c in cases if c.flops}, key=str):
            peak = peak_gflops(dtype)
            if peak:
                peaks[dtype] = peak
                env[f"FMA peak, {str(dtype).removeprefix('torch.')}"] = peak_line(peak)
                print(f"FMA peak, {dtype}: {peak:.1f} GFLOP/s", file=sys.stderr)

    rows: list[Result] = []
    timed: list[tuple[Case, list[Result]]] = []
    started = time.monotonic()
    for i, case in enumerate(cases, 1):
        case_rows = run_case(case, timer, copy_gbps, peaks)
        progress(i, len(cases), case, case_rows, started)
        rows += case_rows
        timed.append((case, case_rows))
    remeasure_limits(timer, copy_gbps, peaks, env, timed)
    if args.child and os.environ.get(TEST_KILL_FAMILY) == args.families:
        os.kill(os.getpid(), signal.SIGKILL)  # the test-only hook above

    thp = [f for f in families if f in THP_FAMILIES]
    if device.type == "cpu" and thp and not (args.child or args.only_impls or args.no_thp):
        print(f"timing torch's baselines of {thp} again with THP_MEM_ALLOC_ENABLE=1 (a child process)", file=sys.stderr)
        rows = merge_thp_rows(rows, torch_with_thp(thp, args))
        env["torch baselines"] = thp_note(thp)

    copy_named = {f"{n} x {str(d).removeprefix('torch.')}": v for (n, d), v in copy_gbps.items()}
    peaks_named = {str(d).removeprefix("torch."): v for d, v in peaks.items()}
    return finish(args, device, families, env, rows, copy_named, clone_gbps, peaks_named, skipped)


def remeasure_limits(
    timer: Timer,
    copy_gbps: dict[tuple[int, torch.dtype], float],
    peaks: dict[torch.dtype, float],
    env: dict[str, str],
    timed: list[tuple[Case, list[Result]]],
) -> None:
    """Measure the memory floors and FMA peaks again after the cases, keep the best of the two, and
    recompute every row's percentages against them.

    A limit measured while the machine was busy comes out low, and rows then claim more than 100%
    of it (a run at 154db80 flagged four rows at 157-165% of a 8388608-float floor measured at 11
    GB/s, where its clone alone ran at 19 GB/s); a limit is the best the machine did in this run.
    """
    for key, before in copy_gbps.items():
        after = copy_bandwidth_gbps(timer, *key)
        copy_gbps[key] = max(before, after)
        name = f"{key[0]} x {str(key[1]).removeprefix('torch.')}"
        print(f"memory floor, {name}, after the cases: {after:.1f} GB/s (kept {copy_gbps[key]:.1f})", file=sys.stderr)
    for dtype, before in peaks.items():
        after = peak_gflops(dtype) or 0.0
        peaks[dtype] = max(before, after)
        env[f"FMA peak, {str(dtype).removeprefix('torch.')}"] = peak_line(peaks[dtype])
    for case, case_rows in timed:
        apply_limits(case, case_rows, copy_gbps, peaks)


def finish(
    args: argparse.Namespace,
    device: torch.device,
    families: list[str],
    env: dict[str, str],
    rows: list[Result],
    floors: dict[str, float],
    clones: dict[str, str],
    peaks: dict[str, float],
    skipped: dict[str, str],
    failed: dict[str, str] | None = None,
    processes: dict[str, int] | None = None,
) -> int:
    """Flag, print and write the report; 1 if an implementation or a family failed.

    A child writes its results.json for the parent and says no more: no charts, no file list.
    """
    rows = flag_inconsistent(rows)
    print("\n" + report.table(rows))
    summaries = family_summaries(families, rows)
    for f, text in summaries.items():
        print(f"\n{f}:\n{text}")
    outdir = args.out or RESULTS / (report.device_slug(device) + ("-quick" if args.quick else ""))
    written = report.write(
        outdir,
        env,
        floors,
        rows,
        family_notes(families),
        clones,
        summaries=summaries,
        skipped=skipped,
        peaks=peaks,
        failed=failed,
        processes=processes,
        charts=not args.child,
    )
    if args.child:
        return 1 if any(r.error for r in rows) else 0
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    bad_rows = [r for r in rows if r.error]
    if bad_rows:
        print(f"{len(bad_rows)} implementation(s) failed validation or setup; see the table", file=sys.stderr)
    if failed:
        print(f"{len(failed)} process(es) failed ({'; '.join(failed)}); see the report", file=sys.stderr)
    return 1 if bad_rows or failed else 0
