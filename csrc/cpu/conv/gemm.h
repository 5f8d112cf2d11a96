// Our own GEMM, in the GotoBLAS / BLIS structure: the engine of rungs 3 and 4 of the conv ladder.
//
//   C (M×N) = β·C + A (M×K) · B (K×N),   β ∈ {0, 1},   float or double, accumulated in T.
//
// A product of an M×K and a K×N matrix does 2·M·N·K flops on M·K + K·N + M·N values, so it can
// run at the FMA units' peak only if every value loaded from memory is reused many times while
// it sits in a cache close to the core. Goto's idea (Goto & van de Geijn, "Anatomy of
// high-performance matrix multiplication", 2008; Van Zee & van de Geijn, "BLIS", 2015) is five
// loops around a tiny register-tiled kernel, each loop choosing which operand stays in which
// cache:
//
//   for jc in N, step NC:                        B panel columns (the panel lives in L3)
//     for pc in K, step KC:                      one slice of the reduction
//       pack B[pc:pc+KC, jc:jc+NC] -> Bp         KC×NC, in NR-wide slivers
//       for ic in M, step MC:
//         pack A[ic:ic+MC, pc:pc+KC] -> Ap       MC×KC, in MR-tall slivers; stays in L2
//         for jr in NC, step NR:                 one KC×NR sliver of Bp: stays in L1 ...
//           for ir in MC, step MR:               ... while the MR×KC slivers of Ap stream past it
//             micro-kernel: an MR×NR block of C, held in vector registers for the whole KC
//             loop: per k, NR/V vector loads of B, MR broadcasts of A, MR·NR/V FMAs
//
// The micro-kernel. On AVX2 (V = 8 floats per 256-bit register, 16 registers) the C tile is
// MR×NR = 6×16: 12 accumulators + 2 B vectors + 1 broadcast = 15 registers, and each k step
// issues 12 FMAs for 8 loads, so the two FMA pipes, not the load ports, are the limit. The same
// code is 6×8 doubles on AVX2, 6×32 floats on AVX-512 (12 of its 32 registers) and 6×16 of the
// generic 8-lane Vectorized without vector flags: the tile is NV = 2 vectors wide whatever the
// ISA (at::vec::Vectorized<T> follows the build). Measured against 4×24 (3 vectors wide) on the
// sweep machine (see below), 6×16 was as fast or faster.
//
// Packing makes the micro-kernel's loads unit-stride and aligned whatever the operands' layout:
// A may be transposed, B may be im2col's cols or x itself (rung 4), and the kernel never knows.
// Panels are zero-padded to whole MR / NR slivers, so the kernel always runs a full tile, and
// the epilogue stores only the mr×nr part inside C (a masked store at the edges).
//
// Customisation points (so rung 3, rung 4 and the backward passes share these loops):
//   PackA    pack_a(T* dst, i0, mc, k0, kc): rows [i0, i0+mc) × cols [k0, k0+kc) of A, as MR-row
//            slivers: sliver r at dst + r·kc·MR, element (i, k) of it at [k·MR + i].
//   PackB    pack_b(T* dst, k0, kc, j0, nc): rows [k0, k0+kc) × cols [j0, j0+nc) of B, as NR-column
//            slivers: sliver s at dst + s·kc·NR, element (k, j) of it at [k·NR + j].
//   Epilogue epi(acc, i, j, mr, nr, first, last): stores the finished MR×NR register tile acc
//            (only its mr×nr corner is inside C) whose top-left is C[i, j]. `first` / `last`: this
//            is the first / last KC slice of the reduction, so partial sums are added to what an
//            earlier slice stored, and the last slice may apply bias + activation.
// StridedA / StridedB read any (row stride, column stride) matrix, so transposes cost nothing;
// StoreC and BiasActStore are the two stores the ladder needs.
//
// When M fits one A block (conv's O/g ≤ MC), each B sliver meets a single A block, so B is packed a
// chunk of slivers at a time into L2 and used at once, rather than as a whole panel (gemm_block).
//
// Threads: each thread takes one block of a grid over C and runs all five loops on it with its
// own packed panels, in one parallel region (gemm() below): no barrier, so a thread that the OS
// deschedules (the cores here are shared) holds up only its own block.
//
// Determinism: every element of C is summed in the same order (k ascending within a KC slice,
// slices in order) whatever the number of threads, since threads only split the M and N
// loops and never share a C element. Results are bitwise repeatable across thread counts.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "../../activation.h"
#include "../vec_math.h"

