// LayerNorm + activation on CUDA as a kernel ladder: each rung adds one idea to the one before.
//
// Reading order: csrc/cpu/ln_ladder.cpp (the math as plain loops, the CPU's rungs), then rungs 1, 2
// and 3 here, then rung 4, the production kernels of norm_act.cu (ln_forward_warp / ln_forward_block,
// ln_backward_warp / ln_backward_block). Plain CUDA C++ without torch, so `nvcc -c` checks it anywhere;
// the launchers are declared in ln_ladder.h, the torch glue is ln_ladder_ops.h, and the same code runs
// on the CUDA emulator (csrc/emu/). From Python: minitorch_nn.kernels.layer_norm_act(..., rung=).
//
// Dimensions: M rows × N values. The math (minitorch_nn/functional/normalization.py derives it):
//   forward   μ = K + (1/N)·Σ(x − K), K = x[0];   σ² = (1/N)·Σ(x − μ)²;   rstd = 1/√(σ² + eps)
//             x̂ = (x − μ)·rstd,  z = γ·x̂ + β,  y = f(z)
//   backward  dz = dy·f'(z),  g = γ·dz,  dx = rstd·(g − mean(g) − x̂·mean(g·x̂))   (terms 1, 2, 3)
//             dγ = Σ_rows dz·x̂,  dβ = Σ_rows dz
// Bytes moved, at least: the forward reads x and writes y (2·M·N values), the backward reads x and dy
// and writes dx (3·M·N). Arithmetic is in acc_t (float for float, half and bfloat16; double for double).
//
//   rung  the rows (forward, dx)                       dγ, dβ
//    1    a thread per row                             a thread per column, over all M rows
//    2    a warp per row: lanes on adjacent values     the rows cut into P chunks: a thread per (chunk,
//         (coalesced), sums by __shfl_xor_sync         column) sums its chunk; a thread per column
//                                                      then adds the P partial sums in order
//    3    rung 2 with 128-bit loads and stores         rung 2's
//    4    norm_act.cu: the row read from memory once, held in registers (a warp per row, N ≤ 1024)
//         or shared memory (a block per row); dγ, dβ summed in the dx pass (x and dy read once)
//
// Every loop over rows, columns or chunks is grid-stride with 64-bit indices: any M and N run within
// the grid limits (the emulator's capped build, MTNN_MAX_GRID=3, makes every loop iterate). No atomics:
// every sum has a fixed order, so results are the same bits every run. Block and chunk sizes are first
// guesses, not yet measured on a GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "common.cuh"
#include "ln_ladder.h"

namespace minitorch_nn {
namespace cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 128;        // rung 1 and the column kernels: threads a block
constexpr int kWarpsPerBlock = 4;    // rungs 2 and 3: a block is 4 warps, 4 rows at a time
constexpr int64_t kRowsPerChunk = 32;  // dγ, dβ of rungs 2-3: rows a (chunk, column) thread sums
constexpr int64_t kMaxChunks = 1024;   // ... and at most this many chunks (partial rows)

// rstd = 1/√(m2/n + eps), in double as every other kernel of the project computes it (once a row).
template <typename acc_t>
__device__ __forceinline__ acc_t rstd_of(acc_t m2, int64_t n, double eps) {
  return static_cast<acc_t>(1.0 / ::sqrt(static_cast<double>(m2) / static_cast<double>(n) + eps));
}

// ---------------------------------------------------------------------------------------------
// Rung 1: a thread per row.
//
// Thread r runs the CPU rung 1's loops over row r. Simple, and slow on a GPU for two reasons. The 32
// threads of a warp execute each load together, and here they read 32 addresses N values apart: 32
// separate memory transactions, each used for one value (uncoalesced; the caches recover some of it
// while a row's next values are still there). And there are only M threads, too few to keep the
// GPU's memory system busy unless M is in the tens of thousands.

template <Act A, typename T>
__global__ void __launch_bounds__(kThreads)
    ln_forward_rung1(const T* __restrict__ X, const acc_type<T>* __restrict__ W, const acc_type<T>* __restrict__ B,
                     T* __restrict__ Y, acc_type<T>* __restrict__ mean, acc_type<T>* __restrict__ rstd, int64_t M,
                     int64_t N, double eps) {
  using acc_t = acc_type<T>;
  const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < M; r += threads) {
    const T* x = X + r * N;
    const acc_t shift = Cvt<T>::to(x[0]);
    acc_t sum = 0;
    for (int64_t j = 0; j < N; ++j) sum += Cvt<T>::to(x[j]) - shift;
    const acc_t mu = shift + sum / static_cast<acc_t>(N);
    acc_t m2 = 0;
    for (int64_t j = 0; j < N; ++j) {
      const acc_t d = Cvt<T>::to(x[j]) - mu;
      m2 += d * d;
    }
    const acc_t rs = rstd_of(m2, N, eps);
    for (int64_t j = 0; j < N; ++j) {
      const acc_t xhat = (Cvt<T>::to(x[j]) - mu) * rs;
      Y[r * N + j] = Cvt<T>::from(act_forward<A>(xhat * W[j] + B[j]));
    }
    mean[r] = mu;
    rstd[r] = rs;
  }
}

