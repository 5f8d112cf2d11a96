// _gemm(a, b, blocking): C = A @ B by the conv ladder's own packed GEMM (gemm.h), exposed for its
// tests (against torch.mm) and for the block-size sweep (benchmarks/gemm_sweep.py).
//
// a (M, K) and b (K, N) may have any strides (transposed, sliced, expanded): the packers read
// them in place, nothing is copied. C is a new contiguous (M, N) tensor. blocking = [MC, KC, NC]
// replaces the default cache blocking (gemm::default_blocking), [] keeps it.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "gemm.h"

namespace minitorch_nn {
namespace {

at::Tensor gemm_cpu(const at::Tensor& a, const at::Tensor& b, at::IntArrayRef blocking) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2, "_gemm: a and b must be 2-D matrices, got ", a.dim(), "-D and ",
              b.dim(), "-D");
  TORCH_CHECK(a.size(1) == b.size(0), "_gemm: mat1 and mat2 shapes cannot be multiplied (", a.size(0), "x",
              a.size(1), " and ", b.size(0), "x", b.size(1), ")");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "_gemm: expected a and b to have the same dtype, got ",
              a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
              "_gemm: only float32 and float64 are supported, got ", a.scalar_type());
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), "_gemm: expected CPU tensors");
  TORCH_CHECK(blocking.empty() || blocking.size() == 3, "_gemm: blocking must be [] or [MC, KC, NC], got ",
              blocking.size(), " values");
  for (int64_t v : blocking) TORCH_CHECK(v > 0, "_gemm: block sizes must be positive, got ", blocking);

  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  at::Tensor c = at::empty({M, N}, a.options());
  if (M == 0 || N == 0) return c;
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "_gemm", [&] {
    using T = scalar_t;
    const gemm::Blocking blk =
        blocking.empty() ? gemm::default_blocking<T>() : gemm::Blocking{blocking[0], blocking[1], blocking[2]};
    gemm::gemm<T>(M, N, K, gemm::StridedA<T>{a.const_data_ptr<T>(), a.stride(0), a.stride(1)},
                  gemm::StridedB<T>{b.const_data_ptr<T>(), b.stride(0), b.stride(1)},
                  gemm::StoreC<T>{c.data_ptr<T>(), N}, blk);
  });
  return c;
}

}  // namespace
}  // namespace minitorch_nn

TORCH_LIBRARY_IMPL(minitorch_nn, CPU, m) { m.impl("_gemm", &minitorch_nn::gemm_cpu); }
