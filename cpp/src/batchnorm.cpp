// batchnorm.cpp: bodies of the batch-norm kernels. The contract (formulas, precision, bytes per
// element, threading) is in gradfuse/batchnorm.hpp. Compiled once per ISA into gf::<isa>.
//
// Every kernel is two passes over the data:
//   1. per-channel sums in double (forward: x - pivot and its square; backward: dy and
//      dy (x - mean)), over fixed blocks combined in block order;
//   2. an element-wise pass with per-channel coefficients rounded to the dtype.
// The data are seen in one of two layouts (Geometry):
//   rows    a row-major matrix whose column k belongs to channel (k % K) / per: channels-last and
//           (N, C) data (K = C, per = 1), channels-first data with small L (K = C L, per = L).
//           Rows narrower than kMinRow are grouped (g rows of K make one row of g K columns), so
//           the vector loops run long; the last row may then be partial.
//   planes  channels-first data with L >= kPlaneMin: N C contiguous planes of L values.
#include <algorithm>
#include <cmath>
#include <memory>
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

constexpr int64_t kGrain = 16384;        // minimum elements per thread, element-wise passes
constexpr int64_t kTaskElems = 1 << 17;  // elements per reduction block
constexpr int64_t kColBlock = 1024;      // columns per reduction block (rows layout); a multiple of 16
constexpr int64_t kPlaneMin = 64;        // channels-first data with L >= kPlaneMin: planes layout
constexpr int64_t kMinRow = 256;         // rows layout: narrower rows are grouped

