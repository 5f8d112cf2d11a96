// Fused normalization + activation on CUDA: LayerNorm+act and BatchNorm+act, forward and backward.
//
// Plain CUDA C++ (no torch headers): `nvcc -c` checks this file on any machine with nvcc. The
// launchers are declared, with their contracts, in norm_act.h; the torch glue is norm_act_ops.cpp.
// The formulas are the CPU file's (csrc/cpu/norm_act.cpp), and f, f' come from csrc/activation.h:
//   forward   x̂ = (x − μ)·rstd,  z = γ·x̂ + β,  y = f(z)             rstd = 1/√(σ² + eps)
//   backward  dz = dy·f'(z),  dβ = Σ dz,  dγ = Σ dz·x̂
//             dx = γ·rstd·(dz − mean(dz) − x̂·mean(dz·x̂))   (training: terms 1, 2, 3)
//             dx = γ·rstd·dz                                (BatchNorm eval)
//
// Dimensions: LayerNorm normalizes M rows × N values; BatchNorm reduces each of C channels over
// R = B·S values. Arithmetic is in acc_t (float for float, half and bfloat16; double for double).
//
// Design, and what has and has not been measured: nothing here has been timed on a GPU yet (it was
// written on a machine with nvcc and no GPU). The constants marked MEASURE are first guesses; those a
// launch can take at run time are tuning parameters (tuning.h), swept by benchmarks/cuda_tuning.py.
//
// LayerNorm forward. A row is read from global memory once:
//   * N ≤ ln_warp_row_max (≤ kWarpRowMax = 1024): one warp per row, the row held in registers
//     (kWarpRowMax/32 values a lane);
//   * longer rows: one block per row, the row kept in shared memory when it fits in
//     ln_row_cache_bytes (each thread re-reads only the elements it stored, so no barrier is needed
//     for the cache), else re-read from global memory (then mostly from L2).
//   Statistics are two-pass over the held row: the mean, then Σ(x − μ)² (no E[x²] − μ²
//   cancellation). 128-bit loads and stores when every row start is 16-byte aligned (base
//   pointers aligned and N a multiple of the vector width); a scalar path otherwise (N = 1023,
//   storage offsets).
// LayerNorm backward. Same row mapping, its crossover ln_backward_warp_row_max (for double, warp per
//   row only up to 256 values: see backward_warp_row_max). dγ and dβ: each worker (warp or block)
//   accumulates its rows' dz·x̂ and dz for the columns it owns into a partial row of its own
//   (registers for a warp, global memory for a block: a thread owns its columns, so there are no
//   races); a second kernel adds the partial rows in a fixed order. The number of workers depends
//   only on M, N and the tuning parameters, so results are bitwise repeatable run to run.
// BatchNorm. Per-channel reductions (the backward's Σdz and Σdz·x̂; the training statistics as
//   Welford states, csrc/welford.h, in one pass, where the CPU makes two passes, the mean and then
//   Σ(x − μ)²: a GPU pass over x costs as much as the arithmetic, and Welford is as stable) split R
//   into a fixed number of chunks per channel; a block reduces one chunk with a
//   fixed-shape tree, a finalize kernel merges the chunks in order. Elementwise passes (the
//   forward output, the backward dx) use 2-D grids: an "outer" index (NCHW planes or
//   channels_last rows) on y, vectors along the contiguous "inner" dim on x, so the channel of an
//   element needs no division in the inner loop.
//
// Every loop over rows, planes, chunks or channels is grid-stride with 64-bit indices; grids stay
// within hardware limits (gridDim.y ≤ 65535) for any size.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "tuning.h"
#include "../welford.h"
#include "norm_act.h"

