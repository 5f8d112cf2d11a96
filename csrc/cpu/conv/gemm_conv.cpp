// Rung 3 of the CPU conv ladder: im2col feeding our own packed, register-tiled GEMM (gemm.h).
//
// What it adds over rung 2 (im2col + at::mm): the matrix product is ours, so the conv's
// pointwise end moves inside it. Per image n and group g (conv.h's GEMM view):
//
//   cols = im2col(x[n], g)                      (K, L)     K = (C/g)·kh·kw,  L = OH·OW
//   y[n, g] = f(W_g @ cols + b)                 (O/g, K) @ (K, L) -> (O/g, L)
//
// with the bias + activation applied to each MR×NR tile while it is still in registers, as the
// GEMM stores it (BiasActStore). Rung 2 lets at::mm store y and then passes over the block once
// more for bias + activation (a read and a write of O·L values per image, from cache at best);
// here that pass is gone. The FLOPs are the same, 2·(O/g)·L·K per (image, group). The GEMM is
// the transparent one of gemm.h, within 10-15% of MKL's at these shapes (measured there), and
// its packers read strided operands, which the backward's transposes use.
//
// What it still pays, like rung 2: the cols matrix, K·L values written by im2col and read back
// by the GEMM's B packing, kh·kw/(s_h·s_w) times the input (9x for a 3x3 stride-1 conv; 7 MiB per
// image for ResNet-50's 3x3 64->64 at 56x56, more than the L2, so it round-trips through L3).
// Rung 4 never builds it. A 1x1, stride-1, unpadded conv needs no im2col: cols is x[n] itself.
//
// Backward (dz = dL/d(pre-activation), (O/g, L) per image and group), the same GEMM transposed
// through its strided packers, so no transpose is ever materialised:
//   dW_g  = Σ_n dz[n, g] @ cols[n, g]ᵀ           (O/g, L) @ (L, K): β = 0 for n = 0, then β = 1,
//                                                  images in order (bitwise repeatable)
//   dcols = W_gᵀ @ dz[n, g]                       (K, O/g) @ (O/g, L) -> (K, L)
//   dx[n, g] = col2im(dcols)                      each input pixel sums the columns that read it
// (for the 1x1 case the GEMM writes dx[n, g] directly: col2im would be the identity).
//
// Threads: the forward and dx give each thread whole (image, group) items, each with its own
// cols buffer, in one parallel region (or, when the items do not split evenly, split each GEMM;
// gemm::for_each_item). dW sums over images, so its threads split dW instead (see below).
#include <algorithm>

#include "cols.h"
#include "conv.h"
#include "gemm.h"

