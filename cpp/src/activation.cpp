// activation.cpp: element-wise activation kernels (contract in gradfuse/activation.hpp), compiled
// once per ISA into gf::<isa>. The math is in activation_ops.hpp, shared with the dense epilogue.
#include "gradfuse/activation.hpp"

#include "gradfuse/activation_ops.hpp"
#include "gradfuse/parallel.hpp"

namespace gf {
namespace GF_ISA_NS {

namespace {}

template <class T>
void activation_forward(Act act, double slope, const T* x, T* y, int64_t n, int threads) {
  parallel_for(n, threads, kGrain, [&](int64_t lo, int64_t hi) {
    act_forward_span<T>(act, static_cast<T>(slope), x + lo, nullptr, nullptr, y + lo, hi - lo);
  });
}

template <class T>
void activation_backward(Act act, double slope, const T* dy, const T* x, const T* y, T* dx, int64_t n, int threads) {
  parallel_for(n, threads, kGrain, [&](int64_t lo, int64_t hi) {
    act_backward_span<T>(act, static_cast<T>(slope), dy + lo, x ? x + lo : nullptr, y ? y + lo : nullptr, dx + lo,
                         hi - lo);
  });
}

template void activation_forward<float>(Act, double, const float*, float*, int64_t, int);
template void activation_forward<double>(Act, double, const double*, double*, int64_t, int);
template void activation_backward<float>(Act, double, const float*, const float*, const float*, float*, int64_t, int);
template void activation_backward<double>(Act, double, const double*, const double*, const double*, double*, int64_t,
                                          int);

}  // namespace GF_ISA_NS
}  // namespace gf
