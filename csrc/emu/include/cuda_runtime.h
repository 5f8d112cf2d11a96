// The CUDA runtime API as the emulator provides it: what a .cu file's host code and its torch glue
// call (errors, streams, dim3), for a CPU build. It stands in for the toolkit's cuda_runtime.h
// because the emulator's include directory comes first on the include path; the types themselves
// (dim3, uint3, cudaError_t and its values, cudaStream_t) are the toolkit's own, from headers that
// compile as host C++ (only the functions below are defined). The device side (threadIdx, __syncthreads, shuffles, launches) is in
// cuda_emu/device.h, included only into the rewritten .cu (see csrc/emu/cu2cpp.py).
#pragma once

#include <driver_types.h>
#include <vector_types.h>

#include <cstddef>

// A kernel's __launch_bounds__ is read by the launch rewrite (cu2cpp.py); here it is only erased.
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

// Declared by the toolkit's header; defined by the emulator (csrc/emu/runtime.cpp). Kernels run
// to completion inside their launch, so every stream is the null stream and synchronizing has
// nothing to wait for: cudaDeviceSynchronize and cudaStreamSynchronize return the last error.
#include <cuda_runtime_api.h>
