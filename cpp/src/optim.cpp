// optim.cpp: the fused optimizer steps, one functor per algorithm with its formula (torch.optim,
// foreach=False) and its state arrays (the kernel table, python/gradfuse/table.py, names them and
// counts their bytes). The contract (one pass, threading, determinism) is in gradfuse/optim.hpp.
// Compiled once per ISA into gf::<isa>. Adding an algorithm: its functor here and one line in
// GF_OPTIM_ALGORITHMS below, a NumPy twin, a row in the kernel table.
//
// Divisions by a per-step scalar (bias corrections) are multiplications by its reciprocal: on
// cache-resident data the vector divider, not memory, is Adam's limit (measured ~10% faster).
//
// Each algorithm is a small struct: its constructor turns the step's scalar arguments into
// broadcast coefficients (in double, then rounded to T, as torch rounds Python scalars), and its
// operator() updates one vector of elements: p and the states in place, g read. Operation order
// mirrors the NumPy twin (python/gradfuse/_numpy/optim.py) exactly and uses no fma, so results are
// bitwise equal across ISA paths, thread counts and the twin.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "gradfuse/clip.hpp"
#include "gradfuse/lanes.hpp"
#include "gradfuse/optim.hpp"
#include "gradfuse/parallel.hpp"
#include "gradfuse/simd.hpp"

namespace gf {
namespace GF_ISA_NS {
namespace {

template <class T>
GF_INLINE Vec<T> bc(double x) {
  return Vec<T>::broadcast(static_cast<T>(x));
}

// g <- g / grad_scale; g <- -g when maximizing. Shared by every algorithm.
template <class T>
struct GradPrologue {
  using V = Vec<T>;
  bool has_scale, maximize;
  V scale;
  explicit GradPrologue(const OptimArgs& a)
      : has_scale(a.has_grad_scale), maximize(a.maximize), scale(bc<T>(a.grad_scale)) {}
  GF_INLINE V operator()(V g) const {
    if (has_scale) g = g / scale;
    if (maximize) g = -g;
    return g;
  }
};

// Weight decay, coupled (g += wd p, L2) or decoupled (p *= 1 - lr wd, AdamW).
template <class T>
struct WeightDecay {
  using V = Vec<T>;
  bool on, decoupled;
  V wd, decay;
  WeightDecay(const OptimArgs& a, bool decoupled_)
      : on(a.weight_decay != 0), decoupled(decoupled_), wd(bc<T>(a.weight_decay)),
        decay(bc<T>(1.0 - a.lr * a.weight_decay)) {}
  GF_INLINE void operator()(V& p, V& g) const {
    if (!on) return;
    if (decoupled) p = p * decay;
    else g = g + wd * p;
  }
};

// Adam's moment estimates: m moves towards g by (1-beta1) (torch's lerp), v = beta2 v + (1-beta2) g^2.
template <class T>
struct Moments {
  using V = Vec<T>;
  V one_minus_beta1, beta2, one_minus_beta2;
  explicit Moments(const OptimArgs& a)
      : one_minus_beta1(bc<T>(1.0 - a.beta1)), beta2(bc<T>(a.beta2)), one_minus_beta2(bc<T>(1.0 - a.beta2)) {}
  GF_INLINE void first(V g, V& m) const { m = m + one_minus_beta1 * (g - m); }
  GF_INLINE void operator()(V g, V& m, V& v) const {
    first(g, m);
    v = v * beta2 + one_minus_beta2 * g * g;
  }
};

// sgd (state: momentum_buffer): g += wd p; b = first ? g : mu b + (1-damp) g;
// g = nesterov ? g + mu b : b; p -= lr g
template <class T>
struct Sgd {
  using V = Vec<T>;
  GradPrologue<T> prep;
  WeightDecay<T> decay;
  bool has_momentum, nesterov, first;
  V lr, mu, damp1;
  explicit Sgd(const OptimArgs& a)
      : prep(a), decay(a, false), has_momentum(a.momentum != 0), nesterov(a.nesterov), first(a.step == 1),
        lr(bc<T>(a.lr)), mu(bc<T>(a.momentum)), damp1(bc<T>(1.0 - a.dampening)) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = prep(g);
    decay(p, g);
    apply(p, g, s);
  }
  // The momentum and the step, from the final gradient (shared with LARS).
  GF_INLINE void apply(V& p, V g, V* s) const {
    if (has_momentum) {
      V& buf = s[0];
      buf = first ? g : buf * mu + damp1 * g;
      g = nesterov ? g + mu * buf : buf;
    }
    p = p - lr * g;
  }
};

// adam (exp_avg, exp_avg_sq, max_exp_avg_sq): decoupled: p *= 1 - lr wd, else g += wd p;
// m += (1-b1)(g-m); v = b2 v + (1-b2) g g; vmax = max(vmax, v) (amsgrad);
// p -= lr/bc1 * m / (sqrt(v or vmax) (1/sqrt(bc2)) + eps)
template <class T>
struct Adam {
  using V = Vec<T>;
  GradPrologue<T> prep;
  WeightDecay<T> decay;
  Moments<T> moments;
  bool amsgrad;
  V neg_step_size, inv_bc2_sqrt, eps;
  explicit Adam(const OptimArgs& a)
      : prep(a), decay(a, a.decoupled_weight_decay), moments(a), amsgrad(a.amsgrad),
        neg_step_size(bc<T>(-(a.lr / (1.0 - std::pow(a.beta1, double(a.step)))))),
        inv_bc2_sqrt(bc<T>(1.0 / std::sqrt(1.0 - std::pow(a.beta2, double(a.step))))), eps(bc<T>(a.eps)) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = prep(g);
    decay(p, g);
    V& m = s[0];
    V& v = s[1];
    moments(g, m, v);
    V second = v;
    if (amsgrad) second = s[2] = maximum(s[2], v);
    p = p + neg_step_size * m / (sqrt(second) * inv_bc2_sqrt + eps);
  }
};

// adagrad (sum): g += wd p; s += g g; p -= clr g / (sqrt(s) + eps), clr = lr / (1 + (step-1) lr_decay)
template <class T>
struct Adagrad {
  using V = Vec<T>;
  GradPrologue<T> prep;
  WeightDecay<T> decay;
  V neg_clr, eps;
  explicit Adagrad(const OptimArgs& a)
      : prep(a), decay(a, false), neg_clr(bc<T>(-(a.lr / (1.0 + double(a.step - 1) * a.lr_decay)))), eps(bc<T>(a.eps)) {
  }
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = prep(g);
    decay(p, g);
    V& sum = s[0];
    sum = sum + g * g;
    p = p + neg_clr * g / (sqrt(sum) + eps);
  }
};

