// Runs rungs 1 and 2 of the CUDA conv2d ladder (csrc/cuda/conv_direct.cu, conv_implicit.cu) on the
// CPU, through the emulator: the forward with a fused bias + ReLU, and both backward kernels,
// checked against the definition written as plain loops.
//
//   bash csrc/emu/run_example.sh conv                 # N=2, C=3, 9x9, O=4, 3x3, stride 1, padding 1
//   bash csrc/emu/run_example.sh conv 2 8 12 12 16 3 2 1   # N C H W O k stride padding
//   bash csrc/emu/run_example.sh --gdb conv           # under gdb, stopped in rung 2's tile loop
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "conv.h"

namespace {

using minitorch_nn::Act;
using minitorch_nn::conv::ConvShape;
using minitorch_nn::cuda::Strided4;

// NCHW-contiguous strides of an (a, b, c, d) tensor.
template <typename T>
Strided4<T> nchw(T* p, int64_t b, int64_t c, int64_t d) {
  return {p, b * c * d, c * d, d, 1};
}

bool report(const char* what, const cudaError_t err, const std::vector<float>& got, const std::vector<double>& want) {
  if (err != cudaSuccess) {
    std::printf("%s: launch failed: %s\n", what, cudaGetErrorString(err));
    return false;
  }
  double worst = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    worst = std::fmax(worst, std::fabs(want[i] - got[i]));
    scale = std::fmax(scale, std::fabs(want[i]));
  }
  const bool ok = worst <= 1e-5 * std::fmax(scale, 1.0);
  std::printf("%-44s max |error| = %.3g (of values up to %.3g) %s\n", what, worst, scale, ok ? "ok" : "WRONG");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  auto arg = [&](int i, int64_t fallback) { return argc > i ? std::atoll(argv[i]) : fallback; };
  ConvShape s{};
  s.N = arg(1, 2), s.C = arg(2, 3), s.H = arg(3, 9), s.W = arg(4, 9), s.O = arg(5, 4), s.kh = s.kw = arg(6, 3);
  s.stride_h = s.stride_w = arg(7, 1);
  s.pad_top = s.pad_left = arg(8, 1);
  s.dil_h = s.dil_w = 1;
  s.groups = 1;
  s.OH = (s.H + 2 * s.pad_top - s.kh) / s.stride_h + 1;
  s.OW = (s.W + 2 * s.pad_left - s.kw) / s.stride_w + 1;
  std::vector<float> x(s.N * s.C * s.H * s.W), w(s.O * s.C * s.kh * s.kw), b(s.O), dz(s.N * s.O * s.L());
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i));
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(0.91f * static_cast<float>(i)) * 0.5f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = 0.1f * static_cast<float>(i % 3) - 0.1f;
  for (size_t i = 0; i < dz.size(); ++i) dz[i] = std::sin(1.3f * static_cast<float>(i) + 0.5f);

  // The definition, in double: y = relu(conv(x, w) + b), dx = conv^T(dz, w), dw = dz ⋆ x.
  std::vector<double> y_want(dz.size()), dx_want(x.size(), 0.0), dw_want(w.size(), 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.O; ++o)
      for (int64_t i = 0; i < s.OH; ++i)
        for (int64_t j = 0; j < s.OW; ++j) {
          const int64_t out = ((n * s.O + o) * s.OH + i) * s.OW + j;
          double z = b[o];
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t a = 0; a < s.kh; ++a)
              for (int64_t bb = 0; bb < s.kw; ++bb) {
                const int64_t h = s.in_row(i, a), v = s.in_col(j, bb);
                if (h < 0 || h >= s.H || v < 0 || v >= s.W) continue;
                const int64_t xi = ((n * s.C + c) * s.H + h) * s.W + v, wi = ((o * s.C + c) * s.kh + a) * s.kw + bb;
                z += static_cast<double>(x[xi]) * w[wi];
                dx_want[xi] += static_cast<double>(dz[out]) * w[wi];
                dw_want[wi] += static_cast<double>(dz[out]) * x[xi];
              }
          y_want[out] = z > 0 ? z : 0;
        }

  bool ok = true;
  std::vector<float> y(dz.size()), dx(x.size()), dw(w.size());
  const auto xs = nchw<const float>(x.data(), s.C, s.H, s.W), ws = nchw<const float>(w.data(), s.C, s.kh, s.kw);
  const auto dzs = nchw<const float>(dz.data(), s.O, s.OH, s.OW);
  std::printf("conv2d N=%lld C=%lld %lldx%lld -> O=%lld, %lldx%lld kernel, stride %lld, padding %lld (float32)\n",
              static_cast<long long>(s.N), static_cast<long long>(s.C), static_cast<long long>(s.H),
              static_cast<long long>(s.W), static_cast<long long>(s.O), static_cast<long long>(s.kh),
              static_cast<long long>(s.kw), static_cast<long long>(s.stride_h), static_cast<long long>(s.pad_top));
  namespace cu = minitorch_nn::cuda;
  ok &= report("rung 1 (direct) forward, bias + ReLU",
               cu::conv2d_direct_forward<float>(s, xs, ws, b.data(), Act::ReLU, nchw(y.data(), s.O, s.OH, s.OW),
                                                nullptr),
               y, y_want);
  ok &= report("rung 2 (implicit GEMM) forward, bias + ReLU",
               cu::conv2d_implicit_forward<float>(s, xs, ws, b.data(), Act::ReLU, nchw(y.data(), s.O, s.OH, s.OW),
                                                  nullptr),
               y, y_want);
  ok &= report("rung 1 input gradient",
               cu::conv2d_direct_backward_input<float>(s, dzs, ws, nchw(dx.data(), s.C, s.H, s.W), nullptr), dx,
               dx_want);
  ok &= report("rung 2 input gradient",
               cu::conv2d_implicit_backward_input<float>(s, dzs, ws, nchw(dx.data(), s.C, s.H, s.W), nullptr), dx,
               dx_want);
  ok &= report("rung 1 weight gradient",
               cu::conv2d_direct_backward_weight<float>(s, dzs, xs, nchw(dw.data(), s.C, s.kh, s.kw), nullptr), dw,
               dw_want);
  std::vector<char> workspace(cu::conv2d_implicit_backward_weight_workspace_bytes<float>(s));
  ok &= report("rung 2 weight gradient",
               cu::conv2d_implicit_backward_weight<float>(s, dzs, xs, nchw(dw.data(), s.C, s.kh, s.kw),
                                                          workspace.data(), nullptr),
               dw, dw_want);
  return ok ? 0 : 1;
}
