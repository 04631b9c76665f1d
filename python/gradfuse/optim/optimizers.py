"""The optimizers: torch.optim's class names, constructor arguments, defaults, validation
messages and state keys, each stepping through one fused gradfuse kernel (see optimizer.py).

Extra keyword arguments beyond torch's: skip_nonfinite=False (skip a whole step whose gradients
hold NaN/Inf; step() then returns False), and step(..., grad_scale=s) (gradients divided by s
inside the fused pass). torch's foreach/fused are accepted and ignored (every step here is fused);
capturable/differentiable=True are refused.
"""
from __future__ import annotations

import math

import numpy as np

from .optimizer import Optimizer

# Hyperparameters are checked here (torch's wording) with the kernels' rules: a value the kernel
# would refuse at the first step (inf, NaN, a beta of 1, a string) is refused by the constructor,
# by add_param_group, and by step() after an edit of param_groups, before anything changes.


def _number(value, what: str) -> float:
    if isinstance(value, (str, bytes, bool)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"Invalid {what}: {value!r} (expected a number, got {type(value).__name__})")
    return float(value)


def _nonneg_value(value, what: str) -> None:
    """A finite number >= 0."""
    v = _number(value, what)
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"Invalid {what}: {value}")


def _nonneg(g, key: str, what: str) -> None:
    _nonneg_value(g[key], what)


def _in_unit(value, what: str, closed: bool = False) -> None:
    """In [0, 1), or [0, 1] when closed."""
    v = _number(value, what)
    if not (0.0 <= v < 1.0 or (closed and v == 1.0)):
        raise ValueError(f"Invalid {what}: {value}")


def _pair(g, key: str) -> tuple:
    value = g[key]
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"Invalid {key}: {value!r} (expected a pair of numbers)")
    return tuple(value)


def _lr(g):
    _nonneg(g, "lr", "learning rate")


def _eps(g):
    _nonneg(g, "eps", "epsilon value")


def _weight_decay(g):
    _nonneg(g, "weight_decay", "weight_decay value")


def _betas(g):
    betas = _pair(g, "betas")
    for i in (0, 1):
        _in_unit(betas[i], f"beta parameter at index {i}")


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

    _kernel = "sgd"
    _state_keys = ("momentum_buffer",)
    _scalar_keys: dict = {}  # torch keeps no step for SGD; the buffer's presence marks a first step

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None, skip_nonfinite=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach, differentiable=differentiable,
                        fused=fused)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate(self, g):
        _lr(g)
        _nonneg(g, "momentum", "momentum value")
        _weight_decay(g)
        if not math.isfinite(_number(g["dampening"], "dampening value")):
            raise ValueError(f"Invalid dampening value: {g['dampening']}")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _used_keys(self, g):
        return self._state_keys if g["momentum"] != 0 else ()

    def _scalars(self, slot):
        return ("momentum_buffer" in slot.state,)

    def _advance(self, g, scalars):
        return (True,)

    def _kernel_kwargs(self, g, scalars):
        return dict(step=2 if scalars[0] else 1, lr=g["lr"], momentum=g["momentum"], dampening=g["dampening"],
                    weight_decay=g["weight_decay"], nesterov=g["nesterov"], maximize=g["maximize"])


class Adam(Optimizer):
    """Adam (Kingma & Ba), with AMSGrad and optional decoupled weight decay (AdamW)."""

    _kernel = "adam"
    _state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False, skip_nonfinite=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable,
                        fused=fused, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate(self, g):
        _lr(g), _eps(g), _betas(g), _weight_decay(g)

    def _used_keys(self, g):
        return self._state_keys if g["amsgrad"] else self._state_keys[:2]

    def _kernel_kwargs(self, g, scalars):
        beta1, beta2 = g["betas"]
        return dict(step=scalars[0] + 1, lr=g["lr"], beta1=beta1, beta2=beta2, eps=g["eps"],
                    weight_decay=g["weight_decay"], amsgrad=g["amsgrad"],
                    decoupled_weight_decay=g["decoupled_weight_decay"], maximize=g["maximize"])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * weight_decay."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 skip_nonfinite=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, skip_nonfinite=skip_nonfinite)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.), with learning-rate decay and an initial accumulator value."""

    _kernel = "adagrad"
    _state_keys = ("sum",)
    _eager_state = True

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None, skip_nonfinite=False):
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach, maximize=maximize,
                        differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate(self, g):
        _lr(g)
        _nonneg(g, "lr_decay", "lr_decay value")
        _weight_decay(g)
        _nonneg(g, "initial_accumulator_value", "initial_accumulator_value value")
        _eps(g)

    def _initial_value(self, g, key):
        return g["initial_accumulator_value"]

    def _kernel_kwargs(self, g, scalars):
        return dict(step=scalars[0] + 1, lr=g["lr"], lr_decay=g["lr_decay"], weight_decay=g["weight_decay"],
                    eps=g["eps"], maximize=g["maximize"])


class RMSprop(Optimizer):
    """RMSprop (Hinton), optionally centered and with momentum."""

    _kernel = "rmsprop"
    _state_keys = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False, *, skip_nonfinite=False):
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach, maximize=maximize,
                        differentiable=differentiable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate(self, g):
        _lr(g), _eps(g)
        _nonneg(g, "momentum", "momentum value")
        _weight_decay(g)
        _in_unit(g["alpha"], "alpha value", closed=True)  # the kernel's range (torch lets alpha > 1 through)

    def _used_keys(self, g):
        return tuple(k for k, used in zip(self._state_keys, (True, g["centered"], g["momentum"] > 0)) if used)

    def _kernel_kwargs(self, g, scalars):
        return dict(lr=g["lr"], alpha=g["alpha"], eps=g["eps"], weight_decay=g["weight_decay"],
                    momentum=g["momentum"], centered=g["centered"], maximize=g["maximize"])


