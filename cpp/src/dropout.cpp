// dropout.cpp: bodies of the dropout kernels. The contract (formulas, mask layout, bytes per
// element, threading) is in gradfuse/dropout.hpp. Compiled once per ISA into gf::<isa>.
//
// The unit of work is one 64-bit mask word = 64 elements = 16 Philox blocks: one Philox call on
// AVX-512's 16 lanes, two on AVX2's 8, sixteen on the scalar path. Lane l computes block b0 + l;
// its output word j decides element 4 (b0 + l) + j, so the four compare results (bit l of each)
// are interleaved into the mask word by spreading each over every fourth bit (spread_bits4).
// The word then selects, vector by vector, the factor (scale or 0) that multiplies x. Outputs of
// 16 MiB and more are written with non-temporal stores (apply_range). bf16 arrays are read into and
// written from float32 lanes (V = Vec<compute_t<T>>): the float32 multiplication, rounded once.
#include <cstdint>
#include <cstring>

#include "gradfuse/dropout.hpp"
#include "gradfuse/parallel.hpp"
#include "gradfuse/philox.hpp"
#include "gradfuse/simd.hpp"

namespace gf {
namespace GF_ISA_NS {
namespace {

constexpr int64_t kWord = 64;      // elements per mask word

// The keep bits of mask word w (bit k: element 64 w + k), before trimming to n.
GF_INLINE uint64_t keep_word(uint64_t w, const PhiloxKeys& key, U32 ctr_lo, U32 ctr_hi, uint32_t threshold) {
  constexpr int L = U32::width;  // 16, 8 or 1 blocks per Philox call
  static_assert(16 % L == 0, "a mask word holds 16 Philox blocks");
  const uint64_t b0 = w * 16;  // a multiple of 16: b0 + l never carries out of the low 32 bits
  const U32 b_hi = U32::broadcast(static_cast<uint32_t>(b0 >> 32));
  uint64_t bits = 0;
  for (int g = 0; g < 16; g += L) {
    U32 c0 = U32::iota(static_cast<uint32_t>(b0) + static_cast<uint32_t>(g)), c1 = b_hi, c2 = ctr_lo, c3 = ctr_hi;
    philox4x32_10(c0, c1, c2, c3, key);
    const uint64_t part = spread_bits4(ge_bits(c0, threshold)) | spread_bits4(ge_bits(c1, threshold)) << 1 |
                          spread_bits4(ge_bits(c2, threshold)) << 2 | spread_bits4(ge_bits(c3, threshold)) << 3;
    bits |= part << (4 * g);
  }
  return bits;
}

GF_INLINE void store_word(uint8_t* mask, int64_t w, uint64_t bits) { std::memcpy(mask + 8 * w, &bits, 8); }
GF_INLINE uint64_t load_word(const uint8_t* mask, int64_t w) {
  uint64_t bits;
  std::memcpy(&bits, mask + 8 * w, 8);
  return bits;
}

GF_INLINE uint64_t trim(uint64_t bits, int64_t len) { return len < kWord ? bits & ((uint64_t{1} << len) - 1) : bits; }

// Outputs at least this large are written with non-temporal stores: far larger than the caches,
// they would be evicted before they are read again, and streaming saves the read-for-ownership of
// every line (a third of a dropout's traffic). Measured on a 2-core AVX-512 Xeon: slower below
// ~4 MiB, faster from ~16 MiB (backward of 16M float32: 5.0-5.5 -> 4.0 ms).
constexpr int64_t kStreamBytes = int64_t{16} << 20;

// Where the vectors of [lo, hi) start, as an offset s from lo (a multiple of 64): 0, or for
// streaming the first element of `out` on a sizeof(V) boundary (the same s for every lo, since
// 64 elements span whole vectors). -1: out cannot be streamed (not aligned to its element).
template <class T>
int64_t stream_offset(const T* out, int64_t n) {
  constexpr int64_t bytes = Vec<compute_t<T>>::width * static_cast<int64_t>(sizeof(T));  // one vector's storage
  if (n * static_cast<int64_t>(sizeof(T)) < kStreamBytes) return -1;
  const int64_t past = static_cast<int64_t>(reinterpret_cast<uintptr_t>(out) % bytes);
  if (past % static_cast<int64_t>(sizeof(T)) != 0) return -1;
  return (bytes - past) % bytes / static_cast<int64_t>(sizeof(T));
}

// out[e] = in[e] * (keep_e ? scale : 0) for e in [lo, hi), lo a multiple of 64, keep_e = bit e % 64
// of word_bits(e / 64) (called once per word, in order). The vectors start at lo + s (s < width):
// with s > 0 (streaming to an output on a vector boundary) a vector straddles two mask words and
// takes its bits from the pair; [lo, lo + s) and a last partial vector use masked ordinary stores.
template <bool kStream, class T, class V, class WordBits>
GF_INLINE void apply_range(const T* in, T* out, int64_t lo, int64_t hi, int64_t s, V scale, WordBits&& word_bits) {
  using C = compute_t<T>;
  constexpr int64_t W = V::width;
  constexpr uint32_t lanes = (1u << W) - 1u;
  const V zero = V::broadcast(C(0));
  int64_t w = lo / kWord;
  uint64_t cur = word_bits(w);
  if (s > 0) {
    const int64_t len = s < hi - lo ? s : hi - lo;
    const V f = select(mask_from_bits<V>(static_cast<uint32_t>(cur) & lanes), scale, zero);
    (V::load(in + lo, len) * f).store(out + lo, len);
  }
  for (int64_t base = lo; base + s < hi; base += kWord, ++w) {
    const uint64_t next = base + kWord < hi ? word_bits(w + 1) : 0;
    for (int64_t o = s; o < kWord && base + o < hi; o += W) {
      const uint64_t window = o == 0 ? cur : (cur >> o) | (next << (kWord - o));
      const V f = select(mask_from_bits<V>(static_cast<uint32_t>(window) & lanes), scale, zero);
      const int64_t at = base + o;
      if (at + W <= hi) {
        const V v = V::load(in + at) * f;
        if constexpr (kStream) v.stream(out + at);
        else v.store(out + at);
      } else {
        (V::load(in + at, hi - at) * f).store(out + at, hi - at);
      }
    }
    cur = next;
  }
  if constexpr (kStream) stream_fence();
}

// The thread's block of an element-wise pass: streaming or not, decided once per call.
template <class T, class V, class WordBits>
GF_INLINE void apply(const T* in, T* out, int64_t lo, int64_t hi, int64_t s, V scale, WordBits&& word_bits) {
  if (s < 0) apply_range<false>(in, out, lo, hi, 0, scale, word_bits);
  else apply_range<true>(in, out, lo, hi, s, scale, word_bits);
}

}  // namespace

template <class T>
void dropout_forward(const T* x, T* y, uint8_t* mask, int64_t n, double p, uint64_t seed, uint64_t counter,
                     int threads) {
  using C = compute_t<T>;
  const uint32_t threshold = dropout_threshold(p);
  const Vec<C> scale = Vec<C>::broadcast(static_cast<C>(dropout_scale(p)));
  const bool keep_all = threshold == 0, keep_none = p >= 1.0;  // no random numbers needed
  const PhiloxKeys key(static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const U32 ctr_lo = U32::broadcast(static_cast<uint32_t>(counter));
  const U32 ctr_hi = U32::broadcast(static_cast<uint32_t>(counter >> 32));
  const int64_t s = stream_offset(y, n);
  parallel_for(n, threads, kGrain, [&](int64_t lo, int64_t hi) {  // lo: a multiple of 64
    apply(x, y, lo, hi, s, scale, [&](int64_t w) {
      uint64_t bits = keep_none  ? 0
                      : keep_all ? ~uint64_t{0}
                                 : keep_word(static_cast<uint64_t>(w), key, ctr_lo, ctr_hi, threshold);
      bits = trim(bits, n - w * kWord);  // the padding bits after n are 0
      store_word(mask, w, bits);
      return bits;
    });
  });
}

template <class T>
void dropout_backward(const T* dy, const uint8_t* mask, T* dx, int64_t n, double p, int threads) {
  using C = compute_t<T>;
  const Vec<C> scale = Vec<C>::broadcast(static_cast<C>(dropout_scale(p)));
  const int64_t s = stream_offset(dx, n);
  parallel_for(n, threads, kGrain, [&](int64_t lo, int64_t hi) {
    apply(dy, dx, lo, hi, s, scale, [&](int64_t w) { return load_word(mask, w); });
  });
}

// Counters and outputs are n x 4 (one block per row): gathered into lanes, L rows at a time; the
// last group is padded with zero counters whose outputs are dropped.
void philox4x32_10(const uint32_t* counters, int64_t n, uint32_t key0, uint32_t key1, uint32_t* out, int threads) {
  constexpr int L = U32::width;
  const PhiloxKeys key(key0, key1);
  parallel_for(n, threads, kGrain / 4, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; r += L) {
      const int64_t rows = hi - r < L ? hi - r : L;
      uint32_t lanes[4][L] = {};
      for (int64_t l = 0; l < rows; ++l)
        for (int j = 0; j < 4; ++j) lanes[j][l] = counters[4 * (r + l) + j];
      U32 c0 = U32::load(lanes[0]), c1 = U32::load(lanes[1]), c2 = U32::load(lanes[2]), c3 = U32::load(lanes[3]);
      philox4x32_10(c0, c1, c2, c3, key);
      c0.store(lanes[0]), c1.store(lanes[1]), c2.store(lanes[2]), c3.store(lanes[3]);
      for (int64_t l = 0; l < rows; ++l)
        for (int j = 0; j < 4; ++j) out[4 * (r + l) + j] = lanes[j][l];
    }
  });
}

template void dropout_forward<float>(const float*, float*, uint8_t*, int64_t, double, uint64_t, uint64_t, int);
template void dropout_forward<double>(const double*, double*, uint8_t*, int64_t, double, uint64_t, uint64_t, int);
template void dropout_backward<float>(const float*, const uint8_t*, float*, int64_t, double, int);
template void dropout_backward<double>(const double*, const uint8_t*, double*, int64_t, double, int);
template void dropout_forward<bf16>(const bf16*, bf16*, uint8_t*, int64_t, double, uint64_t, uint64_t, int);
template void dropout_backward<bf16>(const bf16*, const uint8_t*, bf16*, int64_t, double, int);

}  // namespace GF_ISA_NS
}  // namespace gf