// rmsprop (square_avg, grad_avg, momentum_buffer): g += wd p; a = alpha a + (1-alpha) g g;
// centered: ga += (1-alpha)(g-ga), a' = a - ga^2; d = sqrt(a') + eps; b = mu b + g/d; p -= lr b
// (no momentum: p -= lr g/d)
template <class T>
struct RMSprop {
  using V = Vec<T>;
  GradPrologue<T> prep;
  WeightDecay<T> decay;
  bool centered, has_momentum;
  V alpha, one_minus_alpha, eps, mu, lr, neg_lr;
  explicit RMSprop(const OptimArgs& a)
      : prep(a), decay(a, false), centered(a.centered), has_momentum(a.momentum > 0), alpha(bc<T>(a.alpha)),
        one_minus_alpha(bc<T>(1.0 - a.alpha)), eps(bc<T>(a.eps)), mu(bc<T>(a.momentum)), lr(bc<T>(a.lr)),
        neg_lr(bc<T>(-a.lr)) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = prep(g);
    decay(p, g);
    V& square_avg = s[0];
    square_avg = square_avg * alpha + one_minus_alpha * g * g;
    V avg;
    if (centered) {
      V& grad_avg = s[1];
      grad_avg = grad_avg + one_minus_alpha * (g - grad_avg);
      avg = sqrt(square_avg - grad_avg * grad_avg) + eps;
    } else {
      avg = sqrt(square_avg) + eps;
    }
    if (has_momentum) {
      V& buf = s[2];
      buf = buf * mu + g / avg;
      p = p - lr * buf;
    } else {
      p = p + neg_lr * g / avg;
    }
  }
};

// adadelta (square_avg, acc_delta): g += wd p; a = rho a + (1-rho) g g;
// d = sqrt(u+eps)/sqrt(a+eps) g; u = rho u + (1-rho) d d; p -= lr d
template <class T>
struct Adadelta {
  using V = Vec<T>;
  GradPrologue<T> prep;
  WeightDecay<T> decay;
  V rho, one_minus_rho, eps, lr;
  explicit Adadelta(const OptimArgs& a)
      : prep(a), decay(a, false), rho(bc<T>(a.rho)), one_minus_rho(bc<T>(1.0 - a.rho)), eps(bc<T>(a.eps)),
        lr(bc<T>(a.lr)) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = prep(g);
    decay(p, g);
    V& square_avg = s[0];
    V& acc_delta = s[1];
    square_avg = square_avg * rho + one_minus_rho * g * g;
    V delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g;
    acc_delta = acc_delta * rho + one_minus_rho * delta * delta;
    p = p - lr * delta;
  }
};

