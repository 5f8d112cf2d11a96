// The torch-facing ops that read and set the CUDA launchers' run-time tuning parameters (tuning.h),
// written once for a GPU build (tuning_ops.cpp) and the CUDA emulator (csrc/emu/emu_ops.cpp).
// minitorch_nn.kernels.cuda_tuning wraps them as a context manager.
//
//   _cuda_tuning_names() -> str[]                       every parameter, norm_act.cu's then conv_implicit.cu's
//   _cuda_tuning(str name, int? value=None) -> int[]    [the value before the call, default, min, max];
//                                                       with a value, sets it
//
// Not tensor ops: no fake kernel or autograd. Their schemas are defined here, as a fragment of the
// library, because they exist only where CUDA kernels do (a CUDA build, the emulator).
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tuning.h"

namespace minitorch_nn {
namespace cuda_ops {

inline std::vector<cuda::TuningParam*> tuning_params() {
  std::vector<cuda::TuningParam*> all;
  for (const cuda::TuningTable& t : {cuda::norm_act_tuning(), cuda::conv_implicit_tuning()})
    all.insert(all.end(), t.params, t.params + t.count);
  return all;
}

inline std::vector<std::string> cuda_tuning_names() {
  std::vector<std::string> names;
  for (const cuda::TuningParam* p : tuning_params()) names.emplace_back(p->name);
  return names;
}

inline std::vector<int64_t> cuda_tuning(c10::string_view name, std::optional<int64_t> value) {
  for (cuda::TuningParam* p : tuning_params()) {
    if (name != p->name) continue;
    const int64_t before = p->get();
    if (value.has_value()) {
      TORCH_CHECK_VALUE(p->min_value <= *value && *value <= p->max_value, "CUDA tuning parameter ", p->name, " (",
                        p->what, ") must be in [", p->min_value, ", ", p->max_value, "], got ", *value);
      p->value.store(*value, std::memory_order_relaxed);
    }
    return {before, p->default_value, p->min_value, p->max_value};
  }
  std::string known;
  for (const std::string& n : cuda_tuning_names()) known += (known.empty() ? "" : ", ") + n;
  TORCH_CHECK_VALUE(false, "unknown CUDA tuning parameter '", std::string(name), "'; the parameters are: ", known);
}

inline void define_tuning_ops(torch::Library& m) {
  m.def("_cuda_tuning_names() -> str[]", &cuda_tuning_names);
  m.def("_cuda_tuning(str name, int? value=None) -> int[]", &cuda_tuning);
}

}  // namespace cuda_ops
}  // namespace minitorch_nn
