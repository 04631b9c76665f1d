"""NumPy twins of the fused optimizer kernels (cpp/src/optim.cpp).

Same names, signatures, checks and results as gradfuse._core: each function updates params and
the state arrays in place, reads grads, and returns False only when skip_nonfinite found NaN/Inf
in the gradients (then nothing is written). The math follows torch.optim (foreach=False); the
operation order is the C++ kernels' own (a division by a per-step scalar is a multiplication by its
reciprocal, as there), and every operation is a correctly rounded IEEE one, so a twin gives bitwise
the C++ result. Python floats are rounded to the arrays' dtype as they meet
them (NumPy's promotion rules), as torch and the C++ kernels do.
"""
from __future__ import annotations

import math

import numpy as np

from . import _checks as check
from ._checks import quiet


def _torch_sign(x: np.ndarray) -> np.ndarray:
    """torch.sign: +1, -1, 0, and 0 for NaN (np.sign would give NaN)."""
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


def _grad(g: np.ndarray, scale: float | None, maximize: bool) -> np.ndarray:
    """The common prologue: unscale, then flip the sign when maximizing."""
    if scale is not None:
        g = g / scale
    if maximize:
        g = -g
    return g


def _finite(grads, scale) -> bool:
    with np.errstate(over="ignore"):  # g / scale may overflow: that is the Inf we look for
        return all(np.isfinite(g if scale is None else g / scale).all() for g in grads)


@quiet
def sgd(params, grads, momentum_buffers=None, *, step=1, lr=1e-3, momentum=0.0, dampening=0.0,
        weight_decay=0.0, nesterov=False, maximize=False, grad_scale=None, skip_nonfinite=False):
    """SGD step (torch.optim.SGD). momentum_buffers are required when momentum != 0; step == 1
    initialises them with the gradient, as torch does on a parameter's first step."""
    fn = "sgd"
    check.flags(fn, nesterov=nesterov, maximize=maximize, skip_nonfinite=skip_nonfinite)
    scale = check.grad_scale(fn, grad_scale)
    check.step(fn, step)
    check.nonneg(fn, "lr", lr)
    check.nonneg(fn, "momentum", momentum)
    check.finite(fn, "dampening", dampening)
    check.nonneg(fn, "weight_decay", weight_decay)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(f"{fn}: Nesterov momentum requires a momentum and zero dampening")
    ps, gs, bufs = check.tensor_lists(fn, ("params", params, True), ("grads", grads, False),
                                      ("momentum_buffers", momentum_buffers if momentum != 0 else None, True,
                                       momentum != 0))
    if skip_nonfinite and not _finite(gs, scale):
        return False
    for i, (p, g) in enumerate(zip(ps, gs)):
        g = _grad(g, scale, maximize)
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            buf = bufs[i]
            buf[...] = g if step == 1 else buf * momentum + (1.0 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p -= lr * g
    return True


def _adam_family_checks(fn, scale_arg, step, lr, beta1, beta2, eps, weight_decay):
    scale = check.grad_scale(fn, scale_arg)
    check.step(fn, step)
    check.nonneg(fn, "lr", lr)
    check.unit(fn, "beta1", beta1)
    check.unit(fn, "beta2", beta2)
    check.nonneg(fn, "eps", eps)
    check.nonneg(fn, "weight_decay", weight_decay)
    return scale


def _weight_decay(p, g, lr, weight_decay, decoupled):
    """Decoupled (AdamW: p *= 1 - lr*wd) or coupled (L2: g += wd*p). Returns the new g."""
    if weight_decay != 0:
        if decoupled:
            p *= 1.0 - lr * weight_decay
        else:
            g = g + weight_decay * p
    return g


@quiet
def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, lr=1e-3, beta1=0.9,
         beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled_weight_decay=False,
         maximize=False, grad_scale=None, skip_nonfinite=False):
    """Adam / AdamW (decoupled_weight_decay=True) / AMSGrad (amsgrad=True) step (torch.optim.Adam)."""
    fn = "adam"
    check.flags(fn, amsgrad=amsgrad, decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                skip_nonfinite=skip_nonfinite)
    scale = _adam_family_checks(fn, grad_scale, step, lr, beta1, beta2, eps, weight_decay)
    ps, gs, ms, vs, vmaxs = check.tensor_lists(
        fn, ("params", params, True), ("grads", grads, False), ("exp_avgs", exp_avgs, True),
        ("exp_avg_sqs", exp_avg_sqs, True),
        ("max_exp_avg_sqs", max_exp_avg_sqs if amsgrad else None, True, bool(amsgrad)))
    if skip_nonfinite and not _finite(gs, scale):
        return False
    step_size = lr / (1.0 - beta1 ** step)
    inv_bias_correction2_sqrt = 1.0 / math.sqrt(1.0 - beta2 ** step)
    for i, (p, g, m, v) in enumerate(zip(ps, gs, ms, vs)):
        g = _grad(g, scale, maximize)
        g = _weight_decay(p, g, lr, weight_decay, decoupled_weight_decay)
        m += (1.0 - beta1) * (g - m)                      # lerp towards g
        v[...] = v * beta2 + (1.0 - beta2) * g * g
        second = v
        if amsgrad:
            np.maximum(vmaxs[i], v, out=vmaxs[i])
            second = vmaxs[i]
        p += -step_size * m / (np.sqrt(second) * inv_bias_correction2_sqrt + eps)
    return True