// adamax (exp_avg, exp_inf): g += wd p; m += (1-b1)(g-m); u = max(b2 u, |g|+eps); p -= lr/bc1 m/u
template <class T>
struct Adamax {
  using V = Vec<T>;
  GradPrologue<T> prep;
  WeightDecay<T> decay;
  Moments<T> moments;
  V beta2, eps, neg_clr;
  explicit Adamax(const OptimArgs& a)
      : prep(a), decay(a, false), moments(a), beta2(bc<T>(a.beta2)), eps(bc<T>(a.eps)),
        neg_clr(bc<T>(-(a.lr / (1.0 - std::pow(a.beta1, double(a.step)))))) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = prep(g);
    decay(p, g);
    V& m = s[0];
    V& exp_inf = s[1];
    moments.first(g, m);
    exp_inf = maximum(exp_inf * beta2, abs(g) + eps);
    p = p + neg_clr * m / exp_inf;
  }
};

// nadam (exp_avg, exp_avg_sq): (decoupled) wd; m, v as adam; d = sqrt(v (1/bc2)) + eps;
// p += c1 g/d; p += c2 m/d  (from mu_t, mu_{t+1} and mu_product)
template <class T>
struct NAdam {
  using V = Vec<T>;
  GradPrologue<T> prep;
  WeightDecay<T> decay;
  Moments<T> moments;
  V inv_bc2, eps, c_grad, c_avg;
  static double mu_at(const OptimArgs& a, double step) {
    return a.beta1 * (1.0 - 0.5 * std::pow(0.96, step * a.momentum_decay));
  }
  explicit NAdam(const OptimArgs& a)
      : prep(a), decay(a, a.decoupled_weight_decay), moments(a),
        inv_bc2(bc<T>(1.0 / (1.0 - std::pow(a.beta2, double(a.step))))), eps(bc<T>(a.eps)),
        c_grad(bc<T>(-a.lr * (1.0 - mu_at(a, double(a.step))) / (1.0 - a.mu_product))),
        c_avg(bc<T>(-a.lr * mu_at(a, double(a.step + 1)) / (1.0 - a.mu_product * mu_at(a, double(a.step + 1))))) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = prep(g);
    decay(p, g);
    V& m = s[0];
    V& v = s[1];
    moments(g, m, v);
    V denom = sqrt(v * inv_bc2) + eps;
    p = p + c_grad * g / denom;
    p = p + c_avg * m / denom;
  }
};

// radam (exp_avg, exp_avg_sq): (decoupled) wd; m, v as adam; rho_t > 5:
// p -= m (1/bc1) lr sqrt(bc2)/(sqrt(v)+eps) rect, else p -= m (1/bc1) lr
template <class T>
struct RAdam {
  using V = Vec<T>;
  GradPrologue<T> prep;
  WeightDecay<T> decay;
  Moments<T> moments;
  bool rectify;
  V inv_bc1, lr, bc2_sqrt, eps, rect;
  static double rho_t(const OptimArgs& a) {
    const double rho_inf = 2.0 / (1.0 - a.beta2) - 1.0, step = double(a.step);
    return rho_inf - 2.0 * step * std::pow(a.beta2, step) / (1.0 - std::pow(a.beta2, step));
  }
  static double rectification(const OptimArgs& a) {
    const double rho_inf = 2.0 / (1.0 - a.beta2) - 1.0, rt = rho_t(a);
    return std::sqrt((rt - 4.0) * (rt - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rt));
  }
  explicit RAdam(const OptimArgs& a)
      : prep(a), decay(a, a.decoupled_weight_decay), moments(a), rectify(rho_t(a) > 5.0),
        inv_bc1(bc<T>(1.0 / (1.0 - std::pow(a.beta1, double(a.step))))), lr(bc<T>(a.lr)),
        bc2_sqrt(bc<T>(std::sqrt(1.0 - std::pow(a.beta2, double(a.step))))), eps(bc<T>(a.eps)),
        rect(bc<T>(rectify ? rectification(a) : 0.0)) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = prep(g);
    decay(p, g);
    V& m = s[0];
    V& v = s[1];
    moments(g, m, v);
    V update = m * inv_bc1 * lr;
    if (rectify) update = update * (bc2_sqrt / (sqrt(v) + eps)) * rect;
    p = p - update;
  }
};

// rprop (prev, step_size): s = g prev; f = eta+ (s>0), eta- (s<0), 1; step = clamp(step f);
// g = 0 where s<0; p -= sign(g) step; prev = g
template <class T>
struct Rprop {
  using V = Vec<T>;
  GradPrologue<T> prep;
  V etaminus, etaplus, step_min, step_max;
  explicit Rprop(const OptimArgs& a)
      : prep(a), etaminus(bc<T>(a.etaminus)), etaplus(bc<T>(a.etaplus)), step_min(bc<T>(a.step_size_min)),
        step_max(bc<T>(a.step_size_max)) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    const V zero = V::broadcast(T(0)), one = V::broadcast(T(1));
    g = prep(g);
    V& prev = s[0];
    V& step_size = s[1];
    const V agreement = g * prev;  // > 0: same direction, < 0: the sign flipped, NaN acts as 0
    const V factor = select(agreement > zero, etaplus, select(agreement < zero, etaminus, one));
    step_size = minimum(maximum(step_size * factor, step_min), step_max);
    g = select(agreement < zero, zero, g);
    p = p - sign(g) * step_size;
    prev = g;
  }
};

