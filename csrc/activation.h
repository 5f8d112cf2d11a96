// Activation functions and their derivatives, written once for every kernel.
//
// The fused normalization kernels apply y = f(z) to the normalized, affine value
// z = x̂·γ + β, and their backward passes need f'(z). This header is the only place those
// formulas live. It compiles under g++ (the CPU kernels) and nvcc (the CUDA kernels): plain
// templates, no torch headers, every function `__host__ __device__` under nvcc.
//
// The formulas are written against a value type T and a tiny set of primitives, Math<T>
// (exp, the standard normal's Φ and φ, comparisons and a select). Math<float> and Math<double> are below; the CPU
// kernels add Math<at::vec::Vectorized<T>> (csrc/cpu/vec_math.h), so the same lines compute
// 8 (AVX2) or 16 (AVX-512) float lanes at a time. A class-template specialization, not an
// overload, because an overload declared after this header would not be found from inside
// these templates (two-phase lookup); a specialization is.
//
//   activation   f(z)                               f'(z)
//   none         z                                  1
//   relu         max(z, 0)                          0 if z ≤ 0 else 1 (1 at NaN, as torch)
//   gelu         z·Φ(z),  Φ(z) = ½·erfc(−z/√2)      Φ(z) + z·φ(z),  φ(z) = exp(−z²/2)/√(2π)
//   gelu_tanh    z·σ(v),  v = 2u,                   σ(v)·(1 + 2z·u'·σ(−v)),
//                u = √(2/π)(z + κz³)                u' = √(2/π)(1 + 3κz²)
//   silu         z·σ(z)                             σ(z)·(1 + z·σ(−z))
//   mish         z·tanh(s),  s = softplus(z)        tanh(s) + z·sech²(s)·σ(z)
//
// These are the same formulas as minitorch_nn/functional/activation.py, whose docstrings
// derive them, and they are stable for the same reasons: each one-minus that would cancel is
// written as the small quantity itself.
//   * Φ(z) = ½·erfc(−z/√2), not ½(1 + erf(z/√2)): in the left tail 1 + erf(z/√2) cancels
//     (float64 keeps about one digit of Φ(−8) ≈ 6e-16 and none of Φ(−9); float32 none of Φ(−5.5)).
//   * GELU-tanh: ½(1 + tanh(u)) = σ(2u) and ½(1 − tanh²(u)) = 2σ(2u)σ(−2u), because 1 + tanh(u)
//     cancels once tanh(u) is near −1, and 1 − tanh²(u) once it is near ±1 (|z| ≳ 3).
//   * SiLU: 1 − σ(z) = σ(−z), which 1 − σ(z) computes only to an absolute eps.
//   * Mish: sech²(s) = 4σ(2s)σ(−2s) instead of 1 − tanh²(s). Both sigmoids and tanh(s) come from
//     one exp: with w = e^z, e^s = 1 + w, so for n = w(w + 2) = e^{2s} − 1,
//       tanh(s) = n/(n + 2),   σ(2s) = (n + 1)/(n + 2),   σ(−2s) = 1/(n + 2),
//     sums of positive terms throughout.
// The σ(v), σ(−v) pairs are computed from e = exp(−|v|) ∈ (0, 1], as 1/(1 + e) and e/(1 + e),
// so exp never sees a positive argument (no overflow) and one exp serves both.
//
// Accuracy, measured through the ops against 50-digit arithmetic (tests/test_activation_kernels.py
// states and derives the bounds): in eps, relative to the sum of the magnitudes of the terms
// of each formula. The only growth is from rounding the argument of exp / erfc, whose error
// is multiplied by that argument's size: about z² eps for GELU at z < 0 through erfc (z²/4 for the
// CPU's float lanes, whose Φ takes the exp of −z²/2 directly), |2u| eps for GELU-tanh.
#pragma once

#include <cmath>
#include <type_traits>

#if defined(__CUDACC__)
#define MTNN_HD __host__ __device__ __forceinline__
#else
#define MTNN_HD inline
#endif

