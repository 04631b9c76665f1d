// clip.cpp: bodies of the gradient-norm and clipping kernels. The contract (formulas, precision,
// determinism) is in gradfuse/clip.hpp. Compiled once per ISA into gf::<isa>.
//
// Reduction layout (the same on every ISA path, and in the NumPy twin): each segment is cut into
// blocks of kClipBlock elements starting at the segment's first element; a block is read 16
// elements at a time, element j of the block going to lane j mod 16 of 16 double accumulators
// (Lanes16: 16 / Vec<double>::width vectors); a short last group is read with masked loads (zeros
// add nothing). A block's value is its 16 lanes added as a fixed tree; the call's value is the
// blocks' values added in (segment, block) order. parallel_blocks hands blocks to threads; which
// thread does a block changes nothing.
//
// bf16 gradients are read into float32 lanes (exact) and take the float32 code; a bf16 result
// (scaled, clamped) is rounded once on the store: the float32 kernel's bits on the widened input.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gradfuse/clip.hpp"
#include "gradfuse/lanes.hpp"
#include "gradfuse/parallel.hpp"
#include "gradfuse/simd.hpp"

namespace gf {
namespace GF_ISA_NS {
namespace {

static_assert(kClipBlock % kLanes == 0, "blocks hold whole lane groups");

enum class Norm { l1, l2, inf, p };

Norm norm_kind(double p) {
  if (p == 2.0) return Norm::l2;
  if (p == 1.0) return Norm::l1;
  if (std::isinf(p)) return Norm::inf;
  return Norm::p;
}

template <class T>
double block_sum_l(const T* x, int64_t n, bool square) {
  Lanes16 lanes;
  int64_t i = 0;
  if (square) {
    for (; i + kLanes <= n; i += kLanes) lanes.add<true>(x + i, kLanes);
    if (i < n) lanes.add<true>(x + i, n - i);
  } else {
    for (; i + kLanes <= n; i += kLanes) lanes.add<false>(x + i, kLanes);
    if (i < n) lanes.add<false>(x + i, n - i);
  }
  return lanes.sum();
}

GF_INLINE double value(float x) { return x; }
GF_INLINE double value(double x) { return x; }
GF_INLINE double value(bf16 x) { return bf16_to_float(x); }

// Any other p: |x|^p by libm's pow, one element at a time, in the same 16 lanes.
template <class T>
double block_sum_p(const T* x, int64_t n, double p) {
  double a[kLanes] = {};
  for (int64_t j = 0; j < n; ++j) a[j % kLanes] += std::pow(std::fabs(value(x[j])), p);
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int k = 0; k < w; ++k) a[k] += a[k + w];
  return a[0];
}

// max |x| (exact; NaN if any element is NaN), 0 for n == 0.
template <class T>
double block_max(const T* x, int64_t n) {
  using C = compute_t<T>;
  using V = Vec<C>;
  constexpr int64_t W = V::width;
  V m = V::broadcast(C(0));
  int64_t i = 0;
  for (; i + W <= n; i += W) m = maximum(m, abs(V::load(x + i)));
  if (i < n) m = maximum(m, abs(V::load(x + i, n - i)));  // lanes past n: |0|
  alignas(64) C a[W];
  m.store(a);
  C r = a[0];
  for (int64_t k = 1; k < W; ++k) r = (r != r || r >= a[k]) ? r : a[k];  // NaN wins
  return static_cast<double>(r);
}

GF_INLINE double max_nan(double a, double b) { return (a != a || a >= b) ? a : b; }

// One reduction block: [begin, begin + len) of segment seg.
struct Block {
  int64_t seg, begin, len;
};

template <class T>
std::vector<Block> blocks_of(const Segments<T>& g) {
  std::vector<Block> blocks;
  for (int64_t s = 0; s < g.count; ++s) {
    const int64_t n = g.offset[s + 1] - g.offset[s];
    for (int64_t b = 0; b < n; b += kClipBlock) blocks.push_back({s, b, std::min(kClipBlock, n - b)});
  }
  return blocks;
}

// The threads worth waking for n elements.
GF_INLINE int useful_threads(int64_t n, int threads) {
  const int64_t useful = n / kGrain;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, useful)));
}

// Each block's partial value (a sum of |x|^p, or a max) in block order.
template <class T>
std::vector<double> block_partials(const Segments<T>& g, const std::vector<Block>& blocks, double p, int threads) {
  const Norm kind = norm_kind(p);
  std::vector<double> partial(blocks.size(), 0.0);
  const int64_t n = g.count ? g.offset[g.count] : 0;
  parallel_blocks(static_cast<int64_t>(blocks.size()), useful_threads(n, threads), [&](int64_t b) {
    const Block& blk = blocks[static_cast<size_t>(b)];
    const T* x = g.list[0][blk.seg] + blk.begin;
    double v;
    switch (kind) {
      case Norm::l2: v = block_sum_l(x, blk.len, true); break;
      case Norm::l1: v = block_sum_l(x, blk.len, false); break;
      case Norm::inf: v = block_max(x, blk.len); break;
      default: v = block_sum_p(x, blk.len, p); break;
    }
    partial[static_cast<size_t>(b)] = v;
  });
  return partial;
}

// Partial values (in order) -> the norm.
struct Combine {
  Norm kind;
  double p;
  double acc = 0.0;
  GF_INLINE void add(double v) { acc = kind == Norm::inf ? max_nan(acc, v) : acc + v; }
  GF_INLINE double norm() const {
    switch (kind) {
      case Norm::l2: return std::sqrt(acc);
      case Norm::l1:
      case Norm::inf: return acc;
      default: return std::pow(acc, 1.0 / p);
    }
  }
};

