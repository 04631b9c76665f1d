// activation.cpp: element-wise activation kernels (contract in gradfuse/activation.hpp), compiled
// once per ISA into gf::<isa>. The math is in activation_ops.hpp, shared with the dense epilogue.
#include "gradfuse/activation.hpp"

#include <algorithm>

#include "gradfuse/activation_ops.hpp"
#include "gradfuse/parallel.hpp"

namespace gf {
namespace GF_ISA_NS {

namespace {

// bf16 arrays run the float32 code on blocks staged in L1-sized buffers: widen, compute, round once.
constexpr int64_t kStage = 512;

}  // namespace

template <class T>
void activation_forward(Act act, double slope, const T* x, T* y, int64_t n, int threads) {
  parallel_for(n, threads, kGrain, [&](int64_t lo, int64_t hi) {
    if constexpr (is_bf16<T>) {
      float xs[kStage], ys[kStage];
      for (int64_t i = lo; i < hi; i += kStage) {
        const int64_t m = std::min(kStage, hi - i);
        widen_bf16(x + i, xs, m);
        act_forward_span<float>(act, static_cast<float>(slope), xs, nullptr, nullptr, ys, m);
        narrow_bf16(ys, y + i, m);
      }
    } else {
      act_forward_span<T>(act, static_cast<T>(slope), x + lo, nullptr, nullptr, y + lo, hi - lo);
    }
  });
}

template <class T>
void activation_backward(Act act, double slope, const T* dy, const T* x, const T* y, T* dx, int64_t n, int threads) {
  parallel_for(n, threads, kGrain, [&](int64_t lo, int64_t hi) {
    if constexpr (is_bf16<T>) {
      float dys[kStage], xs[kStage], ys[kStage], dxs[kStage];
      for (int64_t i = lo; i < hi; i += kStage) {
        const int64_t m = std::min(kStage, hi - i);
        widen_bf16(dy + i, dys, m);
        if (x) widen_bf16(x + i, xs, m);
        if (y) widen_bf16(y + i, ys, m);
        act_backward_span<float>(act, static_cast<float>(slope), dys, x ? xs : nullptr, y ? ys : nullptr, dxs, m);
        narrow_bf16(dxs, dx + i, m);
      }
    } else {
      act_backward_span<T>(act, static_cast<T>(slope), dy + lo, x ? x + lo : nullptr, y ? y + lo : nullptr, dx + lo,
                           hi - lo);
    }
  });
}

template void activation_forward<float>(Act, double, const float*, float*, int64_t, int);
template void activation_forward<double>(Act, double, const double*, double*, int64_t, int);
template void activation_backward<float>(Act, double, const float*, const float*, const float*, float*, int64_t, int);
template void activation_backward<double>(Act, double, const double*, const double*, const double*, double*, int64_t,
                                          int);
template void activation_forward<bf16>(Act, double, const bf16*, bf16*, int64_t, int);
template void activation_backward<bf16>(Act, double, const bf16*, const bf16*, const bf16*, bf16*, int64_t, int);

}  // namespace GF_ISA_NS
}  // namespace gf
