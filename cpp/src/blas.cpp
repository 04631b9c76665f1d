// blas.cpp: loading OpenBLAS at run time (see blas.hpp). Not an ISA translation unit.
#include "gradfuse/blas.hpp"

#include <dlfcn.h>

#include <atomic>
#include <mutex>
#include <stdexcept>

namespace gf {

namespace {
const Blas kEigen{};
// The loaded OpenBLAS configuration (null until load_blas succeeds) and the one in use. Readers
// only load g_current; writers (rare: import, tests, benchmarks) serialise on g_write. A loaded
// configuration is never freed or changed, because a kernel may still hold it.
std::atomic<const Blas*> g_openblas{nullptr};
std::atomic<const Blas*> g_current{&kEigen};
std::mutex g_write;
static_assert(std::atomic<const Blas*>::is_always_lock_free);
}  // namespace

const Blas& current_blas() { return *g_current.load(std::memory_order_acquire); }

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
  set_threads(1);
  // Built whole before it is published; kept forever (a second load leaks one small struct and
  // keeps the library mapped, as dlclose under a running GEMM would not be safe).
  const Blas* blas = new Blas{
      sgemm,
      dgemm,
      set_threads,
      get_threads,
      true,
      std::string(get_config ? get_config() : "OpenBLAS") + (get_core ? std::string(", core ") + get_core() : "")};
  std::lock_guard<std::mutex> lock(g_write);
  g_openblas.store(blas, std::memory_order_release);
  g_current.store(blas, std::memory_order_release);
  return true;
}

void select_gemm(const std::string& name) {
  std::lock_guard<std::mutex> lock(g_write);
  if (name == "eigen") {
    g_current.store(&kEigen, std::memory_order_release);
  } else if (name == "openblas") {
    const Blas* blas = g_openblas.load(std::memory_order_acquire);
    if (!blas) throw std::invalid_argument("OpenBLAS is not loaded (install scipy-openblas32)");
    g_current.store(blas, std::memory_order_release);
  } else {
    throw std::invalid_argument("unknown GEMM backend '" + name + "' (expected openblas or eigen)");
  }
}

std::string gemm_name() { return current_blas().use ? "openblas" : "eigen"; }

std::string blas_description() {
  const Blas* blas = g_openblas.load(std::memory_order_acquire);
  return blas ? blas->description : std::string();
}

void blas_single_threaded(const Blas& blas) {
  if (blas.use && blas.get_num_threads() != 1) blas.set_num_threads(1);
}

}  // namespace gf
