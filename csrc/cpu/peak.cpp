// The machine's peak multiply-add throughput, measured: the limit the benchmark's compute-bound
// rows (conv, linear) are reported as a percentage of.
//
// Each thread runs kChains independent vector FMA chains, acc_i = acc_i·a + b, entirely in
// registers: no loads, no stores, no dependency between chains. An FMA has a latency of 4-5
// cycles and a core issues up to two per cycle, so about ten chains in flight keep both FMA
// pipes busy; twelve leave a margin and still fit in the 16 vector registers of AVX2 (32 with
// AVX-512). Each FMA counts as 2 flops per lane. The best of 20 repetitions is the peak:
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

constexpr int kChains = 12;  // independent FMA chains per thread

template <typename T>
double peak_gflops(int64_t threads) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t kIters = 1 << 20;  // ~2 ms a repetition: short enough to find a quiet moment
  std::atomic<int64_t> sink{0};
  double best = 0;
  for (int rep = 0; rep < 20; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        // Twelve named accumulators, not an array: an array may live in memory, and a store and
        // reload in each chain would add its latency to the FMA's and halve the rate measured.
        V c0(T(0)), c1(T(1)), c2(T(2)), c3(T(3)), c4(T(4)), c5(T(5));
        V c6(T(6)), c7(T(7)), c8(T(8)), c9(T(9)), c10(T(10)), c11(T(11));
        const V a(static_cast<T>(0.999999)), b(static_cast<T>(1e-6));
        for (int64_t i = 0; i < kIters; ++i) {
          c0 = at::vec::fmadd(c0, a, b), c1 = at::vec::fmadd(c1, a, b), c2 = at::vec::fmadd(c2, a, b);
          c3 = at::vec::fmadd(c3, a, b), c4 = at::vec::fmadd(c4, a, b), c5 = at::vec::fmadd(c5, a, b);
          c6 = at::vec::fmadd(c6, a, b), c7 = at::vec::fmadd(c7, a, b), c8 = at::vec::fmadd(c8, a, b);
          c9 = at::vec::fmadd(c9, a, b), c10 = at::vec::fmadd(c10, a, b), c11 = at::vec::fmadd(c11, a, b);
        }
        // Use the result, so the compiler cannot drop the loop.
        T out[V::size()];
        (((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11))).store(out);
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
