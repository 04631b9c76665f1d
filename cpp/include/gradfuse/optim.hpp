// optim.hpp: the fused optimizer engine, shared by the bindings and the per-ISA kernel bodies
// (cpp/src/optim.cpp, one functor per algorithm, its formula beside it). Plain data and declarations.
//
// Contract
// --------
// One call steps a list of tensors (parameters, their gradients, and up to three state tensors per
// parameter) as ONE index space: the concatenation of all elements, split over threads in
// contiguous blocks (Segments, parallel.hpp). Adjacent tensors (an arena) are coalesced into one
// segment by the bindings, so a whole model steps in one pass over memory. Everything is updated in
// place; each element of each array is read once and written once (the bytes per parameter are in
// the kernel table, python/gradfuse/table.py). Element-wise math only, with the same operation order
// on every ISA path and no fma, so a step is bitwise identical for every thread count, every ISA
// path and the NumPy twin (python/gradfuse/_numpy/optim.py).
//
// The exceptions, lamb and lars (optim_per_tensor): per-tensor trust ratios need each tensor's norms, so
// it gets one segment per tensor and makes two passes (cpp/src/optim.cpp, run_lamb): the moments
// with deterministic per-tensor sums of squares of p and u, then p -= lr trust u (40 B/param fp32);
// lars: the sums of squares of p and g (8 B), then SGD with the scaled gradient (20 B with momentum).
//
// Gradient prologue, common to all: g <- g / grad_scale (if given); g <- -g (if maximize).
// skip_nonfinite: one extra read of the gradients (4 B/param) BEFORE anything is written; if any
// (scaled) gradient is NaN or Inf the call writes nothing and returns false.
// all_finite (that check on its own) takes float32, float64 or bf16 arrays (one dtype per call):
// bf16 read into float32 lanes (exact), divided by grad_scale in float32 (as the widened arrays).
// Compute copies (Segments::copy, optional, float32 parameters only): the same pass also stores
// each updated parameter, rounded to nearest even (bf16.hpp, ml_dtypes' rounding), into its bf16
// copy: 2 more bytes per parameter (Adam: 28 -> 30), bitwise params.astype(bfloat16) afterwards.
// A skipped step leaves the copies alone too.
// Threading: OpenMP, parallel over the concatenated elements; the GIL is released by the bindings.
// The arguments are checked before the call: the arrays by the bindings, the scalars by the kernel
// table's checker (python/gradfuse/_checks.py) for both backends.
#pragma once

#include <cstdint>

#include "gradfuse/kernels.hpp"
#include "gradfuse/parallel.hpp"

namespace gf {

// The scalar arguments of a step, by the kernel table's names: the bindings fill them by name from
// the checked scalars of the call; each algorithm reads the fields its formula uses. A new
// hyperparameter is one more name here.
// clang-format off (a list: one name per line)
#define GF_OPTIM_REALS(X) \
  X(lr)                   \
  X(beta1)                \
  X(beta2)                \
  X(eps)                  \
  X(weight_decay)         \
  X(momentum)             \
  X(dampening)            \
  X(alpha)                \
  X(rho)                  \
  X(lr_decay)             \
  X(momentum_decay)       \
  X(mu_product)           \
  X(etaminus)             \
  X(etaplus)              \
  X(step_size_min)        \
  X(step_size_max)        \
  X(grad_scale)           \
  X(lambd)                \
  X(eta)                  \
  X(mu)                   \
  X(average_weight)       \
  X(trust_coeff)
#define GF_OPTIM_FLAGS(X)   \
  X(maximize)               \
  X(nesterov)               \
  X(amsgrad)                \
  X(centered)               \
  X(decoupled_weight_decay) \
  X(bias_correction)        \
  X(grad_averaging)         \
  X(trust_clip)             \
  X(always_adapt)
// clang-format on

struct OptimArgs {
#define GF_REAL_FIELD(name) double name = 0;
#define GF_FLAG_FIELD(name) bool name = false;
  GF_OPTIM_REALS(GF_REAL_FIELD)
  GF_OPTIM_FLAGS(GF_FLAG_FIELD)
#undef GF_REAL_FIELD
#undef GF_FLAG_FIELD
  int64_t step = 1;             // the step being taken, 1-based
  bool has_grad_scale = false;  // grad_scale was given
};

constexpr int kMaxStates = kMaxLists - 2;

// optim_algorithms: the names optim_step knows, in its index order (the same on every ISA path).
// optim_per_tensor: the algorithm reduces over each tensor on its own (LAMB's trust ratios): the
// bindings then give it one segment per tensor, never merged with its neighbours.
#define GF_DECLARE_OPTIM(isa)                                                                                    \
  namespace isa {                                                                                                \
  const char* const* optim_algorithms(int* count);                                                               \
  bool optim_per_tensor(int algorithm);                                                                          \
  template <class T>                                                                                             \
  bool optim_step(int algorithm, const OptimArgs& args, const Segments<T>& s, bool skip_nonfinite, int threads); \
  template <class T>                                                                                             \
  bool all_finite(const Segments<T>& s, int list, const OptimArgs& args, int threads);                           \
  }
GF_FOR_EACH_ISA(GF_DECLARE_OPTIM)
#undef GF_DECLARE_OPTIM

}  // namespace gf
