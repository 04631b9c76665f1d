"""Learning-rate schedules with torch.optim.lr_scheduler's API and semantics.

Usage, as in torch::

    opt = gf.optim.SGD(params, lr=0.1, momentum=0.9)
    sched = gf.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    for t in range(100):
        opt.step(grads)
        sched.step()              # after optimizer.step(); sets every group's "lr" for the next step
    sched.get_last_lr()           # the lr of each param group, as last set
    sched.last_epoch              # how many times step() was called

Per step or per epoch: a schedule counts calls of step() and nothing else; t in the formulas below
is that count (``last_epoch``). Call step() once per batch and t counts batches (T_max, total_iters,
tau, ... are then numbers of batches); call it once per epoch and t counts epochs. OneCycleLR and
CyclicLR are meant to be stepped per batch, ReduceLROnPlateau per evaluation (``step(metric)``).

Construction sets each group's "lr" to the schedule's value at t = 0, records the groups' starting
lr as ``group["initial_lr"]`` (unless present, as torch does) and reads ``base_lrs`` from there, so
each param group follows the schedule from its own base lr. Most schedules are chainable as in
torch: a step rescales the group's *current* lr (StepLR multiplies it by gamma, ...), so a change
made to ``group["lr"]`` between steps carries on, and ChainedScheduler composes schedules.
``step(epoch)`` jumps to the closed form at that epoch where the schedule has one.

``state_dict()`` is a plain dict of numbers, strings, lists and dicts (no callables, no objects,
no None): the checkpoint format stores exactly those. Save it together with the optimizer's state
dict (which holds the groups' "lr" and "initial_lr" and, for OneCycleLR/CyclicLR, the momentum
bounds), and restore both: build optimizer and scheduler as before, then ``opt.load_state_dict``
and ``sched.load_state_dict``; the run continues with the identical sequence.

The schedules (torch's class names, constructor arguments and defaults where torch has them):

=========================== =====================================================================
LambdaLR                    base_lr * lr_lambda(t) (the callables are not in the state dict)
MultiplicativeLR            lr *= lr_lambda(t) for t > 0
Constant                    the groups' lr, unchanged (a no-op schedule)
ConstantLR                  base_lr * factor for t < total_iters, then base_lr
StepLR                      base_lr * gamma ** (t // step_size)
MultiStepLR                 base_lr * gamma ** (number of milestones <= t)
ExponentialLR               base_lr * gamma ** t
ExponentialDecayLR          base_lr * exp(-k t)
LinearLR                    base_lr * (start_factor + (end_factor - start_factor) min(t, T) / T);
                            a0 (1 - t/T) is LinearLR(start_factor=1, end_factor=0, total_iters=T)
LinearDecayLR               (1 - t/tau) base_lr + (t/tau) final_lr for t <= tau, final_lr after
PolynomialLR                base_lr * (1 - min(t, T) / T) ** power
CosineAnnealingLR           eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2
CosineAnnealingWarmRestarts the same within each cycle; cycles of T_0, T_0 T_mult, ...
InverseSqrtLR               base_lr * sqrt(timescale / max(t, timescale)); timescale=1 gives
                            base_lr / sqrt(t) for t >= 1 (and base_lr at t = 0)
InverseTimeDecayLR          base_lr / (1 + k t)
OneCycleLR                  the 1cycle policy (Smith), cycling momentum/beta1 inversely
CyclicLR                    triangular / triangular2 / exp_range cycles (Smith), cycling momentum
ReduceLROnPlateau           lr *= factor once the metric stops improving (``step(metric)``)
SequentialLR                one schedule after another, switching at milestones
ChainedScheduler            several schedules stepped together (their factors multiply)
LinearWarmup / warmup()     linear warmup from start_factor * lr in front of any schedule,
                            ReduceLROnPlateau included
=========================== =====================================================================

Deviations from torch (torch 2.13): no warning when step() comes before optimizer.step() (gradfuse
does not wrap optimizer.step); step(epoch) does not warn; an error in step() (OneCycleLR stepped
past total_steps) leaves the scheduler unchanged; OneCycleLR phases of zero length do not divide by
zero; ConstantLR(factor=0) restores base_lr at total_iters instead of dividing by zero; a chainable
schedule built with last_epoch >= 0 keeps the groups' lr at construction (torch's StepLR,
MultiStepLR and ConstantLR may rescale it there); ConstantLR(total_iters=0) is base_lr throughout;
nonsensical arguments torch accepts (step_size=0, T_max=0, total_iters=0 for LinearLR/PolynomialLR,
unsorted SequentialLR milestones, ...) raise ValueError at construction instead of failing later.
State dicts: no callables, so LambdaLR/MultiplicativeLR/CyclicLR(scale_fn) do not save a callable
object's attributes as torch does; MultiStepLR's milestones are a sorted list (repeats kept), not a
Counter; ReduceLROnPlateau keeps _per_group_min_lr instead of default_min_lr=None (a property
here); load_state_dict refuses unknown public keys and ignores unknown private ones, so torch's
scheduler state dicts load too.
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_right
from collections import Counter

import numpy as np

from .optimizer import Optimizer

__all__ = [
    "LRScheduler",
    "LambdaLR",
    "MultiplicativeLR",
    "Constant",
    "ConstantLR",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "ExponentialDecayLR",
    "LinearLR",
    "LinearDecayLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "InverseSqrtLR",
    "InverseTimeDecayLR",
    "OneCycleLR",
    "CyclicLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "ChainedScheduler",
    "LinearWarmup",
    "warmup",
]


# ---- helpers ------------------------------------------------------------------------------------------
def _check_optimizer(optimizer) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def _per_group(name: str, optimizer, value) -> list:
    """A scalar for every group, or a list/tuple with one value per group (torch's wording)."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(value)} values, param_groups has {n}."
            )
        return list(value)
    return [value] * n


