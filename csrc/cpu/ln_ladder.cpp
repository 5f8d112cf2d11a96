// LayerNorm + activation on the CPU as a kernel ladder: each rung adds one idea to the one before.
//
// Reading order: the math, derived, in minitorch_nn/functional/normalization.py; then rungs 1, 2, 3
// here; then rung 4, the production kernel (csrc/cpu/norm_act.cpp). The CUDA ladder is
// csrc/cuda/ln_ladder.cu. From Python: minitorch_nn.kernels.layer_norm_act(..., rung=1|2|3|4).
//
// Dimensions: M rows (everything before normalized_shape) × N values per row.
//
//   forward   μ = K + (1/N)·Σ(x − K),  K = x[0]          (a constant row gives x − μ = 0 exactly)
//             σ² = (1/N)·Σ(x − μ)²                        (a second pass: no E[x²] − μ² cancellation)
//             rstd = 1/√(σ² + eps),  x̂ = (x − μ)·rstd,  z = γ·x̂ + β,  y = f(z)
//   backward  dz = dy·f'(z),  g = γ·dz
//             dx = rstd·(g − mean(g) − x̂·mean(g·x̂))      (terms 1, 2, 3; means over the row)
//             dγ = Σ_rows dz·x̂,  dβ = Σ_rows dz
//
// Bytes moved (the minimum): the forward reads x and writes y, 2·M·N values; the backward reads x and
// dy and writes dx, 3·M·N. γ, β, μ, rstd, dγ and dβ are O(M + N). A few flops per byte (GELU's Φ and
// φ, an exp and a division, are the most), so a good kernel runs at the speed of memory.
//
//   rung  adds                                                            file
//    1    the definition: scalar loops over one row after another       here
//    2    rows in parallel (at::parallel_for); dγ, dβ as per-chunk      here
//         partial rows added in chunk order (deterministic)
//    3    SIMD: each pass over a row on at::vec::Vectorized<acc_t>      here
//         (8 float lanes with AVX2, 16 with AVX-512), f and f' from
//         activation.h on vectors (vec_math.h), a scalar tail
//    4    four independent vector accumulators (hide the add latency),  csrc/cpu/norm_act.cpp
//         sums of ≤ 1024 values added in double, the backward computes
//         f'(z) once per value (it keeps the row's γ·dz) instead of twice
//
// Every rung computes in acc_t (float for float, bfloat16 and float16; double for double) and returns what
// rung 4 returns (μ and rstd included), through the same op boundary: norm_act_plan.h checks the
// arguments and allocates the outputs, so the rungs differ only in their loops.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../norm_act_plan.h"
#include "../ops.h"
#include "vec_io.h"
#include "vec_math.h"

