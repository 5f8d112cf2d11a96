// Checks rung 3 of the CUDA conv ladder (csrc/cuda/conv_mma.cu, tensor cores) and the instruction
// semantics behind it (csrc/cuda/mma.cuh), without torch. Exits non-zero on any failure.
//
//   bash csrc/emu/run_conv_mma_demo.sh          # on the CPU, through the CUDA emulator
//
// This file is CUDA C++ (a test kernel and its launch): the script rewrites it with
// csrc/emu/cu2cpp.py like a .cu file. On a machine with a GPU the same file builds with nvcc and
// runs there, which checks the inline PTX itself (the emulator runs mma.cuh's C++ twin instead):
//   nvcc -x cu -std=c++20 -O2 -arch=sm_80 --expt-relaxed-constexpr -Icsrc/cuda
//        csrc/emu/examples/conv_mma_demo.cpp csrc/cuda/conv_mma.cu -o conv_mma_demo   (one line)
//   ./conv_mma_demo
//
// Part 1, fragments: one warp builds its mma.m16n8k16 A and B fragments element by element from
// row-major A (16x16) and B (16x8) with the PTX ISA's row/column formulas, runs the mma, scatters
// its C fragment by the formula; the result must equal C + A·B exactly (small integers: every sum
// is exact in float). The same warp loads A and Bᵀ from shared memory with ldmatrix.x4 the way the
// conv kernel does, and the registers must equal the formula-built ones bit for bit. cp.async with
// and without zero-fill is checked too.
// Part 2, the conv: conv2d_mma_forward for bfloat16 and float16 against a float64 loop over the
// same (rounded) inputs, over shapes that cover odd sizes, stride, padding, dilation, 1x1, several
// k-slices (a slice spanning taps when C = 8, 24, 56), edge tiles in m and in o (warps with nothing
// to compute), blocks that loop over several tiles (the script builds with MTNN_MAX_GRID=2; the
// last slice's stage differs between cases, so the barrier between tiles matters), padded
// (non-dense) strides, and every activation. Gaps of the padded strides hold NaN in x (a read of
// one poisons the result) and a sentinel in y (a write to one is caught).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "conv.h"
#include "mma.cuh"

