// loss.hpp: softmax, the loss kernels and the parameter penalties: their contract and per-ISA
// declarations. Bodies in cpp/src/loss.cpp (compiled once per ISA into gf::<isa>); NumPy twins in
// python/gradfuse/_numpy/loss.py (same names, signatures, checks and messages).
//
// Contract
// --------
// Shapes: "rows" kernels see a C-contiguous (N, K) array (softmax: any ndim >= 1, the last axis is
// K and the leading axes are flattened into N). Element-wise losses take any shape; n = size.
// Labels are int64 (N,). Every output is preallocated by the caller and written in place; a loss
// returns its value (double, a Python float) and writes its gradient when grad is given.
// T = float32 or float64; every array of a call has the same T. Bytes per element are for float32.
// dtypes: float32, float64, or bf16. In a bf16 call the scores / logits / predictions / softmax
// arrays and every gradient are bf16; the targets of mse_loss / sum_of_squares_loss /
// bce_with_logits and bce's pos_weight stay float32 ("wide": data, not activations; torch's
// autocast runs these losses in float32 too); penalty's params and grads are both bf16. The math
// is float32 (sums in double, as above); each bf16 output is the float32 result rounded to nearest
// even once (bf16.hpp), so a bf16 call gives bitwise the float32 kernel's outputs on the widened
// inputs, rounded. The loss value is a double computed from the widened inputs (never rounded to
// bf16). Row kernels widen each row into float32 scratch (one row per work block); the element-wise
// ones read bf16 straight into float32 lanes.
//
// kernel                 formula (per row r of x (N, K), label y = labels[r])          written   B/elem
// softmax_forward        y = exp(x - max) / sum exp(x - max)                           y         8
// log_softmax_forward    y = (x - max) - log sum exp(x - max)                          y         8
//                        (y may be x itself, same memory: in place; any other overlap is refused)
// softmax_backward       dx = y * (dy - sum_j dy_j y_j)                (y = softmax)   dx        12
// log_softmax_backward   dx = dy - exp(y) * sum_j dy_j                 (y = log_softmax) dx      12
//                        (dx may be dy itself: in place)
// softmax_cross_entropy  l_r = lse_r - x_ry, lse_r = max + log sum exp(x_r - max)      grad      8
//                        (torch.nn.functional.cross_entropy; rows with y == ignore_index count for
//                        nothing; label smoothing e: l_r = (1-e) (lse_r - x_ry) + e/K sum_j (lse_r - x_rj));
//                        grad_rj = (softmax_rj - (1-e) [j == y] - e/K) / D, D = the number of counted
//                        rows ("mean") or 1 ("sum"); ignored rows get 0. Value: sum_r l_r / D.
// multi_margin_loss      l_r = sum_{j != y} max(0, margin - x_ry + x_rj)^p / K, p in {1, 2}   grad  8
//                        (torch's normalisation by K; the seeds' SVM loss (lecture 003) is
//                        K * multi_margin_loss); grad_rj = [z > 0] (p == 1 ? 1 : 2 z) / (K D),
//                        grad_ry = -sum_{j != y} grad_rj; D = N ("mean") or 1 ("sum").
// squared_error          mse_loss: sum (p - t)^2 / D, grad = (2 / D) (p - t), D = n ("mean") or 1   12
//                        ("sum"). sum_of_squares_loss (the seeds' "L2 loss", lecture 001:
//                        L = sum_i (y_i - t_i)^2, no 1/2, not averaged) = mse_loss(reduction="sum").
// bce_with_logits        l = (1 - t) x + w (log1p(exp(-|x|)) - min(x, 0)), w = 1 + (pw - 1) t     12
//                        (= max(x, 0) - x t + log1p(exp(-|x|)) without pos_weight pw (C,), C the
//                        last axis); grad = ((pw t + 1 - t) sigmoid(x) - pw t) / D, D = n or 1.
// penalty                value = l1 sum |w| + (l2 / 2) sum w^2 over every parameter;       grads     12
//                        grads += l1 sign(w) + l2 w (sign(0) = 0). l2 is a weight decay (torch's
//                        weight_decay, the seeds' lecture 004 "1/2 w theta^2"). The seeds' other forms:
//                        lambda sum w^2 (lecture 000) -> l2 = 2 lambda; elastic net
//                        lambda (beta ||W||_2^2 + ||W||_1) (lecture 003) -> l1 = lambda, l2 = 2 lambda beta.
//                        Params are read once (4 B), grads read and written (8 B); value only: 4 B.
//
// reduction is "mean" or "sum". Not offered (torch has them): reduction="none", per-class `weight`
// (cross-entropy, multi-margin), cross-entropy over (N, K, d1, ...) or with class-probability targets.
// Empty batches: "mean" of nothing is NaN (0 / 0, as torch), "sum" is 0; nothing is written.
// Stability: the row max is subtracted before exp, so logits of 1e4 (and -inf entries) are fine;
// log1p(exp(-|x|)) never overflows. NaN propagates.
//
// Precision: exp, log and log1p are Eigen's vectorized functions (a few ulp), evaluated on aligned,
// padded blocks so every element goes through the same code whatever its position; exp of an
// argument below log(smallest normal) (-87.3 in float32, -708.4 in float64) is exactly 0 (subnormal
// results are flushed: Eigen clamps there, and exp(-inf) must be 0 on every path). Every sum (row
// sums of exp or of dy y, the loss over a batch, the penalty norms) is accumulated in double: vector
// lanes of doubles within a row or block, those lanes added in a fixed order, blocks combined in
// block order. Element-wise results (gradients, softmax) are computed in T.
//
// Threading and determinism: OpenMP over rows (or fixed element blocks); reductions go through
// parallel_blocks with block edges that depend only on the shape. Results are bitwise identical for
// every thread count and every run (and do not depend on where the arrays sit in memory). They may
// differ between ISA paths, and from the NumPy twin, at the rounding level (lane count, exp
// implementation); the penalty's gradient update and the mse gradient are element-wise IEEE math
// with no fma: bitwise equal on every path and to the twin (and mse's gradient to torch's).
// The bindings check every argument (dtype, layout, shapes, aliasing, label range) before any write
// and release the GIL around the kernel.
#pragma once