namespace minitorch_nn {
namespace {

template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

// ---------------------------------------------------------------------------------------------
// Rung 1: the definition, one row after another on one thread.
//
// The forward reads a row three times (the mean, the variance, the output); the backward twice (the
// two row sums of terms 2 and 3, then dx), recomputing x̂ and f'(z) in the second pass rather than
// storing them. Rows after the first are read from memory once and then from cache (a row of 1024
// floats is 4 KiB).

// One row: y, μ and rstd.
template <Act A, typename scalar_t, typename acc_t = acc_type<scalar_t>>
void forward_row_scalar(const scalar_t* x, const acc_t* w, const acc_t* b, scalar_t* y, int64_t N, double eps,
                        acc_t* mean, acc_t* rstd) {
  const acc_t shift = static_cast<acc_t>(x[0]);
  acc_t sum = 0;
  for (int64_t j = 0; j < N; ++j) sum += static_cast<acc_t>(x[j]) - shift;
  const acc_t mu = shift + sum / static_cast<acc_t>(N);
  acc_t m2 = 0;
  for (int64_t j = 0; j < N; ++j) {
    const acc_t d = static_cast<acc_t>(x[j]) - mu;
    m2 += d * d;
  }
  const acc_t rs = static_cast<acc_t>(1.0 / std::sqrt(static_cast<double>(m2) / N + eps));
  for (int64_t j = 0; j < N; ++j) {
    const acc_t xhat = (static_cast<acc_t>(x[j]) - mu) * rs;
    y[j] = static_cast<scalar_t>(act_forward<A>(xhat * w[j] + b[j]));
  }
  *mean = mu;
  *rstd = rs;
}

// One row: dx (skipped when null), and the row's dz·x̂ and dz added into dw[0..N) and db[0..N)
// (each skipped when null).
template <Act A, typename scalar_t, typename acc_t = acc_type<scalar_t>>
void backward_row_scalar(const scalar_t* dy, const scalar_t* x, acc_t mu, acc_t rs, const acc_t* w, const acc_t* b,
                         scalar_t* dx, acc_t* dw, acc_t* db, int64_t N) {
  // Pass 1: Σg and Σg·x̂ for terms 2 and 3, with g = γ·dz; and dγ, dβ.
  acc_t sum_g = 0, sum_gx = 0;
  for (int64_t j = 0; j < N; ++j) {
    const acc_t xhat = (static_cast<acc_t>(x[j]) - mu) * rs;
    const acc_t dz = static_cast<acc_t>(dy[j]) * act_derivative<A>(xhat * w[j] + b[j]);
    sum_g += dz * w[j];
    sum_gx += dz * w[j] * xhat;
    if (dw) dw[j] += dz * xhat;
    if (db) db[j] += dz;
  }
  if (!dx) return;
  // Pass 2: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).
  const acc_t mean_g = sum_g / static_cast<acc_t>(N), mean_gx = sum_gx / static_cast<acc_t>(N);
  for (int64_t j = 0; j < N; ++j) {
    const acc_t xhat = (static_cast<acc_t>(x[j]) - mu) * rs;
    const acc_t g = static_cast<acc_t>(dy[j]) * act_derivative<A>(xhat * w[j] + b[j]) * w[j];
    dx[j] = static_cast<scalar_t>(rs * (g - mean_g - xhat * mean_gx));  // terms 1, 2, 3
  }
}

// ---------------------------------------------------------------------------------------------
// Rung 2: rows in parallel.
//
// Rows are independent, so the forward splits them among threads (at::parallel_for). The backward
// does too, but dγ and dβ sum over all rows: threads adding into one row of sums would race. So
// the rows are cut into a fixed number of chunks, each with its own partial rows of dγ and dβ
// ((chunks, N) in all), which the op adds in chunk order afterwards. The split depends only on M and
// the chunk count, never on which thread ran which chunk or how many threads there are: the same
// bits every run. Rung 1 is the case of one chunk.

// Rows per task such that a task moves ~64 KiB: waking a thread costs more than a few short rows.
inline int64_t row_grain(int64_t N) { return std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(N, 1)); }

// At least 8 rows a chunk, so that the partial rows are few next to the rows, and at most 64 chunks
// (work for up to 64 threads). The count depends on M alone, not on the thread count, so 1 thread
// and 64 compute the same partial rows and the same bits, as rung 4 does.
inline int64_t backward_chunks(int64_t M) {
  return std::clamp<int64_t>(M / 8, 1, 64);
}

// row(r) for every row, in parallel.
template <typename Row>
void forward_rows_parallel(int64_t M, int64_t N, const Row& row) {
  at::parallel_for(0, M, row_grain(N), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) row(r);
  });
}

