#!/usr/bin/env bash
# The C++ extension built with AddressSanitizer + UndefinedBehaviorSanitizer, and the compiled-op tests
# (tests/test_norm_act.py, tests/test_conv_kernels.py, tests/test_gemm.py) run against that build.
# Fails on any sanitizer report (out-of-bounds, use-after-free, signed overflow, misaligned load, ...)
# and on any test failure; each step is timed.
#
#   bash .ci/sanitize.sh           # the quick profile: a subset sized for a 2-core machine
#   bash .ci/sanitize.sh --ci      # CI's profile (.ci/run): fewer Hypothesis examples, plus the
#                                  # fuzzer's compiled-op families
#   bash .ci/sanitize.sh --build-only   # only the build (CI builds it beside its other tests)
#   bash .ci/sanitize.sh --full    # every test in the three files
#   bash .ci/sanitize.sh --clean   # drop the kept build first (a cold build)
#   bash .ci/sanitize.sh [--full] -- PYTEST_ARGS...   # e.g. -- -x -k layer_norm (a -k here replaces CI's)
#
# How:
#   * The tracked files are copied (as in .ci/run) to a scratch tree, $SANITIZE_DIR (default
#     build/sanitize/, ignored by git), and `setup.py build_ext --inplace` runs there with the sanitizer
#     flags in CFLAGS/CXXFLAGS (torch's BuildExtension puts the compiler's flags, CFLAGS included, before
#     setup.py's own on every compile line) and LDFLAGS (on the link line). The copy keeps the files'
#     modification times, and the build directory under it is kept between runs, so a rerun recompiles
#     only what changed (by modification time: a file put back with an older time than its object, e.g.
#     by `cp -p`, is not recompiled; --clean then). The build is the slow step: 27.5 min from cold on 2
#     busy shared cores (MAX_JOBS=1), ~70 s after a change to a small .cpp.
#   * Python and torch are not instrumented: libasan is preloaded (with libstdc++, see below); libubsan
#     comes in as a dependency of the extension. detect_leaks=0 (Python and torch leak by design at exit). A report aborts the
#     process (pytest's faulthandler then names the test). pytest runs with --capture=sys: with its
#     default fd capture, a report written to fd 2 by a process that then aborts is never printed.
#     ASan also writes its reports to $SANITIZE_DIR/logs/asan.PID (subprocesses included), printed at
#     the end; UBSan (gcc 12) ignores log_path, so the run's output is also searched for its
#     "runtime error:". Any report fails the run, whatever pytest's exit status.
#   * The tests run from the scratch tree and import its minitorch_nn, not the editable install's (the
#     editable finder is dropped from sys.meta_path first, as in .ci/run); a check says which _C loaded.
#
# Environment: PYTHON (default .venv/bin/python), MAX_JOBS (compile jobs; default: the CPUs),
# SANITIZE_DIR (the scratch tree).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PY=${PYTHON:-$repo/.venv/bin/python}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
full=""
clean=""
ci=""
build_only=""
pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --full) full=1 ;;
    --ci) ci=1 ;;
    --build-only) build_only=1 ;;
    --clean) clean=1 ;;
    --) shift; pytest_args=("$@"); break ;;
    *) echo "usage: $0 [--full | --ci] [--build-only] [--clean] [-- PYTEST_ARGS...]" >&2; exit 2 ;;
  esac
  shift
done

started=$SECONDS
timings=()
step() { printf '\n\033[1m=== %s (%ds)\033[0m\n' "$*" "$((SECONDS - started))"; }
timed() {  # timed NAME CMD...: runs CMD, records how long it took
  local name=$1 t0=$SECONDS rc=0
  shift
  "$@" || rc=$?
  timings+=("$(printf '%-60s %4ds%s' "$name" "$((SECONDS - t0))" "$([ "$rc" = 0 ] || echo " (exit status $rc)")")")
  return "$rc"
}

TESTS=(tests/test_norm_act.py tests/test_conv_kernels.py tests/test_gemm.py)
# CI's subset: all but the torch.compile tests, which only trace the ops (no new kernel code runs) and
# spend their time in inductor. Measured on the 2-core machine (busy): 262 passed, 74 skipped (CUDA),
# 3 deselected in 5m23s; the 3 deselected add 18 s with a warm inductor cache (more from cold).
QUICK=(-k "not torch_compile")
[ -n "$full" ] && QUICK=()
if [ -n "$ci" ]; then
  # CI's: the same tests at the "sanitize" Hypothesis profile (tests/conftest.py: a few examples each;
  # a sanitizer needs the shapes that reach every edge, which the tests' explicit examples and
  # parametrisations carry, more than many draws), without the digits training run, and the
  # differential fuzzer's families that call compiled ops, at their quick profile.
  TESTS+=(tests/test_fuzz.py)
  QUICK=(--hypothesis-profile=sanitize -k "not torch_compile and not digits and (not test_fuzz or kernel)")
fi

SANITIZE=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
dir=${SANITIZE_DIR:-$repo/build/sanitize}
[ -n "$clean" ] && rm -rf "$dir/build"  # the copy below replaces the rest
dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
logs=$dir/logs

step "1. copy the tracked files to $dir"
copy() {
  # Everything but the build directory (objects kept for an incremental rebuild) goes: no stale or
  # untracked file survives from an earlier run.
  find "$dir" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
  git ls-files -z | xargs -0 cp -p --parents -t "$dir"
  mkdir -p "$logs"
}
timed "copy" copy