namespace minitorch_nn {
namespace cuda {
namespace {

constexpr int kWarp = 32;

// The warp-per-row kernels hold a row in registers: kWarpRowMax/32 values a lane (64 in the
// backward). 1024 is the most for which they still fit without spills for float; it is their
// compile-time capacity, and so the upper bound of the run-time crossover below.
constexpr int kWarpRowMax = 1024;
// The warp-per-row backward keeps four values per element of its row in registers (x̂, g and the
// two partial sums), 4·kWarpRowMax/32 = 128 a lane: 128 registers for float, 256 for double, over
// the 255 a thread can have. ptxas -v reported every float64 instantiation at 255 registers with
// 300-480 bytes of spills per thread; double rows longer than 256 go to the block kernel instead
// (64 values a lane). .ci/cuda_build_check.sh reports spills and fails on any outside float64.
template <typename T>
constexpr int backward_warp_row_max() {
  return sizeof(acc_type<T>) == 8 ? 256 : kWarpRowMax;
}
constexpr int kWarpsPerBlock = 4;     // warp-per-row kernels: 128-thread blocks
constexpr int kRowBlockThreads = 256;  // block-per-row kernels
// A block's shared memory without the opt-in attribute is 48 KiB, static and dynamic together; the
// block-per-row kernels' static part is a 32-value scratch of acc_t (at most 256 bytes).
constexpr int64_t kMaxRowCacheBytes = 48 * 1024 - kWarp * 8;
constexpr int64_t kMaxWarpWorkerBlocks = 1024;  // 4096 warps
constexpr int64_t kMaxRowWorkerBlocks = 512;

// Run-time tuning parameters (tuning.h): today's guesses as defaults, swept on a GPU by
// benchmarks/cuda_tuning.py. MEASURE: none of these defaults has been measured yet.
//
// Rows of at most ln_warp_row_max values go warp-per-row, longer ones block-per-row (forward); the
// backward has its own crossover, as its warp kernel holds four times the registers (and double rows
// over 256 always go block-per-row, backward_warp_row_max). 1024, the warp kernels' capacity, is a
// guess at the crossover: the block kernel may well win earlier.
TuningParam ln_warp_row_max{"ln_warp_row_max", "LayerNorm forward: longest row a warp handles (longer: a block)",
                            kWarpRowMax, 0, kWarpRowMax, {kWarpRowMax}};
TuningParam ln_backward_warp_row_max{"ln_backward_warp_row_max",
                                     "LayerNorm backward: longest row a warp handles (longer: a block)", kWarpRowMax,
                                     0, kWarpRowMax, {kWarpRowMax}};
// Block-per-row keeps the row (the backward: x and dy) in shared memory up to this many bytes, else
// re-reads it from global memory (then mostly L2). 24 KiB lets 8 blocks of 256 threads (a full SM)
// fit in an A100/H100 SM's shared memory.
TuningParam ln_row_cache_bytes{"ln_row_cache_bytes",
                               "LayerNorm block-per-row: most bytes of a row cached in shared memory", 24 * 1024, 0,
                               kMaxRowCacheBytes, {24 * 1024}};
// LayerNorm backward workers and their partial rows of dγ, dβ. A worker handles at least this many
// rows, so the partial rows (read again by the reduction) stay small next to x.
TuningParam ln_min_rows_per_worker{"ln_min_rows_per_worker", "LayerNorm backward: fewest rows a worker sums",
                                   8, 1, int64_t{1} << 30, {8}};
// BatchNorm reductions: chunks per channel (reduce_chunks below), at least this many values a chunk
// (NCHW, channels_last), and about this many blocks in all (enough to fill a large GPU).
TuningParam bn_chunk_values_nchw{"bn_chunk_values_nchw", "BatchNorm NCHW reductions: fewest values a chunk",
                                 4096, 1, int64_t{1} << 30, {4096}};
TuningParam bn_chunk_values_cl{"bn_chunk_values_cl", "BatchNorm channels_last reductions: fewest values a chunk",
                               256, 1, int64_t{1} << 30, {256}};
TuningParam bn_target_blocks{"bn_target_blocks", "BatchNorm reductions: blocks wanted in all", 2048, 1, 65535,
                             {2048}};
// BatchNorm reductions.
constexpr int kReduceThreads = 256;
constexpr int kClTileC = 32, kClTileR = 8;  // channels_last reduction block: 32 channels × 8 rows
constexpr int kElementwiseThreads = 256;

// vec_width, Pack, load_pack / store_pack and warp_allreduce_sum are common.cuh's (shared with the
// ladder, ln_ladder.cu). The xor butterfly leaves every lane with the same sum, bit for bit.

// Sum over the block, returned to every thread. `scratch` holds 32 values; blockDim.x is a
// multiple of 32. Every warp reduces the same per-warp sums in the same order, so all agree.
template <typename T>
__device__ __forceinline__ T block_allreduce_sum(T v, T* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = blockDim.x / kWarp;
  v = warp_allreduce_sum(v);
  __syncthreads();  // a previous call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  return warp_allreduce_sum(lane < warps ? scratch[lane] : T(0));
}

// rstd = 1/√(m2/n + eps), in double as the CPU kernels compute it (once per row or channel).
template <typename acc_t>
__device__ __forceinline__ acc_t rstd_of(acc_t m2, int64_t n, double eps) {
  return static_cast<acc_t>(1.0 / ::sqrt(static_cast<double>(m2) / static_cast<double>(n) + eps));
}

// ---------------------------------------------------------------------------------------------
// LayerNorm + activation, forward.

// One warp per row, N ≤ ln_warp_row_max ≤ kWarpRowMax. Lane l holds vectors l, l + 32, ... of the
// row (kItems of them), so a warp's loads are contiguous.
template <Act A, typename T, int V>
__global__ void __launch_bounds__(kWarpsPerBlock* kWarp)
    ln_forward_warp(const T* __restrict__ X, const acc_type<T>* __restrict__ W, const acc_type<T>* __restrict__ Bias,
                    T* __restrict__ Y, acc_type<T>* __restrict__ mean_out, acc_type<T>* __restrict__ rstd_out,
                    int64_t M, int64_t N, double eps) {
  using acc_t = acc_type<T>;
  constexpr int kItems = kWarpRowMax / (kWarp * V);
  const int lane = threadIdx.x % kWarp;
  const int64_t workers = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; r < M; r += workers) {
    const T* x = X + r * N;
    // The mean is summed as shift + Σ(x − shift)/N with shift = the row's first value: a constant
    // row then gives μ exactly and x̂ = 0 exactly (as functional/normalization.py's "Numerics" explains).
    const acc_t shift = Cvt<T>::to(x[0]);
    acc_t v[kItems][V];
    acc_t sum = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int64_t j = static_cast<int64_t>(lane + i * kWarp) * V;
      if (j < N) {
        load_pack<V>(x + j, v[i]);
#pragma unroll
        for (int k = 0; k < V; ++k) sum += v[i][k] - shift;
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) v[i][k] = 0;
      }
    }
    const acc_t mu = shift + warp_allreduce_sum(sum) / static_cast<acc_t>(N);
    acc_t m2 = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int64_t j = static_cast<int64_t>(lane + i * kWarp) * V;
      if (j < N) {
#pragma unroll
        for (int k = 0; k < V; ++k) m2 += (v[i][k] - mu) * (v[i][k] - mu);
      }
    }
    const acc_t rstd = rstd_of(warp_allreduce_sum(m2), N, eps);
    if (lane == 0) {
      mean_out[r] = mu;
      rstd_out[r] = rstd;
    }
    T* y = Y + r * N;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int64_t j = static_cast<int64_t>(lane + i * kWarp) * V;
      if (j < N) {
        acc_t o[V];
#pragma unroll
        for (int k = 0; k < V; ++k) o[k] = act_forward<A>((v[i][k] - mu) * rstd * W[j + k] + Bias[j + k]);
        store_pack<V>(y + j, o);
      }
    }
  }
}