// asgd (ax): g += wd p; p *= 1 - lambd eta; p -= eta g; ax = mu == 1 ? p : ax + (p - ax) mu
// (eta and mu: this step's values, which the optimizer keeps and advances as torch does)
template <class T>
struct Asgd {
  using V = Vec<T>;
  GradPrologue<T> prep;
  WeightDecay<T> decay;
  bool average;
  V shrink, neg_eta, mu;
  explicit Asgd(const OptimArgs& a)
      : prep(a), decay(a, false), average(a.mu != 1), shrink(bc<T>(1.0 - a.lambd * a.eta)), neg_eta(bc<T>(-a.eta)),
        mu(bc<T>(a.mu)) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = prep(g);
    decay(p, g);
    p = p * shrink;
    p = p + neg_eta * g;
    V& ax = s[0];
    ax = average ? ax + (p - ax) * mu : p;
  }
};

// lion (exp_avg): p *= 1-lr wd; p -= lr sign(b1 m + (1-b1) g); m = b2 m + (1-b2) g
template <class T>
struct Lion {
  using V = Vec<T>;
  GradPrologue<T> prep;
  WeightDecay<T> decay;
  V beta1, one_minus_beta1, beta2, one_minus_beta2, lr;
  explicit Lion(const OptimArgs& a)
      : prep(a), decay(a, true), beta1(bc<T>(a.beta1)), one_minus_beta1(bc<T>(1.0 - a.beta1)), beta2(bc<T>(a.beta2)),
        one_minus_beta2(bc<T>(1.0 - a.beta2)), lr(bc<T>(a.lr)) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = prep(g);
    V& m = s[0];
    decay(p, g);
    p = p - lr * sign(m * beta1 + one_minus_beta1 * g);
    m = m * beta2 + one_minus_beta2 * g;
  }
};

// Schedule-free (Defazio et al. 2024; the schedulefree package 1.4.1). p holds y, where gradients
// are taken; state z is the base sequence; x, the average to evaluate with, is never stored (the
// optimizer's eval() moves p from y to x). With d the step direction and c the averaging weight:
// y = lerp(y, z, c) + lr (beta1 (1 - c) - 1) d; z -= lr d. lerp as torch's: from the nearer end.
template <class T>
struct ScheduleFreeUpdate {
  using V = Vec<T>;
  bool from_z;
  V weight, one_minus_weight, y_coef, lr;
  ScheduleFreeUpdate(const OptimArgs& a, double beta1)
      : from_z(std::abs(a.average_weight) >= 0.5), weight(bc<T>(a.average_weight)),
        one_minus_weight(bc<T>(1.0 - a.average_weight)), y_coef(bc<T>(a.lr * (beta1 * (1.0 - a.average_weight) - 1.0))),
        lr(bc<T>(a.lr)) {}
  GF_INLINE void operator()(V& y, V& z, V d) const {
    y = from_z ? z - (z - y) * one_minus_weight : y + weight * (z - y);
    y = y + y_coef * d;
    z = z - lr * d;
  }
};

// sgd_schedulefree (z): g += wd y; then the schedule-free update with d = g, beta1 = momentum
template <class T>
struct SgdScheduleFree {
  using V = Vec<T>;
  GradPrologue<T> prep;
  WeightDecay<T> decay;
  ScheduleFreeUpdate<T> sf;
  explicit SgdScheduleFree(const OptimArgs& a) : prep(a), decay(a, false), sf(a, a.momentum) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = prep(g);
    decay(p, g);
    sf(p, s[0], g);
  }
};

// adamw_schedulefree (z, exp_avg_sq): v = b2 v + (1-b2) g g; d = g / (sqrt(v (1/bc2)) + eps);
// d += wd y; then the schedule-free update with beta1
template <class T>
struct AdamWScheduleFree {
  using V = Vec<T>;
  GradPrologue<T> prep;
  WeightDecay<T> decay;
  ScheduleFreeUpdate<T> sf;
  V beta2, one_minus_beta2, inv_bc2, eps;
  explicit AdamWScheduleFree(const OptimArgs& a)
      : prep(a), decay(a, false), sf(a, a.beta1), beta2(bc<T>(a.beta2)), one_minus_beta2(bc<T>(1.0 - a.beta2)),
        inv_bc2(bc<T>(1.0 / (1.0 - std::pow(a.beta2, double(a.step))))), eps(bc<T>(a.eps)) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = prep(g);
    V& v = s[1];
    v = v * beta2 + one_minus_beta2 * g * g;
    V d = g / (sqrt(v * inv_bc2) + eps);
    decay(p, d);
    sf(p, s[0], d);
  }
};

