// bf16.hpp: the bfloat16 storage type (the top 16 bits of an IEEE float32), as ml_dtypes.bfloat16
// stores it in NumPy arrays.
//
// Kernels never compute in bf16: they load bf16 into float32 lanes (exact: a shift), compute in
// float32 with float32 (or double) accumulation, and round each result to bf16 once, to nearest
// even. The rounding is ml_dtypes' (so the NumPy twins, which upcast, compute and .astype(bfloat16),
// give the same bits): a NaN keeps its sign and becomes the quiet NaN 0x7FC0; a finite value that
// rounds past the largest bf16 becomes +-inf.
//
// compute_t<T> is the type a kernel's arithmetic runs in: float for bf16, T for float and double.
// The vector loads and stores that convert are in simd.hpp (Vec<float>::load(const bf16*), store).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace gf {

struct bf16 {
  uint16_t bits;
};
static_assert(sizeof(bf16) == 2, "bf16 is the 2-byte storage of ml_dtypes.bfloat16");

inline float bf16_to_float(bf16 x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest, ties to even.
inline bf16 float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return bf16{static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7FC0u)};  // NaN
  return bf16{static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16)};
}

template <class T>
struct compute_type {
  using type = T;
};
template <>
struct compute_type<bf16> {
  using type = float;
};
template <class T>
using compute_t = typename compute_type<T>::type;

template <class T>
constexpr bool is_bf16 = std::is_same_v<T, bf16>;

}  // namespace gf
