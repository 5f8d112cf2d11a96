// Launchers of the CUDA conv2d kernel ladder (csrc/cuda/conv_*.cu). Read in this order:
//   rung 1  conv_direct.cu     the definition: a thread per output (and per input / weight
//                              element for the gradients); every dtype, float64 included
//   rung 2  conv_implicit.cu   implicit GEMM: no im2col buffer; tiles of the GEMM view staged in
//                              shared memory, a register tile per thread; every dtype
//   rung 3  conv_mma.cu        tensor cores: mma.sync on bfloat16 / float16 (float32 accumulation),
//                              NHWC, a cp.async pipeline; each PTX instruction behind a device
//                              function of mma.cuh whose lane layout is written out (and run as
//                              plain C++ by the CUDA emulator)
//
// Plain CUDA C++, no torch: device pointers with element strides, a ConvShape (csrc/conv_shape.h:
// the letters N, C, H, W, O, kh, kw, OH, OW and the GEMM view), a stream in, a cudaError_t out (the
// launch's, from cudaGetLastError). The torch glue (csrc/cuda/conv_ops.h) checks every argument
// first and plans the outputs; these functions trust what they are given:
//   * sizes are non-zero (the glue returns early on empty tensors) and each tensor's
//     Strided4 addresses only its own elements (any layout: NCHW, channels_last, or other
//     strides); offsets are computed in 64 bits;
//   * bias may be null; the outputs do not alias the inputs;
//   * the backward launchers take dz = dL/dz, the gradient of the pre-activation (the glue forms
//     dz = dy·f'(z) with conv2d_act_grad first), and overwrite their outputs.
//
// scalar_t is float, double, __half or __nv_bfloat16; every sum is accumulated in acc_type
// (double for double, float otherwise) and rounded to scalar_t once. Nothing uses atomics: every
// result is the same bit for bit from run to run.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../activation.h"
#include "../conv_shape.h"
#include "norm_act.h"  // AccType / acc_type

namespace minitorch_nn {
namespace cuda {

using conv::ConvShape;

// A 4-D device tensor indexed (i0, i1, i2, i3) = (n, c, h, w) (or (o, c, a, b) for the weight),
// whatever its memory layout: element (i0, i1, i2, i3) is at data[i0·s0 + i1·s1 + i2·s2 + i3·s3].
template <typename T>
struct Strided4 {
  T* data;
  int64_t s0, s1, s2, s3;
  MTNN_HD T& operator()(int64_t i0, int64_t i1, int64_t i2, int64_t i3) const {
    return data[i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3];
  }
};

// ---- rung 1: direct (conv_direct.cu) ---------------------------------------------------------

// y = act(conv(x, w) + bias).
template <typename scalar_t>
cudaError_t conv2d_direct_forward(const ConvShape& s, Strided4<const scalar_t> x, Strided4<const scalar_t> w,
                                  const scalar_t* bias, Act act, Strided4<scalar_t> y, cudaStream_t stream);
// dx[n, c, h, w] = Σ over (o, a, b) of the group whose tap lands on (h, w): dz[n, o, i, j]·w[o, c, a, b].
template <typename scalar_t>
cudaError_t conv2d_direct_backward_input(const ConvShape& s, Strided4<const scalar_t> dz,
                                         Strided4<const scalar_t> w, Strided4<scalar_t> dx, cudaStream_t stream);
// dw[o, c, a, b] = Σ_{n, i, j} dz[n, o, i, j]·x[n, g·Cg + c, in_row(i, a), in_col(j, b)].
template <typename scalar_t>
cudaError_t conv2d_direct_backward_weight(const ConvShape& s, Strided4<const scalar_t> dz,
                                          Strided4<const scalar_t> x, Strided4<scalar_t> dw, cudaStream_t stream);

// ---- shared by every rung (conv_direct.cu) -----------------------------------------------------

// dz = dy·f'(z), in place over z: dy and z are dense, in the same memory layout, n elements each.
template <typename scalar_t>
cudaError_t conv2d_act_grad(Act act, const scalar_t* dy, scalar_t* z, int64_t n, cudaStream_t stream);
// db[o] = Σ_{n, i, j} dz[n, o, i, j]: a block per channel, a fixed-order tree (deterministic).
template <typename scalar_t>
cudaError_t conv2d_bias_grad(const ConvShape& s, Strided4<const scalar_t> dz, scalar_t* db, cudaStream_t stream);

// ---- rung 2: implicit GEMM, shared-memory tiled (conv_implicit.cu) ----------------------------

template <typename scalar_t>
cudaError_t conv2d_implicit_forward(const ConvShape& s, Strided4<const scalar_t> x, Strided4<const scalar_t> w,
                                    const scalar_t* bias, Act act, Strided4<scalar_t> y, cudaStream_t stream);
template <typename scalar_t>
cudaError_t conv2d_implicit_backward_input(const ConvShape& s, Strided4<const scalar_t> dz,
                                           Strided4<const scalar_t> w, Strided4<scalar_t> dx, cudaStream_t stream);
// The weight gradient reduces over N·OH·OW: split into slices whose partial sums go to `workspace`
// (acc_type, conv2d_implicit_backward_weight_workspace_bytes of it), then added in a fixed order.
template <typename scalar_t>
size_t conv2d_implicit_backward_weight_workspace_bytes(const ConvShape& s);
template <typename scalar_t>
cudaError_t conv2d_implicit_backward_weight(const ConvShape& s, Strided4<const scalar_t> dz,
                                            Strided4<const scalar_t> x, Strided4<scalar_t> dw, void* workspace,
                                            cudaStream_t stream);

// ---- rung 3: tensor cores (conv_mma.cu) --------------------------------------------------------

// Whether rung 3 runs this convolution: scalar_t __half or __nv_bfloat16, groups == 1, x, w and y
// channels_last-dense (channel stride 1), C and O multiples of 8 (16-byte cp.async rows), and every
// pointer 16-byte aligned. Where it does not, algorithm='auto' runs rung 2 and 'mma' raises ValueError.
template <typename scalar_t>
bool conv2d_mma_supported(const ConvShape& s, Strided4<const scalar_t> x, Strided4<const scalar_t> w,
                          Strided4<scalar_t> y);
template <typename scalar_t>
cudaError_t conv2d_mma_forward(const ConvShape& s, Strided4<const scalar_t> x, Strided4<const scalar_t> w,
                               const scalar_t* bias, Act act, Strided4<scalar_t> y, cudaStream_t stream);

}  // namespace cuda
}  // namespace minitorch_nn
