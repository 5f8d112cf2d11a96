"""Build and load the CUDA kernels of csrc/cuda/ for the CPU, on the CUDA emulator.

``load(variant)`` rewrites each .cu with cu2cpp.py, compiles it with the emulator
(runtime.cpp) and the shared CUDA op glue (csrc/cuda/norm_act_ops.h, ln_ladder_ops.h and
conv_ops.h, through emu_ops.cpp) into a torch extension with torch.utils.cpp_extension.load,
cached under build/cuda_emu/<variant>/ (git-ignored; rebuilt only when a source changed), and
returns ``torch.ops.minitorch_nn_emu``: the minitorch_nn fused-norm ops (the LayerNorm+act ladder's
too) and conv2d ops, same schemas, running the CUDA kernels on CPU tensors, with fake (meta) kernels
and autograd registered as minitorch_nn.kernels registers them for the real ops.

Variants: ``plain``; ``capped`` (every grid capped at 3 blocks per dim, so each grid-stride
loop runs several iterations on small inputs); ``asan`` (AddressSanitizer + UBSan) and ``tsan``
(ThreadSanitizer; the emulator then runs one OS thread per CUDA thread). A sanitizer variant must
be loaded in a process started with its runtime preloaded: ``sanitizer_env(variant)``.

    python csrc/emu/build.py [variant]      # build (or check the cache), print the library's path
    python csrc/emu/build.py --env asan     # the environment a process needs to load that build
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMU = ROOT / "csrc" / "emu"
CUDA_HOME = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
BUILD = ROOT / "build" / "cuda_emu"
KERNEL_SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").glob("*.cu"))

_COMMON = ["-O1", "-g1", "-Wno-subobject-linkage", "-Wno-unknown-pragmas"]
# The sanitizer builds are -O0: instrumented and optimized, the kernels' templates take 2.5x (ASan +
# UBSan: 300 s against 116 s on one core) to compile, more than the slower run costs the CI's subset.
VARIANTS: dict[str, list[str]] = {
    "plain": [],
    "capped": ["-DMTNN_MAX_GRID=3"],
    "asan": ["-O0", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"],
    "tsan": ["-O0", "-fsanitize=thread"],
}
_SANITIZER_LIB = {"asan": "libasan.so", "tsan": "libtsan.so"}

_loaded: dict[str, types.SimpleNamespace] = {}
_library = None  # the torch.library.Library defining minitorch_nn_emu (kept alive)

OPS = (
    "layer_norm_act",
    "layer_norm_act_backward",
    "layer_norm_act_ladder",
    "layer_norm_act_ladder_backward",
    "batch_norm_act",
    "batch_norm_act_backward",
    "conv2d",
    "conv2d_backward",
)


def _cu2cpp():
    spec = importlib.util.spec_from_file_location("cu2cpp", EMU / "cu2cpp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sanitizer_env(variant: str) -> dict[str, str]:
    """Environment for a process that loads the `variant` build (the sanitizer runtime preloaded)."""
    env = dict(os.environ)
    lib = _SANITIZER_LIB.get(variant)
    if lib is None:
        return env
    path = subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True, check=True).stdout
    env["LD_PRELOAD"] = path.strip()
    if variant == "asan":
        # Python and torch leak by design at exit; the interest is out-of-bounds and use-after-free.
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1:halt_on_error=1"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    else:
        env["TSAN_OPTIONS"] = "halt_on_error=1:abort_on_error=1:report_signal_unsafe=0"
        env["MTNN_EMU_MODE"] = "threads"
        # torch's OpenMP thread pool (libgomp, not instrumented) aborts under ThreadSanitizer: the
        # oracles run on one thread; the emulator's threads are its own.
        env["OMP_NUM_THREADS"] = "1"
    return env


def _define_library():
    """minitorch_nn_emu::* with minitorch_nn's schemas (read from the loaded extension, not copied)."""
    global _library
    if _library is not None:
        return
    import minitorch_nn._C  # noqa: F401  (defines the minitorch_nn schemas)
    import torch

    _library = torch.library.Library("minitorch_nn_emu", "DEF")
    for name in OPS:
        schema = str(getattr(torch.ops.minitorch_nn, name).default._schema)
        _library.define(schema.removeprefix("minitorch_nn::"))


