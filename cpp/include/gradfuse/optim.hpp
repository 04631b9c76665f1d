// optim.hpp: the fused optimizer engine, shared by the bindings and the per-ISA kernel bodies
// (cpp/src/optim.cpp). Plain data and declarations only.
//
// Contract
// --------
// One call steps a list of tensors (parameters, their gradients, and up to three state tensors per
// parameter) as ONE index space: the concatenation of all elements, split over threads in
// contiguous blocks. Adjacent tensors (an arena) are coalesced into one segment by the bindings, so
// a whole model steps in one pass over memory. Everything is updated in place; each element of
// each array is read once and written once (per-parameter bytes below, float32; float64 doubles
// them). Element-wise math only, with the same operation order on every ISA path and no fma, so a
// step is bitwise identical for every thread count, every ISA path and the NumPy twin.
//
// Gradient prologue, common to all: g <- g / grad_scale (if given); g <- -g (if maximize).
//
// algo      state[0..2]                            formula (torch.optim, foreach=False)     B/param
// sgd       momentum_buffer                        g += wd p; b = first ? g : mu b+(1-damp) g;  12 / 20
//                                                  g = nesterov ? g + mu b : b; p -= lr g
// adam      exp_avg, exp_avg_sq, max_exp_avg_sq    decoupled: p *= 1-lr wd, else g += wd p;     28 / 36
//                                                  m += (1-b1)(g-m); v = b2 v + (1-b2) g g;
//                                                  vmax = max(vmax, v) (amsgrad);
//                                                  p -= lr/bc1 * m / (sqrt(v or vmax) (1/sqrt(bc2)) + eps)
// adagrad   sum                                    g += wd p; s += g g; p -= clr g / (sqrt(s)+eps)  20
// rmsprop   square_avg, grad_avg, momentum_buffer  g += wd p; a = alpha a + (1-alpha) g g;   20/28/36
//                                                  centered: ga += (1-alpha)(g-ga), a' = a - ga^2;
//                                                  d = sqrt(a') + eps; b = mu b + g/d; p -= lr b
//                                                  (no momentum: p -= lr g/d)
// adadelta  square_avg, acc_delta                  g += wd p; a = rho a + (1-rho) g g;             28
//                                                  d = sqrt(u+eps)/sqrt(a+eps) g;
//                                                  u = rho u + (1-rho) d d; p -= lr d
// adamax    exp_avg, exp_inf                       g += wd p; m += (1-b1)(g-m);                    28
//                                                  u = max(b2 u, |g|+eps); p -= lr/bc1 m/u
// nadam     exp_avg, exp_avg_sq                    (decoupled) wd; m, v as adam; d = sqrt(v (1/bc2))+eps 28
//                                                  p += c1 g/d; p += c2 m/d  (mu, mu_product)
// radam     exp_avg, exp_avg_sq                    (decoupled) wd; m, v as adam; rho_t > 5:        28
//                                                  p -= m (1/bc1) lr sqrt(bc2)/(sqrt(v)+eps) rect
//                                                  else p -= m (1/bc1) lr
// rprop     prev, step_size                        s = g prev; f = eta+ (s>0), eta- (s<0), 1;      28
//                                                  step = clamp(step f); g = 0 where s<0;
//                                                  p -= sign(g) step; prev = g
// lion      exp_avg                                p *= 1-lr wd; p -= lr sign(b1 m + (1-b1) g);    20
//                                                  m = b2 m + (1-b2) g
//
// skip_nonfinite: one extra read of the gradients (4 B/param) BEFORE anything is written; if any
// (scaled) gradient is NaN or Inf the call writes nothing and returns false.
// Threading: OpenMP, parallel over the concatenated elements; the GIL is released by the bindings.
#pragma once

#include <cstdint>

#include "gradfuse/kernels.hpp"

namespace gf {

// touch: p += 0 g, s += 0 g. The memory traffic of a step with no math: the benchmark's ceiling.
enum class Algo : int32_t { sgd, adam, adagrad, rmsprop, adadelta, adamax, nadam, radam, rprop, lion, touch };

// The scalar arguments of one step. Each algorithm reads the fields its formula uses.
struct OptimArgs {
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  double momentum = 0, dampening = 0, alpha = 0, rho = 0, lr_decay = 0;
  double momentum_decay = 0, mu_product = 1;  // nadam: mu_product includes this step's mu
  double etaminus = 0, etaplus = 0, step_size_min = 0, step_size_max = 0;
  double grad_scale = 1;
  int64_t step = 1;  // the step being taken, 1-based
  bool has_grad_scale = false, maximize = false, nesterov = false, amsgrad = false;
  bool centered = false, decoupled_weight_decay = false, first_step = false;
};

constexpr int kMaxStates = 3;

// Segments of one multi-tensor call, after validation and coalescing by the bindings.
template <class T>
struct TensorList {
  int64_t count = 0;                      // number of segments
  const int64_t* offset = nullptr;        // count + 1 prefix sums of segment sizes
  T* const* param = nullptr;              // [count]
  const T* const* grad = nullptr;         // [count]
  T* const* state[kMaxStates] = {};       // [count] each, or null when the state is absent
};

#define GF_DECLARE_OPTIM(isa)                                                                         \
  namespace isa {                                                                                     \
  template <class T>                                                                                  \
  bool optim_step(Algo algo, const OptimArgs& args, const TensorList<T>& list, bool skip_nonfinite,    \
                  int threads);                                                                       \
  template <class T>                                                                                  \
  bool all_finite(const TensorList<T>& list, const OptimArgs& args, int threads);                     \
  }
GF_FOR_EACH_ISA(GF_DECLARE_OPTIM)
#undef GF_DECLARE_OPTIM

}  // namespace gf
