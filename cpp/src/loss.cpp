// loss.cpp: bodies of softmax, the losses and the penalties. The contract (formulas, shapes, bytes,
// threading, precision) is in gradfuse/loss.hpp. Compiled once per ISA into gf::<isa>.
//
// Row kernels work on one row at a time: a max pass (reads the row from memory), then the row again
// from L1/L2 in blocks of kChunk elements. exp / log1p run through Eigen on a 64-byte aligned stack
// buffer padded with zeros to a multiple of kPad elements, so Eigen never takes its scalar prologue
// or epilogue: every element goes through the same packet code, whatever its position in the row or
// where the array sits in memory. Sums are accumulated in double lanes (DoubleSum). Reductions over
// a batch use parallel_blocks over fixed blocks (rows_per_block / kBlock: they depend only on the
// shape) and add the blocks' partial sums in block order, so results do not depend on the threads.
//
// bf16 (float32 math, each bf16 output rounded once, so a bf16 call gives the float32 kernel's bits
// on the widened inputs): row kernels widen a row into float32 scratch, run the float32 row code
// and narrow its outputs (the float32 code writes some outputs twice: exp, then scaled); the
// element-wise kernels read bf16 straight into float32 lanes (Vec<float>::load(const bf16*)) and
// round on the store.
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gradfuse/loss.hpp"
#include "gradfuse/parallel.hpp"
#include "gradfuse/simd.hpp"

