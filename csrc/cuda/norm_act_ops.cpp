// Torch glue of the CUDA fused normalization + activation ops: the kernels are in norm_act.cu.
//
// Each function mirrors its CPU twin in csrc/cpu/norm_act.cpp line for line (same checks, from
// csrc/norm_act_checks.h, same output shapes, dtypes and layouts, same empty-tensor and
// output_mask behaviour), then sets the device, takes the current stream, dispatches on dtype
// and hands raw pointers to a launcher, checking the error it returns. Compiled only in CUDA builds
// (this file is named norm_act_ops.cpp, not norm_act.cpp, because setuptools names objects after
// the source without its extension: norm_act.cpp and norm_act.cu would both build norm_act.o).
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

void check_cuda(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
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
  check_layer_norm_inputs(input_, normalized_shape, weight, bias);
  const Act act = parse_activation(std::string(activation));
  const c10::cuda::OptionalCUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous();
  const int64_t N = prod(normalized_shape);
  const int64_t M = prod(input.sizes().slice(0, input.dim() - static_cast<int64_t>(normalized_shape.size())));
  const auto acc = at::toOpMathType(input.scalar_type());
  at::Tensor out = at::empty(input.sizes(), input.options());
  const auto stat_shape = batch_shape(input, static_cast<int64_t>(normalized_shape.size()));
  at::Tensor mean = at::empty(stat_shape, input.options().dtype(acc));
  at::Tensor rstd = at::empty(stat_shape, input.options().dtype(acc));
  if (M == 0 || N == 0) {
    // No rows, or empty rows: the mean of nothing is NaN, as torch's layer_norm reports it.
    mean.fill_(NAN);
    rstd.fill_(NAN);
    return {out, mean, rstd};
  }
  auto [w, b] = affine_or_identity(weight, bias, N, acc, input);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, input.scalar_type(), "layer_norm_act_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    C10_CUDA_CHECK(cuda::layer_norm_act_forward(act, cptr<scalar_t>(input), w.const_data_ptr<acc_t>(),
                                                b.const_data_ptr<acc_t>(), mptr<scalar_t>(out),
                                                mean.mutable_data_ptr<acc_t>(), rstd.mutable_data_ptr<acc_t>(), M, N,
                                                eps, stream));
  });
  return {out, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_backward_cuda(
    const at::Tensor& grad_out_, const at::Tensor& input_, const at::Tensor& mean_, const at::Tensor& rstd_,
    at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  check_layer_norm_inputs(input_, normalized_shape, weight, bias);
  TORCH_CHECK(grad_out_.sizes().equals(input_.sizes()), "layer_norm_act_backward: grad_out of shape ",
              grad_out_.sizes(), " does not match input of shape ", input_.sizes());
  TORCH_CHECK(grad_out_.scalar_type() == input_.scalar_type(), "layer_norm_act_backward: grad_out has dtype ",
              grad_out_.scalar_type(), " but input has dtype ", input_.scalar_type());
  check_cuda("layer_norm_act_backward", "grad_out", grad_out_, input_);
  check_cuda("layer_norm_act_backward", "mean", mean_, input_);
  check_cuda("layer_norm_act_backward", "rstd", rstd_, input_);
  const Act act = parse_activation(std::string(activation));
  const c10::cuda::OptionalCUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous(), grad_out = grad_out_.contiguous();
  const int64_t N = prod(normalized_shape);
  const int64_t M = prod(input.sizes().slice(0, input.dim() - static_cast<int64_t>(normalized_shape.size())));
  const auto acc = at::toOpMathType(input.scalar_type());
  TORCH_CHECK(mean_.numel() == M && rstd_.numel() == M && mean_.scalar_type() == acc && rstd_.scalar_type() == acc,
              "layer_norm_act_backward: mean and rstd must be the ", M, " ", acc,
              " statistics saved by layer_norm_act");
  const at::Tensor mean = mean_.contiguous(), rstd = rstd_.contiguous();
  const bool has_w = weight.has_value() && weight->defined(), has_b = bias.has_value() && bias->defined();
  const bool need_dw = output_mask[1] && has_w, need_db = output_mask[2] && has_b;

  at::Tensor grad_input = output_mask[0] ? at::empty(input.sizes(), input.options()) : at::empty({0}, input.options());
  at::Tensor grad_weight = need_dw ? at::zeros(normalized_shape, input.options()) : at::empty({0}, input.options());
  at::Tensor grad_bias = need_db ? at::zeros(normalized_shape, input.options()) : at::empty({0}, input.options());
  if (M == 0 || N == 0 || !(output_mask[0] || need_dw || need_db)) return {grad_input, grad_weight, grad_bias};

  auto [w, b] = affine_or_identity(weight, bias, N, acc, input);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, input.scalar_type(), "layer_norm_act_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using cuda_t = typename CudaScalar<scalar_t>::type;
    at::Tensor ws = workspace(cuda::layer_norm_act_backward_workspace_bytes<cuda_t>(M, N), input);
    C10_CUDA_CHECK(cuda::layer_norm_act_backward(
        act, cptr<scalar_t>(grad_out), cptr<scalar_t>(input), mean.const_data_ptr<acc_t>(),
        rstd.const_data_ptr<acc_t>(), w.const_data_ptr<acc_t>(), b.const_data_ptr<acc_t>(),
        output_mask[0] ? mptr<scalar_t>(grad_input) : nullptr, need_dw ? mptr<scalar_t>(grad_weight) : nullptr,
        need_db ? mptr<scalar_t>(grad_bias) : nullptr, ws.mutable_data_ptr(), M, N, stream));
  });
  return {grad_input, grad_weight, grad_bias};
}

