"""The optimizers: torch.optim's class names, constructor arguments, defaults, validation
messages and state keys, each stepping through one fused gradfuse kernel (see optimizer.py).

What each class does not say itself comes from its kernel's row of the kernel table
(gradfuse/table.py): the state keys, the hyperparameters' ranges and torch's messages for them,
which states a group's settings use.

Extra keyword arguments beyond torch's: skip_nonfinite=False (skip a whole step whose gradients
hold NaN/Inf; step() then returns False), and step(..., grad_scale=s) (gradients divided by s
inside the fused pass). torch's foreach/fused are accepted and ignored (every step here is fused);
capturable/differentiable=True are refused. A hyperparameter the kernel would refuse at the first
step (inf, NaN, a beta of 1, a string) is refused by the constructor, by add_param_group, and by
step() after an edit of param_groups, before anything changes.
"""

from __future__ import annotations

import math

import numpy as np

from .._numpy.optim import nadam_mu
from .optimizer import Optimizer


def _nonneg(group: dict, key: str, what: str) -> float:
    """torch's check of a hyperparameter that is not a kernel argument: a finite number >= 0 (a
    0-d array or tensor counts as its value, as torch takes it on the CPU). Returns it as a float."""
    value = group[key]
    if (
        isinstance(value, (str, bytes, bool, np.bool_))
        or not hasattr(type(value), "__float__")
        or getattr(value, "ndim", 0) != 0
    ):
        raise TypeError(f"Invalid {what}: {value!r} (expected a number, got {type(value).__name__})")
    number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"Invalid {what}: {value}")
    return number


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

    _kernel = "sgd"
    _scalar_keys: dict = {}  # torch keeps no step for SGD; the buffer's presence marks a first step

    def __init__(
        self,
        params,
        lr=1e-3,
        momentum=0,
        dampening=0,
        weight_decay=0,
        nesterov=False,
        *,
        maximize=False,
        foreach=None,
        differentiable=False,
        fused=None,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _scalars(self, slot):
        return ("momentum_buffer" in slot.state,)

    def _step_scalars(self, group, scalars):
        return {"step": 2 if scalars[0] else 1}  # the kernel's step 1 initialises the buffer

    def _advance(self, group, scalars):
        return (True,)


class Adam(Optimizer):
    """Adam (Kingma & Ba), with AMSGrad and optional decoupled weight decay (AdamW)."""

    _kernel = "adam"

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        amsgrad=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
        fused=None,
        decoupled_weight_decay=False,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * weight_decay."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        amsgrad=False,
        *,
        maximize=False,
        foreach=None,
        capturable=False,
        differentiable=False,
        fused=None,
        skip_nonfinite=False,
    ):
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
            skip_nonfinite=skip_nonfinite,
        )


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.), with learning-rate decay and an initial accumulator value."""

    _kernel = "adagrad"
    _eager_state = True

    def __init__(
        self,
        params,
        lr=1e-2,
        lr_decay=0,
        weight_decay=0,
        initial_accumulator_value=0,
        eps=1e-10,
        foreach=None,
        *,
        maximize=False,
        differentiable=False,
        fused=None,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate_extra(self, g):
        _nonneg(g, "initial_accumulator_value", "initial_accumulator_value value")

    def _initial_value(self, g, key):
        # torch starts every group's sum from the constructor's value, whatever the group says
        return float(self.defaults["initial_accumulator_value"])


class RMSprop(Optimizer):
    """RMSprop (Hinton), optionally centered and with momentum. alpha must be in [0, 1] (torch lets
    alpha > 1 through)."""

    _kernel = "rmsprop"

    def __init__(
        self,
        params,
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0,
        momentum=0,
        centered=False,
        capturable=False,
        foreach=None,
        maximize=False,
        differentiable=False,
        *,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=capturable,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)


class Adadelta(Optimizer):
    """Adadelta (Zeiler)."""

    _kernel = "adadelta"

    def __init__(
        self,
        params,
        lr=1.0,
        rho=0.9,
        eps=1e-6,
        weight_decay=0,
        foreach=None,
        *,
        capturable=False,
        maximize=False,
        differentiable=False,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            capturable=capturable,
            foreach=foreach,
            differentiable=differentiable,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)


class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm (Kingma & Ba, section 7)."""

    _kernel = "adamax"

    def __init__(
        self,
        params,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        foreach=None,
        *,
        maximize=False,
        differentiable=False,
        capturable=False,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)