// dx, a thread per row: the sums of terms 2 and 3, then dx (x̂ and f' recomputed).
template <Act A, typename T>
__global__ void __launch_bounds__(kThreads)
    ln_backward_dx_rung1(const T* __restrict__ dY, const T* __restrict__ X, const acc_type<T>* __restrict__ mean,
                         const acc_type<T>* __restrict__ rstd, const acc_type<T>* __restrict__ W,
                         const acc_type<T>* __restrict__ B, T* __restrict__ dX, int64_t M, int64_t N) {
  using acc_t = acc_type<T>;
  const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < M; r += threads) {
    const T* x = X + r * N;
    const T* dy = dY + r * N;
    const acc_t mu = mean[r], rs = rstd[r];
    acc_t sum_g = 0, sum_gx = 0;
    for (int64_t j = 0; j < N; ++j) {
      const acc_t xhat = (Cvt<T>::to(x[j]) - mu) * rs;
      const acc_t g = Cvt<T>::to(dy[j]) * act_derivative<A>(xhat * W[j] + B[j]) * W[j];
      sum_g += g;
      sum_gx += g * xhat;
    }
    const acc_t mean_g = sum_g / static_cast<acc_t>(N), mean_gx = sum_gx / static_cast<acc_t>(N);
    for (int64_t j = 0; j < N; ++j) {
      const acc_t xhat = (Cvt<T>::to(x[j]) - mu) * rs;
      const acc_t g = Cvt<T>::to(dy[j]) * act_derivative<A>(xhat * W[j] + B[j]) * W[j];
      dX[r * N + j] = Cvt<T>::from(rs * (g - mean_g - xhat * mean_gx));  // terms 1, 2, 3
    }
  }
}

// dγ and dβ by columns. Thread (p, j) sums column j over chunk p of the rows, M·p/P ≤ r < M·(p+1)/P:
// Σ dz·x̂ into dw[p·N + j] and Σ dz into db[p·N + j] (each skipped when null), x̂ and dz recomputed
// from x, dy and the row's μ and rstd. A warp's threads take 32 adjacent columns of a row, so these
// loads are coalesced. Rung 1 runs it with P = 1 straight into dγ and dβ (Out = T): N threads, each
// reading a whole column. Rungs 2 and 3 run it with P chunks into partial rows (Out = acc_t): P·N
// threads, whose partial sums sum_chunks adds.
template <Act A, typename T, typename Out>
__global__ void __launch_bounds__(kThreads)
    ln_dweight_dbias_columns(const T* __restrict__ dY, const T* __restrict__ X, const acc_type<T>* __restrict__ mean,
                             const acc_type<T>* __restrict__ rstd, const acc_type<T>* __restrict__ W,
                             const acc_type<T>* __restrict__ B, Out* __restrict__ dw, Out* __restrict__ db,
                             int64_t M, int64_t N, int64_t P) {
  using acc_t = acc_type<T>;
  const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = blockIdx.y; p < P; p += gridDim.y) {
    const int64_t r0 = M * p / P, r1 = M * (p + 1) / P;
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < N; j += threads) {
      acc_t sum_w = 0, sum_b = 0;
      for (int64_t r = r0; r < r1; ++r) {
        const acc_t xhat = (Cvt<T>::to(X[r * N + j]) - mean[r]) * rstd[r];
        const acc_t dz = Cvt<T>::to(dY[r * N + j]) * act_derivative<A>(xhat * W[j] + B[j]);
        sum_w += dz * xhat;
        sum_b += dz;
      }
      if (dw != nullptr) dw[p * N + j] = Cvt<Out>::from(sum_w);
      if (db != nullptr) db[p * N + j] = Cvt<Out>::from(sum_b);
    }
  }
}

