#!/usr/bin/env bash
# Runs the checks of rung 3 of the CUDA conv ladder (csrc/cuda/conv_mma.cu, csrc/cuda/mma.cuh) on a
# machine without a GPU, through the CUDA emulator: csrc/emu/examples/conv_mma_demo.cpp says what
# they cover. Needs g++, Python 3 and the CUDA toolkit's headers (no GPU, no torch). Exits non-zero
# on a failure.
#
#   bash csrc/emu/run_conv_mma_demo.sh
#
# Built with -DMTNN_MAX_GRID=2, so a launch of more than two tiles has its blocks loop over tiles
# (the kernel's grid-stride loop and the barrier between tiles are exercised). MTNN_EMU_ORDER=
# reverse|random changes the order in which the emulator runs the fibers (CUDA threads).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build/cuda_emu/conv_mma
mkdir -p "$out"
cuda_include=${CUDA_HOME:-/usr/local/cuda}/include
exe="$out/conv_mma_demo"
sources=(csrc/cuda/conv_mma.cu csrc/cuda/mma.cuh csrc/cuda/conv.h csrc/cuda/norm_act.h csrc/conv_shape.h
  csrc/activation.h csrc/emu/runtime.cpp csrc/emu/cu2cpp.py csrc/emu/include/cuda_runtime.h
  csrc/emu/include/cuda_emu/device.h csrc/emu/examples/conv_mma_demo.cpp "$0")
stale=0
for f in "${sources[@]}"; do [ "$f" -nt "$exe" ] && stale=1; done
if [ ! -x "$exe" ] || [ "$stale" = 1 ]; then
  echo "building $exe (kernels and demo rewritten for the emulator, -O2: a minute or two)" >&2
  python3 csrc/emu/cu2cpp.py csrc/cuda/conv_mma.cu "$out/conv_mma.emu.cpp"
  python3 csrc/emu/cu2cpp.py csrc/emu/examples/conv_mma_demo.cpp "$out/conv_mma_demo.emu.cpp"
  g++ -std=c++20 -O2 -g -DMTNN_MAX_GRID=2 -Wno-subobject-linkage -Icsrc/emu/include \
    -I"$cuda_include" -Icsrc/cuda "$out/conv_mma.emu.cpp" "$out/conv_mma_demo.emu.cpp" csrc/emu/runtime.cpp \
    -o "$exe"
fi
exec "$exe" "$@"
