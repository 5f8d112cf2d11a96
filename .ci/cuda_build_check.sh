#!/usr/bin/env bash
# Checks that the CUDA code builds, on a machine with nvcc and no GPU. Two steps:
#
#   1. nvcc: every csrc/cuda/*.cu on its own with `nvcc -c` for sm_80 and sm_90, warnings as
#      errors (nvcc's and the host compiler's). Needs only nvcc: the .cu files include no torch.
#      The same compile reports each kernel's registers, stack and spills (`-Xptxas -v`):
#      csrc/cuda/ptxas_report.py prints the spilling ones and fails on a spill in any float32,
#      bfloat16 or float16 instantiation (float64, there for gradcheck, is reported only).
#   2. torch: the whole extension (CPU + CUDA) built against a CUDA build of torch, in a copy of
#      the repository (the working tree's CPU-built _C.so is left alone), then imported: the ops
#      and their CUDA kernels are registered, and the CPU kernels still work in that build.
#      Built with MINITORCH_BUILD_CHECK=1 (setup.py): C++ at -O0 and CUDA to PTX only, since
#      step 1 has already optimised every kernel through ptxas and this step proves only that the
#      glue compiles against torch's CUDA headers and everything links (~4x faster).
#
#   bash .ci/cuda_build_check.sh            # both steps
#   bash .ci/cuda_build_check.sh nvcc       # step 1 only
#   bash .ci/cuda_build_check.sh torch      # step 2 only
#
# Environment:
#   CUDA_HOME                  the toolkit (default /usr/local/cuda)
#   MINITORCH_CUDA_VENV        venv holding the CUDA torch, created if missing
#                              (default ${TMPDIR:-/tmp}/minitorch-cuda-venv); reused across runs
#   MINITORCH_CUDA_TORCH       the torch to install there (default torch==2.14.1)
#   MINITORCH_CUDA_ARCHS       the GPU architectures of step 1 (default "8.0;9.0")
#   MINITORCH_CUDA_TORCH_ARCHS those of step 2, as PTX (default "8.0": step 1 has already compiled
#                              every kernel for each architecture with warnings as errors; step 2
#                              proves the glue compiles and everything links, which one
#                              architecture shows)
#   MAX_JOBS                   parallel compile jobs (default: the number of CPUs)
#   MINITORCH_NVCC_THREADS     nvcc --threads in step 1 (default 0: a thread per architecture;
#                              1 when CI runs this script beside its tests)
#
# No GPU is needed, and none is used: this proves the code compiles and links, not that it is right.
# tests/test_norm_act_cuda.py and benchmarks/cuda_sanitize.sh are for a machine with a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
what=${1:-all}
case "$what" in all | nvcc | torch) ;; *) echo "usage: $0 [all|nvcc|torch]" >&2; exit 2 ;; esac

