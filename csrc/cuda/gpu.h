// The device policy of the CUDA ops on a GPU (see torch_glue.h): torch's device guard, set before
// the op allocates anything; torch's current stream; C10_CUDA_CHECK on every launcher's error.
// Compiled only in CUDA builds.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace minitorch_nn {
namespace cuda_ops {

struct Gpu {
  static c10::cuda::OptionalCUDAGuard guard(const at::Tensor& t) { return c10::cuda::OptionalCUDAGuard(t.device()); }
  static cudaStream_t stream() { return at::cuda::getCurrentCUDAStream(); }
  static void check(cudaError_t err) { C10_CUDA_CHECK(err); }
  static void poison(at::Tensor&) {}
};

}  // namespace cuda_ops
}  // namespace minitorch_nn