// out[j] = Σ_p part[p·N + j], adding p = 0, 1, ..., P − 1 in order: a thread per column.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    sum_chunks(const acc_type<T>* __restrict__ part, int64_t P, int64_t N, T* __restrict__ out) {
  using acc_t = acc_type<T>;
  const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < N; j += threads) {
    acc_t s = 0;
    for (int64_t p = 0; p < P; ++p) s += part[p * N + j];
    out[j] = Cvt<T>::from(s);
  }
}

// ---------------------------------------------------------------------------------------------
// Rung 2: a warp per row.
//
// The 32 lanes of a warp share a row: lane l takes values l, l + 32, l + 64, ..., so at each step the
// warp reads 32 adjacent values (128 bytes of float: one transaction where rung 1 made 32), and 32·M
// threads work instead of M. Each lane sums its own values, then warp_allreduce_sum combines the 32 partial sums
// in five __shfl_xor_sync steps, register to register (no shared memory, no __syncthreads). Like rung 1,
// each pass reads the row again (after the first, mostly from L1/L2). dγ and dβ come from P·N threads
// (ln_dweight_dbias_columns with P chunks of rows, then sum_chunks) instead of rung 1's N.

// warp_allreduce_sum (common.cuh, shared with rung 4): Σ v over the 32 lanes, returned to every lane.
// Each xor step adds the same two numbers in both partner lanes (addition commutes exactly), so
// every lane ends with the same bits.

template <Act A, typename T>
__global__ void __launch_bounds__(kWarpsPerBlock* kWarp)
    ln_forward_rung2(const T* __restrict__ X, const acc_type<T>* __restrict__ W, const acc_type<T>* __restrict__ B,
                     T* __restrict__ Y, acc_type<T>* __restrict__ mean, acc_type<T>* __restrict__ rstd, int64_t M,
                     int64_t N, double eps) {
  using acc_t = acc_type<T>;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; r < M; r += warps) {
    const T* x = X + r * N;
    const acc_t shift = Cvt<T>::to(x[0]);
    acc_t sum = 0;
    for (int64_t j = lane; j < N; j += kWarp) sum += Cvt<T>::to(x[j]) - shift;
    const acc_t mu = shift + warp_allreduce_sum(sum) / static_cast<acc_t>(N);
    acc_t m2 = 0;
    for (int64_t j = lane; j < N; j += kWarp) {
      const acc_t d = Cvt<T>::to(x[j]) - mu;
      m2 += d * d;
    }
    const acc_t rs = rstd_of(warp_allreduce_sum(m2), N, eps);
    for (int64_t j = lane; j < N; j += kWarp) {
      const acc_t xhat = (Cvt<T>::to(x[j]) - mu) * rs;
      Y[r * N + j] = Cvt<T>::from(act_forward<A>(xhat * W[j] + B[j]));
    }
    if (lane == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
  }
}

