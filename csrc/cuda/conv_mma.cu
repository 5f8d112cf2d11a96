// conv2d on tensor cores: rung 3 of the CUDA conv ladder (declared in conv.h), forward only.
//
// What changes since rung 2 (conv_implicit.cu). The GEMM is the same; who multiplies changes.
// Rung 2 stages tiles of the GEMM in shared memory and lets each thread multiply a small register
// tile with FMAs. Here a warp hands 16x16 by 16x8 tiles to the tensor cores with one instruction
// (mma.sync m16n8k16: 4096 multiply-adds), in bfloat16 or float16 with float32 accumulation, and
// the tiles reach shared memory through cp.async, a copy that needs no registers and runs while
// the warps compute on the previous tiles. Only for what tensor cores and 16-byte copies like:
// NHWC, channels a multiple of 8, groups = 1 (conv2d_mma_supported; the glue falls back to rung 2).
//
// The GEMM view (the letters of csrc/conv_shape.h; groups = 1):
//   Y[m, o] = Σ_k A[m, k] · B[k, o]        m < M = N·OH·OW,  o < O,  k < K = kh·kw·C
//   m = (n, i, j)           an output pixel
//   k = (a, b, c)           a kernel tap and an input channel, TAP-MAJOR: k = (a·kw + b)·C + c
//   A[m, k] = x[n, c, i·stride_h − pad_top + a·dil_h, j·stride_w − pad_left + b·dil_w]  (0 in the padding)
//   B[k, o] = w[o, c, a, b]
// With x, w (and y) channels_last, i.e. channel stride 1, and C a multiple of 8, eight consecutive
// k (one tap, channels c..c+7, c a multiple of 8) are 16 contiguous bytes in x and in w. So every
// piece of A and B is copied as a 16-byte chunk, and a chunk is either all input or all padding.
// Nothing like im2col is ever stored: the chunk's address is computed when it is copied.
//
// Work: 2·M·O·K FLOPs. Bytes: x, w read (x about once from DRAM: the blocks of one m-tile are
// consecutive, see below, so they meet in L2), y written once; bias and the activation are applied
// before y leaves registers (the fused epilogue), so y is not read back.
//
// Tiling. A block owns a kBM x kBN = 128 x 128 tile of Y (128 pixels x 128 output channels) and
// walks k in slices of kBK = 32. Its 8 warps are 2 (along m) x 4 (along o); a warp owns a 64 x 32
// sub-tile = 4 x 4 mma tiles of 16 x 8, and per slice issues 2 (k16 steps) x 16 mma. A lane keeps
// its 4·4·4 = 64 float accumulators in registers for the whole k loop.
//   Tiles are numbered m-tile-major, o-tile fastest (tile = m_tile·o_tiles + o_tile), one tile per
// block per step of a grid-stride loop (the grid is capped at MTNN_MAX_GRID like every kernel of
// the project), so the blocks reading the same 128 input pixels run side by side.
//
// Shared memory and the pipeline. A stage holds one k-slice: A as 128 rows (pixels) x 32 k and B
// as 128 rows (output channels) x 32 k, both k-contiguous, 16 KiB; kStages = 3 stages, 48 KiB
// (all a block may have without the opt-in attribute). Per slice every thread copies 2 chunks of
// A and 2 of B with cp.async (zero-filled where the chunk is padding, past M, past O or past K),
// then commits them as one group. The loop, for slice kt:
//     wait until slice kt's group has landed (cp.async.wait_group kStages − 2); __syncthreads();
//     start the copies of slice kt + kStages − 1 into the stage slice kt − 1 used (the barrier just
//       passed means every warp is done reading it);
//     compute slice kt from its stage.
// So two slices are in flight while one is multiplied. Exactly one group is committed per
// iteration (empty past the end), which is what makes "wait_group kStages − 2" mean "slice kt".
//   Rows are 64 bytes (4 chunks); ldmatrix reads 8 rows' chunk at once, and with plain row-major
// rows 2 apart share banks. Chunk c of row r is stored at position c ^ ((r >> 1) & 3) of its row
// (an XOR swizzle): 8 consecutive rows' chunk c then land in 8 different 16-byte bank groups, so
// ldmatrix and the cp.async writes are free of bank conflicts, with no padding bytes.
//
// Fragment ownership (mma.cuh has the instruction semantics, from the PTX ISA). For one mma tile
// (16 pixels x 8 channels) lane l, g = l / 4, t = l % 4, holds the results for pixels g and g + 8,
// channels 2t and 2t + 1. Its A fragment (pixels g, g + 8; k 2t, 2t + 1, 2t + 8, 2t + 9) comes
// from one ldmatrix.x4 over the 16 x 16 A tile (matrix 0: pixels 0-7 x k 0-7, 1: pixels 8-15 x
// k 0-7, 2: pixels 0-7 x k 8-15, 3: pixels 8-15 x k 8-15), and the B fragments of two 8-channel
// tiles from one more (matrices: channels 0-7 x k 0-7, x k 8-15, channels 8-15 x k 0-7, x k 8-15):
// a weight row (one output channel, k contiguous) is a column of B, which is the layout mma's B
// operand (".col") wants.
//
// Epilogue: z = acc + bias[o] and y = f(z) in float (csrc/activation.h), rounded to T once, and
// stored as a pair (channels 2t, 2t + 1 are adjacent in NHWC) through y's strides.
//
// Numerics: products of bf16 / f16 values are exact in float; the sum over K is float32, in the
// tensor cores' order (not the CPU's, so results match rung 2 to float rounding, not bit for bit;
// still the same from run to run).
//
// Resources (ptxas -v, sm_80 and sm_90): 160-162 registers a thread, no spills, 48 KiB of shared
// memory: one 256-thread block (8 warps) per SM, as registers allow (65536 / (256·160)). With
// __launch_bounds__(256, 2) (≤ 128 registers, two blocks an SM) ptxas spilled 70-110 bytes a thread.
//
// Not measured: nothing here has been timed on a GPU yet (written on a machine with nvcc and no
// GPU); the constants marked MEASURE are first choices to be replaced by a sweep (among them:
// two blocks an SM with a smaller warp tile, 4 stages with the opt-in shared-memory attribute).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "conv.h"
#include "mma.cuh"

