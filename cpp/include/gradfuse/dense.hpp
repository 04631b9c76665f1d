// dense.hpp: matrix products and the dense (fully connected) layer.
//
// Contract
// --------
// matmul:          C = op(A) op(B)  (or C += ... with accumulate), op = identity or transpose;
//                  A, B, C row-major, C-contiguous.
// dense_forward:   z = x @ W + b, y = act(z);  x (N, in), W (in, out), b (out,) or none, y (N, out),
//                  z (N, out) optional (kept for a backward that needs the pre-activation: gelu).
//                  The bias and activation are an epilogue applied to each output tile right after
//                  its GEMM, while the tile is still in cache: y is written by the GEMM and
//                  rewritten in cache, never re-read from memory.
// dense_backward:  dz = dy * act'(.) (from y, or z for gelu; dz = dy for none);
//                  db = column sums of dz; dx = dz @ W^T; dW = x^T @ dz (db, dW += with accumulate).
//                  One pass over dy produces dz and the partial column sums; then two GEMMs.
//                  dx, dW, db each optional (None: not computed).
//
// GEMM: OpenBLAS (scipy-openblas32) when loaded, else Eigen (blas.hpp), always called
// single-threaded on tiles spread over OpenMP threads. With OpenBLAS the tiles are one per thread
// along the longer side of C, and only when every tile stays large (>= 16 rows and columns and
// 4e6 multiply-adds; smaller tiles would take OpenBLAS's small-matrix kernels, which sum in another
// order). Its single-threaded kernels sum each element over K in an order that depends only on K,
// but the micro-kernel that computes an element depends on its position in the tile modulo the
// kernel's unroll (float64 on SkylakeX: 24 rows, 8 columns): tile edges therefore fall on
// multiples of 96, so C is bitwise the same for every thread count. Eigen's blocking depends on the
// call's shape, so with Eigen the tiles are fixed (256 x 256) whatever the thread count.
// db: per fixed block of 128 rows, column sums in double, blocks combined in order: deterministic.
// Sizes: N, in and out must each fit in a 32-bit int (the BLAS interface).
//
// bf16 (the *_bf16 kernels; ml_dtypes.bfloat16 arrays, the table's "real" dtype): products of
// two bf16 are exact in float32 and sum in float32; each bf16 output is rounded once (to nearest
// even). matmul_bf16: bf16 A, B; C float32 (gf.ops.matmul; bf16 C only inside dense_backward's
// dx). dense_forward_bf16: x, W bf16, bias float32; the epilogue runs on the float32 tile, then y
// and z are rounded once. dense_backward_bf16: dy, x, W, y, z bf16; dz is rounded to bf16 BEFORE
// the bias sum and both GEMMs (the dz the GEMMs read, as under torch's autocast); dx bf16; dW and
// db float32 (they feed float32 master weights). GEMM paths (blas.hpp): oneDNN bf16 tiles, or the
// fp32 fallback (A, B widened to float32 copies, the float32 library's tiles): the fallback is
// bitwise the float32 kernel on the widened inputs, oneDNN differs from it in summation order
// only. Each path is bitwise the same for every thread count (fixed tiles, single-threaded calls).
#pragma once

#include <cstdint>

#include "gradfuse/activation.hpp"
#include "gradfuse/bf16.hpp"
#include "gradfuse/kernels.hpp"

namespace gf {

struct GemmArgs {
  bool trans_a = false, trans_b = false, accumulate = false;
  int64_t m = 0, n = 0, k = 0;  // C is m x n, the products sum over k
};

#define GF_DECLARE_DENSE(isa)                                                                                         \
  namespace isa {                                                                                                     \
  template <class T>                                                                                                  \
  void matmul(const GemmArgs& g, const T* a, const T* b, T* c, int threads);                                          \
  template <class T>                                                                                                  \
  void dense_forward(Act act, double slope, const T* x, const T* w, const T* bias, T* y, T* z, int64_t n, int64_t in, \
                     int64_t out, int threads);                                                                       \
  template <class T>                                                                                                  \
  void dense_backward(Act act, double slope, const T* dy, const T* x, const T* w, const T* y, const T* z, T* dz,      \
                      T* dx, T* dw, T* db, bool accumulate, int64_t n, int64_t in, int64_t out, int threads);         \
  template <class TC>                                                                                                 \
  void matmul_bf16(const GemmArgs& g, const bf16* a, const bf16* b, TC* c, int threads);                              \
  void dense_forward_bf16(Act act, double slope, const bf16* x, const bf16* w, const float* bias, bf16* y, bf16* z,   \
                          int64_t n, int64_t in, int64_t out, int threads);                                           \
  void dense_backward_bf16(Act act, double slope, const bf16* dy, const bf16* x, const bf16* w, const bf16* y,        \
                           const bf16* z, bf16* dz, bf16* dx, float* dw, float* db, bool accumulate, int64_t n,       \
                           int64_t in, int64_t out, int threads);                                                     \
  }
GF_FOR_EACH_ISA(GF_DECLARE_DENSE)
#undef GF_DECLARE_DENSE

}  // namespace gf