// One block per row, N > ln_warp_row_max (any N works). Thread t owns vectors t, t + blockDim, ...
// of the row; with `cache` it copies them to shared memory on the first pass and reads them back.
template <Act A, typename T, int V>
__global__ void __launch_bounds__(kRowBlockThreads)
    ln_forward_block(const T* __restrict__ X, const acc_type<T>* __restrict__ W, const acc_type<T>* __restrict__ Bias,
                     T* __restrict__ Y, acc_type<T>* __restrict__ mean_out, acc_type<T>* __restrict__ rstd_out,
                     int64_t M, int64_t N, double eps, bool cache) {
  using acc_t = acc_type<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ acc_t scratch[kWarp];
  T* row_cache = reinterpret_cast<T*>(smem);
  const int64_t nvec = N / V;
  for (int64_t r = blockIdx.x; r < M; r += gridDim.x) {
    const T* x = X + r * N;
    const acc_t shift = Cvt<T>::to(x[0]);  // as in ln_forward_warp: a constant row gives x̂ = 0 exactly
    acc_t sum = 0;
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
      const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(x + i * V);
      if (cache) *reinterpret_cast<Pack<T, V>*>(row_cache + i * V) = pk;
#pragma unroll
      for (int k = 0; k < V; ++k) sum += Cvt<T>::to(pk.v[k]) - shift;
    }
    const acc_t mu = shift + block_allreduce_sum(sum, scratch) / static_cast<acc_t>(N);
    const T* src = cache ? row_cache : x;
    acc_t m2 = 0;
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
      acc_t v[V];
      load_pack<V>(src + i * V, v);
#pragma unroll
      for (int k = 0; k < V; ++k) m2 += (v[k] - mu) * (v[k] - mu);
    }
    const acc_t rstd = rstd_of(block_allreduce_sum(m2, scratch), N, eps);
    if (threadIdx.x == 0) {
      mean_out[r] = mu;
      rstd_out[r] = rstd;
    }
    T* y = Y + r * N;
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
      const int64_t j = i * V;
      acc_t v[V];
      load_pack<V>(src + j, v);
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] = act_forward<A>((v[k] - mu) * rstd * W[j + k] + Bias[j + k]);
      store_pack<V>(y + j, v);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm + activation, backward.
//
// Per row: dz = dy·f'(x̂·γ + β), g = γ·dz, and dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).

// Warp per row. Each lane keeps x̂ and g of its columns in registers between the two passes, and
// its columns' Σdz·x̂ and Σdz over the warp's rows; at the end it writes them to the warp's
// partial row (dw_part/db_part + worker·N).
template <Act A, typename T, int V>
__global__ void __launch_bounds__(kWarpsPerBlock* kWarp)
    ln_backward_warp(const T* __restrict__ dY, const T* __restrict__ X, const acc_type<T>* __restrict__ mean,
                     const acc_type<T>* __restrict__ rstd, const acc_type<T>* __restrict__ W,
                     const acc_type<T>* __restrict__ Bias, T* __restrict__ dX, acc_type<T>* __restrict__ dw_part,
                     acc_type<T>* __restrict__ db_part, int64_t M, int64_t N) {
  using acc_t = acc_type<T>;
  constexpr int kItems = backward_warp_row_max<T>() / (kWarp * V);
  const int lane = threadIdx.x % kWarp;
  const int64_t worker = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int64_t workers = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  acc_t pdw[kItems][V], pdb[kItems][V];
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
#pragma unroll
    for (int k = 0; k < V; ++k) pdw[i][k] = pdb[i][k] = 0;
  }
  for (int64_t r = worker; r < M; r += workers) {
    const acc_t mu = mean[r], rs = rstd[r];
    acc_t xh[kItems][V], g[kItems][V];
    acc_t sum_g = 0, sum_gx = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int64_t j = static_cast<int64_t>(lane + i * kWarp) * V;
      if (j < N) {
        acc_t xv[V], dyv[V];
        load_pack<V>(X + r * N + j, xv);
        load_pack<V>(dY + r * N + j, dyv);
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const acc_t w = W[j + k];
          xh[i][k] = (xv[k] - mu) * rs;
          const acc_t dz = dyv[k] * act_derivative<A>(xh[i][k] * w + Bias[j + k]);
          g[i][k] = dz * w;
          pdw[i][k] += dz * xh[i][k];
          pdb[i][k] += dz;
          sum_g += g[i][k];
          sum_gx += g[i][k] * xh[i][k];
        }
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) xh[i][k] = g[i][k] = 0;
      }
    }
    if (dX != nullptr) {
      const acc_t mean_g = warp_allreduce_sum(sum_g) / static_cast<acc_t>(N);
      const acc_t mean_gx = warp_allreduce_sum(sum_gx) / static_cast<acc_t>(N);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const int64_t j = static_cast<int64_t>(lane + i * kWarp) * V;
        if (j < N) {
          acc_t o[V];
#pragma unroll
          for (int k = 0; k < V; ++k) o[k] = rs * (g[i][k] - mean_g - xh[i][k] * mean_gx);  // terms 1, 2, 3
          store_pack<V>(dX + r * N + j, o);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int64_t j = static_cast<int64_t>(lane + i * kWarp) * V;
    if (j < N) {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        if (dw_part != nullptr) dw_part[worker * N + j + k] = pdw[i][k];
        if (db_part != nullptr) db_part[worker * N + j + k] = pdb[i][k];
      }
    }
  }
}