step "2. build the extension with ${SANITIZE[*]}"
build() {
  # --force: setuptools would skip the build when no .cpp is newer than the library, missing an edited
  # header; ninja (depfiles) still recompiles only what is out of date. MINITORCH_CPU_CAPABILITY, if set,
  # passes through.
  # -O0 (MINITORCH_OPT_LEVEL, setup.py): every load and store stays in the code to be checked, and the
  # build costs a quarter of -O1's CPU time (measured: 18 s against 71 s for depthwise.cpp), which is what
  # lets CI afford it; the kernels run slower, on the tests' small shapes. -g1: line tables for the
  # reports (MINITORCH_DEBUG_INFO=1 keeps setup.py from adding -g0 after it).
  if ! (cd "$dir" && MINITORCH_OPT_LEVEL=0 MINITORCH_DEBUG_INFO=1 CFLAGS="-g1 ${SANITIZE[*]}" \
    CXXFLAGS="-g1 ${SANITIZE[*]}" LDFLAGS="${SANITIZE[*]}" \
    "$PY" setup.py build_ext --inplace --force >build.log 2>&1); then
    tail -40 "$dir/build.log" >&2
    echo "setup.py failed" >&2
    return 1
  fi
  if [ -e "$dir/minitorch_nn/_C.build-error.txt" ]; then  # setup.py carries on without the extension
    grep -E 'error|Error' "$dir/build.log" | head -40 >&2
    echo "the sanitizer build failed: $(cat "$dir/minitorch_nn/_C.build-error.txt")" >&2
    return 1
  fi
  local so libs
  so=$(ls "$dir"/minitorch_nn/_C*.so)
  libs=$(ldd "$so")
  # Both runtimes linked in, or the flags did not reach the link line.
  [[ $libs == *libasan* && $libs == *libubsan* ]] ||
    { echo "$so is not linked against libasan and libubsan" >&2; echo "$libs" >&2; return 1; }
}
timed "build (MAX_JOBS=$MAX_JOBS)" build
if [ -n "$build_only" ]; then
  step "sanitizer build done"
  printf '%s\n' "${timings[@]}"
  exit 0
fi

libasan=$(gcc -print-file-name=libasan.so)
[ -e "$libasan" ] || { echo "gcc has no libasan.so ($libasan)" >&2; exit 1; }
# libstdc++ preloaded too: python does not link it, so when libasan starts it finds no __cxa_throw to
# forward to, and the first C++ exception (any TORCH_CHECK failing in our ops) dies with
# "AddressSanitizer: CHECK failed: asan_interceptors.cpp:320 ((__interception::real___cxa_throw)) != (0)".
libstdcxx=$(g++ -print-file-name=libstdc++.so.6)
# abort_on_error: a report aborts, so pytest's faulthandler prints which test was running.
# ASan's reports also go to $logs/asan.PID (see above).
sanitized() {  # sanitized CMD...: runs CMD in the scratch tree with the sanitizer runtime
  (cd "$dir" && exec env LD_PRELOAD="$libasan $libstdcxx" \
    ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:log_path=$logs/asan" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1" \
    MINITORCH_REQUIRE_EXTENSION=1 "$@")
}
# python -c RUNNER ARGS...: runs pytest ARGS in the scratch tree on its own minitorch_nn._C.
RUNNER='
import os, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
import minitorch_nn._C, minitorch_nn.kernels as K
so = os.path.realpath(minitorch_nn._C.__file__)
assert so.startswith(os.path.realpath(os.getcwd()) + os.sep), f"loaded {so}, not the sanitizer build"
assert K.AVAILABLE, K.UNAVAILABLE_REASON
print(f"minitorch_nn._C: {so}", flush=True)
if len(sys.argv) > 1:
    import pytest
    sys.exit(pytest.main(sys.argv[1:]))
'
reports() {  # prints the sanitizer reports written so far; fails if there is any
  local found=0 f
  if [ -e "$logs/tests.out" ] && grep -q -E 'runtime error:|ERROR: AddressSanitizer' "$logs/tests.out"; then
    found=1
    printf '\n\033[1m--- sanitizer report in the output (above)\033[0m\n' >&2
    grep -E 'runtime error:|ERROR: AddressSanitizer' "$logs/tests.out" >&2
  fi
  for f in "$logs"/asan.*; do
    [ -e "$f" ] || continue
    found=1
    printf '\n\033[1m--- sanitizer report %s\033[0m\n' "$f" >&2
    cat "$f" >&2
  done
  return "$found"
}

step "3. the sanitizer build loads"
rm -f "$logs"/*
timed "load" sanitized "$PY" -c "$RUNNER" || { reports || true; echo "FAILED: the sanitizer build does not load" >&2; exit 1; }

step "4. tests under ASan+UBSan: ${TESTS[*]} ${QUICK[*]} ${pytest_args[*]}"
run_tests() {  # the output also to $logs/tests.out, searched for reports
  sanitized "$PY" -c "$RUNNER" -q -p no:cacheprovider --capture=sys "${TESTS[@]}" "${QUICK[@]}" "${pytest_args[@]}" \
    2>&1 | tee "$logs/tests.out"
  return "${PIPESTATUS[0]}"
}
status=0
timed "tests ${QUICK[*]} ${pytest_args[*]}" run_tests || status=$?

step "5. sanitizer reports"
if ! reports; then
  echo "FAILED: AddressSanitizer/UBSan reported an error (above; pytest exit status $status)" >&2
  exit 1
fi
[ "$status" = 0 ] || { echo "FAILED: pytest exit status $status (no sanitizer report)" >&2; exit 1; }
echo "no sanitizer report"

step "sanitizer run passed"
printf '%s\n' "${timings[@]}"
