"""Rewrite a .cu file into C++ that runs on the CUDA emulator (csrc/emu/include/cuda_emu/device.h).

Three mechanical rewrites; everything else in the file is compiled as it is:

* a launch ``kernel<T, V><<<grid, block, smem, stream>>>(a, b)`` becomes
  ``::mtnn_emu::launch({"kernel<T, V>", __LINE__, BOUNDS}, ::mtnn_emu::Config(grid, block, smem, stream),
  [&](auto&&... a) { kernel<T, V>(a...); }, a, b)``, where BOUNDS is the kernel's ``__launch_bounds__``
  (read from its definition in the same file; 0 when it has none), so the emulator checks a launch
  against it as a GPU does;
* ``__shared__ T name[N];`` becomes ``auto& name = ::mtnn_emu::shared<T[N]>(__LINE__);``: the
  block's copy, allocated at its exact size;
* ``extern __shared__ T name[];`` becomes ``T* name = ::mtnn_emu::dynamic_shared<T>();``.

The output keeps every line where it was and starts with ``#line 1 "<the .cu file>"``, so compiler
messages, emulator reports and a debugger all point into the .cu source.

    python csrc/emu/cu2cpp.py csrc/cuda/norm_act.cu build/cuda_emu/norm_act.emu.cpp
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_KERNEL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\s*\(((?:[^()]|\([^()]*\))*)\)\s*)?(\w+)\s*\(")
_DYNAMIC_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?(?P<type>[\w:<>, ]+?)\s+(?P<name>\w+)\s*\[\s*\]\s*;"
)
_STATIC_SHARED = re.compile(
    r"__shared__\s+(?:__align__\s*\(\s*(?P<align>\d+)\s*\)\s+)?(?P<type>[\w:<>, ]+?)\s+(?P<name>\w+)\s*"
    r"(?P<dims>(?:\[[^\]\n]+\])*)\s*;"
)


class RewriteError(ValueError):
    pass


def launch_bounds(src: str) -> dict[str, str]:
    """Kernel name → its __launch_bounds__ maximum threads a block ('0' when it has none)."""
    return {m.group(2): _first_argument(m.group(1) or "0") for m in _KERNEL.finditer(src)}


def _first_argument(args: str) -> str:
    """`kThreads * 2, 3` → `kThreads * 2` (the minimum blocks an SM is for ptxas, not the launch)."""
    depth = 0
    for i, ch in enumerate(args):
        if ch in "(<[":
            depth += 1
        elif ch in ")>]":
            depth -= 1
        if ch == "," and depth == 0:
            return args[:i].strip()
    return args.strip()


def _match_back(src: str, close: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket that opens the one at `close`."""
    depth = 0
    for i in range(close, -1, -1):
        if src[i] == close_ch:
            depth += 1
        elif src[i] == open_ch:
            depth -= 1
            if depth == 0:
                return i
    raise RewriteError(f"unbalanced {open_ch}{close_ch} before offset {close}")


def _match_forward(src: str, open_: int) -> int:
    """Index of the parenthesis that closes the one at `open_`."""
    depth = 0
    for i in range(open_, len(src)):
        if src[i] == "(":
            depth += 1
        elif src[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise RewriteError(f"unbalanced ( at offset {open_}")


def _line(src: str, pos: int) -> int:
    return src.count("\n", 0, pos) + 1


def rewrite_launches(src: str) -> str:
    bounds = launch_bounds(src)
    out, pos = [], 0
    while (start := src.find("<<<", pos)) != -1:
        # The kernel expression before <<<: an identifier, maybe with <template arguments>.
        end_name = start
        while end_name > 0 and src[end_name - 1].isspace():
            end_name -= 1
        name_start = end_name
        if src[name_start - 1] == ">":
            name_start = _match_back(src, name_start - 1, "<", ">")
        ident = re.search(r"[\w:]+$", src[:name_start])
        if ident is None:
            raise RewriteError(f"line {_line(src, start)}: no kernel name before <<<")
        name_start = ident.start()
        kernel = src[name_start:end_name]
        base = ident.group(0).split("::")[-1]
        if base not in bounds:
            raise RewriteError(f"line {_line(src, start)}: launch of {base}, which is not a __global__ of this file")
        cfg_end = src.find(">>>", start)
        if cfg_end == -1:
            raise RewriteError(f"line {_line(src, start)}: <<< without >>>")
        config = src[start + 3 : cfg_end].strip()
        paren = cfg_end + 3
        while src[paren].isspace():
            paren += 1
        if src[paren] != "(":
            raise RewriteError(f"line {_line(src, start)}: no argument list after >>>")
        close = _match_forward(src, paren)
        args = src[paren + 1 : close]
        head = src[name_start:paren]
        flat_kernel = " ".join(kernel.split())
        call = (
            f'::mtnn_emu::launch({{"{flat_kernel}", __LINE__, static_cast<unsigned>({bounds[base]})}}, '
            f"::mtnn_emu::Config({config}), [&](auto&&... mtnn_emu_args) {{ {kernel}(mtnn_emu_args...); }}"
            + (f", {args})" if args.strip() else ")")
            + "\n" * head.count("\n")  # keep the following lines where they were
        )
        out += [src[pos:name_start], call]
        pos = close + 1
    out.append(src[pos:])
    return "".join(out)


def _static_shared(m: re.Match) -> str:
    t = f"{m['type']}{m['dims']}"
    align = f", {m['align']}" if m["align"] else ""
    return f"auto& {m['name']} = ::mtnn_emu::shared<{t}{align}>(__LINE__);"


def rewrite_shared(src: str) -> str:
    src = _DYNAMIC_SHARED.sub(lambda m: f"{m['type']}* {m['name']} = ::mtnn_emu::dynamic_shared<{m['type']}>();", src)
    return _STATIC_SHARED.sub(_static_shared, src)


def rewrite(src: str, path: str) -> str:
    body = rewrite_shared(rewrite_launches(src))
    return (
        f"// Generated from {path} by csrc/emu/cu2cpp.py, for the CUDA emulator: do not edit.\n"
        "#include <cuda_emu/device.h>\n"
        f'#line 1 "{path}"\n' + body
    )


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    src_path, out_path = Path(argv[1]).resolve(), Path(argv[2])
    text = rewrite(src_path.read_text(), str(src_path))
    if not out_path.exists() or out_path.read_text() != text:  # unchanged: leave the build up to date
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
