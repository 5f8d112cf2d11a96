// Fused normalization + activation on the CPU: LayerNorm+act and BatchNorm+act, forward and backward.
//
// Dimensions, named once:
//   LayerNorm:  M rows (everything before normalized_shape) × N values per row.
//   BatchNorm:  C channels; each channel reduces over R = batch × spatial values.
//               NCHW stores a channel as B segments of S = H·W contiguous values;
//               channels_last (and 2-D (B, C) input) stores R rows of C contiguous channels.
//
// The math (minitorch_nn/functional/normalization.py derives it, term by term):
//   forward   x̂ = (x − μ)·rstd,  z = γ·x̂ + β,  y = f(z)             rstd = 1/√(σ² + eps)
//   backward  dz = dy·f'(z),  dβ = Σ dz,  dγ = Σ dz·x̂
//             dx = γ·rstd·(dz − mean(dz) − x̂·mean(dz·x̂))   (training: terms 1, 2, 3)
//             dx = γ·rstd·dz                                (BatchNorm eval: statistics are constants)
//
// Memory traffic is what costs here (a few flops per byte), so:
//   * the forward reads x from memory once per row for the statistics (the row then sits in L1/L2
//     for the second statistics pass and the output pass) and writes y once;
//   * nothing but μ and rstd is saved: the backward recomputes x̂, z and f'(z) from x, which is
//     cheaper than writing and re-reading a saved pre-activation tensor;
//   * inner loops are ATen Vectorized<acc_t> (16 floats with AVX-512), with a scalar tail so
//     every row length works, not only multiples of the vector width.
//
// Accumulation is in acc_t (float for float, bfloat16 and float16; double for double). Long sums are
// split into blocks of at most kBlock values whose vector partial sums are added in double, so
// the rounding error grows with the block length, not with the whole reduction.
//
// Reductions across rows (dγ, dβ, BatchNorm channels_last statistics) give each of a fixed
// number of chunks its own partial sums and add them in chunk order afterwards: the result
// does not depend on which thread ran which chunk, so repeated runs are bitwise identical.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cmath>
#include <vector>

#include "../bn_shape.h"
#include "../norm_act_plan.h"
#include "../ops.h"
#include "vec_io.h"
#include "vec_math.h"

namespace minitorch_nn {
namespace {

constexpr int64_t kBlock = 1024;  // values per float partial sum before it is added in double

// A hint to start loading the cache line at p (into all cache levels) without waiting for it.
// The LayerNorm kernels give it the next row while they do a row's arithmetic: that pass runs
// from L1, so without the hint the memory system idles through it and the next row's first pass
// then waits for memory with the vector units idle. Prefetching never faults, but the loops below
// only name addresses inside the tensor.
template <typename T>
inline void prefetch(const T* p) {
  __builtin_prefetch(p, /*rw=*/0, /*locality=*/3);
}

// Σ_{i<n} g(x[i]) for a contiguous run x[0..n), g applied to acc_t vectors and to acc_t scalars.
// Four independent vector accumulators hide the add latency; blocks of kBlock go to double.
template <typename scalar_t, typename acc_t, typename G>
double block_sum(const scalar_t* x, int64_t n, const G& g) {
  using V = Vectorized<acc_t>;
  constexpr int64_t K = V::size();
  double total = 0;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = std::min(kBlock, n - start);
    const scalar_t* p = x + start;
    V a0(0), a1(0), a2(0), a3(0);
    int64_t i = 0;
    for (; i + 4 * K <= len; i += 4 * K) {
      a0 += g(load(p + i));
      a1 += g(load(p + i + K));
      a2 += g(load(p + i + 2 * K));
      a3 += g(load(p + i + 3 * K));
    }
    for (; i + K <= len; i += K) a0 += g(load(p + i));
    acc_t tail = 0;
    for (; i < len; ++i) tail += g(static_cast<acc_t>(p[i]));
    total += hsum<double>((a0 + a1) + (a2 + a3)) + static_cast<double>(tail);
  }
  return total;
}

// Splits [0, n) into `chunks` contiguous ranges and runs fn(chunk, begin, end) on each, in
// parallel. The split depends only on n and chunks, so per-chunk partial sums are reproducible.
template <typename F>
void for_each_chunk(int64_t n, int64_t chunks, const F& fn) {
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) fn(c, n * c / chunks, n * (c + 1) / chunks);
  });
}

