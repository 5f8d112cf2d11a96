// Rung 4 of the CPU conv ladder: implicit GEMM. Rung 3's GEMM, with its B panels packed straight
// from x: no cols matrix in memory.
//
// What it adds over rung 3. Rung 3 writes the whole cols matrix (K·L values per image and group,
// kh·kw/(s_h·s_w) times the input) and the GEMM's B packing reads it back: for ResNet-50's 3x3
// 64->64 at 56x56 that is 7.2 MiB written and 7.2 MiB read per image, through L3 (it does not
// fit in the 512 KiB L2), next to an input of 0.8 MiB. Here the packer computes each panel
// element's source in x itself, the same formula as im2col (conv.h):
//
//   Bp[k, l] = cols[(c, a, b), (i, j)] = x[n, g·C/g + c, in_row(i, a), in_col(j, b)]  (0 in the padding)
//
// so a KC×NC panel is gathered from the few input rows it touches (which stay in L1/L2 across
// the kh·kw taps that re-read them) and goes straight into the packed, sliver-ordered buffer the
// micro-kernel streams. One write of the panel instead of a write of cols, a read of cols and a
// write of the panel; the FLOPs are the same, 2·(O/g)·L·K per (image, group).
//
// Where it should win: kernels larger than 1x1 (3x3, 7x7), where cols is 9 or 49 taps' worth of
// copies of x (divided by the stride squared). Where it cannot: 1x1 stride-1 convs, where rung 3
// already reads x in place as cols, and both rungs do the same work.
//
// Backward (dz = dL/d(pre-activation)):
//   dW_g = Σ_n dz[n, g] @ colsᵀ    B = colsᵀ (L, K) packed from x the same way, a transposed fill;
//                                  images in order, β = 0 then 1, threads splitting dW (bitwise
//                                  repeatable), exactly as rung 3 but with no im2col buffer.
//   dx   = the transposed convolution, as one more implicit GEMM per (image, group):
//          dx[c, h, w] = Σ_{o, a, b} W[o, c, a, b] · dz[o, i, j]   where  i·s_h = h + pad_top − a·d_h,
//                                                                          j·s_w = w + pad_left − b·d_w
//          (terms whose i or j is not a whole index inside the output are 0): M = C/g, N = H·W,
//          K = (O/g)·kh·kw, A = Wᵀ packed from w, B packed from dz. Every dx element is written once,
//          by one GEMM, so there is no col2im scatter and no buffer. For stride s > 1 only 1/s² of
//          B's entries are nonzero, so the GEMM does s² times the useful flops: simple and correct,
//          and the strided layers are the minority (ResNet-50's stem, whose dx is never needed,
//          and its three downsampling 1x1 convs).
//
// Threads: as rung 3 (gemm::for_each_item over (image, group) pairs; dW split by blocks of dW).
#include <algorithm>

#include "cols.h"
#include "conv.h"
#include "gemm.h"

