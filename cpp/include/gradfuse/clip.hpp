// clip.hpp: gradient norms and gradient clipping: the contract and per-ISA declarations. Bodies in
// cpp/src/clip.cpp (compiled once per ISA into gf::<isa>); NumPy twins in
// python/gradfuse/_numpy/clip.py (same names, signatures, checks and messages).
//
// Contract
// --------
// The gradients are a multi-tensor list: one array or a list of arrays, float32, float64 or bf16
// (one dtype per call), any shapes. As for the optimizer kernels, the bindings merge arrays that are
// adjacent in memory into one segment (a ParameterArena's gradients are ONE segment).
//
// kernel                     formula                                                   written  B/elem
// grad_norm                  ||g||_p over all elements of all arrays (the concatenation)   -        4
// clip_grad_norm             n = ||g||_p; c = max_norm / (n + 1e-6); if not c >= 1:      g       4 / 12
//                            g *= c (rounded to T); returns n, the norm BEFORE clipping
// clip_grad_norm_per_tensor  the same for each array on its own: n_i, c_i, g_i *= c_i;   g       4 / 12
//                            returns [n_i] (one per array; an empty array has norm 0)
// clip_grad_value            g = clamp(g, -clip_value, clip_value) (NaN stays NaN)       g        8
//
// Norms (torch.linalg.vector_norm): p = 2: sqrt(sum g^2); p = 1: sum |g|; p = inf: max |g|; any
// other p > 0: (sum |g|^p)^(1/p). torch.nn.utils.clip_grad_norm_'s formula, the 1e-6 and the
// clamp of the coefficient to 1 included: "not c >= 1" also scales by a NaN coefficient (a NaN
// norm) and by 0 (an infinite norm), as torch does. With error_if_nonfinite a NaN / Inf norm
// writes nothing and the bindings raise RuntimeError (torch's message). The scaling pass runs only
// when it changes something (c < 1 or NaN): an unclipped call reads the gradients once (4 B/elem).
//
// Precision and determinism: sums are accumulated in double (a float32 square is exact in double,
// so float32 norms neither overflow nor lose digits the way torch's float32 accumulation does).
// Each segment is cut into blocks of kClipBlock elements; in a block, element j goes to lane
// j mod 16 of 16 double accumulators (2 vectors on AVX-512, 4 on AVX2, 16 scalars on the baseline
// path: the same lanes on every path), the lanes are added as a fixed tree (8, 4, 2, 1), and the
// blocks' partial sums in segment and block order. The maximum (p = inf) is exact. So norms are
// bitwise identical for every thread count, every run, every ISA path, and equal to the NumPy
// twin's, which follows the same blocks and lanes (p = 1, 2, inf; other p use libm's pow per
// element: equal to the twin where NumPy's pow is libm's, else to an ulp). Scaling (one multiply)
// and clamping (two compares) are element-wise IEEE operations: bitwise equal everywhere.
// dtypes: float32, float64, or bf16 (every gradient of the call): bf16 elements are widened to
// float32 lanes (exact) and go through the float32 code, so a bf16 norm is the float32 kernel's
// norm of the widened gradients (the same double lanes, bitwise); a scaled or clamped bf16 gradient
// is the float32 result rounded to nearest even once (bf16.hpp). Norms are returned as doubles.
// Threading: OpenMP over the blocks (parallel_blocks; partial sums kept per block, never an OpenMP
// reduction clause) and over elements for the writing pass. The bindings check every argument
// before anything is written (TypeError: dtype; ValueError: layout, read-only, memory shared
// between two gradients, a bad scalar) and release the GIL around the kernel.
#pragma once

#include <cstdint>

#include "gradfuse/kernels.hpp"
#include "gradfuse/parallel.hpp"

namespace gf {

constexpr int64_t kClipBlock = 32768;  // elements per reduction block (a multiple of 16)

// g.list[0]: the gradients. norm_type: p > 0, or +inf. Norms and coefficients are doubles.
#define GF_DECLARE_CLIP(isa)                                                                                           \
  namespace isa {                                                                                                      \
  /* ||g||_p over every segment. */                                                                                    \
  template <class T>                                                                                                   \
  double grad_norm(const Segments<T>& g, double norm_type, int threads);                                               \
  /* Returns the norm; scales unless (error_if_nonfinite and the norm is NaN/Inf): nothing written. */                 \
  template <class T>                                                                                                   \
  double clip_grad_norm(const Segments<T>& g, double max_norm, double norm_type, bool error_if_nonfinite,              \
                        int threads);                                                                                  \
  /* norms[s] = ||segment s||_p; each segment scaled by its own coefficient. Returns -1 when every   */                \
  /* segment was processed, else (error_if_nonfinite) the first segment with a NaN/Inf norm: then    */                \
  /* nothing was written (norms are filled either way).                                              */                \
  template <class T>                                                                                                   \
  int64_t clip_grad_norm_per_segment(const Segments<T>& g, double max_norm, double norm_type, bool error_if_nonfinite, \
                                     double* norms, int threads);                                                      \
  template <class T>                                                                                                   \
  void clip_grad_value(const Segments<T>& g, double clip_value, int threads);                                          \
  }
GF_FOR_EACH_ISA(GF_DECLARE_CLIP)
#undef GF_DECLARE_CLIP

}  // namespace gf
