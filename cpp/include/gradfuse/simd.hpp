// simd.hpp: the ONLY file with intrinsics. A small vector type, Vec<T>, for float and double on
// three instruction sets, chosen by the macro GF_ISA_<NAME> of the translation unit:
//
//   scalar  x86-64 baseline, one lane        (GF_ISA_SCALAR)
//   avx2    AVX2 + FMA, 256-bit              (GF_ISA_AVX2)
//   avx512  AVX-512 F/BW/DQ/VL, 512-bit      (GF_ISA_AVX512)
//
// Every kernel family is compiled once per ISA inside namespace gf::<isa> (GF_ISA_NS), so the
// three copies never meet at link time. Kernels are written once against this interface:
//
//   V::width, V::load(p), V::load(p, n), v.store(p), v.store(p, n), V::broadcast(x),
//   Vec<float>::load(const bf16*), v.store(bf16*) (and the masked forms): bf16 storage as float lanes
//   (bf16.hpp: exact widening, round-to-nearest-even narrowing, ml_dtypes' NaN);
//   v.stream(p) (a non-temporal store, p aligned to sizeof(V); then stream_fence() before the
//   threads join; for outputs far larger than the caches: no read-for-ownership of the lines),
//   + - * / unary-, sqrt, abs, maximum/minimum (NaN-propagating, like numpy), sign (torch's:
//   NaN -> 0), comparisons > < -> V::Mask, select(mask, a, b), fma, isnan, any, hsum,
//   mask_from_bits<V>(bits) (bit i -> lane i), widen_lo/widen_hi (float lanes as doubles; scalar
//   has one lane, so only widen_lo);
//   U32: uint32 lanes (as many as Vec<float>): broadcast, iota, load, +, ^, mulhilo, ge_bits, store;
//   spread_bits4(bits) (bit k -> bit 4 k: interleaves four lane masks into one 64-bit word).
//
// load(p, n) / store(p, n) touch only the first n < width lanes (masked), so a tail is processed
// by the same vector code as the body: an element's result never depends on its position, which is
// what makes results bitwise identical for every thread count and every chunking.
// add, sub, mul, div and sqrt are correctly rounded IEEE operations on every path, so kernels that
// avoid fma give bitwise the same results on all three ISAs (and match their NumPy twins).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "gradfuse/bf16.hpp"

#if defined(GF_ISA_AVX2) || defined(GF_ISA_AVX512)
#include <immintrin.h>
#endif

#ifndef GF_ISA_NS
#error "simd.hpp is compiled once per ISA: define GF_ISA_NS (scalar, avx2 or avx512)"
#endif

#define GF_INLINE inline __attribute__((always_inline))

