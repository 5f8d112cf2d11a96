// The torch-facing CUDA ops of the fused normalization + activation family, written once for every
// place the kernels run: a GPU (norm_act_ops.cpp) and the CUDA emulator on the CPU
// (csrc/emu/emu_ops.cpp).
//
// The op boundary (checks, layouts, outputs, empty inputs) is shared with the CPU ops:
// csrc/norm_act_plan.h plans each call. What is left here is CUDA's own: the dtype dispatch, the
// workspaces, and raw pointers handed to a launcher whose returned error is checked. What differs
// between a GPU and the emulator is the device policy `Dev` (see torch_glue.h).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <array>
#include <optional>
#include <tuple>

#include "../norm_act_plan.h"
#include "../ops.h"
#include "norm_act.h"
#include "torch_glue.h"

namespace minitorch_nn {
namespace cuda_ops {

// A tensor the kernel can write acc_t values into for `dst`: dst itself when it is contiguous
// acc_t, else a scratch tensor copied into dst afterwards (copy_into).
inline at::Tensor acc_target(const at::Tensor& dst, at::ScalarType acc) {
  return dst.scalar_type() == acc && dst.is_contiguous() ? dst : at::empty(dst.sizes(), dst.options().dtype(acc));
}
inline void copy_into(at::Tensor& dst, const at::Tensor& src) {
  if (!src.is_same(dst)) dst.copy_(src);
}

// ---------------------------------------------------------------------------------------------
// LayerNorm + activation

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act(const at::Tensor& input_,
                                                              at::IntArrayRef normalized_shape,
                                                              const std::optional<at::Tensor>& weight,
                                                              const std::optional<at::Tensor>& bias, double eps,
                                                              c10::string_view activation) {
  const auto guard = Dev::guard(input_);
  LayerNormActPlan p = plan_layer_norm_act(input_, normalized_shape, weight, bias, activation);
  if (p.done) return {p.out, p.mean, p.rstd};
  for (at::Tensor* t : {&p.out, &p.mean, &p.rstd}) Dev::poison(*t);
  const cudaStream_t stream = Dev::stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, p.input.scalar_type(), "layer_norm_act_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    Dev::check(cuda::layer_norm_act_forward(p.act, cptr<scalar_t>(p.input), p.w.const_data_ptr<acc_t>(),
                                            p.b.const_data_ptr<acc_t>(), mptr<scalar_t>(p.out),
                                            p.mean.mutable_data_ptr<acc_t>(), p.rstd.mutable_data_ptr<acc_t>(), p.M,
                                            p.N, eps, stream));
  });
  return {p.out, p.mean, p.rstd};
}

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean, const at::Tensor& rstd,
    at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const auto guard = Dev::guard(input);
  LayerNormActBackwardPlan p =
      plan_layer_norm_act_backward(grad_out, input, mean, rstd, normalized_shape, weight, bias, activation, output_mask);
  if (p.done) return {p.grad_input, p.grad_weight, p.grad_bias};
  for (at::Tensor* t : {&p.grad_input, &p.grad_weight, &p.grad_bias}) Dev::poison(*t);
  const cudaStream_t stream = Dev::stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, p.input.scalar_type(), "layer_norm_act_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using cuda_t = typename CudaScalar<scalar_t>::type;
    at::Tensor ws = workspace<Dev>(cuda::layer_norm_act_backward_workspace_bytes<cuda_t>(p.M, p.N), p.input);
    Dev::check(cuda::layer_norm_act_backward(
        p.act, cptr<scalar_t>(p.grad_out), cptr<scalar_t>(p.input), p.mean.const_data_ptr<acc_t>(),
        p.rstd.const_data_ptr<acc_t>(), p.w.const_data_ptr<acc_t>(), p.b.const_data_ptr<acc_t>(),
        p.need_dx ? mptr<scalar_t>(p.grad_input) : nullptr, p.need_dw ? mptr<scalar_t>(p.grad_weight) : nullptr,
        p.need_db ? mptr<scalar_t>(p.grad_bias) : nullptr, ws.mutable_data_ptr(), p.M, p.N, stream));
  });
  return {p.grad_input, p.grad_weight, p.grad_bias};
}

