// onednn.hpp: the bf16 (and optionally float32) GEMM backend on oneDNN, loaded at run time.
//
// oneDNN comes from the onednn-cpu-gomp wheel (libdnnl.so.3, built on the same libgomp as
// gradfuse). It is dlopen'ed by path (gradfuse/_ext.py finds it) like OpenBLAS, and the build does
// not need its headers: the few C API types, enums and functions used are declared below (namespace
// gf::dnnl), checked against oneDNN 3.2.0's dnnl.h / dnnl_types.h (onednn-devel-cpu-gomp 2023.2.0);
// onednn_load refuses a major version other than 3.
//
// Why oneDNN: its matmul runs bf16 x bf16 with float32 accumulation on AMX tiles (and on
// AVX512-BF16 dot products below that) and picks the kernel for the CPU at run time.
//
// Threads and determinism: gradfuse calls oneDNN single-threaded on C tiles that do not depend on
// the thread count (dense.cpp plans them), from its own OpenMP threads, exactly as with OpenBLAS.
// A primitive created and run with one thread sums each element over K in an order that depends on
// the primitive's shape only. (oneDNN's own threaded matmul may split K across threads when M*N is
// small, which changes the sums with the thread count; see the README.)
#pragma once

#include <cstdint>
#include <string>

namespace gf {

// The subset of oneDNN's C API that onednn.cpp resolves with dlsym (same names, values and layouts
// as the oneDNN 3.2 headers).
namespace dnnl {
using status_t = int;  // dnnl_success = 0
using dim_t = int64_t;
using dims_t = dim_t[12];  // DNNL_MAX_NDIMS
using handle = void*;      // dnnl_engine_t, dnnl_stream_t, dnnl_memory_t, dnnl_memory_desc_t, ...
struct version_t {
  int major, minor, patch;
  const char* hash;
  unsigned cpu_runtime, gpu_runtime;
};
struct exec_arg_t {
  int arg;
  handle memory;
};
enum : int { bf16 = 2, f32 = 3, u8 = 6 };                          // dnnl_data_type_t
enum : int { engine_cpu = 1 };                               // dnnl_engine_kind_t
enum : unsigned { stream_in_order = 1 };                     // dnnl_stream_flags_t
enum : int { scratchpad_mode_user = 1 };                     // dnnl_scratchpad_mode_t
enum : int { query_impl_info_str = 8, query_scratchpad_md = 136 };  // dnnl_query_t
enum : int { arg_src = 1, arg_dst = 17, arg_weights = 33, arg_scratchpad = 80 };  // DNNL_ARG_*
enum : int {                                                 // dnnl_cpu_isa_t
  isa_avx512_core = 0x27,
  isa_avx512_core_vnni = 0x67,
  isa_avx512_core_bf16 = 0xe7,
  isa_avx512_core_fp16 = 0x1ef,
  isa_avx512_core_amx = 0xfef,
  isa_avx512_core_amx_fp16 = 0x1fef,
};
}  // namespace dnnl

enum class GemmType : int { f32 = 0, bf16 = 1 };

// One single-threaded GEMM call: C[m x n] (=|+=) op(A)[m x k] op(B)[k x n], row-major with leading
// dimensions lda, ldb, ldc (op = transpose where ta / tb). Accumulation is in float32; a bf16 C is
// rounded once, to nearest even (with accumulate: round(C + AB)).
struct OnednnGemm {
  bool ta = false, tb = false, accumulate = false;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  GemmType a = GemmType::f32, b = GemmType::f32, c = GemmType::f32;
};

// Loads libdnnl from `path` once (later calls return the first result). max_isa_bf16: cap oneDNN
// at avx512_core_bf16 (GRADFUSE_AMX=0), through dnnl_set_max_cpu_isa before any other oneDNN call.
bool onednn_load(const std::string& path, bool max_isa_bf16, std::string* error);
bool onednn_loaded();
std::string onednn_version();  // "3.2.0 (hash)"; "" if not loaded
std::string onednn_isa();      // the ISA oneDNN uses (dnnl_get_effective_cpu_isa), e.g. "avx512_core_amx"
bool onednn_native_bf16();     // that ISA has bf16 instructions (avx512_core_bf16 or above)

// Runs one GEMM single-threaded on the calling thread (a primitive made for one thread, cached by
// shape, types and leading dimensions). Throws std::runtime_error if oneDNN fails.
void onednn_gemm(const OnednnGemm& g, const void* a, const void* b, void* c);
// oneDNN's own threaded matmul over the whole C (the benchmark's "oneDNN's own" peer, and the
// determinism probe); `threads` OpenMP threads.
void onednn_gemm_threaded(const OnednnGemm& g, const void* a, const void* b, void* c, int threads);
// The implementation oneDNN picks for a call (e.g. "brg:avx512_core_amx"), for gf.config / tests.
std::string onednn_impl(const OnednnGemm& g, int threads = 1);

}  // namespace gf
