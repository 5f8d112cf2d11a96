// Argument checks and small tensor helpers of the fused normalization + activation ops, shared by
// the CPU implementation (csrc/cpu/norm_act.cpp) and the CUDA glue (csrc/cuda/norm_act_ops.cpp),
// so both devices accept and reject the same inputs with the same messages.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <optional>
#include <utility>
#include <vector>

namespace minitorch_nn {

// float32, float64 and bfloat16. Other dtypes raise NotImplementedError, as torch's kernels do
// for a dtype they have no implementation for.
inline void check_input_dtype(const char* op, const at::Tensor& input) {
  const auto t = input.scalar_type();
  TORCH_CHECK_NOT_IMPLEMENTED(t == at::kFloat || t == at::kDouble || t == at::kBFloat16, op,
                              ": expected float32, float64 or bfloat16 input, got ", t);
}

// A parameter (γ, β, running statistics) has the input's dtype, or, for bfloat16 input, float32:
// torch's mixed-precision rule. Anything else is torch's "mixed dtype" RuntimeError.
inline void check_parameter_dtype(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input) {
  const auto acc = at::toOpMathType(input.scalar_type());
  TORCH_CHECK(t.scalar_type() == input.scalar_type() || t.scalar_type() == acc, op, ": mixed dtype: ", name,
              " has dtype ", t.scalar_type(), " but input has dtype ", input.scalar_type(), " (", name,
              " must be ", input.scalar_type(), acc != input.scalar_type() ? " or float32" : "", ")");
}

inline int64_t prod(at::IntArrayRef shape) {
  int64_t p = 1;
  for (auto s : shape) p *= s;
  return p;
}

inline void check_layer_norm_inputs(const at::Tensor& input, at::IntArrayRef normalized_shape,
                                    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(!normalized_shape.empty(), "layer_norm_act: normalized_shape must have at least one dim");
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  TORCH_CHECK(input.dim() >= k && input.sizes().slice(input.dim() - k).equals(normalized_shape),
              "layer_norm_act: input of shape ", input.sizes(), " does not end in normalized_shape ",
              normalized_shape);
  check_input_dtype("layer_norm_act", input);
  for (const auto* p : {&weight, &bias}) {
    if (p->has_value() && (*p)->defined()) {
      const auto& t = **p;
      const char* name = p == &weight ? "weight" : "bias";
      TORCH_CHECK(t.sizes().equals(normalized_shape), "layer_norm_act: expected ", name, " of shape ",
                  normalized_shape, ", got ", t.sizes());
      TORCH_CHECK(t.device() == input.device(), "layer_norm_act: ", name, " is on ", t.device(), " but input is on ",
                  input.device());
      check_parameter_dtype("layer_norm_act", name, t, input);
    }
  }
}

// γ and β as contiguous acc_t vectors of length N (ones and zeros when absent), so the kernels
// have one code path. N values: negligible next to the M·N of the input.
inline std::pair<at::Tensor, at::Tensor> affine_or_identity(const std::optional<at::Tensor>& weight,
                                                            const std::optional<at::Tensor>& bias, int64_t N,
                                                            at::ScalarType acc, const at::Tensor& like) {
  const auto opts = like.options().dtype(acc);
  at::Tensor w = weight.has_value() && weight->defined() ? weight->reshape({N}).to(acc).contiguous()
                                                         : at::ones({N}, opts);
  at::Tensor b = bias.has_value() && bias->defined() ? bias->reshape({N}).to(acc).contiguous() : at::zeros({N}, opts);
  return {w, b};
}

inline std::vector<int64_t> batch_shape(const at::Tensor& input, int64_t k) {
  return std::vector<int64_t>(input.sizes().begin(), input.sizes().end() - k);
}

// The input as the kernels read it: NCHW-contiguous, or channels_last-contiguous (2-D (B, C)
// input is both). Any other strides are copied into the nearer of the two.
inline at::Tensor bn_layout(const at::Tensor& x, bool* channels_last) {
  if (x.dim() == 2) {
    *channels_last = true;
    return x.contiguous();
  }
  if (x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    *channels_last = true;
    return x;
  }
  *channels_last = x.dim() == 4 && x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return x.contiguous(*channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

inline void check_batch_norm_inputs(
    const at::Tensor& input, std::initializer_list<std::pair<const char*, const std::optional<at::Tensor>*>> params) {
  TORCH_CHECK(input.dim() >= 2, "batch_norm_act: expected input with at least 2 dims (N, C, ...), got ", input.dim());
  check_input_dtype("batch_norm_act", input);
  const int64_t C = input.size(1);
  for (const auto& [name, p] : params) {
    if (p->has_value() && (*p)->defined()) {
      const auto& t = **p;
      TORCH_CHECK(t.dim() == 1 && t.size(0) == C, "batch_norm_act: expected ", name, " of shape [", C, "], got ",
                  t.sizes());
      TORCH_CHECK(t.device() == input.device(), "batch_norm_act: ", name, " is on ", t.device(), " but input is on ",
                  input.device());
      check_parameter_dtype("batch_norm_act", name, t, input);
    }
  }
}

}  // namespace minitorch_nn
