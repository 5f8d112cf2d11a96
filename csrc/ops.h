// Declarations shared by the op schemas (ops.cpp) and the device implementations.
#pragma once

#include <string>

#include "activation.h"

namespace minitorch_nn {

// The Act named by `name` (MTNN_FOR_EACH_ACT in activation.h); anything else is a TORCH_CHECK
// error (ValueError in Python) that lists the valid names.
Act parse_activation(const std::string& name);

}  // namespace minitorch_nn
