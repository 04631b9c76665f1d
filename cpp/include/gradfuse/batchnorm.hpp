// batchnorm.hpp: batch normalization, forward and backward, shared by the bindings
// (cpp/bindings/batchnorm.cpp) and the per-ISA kernel bodies (cpp/src/batchnorm.cpp). Plain data
// and declarations only. The NumPy twin is python/gradfuse/_numpy/batchnorm.py.
//
// Contract
// --------
// Shapes. x is (N, C, *S) (channels first: (N, C), (N, C, L), (N, C, H, W), ...) or, with
// channels_last, (N, *S, C). L = prod(S) (1 for (N, C)); every channel has n = N * L values.
// weight, bias, running_mean, running_var, save_mean, save_invstd are (C,); y, dy, dx are x's shape.
// One dtype per call, float32 or float64, every array C-contiguous; or bf16 (below).
//
// Forward (batchnorm_forward), per channel c:
//   batch statistics (training, or no running statistics given):
//     mean = sum(x) / n,  var = sum((x - mean)^2) / n   (biased),  invstd = 1 / sqrt(var + eps)
//     save_mean = mean, save_invstd = invstd
//     running_mean = (1 - momentum) running_mean + momentum mean               (when given)
//     running_var  = (1 - momentum) running_var  + momentum var n / (n - 1)    (when given)
//   running statistics (eval with running statistics):
//     mean = running_mean, invstd = 1 / sqrt(running_var + eps); saved the same way; nothing updated
//   y = (x - mean) invstd weight + bias       (weight None: 1, bias None: 0)
// Backward (batchnorm_backward), from the saved mean and invstd, xhat = (x - mean) invstd:
//   dbias = sum(dy),  dweight = sum(dy xhat)                                   (when given)
//   batch statistics (training=True): dx = weight invstd (dy - mean(dy) - xhat mean(dy xhat))
//   running statistics (training=False): dx = weight invstd dy
// In place: y may be x itself, and dx may be dy itself (the same array; any other overlap between a
// written array and another argument is refused).
//
// Precision. The statistics are accumulated in DOUBLE for both dtypes. Each channel is shifted by
// a pivot, its first element p (the value at n = 0, s = 0): the forward sums d = x - p and d^2, so
// mean = p + S1/n and var = S2/n - (S1/n)^2 suffer no cancellation even when |mean| >> std, as
// E[x^2] - E[x]^2 on raw values would. The backward sums dy, dy (x - save_mean) and, with batch
// statistics, x - save_mean: e = mean(x - save_mean) re-centres the saved mean (the batch mean
// rounded to the dtype), so that rounding does not reach dx and dweight. Each difference d is
// formed in the dtype (exact when x is within a factor 2 of p, as near the pivot or the mean; else
// one rounding, 2^-24 |d| in float32, the order of the data's own rounding), then widened: every
// product (one fma on the vector paths) and every sum is in double.
// Per-channel coefficients are formed in double and rounded to the dtype once; the per-element
// work is in the dtype:
//   y = (x - p) a + b'              a = weight invstd, b' = bias - (mean - p) a   (x - p is exact
//                                   for x within a factor 2 of p: no loss when |mean| >> std)
//   dx = (dy k1 + (x - save_mean) k2) + k3,   k1 = weight invstd, k2 = -k1 invstd mean(dy xhat),
//                                             k3 = -k1 mean(dy) - k2 e
// Non-finite values propagate: a NaN or Inf in a channel makes that channel's statistics NaN.
//
// dtypes: float32, float64, or bf16 for the data (x, y; dy, dx) with every per-channel array
// (weight, bias, running_mean, running_var, save_mean, save_invstd, dweight, dbias) float32 beside
// it: the statistics, the affine parameters and their gradients stay fp32, as under torch's
// autocast. A bf16 element is widened to float32 (exact) where it is loaded, the kernel runs the
// float32 code (the same blocks, double sums, float32 coefficients and element-wise math), and each
// y / dx element is rounded to bf16 once, to nearest even: bitwise the float32 kernel's result on
// the widened data, rounded. (torch's bf16 batch_norm on CPU takes bf16 or float32 parameters and
// rounds its output once too, from a float32 computation in another order: within a bf16 ulp.)
//
// Memory traffic per element (E = 4, 8 or 2 bytes): forward with batch statistics 2 reads of x + 1
// write of y (3E), with running statistics 1 read + 1 write (2E); backward 1 pass reading dy and x
// for the sums (2E, skipped in eval when dweight and dbias are not asked for) + 1 pass reading dy
// and x and writing dx (3E; eval: dy only, 2E). The per-channel arrays are negligible. Outputs of
// 16 MiB and more are written with non-temporal stores (no read-for-ownership of their lines, which
// would be one more read per element); smaller ones stay in the caches for the next layer.
//
// Threading and determinism. OpenMP over channels AND over the batch: the reductions split the
// data into fixed blocks (a block of rows x a block of columns in the rows layouts, a block of
// samples of one channel in the planes layout) whose edges depend only on the shape, keep one
// partial per block and combine the partials in block order (parallel_blocks), never with an
// OpenMP reduction clause; the element-wise passes are split anywhere. Results are bitwise
// identical for every thread count and every run. Across ISA paths (and against the NumPy twin,
// which sums in another order) the statistics agree to the last bits of double only, so outputs
// agree to about one unit in the last place of the dtype. The GIL is released by the bindings.
//
// Layouts (internal): channels-last and (N, C) data are a row-major matrix with one column per
// channel; channels-first data with L < 64 are rows of C * L columns (L columns per channel);
// channels-first data with L >= 64 are N * C contiguous planes of L values. Narrow rows are
// grouped so that each vector loop runs over at least a few hundred elements.
#pragma once