namespace gf {
namespace GF_ISA_NS {

template <class T>
struct Vec;

// ------------------------------------------------------------------------------------------------
#if defined(GF_ISA_AVX512)
GF_INLINE __mmask16 tail_mask16(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
GF_INLINE __mmask8 tail_mask8(int64_t n) { return static_cast<__mmask8>((1u << n) - 1u); }

// bf16 <-> float32 lanes (bf16.hpp): widening is exact (a shift); narrowing rounds to nearest even,
// and a NaN becomes the quiet NaN 0x7FC0 with its sign, as ml_dtypes does.
GF_INLINE __m512 bf16_widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
GF_INLINE __m256i bf16_narrow(__m512 v) {
  const __m512i u = _mm512_castps_si512(v), hi = _mm512_srli_epi32(u, 16);
  const __m512i bias = _mm512_add_epi32(_mm512_and_si512(hi, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7FFF));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
  const __m512i qnan = _mm512_or_si512(_mm512_and_si512(hi, _mm512_set1_epi32(0x8000)), _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), qnan));
}

template <>
struct Vec<float> {
  using value_type = float;
  using Mask = __mmask16;
  static constexpr int width = 16;
  __m512 v;
  static GF_INLINE Vec load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static GF_INLINE Vec load(const float* p, int64_t n) { return {_mm512_maskz_loadu_ps(tail_mask16(n), p)}; }
  GF_INLINE void store(float* p) const { _mm512_storeu_ps(p, v); }
  GF_INLINE void store(float* p, int64_t n) const { _mm512_mask_storeu_ps(p, tail_mask16(n), v); }
  static GF_INLINE Vec load(const bf16* p) {
    return {bf16_widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
  }
  static GF_INLINE Vec load(const bf16* p, int64_t n) {
    return {bf16_widen(_mm256_maskz_loadu_epi16(tail_mask16(n), p))};
  }
  GF_INLINE void store(bf16* p) const { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), bf16_narrow(v)); }
  GF_INLINE void store(bf16* p, int64_t n) const { _mm256_mask_storeu_epi16(p, tail_mask16(n), bf16_narrow(v)); }
  GF_INLINE void stream(float* p) const { _mm512_stream_ps(p, v); }
  static GF_INLINE Vec broadcast(float x) { return {_mm512_set1_ps(x)}; }
};
GF_INLINE Vec<float> operator+(Vec<float> a, Vec<float> b) { return {_mm512_add_ps(a.v, b.v)}; }
GF_INLINE Vec<float> operator-(Vec<float> a, Vec<float> b) { return {_mm512_sub_ps(a.v, b.v)}; }
GF_INLINE Vec<float> operator*(Vec<float> a, Vec<float> b) { return {_mm512_mul_ps(a.v, b.v)}; }
GF_INLINE Vec<float> operator/(Vec<float> a, Vec<float> b) { return {_mm512_div_ps(a.v, b.v)}; }
GF_INLINE Vec<float> operator-(Vec<float> a) {
  return {_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a.v), _mm512_set1_epi32(INT32_MIN)))};
}
GF_INLINE Vec<float> sqrt(Vec<float> a) { return {_mm512_sqrt_ps(a.v)}; }
GF_INLINE Vec<float> abs(Vec<float> a) { return {_mm512_abs_ps(a.v)}; }
GF_INLINE Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
GF_INLINE __mmask16 operator>(Vec<float> a, Vec<float> b) { return _mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ); }
GF_INLINE __mmask16 operator<(Vec<float> a, Vec<float> b) { return _mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ); }
GF_INLINE __mmask16 isnan(Vec<float> a) { return _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q); }
GF_INLINE Vec<float> select(__mmask16 m, Vec<float> a, Vec<float> b) { return {_mm512_mask_blend_ps(m, b.v, a.v)}; }
// vmaxps returns its second operand when either is NaN: (a, b) -> b; patch the NaN-in-a case.
GF_INLINE Vec<float> maximum(Vec<float> a, Vec<float> b) {
  return {_mm512_mask_blend_ps(isnan(a), _mm512_max_ps(a.v, b.v), a.v)};
}
GF_INLINE Vec<float> minimum(Vec<float> a, Vec<float> b) {
  return {_mm512_mask_blend_ps(isnan(a), _mm512_min_ps(a.v, b.v), a.v)};
}
GF_INLINE bool any(__mmask16 m) { return m != 0; }
GF_INLINE float hsum(Vec<float> a) { return _mm512_reduce_add_ps(a.v); }