def _group_lrs(optimizer) -> list:
    return [group["lr"] for group in optimizer.param_groups]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(name: str, value, minimum: int = 1) -> int:
    """An integer >= minimum (1: "positive"), or ValueError."""
    if not _is_int(value) or value < minimum:
        what = f"positive integer {name}" if minimum == 1 else f"integer {name} >= {minimum}"
        raise ValueError(f"Expected {what}, but got {value}")
    return int(value)


def _number(name: str, value, *, minimum=None, positive=False) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or value != value:
        raise ValueError(f"Expected a number for {name}, but got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"Expected positive {name}, but got {value}")
    if minimum is not None and not value >= minimum:
        raise ValueError(f"Expected {name} >= {minimum}, but got {value}")
    return value


def _export(value, where: str):
    """A plain copy of a state value: numbers, strings, lists and dicts with string keys."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_export(v, where) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"state_dict: {where} has a non-string key {k!r}")
            out[k] = _export(v, where)
        return out
    raise TypeError(f"state_dict: {where} holds {type(value).__name__}, which the state dict cannot store")


def _import(value):
    """A state value as loaded back (checkpoints may return NumPy scalars or arrays for numbers/lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_import(v) for v in value]
    if isinstance(value, dict):
        return {k: _import(v) for k, v in value.items()}
    return value


# ---- base class -------------------------------------------------------------------------------------
class LRScheduler:
    """Base class: torch.optim.lr_scheduler.LRScheduler's protocol.

    A subclass implements get_lr(): the groups' lr at ``self.last_epoch``, computed (chainable
    schedules) from the groups' current lr, or from ``self.base_lrs``; and optionally
    _get_closed_form_lr(), used by step(epoch). ``self._is_initial`` is True during the step the
    constructor takes.
    """

    _is_initial = False
    _chainable = True  # in the constructor's step with last_epoch > 0, keep the groups' lr
    _transient: tuple = ()  # attributes that are not in the state dict (callables, objects)
    takes_metrics = False  # step(metric)? True for ReduceLROnPlateau (and warmups around it)

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        if not _is_int(last_epoch) or last_epoch < -1:
            raise ValueError(f"Expected last_epoch >= -1, but got {last_epoch}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                        "scheduler with last_epoch >= 0 (load the optimizer's state dict first)"
                    )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list:
        raise NotImplementedError

    def get_last_lr(self) -> list:
        """The learning rate of each param group, as the last step() set it."""
        return list(self._last_lr)

    def step(self, epoch=None) -> None:
        """Advance the schedule by one (or jump to `epoch`, via the closed form where there is one)
        and set every group's lr. Call it after optimizer.step()."""
        self._step_count += 1
        try:
            self._update_lr(epoch)
        except BaseException:
            self._step_count -= 1
            raise

    def _update_lr(self, epoch=None) -> None:
        before = self.last_epoch
        try:
            if epoch is None:
                self.last_epoch += 1
                if self._is_initial and self.last_epoch > 0 and self._chainable:
                    values = _group_lrs(self.optimizer)
                else:
                    values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed = getattr(self, "_get_closed_form_lr", None)
                values = closed() if closed is not None else self.get_lr()
        except BaseException:
            self.last_epoch = before
            raise
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = _group_lrs(self.optimizer)

    def _scaled(self, factor) -> list:
        """The groups' current lr times factor (a number, or one per group)."""
        factors = factor if isinstance(factor, list) else [factor] * len(self.optimizer.param_groups)
        return [group["lr"] * f for group, f in zip(self.optimizer.param_groups, factors)]

    # ---- state ----------------------------------------------------------------------------------------
    def _saved_keys(self) -> list:
        skip = {"optimizer", "_is_initial", *self._transient}
        return [k for k in vars(self) if k not in skip]

    def state_dict(self) -> dict:
        """The scheduler's state: a plain dict of numbers, strings, lists and dicts (a copy)."""
        name = type(self).__name__
        return {k: _export(getattr(self, k), f"{name}.{k}") for k in self._saved_keys()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state from state_dict(). Keys this class does not keep raise ValueError,
        except private ones (a leading underscore: torch's internal flags), which are ignored."""
        known = set(self._saved_keys())
        unknown = [k for k in state_dict if k not in known and not str(k).startswith("_")]
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unknown keys {unknown}")
        for key, value in state_dict.items():
            if key in known:
                setattr(self, key, _import(value))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={getattr(self, 'last_epoch', None)})"


# ---- callables -------------------------------------------------------------------------------------------
def _lambdas(optimizer, lr_lambda) -> list:
    n = len(optimizer.param_groups)
    if isinstance(lr_lambda, (list, tuple)):
        if len(lr_lambda) != n:
            raise ValueError(f"Expected {n} lr_lambdas, but got {len(lr_lambda)}")
        fns = list(lr_lambda)
    else:
        fns = [lr_lambda] * n
    for fn in fns:
        if not callable(fn):
            raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
    return fns


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(t); lr_lambda is one callable or one per group.

    The callables are not in the state dict (torch saves only the attributes of callable objects;
    here the state dict holds no callables at all): rebuild the scheduler with the same callables."""

    _chainable = False
    _transient = ("lr_lambdas",)

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        _check_optimizer(optimizer)
        self.lr_lambdas = _lambdas(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]


class MultiplicativeLR(LRScheduler):
    """lr *= lr_lambda(t) at every step after the first (callables not in the state dict)."""

    _transient = ("lr_lambdas",)

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        _check_optimizer(optimizer)
        self.lr_lambdas = _lambdas(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return _group_lrs(self.optimizer)
        return self._scaled([fn(self.last_epoch) for fn in self.lr_lambdas])


# ---- piecewise constant ----------------------------------------------------------------------------------
class Constant(LRScheduler):
    """A constant schedule: the groups' lr stays what it is (a no-op with the scheduler protocol)."""

    def get_lr(self):
        return _group_lrs(self.optimizer)

    def _get_closed_form_lr(self):
        return list(self.base_lrs)


class ConstantLR(LRScheduler):
    """lr = base_lr * factor while t < total_iters, then base_lr (torch's ConstantLR).

    ConstantLR(opt, factor=1.0) is a constant schedule."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = factor
        self.total_iters = _positive_int("total_iters", total_iters, minimum=0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t = self.last_epoch
        if t == 0 and self.total_iters > 0:
            return self._scaled(self.factor)
        if t != self.total_iters or t == 0:
            return _group_lrs(self.optimizer)
        if self.factor == 0:  # the lr is 0: nothing to rescale, restore the base lr
            return list(self.base_lrs)
        return self._scaled(1.0 / self.factor)

    def _get_closed_form_lr(self):
        f = 1.0 if self.last_epoch >= self.total_iters else self.factor
        return [base * f for base in self.base_lrs]


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (t // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _positive_int("step_size", step_size)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t = self.last_epoch
        if t == 0 or t % self.step_size:
            return _group_lrs(self.optimizer)
        return self._scaled(self.gamma)

    def _get_closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr = base_lr * gamma ** (number of milestones <= t); a repeated milestone counts each time."""

    _transient = ("milestones",)

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        milestones = list(milestones)
        for m in milestones:
            if not _is_int(m):
                raise ValueError(f"Expected integer milestones, but got {milestones}")
        self.milestones = Counter(int(m) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        count = self.milestones.get(self.last_epoch, 0)
        if not count:
            return _group_lrs(self.optimizer)
        return self._scaled(self.gamma**count)

    def _get_closed_form_lr(self):
        n = bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [base * self.gamma**n for base in self.base_lrs]

    def state_dict(self):
        state = super().state_dict()
        state["milestones"] = sorted(self.milestones.elements())
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        milestones = state.pop("milestones", None)
        super().load_state_dict(state)
        if milestones is not None:
            if isinstance(milestones, dict):  # torch's Counter
                milestones = [k for k, n in milestones.items() for _ in range(int(n))]
            self.milestones = Counter(int(m) for m in _import(milestones))


# ---- smooth decays --------------------------------------------------------------------------------------
class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** t (the seeds' a0 * 0.95 ** t is gamma=0.95)."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return _group_lrs(self.optimizer)
        return self._scaled(self.gamma)

    def _get_closed_form_lr(self):
        return [base * self.gamma**self.last_epoch for base in self.base_lrs]


class _FactorLR(LRScheduler):
    """lr = base_lr * factor(t). Chainable: a step multiplies the group's current lr by
    factor(t) / factor(t - 1)."""

    def _factor(self, t) -> float:
        raise NotImplementedError

    def get_lr(self):
        t = self.last_epoch
        if t == 0:
            return self._scaled(self._factor(0))
        if self._is_initial:
            return _group_lrs(self.optimizer)
        before = self._factor(t - 1)
        if before == 0:
            return self._get_closed_form_lr()
        return self._scaled(self._factor(t) / before)

    def _get_closed_form_lr(self):
        f = self._factor(self.last_epoch)
        return [base * f for base in self.base_lrs]


class ExponentialDecayLR(_FactorLR):
    """lr = base_lr * exp(-k t) (the seeds' a0 e^(-kt)); k >= 0 is the decay rate per step."""

    def __init__(self, optimizer, k, last_epoch=-1):
        self.k = _number("k", k, minimum=0)
        super().__init__(optimizer, last_epoch)

    def _factor(self, t):
        return math.exp(-self.k * t)


class InverseTimeDecayLR(_FactorLR):
    """lr = base_lr / (1 + k t) (the seeds' 1/t decay); k >= 0."""

    def __init__(self, optimizer, k, last_epoch=-1):
        self.k = _number("k", k, minimum=0)
        super().__init__(optimizer, last_epoch)

    def _factor(self, t):
        return 1.0 / (1.0 + self.k * t)


class InverseSqrtLR(_FactorLR):
    """lr = base_lr * sqrt(timescale / max(t, timescale)): base_lr up to t = timescale, then
    decaying as 1/sqrt(t). With timescale=1 (the default) that is the seeds' a0 / sqrt(t) for
    t >= 1, and base_lr at t = 0, where 1/sqrt(t) is undefined. Put warmup() in front for the
    Transformer schedule (linear warmup, then inverse square root)."""

    def __init__(self, optimizer, timescale=1, last_epoch=-1):
        self.timescale = _number("timescale", timescale, positive=True)
        super().__init__(optimizer, last_epoch)

    def _factor(self, t):
        return math.sqrt(self.timescale / max(t, self.timescale))


class LinearLR(LRScheduler):
    """lr = base_lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters).

    The seeds' linear decay a0 (1 - t/T) is LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=T)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and less or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = _positive_int("total_iters", total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, s, e, n = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
        if t == 0:
            return self._scaled(s)
        if self._is_initial or t > n:
            return _group_lrs(self.optimizer)
        # factor(t) / factor(t - 1), with factor(t) = s + (e - s) t / n
        return self._scaled(1.0 + (e - s) / (n * s + (t - 1) * (e - s)))

    def _get_closed_form_lr(self):
        s, e, n = self.start_factor, self.end_factor, self.total_iters
        f = s + (e - s) * min(n, self.last_epoch) / n
        return [base * f for base in self.base_lrs]


class LinearDecayLR(LRScheduler):
    """The seeds' linear decay from eps_0 to eps_tau (Goodfellow et al. 8.3.1):

        eps_t = (1 - t/tau) eps_0 + (t/tau) eps_tau   for t <= tau,   eps_tau after,

    with eps_0 each group's base lr. final_lr (eps_tau): a number, one per group, or None for
    1% of each group's base lr (the book's rule of thumb). Chainable like CosineAnnealingLR's
    eta_min: a step rescales (lr - final_lr)."""

    def __init__(self, optimizer, tau, final_lr=None, last_epoch=-1):
        _check_optimizer(optimizer)
        self.tau = _positive_int("tau", tau)
        if final_lr is None:
            finals = [0.01 * group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
        else:
            finals = _per_group("final_lr", optimizer, final_lr)
            for f in finals:
                _number("final_lr", f, minimum=0)
        self.final_lrs = finals
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, tau = self.last_epoch, self.tau
        if self._is_initial or t == 0 or t > tau:
            return _group_lrs(self.optimizer)
        r = (1.0 - t / tau) / (1.0 - (t - 1) / tau)
        return [end + (g["lr"] - end) * r for g, end in zip(self.optimizer.param_groups, self.final_lrs)]

    def _get_closed_form_lr(self):
        a = min(self.last_epoch, self.tau) / self.tau
        return [(1.0 - a) * base + a * end for base, end in zip(self.base_lrs, self.final_lrs)]


class PolynomialLR(LRScheduler):
    """lr = base_lr * (1 - min(t, total_iters) / total_iters) ** power."""

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        self.total_iters = _positive_int("total_iters", total_iters)
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, n = self.last_epoch, self.total_iters
        if self._is_initial or t > n:
            return _group_lrs(self.optimizer)
        return self._scaled(((1.0 - t / n) / (1.0 - (t - 1) / n)) ** self.power)

    def _get_closed_form_lr(self):
        f = (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
        return [base * f for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2, computed recursively as torch
    does (chainable); past T_max the cosine goes on (back up to base_lr at 2 T_max)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _number("T_max", T_max, positive=True)
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, T, lo = self.last_epoch, self.T_max, self.eta_min
        groups = self.optimizer.param_groups
        if self._is_initial:
            return _group_lrs(self.optimizer)
        if self._step_count == 1 and t > 0:
            return self._get_closed_form_lr()
        if (t - 1 - T) % (2 * T) == 0:  # factor(t - 1) = 0: step up from the minimum
            return [g["lr"] + (base - lo) * (1 - math.cos(math.pi / T)) / 2 for g, base in zip(groups, self.base_lrs)]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (g["lr"] - lo) + lo for g in groups]

    def _get_closed_form_lr(self):
        c = 1 + math.cos(math.pi * self.last_epoch / self.T_max)
        return [self.eta_min + (base - self.eta_min) * c / 2 for base in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine annealing from base_lr to eta_min over T_i steps, then restart at base_lr, with
    T_0, T_0 T_mult, T_0 T_mult^2, ... step(epoch) accepts fractional epochs."""

    _chainable = False

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        if not _is_int(T_0) or T_0 <= 0:
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if not _is_int(T_mult) or T_mult < 1:
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
        self.T_0 = int(T_0)
        self.T_i = int(T_0)
        self.T_mult = int(T_mult)
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        c = 1 + math.cos(math.pi * self.T_cur / self.T_i)
        return [self.eta_min + (base - self.eta_min) * c / 2 for base in self.base_lrs]

    def step(self, epoch=None):
        """One step, or jump to `epoch` (a float is fine: a fraction of the way through an epoch)."""
        if epoch is not None and epoch < 0:
            raise ValueError(f"Expected non-negative epoch, but got {epoch}")
        self._step_count += 1
        self._update_lr(epoch)

    def _update_lr(self, epoch=None):
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur += 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        elif epoch >= self.T_0:
            if self.T_mult == 1:
                self.T_cur = epoch % self.T_0
            else:
                n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
                self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                self.T_i = self.T_0 * self.T_mult**n
        else:
            self.T_i = self.T_0
            self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = _group_lrs(self.optimizer)


# ---- cycles ------------------------------------------------------------------------------------------------
def _momentum_setup(sched, optimizer, max_momentum, base_momentum, last_epoch, keep_bounds: bool):
    """Check that the optimizer has momentum or betas and set each group's momentum to max_momentum."""
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
    sched.use_beta1 = "betas" in optimizer.defaults
    maxs = _per_group("max_momentum", optimizer, max_momentum)
    bases = _per_group("base_momentum", optimizer, base_momentum)
    if keep_bounds:
        sched.max_momentums, sched.base_momentums = maxs, bases
    if last_epoch == -1:
        for m_max, m_base, group in zip(maxs, bases, optimizer.param_groups):
            _set_momentum(sched, group, m_max)
            group["max_momentum"] = m_max
            group["base_momentum"] = m_base


def _set_momentum(sched, group: dict, value) -> None:
    if sched.use_beta1:
        group["betas"] = (value, *tuple(group["betas"])[1:])
    else:
        group["momentum"] = value


class CyclicLR(LRScheduler):
    """Cyclical learning rates (Smith 2017): lr goes base_lr -> max_lr over step_size_up steps and
    back over step_size_down, scaled per cycle (triangular2: halved each cycle) or per step
    (exp_range: gamma ** t); momentum (or Adam's beta1) cycles inversely between max_momentum
    and base_momentum. Step it per batch. A custom scale_fn is not in the state dict."""

    _chainable = False
    _transient = ("_scale_fn_custom",)

    def __init__(
        self,
        optimizer,
        base_lr,
        max_lr,
        step_size_up=2000,
        step_size_down=None,
        mode="triangular",
        gamma=1.0,
        scale_fn=None,
        scale_mode="cycle",
        cycle_momentum=True,
        base_momentum=0.8,
        max_momentum=0.9,
        last_epoch=-1,
    ):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        base_lrs = _per_group("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups):
                group["lr"] = lr
        self.max_lrs = _per_group("max_lr", optimizer, max_lr)
        up = float(_number("step_size_up", step_size_up, positive=True))
        down = up if step_size_down is None else float(_number("step_size_down", step_size_down, minimum=0))
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError(f"scale_fn should be a function, but got {type(scale_fn).__name__}")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"scale_mode must be 'cycle' or 'iterations', but got {scale_mode!r}")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode if scale_fn is not None else ("iterations" if mode == "exp_range" else "cycle")
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            _momentum_setup(self, optimizer, max_momentum, base_momentum, last_epoch, keep_bounds=True)
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def scale_fn(self, x) -> float:
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma**x

    def get_lr(self):
        t = self.last_epoch
        cycle = math.floor(1 + t / self.total_size)
        x = 1.0 + t / self.total_size - cycle  # position within the cycle, in [0, 1)
        if x <= self.step_ratio:
            height = x / self.step_ratio
        else:
            height = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else t)
        lrs = [base + (top - base) * height * scale for base, top in zip(self.base_lrs, self.max_lrs)]
        if self.cycle_momentum:
            for group, lo, hi in zip(self.optimizer.param_groups, self.base_momentums, self.max_momentums):
                _set_momentum(self, group, hi - (hi - lo) * height * scale)
        return lrs


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin 2017; fastai's two phases by default): lr rises from
    max_lr / div_factor to max_lr over pct_start of total_steps, then anneals to
    max_lr / (div_factor * final_div_factor); with three_phase=True it first comes back down to the
    initial lr, symmetrically, and then anneals. Momentum (or Adam's beta1) moves inversely between
    max_momentum and base_momentum. Step it per batch; total_steps = epochs * steps_per_epoch."""

    _chainable = False

    def __init__(
        self,
        optimizer,
        max_lr,
        total_steps=None,
        epochs=None,
        steps_per_epoch=None,
        pct_start=0.3,
        anneal_strategy="cos",
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
        div_factor=25.0,
        final_div_factor=1e4,
        three_phase=False,
        last_epoch=-1,
    ):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if total_steps is not None:
            if not _is_int(total_steps) or total_steps <= 0:
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = int(total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            if not _is_int(epochs) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not _is_int(steps_per_epoch) or steps_per_epoch <= 0:
                raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
            self.total_steps = int(epochs) * int(steps_per_epoch)
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        if not isinstance(pct_start, float) or pct_start < 0 or pct_start > 1:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._anneal_func_type = anneal_strategy
        n, up = self.total_steps, float(pct_start * self.total_steps)
        if three_phase:
            self._schedule_phases = [
                dict(
                    end_step=up - 1,
                    start_lr="initial_lr",
                    end_lr="max_lr",
                    start_momentum="max_momentum",
                    end_momentum="base_momentum",
                ),
                dict(
                    end_step=2 * up - 2,
                    start_lr="max_lr",
                    end_lr="initial_lr",
                    start_momentum="base_momentum",
                    end_momentum="max_momentum",
                ),
                dict(
                    end_step=n - 1,
                    start_lr="initial_lr",
                    end_lr="min_lr",
                    start_momentum="max_momentum",
                    end_momentum="max_momentum",
                ),
            ]
        else:
            self._schedule_phases = [
                dict(
                    end_step=up - 1,
                    start_lr="initial_lr",
                    end_lr="max_lr",
                    start_momentum="max_momentum",
                    end_momentum="base_momentum",
                ),
                dict(
                    end_step=n - 1,
                    start_lr="max_lr",
                    end_lr="min_lr",
                    start_momentum="base_momentum",
                    end_momentum="max_momentum",
                ),
            ]
        max_lrs = _per_group("max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for top, group in zip(max_lrs, optimizer.param_groups):
                group["initial_lr"] = top / div_factor
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            _momentum_setup(self, optimizer, max_momentum, base_momentum, last_epoch, keep_bounds=False)
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        t = self.last_epoch
        if t > self.total_steps:
            raise ValueError(f"Tried to step {t} times. The specified number of total steps is {self.total_steps}")
        lrs, momenta = [], []
        last = len(self._schedule_phases) - 1
        for group in self.optimizer.param_groups:
            start = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end = phase["end_step"]
                if t <= end or i == last:
                    pct = (t - start) / (end - start) if end != start else 1.0
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct))
                    if self.cycle_momentum:
                        momenta.append(self._anneal(group[phase["start_momentum"]], group[phase["end_momentum"]], pct))
                    break
                start = end
        for group, m in zip(self.optimizer.param_groups, momenta):
            _set_momentum(self, group, m)
        return lrs


# ---- on plateau --------------------------------------------------------------------------------------------
class ReduceLROnPlateau(LRScheduler):
    """lr = max(lr * factor, min_lr) once the metric has not improved for more than `patience`
    steps (then wait `cooldown` steps); ``step(metric)`` after each evaluation. An improvement is
    a metric below best * (1 - threshold) (mode="min", threshold_mode="rel"), below
    best - threshold ("abs"), or above best * (1 + threshold) / best + threshold for mode="max".
    A reduction smaller than eps is skipped."""

    takes_metrics = True

    def __init__(
        self,
        optimizer,
        mode="min",
        factor=0.1,
        patience=10,
        threshold=1e-4,
        threshold_mode="rel",
        cooldown=0,
        min_lr=0,
        eps=1e-8,
    ):
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        _check_optimizer(optimizer)
        self.factor = factor
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"expected {n} min_lrs, got {len(min_lr)}")
            self.min_lrs = list(min_lr)
            self._per_group_min_lr = True
        else:
            self.min_lrs = [min_lr] * n
            self._per_group_min_lr = False
        self.patience = _positive_int("patience", patience, minimum=0)
        self.cooldown = _positive_int("cooldown", cooldown, minimum=0)
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _group_lrs(optimizer)
        self._init_is_better(mode, threshold, threshold_mode)
        self._reset()

    @property
    def default_min_lr(self):
        """torch's attribute: the scalar min_lr, or None when min_lr was given per group."""
        return None if self._per_group_min_lr else self.min_lrs[0]

    def _init_is_better(self, mode, threshold, threshold_mode) -> None:
        if mode not in ("min", "max"):
            raise ValueError("mode " + str(mode) + " is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError("threshold mode " + str(threshold_mode) + " is unknown!")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return a > (best * (self.threshold + 1.0) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metrics, epoch=None) -> None:
        """Record one evaluation of the monitored metric (a number, or a 0-d array/tensor)."""
        current = float(metrics)
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _group_lrs(self.optimizer)

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self._per_group_min_lr:
                raise RuntimeError(
                    f"The number of param groups in the `optimizer` ({len(groups)}) differs from when "
                    f"`ReduceLROnPlateau` was initialized ({len(self.min_lrs)}), usually due to a new "
                    "param group being added to the optimizer. Please modify the `min_lrs` field to "
                    "match the length of the `optimizer` param groups."
                )
            self.min_lrs = [self.min_lrs[0]] * len(groups)
        for group, floor in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, floor)
            if old - new > self.eps:
                group["lr"] = new

    def load_state_dict(self, state_dict) -> None:
        state = dict(state_dict)
        if "default_min_lr" in state:  # torch's key
            self._per_group_min_lr = state.pop("default_min_lr") is None
        super().load_state_dict(state)
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)


# ---- combinations ------------------------------------------------------------------------------------------
def _check_members(cls_name: str, optimizer, schedulers) -> None:
    for i, s in enumerate(schedulers):
        if not hasattr(s, "optimizer"):
            raise TypeError(f"{cls_name} at index {i} should have `optimizer` as its attribute.")
        if isinstance(s, ReduceLROnPlateau) or getattr(s, "takes_metrics", False):
            raise ValueError(
                f"{cls_name} does not support `ReduceLROnPlateau` scheduler as it requires additional "
                "kwargs to be specified when calling `step`, but got one at index "
                f"{i} in the given schedulers sequence."
            )
        if s.optimizer is not optimizer:
            raise ValueError(
                f"{cls_name} expects all schedulers to belong to the same optimizer, but got scheduler "
                f"{type(s).__name__} at index {i} has {s.optimizer}, which is different from "
                f"{type(optimizer).__name__}."
            )


class _Composite(LRScheduler):
    """A scheduler made of schedulers: their state dicts nest under "_schedulers"."""

    _transient = ("_schedulers",)

    def state_dict(self):
        state = super().state_dict()
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        nested = state.pop("_schedulers", None)
        if nested is not None and len(nested) != len(self._schedulers):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: {len(nested)} scheduler states for "
                f"{len(self._schedulers)} schedulers"
            )
        super().load_state_dict(state)
        for s, sd in zip(self._schedulers, nested or ()):
            s.load_state_dict(sd)


class SequentialLR(_Composite):
    """schedulers[0] until milestones[0], then schedulers[1] from its own t = 0, and so on
    (torch's SequentialLR: the schedulers must have been built on `optimizer`)."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        _check_optimizer(optimizer)
        schedulers = list(schedulers)
        if len(schedulers) < 1:
            raise ValueError(f"{type(self).__name__} expects at least one scheduler, but got no scheduler.")
        _check_members(type(self).__name__, optimizer, schedulers)
        milestones = list(milestones)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more than the "
                f"number of milestone points, but got number of schedulers {len(schedulers)} and the "
                f"number of milestones to be equal to {len(milestones)}"
            )
        if any(not _is_int(m) for m in milestones) or milestones != sorted(milestones):
            raise ValueError(f"Expected increasing integer milestones, but got {milestones}")
        self._schedulers = schedulers
        self._milestones = [int(m) for m in milestones]
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:  # back to the start: undo the members' initial steps
            group["lr"] = group["initial_lr"]
        self._undo(self)
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    @classmethod
    def _undo(cls, sched) -> None:
        if hasattr(sched, "_schedulers"):
            for s in sched._schedulers:
                cls._undo(s)
        elif hasattr(sched, "last_epoch"):
            sched.last_epoch -= 1

    def step(self) -> None:
        self.last_epoch += 1
        i = bisect_right(self._milestones, self.last_epoch)
        sched = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == self.last_epoch:
            sched._update_lr(0)  # the next schedule starts at its own t = 0
        else:
            sched.step()
        self._last_lr = sched.get_last_lr()


class ChainedScheduler(_Composite):
    """Steps every scheduler at each step(), in order; chainable schedules compose (their factors
    multiply)."""

    def __init__(self, schedulers, optimizer=None):
        schedulers = list(schedulers)
        if len(schedulers) < 1:
            raise ValueError(
                f"{type(self).__name__} expects at least one scheduler to be chained, but got no scheduler."
            )
        optimizer = optimizer or schedulers[0].optimizer
        _check_members(type(self).__name__, optimizer, schedulers)
        self._schedulers = schedulers
        self.optimizer = optimizer
        self._last_lr = _group_lrs(optimizer)

    def step(self) -> None:
        for s in self._schedulers:
            s.step()
        self._last_lr = _group_lrs(self.optimizer)


class LinearWarmup(LRScheduler):
    """Linear warmup in front of any schedule (ReduceLROnPlateau included), or of a constant lr.

    LinearWarmup(scheduler, warmup_steps, start_factor) scales the lr the scheduler starts from
    (its value at its t = 0, the groups' lr when this is built) by

        start_factor + (1 - start_factor) * t / warmup_steps      for t < warmup_steps,

    and at t = warmup_steps hands over to the scheduler, which then runs from its own t = 0: the lr
    is the scheduler's starting lr at t = warmup_steps, and every later step steps the scheduler
    (``step(metric)`` for ReduceLROnPlateau; the metrics of steps t <= warmup_steps are ignored).
    The lr sequence is that of torch's
    ``SequentialLR(opt, [LinearLR(opt, start_factor, 1.0, warmup_steps), scheduler], [warmup_steps])``,
    but start_factor may be 0 and any scheduler fits. Pass an optimizer instead of a scheduler for
    a warmup to the groups' lr, constant after."""

    _chainable = False
    _transient = ("scheduler", "takes_metrics")

    def __init__(self, scheduler, warmup_steps, start_factor=1.0 / 3):
        if isinstance(scheduler, Optimizer):
            optimizer, scheduler = scheduler, None
        elif isinstance(getattr(scheduler, "optimizer", None), Optimizer):
            optimizer = scheduler.optimizer
        else:
            raise TypeError(f"{type(scheduler).__name__} is neither a scheduler nor an Optimizer")
        self.warmup_steps = _positive_int("warmup_steps", warmup_steps, minimum=0)
        if not isinstance(start_factor, numbers.Real) or not 0 <= start_factor <= 1:
            raise ValueError("Starting multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.optimizer = optimizer
        self.scheduler = scheduler
        if scheduler is None:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.takes_metrics = bool(getattr(scheduler, "takes_metrics", False))
        self.target_lrs = _group_lrs(optimizer)  # where the warmup ends: the scheduler's lr at its t = 0
        self.base_lrs = list(self.target_lrs)
        self.last_epoch = -1
        self._step_count = 0
        self._advance(None)

    def _factor(self, t) -> float:
        if t >= self.warmup_steps:
            return 1.0
        return self.start_factor + (1.0 - self.start_factor) * t / self.warmup_steps

    def step(self, metrics=None) -> None:
        """One step; `metrics` is passed on to a ReduceLROnPlateau after the warmup."""
        if metrics is not None and not self.takes_metrics:
            raise TypeError(f"{type(self).__name__}.step() takes a metric only in front of ReduceLROnPlateau")
        self._advance(metrics)

    def _advance(self, metrics) -> None:
        t = self.last_epoch + 1
        if t <= self.warmup_steps:
            self._set(t)
        elif self.scheduler is not None:
            if self.takes_metrics:
                if metrics is None:
                    raise TypeError("step() of a warmup in front of ReduceLROnPlateau needs the metric")
                self.scheduler.step(metrics)
            else:
                self.scheduler.step()
        self.last_epoch = t
        self._step_count += 1
        self._last_lr = _group_lrs(self.optimizer)

    def _set(self, t) -> None:
        f = self._factor(t)
        for group, target in zip(self.optimizer.param_groups, self.target_lrs):
            group["lr"] = target * f

    def _update_lr(self, epoch=None) -> None:  # SequentialLR starting this at its t = 0
        if epoch is None:
            return self._advance(None)
        if epoch > self.warmup_steps:
            raise ValueError(f"{type(self).__name__} can jump only within its warmup (epoch <= {self.warmup_steps})")
        self._set(epoch)
        self.last_epoch = epoch
        self._last_lr = _group_lrs(self.optimizer)

    def _initial_step(self) -> None:
        self._step_count = 0
        self._advance(None)

    def state_dict(self):
        state = super().state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        inner = state.pop("scheduler", None)
        super().load_state_dict(state)
        if inner is not None and self.scheduler is not None:
            self.scheduler.load_state_dict(inner)


def warmup(scheduler, steps, start_factor=1.0 / 3) -> LinearWarmup:
    """`steps` steps of linear warmup from start_factor * lr in front of `scheduler` (or of the
    optimizer's constant lr): LinearWarmup(scheduler, steps, start_factor)."""
    return LinearWarmup(scheduler, steps, start_factor)