// Block per row. Pass 1 computes the row sums and adds dz·x̂, dz into the block's partial row in
// global memory (thread-owned columns: no races; the block's first row stores, so no memset);
// pass 2 recomputes x̂ and g from x and dy (from the shared-memory copy when `cache`).
template <Act A, typename T, int V>
__global__ void __launch_bounds__(kRowBlockThreads)
    ln_backward_block(const T* __restrict__ dY, const T* __restrict__ X, const acc_type<T>* __restrict__ mean,
                      const acc_type<T>* __restrict__ rstd, const acc_type<T>* __restrict__ W,
                      const acc_type<T>* __restrict__ Bias, T* __restrict__ dX, acc_type<T>* __restrict__ dw_part,
                      acc_type<T>* __restrict__ db_part, int64_t M, int64_t N, bool cache) {
  using acc_t = acc_type<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ acc_t scratch[kWarp];
  T* x_cache = reinterpret_cast<T*>(smem);
  T* dy_cache = x_cache + N;  // N·sizeof(T) is a multiple of 16 whenever V > 1
  const int64_t nvec = N / V;
  acc_t* pdw = dw_part != nullptr ? dw_part + static_cast<int64_t>(blockIdx.x) * N : nullptr;
  acc_t* pdb = db_part != nullptr ? db_part + static_cast<int64_t>(blockIdx.x) * N : nullptr;
  for (int64_t r = blockIdx.x; r < M; r += gridDim.x) {
    const bool first = r == blockIdx.x;
    const acc_t mu = mean[r], rs = rstd[r];
    const T* x = X + r * N;
    const T* dy = dY + r * N;
    acc_t sum_g = 0, sum_gx = 0;
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
      const int64_t j = i * V;
      const Pack<T, V> xp = *reinterpret_cast<const Pack<T, V>*>(x + j);
      const Pack<T, V> dp = *reinterpret_cast<const Pack<T, V>*>(dy + j);
      if (cache) {
        *reinterpret_cast<Pack<T, V>*>(x_cache + j) = xp;
        *reinterpret_cast<Pack<T, V>*>(dy_cache + j) = dp;
      }
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const acc_t w = W[j + k];
        const acc_t xh = (Cvt<T>::to(xp.v[k]) - mu) * rs;
        const acc_t dz = Cvt<T>::to(dp.v[k]) * act_derivative<A>(xh * w + Bias[j + k]);
        sum_g += dz * w;
        sum_gx += dz * w * xh;
        if (pdw != nullptr) pdw[j + k] = (first ? acc_t(0) : pdw[j + k]) + dz * xh;
        if (pdb != nullptr) pdb[j + k] = (first ? acc_t(0) : pdb[j + k]) + dz;
      }
    }
    if (dX == nullptr) continue;  // uniform across the block: no barrier is skipped by only some threads
    const acc_t mean_g = block_allreduce_sum(sum_g, scratch) / static_cast<acc_t>(N);
    const acc_t mean_gx = block_allreduce_sum(sum_gx, scratch) / static_cast<acc_t>(N);
    const T* xs = cache ? x_cache : x;
    const T* dys = cache ? dy_cache : dy;
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
      const int64_t j = i * V;
      acc_t xv[V], dyv[V];
      load_pack<V>(xs + j, xv);
      load_pack<V>(dys + j, dyv);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const acc_t w = W[j + k];
        const acc_t xh = (xv[k] - mu) * rs;
        const acc_t g = dyv[k] * act_derivative<A>(xh * w + Bias[j + k]) * w;
        xv[k] = rs * (g - mean_g - xh * mean_gx);  // terms 1, 2, 3
      }
      store_pack<V>(dX + r * N + j, xv);
    }
  }
}

