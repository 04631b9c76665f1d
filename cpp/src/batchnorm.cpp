// batchnorm.cpp: bodies of the batch-norm kernels. The contract (formulas, precision, bytes per
// element, threading) is in gradfuse/batchnorm.hpp. Compiled once per ISA into gf::<isa>.
//
// Every kernel is two passes over the data:
//   1. per-channel sums in double (forward: x - pivot and its square; backward: dy, dy (x - mean)
//      and x - mean), over fixed blocks combined in block order;
//   2. an element-wise pass with per-channel coefficients rounded to the dtype.
// The data are seen in one of two layouts (Geometry):
//   rows    a row-major matrix whose column k belongs to channel (k % K) / per: channels-last and
//           (N, C) data (K = C, per = 1), channels-first data with small L (K = C L, per = L).
//           Rows narrower than kMinRow are grouped (g rows of K make one row of g K columns), so
//           the vector loops run long; the last row may then be partial.
//   planes  channels-first data with L >= kPlaneMin: N C contiguous planes of L values.
// T is the data's storage type, R = compute_t<T> its arithmetic (float for bf16): data are loaded
// into Vec<R> lanes (bf16: widened, exact) and stored from them (bf16: rounded once), so a bf16 call
// runs the float32 code on the same blocks; per-channel values and coefficients are R.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gradfuse/batchnorm.hpp"
#include "gradfuse/parallel.hpp"
#include "gradfuse/simd.hpp"

