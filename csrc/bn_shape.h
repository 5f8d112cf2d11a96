// The shape BatchNorm sees, on every device: C channels, each normalized over R = B·S values.
// NCHW stores a channel as B runs of S contiguous values; channels_last (and 2-D (B, C) input,
// S = 1) stores R rows of C contiguous channels. Plain C++, no torch, so the CUDA kernels take it
// by value too.
#pragma once

#include <cstdint>

#include "activation.h"  // MTNN_HD

namespace minitorch_nn {

struct BNShape {
  int64_t B, C, S;  // batch, channels, spatial positions per sample
  bool channels_last;
  MTNN_HD int64_t R() const { return B * S; }
};

}  // namespace minitorch_nn