template <Act A, typename T>
__global__ void __launch_bounds__(kWarpsPerBlock* kWarp)
    ln_backward_dx_rung2(const T* __restrict__ dY, const T* __restrict__ X, const acc_type<T>* __restrict__ mean,
                         const acc_type<T>* __restrict__ rstd, const acc_type<T>* __restrict__ W,
                         const acc_type<T>* __restrict__ B, T* __restrict__ dX, int64_t M, int64_t N) {
  using acc_t = acc_type<T>;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; r < M; r += warps) {
    const T* x = X + r * N;
    const T* dy = dY + r * N;
    const acc_t mu = mean[r], rs = rstd[r];
    acc_t sum_g = 0, sum_gx = 0;
    for (int64_t j = lane; j < N; j += kWarp) {
      const acc_t xhat = (Cvt<T>::to(x[j]) - mu) * rs;
      const acc_t g = Cvt<T>::to(dy[j]) * act_derivative<A>(xhat * W[j] + B[j]) * W[j];
      sum_g += g;
      sum_gx += g * xhat;
    }
    const acc_t mean_g = warp_allreduce_sum(sum_g) / static_cast<acc_t>(N);
    const acc_t mean_gx = warp_allreduce_sum(sum_gx) / static_cast<acc_t>(N);
    for (int64_t j = lane; j < N; j += kWarp) {
      const acc_t xhat = (Cvt<T>::to(x[j]) - mu) * rs;
      const acc_t g = Cvt<T>::to(dy[j]) * act_derivative<A>(xhat * W[j] + B[j]) * W[j];
      dX[r * N + j] = Cvt<T>::from(rs * (g - mean_g - xhat * mean_gx));  // terms 1, 2, 3
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Rung 3: 128-bit loads and stores.
//
// Rung 2 with each lane moving V = 16/sizeof(T) adjacent values in one access (4 floats, 8 bfloat16 or
// half, 2 doubles): the same bytes with a quarter (an eighth) of the load and store instructions, and
// more bytes in flight per instruction to cover memory latency. Lane l takes vectors l, l + 32, ...,
// so a warp still reads one contiguous stretch (512 bytes) per step. A 128-bit access must be 16-byte
// aligned: every row start must be, so N must be a multiple of V and the base pointers aligned; where
// they are not (N = 1023, a storage offset) the launcher runs rung 2 instead. γ and β (acc_t) are read
// a value at a time, as before: they are N values shared by all rows, served from cache.

// (Pack, load_pack / store_pack and vec_width are common.cuh's, shared with rung 4.)

template <Act A, typename T, int V>
__global__ void __launch_bounds__(kWarpsPerBlock* kWarp)
    ln_forward_rung3(const T* __restrict__ X, const acc_type<T>* __restrict__ W, const acc_type<T>* __restrict__ B,
                     T* __restrict__ Y, acc_type<T>* __restrict__ mean, acc_type<T>* __restrict__ rstd, int64_t M,
                     int64_t N, double eps) {
  using acc_t = acc_type<T>;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int64_t NV = N / V;  // vectors a row
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; r < M; r += warps) {
    const T* x = X + r * N;
    const acc_t shift = Cvt<T>::to(x[0]);
    acc_t v[V];
    acc_t sum = 0;
    for (int64_t i = lane; i < NV; i += kWarp) {
      load_pack<V>(x + i * V, v);
#pragma unroll
      for (int k = 0; k < V; ++k) sum += v[k] - shift;
    }
    const acc_t mu = shift + warp_allreduce_sum(sum) / static_cast<acc_t>(N);
    acc_t m2 = 0;
    for (int64_t i = lane; i < NV; i += kWarp) {
      load_pack<V>(x + i * V, v);
#pragma unroll
      for (int k = 0; k < V; ++k) m2 += (v[k] - mu) * (v[k] - mu);
    }
    const acc_t rs = rstd_of(warp_allreduce_sum(m2), N, eps);
    for (int64_t i = lane; i < NV; i += kWarp) {
      const int64_t j = i * V;
      load_pack<V>(x + j, v);
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] = act_forward<A>((v[k] - mu) * rs * W[j + k] + B[j + k]);
      store_pack<V>(Y + r * N + j, v);
    }
    if (lane == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
  }
}

template <Act A, typename T, int V>
__global__ void __launch_bounds__(kWarpsPerBlock* kWarp)
    ln_backward_dx_rung3(const T* __restrict__ dY, const T* __restrict__ X, const acc_type<T>* __restrict__ mean,
                         const acc_type<T>* __restrict__ rstd, const acc_type<T>* __restrict__ W,
                         const acc_type<T>* __restrict__ B, T* __restrict__ dX, int64_t M, int64_t N) {
  using acc_t = acc_type<T>;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int64_t NV = N / V;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; r < M; r += warps) {
    const acc_t mu = mean[r], rs = rstd[r];
    acc_t xv[V], dyv[V];
    acc_t sum_g = 0, sum_gx = 0;
    for (int64_t i = lane; i < NV; i += kWarp) {
      const int64_t j = i * V;
      load_pack<V>(X + r * N + j, xv);
      load_pack<V>(dY + r * N + j, dyv);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const acc_t xhat = (xv[k] - mu) * rs;
        const acc_t g = dyv[k] * act_derivative<A>(xhat * W[j + k] + B[j + k]) * W[j + k];
        sum_g += g;
        sum_gx += g * xhat;
      }
    }
    const acc_t mean_g = warp_allreduce_sum(sum_g) / static_cast<acc_t>(N);
    const acc_t mean_gx = warp_allreduce_sum(sum_gx) / static_cast<acc_t>(N);
    for (int64_t i = lane; i < NV; i += kWarp) {
      const int64_t j = i * V;
      load_pack<V>(X + r * N + j, xv);
      load_pack<V>(dY + r * N + j, dyv);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const acc_t xhat = (xv[k] - mu) * rs;
        const acc_t g = dyv[k] * act_derivative<A>(xhat * W[j + k] + B[j + k]) * W[j + k];
        xv[k] = rs * (g - mean_g - xhat * mean_gx);  // terms 1, 2, 3
      }
      store_pack<V>(dX + r * N + j, xv);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side: grids and the dγ, dβ chunks.

unsigned grid_for(int64_t items, int64_t per_block) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(ceil_div(items, per_block), kMaxGrid)));
}

