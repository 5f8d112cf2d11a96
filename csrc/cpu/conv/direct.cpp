// Rung 1 of the CPU conv ladder: the definition, as seven nested loops.
//
//   y[n, o, i, j] = f( b[o] + Σ_{c < C/g} Σ_{a < kh} Σ_{b < kw}  x[n, g·C/g + c, i·s_h − p_t + a·d_h, j·s_w − p_l + b·d_w]
//                                                                 · w[o, c, a, b] ),     g = o / (O/g)
//
// (taps that land in the padding read zero). 2·N·O·OH·OW·K flops, K = (C/g)·kh·kw, and
// nothing else: no copies, no packing, no vectors. Every tensor is read through its strides,
// so any layout works as it is (NCHW, channels_last, a permuted or sliced view) and the
// output is written straight into the layout torch would return. Threads split the (n, o)
// planes and nothing more. This is the readable baseline and a second oracle for the faster
// rungs; at ResNet sizes it is 10-100x slower than them (the report has the figures).
//
// The backward is the same definition read the other way, written as gathers so that every
// output element belongs to one thread and is summed in a fixed order:
//   dx[n, c, h, w] = Σ_{o in c's group} Σ_{a, b : (h + p_t − a·d_h) / s_h = i and
//                                              (w + p_l − b·d_w) / s_w = j are whole and in range}  dz[n, o, i, j] · w[o, c', a, b]
//   dw[o, c', a, b] = Σ_{n, i, j} dz[n, o, i, j] · x[n, g·C/g + c', i·s_h − p_t + a·d_h, j·s_w − p_l + b·d_w]
#include <ATen/Parallel.h>

#include "conv.h"

namespace minitorch_nn {
namespace conv {
namespace {

template <typename T, Act A>
void forward(const ConvShape& s, View4<const T> x, View4<const T> w, const T* bias, View4<T> y) {
  const int64_t Cg = s.Cg(), Og = s.Og();
  at::parallel_for(0, s.N * s.O, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / s.O, o = p % s.O, c_base = (o / Og) * Cg;
      for (int64_t i = 0; i < s.OH; ++i) {
        for (int64_t j = 0; j < s.OW; ++j) {
          T acc = 0;
          for (int64_t c = 0; c < Cg; ++c) {
            for (int64_t a = 0; a < s.kh; ++a) {
              const int64_t h = s.in_row(i, a);
              if (h < 0 || h >= s.H) continue;
              for (int64_t b = 0; b < s.kw; ++b) {
                const int64_t v = s.in_col(j, b);
                if (v < 0 || v >= s.W) continue;
                acc += x(n, c_base + c, h, v) * w(o, c, a, b);
              }
            }
          }
          if (bias) acc += bias[o];
          y(n, o, i, j) = act_forward<A>(acc);
        }
      }
    }
  });
}

template <typename T>
void grad_input(const ConvShape& s, View4<const T> dz, View4<const T> w, View4<T> dx) {
  const int64_t Cg = s.Cg(), Og = s.Og();
  at::parallel_for(0, s.N * s.C, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / s.C, c = p % s.C, g = c / Cg, cg = c % Cg;
      for (int64_t h = 0; h < s.H; ++h) {
        for (int64_t v = 0; v < s.W; ++v) {
          T acc = 0;
          for (int64_t o = g * Og; o < (g + 1) * Og; ++o) {
            for (int64_t a = 0; a < s.kh; ++a) {
              int64_t i;
              if (!s.out_row(h, a, &i)) continue;
              for (int64_t b = 0; b < s.kw; ++b) {
                int64_t j;
                if (!s.out_col(v, b, &j)) continue;
                acc += dz(n, o, i, j) * w(o, cg, a, b);
              }
            }
          }
          dx(n, c, h, v) = acc;
        }
      }
    }
  });
}

template <typename T>
void grad_weight(const ConvShape& s, View4<const T> dz, View4<const T> x, View4<T> dw) {
  const int64_t Cg = s.Cg(), Og = s.Og();
  at::parallel_for(0, s.O * Cg, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t o = p / Cg, cg = p % Cg, c = (o / Og) * Cg + cg;
      for (int64_t a = 0; a < s.kh; ++a) {
        for (int64_t b = 0; b < s.kw; ++b) {
          T acc = 0;
          for (int64_t n = 0; n < s.N; ++n) {
            for (int64_t i = 0; i < s.OH; ++i) {
              const int64_t h = s.in_row(i, a);
              if (h < 0 || h >= s.H) continue;
              for (int64_t j = 0; j < s.OW; ++j) {
                const int64_t v = s.in_col(j, b);
                if (v < 0 || v >= s.W) continue;
                acc += dz(n, o, i, j) * x(n, c, h, v);
              }
            }
          }
          dw(o, cg, a, b) = acc;
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void direct_forward(const ConvShape& s, View4<const T> x, View4<const T> w, const T* bias, Act act, View4<T> y) {
  dispatch_act(act, [&](auto A) { forward<T, decltype(A)::value>(s, x, w, bias, y); });
}

template <typename T>
void direct_backward(const ConvShape& s, View4<const T> dz, View4<const T> x, View4<const T> w, View4<T>* dx,
                     View4<T>* dw) {
  if (dx) grad_input(s, dz, w, *dx);
  if (dw) grad_weight(s, dz, x, *dw);
}

template void direct_forward<float>(const ConvShape&, View4<const float>, View4<const float>, const float*, Act,
                                    View4<float>);
template void direct_forward<double>(const ConvShape&, View4<const double>, View4<const double>, const double*, Act,
                                     View4<double>);
template void direct_backward<float>(const ConvShape&, View4<const float>, View4<const float>, View4<const float>,
                                     View4<float>*, View4<float>*);
template void direct_backward<double>(const ConvShape&, View4<const double>, View4<const double>, View4<const double>,
                                      View4<double>*, View4<double>*);

}  // namespace conv
}  // namespace minitorch_nn