class Adadelta(Optimizer):
    """Adadelta (Zeiler)."""

    _kernel = "adadelta"
    _state_keys = ("square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False,
                 maximize=False, differentiable=False, skip_nonfinite=False):
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        capturable=capturable, foreach=foreach, differentiable=differentiable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate(self, g):
        _lr(g)
        _in_unit(g["rho"], "rho value", closed=True)
        _eps(g), _weight_decay(g)

    def _kernel_kwargs(self, g, scalars):
        return dict(lr=g["lr"], rho=g["rho"], eps=g["eps"], weight_decay=g["weight_decay"], maximize=g["maximize"])


class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm (Kingma & Ba, section 7)."""

    _kernel = "adamax"
    _state_keys = ("exp_avg", "exp_inf")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, differentiable=False, capturable=False, skip_nonfinite=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach, maximize=maximize,
                        differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate(self, g):
        _lr(g), _eps(g), _betas(g), _weight_decay(g)

    def _kernel_kwargs(self, g, scalars):
        beta1, beta2 = g["betas"]
        return dict(step=scalars[0] + 1, lr=g["lr"], beta1=beta1, beta2=beta2, eps=g["eps"],
                    weight_decay=g["weight_decay"], maximize=g["maximize"])


class NAdam(Optimizer):
    """NAdam: Adam with Nesterov momentum (Dozat), with momentum decay."""

    _kernel = "nadam"
    _state_keys = ("exp_avg", "exp_avg_sq")
    _scalar_keys = {"step": 0, "mu_product": 1.0}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, skip_nonfinite=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate(self, g):
        _lr(g), _eps(g), _betas(g), _weight_decay(g)
        _nonneg(g, "momentum_decay", "momentum_decay value")

    @staticmethod
    def _mu_product(g, scalars) -> float:
        """mu_product after this step's mu; torch keeps it as a float32 scalar tensor, so do we."""
        step, mu_product = scalars
        mu = g["betas"][0] * (1.0 - 0.5 * 0.96 ** ((step + 1) * g["momentum_decay"]))
        return float(np.float32(mu_product) * np.float32(mu))

    def _advance(self, g, scalars):
        return (scalars[0] + 1, self._mu_product(g, scalars))

    def _kernel_kwargs(self, g, scalars):
        beta1, beta2 = g["betas"]
        return dict(step=scalars[0] + 1, mu_product=self._mu_product(g, scalars), lr=g["lr"], beta1=beta1,
                    beta2=beta2, eps=g["eps"], weight_decay=g["weight_decay"], momentum_decay=g["momentum_decay"],
                    decoupled_weight_decay=g["decoupled_weight_decay"], maximize=g["maximize"])


class RAdam(Optimizer):
    """RAdam: Adam with a rectified adaptive learning rate (Liu et al.)."""

    _kernel = "radam"
    _state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
                 *, foreach=None, maximize=False, capturable=False, differentiable=False, skip_nonfinite=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize, foreach=foreach,
                        capturable=capturable, decoupled_weight_decay=decoupled_weight_decay,
                        differentiable=differentiable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate(self, g):
        _lr(g), _eps(g), _betas(g), _weight_decay(g)

    def _kernel_kwargs(self, g, scalars):
        beta1, beta2 = g["betas"]
        return dict(step=scalars[0] + 1, lr=g["lr"], beta1=beta1, beta2=beta2, eps=g["eps"],
                    weight_decay=g["weight_decay"], decoupled_weight_decay=g["decoupled_weight_decay"],
                    maximize=g["maximize"])


class Rprop(Optimizer):
    """Resilient backpropagation (Riedmiller & Braun): per-element step sizes from gradient signs."""

    _kernel = "rprop"
    _state_keys = ("prev", "step_size")

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *, capturable=False, foreach=None,
                 maximize=False, differentiable=False, skip_nonfinite=False):
        defaults = dict(lr=lr, etas=etas, step_sizes=step_sizes, foreach=foreach, maximize=maximize,
                        differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate(self, g):
        _lr(g)
        etaminus, etaplus = _pair(g, "etas")
        if not 0.0 < _number(etaminus, "eta") < 1.0 < _number(etaplus, "eta") < math.inf:
            raise ValueError(f"Invalid eta values: {etaminus}, {etaplus}")
        smin, smax = _pair(g, "step_sizes")
        _nonneg_value(smin, "minimal step size")
        _nonneg_value(smax, "maximal step size")

    def _initial_value(self, g, key):
        return g["lr"] if key == "step_size" else 0.0

    def _kernel_kwargs(self, g, scalars):
        (etaminus, etaplus), (smin, smax) = g["etas"], g["step_sizes"]
        return dict(etaminus=etaminus, etaplus=etaplus, step_size_min=smin, step_size_max=smax,
                    maximize=g["maximize"])


class Lion(Optimizer):
    """Lion (Chen et al. 2023): the sign of an interpolated momentum, decoupled weight decay.

    Not in torch.optim; defaults are the paper's (lr=1e-4, betas=(0.9, 0.99)). Use a learning rate
    3-10x smaller than AdamW's and a weight decay 3-10x larger.
    """

    _kernel = "lion"
    _state_keys = ("exp_avg",)

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False,
                 skip_nonfinite=False):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate(self, g):
        _lr(g), _betas(g), _weight_decay(g)

    def _kernel_kwargs(self, g, scalars):
        beta1, beta2 = g["betas"]
        return dict(lr=g["lr"], beta1=beta1, beta2=beta2, weight_decay=g["weight_decay"], maximize=g["maximize"])