using D = Vec<double>;

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
template <class T>
GF_INLINE Vec<T> load_n(const T* p, int64_t n) {
  return n == Vec<T>::width ? Vec<T>::load(p) : Vec<T>::load(p, n);
}
template <class T>
GF_INLINE void store_n(Vec<T> v, T* p, int64_t n) {
  if (n == Vec<T>::width) v.store(p);
  else v.store(p, n);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- the layouts -------------------------------------------------------------------------------

struct Geometry {
  bool planes = false;
  int64_t c = 0, n = 0, l = 0;  // channels, samples, values per (sample, channel)
  int64_t total = 0;            // elements
  int64_t cols = 0;             // rows: row width (K times the grouping); planes: L
  int64_t k = 0, per = 1;       // rows: columns of one original row, and per channel
  int64_t group = 1;            // rows: original rows per row
  int64_t channel_of(int64_t col) const { return (col % k) / per; }
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
  for (int64_t col = 0; col < g.cols; ++col) out[col] = per_channel[g.channel_of(col)];
  return out;
}

// ---- pass 1: per-channel sums ------------------------------------------------------------------
//
// kGrad false (forward):  d = x - p;  u += d,  v += d d
// kGrad true (backward):  d = x - p;  u += g,  v += g d        (p = the saved mean)
// d, u, v in double. Lanes beyond the data are loaded as zero in x, g AND p, so they add zero.

template <class T, bool kGrad>
GF_INLINE void accumulate(Vec<T> x, Vec<T> g, const D* p, D* u, D* v) {
  constexpr int P = Wide<T>::P;
  D xw[P], gw[P];
  Wide<T>::of(x, xw);
  if constexpr (kGrad) Wide<T>::of(g, gw);
  for (int j = 0; j < P; ++j) {
    const D d = xw[j] - p[j];
    if constexpr (kGrad) {
      u[j] = u[j] + gw[j];
      v[j] = v[j] + gw[j] * d;
    } else {
      u[j] = u[j] + d;
      v[j] = v[j] + d * d;
    }
  }
}

// Rows layout: Q consecutive rows (stride apart) of the columns [k0, k1), added into s1, s2
// (indexed by column). The Q rows are summed first, in row order, then added.
template <class T, bool kGrad, int Q>
GF_INLINE void sum_rows(const T* x, const T* g, int64_t stride, const T* piv, int64_t k0, int64_t k1,
                        double* s1, double* s2) {
  using V = Vec<T>;
  constexpr int W = V::width, P = Wide<T>::P, DW = D::width;
  for (int64_t k = k0; k < k1; k += W) {
    const int64_t nl = std::min<int64_t>(W, k1 - k);
    D p[P], u[P], v[P];
    Wide<T>::of(load_n(piv + k, nl), p);
    for (int j = 0; j < P; ++j) u[j] = v[j] = D::broadcast(0.0);
    for (int q = 0; q < Q; ++q) {
      const V xv = load_n(x + q * stride + k, nl);
      if constexpr (kGrad) accumulate<T, true>(xv, load_n(g + q * stride + k, nl), p, u, v);
      else accumulate<T, false>(xv, xv, p, u, v);
    }
    for (int j = 0; j < P; ++j) {
      (D::load(s1 + k + j * DW) + u[j]).store(s1 + k + j * DW);
      (D::load(s2 + k + j * DW) + v[j]).store(s2 + k + j * DW);
    }
  }
}

// Rows layout, one reduction block: rows [r0, r1) x columns [k0, k1) into s1[k0..], s2[k0..],
// which this block owns (zeroed here, up to a whole vector past k1).
template <class T, bool kGrad>
void rows_block(const Geometry& geo, const T* x, const T* g, const T* piv, int64_t r0, int64_t r1, int64_t k0,
                int64_t k1, double* s1, double* s2) {
  const int64_t cols = geo.cols;
  const int64_t kend = k0 + ceil_div(k1 - k0, Vec<T>::width) * Vec<T>::width;
  std::fill(s1 + k0, s1 + kend, 0.0);
  std::fill(s2 + k0, s2 + kend, 0.0);
  const int64_t full = std::min(r1, geo.total / cols);  // rows with every column present
  int64_t r = r0;
  for (; r + 4 <= full; r += 4)
    sum_rows<T, kGrad, 4>(x + r * cols, g + r * cols, cols, piv, k0, k1, s1, s2);
  for (; r < full; ++r) sum_rows<T, kGrad, 1>(x + r * cols, g + r * cols, cols, piv, k0, k1, s1, s2);
  if (r < r1) {  // the partial last row
    const int64_t end = std::min(k1, geo.total - r * cols);
    if (end > k0) sum_rows<T, kGrad, 1>(x + r * cols, g + r * cols, cols, piv, k0, end, s1, s2);
  }
}

// Planes layout, one reduction block: channel ch of samples [n0, n1).
template <class T, bool kGrad>
void planes_block(const Geometry& geo, const T* x, const T* g, T pivot, int64_t ch, int64_t n0, int64_t n1,
                  double& out1, double& out2) {
  using V = Vec<T>;
  constexpr int W = V::width, P = Wide<T>::P;
  const int64_t l = geo.l, body = l - l % W, rem = l % W;
  D p[P], ptail[P], u[P], v[P];
  Wide<T>::of(V::broadcast(pivot), p);
  if (rem) {
    T buf[W];
    for (int i = 0; i < W; ++i) buf[i] = pivot;
    Wide<T>::of(V::load(buf, rem), ptail);  // zero beyond rem, like the data
  }
  for (int j = 0; j < P; ++j) u[j] = v[j] = D::broadcast(0.0);
  for (int64_t s = n0; s < n1; ++s) {
    const int64_t base = (s * geo.c + ch) * l;
    const T* xp = x + base;
    const T* gp = g + base;
    for (int64_t i = 0; i < body; i += W) {
      const V xv = V::load(xp + i);
      if constexpr (kGrad) accumulate<T, true>(xv, V::load(gp + i), p, u, v);
      else accumulate<T, false>(xv, xv, p, u, v);
    }
    if (rem) {
      const V xv = V::load(xp + body, rem);
      if constexpr (kGrad) accumulate<T, true>(xv, V::load(gp + body, rem), ptail, u, v);
      else accumulate<T, false>(xv, xv, ptail, u, v);
    }
  }
  double a = 0.0, b = 0.0;
  for (int j = 0; j < P; ++j) a += hsum(u[j]), b += hsum(v[j]);
  out1 = a, out2 = b;
}

// Per-channel sums s1[c], s2[c] over every element (see accumulate), pivot per channel. Fixed
// blocks (edges from the shape only), one partial per block, combined in block order.
template <class T, bool kGrad>
void channel_sums(const Geometry& geo, const T* x, const T* g, const T* pivot, int threads, double* s1,
                  double* s2) {
  const int64_t C = geo.c;
  if (geo.planes) {
    const int64_t per_block = std::max<int64_t>(1, kTaskElems / geo.l);
    const int64_t nb = ceil_div(geo.n, per_block);
    std::unique_ptr<double[]> part(new double[2 * C * nb]);
    parallel_blocks(C * nb, threads, [&](int64_t b) {
      const int64_t ch = b / nb, n0 = (b % nb) * per_block, n1 = std::min(geo.n, n0 + per_block);
      planes_block<T, kGrad>(geo, x, g, pivot[ch], ch, n0, n1, part[2 * b], part[2 * b + 1]);
    });
    for (int64_t ch = 0; ch < C; ++ch) {
      double a = 0.0, b = 0.0;
      for (int64_t pb = 0; pb < nb; ++pb) a += part[2 * (ch * nb + pb)], b += part[2 * (ch * nb + pb) + 1];
      s1[ch] = a, s2[ch] = b;
    }
    return;
  }
  const int64_t cols = geo.cols, rows = ceil_div(geo.total, cols);
  const std::vector<T> piv = per_column(geo, pivot);
  const int64_t stride = static_cast<int64_t>(piv.size());  // cols, padded
  const int64_t ncb = ceil_div(cols, kColBlock);
  const int64_t rows_per = std::max<int64_t>(1, kTaskElems / std::min(cols, kColBlock));
  const int64_t nrb = ceil_div(rows, rows_per);
  std::unique_ptr<double[]> p1(new double[nrb * stride]), p2(new double[nrb * stride]);
  parallel_blocks(nrb * ncb, threads, [&](int64_t b) {
    const int64_t rb = b / ncb, cb = b % ncb;
    const int64_t r0 = rb * rows_per, r1 = std::min(rows, r0 + rows_per);
    const int64_t k0 = cb * kColBlock, k1 = std::min(cols, k0 + kColBlock);
    rows_block<T, kGrad>(geo, x, g, piv.data(), r0, r1, k0, k1, p1.get() + rb * stride, p2.get() + rb * stride);
  });
  // Channel ch: for each group j and column l of it, the column's blocks in order; then in (j, l) order.
  const int64_t work = geo.group * geo.per * nrb;
  parallel_for(C, threads, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, work)), [&](int64_t lo, int64_t hi) {
    for (int64_t ch = lo; ch < hi; ++ch) {
      double a = 0.0, b = 0.0;
      for (int64_t j = 0; j < geo.group; ++j)
        for (int64_t l = 0; l < geo.per; ++l) {
          const int64_t col = j * geo.k + ch * geo.per + l;
          if (col >= cols) continue;
          double ca = 0.0, cb = 0.0;
          for (int64_t rb = 0; rb < nrb; ++rb) ca += p1[rb * stride + col], cb += p2[rb * stride + col];
          a += ca, b += cb;
        }
      s1[ch] = a, s2[ch] = b;
    }
  });
}

