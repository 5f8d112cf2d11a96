// The project's CUDA ops on the CPU, through the CUDA emulator: the same ops as on a GPU
// (csrc/cuda/norm_act_ops.h, ln_ladder_ops.h and conv_ops.h: the shared checks and output
// planning, the dtype dispatch, the launchers of the .cu files) with the emulator's device policy,
// registered for CPU tensors as torch.ops.minitorch_nn_emu.* (the schemas are minitorch_nn's,
// defined from Python by csrc/emu/build.py before this library loads), and the tuning ops of
// tuning_ops.h. Test and teaching infrastructure: built on demand,
// never part of the shipped extension.
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <limits>

#include "conv_ops.h"
#include "ln_ladder_ops.h"
#include "norm_act_ops.h"
#include "tuning_ops.h"

namespace minitorch_nn {
namespace {

struct Emulator {
  static int guard(const at::Tensor&) { return 0; }  // one "device": the CPU
  static cudaStream_t stream() { return nullptr; }
  static void check(cudaError_t err) {
    TORCH_CHECK(err == cudaSuccess, "CUDA error (emulated): ", cudaGetErrorString(err));
  }
  // Outputs and workspaces start as NaN (floating tensors) or 0xFF bytes, unless MTNN_EMU_POISON=0:
  // an element the kernels forget to write then shows in the results instead of passing as 0.
  static void poison(at::Tensor& t) {
    const char* env = std::getenv("MTNN_EMU_POISON");
    if (t.numel() == 0 || (env != nullptr && std::strcmp(env, "0") == 0)) return;
    if (t.is_floating_point())
      t.fill_(std::numeric_limits<double>::quiet_NaN());
    else
      t.fill_(0xFF);
  }
};

}  // namespace

// The CUDA launchers' tuning parameters (not tensor ops: defined here, not from minitorch_nn's schemas).
TORCH_LIBRARY_FRAGMENT(minitorch_nn_emu, m) { cuda_ops::define_tuning_ops(m); }

TORCH_LIBRARY_IMPL(minitorch_nn_emu, CPU, m) {
  m.impl("layer_norm_act", &cuda_ops::layer_norm_act<Emulator>);
  m.impl("layer_norm_act_backward", &cuda_ops::layer_norm_act_backward<Emulator>);
  m.impl("layer_norm_act_ladder", &cuda_ops::layer_norm_act_ladder<Emulator>);
  m.impl("layer_norm_act_ladder_backward", &cuda_ops::layer_norm_act_ladder_backward<Emulator>);
  m.impl("batch_norm_act", &cuda_ops::batch_norm_act<Emulator>);
  m.impl("batch_norm_act_backward", &cuda_ops::batch_norm_act_backward<Emulator>);
  m.impl("conv2d", &cuda_ops::conv2d<Emulator>);
  m.impl("conv2d_backward", &cuda_ops::conv2d_backward<Emulator>);
}

}  // namespace minitorch_nn
