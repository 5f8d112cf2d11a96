// The PTX instructions of the tensor-core conv (csrc/cuda/conv_mma.cu), each behind a small
// __device__ function whose semantics are written out here: which lane supplies what, and which
// lane ends up holding which element of which matrix.
//
// Two implementations of every function:
//   * `#if defined(__CUDA_ARCH__)` (nvcc's device pass, sm_80 and newer): the inline PTX;
//   * `#else`: plain C++ with exactly the documented semantics, built from __shfl_sync over the
//     full warp. It is what the CUDA emulator (csrc/emu/) runs, so conv_mma.cu's fragment and
//     pipeline indexing is tested on a CPU. It is also valid CUDA (nvcc's host pass parses it), but
//     nvcc never generates device code from it.
// The emulated version can only be as right as the comments it follows: a layout written wrongly
// here would pass the emulator and fail on a GPU. The layouts are those of the PTX ISA (version
// 8.x / 9.0, chapter 9.7.14 "Warp Level Matrix Multiply-Accumulate Instructions"):
//   * 9.7.14.5.8  "Matrix Fragments for mma.m16n8k16 with floating point type" (A, B, C/D);
//   * 9.7.14.5.15 "Warp-level matrix load instruction: ldmatrix" (the 8x8 .b16 fragment);
//   and chapter 9.7.9 "Data Movement and Conversion Instructions": cp.async,
//   cp.async.commit_group, cp.async.wait_group.
// Section numbers move between PTX ISA versions; the titles do not.
//
// Notation. A warp has 32 lanes; for lane l (%laneid):
//     g = l >> 2   ("groupID", 0..7)          t = l % 4   ("threadID_in_group", 0..3)
// A .b32 register that holds two 16-bit elements ("f16x2" / "bf16x2") keeps the element with the
// lower index in its low 16 bits: for a pair read from memory, the one at the lower address.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cassert>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace minitorch_nn {
namespace cuda {
namespace mma {

#if !defined(__CUDA_ARCH__)
namespace emulated {

__device__ __forceinline__ int lane_id() {
  const unsigned linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  return static_cast<int>(linear % 32u);
}

__device__ __forceinline__ unsigned long long pack(uint32_t lo, uint32_t hi) {
  return static_cast<unsigned long long>(lo) | (static_cast<unsigned long long>(hi) << 32);
}

// The two 16-bit elements of a .b32 register, as floats (exact: f16 and bf16 values are floats).
template <typename T>
__device__ __forceinline__ void unpack(uint32_t r, float& lo, float& hi) {
  const auto l = static_cast<unsigned short>(r & 0xffffu), h = static_cast<unsigned short>(r >> 16);
  if constexpr (std::is_same_v<T, __half>) {
    lo = __half2float(__ushort_as_half(l));
    hi = __half2float(__ushort_as_half(h));
  } else {
    lo = __bfloat162float(__ushort_as_bfloat16(l));
    hi = __bfloat162float(__ushort_as_bfloat16(h));
  }
}

// D = A·B + C for one m16n8k16 tile, with the fragment ownership of mma.m16n8k16 (below). Each
// lane gathers the two rows of A and the two columns of B that its four results need, with 16
// full-warp shuffles, then forms each dot product in float, in k order. The hardware's products are
// exact as here (two 8- or 11-bit significands fit a float's 24); its order and rounding of the
// additions are its own, so results may differ from this in the last bits of the float sum.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const int lane = lane_id(), g = lane >> 2, t = lane & 3;
  float arow[2][16], bcol[2][16];  // A rows g and g + 8; B columns 2t and 2t + 1; each over k = 0..15
  for (int q = 0; q < 4; ++q) {
    // Lane 4g + q holds, of rows g and g + 8: k = 2q, 2q + 1 in a[0] (row g) and a[1] (row g + 8),
    // k = 2q + 8, 2q + 9 in a[2] (row g) and a[3] (row g + 8).
    const unsigned long long lo = __shfl_sync(0xffffffffu, pack(a[0], a[1]), 4 * g + q);
    const unsigned long long hi = __shfl_sync(0xffffffffu, pack(a[2], a[3]), 4 * g + q);
    unpack<T>(static_cast<uint32_t>(lo), arow[0][2 * q], arow[0][2 * q + 1]);
    unpack<T>(static_cast<uint32_t>(lo >> 32), arow[1][2 * q], arow[1][2 * q + 1]);
    unpack<T>(static_cast<uint32_t>(hi), arow[0][2 * q + 8], arow[0][2 * q + 9]);
    unpack<T>(static_cast<uint32_t>(hi >> 32), arow[1][2 * q + 8], arow[1][2 * q + 9]);
  }
  for (int j = 0; j < 2; ++j) {
    for (int q = 0; q < 4; ++q) {
      // Lane 4n + q holds, of column n: k = 2q, 2q + 1 in b[0] and k = 2q + 8, 2q + 9 in b[1].
      const unsigned long long v = __shfl_sync(0xffffffffu, pack(b[0], b[1]), 4 * (2 * t + j) + q);
      unpack<T>(static_cast<uint32_t>(v), bcol[j][2 * q], bcol[j][2 * q + 1]);
      unpack<T>(static_cast<uint32_t>(v >> 32), bcol[j][2 * q + 8], bcol[j][2 * q + 9]);
    }
  }
  for (int i = 0; i < 4; ++i) {  // d[i]: row g + 8·(i >> 1), column 2t + (i & 1)
    float s = 0.0f;
    for (int k = 0; k < 16; ++k) s = fmaf(arow[i >> 1][k], bcol[i & 1][k], s);
    d[i] += s;
  }
}

}  // namespace emulated
#endif

// ---- mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 ------------------------------
//
// D (16x8, f32) = A (16x16) · B (16x8) + C (16x8, f32), computed by the whole warp (every lane
// must execute it, with the same shape and types). Here D and C are the same registers `d`.
// ".row.col": the layouts below are all there is to it; for these types only .row.col exists.
//
// Fragments (PTX ISA 9.7.14.5.8), i the element's index within the lane's fragment:
//   A: four .b32 registers a[0..3] holding a0..a7 (a[r] = {a(2r), a(2r+1)}, low half first)
//        row(ai) = g      for i in {0, 1, 4, 5}        col(ai) = 2t + (i & 1)      for i < 4
//                  g + 8  for i in {2, 3, 6, 7}                  2t + (i & 1) + 8  for i ≥ 4
//      so a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..2t+1], a[2] = A[g][2t+8..2t+9],
//         a[3] = A[g+8][2t+8..2t+9].
//   B: two .b32 registers b[0..1] holding b0..b3
//        row(bi) = 2t + (i & 1) for i < 2,  2t + (i & 1) + 8 for i ≥ 2          col(bi) = g
//      so b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]: a column of B, i.e. a row of Bᵀ, which
//      is why a B stored n-major (k contiguous, as our weights are) loads with plain ldmatrix.
//   C, D: four f32 registers c0..c3
//        row(ci) = g for i < 2, g + 8 for i ≥ 2                                  col(ci) = 2t + (i & 1)
//      so lane l owns D[g][2t..2t+1] (d[0], d[1]) and D[g+8][2t..2t+1] (d[2], d[3]).
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  emulated::mma_m16n8k16<__nv_bfloat16>(d, a, b);
#endif
}

