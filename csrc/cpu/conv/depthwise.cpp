// Depthwise conv2d on the CPU (groups == C, O = C·m): forward with a fused bias + activation, and
// the backward's dx and dw. Letters as in conv.h; m = O/C is the channel multiplier, output
// channel o reads input channel c = o / m, and w is (O, 1, kh, kw).
//
//   forward   y[n, o, i, j] = f( bias[o] + Σ_{a<kh, b<kw} w[o, 0, a, b] · x[n, o/m, i·s_h − p_t + a·d_h,
//                                                                               j·s_w − p_l + b·d_w] )
//   backward  (dz = dL/d(pre-activation), given)
//             dx[n, c, h, v] = Σ_{k<m} Σ_{a, b} dz[n, c·m + k, i, j] · w[c·m + k, 0, a, b]
//                              over the taps with h = i·s_h − p_t + a·d_h, v = j·s_w − p_l + b·d_w
//                              for a whole i < OH and j < OW
//             dw[o, 0, a, b] = Σ_{n, i, j} dz[n, o, i, j] · x[n, o/m, i·s_h − p_t + a·d_h, j·s_w − p_l + b·d_w]
//   (x outside [0, H) × [0, W) is the zero padding).
//
// Why not a GEMM. Seen as conv.h's GEMM, each (image, channel) is a (m × K)·(K × L) product with
// K = kh·kw: for a 3x3 kernel a 9-long reduction and, at m = 1, a single row of W. A GEMM is fast
// because every value it loads into a register is used against many rows and columns of the other
// operand; here each input value meets only kh·kw weights, so there is nothing to tile, and
// im2col would write K = 9 copies of the input to read each of them once.
//
// Cost. 2·N·O·OH·OW·kh·kw flops against ≈ sizeof(T)·(N·C·H·W + N·O·OH·OW) bytes of x and y (w is
// tiny): for 3x3, stride 1, fp32 that is 18 flops per 8 bytes, about 2 flops/byte, while a core's
// FMA units need tens of flops per byte from memory to be the limit. So the kernel is memory-bound,
// and the aim is to read x and write y once each, keep every other access in L1, and spend few
// instructions per output.
//
// The scheme: every pass here is "a row of outputs = a weighted sum of shifted rows", with vectors
// along the row (shifted_sum_rows), once the operand rows are laid out so that a shift is just an
// offset:
//   * The input plane is first copied into a small zero-padded buffer P (L1/L2-resident), so padding
//     is zeros in memory and the inner loop has no edge cases. With a column stride s_w > 1 the
//     padded columns are also split by phase, column col going to phase row col mod s_w at place
//     col / s_w: output column j at tap b reads padded column j·s_w + b·d_w, which is place
//     j + ⌊b·d_w / s_w⌋ of phase (b·d_w) mod s_w, so consecutive outputs read consecutive
//     addresses for every stride, and every output row is whole vector loads and FMAs.
//   * forward: y row i = f(bias + Σ_{a,b} w[a, b] · P[row i·s_h + a·d_h, shifted by tap b]): kh·kw
//     vector FMAs per vector of outputs, accumulated in registers; bias and f are applied to the
//     accumulators before the one store (a fused epilogue).
//   * dx: a gather, so each dx value is summed in registers and written once. Padded input column
//     t·s_w + q (phase q, place t) is read by output j = t − ⌊b·d_w / s_w⌋ at every tap b of phase q,
//     so a phase row of dx is a weighted sum of dz rows shifted the other way; dz is copied into a
//     frame of zeros (Dz) so that positions no output reaches read zero. The phase rows are then
//     interleaved back into the dx row (for s_w = 1 that is a plain copy).
//   * dw: one dot product per (o, a, b) between dz and the shifted P rows, in vector accumulators
//     whose lanes are added in a fixed order into a double per tap.
//
// Register blocking: one output row of a 3x3 conv is only 9 FMAs deep per accumulator, and a chain
// of dependent FMAs runs at one per 4-5 cycles while a core can start two a cycle, so a block holds
// up to kMaxRows rows × kMaxVecs vectors (12 independent accumulators). The rows of a block use the
// same taps one input row further down, so one list of tap addresses serves the whole block.
//
// Parallelism and determinism: threads take whole (n, c) planes in the forward (the m output
// channels of c reuse one padded copy of x) and whole channels c in the backward (the m output
// channels of c are exactly the ones that write dx[:, c] and dw[c·m : (c+1)·m]; dx alone, with no
// dw, is split over (n, c) planes instead). No two threads write the same element, and each sum is
// taken in one fixed order (taps in (k, a, b) order, dw over n in order), so results are bitwise
// identical run to run and for any number of threads.
//
// Vectors are ATen's Vectorized<T> (8 floats with AVX2, 16 with AVX-512, a plain array without a
// vector ISA), used through its portable API only (loadu, store with a count, fmadd, set,
// (de)interleave2). A row's last vector may run past the row: each buffer row ends with a vector
// of slack that keeps those loads in bounds, and only the valid lanes are stored.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../vec_math.h"
#include "conv.h"