// Calls fn(j, n) for j = 0, K, 2K, … over [0, N): with n = K for every whole vector, and once
// more with the n < K values left when N is not a multiple of K. The whole-vector calls pass the
// constant K, so once fn is inlined their loads and stores are plain full-width ones. A count
// known only at run time keeps ATen's partial store (a memcpy, through a stack buffer) in the loop
// body. (With that, and the pointers read through references, which the next comments are about,
// the channels_last BatchNorm backward took 2-2.6x as long, in cache, as it does now.)
template <int64_t K, typename F>
inline void for_each_vector(int64_t N, const F& fn) {
  int64_t j = 0;
  for (; j + K <= N; j += K) fn(j, K);
  if (j < N) fn(j, N - j);
}

// How many chunks a reduction over `rows` splits into: one per `min_rows_per_chunk` rows, at most
// kMaxChunks (so up to 64 threads share the work). It depends on the input alone, never on the
// thread count: the chunks' partial sums, and so the result, are bitwise the same on one thread
// or many (tests/test_norm_act.py::test_results_do_not_depend_on_the_thread_count).
constexpr int64_t kMaxChunks = 64;
inline int64_t num_chunks(int64_t rows, int64_t min_rows_per_chunk) {
  return std::clamp<int64_t>(rows / std::max<int64_t>(1, min_rows_per_chunk), 1, kMaxChunks);
}

// Channels per parallel task when each channel holds R values: enough that a task does ~32K
// values of work. A tiny input then runs on the calling thread; waking the pool would cost
// more than the work (tens of microseconds per parallel region).
inline int64_t channel_grain(int64_t R) { return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(R, 1)); }

// Writes y[i] = f((x[i] − μ)·scale + β) for i < n (BatchNorm: μ, scale = γ·rstd and β per channel).
// Subtracting μ first, rather than folding it into one shift β − μ·scale as a single multiply-add
// would, keeps the result accurate when |μ| ≫ σ; the extra subtraction is free next to the memory
// traffic.
template <Act A, typename scalar_t, typename acc_t>
void affine_act_run(const scalar_t* x, scalar_t* y, int64_t n, acc_t mu, acc_t scale, acc_t beta) {
  using V = Vectorized<acc_t>;
  constexpr int64_t K = V::size();
  const V vm(mu), vs(scale), vb(beta);
  int64_t i = 0;
  for (; i + K <= n; i += K) store(y + i, act_forward<A>(at::vec::fmadd(load(x + i) - vm, vs, vb)));
  if (i < n) store(y + i, act_forward<A>(at::vec::fmadd(load(x + i, n - i) - vm, vs, vb)), n - i);
}

// ---------------------------------------------------------------------------------------------
// LayerNorm + activation

// Rows [r0, r1) of the forward. The pointers arrive as arguments, values the compiler keeps in
// registers: read through the parallel lambda's captured references, they would be reloaded
// after every store (an intrinsic store may write any memory, the references included).
template <Act A, typename scalar_t>
void layer_norm_act_forward_rows(const scalar_t* X, const at::opmath_type<scalar_t>* W,
                                 const at::opmath_type<scalar_t>* B, scalar_t* Y,
                                 at::opmath_type<scalar_t>* mean_out, at::opmath_type<scalar_t>* rstd_out,
                                 int64_t N, double eps, int64_t r0, int64_t r1) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = Vectorized<acc_t>;
  constexpr int64_t K = V::size();
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* x = X + r * N;
    scalar_t* y = Y + r * N;
    // Two passes over the row for the statistics: the mean, then Σ(x − μ)². The second pass
    // reads the row from cache, and avoids the cancellation of E[x²] − μ². The mean is summed
    // as shift + Σ(x − shift)/N with shift = the row's first value: a constant row then gives
    // μ exactly and x̂ = 0 exactly, where Σx/N can be an ulp off and rstd ≈ 1/√eps amplifies
    // that (functional/normalization.py's "Numerics" has the whole argument).
    const acc_t shift = static_cast<acc_t>(x[0]);
    const V vshift(shift);
    const double mu = shift + block_sum<scalar_t, acc_t>(x, N, [&](auto v) {
                                if constexpr (std::is_same_v<decltype(v), V>)
                                  return v - vshift;
                                else
                                  return v - shift;
                              }) / N;
    const acc_t mu_a = static_cast<acc_t>(mu);
    const V vmu(mu_a);
    const double m2 = block_sum<scalar_t, acc_t>(x, N, [&](auto v) {
      if constexpr (std::is_same_v<decltype(v), V>) {
        const V d = v - vmu;
        return d * d;
      } else {
        const acc_t d = v - mu_a;
        return d * d;
      }
    });
    const acc_t rstd = static_cast<acc_t>(1.0 / std::sqrt(m2 / N + eps));
    mean_out[r] = mu_a;
    rstd_out[r] = rstd;
    // y = f((x − μ)·rstd·γ + β), while the next row comes in (a line per vector: some twice).
    const V vr(rstd);
    const scalar_t* next = r + 1 < r1 ? x + N : x;
    int64_t j = 0;
    for (; j + K <= N; j += K) {
      prefetch(next + j);
      store(y + j, act_forward<A>(at::vec::fmadd((load(x + j) - vmu) * vr, load(W + j), load(B + j))));
    }
    if (j < N) {
      const int64_t n = N - j;
      store(y + j, act_forward<A>(at::vec::fmadd((load(x + j, n) - vmu) * vr, load(W + j, n), load(B + j, n))), n);
    }
  }
}