class NAdam(Optimizer):
    """NAdam: Adam with Nesterov momentum (Dozat), with momentum decay."""

    _kernel = "nadam"
    _scalar_keys = {"step": 0, "mu_product": 1.0}

    def __init__(
        self,
        params,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        momentum_decay=4e-3,
        decoupled_weight_decay=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    @staticmethod
    def _mu_product(g, scalars) -> float:
        """mu_product after this step's mu; torch keeps it as a float32 scalar tensor, so do we."""
        step, mu_product = scalars
        mu = nadam_mu(g["betas"][0], g["momentum_decay"], step + 1)
        return float(np.float32(mu_product) * np.float32(mu))

    def _step_scalars(self, g, scalars):
        return {"step": scalars[0] + 1, "mu_product": self._mu_product(g, scalars)}

    def _advance(self, g, scalars):
        return (scalars[0] + 1, self._mu_product(g, scalars))


class RAdam(Optimizer):
    """RAdam: Adam with a rectified adaptive learning rate (Liu et al.)."""

    _kernel = "radam"

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        decoupled_weight_decay=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            decoupled_weight_decay=decoupled_weight_decay,
            differentiable=differentiable,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)


class Rprop(Optimizer):
    """Resilient backpropagation (Riedmiller & Braun): per-element step sizes from gradient signs.
    lr is the initial step size."""

    _kernel = "rprop"

    def __init__(
        self,
        params,
        lr=1e-2,
        etas=(0.5, 1.2),
        step_sizes=(1e-6, 50),
        *,
        capturable=False,
        foreach=None,
        maximize=False,
        differentiable=False,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            etas=etas,
            step_sizes=step_sizes,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate_extra(self, g):
        _nonneg(g, "lr", "learning rate")

    def _initial_value(self, g, key):
        return float(g["lr"]) if key == "step_size" else 0.0


class Lion(Optimizer):
    """Lion (Chen et al. 2023): the sign of an interpolated momentum, decoupled weight decay.

    Not in torch.optim; defaults are the paper's (lr=1e-4, betas=(0.9, 0.99)). Use a learning rate
    3-10x smaller than AdamW's and a weight decay 3-10x larger.
    """

    _kernel = "lion"

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False, skip_nonfinite=False):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)


class ASGD(Optimizer):
    """Averaged SGD (Polyak & Juditsky): SGD whose step size eta decays as
    lr / (1 + lambd lr step)^alpha, and a running average of the parameters, state["ax"] (the
    averaged weights to evaluate with), taken from step t0 on (mu = 1 / max(1, step - t0))."""

    _kernel = "asgd"
    _scalar_keys = {"step": 0, "eta": None, "mu": 1.0}  # eta starts at the group's lr

    def __init__(
        self,
        params,
        lr=1e-2,
        lambd=1e-4,
        alpha=0.75,
        t0=1e6,
        weight_decay=0,
        foreach=None,
        maximize=False,
        differentiable=False,
        capturable=False,
        *,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            lambd=lambd,
            alpha=alpha,
            t0=t0,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate_extra(self, g):
        # torch takes any alpha and t0; a negative one makes eta grow or mu exceed 1/step, and a
        # negative lambd can make eta's base negative (a complex power): refused here, with torch's words
        _nonneg(g, "lr", "learning rate")
        _nonneg(g, "alpha", "alpha value")
        _nonneg(g, "t0", "t0 value")

    @staticmethod
    def _eta(g, eta):
        """eta before a parameter's first step is the group's lr; torch keeps it as a float32 scalar."""
        return float(np.float32(float(g["lr"]))) if eta is None else eta

    def _step_scalars(self, g, scalars):
        _, eta, mu = scalars
        return {"eta": self._eta(g, eta), "mu": mu}

    def _advance(self, g, scalars):
        step = scalars[0] + 1  # torch's formulas, rounded to float32 as its state tensors are
        lr, lambd, alpha, t0 = (float(g[k]) for k in ("lr", "lambd", "alpha", "t0"))
        eta = float(np.float32(lr / ((1 + lambd * lr * step) ** alpha)))
        mu = float(np.float32(1 / max(1, step - t0)))
        return (step, eta, mu)


__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Adagrad",
    "RMSprop",
    "Adadelta",
    "Adamax",
    "NAdam",
    "RAdam",
    "Rprop",
    "Lion",
    "ASGD",
]