namespace minitorch_nn {
namespace cuda {
namespace {

constexpr int kWarp = 32;
#ifndef MTNN_MAX_GRID
#define MTNN_MAX_GRID 65535
#endif
constexpr int64_t kMaxGrid = MTNN_MAX_GRID;

// MEASURE: block tile, k slice, stages and warp grid. All compile-time: the fragment arrays, the
// shared-memory stages, the copy passes and the swizzle are sized by them, so they are not run-time
// tuning parameters (tuning.h). A sweep instantiates the kernel for each candidate shape (a template
// on them, with the static_asserts below as the constraints) and times each (csrc/README.md, "Tuning").
constexpr int kBM = 128, kBN = 128, kBK = 32;
constexpr int kStages = 3;
constexpr int kWarpsM = 2, kWarpsN = 4;
constexpr int kThreads = kWarpsM * kWarpsN * kWarp;  // 256
constexpr int kWM = kBM / kWarpsM, kWN = kBN / kWarpsN;  // a warp's sub-tile: 64 x 32
constexpr int kMmaM = 16, kMmaN = 8, kMmaK = 16;         // mma.m16n8k16
constexpr int kMTiles = kWM / kMmaM, kNTiles = kWN / kMmaN;  // 4 x 4 mma tiles a warp
constexpr int kChunk = 8;                                // 16-bit elements in a 16-byte chunk
constexpr int kRowChunks = kBK / kChunk;                 // 4 chunks in a 32-element row
constexpr int kLoadRows = kThreads / kRowChunks;         // 64 rows copied per pass of the block
constexpr int kLoadsA = kBM / kLoadRows, kLoadsB = kBN / kLoadRows;  // 2 passes each
constexpr int kStageChunks = (kBM + kBN) * kRowChunks;   // A rows, then B rows
static_assert(kRowChunks == 4, "the swizzle below assumes 64-byte rows");
static_assert(kNTiles % 2 == 0, "B fragments are loaded two n8 tiles at a time");

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Where chunk c (0..3) of row r of a stage's A or B region is stored (see "XOR swizzle" above).
__device__ __forceinline__ int swizzle(int r, int c) { return r * kRowChunks + (c ^ ((r >> 1) & 3)); }

template <typename T>
__device__ __forceinline__ float to_float(T v) {
  if constexpr (std::is_same_v<T, __half>)
    return __half2float(v);
  else
    return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(v);
  else
    return __float2bfloat16_rn(v);
}

template <typename T>
struct alignas(2 * sizeof(T)) Pair {
  T v[2];
};

template <typename T>
__device__ __forceinline__ void mma_tile(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __half>)
    mma::mma_m16n8k16_f16(d, a, b);
  else
    mma::mma_m16n8k16_bf16(d, a, b);
}

// Assumptions (checked by conv2d_mma_supported): T is __half or __nv_bfloat16; groups = 1;
// C, O multiples of 8; x, w, y with channel stride 1, other strides multiples of 8 elements and
// 16-byte aligned data, so every chunk address is 16-byte aligned; K and every input coordinate
// fit in int32.
template <Act A, typename T>
__global__ void __launch_bounds__(kThreads)
    conv2d_mma_kernel(ConvShape s, Strided4<const T> x, Strided4<const T> w, const T* __restrict__ bias,
                      Strided4<T> y) {
  __shared__ __align__(128) uint4 smem[kStages][kStageChunks];
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
  const int64_t L = s.OH * s.OW, M = s.N * L;
  const int K = static_cast<int>(s.K()), C = static_cast<int>(s.C), kw = static_cast<int>(s.kw);
  const int H = static_cast<int>(s.H), W = static_cast<int>(s.W);
  const int64_t o_tiles = ceil_div(s.O, kBN), tiles = ceil_div(M, kBM) * o_tiles;
  const int k_tiles = static_cast<int>(ceil_div(K, kBK));
  // This thread's copies: chunk lc of rows lr + p·kLoadRows (p < kLoadsA of A, < kLoadsB of B).
  const int lc = tid % kRowChunks, lr = tid / kRowChunks;
  // This warp's sub-tile, and this lane's place in an mma tile.
  const int wm0 = (warp / kWarpsN) * kWM, wn0 = (warp % kWarpsN) * kWN;
  const int g = lane >> 2, t = lane & 3;

  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t m0 = (tile / o_tiles) * kBM, n0 = (tile % o_tiles) * kBN;

    // The A rows this thread copies: output pixel m = (n, i, j) → its image and the input
    // position of tap (0, 0). Null image: the row is past M (its chunks are zero-filled).
    const T* a_img[kLoadsA];
    int a_ih0[kLoadsA], a_iw0[kLoadsA];
#pragma unroll
    for (int p = 0; p < kLoadsA; ++p) {
      const int64_t m = m0 + lr + p * kLoadRows;
      a_img[p] = nullptr;
      a_ih0[p] = a_iw0[p] = 0;
      if (m < M) {
        const int64_t n = m / L, r = m - n * L, i = r / s.OW, j = r - i * s.OW;
        a_img[p] = x.data + n * x.s0;
        a_ih0[p] = static_cast<int>(s.in_row(i, 0));
        a_iw0[p] = static_cast<int>(s.in_col(j, 0));
      }
    }
    // The B rows: output channel o's weights, or null past O.
    const T* b_row[kLoadsB];
#pragma unroll
    for (int p = 0; p < kLoadsB; ++p) {
      const int64_t o = n0 + lr + p * kLoadRows;
      b_row[p] = o < s.O ? w.data + o * w.s0 : nullptr;
    }

    // Start the copies of k-slice kt into stage `st` (not committed here).
    auto load_slice = [&](int st, int kt) {
      const int k = kt * kBK + lc * kChunk;  // this thread's 8 k: one tap (a, b), channels c..c+7
      const int tap = k / C, c = k - tap * C, a = tap / kw, b = tap - a * kw;
      const bool k_ok = k < K;
      uint4* stage = smem[st];
#pragma unroll
      for (int p = 0; p < kLoadsA; ++p) {
        const int ih = a_ih0[p] + a * static_cast<int>(s.dil_h), iw = a_iw0[p] + b * static_cast<int>(s.dil_w);
        const bool ok = k_ok && a_img[p] != nullptr && ih >= 0 && ih < H && iw >= 0 && iw < W;
        const T* src = ok ? a_img[p] + ih * x.s2 + iw * x.s3 + c : x.data;
        mma::cp_async_16(&stage[swizzle(lr + p * kLoadRows, lc)], src, ok);
      }
#pragma unroll
      for (int p = 0; p < kLoadsB; ++p) {
        const bool ok = k_ok && b_row[p] != nullptr;
        const T* src = ok ? b_row[p] + a * w.s2 + b * w.s3 + c : w.data;
        mma::cp_async_16(&stage[kBM * kRowChunks + swizzle(lr + p * kLoadRows, lc)], src, ok);
      }
    };

    float acc[kMTiles][kNTiles][4];
#pragma unroll
    for (int i = 0; i < kMTiles; ++i)
#pragma unroll
      for (int j = 0; j < kNTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
    // A warp whose whole sub-tile lies past M or past O (edge tiles) skips its ldmatrix and mma:
    // the condition is the same for all its lanes, as those warp-wide instructions require.
    const bool warp_active = m0 + wm0 < M && n0 + wn0 < s.O;

    // Prologue: slices 0 .. kStages − 2 in flight, one group each.
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) {
      if (st < k_tiles) load_slice(st, st);
      mma::cp_async_commit();
    }

    for (int kt = 0; kt < k_tiles; ++kt) {
      mma::cp_async_wait<kStages - 2>();  // this thread's copies of slice kt have landed
      __syncthreads();                    // everyone's have; and slice kt − 1's stage is free
      if (kt + kStages - 1 < k_tiles) load_slice((kt + kStages - 1) % kStages, kt + kStages - 1);
      mma::cp_async_commit();

      if (warp_active) {
        const uint4* sa = smem[kt % kStages];
        const uint4* sb = sa + kBM * kRowChunks;
#pragma unroll
        for (int ks = 0; ks < kBK / kMmaK; ++ks) {
          // The B fragments of the warp's 4 n8 tiles first (8 registers), then one A fragment at a
          // time (4 registers) and its 4 mma: fewer registers live than holding every A fragment.
          uint32_t bf[kNTiles][2];
#pragma unroll
          for (int j = 0; j < kNTiles; j += 2) {  // lane l: matrix q = l / 8, its row l % 8
            const int q = lane / 8;
            uint32_t r[4];
            mma::ldmatrix_x4(r, &sb[swizzle(wn0 + (j + q / 2) * kMmaN + lane % 8, 2 * ks + (q & 1))]);
            bf[j][0] = r[0];
            bf[j][1] = r[1];
            bf[j + 1][0] = r[2];
            bf[j + 1][1] = r[3];
          }
#pragma unroll
          for (int i = 0; i < kMTiles; ++i) {  // lane l: pixel row l % 16, k chunk 2ks + l / 16
            uint32_t af[4];
            mma::ldmatrix_x4(af, &sa[swizzle(wm0 + i * kMmaM + lane % 16, 2 * ks + lane / 16)]);
#pragma unroll
            for (int j = 0; j < kNTiles; ++j) mma_tile<T>(acc[i][j], af, bf[j]);
          }
        }
      }
    }
    // Every group left is empty; the barrier keeps the next tile's prologue from overwriting a
    // stage another warp is still reading.
    __syncthreads();

    if (!warp_active) continue;
    // Epilogue: lane owns pixels wm0 + 16i + g (+ 8) and channels wn0 + 8j + 2t (+ 1).
    float bias0[kNTiles], bias1[kNTiles];
#pragma unroll
    for (int j = 0; j < kNTiles; ++j) {
      const int64_t o = n0 + wn0 + j * kMmaN + 2 * t;
      const bool on = bias != nullptr && o < s.O;
      bias0[j] = on ? to_float(bias[o]) : 0.0f;
      bias1[j] = on ? to_float(bias[o + 1]) : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kMTiles; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t m = m0 + wm0 + i * kMmaM + h * 8 + g;
        if (m >= M) continue;
        const int64_t n = m / L, r = m - n * L, oi = r / s.OW, oj = r - oi * s.OW;
        T* yp = y.data + n * y.s0 + oi * y.s2 + oj * y.s3;
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) {
          const int64_t o = n0 + wn0 + j * kMmaN + 2 * t;  // even, and O % 8 == 0: o < O ⇒ o + 1 < O
          if (o >= s.O) continue;
          Pair<T> pr;
          pr.v[0] = from_float<T>(act_forward<A>(acc[i][j][2 * h] + bias0[j]));
          pr.v[1] = from_float<T>(act_forward<A>(acc[i][j][2 * h + 1] + bias1[j]));
          *reinterpret_cast<Pair<T>*>(yp + o) = pr;
        }
      }
    }
  }
}