template <>
struct Vec<double> {
  using value_type = double;
  using Mask = __mmask8;
  static constexpr int width = 8;
  __m512d v;
  static GF_INLINE Vec load(const double* p) { return {_mm512_loadu_pd(p)}; }
  static GF_INLINE Vec load(const double* p, int64_t n) { return {_mm512_maskz_loadu_pd(tail_mask8(n), p)}; }
  GF_INLINE void store(double* p) const { _mm512_storeu_pd(p, v); }
  GF_INLINE void store(double* p, int64_t n) const { _mm512_mask_storeu_pd(p, tail_mask8(n), v); }
  GF_INLINE void stream(double* p) const { _mm512_stream_pd(p, v); }
  static GF_INLINE Vec broadcast(double x) { return {_mm512_set1_pd(x)}; }
};
GF_INLINE Vec<double> operator+(Vec<double> a, Vec<double> b) { return {_mm512_add_pd(a.v, b.v)}; }
GF_INLINE Vec<double> operator-(Vec<double> a, Vec<double> b) { return {_mm512_sub_pd(a.v, b.v)}; }
GF_INLINE Vec<double> operator*(Vec<double> a, Vec<double> b) { return {_mm512_mul_pd(a.v, b.v)}; }
GF_INLINE Vec<double> operator/(Vec<double> a, Vec<double> b) { return {_mm512_div_pd(a.v, b.v)}; }
GF_INLINE Vec<double> operator-(Vec<double> a) {
  return {_mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(a.v), _mm512_set1_epi64(INT64_MIN)))};
}
GF_INLINE Vec<double> sqrt(Vec<double> a) { return {_mm512_sqrt_pd(a.v)}; }
GF_INLINE Vec<double> abs(Vec<double> a) { return {_mm512_abs_pd(a.v)}; }
GF_INLINE Vec<double> fma(Vec<double> a, Vec<double> b, Vec<double> c) { return {_mm512_fmadd_pd(a.v, b.v, c.v)}; }
GF_INLINE __mmask8 operator>(Vec<double> a, Vec<double> b) { return _mm512_cmp_pd_mask(a.v, b.v, _CMP_GT_OQ); }
GF_INLINE __mmask8 operator<(Vec<double> a, Vec<double> b) { return _mm512_cmp_pd_mask(a.v, b.v, _CMP_LT_OQ); }
GF_INLINE __mmask8 isnan(Vec<double> a) { return _mm512_cmp_pd_mask(a.v, a.v, _CMP_UNORD_Q); }
GF_INLINE Vec<double> select(__mmask8 m, Vec<double> a, Vec<double> b) { return {_mm512_mask_blend_pd(m, b.v, a.v)}; }
GF_INLINE Vec<double> maximum(Vec<double> a, Vec<double> b) {
  return {_mm512_mask_blend_pd(isnan(a), _mm512_max_pd(a.v, b.v), a.v)};
}
GF_INLINE Vec<double> minimum(Vec<double> a, Vec<double> b) {
  return {_mm512_mask_blend_pd(isnan(a), _mm512_min_pd(a.v, b.v), a.v)};
}
GF_INLINE bool any(__mmask8 m) { return m != 0; }
GF_INLINE double hsum(Vec<double> a) { return _mm512_reduce_add_pd(a.v); }

// float -> double widening (accumulating float32 data in double), lanes 0..7 and 8..15
GF_INLINE Vec<double> widen_lo(Vec<float> a) { return {_mm512_cvtps_pd(_mm512_castps512_ps256(a.v))}; }
GF_INLINE Vec<double> widen_hi(Vec<float> a) {
  return {_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a.v), 1)))};
}
// A mask from the low `width` bits of an integer (bit i -> lane i).
template <class V> GF_INLINE typename V::Mask mask_from_bits(uint32_t bits);
template <> GF_INLINE __mmask16 mask_from_bits<Vec<float>>(uint32_t bits) { return static_cast<__mmask16>(bits); }
template <> GF_INLINE __mmask8 mask_from_bits<Vec<double>>(uint32_t bits) { return static_cast<__mmask8>(bits); }

// uint32 lanes, as many as Vec<float> has: the counter-based RNG (philox.hpp) runs on these.
struct U32 {
  static constexpr int width = 16;
  __m512i v;
  static GF_INLINE U32 broadcast(uint32_t x) { return {_mm512_set1_epi32(static_cast<int>(x))}; }
  static GF_INLINE U32 iota(uint32_t base) {  // base, base+1, ..., base+15
    return {_mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(base)),
                             _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))};
  }
  static GF_INLINE U32 load(const uint32_t* p) { return {_mm512_loadu_si512(p)}; }
  GF_INLINE void store(uint32_t* p) const { _mm512_storeu_si512(p, v); }
};
GF_INLINE U32 operator+(U32 a, U32 b) { return {_mm512_add_epi32(a.v, b.v)}; }
GF_INLINE U32 operator^(U32 a, U32 b) { return {_mm512_xor_si512(a.v, b.v)}; }
// The full 64-bit products a * m, split into their high and low 32-bit halves. The lane swaps are
// shuffles (port 5), merged under a mask, so only the two multiplies use port 0.
GF_INLINE void mulhilo(U32 a, uint32_t m, U32& hi, U32& lo) {
  const __m512i mv = _mm512_set1_epi32(static_cast<int>(m));
  const __m512i even = _mm512_mul_epu32(a.v, mv);                                     // lanes 0, 2, ...
  const __m512i odd = _mm512_mul_epu32(_mm512_shuffle_epi32(a.v, _MM_PERM_CDAB), mv);  // lanes 1, 3, ...
  lo.v = _mm512_mask_shuffle_epi32(even, 0xAAAA, odd, _MM_PERM_CDAB);
  hi.v = _mm512_mask_shuffle_epi32(odd, 0x5555, even, _MM_PERM_CDAB);
}
// Bit i set where lane i of a is >= t (unsigned).
GF_INLINE uint32_t ge_bits(U32 a, uint32_t t) {
  return _mm512_cmpge_epu32_mask(a.v, _mm512_set1_epi32(static_cast<int>(t)));
}

