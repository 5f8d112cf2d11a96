// Torch glue of the CUDA fused normalization + activation ops on a GPU: the kernels are in
// norm_act.cu, the ops themselves (plan, dtype dispatch, launch) in norm_act_ops.h, shared with the
// CUDA emulator (csrc/emu/emu_ops.cpp); the GPU's own policy (device guard, current
// stream, C10_CUDA_CHECK) is gpu.h. Compiled only in CUDA builds. (This file is norm_act_ops.cpp,
// not norm_act.cpp, because setuptools names objects after the source without its extension:
// norm_act.cpp and norm_act.cu would both build norm_act.o.)
#include <torch/library.h>

#include "gpu.h"
#include "norm_act_ops.h"

namespace minitorch_nn {

TORCH_LIBRARY_IMPL(minitorch_nn, CUDA, m) {
  using cuda_ops::Gpu;
  m.impl("layer_norm_act", &cuda_ops::layer_norm_act<Gpu>);
  m.impl("layer_norm_act_backward", &cuda_ops::layer_norm_act_backward<Gpu>);
  m.impl("batch_norm_act", &cuda_ops::batch_norm_act<Gpu>);
  m.impl("batch_norm_act_backward", &cuda_ops::batch_norm_act_backward<Gpu>);
}

}  // namespace minitorch_nn
