"""NumPy twins of the fused optimizer kernels (cpp/src/optim.cpp).

The math only: gf.ops checks every argument against the kernel table first (gradfuse.table,
gradfuse._checks), then step() runs the call. Each algorithm is written as its C++ functor is: a
function of the call's scalars (`a`, checked and converted) that computes the per-step
coefficients once and returns the update of one tensor, which takes a parameter, its gradient
after the common prologue (divided by grad_scale, negated when maximizing) and its state arrays in
the table's order (None where the call does not use one), and updates them in place.

The math follows torch.optim (foreach=False); the operation order is the C++ kernels' own (a
division by a per-step scalar is a multiplication by its reciprocal, as there), and every
operation is a correctly rounded IEEE one, so a twin gives bitwise the C++ result. Python floats
are rounded to the arrays' dtype as they meet them (NumPy's promotion rules), as torch and the C++
kernels do.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from ._common import quiet, torch_sign
from .clip import _norm_of_segments


def _grad(g: np.ndarray, scale: float | None, maximize: bool) -> np.ndarray:
    """The common prologue: unscale, then flip the sign when maximizing."""
    if scale is not None:
        g = g / scale
    if maximize:
        g = -g
    return g


def _finite(grads, scale) -> bool:
    return all(np.isfinite(g if scale is None else g / scale).all() for g in grads)


@quiet
def step(row, args: dict) -> bool:
    """One multi-tensor call of optimizer `row` with checked arguments (lists of arrays, converted
    scalars): False, writing nothing, when skip_nonfinite finds NaN/Inf in the scaled gradients.
    Then each bf16 compute copy (if given) becomes its updated parameter, rounded once."""
    a = SimpleNamespace(**{s.name: args[s.name] for s in row.scalars})
    params, grads, copies = args["params"], args["grads"], args.get("copies")
    if a.skip_nonfinite and not _finite(grads, a.grad_scale):
        return False
    states = [args[s.name] for s in row.states]
    update = UPDATES[row.name](a)
    raw = getattr(update, "wants_raw_grad", False)  # lars: its norm is of the gradient as given
    for i, (p, g) in enumerate(zip(params, grads)):
        extra = {"raw": g} if raw else {}
        update(p, _grad(g, a.grad_scale, a.maximize), *[None if s is None else s[i] for s in states], **extra)
        if copies is not None:
            copies[i][...] = p.astype(copies[i].dtype)  # ml_dtypes: round to nearest even
    return True


@quiet
def all_finite(arrays, grad_scale):
    """True when every element of every array (divided by grad_scale, if given) is finite."""
    return _finite(arrays, grad_scale)


def _weight_decay(p, g, lr, weight_decay, decoupled):
    """Decoupled (AdamW: p *= 1 - lr*wd) or coupled (L2: g += wd*p). Returns the new g."""
    if weight_decay != 0:
        if decoupled:
            p *= 1.0 - lr * weight_decay
        else:
            g = g + weight_decay * p
    return g


def _moments(a, g, m, v) -> None:
    """Adam's moments: m moves towards g by (1 - beta1) (torch's lerp), v = beta2 v + (1 - beta2) g^2."""
    m += (1.0 - a.beta1) * (g - m)
    v[...] = v * a.beta2 + (1.0 - a.beta2) * g * g


def sgd(a):
    def update(p, g, momentum_buffer):
        g = _weight_decay(p, g, a.lr, a.weight_decay, False)
        if a.momentum != 0:
            buf = momentum_buffer
            buf[...] = g if a.step == 1 else buf * a.momentum + (1.0 - a.dampening) * g
            g = g + a.momentum * buf if a.nesterov else buf
        p -= a.lr * g

    return update


def adam(a):
    step_size = a.lr / (1.0 - a.beta1**a.step)
    inv_bias_correction2_sqrt = 1.0 / math.sqrt(1.0 - a.beta2**a.step)

    def update(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq):
        g = _weight_decay(p, g, a.lr, a.weight_decay, a.decoupled_weight_decay)
        _moments(a, g, exp_avg, exp_avg_sq)
        second = exp_avg_sq
        if a.amsgrad:
            np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            second = max_exp_avg_sq
        p += -step_size * exp_avg / (np.sqrt(second) * inv_bias_correction2_sqrt + a.eps)

    return update


def adagrad(a):
    clr = a.lr / (1.0 + (a.step - 1) * a.lr_decay)

    def update(p, g, state_sum):
        g = _weight_decay(p, g, a.lr, a.weight_decay, False)
        state_sum += g * g
        p += -clr * g / (np.sqrt(state_sum) + a.eps)

    return update


def rmsprop(a):
    def update(p, g, square_avg, grad_avg, momentum_buffer):
        g = _weight_decay(p, g, a.lr, a.weight_decay, False)
        square_avg[...] = square_avg * a.alpha + (1.0 - a.alpha) * g * g
        if a.centered:
            grad_avg += (1.0 - a.alpha) * (g - grad_avg)
            avg = np.sqrt(square_avg - grad_avg * grad_avg) + a.eps
        else:
            avg = np.sqrt(square_avg) + a.eps
        if a.momentum > 0:
            momentum_buffer[...] = momentum_buffer * a.momentum + g / avg
            p -= a.lr * momentum_buffer
        else:
            p += -a.lr * g / avg

    return update


def adadelta(a):
    def update(p, g, square_avg, acc_delta):
        g = _weight_decay(p, g, a.lr, a.weight_decay, False)
        square_avg[...] = square_avg * a.rho + (1.0 - a.rho) * g * g
        delta = np.sqrt(acc_delta + a.eps) / np.sqrt(square_avg + a.eps) * g
        acc_delta[...] = acc_delta * a.rho + (1.0 - a.rho) * delta * delta
        p -= a.lr * delta

    return update


def adamax(a):
    clr = a.lr / (1.0 - a.beta1**a.step)

    def update(p, g, exp_avg, exp_inf):
        g = _weight_decay(p, g, a.lr, a.weight_decay, False)
        exp_avg += (1.0 - a.beta1) * (g - exp_avg)
        np.maximum(exp_inf * a.beta2, np.abs(g) + a.eps, out=exp_inf)
        p += -clr * exp_avg / exp_inf

    return update


def nadam_mu(beta1: float, momentum_decay: float, step: int) -> float:
    """NAdam's momentum coefficient mu_step (torch.optim.NAdam)."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


