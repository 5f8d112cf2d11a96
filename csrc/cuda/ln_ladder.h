// Launchers of the CUDA LayerNorm+act kernel ladder (csrc/cuda/ln_ladder.cu), rungs 1, 2 and 3; rung 4
// is the production pair layer_norm_act_forward / layer_norm_act_backward of norm_act.h.
//
// The contract is norm_act.h's: raw device pointers, int64_t sizes and a stream in, the launch's
// cudaError_t out; the glue (ln_ladder_ops.h) has checked everything first, the rung included (1, 2
// or 3). Rows are dense row-major (M, N), their pointers not necessarily aligned; γ, β, μ and rstd
// are contiguous acc_t arrays, never null; `workspace` holds the bytes
// ln_ladder_backward_workspace_bytes returns. scalar_t is float, double, __half or __nv_bfloat16.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "norm_act.h"  // Act, acc_type

namespace minitorch_nn {
namespace cuda {

// y = f((x − μ)·rstd·γ + β) per row; writes μ and rstd (M each).
template <typename scalar_t>
cudaError_t ln_ladder_forward(int rung, Act act, const scalar_t* x, const acc_type<scalar_t>* weight,
                              const acc_type<scalar_t>* bias, scalar_t* y, acc_type<scalar_t>* mean,
                              acc_type<scalar_t>* rstd, int64_t M, int64_t N, double eps, cudaStream_t stream);

template <typename scalar_t>
size_t ln_ladder_backward_workspace_bytes(int rung, int64_t M, int64_t N);

// dx (skipped when null), dγ = Σ_rows dz·x̂ and dβ = Σ_rows dz (each skipped when null), in scalar_t;
// the same bits every run (fixed summation orders, no atomics).
template <typename scalar_t>
cudaError_t ln_ladder_backward(int rung, Act act, const scalar_t* dy, const scalar_t* x,
                               const acc_type<scalar_t>* mean, const acc_type<scalar_t>* rstd,
                               const acc_type<scalar_t>* weight, const acc_type<scalar_t>* bias, scalar_t* dx,
                               scalar_t* dweight, scalar_t* dbias, void* workspace, int64_t M, int64_t N,
                               cudaStream_t stream);

}  // namespace cuda
}  // namespace minitorch_nn
