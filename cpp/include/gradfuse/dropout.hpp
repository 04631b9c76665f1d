// dropout.hpp: inverted dropout (and DropConnect) with a bit-packed, counter-based mask.
// Bodies in cpp/src/dropout.cpp (compiled once per ISA); NumPy twin in
// python/gradfuse/_numpy/dropout.py; bindings in cpp/bindings/dropout.cpp.
//
// Contract
// --------
// dropout_forward(x, y, mask, n, p, seed, counter)   x, y: n elements of T; mask: mask_bytes(n)
//   keep_i = u_i >= threshold(p)  (and never when p == 1)
//   y_i    = x_i * (keep_i ? scale : 0)            scale = C(1 / (1 - p)), 0 when p == 1 (C = compute_t<T>)
//   mask bit i = keep_i.  Writes y and the mask in one pass; reads x.
// dropout_backward(dy, mask, dx, n, p)
//   dx_i   = dy_i * (keep_i ? scale : 0)           keep_i read from the mask; writes dx; reads dy.
// philox4x32_10(counters, n, key, out)             counters, out: n x 4 uint32; out = Philox(c, key)
//
// The random numbers: u_i is output word i % 4 of Philox4x32-10 (philox.hpp) of the block
// b = i / 4 (0-based index into the flattened array) with
//   counter = (b mod 2^32, b / 2^32, counter mod 2^32, counter / 2^32),  key = (seed mod 2^32, seed / 2^32)
// seed and counter are 64-bit unsigned integers chosen by the caller: a layer keeps its seed and
// increments its counter once per forward call, so every call draws a fresh, independent mask and
// any call can be replayed.
//
// threshold(p) = min(2^32 - 1, round(p * 2^32)), rounded to nearest with ties to even (p * 2^32 is
// exact in double): P(keep) = 1 - threshold / 2^32, within 2^-33 of 1 - p. p == 0 keeps every
// element (y = x * 1 = x), p == 1 keeps none (y = x * 0: zeros, NaN stays NaN, -x gives -0.0).
// p must be in [0, 1] (the bindings refuse anything else with torch's message). scale is computed
// in double and rounded once to C. The multiplication by 0 (not a select) is torch's
// x * mask / (1 - p): a dropped NaN or Inf gives NaN, as in torch.
//
// The mask: mask_bytes(n) = 8 * ceil(n / 64) bytes, whole little-endian 64-bit words; bit i % 8 of
// byte i / 8 is keep_i (np.unpackbits(mask, bitorder="little")[:n] gives the keep indicators);
// the padding bits after n are 0. One bit per element: 1/32 of torch's float32 mask.
//
// Shapes: any; the kernels see the flattened arrays (the bindings check that y has x's shape,
// dx dy's, and the mask's size). In place: y may be x and dx may be dy (exactly the same array:
// each vector is read before it is written); any partial overlap is refused.
//
// dtypes: float32, float64, or bf16 (x and y, dy and dx; the mask is uint8 in every case): a bf16
// element is widened to float32 (exact), multiplied by the float32 factor (scale rounded to float32)
// and rounded to bf16 once, to nearest even: bitwise the float32 kernel's result on the widened
// input, rounded. (torch's bf16 dropout multiplies by a mask already scaled in bf16, i.e. by scale
// rounded to bf16, 1.109375 for p = 0.1 where this kernel uses 1.1111112f: kept values may differ
// from torch's by a bf16 ulp; where scale is exact in bf16, p = 0.5, 0.2, 0.75, they agree bit for
// bit. Autocast leaves dropout in float32.)
//
// Bytes moved per element (float32 / float64 / bf16): forward reads x and writes y and a mask bit,
// 4 + 4 + 1/8 = 8.125 / 16.125 / 4.125 B; backward reads dy and a mask bit and writes dx, the same.
// Outputs of 16 MiB and more are written with non-temporal stores (no read-for-ownership of the
// output's lines, which would add 4 / 8 B; they bypass the caches), at any alignment of the output.
// Compute: Philox4x32-10 per 4 elements, 20 32x32->64 multiplies, on U32 lanes (16 blocks per
// AVX-512 vector = one 64-bit mask word).
//
// Threading and determinism: OpenMP over contiguous blocks of whole 64-element mask words
// (parallel_for aligns block edges to 64), so each thread writes whole words. The mask depends only
// on (seed, counter, i, p), never on threads, ISA or chunking; the arithmetic is one correctly
// rounded multiplication per element. So y, dx and the mask are bitwise identical for every thread
// count, every ISA path and the NumPy twin. The bindings release the GIL.
//
// DropConnect (Wan et al. 2013) is the same machinery applied to a dense layer's weight matrix,
// once per training step, with its own seed and counter:
//   W_masked = dropout_forward(W)          (mask_W kept for the backward)
//   y  = x @ W_masked + b
//   dx = dy @ W_masked^T,  db = sum_rows(dy),  dW_masked = x^T @ dy
//   dW = dropout_backward(dW_masked, mask_W)
// i.e. exactly the gradients of y = x @ (W * keep / (1 - p)) + b (tests/test_dropout.py checks them
// against torch autograd). In eval mode W is used as is.
#pragma once

#include <cmath>
#include <cstdint>

#include "gradfuse/kernels.hpp"

namespace gf {

// (static: every translation unit, of every ISA, keeps its own copy of these helpers)

// Bytes of the packed mask of n >= 0 elements: 8 * ceil(n / 64).
static inline int64_t dropout_mask_bytes(int64_t n) { return (n / 64 + (n % 64 != 0 ? 1 : 0)) * 8; }

// min(2^32 - 1, round-half-even(p * 2^32)) for p in [0, 1]; independent of the FPU rounding mode.
static inline uint32_t dropout_threshold(double p) {
  const double x = p * 4294967296.0;  // exact
  double r = std::floor(x);
  const double frac = x - r;  // exact
  if (frac > 0.5 || (frac == 0.5 && std::fmod(r, 2.0) != 0.0)) r += 1.0;
  return r >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(r);
}

// 1 / (1 - p) in double (the caller rounds it to T); 0 when p == 1.
static inline double dropout_scale(double p) { return p < 1.0 ? 1.0 / (1.0 - p) : 0.0; }

#define GF_DECLARE_DROPOUT(isa)                                                                                      \
  namespace isa {                                                                                                    \
  template <class T>                                                                                                 \
  void dropout_forward(const T* x, T* y, uint8_t* mask, int64_t n, double p, uint64_t seed, uint64_t counter,        \
                       int threads);                                                                                 \
  template <class T>                                                                                                 \
  void dropout_backward(const T* dy, const uint8_t* mask, T* dx, int64_t n, double p, int threads);                  \
  void philox4x32_10(const uint32_t* counters, int64_t n, uint32_t key0, uint32_t key1, uint32_t* out, int threads); \
  }
GF_FOR_EACH_ISA(GF_DECLARE_DROPOUT)
#undef GF_DECLARE_DROPOUT

}  // namespace gf
