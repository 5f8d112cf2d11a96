// Activation functions and their derivatives, written once for every kernel.
//
// The fused normalization kernels apply y = f(z) to the normalized, affine value
// z = x̂·γ + β, and their backward passes need f'(z). This header is the only place those
// formulas live. It compiles under g++ (the CPU kernels) and nvcc (the CUDA kernels): plain
// templates, no torch headers, every function `__host__ __device__` under nvcc.
//
// The formulas are written against a value type T and a tiny set of primitives, Math<T>
// (exp, erf, tanh, log1p, comparisons and a select). Math<float> and Math<double> are below;
// the CPU kernels add Math<at::vec::Vectorized<float>> (csrc/cpu/vec_math.h), so the same
// lines compute 16 lanes at a time with AVX-512. A class-template specialization, not an
// overload, because an overload declared after this header would not be found from inside
// these templates (two-phase lookup); a specialization is.
//
//   activation   f(z)                              f'(z)
//   none         z                                 1
//   relu         max(z, 0)                         1 if z > 0 else 0
//   gelu         z·Φ(z) = ½z(1 + erf(z/√2))        Φ(z) + z·φ(z),  φ(z) = exp(−z²/2)/√(2π)
//   gelu_tanh    ½z(1 + t),  t = tanh(u),          ½(1 + t) + ½z(1 − t²)·u',
//                u = √(2/π)(z + κz³)               u' = √(2/π)(1 + 3κz²)
//   silu         z·σ(z)                            σ(z)(1 + z(1 − σ(z)))
//   mish         z·tanh(softplus(z))               t + z·σ(z)(1 − t²),  t = tanh(softplus(z))
//
// These are the same formulas as minitorch_nn/functional/activation.py, whose docstrings
// derive them.
#pragma once

#include <cmath>
#include <type_traits>

#if defined(__CUDACC__)
#define MTNN_HD __host__ __device__ __forceinline__
#else
#define MTNN_HD inline
#endif

