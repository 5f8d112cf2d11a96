// Argument checks every op of the extension shares (the norm ops' plan, norm_act_plan.h, and the
// conv ops', conv_plan.h), with torch's exception types and messages.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

namespace minitorch_nn {

inline bool present(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

inline void check_same_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
}

}  // namespace minitorch_nn