// ------------------------------------------------------------------------------------------------
#elif defined(GF_ISA_AVX2)
// Lane i is active when i < n: the sign bit of each 32/64-bit mask lane selects it.
GF_INLINE __m256i tail_mask_ps(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
GF_INLINE __m256i tail_mask_pd(int64_t n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}

// bf16 <-> float32 lanes, as on the AVX-512 path; tails go through a small buffer (no 16-bit masked
// loads before AVX-512).
GF_INLINE __m256 bf16_widen(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
GF_INLINE __m128i bf16_narrow(__m256 v) {
  const __m256i u = _mm256_castps_si256(v), hi = _mm256_srli_epi32(u, 16);
  const __m256i bias = _mm256_add_epi32(_mm256_and_si256(hi, _mm256_set1_epi32(1)), _mm256_set1_epi32(0x7FFF));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
  const __m256i qnan = _mm256_or_si256(_mm256_and_si256(hi, _mm256_set1_epi32(0x8000)), _mm256_set1_epi32(0x7FC0));
  const __m256i r = _mm256_blendv_epi8(rounded, qnan, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));  // lanes <= 0xFFFF
}

template <>
struct Vec<float> {
  using value_type = float;
  using Mask = __m256;  // all-ones lanes where true
  static constexpr int width = 8;
  __m256 v;
  static GF_INLINE Vec load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static GF_INLINE Vec load(const float* p, int64_t n) { return {_mm256_maskload_ps(p, tail_mask_ps(n))}; }
  GF_INLINE void store(float* p) const { _mm256_storeu_ps(p, v); }
  GF_INLINE void store(float* p, int64_t n) const { _mm256_maskstore_ps(p, tail_mask_ps(n), v); }
  static GF_INLINE Vec load(const bf16* p) {
    return {bf16_widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
  }
  static GF_INLINE Vec load(const bf16* p, int64_t n) {
    alignas(16) bf16 buf[8] = {};
    std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(bf16));
    return load(buf);
  }
  GF_INLINE void store(bf16* p) const { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), bf16_narrow(v)); }
  GF_INLINE void store(bf16* p, int64_t n) const {
    alignas(16) bf16 buf[8];
    store(buf);
    std::memcpy(p, buf, static_cast<size_t>(n) * sizeof(bf16));
  }
  GF_INLINE void stream(float* p) const { _mm256_stream_ps(p, v); }
  static GF_INLINE Vec broadcast(float x) { return {_mm256_set1_ps(x)}; }
};
GF_INLINE Vec<float> operator+(Vec<float> a, Vec<float> b) { return {_mm256_add_ps(a.v, b.v)}; }
GF_INLINE Vec<float> operator-(Vec<float> a, Vec<float> b) { return {_mm256_sub_ps(a.v, b.v)}; }
GF_INLINE Vec<float> operator*(Vec<float> a, Vec<float> b) { return {_mm256_mul_ps(a.v, b.v)}; }
GF_INLINE Vec<float> operator/(Vec<float> a, Vec<float> b) { return {_mm256_div_ps(a.v, b.v)}; }
GF_INLINE Vec<float> operator-(Vec<float> a) { return {_mm256_xor_ps(a.v, _mm256_set1_ps(-0.0f))}; }
GF_INLINE Vec<float> sqrt(Vec<float> a) { return {_mm256_sqrt_ps(a.v)}; }
GF_INLINE Vec<float> abs(Vec<float> a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)}; }
GF_INLINE Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
GF_INLINE __m256 operator>(Vec<float> a, Vec<float> b) { return _mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ); }
GF_INLINE __m256 operator<(Vec<float> a, Vec<float> b) { return _mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ); }
GF_INLINE __m256 isnan(Vec<float> a) { return _mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q); }
GF_INLINE Vec<float> select(__m256 m, Vec<float> a, Vec<float> b) { return {_mm256_blendv_ps(b.v, a.v, m)}; }
GF_INLINE Vec<float> maximum(Vec<float> a, Vec<float> b) {
  return {_mm256_blendv_ps(_mm256_max_ps(a.v, b.v), a.v, isnan(a))};
}
GF_INLINE Vec<float> minimum(Vec<float> a, Vec<float> b) {
  return {_mm256_blendv_ps(_mm256_min_ps(a.v, b.v), a.v, isnan(a))};
}
GF_INLINE bool any(__m256 m) { return _mm256_movemask_ps(m) != 0; }
GF_INLINE float hsum(Vec<float> a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <>
struct Vec<double> {
  using value_type = double;
  using Mask = __m256d;
  static constexpr int width = 4;
  __m256d v;
  static GF_INLINE Vec load(const double* p) { return {_mm256_loadu_pd(p)}; }
  static GF_INLINE Vec load(const double* p, int64_t n) { return {_mm256_maskload_pd(p, tail_mask_pd(n))}; }
  GF_INLINE void store(double* p) const { _mm256_storeu_pd(p, v); }
  GF_INLINE void store(double* p, int64_t n) const { _mm256_maskstore_pd(p, tail_mask_pd(n), v); }
  GF_INLINE void stream(double* p) const { _mm256_stream_pd(p, v); }
  static GF_INLINE Vec broadcast(double x) { return {_mm256_set1_pd(x)}; }
};
GF_INLINE Vec<double> operator+(Vec<double> a, Vec<double> b) { return {_mm256_add_pd(a.v, b.v)}; }
GF_INLINE Vec<double> operator-(Vec<double> a, Vec<double> b) { return {_mm256_sub_pd(a.v, b.v)}; }
GF_INLINE Vec<double> operator*(Vec<double> a, Vec<double> b) { return {_mm256_mul_pd(a.v, b.v)}; }
GF_INLINE Vec<double> operator/(Vec<double> a, Vec<double> b) { return {_mm256_div_pd(a.v, b.v)}; }
GF_INLINE Vec<double> operator-(Vec<double> a) { return {_mm256_xor_pd(a.v, _mm256_set1_pd(-0.0))}; }
GF_INLINE Vec<double> sqrt(Vec<double> a) { return {_mm256_sqrt_pd(a.v)}; }
GF_INLINE Vec<double> abs(Vec<double> a) { return {_mm256_andnot_pd(_mm256_set1_pd(-0.0), a.v)}; }
GF_INLINE Vec<double> fma(Vec<double> a, Vec<double> b, Vec<double> c) { return {_mm256_fmadd_pd(a.v, b.v, c.v)}; }
GF_INLINE __m256d operator>(Vec<double> a, Vec<double> b) { return _mm256_cmp_pd(a.v, b.v, _CMP_GT_OQ); }
GF_INLINE __m256d operator<(Vec<double> a, Vec<double> b) { return _mm256_cmp_pd(a.v, b.v, _CMP_LT_OQ); }
GF_INLINE __m256d isnan(Vec<double> a) { return _mm256_cmp_pd(a.v, a.v, _CMP_UNORD_Q); }
GF_INLINE Vec<double> select(__m256d m, Vec<double> a, Vec<double> b) { return {_mm256_blendv_pd(b.v, a.v, m)}; }
GF_INLINE Vec<double> maximum(Vec<double> a, Vec<double> b) {
  return {_mm256_blendv_pd(_mm256_max_pd(a.v, b.v), a.v, isnan(a))};
}
GF_INLINE Vec<double> minimum(Vec<double> a, Vec<double> b) {
  return {_mm256_blendv_pd(_mm256_min_pd(a.v, b.v), a.v, isnan(a))};
}
GF_INLINE bool any(__m256d m) { return _mm256_movemask_pd(m) != 0; }
GF_INLINE double hsum(Vec<double> a) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a.v), _mm256_extractf128_pd(a.v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

// float -> double widening (accumulating float32 data in double), lanes 0..3 and 4..7
GF_INLINE Vec<double> widen_lo(Vec<float> a) { return {_mm256_cvtps_pd(_mm256_castps256_ps128(a.v))}; }
GF_INLINE Vec<double> widen_hi(Vec<float> a) { return {_mm256_cvtps_pd(_mm256_extractf128_ps(a.v, 1))}; }
// A mask from the low `width` bits of an integer (bit i -> lane i).
template <class V> GF_INLINE typename V::Mask mask_from_bits(uint32_t bits);
template <> GF_INLINE __m256 mask_from_bits<Vec<float>>(uint32_t bits) {
  const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i b = _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), lane);
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, lane));
}
template <> GF_INLINE __m256d mask_from_bits<Vec<double>>(uint32_t bits) {
  const __m256i lane = _mm256_setr_epi64x(1, 2, 4, 8);
  const __m256i b = _mm256_and_si256(_mm256_set1_epi64x(bits), lane);
  return _mm256_castsi256_pd(_mm256_cmpeq_epi64(b, lane));
}

