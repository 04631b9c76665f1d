// parallel.hpp: how kernels split work over OpenMP threads, and the segments of multi-tensor calls.
//
// Segments<T> (plain data, shared with the bindings): the arrays of a multi-tensor call as ONE index
// space, the concatenation of all their elements, cut into segments of memory-adjacent arrays (the
// bindings merge neighbours: an arena is one segment). list[k] holds argument k's start of each
// segment: params, grads and states for an optimizer; grads for clipping; params and grads for a
// penalty. Lists that are only read are never written through their pointers. copy: an optional
// list of another itemsize, bf16 arrays beside list[0] (an optimizer's compute copies of its
// parameters, written in the same pass), with the same segment boundaries.
//
// In the kernels (each compiled per ISA):
// parallel_for(n, threads, grain, f) calls f(lo, hi) on disjoint blocks that cover [0, n): one
// contiguous block per thread, block edges on multiples of kBlockAlign elements (whole cache lines
// for float and double, so two threads never write the same line). Fewer threads are used when n is
// small: each thread gets at least `grain` elements (kGrain for element-wise passes), since waking a
// thread costs microseconds. for_each_piece cuts a block of the index space into its segments.
//
// Element-wise kernels are bitwise deterministic under any split (see simd.hpp). Reductions use
// parallel_blocks: fixed-size blocks combined in a fixed order, never an OpenMP reduction clause.
#pragma once

#include <cstdint>

#include "gradfuse/bf16.hpp"

namespace gf {

constexpr int kMaxLists = 5;  // params, grads and up to three optimizer states

template <class T>
struct Segments {
  int64_t count = 0;                // number of segments
  const int64_t* offset = nullptr;  // count + 1 prefix sums of segment sizes (elements)
  T* const* list[kMaxLists] = {};   // per argument: the start of each segment, or null when absent
  bf16* const* copy = nullptr;      // the start of each segment of the bf16 copies, or null
  int64_t size() const { return count ? offset[count] : 0; }
};

}  // namespace gf

// The rest is compiled inside gf::<isa> like the kernels, so no inline function here is shared
// between translation units built with different instruction sets.
#ifdef GF_ISA_NS
#include <omp.h>

namespace gf {
namespace GF_ISA_NS {

constexpr int64_t kBlockAlign = 64;
constexpr int64_t kGrain = 16384;  // minimum elements per thread of an element-wise pass

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

// Calls f(segment, offset in it, length) for the pieces of [lo, hi) of the index space, in order.
template <class T, class F>
inline __attribute__((always_inline)) void for_each_piece(const Segments<T>& s, int64_t lo, int64_t hi, F&& f) {
  int64_t a = 0, b = s.count;  // binary search: the last segment starting at or before lo
  while (b - a > 1) {
    const int64_t mid = (a + b) / 2;
    if (s.offset[mid] <= lo) a = mid;
    else b = mid;
  }
  for (int64_t k = a; k < s.count && s.offset[k] < hi; ++k) {
    const int64_t begin = s.offset[k] > lo ? s.offset[k] : lo;
    const int64_t end = s.offset[k + 1] < hi ? s.offset[k + 1] : hi;
    if (begin < end) f(k, begin - s.offset[k], end - begin);
  }
}

}  // namespace GF_ISA_NS
}  // namespace gf
#endif
