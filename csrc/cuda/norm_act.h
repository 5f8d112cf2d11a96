// Launchers of the CUDA fused normalization + activation kernels (csrc/cuda/norm_act.cu).
//
// Plain CUDA C++, no torch: raw device pointers, int64_t sizes and a stream in, a cudaError_t out
// (the launch's, from cudaGetLastError). The torch-facing glue (csrc/cuda/norm_act_ops.cpp) does
// every check first; these functions trust their arguments:
//   * tensors are dense in the layout stated (row-major (M, N) for LayerNorm; NCHW or channels_last
//     for BatchNorm), but their pointers need not be aligned (storage offsets are fine);
//   * γ, β, statistics and running statistics are contiguous arrays of acc_t, never null
//     (the glue passes ones and zeros when the module has no affine parameters);
//   * sizes are non-zero (the glue returns early on empty tensors);
//   * `workspace` points to at least the bytes the matching *_workspace_bytes function returns.
//
// scalar_t is float, double, __half or __nv_bfloat16; acc_t is double for double, else float.
// Dimensions as in csrc/cpu/norm_act.cpp: LayerNorm normalizes M rows of N values; BatchNorm
// reduces each of C channels over R = B·S values (S spatial positions per sample).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../activation.h"
#include "../bn_shape.h"

namespace minitorch_nn {
namespace cuda {

template <typename scalar_t>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename scalar_t>
using acc_type = typename AccType<scalar_t>::type;

// BatchNorm's input as the kernels read it: BNShape (csrc/bn_shape.h), shared with the CPU.

// ---- LayerNorm + activation -----------------------------------------------------------------

// y = f((x − μ)·rstd·γ + β) per row; writes μ and rstd (M each).
template <typename scalar_t>
cudaError_t layer_norm_act_forward(Act act, const scalar_t* x, const acc_type<scalar_t>* weight,
                                   const acc_type<scalar_t>* bias, scalar_t* y, acc_type<scalar_t>* mean,
                                   acc_type<scalar_t>* rstd, int64_t M, int64_t N, double eps, cudaStream_t stream);

template <typename scalar_t>
size_t layer_norm_act_backward_workspace_bytes(int64_t M, int64_t N);

// dx (skipped when null), and dγ = Σ_rows dz·x̂, dβ = Σ_rows dz (each skipped when null), written in
// scalar_t. dγ and dβ are the same every run, bit for bit: per-worker partial sums, then a second
// kernel adds them in a fixed order (no atomics).
template <typename scalar_t>
cudaError_t layer_norm_act_backward(Act act, const scalar_t* dy, const scalar_t* x, const acc_type<scalar_t>* mean,
                                    const acc_type<scalar_t>* rstd, const acc_type<scalar_t>* weight,
                                    const acc_type<scalar_t>* bias, scalar_t* dx, scalar_t* dweight, scalar_t* dbias,
                                    void* workspace, int64_t M, int64_t N, cudaStream_t stream);

// ---- BatchNorm + activation -----------------------------------------------------------------

template <typename scalar_t>
size_t batch_norm_act_stats_workspace_bytes(BNShape s);

// Training statistics: per channel μ (save_mean) and rstd = 1/√(σ² + eps) (biased σ²). When
// new_running_mean is not null, also
//   new_running_mean = (1 − momentum)·running_mean + momentum·μ,
//   new_running_var  = (1 − momentum)·running_var  + momentum·σ²·R/(R − 1)   (unbiased),
// as the CPU op computes them. Needs R ≥ 2.
template <typename scalar_t>
cudaError_t batch_norm_act_stats(const scalar_t* x, BNShape s, const acc_type<scalar_t>* running_mean,
                                 const acc_type<scalar_t>* running_var, double momentum, double eps,
                                 acc_type<scalar_t>* save_mean, acc_type<scalar_t>* save_rstd,
                                 acc_type<scalar_t>* new_running_mean, acc_type<scalar_t>* new_running_var,
                                 void* workspace, cudaStream_t stream);

// y = f((x − μ)·γ·rstd + β) per channel, y in x's layout.
template <typename scalar_t>
cudaError_t batch_norm_act_apply(Act act, const scalar_t* x, BNShape s, const acc_type<scalar_t>* mean,
                                 const acc_type<scalar_t>* rstd, const acc_type<scalar_t>* weight,
                                 const acc_type<scalar_t>* bias, scalar_t* y, cudaStream_t stream);

template <typename scalar_t>
size_t batch_norm_act_backward_workspace_bytes(BNShape s);

// Per channel dβ = Σdz and dγ = Σdz·x̂ (acc_t, each skipped when null), and dx (skipped when null):
//   training  dx = γ·rstd·(dz − mean(dz) − x̂·mean(dz·x̂))
//   eval      dx = γ·rstd·dz
template <typename scalar_t>
cudaError_t batch_norm_act_backward(Act act, const scalar_t* dy, const scalar_t* x, BNShape s,
                                    const acc_type<scalar_t>* mean, const acc_type<scalar_t>* rstd,
                                    const acc_type<scalar_t>* weight, const acc_type<scalar_t>* bias, bool training,
                                    scalar_t* dx, acc_type<scalar_t>* dweight, acc_type<scalar_t>* dbias,
                                    void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace minitorch_nn
