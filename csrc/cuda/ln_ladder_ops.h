// The torch-facing CUDA ops of the LayerNorm+act kernel ladder (rungs 1-3 of ln_ladder.cu), written
// once for a GPU (ln_ladder_ops.cpp) and the CUDA emulator (csrc/emu/emu_ops.cpp), as norm_act_ops.h
// writes the production ops (rung 4): the shared plan (norm_act_plan.h: checks, outputs, empty
// inputs), then the dtype dispatch, a workspace and the launch, its error checked by the device policy.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

#include "../norm_act_plan.h"
#include "ln_ladder.h"
#include "torch_glue.h"

namespace minitorch_nn {
namespace cuda_ops {

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_ladder(const at::Tensor& input,
                                                                     at::IntArrayRef normalized_shape,
                                                                     const std::optional<at::Tensor>& weight,
                                                                     const std::optional<at::Tensor>& bias, double eps,
                                                                     c10::string_view activation, int64_t rung) {
  check_ladder_rung("layer_norm_act_ladder", rung);
  const auto guard = Dev::guard(input);
  LayerNormActPlan p = plan_layer_norm_act(input, normalized_shape, weight, bias, activation);
  if (p.done) return {p.out, p.mean, p.rstd};
  for (at::Tensor* t : {&p.out, &p.mean, &p.rstd}) Dev::poison(*t);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, p.input.scalar_type(), "layer_norm_act_ladder_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    Dev::check(cuda::ln_ladder_forward(static_cast<int>(rung), p.act, cptr<scalar_t>(p.input),
                                       p.w.const_data_ptr<acc_t>(), p.b.const_data_ptr<acc_t>(), mptr<scalar_t>(p.out),
                                       p.mean.mutable_data_ptr<acc_t>(), p.rstd.mutable_data_ptr<acc_t>(), p.M, p.N,
                                       eps, Dev::stream()));
  });
  return {p.out, p.mean, p.rstd};
}

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_ladder_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean, const at::Tensor& rstd,
    at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    c10::string_view activation, std::array<bool, 3> output_mask, int64_t rung) {
  check_ladder_rung("layer_norm_act_ladder_backward", rung);
  const auto guard = Dev::guard(input);
  LayerNormActBackwardPlan p =
      plan_layer_norm_act_backward(grad_out, input, mean, rstd, normalized_shape, weight, bias, activation, output_mask);
  if (p.done) return {p.grad_input, p.grad_weight, p.grad_bias};
  for (at::Tensor* t : {&p.grad_input, &p.grad_weight, &p.grad_bias}) Dev::poison(*t);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, p.input.scalar_type(), "layer_norm_act_ladder_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using cuda_t = typename CudaScalar<scalar_t>::type;
    const int r = static_cast<int>(rung);
    at::Tensor ws = workspace<Dev>(cuda::ln_ladder_backward_workspace_bytes<cuda_t>(r, p.M, p.N), p.input);
    Dev::check(cuda::ln_ladder_backward(
        r, p.act, cptr<scalar_t>(p.grad_out), cptr<scalar_t>(p.input), p.mean.const_data_ptr<acc_t>(),
        p.rstd.const_data_ptr<acc_t>(), p.w.const_data_ptr<acc_t>(), p.b.const_data_ptr<acc_t>(),
        p.need_dx ? mptr<scalar_t>(p.grad_input) : nullptr, p.need_dw ? mptr<scalar_t>(p.grad_weight) : nullptr,
        p.need_db ? mptr<scalar_t>(p.grad_bias) : nullptr, ws.mutable_data_ptr(), p.M, p.N, Dev::stream()));
  });
  return {p.grad_input, p.grad_weight, p.grad_bias};
}

}  // namespace cuda_ops
}  // namespace minitorch_nn
