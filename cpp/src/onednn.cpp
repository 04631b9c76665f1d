// onednn.cpp: oneDNN loaded at run time, and its matmul (see gradfuse/onednn.hpp). Not an ISA
// translation unit: it only calls into libdnnl.
#include "gradfuse/onednn.hpp"

#include <dlfcn.h>
#include <omp.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <tuple>

namespace gf {
namespace {

using namespace dnnl;

// The oneDNN functions used, resolved once by onednn_load.
struct Api {
  const version_t* (*version)();
  status_t (*set_max_cpu_isa)(int);
  int (*get_effective_cpu_isa)();
  status_t (*engine_create)(handle*, int, size_t);
  status_t (*stream_create)(handle*, handle, unsigned);
  status_t (*memory_desc_create_with_strides)(handle*, int, const dims_t, int, const dims_t);
  size_t (*memory_desc_get_size)(handle);
  status_t (*memory_desc_destroy)(handle);
  status_t (*memory_create)(handle*, handle, handle, void*);
  status_t (*memory_destroy)(handle);
  status_t (*primitive_attr_create)(handle*);
  status_t (*primitive_attr_destroy)(handle);
  status_t (*primitive_attr_set_scratchpad_mode)(handle, int);
  status_t (*primitive_attr_set_post_ops)(handle, handle);
  status_t (*post_ops_create)(handle*);
  status_t (*post_ops_destroy)(handle);
  status_t (*post_ops_append_sum)(handle, float, int32_t, int);
  status_t (*matmul_primitive_desc_create)(handle*, handle, handle, handle, handle, handle, handle);
  status_t (*primitive_desc_destroy)(handle);
  status_t (*primitive_desc_query)(handle, int, int, void*);
  handle (*primitive_desc_query_md)(handle, int, int);
  status_t (*primitive_create)(handle*, handle);
  status_t (*primitive_execute)(handle, handle, int, const exec_arg_t*);
};

Api g_api;
handle g_engine = nullptr;
bool g_loaded = false;
std::string g_load_error;
std::once_flag g_once;

void check(status_t s, const char* what) {
  if (s != 0) throw std::runtime_error(std::string("oneDNN: ") + what + " failed (status " + std::to_string(s) + ")");
}

// A primitive ready to run one GEMM shape, kept for the life of the process (the cache is small:
// one entry per distinct call shape; oneDNN's primitives are safe to execute from several threads).
struct Entry {
  handle prim = nullptr;
  handle md[3] = {};  // a, b, c
  size_t scratch = 0;
  std::string impl;
};

// Key: the call's shape, types, leading dimensions and the threads the primitive was made for.
using Key = std::tuple<bool, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int>;
std::mutex g_cache_mutex;
std::map<Key, std::unique_ptr<Entry>> g_cache;

int dt(GemmType t) { return t == GemmType::bf16 ? bf16 : f32; }

handle make_md(int64_t rows, int64_t cols, bool trans, int64_t ld, int type) {
  dims_t dims = {rows, cols}, strides = {trans ? 1 : ld, trans ? ld : 1};
  handle md = nullptr;
  check(g_api.memory_desc_create_with_strides(&md, 2, dims, type, strides), "memory_desc_create");
  return md;
}

// The calling thread's OpenMP thread count set to n while oneDNN creates or runs a primitive
// (oneDNN reads omp_get_max_threads, or 1 inside a parallel region), restored after.
class ThreadsGuard {
 public:
  explicit ThreadsGuard(int n) : saved_(omp_get_max_threads()) {
    if (!omp_in_parallel() && saved_ != n) omp_set_num_threads(n), changed_ = true;
  }
  ~ThreadsGuard() {
    if (changed_) omp_set_num_threads(saved_);
  }