// uint32 lanes, as many as Vec<float> has: the counter-based RNG (philox.hpp) runs on these.
struct U32 {
  static constexpr int width = 8;
  __m256i v;
  static GF_INLINE U32 broadcast(uint32_t x) { return {_mm256_set1_epi32(static_cast<int>(x))}; }
  static GF_INLINE U32 iota(uint32_t base) {
    return {_mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(base)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))};
  }
  static GF_INLINE U32 load(const uint32_t* p) { return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))}; }
  GF_INLINE void store(uint32_t* p) const { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
};
GF_INLINE U32 operator+(U32 a, U32 b) { return {_mm256_add_epi32(a.v, b.v)}; }
GF_INLINE U32 operator^(U32 a, U32 b) { return {_mm256_xor_si256(a.v, b.v)}; }
GF_INLINE void mulhilo(U32 a, uint32_t m, U32& hi, U32& lo) {  // lane swaps as shuffles, as above
  const __m256i mv = _mm256_set1_epi32(static_cast<int>(m));
  const __m256i even = _mm256_mul_epu32(a.v, mv);
  const __m256i odd = _mm256_mul_epu32(_mm256_shuffle_epi32(a.v, 0xB1), mv);
  lo.v = _mm256_blend_epi32(even, _mm256_shuffle_epi32(odd, 0xB1), 0xAA);
  hi.v = _mm256_blend_epi32(_mm256_shuffle_epi32(even, 0xB1), odd, 0xAA);
}
GF_INLINE uint32_t ge_bits(U32 a, uint32_t t) {  // unsigned a >= t  <=>  max(a, t) == a
  const __m256i eq = _mm256_cmpeq_epi32(_mm256_max_epu32(a.v, _mm256_set1_epi32(static_cast<int>(t))), a.v);
  return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(eq)));
}