// ---------------------------------------------------------------------------------------------
// BatchNorm + activation

cuda::BNLayout bn_shape(const at::Tensor& x, bool channels_last) {
  cuda::BNLayout s{x.size(0), x.size(1), 1, channels_last};
  for (int64_t d = 2; d < x.dim(); ++d) s.S *= x.size(d);
  return s;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_act_cuda(
    const at::Tensor& input_, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var, bool training,
    double momentum, double eps, c10::string_view activation) {
  check_batch_norm_inputs(input_, {{"weight", &weight},
                                   {"bias", &bias},
                                   {"running_mean", &running_mean},
                                   {"running_var", &running_var}});
  const Act act = parse_activation(std::string(activation));
  const bool has_rm = running_mean.has_value() && running_mean->defined();
  const bool has_rv = running_var.has_value() && running_var->defined();
  TORCH_CHECK_VALUE(has_rm == has_rv, "running_mean and running_var must either both be None or neither be None");
  TORCH_CHECK(training || has_rm, "batch_norm_act: running_mean and running_var are required in eval mode");
  const c10::cuda::OptionalCUDAGuard guard(input_.device());
  bool cl = false;
  const at::Tensor input = bn_layout(input_, &cl);
  const cuda::BNLayout s = bn_shape(input, cl);
  const int64_t C = s.C, R = s.B * s.S;
  const auto acc = at::toOpMathType(input.scalar_type());
  const auto acc_opts = input.options().dtype(acc);
  // The output has the input's layout (torch's preserve_format); the kernels write NCHW or
  // channels_last, so any other layout (rare: a permuted dense input) is written then copied.
  at::Tensor result = at::empty_like(input_);
  at::Tensor out = result.strides() == input.strides() ? result : at::empty_like(input);
  at::Tensor save_mean = at::empty({C}, acc_opts), save_rstd = at::empty({C}, acc_opts);
  // Updated running statistics (training with running buffers only), in the buffers' dtype.
  const bool update = training && has_rm;
  at::Tensor new_rm = update ? at::empty({C}, running_mean->options()) : at::empty({0}, acc_opts);
  at::Tensor new_rv = update ? at::empty({C}, running_var->options()) : at::empty({0}, acc_opts);
  // One value per channel has no variance to normalize by (torch raises ValueError for it too).
  TORCH_CHECK_VALUE(!training || R != 1, "Expected more than 1 value per channel when training, got input size ",
                    input_.sizes());
  if (C == 0) return {result, save_mean, save_rstd, new_rm, new_rv};
  if (R == 0) {
    // Nothing to normalize. Training on an empty batch: NaN statistics (the mean of nothing),
    // running statistics unchanged; eval: the running statistics.
    if (training) {
      save_mean.fill_(NAN);
      save_rstd.fill_(NAN);
      if (update) {
        new_rm.copy_(*running_mean);
        new_rv.copy_(*running_var);
      }
    } else {
      save_mean.copy_(*running_mean);
      save_rstd.copy_(running_var->to(acc).add(eps).rsqrt());
    }
    return {result, save_mean, save_rstd, new_rm, new_rv};
  }
  auto [w, b] = affine_or_identity(weight, bias, C, acc, input);
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
  if (!out.is_same(result)) result.copy_(out);
  return {result, save_mean, save_rstd, new_rm, new_rv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_backward_cuda(
    const at::Tensor& grad_out_, const at::Tensor& input_, const at::Tensor& save_mean_, const at::Tensor& save_rstd_,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, bool training,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  check_batch_norm_inputs(input_, {{"weight", &weight}, {"bias", &bias}});
  TORCH_CHECK(grad_out_.sizes().equals(input_.sizes()), "batch_norm_act_backward: grad_out of shape ",
              grad_out_.sizes(), " does not match input of shape ", input_.sizes());
  TORCH_CHECK(grad_out_.scalar_type() == input_.scalar_type(), "batch_norm_act_backward: grad_out has dtype ",
              grad_out_.scalar_type(), " but input has dtype ", input_.scalar_type());
  check_cuda("batch_norm_act_backward", "grad_out", grad_out_, input_);
  check_cuda("batch_norm_act_backward", "save_mean", save_mean_, input_);
  check_cuda("batch_norm_act_backward", "save_rstd", save_rstd_, input_);
  const Act act = parse_activation(std::string(activation));
  const c10::cuda::OptionalCUDAGuard guard(input_.device());
  bool cl = false;
  const at::Tensor input = bn_layout(input_, &cl);
  // grad_out in the same layout as input, so one index walks both.
  const at::Tensor grad_out =
      grad_out_.contiguous(cl && input.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const cuda::BNLayout s = bn_shape(input, cl);
  const int64_t C = s.C, R = s.B * s.S;
  const auto acc = at::toOpMathType(input.scalar_type());
  TORCH_CHECK(save_mean_.numel() == C && save_rstd_.numel() == C && save_mean_.scalar_type() == acc &&
                  save_rstd_.scalar_type() == acc,
              "batch_norm_act_backward: save_mean and save_rstd must be the ", C, " ", acc,
              " statistics returned by batch_norm_act");
  const at::Tensor save_mean = save_mean_.contiguous(), save_rstd = save_rstd_.contiguous();
  const bool has_w = weight.has_value() && weight->defined(), has_b = bias.has_value() && bias->defined();
  const bool need_dw = output_mask[1] && has_w, need_db = output_mask[2] && has_b;
  // grad_input in the input's layout, like the forward's output (see batch_norm_act_cuda).
  at::Tensor result = output_mask[0] ? at::empty_like(input_) : at::empty({0}, input.options());
  at::Tensor grad_input = !output_mask[0] || result.strides() == input.strides() ? result : at::empty_like(input);
  at::Tensor grad_weight = need_dw ? at::zeros({C}, weight->options()) : at::empty({0}, input.options());
  at::Tensor grad_bias = need_db ? at::zeros({C}, bias->options()) : at::empty({0}, input.options());
  if (C == 0 || R == 0) return {result, grad_weight, grad_bias};
  auto [w, b] = affine_or_identity(weight, bias, C, acc, input);
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
  if (output_mask[0] && !grad_input.is_same(result)) result.copy_(grad_input);
  return {result, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(minitorch_nn, CUDA, m) {
  m.impl("layer_norm_act", &layer_norm_act_cuda);
  m.impl("layer_norm_act_backward", &layer_norm_act_backward_cuda);
  m.impl("batch_norm_act", &batch_norm_act_cuda);
  m.impl("batch_norm_act_backward", &batch_norm_act_backward_cuda);
}

}  // namespace minitorch_nn