namespace {

using minitorch_nn::Act;
using minitorch_nn::conv::ConvShape;
using minitorch_nn::cuda::Strided4;
namespace mma = minitorch_nn::cuda::mma;

// Memory both the kernels and this host code address: managed memory on a GPU, plain 64-byte
// aligned memory under the emulator (whose "device" is this process).
template <typename T>
T* alloc(size_t n) {
  void* p = nullptr;
#if defined(__CUDACC__)
  if (cudaMallocManaged(&p, n * sizeof(T) + 64) != cudaSuccess) std::abort();
#else
  p = std::aligned_alloc(64, (n * sizeof(T) + 64 + 63) / 64 * 64);
#endif
  return static_cast<T*>(p);
}
void release(void* p) {
#if defined(__CUDACC__)
  cudaFree(p);
#else
  std::free(p);
#endif
}

template <typename T>
unsigned short bits_of(T v) {
  unsigned short u;
  std::memcpy(&u, &v, 2);
  return u;
}
template <typename T>
float as_float(T v) {
  if constexpr (std::is_same_v<T, __half>)
    return __half2float(v);
  else
    return __bfloat162float(v);
}
template <typename T>
T round_to(float v) {
  if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(v);
  else
    return __float2bfloat16_rn(v);
}
template <typename T>
const char* name_of() {
  return std::is_same_v<T, __half> ? "float16" : "bfloat16";
}

uint64_t rng_state = 0x2545F4914F6CDD1Dull;
double uniform(double lo, double hi) {  // xorshift64*: the same numbers on every machine
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  const uint64_t r = rng_state * 0x2545F4914F6CDD1Dull;
  return lo + (hi - lo) * static_cast<double>(r >> 11) * 0x1.0p-53;
}

// ---- part 1: fragment semantics ---------------------------------------------------------------

template <typename T>
__device__ void set_half(uint32_t& reg, int which, T v) {  // which 0: low 16 bits (lower index)
  unsigned short u;
  memcpy(&u, &v, 2);
  reg = which == 0 ? (reg & 0xffff0000u) | u : (reg & 0x0000ffffu) | (static_cast<uint32_t>(u) << 16);
}

// A: 16x16 row-major, B: 16x8 row-major (k, n), C and D: 16x8 row-major. One warp.
template <typename T>
__global__ void __launch_bounds__(32)
    fragment_test(const T* A, const T* B, const float* C, float* D, const uint4* copy_src, int* bad) {
  __shared__ __align__(16) unsigned short sA[16 * 16];   // A, rows of 16 (two 16-byte chunks)
  __shared__ __align__(16) unsigned short sBt[8 * 16];   // Bᵀ: row n holds B[0..15][n]
  __shared__ __align__(16) uint4 sCopy[32];
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;

  // The fragments, by the PTX ISA's formulas (mma.cuh).
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  for (int i = 0; i < 8; ++i) {
    const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
    const int col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
    set_half(a[i / 2], i & 1, A[row * 16 + col]);
  }
  for (int i = 0; i < 4; ++i) {
    const int row = 2 * t + (i & 1) + (i >= 2 ? 8 : 0), col = g;
    set_half(b[i / 2], i & 1, B[row * 8 + col]);
  }
  float d[4];
  for (int i = 0; i < 4; ++i) d[i] = C[(g + (i >= 2 ? 8 : 0)) * 8 + 2 * t + (i & 1)];
  if constexpr (std::is_same_v<T, __half>)
    mma::mma_m16n8k16_f16(d, a, b);
  else
    mma::mma_m16n8k16_bf16(d, a, b);
  for (int i = 0; i < 4; ++i) D[(g + (i >= 2 ? 8 : 0)) * 8 + 2 * t + (i & 1)] = d[i];

  // ldmatrix, addressed as conv_mma.cu does.
  for (int e = lane; e < 256; e += 32) memcpy(&sA[e], &A[e], 2);
  for (int e = lane; e < 128; e += 32) memcpy(&sBt[(e % 8) * 16 + e / 8], &B[e], 2);  // e = k·8 + n
  __syncthreads();
  uint32_t la[4], lb[4];
  mma::ldmatrix_x4(la, &sA[(lane % 16) * 16 + (lane / 16) * 8]);  // pixel row l % 16, k chunk l / 16
  mma::ldmatrix_x4(lb, &sBt[(lane % 8) * 16 + ((lane / 8) & 1) * 8]);  // one n8 tile, twice over
  int wrong = 0;
  for (int j = 0; j < 4; ++j) wrong += la[j] != a[j];
  wrong += (lb[0] != b[0]) + (lb[1] != b[1]) + (lb[2] != b[0]) + (lb[3] != b[1]);

  // cp.async: even lanes copy their 16 bytes, odd lanes zero-fill.
  mma::cp_async_16(&sCopy[lane], &copy_src[lane], lane % 2 == 0);
  mma::cp_async_commit();
  mma::cp_async_wait<0>();
  const uint4 got = sCopy[lane], want = lane % 2 == 0 ? copy_src[lane] : uint4{0, 0, 0, 0};
  wrong += got.x != want.x || got.y != want.y || got.z != want.z || got.w != want.w;
  if (wrong) atomicAdd(bad, wrong);
}

template <typename T>
bool check_fragments() {
  T* A = alloc<T>(256);
  T* B = alloc<T>(128);
  float* C = alloc<float>(128);
  float* D = alloc<float>(128);
  uint4* src = alloc<uint4>(32);
  int* bad = alloc<int>(1);
  for (int e = 0; e < 256; ++e) A[e] = round_to<T>(static_cast<float>(std::lround(uniform(-8.5, 8.5))));
  for (int e = 0; e < 128; ++e) B[e] = round_to<T>(static_cast<float>(std::lround(uniform(-8.5, 8.5))));
  for (int e = 0; e < 128; ++e) C[e] = static_cast<float>(std::lround(uniform(-100.5, 100.5)));
  for (int e = 0; e < 32; ++e) src[e] = uint4{1u + 4u * e, 2u + 4u * e, 3u + 4u * e, 4u + 4u * e};
  *bad = 0;
  fragment_test<T><<<1, 32>>>(A, B, C, D, src, bad);
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) err = cudaDeviceSynchronize();
  int wrong_d = 0;
  for (int r = 0; r < 16 && err == cudaSuccess; ++r) {
    for (int n = 0; n < 8; ++n) {
      double want = C[r * 8 + n];
      for (int k = 0; k < 16; ++k) want += double(as_float(A[r * 16 + k])) * as_float(B[k * 8 + n]);
      wrong_d += D[r * 8 + n] != want;  // exact: integers, |sum| < 2^24
    }
  }
  const bool ok = err == cudaSuccess && wrong_d == 0 && *bad == 0;
  std::printf("%-4s fragments %-8s  mma.m16n8k16 D = C + A·B: %d of 128 wrong; ldmatrix / cp.async: %d wrong%s%s\n",
              ok ? "ok" : "FAIL", name_of<T>(), wrong_d, *bad, err == cudaSuccess ? "" : "; launch: ",
              err == cudaSuccess ? "" : cudaGetErrorString(err));
  for (void* p : {static_cast<void*>(A), static_cast<void*>(B), static_cast<void*>(C), static_cast<void*>(D),
                  static_cast<void*>(src), static_cast<void*>(bad)})
    release(p);
  return ok;
}