def _register_python_side():
    """Fake kernels and autograd for the emulated ops: minitorch_nn.kernels.norm_act's own functions,
    with the op namespace they call (their global ``_ops``) pointed at minitorch_nn_emu."""
    import torch

    from minitorch_nn.kernels import conv as C
    from minitorch_nn.kernels import norm_act as K

    emu = torch.ops.minitorch_nn_emu

    def rebound(fn):
        return types.FunctionType(fn.__code__, {**fn.__globals__, "_ops": emu}, fn.__name__, fn.__defaults__)

    for name in OPS:
        module = C if name.startswith("conv") else K
        torch.library.register_fake(f"minitorch_nn_emu::{name}")(getattr(module, f"_{name}_fake"))
    torch.library.register_autograd(
        "minitorch_nn_emu::layer_norm_act",
        rebound(K._layer_norm_act_backward),
        setup_context=K._layer_norm_act_setup,
    )
    torch.library.register_autograd(
        "minitorch_nn_emu::layer_norm_act_ladder",
        rebound(K._layer_norm_act_backward),
        setup_context=K._layer_norm_act_ladder_setup,
    )
    torch.library.register_autograd(
        "minitorch_nn_emu::batch_norm_act",
        rebound(K._batch_norm_act_backward),
        setup_context=K._batch_norm_act_setup,
    )
    torch.library.register_autograd(
        "minitorch_nn_emu::conv2d", rebound(C._conv2d_backward), setup_context=C._conv2d_setup
    )
    torch.library.register_autograd(
        "minitorch_nn_emu::conv2d_backward",
        C._conv2d_double_backward,
        setup_context=C._conv2d_backward_setup,
    )


def build(variant: str = "plain", verbose: bool = False) -> Path:
    """Compile (or find in the cache) and load the `variant` library; returns its path."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    out = BUILD / variant
    out.mkdir(parents=True, exist_ok=True)
    cu2cpp = _cu2cpp()
    sources = [str(EMU / "runtime.cpp"), str(EMU / "emu_ops.cpp")]
    for cu in KERNEL_SOURCES:
        generated = out / (Path(cu).stem + ".emu.cpp")
        cu2cpp.main(["cu2cpp", str(ROOT / cu), str(generated)])
        sources.append(str(generated))
    flags = [*_COMMON, *VARIANTS[variant]]
    # The compilers run without the sanitizer runtime this process may have preloaded.
    preload = os.environ.pop("LD_PRELOAD", None)
    try:
        _load_extension(variant, sources, flags, out, verbose)
    finally:
        if preload is not None:
            os.environ["LD_PRELOAD"] = preload
    return out / f"minitorch_nn_emu_{variant}.so"


def _load_extension(variant, sources, flags, out, verbose):
    import minitorch_nn._C as main_extension
    from torch.utils.cpp_extension import load

    # parse_activation and the other shared definitions are the main extension's (csrc/ops.cpp, which
    # also defines the minitorch_nn library, so it cannot be compiled in twice): link against it.
    main_so = Path(main_extension.__file__).resolve()
    load(
        name=f"minitorch_nn_emu_{variant}",
        sources=sources,
        extra_cflags=flags,
        extra_ldflags=[
            *(f for f in flags if f.startswith("-fsanitize")),
            str(main_so),
            f"-Wl,-rpath,{main_so.parent}",
        ],
        # The emulator's cuda_runtime.h before the toolkit's; csrc/cuda for the kernels' headers.
        extra_include_paths=[str(EMU / "include"), str(CUDA_HOME / "include"), str(ROOT / "csrc" / "cuda")],
        build_directory=str(out),
        is_python_module=False,
        verbose=verbose,
    )


def load(variant: str = "plain", verbose: bool = False):
    """torch.ops.minitorch_nn_emu, with its kernels from the `variant` build (one variant a process)."""
    import torch

    if variant in _loaded:
        return _loaded[variant]
    if _loaded:
        raise RuntimeError(f"the {next(iter(_loaded))} emulator build is already loaded in this process")
    _define_library()
    build(variant, verbose)  # torch.utils.cpp_extension.load also loads it: the TORCH_LIBRARY_IMPL registers
    _register_python_side()
    _loaded[variant] = torch.ops.minitorch_nn_emu
    return _loaded[variant]


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--env":  # NAME=value words for `env`: the sanitizer runtime preloaded
        env = sanitizer_env(argv[2])
        print(" ".join(f"{k}={env[k]}" for k in sorted(set(env) - set(os.environ) | _changed(env))))
        return 0
    variant = argv[1] if len(argv) > 1 else "plain"
    if variant in _SANITIZER_LIB and "LD_PRELOAD" not in os.environ:
        # Loading the library needs the sanitizer's runtime first in the process: start again with it.
        return subprocess.run([sys.executable, *argv], env=sanitizer_env(variant), check=False).returncode
    _define_library()
    print(build(variant, verbose=True))
    return 0


def _changed(env: dict[str, str]) -> set[str]:
    return {k for k in env if k in os.environ and os.environ[k] != env[k]}


if __name__ == "__main__":
    sys.exit(main(sys.argv))