@quiet
def adagrad(params, grads, state_sums, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
            maximize=False, grad_scale=None, skip_nonfinite=False):
    """Adagrad step (torch.optim.Adagrad)."""
    fn = "adagrad"
    check.flags(fn, maximize=maximize, skip_nonfinite=skip_nonfinite)
    scale = check.grad_scale(fn, grad_scale)
    check.step(fn, step)
    for name, value in (("lr", lr), ("lr_decay", lr_decay), ("weight_decay", weight_decay), ("eps", eps)):
        check.nonneg(fn, name, value)
    ps, gs, sums = check.tensor_lists(fn, ("params", params, True), ("grads", grads, False),
                                      ("state_sums", state_sums, True))
    if skip_nonfinite and not _finite(gs, scale):
        return False
    clr = lr / (1.0 + (step - 1) * lr_decay)
    for p, g, s in zip(ps, gs, sums):
        g = _grad(g, scale, maximize)
        g = _weight_decay(p, g, lr, weight_decay, False)
        s += g * g
        p += -clr * g / (np.sqrt(s) + eps)
    return True


@quiet
def rmsprop(params, grads, square_avgs, grad_avgs=None, momentum_buffers=None, *, lr=1e-2, alpha=0.99,
            eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False, grad_scale=None,
            skip_nonfinite=False):
    """RMSprop step (torch.optim.RMSprop). grad_avgs are required when centered, momentum_buffers
    when momentum > 0."""
    fn = "rmsprop"
    check.flags(fn, centered=centered, maximize=maximize, skip_nonfinite=skip_nonfinite)
    scale = check.grad_scale(fn, grad_scale)
    check.nonneg(fn, "lr", lr)
    check.closed_unit(fn, "alpha", alpha)
    check.nonneg(fn, "eps", eps)
    check.nonneg(fn, "weight_decay", weight_decay)
    check.nonneg(fn, "momentum", momentum)
    has_momentum = momentum > 0
    ps, gs, sqs, gas, bufs = check.tensor_lists(
        fn, ("params", params, True), ("grads", grads, False), ("square_avgs", square_avgs, True),
        ("grad_avgs", grad_avgs if centered else None, True, bool(centered)),
        ("momentum_buffers", momentum_buffers if has_momentum else None, True, has_momentum))
    if skip_nonfinite and not _finite(gs, scale):
        return False
    for i, (p, g, sq) in enumerate(zip(ps, gs, sqs)):
        g = _grad(g, scale, maximize)
        g = _weight_decay(p, g, lr, weight_decay, False)
        sq[...] = sq * alpha + (1.0 - alpha) * g * g
        if centered:
            ga = gas[i]
            ga += (1.0 - alpha) * (g - ga)
            avg = np.sqrt(sq - ga * ga) + eps
        else:
            avg = np.sqrt(sq) + eps
        if has_momentum:
            buf = bufs[i]
            buf[...] = buf * momentum + g / avg
            p -= lr * buf
        else:
            p += -lr * g / avg
    return True