// LAMB (You et al. 2019, as timm's Lamb; exp_avg, exp_avg_sq): g /= grad_scale (timm's global
// clip); m = lerp(m, g, 1-b1) (grad_averaging) else b1 m + g; v = b2 v + (1-b2) g g;
// u = m (1/bc1) / (sqrt(v) (1/sqrt(bc2)) + eps) + wd p; p -= lr trust u, with per tensor
// trust = ||p|| / ||u|| when both > 0, else 1 (min(trust, 1) with trust_clip), when wd != 0 or
// always_adapt, else 1. LambDirection holds the math; the passes are in run_lamb.
template <class T>
struct LambDirection {
  using V = Vec<T>;
  GradPrologue<T> prep;
  Moments<T> moments;
  bool averaging, decay;
  V beta1, beta2, one_minus_beta2, inv_bc1, inv_bc2_sqrt, eps, wd;
  static double correction(bool on, double beta, int64_t step) { return on ? 1.0 - std::pow(beta, double(step)) : 1.0; }
  explicit LambDirection(const OptimArgs& a)
      : prep(a), moments(a), averaging(a.grad_averaging), decay(a.weight_decay != 0), beta1(bc<T>(a.beta1)),
        beta2(bc<T>(a.beta2)), one_minus_beta2(bc<T>(1.0 - a.beta2)),
        inv_bc1(bc<T>(1.0 / correction(a.bias_correction, a.beta1, a.step))),
        inv_bc2_sqrt(bc<T>(1.0 / std::sqrt(correction(a.bias_correction, a.beta2, a.step)))), eps(bc<T>(a.eps)),
        wd(bc<T>(a.weight_decay)) {}
  GF_INLINE void update_moments(V g, V& m, V& v) const {
    g = prep(g);
    if (averaging) {
      moments(g, m, v);
    } else {
      m = m * beta1 + g;
      v = v * beta2 + one_minus_beta2 * g * g;
    }
  }
  GF_INLINE V direction(V p, V m, V v) const {
    V u = m * inv_bc1 / (sqrt(v) * inv_bc2_sqrt + eps);
    if (decay) u = u + wd * p;
    return u;
  }
};

// lamb without adaptation (wd == 0 and not always_adapt): one pass, p -= lr u.
template <class T>
struct Lamb {
  using V = Vec<T>;
  LambDirection<T> dir;
  V neg_lr;
  explicit Lamb(const OptimArgs& a) : dir(a), neg_lr(bc<T>(-a.lr)) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    dir.update_moments(g, s[0], s[1]);
    p = p + neg_lr * dir.direction(p, s[0], s[1]);
  }
};

// lamb's second pass: p += -(lr trust) u from the updated moments (u recomputed: the same
// operations give the same u as the first pass, and reading m, v costs what storing u would).
// run() hands each segment (one tensor) its coefficient through at_segment.
template <class T>
struct LambApply {
  using V = Vec<T>;
  LambDirection<T> dir;
  const double* neg_step = nullptr;  // -(lr trust) per segment
  V coef;
  LambApply(const OptimArgs& a, const double* neg_step_) : dir(a), neg_step(neg_step_), coef(bc<T>(0.0)) {}
  GF_INLINE void operator()(V& p, V, V* s) const { p = p + coef * dir.direction(p, s[0], s[1]); }
};

// LARS (You et al. 2017, as timm's Lars; momentum_buffer): when weight_decay != 0 or always_adapt,
// g = (g + wd p) trust with per tensor trust = trust_coeff ||p|| / (||g|| + wd ||p|| + eps) when
// both norms > 0, else 1 (trust_clip: min(trust / lr, 1)); then SGD's momentum and step. The norms
// come first (run_lars: a reduction pass, p and g read), then this functor with the tensor's trust.
template <class T>
struct Lars {
  using V = Vec<T>;
  Sgd<T> sgd;
  bool adapt;
  V wd, trust;
  const double* trusts = nullptr;  // per segment
  explicit Lars(const OptimArgs& a, const double* trusts_ = nullptr)
      : sgd(a), adapt(a.weight_decay != 0 || a.always_adapt), wd(bc<T>(a.weight_decay)), trust(bc<T>(1.0)),
        trusts(trusts_) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    g = sgd.prep(g);
    if (adapt) g = (g + wd * p) * trust;
    sgd.apply(p, g, s);
  }
};

// The functor that updates segment k: the same one, but for a per-tensor coefficient.
template <class Op>
GF_INLINE const Op& at_segment(const Op& op, int64_t, Op&) {
  return op;
}
template <class T>
GF_INLINE const LambApply<T>& at_segment(const LambApply<T>& op, int64_t k, LambApply<T>& scratch) {
  scratch = op;
  scratch.coef = bc<T>(op.neg_step[k]);
  return scratch;
}
template <class T>
GF_INLINE const Lars<T>& at_segment(const Lars<T>& op, int64_t k, Lars<T>& scratch) {
  scratch = op;
  scratch.trust = bc<T>(op.trusts[k]);
  return scratch;
}

