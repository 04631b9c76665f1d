// dense.cpp: matmul and the dense layer (contract in gradfuse/dense.hpp), compiled once per ISA
// into gf::<isa>. GEMM tiles go to OpenBLAS or to this ISA's copy of Eigen, as the Blas snapshot
// that each call takes once (current_blas()) says.
#include "gradfuse/dense.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <exception>
#include <type_traits>
#include <vector>

#include "gradfuse/activation_ops.hpp"
#include "gradfuse/bf16.hpp"
#include "gradfuse/blas.hpp"
#include "gradfuse/onednn.hpp"
#include "gradfuse/parallel.hpp"

namespace gf {
namespace GF_ISA_NS {
namespace {

constexpr int64_t kEigenTile = 256;
constexpr int64_t kMinTileSide = 16;
// OpenBLAS tiles per GEMM: at most 8, each at least 256 long (each tile repacks the operand all
// tiles share: more tiles, more traffic), so a fixed count for a shape, whatever the threads.
constexpr int kMaxTiles = 8;
constexpr int64_t kMinTileLen = 256;
constexpr double kMinTileWork = 4e6;  // multiply-adds; OpenBLAS's small-matrix kernels stop at 1e6
constexpr int64_t kBiasBlock = 128;   // rows per partial column sum of dz

// The library that runs T's GEMM tiles.
template <class T>
GemmLib lib_of(const Blas& blas) {
  return sizeof(T) == 4 ? blas.f32 : blas.f64;
}

// One C tile: rows [i0, i0+h) and columns [j0, j0+w) of C = op(A) op(B).
struct Tile {
  int64_t i0, h, j0, w;
};

// The tiles of C (m x n): never a function of the thread count, so that C is bitwise the same for
// every thread count whatever the GEMM does inside a tile (see dense.hpp). With OpenBLAS or oneDNN:
// equal tiles along the longer side, up to kMaxTiles of at least kMinTileLen, as many as stay large.
std::vector<Tile> plan_tiles(GemmLib lib, int64_t m, int64_t n, int64_t k) {
  std::vector<Tile> tiles;
  if (m == 0 || n == 0) return tiles;
  if (lib == GemmLib::eigen) {
    for (int64_t i = 0; i < m; i += kEigenTile)
      for (int64_t j = 0; j < n; j += kEigenTile)
        tiles.push_back({i, std::min(kEigenTile, m - i), j, std::min(kEigenTile, n - j)});
    return tiles;
  }
  const bool split_cols = n >= m;
  const int64_t side = split_cols ? n : m, other = split_cols ? m : n;
  int parts = static_cast<int>(std::min<int64_t>(kMaxTiles, std::max<int64_t>(1, side / kMinTileLen)));
  for (; parts > 1; --parts) {
    const int64_t len = (side + parts - 1) / parts;
    if (len >= kMinTileSide && other >= kMinTileSide && double(len) * double(other) * double(k) >= kMinTileWork) break;
  }
  const int64_t len = (side + parts - 1) / parts;
  for (int64_t s = 0; s < side; s += len) {
    const int64_t l = std::min(len, side - s);
    tiles.push_back(split_cols ? Tile{0, m, s, l} : Tile{s, l, 0, n});
  }
  return tiles;
}

template <class T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using CMap = Eigen::Map<const RowMajor<T>, 0, Eigen::OuterStride<>>;
template <class T>
using MMap = Eigen::Map<RowMajor<T>, 0, Eigen::OuterStride<>>;

// C[h x w] (=|+=) op(A)[h x k] op(B)[k x w], single-threaded. A, B point at the tile's first row
// of op(A) / first column of op(B) in their storage.
template <class T>
void gemm_tile(const Blas& blas, bool ta, bool tb, bool accumulate, int64_t h, int64_t w, int64_t k, const T* a,
               int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc) {
  if (h == 0 || w == 0) return;
  if (k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < h; ++i) std::fill(c + i * ldc, c + i * ldc + w, T(0));
    return;
  }
  const GemmLib lib = lib_of<T>(blas);
  if (lib == GemmLib::onednn) {
    if constexpr (sizeof(T) == 4) {
      OnednnGemm d;
      d.ta = ta, d.tb = tb, d.accumulate = accumulate, d.m = h, d.n = w, d.k = k, d.lda = lda, d.ldb = ldb, d.ldc = ldc;
      onednn_gemm(d, a, b, c);
      return;
    }
  }
  if (lib == GemmLib::openblas) {
    const int ta_ = ta ? 112 : 111, tb_ = tb ? 112 : 111;
    const T beta = accumulate ? T(1) : T(0);
    if constexpr (sizeof(T) == 4)
      blas.sgemm(101, ta_, tb_, int(h), int(w), int(k), 1.0f, a, int(lda), b, int(ldb), beta, c, int(ldc));
    else blas.dgemm(101, ta_, tb_, int(h), int(w), int(k), 1.0, a, int(lda), b, int(ldb), beta, c, int(ldc));
    return;
  }
  MMap<T> C(c, h, w, Eigen::OuterStride<>(ldc));
  const CMap<T> A(a, ta ? k : h, ta ? h : k, Eigen::OuterStride<>(lda));
  const CMap<T> B(b, tb ? w : k, tb ? k : w, Eigen::OuterStride<>(ldb));
  auto run = [&](const auto& opa, const auto& opb) {
    if (accumulate) C.noalias() += opa * opb;
    else C.noalias() = opa * opb;
  };
  if (!ta && !tb) run(A, B);
  else if (ta && !tb) run(A.transpose(), B);
  else if (!ta && tb) run(A, B.transpose());
  else run(A.transpose(), B.transpose());
}

// C = op(A) op(B) over the planned tiles; epilogue(tile) runs on each tile right after its GEMM.
template <class T, class Epilogue>
void tiled_gemm(const Blas& blas, const GemmArgs& g, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                int64_t ldc, int threads, Epilogue&& epilogue) {
  const std::vector<Tile> tiles = plan_tiles(lib_of<T>(blas), g.m, g.n, g.k);
  blas_single_threaded(blas);
  // oneDNN reports failures with exceptions, which must not leave an OpenMP region: the first one
  // is kept and rethrown after it.
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  parallel_blocks(static_cast<int64_t>(tiles.size()), threads, [&](int64_t t) {
    if (failed.load(std::memory_order_relaxed)) return;
    try {
      const Tile& tile = tiles[t];
      const T* at = g.trans_a ? a + tile.i0 : a + tile.i0 * lda;
      const T* bt = g.trans_b ? b + tile.j0 * ldb : b + tile.j0;
      gemm_tile(blas, g.trans_a, g.trans_b, g.accumulate, tile.h, tile.w, g.k, at, lda, bt, ldb,
                c + tile.i0 * ldc + tile.j0, ldc);
      epilogue(tile);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);
}

// acc[0:n) += g[0:n), accumulating in double.
GF_INLINE void add_to_double(double* acc, const double* g, int64_t n) {
  for_vectors<double>(n, [&](int64_t i, int64_t c) { store_n(load_n(acc + i, c) + load_n(g + i, c), acc + i, c); });
}
GF_INLINE void add_to_double(double* acc, const float* g, int64_t n) {
  using V = Vec<float>;
  constexpr int64_t W = V::width;
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const V v = V::load(g + i);
    (Vec<double>::load(acc + i) + widen_lo(v)).store(acc + i);
#if !defined(GF_ISA_SCALAR)
    (Vec<double>::load(acc + i + W / 2) + widen_hi(v)).store(acc + i + W / 2);
#endif
  }
  for (; i < n; ++i) acc[i] += static_cast<double>(g[i]);
}

// ---- bf16 GEMMs ------------------------------------------------------------------------------------
// bf16 A and B, float32 accumulation. On oneDNN each tile is one single-threaded bf16 matmul; on the
// fp32 fallback, A and B are first widened to float32 copies (exact) and each tile is a float32
// GEMM on the float32 library. The tiles are planned as for that library's float32 GEMMs.

// Vector widening (exact) and narrowing (to nearest even) of this ISA (simd.hpp).
GF_INLINE void to_f32(const bf16* x, float* y, int64_t n) { widen_bf16(x, y, n); }
GF_INLINE void to_bf16(const float* x, bf16* y, int64_t n) { narrow_bf16(x, y, n); }

// acc[0:n) += c[0:n) widened: a bf16 C accumulated onto its float32 tile before the one rounding.
GF_INLINE void add_widened(float* acc, const bf16* c, int64_t n) {
  for_vectors<float>(n, [&](int64_t i, int64_t m) { store_n(load_n(acc + i, m) + load_n(c + i, m), acc + i, m); });
}

std::vector<float> widened(const bf16* x, int64_t n, int threads) {
  std::vector<float> y(static_cast<size_t>(n));
  constexpr int64_t kBlock = int64_t(1) << 16;
  parallel_blocks((n + kBlock - 1) / kBlock, threads,
                  [&](int64_t b) { to_f32(x + b * kBlock, y.data() + b * kBlock, std::min(kBlock, n - b * kBlock)); });
  return y;
}

// A float32 tile buffer per thread, reused across calls (a fresh one would be page-faulted in).
float* tile_scratch(int64_t size) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < size) buf.resize(static_cast<size_t>(size));
  return buf.data();
}

struct NoFinish {};

// C (=|+=) op(A) op(B) for bf16 A, B; TC (C's type) float or bf16. finish(tile, t, ldt), when given,
// receives each tile's float32 results t (row stride ldt) right after its GEMM: with TC = float, t
// is C itself; with TC = bf16, a scratch tile that finish rounds into its outputs (no accumulate).
// Without finish, a bf16 C is rounded once from float32 (oneDNN writes it so itself).
template <class TC, class Finish = NoFinish>
void tiled_gemm_bf16(const Blas& blas, const GemmArgs& g, const bf16* a, int64_t lda, const bf16* b, int64_t ldb, TC* c,
                     int64_t ldc, int threads, Finish finish = {}) {
  constexpr bool has_finish = !std::is_same_v<Finish, NoFinish>;
  const bool onednn = blas.bf16_onednn;
  const std::vector<Tile> tiles = plan_tiles(onednn ? GemmLib::onednn : blas.f32, g.m, g.n, g.k);
  if (tiles.empty()) return;
  std::vector<float> a32, b32;
  if (!onednn) {
    a32 = widened(a, (g.trans_a ? g.k : g.m) * lda, threads);
    b32 = widened(b, (g.trans_b ? g.n : g.k) * ldb, threads);
  }
  blas_single_threaded(blas);
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  parallel_blocks(static_cast<int64_t>(tiles.size()), threads, [&](int64_t ti) {
    if (failed.load(std::memory_order_relaxed)) return;
    try {
      const Tile& t = tiles[ti];
      const int64_t aoff = g.trans_a ? t.i0 : t.i0 * lda, boff = g.trans_b ? t.j0 * ldb : t.j0;
      TC* ct = c + t.i0 * ldc + t.j0;
      // Where the float32 results go: C itself, or a scratch tile for a bf16 C.
      constexpr bool direct = std::is_same_v<TC, float>;
      float* out = nullptr;
      int64_t ldo = ldc;
      if constexpr (direct) out = ct;
      else ldo = t.w, out = tile_scratch(t.h * t.w + t.w);  // a spare row for finish (dense_forward_bf16)
      if (onednn && g.k > 0 && (direct || !has_finish)) {  // oneDNN writes C directly, bf16 or not
        OnednnGemm d;
        d.ta = g.trans_a, d.tb = g.trans_b, d.accumulate = g.accumulate, d.m = t.h, d.n = t.w, d.k = g.k;
        d.lda = lda, d.ldb = ldb, d.ldc = ldc, d.a = d.b = GemmType::bf16;
        d.c = direct ? GemmType::f32 : GemmType::bf16;
        onednn_gemm(d, a + aoff, b + boff, ct);
      } else if (onednn && g.k > 0) {
        OnednnGemm d;
        d.ta = g.trans_a, d.tb = g.trans_b, d.m = t.h, d.n = t.w, d.k = g.k, d.lda = lda, d.ldb = ldb, d.ldc = ldo;
        d.a = d.b = GemmType::bf16;
        onednn_gemm(d, a + aoff, b + boff, out);
      } else {
        // fp32 fallback (and K = 0): a bf16 C accumulates after the float32 tile, rounding once.
        gemm_tile(blas, g.trans_a, g.trans_b, direct && g.accumulate, t.h, t.w, g.k, a32.data() + aoff, lda,
                  b32.data() + boff, ldb, out, ldo);
        if constexpr (!direct) {
          if (!has_finish)
            for (int64_t r = 0; r < t.h; ++r) {
              float* row = out + r * ldo;
              bf16* crow = ct + r * ldc;
              if (g.accumulate) add_widened(row, crow, t.w);
              to_bf16(row, crow, t.w);
            }
        }
      }
      if constexpr (has_finish) finish(t, out, ldo);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);
}

}  // namespace

template <class TC>
void matmul_bf16(const GemmArgs& g, const bf16* a, const bf16* b, TC* c, int threads) {
  const int64_t lda = g.trans_a ? g.m : g.k, ldb = g.trans_b ? g.k : g.n;
  tiled_gemm_bf16(current_blas(), g, a, lda, b, ldb, c, g.n, threads);
}

void dense_forward_bf16(Act act, double slope, const bf16* x, const bf16* w, const float* bias, bf16* y, bf16* z,
                        int64_t n, int64_t in, int64_t out, int threads) {
  GemmArgs g;
  g.m = n, g.n = out, g.k = in;
  const Blas& blas = current_blas();
  if (act == Act::none && bias == nullptr && z == nullptr)
    return tiled_gemm_bf16(blas, g, x, in, w, out, y, out, threads);
  // The epilogue on the float32 tile, rounding y (and z) once, as the NumPy twin does.
  tiled_gemm_bf16(blas, g, x, in, w, out, y, out, threads, [&](const Tile& t, float* acc, int64_t ld) {
    float* zbuf = z ? tile_scratch(t.h * t.w + t.w) + t.h * t.w : nullptr;  // the spare row: no resize
    for (int64_t r = 0; r < t.h; ++r) {
      float* row = acc + r * ld;
      act_forward_span<float>(act, float(slope), row, bias ? bias + t.j0 : nullptr, zbuf, row, t.w);
      to_bf16(row, y + (t.i0 + r) * out + t.j0, t.w);
      if (z) to_bf16(zbuf, z + (t.i0 + r) * out + t.j0, t.w);
    }
  });
}

// The two GEMMs of a dense pass on T storage: float32 / float64 tiles, or bf16 tiles accumulated in
// float32 (C float32, or bf16 rounded once).
template <class T, class TC>
void pass_gemm(const Blas& blas, const GemmArgs& g, const T* a, int64_t lda, const T* b, int64_t ldb, TC* c,
               int64_t ldc, int threads) {
  if constexpr (is_bf16<T>) tiled_gemm_bf16(blas, g, a, lda, b, ldb, c, ldc, threads);
  else tiled_gemm(blas, g, a, lda, b, ldb, c, ldc, threads, [](const Tile&) {});
}

// dense_backward on T storage; dW and db are compute_t<T> (float32 beside bf16: they feed the
// float32 masters). bf16: dz = round(dy * act'(.)) is what the bias sum and both GEMMs read, as
// torch's autocast does; its rows are staged through float32.
template <class T>
void backward_pass(Act act, double slope, const T* dy, const T* x, const T* w, const T* y, const T* z, T* dz, T* dx,
                   compute_t<T>* dw, compute_t<T>* db, bool accumulate, int64_t n, int64_t in, int64_t out,
                   int threads) {
  using C = compute_t<T>;
  const Blas& blas = current_blas();  // one backend for both GEMMs below
  // 1. dz = dy * act'(.) and the partial column sums of dz, per fixed block of rows.
  std::vector<T> scratch;
  const T* grad = dy;
  if (act != Act::none) {
    if (!dz) {
      scratch.resize(static_cast<size_t>(n * out));
      dz = scratch.data();
    }
    grad = dz;
  }
  const int64_t blocks = (n + kBiasBlock - 1) / kBiasBlock;
  std::vector<double> partial(db ? static_cast<size_t>(blocks * out) : 0, 0.0);
  if (act != Act::none || db) {
    parallel_blocks(blocks, threads, [&](int64_t b) {
      std::vector<float> rows(is_bf16<T> ? static_cast<size_t>(4 * out) : 0);
      float *g32 = rows.data(), *z32 = g32 + out, *y32 = z32 + out, *d32 = y32 + out;
      const int64_t r0 = b * kBiasBlock, r1 = std::min(n, r0 + kBiasBlock);
      for (int64_t r = r0; r < r1; ++r) {
        if constexpr (is_bf16<T>) {
          if (act != Act::none) {
            to_f32(dy + r * out, g32, out);
            if (z) to_f32(z + r * out, z32, out);
            if (y) to_f32(y + r * out, y32, out);
            act_backward_span<float>(act, float(slope), g32, z ? z32 : nullptr, y ? y32 : nullptr, d32, out);
            to_bf16(d32, dz + r * out, out);
          }
          if (db) {
            to_f32(grad + r * out, g32, out);
            add_to_double(partial.data() + b * out, g32, out);
          }
        } else {
          if (act != Act::none)  // z is the forward's input to the activation, y its output
            act_backward_span<T>(act, T(slope), dy + r * out, z ? z + r * out : nullptr, y ? y + r * out : nullptr,
                                 dz + r * out, out);
          if (db) add_to_double(partial.data() + b * out, grad + r * out, out);
        }
      }
    });
  }
  if (db) {
    for (int64_t j = 0; j < out; ++j) {
      double s = 0.0;
      for (int64_t b = 0; b < blocks; ++b) s += partial[b * out + j];
      db[j] = accumulate ? static_cast<C>(db[j] + static_cast<C>(s)) : static_cast<C>(s);
    }
  }
  // 2. dx = dz W^T (n x in, summing over out); dW (+)= x^T dz (in x out, summing over n).
  if (dx) {
    GemmArgs g;
    g.trans_b = true, g.m = n, g.n = in, g.k = out;
    pass_gemm(blas, g, grad, out, w, out, dx, in, threads);
  }
  if (dw) {
    GemmArgs g;
    g.trans_a = true, g.accumulate = accumulate, g.m = in, g.n = out, g.k = n;
    pass_gemm(blas, g, x, in, grad, out, dw, out, threads);
  }
}

void dense_backward_bf16(Act act, double slope, const bf16* dy, const bf16* x, const bf16* w, const bf16* y,
                         const bf16* z, bf16* dz, bf16* dx, float* dw, float* db, bool accumulate, int64_t n,
                         int64_t in, int64_t out, int threads) {
  backward_pass<bf16>(act, slope, dy, x, w, y, z, dz, dx, dw, db, accumulate, n, in, out, threads);
}

template void matmul_bf16<float>(const GemmArgs&, const bf16*, const bf16*, float*, int);
template void matmul_bf16<bf16>(const GemmArgs&, const bf16*, const bf16*, bf16*, int);

template <class T>
void matmul(const GemmArgs& g, const T* a, const T* b, T* c, int threads) {
  const int64_t lda = g.trans_a ? g.m : g.k, ldb = g.trans_b ? g.k : g.n;
  tiled_gemm(current_blas(), g, a, lda, b, ldb, c, g.n, threads, [](const Tile&) {});
}

template <class T>
void dense_forward(Act act, double slope, const T* x, const T* w, const T* bias, T* y, T* z, int64_t n, int64_t in,
                   int64_t out, int threads) {
  GemmArgs g;
  g.m = n, g.n = out, g.k = in;
  const bool plain = act == Act::none && bias == nullptr && z == nullptr;
  tiled_gemm(current_blas(), g, x, in, w, out, y, out, threads, [&](const Tile& t) {
    if (plain) return;
    for (int64_t r = t.i0; r < t.i0 + t.h; ++r) {
      T* row = y + r * out + t.j0;
      act_forward_span<T>(act, T(slope), row, bias ? bias + t.j0 : nullptr, z ? z + r * out + t.j0 : nullptr, row, t.w);
    }
  });
}

template <class T>
void dense_backward(Act act, double slope, const T* dy, const T* x, const T* w, const T* y, const T* z, T* dz, T* dx,
                    T* dw, T* db, bool accumulate, int64_t n, int64_t in, int64_t out, int threads) {
  backward_pass<T>(act, slope, dy, x, w, y, z, dz, dx, dw, db, accumulate, n, in, out, threads);
}

template void matmul<float>(const GemmArgs&, const float*, const float*, float*, int);
template void matmul<double>(const GemmArgs&, const double*, const double*, double*, int);
template void dense_forward<float>(Act, double, const float*, const float*, const float*, float*, float*, int64_t,
                                   int64_t, int64_t, int);
template void dense_forward<double>(Act, double, const double*, const double*, const double*, double*, double*, int64_t,
                                    int64_t, int64_t, int);
template void dense_backward<float>(Act, double, const float*, const float*, const float*, const float*, const float*,
                                    float*, float*, float*, float*, bool, int64_t, int64_t, int64_t, int);
template void dense_backward<double>(Act, double, const double*, const double*, const double*, const double*,
                                     const double*, double*, double*, double*, double*, bool, int64_t, int64_t, int64_t,
                                     int);

}  // namespace GF_ISA_NS
}  // namespace gf