#include <cstdint>

#include "gradfuse/bf16.hpp"
#include "gradfuse/kernels.hpp"
#include "gradfuse/parallel.hpp"

namespace gf {

// Options of the cross-entropy kernel.
struct CrossEntropyArgs {
  bool mean = true;              // false: "sum"
  int64_t ignore_index = -100;   // rows with this label count for nothing
  double label_smoothing = 0.0;  // in [0, 1]
};

#define GF_DECLARE_LOSS(isa)                                                                                           \
  namespace isa {                                                                                                      \
  template <class T>                                                                                                   \
  void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols, bool log, int threads);                           \
  template <class T>                                                                                                   \
  void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols, bool log, int threads);            \
  template <class T>                                                                                                   \
  double softmax_cross_entropy(const T* logits, const int64_t* labels, T* grad, int64_t rows, int64_t cols,            \
                               const CrossEntropyArgs& args, int threads);                                             \
  template <class T>                                                                                                   \
  double multi_margin_loss(const T* scores, const int64_t* labels, T* grad, int64_t rows, int64_t cols, int p,         \
                           double margin, bool mean, int threads);                                                     \
  /* sum (p - t)^2 in double; grad = T(grad_scale) (p - t) when grad is given; target float32 beside bf16 */           \
  template <class T>                                                                                                   \
  double squared_error(const T* pred, const compute_t<T>* target, T* grad, int64_t n, double grad_scale, int threads); \
  /* sum of the element losses in double; grad = (...) T(grad_scale); pos_weight (cols,) or null */                    \
  template <class T>                                                                                                   \
  double bce_with_logits(const T* logits, const compute_t<T>* targets, const compute_t<T>* pos_weight, T* grad,        \
                         int64_t n, int64_t cols, double grad_scale, int threads);                                     \
  template <class T>                                                                                                   \
  double penalty(const Segments<T>& list, double l1, double l2, int threads);                                          \
  }
GF_FOR_EACH_ISA(GF_DECLARE_LOSS)
#undef GF_DECLARE_LOSS

}  // namespace gf
