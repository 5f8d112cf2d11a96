// Rung 1 of the CUDA conv ladder: the definition of convolution on a GPU.
//
//   forward        y[n, o, i, j]  = f(bias[o] + Σ_{c, a, b} x[n, g·Cg + c, in_row(i, a), in_col(j, b)]·w[o, c, a, b])
//   input grad     dx[n, c, h, w] = Σ_{o in c's group, a, b : h = in_row(i, a), w = in_col(j, b)} dz[n, o, i, j]·w[o, c', a, b]
//   weight grad    dw[o, c, a, b] = Σ_{n, i, j} dz[n, o, i, j]·x[n, g·Cg + c, in_row(i, a), in_col(j, b)]
//   bias grad      db[o]          = Σ_{n, i, j} dz[n, o, i, j]
// with g = o / Og the group of output channel o, c' = c mod Cg, taps in the padding reading 0, and
// dz = dy·f'(z) the gradient of the pre-activation z (conv2d_act_grad, below).
//
// One thread computes one element of the result, as one line of the formula: the forward a thread
// per output, the input gradient a thread per input element (it gathers every output its element
// reached: the taps (a, b) for which h + pad_top − a·dil_h is a multiple of stride_h, and so for w),
// the weight gradient a thread per weight. No thread writes what another writes, so there are no
// atomics and every result is the same bit for bit on every run. Nothing is shared or reused:
// every x and w value is read from global memory once per multiply (the caches catch some of it).
// That is what rung 2 (conv_implicit.cu) fixes. The rung's worth is that it is obviously right,
// reads any strides (NCHW, channels_last, a sliced view) and runs every dtype, float64 included,
// so gradcheck runs against it on a GPU.
//
// The bias gradient is a reduction, the same for every rung: a block per output channel, each
// thread summing a strided share in a fixed order, then a tree in shared memory.
//
// Indices are 64-bit; grids are grid-stride loops capped at kMaxGrid blocks (common.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "conv.h"

namespace minitorch_nn {
namespace cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t elements) {
  return static_cast<unsigned>(std::min(ceil_div(elements, kThreads), kMaxGrid));
}

// The first element of a grid-stride loop for this thread, and the loop's step.
__device__ __forceinline__ int64_t first_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_step() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