#include <cstdint>

#include "gradfuse/bf16.hpp"
#include "gradfuse/kernels.hpp"

namespace gf {

// Pointers are to C-contiguous arrays: the data of dtype T, the per-channel arrays of W (T, or float
// beside bf16 data); optional ones are null when absent.
template <class T, class W = compute_t<T>>
struct BnForward {
  const T* x = nullptr;
  T* y = nullptr;                                   // may equal x
  const W* weight = nullptr;                        // null: 1
  const W* bias = nullptr;                          // null: 0
  W* running_mean = nullptr;                        // both null or both given
  W* running_var = nullptr;
  W* save_mean = nullptr;
  W* save_invstd = nullptr;
  int64_t n = 0, c = 0, l = 1;                      // x is (n, c, l) or, channels_last, (n, l, c)
  bool channels_last = false;
  bool batch_stats = true;                          // false: use running_mean / running_var
  double momentum = 0.1, eps = 1e-5;
};

template <class T, class W = compute_t<T>>
struct BnBackward {
  const T* dy = nullptr;
  const T* x = nullptr;
  const W* weight = nullptr;                        // null: 1
  const W* save_mean = nullptr;
  const W* save_invstd = nullptr;
  T* dx = nullptr;                                  // may equal dy
  W* dweight = nullptr;                             // null: not computed
  W* dbias = nullptr;                               // null: not computed
  int64_t n = 0, c = 0, l = 1;
  bool channels_last = false;
  bool batch_stats = true;                          // the saved statistics were the batch's
};

#define GF_DECLARE_BATCHNORM(isa)                                  \
  namespace isa {                                                  \
  template <class T>                                               \
  void batchnorm_forward(const BnForward<T>& args, int threads);   \
  template <class T>                                               \
  void batchnorm_backward(const BnBackward<T>& args, int threads); \
  }
GF_FOR_EACH_ISA(GF_DECLARE_BATCHNORM)
#undef GF_DECLARE_BATCHNORM

}  // namespace gf
