// Torch glue of the CUDA conv2d ops on a GPU: the kernels are conv_*.cu, the ops (rung choice,
// dtype dispatch, outputs, launches) conv_ops.h, shared with the CUDA emulator
// (csrc/emu/conv_emu_ops.cpp); the GPU's policy is gpu.h. Compiled only in CUDA builds.
#include <torch/library.h>

#include "conv_ops.h"
#include "gpu.h"

namespace minitorch_nn {

TORCH_LIBRARY_IMPL(minitorch_nn, CUDA, m) {
  using cuda_ops::Gpu;
  m.impl("conv2d", &cuda_ops::conv2d<Gpu>);
  m.impl("conv2d_backward", &cuda_ops::conv2d_backward<Gpu>);
}

}  // namespace minitorch_nn
