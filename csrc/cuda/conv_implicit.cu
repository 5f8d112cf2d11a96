// Rung 2 of the CUDA conv ladder: implicit GEMM, tiled through shared memory.
//
// A convolution is a matrix product whose operands are never written out. Per group g:
//
//   forward        Y[m, o]   = Σ_k A[m, k]·B[k, o]
//                  m = (n, i, j) an output pixel       M = N·OH·OW
//                  k = (c, a, b) a tap of the kernel   K = Cg·kh·kw
//                  o an output channel of the group    Og columns
//                  A[m, k] = x[n, g·Cg + c, in_row(i, a), in_col(j, b)]   (0 in the padding)
//                  B[k, o] = w[g·Og + o, c, a, b]
//   input grad     dX[m, c]  = Σ_k A[m, k]·B[k, c]
//                  m = (n, h, v) an input pixel, k = (o, a, b) (K = Og·kh·kw), c < Cg
//                  A[m, k] = dz[n, g·Og + o, i, j] where tap (a, b) of output (i, j) lands on (h, v), else 0
//                  B[k, c] = w[g·Og + o, c, a, b]
//   weight grad    dWᵀ[k, o] = Σ_r A[k, r]·B[r, o]      (the transpose, so its rows are the taps)
//                  k = (c, a, b), r = (n, i, j) (the reduction runs over every output pixel)
//                  A[k, r] = x[n, g·Cg + c, in_row(i, a), in_col(j, b)],  B[r, o] = dz[n, g·Og + o, i, j]
//
// "Implicit": A is the im2col matrix (rung 2 of the CPU ladder writes it out), but here each tile
// of it is gathered from x straight into shared memory and nothing else of it ever exists.
//
// One kernel, gemm_tiles, computes all three, given a Problem that says how to read A and B and
// where a result goes (the three structs below). A block of 256 threads owns a 64×64 tile of the
// result. For each step of 16 along the reduction it stages a 64×16 tile of A and a 16×64 tile of B
// in shared memory (every thread loads 4 + 4 values), waits, and every thread multiplies its 4×4
// sub-tile out of them: 16 loads from shared memory for 16 multiply-adds per step of the
// reduction, where rung 1 made 2 loads from global memory per multiply-add. The register tile is
// spread out (thread (tx, ty) owns rows tx + 16·i and columns ty + 16·j) so a warp reads 16
// consecutive A values and 2 B values (broadcast) at each step: no bank conflicts.
//
// Coalescing: the A loader gives consecutive threads consecutive rows m, the B loader consecutive
// k. In NCHW, consecutive output pixels are consecutive addresses of x (stride 1), consecutive
// taps of a weight row are consecutive in w, and the result's consecutive rows (thread tx) are
// consecutive pixels of y: every global access of a warp is a run of addresses. (channels_last
// data is read with the same pattern and strides of C: correct, not coalesced; rung 3 is the
// NHWC kernel.)
//
// The weight gradient reduces over N·OH·OW, usually far more than it has outputs: it is split into
// slices (grid z), each block writing a partial tile to a workspace, and a second kernel adds the
// slices in order. No atomics anywhere: every result is the same bit for bit on every run.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "conv.h"
#include "tuning.h"

namespace minitorch_nn {
namespace cuda {
namespace {

constexpr int kThreads = 256;
// MEASURE: the tile is chosen, not swept (no GPU here yet). It is compile-time (the register tile, the
// shared-memory arrays and the loads a thread makes all follow from it), so it is not a run-time
// tuning parameter: sweeping it means instantiating gemm_tiles for each candidate and choosing among
// them at launch (csrc/README.md, "Tuning").
constexpr int kTileM = 64, kTileN = 64, kTileK = 16;
constexpr int kSub = 4;                               // each thread: a 4×4 register tile
constexpr int kLanes = 16;                            // threads along each side of the block tile
static_assert(kLanes * kLanes == kThreads && kLanes * kSub == kTileM && kLanes * kSub == kTileN);
static_assert(kTileM * kTileK == 4 * kThreads && kTileN * kTileK == 4 * kThreads);  // 4 + 4 loads a thread

// ---- the three problems ----------------------------------------------------------------------
//
// Each gives, for one group: rows(), cols(), depth() (M, N and K of its GEMM); row(m) and step(k),
// the indices a result row and a reduction step stand for (decoded once: a thread keeps one A row
// for a whole tile, and one B step for a whole step of the reduction); a(g, row, step) and
// b(g, step, n), the operands as acc_t (0 where they fall outside the data); and
// store(g, slice, row, n, value), where a result goes.

template <Act A, typename T>
struct Forward {
  using acc_t = acc_type<T>;
  struct Row {  // an output pixel
    int64_t n, i, j;
  };
  struct Step {  // a tap of the kernel
    int64_t c, a, b;
  };
  ConvShape s;
  Strided4<const T> x, w;
  const T* bias;
  Strided4<T> y;

