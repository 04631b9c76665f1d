// allocator.cpp: the caching allocator (contract in gradfuse/allocator.hpp). Compiled once, not per ISA.
#include "gradfuse/allocator.hpp"

#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define GF_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define GF_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define GF_POISON(p, n) ((void)(p), (void)(n))
#define GF_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace gf::alloc {
namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kHuge = std::size_t(2) << 20;

struct Live {
  std::size_t capacity, requested;
};
struct Cached {
  void* p;
  std::uint64_t stamp;  // when it was freed (a count of frees): the oldest is evicted first
};

struct State {
  std::mutex mu;
  std::unordered_map<void*, Live> live;                         // large blocks handed out
  std::unordered_map<std::size_t, std::vector<Cached>> free;  // capacity -> blocks, oldest first
  std::size_t cached_bytes = 0, cached_blocks = 0, live_bytes = 0;
  std::size_t limit = std::size_t(1) << 30;
  std::uint64_t hits = 0, misses = 0, released = 0, clock = 0, idle_mark = 0;
};

// Never destroyed: arrays may be freed during interpreter shutdown, after static destructors ran.
State& state() {
  static State* s = [] {
    auto* st = new State;
    pthread_atfork([] { state().mu.lock(); }, [] { state().mu.unlock(); }, [] { state().mu.unlock(); });
    return st;
  }();
  return *s;
}

void* map_block(std::size_t capacity) {
  if (capacity < kHuge) {
    void* p = mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }
  // Map 2 MiB more and trim both ends, so that the block starts on a huge-page boundary.
  const std::size_t span = capacity + kHuge;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  char* start = static_cast<char*>(raw);
  char* p = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(start) + kHuge - 1) & ~(kHuge - 1));
  if (p > start) munmap(start, static_cast<std::size_t>(p - start));
  const std::size_t tail = static_cast<std::size_t>(start + span - (p + capacity));
  if (tail) munmap(p + capacity, tail);
  madvise(p, capacity, MADV_HUGEPAGE);  // a hint: without transparent huge pages, plain pages
  return p;
}

void unmap_block(void* p, std::size_t capacity) {
  GF_UNPOISON(p, capacity);  // the addresses may be mapped again by anyone
  munmap(p, capacity);
}

// Takes the oldest cached blocks out of the lists until `keep` bytes at most stay cached (or, with
// before != 0, the blocks freed before that stamp); the caller unmaps them outside the lock.
void evict(State& s, std::size_t keep, std::uint64_t before, std::vector<std::pair<void*, std::size_t>>& out) {
  while (s.cached_bytes > keep || before) {
    auto oldest = s.free.end();
    for (auto it = s.free.begin(); it != s.free.end(); ++it)
      if (!it->second.empty() && (oldest == s.free.end() || it->second.front().stamp < oldest->second.front().stamp))
        oldest = it;
    if (oldest == s.free.end() || (before && oldest->second.front().stamp >= before)) return;
    out.emplace_back(oldest->second.front().p, oldest->first);
    oldest->second.erase(oldest->second.begin());
    s.cached_bytes -= oldest->first;
    --s.cached_blocks;
    s.released += oldest->first;
  }
}

void unmap_all(const std::vector<std::pair<void*, std::size_t>>& blocks) {
  for (const auto& [p, capacity] : blocks) unmap_block(p, capacity);
}

void* small_block(std::size_t bytes) {
  void* p = nullptr;
  return posix_memalign(&p, kAlign, bytes) == 0 ? p : nullptr;
}

void* large_block(std::size_t bytes, bool zero) {
  State& s = state();
  const std::size_t capacity = size_class(bytes);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.free.find(capacity);
    if (it != s.free.end() && !it->second.empty()) {
      p = it->second.back().p;  // the most recently freed block: its pages are the warmest
      it->second.pop_back();
      s.cached_bytes -= capacity;
      --s.cached_blocks;
      ++s.hits;
    } else {
      ++s.misses;
    }
  }
  const bool fresh = p == nullptr;
  if (fresh && !(p = map_block(capacity))) return nullptr;
  GF_UNPOISON(p, bytes);
  GF_POISON(static_cast<char*>(p) + bytes, capacity - bytes);  // the slack: an overflow into it is reported
  if (zero && !fresh) std::memset(p, 0, bytes);  // a new mapping reads as zeros already
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.live.emplace(p, Live{capacity, bytes});
    s.live_bytes += capacity;
  }
  return p;
}