template <Act A, typename scalar_t>
void layer_norm_act_forward_kernel(const scalar_t* X, const at::opmath_type<scalar_t>* W,
                                   const at::opmath_type<scalar_t>* B, scalar_t* Y,
                                   at::opmath_type<scalar_t>* mean_out, at::opmath_type<scalar_t>* rstd_out,
                                   int64_t M, int64_t N, double eps) {
  // Enough rows per task that a task moves ~64 KiB: scheduling costs less than the work.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(N, 1));
  at::parallel_for(0, M, grain, [&](int64_t r0, int64_t r1) {
    layer_norm_act_forward_rows<A>(X, W, B, Y, mean_out, rstd_out, N, eps, r0, r1);
  });
}

// Chunk c, rows [r0, r1), of the backward: dx for each row, and the chunk's partial sums of
// dγ = Σ dz·x̂ and dβ = Σ dz (arguments by value: see layer_norm_act_forward_rows).
template <Act A, typename scalar_t>
void layer_norm_act_backward_rows(const scalar_t* dY, const scalar_t* X, const at::opmath_type<scalar_t>* mean,
                                  const at::opmath_type<scalar_t>* rstd, const at::opmath_type<scalar_t>* W,
                                  const at::opmath_type<scalar_t>* B, scalar_t* dX,
                                  at::opmath_type<scalar_t>* dW_partial, at::opmath_type<scalar_t>* dB_partial,
                                  int64_t N, int64_t c, int64_t r0, int64_t r1) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = Vectorized<acc_t>;
  constexpr int64_t K = V::size();
  acc_t* dW = dW_partial ? dW_partial + c * N : nullptr;
  acc_t* dB = dB_partial ? dB_partial + c * N : nullptr;
  std::vector<acc_t> g_row(N);  // γ·dz for the row: computed once, read again for dx
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* x = X + r * N;
    const scalar_t* dy = dY + r * N;
    const V vmu(mean[r]), vr(rstd[r]);
    // Pass 1: dz = dy·f'(z), g = γ·dz, and the row sums Σg and Σg·x̂ of terms 2 and 3. The
    // next row's x and dy are prefetched meanwhile: this pass does the activation's arithmetic.
    const int64_t ahead = r + 1 < r1 ? N : 0;
    V sum_g(0), sum_gx(0);
    for_each_vector<K>(N, [&](int64_t j, int64_t n) {
      prefetch(x + ahead + j);
      prefetch(dy + ahead + j);
      const V xhat = (load(x + j, n) - vmu) * vr;
      const V w = load(W + j, n);
      const V dz = load(dy + j, n) * act_derivative<A>(at::vec::fmadd(xhat, w, load(B + j, n)));
      const V g = dz * w;
      store(g_row.data() + j, g, n);
      if (dW) store(dW + j, at::vec::fmadd(dz, xhat, load(dW + j, n)), n);
      if (dB) store(dB + j, dz + load(dB + j, n), n);
      sum_g += g;  // lanes past n are zero: load(p, n) zero-fills them, and f'(β=0)·0 = 0
      sum_gx = at::vec::fmadd(g, xhat, sum_gx);
    });
    // Pass 2: dx = rstd·(g − mean(g) − x̂·mean(g·x̂))   (terms 1, 2 and 3).
    const V mean_g(static_cast<acc_t>(hsum<double>(sum_g) / N));
    const V mean_gx(static_cast<acc_t>(hsum<double>(sum_gx) / N));
    scalar_t* dx = dX + r * N;
    const acc_t* g = g_row.data();
    for_each_vector<K>(N, [&](int64_t j, int64_t n) {
      const V xhat = (load(x + j, n) - vmu) * vr;
      store(dx + j, vr * (load(g + j, n) - mean_g - xhat * mean_gx), n);
    });
  }
}

