// Torch glue of the CUDA fused normalization + activation ops on a GPU: the kernels are in
// norm_act.cu, the ops themselves (plan, dtype dispatch, launch) in norm_act_ops.h, shared with the
// CUDA emulator (csrc/emu/norm_act_emu_ops.cpp). What is the GPU's own is here: the device guard
// (set before the plan allocates), torch's current stream, and C10_CUDA_CHECK. Compiled only in CUDA
// builds. (This file is norm_act_ops.cpp, not norm_act.cpp, because setuptools names objects after
// the source without its extension: norm_act.cpp and norm_act.cu would both build norm_act.o.)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "norm_act_ops.h"

namespace minitorch_nn {
namespace {

struct Gpu {
  static c10::cuda::OptionalCUDAGuard guard(const at::Tensor& t) { return c10::cuda::OptionalCUDAGuard(t.device()); }
  static cudaStream_t stream() { return at::cuda::getCurrentCUDAStream(); }
  static void check(cudaError_t err) { C10_CUDA_CHECK(err); }
  static void poison(at::Tensor&) {}
};

}  // namespace

TORCH_LIBRARY_IMPL(minitorch_nn, CUDA, m) {
  m.impl("layer_norm_act", &cuda_ops::layer_norm_act<Gpu>);
  m.impl("layer_norm_act_backward", &cuda_ops::layer_norm_act_backward<Gpu>);
  m.impl("batch_norm_act", &cuda_ops::batch_norm_act<Gpu>);
  m.impl("batch_norm_act_backward", &cuda_ops::batch_norm_act_backward<Gpu>);
}

}  // namespace minitorch_nn
