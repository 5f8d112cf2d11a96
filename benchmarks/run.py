"""Run the benchmark suite on the best device present.

python -m benchmarks                      # the full suite, results under benchmarks/results/<device>/
python -m benchmarks --quick              # tiny shapes, a smoke test of the whole pipeline
python -m benchmarks --families linear    # one op family
python -m benchmarks --device cpu --out /tmp/bench
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import activation, conv, dropout, linear, loss, norm_act, normalization, pooling, report
from .harness import Case, Result, Timer, clone_bandwidth_gbps, copy_bandwidth_gbps, cpu_threads, peak_gflops, run_case

# Op families, named as their files in minitorch_nn/functional, tests/ and benchmarks/.
FAMILIES: dict[str, Callable[[torch.device, bool], list[Case]]] = {
    "activation": activation.cases,
    "conv": conv.cases,
    "dropout": dropout.cases,
    "linear": linear.cases,
    "loss": loss.cases,
    "norm_act": norm_act.cases,
    "normalization": normalization.cases,
    "pooling": pooling.cases,
}
RESULTS = Path(__file__).resolve().parent / "results"


def family_notes(families: list[str]) -> dict[str, str]:
    """Each family module's docstring, for the report: what it compares and where the time goes."""
    return {f: inspect.getdoc(sys.modules[FAMILIES[f].__module__]) or "" for f in families}


def best_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="'cpu', 'cuda', 'cuda:1' or 'auto' (a GPU if present)")
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated subset of {sorted(FAMILIES)}")
    p.add_argument("--quick", action="store_true", help="tiny shapes and short timings: checks the pipeline")
    p.add_argument("--min-run-time", type=float, default=None, help="seconds of timing per measurement")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: results/<device>/)")
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
    cases = [c for f in families for c in FAMILIES[f](device, args.quick)]

    env = report.environment(device)
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

    print("\n" + report.table(rows))
    outdir = args.out or RESULTS / (report.device_slug(device) + ("-quick" if args.quick else ""))
    copy_named = {f"{n} x {str(d).removeprefix('torch.')}": v for (n, d), v in copy_gbps.items()}
    for path in report.write(outdir, env, copy_named, rows, family_notes(families), clone_gbps):
        print(f"wrote {path}", file=sys.stderr)
    failed = [r for r in rows if r.error]
    if failed:
        print(f"{len(failed)} implementation(s) failed validation or setup; see the table", file=sys.stderr)
        return 1
    return 0