// The same with .f16 multiplicands (and .f32 accumulators).
__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  emulated::mma_m16n8k16<__half>(d, a, b);
#endif
}

// ---- ldmatrix.sync.aligned.m8n8.x4.shared.b16 ---------------------------------------------------
//
// Loads four 8x8 matrices of 16-bit elements from shared memory, a whole warp at once (every lane
// must execute it). Each matrix row is 8 contiguous elements (16 bytes, 16-byte aligned); the rows
// of a matrix may be anywhere. Lane l supplies `row`, the address of row (l % 8) of matrix (l / 8):
// lanes 0-7 the rows of matrix 0, lanes 8-15 of matrix 1, 16-23 of matrix 2, 24-31 of matrix 3.
// Lane l receives in r[j] two elements of matrix j (PTX ISA 9.7.14.5.15, fragment of an 8x8
// .b16 matrix):
//     r[j] = { M_j[g][2t], M_j[g][2t + 1] }      (low half first)
// which is exactly the A / B fragment layout of mma.m16n8k16 when the four matrices are chosen as
// conv_mma.cu does (A: rows 0-7 and 8-15 × k 0-7 and 8-15; B: two n8 tiles × k 0-7 and 8-15).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
#if defined(__CUDA_ARCH__)
  const auto addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
#else
  const int lane = emulated::lane_id();
  const auto mine = static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(row));
  assert(mine % 16 == 0 && "ldmatrix: a row address must be 16-byte aligned");
  for (int j = 0; j < 4; ++j) {
    // Row g of matrix j is the row lane 8j + g supplied; this lane reads its elements 2t, 2t + 1.
    const unsigned long long p = __shfl_sync(0xffffffffu, mine, 8 * j + (lane >> 2));
    std::memcpy(&r[j], reinterpret_cast<const unsigned char*>(static_cast<uintptr_t>(p)) + 4 * (lane & 3), 4);
  }
#endif
}

// ---- cp.async.cg.shared.global [dst], [src], 16, src_size ------------------------------------------
//
// Starts an asynchronous copy of 16 bytes from global memory to shared memory, by this thread
// alone (no warp-wide contract). Only the first `src_bytes` bytes are read from `src`; the rest of
// the 16 are written as zeros. With src_bytes = 0 nothing is read (src must still be a valid
// global address) and dst gets 16 zero bytes: that is how a padding tap or an out-of-range row is
// filled with zeros with no branch around the copy. `dst` and `src` are 16-byte aligned. ".cg"
// caches the source in L2 only (the tile is reused from shared memory, not L1).
// The copy is only guaranteed complete after cp_async_wait (below) has covered its group, and
// visible to the other threads of the block after a __syncthreads() that follows that wait.
//
// Emulated: the copy happens at once, synchronously. So a thread that reads a stage before
// waiting for it reads the right data here and stale data on a GPU: the emulator does not catch a
// missing or wrongly-counted wait (it does catch a missing __syncthreads, through the order in
// which it runs the warps).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool fill_from_src) {
#if defined(__CUDA_ARCH__)
  const auto saddr = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  const int src_bytes = fill_from_src ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(saddr), "l"(src), "r"(src_bytes) : "memory");
#else
  assert(reinterpret_cast<uintptr_t>(dst) % 16 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
         "cp.async 16: both addresses must be 16-byte aligned");
  if (fill_from_src)
    std::memcpy(dst, src, 16);
  else
    std::memset(dst, 0, 16);
#endif
}

// cp.async.commit_group: closes the group of every cp.async this thread started since the last
// commit (a group may be empty). Groups complete in the order they were committed.
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// cp.async.wait_group N: waits until at most N of this thread's committed groups are still in
// flight, i.e. every group but the newest N is complete. N is an immediate.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

}  // namespace mma
}  // namespace cuda
}  // namespace minitorch_nn