namespace minitorch_nn {

enum class Act : int { None = 0, ReLU = 1, GELU = 2, GELUTanh = 3, SiLU = 4, Mish = 5 };

// Primitives for scalar types. `Mask` is what a comparison returns; `select(m, a, b)` is
// `m ? a : b` lane by lane.
template <typename T>
struct Math;

template <>
struct Math<float> {
  using Mask = bool;
  MTNN_HD static float splat(double v) { return static_cast<float>(v); }
  MTNN_HD static float exp(float x) { return ::expf(x); }
  MTNN_HD static float erf(float x) { return ::erff(x); }
  MTNN_HD static float tanh(float x) { return ::tanhf(x); }
  MTNN_HD static float log1p(float x) { return ::log1pf(x); }
  MTNN_HD static Mask lt(float a, float b) { return a < b; }
  MTNN_HD static Mask gt(float a, float b) { return a > b; }
  MTNN_HD static float select(Mask m, float a, float b) { return m ? a : b; }
};

template <>
struct Math<double> {
  using Mask = bool;
  MTNN_HD static double splat(double v) { return v; }
  MTNN_HD static double exp(double x) { return ::exp(x); }
  MTNN_HD static double erf(double x) { return ::erf(x); }
  MTNN_HD static double tanh(double x) { return ::tanh(x); }
  MTNN_HD static double log1p(double x) { return ::log1p(x); }
  MTNN_HD static Mask lt(double a, double b) { return a < b; }
  MTNN_HD static Mask gt(double a, double b) { return a > b; }
  MTNN_HD static double select(Mask m, double a, double b) { return m ? a : b; }
};

namespace detail {
constexpr double kSqrtHalf = 0.70710678118654752440;     // 1/√2
constexpr double kInvSqrt2Pi = 0.39894228040143267794;   // 1/√(2π)
constexpr double kSqrt2OverPi = 0.79788456080286535588;  // √(2/π)
constexpr double kKappa = 0.044715;                      // GELU-tanh's cubic coefficient

// σ(z) = 1/(1 + e^(−z)). For z → −∞, e^(−z) overflows to inf and σ to 0, its limit; no NaN.
template <typename T>
MTNN_HD T sigmoid(T z) {
  using M = Math<T>;
  const T one = M::splat(1.0);
  return one / (one + M::exp(M::splat(0.0) - z));
}
}  // namespace detail

// y = f(z).
template <Act A, typename T>
MTNN_HD T act_forward(T z) {
  using M = Math<T>;
  const T zero = M::splat(0.0), half = M::splat(0.5), one = M::splat(1.0);
  if constexpr (A == Act::None) {
    return z;
  } else if constexpr (A == Act::ReLU) {
    // `z < 0` rather than `z > 0` so that NaN, which compares false, passes through as torch's relu does.
    return M::select(M::lt(z, zero), zero, z);
  } else if constexpr (A == Act::GELU) {
    return half * z * (one + M::erf(z * M::splat(detail::kSqrtHalf)));
  } else if constexpr (A == Act::GELUTanh) {
    const T u = M::splat(detail::kSqrt2OverPi) * (z + M::splat(detail::kKappa) * z * z * z);
    return half * z * (one + M::tanh(u));
  } else if constexpr (A == Act::SiLU) {
    return z * detail::sigmoid(z);
  } else {  // Mish. softplus(z) = log1p(e^z); for z > 88 (float) e^z = inf and tanh(inf) = 1, the limit.
    return z * M::tanh(M::log1p(M::exp(z)));
  }
}

// f'(z): what the backward multiplies the upstream gradient by.
template <Act A, typename T>
MTNN_HD T act_derivative(T z) {
  using M = Math<T>;
  const T zero = M::splat(0.0), half = M::splat(0.5), one = M::splat(1.0);
  if constexpr (A == Act::None) {
    return one;
  } else if constexpr (A == Act::ReLU) {
    return M::select(M::gt(z, zero), one, zero);
  } else if constexpr (A == Act::GELU) {
    const T cdf = half * (one + M::erf(z * M::splat(detail::kSqrtHalf)));
    const T pdf = M::splat(detail::kInvSqrt2Pi) * M::exp(M::splat(-0.5) * z * z);
    return cdf + z * pdf;
  } else if constexpr (A == Act::GELUTanh) {
    const T z2 = z * z;
    const T u = M::splat(detail::kSqrt2OverPi) * (z + M::splat(detail::kKappa) * z2 * z);
    const T du = M::splat(detail::kSqrt2OverPi) * (one + M::splat(3.0 * detail::kKappa) * z2);
    const T t = M::tanh(u);
    return half * (one + t) + half * z * (one - t * t) * du;
  } else if constexpr (A == Act::SiLU) {
    const T s = detail::sigmoid(z);
    return s * (one + z * (one - s));
  } else {  // Mish
    const T t = M::tanh(M::log1p(M::exp(z)));
    return t + z * detail::sigmoid(z) * (one - t * t);
  }
}

// ---------------------------------------------------------------------------------------------
// Welford statistics: (count, mean, M2 = Σ(x − mean)²) of a set of values, built one value at a
// time and merged pairwise (Chan et al.), so a reduction can be split across threads and blocks
// and combined in a fixed order. Stable where Σx² − (Σx)²/n cancels: every update works with
// deviations from the current mean. T is the accumulation type (float or double).

template <typename T>
struct Welford {
  T n, mean, m2;
};

template <typename T>
MTNN_HD Welford<T> welford_add(Welford<T> s, T x) {
  s.n += T(1);
  const T delta = x - s.mean;
  s.mean += delta / s.n;
  s.m2 += delta * (x - s.mean);  // δ·(x − new mean) = δ²·(n−1)/n ≥ 0: both factors share a sign
  return s;
}

// The statistics of the union of two sets: n = na + nb, δ = mb − ma,
//   mean = ma + δ·nb/n,  M2 = M2a + M2b + δ²·na·nb/n.
template <typename T>
MTNN_HD Welford<T> welford_merge(Welford<T> a, Welford<T> b) {
  if (b.n == T(0)) return a;
  if (a.n == T(0)) return b;
  const T n = a.n + b.n;
  const T delta = b.mean - a.mean;
  const T wb = b.n / n;
  return {n, a.mean + delta * wb, a.m2 + b.m2 + delta * delta * a.n * wb};
}

// Calls `fn(std::integral_constant<Act, A>{})` with the activation as a compile-time constant,
// so each kernel is instantiated once per activation and its inner loop has no switch.
template <typename F>
inline auto dispatch_act(Act act, F&& fn) {
  switch (act) {
    case Act::ReLU:
      return fn(std::integral_constant<Act, Act::ReLU>{});
    case Act::GELU:
      return fn(std::integral_constant<Act, Act::GELU>{});
    case Act::GELUTanh:
      return fn(std::integral_constant<Act, Act::GELUTanh>{});
    case Act::SiLU:
      return fn(std::integral_constant<Act, Act::SiLU>{});
    case Act::Mish:
      return fn(std::integral_constant<Act, Act::Mish>{});
    case Act::None:
    default:
      return fn(std::integral_constant<Act, Act::None>{});
  }
}

}  // namespace minitorch_nn
