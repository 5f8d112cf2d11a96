// Welford statistics for the CUDA BatchNorm kernels (csrc/cuda/norm_act.cu), host and device.
#pragma once

#include "activation.h"  // MTNN_HD

namespace minitorch_nn {

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

}  // namespace minitorch_nn
