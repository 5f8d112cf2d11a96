// Math<Vectorized<T>>: the primitives of csrc/activation.h for ATen's CPU vector type, so the
// activation formulas written there run SIMD-wide in the CPU kernels.
//
// ATen's Vectorized<float> is 16 lanes with AVX-512, 8 with AVX2, and a plain array (that the
// compiler may or may not vectorize) without either; setup.py picks the capability for the
// machine that builds the extension. For double lanes exp and erfc come from ATen's vector code,
// which calls SLEEF: exp within 1.0 ulp (Sleef_expd4_u10), erfc within 1.5 ulp (Sleef_erfcd4_u15)
// for every argument, the tail included. For float lanes both are our own inline forms below,
// kept for speed, each with its measured error. (Without AVX2 or AVX-512, Vectorized is a plain
// array and these formulas run lane by lane.)
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <type_traits>

#include "../activation.h"

namespace minitorch_nn {

template <typename S>
struct Math<at::vec::Vectorized<S>> {
  using V = at::vec::Vectorized<S>;
  using Mask = V;  // comparisons give all-ones / all-zeros lanes
  static V splat(double v) { return V(static_cast<S>(v)); }
  static V exp(const V& x) {
    if constexpr (std::is_same_v<S, float>) {
      return exp_fast(x);
    } else {
      return x.exp();
    }
  }
  static V erfc(const V& x) {
    if constexpr (std::is_same_v<S, float>) {
      return erfc_fast(x);
    } else {
      return x.erfc();
    }
  }

  // erfc for float lanes, kept for speed: SLEEF's Sleef_erfcf8_u15 (double-float arithmetic)
  // made LayerNorm+GELU 3.4x slower than ATen's erf did (4096x1024 float32, AVX2, one thread:
  // forward 14 -> 48 ms). This is Numerical Recipes' erfcc (Press et al., 2nd ed., section 6.2):
  // with t = 1/(1 + |x|/2),
  //   erfc(|x|) = t·exp(−x² − 1.26551223 + t·P(t)),  P a degree-8 Chebyshev fit,
  //   erfc(x) = 2 − erfc(|x|) for x < 0 (no cancellation: erfc(|x|) ≤ 1),
  // relative error under 1.2e-7 everywhere in exact arithmetic (measured against 50 digits:
  // 1.04e-7 = 0.88 float eps). In float the exponent −x² + (…) is rounded once (an FMA), which
  // adds (x² + 1.3)/2 eps, and the Horner steps, t and the products add at most ~12 eps: about
  // 13 + x²/2 eps in all, against SLEEF's 1.5 ulp (tests/test_activation_kernels.py derives and
  // checks it through the op). For GELU, x = −z/√2, so that is 13 + z²/4 eps, while rounding
  // x itself already costs z² eps in the tail with either erfc. Cost: one division, one exp and
  // nine FMAs, about ATen's erf.
  static V erfc_fast(const V& x) {
    const V z = x.abs();
    const V t = V(1.0f) / at::vec::fmadd(V(0.5f), z, V(1.0f));
    V p(0.17087277f);
    p = at::vec::fmadd(p, t, V(-0.82215223f));
    p = at::vec::fmadd(p, t, V(1.48851587f));
    p = at::vec::fmadd(p, t, V(-1.13520398f));
    p = at::vec::fmadd(p, t, V(0.27886807f));
    p = at::vec::fmadd(p, t, V(-0.18628806f));
    p = at::vec::fmadd(p, t, V(0.09678418f));
    p = at::vec::fmadd(p, t, V(0.37409196f));
    p = at::vec::fmadd(p, t, V(1.00002368f));
    const V q = at::vec::fmadd(p, t, V(-1.26551223f));
    const V tail = t * exp_fast(at::vec::fmadd(V(0.0f) - z, z, q));  // erfc(|x|); 0 for |x| = inf
    return V::blendv(tail, V(2.0f) - tail, x < V(0.0f));         // NaN compares false: stays NaN
  }
  // exp for float lanes, inlined. ATen's x.exp() calls SLEEF's Sleef_expf8_u10 out of line, and
  // a call clobbers every vector register, so the constants of the formula around it (erfc's nine
  // coefficients) are reloaded each time. Cody and Waite's reduction, as in Cephes' expf (Moshier):
  //   k = round(x·log2 e),  r = x − k·ln2  (ln2 in two parts, so r is exact to ~2^-30),
  //   e^r = 1 + r + r²·P(r),  P of degree 5 on |r| ≤ ln2/2,
  //   e^x = e^r·2^k1·2^k2 with k1 = ⌊k/2⌋, k2 = k − k1,
  // the split scale so that results in the subnormal range round once, at the last multiply,
  // instead of flushing to zero. x is clamped to [−104, 89] first: e^−104 rounds to 0 and e^89
  // overflows to inf, as they should, NaN passes the clamps and comes out NaN. 2^k is built from
  // its bit pattern: (k + 127)·2^23 is an exact float for |k| < 128, and its int conversion is the
  // float bits of 2^k. Error, measured against double exp for every finite float: 1.26 ulp at
  // most (at x = 15.625), subnormal results included; SLEEF's is 1.0. tests/test_activation_kernels.py
  // checks the activations built on it through the ops.
  static V exp_fast(const V& x_in) {
    const V x = at::vec::clamp_max(at::vec::clamp_min(x_in, V(-104.0f)), V(89.0f));
    const V k = (x * V(1.44269504088896341f)).round();
    V r = at::vec::fmadd(k, V(-0.693359375f), x);  // ln2 = 0.693359375 − 2.12194440e-4 + …
    r = at::vec::fmadd(k, V(2.12194440e-4f), r);
    V p(1.9875691500e-4f);
    p = at::vec::fmadd(p, r, V(1.3981999507e-3f));
    p = at::vec::fmadd(p, r, V(8.3334519073e-3f));
    p = at::vec::fmadd(p, r, V(4.1665795894e-2f));
    p = at::vec::fmadd(p, r, V(1.6666665459e-1f));
    p = at::vec::fmadd(p, r, V(5.0000001201e-1f));
    const V er = at::vec::fmadd(p * r, r, r + V(1.0f));
    const V k1 = (k * V(0.5f)).floor();
    const V k2 = k - k1;
    return er * pow2(k1) * pow2(k2);
  }
  // 2^k for integral k in [−126, 127], from its bits.
  static V pow2(const V& k) {
    const V bits = at::vec::fmadd(k, V(8388608.0f), V(1065353216.0f));  // (k + 127)·2^23
    return at::vec::cast<float>(at::vec::convert_to_int_of_same_size(bits));
  }
  static Mask lt(const V& a, const V& b) { return a < b; }
  static Mask gt(const V& a, const V& b) { return a > b; }
  static Mask le(const V& a, const V& b) { return a <= b; }
  static V select(const Mask& m, const V& a, const V& b) { return V::blendv(b, a, m); }
};

}  // namespace minitorch_nn
