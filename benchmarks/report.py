"""Benchmark output: the machine description, a terminal table, markdown and JSON files."""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import torch

from .harness import Result, cpu_threads

COLUMNS = [
    ("op", "op"),
    ("shape", "shape"),
    ("dtype", "dtype"),
    ("mode", "mode"),
    ("impl", "impl"),
    ("median", "median_us"),
    ("iqr", "iqr_us"),
    ("GB/s", "gbps"),
    ("% copy BW", "pct_copy_bw"),
    ("GFLOP/s", "gflops"),
    ("% peak", "pct_peak"),
    ("vs torch", "speedup_vs_baseline"),
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_slug(device: torch.device) -> str:
    """Directory name for results: the GPU's name, or the CPU's model and thread count."""
    # The vector ISA is part of a CPU's name: AVX2 and AVX-512 machines of one model must not
    # overwrite each other's results.
    cpu = f"cpu {cpu_model()} {cpu_threads()}t {torch.backends.cpu.get_cpu_capability()}"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def environment(device: torch.device) -> dict[str, str]:
    env = {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "device": str(device),
        "cpu": f"{cpu_model()}, {cpu_threads()} threads used",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": _git_commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs"
        env["cuda / cudnn"] = f"{torch.version.cuda} / {torch.backends.cudnn.version()}"
        env["tf32 (matmul / cudnn)"] = (
            f"{torch.backends.cuda.matmul.allow_tf32} / {torch.backends.cudnn.allow_tf32}; cudnn.benchmark=True"
        )
    else:
        env["cpu backend"] = f"mkldnn (oneDNN) available: {torch.backends.mkldnn.is_available()}"
        # setup.py builds our kernels for the ISA torch dispatches to (unless MINITORCH_CPU_CAPABILITY says otherwise).
        env["vector ISA (torch's dispatch; our build follows it)"] = torch.backends.cpu.get_cpu_capability()
        env["transparent huge pages"] = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    env["compiler"] = _first_line(["c++", "--version"])
    return env


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "unknown"


def _first_line(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return head.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _format(key: str, value) -> str:
    if value is None:
        return ""
    if key in ("median_us", "iqr_us"):
        return f"{value / 1000:.3f} ms" if value >= 1000 else f"{value:.1f} us"
    if key == "speedup_vs_baseline":
        return f"{value:.2f}x"
    if key in ("pct_copy_bw", "pct_peak"):
        return f"{value:.0f}%"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _cells(rows: Sequence[Result]) -> list[list[str]]:
    cells = []
    for r in rows:
        line = [_format(key, getattr(r, key)) for _, key in COLUMNS]
        if r.error:
            line[5] = f"FAILED: {r.error}"
        if r.flag:
            column = "pct_peak" if "peak" in r.flag else "pct_copy_bw"
            line[[key for _, key in COLUMNS].index(column)] = "FLAGGED"
        cells.append(line)
    return cells


def table(rows: Sequence[Result]) -> str:
    """A fixed-width table for the terminal."""
    header = [title for title, _ in COLUMNS]
    cells = _cells(rows)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *cells, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def markdown(
    env: dict[str, str],
    copy_gbps: dict[str, float],
    rows: Sequence[Result],
    notes: dict[str, str] | None = None,
    clone_gbps: dict[str, str] | None = None,
    images: Sequence[str] = (),
    summaries: dict[str, str] | None = None,
    skipped: dict[str, str] | None = None,
    failed: dict[str, str] | None = None,
) -> str:
    """The report: environment, copy bandwidths, then per family its notes (the family module's
    docstring: what is compared and where the time goes), its table and its summary; then each
    family skipped on this device, with its notes and the reason; last, each family whose process
    failed (crashed), with how it ended."""
    out = ["# minitorch_nn benchmarks", ""]
    out += [f"- **{k}**: {v}" for k, v in env.items()]
    floor = "`y.copy_(x)` into mapped, warm memory, read + write, best of many, before and after the cases"
    out += [f"- **memory floor** ({floor}), {k}: {v:.1f} GB/s" for k, v in copy_gbps.items()]
    out += [f"- **{k}**: {v}" for k, v in (clone_gbps or {}).items()]
    out += [
        "",
        "Median of repeated runs (IQR beside it); GB/s from each case's minimum memory traffic; "
        "`vs torch` is torch's time divided by the implementation's (above 1 is faster than torch); "
        "`% peak` is GFLOP/s against the FMA peak measured in the same run.",
    ]
    for family in dict.fromkeys(r.family for r in rows):
        fam = [r for r in rows if r.family == family]
        out += ["", f"## {family}", ""]
        if notes and notes.get(family):
            out += [notes[family].strip(), ""]
        if f"{family}.png" in images:
            out += [f"![{family}]({family}.png)", ""]
        out.append("| " + " | ".join(title for title, _ in COLUMNS) + " |")
        out.append("|" + "---|" * len(COLUMNS))
        out += ["| " + " | ".join(line) + " |" for line in _cells(fam)]
        flagged = [r for r in fam if r.flag]
        if flagged:
            out += ["", "Flagged (not printed as a percentage):"]
            out += [f"- {r.op} · {r.shape} · {r.mode} · {r.impl}: {r.flag}" for r in flagged]
        if summaries and summaries.get(family):
            out += ["", summaries[family].strip()]
    for family, reason in (skipped or {}).items():
        out += ["", f"## {family}", ""]
        if notes and notes.get(family):
            out += [notes[family].strip(), ""]
        out.append(f"**Skipped**: {reason}.")
    for family, reason in (failed or {}).items():
        out += ["", f"## {family}", "", f"**Failed**: {reason}."]
    return "\n".join(out) + "\n"


def write(
    outdir: Path,
    env: dict[str, str],
    copy_gbps: dict[str, float],
    rows: Sequence[Result],
    notes: dict[str, str] | None = None,
    clone_gbps: dict[str, str] | None = None,
    summaries: dict[str, str] | None = None,
    skipped: dict[str, str] | None = None,
    peaks: dict[str, float] | None = None,
    failed: dict[str, str] | None = None,
    processes: dict[str, int] | None = None,
    charts: bool = True,
) -> list[Path]:
    """report.md, results.json and (with ``charts``) a PNG per family; the paths written.

    results.json holds what a parent needs to merge its children's runs: the rows, the limits
    measured (floors, clone figures, FMA peaks per dtype), skipped and failed families, and the
    process id each family ran in (``processes``, in a parent's; a child's environment has its own).
    """
    outdir.mkdir(parents=True, exist_ok=True)
    md, js = outdir / "report.md", outdir / "results.json"
    written = plots(outdir, rows) if charts else []
    images = [p.name for p in written]
    md.write_text(markdown(env, copy_gbps, rows, notes, clone_gbps, images, summaries, skipped, failed))
    payload = {
        "environment": env,
        "memory_floor_gbps": copy_gbps,
        "clone_gbps": clone_gbps or {},
        "fma_peak_gflops": peaks or {},
        "skipped": skipped or {},
        "failed": failed or {},
        "processes": processes or {},
        "summaries": summaries or {},
        "results": [dataclasses.asdict(r) for r in rows],
    }
    js.write_text(json.dumps(payload, indent=1) + "\n")
    return [md, js, *written]


def _plotted_metric(rows: Sequence[Result]) -> tuple[str, str]:
    """What a family's chart shows: % of peak for compute-bound rows, % of the floor for memory-bound ones."""
    if any(r.pct_peak for r in rows):
        return "pct_peak", "% of the measured FMA peak"
    if any(r.pct_copy_bw for r in rows):
        return "pct_copy_bw", "% of the memory floor (warm copy)"
    return "speedup_vs_baseline", "speed relative to torch (x)"


def plots(outdir: Path, rows: Sequence[Result]) -> list[Path]:
    """One PNG per family: each case a group of bars, one per implementation (a ladder: one per rung).

    Needs matplotlib (the ``examples`` extra, which the quick start installs); without it, no plots.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for family in dict.fromkeys(r.family for r in rows):
        fam = [r for r in rows if r.family == family]
        key, label = _plotted_metric(fam)
        cases = list(dict.fromkeys((r.op, r.shape, r.mode) for r in fam))
        impls = list(dict.fromkeys(r.impl for r in fam))
        value = {(r.op, r.shape, r.mode, r.impl): getattr(r, key) for r in fam}
        height = 0.8 / max(len(impls), 1)
        fig, ax = plt.subplots(figsize=(10, 0.09 * len(cases) * max(len(impls), 2) + 1.5))
        for i, impl in enumerate(impls):
            ys = [c - 0.4 + (i + 0.5) * height for c in range(len(cases))]
            xs = [value.get((*case, impl)) or 0 for case in cases]
            ax.barh(ys, xs, height=height, label=impl)
        ax.set_yticks(range(len(cases)), [f"{op} · {shape} · {mode}" for op, shape, mode in cases], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.set_title(f"{family}: {label}")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = outdir / f"{family}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
