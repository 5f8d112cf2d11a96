// Torch glue of the CUDA tuning parameters on a GPU build: the ops of tuning_ops.h, as a fragment of
// the minitorch_nn library (the library's tensor ops are in csrc/ops.cpp). Compiled only in CUDA
// builds.
#include <torch/library.h>

#include "tuning_ops.h"

namespace minitorch_nn {

TORCH_LIBRARY_FRAGMENT(minitorch_nn, m) { cuda_ops::define_tuning_ops(m); }

}  // namespace minitorch_nn
