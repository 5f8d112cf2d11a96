"""Read `nvcc -Xptxas -v` output: registers, stack and spills per kernel instantiation.

    python csrc/cuda/ptxas_report.py ptxas.log     # table; exit 1 on spills outside float64

Spills in the float32, bfloat16 and float16 instantiations fail (those are the ones to be fast);
float64 kernels are reported, not failed (see the note at kWarpRowMax in norm_act.cu).

Not every "spill" ptxas counts is register pressure. An IEEE float division or reciprocal
(`a / b`, `rcp.rn.f32`) has a slow path for denormal and special operands that ptxas compiles as a
subroutine call, and the registers it saves around that call are counted as spill stores and
loads (with a small stack frame), in kernels that use few registers: compiling norm_act.cu with
`-prec-div=false`, which has no such subroutine, removes every float32/16-bit spill of the BatchNorm
reductions' activation derivatives, and nothing else changes. Those saves run only when the slow
path is taken. So a spill of at most SUBROUTINE_SPILL_BYTES in a kernel using at most
SUBROUTINE_SPILL_REGS registers is reported as "call" and does not fail. Register pressure spills at
the register cap, which no kernel here has that low: no launch bound asks for more than 512
threads a block with no minimum of blocks (a cap of 128), or 256 threads and 3 blocks (85).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")
SUBROUTINE_SPILL_BYTES = 64
SUBROUTINE_SPILL_REGS = 64


def parse(text: str) -> list[dict]:
    rows, cur = [], None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            cur = {"mangled": m.group(1), "arch": m.group(2), "stack": 0, "spill_st": 0, "spill_ld": 0, "regs": 0}
            rows.append(cur)
        elif cur is not None and (m := _PROPS.search(line)):
            cur["stack"], cur["spill_st"], cur["spill_ld"] = (int(g) for g in m.groups())
        elif cur is not None and (m := _REGS.search(line)):
            cur["regs"] = int(m.group(1))
    names = subprocess.run(
        ["c++filt"], input="\n".join(r["mangled"] for r in rows), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for r, name in zip(rows, names, strict=True):
        r["name"] = re.sub(r"\(anonymous namespace\)::|minitorch_nn::(cuda::)?", "", name)
        r["dtype"] = dtype_of(r["name"])
    return rows


def subroutine_saves(r: dict) -> bool:
    """A spill small enough, in a kernel with few enough registers, to be a call's saves (see above)."""
    small = r["spill_st"] <= SUBROUTINE_SPILL_BYTES and r["spill_ld"] <= SUBROUTINE_SPILL_BYTES
    return small and r["regs"] <= SUBROUTINE_SPILL_REGS


def dtype_of(name: str) -> str:
    """The scalar type of an instantiation, from its template arguments."""
    for key, dtype in (("__nv_bfloat16", "bfloat16"), ("__half", "float16"), ("double", "float64")):
        if key in name:
            return dtype
    return "float32"


def main(argv: list[str]) -> int:
    rows = parse(Path(argv[1]).read_text())
    spilling = [r for r in rows if r["spill_st"] or r["spill_ld"]]
    calls = [r for r in spilling if subroutine_saves(r)]
    failing = [r for r in spilling if r["dtype"] != "float64" and not subroutine_saves(r)]
    print(
        f"ptxas: {len(rows)} kernel instantiations, {len(spilling)} spill ({len(failing)} outside float64"
        f" under register pressure; {len(calls)} the division slow path's saves)"
    )
    print(f"{'arch':6} {'dtype':9} {'regs':>4} {'stack':>5} {'spill st/ld':>11}  {'kind':8} kernel")
    for r in sorted(spilling, key=lambda r: (r["dtype"] != "float64", r["spill_st"]), reverse=True):
        spill = f"{r['spill_st']}/{r['spill_ld']}"
        kind = "call" if subroutine_saves(r) else "pressure"
        print(f"{r['arch']:6} {r['dtype']:9} {r['regs']:4} {r['stack']:5} {spill:>11}  {kind:8} {r['name'][:140]}")
    most = max(rows, key=lambda r: r["regs"], default=None)
    if most:
        print(f"most registers: {most['regs']} ({most['arch']} {most['dtype']} {most['name'][:120]})")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