namespace minitorch_nn {
namespace conv {
namespace {

using at::vec::Vectorized;

// A register block: up to kMaxRows output rows × kMaxVecs vectors of each, 12 accumulators that fit
// AVX2's 16 vector registers with a weight and a load beside them.
constexpr int kMaxRows = 3;
constexpr int kMaxVecs = 4;

// Work (multiply-adds) that makes a parallel task worth waking a thread for.
constexpr int64_t kTaskWork = int64_t{1} << 16;

// A zero-padded, column-phase-split copy of one input plane (or of its gradient): padded row r
// (input row r − p_t) and padded column col (input column col − p_l) sit at at(r, col). Only the
// rows and columns some tap reads are kept: rows < (OH−1)·s_h + (kh−1)·d_h + 1, columns likewise.
// Each phase row holds ⌈cols / s_w⌉ places plus a vector of slack, which a row's last, partly
// valid vector may read.
struct PaddedPlane {
  int64_t rows, cols, phases, places, len;

  explicit PaddedPlane(const ConvShape& s)
      : rows((s.OH - 1) * s.stride_h + (s.kh - 1) * s.dil_h + 1),
        cols((s.OW - 1) * s.stride_w + (s.kw - 1) * s.dil_w + 1),
        phases(s.stride_w),
        places((cols + phases - 1) / phases),
        len(places + Vectorized<float>::size()) {}  // float has the most lanes of the T we serve