namespace minitorch_nn {
namespace conv {

template <typename T>
void gemm_forward(const ConvShape& s, const T* x, const T* w, const T* bias, Act act, T* y) {
  const int64_t K = s.K(), L = s.L(), Og = s.Og();
  const bool direct = cols_is_input(s);
  dispatch_act(act, [&](auto A) {
    constexpr Act kA = decltype(A)::value;
    gemm::for_each_item(s.N * s.groups, [&](int64_t item) {
      const int64_t n = item / s.groups, g = item % s.groups;
      const T* x_img = x + n * s.C * s.H * s.W;
      const T* cols = x_img + g * s.Cg() * L;  // the 1x1 case: the image's channels are cols
      if (!direct) {
        T* buffer = gemm::scratch<T>(gemm::kSlotCols, K * L);  // this thread's own
        im2col(s, x_img, g, buffer);
        cols = buffer;
      }
      const T* w_g = w + g * Og * K;  // (O/g, K), row-major
      gemm::gemm<T>(Og, L, K, gemm::StridedA<T>{w_g, K, 1}, gemm::StridedB<T>{cols, L, 1},
                    gemm::BiasActStore<T, kA>{y + (n * s.O + g * Og) * L, L, bias ? bias + g * Og : nullptr});
    });
  });
}

template <typename T>
void gemm_backward(const ConvShape& s, const T* dz, const T* x, const T* w, T* dx, T* dw) {
  const int64_t K = s.K(), L = s.L(), Og = s.Og(), Cg = s.Cg(), taps = s.kh * s.kw;
  const bool direct = cols_is_input(s);
  if (dx) {
    gemm::for_each_item(s.N * s.groups, [&](int64_t item) {
      const int64_t n = item / s.groups, g = item % s.groups;
      T* dx_img = dx + n * s.C * s.H * s.W;
      const T* dz_ng = dz + (n * s.O + g * Og) * L;  // (O/g, L)
      // dcols (K, L) = Wᵀ (K, O/g) @ dz (O/g, L); Wᵀ is W (O/g, K) read with swapped strides.
      T* dcols = direct ? dx_img + g * Cg * L : gemm::scratch<T>(gemm::kSlotCols, K * L);
      gemm::gemm<T>(K, L, Og, gemm::StridedA<T>{w + g * Og * K, 1, K}, gemm::StridedB<T>{dz_ng, L, 1},
                    gemm::StoreC<T>{dcols, L});
      if (!direct) col2im(s, dcols, g, dx_img);
    });
  }
  if (!dw) return;
  if (s.N == 0) {
    std::fill(dw, dw + s.O * K, T(0));
    return;
  }
  // dW_g (O/g, K) = Σ_n dz[n, g] (O/g, L) @ cols[n, g]ᵀ (L, K), images in order. One parallel
  // region per group: each thread owns a block of dW's columns, whole input channels of them (a
  // channel's kh·kw taps are adjacent columns), and im2cols just those channels' rows, image by
  // image, into its own buffer; every dW element is still summed over n in order and over l in
  // the GEMM's fixed order, whatever the threads.
  for (int64_t g = 0; g < s.groups; ++g) {
    const gemm::Split split = gemm::split_for_threads<T>(Og, K, gemm::available_threads(), taps);
    at::parallel_for(0, split.blocks(), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const gemm::Range rows = split.rows(t), cols = split.cols(t);  // cols: whole channels
        const int64_t c0 = cols.begin / taps, channels = cols.size() / taps;
        ConvShape sub = s;  // this thread's channels as a one-group conv
        sub.C = channels;
        sub.groups = 1;
        T* buffer = direct ? nullptr : gemm::scratch<T>(gemm::kSlotCols, cols.size() * L);
        for (int64_t n = 0; n < s.N; ++n) {
          const T* x_c0 = x + (n * s.C + g * Cg + c0) * s.H * s.W;
          const T* rows_of_cols = x_c0;  // (channels·taps, L): cols rows [cols.begin, cols.end)
          if (!direct) {
            im2col(sub, x_c0, 0, buffer);
            rows_of_cols = buffer;
          }
          // B = colsᵀ (L, K): element (l, k) = rows_of_cols[(k − cols.begin)·L + l].
          const auto pack_cols_t = [&](T* dst, int64_t l0, int64_t lc, int64_t k0, int64_t kc) {
            gemm::StridedB<T>{rows_of_cols, 1, L}(dst, l0, lc, k0 - cols.begin, kc);
          };
          gemm::gemm_block<T>(rows, cols, L, gemm::StridedA<T>{dz + (n * s.O + g * Og) * L, L, 1}, pack_cols_t,
                              gemm::StoreC<T>{dw + g * Og * K, K, /*accumulate=*/n > 0});
        }
      }
    });
  }
}

template void gemm_forward<float>(const ConvShape&, const float*, const float*, const float*, Act, float*);
template void gemm_forward<double>(const ConvShape&, const double*, const double*, const double*, Act, double*);
template void gemm_backward<float>(const ConvShape&, const float*, const float*, const float*, float*, float*);
template void gemm_backward<double>(const ConvShape&, const double*, const double*, const double*, double*,
                                    double*);

}  // namespace conv
}  // namespace minitorch_nn