  __host__ __device__ int64_t rows() const { return s.N * s.L(); }
  __host__ __device__ int64_t cols() const { return s.Og(); }
  __host__ __device__ int64_t depth() const { return s.K(); }
  __device__ Row row(int64_t m) const { return {m / s.L(), m / s.OW % s.OH, m % s.OW}; }
  __device__ Step step(int64_t k) const { return {k / (s.kh * s.kw), k / s.kw % s.kh, k % s.kw}; }
  __device__ acc_t a(int64_t g, const Row& r, const Step& t) const {
    const int64_t h = s.in_row(r.i, t.a), v = s.in_col(r.j, t.b);
    if (h < 0 || h >= s.H || v < 0 || v >= s.W) return 0;
    return Cvt<T>::to(x(r.n, g * s.Cg() + t.c, h, v));
  }
  __device__ acc_t b(int64_t g, const Step& t, int64_t o) const {
    return Cvt<T>::to(w(g * s.Og() + o, t.c, t.a, t.b));
  }
  __device__ void store(int64_t g, int64_t, const Row& r, int64_t o, acc_t z) const {
    const int64_t oc = g * s.Og() + o;
    if (bias != nullptr) z += Cvt<T>::to(bias[oc]);
    y(r.n, oc, r.i, r.j) = Cvt<T>::from(act_forward<A>(z));
  }
};

template <typename T>
struct InputGrad {
  using acc_t = acc_type<T>;
  struct Row {  // an input pixel
    int64_t n, h, v;
  };
  struct Step {  // an output channel of the group and a tap
    int64_t o, a, b;
  };
  ConvShape s;
  Strided4<const T> dz, w;
  Strided4<T> dx;

  __host__ __device__ int64_t rows() const { return s.N * s.H * s.W; }
  __host__ __device__ int64_t cols() const { return s.Cg(); }
  __host__ __device__ int64_t depth() const { return s.Og() * s.kh * s.kw; }
  __device__ Row row(int64_t m) const { return {m / (s.H * s.W), m / s.W % s.H, m % s.W}; }
  __device__ Step step(int64_t k) const { return {k / (s.kh * s.kw), k / s.kw % s.kh, k % s.kw}; }
  __device__ acc_t a(int64_t g, const Row& r, const Step& t) const {
    int64_t i, j;
    if (!s.out_row(r.h, t.a, &i) || !s.out_col(r.v, t.b, &j)) return 0;
    return Cvt<T>::to(dz(r.n, g * s.Og() + t.o, i, j));
  }
  __device__ acc_t b(int64_t g, const Step& t, int64_t c) const {
    return Cvt<T>::to(w(g * s.Og() + t.o, c, t.a, t.b));
  }
  __device__ void store(int64_t g, int64_t, const Row& r, int64_t c, acc_t v) const {
    dx(r.n, g * s.Cg() + c, r.h, r.v) = Cvt<T>::from(v);
  }
};

template <typename T>
struct WeightGrad {
  using acc_t = acc_type<T>;
  struct Row {  // a tap of the kernel (its index k kept for the workspace)
    int64_t c, a, b, k;
  };
  struct Step {  // an output pixel
    int64_t n, i, j;
  };
  ConvShape s;
  Strided4<const T> dz, x;
  Strided4<T> dw;    // written directly when there is one slice
  acc_t* partial;    // else: [slice][O][K] partial sums, added by add_slices

