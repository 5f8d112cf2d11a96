// Torch glue of the CUDA fused normalization + activation ops: the kernels are in norm_act.cu.
//
// The op boundary (checks, layouts, outputs, empty inputs) is shared with the CPU ops:
// csrc/norm_act_checks.h plans each call. What is left here is CUDA's own: the device guard
// (set before the plan allocates), the current stream, the dtype dispatch, and raw pointers handed
// to a launcher whose returned error is checked. Compiled only in CUDA builds. (This file is
// norm_act_ops.cpp, not norm_act.cpp, because setuptools names objects after the source without
// its extension: norm_act.cpp and norm_act.cu would both build norm_act.o.)
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>

#include "../norm_act_checks.h"
#include "../ops.h"
#include "norm_act.h"

namespace minitorch_nn {
namespace {

// The CUDA type a launcher takes for an ATen scalar type (same bits).
template <typename T>
struct CudaScalar {
  using type = T;
};
template <>
struct CudaScalar<at::BFloat16> {
  using type = __nv_bfloat16;
};
template <>
struct CudaScalar<at::Half> {
  using type = __half;
};

template <typename scalar_t>
const typename CudaScalar<scalar_t>::type* cptr(const at::Tensor& t) {
  return reinterpret_cast<const typename CudaScalar<scalar_t>::type*>(t.const_data_ptr<scalar_t>());
}
template <typename scalar_t>
typename CudaScalar<scalar_t>::type* mptr(at::Tensor& t) {
  return reinterpret_cast<typename CudaScalar<scalar_t>::type*>(t.mutable_data_ptr<scalar_t>());
}

at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

// A tensor the kernel can write acc_t values into for `dst`: dst itself when it is contiguous
// acc_t, else a scratch tensor copied into dst afterwards (copy_into).
at::Tensor acc_target(const at::Tensor& dst, at::ScalarType acc) {
  return dst.scalar_type() == acc && dst.is_contiguous() ? dst : at::empty(dst.sizes(), dst.options().dtype(acc));
}
void copy_into(at::Tensor& dst, const at::Tensor& src) {
  if (!src.is_same(dst)) dst.copy_(src);
}

// ---------------------------------------------------------------------------------------------
// LayerNorm + activation

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_cuda(const at::Tensor& input_,
                                                                   at::IntArrayRef normalized_shape,
                                                                   const std::optional<at::Tensor>& weight,
                                                                   const std::optional<at::Tensor>& bias, double eps,
                                                                   c10::string_view activation) {
  const c10::cuda::OptionalCUDAGuard guard(input_.device());
  LayerNormActPlan p = plan_layer_norm_act(input_, normalized_shape, weight, bias, activation);
  if (p.done) return {p.out, p.mean, p.rstd};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, p.input.scalar_type(), "layer_norm_act_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    C10_CUDA_CHECK(cuda::layer_norm_act_forward(p.act, cptr<scalar_t>(p.input), p.w.const_data_ptr<acc_t>(),
                                                p.b.const_data_ptr<acc_t>(), mptr<scalar_t>(p.out),
                                                p.mean.mutable_data_ptr<acc_t>(), p.rstd.mutable_data_ptr<acc_t>(),
                                                p.M, p.N, eps, stream));
  });
  return {p.out, p.mean, p.rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& mean, const at::Tensor& rstd,
    at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const c10::cuda::OptionalCUDAGuard guard(input.device());
  LayerNormActBackwardPlan p =
      plan_layer_norm_act_backward(grad_out, input, mean, rstd, normalized_shape, weight, bias, activation, output_mask);
  if (p.done) return {p.grad_input, p.grad_weight, p.grad_bias};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, p.input.scalar_type(), "layer_norm_act_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using cuda_t = typename CudaScalar<scalar_t>::type;
    at::Tensor ws = workspace(cuda::layer_norm_act_backward_workspace_bytes<cuda_t>(p.M, p.N), p.input);
    C10_CUDA_CHECK(cuda::layer_norm_act_backward(
        p.act, cptr<scalar_t>(p.grad_out), cptr<scalar_t>(p.input), p.mean.const_data_ptr<acc_t>(),
        p.rstd.const_data_ptr<acc_t>(), p.w.const_data_ptr<acc_t>(), p.b.const_data_ptr<acc_t>(),
        p.need_dx ? mptr<scalar_t>(p.grad_input) : nullptr, p.need_dw ? mptr<scalar_t>(p.grad_weight) : nullptr,
        p.need_db ? mptr<scalar_t>(p.grad_bias) : nullptr, ws.mutable_data_ptr(), p.M, p.N, stream));
  });
  return {p.grad_input, p.grad_weight, p.grad_bias};
}

