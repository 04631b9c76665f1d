// activation.hpp: element-wise activations, forward and backward, for any array shape.
//
// Contract
// --------
//   none        y = x                                   dx = dy
//   relu        y = max(x, 0) (NaN stays NaN)           dx = dy where x > 0 (or y > 0), else 0
//   leaky_relu  y = x > 0 ? x : slope x                 dx = x > 0 ? dy : slope dy
//   tanh        y = tanh(x)                             dx = dy (1 - y^2)
//   sigmoid     y = 1 / (1 + exp(-x))                   dx = dy y (1 - y)
//   gelu        y = x/2 (1 + erf(x/sqrt 2))             dx = dy (Phi(x) + x phi(x))        (torch's default)
//   gelu_tanh   y = x/2 (1 + tanh(u)), u = sqrt(2/pi)(x + 0.044715 x^3)   (torch's approximate='tanh'),
//               computed as x sigmoid(2u), and its derivative with 1 - tanh^2 u = 4 sigmoid(2u) sigmoid(-2u):
//               the same function without the cancellation in 1 + tanh(u) for u << 0
// activation_forward(x, y) writes y (y may be x: in place). activation_backward(dy, x, y, dx) needs
// y (the forward output) for tanh and sigmoid, x (the input) for gelu and gelu_tanh, either for
// relu and leaky_relu (x preferred; y only with slope >= 0); dx may be dy.
// Memory: one read of each input, one write of the output per element (8 or 12 B per float32).
// tanh, sigmoid, erf and exp are Eigen's vectorized versions (float64 tanh and erf are the C
// library's). Measured max abs error of float32 results against float64, inputs ~ N(0, 9): tanh
// 2.4e-7, sigmoid 1.2e-7, gelu 9e-7 (its gradient 2.3e-7); torch's float32 tanh is closer (3e-8). Every element goes through the same packet code (64-element chunks,
// the last one padded), so results are bitwise the same for every thread count; across ISA paths
// they agree to a few ulp (the polynomials use fma where the ISA has it).
// dtypes: float32, float64, or bf16 (every array of the call): bf16 arrays are widened to float32
// in blocks, run through the float32 code and rounded to bf16 once (bf16.hpp); a bf16 result is
// the float32 kernel's result rounded to nearest even.
// Threading: OpenMP over the elements.
#pragma once

#include <cstdint>

#include "gradfuse/kernels.hpp"

namespace gf {

enum class Act : int32_t { none, relu, leaky_relu, tanh, sigmoid, gelu, gelu_tanh };

// Which saved tensor a backward reads: the forward's input x, its output y, or nothing.
enum class ActNeeds : int32_t { nothing, x_or_y, y, x };

#define GF_DECLARE_ACTIVATION(isa)                                                                                     \
  namespace isa {                                                                                                      \
  template <class T>                                                                                                   \
  void activation_forward(Act act, double slope, const T* x, T* y, int64_t n, int threads);                            \
  template <class T>                                                                                                   \
  void activation_backward(Act act, double slope, const T* dy, const T* x, const T* y, T* dx, int64_t n, int threads); \
  }
GF_FOR_EACH_ISA(GF_DECLARE_ACTIVATION)
#undef GF_DECLARE_ACTIVATION

}  // namespace gf
