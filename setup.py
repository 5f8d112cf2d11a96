"""Build and install minitorch_nn, and its compiled extension minitorch_nn._C.

The pure-Python package (reference ops, modules, init) needs nothing but torch at run time.
The extension (``csrc/``) is built with ``torch.utils.cpp_extension``. That build imports torch,
so install with an existing torch and without build isolation, or pip downloads a second
(multi-GB) torch into a temporary build environment:

    pip install --no-build-isolation -e ".[test]"

What gets built:

* a ``CppExtension`` (the CPU kernels) with a CPU-only torch, or when nvcc is missing;
* a ``CUDAExtension`` (CPU and CUDA kernels) when torch is a CUDA build and nvcc is found.
  The GPU architectures default to those of the GPUs present; set ``TORCH_CUDA_ARCH_LIST``
  (e.g. ``"8.0;9.0"``) to choose.

If the compiler fails, or there is none, the package still installs and the references still
work; ``minitorch_nn.kernels`` then says why its ops are unavailable. ``MINITORCH_NO_EXTENSION=1``
skips the build on purpose. ``MINITORCH_CPU_CAPABILITY`` (``avx512``, ``avx2`` or ``default``)
overrides the vector instruction set chosen for the CPU kernels.

Two switches for people working on the kernels:

* ``MINITORCH_DEBUG_INFO=1`` compiles with debug information (``-g``). It is off by default:
  Python's own flags ask for ``-g``, and on the heavily templated kernels that makes the
  compile half as long again and each object ~10 MB, for line tables nobody reads.
  Function names stay in the library either way, so profilers still name the kernels.
* ``MINITORCH_OPT_LEVEL`` (0-3, default 3) is the C++ optimisation level. .ci/sanitize.sh builds
  at 1, as AddressSanitizer advises: every load and store is still there to check, at a
  fraction of the -O3 compile time.
* ``MINITORCH_BUILD_CHECK=1`` builds only to prove the code compiles and links (CI's CUDA
  build on a machine without a GPU): C++ at ``-O0``, CUDA unoptimised to PTX alone (no ``ptxas``), for
  each architecture of ``TORCH_CUDA_ARCH_LIST`` (default 8.0). The result runs, slowly on the
  CPU; never benchmark it.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (ROOT / "minitorch_nn" / "__init__.py").read_text(), re.M).group(1)
# Where a failed build leaves its reason, for minitorch_nn.kernels to report.
BUILD_ERROR_FILE = ROOT / "minitorch_nn" / "_C.build-error.txt"

# Flags for the vector instruction sets ATen's Vectorized<T> knows, as torch's own build uses them.
CPU_CAPABILITY_FLAGS = {
    "avx512": ["-DCPU_CAPABILITY_AVX512", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
    "avx2": ["-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma", "-mf16c"],
    "default": [],
}


# The CPU conv ladder (csrc/cpu/conv/), rung by rung, then its op glue.
CONV_SOURCES = ["direct", "im2col", "gemm", "gemm_conv", "implicit", "depthwise", "conv"]


def cpu_capability() -> str:
    """The vector ISA for the CPU kernels: what torch's own kernels dispatch to on this machine.

    The extension is compiled where it is installed, so it may use that machine's ISA; matching
    torch's choice (which can be AVX2 on CPUs that have AVX-512, where 512-bit code clocks
    down or is double-pumped) makes the comparison with torch's kernels like for like.
    """
    override = os.environ.get("MINITORCH_CPU_CAPABILITY", "").lower()
    if override:
        if override not in CPU_CAPABILITY_FLAGS:
            sys.exit(f"MINITORCH_CPU_CAPABILITY must be one of {sorted(CPU_CAPABILITY_FLAGS)}, got {override!r}")
        return override
    import torch

    capability = torch.backends.cpu.get_cpu_capability().lower()
    return capability if capability in CPU_CAPABILITY_FLAGS else "default"


def extension_kwargs() -> dict:
    """ext_modules and cmdclass for setup(), or nothing when the extension is not to be built."""
    if os.environ.get("MINITORCH_NO_EXTENSION") == "1":
        return {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as e:  # torch is installed by pip after this script runs: no extension this time
        print(f"minitorch_nn: not building the extension ({e})", file=sys.stderr)
        return {}

    sources = [
        "csrc/ops.cpp",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp")),
        *(f"csrc/cpu/conv/{name}.cpp" for name in CONV_SOURCES),
    ]
    cuda_dir = ROOT / "csrc" / "cuda"
    cuda_sources = sorted(str(p.relative_to(ROOT)) for p in cuda_dir.iterdir() if p.suffix in (".cu", ".cpp"))
    use_cuda = torch.version.cuda is not None and CUDA_HOME is not None and bool(cuda_sources)
    capability = cpu_capability()
    cxx = [
        "-O3",  # the inner loops are templates that need inlining to vectorize
        # No -std flag: torch.utils.cpp_extension adds the standard its headers need (C++20;
        # torch 2.14's headers do not compile as C++17, and an explicit -std stops it adding one).
        "-Wno-unknown-pragmas",  # torch's vector headers carry `#pragma unroll`, which gcc does not know
        # ATen's parallel_for is an OpenMP loop in a header: without -fopenmp it runs on one thread.
        # Only compiled with it, not linked: the GOMP symbols resolve to the libgomp torch already
        # loaded, so there is one OpenMP runtime (and one thread pool) in the process.
        "-fopenmp",
        # No -ffast-math: it would let the compiler drop NaN and inf handling the tests check.
        *CPU_CAPABILITY_FLAGS[capability],
    ]
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    if os.environ.get("MINITORCH_DEBUG_INFO") != "1":
        cxx.append("-g0")  # comes after Python's -g on the command line, so it wins
    opt_level = os.environ.get("MINITORCH_OPT_LEVEL", "3")
    if opt_level not in ("0", "1", "2", "3"):
        sys.exit(f"MINITORCH_OPT_LEVEL must be 0, 1, 2 or 3, got {opt_level!r}")
    cxx[0] = f"-O{opt_level}"
    if os.environ.get("MINITORCH_BUILD_CHECK") == "1":
        cxx[0] = nvcc[0] = "-O0"
        nvcc += ["-Xcicc", "-O0"]  # and no optimisation in NVVM, the device front end (3.5x faster)
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0").replace(",", ";").replace(" ", ";")
        for arch in filter(None, archs.split(";")):
            cc = arch.replace("+PTX", "").replace(".", "")
            # An "arch" flag of our own stops torch adding its -gencode=...,code=sm_XX (SASS) flags.
            nvcc.append(f"-gencode=arch=compute_{cc},code=compute_{cc}")
    check = " (a compile-and-link check only: -O0, PTX)" if os.environ.get("MINITORCH_BUILD_CHECK") == "1" else ""
    print(f"minitorch_nn: building the {'CUDA' if use_cuda else 'CPU'} extension, CPU vector ISA {capability}{check}")
    if use_cuda:
        ext = CUDAExtension(
            "minitorch_nn._C",
            sources + cuda_sources,
            extra_compile_args={"cxx": [*cxx, "-DMTNN_WITH_CUDA"], "nvcc": nvcc},
        )
    else:
        ext = CppExtension("minitorch_nn._C", sources, extra_compile_args={"cxx": cxx})

    class OptionalBuildExtension(BuildExtension):
        """Builds the extension, but lets the install go on without it if the compiler fails."""

        def run(self):
            BUILD_ERROR_FILE.unlink(missing_ok=True)
            try:
                super().run()
            except Exception as e:  # the compiler's output is above; keep the last line of why
                reason = "".join(traceback.format_exception_only(type(e), e)).strip()
                BUILD_ERROR_FILE.write_text(reason + "\n")
                print(f"\nminitorch_nn: the extension failed to build; installing without it.\n{reason}\n")

    return {"ext_modules": [ext], "cmdclass": {"build_ext": OptionalBuildExtension.with_options(use_ninja=True)}}


setup(
    name="minitorch_nn",
    version=VERSION,
    description="torch.nn building blocks from scratch: readable references, gradchecked, benchmarked",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["minitorch_nn", "minitorch_nn.*"]),
    install_requires=["torch>=2.5", "numpy"],
    extras_require={
        "test": ["pytest>=8.0", "hypothesis>=6.100"],
        "lint": ["ruff==0.17.6"],
        # The digits training example (minitorch_nn.examples.digits): the dataset ships inside scikit-learn.
        "examples": ["scikit-learn>=1.3", "matplotlib>=3.7"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Education",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    **extension_kwargs(),
)