// GCC 12 reports the _mm512_undefined_* placeholders inside its own intrinsics (float->double
// widening, reductions) as uninitialized: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace gf {
namespace GF_ISA_NS {
namespace {

constexpr int64_t kTaskElems = 1 << 17;  // elements per reduction block
constexpr int64_t kColBlock = 1024;      // columns per reduction block (rows layout); a multiple of 16
constexpr int64_t kPlaneMin = 64;        // channels-first data with L >= kPlaneMin: planes layout
constexpr int64_t kMinRow = 256;         // rows layout: narrower rows are grouped
constexpr int64_t kStreamBytes = int64_t{16} << 20;  // outputs this large are streamed (no read-for-ownership)

using D = Vec<double>;

// A data element as its arithmetic type (bf16: widened, exact).
GF_INLINE float to_real(bf16 x) { return bf16_to_float(x); }
template <class T>
GF_INLINE T to_real(T x) {
  return x;
}

// The lanes of a Vec<T> as P vectors of doubles (float: lanes 0..W/2-1, then W/2..W-1).
template <class T>
struct Wide;
template <>
struct Wide<double> {
  static constexpr int P = 1;
  static GF_INLINE void of(Vec<double> a, D* out) { out[0] = a; }
};
template <>
struct Wide<float> {
  static constexpr int P = Vec<float>::width == 1 ? 1 : 2;
  template <class V>
  static GF_INLINE void of(V a, D* out) {
    out[0] = widen_lo(a);
    if constexpr (P == 2) out[1] = widen_hi(a);
  }
};

// n lanes from p (n <= width; the others zero), a full load when n == width.
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- the layouts -------------------------------------------------------------------------------

struct Geometry {
  bool planes = false;
  int64_t c = 0, n = 0, l = 0;  // channels, samples, values per (sample, channel)
  int64_t total = 0;            // elements
  int64_t cols = 0;             // rows: row width (K times the grouping); planes: L
  int64_t k = 0, per = 1;       // rows: columns of one original row, and per channel
  int64_t group = 1;            // rows: original rows per row; column j k + ch per + l is channel ch's
};

Geometry geometry(int64_t n, int64_t c, int64_t l, bool channels_last) {
  Geometry g;
  g.c = c, g.n = n, g.l = l, g.total = n * l * c;
  if (!channels_last && l >= kPlaneMin) {
    g.planes = true;
    g.cols = l;
  } else {
    g.k = channels_last ? c : c * l;
    g.per = channels_last ? 1 : l;
    g.group = g.k >= kMinRow ? 1 : ceil_div(kMinRow, g.k);
    g.cols = g.k * g.group;
  }
  return g;
}

// Rows layout: a per-channel value for every column, zero-padded to a whole vector.
template <class T>
std::vector<T> per_column(const Geometry& g, const T* per_channel) {
  std::vector<T> out(static_cast<size_t>(ceil_div(g.cols, Vec<T>::width) * Vec<T>::width), T(0));
  T* o = out.data();  // column j k + ch per + l belongs to channel ch
  for (int64_t j = 0; j < g.group; ++j)
    for (int64_t ch = 0; ch < g.c; ++ch) o = std::fill_n(o, g.per, per_channel[ch]);
  return out;
}

// ---- pass 1: per-channel sums ------------------------------------------------------------------
//
// kGrad false (forward):  d = x - p;  s0 += d,  s1 += d d                    (p: the pivot)
// kGrad true (backward):  d = x - p;  s0 += g,  s1 += g d,  s2 += d          (p: the saved mean)
// d is formed in T (exact when x is within a factor 2 of p, as near the pivot or the mean; one
// rounding, 2^-24 |d| for float32, otherwise), then widened: the products and every sum are in
// double, d d and g d with one fma on the vector paths. Lanes beyond the data are loaded as zero
// in x, g AND p, so they add zero.

template <bool kGrad>
constexpr int kSums = kGrad ? 3 : 2;

constexpr int kRowGroup = 8;  // rows layout: rows summed per column vector before the partials are updated

// a b + c: one fma on the vector paths, a product and a sum on the scalar one (no fma unit there)
GF_INLINE D madd(D a, D b, D c) {
  if constexpr (D::width > 1) return fma(a, b, c);
  else return a * b + c;
}

template <class T, bool kGrad>
GF_INLINE void accumulate(Vec<T> x, Vec<T> g, Vec<T> p, D (*s)[Wide<T>::P]) {
  constexpr int P = Wide<T>::P;
  D dw[P], gw[P];
  Wide<T>::of(x - p, dw);
  if constexpr (kGrad) Wide<T>::of(g, gw);
  for (int j = 0; j < P; ++j) {
    if constexpr (kGrad) {
      s[0][j] = s[0][j] + gw[j];
      s[1][j] = madd(gw[j], dw[j], s[1][j]);
      s[2][j] = s[2][j] + dw[j];
    } else {
      s[0][j] = s[0][j] + dw[j];
      s[1][j] = madd(dw[j], dw[j], s[1][j]);
    }
  }
}

// Rows layout: Q consecutive rows (stride apart) of the columns [k0, k1), added into out[i]
// (indexed by column). The Q rows are summed first, in row order, then added.
template <class T, bool kGrad, int Q, class R = compute_t<T>>
GF_INLINE void sum_rows(const T* x, const T* g, int64_t stride, const R* piv, int64_t k0, int64_t k1,
                        double* const* out) {
  using V = Vec<R>;
  constexpr int W = V::width, P = Wide<R>::P, DW = D::width, NS = kSums<kGrad>;
  for (int64_t k = k0; k < k1; k += W) {
    const int64_t nl = std::min<int64_t>(W, k1 - k);
    const V p = load_n(piv + k, nl);
    D acc[NS][P];
    for (int i = 0; i < NS; ++i)
      for (int j = 0; j < P; ++j) acc[i][j] = D::load(out[i] + k + j * DW);
    for (int q = 0; q < Q; ++q) {
      const V xv = load_n(x + q * stride + k, nl);
      if constexpr (kGrad) accumulate<R, true>(xv, load_n(g + q * stride + k, nl), p, acc);
      else accumulate<R, false>(xv, xv, p, acc);
    }
    for (int i = 0; i < NS; ++i)
      for (int j = 0; j < P; ++j) acc[i][j].store(out[i] + k + j * DW);
  }
}

// Rows layout, one reduction block: rows [r0, r1) x columns [k0, k1) into out[i][k0..], which this
// block owns (zeroed here, up to a whole vector past k1).
template <class T, bool kGrad, class R = compute_t<T>>
void rows_block(const Geometry& geo, const T* x, const T* g, const R* piv, int64_t r0, int64_t r1, int64_t k0,
                int64_t k1, double* const* out) {
  const int64_t cols = geo.cols;
  const int64_t kend = k0 + ceil_div(k1 - k0, Vec<R>::width) * Vec<R>::width;
  for (int i = 0; i < kSums<kGrad>; ++i) std::fill(out[i] + k0, out[i] + kend, 0.0);
  const int64_t full = std::min(r1, geo.total / cols);  // rows with every column present
  int64_t r = r0;
  for (; r + kRowGroup <= full; r += kRowGroup)
    sum_rows<T, kGrad, kRowGroup>(x + r * cols, g + r * cols, cols, piv, k0, k1, out);
  for (; r < full; ++r) sum_rows<T, kGrad, 1>(x + r * cols, g + r * cols, cols, piv, k0, k1, out);
  if (r < r1) {  // the partial last row
    const int64_t end = std::min(k1, geo.total - r * cols);
    if (end > k0) sum_rows<T, kGrad, 1>(x + r * cols, g + r * cols, cols, piv, k0, end, out);
  }
}

// Planes layout, one reduction block: channel ch of samples [n0, n1), into out[0..kSums).
template <class T, bool kGrad, class R = compute_t<T>>
void planes_block(const Geometry& geo, const T* x, const T* g, R pivot, int64_t ch, int64_t n0, int64_t n1,
                  double* out) {
  using V = Vec<R>;
  constexpr int W = V::width, P = Wide<R>::P, NS = kSums<kGrad>;
  const int64_t l = geo.l, body = l - l % W, rem = l % W;
  const V p = V::broadcast(pivot);
  V ptail = p;
  if (rem) {
    R buf[W];
    for (int i = 0; i < W; ++i) buf[i] = pivot;
    ptail = V::load(buf, rem);  // zero beyond rem, like the data
  }
  D acc[NS][P];
  for (int i = 0; i < NS; ++i)
    for (int j = 0; j < P; ++j) acc[i][j] = D::broadcast(0.0);
  for (int64_t s = n0; s < n1; ++s) {
    const int64_t base = (s * geo.c + ch) * l;
    const T* xp = x + base;
    const T* gp = g + base;
    for (int64_t i = 0; i < body; i += W) {
      const V xv = V::load(xp + i);
      if constexpr (kGrad) accumulate<R, true>(xv, V::load(gp + i), p, acc);
      else accumulate<R, false>(xv, xv, p, acc);
    }
    if (rem) {
      const V xv = V::load(xp + body, rem);
      if constexpr (kGrad) accumulate<R, true>(xv, V::load(gp + body, rem), ptail, acc);
      else accumulate<R, false>(xv, xv, ptail, acc);
    }
  }
  for (int i = 0; i < NS; ++i) {
    double t = 0.0;
    for (int j = 0; j < P; ++j) t += hsum(acc[i][j]);
    out[i] = t;
  }
}

// Room for the reduction partials: the calling thread's buffer, kept between calls up to
// kKeepDoubles (fresh pages on every call would cost page faults the size of the partials), or a
// buffer of this call's own when more is needed (not kept: a rare huge call must not pin memory).
constexpr int64_t kKeepDoubles = int64_t{1} << 20;  // 8 MiB

class Scratch {
 public:
  explicit Scratch(int64_t n) {
    thread_local std::vector<double> kept;
    std::vector<double>& buf = n <= kKeepDoubles ? kept : own_;
    if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
    data_ = buf.data();
  }
  double* data() const { return data_; }