def nadam(a):
    inv_bias_correction2 = 1.0 / (1.0 - a.beta2**a.step)
    mu = nadam_mu(a.beta1, a.momentum_decay, a.step)
    mu_next = nadam_mu(a.beta1, a.momentum_decay, a.step + 1)
    coef_grad = -a.lr * (1.0 - mu) / (1.0 - a.mu_product)
    coef_avg = -a.lr * mu_next / (1.0 - a.mu_product * mu_next)

    def update(p, g, exp_avg, exp_avg_sq):
        g = _weight_decay(p, g, a.lr, a.weight_decay, a.decoupled_weight_decay)
        _moments(a, g, exp_avg, exp_avg_sq)
        denom = np.sqrt(exp_avg_sq * inv_bias_correction2) + a.eps
        p += coef_grad * g / denom
        p += coef_avg * exp_avg / denom

    return update


def radam_rho(beta2: float, step: int) -> tuple[float, float]:
    """RAdam's rho_inf and rho_t (the length of the approximated SMA; > 5 means rectified)."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    return rho_inf, rho_inf - 2.0 * step * beta2**step / (1.0 - beta2**step)


def radam(a):
    inv_bias_correction1 = 1.0 / (1.0 - a.beta1**a.step)
    bias_correction2_sqrt = math.sqrt(1.0 - a.beta2**a.step)
    rho_inf, rho_t = radam_rho(a.beta2, a.step)
    rect = None
    if rho_t > 5.0:
        rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))

    def update(p, g, exp_avg, exp_avg_sq):
        g = _weight_decay(p, g, a.lr, a.weight_decay, a.decoupled_weight_decay)
        _moments(a, g, exp_avg, exp_avg_sq)
        step = exp_avg * inv_bias_correction1 * a.lr
        if rect is not None:
            step = step * (bias_correction2_sqrt / (np.sqrt(exp_avg_sq) + a.eps)) * rect
        p -= step

    return update


def rprop(a):
    def update(p, g, prev, step_size):
        agreement = g * prev  # > 0: same direction; < 0: the sign flipped; NaN acts as 0 (torch.sign)
        one = np.ones((), g.dtype)
        factor = np.where(
            agreement > 0, g.dtype.type(a.etaplus), np.where(agreement < 0, g.dtype.type(a.etaminus), one)
        )
        np.minimum(np.maximum(step_size * factor, a.step_size_min), a.step_size_max, out=step_size)
        g = np.where(agreement < 0, g.dtype.type(0), g)
        p -= torch_sign(g) * step_size
        prev[...] = g

    return update


def lion(a):
    def update(p, g, exp_avg):
        _weight_decay(p, g, a.lr, a.weight_decay, True)
        p -= a.lr * torch_sign(exp_avg * a.beta1 + (1.0 - a.beta1) * g)
        exp_avg[...] = exp_avg * a.beta2 + (1.0 - a.beta2) * g

    return update


def asgd(a):
    shrink = 1.0 - a.lambd * a.eta

    def update(p, g, ax):
        g = _weight_decay(p, g, 0.0, a.weight_decay, False)  # coupled: no lr in it
        p *= shrink
        p += -a.eta * g
        if a.mu != 1:
            ax += (p - ax) * a.mu
        else:
            ax[...] = p

    return update


def _schedule_free(a, beta1):
    """The schedule-free update of y (p) and z with step direction d (the C++ ScheduleFreeUpdate):
    y = lerp(y, z, c) + lr (beta1 (1 - c) - 1) d; z -= lr d, lerp from the nearer end as torch's."""
    c = a.average_weight
    y_coef = a.lr * (beta1 * (1.0 - c) - 1.0)

    def update(y, z, d):
        if abs(c) >= 0.5:
            y[...] = z - (z - y) * (1.0 - c)
        else:
            y += c * (z - y)
        y += y_coef * d
        z -= a.lr * d

    return update