// ---- part 2: the convolution ----------------------------------------------------------------------

struct Case {
  int64_t N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw;
  Act act;
  bool bias;
  int64_t x_gap, y_gap;  // extra elements after each pixel's channels (multiples of 8): padded strides
};

double act_ref(Act act, double z) {
  return minitorch_nn::dispatch_act(act, [&](auto a) { return minitorch_nn::act_forward<decltype(a)::value>(z); });
}

// Tolerance for one output, derived from where the kernel rounds (z = Σ_k x_k·w_k + bias):
//   * products: exact in float (two ≤ 11-bit significands), so inputs add no error of their own
//     (the reference uses the same rounded values);
//   * the float32 sum over K terms and the bias: |error| ≤ γ·S with γ ≈ (K + 1)·u32, u32 = 2^-24,
//     S = Σ|x_k·w_k| + |bias| (the standard bound for any summation order, which also covers the
//     tensor cores' order); we take 2·(K + 1)·u32·S for margin over the order's constant;
//   * f in float: f is at most ~1.13-Lipschitz (GELU's max slope; ReLU, SiLU, Mish, GELU-tanh are
//     below 1.13), so the sum's error grows by ≤ 1.2x; expf/erff/tanhf/log1pf add a few float ulps,
//     bounded by 16·u32·(1 + |z|);
//   * rounding to T: |round(v) − v| ≤ u_T·|v| (u_T = 2^-8 bfloat16, 2^-11 float16), plus half the
//     subnormal spacing for float16 (2^-25) near zero.
// So |y − f(z)| ≤ u_T·|f(z)| + (1 + u_T)·ε + floor, ε = 1.2·2·(K + 1)·u32·S + 16·u32·(1 + |z|).
// A single wrong tap or channel moves y by |x·w| ~ S/K, far beyond this for every case below.
template <typename T>
double tolerance(double fz, double z, double S, int64_t K) {
  const double u32 = std::ldexp(1.0, -24);
  const double uT = std::is_same_v<T, __half> ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
  const double floor = std::is_same_v<T, __half> ? std::ldexp(1.0, -25) : 1e-38;
  const double eps = 1.2 * 2.0 * static_cast<double>(K + 1) * u32 * S + 16.0 * u32 * (1.0 + std::fabs(z));
  return uT * std::fabs(fz) + (1.0 + uT) * eps + floor;
}