 private:
  std::vector<double> own_;
  double* data_ = nullptr;
};

// Per-channel sums sums[i][c] over every element (see accumulate), pivot per channel. Fixed
// blocks (edges from the shape only), one partial per block, combined in block order.
template <class T, bool kGrad, class R = compute_t<T>>
void channel_sums(const Geometry& geo, const T* x, const T* g, const R* pivot, int threads, double* const* sums) {
  constexpr int NS = kSums<kGrad>;
  const int64_t C = geo.c;
  if (geo.planes) {
    const int64_t per_block = std::max<int64_t>(1, kTaskElems / geo.l);
    const int64_t nb = ceil_div(geo.n, per_block);
    const Scratch room(NS * C * nb);
    double* part = room.data();
    parallel_blocks(C * nb, threads, [&](int64_t b) {
      const int64_t ch = b / nb, n0 = (b % nb) * per_block, n1 = std::min(geo.n, n0 + per_block);
      planes_block<T, kGrad>(geo, x, g, pivot[ch], ch, n0, n1, &part[NS * b]);
    });
    for (int64_t ch = 0; ch < C; ++ch)
      for (int i = 0; i < NS; ++i) {
        double t = 0.0;
        for (int64_t pb = 0; pb < nb; ++pb) t += part[NS * (ch * nb + pb) + i];
        sums[i][ch] = t;
      }
    return;
  }
  const int64_t cols = geo.cols, rows = ceil_div(geo.total, cols);
  const std::vector<R> piv = per_column(geo, pivot);
  const int64_t stride = static_cast<int64_t>(piv.size());  // cols, padded
  const int64_t ncb = ceil_div(cols, kColBlock);
  const int64_t rows_per = std::max<int64_t>(1, kTaskElems / std::min(cols, kColBlock));
  const int64_t nrb = ceil_div(rows, rows_per);
  // part[i][rb * stride + col]: sum i of column col over row block rb
  const Scratch room(NS * nrb * stride);
  double* part = room.data();
  parallel_blocks(nrb * ncb, threads, [&](int64_t b) {
    const int64_t rb = b / ncb, cb = b % ncb;
    const int64_t r0 = rb * rows_per, r1 = std::min(rows, r0 + rows_per);
    const int64_t k0 = cb * kColBlock, k1 = std::min(cols, k0 + kColBlock);
    double* out[NS];
    for (int i = 0; i < NS; ++i) out[i] = part + (i * nrb + rb) * stride;
    rows_block<T, kGrad>(geo, x, g, piv.data(), r0, r1, k0, k1, out);
  });
  // Channel ch: for each group j and column l of it, the column's blocks in order; then in (j, l) order.
  const int64_t work = geo.group * geo.per * nrb;
  parallel_for(C, threads, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, work)), [&](int64_t lo, int64_t hi) {
    for (int64_t ch = lo; ch < hi; ++ch)
      for (int i = 0; i < NS; ++i) {
        const double* pi = part + i * nrb * stride;
        double t = 0.0;
        for (int64_t j = 0; j < geo.group; ++j)
          for (int64_t l = 0; l < geo.per; ++l) {
            const int64_t col = j * geo.k + ch * geo.per + l;
            if (col >= cols) continue;
            double column = 0.0;
            for (int64_t rb = 0; rb < nrb; ++rb) column += pi[rb * stride + col];
            t += column;
          }
        sums[i][ch] = t;
      }
  });
}

