"""Gradient clipping with torch.nn.utils' API, over the fused clip kernels (gf.ops.grad_norm,
clip_grad_norm, clip_grad_norm_per_tensor, clip_grad_value; contract in cpp/include/gradfuse/clip.hpp).

    total = gf.optim.clip_grad_norm_(params, max_norm=1.0)    # torch.nn.utils.clip_grad_norm_
    gf.optim.clip_grad_value_(params, clip_value=0.5)         # torch.nn.utils.clip_grad_value_
    norms = gf.optim.clip_grad_norm_per_param_(params, 1.0)   # each gradient to its own norm
    total = gf.optim.grad_norm(params)                        # torch.nn.utils.get_total_norm

`parameters` is what torch takes, in gradfuse's terms:
- gf.nn.Parameter objects: their `.grad` is clipped; a Parameter whose grad is None is skipped (as
  torch skips tensors without .grad), and so is a frozen one (trainable=False, the counterpart of
  torch's requires_grad=False: an optimizer does not step it, so its gradient is not part of the norm);
- plain ndarrays: they ARE the gradients (a parameter array has no .grad to find);
- an Optimizer: the gradients of its parameters, in param-group order;
- one of these alone, or any iterable of Parameters and arrays (a generator too).

One kernel call per dtype: the whole list in one pass. Gradients of ParameterArena parameters are
passed as flat views of the arena's gradient buffer, one per run of neighbours: an arena is ONE
segment, whatever its number of parameters (and the kernel would merge its views anyway: the result
is the same). The total norm is accumulated in double, deterministic (bitwise the same for every
thread count and ISA path) and returned as a Python float, where torch returns a 0-d tensor.
Differences from torch: norm_type must be > 0 or inf (torch also has 0 and -inf), max_norm and
clip_value must be >= 0 (inf allowed), `foreach` is accepted and ignored (every call is fused).
Every argument is checked before anything is written; an error leaves every gradient unchanged.
"""

from __future__ import annotations

import math
import types
import warnings

import numpy as np

from .. import _checks, ops
from ..errors import KernelError, label
from ..nn.parameter import Parameter
from ..table import KERNELS
from .optimizer import Optimizer

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grad_norm_per_param_", "grad_norm"]

_NONFINITE = (
    "The total norm of order {p} for gradients from `parameters` is non-finite, so it cannot be clipped. "
    "To disable this error and scale the gradients by the non-finite norm anyway, set "
    "`error_if_nonfinite=False`"
)


class _Grads:
    """The gradients found in `parameters`: arrays grouped by dtype, and how to name each one."""

    def __init__(self, fn: str, parameters, *, merge_arenas: bool):
        self.fn = fn
        items = _items(fn, parameters)
        self.count = len(items)  # parameters seen (the per-parameter results' length)
        self.arrays: list = []  # the arrays passed to the kernels
        self.labels: list[str] = []  # how errors name arrays[k]
        self.owner: list[int] = []  # arrays[k] -> index in items (-1 for an arena run)
        run = None  # [arena, first item, last item, start, end]: an open arena run
        for i, item in enumerate(items):
            if isinstance(item, Parameter):
                if not item.trainable or item.grad is None:
                    continue
                g = item.grad
                if merge_arenas and item._arena is not None and g is item._arena_grad:
                    if run is not None and run[0] is item._arena and run[4] == item._offset:
                        run[2], run[4] = i, item._offset + item.size
                        continue
                    self._close(run)
                    run = [item._arena, i, i, item._offset, item._offset + item.size]
                    continue
                label = f"parameters[{i}].grad"
            elif isinstance(item, np.ndarray):
                g, label = item, f"parameters[{i}]"
            else:
                raise TypeError(
                    f"{fn}: parameters[{i}] must be a gradfuse Parameter or a numpy.ndarray (a gradient), "
                    f"got {type(item).__name__}"
                )
            self._close(run)
            run = None
            self.arrays.append(g)
            self.labels.append(label)
            self.owner.append(i)
        self._close(run)
        groups: dict = {}
        for k, g in enumerate(self.arrays):
            groups.setdefault(getattr(g, "dtype", None), []).append(k)
        self.groups = list(groups.values())  # indices into arrays, one list per dtype

    def _close(self, run) -> None:
        if run is not None:
            arena, first, last, start, end = run
            self.arrays.append(arena.grad[start:end])
            self.labels.append(
                f"parameters[{first}].grad"
                if first == last
                else f"parameters[{first}:{last + 1}] (their arena's gradients)"
            )
            self.owner.append(-1)

    def group(self, k: int) -> list:
        return [self.arrays[j] for j in self.groups[k]]

    def call(self, k: int, kernel, **kwargs):
        """kernel(group k, ...); an error is re-raised naming this function and the parameter
        instead of the kernel and its list index."""
        try:
            return kernel(self.group(k), **kwargs)
        except KernelError as err:
            raise self._relabel(err, k) from None

    def check_all(self, kernel: str, **kwargs) -> None:
        """Every group's arrays checked as the kernel checks them, before any kernel writes."""
        row = KERNELS[kernel]
        for k in range(len(self.groups)):
            try:
                _checks.call(row, {**row.defaults(), **kwargs, "grads": self.group(k)})
            except KernelError as err:
                raise self._relabel(err, k) from None

    def _relabel(self, err: KernelError, k: int) -> KernelError:
        idx = self.groups[k]

        def name(argument, index):
            return self.labels[idx[index or 0]] if argument == "grads" else label(argument, index)

        return err.relabel(self.fn, name)


