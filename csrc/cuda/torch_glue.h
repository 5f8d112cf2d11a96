// What the torch-facing CUDA ops (norm_act_ops.h, conv_ops.h) share: the launcher's type for an
// ATen scalar type, raw pointers of that type, and workspaces. The ops are templates on a device
// policy `Dev` (a GPU: gpu.h; the CUDA emulator: csrc/emu/*_emu_ops.cpp) with four static functions:
//   Dev::guard(t)    an object that makes t's device current for the call (the device guard)
//   Dev::stream()    the stream to launch on (torch's current stream)
//   Dev::check(err)  throws on a launcher's error
//   Dev::poison(t)   fills a tensor the kernels are about to write (the emulator's NaN / 0xFF,
//                    so an element a kernel fails to write cannot pass for a result; a no-op on a GPU)
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>

namespace minitorch_nn {
namespace cuda_ops {

// The CUDA type a launcher takes for an ATen scalar type (same bits).
template <typename T>
struct CudaScalar {
  using type = T;
};
template <>
struct CudaScalar<at::BFloat16> {
  using type = __nv_bfloat16;
};
template <>
struct CudaScalar<at::Half> {
  using type = __half;
};

template <typename scalar_t>
const typename CudaScalar<scalar_t>::type* cptr(const at::Tensor& t) {
  return reinterpret_cast<const typename CudaScalar<scalar_t>::type*>(t.const_data_ptr<scalar_t>());
}
template <typename scalar_t>
typename CudaScalar<scalar_t>::type* mptr(at::Tensor& t) {
  return reinterpret_cast<typename CudaScalar<scalar_t>::type*>(t.mutable_data_ptr<scalar_t>());
}

template <typename Dev>
at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  at::Tensor ws = at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
  Dev::poison(ws);
  return ws;
}

}  // namespace cuda_ops
}  // namespace minitorch_nn
