// The shape of one 2-D convolution, shared by every conv kernel of the project: the CPU ladder
// (csrc/cpu/conv/) and the CUDA ladder (csrc/cuda/conv*.cu). Plain C++, no torch; under nvcc its
// member functions are __host__ __device__, so a kernel takes a ConvShape by value.
//
// Dimensions, named once (the same letters as minitorch_nn/functional/conv.py):
//   input   x  (N, C, H, W)            N batch, C input channels, H × W input size
//   weight  w  (O, C/g, kh, kw)        O output channels, g groups, kh × kw kernel
//   output  y  (N, O, OH, OW)          OH × OW output size
// and the GEMM view of one (image n, group g):
//   Y[o, l] = Σ_k W[o, k] · cols[k, l]      o < O/g,  k = (c, a, b) < K = (C/g)·kh·kw,  l = (i, j) < L = OH·OW
//   cols[(c, a, b), (i, j)] = x[n, c, i·stride_h − pad_top + a·dil_h, j·stride_w − pad_left + b·dil_w]
//                              (0 where that falls in the padding)
#pragma once

#include <cstdint>

#include "activation.h"  // MTNN_HD

namespace minitorch_nn {
namespace conv {

struct ConvShape {
  int64_t N, C, H, W;  // input
  int64_t O, kh, kw;   // weight (O, C/groups, kh, kw)
  int64_t OH, OW;      // output
  int64_t stride_h, stride_w;
  int64_t pad_top, pad_left;  // the bottom / right padding only shows in OH / OW
  int64_t dil_h, dil_w;
  int64_t groups;

  MTNN_HD int64_t Cg() const { return C / groups; }     // input channels per group
  MTNN_HD int64_t Og() const { return O / groups; }     // output channels per group
  MTNN_HD int64_t K() const { return Cg() * kh * kw; }  // GEMM reduction length: one receptive field
  MTNN_HD int64_t L() const { return OH * OW; }         // output positions per image
  // The input row / column that output (i, j) reads at kernel tap (a, b); outside [0, H) × [0, W)
  // it is padding (zero).
  MTNN_HD int64_t in_row(int64_t i, int64_t a) const { return i * stride_h - pad_top + a * dil_h; }
  MTNN_HD int64_t in_col(int64_t j, int64_t b) const { return j * stride_w - pad_left + b * dil_w; }
  // Their inverses, for the input gradient: the output row i whose tap a reads input row h, if there
  // is one (h + pad_top − a·dil_h a non-negative multiple of stride_h, and i < OH); likewise columns.
  MTNN_HD bool out_row(int64_t h, int64_t a, int64_t* i) const {
    return inverse(h + pad_top - a * dil_h, stride_h, OH, i);
  }
  MTNN_HD bool out_col(int64_t v, int64_t b, int64_t* j) const {
    return inverse(v + pad_left - b * dil_w, stride_w, OW, j);
  }
  double flops() const { return 2.0 * N * O * L() * K(); }  // multiply-adds × 2, forward

 private:
  MTNN_HD static bool inverse(int64_t t, int64_t stride, int64_t extent, int64_t* i) {
    if (t < 0 || t % stride != 0) return false;
    *i = t / stride;
    return *i < extent;
  }
};

}  // namespace conv
}  // namespace minitorch_nn
