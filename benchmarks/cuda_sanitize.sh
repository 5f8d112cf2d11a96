#!/usr/bin/env bash
# Runs the CUDA tests (tests/test_norm_act_cuda.py, the fused normalization + activation kernels;
# tests/test_conv_cuda.py, the conv2d ladder) under compute-sanitizer:
# out-of-bounds and misaligned accesses (memcheck), shared-memory races (racecheck), barrier misuse
# (synccheck). Needs a GPU and the extension built with CUDA (pip install --no-build-isolation -e .
# with a CUDA torch). Exits non-zero on the first tool that reports an error. Without a GPU,
# .ci/cuda_emu.sh runs the same tests on the CUDA emulator under AddressSanitizer (memcheck's
# out-of-bounds, in global and shared memory) and ThreadSanitizer (racecheck's shared-memory races);
# the emulator itself reports what synccheck would (a barrier not every thread reaches).
#
#   bash benchmarks/cuda_sanitize.sh                     # memcheck, racecheck, synccheck
#   bash benchmarks/cuda_sanitize.sh memcheck initcheck  # the tools named
#
# Environment: PYTHON (default .venv/bin/python), COMPUTE_SANITIZER (default: on PATH, else
# $CUDA_HOME/bin/compute-sanitizer), SANITIZE_TESTS (a pytest -k expression to run instead).
#
# PYTORCH_NO_CUDA_MEMORY_CACHING=1 gives every tensor its own cudaMalloc, so an access past a
# tensor's end lands outside any allocation and memcheck sees it (with torch's caching allocator it
# would land in a neighbouring block of the same pool, unseen). That mode cannot capture CUDA
# graphs, and the sanitizer slows kernels 10-100x, so the graph test, torch.compile and the largest
# shapes are left out; tests/test_norm_act_cuda.py runs them without the sanitizer.
# initcheck is not in the default set: torch itself reads uninitialized memory in places (e.g.
# at::empty outputs of ops it later overwrites), so its reports need reading by hand.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-.venv/bin/python}
CS=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")}
SELECT=${SANITIZE_TESTS:-"not more_rows and not large_reductions and not compile and not graph and not current_stream"}
TOOLS=("$@")
[ ${#TOOLS[@]} -gt 0 ] || TOOLS=(memcheck racecheck synccheck)

[ -x "$CS" ] || { echo "compute-sanitizer not found (set COMPUTE_SANITIZER)" >&2; exit 1; }
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: nothing to sanitize")'

for tool in "${TOOLS[@]}"; do
  extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check full)
  [ "$tool" = racecheck ] && extra=(--racecheck-report hazard)
  printf '\n\033[1m=== compute-sanitizer --tool %s\033[0m\n' "$tool"
  start=$SECONDS
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$CS" --tool "$tool" "${extra[@]}" --error-exitcode 1 --target-processes all \
    "$PY" -m pytest -q -x -p no:cacheprovider tests/test_norm_act_cuda.py -k "$SELECT"
  # The conv ladder: every test but the Hypothesis properties (their many small launches are slow
  # under the sanitizer; the odd shapes cover every rung's tile edges).
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$CS" --tool "$tool" "${extra[@]}" --error-exitcode 1 --target-processes all \
    "$PY" -m pytest -q -x -p no:cacheprovider tests/test_conv_cuda.py -k "not every_rung and not tensor_core_rung_runs"
  echo "$tool: clean ($((SECONDS - start))s)"
done
