// blas.cpp: loading OpenBLAS at run time (see blas.hpp). Not an ISA translation unit.
#include "gradfuse/blas.hpp"

#include <dlfcn.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "gradfuse/onednn.hpp"

namespace gf {

namespace {
const Blas kEigen{};
// The loaded OpenBLAS functions (null until load_blas succeeds) and the configuration in use.
// Readers only load g_current; writers (rare: import, tests, benchmarks) serialise on g_write. A
// published configuration is never freed or changed, because a kernel may still hold it: each
// distinct one is built once and kept in g_published.
std::atomic<const Blas*> g_openblas{nullptr};
std::atomic<const Blas*> g_current{&kEigen};
std::mutex g_write;
std::vector<std::unique_ptr<Blas>> g_published;
static_assert(std::atomic<const Blas*>::is_always_lock_free);

// Publishes the configuration (f32, f64, bf16); the caller holds g_write.
void publish(GemmLib f32, GemmLib f64, bool bf16_onednn) {
  for (const auto& b : g_published)
    if (b->f32 == f32 && b->f64 == f64 && b->bf16_onednn == bf16_onednn) {
      g_current.store(b.get(), std::memory_order_release);
      return;
    }
  auto blas = std::make_unique<Blas>();
  if (const Blas* ob = g_openblas.load(std::memory_order_acquire)) *blas = *ob;
  blas->f32 = f32, blas->f64 = f64, blas->bf16_onednn = bf16_onednn;
  g_current.store(blas.get(), std::memory_order_release);
  g_published.push_back(std::move(blas));
}
}  // namespace

const char* gemm_lib_name(GemmLib lib) {
  return lib == GemmLib::onednn ? "onednn" : lib == GemmLib::openblas ? "openblas" : "eigen";
}

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
      GemmLib::openblas,
      GemmLib::openblas,
      false,
      std::string(get_config ? get_config() : "OpenBLAS") + (get_core ? std::string(", core ") + get_core() : "")};
  std::lock_guard<std::mutex> lock(g_write);
  g_openblas.store(blas, std::memory_order_release);
  publish(GemmLib::openblas, GemmLib::openblas, current_blas().bf16_onednn);
  return true;
}

void select_gemm(const std::string& name) {
  std::lock_guard<std::mutex> lock(g_write);
  const bool have_openblas = g_openblas.load(std::memory_order_acquire) != nullptr;
  const bool bf16 = current_blas().bf16_onednn;
  if (name == "eigen") {
    publish(GemmLib::eigen, GemmLib::eigen, bf16);
  } else if (name == "openblas") {
    if (!have_openblas) throw std::invalid_argument("OpenBLAS is not loaded (install scipy-openblas32)");
    publish(GemmLib::openblas, GemmLib::openblas, bf16);
  } else if (name == "onednn") {
    if (!onednn_loaded()) throw std::invalid_argument("oneDNN is not loaded (install onednn-cpu-gomp)");
    publish(GemmLib::onednn, have_openblas ? GemmLib::openblas : GemmLib::eigen, bf16);
  } else {
    throw std::invalid_argument("unknown GEMM backend '" + name + "' (expected onednn, openblas or eigen)");
  }
}

void select_gemm_bf16(const std::string& name) {
  std::lock_guard<std::mutex> lock(g_write);
  const Blas& now = current_blas();
  if (name == "onednn") {
    if (!onednn_loaded()) throw std::invalid_argument("oneDNN is not loaded (install onednn-cpu-gomp)");
    publish(now.f32, now.f64, true);
  } else if (name == "fallback") {
    publish(now.f32, now.f64, false);
  } else {
    throw std::invalid_argument("unknown bf16 GEMM path '" + name + "' (expected onednn or fallback)");
  }
}

std::string gemm_name() { return gemm_lib_name(current_blas().f32); }
std::string gemm_bf16_name() { return current_blas().bf16_onednn ? "onednn" : "fallback"; }

std::string blas_description() {
  const Blas* blas = g_openblas.load(std::memory_order_acquire);
  return blas ? blas->description : std::string();
}

void blas_single_threaded(const Blas& blas) {
  if (blas.uses_openblas() && blas.get_num_threads() != 1) blas.set_num_threads(1);
}

}  // namespace gf