// ------------------------------------------------------------------------------------------------
#else  // scalar: one lane, plain C++ (the compiler emits SSE2 scalar instructions)
template <class T>
struct Vec {
  using value_type = T;
  using Mask = bool;
  static constexpr int width = 1;
  T v;
  static GF_INLINE Vec load(const T* p) { return {*p}; }
  static GF_INLINE Vec load(const T* p, int64_t) { return {*p}; }  // never called: width 1 has no tail
  GF_INLINE void store(T* p) const { *p = v; }
  GF_INLINE void store(T* p, int64_t) const { *p = v; }
  GF_INLINE void stream(T* p) const { *p = v; }  // a plain store on the baseline path
  static GF_INLINE Vec broadcast(T x) { return {x}; }
  // bf16 storage (Vec<float> only): exact widening, round-to-nearest-even narrowing (bf16.hpp)
  static GF_INLINE Vec load(const bf16* p) { return {bf16_to_float(*p)}; }
  static GF_INLINE Vec load(const bf16* p, int64_t) { return {bf16_to_float(*p)}; }
  GF_INLINE void store(bf16* p) const { *p = float_to_bf16(v); }
  GF_INLINE void store(bf16* p, int64_t) const { *p = float_to_bf16(v); }
};
template <class T> GF_INLINE Vec<T> operator+(Vec<T> a, Vec<T> b) { return {a.v + b.v}; }
template <class T> GF_INLINE Vec<T> operator-(Vec<T> a, Vec<T> b) { return {a.v - b.v}; }
template <class T> GF_INLINE Vec<T> operator*(Vec<T> a, Vec<T> b) { return {a.v * b.v}; }
template <class T> GF_INLINE Vec<T> operator/(Vec<T> a, Vec<T> b) { return {a.v / b.v}; }
template <class T> GF_INLINE Vec<T> operator-(Vec<T> a) { return {-a.v}; }
GF_INLINE Vec<float> sqrt(Vec<float> a) { return {__builtin_sqrtf(a.v)}; }
GF_INLINE Vec<double> sqrt(Vec<double> a) { return {__builtin_sqrt(a.v)}; }
GF_INLINE Vec<float> abs(Vec<float> a) { return {__builtin_fabsf(a.v)}; }
GF_INLINE Vec<double> abs(Vec<double> a) { return {__builtin_fabs(a.v)}; }
// No FMA unit on the baseline: software fma is exact but slow; kernels that need speed here avoid it.
GF_INLINE Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) { return {__builtin_fmaf(a.v, b.v, c.v)}; }
GF_INLINE Vec<double> fma(Vec<double> a, Vec<double> b, Vec<double> c) { return {__builtin_fma(a.v, b.v, c.v)}; }
template <class T> GF_INLINE bool operator>(Vec<T> a, Vec<T> b) { return a.v > b.v; }
template <class T> GF_INLINE bool operator<(Vec<T> a, Vec<T> b) { return a.v < b.v; }
template <class T> GF_INLINE bool isnan(Vec<T> a) { return a.v != a.v; }
template <class T> GF_INLINE Vec<T> select(bool m, Vec<T> a, Vec<T> b) { return m ? a : b; }
// Same semantics as vmaxps/vminps with the NaN-in-a patch above: NaN in either operand wins.
template <class T> GF_INLINE Vec<T> maximum(Vec<T> a, Vec<T> b) { return a.v != a.v ? a : (a.v > b.v ? a : b); }
template <class T> GF_INLINE Vec<T> minimum(Vec<T> a, Vec<T> b) { return a.v != a.v ? a : (a.v < b.v ? a : b); }
GF_INLINE bool any(bool m) { return m; }
template <class T> GF_INLINE T hsum(Vec<T> a) { return a.v; }