// row(r, dw, db) for every row, chunk c's rows with dw = dw_part + c·N and db = db_part + c·N
// (null when the partials are null), chunks in parallel.
template <typename acc_t, typename Row>
void backward_rows_parallel(int64_t M, int64_t N, int64_t chunks, acc_t* dw_part, acc_t* db_part, const Row& row) {
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      acc_t* dw = dw_part ? dw_part + c * N : nullptr;
      acc_t* db = db_part ? db_part + c * N : nullptr;
      for (int64_t r = M * c / chunks; r < M * (c + 1) / chunks; ++r) row(r, dw, db);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Rung 3: SIMD.
//
// Each pass over a row handles K = Vectorized<acc_t>::size() values per instruction (8 floats or 4
// doubles with AVX2), the activation included: act_forward / act_derivative are templates over a
// value type, and vec_math.h gives them the vector primitives. The last N mod K values of a row
// go through rung 1's scalar code. The sums keep K lanes of partial sums, added across at the end
// of the row in acc_t (a different order from rung 1's: the same math, other roundings). Loads,
// stores (bfloat16 and float16 widened to float and rounded back a vector at a time) and the lane
// sum are vec_io.h's, shared with rung 4.

template <Act A, typename scalar_t, typename acc_t = acc_type<scalar_t>>
void forward_row_vec(const scalar_t* x, const acc_t* w, const acc_t* b, scalar_t* y, int64_t N, double eps,
                     acc_t* mean, acc_t* rstd) {
  using V = Vectorized<acc_t>;
  constexpr int64_t K = V::size();
  const int64_t NV = N - N % K;  // [0, NV) in vectors of K values, [NV, N) one value at a time
  const acc_t shift = static_cast<acc_t>(x[0]);
  V vsum(0);
  for (int64_t j = 0; j < NV; j += K) vsum += load(x + j) - V(shift);
  acc_t sum = hsum<acc_t>(vsum);
  for (int64_t j = NV; j < N; ++j) sum += static_cast<acc_t>(x[j]) - shift;
  const acc_t mu = shift + sum / static_cast<acc_t>(N);
  const V vmu(mu);
  V vm2(0);
  for (int64_t j = 0; j < NV; j += K) {
    const V d = load(x + j) - vmu;
    vm2 = at::vec::fmadd(d, d, vm2);
  }
  acc_t m2 = hsum<acc_t>(vm2);
  for (int64_t j = NV; j < N; ++j) {
    const acc_t d = static_cast<acc_t>(x[j]) - mu;
    m2 += d * d;
  }
  const acc_t rs = static_cast<acc_t>(1.0 / std::sqrt(static_cast<double>(m2) / N + eps));
  const V vrs(rs);
  for (int64_t j = 0; j < NV; j += K) {
    const V xhat = (load(x + j) - vmu) * vrs;
    store(y + j, act_forward<A>(at::vec::fmadd(xhat, V::loadu(w + j), V::loadu(b + j))));
  }
  for (int64_t j = NV; j < N; ++j) {
    const acc_t xhat = (static_cast<acc_t>(x[j]) - mu) * rs;
    y[j] = static_cast<scalar_t>(act_forward<A>(xhat * w[j] + b[j]));
  }
  *mean = mu;
  *rstd = rs;
}

template <Act A, typename scalar_t, typename acc_t = acc_type<scalar_t>>
void backward_row_vec(const scalar_t* dy, const scalar_t* x, acc_t mu, acc_t rs, const acc_t* w, const acc_t* b,
                      scalar_t* dx, acc_t* dw, acc_t* db, int64_t N) {
  using V = Vectorized<acc_t>;
  constexpr int64_t K = V::size();
  const int64_t NV = N - N % K;
  const V vmu(mu), vrs(rs);
  // Pass 1: Σg and Σg·x̂ (K lanes each), dγ and dβ.
  V vsum_g(0), vsum_gx(0);
  for (int64_t j = 0; j < NV; j += K) {
    const V xhat = (load(x + j) - vmu) * vrs;
    const V wv = V::loadu(w + j);
    const V dz = load(dy + j) * act_derivative<A>(at::vec::fmadd(xhat, wv, V::loadu(b + j)));
    vsum_g += dz * wv;
    vsum_gx = at::vec::fmadd(dz * wv, xhat, vsum_gx);
    if (dw) at::vec::fmadd(dz, xhat, V::loadu(dw + j)).store(dw + j);
    if (db) (V::loadu(db + j) + dz).store(db + j);
  }
  acc_t sum_g = hsum<acc_t>(vsum_g), sum_gx = hsum<acc_t>(vsum_gx);
  for (int64_t j = NV; j < N; ++j) {
    const acc_t xhat = (static_cast<acc_t>(x[j]) - mu) * rs;
    const acc_t dz = static_cast<acc_t>(dy[j]) * act_derivative<A>(xhat * w[j] + b[j]);
    sum_g += dz * w[j];
    sum_gx += dz * w[j] * xhat;
    if (dw) dw[j] += dz * xhat;
    if (db) db[j] += dz;
  }
  if (!dx) return;
  // Pass 2: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).
  const acc_t mean_g = sum_g / static_cast<acc_t>(N), mean_gx = sum_gx / static_cast<acc_t>(N);
  const V vmean_g(mean_g), vmean_gx(mean_gx);
  for (int64_t j = 0; j < NV; j += K) {
    const V xhat = (load(x + j) - vmu) * vrs;
    const V wv = V::loadu(w + j);
    const V g = load(dy + j) * act_derivative<A>(at::vec::fmadd(xhat, wv, V::loadu(b + j))) * wv;
    store(dx + j, vrs * (g - vmean_g - xhat * vmean_gx));
  }
  for (int64_t j = NV; j < N; ++j) {
    const acc_t xhat = (static_cast<acc_t>(x[j]) - mu) * rs;
    const acc_t g = static_cast<acc_t>(dy[j]) * act_derivative<A>(xhat * w[j] + b[j]) * w[j];
    dx[j] = static_cast<scalar_t>(rs * (g - mean_g - xhat * mean_gx));
  }
}

// ---------------------------------------------------------------------------------------------
// The ops: the shared plan (checks, outputs, empty inputs), then the rung's loops.

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_ladder_cpu(const at::Tensor& input,
                                                                         at::IntArrayRef normalized_shape,
                                                                         const std::optional<at::Tensor>& weight,
                                                                         const std::optional<at::Tensor>& bias,
                                                                         double eps, c10::string_view activation,
                                                                         int64_t rung) {
  check_ladder_rung("layer_norm_act_ladder", rung);
  LayerNormActPlan p = plan_layer_norm_act(input, normalized_shape, weight, bias, activation);
  if (p.done) return {p.out, p.mean, p.rstd};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, p.input.scalar_type(), "layer_norm_act_ladder_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* X = p.input.const_data_ptr<scalar_t>();
    const acc_t* W = p.w.const_data_ptr<acc_t>();
    const acc_t* B = p.b.const_data_ptr<acc_t>();
    scalar_t* Y = p.out.mutable_data_ptr<scalar_t>();
    acc_t* mean = p.mean.mutable_data_ptr<acc_t>();
    acc_t* rstd = p.rstd.mutable_data_ptr<acc_t>();
    const int64_t M = p.M, N = p.N;
    dispatch_act(p.act, [&](auto a) {
      constexpr Act A = decltype(a)::value;
      if (rung == 1) {
        for (int64_t r = 0; r < M; ++r) forward_row_scalar<A>(X + r * N, W, B, Y + r * N, N, eps, mean + r, rstd + r);
      } else if (rung == 2) {
        forward_rows_parallel(M, N, [&](int64_t r) {
          forward_row_scalar<A>(X + r * N, W, B, Y + r * N, N, eps, mean + r, rstd + r);
        });
      } else {
        forward_rows_parallel(M, N, [&](int64_t r) {
          forward_row_vec<A>(X + r * N, W, B, Y + r * N, N, eps, mean + r, rstd + r);
        });
      }
    });
  });
  return {p.out, p.mean, p.rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_ladder_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean, const at::Tensor& rstd,
    at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    c10::string_view activation, std::array<bool, 3> output_mask, int64_t rung) {
  check_ladder_rung("layer_norm_act_ladder_backward", rung);
  LayerNormActBackwardPlan p =
      plan_layer_norm_act_backward(grad_out, input, mean, rstd, normalized_shape, weight, bias, activation, output_mask);
  if (p.done) return {p.grad_input, p.grad_weight, p.grad_bias};
  const int64_t M = p.M, N = p.N;
  const int64_t chunks = rung == 1 ? 1 : backward_chunks(M);
  const auto acc_opts = p.input.options().dtype(at::toOpMathType(p.input.scalar_type()));
  at::Tensor dw_part = p.need_dw ? at::zeros({chunks, N}, acc_opts) : at::Tensor();  // (chunks, N)
  at::Tensor db_part = p.need_db ? at::zeros({chunks, N}, acc_opts) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, p.input.scalar_type(), "layer_norm_act_ladder_backward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* dY = p.grad_out.const_data_ptr<scalar_t>();
    const scalar_t* X = p.input.const_data_ptr<scalar_t>();
    const acc_t* mu = p.mean.const_data_ptr<acc_t>();
    const acc_t* rs = p.rstd.const_data_ptr<acc_t>();
    const acc_t* W = p.w.const_data_ptr<acc_t>();
    const acc_t* B = p.b.const_data_ptr<acc_t>();
    scalar_t* dX = p.need_dx ? p.grad_input.mutable_data_ptr<scalar_t>() : nullptr;
    acc_t* dw_p = p.need_dw ? dw_part.mutable_data_ptr<acc_t>() : nullptr;
    acc_t* db_p = p.need_db ? db_part.mutable_data_ptr<acc_t>() : nullptr;
    dispatch_act(p.act, [&](auto a) {
      constexpr Act A = decltype(a)::value;
      const auto dx_row = [&](int64_t r) { return dX ? dX + r * N : nullptr; };
      if (rung == 1) {
        for (int64_t r = 0; r < M; ++r)
          backward_row_scalar<A>(dY + r * N, X + r * N, mu[r], rs[r], W, B, dx_row(r), dw_p, db_p, N);
      } else if (rung == 2) {
        backward_rows_parallel(M, N, chunks, dw_p, db_p, [&](int64_t r, acc_t* dw, acc_t* db) {
          backward_row_scalar<A>(dY + r * N, X + r * N, mu[r], rs[r], W, B, dx_row(r), dw, db, N);
        });
      } else {
        backward_rows_parallel(M, N, chunks, dw_p, db_p, [&](int64_t r, acc_t* dw, acc_t* db) {
          backward_row_vec<A>(dY + r * N, X + r * N, mu[r], rs[r], W, B, dx_row(r), dw, db, N);
        });
      }
    });
  });
  // The chunks' partial rows, added in chunk order (a sum over dim 0 of (chunks, N)).
  if (p.need_dw) p.grad_weight.copy_(dw_part.sum(0).view(normalized_shape));
  if (p.need_db) p.grad_bias.copy_(db_part.sum(0).view(normalized_shape));
  return {p.grad_input, p.grad_weight, p.grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(minitorch_nn, CPU, m) {
  m.impl("layer_norm_act_ladder", &layer_norm_act_ladder_cpu);
  m.impl("layer_norm_act_ladder_backward", &layer_norm_act_ladder_backward_cpu);
}

}  // namespace minitorch_nn