// out[j] = Σ_p part[p·N + j] for p = 0, 1, ..., P − 1 in a fixed order: a (32 columns × 16)
// block, row ty adding partial rows ty, ty + 16, ..., then row 0 adding the 16 results in order.
template <typename T>
__global__ void __launch_bounds__(512)
    sum_partial_rows(const acc_type<T>* __restrict__ part, int64_t P, int64_t N, T* __restrict__ out) {
  using acc_t = acc_type<T>;
  __shared__ acc_t tile[16][kWarp + 1];
  for (int64_t j0 = static_cast<int64_t>(blockIdx.x) * kWarp; j0 < N; j0 += static_cast<int64_t>(gridDim.x) * kWarp) {
    const int64_t j = j0 + threadIdx.x;
    acc_t s = 0;
    if (j < N) {
      for (int64_t p = threadIdx.y; p < P; p += blockDim.y) s += part[p * N + j];
    }
    tile[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < N) {
      acc_t t = 0;
      for (int y = 0; y < static_cast<int>(blockDim.y); ++y) t += tile[y][threadIdx.x];
      out[j] = Cvt<T>::from(t);
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------------------------------------
// BatchNorm + activation.
//
// A reduction "op" gives, per channel, the parameters it needs (`params(c)`), how to fold one
// value in (`add`), and how to merge two partial states (`merge`); the same two kernels reduce
// NCHW and channels_last input with it.

template <typename T>
struct StatsOp {  // Welford (count, mean, M2) of x
  using acc_t = acc_type<T>;
  using State = Welford<acc_t>;
  struct Params {};
  const T* x;
  __device__ Params params(int64_t) const { return {}; }
  __device__ static State init() { return {acc_t(0), acc_t(0), acc_t(0)}; }
  __device__ void add(State& s, const Params&, int64_t idx) const { s = welford_add(s, Cvt<T>::to(x[idx])); }
  __device__ static State merge(const State& a, const State& b) { return welford_merge(a, b); }
};

template <typename acc_t>
struct GradSums {
  acc_t dz, dz_xhat;  // Σdz (= dβ) and Σdz·x̂ (= dγ)
};

template <Act A, typename T>
struct GradSumsOp {
  using acc_t = acc_type<T>;
  using State = GradSums<acc_t>;
  struct Params {
    acc_t mu, rstd, w, b;
  };
  const T* x;
  const T* dy;
  const acc_t *mean, *rstd, *w, *b;
  __device__ Params params(int64_t c) const { return {mean[c], rstd[c], w[c], b[c]}; }
  __device__ static State init() { return {acc_t(0), acc_t(0)}; }
  __device__ void add(State& s, const Params& p, int64_t idx) const {
    const acc_t xh = (Cvt<T>::to(x[idx]) - p.mu) * p.rstd;
    const acc_t dz = Cvt<T>::to(dy[idx]) * act_derivative<A>(xh * p.w + p.b);
    s.dz += dz;
    s.dz_xhat += dz * xh;
  }
  __device__ static State merge(const State& a, const State& b) { return {a.dz + b.dz, a.dz_xhat + b.dz_xhat}; }
};

// Chunk k of K of [0, n): balanced, and no n·k products that could overflow.
__device__ __forceinline__ int64_t chunk_begin(int64_t n, int64_t K, int64_t k) {
  return k * (n / K) + (k < n % K ? k : n % K);
}

// Fixed-shape tree over `count` states in shared memory (count a power of two); result in sh[0].
template <typename Op, typename State>
__device__ __forceinline__ void tree_reduce(State* sh, int tid, int count) {
  for (int stride = count / 2; stride > 0; stride /= 2) {
    if (tid < stride) sh[tid] = Op::merge(sh[tid], sh[tid + stride]);
    __syncthreads();
  }
}

// NCHW: block (chunk k, channel c) reduces values i ∈ chunk k of [0, R), i = b·S + s, at
// address (b·C + c)·S + s. The (b, s) of a thread advance by blockDim without a division.
// out[c·K + k] = the chunk's state.
template <typename Op>
__global__ void __launch_bounds__(kReduceThreads)
    bn_reduce_nchw(Op op, BNShape s, int64_t K, typename Op::State* __restrict__ out) {
  using State = typename Op::State;
  __shared__ State sh[kReduceThreads];
  const int tid = threadIdx.x;
  const int64_t R = s.B * s.S;
  const int64_t step_b = kReduceThreads / s.S, step_s = kReduceThreads % s.S;
  for (int64_t c = blockIdx.y; c < s.C; c += gridDim.y) {
    const auto p = op.params(c);
    for (int64_t k = blockIdx.x; k < K; k += gridDim.x) {
      const int64_t i1 = chunk_begin(R, K, k + 1);
      int64_t i = chunk_begin(R, K, k) + tid;
      int64_t b = i / s.S, sp = i - b * s.S;
      State st = Op::init();
      for (; i < i1; i += kReduceThreads) {
        op.add(st, p, (b * s.C + c) * s.S + sp);
        sp += step_s;
        b += step_b;
        if (sp >= s.S) {
          sp -= s.S;
          ++b;
        }
      }
      sh[tid] = st;
      __syncthreads();
      tree_reduce<Op>(sh, tid, kReduceThreads);
      if (tid == 0) out[c * K + k] = sh[0];
      __syncthreads();
    }
  }
}

// channels_last: rows of C channels. Block (32 channels, 8 rows): thread (tx, ty) reduces
// channel c0 + tx over rows ty, ty + 8, ... of chunk k; then row 0 merges the 8 in order.
template <typename Op>
__global__ void __launch_bounds__(kClTileC* kClTileR)
    bn_reduce_cl(Op op, BNShape s, int64_t K, typename Op::State* __restrict__ out) {
  using State = typename Op::State;
  __shared__ State sh[kClTileR][kClTileC];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t R = s.B * s.S;
  for (int64_t c0 = static_cast<int64_t>(blockIdx.x) * kClTileC; c0 < s.C;
       c0 += static_cast<int64_t>(gridDim.x) * kClTileC) {
    const int64_t c = c0 + tx;
    for (int64_t k = blockIdx.y; k < K; k += gridDim.y) {
      State st = Op::init();
      if (c < s.C) {
        const auto p = op.params(c);
        const int64_t r1 = chunk_begin(R, K, k + 1);
        for (int64_t r = chunk_begin(R, K, k) + ty; r < r1; r += kClTileR) op.add(st, p, r * s.C + c);
      }
      sh[ty][tx] = st;
      __syncthreads();
      if (ty == 0 && c < s.C) {
        for (int y = 1; y < kClTileR; ++y) st = Op::merge(st, sh[y][tx]);
        out[c * K + k] = st;
      }
      __syncthreads();
    }
  }
}

// Per channel: merge the K chunk states in order; μ, rstd and the running statistics.
template <typename acc_t>
__global__ void bn_stats_finalize(const Welford<acc_t>* __restrict__ part, int64_t C, int64_t K, int64_t R,
                                  const acc_t* __restrict__ running_mean, const acc_t* __restrict__ running_var,
                                  double momentum, double eps, acc_t* __restrict__ save_mean,
                                  acc_t* __restrict__ save_rstd, acc_t* __restrict__ new_rm,
                                  acc_t* __restrict__ new_rv) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Welford<acc_t> st = part[c * K];
    for (int64_t k = 1; k < K; ++k) st = welford_merge(st, part[c * K + k]);
    save_mean[c] = st.mean;
    save_rstd[c] = rstd_of(st.m2, R, eps);
    if (new_rm != nullptr) {
      // running = (1 − momentum)·running + momentum·batch, in acc_t, as the CPU op computes it.
      const acc_t m = static_cast<acc_t>(momentum);
      const acc_t unbiased = static_cast<acc_t>(static_cast<double>(st.m2) / static_cast<double>(R - 1));
      new_rm[c] = m * st.mean + (acc_t(1) - m) * running_mean[c];
      new_rv[c] = m * unbiased + (acc_t(1) - m) * running_var[c];
    }
  }
}

// Per channel: Σdz and Σdz·x̂ from the K chunk partials (none when part is null: eval without
// parameter gradients), dγ and dβ, and the coefficients of dx = k·dz + k_x̂·x̂ + k_1:
//   k = γ·rstd,  k_x̂ = −k·mean(dz·x̂),  k_1 = −k·mean(dz)   (training; both 0 in eval).
template <typename acc_t>
__global__ void bn_backward_finalize(const GradSums<acc_t>* __restrict__ part, int64_t C, int64_t K, int64_t R,
                                     bool training, const acc_t* __restrict__ rstd, const acc_t* __restrict__ w,
                                     acc_t* __restrict__ dweight, acc_t* __restrict__ dbias,
                                     acc_t* __restrict__ coef) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    acc_t sum_dz = 0, sum_dzx = 0;
    if (part != nullptr) {
      for (int64_t k = 0; k < K; ++k) {
        sum_dz += part[c * K + k].dz;
        sum_dzx += part[c * K + k].dz_xhat;
      }
    }
    if (dweight != nullptr) dweight[c] = sum_dzx;
    if (dbias != nullptr) dbias[c] = sum_dz;
    const double k = static_cast<double>(w[c]) * static_cast<double>(rstd[c]);
    coef[c] = static_cast<acc_t>(k);
    coef[C + c] = static_cast<acc_t>(training ? -k * static_cast<double>(sum_dzx) / static_cast<double>(R) : 0.0);
    coef[2 * C + c] = static_cast<acc_t>(training ? -k * static_cast<double>(sum_dz) / static_cast<double>(R) : 0.0);
  }
}

// Elementwise passes. The tensor is `outer` runs of `inner` contiguous values: NCHW, B·C planes
// of S (the channel is plane % C, once per run); channels_last, R rows of C (the channel is the
// position in the row). Thread (tx, ty) of a block takes vector tx of run ty.
template <typename T>
struct ApplyOp {  // y = f((x − μ)·γ·rstd + β)
  using acc_t = acc_type<T>;
  const T* x;
  T* y;
  const acc_t *mean, *rstd, *w, *b;
  template <Act A, int V>
  __device__ void run(int64_t idx, const int64_t (&c)[V]) const {
    acc_t v[V];
    load_pack<V>(x + idx, v);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = act_forward<A>((v[k] - mean[c[k]]) * (w[c[k]] * rstd[c[k]]) + b[c[k]]);
    store_pack<V>(y + idx, v);
  }
};

