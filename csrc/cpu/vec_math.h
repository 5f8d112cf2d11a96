// Math<Vectorized<T>>: the primitives of csrc/activation.h for ATen's CPU vector type, so the
// activation formulas written there run SIMD-wide in the CPU kernels.
//
// ATen's Vectorized<float> is 16 lanes with AVX-512, 8 with AVX2, and a plain array (that the
// compiler may or may not vectorize) without either; setup.py picks the capability for the
// machine that builds the extension. exp, erf, tanh and log1p come from ATen's vector code
// (SLEEF at 1.0 ulp, and ATen's own erf polynomial): the same routines torch's eager CPU
// kernels use, so our accuracy matches theirs.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include "../activation.h"

namespace minitorch_nn {

template <typename S>
struct Math<at::vec::Vectorized<S>> {
  using V = at::vec::Vectorized<S>;
  using Mask = V;  // comparisons give all-ones / all-zeros lanes
  static V splat(double v) { return V(static_cast<S>(v)); }
  static V exp(const V& x) { return x.exp(); }
  static V erf(const V& x) { return x.erf(); }
  static V tanh(const V& x) { return x.tanh(); }
  static V log1p(const V& x) { return x.log1p(); }
  static Mask lt(const V& a, const V& b) { return a < b; }
  static Mask gt(const V& a, const V& b) { return a > b; }
  static V select(const Mask& m, const V& a, const V& b) { return V::blendv(b, a, m); }
};

}  // namespace minitorch_nn