@quiet
def adadelta(params, grads, square_avgs, acc_deltas, *, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0,
             maximize=False, grad_scale=None, skip_nonfinite=False):
    """Adadelta step (torch.optim.Adadelta)."""
    fn = "adadelta"
    check.flags(fn, maximize=maximize, skip_nonfinite=skip_nonfinite)
    scale = check.grad_scale(fn, grad_scale)
    check.nonneg(fn, "lr", lr)
    check.closed_unit(fn, "rho", rho)
    check.nonneg(fn, "eps", eps)
    check.nonneg(fn, "weight_decay", weight_decay)
    ps, gs, sqs, accs = check.tensor_lists(fn, ("params", params, True), ("grads", grads, False),
                                           ("square_avgs", square_avgs, True), ("acc_deltas", acc_deltas, True))
    if skip_nonfinite and not _finite(gs, scale):
        return False
    for p, g, sq, acc in zip(ps, gs, sqs, accs):
        g = _grad(g, scale, maximize)
        g = _weight_decay(p, g, lr, weight_decay, False)
        sq[...] = sq * rho + (1.0 - rho) * g * g
        delta = np.sqrt(acc + eps) / np.sqrt(sq + eps) * g
        acc[...] = acc * rho + (1.0 - rho) * delta * delta
        p -= lr * delta
    return True


@quiet
def adamax(params, grads, exp_avgs, exp_infs, *, step, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8,
           weight_decay=0.0, maximize=False, grad_scale=None, skip_nonfinite=False):
    """Adamax step (torch.optim.Adamax)."""
    fn = "adamax"
    check.flags(fn, maximize=maximize, skip_nonfinite=skip_nonfinite)
    scale = _adam_family_checks(fn, grad_scale, step, lr, beta1, beta2, eps, weight_decay)
    ps, gs, ms, us = check.tensor_lists(fn, ("params", params, True), ("grads", grads, False),
                                        ("exp_avgs", exp_avgs, True), ("exp_infs", exp_infs, True))
    if skip_nonfinite and not _finite(gs, scale):
        return False
    clr = lr / (1.0 - beta1 ** step)
    for p, g, m, u in zip(ps, gs, ms, us):
        g = _grad(g, scale, maximize)
        g = _weight_decay(p, g, lr, weight_decay, False)
        m += (1.0 - beta1) * (g - m)
        np.maximum(u * beta2, np.abs(g) + eps, out=u)
        p += -clr * m / u
    return True


def _nadam_mu(beta1: float, momentum_decay: float, step: int) -> float:
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


@quiet
def nadam(params, grads, exp_avgs, exp_avg_sqs, *, step, mu_product, lr=2e-3, beta1=0.9, beta2=0.999,
          eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False,
          grad_scale=None, skip_nonfinite=False):
    """NAdam step (torch.optim.NAdam). mu_product is the product of the momentum coefficients
    mu_1..mu_step, this step's included (the optimizer keeps it as state)."""
    fn = "nadam"
    check.flags(fn, decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                skip_nonfinite=skip_nonfinite)
    scale = _adam_family_checks(fn, grad_scale, step, lr, beta1, beta2, eps, weight_decay)
    check.nonneg(fn, "momentum_decay", momentum_decay)
    check.unit(fn, "mu_product", mu_product)
    ps, gs, ms, vs = check.tensor_lists(fn, ("params", params, True), ("grads", grads, False),
                                        ("exp_avgs", exp_avgs, True), ("exp_avg_sqs", exp_avg_sqs, True))
    if skip_nonfinite and not _finite(gs, scale):
        return False
    inv_bias_correction2 = 1.0 / (1.0 - beta2 ** step)
    mu = _nadam_mu(beta1, momentum_decay, step)
    mu_next = _nadam_mu(beta1, momentum_decay, step + 1)
    coef_grad = -lr * (1.0 - mu) / (1.0 - mu_product)
    coef_avg = -lr * mu_next / (1.0 - mu_product * mu_next)
    for p, g, m, v in zip(ps, gs, ms, vs):
        g = _grad(g, scale, maximize)
        g = _weight_decay(p, g, lr, weight_decay, decoupled_weight_decay)
        m += (1.0 - beta1) * (g - m)
        v[...] = v * beta2 + (1.0 - beta2) * g * g
        denom = np.sqrt(v * inv_bias_correction2) + eps
        p += coef_grad * g / denom
        p += coef_avg * m / denom
    return True


def _radam_rho_t(beta2: float, step: int) -> tuple[float, float]:
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    return rho_inf, rho_inf - 2.0 * step * beta2 ** step / (1.0 - beta2 ** step)