template <typename T>
struct GradInputOp {  // dx = k·dz + k_x̂·x̂ + k_1 in training, k·dz in eval
  using acc_t = acc_type<T>;
  const T* x;
  const T* dy;
  T* dx;
  const acc_t *mean, *rstd, *w, *b, *coef;
  int64_t C;
  bool training;
  template <Act A, int V>
  __device__ void run(int64_t idx, const int64_t (&c)[V]) const {
    acc_t xv[V], dyv[V];
    load_pack<V>(x + idx, xv);
    load_pack<V>(dy + idx, dyv);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const int64_t ch = c[k];
      const acc_t xh = (xv[k] - mean[ch]) * rstd[ch];
      const acc_t dz = dyv[k] * act_derivative<A>(xh * w[ch] + b[ch]);
      // In eval the x̂ and constant terms are absent, not multiplied by 0: an infinite x̂ must not
      // turn k·dz into ∞·0 = NaN (torch's eval backward is γ·rstd·dz).
      xv[k] = training ? dz * coef[ch] + (xh * coef[C + ch] + coef[2 * C + ch]) : dz * coef[ch];
    }
    store_pack<V>(dx + idx, xv);
  }
};

// __launch_bounds__(…, 3): at least 3 blocks of 256 an SM, so at most 85 registers a thread.
// Without a minimum, ptxas (sm_90) gave the float32 channels_last dx pass (no activation) 64
// registers and 8 bytes of spills a thread; asked for 3 blocks it fits in 62, and no float32,
// bfloat16 or float16 instantiation spills (.ci/cuda_build_check.sh checks).
template <Act A, bool kChannelsLast, int V, typename Op>
__global__ void __launch_bounds__(kElementwiseThreads, 3) bn_elementwise(Op op, BNShape s) {
  const int64_t inner = kChannelsLast ? s.C : s.S;
  const int64_t outer = kChannelsLast ? s.B * s.S : s.B * s.C;
  const int64_t nvec = inner / V;
  for (int64_t o = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; o < outer;
       o += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    const int64_t plane_c = kChannelsLast ? 0 : o % s.C;
    for (int64_t iv = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; iv < nvec;
         iv += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      int64_t c[V];
#pragma unroll
      for (int k = 0; k < V; ++k) c[k] = kChannelsLast ? iv * V + k : plane_c;
      op.template run<A, V>(o * inner + iv * V, c);
    }
  }
}

// Launch shape of an elementwise pass: as many threads along the run as it has vectors (a power
// of two up to 256), the rest of the 256 across runs.
template <Act A, bool kChannelsLast, int V, typename Op>
cudaError_t launch_elementwise(const Op& op, const BNShape& s, cudaStream_t stream) {
  const int64_t inner = s.channels_last ? s.C : s.S;
  const int64_t outer = s.channels_last ? s.B * s.S : s.B * s.C;
  const int64_t nvec = inner / V;
  int tx = 1;
  while (tx < kElementwiseThreads && tx < nvec) tx *= 2;
  const int ty = kElementwiseThreads / tx;
  const dim3 block(tx, ty);
  const dim3 grid(static_cast<unsigned>(std::min(ceil_div(nvec, tx), kMaxGrid)),
                  static_cast<unsigned>(std::min(ceil_div(outer, ty), kMaxGrid)));
  bn_elementwise<A, kChannelsLast, V><<<grid, block, 0, stream>>>(op, s);
  return cudaGetLastError();
}

// Chunks per channel for the reductions: a function of the shape (and the tuning) only, so results
// are bitwise repeatable; about bn_target_blocks blocks in all, and at least bn_chunk_values_nchw
// (NCHW) or bn_chunk_values_cl (channels_last) values per chunk.
int64_t reduce_chunks(const BNShape& s) {
  const int64_t R = s.B * s.S, blocks = bn_target_blocks.get();
  const int64_t K = s.channels_last
                        ? std::min(ceil_div(R, bn_chunk_values_cl.get()), ceil_div(blocks, ceil_div(s.C, kClTileC)))
                        : std::min(ceil_div(R, bn_chunk_values_nchw.get()), ceil_div(blocks, s.C));
  return std::max<int64_t>(1, std::min(K, kMaxGrid));
}

template <typename Op>
cudaError_t launch_reduce(const Op& op, const BNShape& s, int64_t K, typename Op::State* out, cudaStream_t stream) {
  if (s.channels_last) {
    const dim3 grid(static_cast<unsigned>(std::min(ceil_div(s.C, kClTileC), kMaxGrid)), static_cast<unsigned>(K));
    bn_reduce_cl<<<grid, dim3(kClTileC, kClTileR), 0, stream>>>(op, s, K, out);
  } else {
    const dim3 grid(static_cast<unsigned>(K), static_cast<unsigned>(std::min(s.C, kMaxGrid)));
    bn_reduce_nchw<<<grid, kReduceThreads, 0, stream>>>(op, s, K, out);
  }
  return cudaGetLastError();
}

unsigned per_channel_grid(int64_t C) { return static_cast<unsigned>(std::min(ceil_div(C, 256), kMaxGrid)); }

size_t round_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Host-side: how the LayerNorm backward splits its rows into workers (its partial rows).
struct LnBackwardPlan {
  bool warp;
  int64_t blocks, workers;
};
template <typename T>
LnBackwardPlan ln_backward_plan(int64_t M, int64_t N) {
  const int64_t min_rows = ln_min_rows_per_worker.get();
  if (N <= std::min<int64_t>(ln_backward_warp_row_max.get(), backward_warp_row_max<T>())) {
    const int64_t blocks =
        std::max<int64_t>(1, std::min(ceil_div(M, kWarpsPerBlock * min_rows), kMaxWarpWorkerBlocks));
    return {true, blocks, blocks * kWarpsPerBlock};
  }
  const int64_t blocks = std::max<int64_t>(1, std::min(ceil_div(M, min_rows), kMaxRowWorkerBlocks));
  return {false, blocks, blocks};
}

}  // namespace

TuningTable norm_act_tuning() {
  static TuningParam* const params[] = {&ln_warp_row_max,        &ln_backward_warp_row_max, &ln_row_cache_bytes,
                                        &ln_min_rows_per_worker, &bn_chunk_values_nchw,     &bn_chunk_values_cl,
                                        &bn_target_blocks};
  return {params, static_cast<int>(sizeof(params) / sizeof(params[0]))};
}

