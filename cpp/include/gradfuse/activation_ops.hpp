// activation_ops.hpp: the per-span activation math (contract in activation.hpp), shared by the
// activation kernels and the dense layer's fused epilogue. Compiled inside gf::<isa>.
//
// relu, leaky_relu and none run on Vec<T> with masked tails. tanh, sigmoid and the GELUs use
// Eigen's vectorized functions on fixed 64-element chunks; the last partial chunk is copied into
// a padded one, so every element goes through the same packet code (Eigen's own tail loop would
// use the scalar C library functions and make a result depend on where its element falls).
#pragma once

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include "gradfuse/activation.hpp"
#include "gradfuse/simd.hpp"

#ifndef GF_ISA_NS
#error "activation_ops.hpp belongs to the per-ISA kernel translation units"
#endif

namespace gf {
namespace GF_ISA_NS {

constexpr int64_t kActChunk = 64;

template <class T>
using ActChunk = Eigen::Array<T, kActChunk, 1>;

// sigmoid(z), exactly 0 where it underflows: Eigen's logistic clamps z and would return ~1e-38.
template <class T, class E>
GF_INLINE ActChunk<T> sigmoid_chunk(const E& z) {
  const T underflow = sizeof(T) == 4 ? T(-88) : T(-708);
  const ActChunk<T> zz = z;
  return (zz < underflow).select(ActChunk<T>::Zero(), zz.logistic());
}

// exp(z), exactly 0 where it underflows: Eigen's exp clamps z on some ISA paths and would return a
// tiny positive number for z = -inf, so that -inf * exp(-inf) would be -inf there and NaN elsewhere.
template <class T, class E>
GF_INLINE ActChunk<T> exp_chunk(const E& z) {
  const T underflow = sizeof(T) == 4 ? T(-88) : T(-708);
  const ActChunk<T> zz = z;
  return (zz < underflow).select(ActChunk<T>::Zero(), zz.exp());
}

// Applies f(Map<const Chunk> in_0, ..., Map<Chunk> out) to every 64-element chunk of [0, n).
// ins: the input pointers; out: the output (may alias an input).
template <class T, int NIn, class F>
GF_INLINE void for_chunks(const T* const (&ins)[NIn], T* out, int64_t n, F&& f) {
  static_assert(NIn == 1 || NIn == 2, "one or two inputs");
  using Map = Eigen::Map<ActChunk<T>>;
  using CMap = Eigen::Map<const ActChunk<T>>;
  int64_t i = 0;
  for (; i + kActChunk <= n; i += kActChunk) {
    if constexpr (NIn == 1) f(CMap(ins[0] + i), Map(out + i));
    else f(CMap(ins[0] + i), CMap(ins[1] + i), Map(out + i));
  }
  if (i == n) return;
  const int64_t r = n - i;
  ActChunk<T> buf[NIn + 1];
  for (int k = 0; k <= NIn; ++k) buf[k].setZero();
  for (int k = 0; k < NIn; ++k)
    for (int64_t j = 0; j < r; ++j) buf[k][j] = ins[k][i + j];
  if constexpr (NIn == 1) f(CMap(buf[0].data()), Map(buf[NIn].data()));
  else f(CMap(buf[0].data()), CMap(buf[1].data()), Map(buf[NIn].data()));
  for (int64_t j = 0; j < r; ++j) out[i + j] = buf[NIn][j];
}

// Vec<T> loop over [0, n) with a masked tail: f(i, count) handles count <= width elements at i.
template <class T, class F>
GF_INLINE void for_vectors(int64_t n, F&& f) {
  constexpr int64_t W = Vec<T>::width;
  int64_t i = 0;
  for (; i + W <= n; i += W) f(i, W);
  if (i < n) f(i, n - i);
}

// y = act(x + bias) over a span; bias may be null (none); z (if not null) receives x + bias.
// x, z and y may be the same array.
template <class T>
void act_forward_span(Act act, T slope, const T* x, const T* bias, T* z, T* y, int64_t n) {
  using V = Vec<T>;
  if (act == Act::none || act == Act::relu || act == Act::leaky_relu) {
    const V zero = V::broadcast(T(0)), vslope = V::broadcast(slope);
    for_vectors<T>(n, [&](int64_t i, int64_t c) {
      V v = load_n(x + i, c);
      if (bias) v = v + load_n(bias + i, c);
      if (z) store_n(v, z + i, c);
      if (act == Act::relu) v = maximum(v, zero);
      else if (act == Act::leaky_relu) v = select(v > zero, v, v * vslope);
      store_n(v, y + i, c);
    });
    return;
  }
  const T* src = x;
  if (bias || z) {  // x + bias first (into z, or into y), then the activation from there
    T* sum = z ? z : y;
    for_vectors<T>(n, [&](int64_t i, int64_t c) {
      V v = load_n(x + i, c);
      if (bias) v = v + load_n(bias + i, c);
      store_n(v, sum + i, c);
    });
    src = sum;
  }
  const T* ins[1] = {src};
  for_chunks<T, 1>(ins, y, n, [&](auto v, auto out) {
    switch (act) {
      case Act::tanh: out = v.tanh(); break;
      case Act::sigmoid: out = sigmoid_chunk<T>(v); break;
      case Act::gelu: out = T(0.5) * v * (T(1) + (v * T(M_SQRT1_2)).erf()); break;
      case Act::gelu_tanh: {  // x/2 (1 + tanh(u)) = x sigmoid(2u): no cancellation for u << 0
        const T two_beta = T(M_SQRT2 * M_2_SQRTPI), kappa = T(0.044715);
        out = v * sigmoid_chunk<T>(two_beta * (v + kappa * v * v * v));
        break;
      }
      default: break;
    }
  });
}

// dx = dy * act'(.) over a span, from x or y as activation.hpp says; dx may alias dy.
template <class T>
void act_backward_span(Act act, T slope, const T* dy, const T* x, const T* y, T* dx, int64_t n) {
  using V = Vec<T>;
  if (act == Act::none || act == Act::relu || act == Act::leaky_relu) {
    const V zero = V::broadcast(T(0)), vslope = V::broadcast(slope);
    const T* s = x ? x : y;
    for_vectors<T>(n, [&](int64_t i, int64_t c) {
      V g = load_n(dy + i, c);
      if (act == Act::relu) g = select(load_n(s + i, c) > zero, g, zero);
      else if (act == Act::leaky_relu) g = select(load_n(s + i, c) > zero, g, g * vslope);
      store_n(g, dx + i, c);
    });
    return;
  }
  if (act == Act::tanh || act == Act::sigmoid) {
    const T* ins[2] = {dy, y};
    for_chunks<T, 2>(ins, dx, n, [&](auto g, auto out_y, auto out) {
      if (act == Act::tanh) out = g * (T(1) - out_y * out_y);
      else out = g * out_y * (T(1) - out_y);
    });
    return;
  }
  const T* ins[2] = {dy, x};
  for_chunks<T, 2>(ins, dx, n, [&](auto g, auto v, auto out) {
    if (act == Act::gelu) {
      const T beta = T(M_2_SQRTPI * M_SQRT1_2 * 0.5);  // 1 / sqrt(2 pi)
      out = g * (T(0.5) * (T(1) + (v * T(M_SQRT1_2)).erf()) + v * beta * exp_chunk<T>(T(-0.5) * v * v));
    } else {  // gelu_tanh: with s = sigmoid(2u), (1 + tanh u)/2 = s and 1 - tanh^2 u = 4 s sigmoid(-2u)
      const T beta = T(M_SQRT2 * M_2_SQRTPI * 0.5), kappa = T(0.044715);
      const ActChunk<T> u2 = T(2) * beta * (v + kappa * v * v * v);
      const ActChunk<T> s = sigmoid_chunk<T>(u2), s_neg = sigmoid_chunk<T>(-u2);
      out = g * (s + T(2) * v * s * s_neg * beta * (T(1) + T(3) * kappa * v * v));
    }
  });
}

}  // namespace GF_ISA_NS
}  // namespace gf
