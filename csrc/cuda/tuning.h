// Run-time tuning parameters of the CUDA launchers: the constants that were guesses (marked MEASURE,
// no GPU having been available) and that a launch can take as a value instead of a compile-time
// constant. Today's guesses are the defaults; a sweep on a GPU picks the values
// (benchmarks/cuda_tuning.py), setting them from Python through minitorch_nn.kernels.cuda_tuning
// (the ops of tuning_ops.h). With the defaults every launch is the one the constants gave.
//
// Each launcher file owns its parameters, next to the code that reads them (norm_act.cu,
// conv_implicit.cu), and lists them in a TuningTable. Compile-time shapes (conv_implicit.cu's tile,
// conv_mma.cu's tile, stages and warp grid, the warp kernels' register capacity) are not here: a
// different value is a different kernel instantiation (csrc/README.md, "Tuning").
//
// Plain C++ (no torch, no CUDA): included by .cu files and by the torch glue alike.
#pragma once

#include <atomic>
#include <cstdint>

namespace minitorch_nn {
namespace cuda {

// One parameter: its name as Python spells it, what it decides, today's value (the default) and the
// range the launchers accept. The host-side launch code reads the value (a relaxed atomic: setting it
// while another thread launches is not a data race). An op that sizes its workspace with one read and
// launches with another needs the same value both times: change parameters between ops, never while
// another thread runs one (the Python context manager's documented contract).
struct TuningParam {
  const char* name;
  const char* what;
  int64_t default_value, min_value, max_value;
  std::atomic<int64_t> value;
  int64_t get() const { return value.load(std::memory_order_relaxed); }
};

struct TuningTable {
  TuningParam* const* params;
  int count;
};

TuningTable norm_act_tuning();       // norm_act.cu: LayerNorm row mapping and workers, BatchNorm chunks
TuningTable conv_implicit_tuning();  // conv_implicit.cu: the weight gradient's split of its reduction

}  // namespace cuda
}  // namespace minitorch_nn