  int64_t row_stride() const { return phases * len; }
  int64_t size() const { return rows * row_stride(); }
  int64_t at(int64_t r, int64_t col) const { return r * row_stride() + (col % phases) * len + col / phases; }
};

// The register block of shifted_sum_rows: NR rows, and the NV vectors of columns from j0 (the last
// may be partial: its lanes past n are computed but not stored). Row r reads src[p] + r·src_step.
template <int NR, int NV, typename T, typename Epi>
inline void shifted_sum_block(const T* const* src, int64_t src_step, const T* wts, int64_t np, T init, int64_t j0,
                              int64_t n, T* out, int64_t out_step, const Epi& epi) {
  using V = Vectorized<T>;
  constexpr int64_t kV = V::size();
  V acc[NR][NV];
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = V(init);
  for (int64_t p = 0; p < np; ++p) {
    const V wp(wts[p]);
    const T* row = src[p] + j0;
    for (int r = 0; r < NR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = at::vec::fmadd(V::loadu(row + r * src_step + v * kV), wp, acc[r][v]);
  }
  for (int r = 0; r < NR; ++r) {
    for (int v = 0; v < NV; ++v) {
      const int64_t j = j0 + v * kV;
      const V y = epi(acc[r][v]);
      if (n - j >= kV) {
        y.store(out + r * out_step + j);
      } else {
        y.store(out + r * out_step + j, n - j);
      }
    }
  }
}

// The one inner loop of this file: NR rows of n outputs, each a weighted sum of np shifted rows,
//   out[r·out_step + j] = epi(init + Σ_p wts[p] · src[p][r·src_step + j]),   r < NR, j < n:
// row r uses the same taps as row 0, moved down by src_step. Whole blocks of kMaxVecs vectors, then
// one block of what is left. Every row read must be readable up to n rounded up to a whole vector.
template <int NR, typename T, typename Epi>
void shifted_sum_rows(const T* const* src, int64_t src_step, const T* wts, int64_t np, T init, int64_t n, T* out,
                      int64_t out_step, const Epi& epi) {
  constexpr int64_t kV = Vectorized<T>::size();
  int64_t j0 = 0;
  for (; j0 + kMaxVecs * kV <= n; j0 += kMaxVecs * kV)
    shifted_sum_block<NR, kMaxVecs>(src, src_step, wts, np, init, j0, n, out, out_step, epi);
  static_assert(kMaxVecs == 4, "the switch below covers 1..kMaxVecs vectors");
  switch ((n - j0 + kV - 1) / kV) {
    case 4: shifted_sum_block<NR, 4>(src, src_step, wts, np, init, j0, n, out, out_step, epi); break;
    case 3: shifted_sum_block<NR, 3>(src, src_step, wts, np, init, j0, n, out, out_step, epi); break;
    case 2: shifted_sum_block<NR, 2>(src, src_step, wts, np, init, j0, n, out, out_step, epi); break;
    case 1: shifted_sum_block<NR, 1>(src, src_step, wts, np, init, j0, n, out, out_step, epi); break;
    default: break;  // the row ended on a block boundary
  }
}

// Input columns v < n of one row to their places in a padded row: column v is padded column v + p_l,
// which sits in phase (v + p_l) mod s_w at place (v + p_l) / s_w (phase rows len apart). The loops
// at the end are the definition; s_w = 1 is a copy, and s_w = 2, the common strided case, splits
// pairs of columns with vector shuffles.
template <typename T>
void split_row(const T* src, int64_t n, int64_t pl, int64_t sw, int64_t len, T* dst) {
  using V = Vectorized<T>;
  constexpr int64_t kV = V::size();
  if (sw == 1) {
    std::copy(src, src + n, dst + pl);
    return;
  }
  int64_t v = 0;
  if (sw == 2) {
    if (pl % 2 != 0 && n > 0) {  // column 0 is in phase 1: place it alone, so that pairs start in phase 0
      dst[len + pl / 2] = src[0];
      v = 1;
    }
    for (; v + 2 * kV <= n; v += 2 * kV) {
      const auto [even, odd] = at::vec::deinterleave2(V::loadu(src + v), V::loadu(src + v + kV));
      even.store(dst + (v + pl) / 2);
      odd.store(dst + len + (v + pl) / 2);
    }
  }
  for (; v < n; ++v) dst[((v + pl) % sw) * len + (v + pl) / sw] = src[v];
}

// The inverse of split_row: dst[v] = the padded value of column v + p_l, for v < n.
template <typename T>
void merge_row(const T* padded, int64_t n, int64_t pl, int64_t sw, int64_t len, T* dst) {
  using V = Vectorized<T>;
  constexpr int64_t kV = V::size();
  if (sw == 1) {
    std::copy(padded + pl, padded + pl + n, dst);
    return;
  }
  int64_t v = 0;
  if (sw == 2) {
    if (pl % 2 != 0 && n > 0) {
      dst[0] = padded[len + pl / 2];
      v = 1;
    }
    for (; v + 2 * kV <= n; v += 2 * kV) {
      const int64_t t = (v + pl) / 2;
      const auto [lo, hi] = at::vec::interleave2(V::loadu(padded + t), V::loadu(padded + len + t));
      lo.store(dst + v);
      hi.store(dst + v + kV);
    }
  }
  for (; v < n; ++v) dst[v] = padded[((v + pl) % sw) * len + (v + pl) / sw];
}

// Copies the input plane x (H × W) into P (laid out by g), leaving its padding untouched: P is
// zeroed once when it is allocated, and every plane of a call has the same padding.
template <typename T>
void pack_plane(const ConvShape& s, const PaddedPlane& g, const T* x, T* P) {
  const int64_t ncols = std::clamp<int64_t>(g.cols - s.pad_left, 0, s.W);  // input columns some tap reads
  for (int64_t r = 0; r < g.rows; ++r) {
    const int64_t h = r - s.pad_top;
    if (h < 0 || h >= s.H) continue;
    split_row(x + h * s.W, ncols, s.pad_left, s.stride_w, g.len, P + r * g.row_stride());
  }
}

// The per-(n, c) work, with its scratch buffers (one set per parallel task).
template <typename T>
struct Depthwise {
  const ConvShape& s;
  const int64_t m, taps;     // channel multiplier, kh·kw
  const PaddedPlane g;       // layout of the padded copy of an x plane
  // Dz, the framed copy of the dz planes of one channel's m outputs: each row has dz_lead zeros
  // before its OW values (the largest shift ⌊b·d_w / s_w⌋ a dx gather reads back by) and zeros after,
  // and each plane dz_halo zero rows above and below (the furthest a dx row's taps reach past the
  // output rows), so the dx gather reads zeros where no output is.
  const int64_t dz_lead, dz_len, dz_halo, dz_rows;
  std::vector<int64_t> tap_offset;  // P offset of tap (a, b) from output (0, 0)
  // Kernel row a reaches padded row i·s_h + a·d_h: the residue (a·d_h) mod s_h and the whole
  // rows ⌊a·d_h / s_h⌋; likewise for kernel column b with s_w (its phase and its place shift).
  std::vector<int64_t> row_phase, row_shift, col_phase, col_shift;
  std::vector<T> P, Dz, dx_rows;
  std::vector<const T*> src;
  std::vector<T> wts;

  explicit Depthwise(const ConvShape& shape)
      : s(shape),
        m(shape.O / shape.C),
        taps(shape.kh * shape.kw),
        g(shape),
        dz_lead((shape.kw - 1) * shape.dil_w / shape.stride_w),
        dz_len(dz_lead + g.len),
        dz_halo(((shape.kh - 1) * shape.dil_h + shape.stride_h - 1) / shape.stride_h),
        dz_rows(shape.OH + 2 * dz_halo),
        tap_offset(taps) {
    for (int64_t a = 0; a < s.kh; ++a)
      for (int64_t b = 0; b < s.kw; ++b) tap_offset[a * s.kw + b] = g.at(a * s.dil_h, b * s.dil_w);
    for (int64_t a = 0; a < s.kh; ++a) {
      row_phase.push_back(a * s.dil_h % s.stride_h);
      row_shift.push_back(a * s.dil_h / s.stride_h);
    }
    for (int64_t b = 0; b < s.kw; ++b) {
      col_phase.push_back(b * s.dil_w % s.stride_w);
      col_shift.push_back(b * s.dil_w / s.stride_w);
    }
    src.resize(m * taps);  // the most rows one output row sums: dx's m·kh·kw
    wts.resize(m * taps);
  }

  // Copies x[n, c] into P (allocated, with its zero padding, on first use).
  void pack_x(int64_t n, int64_t c, const T* x) {
    if (P.empty()) P.assign(g.size(), T(0));
    pack_plane(s, g, x + (n * s.C + c) * s.H * s.W, P.data());
  }

  // ---- forward: y[n, c·m + k] for k < m, from one padded copy of x[n, c].
  template <Act A>
  void forward_plane(int64_t n, int64_t c, const T* x, const T* w, const T* bias, T* y) {
    pack_x(n, c, x);
    for (int64_t k = 0; k < m; ++k) {
      const int64_t o = c * m + k;
      const T* wo = w + o * taps;  // (kh, kw), row-major: the same (a, b) order as tap_offset
      const T b = bias ? bias[o] : T(0);
      T* yo = y + (n * s.O + o) * s.OH * s.OW;
      const auto epilogue = [](const Vectorized<T>& z) { return act_forward<A>(z); };
      const int64_t step = s.stride_h * g.row_stride();  // P rows between output rows i and i + 1
      for (int64_t i = 0; i < s.OH; i += kMaxRows) {
        for (int64_t t = 0; t < taps; ++t) src[t] = P.data() + i * step + tap_offset[t];
        T* out = yo + i * s.OW;
        static_assert(kMaxRows == 3, "the switch below covers 1..kMaxRows rows");
        switch (std::min<int64_t>(s.OH - i, kMaxRows)) {
          case 1: shifted_sum_rows<1>(src.data(), step, wo, taps, b, s.OW, out, s.OW, epilogue); break;
          case 2: shifted_sum_rows<2>(src.data(), step, wo, taps, b, s.OW, out, s.OW, epilogue); break;
          default: shifted_sum_rows<3>(src.data(), step, wo, taps, b, s.OW, out, s.OW, epilogue); break;
        }
      }
    }
  }

  // ---- backward
  // Row i (−dz_halo ≤ i < OH + dz_halo) of output channel c·m + k in Dz, at its column 0.
  T* dz_row(int64_t k, int64_t i) { return Dz.data() + (k * dz_rows + dz_halo + i) * dz_len + dz_lead; }

  void pack_dz(int64_t n, int64_t c, const T* dz) {
    if (Dz.empty()) Dz.assign(m * dz_rows * dz_len, T(0));  // the frame stays zero: only rows' insides are written
    for (int64_t k = 0; k < m; ++k) {
      const T* plane = dz + (n * s.O + c * m + k) * s.OH * s.OW;
      for (int64_t i = 0; i < s.OH; ++i)
        std::copy(plane + i * s.OW, plane + (i + 1) * s.OW, dz_row(k, i));
    }
  }

  // dx[n, c] from Dz (pack_dz first). Padded input row r = h + p_t, phase q, place t is read by the
  // taps (k, a, b) with r − a·d_h = i·s_h and b·d_w ≡ q (mod s_w), at output (i, t − ⌊b·d_w / s_w⌋):
  //   dxP[r, q, t] = Σ_{those k, a, b} w[c·m + k, a, b] · Dz_k[(r − a·d_h) / s_h, t − ⌊b·d_w / s_w⌋]
  // (an i or j with no output reads Dz's zero frame). Rows r and r + s_h take the same taps one Dz
  // row further down, so rows h, h + s_h, h + 2·s_h are summed together as one register block.
  void dx_plane(int64_t n, int64_t c, const T* w, T* dx) {
    const int64_t sh = s.stride_h, sw = s.stride_w, pl = s.pad_left;
    const int64_t buf_row = sw * g.len;  // one padded dx row, phase by phase
    if (dx_rows.empty()) dx_rows.assign(kMaxRows * buf_row, T(0));
    T* out = dx + (n * s.C + c) * s.H * s.W;
    // dx rows and columns some tap reaches; the others (padding beyond what the output used) are 0.
    const int64_t nrows = std::clamp<int64_t>(g.rows - s.pad_top, 0, s.H);
    const int64_t ncols = std::clamp<int64_t>(g.cols - pl, 0, s.W);
    std::fill(out + nrows * s.W, out + s.H * s.W, T(0));
    for (int64_t h0 = 0; h0 < std::min(sh, nrows); ++h0) {
      for (int64_t h = h0; h < nrows; h += kMaxRows * sh) {
        const int64_t nr = std::min<int64_t>(kMaxRows, (nrows - h + sh - 1) / sh);  // rows h, h + s_h, ...
        const int64_t r = h + s.pad_top, r_phase = r % sh, r_rows = r / sh;
        for (int64_t q = 0; q < sw; ++q) {
          int64_t np = 0;
          for (int64_t k = 0; k < m; ++k) {
            for (int64_t a = 0; a < s.kh; ++a) {
              if (row_phase[a] != r_phase) continue;  // (r − a·d_h) / s_h is not whole
              const T* row = dz_row(k, r_rows - row_shift[a]);
              for (int64_t b = 0; b < s.kw; ++b) {
                if (col_phase[b] != q) continue;
                src[np] = row - col_shift[b];
                wts[np] = w[(c * m + k) * taps + a * s.kw + b];
                ++np;
              }
            }
          }
          T* dst = dx_rows.data() + q * g.len;
          const auto same = [](const Vectorized<T>& v) { return v; };
          switch (nr) {
            case 1: shifted_sum_rows<1>(src.data(), dz_len, wts.data(), np, T(0), g.places, dst, buf_row, same); break;
            case 2: shifted_sum_rows<2>(src.data(), dz_len, wts.data(), np, T(0), g.places, dst, buf_row, same); break;
            default: shifted_sum_rows<3>(src.data(), dz_len, wts.data(), np, T(0), g.places, dst, buf_row, same); break;
          }
        }
        // Interleave the phase rows back: dx[h, v] = padded column v + p_l (the inverse of pack_plane).
        for (int64_t u = 0; u < nr; ++u) {
          T* dxh = out + (h + u * sh) * s.W;
          merge_row(dx_rows.data() + u * buf_row, ncols, pl, sw, g.len, dxh);
          std::fill(dxh + ncols, dxh + s.W, T(0));
        }
      }
    }
  }

  // dw_sum[k·taps + (a·kw + b)] += Σ_{i, j} dz[n, c·m + k, i, j] · x[n, c, ...tap (a, b)...], from Dz
  // (pack_dz first) and the padded x[n, c] in P (pack_x first). The taps go in groups of at
  // most kMaxTapGroup, sized evenly, that share each load of dz.
  static constexpr int kMaxTapGroup = 6;

  void dw_plane(double* dw_sum) {
    const int64_t groups = (taps + kMaxTapGroup - 1) / kMaxTapGroup;
    for (int64_t k = 0; k < m; ++k) {
      for (int64_t grp = 0; grp < groups; ++grp) {
        const int64_t t0 = taps * grp / groups, nt = taps * (grp + 1) / groups - t0;
        double* sums = dw_sum + k * taps + t0;
        static_assert(kMaxTapGroup == 6, "the switch below covers 1..kMaxTapGroup taps");
        switch (nt) {
          case 1: tap_dots<1>(k, t0, sums); break;
          case 2: tap_dots<2>(k, t0, sums); break;
          case 3: tap_dots<3>(k, t0, sums); break;
          case 4: tap_dots<4>(k, t0, sums); break;
          case 5: tap_dots<5>(k, t0, sums); break;
          default: tap_dots<6>(k, t0, sums); break;
        }
      }
    }
  }

  // NT dot products at once; two accumulators per tap (even and odd vectors along the row) so that
  // 2·NT independent FMA chains hide the FMA latency.
  template <int NT>
  void tap_dots(int64_t k, int64_t t0, double* sums) {
    using V = Vectorized<T>;
    constexpr int64_t kV = V::size();
    V acc[NT][2];
    for (int u = 0; u < NT; ++u) acc[u][0] = acc[u][1] = V(T(0));
    const int64_t step = s.stride_h * g.row_stride();
    for (int64_t i = 0; i < s.OH; ++i) {
      const T* d = dz_row(k, i);  // zeros past OW
      const T* row = P.data() + i * step;
      int64_t j = 0;
      for (; j + 2 * kV <= s.OW; j += 2 * kV) {
        const V d0 = V::loadu(d + j), d1 = V::loadu(d + j + kV);
        for (int u = 0; u < NT; ++u) {
          const T* x = row + tap_offset[t0 + u] + j;
          acc[u][0] = at::vec::fmadd(d0, V::loadu(x), acc[u][0]);
          acc[u][1] = at::vec::fmadd(d1, V::loadu(x + kV), acc[u][1]);
        }
      }
      for (; j < s.OW; j += kV) {
        // The lanes past OW hold zeros of Dz times values of P that belong to other positions:
        // zero those too, so a non-finite x elsewhere cannot leak in as 0·inf.
        const V dv = V::loadu(d + j);
        const int64_t valid = std::min(kV, s.OW - j);
        for (int u = 0; u < NT; ++u) {
          const V xv = V::loadu(row + tap_offset[t0 + u] + j);
          acc[u][0] = at::vec::fmadd(dv, valid == kV ? xv : V::set(V(T(0)), xv, valid), acc[u][0]);
        }
      }
    }
    for (int u = 0; u < NT; ++u) {
      alignas(64) T lanes[2 * kV];
      acc[u][0].store(lanes);
      acc[u][1].store(lanes + kV);
      double total = 0;
      for (int64_t l = 0; l < 2 * kV; ++l) total += lanes[l];
      sums[u] += total;
    }
  }
};

// Planes per parallel task: enough multiply-adds that a task outweighs waking a thread.
inline int64_t plane_grain(int64_t work_per_plane) {
  return std::max<int64_t>(1, kTaskWork / std::max<int64_t>(1, work_per_plane));
}

}  // namespace

template <typename T>
void depthwise_forward(const ConvShape& s, const T* x, const T* w, const T* bias, Act act, T* y) {
  const int64_t m = s.O / s.C;
  dispatch_act(act, [&](auto A) {
    constexpr Act kA = decltype(A)::value;
    at::parallel_for(0, s.N * s.C, plane_grain(m * s.L() * s.kh * s.kw), [&](int64_t p0, int64_t p1) {
      Depthwise<T> work(s);
      for (int64_t p = p0; p < p1; ++p) work.template forward_plane<kA>(p / s.C, p % s.C, x, w, bias, y);
    });
  });
}

template <typename T>
void depthwise_backward(const ConvShape& s, const T* dz, const T* x, const T* w, T* dx, T* dw) {
  const int64_t m = s.O / s.C, taps = s.kh * s.kw;
  const int64_t work_per_plane = m * s.L() * taps * ((dx ? 1 : 0) + (dw ? 1 : 0));
  if (!dw) {
    if (!dx) return;
    // dx alone: every (n, c) plane is independent.
    at::parallel_for(0, s.N * s.C, plane_grain(work_per_plane), [&](int64_t p0, int64_t p1) {
      Depthwise<T> work(s);
      for (int64_t p = p0; p < p1; ++p) {
        work.pack_dz(p / s.C, p % s.C, dz);
        work.dx_plane(p / s.C, p % s.C, w, dx);
      }
    });
    return;
  }
  // dw (and dx, if wanted): a task owns channels c, so it sums dw[c·m .. (c+1)·m) over n in order,
  // and reads each dz plane once for both gradients.
  at::parallel_for(0, s.C, plane_grain(s.N * work_per_plane), [&](int64_t c0, int64_t c1) {
    Depthwise<T> work(s);
    std::vector<double> dw_sum(m * taps);
    for (int64_t c = c0; c < c1; ++c) {
      std::fill(dw_sum.begin(), dw_sum.end(), 0.0);
      for (int64_t n = 0; n < s.N; ++n) {
        work.pack_dz(n, c, dz);
        if (dx) work.dx_plane(n, c, w, dx);
        work.pack_x(n, c, x);
        work.dw_plane(dw_sum.data());
      }
      for (int64_t e = 0; e < m * taps; ++e) dw[c * m * taps + e] = static_cast<T>(dw_sum[e]);
    }
  });
}

template void depthwise_forward<float>(const ConvShape&, const float*, const float*, const float*, Act, float*);
template void depthwise_forward<double>(const ConvShape&, const double*, const double*, const double*, Act, double*);
template void depthwise_backward<float>(const ConvShape&, const float*, const float*, const float*, float*, float*);
template void depthwise_backward<double>(const ConvShape&, const double*, const double*, const double*, double*,
                                         double*);

}  // namespace conv
}  // namespace minitorch_nn
