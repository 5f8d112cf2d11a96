// The machine's peak multiply-add throughput, measured: the limit the benchmark's compute-bound
// rows (conv, linear) are reported as a percentage of.
//
// Each thread runs kChains independent vector FMA chains, acc_i = acc_i·a + b, entirely in
// registers: no loads, no stores, no dependency between chains. An FMA has a latency of 4-5
// cycles and a core issues up to two per cycle, so about ten chains in flight keep both FMA
// pipes busy; twelve leave a margin and still fit in the 16 vector registers of AVX2 (32 with
// AVX-512). Each FMA counts as 2 flops per lane. The best of several repetitions is the peak:
// the figure a perfectly scheduled kernel of our build ISA could reach, on the same threads.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace minitorch_nn {
namespace {

constexpr int kChains = 12;

template <typename T>
double peak_gflops(int64_t threads) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t kIters = 1 << 22;
  std::atomic<int64_t> sink{0};
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        V acc[kChains];
        for (int c = 0; c < kChains; ++c) acc[c] = V(static_cast<T>(c));
        const V a(static_cast<T>(0.999999)), b(static_cast<T>(1e-6));
        for (int64_t i = 0; i < kIters; ++i) {
#pragma GCC unroll 12
          for (int c = 0; c < kChains; ++c) acc[c] = at::vec::fmadd(acc[c], a, b);
        }
        // Use the result, so the compiler cannot drop the loop.
        T out[V::size()];
        V total = acc[0];
        for (int c = 1; c < kChains; ++c) total = total + acc[c];
        total.store(out);
        sink += static_cast<int64_t>(out[0] > 0);
      }
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, 2.0 * V::size() * kChains * kIters * threads / seconds / 1e9);
  }
  return sink.load() >= 0 ? best : 0;
}

double fma_peak_gflops(c10::ScalarType dtype, int64_t threads) {
  TORCH_CHECK_VALUE(threads >= 1, "_fma_peak_gflops: threads must be at least 1, got ", threads);
  TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kDouble, "_fma_peak_gflops: dtype must be float32 or float64");
  return dtype == at::kFloat ? peak_gflops<float>(threads) : peak_gflops<double>(threads);
}

}  // namespace
}  // namespace minitorch_nn

TORCH_LIBRARY_IMPL(minitorch_nn, CompositeImplicitAutograd, m) {
  m.impl("_fma_peak_gflops", &minitorch_nn::fma_peak_gflops);
}