// Reads and writes what a step with the same arrays would, with no math to speak of.
template <class T>
struct Touch {
  using V = Vec<T>;
  explicit Touch(const OptimArgs&) {}
  GF_INLINE void operator()(V& p, V g, V* s) const {
    const V zero = V::broadcast(T(0)), dg = g * zero;
    p = p + dg;
    for (int k = 0; k < kMaxStates; ++k) s[k] = s[k] + dg;
  }
};

// One vector (or a masked tail of n < width elements) through an update rule. kCopy: the updated
// parameters are also stored, rounded to nearest even, into the bf16 copy c (float32 only: the
// bindings refuse copies beside float64). The one place where a compute copy is written.
template <bool kCopy, class T, class Op>
GF_INLINE void update(const Op& op, T* p, const T* g, T* const* st, bf16* c, int64_t i, int64_t n) {
  using V = Vec<T>;
  const bool full = n == V::width;
  V vp = full ? V::load(p + i) : V::load(p + i, n);
  const V vg = full ? V::load(g + i) : V::load(g + i, n);
  V vs[kMaxStates] = {V::broadcast(T(0)), V::broadcast(T(0)), V::broadcast(T(0))};
  for (int k = 0; k < kMaxStates; ++k)
    if (st[k]) vs[k] = full ? V::load(st[k] + i) : V::load(st[k] + i, n);
  op(vp, vg, vs);
  if (full) vp.store(p + i);
  else vp.store(p + i, n);
  if constexpr (kCopy && std::is_same_v<T, float>) {
    if (full) vp.store(c + i);
    else vp.store(c + i, n);
  }
  for (int k = 0; k < kMaxStates; ++k)
    if (st[k]) {
      if (full) vs[k].store(st[k] + i);
      else vs[k].store(st[k] + i, n);
    }
}

template <bool kCopy, class T, class Op>
void run(const Op& op, const Segments<T>& s, int threads) {
  constexpr int64_t W = Vec<T>::width;
  parallel_for(s.size(), threads, kGrain, [&](int64_t lo, int64_t hi) {
    Op scratch = op;
    for_each_piece(s, lo, hi, [&](int64_t k, int64_t off, int64_t len) {
      const Op& seg_op = at_segment(op, k, scratch);
      T* p = s.list[0][k] + off;
      const T* g = s.list[1][k] + off;
      bf16* c = kCopy ? s.copy[k] + off : nullptr;
      T* st[kMaxStates];
      for (int j = 0; j < kMaxStates; ++j) st[j] = s.list[2 + j] ? s.list[2 + j][k] + off : nullptr;
      int64_t i = 0;
      for (; i + W <= len; i += W) update<kCopy>(seg_op, p, g, st, c, i, W);
      if (i < len) update<kCopy>(seg_op, p, g, st, c, i, len - i);
    });
  });
}

template <class T, template <class> class Op>
void run_algorithm(const OptimArgs& args, const Segments<T>& s, int threads) {
  if (s.copy) run<true>(Op<T>(args), s, threads);
  else run<false>(Op<T>(args), s, threads);
}