  __host__ __device__ int64_t rows() const { return s.K(); }
  __host__ __device__ int64_t cols() const { return s.Og(); }
  __host__ __device__ int64_t depth() const { return s.N * s.L(); }
  __device__ Row row(int64_t k) const { return {k / (s.kh * s.kw), k / s.kw % s.kh, k % s.kw, k}; }
  __device__ Step step(int64_t r) const { return {r / s.L(), r / s.OW % s.OH, r % s.OW}; }
  __device__ acc_t a(int64_t g, const Row& r, const Step& t) const {
    const int64_t h = s.in_row(t.i, r.a), v = s.in_col(t.j, r.b);
    if (h < 0 || h >= s.H || v < 0 || v >= s.W) return 0;
    return Cvt<T>::to(x(t.n, g * s.Cg() + r.c, h, v));
  }
  __device__ acc_t b(int64_t g, const Step& t, int64_t o) const {
    return Cvt<T>::to(dz(t.n, g * s.Og() + o, t.i, t.j));
  }
  __device__ void store(int64_t g, int64_t slice, const Row& r, int64_t o, acc_t v) const {
    const int64_t oc = g * s.Og() + o;
    if (partial != nullptr)
      partial[(slice * s.O + oc) * s.K() + r.k] = v;
    else
      dw(oc, r.c, r.a, r.b) = Cvt<T>::from(v);
  }
};

// ---- the kernel --------------------------------------------------------------------------------

// Grid: x over row tiles, y over column tiles, z over (group, slice); each grid-stride, so any
// size runs within the grid limits. Slice s of `slices` covers reduction steps [s·span, (s+1)·span).
template <typename P>
__global__ void __launch_bounds__(kThreads) gemm_tiles(P p, int64_t groups, int64_t slices, int64_t span) {
  using acc_t = typename P::acc_t;
  __shared__ acc_t As[kTileK][kTileM];
  __shared__ acc_t Bs[kTileK][kTileN + 1];  // +1: the loader's column-by-column writes miss each other's banks
  const int t = static_cast<int>(threadIdx.x), tx = t % kLanes, ty = t / kLanes;
  const int64_t M = p.rows(), N = p.cols(), K = p.depth();
  const int64_t row_tiles = ceil_div(M, kTileM), col_tiles = ceil_div(N, kTileN);
  // What this thread loads: A rows a_m (fixed), at depths a_k + 4·r; B depth b_k (fixed), columns b_n + 16·r.
  const int a_m = t % kTileM, a_k = t / kTileM;
  const int b_k = t % kTileK, b_n = t / kTileK;
  for (int64_t z = blockIdx.z; z < groups * slices; z += gridDim.z) {
    const int64_t g = z / slices, slice = z % slices;
    const int64_t k_begin = slice * span, k_end = std::min(K, k_begin + span);
    for (int64_t rt = blockIdx.x; rt < row_tiles; rt += gridDim.x) {
      for (int64_t ct = blockIdx.y; ct < col_tiles; ct += gridDim.y) {
        const int64_t m0 = rt * kTileM, n0 = ct * kTileN;
        acc_t acc[kSub][kSub] = {};
        const bool a_in = m0 + a_m < M;
        const auto a_row = p.row(a_in ? m0 + a_m : 0);
        for (int64_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int kk = a_k + 4 * r;
            const int64_t k = k0 + kk;
            As[kk][a_m] = a_in && k < k_end ? p.a(g, a_row, p.step(k)) : acc_t(0);
          }
          const int64_t k = k0 + b_k;
          const auto b_step = p.step(k < k_end ? k : 0);
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int nn = b_n + 16 * r;
            const int64_t n = n0 + nn;
            Bs[b_k][nn] = k < k_end && n < N ? p.b(g, b_step, n) : acc_t(0);
          }
          __syncthreads();
#pragma unroll
          for (int kk = 0; kk < kTileK; ++kk) {
            acc_t av[kSub], bv[kSub];
#pragma unroll
            for (int i = 0; i < kSub; ++i) av[i] = As[kk][tx + kLanes * i];
#pragma unroll
            for (int j = 0; j < kSub; ++j) bv[j] = Bs[kk][ty + kLanes * j];
#pragma unroll
            for (int i = 0; i < kSub; ++i)
#pragma unroll
              for (int j = 0; j < kSub; ++j) acc[i][j] += av[i] * bv[j];
          }
          __syncthreads();  // the tiles are loaded again for the next step
        }
#pragma unroll
        for (int i = 0; i < kSub; ++i) {
          const int64_t m = m0 + tx + kLanes * i;
          if (m >= M) continue;
          const auto row = p.row(m);
#pragma unroll
          for (int j = 0; j < kSub; ++j) {
            const int64_t n = n0 + ty + kLanes * j;
            if (n < N) p.store(g, slice, row, n, acc[i][j]);
          }
        }
      }
    }
  }
}

// dw[o, c, a, b] = Σ_slices partial[slice][o][(c, a, b)], in slice order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    add_slices(ConvShape s, const acc_type<T>* partial, int64_t slices, Strided4<T> dw) {
  const int64_t total = s.O * s.K();
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    acc_type<T> sum = 0;
    for (int64_t sl = 0; sl < slices; ++sl) sum += partial[sl * total + e];
    const int64_t k = e % s.K(), o = e / s.K();
    const int64_t b = k % s.kw, ka = k / s.kw % s.kh, c = k / (s.kh * s.kw);
    dw(o, c, ka, b) = Cvt<T>::from(sum);
  }
}

dim3 tiles_grid(int64_t rows, int64_t cols, int64_t zs) {
  return dim3(static_cast<unsigned>(std::min(ceil_div(rows, kTileM), kMaxGrid)),
              static_cast<unsigned>(std::min(ceil_div(cols, kTileN), kMaxGrid)),
              static_cast<unsigned>(std::min(zs, kMaxGrid)));
}