// ---- pass 2: element-wise ----------------------------------------------------------------------
//
// out = op(a, b, prm) over every element; prm[i] is per column (rows layout) or per channel
// (planes layout). NIN: how many of the inputs a, b the op reads. out may be a (in place).

template <class T, int NIN, int NP, class Op, class R = compute_t<T>>
void elementwise(const Geometry& geo, const T* a, const T* b, T* out, const R* const (&prm)[NP], int threads, Op op) {
  using V = Vec<R>;
  constexpr int W = V::width;
  constexpr int64_t kVecBytes = W * static_cast<int64_t>(sizeof(T));  // one vector's storage
  const int64_t cols = geo.cols;
  const bool planes = geo.planes;
  const bool stream = geo.total * static_cast<int64_t>(sizeof(T)) >= kStreamBytes;
  parallel_for(geo.total, threads, kGrain, [&](int64_t lo, int64_t hi) {
    int64_t row = lo / cols, c0 = lo % cols;
    while (lo < hi) {  // the part [c0, c1) of one row (planes: of one plane) at a time
      const int64_t c1 = std::min(cols, c0 + (hi - lo));
      const T* ar = a + row * cols;
      const T* br = b + row * cols;
      T* outr = out + row * cols;
      V pv[NP];
      for (int i = 0; i < NP; ++i) pv[i] = V::broadcast(planes ? prm[i][row % geo.c] : R(0));
      // nl lanes from column c; streamed (a non-temporal store) when nt
      auto one = [&](int64_t c, int64_t nl, bool nt) {
        if (!planes)
          for (int i = 0; i < NP; ++i) pv[i] = load_n(prm[i] + c, nl);
        const V av = load_n(ar + c, nl);
        const V bv = NIN == 2 ? load_n(br + c, nl) : av;
        const V r = op(av, bv, pv);
        if (nt) r.stream(outr + c);
        else store_n(r, outr + c, nl);
      };
      int64_t c = c0;
      if (stream) {
        // up to the first column whose output address is vector-aligned, then whole streamed vectors
        const int64_t mis = static_cast<int64_t>(reinterpret_cast<uintptr_t>(outr + c) % kVecBytes) / sizeof(T);
        if (mis) {
          const int64_t nl = std::min<int64_t>(W - mis, c1 - c);
          one(c, nl, false);
          c += nl;
        }
        for (; c + W <= c1; c += W) one(c, W, true);
      }
      for (; c < c1; c += W) one(c, std::min<int64_t>(W, c1 - c), false);
      lo += c1 - c0;
      ++row;
      c0 = 0;
    }
    if (stream) stream_fence();
  });
}

