#!/usr/bin/env bash
# The CUDA kernels, run on the CPU by the CUDA emulator (csrc/emu/), under the tests of
# tests/test_norm_act_cuda.py and tests/test_conv_cuda.py: the same properties, oracles and
# tolerances as on a GPU, with outputs and workspaces poisoned (NaN / 0xFF) before each call.
# Builds are cached under build/cuda_emu/.
#
#   bash .ci/cuda_emu.sh          # CI's profile, sized for a 2-core machine (each step timed)
#   bash .ci/cuda_emu.sh full     # every test in every build, the largest shapes included (slow)
#
# Steps:
#   1. plain build; the suite (float32, float64, bfloat16, float16), fibers in the default order
#   2. fibers resuming in a random order: the LayerNorm and BatchNorm properties and bitwise repeatability;
#      then three blocks in flight (MTNN_EMU_BLOCKS=3), fibers in a random order across blocks:
#      the float32 norm properties, the conv ladder's odd shapes and bitwise repeatability
#   3. every grid capped at 3 blocks per dimension (-DMTNN_MAX_GRID=3): each grid-stride loop
#      iterates on small inputs
#   4. AddressSanitizer + UBSan build (out-of-bounds in global and shared memory, undefined behaviour)
#   5. ThreadSanitizer build, one OS thread per CUDA thread (shared-memory races, missing barriers)
# Builds 3-5 compile in the background, one after the other (ASan, TSan, capped: the longest build
# first), while the tests run; steps run in the order 1, 2, 4, 5, 3, so the tests rarely wait.
# The emulator's own self-test (planted bugs, each caught in its mode) is tests/test_cuda_emu.py,
# part of the main test suite.
#
# Environment: PYTHON (default .venv/bin/python), MAX_JOBS (compile jobs; default: the CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
profile=${1:-quick}
case "$profile" in quick | full) ;; *) echo "usage: $0 [quick|full]" >&2; exit 2 ;; esac
started=$SECONDS
timings=()
step() { printf '\n\033[1m=== %s (%ds)\033[0m\n' "$*" "$((SECONDS - started))"; }
timed() {  # timed NAME CMD...: runs CMD, records how long it took
  local name=$1 t0=$SECONDS
  shift
  "$@"
  timings+=("$(printf '%-58s %4ds' "$name" "$((SECONDS - t0))")")
}

# tests VARIANT [pytest args...]: tests/test_norm_act_cuda.py on that build (the sanitizer's
# runtime preloaded for asan and tsan).
tests() {
  local variant=$1
  shift
  env $("$PY" csrc/emu/build.py --env "$variant") MINITORCH_CUDA_TEST_DEVICE=emu MINITORCH_CUDA_EMU_VARIANT="$variant" \
    ${full:+MINITORCH_CUDA_EMU_FULL=1} "$PY" -m pytest -q -p no:cacheprovider tests/test_norm_act_cuda.py "$@"
}
# conv_tests VARIANT [pytest args...]: tests/test_conv_cuda.py (the conv ladder) on that build.
conv_tests() {
  local variant=$1
  shift
  env $("$PY" csrc/emu/build.py --env "$variant") MINITORCH_CUDA_TEST_DEVICE=emu MINITORCH_CUDA_EMU_VARIANT="$variant" \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_conv_cuda.py "$@"
}
build() { "$PY" csrc/emu/build.py "$1" >/dev/null; }

