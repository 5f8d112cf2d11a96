// im2col and col2im: the receptive fields of one image as the columns of a matrix, and back.
//
// For image n and group g, cols is the (K, L) matrix of conv.h's GEMM view, row-major:
//   cols[(c, a, b), (i, j)] = x[n, g·C/g + c, in_row(i, a), in_col(j, b)]   (0 in the padding)
// K = (C/g)·kh·kw rows, L = OH·OW columns: kh·kw/(stride_h·stride_w) times the input's size,
// which is what makes im2col expensive for 3x3 and larger kernels (rung 4 never builds it).
//
// Both walk cols row by row, in memory order: a row (c, a, b) is one input channel read at one
// kernel tap, i.e. OH strided copies of OW values. With stride_w = 1 each of those is a plain
// copy of a contiguous run of x between the zero-filled left and right padding, so the loop
// streams through cols once and reads x rows that stay in L1/L2 across the kw taps of a row.
// Rows are independent: at::parallel_for splits them across threads (inside an outer parallel
// region it runs them on the calling thread).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "conv.h"

namespace minitorch_nn {
namespace conv {

// A 1x1 kernel at stride 1 without padding: cols[(c), (i, j)] = x[n, c, i, j], so cols is the
// image itself and im2col can be skipped (rungs 2 and 3 read x in place).
inline bool cols_is_input(const ConvShape& s) {
  return s.kh == 1 && s.kw == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 && s.pad_left == 0 &&
         s.OH == s.H && s.OW == s.W;
}

// [lo, hi): the output columns j whose input column in_col(j, b) lies inside [0, W).
inline void valid_cols(const ConvShape& s, int64_t b, int64_t* lo, int64_t* hi) {
  const int64_t off = b * s.dil_w - s.pad_left;  // in_col(j, b) = j·stride_w + off
  // smallest j with j·stride_w + off >= 0, and smallest j with j·stride_w + off >= W
  auto ceil_div = [](int64_t a, int64_t d) { return a <= 0 ? -((-a) / d) : (a + d - 1) / d; };
  *lo = std::clamp<int64_t>(ceil_div(-off, s.stride_w), 0, s.OW);
  *hi = std::clamp<int64_t>(ceil_div(s.W - off, s.stride_w), *lo, s.OW);
}

// x_img: one image (C, H, W), contiguous. Writes cols (K, L) of group g.
template <typename T>
void im2col(const ConvShape& s, const T* x_img, int64_t g, T* cols) {
  const int64_t L = s.L(), taps = s.kh * s.kw;
  at::parallel_for(0, s.K(), 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t c = k / taps, a = (k % taps) / s.kw, b = k % s.kw;
      const T* plane = x_img + (g * s.Cg() + c) * s.H * s.W;
      T* row = cols + k * L;
      int64_t lo, hi;
      valid_cols(s, b, &lo, &hi);
      for (int64_t i = 0; i < s.OH; ++i) {
        T* out = row + i * s.OW;
        const int64_t ih = s.in_row(i, a);
        if (ih < 0 || ih >= s.H) {
          std::fill(out, out + s.OW, T(0));
          continue;
        }
        const T* in = plane + ih * s.W;
        std::fill(out, out + lo, T(0));
        if (s.stride_w == 1) {
          std::memcpy(out + lo, in + s.in_col(lo, b), (hi - lo) * sizeof(T));
        } else {
          for (int64_t j = lo; j < hi; ++j) out[j] = in[s.in_col(j, b)];
        }
        std::fill(out + hi, out + s.OW, T(0));
      }
    }
  });
}

// The adjoint of im2col: adds every column entry back onto the input pixel it was read from.
// dx_img: one image (C, H, W); only group g's channels are touched, and they are overwritten
// (zeroed first). Parallel over channels: all kh·kw rows of channel c land in c's plane only.
template <typename T>
void col2im(const ConvShape& s, const T* cols, int64_t g, T* dx_img) {
  const int64_t L = s.L(), taps = s.kh * s.kw;
  at::parallel_for(0, s.Cg(), 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      T* plane = dx_img + (g * s.Cg() + c) * s.H * s.W;
      std::fill(plane, plane + s.H * s.W, T(0));
      for (int64_t a = 0; a < s.kh; ++a) {
        for (int64_t b = 0; b < s.kw; ++b) {
          const T* row = cols + (c * taps + a * s.kw + b) * L;
          int64_t lo, hi;
          valid_cols(s, b, &lo, &hi);
          for (int64_t i = 0; i < s.OH; ++i) {
            const int64_t ih = s.in_row(i, a);
            if (ih < 0 || ih >= s.H) continue;
            T* out = plane + ih * s.W;
            const T* in = row + i * s.OW;
            for (int64_t j = lo; j < hi; ++j) out[s.in_col(j, b)] += in[j];
          }
        }
      }
    }
  });
}

}  // namespace conv
}  // namespace minitorch_nn