// P, the chunks of rows whose dγ, dβ partial rows rungs 2-3 add: enough (P·N threads) to fill a GPU,
// few enough that the partial rows (P·N values, written and read once) stay small next to x.
int64_t chunks_for(int64_t M) { return std::max<int64_t>(1, std::min(ceil_div(M, kRowsPerChunk), kMaxChunks)); }

size_t round_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Rung 3 where every row starts on a 16-byte boundary; rung 2 otherwise.
template <typename T>
bool rows_aligned(int64_t N, std::initializer_list<const void*> pointers) {
  if (N % vec_width<T>() != 0) return false;
  for (const void* p : pointers)
    if (p != nullptr && !aligned16(p)) return false;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Launchers.

template <typename T>
cudaError_t ln_ladder_forward(int rung, Act act, const T* x, const acc_type<T>* weight, const acc_type<T>* bias, T* y,
                              acc_type<T>* mean, acc_type<T>* rstd, int64_t M, int64_t N, double eps,
                              cudaStream_t stream) {
  if (M == 0 || N == 0) return cudaSuccess;
  constexpr int kV = vec_width<T>();
  const bool vec = rung == 3 && rows_aligned<T>(N, {x, y});
  return dispatch_act(act, [&](auto a) {
    constexpr Act A = decltype(a)::value;
    if (rung == 1) {
      ln_forward_rung1<A, T><<<grid_for(M, kThreads), kThreads, 0, stream>>>(x, weight, bias, y, mean, rstd, M, N, eps);
    } else if (vec) {
      ln_forward_rung3<A, T, kV><<<grid_for(M, kWarpsPerBlock), kWarpsPerBlock * kWarp, 0, stream>>>(
          x, weight, bias, y, mean, rstd, M, N, eps);
    } else {
      ln_forward_rung2<A, T><<<grid_for(M, kWarpsPerBlock), kWarpsPerBlock * kWarp, 0, stream>>>(
          x, weight, bias, y, mean, rstd, M, N, eps);
    }
    return cudaGetLastError();
  });
}

template <typename T>
size_t ln_ladder_backward_workspace_bytes(int rung, int64_t M, int64_t N) {
  if (rung == 1 || M == 0 || N == 0) return 0;
  return 2 * round_up(static_cast<size_t>(chunks_for(M) * N) * sizeof(acc_type<T>));
}

template <typename T>
cudaError_t ln_ladder_backward(int rung, Act act, const T* dy, const T* x, const acc_type<T>* mean,
                               const acc_type<T>* rstd, const acc_type<T>* weight, const acc_type<T>* bias, T* dx,
                               T* dweight, T* dbias, void* workspace, int64_t M, int64_t N, cudaStream_t stream) {
  using acc_t = acc_type<T>;
  if (M == 0 || N == 0) return cudaSuccess;
  constexpr int kV = vec_width<T>();
  const bool vec = rung == 3 && rows_aligned<T>(N, {x, dy, dx});
  return dispatch_act(act, [&](auto a) {
    constexpr Act A = decltype(a)::value;
    if (dx != nullptr) {
      if (rung == 1) {
        ln_backward_dx_rung1<A, T><<<grid_for(M, kThreads), kThreads, 0, stream>>>(dy, x, mean, rstd, weight, bias,
                                                                                    dx, M, N);
      } else if (vec) {
        ln_backward_dx_rung3<A, T, kV><<<grid_for(M, kWarpsPerBlock), kWarpsPerBlock * kWarp, 0, stream>>>(
            dy, x, mean, rstd, weight, bias, dx, M, N);
      } else {
        ln_backward_dx_rung2<A, T><<<grid_for(M, kWarpsPerBlock), kWarpsPerBlock * kWarp, 0, stream>>>(
            dy, x, mean, rstd, weight, bias, dx, M, N);
      }
      const cudaError_t e = cudaGetLastError();
      if (e != cudaSuccess) return e;
    }
    if (dweight == nullptr && dbias == nullptr) return cudaSuccess;
    const unsigned columns = grid_for(N, kThreads);
    if (rung == 1) {  // one chunk of all M rows, straight into dγ and dβ
      ln_dweight_dbias_columns<A, T, T><<<dim3(columns, 1), kThreads, 0, stream>>>(dy, x, mean, rstd, weight, bias,
                                                                                    dweight, dbias, M, N, 1);
      return cudaGetLastError();
    }
    const int64_t P = chunks_for(M);
    const size_t part_bytes = round_up(static_cast<size_t>(P * N) * sizeof(acc_t));
    acc_t* dw_part = dweight != nullptr ? static_cast<acc_t*>(workspace) : nullptr;
    acc_t* db_part =
        dbias != nullptr ? reinterpret_cast<acc_t*>(static_cast<unsigned char*>(workspace) + part_bytes) : nullptr;
    const dim3 grid(columns, static_cast<unsigned>(std::min(P, kMaxGrid)));
    ln_dweight_dbias_columns<A, T, acc_t><<<grid, kThreads, 0, stream>>>(dy, x, mean, rstd, weight, bias, dw_part,
                                                                          db_part, M, N, P);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    if (dweight != nullptr) {
      sum_chunks<T><<<columns, kThreads, 0, stream>>>(dw_part, P, N, dweight);
      e = cudaGetLastError();
      if (e != cudaSuccess) return e;
    }
    if (dbias != nullptr) {
      sum_chunks<T><<<columns, kThreads, 0, stream>>>(db_part, P, N, dbias);
      e = cudaGetLastError();
    }
    return e;
  });
}

#define MTNN_INSTANTIATE(T)                                                                                           \
  template cudaError_t ln_ladder_forward<T>(int, Act, const T*, const acc_type<T>*, const acc_type<T>*, T*,          \
                                            acc_type<T>*, acc_type<T>*, int64_t, int64_t, double, cudaStream_t);      \
  template size_t ln_ladder_backward_workspace_bytes<T>(int, int64_t, int64_t);                                       \
  template cudaError_t ln_ladder_backward<T>(int, Act, const T*, const T*, const acc_type<T>*, const acc_type<T>*,   \
                                             const acc_type<T>*, const acc_type<T>*, T*, T*, T*, void*, int64_t,      \
                                             int64_t, cudaStream_t);

MTNN_INSTANTIATE(float)
MTNN_INSTANTIATE(double)
MTNN_INSTANTIATE(__half)
MTNN_INSTANTIATE(__nv_bfloat16)
#undef MTNN_INSTANTIATE

}  // namespace cuda
}  // namespace minitorch_nn