 private:
  int saved_;
  bool changed_ = false;
};

const Entry& entry(const OnednnGemm& g, int threads) {
  const Key key{g.ta, g.tb, g.accumulate, g.m, g.n, g.k, g.lda, g.ldb, g.ldc, int(g.a), int(g.b), int(g.c), threads};
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  std::unique_ptr<Entry>& e = g_cache[key];
  if (e) return *e;
  auto fresh = std::make_unique<Entry>();
  fresh->md[0] = make_md(g.m, g.k, g.ta, g.lda, dt(g.a));
  fresh->md[1] = make_md(g.k, g.n, g.tb, g.ldb, dt(g.b));
  fresh->md[2] = make_md(g.m, g.n, false, g.ldc, dt(g.c));
  handle attr = nullptr, ops = nullptr, pd = nullptr;
  check(g_api.primitive_attr_create(&attr), "primitive_attr_create");
  check(g_api.primitive_attr_set_scratchpad_mode(attr, scratchpad_mode_user), "set_scratchpad_mode");
  if (g.accumulate) {  // C += AB: the sum post-op adds the old C in float32 before the one rounding
    check(g_api.post_ops_create(&ops), "post_ops_create");
    check(g_api.post_ops_append_sum(ops, 1.0f, 0, dt(g.c)), "post_ops_append_sum");
    check(g_api.primitive_attr_set_post_ops(attr, ops), "set_post_ops");
    g_api.post_ops_destroy(ops);
  }
  status_t s;
  {
    ThreadsGuard guard(threads);
    s = g_api.matmul_primitive_desc_create(&pd, g_engine, fresh->md[0], fresh->md[1], nullptr, fresh->md[2], attr);
    g_api.primitive_attr_destroy(attr);
    check(s, "matmul_primitive_desc_create");
    const char* impl = nullptr;
    if (g_api.primitive_desc_query(pd, query_impl_info_str, 0, &impl) == 0 && impl) fresh->impl = impl;
    handle smd = g_api.primitive_desc_query_md(pd, query_scratchpad_md, 0);
    fresh->scratch = smd ? g_api.memory_desc_get_size(smd) : 0;
    s = g_api.primitive_create(&fresh->prim, pd);
    g_api.primitive_desc_destroy(pd);
  }
  check(s, "primitive_create");
  e = std::move(fresh);
  return *e;
}

// Per thread: a stream (cheap, but not to be shared between threads running at once) and a
// scratchpad buffer that grows to the largest request. Never freed: threads are OpenMP's pool.
struct ThreadState {
  handle stream = nullptr;
  void* scratch = nullptr;
  size_t scratch_size = 0;
};
thread_local ThreadState t_state;

void run(const Entry& e, const void* a, const void* b, void* c) {
  ThreadState& t = t_state;
  if (!t.stream) check(g_api.stream_create(&t.stream, g_engine, stream_in_order), "stream_create");
  if (e.scratch > t.scratch_size) {
    std::free(t.scratch);
    t.scratch_size = (e.scratch + 4095) / 4096 * 4096;
    t.scratch = std::aligned_alloc(4096, t.scratch_size);
    if (!t.scratch) {
      t.scratch_size = 0;
      throw std::bad_alloc();
    }
  }
  handle mem[4] = {};
  const void* ptrs[3] = {a, b, c};
  status_t s = 0;
  for (int i = 0; i < 3 && s == 0; ++i) s = g_api.memory_create(&mem[i], e.md[i], g_engine, const_cast<void*>(ptrs[i]));
  handle smd = nullptr;
  if (s == 0 && e.scratch) {
    // A 1-D u8 descriptor of the scratchpad's size is what the primitive accepts as its scratchpad.
    dims_t dims = {int64_t(e.scratch)}, strides = {1};
    s = g_api.memory_desc_create_with_strides(&smd, 1, dims, u8, strides);
    if (s == 0) s = g_api.memory_create(&mem[3], smd, g_engine, t.scratch);
  }
  if (s == 0) {
    const exec_arg_t args[4] = {{arg_src, mem[0]}, {arg_weights, mem[1]}, {arg_dst, mem[2]}, {arg_scratchpad, mem[3]}};
    s = g_api.primitive_execute(e.prim, t.stream, e.scratch ? 4 : 3, args);
  }
  for (handle m : mem)
    if (m) g_api.memory_destroy(m);
  if (smd) g_api.memory_desc_destroy(smd);
  check(s, "matmul execution");
}

const char* isa_name(int isa) {
  switch (isa) {
    case isa_avx512_core_amx_fp16: return "avx512_core_amx_fp16";
    case isa_avx512_core_amx: return "avx512_core_amx";
    case isa_avx512_core_fp16: return "avx512_core_fp16";
    case isa_avx512_core_bf16: return "avx512_core_bf16";
    case isa_avx512_core_vnni: return "avx512_core_vnni";
    case isa_avx512_core: return "avx512_core";
    default: return "below avx512_core";
  }
}

template <class F>
bool sym(void* h, const char* name, F* f) {
  *f = reinterpret_cast<F>(dlsym(h, name));
  return *f != nullptr;
}

bool load(const std::string& path, bool max_isa_bf16, std::string* error) {
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    *error = dlerror();
    return false;
  }
  Api a{};
  const bool ok =
      sym(h, "dnnl_version", &a.version) && sym(h, "dnnl_set_max_cpu_isa", &a.set_max_cpu_isa) &&
      sym(h, "dnnl_get_effective_cpu_isa", &a.get_effective_cpu_isa) &&
      sym(h, "dnnl_engine_create", &a.engine_create) && sym(h, "dnnl_stream_create", &a.stream_create) &&
      sym(h, "dnnl_memory_desc_create_with_strides", &a.memory_desc_create_with_strides) &&
      sym(h, "dnnl_memory_desc_get_size", &a.memory_desc_get_size) &&
      sym(h, "dnnl_memory_desc_destroy", &a.memory_desc_destroy) && sym(h, "dnnl_memory_create", &a.memory_create) &&
      sym(h, "dnnl_memory_destroy", &a.memory_destroy) &&
      sym(h, "dnnl_primitive_attr_create", &a.primitive_attr_create) &&
      sym(h, "dnnl_primitive_attr_destroy", &a.primitive_attr_destroy) &&
      sym(h, "dnnl_primitive_attr_set_scratchpad_mode", &a.primitive_attr_set_scratchpad_mode) &&
      sym(h, "dnnl_primitive_attr_set_post_ops", &a.primitive_attr_set_post_ops) &&
      sym(h, "dnnl_post_ops_create", &a.post_ops_create) && sym(h, "dnnl_post_ops_destroy", &a.post_ops_destroy) &&
      sym(h, "dnnl_post_ops_append_sum", &a.post_ops_append_sum) &&
      sym(h, "dnnl_matmul_primitive_desc_create", &a.matmul_primitive_desc_create) &&
      sym(h, "dnnl_primitive_desc_destroy", &a.primitive_desc_destroy) &&
      sym(h, "dnnl_primitive_desc_query", &a.primitive_desc_query) &&
      sym(h, "dnnl_primitive_desc_query_md", &a.primitive_desc_query_md) &&
      sym(h, "dnnl_primitive_create", &a.primitive_create) && sym(h, "dnnl_primitive_execute", &a.primitive_execute);
  if (!ok) {
    *error = "a oneDNN C API function is missing: " + std::string(dlerror() ? dlerror() : "?");
    return false;  // the library stays mapped: harmless, and dlclose of a half-used library is not
  }
  const version_t* v = a.version();
  if (!v || v->major != 3) {
    *error = "oneDNN major version " + std::to_string(v ? v->major : -1) + " (gradfuse declares the 3.x C API)";
    return false;
  }
  // Must come before any call that reads the ISA (dnnl_get_effective_cpu_isa, engine creation).
  if (max_isa_bf16 && a.set_max_cpu_isa(isa_avx512_core_bf16) != 0) {
    *error = "dnnl_set_max_cpu_isa(avx512_core_bf16) was refused";
    return false;
  }
  handle engine = nullptr;
  if (a.engine_create(&engine, engine_cpu, 0) != 0) {
    *error = "dnnl_engine_create(cpu) failed";
    return false;
  }
  g_api = a;
  g_engine = engine;
  return true;
}

}  // namespace

