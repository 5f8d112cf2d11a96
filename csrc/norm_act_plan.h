// The op boundary of the fused normalization + activation ops, shared by the CPU implementation
// (csrc/cpu/norm_act.cpp) and the CUDA glue (csrc/cuda/norm_act_ops.cpp): argument checks, the
// layouts the kernels read, the outputs (shapes, dtypes, layouts) and what an empty input returns.
// Both devices accept and reject the same inputs with the same messages, and a device file is left
// with only its kernels' launch. The plan_* functions allocate on the input's device: a CUDA caller
// sets its device guard first.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bn_shape.h"
#include "huge_pages.h"
#include "op_checks.h"
#include "ops.h"

namespace minitorch_nn {

// float32, float64, bfloat16 and float16. Other dtypes raise NotImplementedError, as torch's
// kernels do for a dtype they have no implementation for.
inline void check_input_dtype(const char* op, const at::Tensor& input) {
  const auto t = input.scalar_type();
  TORCH_CHECK_NOT_IMPLEMENTED(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf, op,
                              ": expected float32, float64, bfloat16 or float16 input, got ", t);
}

// A parameter (γ, β, running statistics) has the input's dtype, or, for bfloat16 and float16
// input, float32:
// torch's mixed-precision rule. Anything else is torch's "mixed dtype" RuntimeError.
inline void check_parameter_dtype(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input) {
  const auto acc = at::toOpMathType(input.scalar_type());
  TORCH_CHECK(t.scalar_type() == input.scalar_type() || t.scalar_type() == acc, op, ": mixed dtype: ", name,
              " has dtype ", t.scalar_type(), " but input has dtype ", input.scalar_type(), " (", name,
              " must be ", input.scalar_type(), acc != input.scalar_type() ? " or float32" : "", ")");
}

// ... and, as torch's CPU kernels require, one dtype for all of them: with bfloat16 input, a
// bfloat16 weight beside a float32 bias (or running statistics) is torch's RuntimeError.
using NamedParams = std::initializer_list<std::pair<const char*, const std::optional<at::Tensor>*>>;

inline void check_parameter_dtypes_agree(const char* op, const at::Tensor& input, NamedParams params) {
  const char* first = nullptr;
  at::ScalarType dtype = input.scalar_type();
  for (const auto& [name, p] : params) {
    if (!present(*p)) continue;
    if (first == nullptr) {
      first = name;
      dtype = (*p)->scalar_type();
    }
    TORCH_CHECK((*p)->scalar_type() == dtype, op, ": mixed dtype: ", first, " has dtype ", dtype, " but ", name,
                " has dtype ", (*p)->scalar_type(), " (with ", input.scalar_type(),
                " input, the parameters must all be ", input.scalar_type(), " or all float32)");
  }
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
  for (const auto* p : {&weight, &bias}) {
    if (p->has_value() && (*p)->defined()) {
      const auto& t = **p;
      const char* name = p == &weight ? "weight" : "bias";
      TORCH_CHECK(t.sizes().equals(normalized_shape), "layer_norm_act: expected ", name, " of shape ",
                  normalized_shape, ", got ", t.sizes());
      check_same_device("layer_norm_act", name, t, input);
    }
  }
  // torch's order: the shapes, γ and β of one dtype, the input's dtype, then theirs against it.
  check_parameter_dtypes_agree("layer_norm_act", input, {{"weight", &weight}, {"bias", &bias}});
  check_input_dtype("layer_norm_act", input);
  if (present(weight)) check_parameter_dtype("layer_norm_act", "weight", *weight, input);
  if (present(bias)) check_parameter_dtype("layer_norm_act", "bias", *bias, input);
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

inline void check_batch_norm_inputs(const at::Tensor& input, NamedParams params) {
  TORCH_CHECK(input.dim() >= 2, "batch_norm_act: expected input with at least 2 dims (N, C, ...), got ", input.dim());
  const int64_t C = input.size(1);
  // torch's order: the parameters' sizes, their agreeing on one dtype, the input's dtype, then
  // the parameters' dtypes against it.
  for (const auto& [name, p] : params) {
    if (p->has_value() && (*p)->defined()) {
      const auto& t = **p;
      TORCH_CHECK(t.dim() == 1 && t.size(0) == C, "batch_norm_act: expected ", name, " of shape [", C, "], got ",
                  t.sizes());
      check_same_device("batch_norm_act", name, t, input);
    }
  }
  check_parameter_dtypes_agree("batch_norm_act", input, params);
  check_input_dtype("batch_norm_act", input);
  for (const auto& [name, p] : params) {
    if (present(*p)) check_parameter_dtype("batch_norm_act", name, **p, input);
  }
}




inline void check_grad_out(const char* op, const at::Tensor& grad_out, const at::Tensor& input) {
  TORCH_CHECK(grad_out.sizes().equals(input.sizes()), op, ": grad_out of shape ", grad_out.sizes(),
              " does not match input of shape ", input.sizes());
  TORCH_CHECK(grad_out.scalar_type() == input.scalar_type(), op, ": grad_out has dtype ", grad_out.scalar_type(),
              " but input has dtype ", input.scalar_type());
  check_same_device(op, "grad_out", grad_out, input);
}

// The saved statistics a backward gets: `count` values of the accumulation type, on input's device.
inline void check_saved_stats(const char* op, const char* forward, const at::Tensor& a, const at::Tensor& b,
                              int64_t count, const at::Tensor& input) {
  const auto acc = at::toOpMathType(input.scalar_type());
  TORCH_CHECK(a.numel() == count && b.numel() == count && a.scalar_type() == acc && b.scalar_type() == acc, op,
              ": the saved statistics must be the ", count, " ", acc, " values returned by ", forward);
  check_same_device(op, "the saved statistics", a, input);
  check_same_device(op, "the saved statistics", b, input);
}

// ---------------------------------------------------------------------------------------------
// LayerNorm + activation: M rows of N values.

struct LayerNormActPlan {
  Act act;
  at::Tensor input, out, mean, rstd;  // input contiguous; mean, rstd of the batch shape, acc dtype
  at::Tensor w, b;                    // γ, β as acc vectors of N (ones, zeros when absent); undefined if done
  int64_t M, N;
  bool done;  // nothing to compute: the outputs are final
};

inline LayerNormActPlan plan_layer_norm_act(const at::Tensor& input_, at::IntArrayRef normalized_shape,
                                            const std::optional<at::Tensor>& weight,
                                            const std::optional<at::Tensor>& bias, c10::string_view activation) {
  check_layer_norm_inputs(input_, normalized_shape, weight, bias);
  LayerNormActPlan p;
  p.act = parse_activation(std::string(activation));
  p.input = input_.contiguous();
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  p.N = prod(normalized_shape);
  p.M = prod(p.input.sizes().slice(0, p.input.dim() - k));
  const auto acc_opts = p.input.options().dtype(at::toOpMathType(p.input.scalar_type()));
  p.out = huge_pages(at::empty(p.input.sizes(), p.input.options()));
  p.mean = at::empty(batch_shape(p.input, k), acc_opts);
  p.rstd = at::empty(batch_shape(p.input, k), acc_opts);
  p.done = p.M == 0 || p.N == 0;
  if (p.done) {
    // No rows, or empty rows: the mean of nothing is NaN, as torch's layer_norm reports it.
    p.mean.fill_(NAN);
    p.rstd.fill_(NAN);
    return p;
  }
  std::tie(p.w, p.b) = affine_or_identity(weight, bias, p.N, at::toOpMathType(p.input.scalar_type()), p.input);
  return p;
}

// The rungs of the LayerNorm+act ladder an op variant runs (csrc/cpu/ln_ladder.cpp, csrc/cuda/ln_ladder.cu);
// rung 4 is the production op, layer_norm_act itself.
inline void check_ladder_rung(const char* op, int64_t rung) {
  TORCH_CHECK_VALUE(rung >= 1 && rung <= 3, op, ": rung must be 1, 2 or 3 (rung 4 is layer_norm_act itself), got ",
                    rung);
}

struct LayerNormActBackwardPlan {
  Act act;
  at::Tensor grad_out, input, mean, rstd, w, b;  // contiguous
  at::Tensor grad_input, grad_weight, grad_bias;  // an unwanted (or absent) gradient is empty
  bool need_dx, need_dw, need_db;
  int64_t M, N;
  bool done;
};

inline LayerNormActBackwardPlan plan_layer_norm_act_backward(
    const at::Tensor& grad_out_, const at::Tensor& input_, const at::Tensor& mean_, const at::Tensor& rstd_,
    at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  constexpr const char* op = "layer_norm_act_backward";
  check_layer_norm_inputs(input_, normalized_shape, weight, bias);
  check_grad_out(op, grad_out_, input_);
  LayerNormActBackwardPlan p;
  p.act = parse_activation(std::string(activation));
  p.input = input_.contiguous();
  p.grad_out = grad_out_.contiguous();
  p.N = prod(normalized_shape);
  p.M = prod(p.input.sizes().slice(0, p.input.dim() - static_cast<int64_t>(normalized_shape.size())));
  check_saved_stats(op, "layer_norm_act", mean_, rstd_, p.M, input_);
  p.mean = mean_.contiguous();
  p.rstd = rstd_.contiguous();
  p.need_dx = output_mask[0];
  p.need_dw = output_mask[1] && present(weight);
  p.need_db = output_mask[2] && present(bias);
  const auto opts = p.input.options();
  p.grad_input = p.need_dx ? huge_pages(at::empty(p.input.sizes(), opts)) : at::empty({0}, opts);
  p.grad_weight = p.need_dw ? at::zeros(normalized_shape, opts) : at::empty({0}, opts);
  p.grad_bias = p.need_db ? at::zeros(normalized_shape, opts) : at::empty({0}, opts);
  p.done = p.M == 0 || p.N == 0 || !(p.need_dx || p.need_dw || p.need_db);
  if (!p.done) std::tie(p.w, p.b) = affine_or_identity(weight, bias, p.N, at::toOpMathType(p.input.scalar_type()), p.input);
  return p;
}

// ---------------------------------------------------------------------------------------------
// BatchNorm + activation: C channels, each of R = B·S values.

// (B, C, S): batch, channels, and spatial positions per sample (1 for (B, C) input).
inline std::tuple<int64_t, int64_t, int64_t> bn_dims(const at::Tensor& x) {
  return {x.size(0), x.size(1), prod(x.sizes().slice(2))};
}

struct BatchNormActPlan {
  Act act;
  at::Tensor input;  // NCHW-contiguous, or channels_last-contiguous when channels_last
  bool channels_last;
  int64_t B, C, S;
  BNShape shape() const { return {B, C, S, channels_last}; }
  at::Tensor result;  // the output, in the input's layout (torch's preserve_format)
  at::Tensor out;     // where the kernel writes: result, or (other layouts) a temporary copied into it
  at::Tensor save_mean, save_rstd, new_running_mean, new_running_var;
  bool update;  // training with running statistics: new_running_* are to be computed
  at::Tensor w, b;
  bool done;
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> returned() {
    if (!out.is_same(result)) result.copy_(out);
    return {result, save_mean, save_rstd, new_running_mean, new_running_var};
  }
};

inline BatchNormActPlan plan_batch_norm_act(const at::Tensor& input_, const std::optional<at::Tensor>& weight,
                                            const std::optional<at::Tensor>& bias,
                                            const std::optional<at::Tensor>& running_mean,
                                            const std::optional<at::Tensor>& running_var, bool training, double eps,
                                            c10::string_view activation) {
  check_batch_norm_inputs(input_, {{"weight", &weight},
                                   {"bias", &bias},
                                   {"running_mean", &running_mean},
                                   {"running_var", &running_var}});
  BatchNormActPlan p;
  p.act = parse_activation(std::string(activation));
  const bool has_rm = present(running_mean), has_rv = present(running_var);
  TORCH_CHECK_VALUE(has_rm == has_rv, "running_mean and running_var must either both be None or neither be None");
  TORCH_CHECK(training || has_rm, "batch_norm_act: running_mean and running_var are required in eval mode");
  p.input = bn_layout(input_, &p.channels_last);
  std::tie(p.B, p.C, p.S) = bn_dims(p.input);
  const int64_t R = p.B * p.S;
  const auto acc = at::toOpMathType(p.input.scalar_type());
  const auto acc_opts = p.input.options().dtype(acc);
  p.result = huge_pages(at::empty_like(input_));
  p.out = p.result.strides() == p.input.strides() ? p.result : at::empty_like(p.input);
  p.save_mean = at::empty({p.C}, acc_opts);
  p.save_rstd = at::empty({p.C}, acc_opts);
  p.update = training && has_rm;
  p.new_running_mean = p.update ? at::empty({p.C}, running_mean->options()) : at::empty({0}, acc_opts);
  p.new_running_var = p.update ? at::empty({p.C}, running_var->options()) : at::empty({0}, acc_opts);
  // One value per channel has no variance to normalize by (torch raises ValueError for it too).
  TORCH_CHECK_VALUE(!training || R != 1, "Expected more than 1 value per channel when training, got input size ",
                    input_.sizes());
  p.done = p.C == 0 || R == 0;
  if (!training) {
    // Eval: the running statistics normalize, on every device (the kernels only apply them).
    p.save_mean.copy_(*running_mean);
    p.save_rstd.copy_(running_var->to(acc).add(eps).rsqrt());
  } else if (R == 0 && p.C > 0) {
    // Training on an empty batch: nothing to normalize; NaN statistics (the mean of nothing),
    // running statistics unchanged.
    p.save_mean.fill_(NAN);
    p.save_rstd.fill_(NAN);
    if (p.update) {
      p.new_running_mean.copy_(*running_mean);
      p.new_running_var.copy_(*running_var);
    }
  }
  if (!p.done) std::tie(p.w, p.b) = affine_or_identity(weight, bias, p.C, acc, p.input);
  return p;
}

struct BatchNormActBackwardPlan {
  Act act;
  at::Tensor input, grad_out;  // in the same kernel layout
  bool channels_last;
  int64_t B, C, S;
  BNShape shape() const { return {B, C, S, channels_last}; }
  at::Tensor save_mean, save_rstd, w, b;
  bool need_dx, need_dw, need_db;
  at::Tensor result;      // grad_input in the input's layout (empty if not wanted)
  at::Tensor grad_input;  // where the kernel writes it
  at::Tensor grad_weight, grad_bias;
  bool done;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> returned() {
    if (need_dx && !grad_input.is_same(result)) result.copy_(grad_input);
    return {result, grad_weight, grad_bias};
  }
};

inline BatchNormActBackwardPlan plan_batch_norm_act_backward(
    const at::Tensor& grad_out_, const at::Tensor& input_, const at::Tensor& save_mean_, const at::Tensor& save_rstd_,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, c10::string_view activation,
    std::array<bool, 3> output_mask) {
  constexpr const char* op = "batch_norm_act_backward";
  check_batch_norm_inputs(input_, {{"weight", &weight}, {"bias", &bias}});
  check_grad_out(op, grad_out_, input_);
  BatchNormActBackwardPlan p;
  p.act = parse_activation(std::string(activation));
  p.input = bn_layout(input_, &p.channels_last);
  // grad_out in the same layout as input, so one index walks both.
  p.grad_out = grad_out_.contiguous(p.channels_last && p.input.dim() == 4 ? at::MemoryFormat::ChannelsLast
                                                                            : at::MemoryFormat::Contiguous);
  std::tie(p.B, p.C, p.S) = bn_dims(p.input);
  check_saved_stats(op, "batch_norm_act", save_mean_, save_rstd_, p.C, input_);
  p.save_mean = save_mean_.contiguous();
  p.save_rstd = save_rstd_.contiguous();
  p.need_dx = output_mask[0];
  p.need_dw = output_mask[1] && present(weight);
  p.need_db = output_mask[2] && present(bias);
  const auto opts = p.input.options();
  // grad_input in the input's layout, like the forward's output.
  p.result = p.need_dx ? huge_pages(at::empty_like(input_)) : at::empty({0}, opts);
  p.grad_input = !p.need_dx || p.result.strides() == p.input.strides() ? p.result : at::empty_like(p.input);
  p.grad_weight = p.need_dw ? at::zeros({p.C}, weight->options()) : at::empty({0}, opts);
  p.grad_bias = p.need_db ? at::zeros({p.C}, bias->options()) : at::empty({0}, opts);
  p.done = p.C == 0 || p.B * p.S == 0;
  if (!p.done) std::tie(p.w, p.b) = affine_or_identity(weight, bias, p.C, at::toOpMathType(p.input.scalar_type()), p.input);
  return p;
}

}  // namespace minitorch_nn
