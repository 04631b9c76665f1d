// blas.cpp: loading OpenBLAS at run time (see blas.hpp). Not an ISA translation unit.
#include "gradfuse/blas.hpp"

#include <dlfcn.h>

#include <stdexcept>

namespace gf {

Blas g_blas;

namespace {
void* g_handle = nullptr;
std::string g_description;
}  // namespace

bool load_blas(const std::string& path, std::string* error) {
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    *error = dlerror();
    return false;
  }
  auto sgemm = reinterpret_cast<SgemmFn>(dlsym(h, "scipy_cblas_sgemm"));
  auto dgemm = reinterpret_cast<DgemmFn>(dlsym(h, "scipy_cblas_dgemm"));
  auto set_threads = reinterpret_cast<void (*)(int)>(dlsym(h, "scipy_openblas_set_num_threads"));
  auto get_threads = reinterpret_cast<int (*)()>(dlsym(h, "scipy_openblas_get_num_threads"));
  auto get_config = reinterpret_cast<const char* (*)()>(dlsym(h, "scipy_openblas_get_config"));
  auto get_core = reinterpret_cast<const char* (*)()>(dlsym(h, "scipy_openblas_get_corename"));
  if (!sgemm || !dgemm || !set_threads || !get_threads) {
    *error = "the library has no scipy_cblas_sgemm/dgemm or scipy_openblas_set/get_num_threads";
    dlclose(h);
    return false;
  }
  g_handle = h;
  g_blas.sgemm = sgemm, g_blas.dgemm = dgemm, g_blas.set_num_threads = set_threads, g_blas.get_num_threads = get_threads;
  g_blas.set_num_threads(1);
  g_blas.use = true;
  g_description = std::string(get_config ? get_config() : "OpenBLAS") + (get_core ? std::string(", core ") + get_core() : "");
  return true;
}

void select_gemm(const std::string& name) {
  if (name == "eigen") {
    g_blas.use = false;
  } else if (name == "openblas") {
    if (!g_handle) throw std::invalid_argument("OpenBLAS is not loaded (install scipy-openblas32)");
    g_blas.use = true;
  } else {
    throw std::invalid_argument("unknown GEMM backend '" + name + "' (expected openblas or eigen)");
  }
}

std::string gemm_name() { return g_blas.use ? "openblas" : "eigen"; }
std::string blas_description() { return g_description; }

void blas_single_threaded() {
  if (g_blas.use && g_blas.get_num_threads() != 1) g_blas.set_num_threads(1);
}

}  // namespace gf
