"""LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning") and LARS (You et al. 2017),
as timm's Lamb and Lars. LAMB with the names, defaults,
state keys (exp_avg, exp_avg_sq) and group step counter ("step") of timm's Lamb (timm 1.0).

Each step is the kernel table's lamb row: a first fused pass updates the moments and accumulates,
for each parameter on its own, the sums of squares of p and of the update u (deterministic blocks,
even when the parameters are neighbours in one arena); a second pass applies p -= lr trust u with
the parameter's trust ratio ||p|| / ||u||. timm's global gradient clipping (max_grad_norm, on by
default) is one more read of the gradients (their norm), folded into the kernel's grad_scale.

As timm: adaptation (the trust ratio) only where weight_decay != 0, or always_adapt=True. To leave
biases and norm weights out, give them their own group with weight_decay=0 (timm's
param_groups_weight_decay does that): gf.optim.lamb_param_groups(model.named_parameters()).

LARS (the lars row): a reduction pass over p and g gives each parameter's trust ratio, then one
SGD pass with the scaled gradient.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _checks, ops
from ..errors import KernelError
from .optimizer import Optimizer

_NOT_DONE = ("caution", "decoupled_decay", "corrected_weight_decay")


class Lamb(Optimizer):
    """LAMB (timm.optim.Lamb): Adam moments with bias correction, u = m_hat / (sqrt(v_hat) + eps)
    + weight_decay p, per-parameter trust ratio ||p|| / ||u|| (1 when either is 0; at most 1 with
    trust_clip), p -= lr trust u. max_grad_norm: the gradients are divided by
    max(||g|| / max_grad_norm, 1), ||g|| over all parameters of all groups (None: no clipping).
    caution, decoupled_decay and corrected_weight_decay are not implemented (True raises)."""

    _kernel = "lamb"
    _scalar_keys: dict = {}  # timm keeps one step count per group ("step"), none per parameter
    _group_step = True
    _per_tensor = True
    _not_hyper = ("params", "param_names", "step")

    def __init__(
        self,
        params,
        lr=1e-3,
        bias_correction=True,
        betas=(0.9, 0.999),
        eps=1e-6,
        weight_decay=0.01,
        grad_averaging=True,
        max_grad_norm=1.0,
        trust_clip=False,
        always_adapt=False,
        caution=False,
        decoupled_decay=False,
        corrected_weight_decay=False,
        foreach=None,
        *,
        maximize=False,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            bias_correction=bias_correction,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            grad_averaging=grad_averaging,
            max_grad_norm=max_grad_norm,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
            caution=caution,
            decoupled_decay=decoupled_decay,
            corrected_weight_decay=corrected_weight_decay,
            foreach=foreach,
            maximize=maximize,
            step=0,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _validate_extra(self, group):
        # timm clips all groups together with the constructor's max_grad_norm: a group's own value
        # would be ignored there, so here it must be that one (or a bad value is refused).
        value = group.get("max_grad_norm")
        if value is not None:
            if isinstance(value, (str, bytes, bool)) or not hasattr(value, "__float__"):
                raise TypeError(f"Invalid max_grad_norm: {value!r} (expected a number or None)")
            if not float(value) > 0:
                raise ValueError(f"Invalid max_grad_norm: {value} (a number > 0, or None for no clipping)")
        default = self.defaults.get("max_grad_norm")
        if (value is None) != (default is None) or (value is not None and float(value) != float(default)):
            raise ValueError(
                f"Lamb: a group's max_grad_norm ({value}) differs from the constructor's ({default}); the "
                "gradient clip is global over all groups, as timm's (set optimizer.defaults['max_grad_norm'])"
            )
        for key in _NOT_DONE:
            if group.get(key):
                raise NotImplementedError(f"Lamb: {key}=True is not implemented in gradfuse (timm's option)")

    def _step_scalars(self, group, scalars):
        return {"step": int(group["step"]) + 1}

    def _grad_norm(self, grads: list) -> float | None:
        """||g|| over every gradient of every group (None when clipping is off or nothing to clip)."""
        given = [g for g in grads if g is not None]
        if self.defaults["max_grad_norm"] is None or not given:
            return None
        if not all(isinstance(g, np.ndarray) for g in given):  # the step's own checks name the bad one
            return None
        by_dtype: dict = {}
        for g in given:
            by_dtype.setdefault(np.dtype(g.dtype), []).append(g)
        norms = [ops.grad_norm(grads=gs, norm_type=2.0) for gs in by_dtype.values()]
        return norms[0] if len(norms) == 1 else math.sqrt(sum(n * n for n in norms))

    def _step(self, grads: list, grad_scale) -> bool:
        # timm divides the gradients by max(||g|| / max_grad_norm, 1): one more divisor of the
        # kernel's grad_scale (||g|| of the unscaled gradients). A NaN/Inf norm clips nothing
        # (the gradients themselves are then NaN/Inf: skip_nonfinite decides).
        if grad_scale is not None:  # checked (as every optimizer's) before it divides anything here
            try:
                _checks.scalars(self._row, {"grad_scale": grad_scale}, partial=True)
            except KernelError as err:
                raise self._relabel(err, None) from None
        unscale = 1.0 if grad_scale is None else float(grad_scale)
        norm = self._grad_norm(grads)
        clip = 1.0
        if norm is not None and math.isfinite(norm / unscale):
            clip = max(norm / unscale / float(self.defaults["max_grad_norm"]), 1.0)
        scale = grad_scale if clip == 1.0 else unscale * clip
        applied = super()._step(grads, scale)
        if applied:
            for group in self.param_groups:  # timm counts every group's step
                group["step"] = int(group["step"]) + 1
        return applied


class Lars(Optimizer):
    """LARS (timm.optim.Lars): SGD whose gradient, where weight_decay != 0 or always_adapt, is
    (g + weight_decay p) trust with the per-parameter trust = trust_coeff ||p|| / (||g|| +
    weight_decay ||p|| + eps) (1 when either norm is 0; trust_clip: min(trust / lr, 1)); then
    momentum, dampening, nesterov as SGD. State: momentum_buffer (and gradfuse's per-parameter
    step, which starts the buffer; timm starts it when it is missing). Leave biases and norm weights
    out with a weight_decay=0 group: lamb_param_groups(model.named_parameters())."""

    _kernel = "lars"
    _per_tensor = True

    def __init__(
        self,
        params,
        lr=1.0,
        momentum=0,
        dampening=0,
        weight_decay=0,
        nesterov=False,
        trust_coeff=0.001,
        eps=1e-8,
        trust_clip=False,
        always_adapt=False,
        foreach=None,
        *,
        maximize=False,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            trust_coeff=trust_coeff,
            eps=eps,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
            foreach=foreach,
            maximize=maximize,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)


def lamb_param_groups(named_parameters, weight_decay: float = 0.01, no_decay: tuple = ()) -> list:
    """timm's param_groups_weight_decay: 1-D parameters (biases, norm weights) and the names in
    no_decay go into a group with weight_decay=0 (so Lamb does not adapt them), the rest into one
    with weight_decay. Use with Lamb(lamb_param_groups(model.named_parameters()), ...)."""
    decay, plain = [], []
    for name, p in named_parameters:
        (plain if np.ndim(p) <= 1 or name.endswith(".bias") or name in no_decay else decay).append(p)
    return [{"params": plain, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


__all__ = ["Lamb", "Lars", "lamb_param_groups"]
