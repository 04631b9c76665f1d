// lanes.hpp: the deterministic sum layout of the reductions (clip.cpp's norms, optim.cpp's LAMB
// trust ratios): element j of a block goes to lane j mod 16 of 16 double accumulators, the lanes
// are added as a fixed tree (8, 4, 2, 1). The same lanes on every ISA path and in the NumPy twins
// (python/gradfuse/_numpy/clip.py), so sums are bitwise equal everywhere. Compiled inside gf::<isa>
// (include after simd.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "gradfuse/simd.hpp"

namespace gf {
namespace GF_ISA_NS {

constexpr int kLanes = 16;

// 16 double accumulators; lane k of the layout is lane k % DW of vector k / DW.
struct Lanes16 {
  using D = Vec<double>;
  static constexpr int kVecs = kLanes / D::width;
  D acc[kVecs];
  Lanes16() {
    for (auto& a : acc) a = D::broadcast(0.0);
  }
  // Squared (Square) or absolute values of n <= 16 elements at x, lane k <- x[k].
  template <bool Square>
  GF_INLINE void add(const double* x, int64_t n) {
    for (int k = 0; k < kVecs; ++k) {
      const int64_t m = std::min<int64_t>(D::width, n - int64_t{k} * D::width);
      if (m <= 0) break;  // the remaining lanes would add +0
      add_vec<Square>(load_n(x + k * D::width, m), k);
    }
  }
  template <bool Square>
  GF_INLINE void add(const float* x, int64_t n) {
    add_floats<Square>(x, n);
  }
  template <bool Square>
  GF_INLINE void add(const bf16* x, int64_t n) {
    add_floats<Square>(x, n);
  }
  // float32 lanes, from float32 or bf16 storage.
  template <bool Square, class S>
  GF_INLINE void add_floats(const S* x, int64_t n) {
    using F = Vec<float>;
    constexpr int kLoads = kLanes / F::width;  // F::width is D::width, or twice it
    for (int k = 0; k < kLoads; ++k) {
      const int64_t m = std::min<int64_t>(F::width, n - int64_t{k} * F::width);
      if (m <= 0) break;
      add_vec<Square>(load_n(x + k * F::width, m), k);
    }
  }
  // Vector k of a group of 16 elements, already in registers (its lanes k * width onwards): for
  // kernels that sum values they compute (LAMB's update) without storing them.
  template <bool Square>
  GF_INLINE void add_vec(D v, int k) {
    acc[k] = acc[k] + (Square ? v * v : abs(v));
  }
  template <bool Square, class F = Vec<float>, std::enable_if_t<!std::is_same_v<F, D>, int> = 0>
  GF_INLINE void add_vec(Vec<float> v, int k) {
    const D lo = widen_lo(v);  // widened first: a float square is exact in double
    if constexpr (F::width == D::width) {
      acc[k] = acc[k] + (Square ? lo * lo : abs(lo));
    } else {
      const D hi = widen_hi_or_zero(v);
      acc[2 * k] = acc[2 * k] + (Square ? lo * lo : abs(lo));
      acc[2 * k + 1] = acc[2 * k + 1] + (Square ? hi * hi : abs(hi));
    }
  }
  // The 16 lanes added as a fixed tree: a[k] += a[k + w] for w = 8, 4, 2, 1.
  GF_INLINE double sum() const {
    alignas(64) double a[kLanes];
    for (int k = 0; k < kVecs; ++k) acc[k].store(a + k * D::width);
    for (int w = kLanes / 2; w >= 1; w /= 2)
      for (int k = 0; k < w; ++k) a[k] += a[k + w];
    return a[0];
  }
};

}  // namespace GF_ISA_NS
}  // namespace gf