full=""
# The subsets of the quick profile (about 6 minutes on 2 cores). torch.compile (~45 s here) traces
# the ops and runs no new kernel code: it is left to the full profile and the GPU. Bitwise
# repeatability runs with the fibers in a random order (float32), where it means the most. The
# LayerNorm+act ladder's property: every rung on the plain build, rungs 1-3 with capped grids (~9 s),
# rung 3 (128-bit accesses, and rung 2 where rows are misaligned) under ASan+UBSan (~8 s). The
# non-default CUDA tunings (csrc/cuda/tuning.h): all with capped grids (~27 s), the row-cache,
# per-row-worker and split-slice ones under ASan+UBSan (~31 s; never the bad-name tests there: a
# C++ exception aborts that build).
quick_plain=(-k "not compile and not repeatable")
quick_order=(-k "(every_row_length and float32) or (every_layout and float32) or (repeatable and float32)")
quick_capped=(-k "(every_row_length and not bfloat16 and not float16) or (every_layout and float32) or empty or misaligned or (every_ladder_rung and not 4) or tuning")
quick_asan=(-k "((every_row_length and ([3-torch or [257-torch or [2041-torch)) or every_layout) and not float16 or (every_ladder_rung and 3) or (non_default and (cache or per))")
quick_tsan=(-k "(every_row_length and 2041-torch.float32) or (every_layout and float32-train)")
quick_blocks=(-k "(every_row_length and float32) or (every_layout and float32)")
# The conv ladder: every test on the plain build; bitwise repeatability and the odd shapes with
# the fibers in a random order and several blocks in flight; the grid-stride loops and the split
# weight gradient with capped grids; under ASan+UBSan, rung 2's odd shapes (every tile edge), the
# tensor-core rung and the split weight gradient; under ThreadSanitizer (one OS thread per CUDA
# thread: slow), one odd shape of rung 2, whose tiles go through shared memory between barriers.
conv_order=(-k "repeatable or odd_shapes")
conv_capped=(-k "odd_shapes or long_weight or tuning")
conv_asan=(-k "(odd_shapes and implicit) or tensor_core or long_weight or (non_default and slices)")
conv_tsan=(-k "odd_shapes and implicit and 13-6-5")
if [ "$profile" = full ]; then
  full=1
  quick_plain=() quick_order=() quick_capped=() quick_asan=() quick_tsan=() quick_blocks=()
  conv_order=() conv_capped=() conv_asan=() conv_tsan=()
fi

step "1a. build: plain"
timed "build plain" build plain

# The other builds compile in the background (one compile job) while the tests run.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
(
  for v in asan tsan capped; do  # the slowest first: the sanitizer steps run before the capped one
    t0=$SECONDS
    if MAX_JOBS=1 build "$v" >"$logs/$v.log" 2>&1; then echo $((SECONDS - t0)) >"$logs/$v.done"; else touch "$logs/$v.failed"; exit 1; fi
  done
) &
background=$!
wait_for() {  # wait_for VARIANT: until its background build is done
  local t0=$SECONDS
  until [ -e "$logs/$1.done" ]; do
    if [ -e "$logs/$1.failed" ] || ! kill -0 "$background" 2>/dev/null; then
      sleep 1  # the builder may just have written $1.done and exited
      [ -e "$logs/$1.done" ] && break
      tail -30 "$logs/$1.log" >&2
      echo "the $1 build failed" >&2
      exit 1
    fi
    sleep 2
  done
  timings+=("$(printf '%-58s %4ds (waited %ds)' "build $1 (in the background)" "$(cat "$logs/$1.done")" "$((SECONDS - t0))")")
}

step "1b. tests: plain build, fibers"
timed "tests plain ${quick_plain[*]}" tests plain "${quick_plain[@]}"
timed "conv tests plain" conv_tests plain

step "2. tests: fibers in a random order"
export MTNN_EMU_ORDER=random MTNN_EMU_SEED=${MTNN_EMU_SEED:-$RANDOM}
echo "MTNN_EMU_SEED=$MTNN_EMU_SEED (to repeat this order)"
timed "tests plain, random order ${quick_order[*]}" tests plain "${quick_order[@]}"
export MTNN_EMU_BLOCKS=3
timed "tests plain, random order, 3 blocks in flight ${quick_blocks[*]}" tests plain "${quick_blocks[@]}"
timed "conv tests plain, random order, 3 blocks in flight ${conv_order[*]}" conv_tests plain "${conv_order[@]}"
unset MTNN_EMU_ORDER MTNN_EMU_SEED MTNN_EMU_BLOCKS

step "4. tests: AddressSanitizer + UBSan"
wait_for asan
timed "tests asan ${quick_asan[*]}" tests asan "${quick_asan[@]}"
timed "conv tests asan ${conv_asan[*]}" conv_tests asan "${conv_asan[@]}"

step "5. tests: ThreadSanitizer, one OS thread per CUDA thread"
wait_for tsan
timed "tests tsan ${quick_tsan[*]}" tests tsan "${quick_tsan[@]}"
timed "conv tests tsan ${conv_tsan[*]}" conv_tests tsan "${conv_tsan[@]}"

step "3. tests: grids capped at 3 blocks a dimension"
wait_for capped
timed "tests capped ${quick_capped[*]}" tests capped "${quick_capped[@]}"
timed "conv tests capped ${conv_capped[*]}" conv_tests capped "${conv_capped[@]}"
wait "$background"

step "CUDA emulator runs passed"
printf '%s\n' "${timings[@]}"