template <typename T>
constexpr bool kMmaType = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

// Channel stride 1, every other stride a whole number of chunks. A dimension of size 1 is never
// stepped along, so its stride does not matter (torch gives e.g. a (1, 8, 1, 1) channels_last
// tensor the strides (8, 1, 1, 1)).
template <typename P>
bool chunk_strides(const P& t, int64_t d0, int64_t d2, int64_t d3) {
  auto whole = [](int64_t stride, int64_t size) { return size == 1 || stride % kChunk == 0; };
  return t.s1 == 1 && whole(t.s0, d0) && whole(t.s2, d2) && whole(t.s3, d3) && aligned16(t.data);
}

}  // namespace

template <typename T>
bool conv2d_mma_supported(const ConvShape& s, Strided4<const T> x, Strided4<const T> w, Strided4<T> y) {
  if constexpr (!kMmaType<T>) {
    return false;
  } else {
    constexpr int64_t kInt = std::numeric_limits<int32_t>::max();
    // The kernel keeps k and input coordinates in int (offsets are 64-bit): the furthest input
    // row / column any tap reaches, and the padding before the first, fit easily in practice.
    const bool coords_fit = s.K() <= kInt - kBK && s.H <= kInt && s.W <= kInt && s.pad_top <= kInt &&
                            s.pad_left <= kInt && s.in_row(s.OH - 1, s.kh - 1) <= kInt &&
                            s.in_col(s.OW - 1, s.kw - 1) <= kInt && s.dil_h <= kInt && s.dil_w <= kInt;
    return s.groups == 1 && s.C % kChunk == 0 && s.O % kChunk == 0 && coords_fit && chunk_strides(x, s.N, s.H, s.W) &&
           chunk_strides(w, s.O, s.kh, s.kw) && chunk_strides(y, s.N, s.OH, s.OW);
  }
}