namespace minitorch_nn {

// The activations, listed once: (enumerator, the name Python passes). The enum, its names,
// dispatch_act below and the ops' parse_activation (ops.cpp) are all generated from this list;
// minitorch_nn.kernels.ACTIVATIONS must hold the same names, in this order
// (tests/test_norm_act.py::test_python_and_cpp_list_the_same_activations checks it).
#define MTNN_FOR_EACH_ACT(X) \
  X(None, "none")            \
  X(ReLU, "relu")            \
  X(GELU, "gelu")            \
  X(GELUTanh, "gelu_tanh")   \
  X(SiLU, "silu")            \
  X(Mish, "mish")

enum class Act : int {
#define MTNN_ACT_ENUMERATOR(id, name) id,
  MTNN_FOR_EACH_ACT(MTNN_ACT_ENUMERATOR)
#undef MTNN_ACT_ENUMERATOR
};

// The name Python uses for an activation ("gelu_tanh" for Act::GELUTanh).
MTNN_HD const char* activation_name(Act act) {
  switch (act) {
#define MTNN_ACT_NAME(id, name) \
  case Act::id:                 \
    return name;
    MTNN_FOR_EACH_ACT(MTNN_ACT_NAME)
#undef MTNN_ACT_NAME
  }
  return "?";
}

// Primitives for scalar types. `Mask` is what a comparison returns; `select(m, a, b)` is
// `m ? a : b` lane by lane. GELU's two primitives are the standard normal's
//   normal_cdf(z)      Φ(z) = ½·erfc(−z/√2)
//   normal_cdf_pdf(z)  {Φ(z), φ(z)},  φ(z) = exp(−z²/2)/√(2π)
// (the forward needs Φ alone, the backward both), so that a type whose Φ is built on e^{−z²/2}
// (the CPU's float lanes, csrc/cpu/vec_math.h) computes the pair from one exp.
template <typename T>
struct Math;

template <typename T>
struct NormalCdfPdf {
  T cdf, pdf;  // Φ(z), φ(z)
};

namespace detail {
constexpr double kSqrtHalf = 0.70710678118654752440;     // 1/√2
constexpr double kInvSqrt2Pi = 0.39894228040143267794;   // 1/√(2π)
constexpr double kSqrt2OverPi = 0.79788456080286535588;  // √(2/π)
constexpr double kKappa = 0.044715;                      // GELU-tanh's cubic coefficient
}  // namespace detail

template <>
struct Math<float> {
  using Mask = bool;
  MTNN_HD static float splat(double v) { return static_cast<float>(v); }
  MTNN_HD static float exp(float x) { return ::expf(x); }
  MTNN_HD static float normal_cdf(float z) { return 0.5f * ::erfcf(z * static_cast<float>(-detail::kSqrtHalf)); }
  MTNN_HD static NormalCdfPdf<float> normal_cdf_pdf(float z) {
    return {normal_cdf(z), static_cast<float>(detail::kInvSqrt2Pi) * ::expf((-0.5f * z) * z)};
  }
  MTNN_HD static Mask lt(float a, float b) { return a < b; }
  MTNN_HD static Mask gt(float a, float b) { return a > b; }
  MTNN_HD static Mask le(float a, float b) { return a <= b; }
  MTNN_HD static float select(Mask m, float a, float b) { return m ? a : b; }
};

template <>
struct Math<double> {
  using Mask = bool;
  MTNN_HD static double splat(double v) { return v; }
  MTNN_HD static double exp(double x) { return ::exp(x); }
  MTNN_HD static double normal_cdf(double z) { return 0.5 * ::erfc(z * -detail::kSqrtHalf); }
  MTNN_HD static NormalCdfPdf<double> normal_cdf_pdf(double z) {
    return {normal_cdf(z), detail::kInvSqrt2Pi * ::exp((-0.5 * z) * z)};
  }
  MTNN_HD static Mask lt(double a, double b) { return a < b; }
  MTNN_HD static Mask gt(double a, double b) { return a > b; }
  MTNN_HD static Mask le(double a, double b) { return a <= b; }
  MTNN_HD static double select(Mask m, double a, double b) { return m ? a : b; }
};

namespace detail {
// Mish: above this z, tanh(softplus(z)) = 1 − 2e^{−2z}(1 + O(e^{−z})) rounds to 1 in float64
// (2e^{−60} ≪ 2^−53) and z·sech²(s)·σ(z) ≤ 4z·e^{−2z} is below an eps of f'(z) ≈ 1 for every
// z > 30, so they are taken as exactly 1 and 0; e^z is clamped there, so n = w(w + 2) ≈ 1e26
// and never overflows float.
constexpr double kMishLinear = 30.0;

// σ(z) = 1/(1 + e^(−z)). For z → −∞, e^(−z) overflows to inf and σ to 0, its limit; no NaN.
// Relative error a few eps for every z: the denominator is a sum of positive terms.
template <typename T>
MTNN_HD T sigmoid(T z) {
  using M = Math<T>;
  const T one = M::splat(1.0);
  return one / (one + M::exp(M::splat(0.0) - z));
}

// The pair (σ(v), σ(−v)) from one exp: e = e^{−|v|} ∈ (0, 1], σ(|v|) = 1/(1 + e), σ(−|v|) = e/(1 + e).
template <typename T>
struct SigmoidPair {
  T pos, neg;  // σ(v), σ(−v)
};
template <typename T>
MTNN_HD SigmoidPair<T> sigmoid_pair(T v) {
  using M = Math<T>;
  const T zero = M::splat(0.0), one = M::splat(1.0);
  const auto negative = M::lt(v, zero);
  const T e = M::exp(M::select(negative, v, zero - v));  // e^{−|v|}
  const T big = one / (one + e);                          // σ(|v|)
  const T small = e * big;                                // σ(−|v|)
  return {M::select(negative, small, big), M::select(negative, big, small)};
}
}  // namespace detail

// y = f(z).
template <Act A, typename T>
MTNN_HD T act_forward(T z) {
  using M = Math<T>;
  const T zero = M::splat(0.0), two = M::splat(2.0);
  if constexpr (A == Act::None) {
    return z;
  } else if constexpr (A == Act::ReLU) {
    // `z < 0` rather than `z > 0` so that NaN, which compares false, passes through as torch's relu does.
    return M::select(M::lt(z, zero), zero, z);
  } else if constexpr (A == Act::GELU) {
    return z * M::normal_cdf(z);
  } else if constexpr (A == Act::GELUTanh) {
    // v = 2u; for |z| ≳ 1e13 (float) z³ overflows, v = ±inf and σ(v) its limit 0 or 1.
    const T v = M::splat(2.0 * detail::kSqrt2OverPi) * (z + M::splat(detail::kKappa) * z * z * z);
    return z * detail::sigmoid(v);
  } else if constexpr (A == Act::SiLU) {
    return z * detail::sigmoid(z);
  } else {  // Mish: tanh(softplus(z)) = n/(n + 2), n = w(w + 2), w = e^z (see the header comment).
    const T lin = M::splat(detail::kMishLinear);
    const auto linear = M::gt(z, lin);
    const T w = M::exp(M::select(linear, lin, z));
    const T n = w * (w + two);
    return M::select(linear, z, z * (n / (n + two)));
  }
}

// f'(z): what the backward multiplies the upstream gradient by.
template <Act A, typename T>
MTNN_HD T act_derivative(T z) {
  using M = Math<T>;
  const T zero = M::splat(0.0), one = M::splat(1.0), two = M::splat(2.0);
  if constexpr (A == Act::None) {
    return one;
  } else if constexpr (A == Act::ReLU) {
    // 0 where z ≤ 0, else 1: a NaN z (which compares false) passes the gradient through, as
    // torch's relu backward (threshold_backward) does.
    return M::select(M::le(z, zero), zero, one);
  } else if constexpr (A == Act::GELU) {
    // Φ(z) and z·φ(z) have opposite signs for z < 0, but |Φ(z)| ≈ |z·φ(z)|/z² there: no cancellation.
    const NormalCdfPdf<T> n = M::normal_cdf_pdf(z);
    return n.cdf + z * n.pdf;
  } else if constexpr (A == Act::GELUTanh) {
    const T z2 = z * z;
    const T v = M::splat(2.0 * detail::kSqrt2OverPi) * (z + M::splat(detail::kKappa) * z2 * z);
    const T du = M::splat(detail::kSqrt2OverPi) * (one + M::splat(3.0 * detail::kKappa) * z2);
    const detail::SigmoidPair<T> s = detail::sigmoid_pair(v);
    // Grouped so that nothing overflows before z² does (|z| ≈ 1.8e19 in float): z·u' alone grows
    // like z³, but one of σ(v), σ(−v) is exactly 0 once |z| is large.
    return s.pos + (two * z * s.pos) * (du * s.neg);
  } else if constexpr (A == Act::SiLU) {
    const detail::SigmoidPair<T> s = detail::sigmoid_pair(z);
    return s.pos * (one + z * s.neg);
  } else {  // Mish: tanh(s) + z·sech²(s)·σ(z), sech²(s) = 4σ(2s)σ(−2s) = 4(n + 1)/(n + 2)².
    const T lin = M::splat(detail::kMishLinear);
    const auto linear = M::gt(z, lin);
    const T w = M::exp(M::select(linear, lin, z));
    const T n = w * (w + two);
    const T r = one / (n + two);  // σ(−2s); (n + 1)·r·r, not (n + 1)/(n + 2)², whose square overflows float
    const T sech2 = M::splat(4.0) * ((n + one) * r) * r;
    const T sig = w / (one + w);  // σ(z) = e^z/(1 + e^z): w ≤ e^30, no overflow
    return M::select(linear, one, n * r + z * sech2 * sig);
  }
}

// Calls `fn(std::integral_constant<Act, A>{})` with the activation as a compile-time constant,
// so each kernel is instantiated once per activation and its inner loop has no switch.
template <typename F>
inline auto dispatch_act(Act act, F&& fn) {
  switch (act) {
#define MTNN_ACT_CASE(id, name) \
  case Act::id:                 \
    return fn(std::integral_constant<Act, Act::id>{});
    MTNN_FOR_EACH_ACT(MTNN_ACT_CASE)
#undef MTNN_ACT_CASE
  }
  return fn(std::integral_constant<Act, Act::None>{});  // not reached: every enumerator has a case
}

}  // namespace minitorch_nn