// ---------------------------------------------------------------------------------------------
// Launchers.

template <typename T>
cudaError_t layer_norm_act_forward(Act act, const T* x, const acc_type<T>* weight, const acc_type<T>* bias, T* y,
                                   acc_type<T>* mean, acc_type<T>* rstd, int64_t M, int64_t N, double eps,
                                   cudaStream_t stream) {
  if (M == 0 || N == 0) return cudaSuccess;
  constexpr int kV = vec_width<T>();
  const bool vec = N % kV == 0 && aligned16(x) && aligned16(y);
  return dispatch_act(act, [&](auto a) {
    constexpr Act A = decltype(a)::value;
    if (N <= ln_warp_row_max.get()) {
      const unsigned grid = static_cast<unsigned>(std::min(ceil_div(M, kWarpsPerBlock), kMaxGrid));
      if (vec)
        ln_forward_warp<A, T, kV><<<grid, kWarpsPerBlock * kWarp, 0, stream>>>(x, weight, bias, y, mean, rstd, M, N, eps);
      else
        ln_forward_warp<A, T, 1><<<grid, kWarpsPerBlock * kWarp, 0, stream>>>(x, weight, bias, y, mean, rstd, M, N, eps);
    } else {
      const unsigned grid = static_cast<unsigned>(std::min(M, kMaxGrid));
      const bool cache = N * static_cast<int64_t>(sizeof(T)) <= ln_row_cache_bytes.get();
      const size_t smem = cache ? static_cast<size_t>(N) * sizeof(T) : 0;
      if (vec)
        ln_forward_block<A, T, kV><<<grid, kRowBlockThreads, smem, stream>>>(x, weight, bias, y, mean, rstd, M, N, eps, cache);
      else
        ln_forward_block<A, T, 1><<<grid, kRowBlockThreads, smem, stream>>>(x, weight, bias, y, mean, rstd, M, N, eps, cache);
    }
    return cudaGetLastError();
  });
}

template <typename T>
size_t layer_norm_act_backward_workspace_bytes(int64_t M, int64_t N) {
  if (M == 0 || N == 0) return 0;
  const LnBackwardPlan plan = ln_backward_plan<T>(M, N);
  return 2 * round_up(static_cast<size_t>(plan.workers) * static_cast<size_t>(N) * sizeof(acc_type<T>));
}

