// dispatch.cpp: runtime ISA selection and the thread count.
//
// At load time the best ISA the CPU (and OS) supports is selected: avx512 > avx2 > scalar.
// gradfuse/_ext.py then applies GRADFUSE_CPU (a lower path, with a warning when the CPU lacks the
// requested one). The selection is one atomic index that GF_CALL (kernels.hpp) reads.
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <stdexcept>
#include <string>

#include "gradfuse/kernels.hpp"

namespace gf {
namespace {

const char* const kNames[] = {"scalar", "avx2", "avx512"};
constexpr int kNumIsas = 3;

bool supports(int index) {
  __builtin_cpu_init();
  switch (index) {
    case 0: return true;
    case 1: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case 2:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && supports(1);
    default: return false;
  }
}

int best_supported() {
  for (int i = kNumIsas - 1; i > 0; --i)
    if (supports(i)) return i;
  return 0;
}

std::atomic<int> g_selected{best_supported()};
std::atomic<int> g_threads{0};

int index_of(const std::string& name) {
  for (int i = 0; i < kNumIsas; ++i)
    if (name == kNames[i]) return i;
  return -1;
}

}  // namespace

Isa selected_isa() { return static_cast<Isa>(g_selected.load(std::memory_order_relaxed)); }
const char* isa_name(Isa isa) { return kNames[static_cast<int>(isa)]; }

const char* const* compiled_isas(int* count) {
  *count = kNumIsas;
  return kNames;
}

bool cpu_supports(const std::string& isa) {
  const int i = index_of(isa);
  return i >= 0 && supports(i);
}

// AMX needs the OS's permission per process before the first tile instruction (Linux 5.16+:
// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), else SIGILL). Asked once, here; oneDNN
// asks too, harmlessly. __builtin_cpu_supports reports amx/avx512bf16 only when the OS enables
// their register state (XCR0).
CpuFeatures detect_features() {
  __builtin_cpu_init();
  CpuFeatures f;
  f.avx512_bf16 = __builtin_cpu_supports("avx512bf16") && supports(2);
  f.amx_tile = __builtin_cpu_supports("amx-tile");
  f.amx_bf16_cpu = f.amx_tile && __builtin_cpu_supports("amx-bf16");
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (f.amx_bf16_cpu) f.amx_permitted = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#endif
  f.amx_bf16 = f.amx_bf16_cpu && f.amx_permitted;
  return f;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect_features();
  return features;
}

void select_isa(const std::string& isa) {
  const int i = index_of(isa);
  if (i < 0) throw std::invalid_argument("unknown ISA '" + isa + "' (expected scalar, avx2 or avx512)");
  if (!supports(i)) throw std::invalid_argument("this CPU does not support the ISA '" + isa + "'");
  g_selected.store(i, std::memory_order_relaxed);
}

// gf.set_num_threads(n) caps the threads; OpenMP's own setting (OMP_NUM_THREADS, or what
// threadpoolctl sets through omp_set_num_threads) caps them too, so either can limit gradfuse.
int num_threads() {
  const int omp = omp_get_max_threads();
  const int mine = g_threads.load(std::memory_order_relaxed);
  return (mine > 0 && mine < omp) ? mine : omp;
}

void set_num_threads(int n) { g_threads.store(n > 0 ? n : 0, std::memory_order_relaxed); }

}  // namespace gf
