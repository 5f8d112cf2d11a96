"""The CUDA emulator itself (csrc/emu/): the launch rewrite, and a self-test with planted bugs.

csrc/emu/selftest/broken_kernels.cu holds correct kernels and kernels with one bug each; every case
is run in the build and mode that must catch it (a plain build with fibers or OS threads,
AddressSanitizer, ThreadSanitizer; one block in flight or several), and the correct kernels in all
of them (no false alarms, and bitwise the same results with one block in flight or four). Needs
g++ and the CUDA toolkit's headers (only headers: nothing runs on a GPU); skipped without them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EMU = ROOT / "csrc" / "emu"
CUDA_INCLUDE = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"

_spec = importlib.util.spec_from_file_location("cu2cpp", EMU / "cu2cpp.py")
cu2cpp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cu2cpp)

needs_toolchain = pytest.mark.skipif(
    shutil.which("g++") is None or not (CUDA_INCLUDE / "cuda_fp16.h").exists(),
    reason="needs g++ and the CUDA toolkit's headers",
)


# ---------------------------------------------------------------------------------------------
# The rewrite (cu2cpp.py)


SOURCE = """\
__global__ void __launch_bounds__(kThreads * 2) scale(float* x, int n) { x[0] = n; }
template <typename T, int V>
__global__ void copy(const T* a, T* b) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float tile[16][kWarp + 1];
  __shared__ T one;
}
void host(float* x, cudaStream_t s) {
  scale<<<grid, 256, 0, s>>>(x,
                            f(1, (2)));
  copy<float, 4><<<dim3(1, 2), block>>>(a, b);
}
"""


def test_rewrite_turns_launches_into_emulator_calls_with_the_launch_bounds():
    out = cu2cpp.rewrite_launches(SOURCE)
    assert (
        '::mtnn_emu::launch({"scale", __LINE__, static_cast<unsigned>(kThreads * 2)}, '
        "::mtnn_emu::Config(grid, 256, 0, s), [&](auto&&... mtnn_emu_args) { scale(mtnn_emu_args...); }, x,\n"
        "                            f(1, (2)));"
    ) in out
    assert (
        '::mtnn_emu::launch({"copy<float, 4>", __LINE__, static_cast<unsigned>(0)}, ::mtnn_emu::Config(dim3(1, 2), '
        "block), [&](auto&&... mtnn_emu_args) { copy<float, 4>(mtnn_emu_args...); }, a, b);"
    ) in out
    assert "<<<" not in out


def test_rewrite_gives_shared_declarations_the_blocks_memory():
    out = cu2cpp.rewrite_shared(SOURCE)
    assert "unsigned char* smem = ::mtnn_emu::dynamic_shared<unsigned char>();" in out
    assert "auto& tile = ::mtnn_emu::shared<float[16][kWarp + 1]>(__LINE__);" in out
    assert "auto& one = ::mtnn_emu::shared<T>(__LINE__);" in out


def test_rewrite_keeps_every_line_where_it_was():
    out = cu2cpp.rewrite(SOURCE, "/x/k.cu")
    _header, body = out.split('#line 1 "/x/k.cu"\n')
    assert body.count("\n") == SOURCE.count("\n")
    for before, after in zip(SOURCE.splitlines(), body.splitlines(), strict=True):
        assert ("<<<" in before) == ("::mtnn_emu::launch" in after)


def test_rewrite_takes_the_thread_count_of_launch_bounds_with_a_minimum_of_blocks():
    bounds = cu2cpp.launch_bounds("__global__ void __launch_bounds__(f(1, 2) * 4, 3) k(int n) {}")
    assert bounds == {"k": "f(1, 2) * 4"}


def test_rewrite_rejects_a_launch_of_an_unknown_kernel():
    with pytest.raises(cu2cpp.RewriteError, match="not a __global__ of this file"):
        cu2cpp.rewrite_launches("void f() { g<<<1, 1>>>(); }")


def test_the_project_kernels_rewrite():
    src = (ROOT / "csrc" / "cuda" / "norm_act.cu").read_text()
    out = cu2cpp.rewrite(src, "norm_act.cu")
    assert "<<<" not in out
    assert "__shared__" not in out.split("\n", 3)[3].replace("// ", "")  # only in comments, if anywhere
    assert out.count("::mtnn_emu::launch(") == src.count("<<<")


# ---------------------------------------------------------------------------------------------
# The self-test: planted bugs


SELFTEST = EMU / "selftest" / "broken_kernels.cu"
BUILD_FLAGS = {
    "plain": [],
    "asan": ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"],
    "tsan": ["-fsanitize=thread"],
}


def build_selftest(variant: str) -> Path:
    sources = [SELFTEST, EMU / "runtime.cpp", EMU / "cu2cpp.py", *sorted((EMU / "include").rglob("*.h"))]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources) + variant.encode()).hexdigest()[:16]
    out = ROOT / "build" / "cuda_emu" / "selftest" / variant
    exe = out / f"broken-{digest}"
    if exe.exists():
        return exe
    out.mkdir(parents=True, exist_ok=True)
    generated = out / "broken_kernels.emu.cpp"
    cu2cpp.main(["cu2cpp", str(SELFTEST), str(generated)])
    cmd = ["g++", "-std=c++20", "-O1", "-g", f"-I{EMU / 'include'}", f"-I{CUDA_INCLUDE}", *BUILD_FLAGS[variant]]
    subprocess.run([*cmd, str(generated), str(EMU / "runtime.cpp"), "-o", str(exe)], check=True)
    return exe


@pytest.fixture(scope="module")
def selftest():
    built = {}

    def run(case: str, variant: str = "plain", **env: str):
        if variant not in built:
            built[variant] = build_selftest(variant)
        environ = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0", "TSAN_OPTIONS": "halt_on_error=1", **env}
        environ.pop("LD_PRELOAD", None)
        return subprocess.run([str(built[variant]), case], capture_output=True, text=True, env=environ, timeout=300)

    return run


CORRECT = ["block_sum", "grid_sum", "warp_sums", "warp_votes", "reverse_dynamic"]
MODES = [
    pytest.param("plain", {}, id="fibers"),
    pytest.param("plain", {"MTNN_EMU_ORDER": "reverse"}, id="fibers-reverse"),
    pytest.param("plain", {"MTNN_EMU_ORDER": "random", "MTNN_EMU_SEED": "7"}, id="fibers-random"),
    pytest.param("plain", {"MTNN_EMU_MODE": "threads"}, id="threads"),
    pytest.param("asan", {}, id="asan"),
    pytest.param("tsan", {"MTNN_EMU_MODE": "threads"}, id="tsan-threads"),
]


@needs_toolchain
@pytest.mark.parametrize(("variant", "env"), MODES)
@pytest.mark.parametrize("case", CORRECT)
def test_correct_kernels_pass_alike_with_one_or_four_blocks_in_flight_in_every_mode_and_build(
    selftest, case, variant, env
):
    one = selftest(case, variant, MTNN_EMU_BLOCKS="1", **env)
    four = selftest(case, variant, MTNN_EMU_BLOCKS="4", **env)
    for r in (one, four):
        assert r.returncode == 0, r.stdout + r.stderr
        assert "results right" in r.stdout
    assert four.stdout == one.stdout  # the same checksum of the outputs: bitwise the same results


@needs_toolchain
@pytest.mark.parametrize("mode", ["fibers", "threads"])
@pytest.mark.parametrize(
    ("case", "error", "detail"),
    [
        # Either a lane exits while others wait at the shuffle, or one arrives after others exited:
        # which comes first depends on the OS threads' timing; both reports name the shuffle.
        ("half_warp_shuffle", "cudaErrorLaunchFailure", "__shfl_xor_sync"),
        ("half_warp_vote", "cudaErrorLaunchFailure", "__ballot_sync in half_warp_vote at line "),
        ("divergent_barrier", "cudaErrorLaunchFailure", "a barrier not reached by every thread"),
        ("oversize_dynamic_shared", "cudaErrorInvalidValue", "more than 48 KiB of shared memory per block"),
        ("oversize_static_shared", "cudaErrorInvalidValue", "65536 bytes static + 0 dynamic exceed the 48 KiB"),
        ("launch_bounds", "cudaErrorLaunchOutOfResources", "more threads than the kernel's __launch_bounds__(128)"),
        ("block_too_large", "cudaErrorInvalidConfiguration", "a block has 1 to 1024 threads"),
        ("grid_too_large", "cudaErrorInvalidConfiguration", "y and z ≤ 65535"),
    ],
)
def test_the_emulator_reports_what_a_gpu_would_fail_on(selftest, case, error, detail, mode):
    r = selftest(case, MTNN_EMU_MODE=mode)
    assert r.returncode == 1, r.stdout + r.stderr
    assert error in r.stdout
    assert detail in r.stdout


@needs_toolchain
@pytest.mark.parametrize("blocks", ["1", "4"])
@pytest.mark.parametrize(
    ("variant", "mode"), [("plain", "fibers"), ("plain", "threads"), ("tsan", "threads")], ids=lambda v: v
)
def test_a_vote_whose_lanes_returned_fails_the_launch_naming_its_block(selftest, variant, mode, blocks):
    # Three blocks; only block 1 has lanes that return before the vote. With several blocks in
    # flight, the fault of one is still the launch's error; under ThreadSanitizer, the emulator's
    # own handling of the fault is free of races.
    r = selftest("vote_after_return", variant, MTNN_EMU_MODE=mode, MTNN_EMU_BLOCKS=blocks)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cudaErrorLaunchFailure" in r.stdout
    assert "__all_sync" in r.stdout
    assert "block (1,0,0)" in r.stdout


@needs_toolchain
@pytest.mark.parametrize("order", ["forward", "reverse", "random"])
def test_blocks_in_flight_expose_blocks_that_rely_on_running_one_after_another(selftest, order):
    # grid_sum_racy reads the running total at its start and stores total + its sum at its end:
    # with four blocks' fibers interleaved, one block's store overwrites another's.
    r = selftest("grid_sum_racy", MTNN_EMU_BLOCKS="4", MTNN_EMU_ORDER=order)
    assert r.returncode == 2, r.stdout + r.stderr


@needs_toolchain
def test_threadsanitizer_catches_a_race_between_blocks_in_flight(selftest):
    r = selftest("grid_sum_racy", "tsan", MTNN_EMU_MODE="threads", MTNN_EMU_BLOCKS="4")
    assert r.returncode != 0
    assert "ThreadSanitizer: data race" in r.stderr
    assert "in grid_sum_racy" in r.stderr


@needs_toolchain
@pytest.mark.parametrize(
    ("variant", "env"),
    [pytest.param("plain", {}, id="fibers"), pytest.param("tsan", {"MTNN_EMU_MODE": "threads"}, id="tsan-threads")],
)
def test_one_block_at_a_time_hides_a_race_between_blocks(selftest, variant, env):
    # Why MTNN_EMU_BLOCKS exists: by default blocks run one after another, and this bug passes.
    r = selftest("grid_sum_racy", variant, MTNN_EMU_BLOCKS="1", **env)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_toolchain
def test_a_bad_shuffle_offset_gives_wrong_sums(selftest):
    r = selftest("wrong_offset")
    assert r.returncode == 2, r.stdout + r.stderr


@needs_toolchain
@pytest.mark.parametrize("case", ["oob_store", "dynamic_one_short"])
def test_addresssanitizer_catches_out_of_bounds_global_and_shared_accesses(selftest, case):
    r = selftest(case, "asan")
    assert r.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in r.stderr


@needs_toolchain
def test_threadsanitizer_catches_a_missing_barrier_with_one_os_thread_per_cuda_thread(selftest):
    r = selftest("missing_barrier", "tsan", MTNN_EMU_MODE="threads")
    assert r.returncode != 0
    assert "ThreadSanitizer: data race" in r.stderr
    assert "broken_kernels.cu:" in r.stderr  # the report points into the .cu source


@needs_toolchain
def test_a_missing_barrier_reads_the_shared_memory_poison_with_fibers(selftest):
    # Fibers only switch at barriers: without one, thread t runs to its end and reads slot t + 1
    # before thread t + 1 has written it, and finds the 0xFF the block's shared memory starts as.
    r = selftest("missing_barrier")
    assert r.returncode == 2, r.stdout + r.stderr


@needs_toolchain
def test_the_learners_conv_demo_runs_rungs_1_and_2_and_checks_them_against_the_definition():
    # csrc/emu/run_example.sh conv: what the README tells a learner to run on a laptop (no GPU, no torch).
    args = ["bash", str(EMU / "run_example.sh"), "conv", "2", "5", "9", "8", "70", "3", "2", "1"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("rung")]
    assert len(lines) == 6
    assert all(line.endswith(" ok") for line in lines), done.stdout
