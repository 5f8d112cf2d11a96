// The conv2d op's boundary, shared by every device (csrc/cpu/conv/conv.cpp, csrc/cuda/conv_ops.h):
// torch's argument checks with torch's messages and exception types, the shapes, the output's
// memory format and the backward's grad_out check. Runs once per call, on the host.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <optional>
#include <string>

#include "conv_shape.h"
#include "op_checks.h"  // present, check_same_device

namespace minitorch_nn {
namespace conv {

// Checks everything torch checks, with torch's messages and exception types, and computes the shapes.
// torch's Python name of a dtype ("float32", not ATen's "Float").
inline std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    default: return c10::toString(t);
  }
}

// `dtypes` are the ones this device's kernels support (NotImplementedError for any other, as torch
// raises for a dtype it has no kernel for).
template <size_t D>
ConvShape plan_conv(const char* op, const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                    const std::array<at::ScalarType, D>& dtypes) {
  TORCH_CHECK(x.dim() == 4, op, ": expected 4-D input (N, C, H, W), got input of size ", x.sizes());
  TORCH_CHECK(w.dim() == 4, op, ": weight must be 4-D (out_channels, in_channels/groups, kh, kw), got ", w.dim(),
              "-D");
  TORCH_CHECK(stride.size() == 2 && padding.size() == 4 && dilation.size() == 2, op,
              ": expected 2 strides, 4 paddings (top, bottom, left, right) and 2 dilations");
  const auto dtype = x.scalar_type();
  if (std::find(dtypes.begin(), dtypes.end(), dtype) == dtypes.end()) {
    std::string names;
    for (auto d : dtypes) names += (names.empty() ? "" : ", ") + dtype_name(d);
    TORCH_CHECK_NOT_IMPLEMENTED(false, op, ": the compiled conv2d supports ", names, " on ", x.device().type(),
                                ", got ", dtype);
  }
  TORCH_CHECK(w.scalar_type() == dtype, "Input type (", dtype, ") and weight type (", w.scalar_type(),
              ") should be the same");
  check_same_device(op, "weight", w, x);
  for (auto v : stride) TORCH_CHECK(v > 0, "non-positive stride is not supported");
  for (auto v : padding) TORCH_CHECK(v >= 0, "negative padding is not supported");
  for (auto v : dilation) TORCH_CHECK(v > 0, "non-positive dilation is not supported");
  TORCH_CHECK(groups > 0, "non-positive groups is not supported");
  ConvShape s{};
  s.N = x.size(0), s.C = x.size(1), s.H = x.size(2), s.W = x.size(3);
  s.O = w.size(0), s.kh = w.size(2), s.kw = w.size(3);
  TORCH_CHECK(x.numel() > 0 || s.N == 0 || s.C == 0,
              "Only zero batch or zero channel inputs are supported, but got input shape: ", x.sizes());
  TORCH_CHECK(s.kh > 0 && s.kw > 0, "kernel size should be greater than zero, but got kernel_height: ", s.kh,
              " kernel_width: ", s.kw);
  TORCH_CHECK(s.O >= groups && s.O % groups == 0, "Given groups=", groups, ", expected weight to be divisible by ",
              groups, " at dimension 0 (and at least 1), but got weight of size ", w.sizes(), " instead");
  TORCH_CHECK(s.C == w.size(1) * groups, "Given groups=", groups, ", weight of size ", w.sizes(),
              ", expected input", x.sizes(), " to have ", w.size(1) * groups, " channels, but got ", s.C,
              " channels instead");
  if (present(bias)) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == s.O && bias->scalar_type() == dtype, "Given weight of size ",
                w.sizes(), ", expected bias to be 1-dimensional with ", s.O, " elements of type ", dtype,
                ", but got bias of size ", bias->sizes(), " and type ", bias->scalar_type(), " instead");
    check_same_device(op, "bias", *bias, x);
  }
  s.stride_h = stride[0], s.stride_w = stride[1];
  s.pad_top = padding[0], s.pad_left = padding[2];
  s.dil_h = dilation[0], s.dil_w = dilation[1];
  s.groups = groups;
  const int64_t padded_h = s.H + padding[0] + padding[1], padded_w = s.W + padding[2] + padding[3];
  const int64_t span_h = s.dil_h * (s.kh - 1) + 1, span_w = s.dil_w * (s.kw - 1) + 1;
  TORCH_CHECK(span_h <= padded_h && span_w <= padded_w, "Calculated padded input size per channel: (", padded_h,
              " x ", padded_w, "). Kernel size: (", span_h, " x ", span_w,
              "). Kernel size can't be greater than actual input size");
  s.OH = (padded_h - span_h) / s.stride_h + 1;
  s.OW = (padded_w - span_w) / s.stride_w + 1;
  return s;
}

// torch returns a channels_last output when the input or the weight is channels_last (by stride
// order, as Tensor::suggest_memory_format reads it), NCHW otherwise; so do we.
inline at::MemoryFormat conv_output_format(const at::Tensor& x, const at::Tensor& w) {
  const bool cl = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                  w.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline void check_conv_grad_out(const char* op, const at::Tensor& grad_out, const at::Tensor& input,
                                const ConvShape& s) {
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == s.N && grad_out.size(1) == s.O && grad_out.size(2) == s.OH &&
                  grad_out.size(3) == s.OW,
              op, ": grad_out of shape ", grad_out.sizes(), " does not match the output shape [", s.N, ", ", s.O, ", ",
              s.OH, ", ", s.OW, "]");
  TORCH_CHECK(grad_out.scalar_type() == input.scalar_type(), op, ": grad_out has dtype ", grad_out.scalar_type(),
              " but input has dtype ", input.scalar_type());
  check_same_device(op, "grad_out", grad_out, input);
}

// The backward's outputs, allocated as the op returns them: dx, dW (in the output's memory format)
// and db, each only when asked for (output_mask; db only with a bias), an empty tensor otherwise.
// With an empty batch every sum is empty: they come back zero-filled and `done` is set.
struct ConvGrads {
  at::Tensor dx, dw, db;
  bool need_dx, need_dw, need_db, done;
};

inline ConvGrads plan_conv_grads(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, const ConvShape& s,
                                 std::array<bool, 3> output_mask) {
  const auto format = conv_output_format(input, weight);
  const auto opts = input.options();
  ConvGrads g{};
  g.need_dx = output_mask[0], g.need_dw = output_mask[1], g.need_db = output_mask[2] && present(bias);
  g.dx = g.need_dx ? at::empty(input.sizes(), opts.memory_format(format)) : at::empty({0}, opts);
  g.dw = g.need_dw ? at::empty(weight.sizes(), opts.memory_format(format)) : at::empty({0}, opts);
  g.db = g.need_db ? at::empty({s.O}, opts) : at::empty({0}, opts);
  g.done = s.N == 0;
  if (g.done) {
    g.dx.zero_();
    g.dw.zero_();
    g.db.zero_();
  }
  return g;
}

}  // namespace conv
}  // namespace minitorch_nn