// ---------------------------------------------------------------------------------------------
// BatchNorm + activation

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_act_cuda(
    const at::Tensor& input_, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var, bool training,
    double momentum, double eps, c10::string_view activation) {
  const c10::cuda::OptionalCUDAGuard guard(input_.device());
  BatchNormActPlan p = plan_batch_norm_act(input_, weight, bias, running_mean, running_var, training, eps, activation);
  if (p.done) return p.returned();
  const Act act = p.act;
  const at::Tensor& input = p.input;
  const cuda::BNLayout s{p.B, p.C, p.S, p.channels_last};
  const auto acc = at::toOpMathType(input.scalar_type());
  const bool update = p.update;
  at::Tensor &out = p.out, &save_mean = p.save_mean, &save_rstd = p.save_rstd;
  at::Tensor &new_rm = p.new_running_mean, &new_rv = p.new_running_var;
  const at::Tensor &w = p.w, &b = p.b;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, input.scalar_type(), "batch_norm_act_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using cuda_t = typename CudaScalar<scalar_t>::type;
    if (training) {
      at::Tensor rm, rv, rm_out, rv_out;
      if (update) {
        rm = running_mean->to(acc).contiguous();
        rv = running_var->to(acc).contiguous();
        rm_out = acc_target(new_rm, acc);
        rv_out = acc_target(new_rv, acc);
      }
      at::Tensor ws = workspace(cuda::batch_norm_act_stats_workspace_bytes<cuda_t>(s), input);
      C10_CUDA_CHECK(cuda::batch_norm_act_stats(
          cptr<scalar_t>(input), s, update ? rm.const_data_ptr<acc_t>() : nullptr,
          update ? rv.const_data_ptr<acc_t>() : nullptr, momentum, eps, save_mean.mutable_data_ptr<acc_t>(),
          save_rstd.mutable_data_ptr<acc_t>(), update ? rm_out.mutable_data_ptr<acc_t>() : nullptr,
          update ? rv_out.mutable_data_ptr<acc_t>() : nullptr, ws.mutable_data_ptr(), stream));
      if (update) {
        copy_into(new_rm, rm_out);
        copy_into(new_rv, rv_out);
      }
    } else {
      save_mean.copy_(*running_mean);
      save_rstd.copy_(running_var->to(acc).add(eps).rsqrt());
    }
    C10_CUDA_CHECK(cuda::batch_norm_act_apply(act, cptr<scalar_t>(input), s, save_mean.const_data_ptr<acc_t>(),
                                              save_rstd.const_data_ptr<acc_t>(), w.const_data_ptr<acc_t>(),
                                              b.const_data_ptr<acc_t>(), mptr<scalar_t>(out), stream));
  });
  return p.returned();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_backward_cuda(
    const at::Tensor& grad_out_, const at::Tensor& input_, const at::Tensor& save_mean_, const at::Tensor& save_rstd_,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, bool training,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const c10::cuda::OptionalCUDAGuard guard(input_.device());
  BatchNormActBackwardPlan p =
      plan_batch_norm_act_backward(grad_out_, input_, save_mean_, save_rstd_, weight, bias, activation, output_mask);
  if (p.done) return p.returned();
  const Act act = p.act;
  const at::Tensor &input = p.input, &grad_out = p.grad_out, &save_mean = p.save_mean, &save_rstd = p.save_rstd;
  const cuda::BNLayout s{p.B, p.C, p.S, p.channels_last};
  const auto acc = at::toOpMathType(input.scalar_type());
  const bool need_dw = p.need_dw, need_db = p.need_db;
  at::Tensor &grad_input = p.grad_input, &grad_weight = p.grad_weight, &grad_bias = p.grad_bias;
  const at::Tensor &w = p.w, &b = p.b;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, input.scalar_type(), "batch_norm_act_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using cuda_t = typename CudaScalar<scalar_t>::type;
    at::Tensor dw = need_dw ? acc_target(grad_weight, acc) : at::Tensor();
    at::Tensor db = need_db ? acc_target(grad_bias, acc) : at::Tensor();
    at::Tensor ws = workspace(cuda::batch_norm_act_backward_workspace_bytes<cuda_t>(s), input);
    C10_CUDA_CHECK(cuda::batch_norm_act_backward(
        act, cptr<scalar_t>(grad_out), cptr<scalar_t>(input), s, save_mean.const_data_ptr<acc_t>(),
        save_rstd.const_data_ptr<acc_t>(), w.const_data_ptr<acc_t>(), b.const_data_ptr<acc_t>(), training,
        output_mask[0] ? mptr<scalar_t>(grad_input) : nullptr, need_dw ? dw.mutable_data_ptr<acc_t>() : nullptr,
        need_db ? db.mutable_data_ptr<acc_t>() : nullptr, ws.mutable_data_ptr(), stream));
    if (need_dw) copy_into(grad_weight, dw);
    if (need_db) copy_into(grad_bias, db);
  });
  return p.returned();
}

}  // namespace

TORCH_LIBRARY_IMPL(minitorch_nn, CUDA, m) {
  m.impl("layer_norm_act", &layer_norm_act_cuda);
  m.impl("layer_norm_act_backward", &layer_norm_act_backward_cuda);
  m.impl("batch_norm_act", &batch_norm_act_cuda);
  m.impl("batch_norm_act_backward", &batch_norm_act_backward_cuda);
}

}  // namespace minitorch_nn