template <Act A, typename scalar_t>
void layer_norm_act_backward_kernel(const scalar_t* dY, const scalar_t* X, const at::opmath_type<scalar_t>* mean,
                                    const at::opmath_type<scalar_t>* rstd, const at::opmath_type<scalar_t>* W,
                                    const at::opmath_type<scalar_t>* B, scalar_t* dX,
                                    at::opmath_type<scalar_t>* dW_partial, at::opmath_type<scalar_t>* dB_partial,
                                    int64_t chunks, int64_t M, int64_t N) {
  for_each_chunk(M, chunks, [&](int64_t c, int64_t r0, int64_t r1) {
    layer_norm_act_backward_rows<A>(dY, X, mean, rstd, W, B, dX, dW_partial, dB_partial, N, c, r0, r1);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_cpu(const at::Tensor& input_,
                                                                  at::IntArrayRef normalized_shape,
                                                                  const std::optional<at::Tensor>& weight,
                                                                  const std::optional<at::Tensor>& bias, double eps,
                                                                  c10::string_view activation) {
  LayerNormActPlan p = plan_layer_norm_act(input_, normalized_shape, weight, bias, activation);
  if (p.done) return {p.out, p.mean, p.rstd};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, p.input.scalar_type(), "layer_norm_act_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_act(p.act, [&](auto A) {
      layer_norm_act_forward_kernel<decltype(A)::value, scalar_t>(
          p.input.const_data_ptr<scalar_t>(), p.w.const_data_ptr<acc_t>(), p.b.const_data_ptr<acc_t>(),
          p.out.mutable_data_ptr<scalar_t>(), p.mean.mutable_data_ptr<acc_t>(), p.rstd.mutable_data_ptr<acc_t>(), p.M,
          p.N, eps);
    });
  });
  return {p.out, p.mean, p.rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean, const at::Tensor& rstd,
    at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  LayerNormActBackwardPlan p =
      plan_layer_norm_act_backward(grad_out, input, mean, rstd, normalized_shape, weight, bias, activation, output_mask);
  if (p.done) return {p.grad_input, p.grad_weight, p.grad_bias};
  const auto acc_opts = p.input.options().dtype(at::toOpMathType(p.input.scalar_type()));
  // At least 8 rows per chunk, so the partial-sum rows cost little next to the rows they sum.
  const int64_t chunks = num_chunks(p.M, 8);
  at::Tensor dw_partial = p.need_dw ? at::zeros({chunks, p.N}, acc_opts) : at::Tensor();
  at::Tensor db_partial = p.need_db ? at::zeros({chunks, p.N}, acc_opts) : at::Tensor();
  // dx is always computed (it is the expensive part and shares the pass with the sums); when it is
  // not wanted it goes to a scratch buffer.
  at::Tensor dx = p.need_dx ? p.grad_input : at::empty(p.input.sizes(), p.input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, p.input.scalar_type(), "layer_norm_act_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_act(p.act, [&](auto A) {
      layer_norm_act_backward_kernel<decltype(A)::value, scalar_t>(
          p.grad_out.const_data_ptr<scalar_t>(), p.input.const_data_ptr<scalar_t>(), p.mean.const_data_ptr<acc_t>(),
          p.rstd.const_data_ptr<acc_t>(), p.w.const_data_ptr<acc_t>(), p.b.const_data_ptr<acc_t>(),
          dx.mutable_data_ptr<scalar_t>(), p.need_dw ? dw_partial.mutable_data_ptr<acc_t>() : nullptr,
          p.need_db ? db_partial.mutable_data_ptr<acc_t>() : nullptr, chunks, p.M, p.N);
    });
  });
  // Chunk partials added in chunk order (a (chunks, N) sum over dim 0): deterministic.
  if (p.need_dw) p.grad_weight.copy_(dw_partial.sum(0).view(normalized_shape));
  if (p.need_db) p.grad_bias.copy_(db_partial.sum(0).view(normalized_shape));
  return {p.grad_input, p.grad_weight, p.grad_bias};
}