namespace minitorch_nn {
namespace conv {
namespace {

// B = cols (K, L) of one image and group, packed from x_g = x[n, g·C/g :], (C/g, H, W).
template <typename T>
struct PackCols {
  const ConvShape* s;
  const T* x_g;
  void operator()(T* dst, int64_t k0, int64_t kc, int64_t l0, int64_t lc) const {
    constexpr int64_t NR = gemm::Tile<T>::NR;
    const int64_t taps = s->kh * s->kw, OW = s->OW, padded = (lc + NR - 1) / NR * NR;
    for (int64_t r = 0; r < kc; ++r) {
      const int64_t k = k0 + r, c = k / taps, a = k % taps / s->kw, b = k % s->kw;
      const T* plane = x_g + c * s->H * s->W;
      int64_t lo, hi;  // the output columns j that read inside the image at tap b
      valid_cols(*s, b, &lo, &hi);
      for (int64_t p = 0; p < lc;) {  // a run of output positions l = l0 + p within one output row i
        const int64_t l = l0 + p, i = l / OW, j = l % OW, run = std::min(OW - j, lc - p);
        const int64_t ih = s->in_row(i, a);
        if (ih < 0 || ih >= s->H) {
          gemm::panel_row_put<T>(dst, kc, r, p, run, nullptr);
        } else {
          const int64_t j1 = j + run, va = std::clamp(lo, j, j1), vb = std::clamp(hi, va, j1);
          gemm::panel_row_put<T>(dst, kc, r, p, va - j, nullptr);
          if (vb > va) {
            gemm::panel_row_put<T>(dst, kc, r, p + va - j, vb - va, plane + ih * s->W + s->in_col(va, b), s->stride_w);
          }
          gemm::panel_row_put<T>(dst, kc, r, p + vb - j, j1 - vb, nullptr);
        }
        p += run;
      }
      gemm::panel_row_put<T>(dst, kc, r, lc, padded - lc, nullptr);
    }
  }
};

// B = colsᵀ (L, K) of one image and group, for dW: panel rows are output positions l, columns
// are receptive-field entries k. Filled one column at a time, reading x along its rows.
template <typename T>
struct PackColsT {
  const ConvShape* s;
  const T* x_g;
  void operator()(T* dst, int64_t l0, int64_t lc, int64_t k0, int64_t kc) const {
    constexpr int64_t NR = gemm::Tile<T>::NR;
    const int64_t taps = s->kh * s->kw, OW = s->OW, padded = (kc + NR - 1) / NR * NR;
    for (int64_t q = 0; q < kc; ++q) {
      const int64_t k = k0 + q, c = k / taps, a = k % taps / s->kw, b = k % s->kw;
      const T* plane = x_g + c * s->H * s->W;
      int64_t lo, hi;
      valid_cols(*s, b, &lo, &hi);
      for (int64_t p = 0; p < lc;) {
        const int64_t l = l0 + p, i = l / OW, j = l % OW, run = std::min(OW - j, lc - p);
        const int64_t ih = s->in_row(i, a);
        if (ih < 0 || ih >= s->H) {
          gemm::panel_col_put<T>(dst, lc, p, q, run, nullptr);
        } else {
          const int64_t j1 = j + run, va = std::clamp(lo, j, j1), vb = std::clamp(hi, va, j1);
          gemm::panel_col_put<T>(dst, lc, p, q, va - j, nullptr);
          if (vb > va) {
            gemm::panel_col_put<T>(dst, lc, p + va - j, q, vb - va, plane + ih * s->W + s->in_col(va, b), s->stride_w);
          }
          gemm::panel_col_put<T>(dst, lc, p + vb - j, q, j1 - vb, nullptr);
        }
        p += run;
      }
    }
    for (int64_t q = kc; q < padded; ++q) gemm::panel_col_put<T>(dst, lc, 0, q, lc, nullptr);
  }
};

// A = W_gᵀ, (C/g) × ((O/g)·kh·kw): A[c, (o, t)] = w_g[o, c, t] (t = a·kw + b), for dx.
template <typename T>
struct PackWT {
  const ConvShape* s;
  const T* w_g;  // (O/g, C/g, kh, kw)
  void operator()(T* dst, int64_t i0, int64_t mc, int64_t k0, int64_t kc) const {
    constexpr int64_t MR = gemm::Tile<T>::MR;
    const int64_t taps = s->kh * s->kw, Cg = s->Cg();
    for (int64_t r = 0; r * MR < mc; ++r, dst += kc * MR) {
      const int64_t m = std::min(MR, mc - r * MR);
      for (int64_t q = 0; q < kc; ++q) {
        const int64_t k = k0 + q, o = k / taps, t = k % taps;
        const T* src = w_g + (o * Cg + i0 + r * MR) * taps + t;  // channel c at src[c·taps]
        for (int64_t i = 0; i < m; ++i) dst[q * MR + i] = src[i * taps];
        for (int64_t i = m; i < MR; ++i) dst[q * MR + i] = T(0);
      }
    }
  }
};

// B for dx, ((O/g)·kh·kw) × (H·W): B[(o, a, b), (h, w)] = dz_g[o, i, j] where
// i·s_h = h + pad_top − a·d_h and j·s_w = w + pad_left − b·d_w, or 0 when no whole (i, j) inside
// the output solves that: the output positions that read x[h, w] through tap (a, b).
template <typename T>
struct PackDz {
  const ConvShape* s;
  const T* dz_g;  // (O/g, OH, OW)
  void operator()(T* dst, int64_t k0, int64_t kc, int64_t p0, int64_t pc) const {
    constexpr int64_t NR = gemm::Tile<T>::NR;
    const int64_t taps = s->kh * s->kw, W = s->W, OW = s->OW, padded = (pc + NR - 1) / NR * NR;
    for (int64_t r = 0; r < kc; ++r) {
      const int64_t k = k0 + r, o = k / taps, a = k % taps / s->kw, b = k % s->kw;
      const T* dz_o = dz_g + o * s->OH * OW;
      const int64_t off_w = s->pad_left - b * s->dil_w;  // j·s_w = w + off_w
      for (int64_t p = 0; p < pc;) {  // a run of input positions within one input row h
        const int64_t pos = p0 + p, h = pos / W, w = pos % W, run = std::min(W - w, pc - p);
        const int64_t th = h + s->pad_top - a * s->dil_h;  // i·s_h
        if (th < 0 || th % s->stride_h != 0 || th / s->stride_h >= s->OH) {
          gemm::panel_row_put<T>(dst, kc, r, p, run, nullptr);
        } else if (s->stride_w == 1) {  // j = w + off_w, inside [0, OW) for w in [−off_w, OW − off_w)
          const T* dz_row = dz_o + th / s->stride_h * OW;
          const int64_t w1 = w + run, va = std::clamp(-off_w, w, w1), vb = std::clamp(OW - off_w, va, w1);
          gemm::panel_row_put<T>(dst, kc, r, p, va - w, nullptr);
          if (vb > va) gemm::panel_row_put<T>(dst, kc, r, p + va - w, vb - va, dz_row + va + off_w);
          gemm::panel_row_put<T>(dst, kc, r, p + vb - w, w1 - vb, nullptr);
        } else {
          const T* dz_row = dz_o + th / s->stride_h * OW;
          for (int64_t t = 0; t < run; ++t) {
            const int64_t tw = w + t + off_w;
            const bool hit = tw >= 0 && tw % s->stride_w == 0 && tw / s->stride_w < OW;
            *gemm::panel_at(dst, kc, r, p + t) = hit ? dz_row[tw / s->stride_w] : T(0);
          }
        }
        p += run;
      }
      gemm::panel_row_put<T>(dst, kc, r, pc, padded - pc, nullptr);
    }
  }
};

}  // namespace

template <typename T>
void implicit_forward(const ConvShape& s, const T* x, const T* w, const T* bias, Act act, T* y) {
  const int64_t K = s.K(), L = s.L(), Og = s.Og(), Cg = s.Cg();
  dispatch_act(act, [&](auto A) {
    constexpr Act kA = decltype(A)::value;
    gemm::for_each_item(s.N * s.groups, [&](int64_t item) {
      const int64_t n = item / s.groups, g = item % s.groups;
      gemm::gemm<T>(Og, L, K, gemm::StridedA<T>{w + g * Og * K, K, 1},
                    PackCols<T>{&s, x + (n * s.C + g * Cg) * s.H * s.W},
                    gemm::BiasActStore<T, kA>{y + (n * s.O + g * Og) * L, L, bias ? bias + g * Og : nullptr});
    });
  });
}

template <typename T>
void implicit_backward(const ConvShape& s, const T* dz, const T* x, const T* w, T* dx, T* dw) {
  const int64_t K = s.K(), L = s.L(), Og = s.Og(), Cg = s.Cg(), HW = s.H * s.W;
  if (dx) {
    gemm::for_each_item(s.N * s.groups, [&](int64_t item) {
      const int64_t n = item / s.groups, g = item % s.groups;
      gemm::gemm<T>(Cg, HW, Og * s.kh * s.kw, PackWT<T>{&s, w + g * Og * K},
                    PackDz<T>{&s, dz + (n * s.O + g * Og) * L}, gemm::StoreC<T>{dx + (n * s.C + g * Cg) * HW, HW});
    });
  }
  if (!dw) return;
  if (s.N == 0) {
    std::fill(dw, dw + s.O * K, T(0));
    return;
  }
  for (int64_t g = 0; g < s.groups; ++g) {
    const gemm::Split split = gemm::split_for_threads<T>(Og, K, gemm::available_threads());
    at::parallel_for(0, split.blocks(), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        for (int64_t n = 0; n < s.N; ++n) {
          gemm::gemm_block<T>(split.rows(t), split.cols(t), L, gemm::StridedA<T>{dz + (n * s.O + g * Og) * L, L, 1},
                              PackColsT<T>{&s, x + (n * s.C + g * Cg) * HW},
                              gemm::StoreC<T>{dw + g * Og * K, K, /*accumulate=*/n > 0});
        }
      }
    });
  }
}

template void implicit_forward<float>(const ConvShape&, const float*, const float*, const float*, Act, float*);
template void implicit_forward<double>(const ConvShape&, const double*, const double*, const double*, Act, double*);
template void implicit_backward<float>(const ConvShape&, const float*, const float*, const float*, float*, float*);
template void implicit_backward<double>(const ConvShape&, const double*, const double*, const double*, double*,
                                        double*);

}  // namespace conv
}  // namespace minitorch_nn