template <typename T>
cudaError_t conv2d_mma_forward(const ConvShape& s, Strided4<const T> x, Strided4<const T> w, const T* bias, Act act,
                               Strided4<T> y, cudaStream_t stream) {
  const int64_t tiles = ceil_div(s.N * s.OH * s.OW, kBM) * ceil_div(s.O, kBN);
  if (tiles == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(std::min(tiles, kMaxGrid));
  return dispatch_act(act, [&](auto a) {
    constexpr Act A = decltype(a)::value;
    conv2d_mma_kernel<A, T><<<grid, kThreads, 0, stream>>>(s, x, w, bias, y);
    return cudaGetLastError();
  });
}

#define MTNN_INSTANTIATE_SUPPORTED(T)                                                                        \
  template bool conv2d_mma_supported<T>(const ConvShape&, Strided4<const T>, Strided4<const T>, Strided4<T>);
MTNN_INSTANTIATE_SUPPORTED(float)
MTNN_INSTANTIATE_SUPPORTED(double)
MTNN_INSTANTIATE_SUPPORTED(__half)
MTNN_INSTANTIATE_SUPPORTED(__nv_bfloat16)
#undef MTNN_INSTANTIATE_SUPPORTED

#define MTNN_INSTANTIATE_FORWARD(T)                                                                         \
  template cudaError_t conv2d_mma_forward<T>(const ConvShape&, Strided4<const T>, Strided4<const T>, const T*, \
                                             Act, Strided4<T>, cudaStream_t);
MTNN_INSTANTIATE_FORWARD(__half)
MTNN_INSTANTIATE_FORWARD(__nv_bfloat16)
#undef MTNN_INSTANTIATE_FORWARD

}  // namespace cuda
}  // namespace minitorch_nn