// ---------------------------------------------------------------------------------------------
// BatchNorm + activation
//
// Both layouts reduce to "for each channel c, the values x[c] at R positions" (BNShape,
// csrc/bn_shape.h); each pass has two loops, one per layout: over the contiguous runs of one
// channel (NCHW, parallel over channels), or over rows of C channels (channels_last, parallel over
// chunks of rows).

// Per-channel Σ g(x) over all R values, for NCHW: runs of S values, parallel over channels.
template <typename scalar_t, typename acc_t, typename G>
void channel_sums_nchw(const scalar_t* X, const BNShape& s, double* out, const G& g_of_channel) {
  at::parallel_for(0, s.C, channel_grain(s.R()), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const auto g = g_of_channel(c);
      double total = 0;
      for (int64_t b = 0; b < s.B; ++b) total += block_sum<scalar_t, acc_t>(X + (b * s.C + c) * s.S, s.S, g);
      out[c] = total;
    }
  });
}

// NS per-channel sums for channels_last: rows of C channels. g(r, j, n) gives, for row r and
// channels j..j+n (n ≤ K), NS vectors to add to the NS sums (its lanes past n are ignored). Each
// chunk of rows sums into its own partials, in blocks of rows (acc_t) added into double; then the
// chunks are added in order.
template <int NS, typename acc_t, typename G>
void channel_sums_nhwc(const BNShape& s, std::array<double*, NS> out, const G& g) {
  using V = Vectorized<acc_t>;
  constexpr int64_t K = V::size();
  const int64_t R = s.R(), C = s.C;
  const int64_t chunks = num_chunks(R, 64);
  std::vector<double> partial(chunks * NS * C, 0.0);
  const int64_t block_rows = std::max<int64_t>(1, kBlock / 16);
  for_each_chunk(R, chunks, [&](int64_t chunk, int64_t r0, int64_t r1) {
    // A copy of g, the callers' pointers captured by value: values of this frame, which the
    // compiler keeps in registers, where through a reference it would reload them after each
    // store (an intrinsic store may write any memory).
    const G g_here = g;
    std::vector<acc_t> block(NS * C);
    double* part = partial.data() + chunk * NS * C;
    for (int64_t rb = r0; rb < r1; rb += block_rows) {
      std::fill(block.begin(), block.end(), acc_t(0));
      const int64_t rend = std::min(r1, rb + block_rows);
      acc_t* sums = block.data();
      for (int64_t r = rb; r < rend; ++r) {
        for_each_vector<K>(C, [&](int64_t j, int64_t n) {
          const std::array<V, NS> v = g_here(r, j, n);
          for (int k = 0; k < NS; ++k) {
            acc_t* sum = sums + k * C + j;
            store(sum, load(sum, n) + v[k], n);
          }
        });
      }
      for (int64_t i = 0; i < NS * C; ++i) part[i] += block[i];
    }
  });
  for (int k = 0; k < NS; ++k) {
    for (int64_t j = 0; j < C; ++j) {
      double t = 0;
      for (int64_t c = 0; c < chunks; ++c) t += partial[(c * NS + k) * C + j];
      out[k][j] = t;
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_act_cpu(
    const at::Tensor& input_, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var, bool training,
    double momentum, double eps, c10::string_view activation) {
  BatchNormActPlan p = plan_batch_norm_act(input_, weight, bias, running_mean, running_var, training, eps, activation);
  if (p.done) return p.returned();
  const Act act = p.act;
  const at::Tensor& input = p.input;
  const BNShape s = p.shape();
  const int64_t C = s.C, R = s.R();
  const auto acc = at::toOpMathType(input.scalar_type());
  const auto acc_opts = input.options().dtype(acc);
  const bool update = p.update;
  at::Tensor &out = p.out, &save_mean = p.save_mean, &save_rstd = p.save_rstd;
  at::Tensor &new_rm = p.new_running_mean, &new_rv = p.new_running_var;
  const at::Tensor &w = p.w, &b = p.b;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "batch_norm_act_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using V = Vectorized<acc_t>;
    const scalar_t* X = input.const_data_ptr<scalar_t>();
    acc_t* mean = save_mean.mutable_data_ptr<acc_t>();
    acc_t* rstd = save_rstd.mutable_data_ptr<acc_t>();
    if (training) {
      // Two passes: the mean, then Σ(x − μ)² (no E[x²] − μ² cancellation).
      std::vector<double> sum(C), m2(C);
      if (!s.channels_last) {
        channel_sums_nchw<scalar_t, acc_t>(X, s, sum.data(), [](int64_t) { return [](auto v) { return v; }; });
        for (int64_t c = 0; c < C; ++c) mean[c] = static_cast<acc_t>(sum[c] / R);
        channel_sums_nchw<scalar_t, acc_t>(X, s, m2.data(), [&](int64_t c) {
          const acc_t mu = mean[c];
          return [mu](auto v) {
            const auto d = v - decltype(v)(mu);
            return d * d;
          };
        });
      } else {
        channel_sums_nhwc<1, acc_t>(s, {sum.data()}, [X, C](int64_t r, int64_t j, int64_t n) {
          return std::array<V, 1>{load(X + r * C + j, n)};
        });
        for (int64_t c = 0; c < C; ++c) mean[c] = static_cast<acc_t>(sum[c] / R);
        channel_sums_nhwc<1, acc_t>(s, {m2.data()}, [X, C, mean](int64_t r, int64_t j, int64_t n) {
          const V d = load(X + r * C + j, n) - load(mean + j, n);
          return std::array<V, 1>{d * d};
        });
      }
      std::vector<acc_t> rm_value(C), rv_value(C);
      for (int64_t c = 0; c < C; ++c) {
        const double var = m2[c] / R;
        rstd[c] = static_cast<acc_t>(1.0 / std::sqrt(var + eps));
        rv_value[c] = static_cast<acc_t>(m2[c] / (R - 1));  // the running variance is unbiased
      }
      if (update) {
        // running = (1 − momentum)·running + momentum·batch, in acc_t as torch computes it.
        at::Tensor rm = running_mean->to(acc).contiguous(), rv = running_var->to(acc).contiguous();
        const acc_t* prm = rm.const_data_ptr<acc_t>();
        const acc_t* prv = rv.const_data_ptr<acc_t>();
        const acc_t m = static_cast<acc_t>(momentum);
        for (int64_t c = 0; c < C; ++c) {
          rm_value[c] = m * mean[c] + (acc_t(1) - m) * prm[c];
          rv_value[c] = m * rv_value[c] + (acc_t(1) - m) * prv[c];
        }
        new_rm.copy_(at::from_blob(rm_value.data(), {C}, acc_opts.device(at::kCPU)));
        new_rv.copy_(at::from_blob(rv_value.data(), {C}, acc_opts.device(at::kCPU)));
      }
    }  // (in eval, the plan has set mean and rstd from the running statistics)
    // y = f((x − μ)·scale + β), scale = γ·rstd.
    std::vector<acc_t> scale(C);
    const acc_t* pw = w.const_data_ptr<acc_t>();
    const acc_t* pb = b.const_data_ptr<acc_t>();
    for (int64_t c = 0; c < C; ++c) scale[c] = pw[c] * rstd[c];
    scalar_t* Y = out.mutable_data_ptr<scalar_t>();
    dispatch_act(act, [&](auto A) {
      constexpr Act kA = decltype(A)::value;
      if (!s.channels_last) {
        at::parallel_for(0, s.B * C, std::max<int64_t>(1, (int64_t{1} << 14) / s.S), [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t c = i % C;
            affine_act_run<kA>(X + i * s.S, Y + i * s.S, s.S, mean[c], scale[c], pb[c]);
          }
        });
      } else {
        constexpr int64_t K = V::size();
        const acc_t* sc = scale.data();
        at::parallel_for(0, R, std::max<int64_t>(1, (int64_t{1} << 14) / C), [=](int64_t r0, int64_t r1) {
          // Copies in this frame, kept in registers (see channel_sums_nhwc).
          const acc_t *m = mean, *k = sc, *bb = pb;
          for (int64_t r = r0; r < r1; ++r) {
            const scalar_t* x = X + r * C;
            scalar_t* y = Y + r * C;
            for_each_vector<K>(C, [&](int64_t j, int64_t n) {
              store(y + j, act_forward<kA>(at::vec::fmadd(load(x + j, n) - load(m + j, n), load(k + j, n), load(bb + j, n))), n);
            });
          }
        });
      }
    });
  });
  return p.returned();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_backward_cpu(
    const at::Tensor& grad_out_, const at::Tensor& input_, const at::Tensor& save_mean_, const at::Tensor& save_rstd_,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, bool training,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  BatchNormActBackwardPlan p =
      plan_batch_norm_act_backward(grad_out_, input_, save_mean_, save_rstd_, weight, bias, activation, output_mask);
  if (p.done) return p.returned();
  const Act act = p.act;
  const at::Tensor &input = p.input, &grad_out = p.grad_out, &save_mean = p.save_mean, &save_rstd = p.save_rstd;
  const BNShape s = p.shape();
  const int64_t C = s.C, R = s.R();
  const auto acc = at::toOpMathType(input.scalar_type());
  const bool need_dw = p.need_dw, need_db = p.need_db;
  at::Tensor &grad_input = p.grad_input, &grad_weight = p.grad_weight, &grad_bias = p.grad_bias;
  const at::Tensor &w = p.w, &b = p.b;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "batch_norm_act_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using V = Vectorized<acc_t>;
    constexpr int64_t K = V::size();
    const scalar_t* X = input.const_data_ptr<scalar_t>();
    const scalar_t* dY = grad_out.const_data_ptr<scalar_t>();
    const acc_t* mean = save_mean.const_data_ptr<acc_t>();
    const acc_t* rstd = save_rstd.const_data_ptr<acc_t>();
    const acc_t* pw = w.const_data_ptr<acc_t>();
    const acc_t* pb = b.const_data_ptr<acc_t>();
    // The forward's pre-activation, recomputed: x̂ = (x − μ)·rstd, z = γ·x̂ + β, dz = dy·f'(z).
    std::vector<double> sum_dz(C, 0.0), sum_dz_xhat(C, 0.0);
    dispatch_act(act, [&](auto A) {
      constexpr Act kA = decltype(A)::value;
      // x̂ and dz for n ≤ K values of one channel (μ, rstd, γ, β given as vectors).
      const auto xhat_dz = [](const V& x, const V& dy, const V& mu, const V& r, const V& g, const V& bb) {
        const V xhat = (x - mu) * r;
        return std::make_pair(xhat, dy * act_derivative<kA>(at::vec::fmadd(xhat, g, bb)));
      };
      // Pass 1: per channel Σdz and Σdz·x̂ (= dβ and dγ; terms 2 and 3 of dx in training).
      // dz depends on x and dy together, so these sums walk both tensors. Lanes past n load
      // dy = 0, so dz = 0 there and they add nothing.
      if (!s.channels_last) {
        at::parallel_for(0, C, channel_grain(R), [&](int64_t c0, int64_t c1) {
          for (int64_t c = c0; c < c1; ++c) {
            const V vmu(mean[c]), vr(rstd[c]), vg(pw[c]), vb(pb[c]);
            double t_dz = 0, t_dzx = 0;
            for (int64_t bi = 0; bi < s.B; ++bi) {
              const scalar_t* x = X + (bi * C + c) * s.S;
              const scalar_t* dy = dY + (bi * C + c) * s.S;
              for (int64_t start = 0; start < s.S; start += kBlock) {
                const int64_t end = std::min(s.S, start + kBlock);
                V a(0), ax(0);
                for (int64_t i = start; i < end; i += K) {
                  const int64_t n = std::min<int64_t>(K, end - i);
                  const auto [xhat, dz] = xhat_dz(load(x + i, n), load(dy + i, n), vmu, vr, vg, vb);
                  a += dz;
                  ax = at::vec::fmadd(dz, xhat, ax);
                }
                t_dz += hsum<double>(a);
                t_dzx += hsum<double>(ax);
              }
            }
            sum_dz[c] = t_dz;
            sum_dz_xhat[c] = t_dzx;
          }
        });
      } else {
        channel_sums_nhwc<2, acc_t>(s, {sum_dz.data(), sum_dz_xhat.data()}, [=](int64_t r, int64_t j, int64_t n) {
          const auto [xhat, dz] = xhat_dz(load(X + r * C + j, n), load(dY + r * C + j, n), load(mean + j, n),
                                          load(rstd + j, n), load(pw + j, n), load(pb + j, n));
          return std::array<V, 2>{dz, dz * xhat};
        });
      }
      if (!output_mask[0]) return;
      // Pass 2: dx = γ·rstd·(dz − mean(dz) − x̂·mean(dz·x̂)) in training, γ·rstd·dz in eval;
      // per channel, dx = k·dz + k_x̂·x̂ + k_1 with k = γ·rstd, k_x̂ = −k·mean(dz·x̂), k_1 = −k·mean(dz).
      std::vector<acc_t> k_dz(C), k_xhat(C), k_one(C);
      for (int64_t c = 0; c < C; ++c) {
        const double k = static_cast<double>(pw[c]) * rstd[c];
        k_dz[c] = static_cast<acc_t>(k);
        k_xhat[c] = static_cast<acc_t>(training ? -k * sum_dz_xhat[c] / R : 0.0);
        k_one[c] = static_cast<acc_t>(training ? -k * sum_dz[c] / R : 0.0);
      }
      scalar_t* dX = grad_input.mutable_data_ptr<scalar_t>();
      // Captures by value, copied into each task (see channel_sums_nhwc).
      const auto dx_run = [=](int64_t offset, int64_t n, const V& mu, const V& r, const V& g, const V& bb, const V& k,
                              const V& kx, const V& k1) {
        const auto [xhat, dz] = xhat_dz(load(X + offset, n), load(dY + offset, n), mu, r, g, bb);
        // In eval the x̂ and constant terms are absent, not multiplied by 0: an infinite x̂ must not
        // turn γ·rstd·dz into ∞·0 = NaN (torch's eval backward is γ·rstd·dz).
        store(dX + offset, training ? at::vec::fmadd(dz, k, at::vec::fmadd(xhat, kx, k1)) : dz * k, n);
      };
      if (!s.channels_last) {
        at::parallel_for(0, s.B * C, std::max<int64_t>(1, (int64_t{1} << 13) / s.S), [&](int64_t i0, int64_t i1) {
          const auto run = dx_run;
          const int64_t S = s.S;
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t c = i % C;
            const V vmu(mean[c]), vr(rstd[c]), vg(pw[c]), vb(pb[c]), k(k_dz[c]), kx(k_xhat[c]), k1(k_one[c]);
            for_each_vector<K>(S, [&](int64_t j, int64_t n) { run(i * S + j, n, vmu, vr, vg, vb, k, kx, k1); });
          }
        });
      } else {
        const acc_t *kd = k_dz.data(), *kx = k_xhat.data(), *k1 = k_one.data();
        at::parallel_for(0, R, std::max<int64_t>(1, (int64_t{1} << 13) / C), [=](int64_t r0, int64_t r1) {
          const auto run = dx_run;
          const acc_t *m = mean, *rs = rstd, *g = pw, *bb = pb, *k = kd, *k_x = kx, *k_1 = k1;
          for (int64_t r = r0; r < r1; ++r) {
            for_each_vector<K>(C, [&](int64_t j, int64_t n) {
              run(r * C + j, n, load(m + j, n), load(rs + j, n), load(g + j, n), load(bb + j, n), load(k + j, n),
                  load(k_x + j, n), load(k_1 + j, n));
            });
          }
        });
      }
    });
    if (need_dw) {
      std::vector<acc_t> v(C);
      for (int64_t c = 0; c < C; ++c) v[c] = static_cast<acc_t>(sum_dz_xhat[c]);
      grad_weight.copy_(at::from_blob(v.data(), {C}, input.options().dtype(acc).device(at::kCPU)));
    }
    if (need_db) {
      std::vector<acc_t> v(C);
      for (int64_t c = 0; c < C; ++c) v[c] = static_cast<acc_t>(sum_dz[c]);
      grad_bias.copy_(at::from_blob(v.data(), {C}, input.options().dtype(acc).device(at::kCPU)));
    }
  });
  return p.returned();
}

}  // namespace

TORCH_LIBRARY_IMPL(minitorch_nn, CPU, m) {
  m.impl("layer_norm_act", &layer_norm_act_cpu);
  m.impl("layer_norm_act_backward", &layer_norm_act_backward_cpu);
  m.impl("batch_norm_act", &batch_norm_act_cpu);
  m.impl("batch_norm_act_backward", &batch_norm_act_backward_cpu);
}

}  // namespace minitorch_nn