template <typename T>
bool check_conv(const Case& c) {
  ConvShape s{};
  s.N = c.N, s.C = c.C, s.H = c.H, s.W = c.W, s.O = c.O, s.kh = c.kh, s.kw = c.kw;
  s.stride_h = c.sh, s.stride_w = c.sw, s.pad_top = c.ph, s.pad_left = c.pw, s.dil_h = c.dh, s.dil_w = c.dw;
  s.groups = 1;
  s.OH = (c.H + 2 * c.ph - c.dh * (c.kh - 1) - 1) / c.sh + 1;
  s.OW = (c.W + 2 * c.pw - c.dw * (c.kw - 1) - 1) / c.sw + 1;
  const int64_t K = s.K();
  // NHWC with a pixel stride of C + gap (x, y); the weight channels_last and dense.
  const int64_t xp = c.C + c.x_gap, yp = c.O + c.y_gap;
  const int64_t nx = c.N * c.H * c.W * xp, nw = c.O * K, ny = c.N * s.OH * s.OW * yp;
  T* x = alloc<T>(nx);
  T* w = alloc<T>(nw);
  T* b = alloc<T>(c.O);
  T* y = alloc<T>(ny);
  const T poison = round_to<T>(NAN), sentinel = round_to<T>(-12345.0f);
  for (int64_t e = 0; e < nx; ++e) x[e] = e % xp < c.C ? round_to<T>(static_cast<float>(uniform(-1, 1))) : poison;
  const double wscale = 2.0 / std::sqrt(static_cast<double>(K));
  for (int64_t e = 0; e < nw; ++e) w[e] = round_to<T>(static_cast<float>(uniform(-wscale, wscale)));
  for (int64_t o = 0; o < c.O; ++o) b[o] = round_to<T>(static_cast<float>(uniform(-0.5, 0.5)));
  for (int64_t e = 0; e < ny; ++e) y[e] = sentinel;
  const Strided4<const T> xs{x, c.H * c.W * xp, 1, c.W * xp, xp};
  const Strided4<const T> ws{w, c.kh * c.kw * c.C, 1, c.kw * c.C, c.C};
  const Strided4<T> ys{y, s.OH * s.OW * yp, 1, s.OW * yp, yp};

  char what[200];
  std::snprintf(what, sizeof what,
                "%-8s N=%lld C=%lld %lldx%lld O=%lld k=%lldx%lld s=%lld,%lld p=%lld,%lld d=%lld,%lld %s%s%s",
                name_of<T>(), (long long)c.N, (long long)c.C, (long long)c.H, (long long)c.W, (long long)c.O,
                (long long)c.kh, (long long)c.kw, (long long)c.sh, (long long)c.sw, (long long)c.ph, (long long)c.pw,
                (long long)c.dh, (long long)c.dw, minitorch_nn::activation_name(c.act), c.bias ? " +bias" : "",
                c.x_gap || c.y_gap ? " strided" : "");
  bool ok = minitorch_nn::cuda::conv2d_mma_supported<T>(s, xs, ws, ys);
  if (!ok) std::printf("FAIL %s: conv2d_mma_supported says no\n", what);
  cudaError_t err = cudaSuccess;
  if (ok) {
    err = minitorch_nn::cuda::conv2d_mma_forward<T>(s, xs, ws, c.bias ? b : nullptr, c.act, ys, nullptr);
    if (err == cudaSuccess) err = cudaDeviceSynchronize();
    if (err != cudaSuccess) {
      std::printf("FAIL %s: %s\n", what, cudaGetErrorString(err));
      ok = false;
    }
  }
  double worst = 0, worst_err = 0;
  int64_t bad = 0, touched_gaps = 0;
  for (int64_t n = 0; ok && n < c.N; ++n) {
    for (int64_t i = 0; i < s.OH; ++i) {
      for (int64_t j = 0; j < s.OW; ++j) {
        const T* yrow = y + ((n * s.OH + i) * s.OW + j) * yp;
        for (int64_t g = c.O; g < yp; ++g) touched_gaps += bits_of(yrow[g]) != bits_of(sentinel);
        for (int64_t o = 0; o < c.O; ++o) {
          double z = c.bias ? as_float(b[o]) : 0.0, S = std::fabs(z);
          for (int64_t a = 0; a < c.kh; ++a) {
            for (int64_t bb = 0; bb < c.kw; ++bb) {
              const int64_t ih = s.in_row(i, a), iw = s.in_col(j, bb);
              if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
              for (int64_t ch = 0; ch < c.C; ++ch) {
                const double p = double(as_float(x[((n * c.H + ih) * c.W + iw) * xp + ch])) *
                                 as_float(w[((o * c.kh + a) * c.kw + bb) * c.C + ch]);
                z += p;
                S += std::fabs(p);
              }
            }
          }
          const double fz = act_ref(c.act, z), got = as_float(yrow[o]);
          const double err_o = std::fabs(got - fz), tol = tolerance<T>(fz, z, S, K);
          if (!(err_o <= tol)) ++bad;  // NaN counts as bad
          if (err_o / tol > worst || std::isnan(got)) worst = std::isnan(got) ? INFINITY : err_o / tol;
          worst_err = std::fmax(worst_err, err_o);
        }
      }
    }
  }
  if (ok) {
    ok = bad == 0 && touched_gaps == 0;
    std::printf("%-4s %s: M=%lld K=%lld, max |err| %.3g = %.2f of tolerance; %lld outside it, %lld gap writes\n",
                ok ? "ok" : "FAIL", what, (long long)(c.N * s.OH * s.OW), (long long)K, worst_err, worst,
                (long long)bad, (long long)touched_gaps);
  }
  release(x);
  release(w);
  release(b);
  release(y);
  return ok;
}

