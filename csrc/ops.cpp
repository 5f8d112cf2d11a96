// The operator schemas of minitorch_nn._C, declared once for every device.
//
// Each device registers its implementation under the same name with TORCH_LIBRARY_IMPL
// (csrc/cpu/*.cpp, csrc/cuda/*.cpp). The fake (meta) implementations and the autograd formulas
// are registered from Python, in minitorch_nn/kernels/, with torch.library. Each backward is an
// op of its own, so torch.compile traces through forward and backward without graph breaks.
//
// Loading the shared library (`import minitorch_nn._C`) runs these static registrations; the
// Python module it defines is otherwise empty.
#include <Python.h>
#include <torch/library.h>

#include "ops.h"

namespace minitorch_nn {

Act parse_activation(const std::string& name) {
  std::string names;  // "'none', 'relu', ...", for the error
#define MTNN_ACT_PARSE(id, act_name)                        \
  if (name == act_name) return Act::id;                     \
  names += std::string(names.empty() ? "'" : ", '") + act_name + "'";
  MTNN_FOR_EACH_ACT(MTNN_ACT_PARSE)
#undef MTNN_ACT_PARSE
  TORCH_CHECK_VALUE(false, "activation must be one of ", names, "; got '", name, "'");
}

}  // namespace minitorch_nn

TORCH_LIBRARY(minitorch_nn, m) {
  // LayerNorm over the trailing `normalized_shape` dims, then the activation:
  //   out = act(x̂·γ + β),  x̂ = (x − mean)·rstd,  rstd = 1/√(var + eps)  (biased variance).
  // mean and rstd have the leading (batch) shape, in float32 for bfloat16 input.
  m.def(
      "layer_norm_act(Tensor input, int[] normalized_shape, Tensor? weight, Tensor? bias, float eps, "
      "str activation) -> (Tensor out, Tensor mean, Tensor rstd)");
  // Gradients of layer_norm_act. output_mask says which of (input, weight, bias) to compute; a
  // gradient not asked for (or of an absent weight/bias) comes back as an empty tensor.
  m.def(
      "layer_norm_act_backward(Tensor grad_out, Tensor input, Tensor mean, Tensor rstd, int[] normalized_shape, "
      "Tensor? weight, Tensor? bias, str activation, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // The same two ops by a rung of the LayerNorm+act kernel ladder (csrc/cpu/ln_ladder.cpp,
  // csrc/cuda/ln_ladder.cu): rung 1, 2 or 3, each one idea faster than the one before; rung 4 is
  // layer_norm_act / layer_norm_act_backward themselves. Same arguments, checks and outputs.
  m.def(
      "layer_norm_act_ladder(Tensor input, int[] normalized_shape, Tensor? weight, Tensor? bias, float eps, "
      "str activation, int rung) -> (Tensor out, Tensor mean, Tensor rstd)");
  m.def(
      "layer_norm_act_ladder_backward(Tensor grad_out, Tensor input, Tensor mean, Tensor rstd, int[] normalized_shape, "
      "Tensor? weight, Tensor? bias, str activation, bool[3] output_mask, int rung) -> (Tensor, Tensor, Tensor)");
  // BatchNorm over every dim but 1 (channels), then the activation. In training the batch
  // statistics normalize; in eval the running statistics do. save_mean/save_rstd are the
  // statistics used. The op is functional (torch.library's autograd needs that): instead of
  // updating running_mean/running_var in place, it returns their updated values,
  //   new_running = (1 − momentum)·running + momentum·batch_stat  (unbiased variance for running_var),
  // in the running buffers' dtype, for the caller to copy in; in eval, or without running
  // statistics, these two come back empty.
  m.def(
      "batch_norm_act(Tensor input, Tensor? weight, Tensor? bias, Tensor? running_mean, Tensor? running_var, "
      "bool training, float momentum, float eps, str activation) "
      "-> (Tensor out, Tensor save_mean, Tensor save_rstd, Tensor new_running_mean, Tensor new_running_var)");
  m.def(
      "batch_norm_act_backward(Tensor grad_out, Tensor input, Tensor save_mean, Tensor save_rstd, "
      "Tensor? weight, Tensor? bias, bool training, str activation, bool[3] output_mask) "
      "-> (Tensor, Tensor, Tensor)");

  // 2-D convolution (cross-correlation) with an optional fused epilogue:
  //   out = act(conv2d(input, weight) + bias),  padding = (top, bottom, left, right).
  // algorithm picks the rung of the CPU ladder (csrc/cpu/conv/): "direct", "im2col", "gemm",
  // "implicit", "depthwise" or "auto" (the fastest that applies).
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, int[2] dilation, "
      "int groups, str activation, str algorithm) -> Tensor");
  // Gradients of conv2d w.r.t. (input, weight, bias), each on request (output_mask); one not asked
  // for (or of an absent bias) comes back empty. With an activation, the pre-activation z is
  // recomputed (one more forward) to form dz = grad_out·f'(z): nothing but the inputs is saved.
  m.def(
      "conv2d_backward(Tensor grad_out, Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
      "int[2] dilation, int groups, str activation, str algorithm, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // C = A @ B by the conv ladder's own packed GEMM (csrc/cpu/conv/gemm.h), for its tests and the
  // block-size sweep. blocking = [MC, KC, NC] overrides the cache blocking; [] uses the default.
  m.def("_gemm(Tensor a, Tensor b, int[] blocking) -> Tensor");
  // The machine's measured peak multiply-add throughput, in GFLOP/s, on `threads` threads: the
  // limit the benchmark's compute-bound rows are a percentage of (csrc/cpu/peak.cpp).
  m.def("_fma_peak_gflops(ScalarType dtype, int threads) -> float");
}

// `import minitorch_nn._C` needs a module init function; the ops are reached through torch.ops.
static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "minitorch_nn's compiled ops (see torch.ops.minitorch_nn)",
                                 -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
