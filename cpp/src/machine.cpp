// machine.cpp: probes of the machine's own limits for the benchmark suite (not training kernels),
// compiled once per ISA. fma_peak: independent fused multiply-adds on registers, so the result is
// the FMA units' throughput on this ISA path (scalar: separate multiply and add, no FMA unit).
#include <omp.h>

#include <chrono>

#include "gradfuse/kernels.hpp"
#include "gradfuse/simd.hpp"

namespace gf {
namespace GF_ISA_NS {

// Seconds for `iters` rounds of kAcc independent vector FMAs on each of `threads` threads, and the
// floating-point operations done (2 per lane per FMA).
double fma_peak(int64_t iters, int threads, double* flops) {
  using V = Vec<float>;
  constexpr int kAcc = 12;  // enough independent chains to cover the FMA latency
  const auto t0 = std::chrono::steady_clock::now();
  float sink = 0;
#pragma omp parallel num_threads(threads)
  {
    V acc[kAcc];
    for (int k = 0; k < kAcc; ++k) acc[k] = V::broadcast(1.0f + 1e-3f * float(k + omp_get_thread_num()));
    const V a = V::broadcast(0.999999f), b = V::broadcast(1e-7f);
    for (int64_t i = 0; i < iters; ++i)
      for (int k = 0; k < kAcc; ++k) {
#if defined(GF_ISA_SCALAR)
        acc[k] = acc[k] * a + b;
#else
        acc[k] = fma(acc[k], a, b);
#endif
      }
    V total = acc[0];
    for (int k = 1; k < kAcc; ++k) total = total + acc[k];
    const float part = hsum(total);  // keeps the loop alive; the value does not matter
#pragma omp atomic
    sink += part;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  *flops = 2.0 * double(V::width) * kAcc * double(iters) * threads + 0.0 * sink;
  return seconds;
}

}  // namespace GF_ISA_NS
}  // namespace gf