// LAMB with adaptation, two passes over one segment per tensor (optim_per_tensor):
// 1. per block of kClipBlock elements of a tensor: update m and v, and add p^2 and u^2 into the
//    16 double lanes of the norms (lanes.hpp; the clip kernels' layout, so the NumPy twin
//    follows it bitwise); the blocks' sums are added in block order per tensor, for any thread count.
// 2. trust ratio per tensor, then p -= lr trust u (LambApply, through run: p, m, v read, p written).
// Bytes per element: 24 + 16 (float32).
template <class T>
void run_lamb(const OptimArgs& a, const Segments<T>& s, int threads) {
  using V = Vec<T>;
  constexpr int64_t W = V::width;
  static_assert(kLanes % W == 0, "a lane group is whole vectors");
  if (!(a.weight_decay != 0 || a.always_adapt)) return run_algorithm<T, Lamb>(a, s, threads);
  const LambDirection<T> dir(a);
  struct Block {
    int64_t seg, begin, len;
  };
  std::vector<Block> blocks;
  for (int64_t k = 0; k < s.count; ++k)
    for (int64_t b = 0, n = s.offset[k + 1] - s.offset[k]; b < n; b += kClipBlock)
      blocks.push_back({k, b, std::min(kClipBlock, n - b)});
  std::vector<double> p_sq(blocks.size()), u_sq(blocks.size());
  const int useful = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, s.size() / kGrain)));
  parallel_blocks(static_cast<int64_t>(blocks.size()), useful, [&](int64_t b) {
    const Block& blk = blocks[static_cast<size_t>(b)];
    T* p = s.list[0][blk.seg] + blk.begin;
    const T* g = s.list[1][blk.seg] + blk.begin;
    T* m = s.list[2][blk.seg] + blk.begin;
    T* v = s.list[3][blk.seg] + blk.begin;
    Lanes16 p_lanes, u_lanes;
    alignas(64) T p_group[kLanes], u_group[kLanes];
    for (int64_t i = 0; i < blk.len; i += kLanes) {
      const int64_t group = std::min<int64_t>(kLanes, blk.len - i);
      if (group == kLanes) {  // whole vectors: summed from the registers
        for (int64_t j = 0; j < kLanes; j += W) {
          const int64_t at = i + j;
          V vm = V::load(m + at), vv = V::load(v + at);
          const V vp = V::load(p + at);
          dir.update_moments(V::load(g + at), vm, vv);
          vm.store(m + at);
          vv.store(v + at);
          p_lanes.add_vec<true>(vp, static_cast<int>(j / W));
          u_lanes.add_vec<true>(dir.direction(vp, vm, vv), static_cast<int>(j / W));
        }
        continue;
      }
      // A block's short last group: masked, through a buffer (lanes past the end are not added).
      for (int64_t j = 0; j < group; j += W) {
        const int64_t n = std::min<int64_t>(W, group - j), at = i + j;
        V vm = load_n(m + at, n), vv = load_n(v + at, n);
        const V vp = load_n(p + at, n);
        dir.update_moments(load_n(g + at, n), vm, vv);
        store_n(vm, m + at, n);
        store_n(vv, v + at, n);
        vp.store(p_group + j);
        dir.direction(vp, vm, vv).store(u_group + j);
      }
      p_lanes.add<true>(p_group, group);
      u_lanes.add<true>(u_group, group);
    }
    p_sq[static_cast<size_t>(b)] = p_lanes.sum();
    u_sq[static_cast<size_t>(b)] = u_lanes.sum();
  });
  std::vector<double> neg_step(static_cast<size_t>(s.count));
  size_t b = 0;
  for (int64_t k = 0; k < s.count; ++k) {
    double p2 = 0, u2 = 0;
    for (; b < blocks.size() && blocks[b].seg == k; ++b) p2 += p_sq[b], u2 += u_sq[b];
    const double w_norm = std::sqrt(p2), u_norm = std::sqrt(u2);
    double trust = w_norm > 0 ? (u_norm > 0 ? w_norm / u_norm : 1.0) : 1.0;
    if (a.trust_clip) trust = std::min(trust, 1.0);
    neg_step[static_cast<size_t>(k)] = -(a.lr * trust);
  }
  // The second pass reads no gradient: its gradient list is the parameters (the same cache lines).
  Segments<T> apply = s;
  apply.list[1] = s.list[0];
  const LambApply<T> op(a, neg_step.data());
  if (s.copy) run<true>(op, apply, threads);
  else run<false>(op, apply, threads);
}

// LARS: per block of a tensor, the sums of squares of p and g in the lanes (read only), each
// tensor's trust ratio, then one element-wise pass (Lars) with it. Bytes: 8 + 20 (float32, momentum).
// ||g|| is the raw gradients' norm divided by grad_scale (in double).
template <class T>
void run_lars(const OptimArgs& a, const Segments<T>& s, int threads) {
  std::vector<double> trusts(static_cast<size_t>(s.count), 1.0);
  if (a.weight_decay != 0 || a.always_adapt) {
    struct Block {
      int64_t seg, begin, len;
    };
    std::vector<Block> blocks;
    for (int64_t k = 0; k < s.count; ++k)
      for (int64_t b = 0, n = s.offset[k + 1] - s.offset[k]; b < n; b += kClipBlock)
        blocks.push_back({k, b, std::min(kClipBlock, n - b)});
    std::vector<double> p_sq(blocks.size()), g_sq(blocks.size());
    const int useful = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, s.size() / kGrain)));
    parallel_blocks(static_cast<int64_t>(blocks.size()), useful, [&](int64_t b) {
      const Block& blk = blocks[static_cast<size_t>(b)];
      const T* p = s.list[0][blk.seg] + blk.begin;
      const T* g = s.list[1][blk.seg] + blk.begin;
      Lanes16 p_lanes, g_lanes;
      for (int64_t i = 0; i < blk.len; i += kLanes) {
        const int64_t n = std::min<int64_t>(kLanes, blk.len - i);
        p_lanes.add<true>(p + i, n);
        g_lanes.add<true>(g + i, n);
      }
      p_sq[static_cast<size_t>(b)] = p_lanes.sum();
      g_sq[static_cast<size_t>(b)] = g_lanes.sum();
    });
    size_t b = 0;
    for (int64_t k = 0; k < s.count; ++k) {
      double p2 = 0, g2 = 0;
      for (; b < blocks.size() && blocks[b].seg == k; ++b) p2 += p_sq[b], g2 += g_sq[b];
      const double w = std::sqrt(p2), g = a.has_grad_scale ? std::sqrt(g2) / a.grad_scale : std::sqrt(g2);
      double trust = w > 0 && g > 0 ? a.trust_coeff * w / (g + w * a.weight_decay + a.eps) : 1.0;
      if (a.trust_clip) trust = std::min(trust / a.lr, 1.0);
      trusts[static_cast<size_t>(k)] = trust;
    }
  }
  const Lars<T> op(a, trusts.data());
  if (s.copy) run<true>(op, s, threads);
  else run<false>(op, s, threads);
}

