// The torch-facing CUDA conv2d ops, written once for every place the kernels run: a GPU
// (conv_ops.cpp) and the CUDA emulator on the CPU (csrc/emu/conv_emu_ops.cpp).
//
// The op boundary (torch's checks, the shapes, the output's memory format) is csrc/conv_plan.h's,
// shared with the CPU op. What is left here: the choice of rung, the dtype dispatch, the outputs
// (poisoned by the emulator's policy before the kernels write them), and raw pointers with element
// strides handed to the launchers of conv.h. Rungs 1 and 2 read and write any strides, so no
// input is copied for them; rung 3 wants channels_last-dense bfloat16 / float16 and 16-byte
// alignment: 'auto' falls back to rung 2 where it does not get them, 'mma' raises ValueError.
//
// The backward recomputes z = conv(x, w) + b with the same rung when there is an activation, as the
// CPU op does: dz = dy·f'(z) is formed over z in place (conv2d_act_grad), then the three gradients
// are the rung's input- and weight-gradient kernels and the shared bias reduction.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>

#include "../conv_plan.h"
#include "../ops.h"
#include "conv.h"
#include "torch_glue.h"

namespace minitorch_nn {
namespace cuda_ops {

using conv::ConvShape;

constexpr std::array<at::ScalarType, 4> kConvDtypes = {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16};

enum class ConvRung { Direct = 1, Implicit = 2, Mma = 3 };

// The rung `algorithm` names, before rung 3's own requirements are checked (pick_rung does that).
inline ConvRung parse_conv_rung(c10::string_view name, const ConvShape& s) {
  const bool depthwise = s.groups > 1 && s.groups == s.C;
  if (name == "direct") return ConvRung::Direct;
  if (name == "implicit") return ConvRung::Implicit;
  if (name == "mma") return ConvRung::Mma;
  if (name == "depthwise") {  // the CPU's depthwise kernel; on CUDA, rung 1 is the depthwise kernel
    TORCH_CHECK_VALUE(depthwise, "algorithm='depthwise' needs groups == in_channels > 1, got groups=", s.groups,
                      " with ", s.C, " input channels");
    return ConvRung::Direct;
  }
  TORCH_CHECK_VALUE(name == "auto", "algorithm must be one of 'auto', 'direct', 'implicit', 'mma', 'depthwise' on ",
                    "CUDA; got '", std::string(name), "'");
  // "auto": a depthwise conv is kh·kw multiply-adds per output, a GEMM of one column per group:
  // rung 1's thread per output is the right shape for it. Everything else: rung 3 where it runs.
  if (depthwise) return ConvRung::Direct;
  return ConvRung::Mma;
}

template <typename T>
cuda::Strided4<typename CudaScalar<T>::type> strided(const at::Tensor& t) {
  using cuda_t = typename CudaScalar<T>::type;
  return {reinterpret_cast<cuda_t*>(t.data_ptr<T>()), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}
template <typename T>
cuda::Strided4<const typename CudaScalar<T>::type> cstrided(const at::Tensor& t) {
  return {cptr<T>(t), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// out = act(conv(x, w) + bias), out already allocated. Returns the rung that ran.
template <typename Dev>
ConvRung conv_forward_into(ConvRung rung, bool explicit_rung, const ConvShape& s, const at::Tensor& x,
                           const at::Tensor& w, const std::optional<at::Tensor>& bias_, Act act,
                           const at::Tensor& out) {
  if (s.N == 0) return rung;
  const at::Tensor bias = present(bias_) ? bias_->contiguous() : at::Tensor();
  // No input channels (K = 0) leaves bias + activation: rung 1 does it with its empty sums.
  if (s.K() == 0) rung = ConvRung::Direct;
  const cudaStream_t stream = Dev::stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "conv2d_cuda", [&] {
    using cuda_t = typename CudaScalar<scalar_t>::type;
    const auto xs = cstrided<scalar_t>(x), ws = cstrided<scalar_t>(w);
    const auto ys = strided<scalar_t>(out);
    const cuda_t* b = bias.defined() ? cptr<scalar_t>(bias) : nullptr;
    if (rung == ConvRung::Mma && !cuda::conv2d_mma_supported<cuda_t>(s, xs, ws, ys)) {
      // Asked for by name, rung 3 runs or the call fails (a benchmark of 'mma' must not time rung
      // 2); under 'auto' rung 2 takes over.
      TORCH_CHECK_VALUE(!explicit_rung, "conv2d: algorithm='mma' needs float16 or bfloat16, groups=1, channels_last ",
                        "input, weight and output, channels a multiple of 8 and 16-byte aligned data; got ",
                        c10::toString(x.scalar_type()), " with groups=", s.groups, ", C=", s.C, ", O=", s.O,
                        " (algorithm='auto' runs rung 2 where rung 3 cannot)");
      rung = ConvRung::Implicit;
    }
    switch (rung) {
      case ConvRung::Direct: Dev::check(cuda::conv2d_direct_forward<cuda_t>(s, xs, ws, b, act, ys, stream)); break;
      case ConvRung::Implicit: Dev::check(cuda::conv2d_implicit_forward<cuda_t>(s, xs, ws, b, act, ys, stream)); break;
      case ConvRung::Mma:
        // Instantiated for the 16-bit types only (conv2d_mma_supported is false for the others).
        if constexpr (sizeof(cuda_t) == 2) Dev::check(cuda::conv2d_mma_forward<cuda_t>(s, xs, ws, b, act, ys, stream));
        break;
    }
  });
  return rung;
}

template <typename Dev>
at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                  c10::string_view activation, c10::string_view algorithm) {
  const auto guard = Dev::guard(input);
  const ConvShape s = conv::plan_conv("conv2d", input, weight, bias, stride, padding, dilation, groups, kConvDtypes);
  const Act act = parse_activation(std::string(activation));
  const ConvRung rung = parse_conv_rung(algorithm, s);
  at::Tensor out =
      at::empty({s.N, s.O, s.OH, s.OW}, input.options().memory_format(conv::conv_output_format(input, weight)));
  Dev::poison(out);
  conv_forward_into<Dev>(rung, algorithm == "mma", s, input, weight, bias, act, out);
  return out;
}

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    int64_t groups, c10::string_view activation, c10::string_view algorithm, std::array<bool, 3> output_mask) {
  constexpr const char* op = "conv2d_backward";
  const auto guard = Dev::guard(input);
  const ConvShape s = conv::plan_conv(op, input, weight, bias, stride, padding, dilation, groups, kConvDtypes);
  const Act act = parse_activation(std::string(activation));
  ConvRung rung = parse_conv_rung(algorithm, s);
  conv::check_conv_grad_out(op, grad_out, input, s);
  conv::ConvGrads grads = conv::plan_conv_grads(input, weight, bias, s, output_mask);
  if (grads.done) return {grads.dx, grads.dw, grads.db};
  at::Tensor &dx = grads.dx, &dw = grads.dw, &db = grads.db;
  const bool need_dx = grads.need_dx, need_dw = grads.need_dw, need_db = grads.need_db;
  const auto format = conv::conv_output_format(input, weight);
  const auto opts = input.options();
  for (at::Tensor* t : {&dx, &dw, &db}) Dev::poison(*t);
  const cudaStream_t stream = Dev::stream();
  // dz = dy·f'(z), with z recomputed by the same rung; without an activation dz is dy as it is.
  at::Tensor dz = grad_out;
  if (act != Act::None) {
    at::Tensor z = at::empty(grad_out.sizes(), opts.memory_format(format));
    Dev::poison(z);
    rung = conv_forward_into<Dev>(rung, false, s, input, weight, bias, Act::None, z);
    const at::Tensor dy = grad_out.contiguous(format);  // the same element order as z
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "conv2d_backward_cuda", [&] {
      Dev::check(cuda::conv2d_act_grad(act, cptr<scalar_t>(dy), mptr<scalar_t>(z), z.numel(), stream));
    });
    dz = z;
  }
  // Rung 3 has no backward kernels of its own (yet): its gradients are rung 2's.
  const bool direct = rung == ConvRung::Direct;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "conv2d_backward_cuda", [&] {
    using cuda_t = typename CudaScalar<scalar_t>::type;
    const auto dzs = cstrided<scalar_t>(dz), xs = cstrided<scalar_t>(input), ws = cstrided<scalar_t>(weight);
    if (need_db) Dev::check(cuda::conv2d_bias_grad<cuda_t>(s, dzs, mptr<scalar_t>(db), stream));
    // No input channels (K = 0): dx and dw have no elements; db = Σ dz still has its terms.
    if (need_dx && dx.numel() > 0) {
      const auto dxs = strided<scalar_t>(dx);
      Dev::check(direct ? cuda::conv2d_direct_backward_input<cuda_t>(s, dzs, ws, dxs, stream)
                        : cuda::conv2d_implicit_backward_input<cuda_t>(s, dzs, ws, dxs, stream));
    }
    if (need_dw && dw.numel() > 0) {
      const auto dws = strided<scalar_t>(dw);
      if (direct) {
        Dev::check(cuda::conv2d_direct_backward_weight<cuda_t>(s, dzs, xs, dws, stream));
      } else {
        at::Tensor wsp = workspace<Dev>(cuda::conv2d_implicit_backward_weight_workspace_bytes<cuda_t>(s), input);
        Dev::check(cuda::conv2d_implicit_backward_weight<cuda_t>(s, dzs, xs, dws, wsp.mutable_data_ptr(), stream));
      }
    }
  });
  return {dx, dw, db};
}

}  // namespace cuda_ops
}  // namespace minitorch_nn