export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC="$CUDA_HOME/bin/nvcc"
ARCHS=${MINITORCH_CUDA_ARCHS:-8.0;9.0}
TORCH_ARCHS=${MINITORCH_CUDA_TORCH_ARCHS:-8.0}
VENV=${MINITORCH_CUDA_VENV:-${TMPDIR:-/tmp}/minitorch-cuda-venv}
TORCH_SPEC=${MINITORCH_CUDA_TORCH:-torch==2.14.1}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
NVCC_THREADS=${MINITORCH_NVCC_THREADS:-0}
work=$(mktemp -d "${TMPDIR:-/tmp}/minitorch-cuda-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS
timings=()
step() { printf '\n\033[1m=== %s (%ds)\033[0m\n' "$*" "$((SECONDS - started))"; }
timed() {  # timed NAME CMD...: runs CMD, records how long it took
  local name=$1 t0=$SECONDS
  shift
  "$@"
  timings+=("$(printf '%-40s %4ds' "$name" "$((SECONDS - t0))")")
}

[ -x "$NVCC" ] || { echo "no nvcc at $NVCC (set CUDA_HOME)" >&2; exit 1; }
gencode=()
for a in ${ARCHS//;/ }; do gencode+=(-gencode "arch=compute_${a/./},code=sm_${a/./}"); done

nvcc_check() {
  shopt -s nullglob
  local files=(csrc/cuda/*.cu)
  [ ${#files[@]} -gt 0 ] || { echo "no csrc/cuda/*.cu to check" >&2; return 1; }
  local f
  for f in "${files[@]}"; do
    echo "nvcc -c $f (${ARCHS})"
    # --threads 0 (the default): one nvcc thread per architecture, in parallel. -Xcompiler flags are the host
    # compiler's (g++) for the host half of the file.
    local log="$work/$(basename "$f" .cu).ptxas.log"
    "$NVCC" -c "$f" -o "$work/$(basename "$f" .cu).o" -std=c++20 -O3 --expt-relaxed-constexpr \
      "${gencode[@]}" --threads "$NVCC_THREADS" -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -Xptxas -v >"$log" 2>&1 ||
      { grep -v '^ptxas info\|bytes stack frame' "$log" >&2; return 1; }
    grep -v '^ptxas info\|bytes stack frame' "$log" >&2 || true
    python3 csrc/cuda/ptxas_report.py "$log"
  done
}

cuda_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    python3 -m venv "$VENV"
  fi
  local want=${TORCH_SPEC#torch==}
  if ! "$VENV/bin/python" - "$want" <<'PY' 2>/dev/null; then
import sys, torch
sys.exit(not (torch.__version__.split("+")[0] == sys.argv[1] and torch.version.cuda))
PY
    echo "installing $TORCH_SPEC (a CUDA build) into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC" numpy
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check setuptools wheel ninja
}

torch_build() {
  local py="$VENV/bin/python" site
  site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # torch's CUDA headers include cuBLAS, cuSPARSE, cuSOLVER, cuDNN, ... headers, which a
  # compile-only toolkit may lack; the nvidia-* wheels torch depends on carry them. CPATH is
  # searched after every -I, so the toolkit's own headers still win where both have one.
  local inc="" d
  for d in "$site"/nvidia/*/include "$site"/nvidia/*/*/include; do [ -d "$d" ] && inc+="${inc:+:}$d"; done
  export CPATH="$inc${CPATH:+:$CPATH}"
  # A copy of the repository as git sees it (tracked and untracked-but-not-ignored files):
  # no stale build/ or _C.so from the working tree, and the working tree's CPU build untouched.
  mkdir "$work/repo"
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$work/repo"
  (
    cd "$work/repo"
    rm -f minitorch_nn/_C*.so minitorch_nn/_C.build-error.txt
    MINITORCH_BUILD_CHECK=1 TORCH_CUDA_ARCH_LIST="$TORCH_ARCHS" \
      "$py" setup.py build_ext --inplace
    # setup.py lets a failed build pass (so the package still installs); CI must not.
    if [ -e minitorch_nn/_C.build-error.txt ]; then
      echo "the extension failed to build: $(cat minitorch_nn/_C.build-error.txt)" >&2
      exit 1
    fi
  )
}

torch_import() {
  (
    cd "$work/repo"
    "$VENV/bin/python" - <<'PY'
import torch

import minitorch_nn._C  # noqa: F401  (registers the ops)
import minitorch_nn.kernels as K

assert torch.version.cuda, "torch is not a CUDA build"
assert K.AVAILABLE, K.UNAVAILABLE_REASON
ops = ("layer_norm_act", "layer_norm_act_backward", "layer_norm_act_ladder", "layer_norm_act_ladder_backward",
       "batch_norm_act", "batch_norm_act_backward", "conv2d", "conv2d_backward")
for op in ops:
    assert hasattr(torch.ops.minitorch_nn, op), op
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"minitorch_nn::{op}", key), f"{op}: no {key} kernel"

# The CPU kernels in the CUDA build: values and gradients against torch.
F = torch.nn.functional
x = torch.randn(5, 33, dtype=torch.float64, requires_grad=True)
w = torch.randn(33, dtype=torch.float64, requires_grad=True)
y = K.layer_norm_act(x, 33, w, None, activation="gelu")
torch.testing.assert_close(y, F.gelu(F.layer_norm(x, (33,), w)))
assert torch.autograd.gradcheck(lambda x, w: K.layer_norm_act(x, 33, w, None, activation="silu"), (x, w))
xb = torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last)
rm, rv = torch.zeros(3), torch.ones(3)
yb = K.batch_norm_act(xb, rm, rv, training=True, activation="relu")
torch.testing.assert_close(yb, F.relu(F.batch_norm(xb, None, None, training=True)))
torch.testing.assert_close(rm, 0.1 * xb.mean((0, 2, 3)))
print(f"ok: torch {torch.__version__} (CUDA {torch.version.cuda}, GPU present: {torch.cuda.is_available()});",
      "CPU and CUDA kernels registered for", ", ".join(ops), "; CPU smoke test passed")
PY
  )
}

if [ "$what" != torch ]; then
  step "1. nvcc -c csrc/cuda/*.cu (${ARCHS}), warnings as errors"
  timed "nvcc -c (no torch)" nvcc_check
fi
if [ "$what" != nvcc ]; then
  step "2a. venv with a CUDA torch ($VENV)"
  timed "venv + $TORCH_SPEC" cuda_venv
  step "2b. build the CUDA extension (TORCH_CUDA_ARCH_LIST=$TORCH_ARCHS, MAX_JOBS=$MAX_JOBS)"
  timed "setup.py build_ext (CUDAExtension)" torch_build
  step "2c. import it"
  timed "import + CPU smoke test" torch_import
fi
step "CUDA build check passed"
printf '%s\n' "${timings[@]}"