// The algorithms optim_step knows: the kernel table's name and the functor. _touch reads and
// writes what a step with the same arrays would, with no math: the benchmark's ceiling.
// clang-format off (a list: one algorithm per line)
#define GF_OPTIM_ALGORITHMS(X)             \
  X(sgd, Sgd)                              \
  X(adam, Adam)                            \
  X(adagrad, Adagrad)                      \
  X(rmsprop, RMSprop)                      \
  X(adadelta, Adadelta)                    \
  X(adamax, Adamax)                        \
  X(nadam, NAdam)                          \
  X(radam, RAdam)                          \
  X(rprop, Rprop)                          \
  X(lion, Lion)                            \
  X(asgd, Asgd)                            \
  X(sgd_schedulefree, SgdScheduleFree)     \
  X(adamw_schedulefree, AdamWScheduleFree) \
  X(lamb, Lamb)                            \
  X(lars, Lars)                            \
  X(_touch, Touch)
// clang-format on

}  // namespace

const char* const* optim_algorithms(int* count) {
#define GF_NAME(name, Op) #name,
  static const char* const kNames[] = {GF_OPTIM_ALGORITHMS(GF_NAME)};
#undef GF_NAME
  *count = static_cast<int>(sizeof(kNames) / sizeof(kNames[0]));
  return kNames;
}

// The index of an algorithm by name (-1: none).
static int algorithm_index(const char* name) {
  int count = 0;
  const char* const* names = optim_algorithms(&count);
  for (int i = 0; i < count; ++i)
    if (std::string(names[i]) == name) return i;
  return -1;
}

bool optim_per_tensor(int algorithm) {
  static const int lamb = algorithm_index("lamb"), lars = algorithm_index("lars");
  return algorithm == lamb || algorithm == lars;
}

template <class T>
bool all_finite(const Segments<T>& s, int list, const OptimArgs& args, int threads) {
  using C = compute_t<T>;  // bf16 arrays: read into float32 lanes (exact), divided in float32
  using V = Vec<C>;
  constexpr int64_t W = V::width;
  const GradPrologue<C> prep(args);
  int found = 0;  // set by any thread that sees NaN/Inf: an OR, so the order cannot matter
  parallel_for(s.size(), threads, kGrain, [&](int64_t lo, int64_t hi) {
    const V zero = V::broadcast(C(0));
    V acc = zero;  // x * 0 is NaN exactly when x is NaN or +-Inf
    for_each_piece(s, lo, hi, [&](int64_t k, int64_t off, int64_t len) {
      const T* g = s.list[list][k] + off;
      int64_t i = 0;
      for (; i + W <= len; i += W) acc = acc + prep(V::load(g + i)) * zero;
      if (i < len) acc = acc + prep(V::load(g + i, len - i)) * zero;
    });
    if (any(isnan(acc))) __atomic_store_n(&found, 1, __ATOMIC_RELAXED);
  });
  return found == 0;
}

template <class T>
bool optim_step(int algorithm, const OptimArgs& args, const Segments<T>& s, bool skip_nonfinite, int threads) {
  using Run = void (*)(const OptimArgs&, const Segments<T>&, int);
#define GF_RUN(name, Op) &run_algorithm<T, Op>,
  static constexpr Run kRun[] = {GF_OPTIM_ALGORITHMS(GF_RUN)};
#undef GF_RUN
  static const int lamb = algorithm_index("lamb"), lars = algorithm_index("lars");
  if (s.count == 0) return true;
  if (skip_nonfinite && !all_finite(s, 1, args, threads)) return false;
  if (algorithm == lamb) run_lamb(args, s, threads);  // two passes, per-tensor norms
  else if (algorithm == lars) run_lars(args, s, threads);
  else kRun[algorithm](args, s, threads);
  return true;
}

template bool optim_step<float>(int, const OptimArgs&, const Segments<float>&, bool, int);
template bool optim_step<double>(int, const OptimArgs&, const Segments<double>&, bool, int);
template bool all_finite<float>(const Segments<float>&, int, const OptimArgs&, int);
template bool all_finite<double>(const Segments<double>&, int, const OptimArgs&, int);
template bool all_finite<bf16>(const Segments<bf16>&, int, const OptimArgs&, int);

}  // namespace GF_ISA_NS
}  // namespace gf