def _items(fn: str, parameters) -> list:
    if isinstance(parameters, Optimizer):
        items = [p for group in parameters.param_groups for p in group["params"]]
        for i, p in enumerate(items):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"{fn}: the optimizer's parameter {i} is a plain ndarray, which has no .grad: pass "
                    "the gradient arrays themselves"
                )
        return items
    if isinstance(parameters, (np.ndarray, Parameter)):
        return [parameters]
    is_generator = isinstance(parameters, types.GeneratorType)
    try:
        items = list(parameters)
    except TypeError:
        raise TypeError(
            f"{fn}: parameters must be a Parameter, an ndarray, an Optimizer or an iterable of Parameters and "
            f"ndarrays, got {type(parameters).__name__}"
        ) from None
    if is_generator and not items:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3)
    return items


def _check_scalars(fn: str, kernel: str, **kwargs) -> None:
    """The kernel's checks of its scalar arguments (the kernel table's), naming fn."""
    try:
        _checks.scalars(KERNELS[kernel], kwargs, partial=True)
    except KernelError as err:
        raise err.relabel(fn) from None


def _combine(norms: list, p: float) -> float:
    """The p-norm of per-dtype norms (= the norm of all the gradients), without overflow."""
    if any(n != n for n in norms):
        return math.nan
    m = max(norms, default=0.0)
    if math.isinf(p) or m == 0 or math.isinf(m):
        return m
    if p == 2:
        return math.hypot(*norms)
    return m * math.pow(math.fsum((n / m) ** p for n in norms), 1.0 / p)


def _scale(arrays: list, coef: float) -> None:
    """g *= coef rounded to g's dtype: the kernels' scaling pass (bitwise the same)."""
    with np.errstate(all="ignore"):
        for g in arrays:
            np.multiply(g, g.dtype.type(coef), out=g)


