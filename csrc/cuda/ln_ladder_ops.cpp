// Torch glue of the CUDA LayerNorm+act kernel ladder on a GPU: the kernels are in ln_ladder.cu, the
// ops (plan, dtype dispatch, launch) in ln_ladder_ops.h, shared with the CUDA emulator; the GPU's
// policy (device guard, current stream, C10_CUDA_CHECK) is gpu.h. Compiled only in CUDA builds.
#include <torch/library.h>

#include "gpu.h"
#include "ln_ladder_ops.h"

namespace minitorch_nn {

TORCH_LIBRARY_IMPL(minitorch_nn, CUDA, m) {
  using cuda_ops::Gpu;
  m.impl("layer_norm_act_ladder", &cuda_ops::layer_norm_act_ladder<Gpu>);
  m.impl("layer_norm_act_ladder_backward", &cuda_ops::layer_norm_act_ladder_backward<Gpu>);
}

}  // namespace minitorch_nn