// The per-channel coefficients of pass 2, as the element-wise pass wants them: per column in the
// rows layout, per channel in the planes layout.
template <class T>
struct Coefficients {
  std::vector<std::vector<T>> store;
  std::vector<const T*> ptr;
  Coefficients(const Geometry& geo, std::initializer_list<const std::vector<T>*> per_channel) {
    for (const std::vector<T>* v : per_channel) store.push_back(geo.planes ? *v : per_column(geo, v->data()));
    for (const auto& v : store) ptr.push_back(v.data());
  }
};

}  // namespace

template <class T>
void batchnorm_forward(const BnForward<T>& a, int threads) {
  using R = compute_t<T>;
  const int64_t C = a.c, count = a.n * a.l;
  if (C == 0) return;
  // y = (x - pivot) scale + shift, per channel
  std::vector<R> pivot(C), scale(C), shift(C);
  if (a.batch_stats) {
    if (count == 0) {  // no statistics: nothing to normalise, running statistics untouched
      std::fill(a.save_mean, a.save_mean + C, R(0));
      std::fill(a.save_invstd, a.save_invstd + C, R(0));
      return;
    }
    const Geometry geo = geometry(a.n, a.c, a.l, a.channels_last);
    const int64_t first = a.channels_last ? 1 : a.l;  // channel ch starts at x[ch * first]
    for (int64_t ch = 0; ch < C; ++ch) pivot[ch] = to_real(a.x[ch * first]);
    std::vector<double> s1(C), s2(C);
    double* const sums[2] = {s1.data(), s2.data()};
    channel_sums<T, false>(geo, a.x, a.x, pivot.data(), threads, sums);
    const double n = static_cast<double>(count);
    for (int64_t ch = 0; ch < C; ++ch) {
      const double md = s1[ch] / n;                            // mean - pivot
      const double var = std::max(s2[ch] / n - md * md, 0.0);  // NaN stays NaN
      const double mean = static_cast<double>(pivot[ch]) + md;
      const double invstd = 1.0 / std::sqrt(var + a.eps);
      const double w = a.weight ? static_cast<double>(a.weight[ch]) : 1.0;
      const double b = a.bias ? static_cast<double>(a.bias[ch]) : 0.0;
      scale[ch] = static_cast<R>(w * invstd);
      shift[ch] = static_cast<R>(b - md * (w * invstd));
      a.save_mean[ch] = static_cast<R>(mean);
      a.save_invstd[ch] = static_cast<R>(invstd);
      if (a.running_mean) {
        const double m = a.momentum;
        a.running_mean[ch] = static_cast<R>((1.0 - m) * static_cast<double>(a.running_mean[ch]) + m * mean);
        a.running_var[ch] =
            static_cast<R>((1.0 - m) * static_cast<double>(a.running_var[ch]) + m * (var * n / (n - 1.0)));
      }
    }
  } else {
    for (int64_t ch = 0; ch < C; ++ch) {
      const double invstd = 1.0 / std::sqrt(static_cast<double>(a.running_var[ch]) + a.eps);
      const double w = a.weight ? static_cast<double>(a.weight[ch]) : 1.0;
      pivot[ch] = a.running_mean[ch];
      scale[ch] = static_cast<R>(w * invstd);
      shift[ch] = a.bias ? a.bias[ch] : R(0);
      a.save_mean[ch] = a.running_mean[ch];
      a.save_invstd[ch] = static_cast<R>(invstd);
    }
  }
  if (count == 0) return;
  const Geometry geo = geometry(a.n, a.c, a.l, a.channels_last);
  const Coefficients<R> k(geo, {&pivot, &scale, &shift});
  const R* const prm[3] = {k.ptr[0], k.ptr[1], k.ptr[2]};
  elementwise<T, 1, 3>(geo, a.x, a.x, a.y, prm, threads,
                       [](Vec<R> x, Vec<R>, const Vec<R>* p) { return (x - p[0]) * p[1] + p[2]; });
}

