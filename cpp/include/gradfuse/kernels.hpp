// kernels.hpp: runtime ISA dispatch.
//
// Every kernel family is compiled once per ISA into namespace gf::<isa>; its header declares the
// entry points for all three with GF_FOR_EACH_ISA, and the bindings call the selected one with
// GF_CALL(function<T>, args...). dispatch.cpp selects the ISA at load time (the best the CPU
// supports); gradfuse/_ext.py applies GRADFUSE_CPU; gradfuse._core._set_isa switches for tests.
#pragma once

#include <cstdint>
#include <string>

namespace gf {

#define GF_FOR_EACH_ISA(X) X(scalar) X(avx2) X(avx512)

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

Isa selected_isa();                            // the ISA kernels run on now
const char* isa_name(Isa isa);
const char* const* compiled_isas(int* count);  // scalar, avx2, avx512
bool cpu_supports(const std::string& isa);
void select_isa(const std::string& isa);       // throws std::invalid_argument if unknown/unsupported

// The bf16 units, for the GEMM backend's report (the kernels never issue these instructions
// themselves: oneDNN does). amx_bf16: the CPU has AMX-BF16 AND this process may use the tiles.
struct CpuFeatures {
  bool avx512_bf16 = false;
  bool amx_tile = false, amx_bf16_cpu = false;
  bool amx_permitted = false;  // arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) succeeded
  bool amx_bf16 = false;
};
const CpuFeatures& cpu_features();

int num_threads();                             // threads a kernel called now from this thread uses
void set_num_threads(int n);                   // n <= 0: follow OpenMP (OMP_NUM_THREADS, threadpoolctl)

// machine.cpp: the FMA units' throughput on an ISA path (a benchmark probe, not a kernel).
#define GF_DECLARE_MACHINE(isa)                               \
  namespace isa {                                             \
  double fma_peak(int64_t iters, int threads, double* flops); \
  }
GF_FOR_EACH_ISA(GF_DECLARE_MACHINE)
#undef GF_DECLARE_MACHINE

}  // namespace gf

// Call the selected ISA's copy of a kernel: GF_CALL(batchnorm_forward<float>, a, b, c).
#define GF_CALL(fn, ...)                                                     \
  (::gf::selected_isa() == ::gf::Isa::avx512 ? ::gf::avx512::fn(__VA_ARGS__) \
   : ::gf::selected_isa() == ::gf::Isa::avx2 ? ::gf::avx2::fn(__VA_ARGS__)   \
                                             : ::gf::scalar::fn(__VA_ARGS__))
