"""Run the benchmark suite on the best device present.

python -m benchmarks                      # the full suite, results under benchmarks/results/<device>/
python -m benchmarks --quick              # tiny shapes, a smoke test of the whole pipeline
python -m benchmarks --families linear    # one op family
python -m benchmarks --device cpu --out /tmp/bench
python -m benchmarks --device cuda --families cuda_tuning --min-run-time 0.2 --out /tmp/cuda_tuning   # the sweep

A family module may also define ``skip_reason(device)`` (why it has no cases on this device: the
report says so) and ``summary(rows)`` (markdown printed after the table and added under the
family's table in the report).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
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


def torch_with_thp(families: list[str], args: argparse.Namespace) -> list[Result]:
    """The torch baselines of ``families``, timed in a child process with THP_MEM_ALLOC_ENABLE=1."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "benchmarks", "--device", "cpu", "--families", ",".join(families)]
        command += ["--only-impls", ",".join(TORCH_IMPLS), "--out", out]
        command += ["--quick"] if args.quick else []
        command += ["--min-run-time", str(args.min_run_time)] if args.min_run_time else []
        env = dict(os.environ, THP_MEM_ALLOC_ENABLE="1")
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        data = json.loads((Path(out) / "results.json").read_text())
    if data["environment"].get("THP_MEM_ALLOC_ENABLE") != "1":
        raise RuntimeError("the THP child did not run with THP_MEM_ALLOC_ENABLE=1")
    fields = {f.name for f in dataclasses.fields(Result)}
    rows = [Result(**{k: v for k, v in r.items() if k in fields}) for r in data["results"]]
    for r in rows:
        r.impl += " (THP)"
    return rows


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
    torch.set_num_threads(cpu_threads())
    torch.backends.cudnn.benchmark = True
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(families) - FAMILIES.keys()
    if unknown:
        raise SystemExit(f"unknown families {sorted(unknown)}; choose from {sorted(FAMILIES)}")
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
                env[f"FMA peak, {str(dtype).removeprefix('torch.')}"] = (
                    f"{peak:.1f} GFLOP/s (measured, {cpu_threads()} threads)"
                )
                print(f"FMA peak, {dtype}: {peak:.1f} GFLOP/s", file=sys.stderr)

    rows: list[Result] = []
    started = time.monotonic()
    for i, case in enumerate(cases, 1):
        case_rows = run_case(case, timer, copy_gbps, peaks)
        progress(i, len(cases), case, case_rows, started)
        rows += case_rows

    thp = [f for f in families if f in THP_FAMILIES]
    if device.type == "cpu" and thp and not args.only_impls and not args.no_thp:
        print(f"timing torch's baselines of {thp} again with THP_MEM_ALLOC_ENABLE=1 (a child process)", file=sys.stderr)
        rows = merge_thp_rows(rows, torch_with_thp(thp, args))
        env["torch baselines"] = (
            f"{', '.join(thp)}: as shipped and with THP_MEM_ALLOC_ENABLE=1 (rows '... (THP)'); "
            "'vs torch' is against the faster of the two"
        )

    rows = flag_inconsistent(rows)
    print("\n" + report.table(rows))
    summaries = family_summaries(families, rows)
    for f, text in summaries.items():
        print(f"\n{f}:\n{text}")
    outdir = args.out or RESULTS / (report.device_slug(device) + ("-quick" if args.quick else ""))
    copy_named = {f"{n} x {str(d).removeprefix('torch.')}": v for (n, d), v in copy_gbps.items()}
    written = report.write(
        outdir, env, copy_named, rows, family_notes(families), clone_gbps, summaries=summaries, skipped=skipped
    )
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    failed = [r for r in rows if r.error]
    if failed:
        print(f"{len(failed)} implementation(s) failed validation or setup; see the table", file=sys.stderr)
        return 1
    return 0
