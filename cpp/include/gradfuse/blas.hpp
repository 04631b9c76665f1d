// blas.hpp: the GEMM backend. OpenBLAS from the scipy-openblas32 wheel (what NumPy and SciPy build
// on; it picks its own kernels for the CPU at run time) when it can be loaded, else Eigen's GEMM,
// compiled per ISA with the kernels. Measured on the reference machine (2 AVX-512 cores), float32,
// GFLOP/s: Eigen 249-265, OpenBLAS 267-310, numpy.matmul 253-296, torch 243-330: only OpenBLAS
// reaches 0.9x the better of numpy and torch on the shapes, so it is the default.
//
// OpenBLAS is loaded with dlopen by path (gradfuse/_ext.py asks the scipy_openblas32 package where
// it is) and always called single-threaded: the dense kernels split the work into tiles over their
// own OpenMP threads. OpenBLAS's threaded driver sums some products in another order than its
// single-threaded one, so this also keeps results bitwise identical for every thread count.
//
// bf16 GEMMs (and float32 ones when selected: GRADFUSE_GEMM=onednn) run on oneDNN (onednn.hpp)
// when it is loaded; without it, bf16 tiles are converted to float32 and run on the float32
// library (the "fp32 fallback"): the same contract, slower.
#pragma once

#include <string>

namespace gf {

// cblas_?gemm with the enums as ints (CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112).
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
using DgemmFn = void (*)(int, int, int, int, int, int, double, const double*, int, const double*, int, double, double*,
                         int);

enum class GemmLib : int { eigen = 0, openblas = 1, onednn = 2 };
const char* gemm_lib_name(GemmLib lib);

// One GEMM configuration. Immutable once published: _set_gemm / _load_blas (from Python, while
// other threads may be inside a kernel with the GIL released) publish another one through a single
// atomic pointer instead of editing fields in place, so a reader sees one whole configuration.
struct Blas {
  SgemmFn sgemm = nullptr;
  DgemmFn dgemm = nullptr;
  void (*set_num_threads)(int) = nullptr;
  int (*get_num_threads)() = nullptr;
  GemmLib f32 = GemmLib::eigen;  // float32 GEMMs: any of the three
  GemmLib f64 = GemmLib::eigen;  // float64 GEMMs: openblas or eigen
  bool bf16_onednn = false;      // bf16 GEMMs on oneDNN; false: the fp32 fallback on f32's library
  std::string description;       // OpenBLAS's, e.g. "OpenBLAS 0.3.34 DYNAMIC_ARCH ... SkylakeX"; or ""
  bool uses_openblas() const { return f32 == GemmLib::openblas || f64 == GemmLib::openblas; }
};

// The configuration GEMMs use now. A kernel call reads it ONCE and passes it down, so all its
// tiles (and both GEMMs of a backward pass) run on the same backend.
const Blas& current_blas();

// Loads OpenBLAS from `path` and selects it; on failure returns false with the reason in *error.
bool load_blas(const std::string& path, std::string* error);
// The float32 (and float64) library: "onednn" (if loaded; float64 then stays on OpenBLAS, else
// Eigen), "openblas" (if loaded) or "eigen"; throws std::invalid_argument for anything else.
void select_gemm(const std::string& name);
// The bf16 path: "onednn" (if loaded) or "fallback".
void select_gemm_bf16(const std::string& name);
std::string gemm_name();           // the float32 library in use now
std::string gemm_bf16_name();      // "onednn" or "fallback"
std::string blas_description();    // e.g. "OpenBLAS 0.3.34 DYNAMIC_ARCH ... SkylakeX", or "" if not loaded
// Before a batch of single-threaded BLAS calls from OpenMP threads: keep OpenBLAS at 1 thread
// (threadpoolctl may have changed it).
void blas_single_threaded(const Blas& blas);

}  // namespace gf
