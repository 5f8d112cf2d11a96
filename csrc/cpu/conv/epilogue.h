// The pointwise ends of a convolution, vectorised: the forward's bias + activation, and the
// backward's dz = dy·f'(z). f and f' are csrc/activation.h's, run Vectorized<T>::size() lanes
// at a time through Math<Vectorized<T>> (csrc/cpu/vec_math.h), with a masked tail.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>

#include "../vec_math.h"

namespace minitorch_nn {
namespace conv {

// y[r, :len] = f(y[r, :len] + bias[r]) for r < rows (bias may be null). Meant for a block that
// was just written and is still in cache; runs on the calling thread.
template <typename T>
void bias_act_rows(T* y, int64_t rows, int64_t len, const T* bias, Act act) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t kV = V::size();
  dispatch_act(act, [&](auto A) {
    constexpr Act kA = decltype(A)::value;
    if (kA == Act::None && !bias) return;
    for (int64_t r = 0; r < rows; ++r) {
      T* row = y + r * len;
      const V b(bias ? bias[r] : T(0));
      int64_t j = 0;
      for (; j + kV <= len; j += kV) act_forward<kA>(V::loadu(row + j) + b).store(row + j);
      if (j < len) act_forward<kA>(V::loadu(row + j, len - j) + b).store(row + j, len - j);
    }
  });
}

// z[i] = dy[i]·f'(z[i]) for i < n, in parallel: turns the recomputed pre-activation into dz.
template <typename T>
void mul_act_derivative(const T* dy, T* z, int64_t n, Act act) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t kV = V::size();
  dispatch_act(act, [&](auto A) {
    constexpr Act kA = decltype(A)::value;
    at::parallel_for(0, n, 1 << 14, [&](int64_t i0, int64_t i1) {
      int64_t i = i0;
      for (; i + kV <= i1; i += kV) (V::loadu(dy + i) * act_derivative<kA>(V::loadu(z + i))).store(z + i);
      if (i < i1) {
        const int64_t m = i1 - i;
        (V::loadu(dy + i, m) * act_derivative<kA>(V::loadu(z + i, m))).store(z + i, m);
      }
    });
  });
}

}  // namespace conv
}  // namespace minitorch_nn
