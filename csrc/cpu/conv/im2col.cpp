// Rung 2 of the CPU conv ladder: im2col + GEMM.
//
// What it adds over rung 1: the convolution becomes a matrix product, so the arithmetic runs
// in a tuned BLAS (at::mm: MKL or OpenBLAS, whichever torch was built with) at close to the
// machine's peak instead of in scalar loops. Per image n and group g (conv.h's GEMM view):
//
//   cols = im2col(x[n], g)                       (K, L)     K = (C/g)·kh·kw,  L = OH·OW
//   y[n, g] = W_g @ cols                         (O/g, K) @ (K, L) -> (O/g, L), NCHW already
//   y[n, g] = f(y[n, g] + b)                     bias + activation on the block while it is in cache
//
// The price is the cols buffer: K·L values written and read back per image, kh·kw/(s_h·s_w)
// times the input (9x for a 3x3 stride-1 conv), which rung 4 avoids. A 1x1, stride-1,
// unpadded conv needs no im2col at all: its cols is x[n] itself, read in place.
//
// Backward, the same GEMMs transposed (dz = dL/d(pre-activation), (O/g, L) per image and group):
//   dW_g  = Σ_n dz[n, g] @ cols[n, g]ᵀ            (O/g, L) @ (L, K), accumulated over n in order
//   dcols = W_gᵀ @ dz[n, g]                        (K, O/g) @ (O/g, L) -> (K, L)
//   dx[n, g] = col2im(dcols)                       each pixel sums the columns that read it
//
// Threads: im2col / col2im split their rows and channels; at::mm runs on torch's threads.
#include <ATen/ops/from_blob.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/addmm.h>

#include "cols.h"
#include "conv.h"
#include "epilogue.h"

namespace minitorch_nn {
namespace conv {
namespace {

// A view of raw memory as a (rows, cols) tensor with the given strides, for at::mm.
template <typename T>
at::Tensor matrix(const T* p, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride = 1) {
  return at::from_blob(const_cast<T*>(p), {rows, cols}, {row_stride, col_stride},
                       at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

}  // namespace

template <typename T>
void im2col_forward(const ConvShape& s, const T* x, const T* w, const T* bias, Act act, T* y) {
  const int64_t K = s.K(), L = s.L(), Og = s.Og();
  const bool direct = cols_is_input(s);
  at::Tensor buffer = direct ? at::Tensor() : at::empty({K, L}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  for (int64_t n = 0; n < s.N; ++n) {
    const T* x_img = x + n * s.C * s.H * s.W;
    for (int64_t g = 0; g < s.groups; ++g) {
      const T* cols = direct ? x_img + g * s.Cg() * L : buffer.data_ptr<T>();
      if (!direct) im2col(s, x_img, g, buffer.data_ptr<T>());
      T* y_block = y + (n * s.O + g * Og) * L;  // (O/g, L)
      at::Tensor out = matrix(y_block, Og, L, L);
      at::mm_out(out, matrix(w + g * Og * K, Og, K, K), matrix(cols, K, L, L));
      bias_act_rows(y_block, Og, L, bias ? bias + g * Og : nullptr, act);
    }
  }
}

template <typename T>
void im2col_backward(const ConvShape& s, const T* dz, const T* x, const T* w, T* dx, T* dw) {
  const int64_t K = s.K(), L = s.L(), Og = s.Og();
  const bool direct = cols_is_input(s);
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  at::Tensor buffer = direct ? at::Tensor() : at::empty({K, L}, opts);  // cols, then dcols
  for (int64_t g = 0; g < s.groups; ++g) {
    at::Tensor w_g = matrix(w + g * Og * K, Og, K, K);                  // (O/g, K)
    at::Tensor dw_g = dw ? matrix(dw + g * Og * K, Og, K, K) : at::Tensor();
    for (int64_t n = 0; n < s.N; ++n) {
      const T* x_img = x + n * s.C * s.H * s.W;
      at::Tensor dz_ng = matrix(dz + (n * s.O + g * Og) * L, Og, L, L);  // (O/g, L)
      if (dw) {
        const T* cols = direct ? x_img + g * s.Cg() * L : buffer.data_ptr<T>();
        if (!direct) im2col(s, x_img, g, buffer.data_ptr<T>());
        at::Tensor cols_t = matrix(cols, L, K, 1, L);  // colsᵀ, (L, K), no copy
        if (n == 0) {
          at::mm_out(dw_g, dz_ng, cols_t);
        } else {
          at::addmm_out(dw_g, dw_g, dz_ng, cols_t);  // dW_g += dz @ colsᵀ, images in order
        }
      }
      if (dx) {
        T* dx_img = dx + n * s.C * s.H * s.W;
        if (direct) {  // dcols is dx itself
          at::Tensor dx_block = matrix(dx_img + g * s.Cg() * L, K, L, L);
          at::mm_out(dx_block, w_g.t(), dz_ng);
        } else {
          at::Tensor dcols = buffer;  // (K, L), reused
          at::mm_out(dcols, w_g.t(), dz_ng);
          col2im(s, dcols.data_ptr<T>(), g, dx_img);
        }
      }
    }
  }
}

template void im2col_forward<float>(const ConvShape&, const float*, const float*, const float*, Act, float*);
template void im2col_forward<double>(const ConvShape&, const double*, const double*, const double*, Act, double*);
template void im2col_backward<float>(const ConvShape&, const float*, const float*, const float*, float*, float*);
template void im2col_backward<double>(const ConvShape&, const double*, const double*, const double*, double*,
                                      double*);

}  // namespace conv
}  // namespace minitorch_nn