// ---- pass 2: element-wise ----------------------------------------------------------------------
//
// out = op(a, b, prm) over every element; prm[i] is per column (rows layout) or per channel
// (planes layout). NIN: how many of the inputs a, b the op reads. out may be a (in place).

template <class T, int NIN, int NP, class Op>
void elementwise(const Geometry& geo, const T* a, const T* b, T* out, const T* const (&prm)[NP], int threads, Op op) {
  using V = Vec<T>;
  constexpr int W = V::width;
  const int64_t cols = geo.cols;
  const bool planes = geo.planes;
  parallel_for(geo.total, threads, kGrain, [&](int64_t lo, int64_t hi) {
    int64_t row = lo / cols, c0 = lo % cols;
    while (lo < hi) {  // the part [c0, c1) of one row (planes: of one plane) at a time
      const int64_t c1 = std::min(cols, c0 + (hi - lo));
      const T* ar = a + row * cols;
      const T* br = b + row * cols;
      T* outr = out + row * cols;
      V pv[NP];
      for (int i = 0; i < NP; ++i) pv[i] = V::broadcast(planes ? prm[i][row % geo.c] : T(0));
      for (int64_t c = c0; c < c1; c += W) {
        const int64_t nl = std::min<int64_t>(W, c1 - c);
        if (!planes)
          for (int i = 0; i < NP; ++i) pv[i] = load_n(prm[i] + c, nl);
        const V av = load_n(ar + c, nl);
        const V bv = NIN == 2 ? load_n(br + c, nl) : av;
        store_n(op(av, bv, pv), outr + c, nl);
      }
      lo += c1 - c0;
      ++row;
      c0 = 0;
    }
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
  const int64_t C = a.c, count = a.n * a.l;
  if (C == 0) return;
  // y = (x - pivot) scale + shift, per channel
  std::vector<T> pivot(C), scale(C), shift(C);
  if (a.batch_stats) {
    if (count == 0) {  // no statistics: nothing to normalise, running statistics untouched
      std::fill(a.save_mean, a.save_mean + C, T(0));
      std::fill(a.save_invstd, a.save_invstd + C, T(0));
      return;
    }
    const Geometry geo = geometry(a.n, a.c, a.l, a.channels_last);
    const int64_t first = a.channels_last ? 1 : a.l;  // channel ch starts at x[ch * first]
    for (int64_t ch = 0; ch < C; ++ch) pivot[ch] = a.x[ch * first];
    std::vector<double> s1(C), s2(C);
    channel_sums<T, false>(geo, a.x, a.x, pivot.data(), threads, s1.data(), s2.data());
    const double n = static_cast<double>(count);
    for (int64_t ch = 0; ch < C; ++ch) {
      const double md = s1[ch] / n;                            // mean - pivot
      const double var = std::max(s2[ch] / n - md * md, 0.0);  // NaN stays NaN
      const double mean = static_cast<double>(pivot[ch]) + md;
      const double invstd = 1.0 / std::sqrt(var + a.eps);
      const double w = a.weight ? static_cast<double>(a.weight[ch]) : 1.0;
      const double b = a.bias ? static_cast<double>(a.bias[ch]) : 0.0;
      scale[ch] = static_cast<T>(w * invstd);
      shift[ch] = static_cast<T>(b - md * (w * invstd));
      a.save_mean[ch] = static_cast<T>(mean);
      a.save_invstd[ch] = static_cast<T>(invstd);
      if (a.running_mean) {
        const double m = a.momentum;
        a.running_mean[ch] = static_cast<T>((1.0 - m) * static_cast<double>(a.running_mean[ch]) + m * mean);
        a.running_var[ch] =
            static_cast<T>((1.0 - m) * static_cast<double>(a.running_var[ch]) + m * (var * n / (n - 1.0)));
      }
    }
  } else {
    for (int64_t ch = 0; ch < C; ++ch) {
      const double invstd = 1.0 / std::sqrt(static_cast<double>(a.running_var[ch]) + a.eps);
      const double w = a.weight ? static_cast<double>(a.weight[ch]) : 1.0;
      pivot[ch] = a.running_mean[ch];
      scale[ch] = static_cast<T>(w * invstd);
      shift[ch] = a.bias ? a.bias[ch] : T(0);
      a.save_mean[ch] = a.running_mean[ch];
      a.save_invstd[ch] = static_cast<T>(invstd);
    }
  }
  if (count == 0) return;
  const Geometry geo = geometry(a.n, a.c, a.l, a.channels_last);
  const Coefficients<T> k(geo, {&pivot, &scale, &shift});
  const T* const prm[3] = {k.ptr[0], k.ptr[1], k.ptr[2]};
  elementwise<T, 1, 3>(geo, a.x, a.x, a.y, prm, threads,
                       [](Vec<T> x, Vec<T>, const Vec<T>* p) { return (x - p[0]) * p[1] + p[2]; });
}

template <class T>
void batchnorm_backward(const BnBackward<T>& a, int threads) {
  const int64_t C = a.c, count = a.n * a.l;
  if (C == 0) return;
  const bool sums = a.batch_stats || a.dweight || a.dbias;
  std::vector<double> sg(C, 0.0), sgd(C, 0.0);  // sum dy, sum dy (x - mean)
  const Geometry geo = count > 0 ? geometry(a.n, a.c, a.l, a.channels_last) : Geometry{};
  if (sums && count > 0) channel_sums<T, true>(geo, a.x, a.dy, a.save_mean, threads, sg.data(), sgd.data());
  // dx = (dy k1 + (x - mean) k2) + k3   (eval: dy k1)
  std::vector<T> k1(C), k2(C), k3(C);
  const double n = static_cast<double>(count);
  for (int64_t ch = 0; ch < C; ++ch) {
    const double invstd = static_cast<double>(a.save_invstd[ch]);
    const double w = a.weight ? static_cast<double>(a.weight[ch]) : 1.0;
    if (a.dbias) a.dbias[ch] = static_cast<T>(sg[ch]);
    if (a.dweight) a.dweight[ch] = static_cast<T>(sgd[ch] * invstd);
    const double c1 = w * invstd;
    k1[ch] = static_cast<T>(c1);
    if (a.batch_stats && count > 0) {
      const double mean_dy = sg[ch] / n, mean_dy_xhat = sgd[ch] * invstd / n;
      k2[ch] = static_cast<T>(-c1 * invstd * mean_dy_xhat);
      k3[ch] = static_cast<T>(-c1 * mean_dy);
    }
  }
  if (count == 0) return;
  if (a.batch_stats) {
    std::vector<T> mean(a.save_mean, a.save_mean + C);
    const Coefficients<T> k(geo, {&mean, &k1, &k2, &k3});
    const T* const prm[4] = {k.ptr[0], k.ptr[1], k.ptr[2], k.ptr[3]};
    elementwise<T, 2, 4>(geo, a.dy, a.x, a.dx, prm, threads, [](Vec<T> dy, Vec<T> x, const Vec<T>* p) {
      return (dy * p[1] + (x - p[0]) * p[2]) + p[3];
    });
  } else {
    const Coefficients<T> k(geo, {&k1});
    const T* const prm[1] = {k.ptr[0]};
    elementwise<T, 1, 1>(geo, a.dy, a.dy, a.dx, prm, threads,
                         [](Vec<T> dy, Vec<T>, const Vec<T>* p) { return dy * p[0]; });
  }
}

template void batchnorm_forward<float>(const BnForward<float>&, int);
template void batchnorm_forward<double>(const BnForward<double>&, int);
template void batchnorm_backward<float>(const BnBackward<float>&, int);
template void batchnorm_backward<double>(const BnBackward<double>&, int);

}  // namespace GF_ISA_NS
}  // namespace gf
