"""The conv ladder's GEMM (csrc/cpu/conv/gemm.h): its cache-block sizes swept, beside torch.mm.

gemm.h's default blocking (MC rows of A per packed block, kept in L2; KC of the reduction per
slice, a KC×NR sliver of B kept in L1; NC columns of B per packed panel, in L3) is chosen from
this sweep, not guessed: the table in gemm.h's comment is its output on the machine named there.
Each case is one product C (M×N) = A (M×K) @ B (K×N), fp32, row-major operands, on the
benchmark's threads: square sizes and the two conv-shaped products of ResNet-50 that the conv
rungs run per image (3x3 64->64 at 56: O × L × C·9 = 64 × 3136 × 576; 3x3 256->256 at 14:
256 × 196 × 2304). `torch.mm` (MKL here) is the baseline; `ours MC/KC/NC` is
``torch.ops.minitorch_nn._gemm(a, b, [MC, KC, NC])``. FLOPs: 2·M·N·K.

In the suite (`cases`) the rows are the MC × KC grid at the default NC, then NC varied at the
default MC and KC. ``python -m benchmarks.gemm_sweep`` runs the same grid with every
implementation interleaved round by round (so a burst of load from elsewhere hits them all
alike) and prints the medians as the markdown table that goes into gemm.h.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import minitorch_nn.kernels as K

from .harness import Case

# (M, N, K, what it is)
SHAPES = [
    (512, 512, 512, "square"),
    (1024, 1024, 1024, "square"),
    (2048, 2048, 2048, "square"),
    (64, 3136, 576, "conv 3x3 64->64 @56, one image"),
    (256, 196, 2304, "conv 3x3 256->256 @14, one image"),
]
QUICK_SHAPES = [(100, 130, 70, "odd sizes")]
MC_VALUES = (48, 96, 144, 192, 288)
KC_VALUES = (128, 192, 256, 384, 512)
NC_VALUES = (256, 512, 1024, 2048, 4096, 8192)
# The defaults in gemm.h (float): the sweep's centre, and what `ours (default)` runs.
DEFAULT = (192, 512, 4096)


def blockings(quick: bool) -> list[tuple[int, int, int]]:
    """The MC × KC grid at the default NC, then the other NCs at the default MC, KC."""
    if quick:
        return [DEFAULT, (12, 16, 32)]
    grid = [(mc, kc, DEFAULT[2]) for mc in MC_VALUES for kc in KC_VALUES]
    return grid + [(DEFAULT[0], DEFAULT[1], nc) for nc in NC_VALUES if nc != DEFAULT[2]]


def _inputs(m: int, n: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(m, k, generator=g).to(device),
        torch.randn(k, n, generator=g).to(device),
    )


def _impls(m: int, n: int, k: int, device: torch.device, quick: bool) -> dict:
    def mm_setup():
        a, b = _inputs(m, n, k, device)
        return lambda: torch.mm(a, b)

    def ours_setup(blocking: list[int]):
        def setup():
            a, b = _inputs(m, n, k, device)
            return lambda: torch.ops.minitorch_nn._gemm(a, b, blocking)

        return setup

    impls = {"torch.mm": mm_setup, "ours (default)": ours_setup([])}
    for mc, kc, nc in blockings(quick):
        impls[f"ours {mc}/{kc}/{nc}"] = ours_setup([mc, kc, nc])
    return impls


def cases(device: torch.device, quick: bool) -> list[Case]:
    if device.type != "cpu" or not K.AVAILABLE:  # the GEMM is the CPU ladder's
        return []
    return [
        Case(
            "gemm",
            f"gemm block sweep ({what})",
            f"{m}x{n}x{k}",
            torch.float32,
            "fwd",
            _impls(m, n, k, device, quick),
            baseline="torch.mm",
            flops=2 * m * n * k,
        )
        for m, n, k, what in (QUICK_SHAPES if quick else SHAPES)
    ]


def sweep(rounds: int, shapes=SHAPES, quick: bool = False) -> str:
    """Every blocking of every shape, interleaved round by round: markdown tables of GFLOP/s.

    Two statistics of each implementation's times: the median, and the 10th percentile (on
    shared cores, close to the speed when nothing else was running).
    """
    device = torch.device("cpu")
    stats = {"median": statistics.median, "p10": lambda ts: sorted(ts)[len(ts) // 10]}
    lines = []
    for m, n, k, what in shapes:
        closures = {name: setup() for name, setup in _impls(m, n, k, device, quick).items()}
        times: dict[str, list[float]] = {name: [] for name in closures}
        for fn in closures.values():
            fn()
        for _ in range(rounds):
            for name, fn in closures.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        for stat, pick in stats.items():
            gflops = {name: 2 * m * n * k / pick(ts) / 1e9 for name, ts in times.items()}
            lines.append(
                f"\n{m}x{n}x{k} ({what}), GFLOP/s, {stat} of {rounds}: torch.mm {gflops['torch.mm']:.1f}, "
                f"ours default {gflops['ours (default)']:.1f}"
            )
            keys = [key.split()[1].split("/") for key in gflops if key.startswith("ours ") and "/" in key]
            kcs = sorted({int(kc) for _, kc, _ in keys})
            lines.append(f"| MC \\ KC (NC {DEFAULT[2]}) | " + " | ".join(str(kc) for kc in kcs) + " |")
            lines.append("|---" * (len(kcs) + 1) + "|")
            for mc in sorted({int(mc) for mc, _, _ in keys}):
                cells = [gflops.get(f"ours {mc}/{kc}/{DEFAULT[2]}") for kc in kcs]
                if any(c is not None for c in cells):
                    lines.append(f"| {mc} | " + " | ".join(f"{c:.1f}" if c else "" for c in cells) + " |")
            ncs = [(nc, gflops.get(f"ours {DEFAULT[0]}/{DEFAULT[1]}/{nc}")) for nc in NC_VALUES]
            lines.append(f"NC at {DEFAULT[0]}/{DEFAULT[1]}: " + ", ".join(f"{nc}: {g:.1f}" for nc, g in ncs if g))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gemm_sweep", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=15, help="timed rounds per implementation (median taken)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="one small shape, two blockings")
    args = p.parse_args(argv)
    K.require()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads: {torch.get_num_threads()}, CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    print(sweep(args.rounds, QUICK_SHAPES if args.quick else SHAPES, args.quick))


if __name__ == "__main__":
    main()
