// The device side of the CUDA emulator: what a kernel's body uses, for a CPU build.
//
// A .cu file runs on the CPU after csrc/emu/cu2cpp.py has rewritten its launches
// (`k<<<grid, block, smem, stream>>>(args)` becomes `::mtnn_emu::launch(...)`) and its __shared__
// declarations (which become references into the block's shared memory), and included this header
// first. Everything else in the kernel compiles as it is: threadIdx and friends are macros for the
// running CUDA thread's indices, __syncthreads() and the warp intrinsics (__syncwarp, shuffles,
// votes) are calls into the scheduler (csrc/emu/runtime.cpp), and __half / __nv_bfloat16 come
// from the toolkit's headers, whose host code does the conversions.
//
// Each intrinsic passes __LINE__ (the .cu file's line: the rewritten file starts with #line) so a
// report names the line of the kernel that went wrong.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

namespace mtnn_emu {

// The indices of the CUDA thread running now (a fiber or an OS thread), set by the scheduler.
struct ThreadIds {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
extern thread_local const ThreadIds* current;
const ThreadIds& ids();  // `current`, or a report and abort when called outside a kernel

// ---- launches -------------------------------------------------------------------------------

struct Site {            // where a launch is in the source
  const char* kernel;    // the kernel expression as written, e.g. "ln_forward_warp<A, T, kV>"
  int line;              // the launch's line in the .cu file
  unsigned max_threads;  // the kernel's __launch_bounds__ (0: none)
};

struct Config {  // <<<grid, block, smem, stream>>>
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  Config(dim3 g, dim3 b, size_t s = 0, cudaStream_t st = nullptr) : grid(g), block(b), smem(s), stream(st) {}
};

// Runs every block of the grid before returning; the launch's error (a bad configuration, or a
// fault found while running) is what cudaGetLastError() returns next.
void launch_impl(const Site& site, const Config& cfg, void (*run)(void*), void* body);

template <typename F, typename... A>
void launch(const Site& site, const Config& cfg, F kernel, A&&... args) {
  // The arguments are evaluated once, at the launch, as on a GPU; every thread gets its own copy
  // of each (the kernel takes them by value).
  std::tuple<std::decay_t<A>...> params(std::forward<A>(args)...);
  auto body = [&] { std::apply(kernel, params); };
  launch_impl(site, cfg, [](void* b) { (*static_cast<decltype(body)*>(b))(); }, &body);
}

// ---- shared memory --------------------------------------------------------------------------

// The block's copy of a static __shared__ variable (one per declaration line), allocated at its
// exact size and filled with 0xFF when the block starts using it.
void* shared_static(int line, size_t bytes, size_t align);
// The launch's dynamic shared memory (extern __shared__ x[]): exactly cfg.smem bytes, 0xFF-filled.
void* shared_dynamic();

template <typename T, size_t Align = alignof(T)>
T& shared(int line) {
  return *static_cast<T*>(shared_static(line, sizeof(T), Align));
}
template <typename T>
T* dynamic_shared() {
  return static_cast<T*>(shared_dynamic());
}

// ---- barriers and warp intrinsics ---------------------------------------------------------------

void syncthreads(int line);
void syncwarp(int line, unsigned mask = 0xffffffffu);

enum class Shfl { Idx, Up, Down, Xor };
// Every lane of `mask` exchanges `bytes` of `value` (in place). A mask that is not the warp's
// full set of lanes, or that names a lane that has exited, is reported, not guessed at.
void shfl(int line, const char* name, unsigned mask, Shfl kind, int arg, int width, void* value, size_t bytes);

template <typename T>
T shfl_as(int line, const char* name, unsigned mask, Shfl kind, T v, int arg, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move up to 8 bytes");
  shfl(line, name, mask, kind, arg, width, &v, sizeof(T));
  return v;
}

template <typename T>
T shfl_sync(int line, unsigned mask, T v, int src_lane, int width = 32) {
  return shfl_as(line, "__shfl_sync", mask, Shfl::Idx, v, src_lane, width);
}
template <typename T>
T shfl_up_sync(int line, unsigned mask, T v, unsigned delta, int width = 32) {
  return shfl_as(line, "__shfl_up_sync", mask, Shfl::Up, v, static_cast<int>(delta), width);
}
template <typename T>
T shfl_down_sync(int line, unsigned mask, T v, unsigned delta, int width = 32) {
  return shfl_as(line, "__shfl_down_sync", mask, Shfl::Down, v, static_cast<int>(delta), width);
}
template <typename T>
T shfl_xor_sync(int line, unsigned mask, T v, int lane_mask, int width = 32) {
  return shfl_as(line, "__shfl_xor_sync", mask, Shfl::Xor, v, lane_mask, width);
}

// Warp votes: every lane of `mask` (the warp's full set of lanes, none exited: checked as for the
// shuffles) contributes `pred`; every lane gets the ballot, bit l set where lane l's was true.
unsigned vote(int line, const char* name, unsigned mask, bool pred);

inline unsigned ballot_sync(int line, unsigned mask, int pred) { return vote(line, "__ballot_sync", mask, pred != 0); }
inline int any_sync(int line, unsigned mask, int pred) { return vote(line, "__any_sync", mask, pred != 0) != 0; }
inline int all_sync(int line, unsigned mask, int pred) { return vote(line, "__all_sync", mask, pred != 0) == mask; }

}  // namespace mtnn_emu

#define threadIdx (::mtnn_emu::ids().thread_idx)
#define blockIdx (::mtnn_emu::ids().block_idx)
#define blockDim (::mtnn_emu::ids().block_dim)
#define gridDim (::mtnn_emu::ids().grid_dim)
#ifndef warpSize
#define warpSize 32
#endif

#define __syncthreads() ::mtnn_emu::syncthreads(__LINE__)
#define __syncwarp(...) ::mtnn_emu::syncwarp(__LINE__ __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_sync(...) ::mtnn_emu::shfl_sync(__LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::mtnn_emu::shfl_up_sync(__LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::mtnn_emu::shfl_down_sync(__LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::mtnn_emu::shfl_xor_sync(__LINE__, __VA_ARGS__)
#define __ballot_sync(...) ::mtnn_emu::ballot_sync(__LINE__, __VA_ARGS__)
#define __any_sync(...) ::mtnn_emu::any_sync(__LINE__, __VA_ARGS__)
#define __all_sync(...) ::mtnn_emu::all_sync(__LINE__, __VA_ARGS__)

// ---- math intrinsics and memory access (host equivalents) --------------------------------------

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }

// Atomics: real atomics, so they are atomic in the one-OS-thread-per-CUDA-thread mode too.
template <typename T>
inline T atomicAdd(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v);
}
template <typename T>
inline T atomicMax(T* p, T v) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