def grad_norm(parameters, norm_type=2.0, error_if_nonfinite=False) -> float:
    """The p-norm of all the gradients together, as one vector (torch.nn.utils.get_total_norm).

    norm_type: 2, 1, inf ("inf" too) or any p > 0. Returns a float (0.0 when there are no gradients).
    error_if_nonfinite: raise RuntimeError (torch's message) when the norm is NaN or Inf.
    """
    p = float(norm_type)
    grads = _Grads("grad_norm", parameters, merge_arenas=True)
    _check_scalars("grad_norm", "grad_norm", norm_type=p)  # even when there is nothing to measure
    norms = [grads.call(k, ops.grad_norm, norm_type=p) for k in range(len(grads.groups))]
    total = norms[0] if len(norms) == 1 else _combine(norms, p)  # no gradients: 0.0
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(_NONFINITE.format(p=p))
    return total


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None) -> float:
    """torch.nn.utils.clip_grad_norm_: scale the gradients in place so that their total p-norm is
    at most max_norm, and return the total norm from BEFORE clipping (a float).

    Every gradient is multiplied by min(max_norm / (total + 1e-6), 1), torch's formula; the scaling
    pass runs only when that is below 1. error_if_nonfinite: a NaN/Inf total raises RuntimeError
    (torch's message) and nothing is written; without it a NaN total makes every gradient NaN and an
    infinite one zeroes them, as in torch. `foreach` is ignored (the call is always fused).
    """
    max_norm, p = float(max_norm), float(norm_type)
    grads = _Grads("clip_grad_norm_", parameters, merge_arenas=True)
    _check_scalars("clip_grad_norm_", "clip_grad_norm", max_norm=max_norm, norm_type=p)
    if len(grads.groups) <= 1:  # the common case: one kernel call, which checks, measures and scales
        if not grads.groups:
            return 0.0
        try:
            return grads.call(
                0, ops.clip_grad_norm, max_norm=max_norm, norm_type=p, error_if_nonfinite=error_if_nonfinite
            )
        except RuntimeError:
            raise RuntimeError(_NONFINITE.format(p=p)) from None
    # Several dtypes (one kernel call takes one): every list checked, one norm per dtype, combined,
    # then each list scaled by the common coefficient.
    grads.check_all("clip_grad_norm", max_norm=max_norm, norm_type=p)
    total = _combine([grads.call(k, ops.grad_norm, norm_type=p) for k in range(len(grads.groups))], p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(_NONFINITE.format(p=p))
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:
        for k in range(len(grads.groups)):
            _scale(grads.group(k), coef)
    return total


def clip_grad_value_(parameters, clip_value, foreach=None) -> None:
    """torch.nn.utils.clip_grad_value_: clamp every gradient in place to [-clip_value, clip_value]
    (NaN stays NaN). `foreach` is ignored (the call is always fused)."""
    v = float(clip_value)
    grads = _Grads("clip_grad_value_", parameters, merge_arenas=True)
    _check_scalars("clip_grad_value_", "clip_grad_value", clip_value=v)
    if len(grads.groups) > 1:
        grads.check_all("clip_grad_value", clip_value=v)
    for k in range(len(grads.groups)):
        grads.call(k, ops.clip_grad_value, clip_value=v)


def clip_grad_norm_per_param_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False) -> list:
    """Per-parameter norm clipping (not in torch): each gradient is scaled in place to its OWN p-norm,
    g *= min(max_norm / (||g|| + 1e-6), 1), in one fused call.

    Returns the norms before clipping, one per parameter in the order given (for an Optimizer: its
    parameters in param-group order); None where a parameter was skipped (no grad, or frozen).
    error_if_nonfinite: a NaN/Inf norm raises RuntimeError and nothing is written.
    """
    max_norm, p = float(max_norm), float(norm_type)
    grads = _Grads("clip_grad_norm_per_param_", parameters, merge_arenas=False)
    _check_scalars("clip_grad_norm_per_param_", "clip_grad_norm_per_tensor", max_norm=max_norm, norm_type=p)
    out: list = [None] * grads.count

    def clip(k: int, bound: float) -> None:
        try:
            norms = grads.call(
                k, ops.clip_grad_norm_per_tensor, max_norm=bound, norm_type=p, error_if_nonfinite=error_if_nonfinite
            )
        except RuntimeError:
            bad = next(j for j in grads.groups[k] if not math.isfinite(ops.grad_norm(grads.arrays[j], norm_type=p)))
            raise RuntimeError(
                f"The norm of order {p} of {grads.labels[bad]} is non-finite, so it cannot be clipped. "
                "To disable this error and scale the gradients by the non-finite norm anyway, set "
                "`error_if_nonfinite=False`"
            ) from None
        for j, n in zip(grads.groups[k], norms):
            out[grads.owner[j]] = n

    if len(grads.groups) > 1:
        grads.check_all("clip_grad_norm_per_tensor", max_norm=max_norm, norm_type=p)
        if error_if_nonfinite:  # a measuring pass over every list first: max_norm inf writes nothing
            for k in range(len(grads.groups)):
                clip(k, math.inf)
    for k in range(len(grads.groups)):
        clip(k, max_norm)
    return out