bool onednn_load(const std::string& path, bool max_isa_bf16, std::string* error) {
  std::call_once(g_once, [&] { g_loaded = load(path, max_isa_bf16, &g_load_error); });
  if (!g_loaded) *error = g_load_error;
  return g_loaded;
}

bool onednn_loaded() { return g_loaded; }

std::string onednn_version() {
  if (!g_loaded) return {};
  const version_t* v = g_api.version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
         (v->hash ? std::string(" (") + v->hash + ")" : std::string());
}

std::string onednn_isa() { return g_loaded ? isa_name(g_api.get_effective_cpu_isa()) : std::string(); }

bool onednn_native_bf16() {
  if (!g_loaded) return false;
  const int isa = g_api.get_effective_cpu_isa();
  return (isa & isa_avx512_core_bf16) == isa_avx512_core_bf16;  // the ISA flags nest as bit sets
}

void onednn_gemm(const OnednnGemm& g, const void* a, const void* b, void* c) {
  ThreadsGuard guard(1);
  run(entry(g, 1), a, b, c);
}

void onednn_gemm_threaded(const OnednnGemm& g, const void* a, const void* b, void* c, int threads) {
  ThreadsGuard guard(threads);
  run(entry(g, threads), a, b, c);
}

std::string onednn_impl(const OnednnGemm& g, int threads) { return entry(g, threads).impl; }

}  // namespace gf
