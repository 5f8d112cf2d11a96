// The CPU conv2d kernel ladder: the shapes every rung shares, and each rung's entry points.
//
// The shapes (ConvShape, the letters N, C, H, W, O, kh, kw, OH, OW, K, L and the GEMM view) are
// csrc/conv_shape.h's, shared with the CUDA ladder.
//
// The op (conv.cpp) checks the arguments once, computes the shapes, and hands each rung plain
// pointers: the rungs trust what they are given. What a rung is given:
//   rung 1, direct:      strided views (any strides: nothing is copied for it);
//   every other rung:    NCHW-contiguous x, y, dz, dx and a contiguous w (the op copies into
//                        that layout when the caller's tensors are in another, and says so).
// bias may be null. The backward entry points get dz = dL/d(pre-activation) (the op has already
// multiplied the upstream gradient by f'(z)) and write dx and/or dw (either may be null: not
// wanted). They overwrite their outputs (no accumulation into what was there). db = Σ dz is
// the op's, not the rungs'.
//
// T is float or double; each rung accumulates in T.
#pragma once

#include <cstdint>

#include "../../activation.h"
#include "../../conv_shape.h"

namespace minitorch_nn {
namespace conv {

// A 4-D strided view: element (i0, i1, i2, i3) is at data[i0·s0 + i1·s1 + i2·s2 + i3·s3].
template <typename T>
struct View4 {
  T* data;
  int64_t s0, s1, s2, s3;
  T& operator()(int64_t i0, int64_t i1, int64_t i2, int64_t i3) const {
    return data[i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3];
  }
};

// Rung 1 (direct.cpp): the definition, seven loops.
template <typename T>
void direct_forward(const ConvShape& s, View4<const T> x, View4<const T> w, const T* bias, Act act, View4<T> y);
template <typename T>
void direct_backward(const ConvShape& s, View4<const T> dz, View4<const T> x, View4<const T> w, View4<T>* dx,
                     View4<T>* dw);

// Rung 2 (im2col.cpp): im2col / col2im of our own, feeding at::mm.
template <typename T>
void im2col_forward(const ConvShape& s, const T* x, const T* w, const T* bias, Act act, T* y);
template <typename T>
void im2col_backward(const ConvShape& s, const T* dz, const T* x, const T* w, T* dx, T* dw);

// Rung 3 (gemm_conv.cpp): im2col feeding our own packed, register-tiled GEMM (gemm.h).
template <typename T>
void gemm_forward(const ConvShape& s, const T* x, const T* w, const T* bias, Act act, T* y);
template <typename T>
void gemm_backward(const ConvShape& s, const T* dz, const T* x, const T* w, T* dx, T* dw);

// Rung 4 (implicit.cpp): the same GEMM, packing its input panels straight from x (no cols matrix).
template <typename T>
void implicit_forward(const ConvShape& s, const T* x, const T* w, const T* bias, Act act, T* y);
template <typename T>
void implicit_backward(const ConvShape& s, const T* dz, const T* x, const T* w, T* dx, T* dw);

// Depthwise (depthwise.cpp): groups == C, O = C·m. A direct, vectorised loop: one small kernel
// per channel is the wrong shape for a GEMM.
template <typename T>
void depthwise_forward(const ConvShape& s, const T* x, const T* w, const T* bias, Act act, T* y);
template <typename T>
void depthwise_backward(const ConvShape& s, const T* dz, const T* x, const T* w, T* dx, T* dw);

}  // namespace conv
}  // namespace minitorch_nn