template <typename T>
cudaError_t layer_norm_act_backward(Act act, const T* dy, const T* x, const acc_type<T>* mean,
                                    const acc_type<T>* rstd, const acc_type<T>* weight, const acc_type<T>* bias,
                                    T* dx, T* dweight, T* dbias, void* workspace, int64_t M, int64_t N,
                                    cudaStream_t stream) {
  using acc_t = acc_type<T>;
  if (M == 0 || N == 0) return cudaSuccess;
  const LnBackwardPlan plan = ln_backward_plan<T>(M, N);
  const size_t part_bytes = round_up(static_cast<size_t>(plan.workers) * static_cast<size_t>(N) * sizeof(acc_t));
  acc_t* dw_part = dweight != nullptr ? static_cast<acc_t*>(workspace) : nullptr;
  acc_t* db_part =
      dbias != nullptr ? reinterpret_cast<acc_t*>(static_cast<unsigned char*>(workspace) + part_bytes) : nullptr;
  constexpr int kV = vec_width<T>();
  const bool vec = N % kV == 0 && aligned16(x) && aligned16(dy) && (dx == nullptr || aligned16(dx));
  const cudaError_t err = dispatch_act(act, [&](auto a) {
    constexpr Act A = decltype(a)::value;
    const unsigned grid = static_cast<unsigned>(plan.blocks);
    if (plan.warp) {
      if (vec)
        ln_backward_warp<A, T, kV><<<grid, kWarpsPerBlock * kWarp, 0, stream>>>(dy, x, mean, rstd, weight, bias, dx,
                                                                                dw_part, db_part, M, N);
      else
        ln_backward_warp<A, T, 1><<<grid, kWarpsPerBlock * kWarp, 0, stream>>>(dy, x, mean, rstd, weight, bias, dx,
                                                                               dw_part, db_part, M, N);
    } else {
      const bool cache = dx != nullptr && 2 * N * static_cast<int64_t>(sizeof(T)) <= ln_row_cache_bytes.get();
      const size_t smem = cache ? 2 * static_cast<size_t>(N) * sizeof(T) : 0;
      if (vec)
        ln_backward_block<A, T, kV><<<grid, kRowBlockThreads, smem, stream>>>(dy, x, mean, rstd, weight, bias, dx,
                                                                              dw_part, db_part, M, N, cache);
      else
        ln_backward_block<A, T, 1><<<grid, kRowBlockThreads, smem, stream>>>(dy, x, mean, rstd, weight, bias, dx,
                                                                             dw_part, db_part, M, N, cache);
    }
    return cudaGetLastError();
  });
  if (err != cudaSuccess) return err;
  const unsigned grid = static_cast<unsigned>(std::min(ceil_div(N, kWarp), kMaxGrid));
  for (auto [part, out] : {std::make_pair(dw_part, dweight), std::make_pair(db_part, dbias)}) {
    if (out == nullptr) continue;
    sum_partial_rows<T><<<grid, dim3(kWarp, 16), 0, stream>>>(part, plan.workers, N, out);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

template <typename T>
size_t batch_norm_act_stats_workspace_bytes(BNShape s) {
  return round_up(static_cast<size_t>(s.C * reduce_chunks(s)) * sizeof(Welford<acc_type<T>>));
}

template <typename T>
cudaError_t batch_norm_act_stats(const T* x, BNShape s, const acc_type<T>* running_mean,
                                 const acc_type<T>* running_var, double momentum, double eps, acc_type<T>* save_mean,
                                 acc_type<T>* save_rstd, acc_type<T>* new_running_mean,
                                 acc_type<T>* new_running_var, void* workspace, cudaStream_t stream) {
  using acc_t = acc_type<T>;
  const int64_t R = s.B * s.S;
  if (s.C == 0 || R == 0) return cudaSuccess;
  const int64_t K = reduce_chunks(s);
  auto* part = static_cast<Welford<acc_t>*>(workspace);
  const cudaError_t err = launch_reduce(StatsOp<T>{x}, s, K, part, stream);
  if (err != cudaSuccess) return err;
  bn_stats_finalize<acc_t><<<per_channel_grid(s.C), 256, 0, stream>>>(part, s.C, K, R, running_mean, running_var,
                                                                       momentum, eps, save_mean, save_rstd,
                                                                       new_running_mean, new_running_var);
  return cudaGetLastError();
}

template <typename T>
cudaError_t batch_norm_act_apply(Act act, const T* x, BNShape s, const acc_type<T>* mean, const acc_type<T>* rstd,
                                 const acc_type<T>* weight, const acc_type<T>* bias, T* y, cudaStream_t stream) {
  if (s.C == 0 || s.B * s.S == 0) return cudaSuccess;
  constexpr int kV = vec_width<T>();
  const int64_t inner = s.channels_last ? s.C : s.S;
  const bool vec = inner % kV == 0 && aligned16(x) && aligned16(y);
  const ApplyOp<T> op{x, y, mean, rstd, weight, bias};
  return dispatch_act(act, [&](auto a) {
    constexpr Act A = decltype(a)::value;
    if (s.channels_last)
      return vec ? launch_elementwise<A, true, kV>(op, s, stream) : launch_elementwise<A, true, 1>(op, s, stream);
    return vec ? launch_elementwise<A, false, kV>(op, s, stream) : launch_elementwise<A, false, 1>(op, s, stream);
  });
}

template <typename T>
size_t batch_norm_act_backward_workspace_bytes(BNShape s) {
  using acc_t = acc_type<T>;
  return round_up(static_cast<size_t>(s.C * reduce_chunks(s)) * sizeof(GradSums<acc_t>)) +
         round_up(3 * static_cast<size_t>(s.C) * sizeof(acc_t));
}

template <typename T>
cudaError_t batch_norm_act_backward(Act act, const T* dy, const T* x, BNShape s, const acc_type<T>* mean,
                                    const acc_type<T>* rstd, const acc_type<T>* weight, const acc_type<T>* bias,
                                    bool training, T* dx, acc_type<T>* dweight, acc_type<T>* dbias, void* workspace,
                                    cudaStream_t stream) {
  using acc_t = acc_type<T>;
  const int64_t R = s.B * s.S;
  if (s.C == 0 || R == 0) return cudaSuccess;
  const int64_t K = reduce_chunks(s);
  auto* part = static_cast<GradSums<acc_t>*>(workspace);
  auto* coef = reinterpret_cast<acc_t*>(static_cast<unsigned char*>(workspace) +
                                        round_up(static_cast<size_t>(s.C * K) * sizeof(GradSums<acc_t>)));
  // The sums are needed for dγ, dβ, and for dx in training (terms 2 and 3).
  const bool sums = dweight != nullptr || dbias != nullptr || (training && dx != nullptr);
  return dispatch_act(act, [&](auto a) {
    constexpr Act A = decltype(a)::value;
    if (sums) {
      const cudaError_t e = launch_reduce(GradSumsOp<A, T>{x, dy, mean, rstd, weight, bias}, s, K, part, stream);
      if (e != cudaSuccess) return e;
    }
    bn_backward_finalize<acc_t><<<per_channel_grid(s.C), 256, 0, stream>>>(sums ? part : nullptr, s.C, K, R, training,
                                                                           rstd, weight, dweight, dbias, coef);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || dx == nullptr) return e;
    constexpr int kV = vec_width<T>();
    const int64_t inner = s.channels_last ? s.C : s.S;
    const bool vec = inner % kV == 0 && aligned16(x) && aligned16(dy) && aligned16(dx);
    const GradInputOp<T> op{x, dy, dx, mean, rstd, weight, bias, coef, s.C, training};
    if (s.channels_last)
      return vec ? launch_elementwise<A, true, kV>(op, s, stream) : launch_elementwise<A, true, 1>(op, s, stream);
    return vec ? launch_elementwise<A, false, kV>(op, s, stream) : launch_elementwise<A, false, 1>(op, s, stream);
  });
}

#define MTNN_INSTANTIATE(T)                                                                                          \
  template cudaError_t layer_norm_act_forward<T>(Act, const T*, const acc_type<T>*, const acc_type<T>*, T*,         \
                                                 acc_type<T>*, acc_type<T>*, int64_t, int64_t, double, cudaStream_t); \
  template size_t layer_norm_act_backward_workspace_bytes<T>(int64_t, int64_t);                                      \
  template cudaError_t layer_norm_act_backward<T>(Act, const T*, const T*, const acc_type<T>*, const acc_type<T>*,  \
                                                  const acc_type<T>*, const acc_type<T>*, T*, T*, T*, void*, int64_t, \
                                                  int64_t, cudaStream_t);                                            \
  template size_t batch_norm_act_stats_workspace_bytes<T>(BNShape);                                                 \
  template cudaError_t batch_norm_act_stats<T>(const T*, BNShape, const acc_type<T>*, const acc_type<T>*, double,  \
                                               double, acc_type<T>*, acc_type<T>*, acc_type<T>*, acc_type<T>*, void*, \
                                               cudaStream_t);                                                        \
  template cudaError_t batch_norm_act_apply<T>(Act, const T*, BNShape, const acc_type<T>*, const acc_type<T>*,     \
                                               const acc_type<T>*, const acc_type<T>*, T*, cudaStream_t);            \
  template size_t batch_norm_act_backward_workspace_bytes<T>(BNShape);                                              \
  template cudaError_t batch_norm_act_backward<T>(Act, const T*, const T*, BNShape, const acc_type<T>*,            \
                                                  const acc_type<T>*, const acc_type<T>*, const acc_type<T>*, bool, \
                                                  T*, acc_type<T>*, acc_type<T>*, void*, cudaStream_t);

MTNN_INSTANTIATE(float)
MTNN_INSTANTIATE(double)
MTNN_INSTANTIATE(__half)
MTNN_INSTANTIATE(__nv_bfloat16)
#undef MTNN_INSTANTIATE

}  // namespace cuda
}  // namespace minitorch_nn