void* allocate(std::size_t bytes, bool zero) {
  bytes = std::max<std::size_t>(bytes, 1);  // a unique pointer for empty arrays too
  if (bytes >= kLargeMin) return large_block(bytes, zero);
  void* p = small_block(bytes);
  if (p && zero) std::memset(p, 0, bytes);
  return p;
}

}  // namespace

std::size_t size_class(std::size_t bytes) {
  const std::size_t top = std::size_t(1) << (63 - __builtin_clzll(static_cast<unsigned long long>(bytes)));
  const std::size_t step = std::max(top / 8, kPage);
  return (bytes + step - 1) / step * step;
}

void* allocate(std::size_t bytes) { return allocate(bytes, false); }

void* allocate_zeroed(std::size_t count, std::size_t size) {
  if (size && count > SIZE_MAX / size) return nullptr;
  return allocate(count * size, true);
}

void deallocate(void* p) {
  if (!p) return;
  State& s = state();
  std::vector<std::pair<void*, std::size_t>> unmap;
  bool small = false;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.live.find(p);
    if (it == s.live.end()) {
      small = true;
    } else {
      const std::size_t capacity = it->second.capacity;
      s.live.erase(it);
      s.live_bytes -= capacity;
      if (capacity > s.limit) {
        unmap.emplace_back(p, capacity);
        s.released += capacity;
      } else {
        evict(s, s.limit - capacity, 0, unmap);
        s.free[capacity].push_back(Cached{p, ++s.clock});
        s.cached_bytes += capacity;
        ++s.cached_blocks;
        GF_POISON(p, capacity);  // a use of the freed array is reported under ASan
      }
    }
  }
  if (small) std::free(p);
  unmap_all(unmap);
}

void* reallocate(void* p, std::size_t bytes) {
  if (!p) return allocate(bytes, false);
  bytes = std::max<std::size_t>(bytes, 1);
  State& s = state();
  std::size_t old_bytes = 0;
  bool large = false;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.live.find(p);
    if (it != s.live.end()) {
      large = true;
      Live& b = it->second;
      if (bytes >= kLargeMin && size_class(bytes) == b.capacity) {  // the same class: stays in place
        GF_UNPOISON(p, bytes);
        if (bytes < b.requested) GF_POISON(static_cast<char*>(p) + bytes, b.requested - bytes);
        b.requested = bytes;
        return p;
      }
      old_bytes = b.requested;
    }
  }
  if (!large) {
    if (bytes < kLargeMin) {  // small to small: glibc may move it to a 16-byte boundary
      void* q = std::realloc(p, bytes);
      if (!q || reinterpret_cast<std::uintptr_t>(q) % kAlign == 0) return q;
      void* r = small_block(bytes);
      if (r) std::memcpy(r, q, bytes);
      std::free(q);
      return r;
    }
    old_bytes = malloc_usable_size(p);  // small to large (ASan: the size asked for)
  }
  void* q = allocate(bytes, false);
  if (!q) return nullptr;  // realloc's contract: the old block stays valid
  std::memcpy(q, p, std::min(old_bytes, bytes));
  deallocate(p);
  return q;
}

Stats stats() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return Stats{s.cached_bytes, s.cached_blocks, s.live_bytes, s.live.size(), s.limit, s.hits, s.misses, s.released};
}

void set_limit(std::size_t bytes) {
  State& s = state();
  std::vector<std::pair<void*, std::size_t>> unmap;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.limit = bytes;
    evict(s, bytes, 0, unmap);
  }
  unmap_all(unmap);
}

std::size_t release(bool idle_only) {
  State& s = state();
  std::vector<std::pair<void*, std::size_t>> unmap;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!idle_only) {
      evict(s, 0, 0, unmap);
    } else {
      if (s.idle_mark) evict(s, SIZE_MAX, s.idle_mark, unmap);
      s.idle_mark = s.clock + 1;  // what is freed from now on is not idle at the next call
    }
  }
  unmap_all(unmap);
  std::size_t bytes = 0;
  for (const auto& block : unmap) bytes += block.second;
  return bytes;
}

bool sanitized() {
#if defined(__SANITIZE_ADDRESS__)
  return true;
#else
  return false;
#endif
}

}  // namespace gf::alloc
