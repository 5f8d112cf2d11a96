// Kernels with a planted bug each, and correct ones to compare: the CUDA emulator's self-test
// (tests/test_cuda_emu.py runs every case in the mode and build that must catch it).
//
// Plain CUDA: it compiles with nvcc too (nvcc -o broken broken_kernels.cu), where a GPU and
// compute-sanitizer would be the ones to catch the bugs (all but oversize_static_shared, which
// ptxas rejects at compile time, so nvcc builds leave it out).
//
//   broken <case>    exit 0: ran, results right; 1: the launch failed (error printed);
//                    2: ran, results wrong; a sanitizer that finds something aborts.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

constexpr int kThreads = 128;

// ---- correct kernels ------------------------------------------------------------------------------

// out[block] = Σ in[block·n .. block·n + n), a shared-memory tree with a barrier between levels.
__global__ void __launch_bounds__(kThreads) block_sum(const float* in, float* out, int n) {
  __shared__ float partial[kThreads];
  float s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += in[blockIdx.x * n + i];
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

// Every lane gets the warp's sum (xor butterfly), and lane l also reads lane l−1's value (up).
__global__ void warp_sums(const float* in, float* sums, float* prev) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = in[i];
  prev[i] = __shfl_up_sync(0xffffffffu, v, 1);
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  sums[i] = v;
}

// *total += Σ in[0 .. gridDim.x·n): each block reduces its slice, then adds it with one atomicAdd.
__global__ void __launch_bounds__(kThreads) grid_sum(const float* in, float* total, int n) {
  __shared__ float partial[kThreads];
  float s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += in[blockIdx.x * n + i];
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(total, partial[0]);
}

// Per warp: the lanes holding a negative value (ballot), whether any does, whether all are positive.
__global__ void warp_votes(const float* in, unsigned* ballot, int* any, int* all) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  ballot[i] = __ballot_sync(0xffffffffu, in[i] < 0);
  any[i] = __any_sync(0xffffffffu, in[i] < 0);
  all[i] = __all_sync(0xffffffffu, in[i] > 0);
}

// Reverses each block's slice through dynamic shared memory.
__global__ void reverse_dynamic(const float* in, float* out) {
  extern __shared__ float tile[];
  const int t = threadIdx.x, n = blockDim.x;
  tile[t] = in[blockIdx.x * n + t];
  __syncthreads();
  out[blockIdx.x * n + t] = tile[n - 1 - t];
}

// ---- planted bugs ----------------------------------------------------------------------------------

// Missing barrier: reads a neighbour's shared slot with no __syncthreads after the writes.
__global__ void rotate_without_barrier(const float* in, float* out) {
  __shared__ float tile[kThreads];
  const int t = threadIdx.x;
  tile[t] = in[blockIdx.x * kThreads + t];
  out[blockIdx.x * kThreads + t] = tile[(t + 1) % kThreads];  // BUG: __syncthreads() missing above
}

// Blocks that rely on running one after another: thread 0 folds the running *total into its
// partial sum, and the block stores the result with a plain write. Right only while no two blocks
// are in flight: another block may read *total between this block's read and its store.
__global__ void __launch_bounds__(kThreads) grid_sum_racy(const float* in, float* total, int n) {
  __shared__ float partial[kThreads];
  float s = threadIdx.x == 0 ? *total : 0.0f;  // BUG: needs an atomicAdd at the end instead
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += in[blockIdx.x * n + i];
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) *total = partial[0];  // BUG: overwrites what other blocks added meanwhile
}

// A vote after some lanes have returned: its mask still names them.
__global__ void vote_after_return(const float* in, int* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (in[i] < 0) return;  // BUG: the lanes that return never vote
  out[i] = __all_sync(0xffffffffu, in[i] > 4);
}

// A vote by half the warp with a mask naming that half: valid CUDA, but the emulator reports a
// partial mask rather than guess at what the other lanes do meanwhile.
__global__ void half_warp_vote(const float* in, unsigned* out) {
  const int lane = threadIdx.x % 32;
  if (lane < 16) out[lane] = __ballot_sync(0x0000ffffu, in[lane] < 0);
}

// Out-of-bounds store: no `i < n` guard, and the grid covers more than n.
__global__ void scale_unguarded(float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (n > 0) x[i] *= 2.0f;  // BUG: i may be ≥ n
}

// Bad shuffle: only half the warp takes part, but the mask names all 32 lanes.
__global__ void half_warp_shuffle(const float* in, float* out) {
  const int lane = threadIdx.x % 32;
  float v = in[threadIdx.x];
  if (lane < 16) v += __shfl_xor_sync(0xffffffffu, v, 1);  // BUG: lanes 16-31 never arrive
  out[threadIdx.x] = v;
}