namespace minitorch_nn {
namespace gemm {

// The register tile: MR rows × NV vectors of C. (MTNN_GEMM_MR / MTNN_GEMM_NV exist only to
// re-measure other tiles, e.g. -DMTNN_GEMM_MR=4 -DMTNN_GEMM_NV=3 for 4×24.)
#ifndef MTNN_GEMM_MR
#define MTNN_GEMM_MR 6
#endif
#ifndef MTNN_GEMM_NV
#define MTNN_GEMM_NV 2
#endif
template <typename T>
struct Tile {
  using Vec = at::vec::Vectorized<T>;
  static constexpr int64_t V = Vec::size();
  static constexpr int64_t MR = MTNN_GEMM_MR;
  static constexpr int64_t NV = MTNN_GEMM_NV;
  static constexpr int64_t NR = NV * V;
};

// Cache blocking: MC rows of A per packed block, KC of the reduction per slice, NC columns of B
// per packed panel. The driver splits each dimension into equal blocks no larger than these
// (MC and NC rounded up to whole MR / NR tiles).
struct Blocking {
  int64_t MC, KC, NC;
};

// Defaults, chosen from the sweep in benchmarks/gemm_sweep.py, run on a 2-core AMD EPYC (Zen 3,
// AVX2: 32 KiB L1d and 512 KiB L2 per core, 32 MiB L3 shared) on cores shared with other jobs.
// Each block is named by the cache it is for, and the constants are the bytes it fills there,
// so the double build and other vector widths keep the footprint that was measured:
//   KC: the reduction slice. A KC×NR sliver of B is re-read by every MR-row sliver of the A
//       block, so it wants to stay close (L1), and the C tile is loaded and stored once per
//       slice, so longer slices amortise that. KC = 512 makes the sliver 32 KiB (all of L1d on
//       paper), but it is read front to back, one line per k, and the L2->L1 prefetch keeps up:
//       measured, 512 is at least as fast as 256 (a 16 KiB sliver) on average; 128 is slower.
//   MC: the packed MC×KC block of A is re-read once per NR columns, from L2: 192×512×4 B =
//       384 KiB, three quarters of the 512 KiB L2 (MC = 288 lost at 2048² and 256×196×2304).
//   NC: the packed KC×NC panel of B, read once per MC rows, from L3: 512×4096×4 B = 8 MiB
//       (NC of 256-512 lost 5-15%: every A block is re-packed once per NC columns).
// The conv products are small in M (O/g = 64 at ResNet's 56×56 layers: a single A block) and the
// driver evens the blocks out (K = 576 runs as two slices of 288).
//
// The sweep, GFLOP/s on 1 thread: the 10th percentile of 21 interleaved rounds (7 at 2048³), i.e.
// the speed when the core was not shared (the medians swing up to 2x with the other jobs' load).
// torch.mm is MKL's sgemm; the last column is the geometric mean over the shapes, averaged over
// three sweeps:
//   MC/KC/NC        512³   1024³  2048³  64×3136×576  256×196×2304   geomean of 3 runs
//   144/256/4096     80     55     70       41           66              62.8
//    48/256/4096     80     54     65       55           65              64.4
//    96/256/4096     83     55     85       44           68              63.6
//   192/512/4096     83     56     65       53           61              65.4   <- chosen
//    48/512/4096     86     58     75       39           64              64.6
//    96/384/4096     80     56     69       55           64              63.0
//   192/384/4096     81     56     59       28           65              61.9
//   torch.mm         83     57     85       61           72              69.0
// The full MC × KC grid (MC 48-288, KC 128-512, NC 256-8192) is flat within this noise (±5%)
// except for the losers named above; single cells (64×3136×576's 28 above) are a burst of load.
// The 6×16 register tile against 4×24 (same sweep, p10): 54/53/63 against 49/42/53 GFLOP/s at
// 1024³, 64×3136×576 and 256×196×2304: 6×16 kept. (This table predates the chunked B packing for
// a single A block, which then took 64×3136×576 from 57-60 to 75-80 GFLOP/s, torch.mm 71-78.)
constexpr int64_t kSliverBytesB = 32 * 1024;      // KC×NR sliver of B (L1)
constexpr int64_t kBlockBytesA = 384 * 1024;      // MC×KC block of A (L2)
constexpr int64_t kPanelBytesB = 8 * 1024 * 1024;  // KC×NC panel of B (L3)
constexpr int64_t kChunkBytesB = 192 * 1024;       // KC×(a few NR) chunk of B when M fits one A block (L2)

template <typename T>
inline Blocking default_blocking() {
  const int64_t KC = kSliverBytesB / (Tile<T>::NR * static_cast<int64_t>(sizeof(T)));  // float AVX2: 512
  const int64_t MC = kBlockBytesA / (KC * static_cast<int64_t>(sizeof(T)));             // 192
  const int64_t NC = kPanelBytesB / (KC * static_cast<int64_t>(sizeof(T)));             // 4096
  return {MC, KC, NC};
}

// ---------------------------------------------------------------------------------------------
// Scratch memory: 64-byte aligned, per thread and per slot, grown on demand and kept for the next
// call. Reusing it matters: a fresh multi-MiB buffer per call would be page-faulted in every time
// (about a millisecond for the few MiB of an im2col matrix), a large share of a conv's time.
// Slots are not reentrant: a slot's owner must not call anything that uses the same slot.
enum Slot : int { kSlotPackedA = 0, kSlotPackedB = 1, kSlotCols = 2, kSlotCount = 3 };

template <typename T>
T* scratch(Slot slot, int64_t n) {
  struct Buffer {
    void* p = nullptr;
    size_t bytes = 0;
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer buffers[kSlotCount];
  Buffer& b = buffers[slot];
  const size_t need = std::max<size_t>(64, (static_cast<size_t>(n) * sizeof(T) + 63) / 64 * 64);
  if (need > b.bytes) {
    std::free(b.p);
    b.p = std::aligned_alloc(64, need);
    if (!b.p) throw std::bad_alloc();
    b.bytes = need;
  }
  return static_cast<T*>(b.p);
}

// ---------------------------------------------------------------------------------------------
// Packers for a strided matrix, element (r, c) at p[r·rs + c·cs]. The loop order follows the
// unit stride, so the reads are contiguous for a row-major operand and for a transposed one.

template <typename T>
struct StridedA {
  const T* p;
  int64_t rs, cs;
  void operator()(T* dst, int64_t i0, int64_t mc, int64_t k0, int64_t kc) const {
    constexpr int64_t MR = Tile<T>::MR;
    for (int64_t r = 0; r * MR < mc; ++r, dst += kc * MR) {
      const int64_t m = std::min(MR, mc - r * MR);
      const T* src = p + (i0 + r * MR) * rs + k0 * cs;
      if (rs == 1 && cs != 1) {  // A transposed: down each column of A, contiguous
        for (int64_t k = 0; k < kc; ++k)
          for (int64_t i = 0; i < m; ++i) dst[k * MR + i] = src[i + k * cs];
      } else {  // along each row of A: contiguous when A is row-major (cs == 1)
        for (int64_t i = 0; i < m; ++i)
          for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = src[i * rs + k * cs];
      }
      for (int64_t i = m; i < MR; ++i)
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = T(0);
    }
  }
};

template <typename T>
struct StridedB {
  const T* p;
  int64_t rs, cs;
  void operator()(T* dst, int64_t k0, int64_t kc, int64_t j0, int64_t nc) const {
    using Vec = typename Tile<T>::Vec;
    constexpr int64_t NR = Tile<T>::NR, V = Tile<T>::V, NV = Tile<T>::NV;
    for (int64_t s = 0; s * NR < nc; ++s, dst += kc * NR) {
      const int64_t n = std::min(NR, nc - s * NR);
      const T* src = p + k0 * rs + (j0 + s * NR) * cs;
      if (cs == 1 && n == NR) {  // row-major B, a whole sliver: NV vector copies per row
        for (int64_t k = 0; k < kc; ++k)
          for (int64_t v = 0; v < NV; ++v) Vec::loadu(src + k * rs + v * V).store(dst + k * NR + v * V);
      } else if (cs == 1) {  // row-major B, the last, partial sliver
        for (int64_t k = 0; k < kc; ++k) {
          for (int64_t j = 0; j < n; ++j) dst[k * NR + j] = src[k * rs + j];
          for (int64_t j = n; j < NR; ++j) dst[k * NR + j] = T(0);
        }
      } else {  // down each column of B: contiguous when B is transposed (rs == 1)
        for (int64_t j = 0; j < n; ++j)
          for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = src[k * rs + j * cs];
        for (int64_t k = 0; k < kc; ++k)
          for (int64_t j = n; j < NR; ++j) dst[k * NR + j] = T(0);
      }
    }
  }
};

// For packers that build a B panel from something other than a strided matrix (rung 4 packs
// im2col's rows, or their transpose, straight from x): where element (k, j) of a panel of kc
// rows goes, in the sliver format above.
template <typename T>
inline T* panel_at(T* panel, int64_t kc, int64_t k, int64_t j) {
  constexpr int64_t NR = Tile<T>::NR;
  return panel + (j / NR) * kc * NR + k * NR + j % NR;
}

// Row k of a panel, columns [j, j + len) = src[0], src[step], ..., or zeros when src is null:
// one sliver-contiguous run at a time.
template <typename T>
inline void panel_row_put(T* panel, int64_t kc, int64_t k, int64_t j, int64_t len, const T* src, int64_t step = 1) {
  constexpr int64_t NR = Tile<T>::NR;
  while (len > 0) {
    const int64_t run = std::min(len, NR - j % NR);
    T* d = panel_at(panel, kc, k, j);
    if (!src) {
      for (int64_t t = 0; t < run; ++t) d[t] = T(0);
    } else if (step == 1) {
      for (int64_t t = 0; t < run; ++t) d[t] = src[t];
      src += run;
    } else {
      for (int64_t t = 0; t < run; ++t) d[t] = src[t * step];
      src += run * step;
    }
    j += run;
    len -= run;
  }
}

// Column j of a panel of kc rows, rows [k, k + len) = src[0], src[step], ..., or zeros when src
// is null: one element per NR-wide row of the sliver (the transposed fill).
template <typename T>
inline void panel_col_put(T* panel, int64_t kc, int64_t k, int64_t j, int64_t len, const T* src, int64_t step = 1) {
  constexpr int64_t NR = Tile<T>::NR;
  T* d = panel_at(panel, kc, k, j);
  if (!src) {
    for (int64_t t = 0; t < len; ++t) d[t * NR] = T(0);
  } else {
    for (int64_t t = 0; t < len; ++t) d[t * NR] = src[t * step];
  }
}

// ---------------------------------------------------------------------------------------------
// Epilogues. `Acc` is the register tile, Vec[MR][NV].

template <typename T>
using Acc = typename Tile<T>::Vec[Tile<T>::MR][Tile<T>::NV];

// Copies the register tile to a plain MR×NR array (for edge tiles and custom epilogues). Every
// index is a compile-time constant, so the tile can stay in registers until here.
template <typename T>
inline void spill(const Acc<T>& acc, T* out) {
  constexpr int64_t MR = Tile<T>::MR, NV = Tile<T>::NV, V = Tile<T>::V, NR = Tile<T>::NR;
#pragma GCC unroll 8
  for (int64_t r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int64_t v = 0; v < NV; ++v) acc[r][v].store(out + r * NR + v * V);
}

// c (row stride ldc) = (add ? c : 0) + acc over the mr×nr tile, then finish(value, row) on each
// vector before it is stored.
template <typename T, class Finish>
inline void store_tile(const Acc<T>& acc, T* c, int64_t ldc, int64_t mr, int64_t nr, bool add, Finish&& finish) {
  using Vec = typename Tile<T>::Vec;
  constexpr int64_t MR = Tile<T>::MR, NV = Tile<T>::NV, V = Tile<T>::V, NR = Tile<T>::NR;
  if (mr == MR && nr == NR) {
#pragma GCC unroll 8
    for (int64_t r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int64_t v = 0; v < NV; ++v) {
        T* p = c + r * ldc + v * V;
        Vec x = add ? acc[r][v] + Vec::loadu(p) : acc[r][v];
        finish(x, r).store(p);
      }
    return;
  }
  alignas(64) T tile[MR * NR];
  spill<T>(acc, tile);
  for (int64_t r = 0; r < mr; ++r)
    for (int64_t v = 0; v * V < nr; ++v) {
      const int64_t n = std::min(V, nr - v * V);
      T* p = c + r * ldc + v * V;
      Vec x = Vec::loadu(tile + r * NR + v * V, n);
      if (add) x = x + Vec::loadu(p, n);
      finish(x, r).store(p, n);
    }
}

// C = A·B (accumulate = false) or C += A·B (accumulate = true, β = 1). C has unit column stride.
template <typename T>
struct StoreC {
  T* c;
  int64_t ldc;
  bool accumulate = false;
  void operator()(const Acc<T>& acc, int64_t i, int64_t j, int64_t mr, int64_t nr, bool first, bool) const {
    store_tile<T>(acc, c + i * ldc + j, ldc, mr, nr, accumulate || !first,
                  [](const typename Tile<T>::Vec& x, int64_t) { return x; });
  }
};

// C = f(A·B + bias[row]) (bias may be null), f applied once the last KC slice is in: the conv
// forward's epilogue, done while the tile is still in registers.
template <typename T, Act A>
struct BiasActStore {
  T* c;
  int64_t ldc;
  const T* bias;
  void operator()(const Acc<T>& acc, int64_t i, int64_t j, int64_t mr, int64_t nr, bool first, bool last) const {
    using Vec = typename Tile<T>::Vec;
    T* tile = c + i * ldc + j;
    if (!last) {
      store_tile<T>(acc, tile, ldc, mr, nr, !first, [](const Vec& x, int64_t) { return x; });
    } else if (bias) {
      const T* b = bias + i;
      store_tile<T>(acc, tile, ldc, mr, nr, !first,
                    [b](const Vec& x, int64_t r) { return act_forward<A>(x + Vec(b[r])); });
    } else {
      store_tile<T>(acc, tile, ldc, mr, nr, !first, [](const Vec& x, int64_t) { return act_forward<A>(x); });
    }
  }
};

// ---------------------------------------------------------------------------------------------
// The micro-kernel: acc (MR×NR, in registers) = Σ_k Ap[:, k] ⊗ Bp[k, :] over one KC slice, then
// the epilogue. a: one MR×kc sliver of the packed A block; b: one kc×NR sliver of the B panel.
template <typename T, class Epilogue>
inline void micro_tile(int64_t kc, const T* __restrict a, const T* __restrict b, const Epilogue& epi, int64_t i,
                       int64_t j, int64_t mr, int64_t nr, bool first, bool last) {
  using Vec = typename Tile<T>::Vec;
  constexpr int64_t MR = Tile<T>::MR, NV = Tile<T>::NV, V = Tile<T>::V, NR = Tile<T>::NR;
  Acc<T> acc;
#pragma GCC unroll 8
  for (int64_t r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int64_t v = 0; v < NV; ++v) acc[r][v] = Vec(T(0));
  for (int64_t k = 0; k < kc; ++k, a += MR, b += NR) {
    Vec bv[NV];
#pragma GCC unroll 4
    for (int64_t v = 0; v < NV; ++v) bv[v] = Vec::loadu(b + v * V);
#pragma GCC unroll 8
    for (int64_t r = 0; r < MR; ++r) {
      const Vec ar(a[r]);  // one broadcast per row
#pragma GCC unroll 4
      for (int64_t v = 0; v < NV; ++v) acc[r][v] = at::vec::fmadd(ar, bv[v], acc[r][v]);
    }
  }
  epi(acc, i, j, mr, nr, first, last);
}

// ---------------------------------------------------------------------------------------------
// The five loops, on the calling thread, for the block rows [r.begin, r.end) × cols [c.begin,
// c.end) of C (indices are C's: the packers and the epilogue see global coordinates). K = 0 still
// runs the epilogue once, on zeros, so C = f(bias) or 0 as the definition says.
struct Range {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};

template <typename T, class PackA, class PackB, class Epilogue>
void gemm_block(Range rows, Range cols, int64_t K, const PackA& pack_a, const PackB& pack_b, const Epilogue& epi,
                Blocking blk = default_blocking<T>()) {
  constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
  if (rows.size() <= 0 || cols.size() <= 0) return;
  // Equal blocks no larger than the given ones (K = 576 at KC = 256 runs as 3 slices of 192, not
  // 256 + 256 + 64: a short slice would pay the C tile's load and store for few FMAs), MC and NC
  // rounded up to whole MR / NR tiles. They depend on the sizes only, never on the threads.
  const auto even = [](int64_t n, int64_t block, int64_t unit) {
    block = std::max<int64_t>(block, 1);
    const int64_t pieces = std::max<int64_t>((n + block - 1) / block, 1);
    return ((n + pieces - 1) / pieces + unit - 1) / unit * unit;
  };
  const int64_t MC = even(rows.size(), blk.MC, MR), NC = even(cols.size(), blk.NC, NR);
  const int64_t KC = std::max<int64_t>(even(K, blk.KC, 1), 1);
  const int64_t k_steps = std::max<int64_t>(K, 1);  // one pass even when K == 0
  const int64_t kc_max = std::min(KC, std::max<int64_t>(K, 1));
  T* bp = scratch<T>(kSlotPackedB, kc_max * ((std::min(NC, cols.size()) + NR - 1) / NR * NR));
  T* ap = scratch<T>(kSlotPackedA, kc_max * std::min(MC, (rows.size() + MR - 1) / MR * MR));

  if (rows.size() <= MC) {
    // One A block holds every row (conv's O/g is often 64): each B sliver is used by that one
    // block only, right after it is packed. So pack B a few slivers at a time, a chunk that
    // stays in L2 beside the A block, instead of a whole panel that goes out to L3 and is read
    // back once. (Not one sliver at a time: a packer's per-row setup, e.g. rung 4's index
    // arithmetic, would then be paid for every NR columns.)
    for (int64_t pc = 0; pc < k_steps; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const bool first = pc == 0, last = pc + KC >= K;
      const int64_t fits = kChunkBytesB / (std::max<int64_t>(kc, 1) * int64_t(sizeof(T))) / NR * NR;
      const int64_t chunk = std::clamp(fits, NR, NC);  // NC: the B buffer's width
      pack_a(ap, rows.begin, rows.size(), pc, kc);
      for (int64_t jb = cols.begin; jb < cols.end; jb += chunk) {
        const int64_t nb = std::min(chunk, cols.end - jb);
        pack_b(bp, pc, kc, jb, nb);
        for (int64_t jr = 0; jr < nb; jr += NR) {
          const T* bs = bp + jr / NR * kc * NR;
          for (int64_t ir = 0; ir < rows.size(); ir += MR) {
            micro_tile<T>(kc, ap + ir / MR * kc * MR, bs, epi, rows.begin + ir, jb + jr, std::min(MR, rows.size() - ir),
                          std::min(NR, nb - jr), first, last);
          }
        }
      }
    }
    return;
  }
  for (int64_t jc = cols.begin; jc < cols.end; jc += NC) {  // B panel: NC columns, in L3
    const int64_t nc = std::min(NC, cols.end - jc);
    for (int64_t pc = 0; pc < k_steps; pc += KC) {  // one KC slice of the reduction
      const int64_t kc = std::min(KC, K - pc);       // 0 when K == 0
      const bool first = pc == 0, last = pc + KC >= K;
      pack_b(bp, pc, kc, jc, nc);
      for (int64_t ic = rows.begin; ic < rows.end; ic += MC) {  // A block: MC rows, in L2
        const int64_t mc = std::min(MC, rows.end - ic);
        pack_a(ap, ic, mc, pc, kc);
        for (int64_t jr = 0; jr < nc; jr += NR) {  // one KC×NR sliver of B, kept in L1 ...
          const T* bs = bp + jr / NR * kc * NR;
          for (int64_t ir = 0; ir < mc; ir += MR) {  // ... while the A block's slivers stream past
            micro_tile<T>(kc, ap + ir / MR * kc * MR, bs, epi, ic + ir, jc + jr, std::min(MR, mc - ir),
                          std::min(NR, nc - jr), first, last);
          }
        }
      }
    }
  }
}

// How `threads` threads split an M×N product: a tm × tn grid of blocks, each thread one block,
// rows in whole MR tiles and columns in whole units of col_unit (NR by default; a caller may
// need columns grouped otherwise). Of the grids with tm·tn = threads, the one whose largest
// block (tiles padded to whole units) is smallest: the best balance; ties go to more column
// blocks, since A (often the small weight matrix) is then the operand packed more than once.
struct Split {
  int64_t tm = 1, tn = 1, row_units = 0, col_units = 0, row_unit = 1, col_unit = 1, M = 0, N = 0;
  int64_t blocks() const { return tm * tn; }
  Range rows(int64_t t) const {
    const int64_t a = t / tn;
    return {std::min(M, a * row_units / tm * row_unit), std::min(M, (a + 1) * row_units / tm * row_unit)};
  }
  Range cols(int64_t t) const {
    const int64_t b = t % tn;
    return {std::min(N, b * col_units / tn * col_unit), std::min(N, (b + 1) * col_units / tn * col_unit)};
  }
};

template <typename T>
Split split_for_threads(int64_t M, int64_t N, int64_t threads, int64_t col_unit = Tile<T>::NR) {
  Split best;
  best.M = M, best.N = N, best.row_unit = Tile<T>::MR, best.col_unit = std::max<int64_t>(col_unit, 1);
  best.row_units = (M + best.row_unit - 1) / best.row_unit;
  best.col_units = (N + best.col_unit - 1) / best.col_unit;
  int64_t best_work = -1;
  for (int64_t tm = 1; tm <= threads; ++tm) {
    if (threads % tm) continue;
    const int64_t tn = threads / tm;
    if (tm > std::max<int64_t>(best.row_units, 1) || tn > std::max<int64_t>(best.col_units, 1)) continue;
    const int64_t work = (best.row_units + tm - 1) / tm * ((best.col_units + tn - 1) / tn);
    if (best_work < 0 || work < best_work || (work == best_work && tn > best.tn)) {
      best_work = work;
      best.tm = tm, best.tn = tn;
    }
  }
  if (best_work < 0) best.tm = best.tn = 1;  // fewer tiles than any grid of `threads` blocks
  return best;
}

// The threads that run a GEMM: the pool's, or just the calling thread inside a parallel region
// (an outer loop, over images say, already has the threads busy).
inline int64_t available_threads() { return at::in_parallel_region() ? 1 : at::get_num_threads(); }

// Runs fn(item) for item in [0, items). When the items split evenly over the threads (or are
// many), each thread takes whole items in one parallel region, and the GEMMs inside fn run on
// their thread alone; otherwise the items run in turn and each GEMM inside uses every thread.
// The conv rungs' items are (image, group) pairs: batch 8 on 2 threads is 4 images each.
template <class F>
void for_each_item(int64_t items, const F& fn) {
  const int64_t threads = available_threads();
  if (threads > 1 && items >= threads && (items % threads == 0 || items >= 4 * threads)) {
    at::parallel_for(0, items, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) fn(i);
    });
  } else {
    for (int64_t i = 0; i < items; ++i) fn(i);
  }
}

// C (M×N) = the product, on all available threads: ONE parallel region, each thread runs the five
// loops on its own block of C with its own packed panels. No barrier anywhere: a descheduled
// thread (the cores here are shared) delays only its own block. The price is packing some of A
// (tn times) or B (tm times) more than once: O(M·K + K·N) next to the 2·M·N·K/threads flops.
template <typename T, class PackA, class PackB, class Epilogue>
void gemm(int64_t M, int64_t N, int64_t K, const PackA& pack_a, const PackB& pack_b, const Epilogue& epi,
          Blocking blk = default_blocking<T>()) {
  if (M <= 0 || N <= 0) return;
  // Below ~2^18 multiply-adds (some 10 µs on one core) waking a second thread costs more than it saves.
  const int64_t threads = M * N * std::max<int64_t>(K, 1) < (int64_t(1) << 18) ? 1 : available_threads();
  const Split split = split_for_threads<T>(M, N, threads);
  at::parallel_for(0, split.blocks(), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) gemm_block<T>(split.rows(t), split.cols(t), K, pack_a, pack_b, epi, blk);
  });
}

}  // namespace gemm
}  // namespace minitorch_nn