// ---------------------------------------------------------------------------------------------
// BatchNorm + activation

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_act(
    const at::Tensor& input_, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var, bool training,
    double momentum, double eps, c10::string_view activation) {
  const auto guard = Dev::guard(input_);
  BatchNormActPlan p = plan_batch_norm_act(input_, weight, bias, running_mean, running_var, training, eps, activation);
  if (p.done) return p.returned();
  const at::Tensor& input = p.input;
  const BNShape s = p.shape();
  const auto acc = at::toOpMathType(input.scalar_type());
  Dev::poison(p.out);
  const cudaStream_t stream = Dev::stream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "batch_norm_act_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using cuda_t = typename CudaScalar<scalar_t>::type;
    if (training) {
      at::Tensor rm, rv, rm_out, rv_out;
      if (p.update) {
        rm = running_mean->to(acc).contiguous();
        rv = running_var->to(acc).contiguous();
        rm_out = acc_target(p.new_running_mean, acc);
        rv_out = acc_target(p.new_running_var, acc);
        Dev::poison(rm_out);
        Dev::poison(rv_out);
      }
      Dev::poison(p.save_mean);
      Dev::poison(p.save_rstd);
      at::Tensor ws = workspace<Dev>(cuda::batch_norm_act_stats_workspace_bytes<cuda_t>(s), input);
      Dev::check(cuda::batch_norm_act_stats(
          cptr<scalar_t>(input), s, p.update ? rm.const_data_ptr<acc_t>() : nullptr,
          p.update ? rv.const_data_ptr<acc_t>() : nullptr, momentum, eps, p.save_mean.mutable_data_ptr<acc_t>(),
          p.save_rstd.mutable_data_ptr<acc_t>(), p.update ? rm_out.mutable_data_ptr<acc_t>() : nullptr,
          p.update ? rv_out.mutable_data_ptr<acc_t>() : nullptr, ws.mutable_data_ptr(), stream));
      if (p.update) {
        copy_into(p.new_running_mean, rm_out);
        copy_into(p.new_running_var, rv_out);
      }
    }  // (in eval, the plan has set save_mean and save_rstd from the running statistics)
    Dev::check(cuda::batch_norm_act_apply(p.act, cptr<scalar_t>(input), s, p.save_mean.const_data_ptr<acc_t>(),
                                          p.save_rstd.const_data_ptr<acc_t>(), p.w.const_data_ptr<acc_t>(),
                                          p.b.const_data_ptr<acc_t>(), mptr<scalar_t>(p.out), stream));
  });
  return p.returned();
}

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_backward(
    const at::Tensor& grad_out_, const at::Tensor& input_, const at::Tensor& save_mean_, const at::Tensor& save_rstd_,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, bool training,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const auto guard = Dev::guard(input_);
  BatchNormActBackwardPlan p =
      plan_batch_norm_act_backward(grad_out_, input_, save_mean_, save_rstd_, weight, bias, activation, output_mask);
  if (p.done) return p.returned();
  const at::Tensor& input = p.input;
  const BNShape s = p.shape();
  const auto acc = at::toOpMathType(input.scalar_type());
  if (output_mask[0]) Dev::poison(p.grad_input);
  const cudaStream_t stream = Dev::stream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "batch_norm_act_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using cuda_t = typename CudaScalar<scalar_t>::type;
    at::Tensor dw = p.need_dw ? acc_target(p.grad_weight, acc) : at::Tensor();
    at::Tensor db = p.need_db ? acc_target(p.grad_bias, acc) : at::Tensor();
    if (p.need_dw) Dev::poison(dw);
    if (p.need_db) Dev::poison(db);
    at::Tensor ws = workspace<Dev>(cuda::batch_norm_act_backward_workspace_bytes<cuda_t>(s), input);
    Dev::check(cuda::batch_norm_act_backward(
        p.act, cptr<scalar_t>(p.grad_out), cptr<scalar_t>(input), s, p.save_mean.const_data_ptr<acc_t>(),
        p.save_rstd.const_data_ptr<acc_t>(), p.w.const_data_ptr<acc_t>(), p.b.const_data_ptr<acc_t>(), training,
        output_mask[0] ? mptr<scalar_t>(p.grad_input) : nullptr, p.need_dw ? dw.mutable_data_ptr<acc_t>() : nullptr,
        p.need_db ? db.mutable_data_ptr<acc_t>() : nullptr, ws.mutable_data_ptr(), stream));
    if (p.need_dw) copy_into(p.grad_weight, dw);
    if (p.need_db) copy_into(p.grad_bias, db);
  });
  return p.returned();
}

}  // namespace cuda_ops
}  // namespace minitorch_nn
