// The conv2d op on the CPU: argument checks, layouts, the choice of rung, the fused epilogue and
// the backward's glue. The kernels are the rungs (conv.h lists them); this file runs once per
// call and does no per-element work but the bias gradient and dz = dy·f'(z).
//
// Layouts. torch returns a channels_last output when the input or the weight is channels_last
// (by stride order, as Tensor::suggest_memory_format reads it), NCHW otherwise; so do we, and
// the gradients of input and weight come back in that same format. Rung 1 reads and writes any
// strides in place. The other rungs compute in NCHW: a channels_last (or otherwise strided)
// input is copied to NCHW first and the NCHW result copied into the channels_last output. Those
// copies are real costs of rungs 2-4 on channels_last data, and the benchmark counts them.
//
// The backward with an activation recomputes z = conv(x, w) + b (one forward) to form
// dz = dy·f'(z): the op saves nothing but its inputs. Training with an activation costs that
// extra forward; a pre-activation kept from the forward would cost a tensor of the output's
// size in memory instead.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>

#include "../../conv_plan.h"
#include "../../op_checks.h"
#include "../../ops.h"
#include "conv.h"
#include "epilogue.h"

namespace minitorch_nn {
namespace conv {
namespace {

enum class Algo { Direct, Im2col, Gemm, Implicit, Depthwise };

constexpr std::array<at::ScalarType, 2> kDtypes = {at::kFloat, at::kDouble};

bool is_depthwise(const ConvShape& s) { return s.groups > 1 && s.groups == s.C; }

Algo parse_algorithm(c10::string_view name, const ConvShape& s) {
  if (name == "direct") return Algo::Direct;
  if (name == "im2col") return Algo::Im2col;
  if (name == "gemm") return Algo::Gemm;
  if (name == "implicit") return Algo::Implicit;
  if (name == "depthwise") {
    TORCH_CHECK_VALUE(is_depthwise(s), "algorithm='depthwise' needs groups == in_channels > 1, got groups=", s.groups,
                      " with ", s.C, " input channels");
    return Algo::Depthwise;
  }
  TORCH_CHECK_VALUE(name == "auto", "algorithm must be one of 'auto', 'direct', 'im2col', 'gemm', 'implicit'",
                    ", 'depthwise'; got '", std::string(name), "'");
  // "auto": depthwise convs get their own kernel. Otherwise rung 4 where it skips real work (a
  // kernel larger than 1x1 at stride 1: its cols matrix would be kh·kw times x), rung 3 else:
  // a 1x1 stride-1 conv reads x in place on both, and at stride s rung 4's input gradient does
  // s² times the useful flops (a transposed convolution over dz) and packs x with scalar loads.
  // From the conv family of the benchmark suite (benchmarks/results/, rows "gemm" and "implicit").
  if (is_depthwise(s)) return Algo::Depthwise;
  const bool strided = s.stride_h > 1 || s.stride_w > 1;
  return !strided && s.kh * s.kw > 1 ? Algo::Implicit : Algo::Gemm;
}

template <typename T>
View4<T> view(const at::Tensor& t) {
  return {t.data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}
template <typename T>
View4<const T> cview(const at::Tensor& t) {
  return {t.const_data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}
template <typename T>
const T* ptr_or_null(const std::optional<at::Tensor>& t) {
  return present(t) ? t->const_data_ptr<T>() : nullptr;
}

// The NCHW-contiguous tensor a rung writes into: `out` itself when it is NCHW, else a temporary.
at::Tensor nchw_target(const at::Tensor& out) {
  return out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
}

// out = act(conv(x, w) + bias), out already allocated (any layout).
void run_forward(Algo algo, const ConvShape& s, const at::Tensor& x, const at::Tensor& w,
                 const std::optional<at::Tensor>& bias_, Act act, const at::Tensor& out) {
  if (s.N == 0) return;
  const std::optional<at::Tensor> bias = present(bias_) ? std::optional<at::Tensor>(bias_->contiguous()) : std::nullopt;
  // No input channels (K = 0) leaves bias + activation, which rung 1 does with its empty sums.
  if (s.K() == 0) algo = Algo::Direct;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv2d", [&] {
    if (algo == Algo::Direct) {
      direct_forward<scalar_t>(s, cview<scalar_t>(x), cview<scalar_t>(w), ptr_or_null<scalar_t>(bias), act,
                               view<scalar_t>(out));
      return;
    }
    const at::Tensor xc = x.contiguous(), wc = w.contiguous(), y = nchw_target(out);
    const scalar_t *xp = xc.const_data_ptr<scalar_t>(), *wp = wc.const_data_ptr<scalar_t>();
    const scalar_t* bp = ptr_or_null<scalar_t>(bias);
    scalar_t* yp = y.data_ptr<scalar_t>();
    switch (algo) {
      case Algo::Im2col: im2col_forward<scalar_t>(s, xp, wp, bp, act, yp); break;
      case Algo::Gemm: gemm_forward<scalar_t>(s, xp, wp, bp, act, yp); break;
      case Algo::Implicit: implicit_forward<scalar_t>(s, xp, wp, bp, act, yp); break;
      case Algo::Depthwise: depthwise_forward<scalar_t>(s, xp, wp, bp, act, yp); break;
      default: TORCH_INTERNAL_ASSERT(false, "conv2d: unhandled algorithm");
    }
    if (!y.is_same(out)) out.copy_(y);
  });
}

at::Tensor conv2d_cpu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                      c10::string_view activation, c10::string_view algorithm) {
  const ConvShape s = plan_conv("conv2d", input, weight, bias, stride, padding, dilation, groups, kDtypes);
  const Act act = parse_activation(std::string(activation));
  const Algo algo = parse_algorithm(algorithm, s);
  // A plain allocation, as torch's convolution makes: the benchmark compares kernels, not allocators.
  at::Tensor out = at::empty({s.N, s.O, s.OH, s.OW}, input.options().memory_format(conv_output_format(input, weight)));
  run_forward(algo, s, input, weight, bias, act, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    int64_t groups, c10::string_view activation, c10::string_view algorithm, std::array<bool, 3> output_mask) {
  constexpr const char* op = "conv2d_backward";
  const ConvShape s = plan_conv(op, input, weight, bias, stride, padding, dilation, groups, kDtypes);
  const Act act = parse_activation(std::string(activation));
  Algo algo = parse_algorithm(algorithm, s);
  check_conv_grad_out(op, grad_out, input, s);
  ConvGrads grads = plan_conv_grads(input, weight, bias, s, output_mask);
  if (grads.done) return {grads.dx, grads.dw, grads.db};
  at::Tensor &dx = grads.dx, &dw = grads.dw, &db = grads.db;
  const bool need_dx = grads.need_dx, need_dw = grads.need_dw, need_db = grads.need_db;
  const auto opts = input.options();
  // dz = dy·f'(z), NCHW-contiguous, with z recomputed by the same rung.
  at::Tensor dz = grad_out.contiguous();
  if (act != Act::None) {
    at::Tensor z = at::empty(dz.sizes(), opts);
    run_forward(algo, s, input, weight, bias, Act::None, z);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_backward", [&] {
      mul_act_derivative<scalar_t>(dz.const_data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), z.numel(), act);
    });
    dz = z;
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_backward", [&] {
    if (need_db) {  // db[o] = Σ_{n, l} dz[n, o, l], summed in double in a fixed order
      const scalar_t* d = dz.const_data_ptr<scalar_t>();
      scalar_t* out = db.data_ptr<scalar_t>();
      const int64_t L = s.L();
      at::parallel_for(0, s.O, 1, [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o) {
          double acc = 0;
          for (int64_t n = 0; n < s.N; ++n) {
            const scalar_t* row = d + (n * s.O + o) * L;
            for (int64_t l = 0; l < L; ++l) acc += row[l];
          }
          out[o] = static_cast<scalar_t>(acc);
        }
      });
    }
    // No input channels (K = 0): dx and dw have no elements; db = Σ dz (above) still has its terms.
    if ((!need_dx && !need_dw) || s.K() == 0) return;
    if (algo == Algo::Direct) {
      View4<scalar_t> dxv = need_dx ? view<scalar_t>(dx) : View4<scalar_t>{};
      View4<scalar_t> dwv = need_dw ? view<scalar_t>(dw) : View4<scalar_t>{};
      direct_backward<scalar_t>(s, cview<scalar_t>(dz), cview<scalar_t>(input), cview<scalar_t>(weight),
                                need_dx ? &dxv : nullptr, need_dw ? &dwv : nullptr);
      return;
    }
    const at::Tensor xc = input.contiguous(), wc = weight.contiguous();
    const at::Tensor dx_nchw = need_dx ? nchw_target(dx) : dx, dw_nchw = need_dw ? nchw_target(dw) : dw;
    const scalar_t *dzp = dz.const_data_ptr<scalar_t>(), *xp = xc.const_data_ptr<scalar_t>(),
                   *wp = wc.const_data_ptr<scalar_t>();
    scalar_t* dxp = need_dx ? dx_nchw.data_ptr<scalar_t>() : nullptr;
    scalar_t* dwp = need_dw ? dw_nchw.data_ptr<scalar_t>() : nullptr;
    switch (algo) {
      case Algo::Im2col: im2col_backward<scalar_t>(s, dzp, xp, wp, dxp, dwp); break;
      case Algo::Gemm: gemm_backward<scalar_t>(s, dzp, xp, wp, dxp, dwp); break;
      case Algo::Implicit: implicit_backward<scalar_t>(s, dzp, xp, wp, dxp, dwp); break;
      case Algo::Depthwise: depthwise_backward<scalar_t>(s, dzp, xp, wp, dxp, dwp); break;
      default: TORCH_INTERNAL_ASSERT(false, "conv2d_backward: unhandled algorithm");
    }
    if (need_dx && !dx_nchw.is_same(dx)) dx.copy_(dx_nchw);
    if (need_dw && !dw_nchw.is_same(dw)) dw.copy_(dw_nchw);
  });
  return {dx, dw, db};
}

}  // namespace
}  // namespace conv
}  // namespace minitorch_nn

TORCH_LIBRARY_IMPL(minitorch_nn, CPU, m) {
  m.impl("conv2d", &minitorch_nn::conv::conv2d_cpu);
  m.impl("conv2d_backward", &minitorch_nn::conv::conv2d_backward_cpu);
}
