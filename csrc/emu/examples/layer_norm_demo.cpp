// Runs the CUDA LayerNorm+GELU forward kernel (csrc/cuda/norm_act.cu) on the CPU, through the
// emulator, and checks it against the definition written as plain loops.
//
//   bash csrc/emu/run_example.sh 37 1500          # M rows of N values (defaults 8, 100)
//   bash csrc/emu/run_example.sh --gdb 8 100      # the same under gdb, stopped in the kernel
//
// With N ≤ 1024 a warp normalizes a row (ln_forward_warp), above that a block (ln_forward_block).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "norm_act.h"

int main(int argc, char** argv) {
  using minitorch_nn::Act;
  const int64_t M = argc > 1 ? std::atoll(argv[1]) : 8, N = argc > 2 ? std::atoll(argv[2]) : 100;
  std::vector<float> x(M * N), w(N), b(N), y(M * N), mean(M), rstd(M);
  for (int64_t i = 0; i < M * N; ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f + 1.0f;
  for (int64_t j = 0; j < N; ++j) {
    w[j] = 1.0f + 0.01f * static_cast<float>(j % 7);
    b[j] = 0.1f * static_cast<float>(j % 3);
  }
  const cudaError_t err = minitorch_nn::cuda::layer_norm_act_forward<float>(
      Act::GELU, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), M, N, 1e-5, nullptr);
  if (err != cudaSuccess) {
    std::printf("launch failed: %s\n", cudaGetErrorString(err));
    return 1;
  }
  double worst = 0;
  for (int64_t r = 0; r < M; ++r) {  // the definition, in double
    double mu = 0, var = 0;
    for (int64_t j = 0; j < N; ++j) mu += x[r * N + j];
    mu /= static_cast<double>(N);
    for (int64_t j = 0; j < N; ++j) var += (x[r * N + j] - mu) * (x[r * N + j] - mu);
    const double rs = 1.0 / std::sqrt(var / static_cast<double>(N) + 1e-5);
    for (int64_t j = 0; j < N; ++j) {
      const double z = (x[r * N + j] - mu) * rs * w[j] + b[j];
      const double want = 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0)));
      worst = std::fmax(worst, std::fabs(want - y[r * N + j]));
    }
  }
  std::printf("layer_norm_act_forward<float>, GELU, M=%lld N=%lld: y[0..3] = %.6f %.6f %.6f, max |error| = %.3g\n",
              static_cast<long long>(M), static_cast<long long>(N), y[0], y[1], y[2], worst);
  return worst < 1e-4 ? 0 : 1;
}