template <Act A, typename T>
__global__ void __launch_bounds__(kThreads)
    direct_forward(ConvShape s, Strided4<const T> x, Strided4<const T> w, const T* bias, Strided4<T> y) {
  using acc_t = acc_type<T>;
  const int64_t total = s.N * s.O * s.L();
  for (int64_t e = first_index(); e < total; e += grid_step()) {
    const int64_t j = e % s.OW, i = e / s.OW % s.OH, o = e / s.L() % s.O, n = e / (s.L() * s.O);
    const int64_t c0 = o / s.Og() * s.Cg();  // the group's first input channel
    acc_t z = 0;
    for (int64_t c = 0; c < s.Cg(); ++c) {
      for (int64_t a = 0; a < s.kh; ++a) {
        const int64_t h = s.in_row(i, a);
        if (h < 0 || h >= s.H) continue;
        for (int64_t b = 0; b < s.kw; ++b) {
          const int64_t v = s.in_col(j, b);
          if (v < 0 || v >= s.W) continue;
          z += Cvt<T>::to(x(n, c0 + c, h, v)) * Cvt<T>::to(w(o, c, a, b));
        }
      }
    }
    if (bias != nullptr) z += Cvt<T>::to(bias[o]);
    y(n, o, i, j) = Cvt<T>::from(act_forward<A>(z));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    direct_backward_input(ConvShape s, Strided4<const T> dz, Strided4<const T> w, Strided4<T> dx) {
  using acc_t = acc_type<T>;
  const int64_t total = s.N * s.C * s.H * s.W;
  for (int64_t e = first_index(); e < total; e += grid_step()) {
    const int64_t v = e % s.W, h = e / s.W % s.H, c = e / (s.H * s.W) % s.C, n = e / (s.C * s.H * s.W);
    const int64_t o0 = c / s.Cg() * s.Og(), cg = c % s.Cg();
    acc_t sum = 0;
    for (int64_t o = o0; o < o0 + s.Og(); ++o) {
      for (int64_t a = 0; a < s.kh; ++a) {
        int64_t i;
        if (!s.out_row(h, a, &i)) continue;
        for (int64_t b = 0; b < s.kw; ++b) {
          int64_t j;
          if (!s.out_col(v, b, &j)) continue;
          sum += Cvt<T>::to(dz(n, o, i, j)) * Cvt<T>::to(w(o, cg, a, b));
        }
      }
    }
    dx(n, c, h, v) = Cvt<T>::from(sum);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    direct_backward_weight(ConvShape s, Strided4<const T> dz, Strided4<const T> x, Strided4<T> dw) {
  using acc_t = acc_type<T>;
  const int64_t total = s.O * s.Cg() * s.kh * s.kw;
  for (int64_t e = first_index(); e < total; e += grid_step()) {
    const int64_t b = e % s.kw, a = e / s.kw % s.kh, c = e / (s.kh * s.kw) % s.Cg(), o = e / s.K();
    const int64_t xc = o / s.Og() * s.Cg() + c;  // the input channel this weight multiplies
    acc_t sum = 0;
    for (int64_t n = 0; n < s.N; ++n) {
      for (int64_t i = 0; i < s.OH; ++i) {
        const int64_t h = s.in_row(i, a);
        if (h < 0 || h >= s.H) continue;
        for (int64_t j = 0; j < s.OW; ++j) {
          const int64_t v = s.in_col(j, b);
          if (v < 0 || v >= s.W) continue;
          sum += Cvt<T>::to(dz(n, o, i, j)) * Cvt<T>::to(x(n, xc, h, v));
        }
      }
    }
    dw(o, c, a, b) = Cvt<T>::from(sum);
  }
}

template <Act A, typename T>
__global__ void __launch_bounds__(kThreads) act_grad(const T* dy, T* z, int64_t n) {
  for (int64_t e = first_index(); e < n; e += grid_step())
    z[e] = Cvt<T>::from(Cvt<T>::to(dy[e]) * act_derivative<A>(Cvt<T>::to(z[e])));
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bias_grad(ConvShape s, Strided4<const T> dz, T* db) {
  using acc_t = acc_type<T>;
  __shared__ acc_t partial[kThreads];
  const int64_t count = s.N * s.L();
  for (int64_t o = blockIdx.x; o < s.O; o += gridDim.x) {
    acc_t sum = 0;
    for (int64_t r = threadIdx.x; r < count; r += kThreads) {
      const int64_t l = r % s.L(), n = r / s.L();
      sum += Cvt<T>::to(dz(n, o, l / s.OW, l % s.OW));
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int width = kThreads / 2; width > 0; width /= 2) {
      if (static_cast<int>(threadIdx.x) < width) partial[threadIdx.x] += partial[threadIdx.x + width];
      __syncthreads();
    }
    if (threadIdx.x == 0) db[o] = Cvt<T>::from(partial[0]);
    __syncthreads();  // partial is written again for the next channel
  }
}

}  // namespace

template <typename T>
cudaError_t conv2d_direct_forward(const ConvShape& s, Strided4<const T> x, Strided4<const T> w, const T* bias,
                                  Act act, Strided4<T> y, cudaStream_t stream) {
  return dispatch_act(act, [&](auto a) {
    constexpr Act A = decltype(a)::value;
    direct_forward<A, T><<<grid_for(s.N * s.O * s.L()), kThreads, 0, stream>>>(s, x, w, bias, y);
    return cudaGetLastError();
  });
}

template <typename T>
cudaError_t conv2d_direct_backward_input(const ConvShape& s, Strided4<const T> dz, Strided4<const T> w,
                                         Strided4<T> dx, cudaStream_t stream) {
  direct_backward_input<T><<<grid_for(s.N * s.C * s.H * s.W), kThreads, 0, stream>>>(s, dz, w, dx);
  return cudaGetLastError();
}

template <typename T>
cudaError_t conv2d_direct_backward_weight(const ConvShape& s, Strided4<const T> dz, Strided4<const T> x,
                                          Strided4<T> dw, cudaStream_t stream) {
  direct_backward_weight<T><<<grid_for(s.O * s.K()), kThreads, 0, stream>>>(s, dz, x, dw);
  return cudaGetLastError();
}

template <typename T>
cudaError_t conv2d_act_grad(Act act, const T* dy, T* z, int64_t n, cudaStream_t stream) {
  return dispatch_act(act, [&](auto a) {
    constexpr Act A = decltype(a)::value;
    act_grad<A, T><<<grid_for(n), kThreads, 0, stream>>>(dy, z, n);
    return cudaGetLastError();
  });
}

template <typename T>
cudaError_t conv2d_bias_grad(const ConvShape& s, Strided4<const T> dz, T* db, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(std::min(s.O, kMaxGrid));
  bias_grad<T><<<grid, kThreads, 0, stream>>>(s, dz, db);
  return cudaGetLastError();
}

#define MTNN_INSTANTIATE(T)                                                                                      \
  template cudaError_t conv2d_direct_forward<T>(const ConvShape&, Strided4<const T>, Strided4<const T>, const T*, \
                                                Act, Strided4<T>, cudaStream_t);                                 \
  template cudaError_t conv2d_direct_backward_input<T>(const ConvShape&, Strided4<const T>, Strided4<const T>,   \
                                                       Strided4<T>, cudaStream_t);                               \
  template cudaError_t conv2d_direct_backward_weight<T>(const ConvShape&, Strided4<const T>, Strided4<const T>,  \
                                                        Strided4<T>, cudaStream_t);                              \
  template cudaError_t conv2d_act_grad<T>(Act, const T*, T*, int64_t, cudaStream_t);                             \
  template cudaError_t conv2d_bias_grad<T>(const ConvShape&, Strided4<const T>, T*, cudaStream_t);
MTNN_INSTANTIATE(float)
MTNN_INSTANTIATE(double)
MTNN_INSTANTIATE(__half)
MTNN_INSTANTIATE(__nv_bfloat16)
#undef MTNN_INSTANTIATE

}  // namespace cuda
}  // namespace minitorch_nn
