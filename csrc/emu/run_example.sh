#!/usr/bin/env bash
# Runs a CUDA kernel of the project on a machine without a GPU, through the CUDA emulator, and
# optionally steps through it with gdb. Needs g++, Python 3 and the CUDA toolkit's headers (no GPU,
# no torch). Two demos, each checked against the definition written as loops:
#
#   bash csrc/emu/run_example.sh              # LayerNorm+GELU forward (csrc/cuda/norm_act.cu), 8 rows of 100
#   bash csrc/emu/run_example.sh 37 1500      # M rows of N values (N > 1024: the block-per-row kernel)
#   bash csrc/emu/run_example.sh conv         # conv2d rungs 1 and 2 (conv_direct.cu, conv_implicit.cu),
#                                             # forward + bias + ReLU and both gradients
#   bash csrc/emu/run_example.sh conv 2 8 12 12 16 3 2 1   # N C H W O k stride padding
#   bash csrc/emu/run_example.sh --gdb 8 100  # under gdb, stopped inside the kernel (see csrc/README.md)
#   bash csrc/emu/run_example.sh --gdb conv   # under gdb, stopped in rung 2's multiply of a tile
#
# MTNN_EMU_MODE=threads runs each CUDA thread as an OS thread (gdb's `info threads` lists them);
# MTNN_EMU_ORDER=reverse|random changes the order in which the fibers run; MTNN_EMU_BLOCKS=k runs k
# blocks at once.
set -euo pipefail
cd "$(dirname "$0")/../.."
gdb=0
if [ "${1:-}" = --gdb ]; then
  gdb=1
  shift
fi
demo=layer_norm
if [ "${1:-}" = conv ]; then
  demo=conv
  shift
fi
out=build/cuda_emu/example
mkdir -p "$out"
cuda_include=${CUDA_HOME:-/usr/local/cuda}/include
if [ "$demo" = conv ]; then
  kernels=(csrc/cuda/conv_direct.cu csrc/cuda/conv_implicit.cu)
  headers=(csrc/cuda/conv.h csrc/cuda/common.cuh csrc/conv_shape.h)
else
  kernels=(csrc/cuda/norm_act.cu)
  headers=(csrc/cuda/norm_act.h csrc/cuda/common.cuh)
fi
exe="$out/${demo}_demo"
sources=("${kernels[@]}" "${headers[@]}" csrc/activation.h csrc/emu/runtime.cpp csrc/emu/cu2cpp.py
  csrc/emu/include/cuda_runtime.h csrc/emu/include/cuda_emu/device.h "csrc/emu/examples/${demo}_demo.cpp")
stale=0
for f in "${sources[@]}"; do [ "$f" -nt "$exe" ] && stale=1; done
if [ ! -x "$exe" ] || [ "$stale" = 1 ]; then
  echo "building $exe (the kernels rewritten for the emulator, -O0 -g: about a minute)" >&2
  generated=()
  for cu in "${kernels[@]}"; do
    python3 csrc/emu/cu2cpp.py "$cu" "$out/$(basename "$cu" .cu).emu.cpp"
    generated+=("$out/$(basename "$cu" .cu).emu.cpp")
  done
  g++ -std=c++20 -O0 -g -Wno-subobject-linkage -Icsrc/emu/include -I"$cuda_include" -Icsrc/cuda \
    "${generated[@]}" csrc/emu/runtime.cpp "csrc/emu/examples/${demo}_demo.cpp" -o "$exe"
fi
if [ "$gdb" = 1 ]; then
  if [ "$demo" = conv ]; then
    # Stop in rung 2's inner product, once a thread has its slices of the A and B tiles.
    line=$(grep -n "acc\[i\]\[j\] += av\[i\] \* bv\[j\]" csrc/cuda/conv_implicit.cu | cut -d: -f1)
    exec gdb -q -ex "break conv_implicit.cu:$line" -ex run -ex "print mtnn_emu::current->thread_idx" \
      -ex "print mtnn_emu::current->block_idx" -ex "print av" -ex "print bv" --args "$exe" "$@"
  fi
  # Stop in the warp-per-row forward kernel after a lane has summed its part of the row.
  line=$(grep -n "const acc_t mu = warp_allreduce_sum(sum)" csrc/cuda/norm_act.cu | cut -d: -f1)
  exec gdb -q -ex "break norm_act.cu:$line" -ex run -ex "print mtnn_emu::current->thread_idx" \
    -ex "print mtnn_emu::current->block_idx" -ex "print sum" --args "$exe" "$@"
fi
exec "$exe" "$@"