@quiet
def radam(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
          weight_decay=0.0, decoupled_weight_decay=False, maximize=False, grad_scale=None,
          skip_nonfinite=False):
    """RAdam step (torch.optim.RAdam)."""
    fn = "radam"
    check.flags(fn, decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                skip_nonfinite=skip_nonfinite)
    scale = _adam_family_checks(fn, grad_scale, step, lr, beta1, beta2, eps, weight_decay)
    ps, gs, ms, vs = check.tensor_lists(fn, ("params", params, True), ("grads", grads, False),
                                        ("exp_avgs", exp_avgs, True), ("exp_avg_sqs", exp_avg_sqs, True))
    if skip_nonfinite and not _finite(gs, scale):
        return False
    inv_bias_correction1 = 1.0 / (1.0 - beta1 ** step)
    bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** step)
    rho_inf, rho_t = _radam_rho_t(beta2, step)
    rectify = rho_t > 5.0
    if rectify:
        rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
    for p, g, m, v in zip(ps, gs, ms, vs):
        g = _grad(g, scale, maximize)
        g = _weight_decay(p, g, lr, weight_decay, decoupled_weight_decay)
        m += (1.0 - beta1) * (g - m)
        v[...] = v * beta2 + (1.0 - beta2) * g * g
        update = m * inv_bias_correction1 * lr
        if rectify:
            update = update * (bias_correction2_sqrt / (np.sqrt(v) + eps)) * rect
        p -= update
    return True


@quiet
def rprop(params, grads, prevs, step_sizes, *, etaminus=0.5, etaplus=1.2, step_size_min=1e-6,
          step_size_max=50.0, maximize=False, grad_scale=None, skip_nonfinite=False):
    """Rprop step (torch.optim.Rprop)."""
    fn = "rprop"
    check.flags(fn, maximize=maximize, skip_nonfinite=skip_nonfinite)
    etaminus, etaplus = check.real(fn, "etaminus", etaminus), check.real(fn, "etaplus", etaplus)
    scale = check.grad_scale(fn, grad_scale)
    if not (0.0 < etaminus < 1.0 < etaplus and math.isfinite(etaplus)):
        raise ValueError(f"{fn}: etas must satisfy 0 < etaminus < 1 < etaplus")
    check.nonneg(fn, "step_size_min", step_size_min)
    check.nonneg(fn, "step_size_max", step_size_max)
    ps, gs, prev_list, sizes = check.tensor_lists(fn, ("params", params, True), ("grads", grads, False),
                                                  ("prevs", prevs, True), ("step_sizes", step_sizes, True))
    if skip_nonfinite and not _finite(gs, scale):
        return False
    for p, g, prev, size in zip(ps, gs, prev_list, sizes):
        g = _grad(g, scale, maximize)
        agreement = g * prev  # > 0: same direction; < 0: the sign flipped; NaN acts as 0 (torch.sign)
        one = np.ones((), g.dtype)
        factor = np.where(agreement > 0, g.dtype.type(etaplus), np.where(agreement < 0, g.dtype.type(etaminus), one))
        np.minimum(np.maximum(size * factor, step_size_min), step_size_max, out=size)
        g = np.where(agreement < 0, g.dtype.type(0), g)
        p -= _torch_sign(g) * size
        prev[...] = g
    return True


@quiet
def lion(params, grads, exp_avgs, *, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0, maximize=False,
         grad_scale=None, skip_nonfinite=False):
    """Lion step (Chen et al. 2023, 'Symbolic Discovery of Optimization Algorithms'), decoupled
    weight decay."""
    fn = "lion"
    check.flags(fn, maximize=maximize, skip_nonfinite=skip_nonfinite)
    scale = check.grad_scale(fn, grad_scale)
    check.nonneg(fn, "lr", lr)
    check.unit(fn, "beta1", beta1)
    check.unit(fn, "beta2", beta2)
    check.nonneg(fn, "weight_decay", weight_decay)
    ps, gs, ms = check.tensor_lists(fn, ("params", params, True), ("grads", grads, False),
                                    ("exp_avgs", exp_avgs, True))
    if skip_nonfinite and not _finite(gs, scale):
        return False
    for p, g, m in zip(ps, gs, ms):
        g = _grad(g, scale, maximize)
        _weight_decay(p, g, lr, weight_decay, True)
        p -= lr * _torch_sign(m * beta1 + (1.0 - beta1) * g)
        m[...] = m * beta2 + (1.0 - beta2) * g
    return True


@quiet
def all_finite(arrays, grad_scale=None):
    """True when every element of every array (divided by grad_scale, if given) is finite."""
    fn = "all_finite"
    scale = check.grad_scale(fn, grad_scale)
    (items,) = check.tensor_lists(fn, ("arrays", arrays, False))
    return _finite(items, scale)


KERNELS = ("sgd", "adam", "adagrad", "rmsprop", "adadelta", "adamax", "nadam", "radam", "rprop", "lion",
           "all_finite")
