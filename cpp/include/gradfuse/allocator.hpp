// allocator.hpp: a caching allocator for large blocks, NumPy's data allocator while gradfuse runs a
// layer (bindings/allocator.cpp installs it as a NEP 49 handler; python/gradfuse/memory.py scopes it).
//
// Why: a layer returns fresh arrays on every call. Above glibc's mmap threshold every such array is a
// new mapping whose first touch page-faults (about 10 ms per 64 MB here), more than the kernel itself.
// Blocks of >= kLargeMin bytes are rounded up to a size class (steps of 1/8 of a power of two: at most
// 12.5% slack), mapped with mmap (huge pages asked for with MADV_HUGEPAGE from 2 MiB, starting on a
// 2 MiB boundary) and, when freed, kept mapped in a per-class free list for the next request of that
// class. Nothing live is ever handed out twice: a block is reused only after its array was freed.
//
// Smaller blocks go to posix_memalign / free. Every block is 64-byte aligned (large ones on a page).
// calloc zeroes (fresh mappings are zero already; reused blocks are cleared); realloc keeps the data.
// The cached bytes are capped (set_limit; the oldest cached blocks are unmapped first) and given back
// by release(). Thread safe: one mutex around the lists (a block may be freed on another thread than
// the one that took it; fork() takes the lock first so that a child never inherits it held).
// Under AddressSanitizer the cached blocks and the slack past each request are poisoned, so a use
// after free or an overflow into the slack is still reported (the cache is off by default there).
#pragma once

#include <cstddef>
#include <cstdint>

namespace gf::alloc {

constexpr std::size_t kAlign = 64;
constexpr std::size_t kLargeMin = std::size_t(256) << 10;  // below: posix_memalign, not cached

void* allocate(std::size_t bytes);
void* allocate_zeroed(std::size_t count, std::size_t size);  // calloc; nullptr on overflow
void* reallocate(void* p, std::size_t bytes);
void deallocate(void* p);

struct Stats {
  std::size_t cached_bytes, cached_blocks;  // in the free lists, mapped, ready for reuse
  std::size_t live_bytes, live_blocks;      // large blocks handed out now (capacity)
  std::size_t limit_bytes;
  std::uint64_t hits, misses;   // large requests served from the cache / by a new mapping
  std::uint64_t released_bytes;  // given back to the OS (limit, release), in total
};
Stats stats();
void set_limit(std::size_t bytes);  // evicts at once down to the new limit
// Unmaps cached blocks: all of them, or (idle_only) those freed before the previous idle release
// and not reused since. Returns the bytes given back.
std::size_t release(bool idle_only);
bool sanitized();  // built with AddressSanitizer
std::size_t size_class(std::size_t bytes);

}  // namespace gf::alloc