// What conv2d_mma_supported must turn down (the glue then falls back to rung 2).
bool check_supported() {
  using minitorch_nn::cuda::conv2d_mma_supported;
  ConvShape s{};
  s.N = 1, s.C = 16, s.H = 5, s.W = 5, s.O = 16, s.kh = 3, s.kw = 3, s.OH = 3, s.OW = 3;
  s.stride_h = s.stride_w = s.dil_h = s.dil_w = 1, s.groups = 1;
  auto* buf = alloc<__nv_bfloat16>(4096);
  const Strided4<const __nv_bfloat16> x{buf, 400, 1, 80, 16}, w{buf, 144, 1, 48, 16};
  const Strided4<__nv_bfloat16> y{buf, 144, 1, 48, 16};
  int wrong = 0;
  wrong += !conv2d_mma_supported(s, x, w, y);
  ConvShape g = s;
  g.groups = 2;
  wrong += conv2d_mma_supported(g, x, w, y);
  ConvShape c12 = s;
  c12.C = 12;
  wrong += conv2d_mma_supported(c12, Strided4<const __nv_bfloat16>{buf, 300, 1, 60, 12}, w, y);
  ConvShape o12 = s;
  o12.O = 12;
  wrong += conv2d_mma_supported(o12, x, w, Strided4<__nv_bfloat16>{buf, 108, 1, 36, 12});
  wrong += conv2d_mma_supported(s, Strided4<const __nv_bfloat16>{buf, 400, 25, 5, 1}, w, y);  // NCHW x
  wrong += conv2d_mma_supported(s, Strided4<const __nv_bfloat16>{buf + 1, 400, 1, 80, 16}, w, y);  // misaligned
  wrong += conv2d_mma_supported(s, x, w, Strided4<__nv_bfloat16>{buf, 148, 1, 49, 17});  // odd y strides
  auto* fbuf = alloc<float>(4096);
  wrong += conv2d_mma_supported(s, Strided4<const float>{fbuf, 400, 1, 80, 16}, Strided4<const float>{fbuf, 144, 1, 48, 16},
                                Strided4<float>{fbuf, 144, 1, 48, 16});
  auto* dbuf = alloc<double>(4096);
  wrong += conv2d_mma_supported(s, Strided4<const double>{dbuf, 400, 1, 80, 16},
                                Strided4<const double>{dbuf, 144, 1, 48, 16}, Strided4<double>{dbuf, 144, 1, 48, 16});
  auto* hbuf = alloc<__half>(4096);
  wrong += !conv2d_mma_supported(s, Strided4<const __half>{hbuf, 400, 1, 80, 16},
                                 Strided4<const __half>{hbuf, 144, 1, 48, 16}, Strided4<__half>{hbuf, 144, 1, 48, 16});
  release(buf);
  release(fbuf);
  release(dbuf);
  release(hbuf);
  std::printf("%-4s conv2d_mma_supported: %d of 10 answers wrong\n", wrong ? "FAIL" : "ok", wrong);
  return wrong == 0;
}

}  // namespace

int main() {
  bool ok = true;
  ok &= check_fragments<__nv_bfloat16>();
  ok &= check_fragments<__half>();
  ok &= check_supported();
  // N, C, H, W, O, kh, kw, stride h/w, pad h/w, dil h/w, activation, bias, x gap, y gap.
  const Case cases[] = {
      {2, 8, 7, 7, 8, 3, 3, 1, 1, 1, 1, 1, 1, Act::None, true, 0, 0},        // smallest: C = O = 8
      {1, 16, 9, 11, 16, 3, 3, 2, 2, 1, 1, 1, 1, Act::ReLU, true, 0, 0},     // odd H, W; stride 2
      {2, 24, 9, 9, 40, 3, 3, 1, 1, 1, 1, 1, 1, Act::GELU, true, 8, 8},      // C = 24, O = 40; padded strides
      {1, 16, 10, 10, 16, 3, 3, 1, 1, 2, 2, 2, 2, Act::SiLU, false, 0, 0},   // dilation 2
      {3, 24, 8, 8, 40, 1, 1, 1, 1, 0, 0, 1, 1, Act::Mish, false, 0, 8},     // 1x1; M = 192 (1.5 m-tiles)
      {1, 8, 7, 5, 8, 2, 3, 1, 2, 0, 1, 1, 1, Act::GELUTanh, true, 8, 0},    // 2x3 kernel, stride (1, 2)
      {1, 32, 6, 6, 136, 3, 3, 1, 1, 1, 1, 1, 1, Act::ReLU, true, 0, 0},     // K = 288 (9 slices); 2 o-tiles
      {2, 8, 13, 12, 16, 3, 3, 1, 1, 1, 1, 1, 2, Act::GELU, true, 0, 0},     // 260 pixels: 3 m-tiles
      {2, 56, 12, 12, 136, 3, 3, 1, 1, 1, 1, 1, 1, Act::SiLU, true, 8, 8},   // 3 x 2 tiles, 16 slices
      {2, 32, 12, 12, 24, 1, 1, 1, 1, 0, 0, 1, 1, Act::ReLU, true, 0, 0},    // 3 tiles of 1 slice each
  };
  for (const Case& c : cases) {
    ok &= check_conv<__nv_bfloat16>(c);
    ok &= check_conv<__half>(c);
  }
  std::printf(ok ? "all passed\n" : "FAILED\n");
  return ok ? 0 : 1;
}
