// kernels.hpp: the entry points each ISA translation unit defines, and the table of them that
// dispatch.cpp selects at import (or when GRADFUSE_CPU / gradfuse._core._set_isa asks for another).
#pragma once

#include <string>

#include "gradfuse/optim.hpp"

namespace gf {

#define GF_DECLARE_ISA_KERNELS(isa)                                                                \
  namespace isa {                                                                                  \
  template <class T>                                                                               \
  bool optim_step(Algo algo, const OptimArgs& args, const TensorList<T>& list, bool skip_nonfinite, \
                  int threads);                                                                    \
  template <class T>                                                                               \
  bool all_finite(const TensorList<T>& list, const OptimArgs& args, int threads);                  \
  }
GF_DECLARE_ISA_KERNELS(scalar)
GF_DECLARE_ISA_KERNELS(avx2)
GF_DECLARE_ISA_KERNELS(avx512)
#undef GF_DECLARE_ISA_KERNELS

template <class T>
struct KernelOps {
  bool (*optim_step)(Algo, const OptimArgs&, const TensorList<T>&, bool, int);
  bool (*all_finite)(const TensorList<T>&, const OptimArgs&, int);
};

struct KernelTable {
  const char* name;
  KernelOps<float> f32;
  KernelOps<double> f64;
  template <class T>
  const KernelOps<T>& ops() const {
    if constexpr (sizeof(T) == 4) return f32; else return f64;
  }
};

// dispatch.cpp
const KernelTable& kernels();                  // the selected ISA's table
const char* selected_isa();
const char* const* compiled_isas(int* count);  // scalar, avx2, avx512
bool cpu_supports(const std::string& isa);
void select_isa(const std::string& isa);       // throws std::invalid_argument if unknown/unsupported

int num_threads();                             // threads a kernel called now from this thread uses
void set_num_threads(int n);                   // n <= 0: follow OpenMP (OMP_NUM_THREADS, threadpoolctl)

}  // namespace gf