namespace gf {
namespace GF_ISA_NS {
namespace {

constexpr int64_t kChunk = 1024;   // elements per transcendental block (a stack buffer)
constexpr int64_t kPad = 16;       // Eigen blocks are padded to this (>= every packet size, divides kChunk)
constexpr int64_t kBlock = 16384;  // elements per work block (a thread's minimum, a reduction's unit)

template <class T>
using AlignedMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::Aligned64>;

GF_INLINE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rows per work block for rows of `cols` elements: about kBlock elements, at least one row.
GF_INLINE int64_t rows_per_block(int64_t cols) { return cols >= kBlock ? 1 : kBlock / (cols > 0 ? cols : 1); }

// Lanes [0, n) of a vector, n <= width.
template <class V>
GF_INLINE typename V::Mask active(int64_t n) {
  return mask_from_bits<V>((1u << n) - 1u);
}

// n <= width elements; lanes past n hold fill.
template <class V>
GF_INLINE V load_fill(const typename V::value_type* p, int64_t n, typename V::value_type fill) {
  return n == V::width ? V::load(p) : select(active<V>(n), V::load(p, n), V::broadcast(fill));
}

// Sums vectors of float or double in double lanes; sum() adds the lanes in a fixed order.
struct DoubleSum {
  using D = Vec<double>;
  D lo = D::broadcast(0.0), hi = D::broadcast(0.0);
  GF_INLINE void add(Vec<double> v) { lo = lo + v; }
  GF_INLINE void add(Vec<float> v) {
    lo = lo + widen_lo(v);
    if constexpr (Vec<float>::width > 1) hi = hi + widen_hi_or_zero(v);
  }
  GF_INLINE void add_sq(Vec<double> v) { lo = lo + v * v; }
  GF_INLINE void add_sq(Vec<float> v) {  // squared in double: exact
    const D a = widen_lo(v);
    lo = lo + a * a;
    if constexpr (Vec<float>::width > 1) {
      const D b = widen_hi_or_zero(v);
      hi = hi + b * b;
    }
  }
  // The lanes, added as a fixed tree (not hsum: GCC 12 warns about _mm512_reduce_add_pd's
  // undefined register); short rows make this add chain visible, a tree keeps it shallow.
  GF_INLINE double sum() const {
    alignas(64) double a[D::width];
    (lo + hi).store(a);
    for (int w = D::width / 2; w >= 1; w /= 2)
      for (int k = 0; k < w; ++k) a[k] += a[k + w];
    return a[0];
  }
};

// max over x[0, n), NaN if any element is NaN; -inf for n == 0.
template <class T>
T row_max(const T* x, int64_t n) {
  using V = Vec<T>;
  constexpr int64_t W = V::width;
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  V m = V::broadcast(ninf);
  int64_t i = 0;
  for (; i + W <= n; i += W) m = maximum(m, V::load(x + i));
  if (i < n) m = maximum(m, load_fill<V>(x + i, n - i, ninf));
  alignas(64) T a[W];
  m.store(a);
  for (int64_t w = W / 2; w >= 1; w /= 2)  // a fixed tree over the lanes; NaN wins
    for (int64_t k = 0; k < w; ++k) a[k] = (a[k] != a[k] || a[k] >= a[k + w]) ? a[k] : a[k + w];
  return a[0];
}

// log of the smallest normal number: exp of anything below it is flushed to 0. (Eigen clamps its
// argument near there, so on some paths exp(-inf) or exp(-1e4) would otherwise be a subnormal, not 0.)
template <class T>
constexpr T kExpFlush = static_cast<T>(sizeof(T) == 4 ? -87.336544750553102 : -708.39641853226408);

// out[0, padded) = exp(in[0, padded)), padded a multiple of kPad, both 64-byte aligned: every element
// through Eigen's packet code, then arguments below kExpFlush give exactly 0.
template <class T>
GF_INLINE void exp_padded(const T* in, T* out, int64_t padded) {
  using V = Vec<T>;
  AlignedMap<T>(out, padded) = AlignedMap<T>(const_cast<T*>(in), padded).exp();
  const V lo = V::broadcast(kExpFlush<T>), zero = V::broadcast(T(0));
  for (int64_t i = 0; i < padded; i += V::width) select(V::load(in + i) < lo, zero, V::load(out + i)).store(out + i);
}

// buf[0, len) = exp(x[0, len) - shift), len <= kChunk; tmp and buf are 64-byte aligned, kChunk long.
template <class T>
GF_INLINE void exp_block(const T* x, int64_t len, T shift, T* tmp, T* buf) {
  using V = Vec<T>;
  constexpr int64_t W = V::width;
  const V s = V::broadcast(shift), zero = V::broadcast(T(0));
  int64_t i = 0;
  for (; i + W <= len; i += W) (V::load(x + i) - s).store(tmp + i);
  if (i < len) {
    select(active<V>(len - i), V::load(x + i, len - i) - s, zero).store(tmp + i);
    i += W;
  }
  const int64_t padded = (len + kPad - 1) / kPad * kPad;
  for (; i < padded; ++i) tmp[i] = T(0);
  exp_padded(tmp, buf, padded);
}

// sum_j exp(x_j - shift) over [0, n), in double; the exps are written to out when it is given.
template <class T>
double exp_sum(const T* x, int64_t n, T shift, T* out) {
  using V = Vec<T>;
  constexpr int64_t W = V::width;
  alignas(64) T tmp[kChunk];
  alignas(64) T buf[kChunk];
  DoubleSum acc;
  for (int64_t c = 0; c < n; c += kChunk) {
    const int64_t len = std::min(kChunk, n - c);
    exp_block(x + c, len, shift, tmp, buf);
    for (int64_t i = 0; i < len; i += W) {
      const int64_t m = std::min<int64_t>(W, len - i);
      const V e = load_n(buf + i, m);
      acc.add(e);
      if (out) store_n(e, out + c + i, m);
    }
  }
  return acc.sum();
}

// y = y * a - b over [0, n) (b == 0: y = y * a).
template <class T>
void scale_shift(T* y, int64_t n, T a, T b) {
  using V = Vec<T>;
  constexpr int64_t W = V::width;
  const V va = V::broadcast(a), vb = V::broadcast(b);
  for (int64_t i = 0; i < n; i += W) {
    const int64_t m = std::min<int64_t>(W, n - i);
    const V v = load_n(y + i, m) * va;
    store_n(b == T(0) ? v : v - vb, y + i, m);
  }
}

// float32 copies of a bf16 row for the float32 row code: one set per work block, allocated by the
// first bf16 row that asks (float32 and float64 calls never do).
struct RowScratch {
  std::vector<float> buf[2];
  float* get(int k, int64_t n) {
    if (buf[k].size() < static_cast<size_t>(n)) buf[k].resize(static_cast<size_t>(n));
    return buf[k].data();
  }
  float* widen(int k, const bf16* row, int64_t n) {  // exact
    float* out = get(k, n);
    widen_bf16(row, out, n);
    return out;
  }
};

// Runs f(row, scratch) for every row of a work block, the blocks spread over the threads.
template <class F>
void for_rows(int64_t rows, int64_t cols, int threads, F&& f) {
  const int64_t per = rows_per_block(cols), nblocks = ceil_div(rows, per);
  parallel_blocks(nblocks, threads, [&](int64_t b) {
    const int64_t end = std::min(rows, (b + 1) * per);
    RowScratch scratch;
    for (int64_t r = b * per; r < end; ++r) f(r, scratch);
  });
}

// sum_r f(r, scratch) over all rows, each block's rows added in order in double, the blocks in
// block order.
template <class F>
double sum_rows(int64_t rows, int64_t cols, int threads, F&& f) {
  const int64_t per = rows_per_block(cols), nblocks = ceil_div(rows, per);
  std::vector<double> partial(static_cast<size_t>(nblocks), 0.0);
  parallel_blocks(nblocks, threads, [&](int64_t b) {
    const int64_t end = std::min(rows, (b + 1) * per);
    RowScratch scratch;
    double acc = 0.0;
    for (int64_t r = b * per; r < end; ++r) acc += f(r, scratch);
    partial[static_cast<size_t>(b)] = acc;
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

// The same over fixed blocks of kBlock elements: f(lo, hi) returns the block's partial sum.
template <class F>
double sum_blocks(int64_t n, int threads, F&& f) {
  const int64_t nblocks = ceil_div(n, kBlock);
  std::vector<double> partial(static_cast<size_t>(nblocks), 0.0);
  parallel_blocks(nblocks, threads,
                  [&](int64_t b) { partial[static_cast<size_t>(b)] = f(b * kBlock, std::min(n, (b + 1) * kBlock)); });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

// One span of bce_with_logits: elements [0, n) of x, t, g, pos_weight aligned with the span's
// start (or null). Returns the sum of the element losses. T: the storage of x and g (bf16 too);
// C: the math's (targets and pos_weight are C: "wide").
template <class T, class C = compute_t<T>>
double bce_span(const T* x, const C* t, const C* pw, T* g, int64_t n, C scale) {
  using V = Vec<C>;
  constexpr int64_t W = V::width;
  alignas(64) C e[kChunk];
  alignas(64) C l[kChunk];
  const V zero = V::broadcast(C(0)), one = V::broadcast(C(1)), sc = V::broadcast(scale);
  DoubleSum acc;
  for (int64_t c = 0; c < n; c += kChunk) {
    const int64_t len = std::min(kChunk, n - c);
    // e = exp(-|x|), l = log1p(e): every element through the same Eigen packet code.
    for (int64_t i = 0; i < len; i += W) {
      const int64_t m = std::min<int64_t>(W, len - i);
      (-abs(load_n(x + c + i, m))).store(l + i);  // lanes past len: -|0| = -0
    }
    const int64_t padded = (len + kPad - 1) / kPad * kPad;
    for (int64_t i = (len + W - 1) / W * W; i < padded; ++i) l[i] = C(0);
    exp_padded(l, e, padded);
    AlignedMap<C>(l, padded) = AlignedMap<C>(e, padded).log1p();
    for (int64_t i = 0; i < len; i += W) {
      const int64_t m = std::min<int64_t>(W, len - i);
      const V xv = load_n(x + c + i, m), tv = load_n(t + c + i, m);
      const V ev = V::load(e + i), lv = V::load(l + i);
      const V pv = pw ? load_n(pw + c + i, m) : one;
      const V w = pw ? one + (pv - one) * tv : one;
      const V loss = (one - tv) * xv + w * (lv - minimum(xv, zero));
      acc.add(m == W ? loss : select(active<V>(m), loss, zero));
      if (g) {
        const V r = one / (one + ev);
        const V sig = select(xv < zero, ev * r, r);  // sigmoid(x), never exp of a positive number
        V d;
        if (pw) {
          const V pt = pv * tv;
          d = ((pt + one) - tv) * sig - pt;
        } else {
          d = sig - tv;
        }
        store_n(d * sc, g + c + i, m);
      }
    }
  }
  return acc.sum();
}

// ---- rows: the float32 / float64 code of one row (bf16 rows run it on widened copies) -----------------

template <class T>
void softmax_row(const T* xr, T* yr, int64_t cols, bool log) {
  using V = Vec<T>;
  constexpr int64_t W = V::width;
  const T m = row_max(xr, cols);
  if (!log) {
    const double s = exp_sum(xr, cols, m, yr);  // y = exp(x - max) (y may be x: read before written)
    scale_shift(yr, cols, static_cast<T>(1.0 / s), T(0));
  } else {
    const V vm = V::broadcast(m), ls = V::broadcast(static_cast<T>(std::log(exp_sum(xr, cols, m, (T*)nullptr))));
    for (int64_t i = 0; i < cols; i += W) {
      const int64_t k = std::min<int64_t>(W, cols - i);
      store_n((load_n(xr + i, k) - vm) - ls, yr + i, k);
    }
  }
}

template <class T>
void softmax_backward_row(const T* yr, const T* gr, T* out, int64_t cols, bool log) {
  using V = Vec<T>;
  constexpr int64_t W = V::width;
  DoubleSum acc;
  if (!log) {  // dx = y (dy - sum dy y)
    for (int64_t i = 0; i < cols; i += W) {
      const int64_t k = std::min<int64_t>(W, cols - i);
      acc.add(load_n(gr + i, k) * load_n(yr + i, k));
    }
    const V s = V::broadcast(static_cast<T>(acc.sum()));
    for (int64_t i = 0; i < cols; i += W) {
      const int64_t k = std::min<int64_t>(W, cols - i);
      store_n(load_n(yr + i, k) * (load_n(gr + i, k) - s), out + i, k);
    }
  } else {  // dx = dy - exp(y) sum dy
    for (int64_t i = 0; i < cols; i += W) acc.add(load_n(gr + i, std::min<int64_t>(W, cols - i)));
    const V s = V::broadcast(static_cast<T>(acc.sum()));
    alignas(64) T tmp[kChunk];
    alignas(64) T buf[kChunk];
    for (int64_t c = 0; c < cols; c += kChunk) {
      const int64_t len = std::min(kChunk, cols - c);
      exp_block(yr + c, len, T(0), tmp, buf);
      for (int64_t i = 0; i < len; i += W) {
        const int64_t k = std::min<int64_t>(W, len - i);
        store_n(load_n(gr + c + i, k) - V::load(buf + i) * s, out + c + i, k);
      }
    }
  }
}

// The cross-entropy constants of a call, in the row code's type.
template <class T>
struct CrossEntropyRow {
  double eps, k, denom;
  T sub_all, sub_label;  // eps / (K D), (1 - eps) / D
  CrossEntropyRow(double eps_, int64_t cols, double denom_)
      : eps(eps_), k(static_cast<double>(cols)), denom(denom_), sub_all(static_cast<T>(eps_ / (k * denom_))),
        sub_label(static_cast<T>((1.0 - eps_) / denom_)) {}

  // The loss of a counted row x with label y; its gradient into g when given.
  double operator()(const T* x, int64_t y, T* g, int64_t cols) const {
    using V = Vec<T>;
    constexpr int64_t W = V::width;
    const T m = row_max(x, cols);
    const double s = exp_sum(x, cols, m, g);  // g = exp(x - max)
    const double log_s = std::log(s);
    double loss = (static_cast<double>(m) - static_cast<double>(x[y])) + log_s;  // lse - x_y
    if (eps > 0) {  // sum_j (lse - x_j) = sum_j (max - x_j) + K log s
      DoubleSum spread;
      const V vm = V::broadcast(m);
      for (int64_t i = 0; i < cols; i += W) {
        const int64_t n = std::min<int64_t>(W, cols - i);
        spread.add(n == W ? vm - V::load(x + i) : select(active<V>(n), vm - V::load(x + i, n), V::broadcast(T(0))));
      }
      loss = (1.0 - eps) * loss + eps / k * (spread.sum() + k * log_s);
    }
    if (g) {
      scale_shift(g, cols, static_cast<T>(1.0 / (s * denom)), eps > 0 ? sub_all : T(0));
      g[y] = g[y] - sub_label;
    }
    return loss;
  }
};

// The multi-margin constants of a call, in the row code's type.
template <class T>
struct MarginRow {
  int p;
  double k;
  T mg, g1, g2;  // margin, 1 / (K D), 2 / (K D) (torch: g, and 2 * g * z)
  MarginRow(int p_, double margin, int64_t cols, double denom)
      : p(p_), k(static_cast<double>(cols)), mg(static_cast<T>(margin)), g1(static_cast<T>(1.0 / (k * denom))),
        g2(T(2) * g1) {}

  double operator()(const T* x, int64_t y, T* g, int64_t cols) const {
    using V = Vec<T>;
    constexpr int64_t W = V::width;
    constexpr T ninf = -std::numeric_limits<T>::infinity();
    const V c = V::broadcast(mg - x[y]), zero = V::broadcast(T(0)), vg1 = V::broadcast(g1), vg2 = V::broadcast(g2);
    DoubleSum loss, gsum;
    auto span = [&](int64_t lo, int64_t hi) {  // the classes j in [lo, hi), all != y
      for (int64_t i = lo; i < hi; i += W) {
        const int64_t n = std::min<int64_t>(W, hi - i);
        const V z = c + load_fill<V>(x + i, n, ninf);  // lanes past n: -inf, never > 0
        const auto pos = z > zero;
        loss.add(select(pos, p == 1 ? z : z * z, zero));
        if (g) {
          const V gv = select(pos, p == 1 ? vg1 : vg2 * z, zero);
          gsum.add(gv);
          store_n(gv, g + i, n);
        }
      }
    };
    span(0, y);
    span(y + 1, cols);
    if (g) g[y] = static_cast<T>(0.0 - gsum.sum());
    return loss.sum() / k;
  }
};

// A labelled row of a loss: row(x, y, g, cols) on the row itself, or for bf16 on its float32
// copy, the gradient narrowed once.
template <class T, class Row>
double labelled_row(const Row& row, const T* x, int64_t y, T* g, int64_t cols, RowScratch& s) {
  if constexpr (is_bf16<T>) {
    float* gs = g ? s.get(1, cols) : nullptr;
    const double loss = row(s.widen(0, x, cols), y, gs, cols);
    if (g) narrow_bf16(gs, g, cols);
    return loss;
  } else {
    return row(x, y, g, cols);
  }
}

}  // namespace

template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols, bool log, int threads) {
  if (rows == 0 || cols == 0) return;
  for_rows(rows, cols, threads, [&](int64_t r, RowScratch& s) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    if constexpr (is_bf16<T>) {  // y may be x: widened before written
      float* ys = s.get(1, cols);
      softmax_row(s.widen(0, xr, cols), ys, cols, log);
      narrow_bf16(ys, yr, cols);
    } else {
      softmax_row(xr, yr, cols, log);
    }
  });
}

template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols, bool log, int threads) {
  if (rows == 0 || cols == 0) return;
  for_rows(rows, cols, threads, [&](int64_t r, RowScratch& s) {
    const T* yr = y + r * cols;
    const T* gr = dy + r * cols;
    T* out = dx + r * cols;
    if constexpr (is_bf16<T>) {  // dx may be dy: both widened before dx is written
      float* ys = s.widen(0, yr, cols);
      float* gs = s.widen(1, gr, cols);
      softmax_backward_row(ys, gs, gs, cols, log);  // in place, as the float32 kernel may be
      narrow_bf16(gs, out, cols);
    } else {
      softmax_backward_row(yr, gr, out, cols, log);
    }
  });
}

template <class T>
double softmax_cross_entropy(const T* logits, const int64_t* labels, T* grad, int64_t rows, int64_t cols,
                             const CrossEntropyArgs& args, int threads) {
  int64_t counted = 0;
  for (int64_t r = 0; r < rows; ++r) counted += labels[r] != args.ignore_index;
  const double denom = args.mean ? static_cast<double>(counted) : 1.0;
  const CrossEntropyRow<compute_t<T>> row(args.label_smoothing, cols, denom);
  const double total = sum_rows(rows, cols, threads, [&](int64_t r, RowScratch& s) -> double {
    T* g = grad ? grad + r * cols : nullptr;
    const int64_t y = labels[r];
    if (y == args.ignore_index) {
      if (g) std::fill(g, g + cols, T{});  // +0 (bf16 too: its bits are zero)
      return 0.0;
    }
    return labelled_row(row, logits + r * cols, y, g, cols, s);
  });
  return total / denom;  // mean over no counted row: 0 / 0 = NaN, as torch
}

template <class T>
double multi_margin_loss(const T* scores, const int64_t* labels, T* grad, int64_t rows, int64_t cols, int p,
                         double margin, bool mean, int threads) {
  const double denom = mean ? static_cast<double>(rows) : 1.0;
  const MarginRow<compute_t<T>> row(p, margin, cols, denom);
  const double total = sum_rows(rows, cols, threads, [&](int64_t r, RowScratch& s) -> double {
    return labelled_row(row, scores + r * cols, labels[r], grad ? grad + r * cols : nullptr, cols, s);
  });
  return total / denom;
}

template <class T>
double squared_error(const T* pred, const compute_t<T>* target, T* grad, int64_t n, double grad_scale, int threads) {
  using C = compute_t<T>;
  using V = Vec<C>;
  constexpr int64_t W = V::width;
  const V sc = V::broadcast(static_cast<C>(grad_scale));
  return sum_blocks(n, threads, [&](int64_t lo, int64_t hi) {
    DoubleSum acc;
    for (int64_t i = lo; i < hi; i += W) {
      const int64_t m = std::min<int64_t>(W, hi - i);
      const V d = load_n(pred + i, m) - load_n(target + i, m);  // lanes past m: 0 - 0
      acc.add_sq(d);
      if (grad) store_n(sc * d, grad + i, m);  // torch: norm * (input - target)
    }
    return acc.sum();
  });
}

template <class T>
double bce_with_logits(const T* logits, const compute_t<T>* targets, const compute_t<T>* pos_weight, T* grad, int64_t n,
                       int64_t cols, double grad_scale, int threads) {
  using C = compute_t<T>;
  const C scale = static_cast<C>(grad_scale);
  if (!pos_weight)
    return sum_blocks(n, threads, [&](int64_t lo, int64_t hi) {
      return bce_span(logits + lo, targets + lo, (const C*)nullptr, grad ? grad + lo : nullptr, hi - lo, scale);
    });
  if (cols == 0) return 0.0;
  return sum_rows(n / cols, cols, threads, [&](int64_t r, RowScratch&) {
    const int64_t o = r * cols;
    return bce_span(logits + o, targets + o, pos_weight, grad ? grad + o : nullptr, cols, scale);
  });
}

template <class T>
double penalty(const Segments<T>& list, double l1, double l2, int threads) {
  using C = compute_t<T>;  // bf16 params and grads: float32 lanes, grads rounded once on the store
  using V = Vec<C>;
  constexpr int64_t W = V::width;
  const int64_t n = list.count ? list.offset[list.count] : 0;
  const int64_t nblocks = ceil_div(n, kBlock);
  std::vector<double> abs_sum(static_cast<size_t>(nblocks), 0.0), sq_sum(static_cast<size_t>(nblocks), 0.0);
  const V vl1 = V::broadcast(static_cast<C>(l1)), vl2 = V::broadcast(static_cast<C>(l2));
  const bool write = list.list[1] != nullptr && (l1 != 0 || l2 != 0);
  parallel_blocks(nblocks, threads, [&](int64_t b) {
    DoubleSum a1, a2;
    for_each_piece(list, b * kBlock, std::min(n, (b + 1) * kBlock), [&](int64_t s, int64_t off, int64_t len) {
      const T* w = list.list[0][s] + off;
      T* g = write ? list.list[1][s] + off : nullptr;
      for (int64_t i = 0; i < len; i += W) {
        const int64_t m = std::min<int64_t>(W, len - i);
        const V wv = load_n(w + i, m);  // lanes past m: 0, adding nothing
        a1.add(abs(wv));
        a2.add_sq(wv);
        if (g) {
          V d;
          if (l1 != 0 && l2 != 0) d = vl1 * sign(wv) + vl2 * wv;
          else if (l1 != 0) d = vl1 * sign(wv);
          else d = vl2 * wv;
          store_n(load_n(g + i, m) + d, g + i, m);
        }
      }
    });
    abs_sum[static_cast<size_t>(b)] = a1.sum();
    sq_sum[static_cast<size_t>(b)] = a2.sum();
  });
  double s1 = 0.0, s2 = 0.0;
  for (int64_t b = 0; b < nblocks; ++b) s1 += abs_sum[static_cast<size_t>(b)], s2 += sq_sum[static_cast<size_t>(b)];
  double value = 0.0;
  if (l1 != 0) value += l1 * s1;
  if (l2 != 0) value += 0.5 * l2 * s2;
  return value;
}

#define GF_INSTANTIATE(T)                                                                                              \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t, bool, int);                                         \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t, bool, int);                              \
  template double softmax_cross_entropy<T>(const T*, const int64_t*, T*, int64_t, int64_t, const CrossEntropyArgs&,    \
                                           int);                                                                       \
  template double multi_margin_loss<T>(const T*, const int64_t*, T*, int64_t, int64_t, int, double, bool, int);        \
  template double squared_error<T>(const T*, const compute_t<T>*, T*, int64_t, double, int);                           \
  template double bce_with_logits<T>(const T*, const compute_t<T>*, const compute_t<T>*, T*, int64_t, int64_t, double, \
                                     int);                                                                             \
  template double penalty<T>(const Segments<T>&, double, double, int);
GF_INSTANTIATE(float)
GF_INSTANTIATE(double)
GF_INSTANTIATE(bf16)
#undef GF_INSTANTIATE

}  // namespace GF_ISA_NS
}  // namespace gf
