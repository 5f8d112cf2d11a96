#!/usr/bin/env bash
# Runs a CUDA kernel of the project on a machine without a GPU, through the CUDA emulator, and
# optionally steps through it with gdb. Needs g++, Python 3 and the CUDA toolkit's headers (no GPU,
# no torch).
#
#   bash csrc/emu/run_example.sh              # LayerNorm+GELU forward (csrc/cuda/norm_act.cu), 8 rows of 100
#   bash csrc/emu/run_example.sh 37 1500      # M rows of N values (N > 1024: the block-per-row kernel)
#   bash csrc/emu/run_example.sh --gdb 8 100  # under gdb, stopped inside the kernel (see csrc/README.md)
#
# MTNN_EMU_MODE=threads runs each CUDA thread as an OS thread (gdb's `info threads` lists them);
# MTNN_EMU_ORDER=reverse|random changes the order in which the fibers run.
set -euo pipefail
cd "$(dirname "$0")/../.."
gdb=0
if [ "${1:-}" = --gdb ]; then
  gdb=1
  shift
fi
out=build/cuda_emu/example
mkdir -p "$out"
cuda_include=${CUDA_HOME:-/usr/local/cuda}/include
exe="$out/layer_norm_demo"
sources=(csrc/cuda/norm_act.cu csrc/cuda/norm_act.h csrc/activation.h csrc/emu/runtime.cpp csrc/emu/cu2cpp.py
  csrc/emu/include/cuda_runtime.h csrc/emu/include/cuda_emu/device.h csrc/emu/examples/layer_norm_demo.cpp)
stale=0
for f in "${sources[@]}"; do [ "$f" -nt "$exe" ] && stale=1; done
if [ ! -x "$exe" ] || [ "$stale" = 1 ]; then
  echo "building $exe (the kernels rewritten for the emulator, -O0 -g: about a minute)" >&2
  python3 csrc/emu/cu2cpp.py csrc/cuda/norm_act.cu "$out/norm_act.emu.cpp"
  g++ -std=c++20 -O0 -g -Wno-subobject-linkage -Icsrc/emu/include -I"$cuda_include" -Icsrc/cuda \
    "$out/norm_act.emu.cpp" csrc/emu/runtime.cpp csrc/emu/examples/layer_norm_demo.cpp -o "$exe"
fi
if [ "$gdb" = 1 ]; then
  # Stop in the warp-per-row forward kernel after a lane has summed its part of the row.
  line=$(grep -n "const acc_t mu = warp_allreduce_sum(sum)" csrc/cuda/norm_act.cu | cut -d: -f1)
  exec gdb -q -ex "break norm_act.cu:$line" -ex run -ex "print mtnn_emu::current->thread_idx" \
    -ex "print mtnn_emu::current->block_idx" -ex "print sum" --args "$exe" "$@"
fi
exec "$exe" "$@"
