// philox.hpp: the Philox4x32-10 counter-based random number generator (Salmon, Moraes, Dror, Shaw,
// "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the Random123 library).
//
// A bijection of a 128-bit counter (c0, c1, c2, c3) under a 64-bit key (k0, k1): ten rounds of
//
//   (hi0, lo0) = M0 * c0,  (hi1, lo1) = M1 * c2        (full 32x32 -> 64-bit products)
//   (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
//   (k0, k1) += (W0, W1)                                (mod 2^32; the key used by the next round)
//
// with M0 = 0xD2511F53, M1 = 0xCD9E8D57, W0 = 0x9E3779B9, W1 = 0xBB67AE85. The four output words
// are independent uniform uint32s; any counter gives its output with no state, so a stream can be
// cut anywhere (threads, SIMD lanes) and reproduce bit for bit. Random123's known-answer vectors
// are checked at compile time below (philox4x32_10_ref) and at run time by tests/test_dropout.py
// (the vector code on every ISA path, through gradfuse._core.philox4x32_10).
//
// Two forms, identical results: philox4x32_10_ref, a plain constexpr scalar reference, and
// philox4x32_10 on U32 lanes (simd.hpp): lane l of (c0..c3) is one counter; the key is the same for
// every lane (PhiloxKeys holds its ten round values, broadcast once).
//
// Compiled inside gf::<isa> like the kernels (no inline function here is shared between TUs built
// with different instruction sets).
#pragma once

#include <cstdint>

#include "gradfuse/simd.hpp"

namespace gf {
namespace GF_ISA_NS {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;  // round multipliers
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;  // Weyl key increments
constexpr int kPhiloxRounds = 10;

struct Philox4 {
  uint32_t v[4];
  constexpr bool operator==(const Philox4& o) const {
    return v[0] == o.v[0] && v[1] == o.v[1] && v[2] == o.v[2] && v[3] == o.v[3];
  }
};

// The scalar reference: Philox4x32-10 of one counter.
constexpr Philox4 philox4x32_10_ref(Philox4 c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < kPhiloxRounds; ++r) {
    const uint64_t p0 = uint64_t{kPhiloxM0} * c.v[0], p1 = uint64_t{kPhiloxM1} * c.v[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c = Philox4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return c;
}

// Random123's tests/kat_vectors, the three "philox4x32 10" lines (counter, key -> output).
static_assert(philox4x32_10_ref(Philox4{{0, 0, 0, 0}}, 0, 0) ==
                  Philox4{{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
              "Philox4x32-10 known answer (zeros)");
static_assert(philox4x32_10_ref(Philox4{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu,
                                0xffffffffu) == Philox4{{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
              "Philox4x32-10 known answer (all ones)");
static_assert(philox4x32_10_ref(Philox4{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u,
                                0x299f31d0u) == Philox4{{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
              "Philox4x32-10 known answer (pi digits)");

// The key of each round, broadcast to every lane once per kernel call (not once per counter).
struct PhiloxKeys {
  U32 k0[kPhiloxRounds], k1[kPhiloxRounds];
  PhiloxKeys(uint32_t key0, uint32_t key1) {
    for (int r = 0; r < kPhiloxRounds; ++r) {
      k0[r] = U32::broadcast(key0);
      k1[r] = U32::broadcast(key1);
      key0 += kPhiloxW0;
      key1 += kPhiloxW1;
    }
  }
};

// Philox4x32-10 of U32::width counters at once, in place: lane l of (c0, c1, c2, c3) is a counter
// on entry and its four output words on return.
GF_INLINE void philox4x32_10(U32& c0, U32& c1, U32& c2, U32& c3, const PhiloxKeys& key) {
  for (int r = 0; r < kPhiloxRounds; ++r) {
    U32 hi0, lo0, hi1, lo1;
    mulhilo(c0, kPhiloxM0, hi0, lo0);
    mulhilo(c2, kPhiloxM1, hi1, lo1);
    c0 = hi1 ^ c1 ^ key.k0[r];
    c1 = lo1;
    c2 = hi0 ^ c3 ^ key.k1[r];
    c3 = lo0;
  }
}

}  // namespace GF_ISA_NS
}  // namespace gf
