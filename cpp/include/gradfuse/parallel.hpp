// parallel.hpp: how kernels split work over OpenMP threads.
//
// parallel_for(n, threads, grain, f) calls f(lo, hi) on disjoint blocks that cover [0, n): one
// contiguous block per thread, block edges on multiples of kBlockAlign elements (whole cache lines
// for float and double, so two threads never write the same line). Fewer threads are used when n is
// small: each thread gets at least `grain` elements, since waking a thread costs microseconds.
//
// Element-wise kernels are bitwise deterministic under any split (see simd.hpp). Reductions use
// parallel_blocks: fixed-size blocks combined in a fixed order, never an OpenMP reduction clause.
//
// Compiled inside gf::<isa> like the kernels, so no inline function here is shared between TUs
// built with different instruction sets.
#pragma once

#include <omp.h>

#include <cstdint>

#ifndef GF_ISA_NS
#error "parallel.hpp belongs to the per-ISA kernel translation units"
#endif

namespace gf {
namespace GF_ISA_NS {

constexpr int64_t kBlockAlign = 64;

template <class F>
void parallel_for(int64_t n, int threads, int64_t grain, F&& f) {
  if (n <= 0) return;
  int64_t useful = n / (grain > 0 ? grain : 1);
  int want = threads < 1 ? 1 : threads;
  if (useful < want) want = useful < 1 ? 1 : static_cast<int>(useful);
  if (want == 1) {
    f(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(want)
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t units = (n + kBlockAlign - 1) / kBlockAlign;
    int64_t lo = units * t / nt * kBlockAlign, hi = units * (t + 1) / nt * kBlockAlign;
    if (hi > n) hi = n;
    if (lo < hi) f(lo, hi);
  }
}

// Deterministic reductions: split the work into blocks whose edges depend only on the problem
// (never on the thread count), call f(b) once for every block b in [0, nblocks) on whichever
// thread, keep one partial result per block, and let the caller combine the partials in block
// order. The result is then bitwise the same for every thread count.
template <class F>
void parallel_blocks(int64_t nblocks, int threads, F&& f) {
  if (nblocks <= 0) return;
  const int want = threads < 1 ? 1 : (nblocks < threads ? static_cast<int>(nblocks) : threads);
  if (want == 1) {
    for (int64_t b = 0; b < nblocks; ++b) f(b);
    return;
  }
#pragma omp parallel for num_threads(want) schedule(static)
  for (int64_t b = 0; b < nblocks; ++b) f(b);
}

}  // namespace GF_ISA_NS
}  // namespace gf