def sgd_schedulefree(a):
    sf = _schedule_free(a, a.momentum)

    def update(p, g, z):
        sf(p, z, _weight_decay(p, g, a.lr, a.weight_decay, False))

    return update


def adamw_schedulefree(a):
    sf = _schedule_free(a, a.beta1)
    inv_bias_correction2 = 1.0 / (1.0 - a.beta2**a.step)

    def update(p, g, z, exp_avg_sq):
        exp_avg_sq[...] = exp_avg_sq * a.beta2 + (1.0 - a.beta2) * g * g
        d = g / (np.sqrt(exp_avg_sq * inv_bias_correction2) + a.eps)
        sf(p, z, _weight_decay(p, d, a.lr, a.weight_decay, False))

    return update


def lamb(a):
    """Per tensor (the C++ kernel gets one segment per tensor): the moments, u, the norms of p and u
    in clip's blocks and lanes (bitwise the kernel's), then p -= lr trust u."""
    bc1 = 1.0 - a.beta1**a.step if a.bias_correction else 1.0
    bc2 = 1.0 - a.beta2**a.step if a.bias_correction else 1.0
    inv_bc1, inv_bc2_sqrt = 1.0 / bc1, 1.0 / math.sqrt(bc2)
    adapt = a.weight_decay != 0 or a.always_adapt

    def update(p, g, exp_avg, exp_avg_sq):
        if a.grad_averaging:
            _moments(a, g, exp_avg, exp_avg_sq)
        else:
            exp_avg[...] = exp_avg * a.beta1 + g
            exp_avg_sq[...] = exp_avg_sq * a.beta2 + (1.0 - a.beta2) * g * g
        u = exp_avg * inv_bc1 / (np.sqrt(exp_avg_sq) * inv_bc2_sqrt + a.eps)
        if a.weight_decay != 0:
            u = u + a.weight_decay * p
        trust = 1.0
        if adapt:
            w_norm, u_norm = _norm_of_segments([p.reshape(-1)], 2.0), _norm_of_segments([u.reshape(-1)], 2.0)
            trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            if a.trust_clip:
                trust = min(trust, 1.0)
        p += -(a.lr * trust) * u

    return update


def lars(a):
    """Per tensor: the norms of p and g in clip's blocks and lanes (||g||: the raw gradients' norm
    divided by grad_scale), the trust ratio, then SGD with g = (g + weight_decay p) trust."""
    adapt = a.weight_decay != 0 or a.always_adapt
    step = sgd(SimpleNamespace(**{**vars(a), "weight_decay": 0.0}))

    def update(p, g, momentum_buffer, raw=None):
        if adapt:
            w = _norm_of_segments([p.reshape(-1)], 2.0)
            gn = _norm_of_segments([raw.reshape(-1)], 2.0)
            if a.grad_scale is not None:
                gn = gn / a.grad_scale
            trust = a.trust_coeff * w / (gn + w * a.weight_decay + a.eps) if w > 0 and gn > 0 else 1.0
            if a.trust_clip:
                trust = min(float(np.float64(trust) / np.float64(a.lr)), 1.0)  # lr = 0: inf, as in C++
            g = (g + a.weight_decay * p) * trust
        step(p, g, momentum_buffer)

    update.wants_raw_grad = True
    return update


UPDATES = {
    f.__name__: f
    for f in (
        sgd,
        adam,
        adagrad,
        rmsprop,
        adadelta,
        adamax,
        nadam,
        radam,
        rprop,
        lion,
        asgd,
        sgd_schedulefree,
        adamw_schedulefree,
        lamb,
        lars,
    )
}