// float -> double widening: one lane
GF_INLINE Vec<double> widen_lo(Vec<float> a) { return {static_cast<double>(a.v)}; }
template <class V> GF_INLINE bool mask_from_bits(uint32_t bits) { return (bits & 1u) != 0; }

// uint32 lanes: one.
struct U32 {
  static constexpr int width = 1;
  uint32_t v;
  static GF_INLINE U32 broadcast(uint32_t x) { return {x}; }
  static GF_INLINE U32 iota(uint32_t base) { return {base}; }
  static GF_INLINE U32 load(const uint32_t* p) { return {*p}; }
  GF_INLINE void store(uint32_t* p) const { *p = v; }
};
GF_INLINE U32 operator+(U32 a, U32 b) { return {a.v + b.v}; }
GF_INLINE U32 operator^(U32 a, U32 b) { return {a.v ^ b.v}; }
GF_INLINE void mulhilo(U32 a, uint32_t m, U32& hi, U32& lo) {
  const uint64_t prod = static_cast<uint64_t>(a.v) * m;
  hi.v = static_cast<uint32_t>(prod >> 32);
  lo.v = static_cast<uint32_t>(prod);
}
GF_INLINE uint32_t ge_bits(U32 a, uint32_t t) { return a.v >= t ? 1u : 0u; }
#endif