// How the weight gradient's reduction is split: enough slices for about conv_target_blocks blocks
// in all, each slice at least conv_min_span long (then rounded up to a multiple of kTileK), so that
// the partial sums stay small next to the reads. Run-time tuning parameters (tuning.h), swept by
// benchmarks/cuda_tuning.py. MEASURE: both defaults are chosen for an H100's 132 SMs, not measured.
TuningParam conv_target_blocks{"conv_target_blocks", "conv2d rung 2 weight gradient: blocks wanted in all", 512, 1,
                               65535, {512}};
TuningParam conv_min_span{"conv_min_span", "conv2d rung 2 weight gradient: shortest slice of the reduction", 1024,
                          1, int64_t{1} << 30, {1024}};
struct Split {
  int64_t slices, span;
};
Split weight_split(const ConvShape& s) {
  const int64_t R = s.N * s.L();
  const int64_t blocks = ceil_div(s.K(), kTileM) * ceil_div(s.Og(), kTileN) * s.groups;
  const int64_t wanted =
      std::max<int64_t>(1, std::min(ceil_div(conv_target_blocks.get(), blocks), ceil_div(R, conv_min_span.get())));
  const int64_t span = ceil_div(ceil_div(R, wanted), kTileK) * kTileK;
  return {ceil_div(R, span), span};
}

int64_t whole(int64_t depth) { return std::max<int64_t>(kTileK, ceil_div(depth, kTileK) * kTileK); }

}  // namespace

TuningTable conv_implicit_tuning() {
  static TuningParam* const params[] = {&conv_target_blocks, &conv_min_span};
  return {params, static_cast<int>(sizeof(params) / sizeof(params[0]))};
}

template <typename T>
cudaError_t conv2d_implicit_forward(const ConvShape& s, Strided4<const T> x, Strided4<const T> w, const T* bias,
                                    Act act, Strided4<T> y, cudaStream_t stream) {
  return dispatch_act(act, [&](auto a) {
    constexpr Act A = decltype(a)::value;
    const Forward<A, T> p{s, x, w, bias, y};
    gemm_tiles<<<tiles_grid(p.rows(), p.cols(), s.groups), kThreads, 0, stream>>>(p, s.groups, int64_t{1},
                                                                                 whole(p.depth()));
    return cudaGetLastError();
  });
}

template <typename T>
cudaError_t conv2d_implicit_backward_input(const ConvShape& s, Strided4<const T> dz, Strided4<const T> w,
                                           Strided4<T> dx, cudaStream_t stream) {
  const InputGrad<T> p{s, dz, w, dx};
  gemm_tiles<<<tiles_grid(p.rows(), p.cols(), s.groups), kThreads, 0, stream>>>(p, s.groups, int64_t{1},
                                                                               whole(p.depth()));
  return cudaGetLastError();
}

template <typename T>
size_t conv2d_implicit_backward_weight_workspace_bytes(const ConvShape& s) {
  const Split split = weight_split(s);
  if (split.slices <= 1) return 0;
  return static_cast<size_t>(split.slices * s.O * s.K()) * sizeof(acc_type<T>);
}

template <typename T>
cudaError_t conv2d_implicit_backward_weight(const ConvShape& s, Strided4<const T> dz, Strided4<const T> x,
                                            Strided4<T> dw, void* workspace, cudaStream_t stream) {
  const Split split = weight_split(s);
  auto* partial = split.slices > 1 ? static_cast<acc_type<T>*>(workspace) : nullptr;
  const WeightGrad<T> p{s, dz, x, dw, partial};
  gemm_tiles<<<tiles_grid(p.rows(), p.cols(), s.groups * split.slices), kThreads, 0, stream>>>(
      p, s.groups, split.slices, split.span);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || partial == nullptr) return err;
  add_slices<T><<<static_cast<unsigned>(std::min(ceil_div(s.O * s.K(), kThreads), kMaxGrid)), kThreads, 0, stream>>>(
      s, partial, split.slices, dw);
  return cudaGetLastError();
}

#define MTNN_INSTANTIATE(T)                                                                                         \
  template cudaError_t conv2d_implicit_forward<T>(const ConvShape&, Strided4<const T>, Strided4<const T>, const T*, \
                                                  Act, Strided4<T>, cudaStream_t);                                  \
  template cudaError_t conv2d_implicit_backward_input<T>(const ConvShape&, Strided4<const T>, Strided4<const T>,    \
                                                         Strided4<T>, cudaStream_t);                                \
  template size_t conv2d_implicit_backward_weight_workspace_bytes<T>(const ConvShape&);                            \
  template cudaError_t conv2d_implicit_backward_weight<T>(const ConvShape&, Strided4<const T>, Strided4<const T>,   \
                                                          Strided4<T>, void*, cudaStream_t);
MTNN_INSTANTIATE(float)
MTNN_INSTANTIATE(double)
MTNN_INSTANTIATE(__half)
MTNN_INSTANTIATE(__nv_bfloat16)
#undef MTNN_INSTANTIATE

}  // namespace cuda
}  // namespace minitorch_nn
