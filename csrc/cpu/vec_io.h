// Vector loads and stores between tensors of scalar_t and acc_t lanes, and the horizontal sum of a
// vector's lanes: what the LayerNorm+act ladder's SIMD rung (ln_ladder.cpp, rung 3) and the production
// kernels (norm_act.cpp, rung 4) share.
//
// acc_t is at::opmath_type<scalar_t>: float for float, bfloat16 and float16, double for double. A
// 16-bit value is widened to float on load and rounded once, to nearest even, on store.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>

namespace minitorch_nn {

using at::vec::Vectorized;

// Vectorized<acc_t>::size() values from p (float and double: as stored), or the first n of them
// with the lanes past n zero.
template <typename acc_t>
inline Vectorized<acc_t> load(const acc_t* p) {
  return Vectorized<acc_t>::loadu(p);
}
template <typename acc_t>
inline Vectorized<acc_t> load(const acc_t* p, int64_t n) {
  return Vectorized<acc_t>::loadu(p, n);
}

// The 16-bit types, widened to float lanes. (Non-template overloads: a template here would tie with
// c10::load, which argument-dependent lookup also finds for c10's types.)
template <typename R>
inline Vectorized<float> load_16bit(const R* p, int64_t n) {
  Vectorized<float> v;
  if (n == Vectorized<float>::size()) {
    at::vec::load_to_float(p, v);
    return v;
  }
  alignas(64) float buf[Vectorized<float>::size()] = {};
  for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<float>(p[i]);
  return Vectorized<float>::loadu(buf);
}
inline Vectorized<float> load(const at::BFloat16* p, int64_t n = Vectorized<float>::size()) { return load_16bit(p, n); }
inline Vectorized<float> load(const at::Half* p, int64_t n = Vectorized<float>::size()) { return load_16bit(p, n); }

// v's lanes to p (all of them, or the first n).
template <typename acc_t>
inline void store(acc_t* p, const Vectorized<acc_t>& v) {
  v.store(p);
}
template <typename acc_t>
inline void store(acc_t* p, const Vectorized<acc_t>& v, int64_t n) {
  v.store(p, n);
}

// float lanes rounded to a 16-bit type in one vector conversion (convert_from_float packs two float
// vectors into one of twice the lanes; the lower half is v), then the first n stored. The ladder's
// rung 3 had this form, rung 4 a loop rounding lane by lane through a buffer; rung 4's forward with
// this one: 2048x1024, no activation, one thread, best of 40 calls, 1.19 ms against 2.97 (bfloat16)
// and 0.92 against 2.10 (float16) on the 2-core AVX2 machine (loaded: the best of three rounds).
// Both round to nearest even, so a finite float gets the same 16 bits either way.
template <typename R>
inline void store_16bit(R* p, const Vectorized<float>& v, int64_t n) {
  at::vec::convert_from_float<R>(v, v).store(p, n);
}
inline void store(at::BFloat16* p, const Vectorized<float>& v, int64_t n = Vectorized<float>::size()) {
  store_16bit(p, v, n);
}
inline void store(at::Half* p, const Vectorized<float>& v, int64_t n = Vectorized<float>::size()) {
  store_16bit(p, v, n);
}

// The sum of v's lanes, added one after another in lane order in sum_t: a fixed order, so the same
// bits on every run and for every thread count.
//
// Which sum_t is a numerical choice each caller makes, not one the header makes for them:
//   * rung 4 (norm_act.cpp) passes double. Its vector partial sums each cover at most kBlock values,
//     and the blocks' totals are added in double, so a row's or a channel's sum loses accuracy with the
//     block length, not with the whole reduction (BatchNorm channels reduce over millions of values).
//     Adding the lanes in float would round each block's total before it reaches the double sum:
//     worse, for no measurable speed (one add per lane per block of 1024 values).
//   * rung 3 (ln_ladder.cpp) passes acc_t: the ladder adds one idea per rung, and sums in double
//     belong to rung 4 ("blocked sums in double"); rung 3 is rung 2's arithmetic on K lanes.
template <typename sum_t, typename acc_t>
inline sum_t hsum(const Vectorized<acc_t>& v) {
  alignas(64) acc_t lanes[Vectorized<acc_t>::size()];
  v.store(lanes);
  sum_t s = 0;
  for (acc_t lane : lanes) s += lane;
  return s;
}

}  // namespace minitorch_nn