// Orders a thread's non-temporal stores (v.stream) before what follows (the end of a parallel
// region). No-op on the scalar path, whose stream() is a plain store.
#if defined(GF_ISA_AVX2) || defined(GF_ISA_AVX512)
GF_INLINE void stream_fence() { _mm_sfence(); }
#else
GF_INLINE void stream_fence() {}
#endif

// Bit k of bits (k < 16) moved to bit 4 k, the other bits 0: four 16-lane compare masks m_j become
// one 64-bit word with bit 4 l + j = bit l of m_j. BMI2 pdep where AVX-512 runs (every such CPU
// has a fast one); shifts and masks elsewhere (AMD Zen 1/2, served by the AVX2 path, microcode pdep).
#if defined(GF_ISA_AVX512)
GF_INLINE uint64_t spread_bits4(uint32_t bits) { return _pdep_u64(bits, 0x1111111111111111ull); }
#else
GF_INLINE uint64_t spread_bits4(uint32_t bits) {
  uint64_t x = bits & 0xFFFFu;
  x = (x | (x << 24)) & 0x000000FF000000FFull;
  x = (x | (x << 12)) & 0x000F000F000F000Full;
  x = (x | (x << 6)) & 0x0303030303030303ull;
  x = (x | (x << 3)) & 0x1111111111111111ull;
  return x;
}
#endif

// ---- ISA-independent helpers, written on the interface above ----------------------------------

// n <= width elements from p (a masked load when n < width; the other lanes are zero), and back.
template <class T>
GF_INLINE Vec<T> load_n(const T* p, int64_t n) {
  return n == Vec<T>::width ? Vec<T>::load(p) : Vec<T>::load(p, n);
}
template <class T>
GF_INLINE void store_n(Vec<T> v, T* p, int64_t n) {
  if (n == Vec<T>::width) v.store(p);
  else v.store(p, n);
}
// ... from and to bf16 storage, as float lanes
GF_INLINE Vec<float> load_n(const bf16* p, int64_t n) {
  return n == Vec<float>::width ? Vec<float>::load(p) : Vec<float>::load(p, n);
}
GF_INLINE void store_n(Vec<float> v, bf16* p, int64_t n) {
  if (n == Vec<float>::width) v.store(p);
  else v.store(p, n);
}

// n bf16 values as float32 (exact), and back (rounded to nearest even): the staging of kernels that
// run their float32 code on bf16 arrays block by block.
GF_INLINE void widen_bf16(const bf16* src, float* dst, int64_t n) {
  constexpr int64_t w = Vec<float>::width;
  for (int64_t i = 0; i < n; i += w) {
    const int64_t m = n - i < w ? n - i : w;
    store_n(load_n(src + i, m), dst + i, m);
  }
}
GF_INLINE void narrow_bf16(const float* src, bf16* dst, int64_t n) {
  constexpr int64_t w = Vec<float>::width;
  for (int64_t i = 0; i < n; i += w) {
    const int64_t m = n - i < w ? n - i : w;
    store_n(load_n(src + i, m), dst + i, m);
  }
}

// The upper half of a float vector as doubles (widen_hi); zero on the one-lane scalar path, whose
// single lane widen_lo already covers, so code that sums both halves needs no special case.
template <class V>
GF_INLINE Vec<double> widen_hi_or_zero(V v) {
  if constexpr (V::width == 1) return Vec<double>::broadcast(0.0);
  else return widen_hi(v);
}

// torch.sign: +1 / -1 / 0, and 0 for NaN (numpy's sign would give NaN).
template <class V>
GF_INLINE V sign(V x) {
  using T = typename V::value_type;
  const V zero = V::broadcast(T(0));
  return select(x > zero, V::broadcast(T(1)), select(x < zero, V::broadcast(T(-1)), zero));
}

}  // namespace GF_ISA_NS
}  // namespace gf
