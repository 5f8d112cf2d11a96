// Math<Vectorized<T>>: the primitives of csrc/activation.h for ATen's CPU vector type, so the
// activation formulas written there run SIMD-wide in the CPU kernels.
//
// ATen's Vectorized<float> is 16 lanes with AVX-512, 8 with AVX2, and a plain array (that the
// compiler may or may not vectorize) without either; setup.py picks the capability for the
// machine that builds the extension. For double lanes exp and erfc (for Φ) come from ATen's vector
// code, which calls SLEEF: exp within 1.0 ulp (Sleef_expd4_u10), erfc within 1.5 ulp
// (Sleef_erfcd4_u15) for every argument, the tail included. For float lanes exp and Φ are our own
// inline forms below, kept for speed, each with its measured error. (Without AVX2 or AVX-512, Vectorized is a plain
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
  static V normal_cdf(const V& z) {
    if constexpr (std::is_same_v<S, float>) {
      return normal_fast(z).cdf;
    } else {
      return V(0.5) * (z * V(-detail::kSqrtHalf)).erfc();
    }
  }
  static NormalCdfPdf<V> normal_cdf_pdf(const V& z) {
    if constexpr (std::is_same_v<S, float>) {
      return normal_fast(z);
    } else {
      return {V(0.5) * (z * V(-detail::kSqrtHalf)).erfc(), V(detail::kInvSqrt2Pi) * ((V(-0.5) * z) * z).exp()};
    }
  }

  // Φ(z) and φ(z) for float lanes, from one exp. SLEEF's Sleef_erfcf8_u15 (double-float
  // arithmetic) made LayerNorm+GELU 3.4x slower than ATen's erf did, so float lanes use a fit
  // built on the Gaussian itself:
  //   Φ(−|z|) = t·R(t)·e^{−z²/2},   t = 1/(1 + 0.32·|z|),   Φ(z) = 1 − Φ(−|z|) for z > 0,
  //   φ(z) = e^{−z²/2}/√(2π),
  // R(t) = Φ(−|z|)·e^{z²/2}/t, smooth on t in (0, 1] (R(0) = 0.32/√(2π), R(1) = ½), fitted by a
  // degree-9 polynomial, minimax in relative error (Lawson's iteration on a Chebyshev basis): 3.2e-8,
  // 5.2e-8 = 0.44 eps with the coefficients rounded to float (measured against 30 digits, t dense in
  // (0, 1]). It is the form of Numerical Recipes' erfcc, t·exp(−x² + q(t)), with the fit outside the
  // exp: the exp then serves the backward's φ too, where it used to cost a second one. And its
  // argument is −z²/2 rounded once, where erfc's was −x² of a rounded x = −z/√2: the tail's error
  // from the argument is z²/4 eps instead of z² eps. One division, one exp, ten FMAs.
  static NormalCdfPdf<V> normal_fast(const V& z) {
    const V t = V(1.0f) / at::vec::fmadd(V(0.32f), z.abs(), V(1.0f));
    V r(-0.0210781712f);
    r = at::vec::fmadd(r, t, V(0.0954072624f));
    r = at::vec::fmadd(r, t, V(-0.14670746f));
    r = at::vec::fmadd(r, t, V(0.0653280094f));
    r = at::vec::fmadd(r, t, V(-0.00937755965f));
    r = at::vec::fmadd(r, t, V(0.0586539619f));
    r = at::vec::fmadd(r, t, V(0.0878290981f));
    r = at::vec::fmadd(r, t, V(0.114622362f));
    r = at::vec::fmadd(r, t, V(0.127660945f));
    r = at::vec::fmadd(r, t, V(0.127661526f));
    // e^{−z²/2}·2^64 (0 for |z| = inf, NaN for NaN); each product below ends with its 2^−64.
    const V gauss = exp_nonpositive_2p64((V(-0.5f) * z) * z);
    const V lower = ((t * r) * gauss) * V(0x1p-64f);  // Φ(−|z|) ≤ ½
    const V pdf = V(static_cast<float>(detail::kInvSqrt2Pi) * 0x1p-64f) * gauss;
    // z > 0: 1 − Φ(−z), which loses nothing (Φ(−z) ≤ ½); NaN compares false and stays NaN.
    return {V::blendv(lower, V(1.0f) - lower, z > V(0.0f)), pdf};
  }
  // exp for float lanes, inlined. ATen's x.exp() calls SLEEF's Sleef_expf8_u10 out of line, and
  // a call clobbers every vector register, so the constants of the formula around it (Φ's ten
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
    V k;
    const V er = exp_reduced(x, k);
    const V k1 = (k * V(0.5f)).floor();
    const V k2 = k - k1;
    return er * pow2(k1) * pow2(k2);
  }
  // e^x·2^64 for x ≤ 0 (or NaN): exp_fast with one scale, 2^(k + 64), a normal float for every
  // k ≥ −150 (x ≥ −104). The caller multiplies its product by 2^−64 last, so a result in the
  // subnormal range rounds once, there. That drops the split scale's floor, second 2^k and
  // multiply from the path: GELU's Φ and φ use it.
  static V exp_nonpositive_2p64(const V& x_in) {
    V k;
    const V er = exp_reduced(at::vec::clamp_min(x_in, V(-104.0f)), k);
    return er * pow2(k, 64);
  }
  // e^r for the reduced argument r = x − k·ln2, and k.
  static V exp_reduced(const V& x, V& k) {
    k = (x * V(1.44269504088896341f)).round();
    V r = at::vec::fmadd(k, V(-0.693359375f), x);  // ln2 = 0.693359375 − 2.12194440e-4 + …
    r = at::vec::fmadd(k, V(2.12194440e-4f), r);
    V p(1.9875691500e-4f);
    p = at::vec::fmadd(p, r, V(1.3981999507e-3f));
    p = at::vec::fmadd(p, r, V(8.3334519073e-3f));
    p = at::vec::fmadd(p, r, V(4.1665795894e-2f));
    p = at::vec::fmadd(p, r, V(1.6666665459e-1f));
    p = at::vec::fmadd(p, r, V(5.0000001201e-1f));
    return at::vec::fmadd(p * r, r, r + V(1.0f));
  }
  // 2^(k + bias) for integral k + bias in [−126, 127], from its bits: (k + bias + 127)·2^23.
  static V pow2(const V& k, int bias = 0) {
    const V bits = at::vec::fmadd(k, V(8388608.0f), V(static_cast<float>((bias + 127) << 23)));
    return at::vec::cast<float>(at::vec::convert_to_int_of_same_size(bits));
  }
  static Mask lt(const V& a, const V& b) { return a < b; }
  static Mask gt(const V& a, const V& b) { return a > b; }
  static Mask le(const V& a, const V& b) { return a <= b; }
  static V select(const Mask& m, const V& a, const V& b) { return V::blendv(b, a, m); }
};

}  // namespace minitorch_nn