// Bad shuffle: the butterfly starts at offset 8, not 16, so each lane sums only its half-warp.
__global__ void wrong_offset_sum(const float* in, float* out) {
  float v = in[threadIdx.x];
  for (int offset = 8; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);  // BUG: 16
  out[threadIdx.x] = v;
}

#ifndef __NVCC__
// Oversize static shared memory: 64 KiB, over the 48 KiB a block may have.
__global__ void big_static_shared(float* out) {
  __shared__ float big[16384];
  big[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = big[(threadIdx.x + 1) % blockDim.x];
}
#endif

// A barrier only some threads reach.
__global__ void divergent_barrier(float* out) {
  if (threadIdx.x < 16) __syncthreads();  // BUG
  out[threadIdx.x] = 1.0f;
}

// ---- the driver ------------------------------------------------------------------------------------

namespace {

int launched(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    std::printf("%s: %s: %s\n", what, cudaGetErrorName(e), cudaGetErrorString(e));
    return 1;
  }
  return 0;
}

// Prints whether the results are right, and a checksum of the outputs' bytes (FNV-1a): runs whose
// checksums are equal gave bitwise equal results.
template <typename... T>
int expect(bool ok, const char* what, const std::vector<T>&... outputs) {
  uint64_t h = 14695981039346656037ull;
  [[maybe_unused]] auto add = [&h](const auto& v) {
    const auto* p = reinterpret_cast<const unsigned char*>(v.data());
    for (size_t i = 0; i < v.size() * sizeof(v[0]); ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  (add(outputs), ...);
  std::printf("%s: results %s, checksum %016llx\n", what, ok ? "right" : "WRONG", static_cast<unsigned long long>(h));
  return ok ? 0 : 2;
}

std::vector<float> ramp(int n) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = static_cast<float>(i % 17) - 8.0f;
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string c = argc > 1 ? argv[1] : "";
  // Every buffer is malloc'd at its exact size (a GPU's would be cudaMalloc'd): an access past its
  // end is past the allocation, where AddressSanitizer looks.
  if (c == "block_sum") {
    const int blocks = 5, n = 1000;
    std::vector<float> in = ramp(blocks * n), out(blocks);
    block_sum<<<blocks, kThreads>>>(in.data(), out.data(), n);
    if (launched(c.c_str())) return 1;
    bool ok = true;
    for (int b = 0; b < blocks; ++b) {
      float want = 0;
      for (int i = 0; i < n; ++i) want += in[b * n + i];
      ok = ok && std::fabs(out[b] - want) < 1e-3f;
    }
    return expect(ok, c.c_str(), out);
  }
  if (c == "warp_sums") {
    std::vector<float> in = ramp(96), sums(96), prev(96);
    warp_sums<<<1, 96>>>(in.data(), sums.data(), prev.data());
    if (launched(c.c_str())) return 1;
    bool ok = true;
    for (int i = 0; i < 96; ++i) {
      float want = 0;
      for (int l = 0; l < 32; ++l) want += in[i / 32 * 32 + l];
      ok = ok && sums[i] == want && prev[i] == in[i % 32 == 0 ? i : i - 1];
    }
    return expect(ok, c.c_str(), sums, prev);
  }
  if (c == "reverse_dynamic" || c == "dynamic_one_short") {
    const int n = 64;
    std::vector<float> in = ramp(2 * n), out(2 * n);
    // BUG (dynamic_one_short): one float less than the kernel indexes.
    const size_t smem = (c == "reverse_dynamic" ? n : n - 1) * sizeof(float);
    reverse_dynamic<<<2, n, smem>>>(in.data(), out.data());
    if (launched(c.c_str())) return 1;
    bool ok = true;
    for (int i = 0; i < 2 * n; ++i) ok = ok && out[i] == in[i / n * n + (n - 1 - i % n)];
    return expect(ok, c.c_str(), out);
  }
  if (c == "grid_sum" || c == "grid_sum_racy") {
    const int blocks = 7, n = 300;
    std::vector<float> in(blocks * n), total(1, 0.0f);
    for (int i = 0; i < blocks * n; ++i) in[i] = static_cast<float>(i % 13);  // every block's sum > 0
    if (c == "grid_sum") grid_sum<<<blocks, kThreads>>>(in.data(), total.data(), n);
    else grid_sum_racy<<<blocks, kThreads>>>(in.data(), total.data(), n);
    if (launched(c.c_str())) return 1;
    float want = 0;  // sums of small integers: exact in float, whatever the order of the additions
    for (float v : in) want += v;
    return expect(total[0] == want, c.c_str(), total);
  }
  if (c == "warp_votes") {
    const int n = 128;  // two blocks of two warps; warp 2 is all positive, the others are mixed
    std::vector<float> in = ramp(n);
    for (int i = 64; i < 96; ++i) in[i] = static_cast<float>(1 + i % 5);
    std::vector<unsigned> ballot(n);
    std::vector<int> any(n), all(n);
    warp_votes<<<2, 64>>>(in.data(), ballot.data(), any.data(), all.data());
    if (launched(c.c_str())) return 1;
    bool ok = true;
    for (int i = 0; i < n; ++i) {
      unsigned want = 0;
      bool all_positive = true;
      for (int l = 0; l < 32; ++l) {
        want |= unsigned{in[i / 32 * 32 + l] < 0} << l;
        all_positive = all_positive && in[i / 32 * 32 + l] > 0;
      }
      ok = ok && ballot[i] == want && any[i] == (want != 0) && all[i] == all_positive;
    }
    ok = ok && all[64] == 1 && any[0] == 1;  // both outcomes of each vote occur
    return expect(ok, c.c_str(), ballot, any, all);
  }
  if (c == "vote_after_return") {
    std::vector<float> in(96, 1.0f), negatives = ramp(32);  // only block 1 has lanes that return
    std::copy(negatives.begin(), negatives.end(), in.begin() + 32);
    std::vector<int> out(96);
    vote_after_return<<<3, 32>>>(in.data(), out.data());
    return launched(c.c_str()) != 0 ? 1 : expect(true, c.c_str());
  }
  if (c == "half_warp_vote") {
    std::vector<float> in = ramp(32);
    std::vector<unsigned> out(32);
    half_warp_vote<<<1, 32>>>(in.data(), out.data());
    return launched(c.c_str()) != 0 ? 1 : expect(true, c.c_str());
  }
  if (c == "missing_barrier") {
    std::vector<float> in = ramp(2 * kThreads), out(2 * kThreads);
    rotate_without_barrier<<<2, kThreads>>>(in.data(), out.data());
    if (launched(c.c_str())) return 1;
    bool ok = true;
    for (int i = 0; i < 2 * kThreads; ++i) ok = ok && out[i] == in[i / kThreads * kThreads + (i + 1) % kThreads];
    return expect(ok, c.c_str());
  }
  if (c == "oob_store") {
    const int n = 100;
    auto* x = static_cast<float*>(std::malloc(n * sizeof(float)));
    for (int i = 0; i < n; ++i) x[i] = 1.0f;
    scale_unguarded<<<(n + 63) / 64, 64>>>(x, n);
    const int r = launched(c.c_str());
    std::free(x);
    return r != 0 ? r : expect(true, c.c_str());
  }
  if (c == "half_warp_shuffle") {
    std::vector<float> in = ramp(32), out(32);
    half_warp_shuffle<<<1, 32>>>(in.data(), out.data());
    return launched(c.c_str()) != 0 ? 1 : expect(true, c.c_str());
  }
  if (c == "wrong_offset") {
    std::vector<float> in = ramp(32), out(32);
    wrong_offset_sum<<<1, 32>>>(in.data(), out.data());
    if (launched(c.c_str())) return 1;
    float want = 0;
    for (float v : in) want += v;
    bool ok = true;
    for (float v : out) ok = ok && v == want;
    return expect(ok, c.c_str());
  }
  if (c == "oversize_dynamic_shared") {
    std::vector<float> in = ramp(64), out(64);
    reverse_dynamic<<<1, 64, 64 * 1024>>>(in.data(), out.data());  // BUG: 64 KiB > 48 KiB
    return launched(c.c_str()) != 0 ? 1 : expect(true, c.c_str());
  }
#ifndef __NVCC__
  if (c == "oversize_static_shared") {
    std::vector<float> out(64);
    big_static_shared<<<1, 64>>>(out.data());
    return launched(c.c_str()) != 0 ? 1 : expect(true, c.c_str());
  }
#endif
  if (c == "launch_bounds") {
    std::vector<float> in = ramp(256), out(1);
    block_sum<<<1, 2 * kThreads>>>(in.data(), out.data(), 256);  // BUG: over __launch_bounds__(128)
    return launched(c.c_str()) != 0 ? 1 : expect(true, c.c_str());
  }
  if (c == "block_too_large") {
    std::vector<float> out(2048);
    divergent_barrier<<<1, 2048>>>(out.data());  // BUG: 2048 threads > 1024
    return launched(c.c_str()) != 0 ? 1 : expect(true, c.c_str());
  }
  if (c == "grid_too_large") {
    std::vector<float> out(64);
    divergent_barrier<<<dim3(1, 70000), 64>>>(out.data());  // BUG: gridDim.y > 65535
    return launched(c.c_str()) != 0 ? 1 : expect(true, c.c_str());
  }
  if (c == "divergent_barrier") {
    std::vector<float> out(64);
    divergent_barrier<<<1, 64>>>(out.data());
    return launched(c.c_str()) != 0 ? 1 : expect(true, c.c_str());
  }
  std::fprintf(stderr, "unknown case '%s'\n", c.c_str());
  return 3;
}
