// What every CUDA kernel file of the project shares: the grid cap, ceil_div and the conversions
// between a storage type and the type it is computed in (float for __half and __nv_bfloat16).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace minitorch_nn {
namespace cuda {

// Cap for every grid dim; grid-stride loops cover the rest. Tests build with a small cap
// (-DMTNN_MAX_GRID=3) so that every grid-stride loop runs several iterations on small inputs.
#ifndef MTNN_MAX_GRID
#define MTNN_MAX_GRID 65535
#endif
constexpr int64_t kMaxGrid = MTNN_MAX_GRID;

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Cvt<T>::to(v) widens a stored value to the type sums are computed in; Cvt<T>::from rounds back
// (round to nearest even).
template <typename T>
struct Cvt {
  __device__ __forceinline__ static T to(T v) { return v; }
  __device__ __forceinline__ static T from(T v) { return v; }
};
template <>
struct Cvt<__half> {
  __device__ __forceinline__ static float to(__half v) { return __half2float(v); }
  __device__ __forceinline__ static __half from(float v) { return __float2half_rn(v); }
};
template <>
struct Cvt<__nv_bfloat16> {
  __device__ __forceinline__ static float to(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ __forceinline__ static __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); }
};


// ---------------------------------------------------------------------------------------------
// Vector access: V consecutive values of T moved as one load or store, 128 bits when
// V = vec_width<T>(), scalar when V = 1, converted to and from the compute type A (float for the
// 16-bit types) with Cvt. The address must be aligned to the whole pack.

template <typename T>
constexpr int vec_width() {
  return 16 / static_cast<int>(sizeof(T));  // values per 128-bit access
}

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <int V, typename T, typename A>
__device__ __forceinline__ void load_pack(const T* p, A (&out)[V]) {
  const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int k = 0; k < V; ++k) out[k] = Cvt<T>::to(pk.v[k]);
}

template <int V, typename T, typename A>
__device__ __forceinline__ void store_pack(T* p, const A (&in)[V]) {
  Pack<T, V> pk;
#pragma unroll
  for (int k = 0; k < V; ++k) pk.v[k] = Cvt<T>::from(in[k]);
  *reinterpret_cast<Pack<T, V>*>(p) = pk;
}

// Σ v over the 32 lanes of a full warp, returned to every lane. The xor butterfly leaves every lane
// with the same sum, bit for bit: at each step a lane and its partner add the same two numbers
// (addition commutes exactly).
template <typename T>
__device__ __forceinline__ T warp_allreduce_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

}  // namespace cuda
}  // namespace minitorch_nn