template <class T>
void batchnorm_backward(const BnBackward<T>& a, int threads) {
  using R = compute_t<T>;
  const int64_t C = a.c, count = a.n * a.l;
  if (C == 0) return;
  const bool need_sums = a.batch_stats || a.dweight || a.dbias;
  // sum dy, sum dy (x - save_mean), sum (x - save_mean)
  std::vector<double> sg(C, 0.0), sgd(C, 0.0), sd(C, 0.0);
  const Geometry geo = count > 0 ? geometry(a.n, a.c, a.l, a.channels_last) : Geometry{};
  if (need_sums && count > 0) {
    double* const sums[3] = {sg.data(), sgd.data(), sd.data()};
    channel_sums<T, true>(geo, a.x, a.dy, a.save_mean, threads, sums);
  }
  // dx = (dy k1 + (x - save_mean) k2) + k3   (eval: dy k1)
  // With batch statistics, save_mean is the batch mean rounded to T: e = mean(x - save_mean)
  // re-centres it exactly (x - mean = (x - save_mean) - e), so its rounding does not reach dx.
  std::vector<R> k1(C), k2(C), k3(C);
  const double n = static_cast<double>(count);
  for (int64_t ch = 0; ch < C; ++ch) {
    const double invstd = static_cast<double>(a.save_invstd[ch]);
    const double w = a.weight ? static_cast<double>(a.weight[ch]) : 1.0;
    const double e = a.batch_stats && count > 0 ? sd[ch] / n : 0.0;
    const double sgx = sgd[ch] - e * sg[ch];  // sum dy (x - mean)
    if (a.dbias) a.dbias[ch] = static_cast<R>(sg[ch]);
    if (a.dweight) a.dweight[ch] = static_cast<R>(sgx * invstd);
    const double c1 = w * invstd;
    k1[ch] = static_cast<R>(c1);
    if (a.batch_stats && count > 0) {
      const double mean_dy = sg[ch] / n, mean_dy_xhat = sgx * invstd / n;
      const double c2 = -c1 * invstd * mean_dy_xhat;
      k2[ch] = static_cast<R>(c2);
      k3[ch] = static_cast<R>(-c1 * mean_dy - c2 * e);
    }
  }
  if (count == 0) return;
  if (a.batch_stats) {
    std::vector<R> mean(a.save_mean, a.save_mean + C);
    const Coefficients<R> k(geo, {&mean, &k1, &k2, &k3});
    const R* const prm[4] = {k.ptr[0], k.ptr[1], k.ptr[2], k.ptr[3]};
    elementwise<T, 2, 4>(geo, a.dy, a.x, a.dx, prm, threads,
                         [](Vec<R> dy, Vec<R> x, const Vec<R>* p) { return (dy * p[1] + (x - p[0]) * p[2]) + p[3]; });
  } else {
    const Coefficients<R> k(geo, {&k1});
    const R* const prm[1] = {k.ptr[0]};
    elementwise<T, 1, 1>(geo, a.dy, a.dy, a.dx, prm, threads,
                         [](Vec<R> dy, Vec<R>, const Vec<R>* p) { return dy * p[0]; });
  }
}

template void batchnorm_forward<float>(const BnForward<float>&, int);
template void batchnorm_forward<double>(const BnForward<double>&, int);
template void batchnorm_backward<float>(const BnBackward<float>&, int);
template void batchnorm_backward<double>(const BnBackward<double>&, int);
template void batchnorm_forward<bf16>(const BnForward<bf16>&, int);
template void batchnorm_backward<bf16>(const BnBackward<bf16>&, int);

}  // namespace GF_ISA_NS
}  // namespace gf
