"""Read `nvcc -Xptxas -v` output: registers, stack and spills per kernel instantiation.

    python csrc/cuda/ptxas_report.py ptxas.log     # table; exit 1 on spills outside float64

Spills in the float32, bfloat16 and float16 instantiations fail (those are the ones to be fast);
float64 kernels are reported, not failed (see the note at kWarpRowMax in norm_act.cu).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


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


def dtype_of(name: str) -> str:
    """The scalar type of an instantiation, from its template arguments."""
    for key, dtype in (("__nv_bfloat16", "bfloat16"), ("__half", "float16"), ("double", "float64")):
        if key in name:
            return dtype
    return "float32"


def main(argv: list[str]) -> int:
    rows = parse(Path(argv[1]).read_text())
    spilling = [r for r in rows if r["spill_st"] or r["spill_ld"]]
    failing = [r for r in spilling if r["dtype"] != "float64"]
    print(f"ptxas: {len(rows)} kernel instantiations, {len(spilling)} spill ({len(failing)} outside float64)")
    print(f"{'arch':6} {'dtype':9} {'regs':>4} {'stack':>5} {'spill st/ld':>11}  kernel")
    for r in sorted(spilling, key=lambda r: (r["dtype"] != "float64", r["spill_st"]), reverse=True):
        spill = f"{r['spill_st']}/{r['spill_ld']}"
        print(f"{r['arch']:6} {r['dtype']:9} {r['regs']:4} {r['stack']:5} {spill:>11}  {r['name'][:150]}")
    most = max(rows, key=lambda r: r["regs"], default=None)
    if most:
        print(f"most registers: {most['regs']} ({most['arch']} {most['dtype']} {most['name'][:120]})")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