// torch's clip coefficient max_norm / (norm + 1e-6), "clamped to 1": scaling is needed unless it is
// >= 1 (a NaN coefficient scales, as in torch).
GF_INLINE double clip_coef(double max_norm, double norm) { return max_norm / (norm + 1e-6); }
GF_INLINE bool scales(double coef) { return !(coef >= 1.0); }

// x[s] *= coef[s] (rounded to T) for every segment s with scale[s] != 0.
template <class T>
void scale_segments(const Segments<T>& g, const double* coef, const unsigned char* scale, int threads) {
  using C = compute_t<T>;
  using V = Vec<C>;
  constexpr int64_t W = V::width;
  const int64_t n = g.offset[g.count];
  parallel_for(n, threads, kGrain, [&](int64_t lo, int64_t hi) {
    for_each_piece(g, lo, hi, [&](int64_t s, int64_t off, int64_t len) {
      if (!scale[s]) return;
      const V c = V::broadcast(static_cast<C>(coef[s]));
      T* x = g.list[0][s] + off;
      int64_t i = 0;
      for (; i + W <= len; i += W) (V::load(x + i) * c).store(x + i);
      if (i < len) (V::load(x + i, len - i) * c).store(x + i, len - i);
    });
  });
}

}  // namespace

template <class T>
double grad_norm(const Segments<T>& g, double norm_type, int threads) {
  const std::vector<Block> blocks = blocks_of(g);
  const std::vector<double> partial = block_partials(g, blocks, norm_type, threads);
  Combine c{norm_kind(norm_type), norm_type};
  for (double v : partial) c.add(v);
  return c.norm();
}

template <class T>
double clip_grad_norm(const Segments<T>& g, double max_norm, double norm_type, bool error_if_nonfinite, int threads) {
  const double norm = grad_norm(g, norm_type, threads);
  if (error_if_nonfinite && !std::isfinite(norm)) return norm;  // the bindings raise; nothing written
  const double coef = clip_coef(max_norm, norm);
  if (g.count > 0 && scales(coef)) {
    const std::vector<double> coefs(static_cast<size_t>(g.count), coef);
    const std::vector<unsigned char> all(static_cast<size_t>(g.count), 1);
    scale_segments(g, coefs.data(), all.data(), threads);
  }
  return norm;
}

template <class T>
int64_t clip_grad_norm_per_segment(const Segments<T>& g, double max_norm, double norm_type, bool error_if_nonfinite,
                                   double* norms, int threads) {
  const std::vector<Block> blocks = blocks_of(g);
  const std::vector<double> partial = block_partials(g, blocks, norm_type, threads);
  const Norm kind = norm_kind(norm_type);
  size_t b = 0;
  for (int64_t s = 0; s < g.count; ++s) {
    Combine c{kind, norm_type};
    for (; b < blocks.size() && blocks[b].seg == s; ++b) c.add(partial[b]);
    norms[s] = c.norm();
  }
  if (error_if_nonfinite)
    for (int64_t s = 0; s < g.count; ++s)
      if (!std::isfinite(norms[s])) return s;
  std::vector<double> coefs(static_cast<size_t>(g.count));
  std::vector<unsigned char> flags(static_cast<size_t>(g.count));
  bool any = false;
  for (size_t s = 0; s < coefs.size(); ++s) {
    coefs[s] = clip_coef(max_norm, norms[s]);
    flags[s] = scales(coefs[s]);
    any = any || flags[s];
  }
  if (any) scale_segments(g, coefs.data(), flags.data(), threads);
  return -1;
}

template <class T>
void clip_grad_value(const Segments<T>& g, double clip_value, int threads) {
  using C = compute_t<T>;
  using V = Vec<C>;
  constexpr int64_t W = V::width;
  if (g.count == 0) return;
  const V hi_v = V::broadcast(static_cast<C>(clip_value)), lo_v = V::broadcast(static_cast<C>(-clip_value));
  // Only out-of-range elements are replaced: NaN (no comparison holds) and signed zeros stay.
  auto clamp = [&](V x) { return select(x < lo_v, lo_v, select(x > hi_v, hi_v, x)); };
  parallel_for(g.offset[g.count], threads, kGrain, [&](int64_t lo, int64_t hi) {
    for_each_piece(g, lo, hi, [&](int64_t s, int64_t off, int64_t len) {
      T* x = g.list[0][s] + off;
      int64_t i = 0;
      for (; i + W <= len; i += W) clamp(V::load(x + i)).store(x + i);
      if (i < len) clamp(V::load(x + i, len - i)).store(x + i, len - i);
    });
  });
}

#define GF_INSTANTIATE(T)                                                                                 \
  template double grad_norm<T>(const Segments<T>&, double, int);                                          \
  template double clip_grad_norm<T>(const Segments<T>&, double, double, bool, int);                       \
  template int64_t clip_grad_norm_per_segment<T>(const Segments<T>&, double, double, bool, double*, int); \
  template void clip_grad_value<T>(const Segments<T>&, double, int);
GF_INSTANTIATE(float)
GF_INSTANTIATE(double)
GF_INSTANTIATE(bf16)
#undef GF_INSTANTIATE

}  // namespace GF_ISA_NS
}  // namespace gf
