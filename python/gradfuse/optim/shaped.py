"""Optimizers whose step depends on a parameter's shape: Adafactor (factored second moments of
matrices) and Muon (Newton-Schulz orthogonalised momentum of 2-D weights), with torch 2.13's names,
defaults, validation and state keys.

Their steps are not element-wise, so they are not rows of the kernel table: each parameter steps
through a few whole-array NumPy passes (Adafactor) or GEMMs of gf.ops.matmul (Muon), one
parameter at a time, as torch's single-tensor paths do. They keep the Optimizer API (param groups,
step(grads=None, closure=None), zero_grad, state_dict / load_state_dict, torch state dicts).
"""

from __future__ import annotations

import math

import numpy as np

from .. import ops
from .._config import config
from ..nn.parameter import Parameter, _bfloat16
from .optimizer import Optimizer
from .optimizers import AdamW


def _number(value, what: str, key: str) -> float:
    """A hyperparameter as a float (a 0-d array or tensor as its value, as torch does on the CPU)."""
    if isinstance(value, (str, bytes, bool)) or not hasattr(type(value), "__float__"):
        raise TypeError(f"{what}: {value!r} (expected a number, got {type(value).__name__})")
    if hasattr(value, "numel") and value.numel() != 1:  # torch takes a 1-element tensor
        raise ValueError(f"Tensor {key} must be 1-element")
    if isinstance(value, np.ndarray) and value.ndim != 0:  # as the kernel table's scalars: 0-d only
        raise ValueError(f"Tensor {key} must be 1-element (an array hyperparameter must be 0-d)")
    return float(value)


def _lerp(start: np.ndarray, end: np.ndarray, weight: float, out: np.ndarray | None = None) -> np.ndarray:
    """torch.lerp's formula (two branches on |weight| < 0.5), in the arrays' dtype."""
    w = start.dtype.type(weight)
    if abs(w) < 0.5:
        return np.add(start, w * (end - start), out=out)
    return np.subtract(end, (end - start) * (start.dtype.type(1) - w), out=out)


class _ShapedOptimizer(Optimizer):
    """The Optimizer API for steps written per parameter in Python: the state arrays live in each
    parameter's state dict (their shapes need not be the parameter's)."""

    _array_keys: tuple = ()

    def _validate(self, group: dict) -> dict:
        self._check(group)
        return {}

    def _check(self, group: dict) -> None:
        raise NotImplementedError

    def step(self, grads=None, closure=None):
        """One step over every parameter group (grads: as Optimizer.step). Returns the closure's
        loss when a closure is given, else True."""
        loss = closure() if closure is not None else None
        grads = self._grads(grads)
        with self._lock:
            work, pos = [], 0  # everything is checked before the first parameter changes
            for group, rec in zip(self.param_groups, self._groups):
                self._check(group)
                gs = grads[pos : pos + len(rec.slots)]
                pos += len(rec.slots)
                for slot, g in zip(rec.slots, gs):
                    if g is None:
                        continue
                    g = np.asarray(g)
                    if g.shape != slot.data.shape or g.dtype != slot.data.dtype:
                        raise ValueError(
                            f"{type(self).__name__}.step: a gradient of shape {g.shape} and dtype {g.dtype} "
                            f"for a parameter of shape {slot.data.shape} and dtype {slot.data.dtype}"
                        )
                    work.append((group, slot, g))
            for group, slot, g in work:
                self._update(group, slot, g)
        return loss if closure is not None else True

    def _update(self, group: dict, slot, grad: np.ndarray) -> None:
        raise NotImplementedError

    def _stage_entry(self, entry, slot, index) -> tuple[dict, dict]:
        """A saved state entry (ours or torch's): arrays copied as they are, step as an int."""
        if not entry:
            return {}, {}
        out = {}
        for key, value in entry.items():
            if key == "step":
                number = np.asarray(value).item()
                if not (number == int(number) and number >= 0):
                    raise ValueError(f"state of parameter {index}: step must be a whole number >= 0, got {value!r}")
                out[key] = int(number)
            elif key in self._array_keys:
                out[key] = np.array(np.asarray(value), dtype=slot.data.dtype)
            else:
                raise ValueError(f"state of parameter {index}: unknown key {key!r} for {type(self).__name__}")
        return {}, out


class Adafactor(_ShapedOptimizer):
    """Adafactor (Shazeer & Stern 2018) as torch.optim.Adafactor: for a parameter of 2 or more
    dimensions, the second moment is kept factored as row and column means over the last two
    (state "row_var", shape (..., R, 1), and "col_var", (..., 1, C)); a vector keeps "variance".
    beta2 at step t is 1 - t**beta2_decay; the step is relative to the parameter's RMS (at least
    eps[1]) times min(lr, 1/sqrt(t)), and the update's RMS is clipped to d. eps[0] (None: the
    dtype's machine epsilon) bounds the variance from below. Decoupled weight decay."""

    _array_keys = ("row_var", "col_var", "variance")

    def __init__(
        self,
        params,
        lr=1e-2,
        beta2_decay=-0.8,
        eps=(None, 1e-3),
        d=1.0,
        weight_decay=0.0,
        *,
        foreach=None,
        maximize=False,
    ):
        defaults = dict(
            lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay, foreach=foreach, maximize=maximize
        )
        super().__init__(params, defaults)

    def _check(self, g: dict) -> None:
        lr = _number(g["lr"], "Invalid learning rate", "lr")
        if not lr >= 0.0:
            raise ValueError(f"Learning rate should be >= 0 but is: {g['lr']}")
        if not _number(g["beta2_decay"], "Invalid beta2_decay", "beta2_decay") <= 0.0:
            raise ValueError(f"beta2_decay should be <= 0 but is: {g['beta2_decay']}")
        eps = g["eps"]
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise TypeError(f"Invalid eps: {eps!r} (expected a pair (eps1 or None, eps2))")
        if eps[0] is not None and not _number(eps[0], "Invalid epsilon1", "eps") >= 0.0:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not _number(eps[1], "Invalid epsilon2", "eps") >= 0.0:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not _number(g["d"], "Invalid d", "d") >= 1.0:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {g['d']}")
        if not _number(g["weight_decay"], "Invalid weight_decay", "weight_decay") >= 0.0:
            raise ValueError(f"weight_decay should be >= 0 but is: {g['weight_decay']}")

    def _update(self, group: dict, slot, grad: np.ndarray) -> None:
        p, state = slot.data, slot.state
        dt = p.dtype.type
        if not state:
            state["step"] = 0
            if p.ndim > 1:
                state["row_var"] = np.zeros(p.shape[:-1] + (1,), p.dtype)
                state["col_var"] = np.zeros(p.shape[:-2] + (1, p.shape[-1]), p.dtype)
            else:
                state["variance"] = np.zeros_like(p)
        lr, wd, d = (float(group[k]) for k in ("lr", "weight_decay", "d"))
        eps1, eps2 = group["eps"]
        eps1 = np.finfo(p.dtype).eps if eps1 is None else float(eps1)
        if group["maximize"]:
            grad = -grad
        step = state["step"] + 1
        one_minus_beta2 = float(step) ** float(group["beta2_decay"])
        rho = min(lr, 1 / (float(step) ** 0.5))
        alpha = max(float(eps2), float(np.linalg.norm(p.reshape(-1))) / (p.size**0.5)) * rho
        if wd != 0:
            p *= dt(1 - lr * wd)
        if p.ndim > 1:
            sq = grad * grad
            # torch: norm(...).square() / n, the square root taken and undone as torch does
            row_mean = np.square(np.sqrt(sq.sum(axis=-1, keepdims=True))) / dt(grad.shape[-1])
            col_mean = np.square(np.sqrt(sq.sum(axis=-2, keepdims=True))) / dt(grad.shape[-2])
            row_var, col_var = state["row_var"], state["col_var"]
            _lerp(row_var, row_mean, one_minus_beta2, out=row_var)
            _lerp(col_var, col_mean, one_minus_beta2, out=col_var)
            var = row_var * col_var  # the outer product torch takes as row_var @ col_var
            var /= np.maximum(row_var.mean(axis=-2, keepdims=True), dt(eps1))
        else:
            variance = state["variance"]
            _lerp(variance, grad * grad, one_minus_beta2, out=variance)
            var = variance.copy()
        np.maximum(var, dt(eps1 * eps1), out=var)
        update = np.sqrt(var, out=var)
        np.divide(grad, update, out=update)  # torch: rsqrt(var) * grad
        denom = max(1.0, float(np.linalg.norm(update.reshape(-1))) / ((update.size**0.5) * float(d)))
        update *= dt(-alpha / denom)
        p += update
        state["step"] = step


# ---- Muon -------------------------------------------------------------------------------------------------
_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def _bf16(x: np.ndarray) -> np.ndarray:
    return x.astype(_bfloat16())


def newton_schulz(grad: np.ndarray, ns_coefficients=_NS_COEFFICIENTS, ns_steps: int = 5, eps: float = 1e-7):
    """The quintic Newton-Schulz orthogonalisation torch.optim.Muon applies to a 2-D update, in
    bfloat16 as torch does on every device (its CPU path included): each GEMM takes bf16 operands
    and accumulates in float32 (gf.ops.matmul), and its result is rounded to bf16. Returns an
    ml_dtypes.bfloat16 array of grad's shape."""
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if grad.ndim != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    f32 = np.float32
    a, b, c = (f32(float(x)) for x in ns_coefficients)
    tall = grad.shape[0] > grad.shape[1]
    x = np.ascontiguousarray(_bf16(grad.T if tall else grad))
    norm = _bf16(np.array(np.linalg.norm(x.astype(f32).reshape(-1)), f32))  # torch: a bf16 norm
    norm = max(norm, _bf16(np.array(eps, f32)))
    x = _bf16(x.astype(f32) / f32(norm))
    # bf16 operands where the GEMM has bf16 units; elsewhere their float32 widening (the same
    # exact products and float32 sums; the bf16 fallback GEMM would widen them on every call)
    native = config()["gemm_bf16_backend"] != "fallback"
    operand = (lambda v: v) if native else (lambda v: v.astype(f32))
    m, n = x.shape
    gram32 = np.empty((m, m), f32)
    prod32 = np.empty((m, m), f32)
    x_next32 = np.empty((m, n), f32)
    x_op = operand(x)
    for _ in range(int(ns_steps)):
        ops.matmul(x_op, x_op, gram32, trans_b=True)  # X X^T
        gram = operand(_bf16(gram32))
        ops.matmul(gram, gram, prod32)
        np.multiply(prod32, c, out=prod32)  # addmm(gram, gram, gram, beta=b, alpha=c), one rounding
        prod32 += b * gram.astype(f32, copy=False)
        update = operand(_bf16(prod32))
        ops.matmul(update, x_op, x_next32)  # addmm(X, update, X, beta=a)
        x_next32 += a * x_op.astype(f32, copy=False)
        x = _bf16(x_next32)
        x_op = operand(x)
    return x.T if tall else x


def _adjust_lr(lr: float, adjust_lr_fn, shape) -> float:
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


class Muon(_ShapedOptimizer):
    """Muon (Jordan et al. 2024) as torch.optim.Muon: momentum (state "momentum_buffer"), Nesterov
    by default, orthogonalised by newton_schulz() (bf16 GEMMs through gf.ops.matmul), decoupled
    weight decay, the learning rate scaled for the matrix's shape (adjust_lr_fn "original":
    sqrt(max(1, rows/cols)); "match_rms_adamw": 0.2 sqrt(max(rows, cols))).

    Like torch, Muon takes 2-D parameters only: give the rest (biases, norms, embeddings) to AdamW.
    muon_with_adamw(params) gives both as one optimizer (MuonWithAdamW)."""

    _array_keys = ("momentum_buffer",)

    def __init__(
        self,
        params,
        lr=1e-3,
        weight_decay=0.1,
        momentum=0.95,
        nesterov=True,
        ns_coefficients=_NS_COEFFICIENTS,
        eps=1e-7,
        ns_steps=5,
        adjust_lr_fn=None,
    ):
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        super().__init__(params, defaults)
        for rec in self._groups:
            for slot in rec.slots:
                if slot.data.ndim != 2:
                    raise ValueError(
                        "Muon only supports 2D parameters whereas we found a parameter with size: "
                        f"{tuple(slot.data.shape)} (give the others to AdamW: gf.optim.muon_with_adamw)"
                    )

    def _check(self, g: dict) -> None:
        if not _number(g["lr"], "Invalid learning rate", "lr") >= 0.0:
            raise ValueError(f"Learning rate should be >= 0 but is: {g['lr']}")
        if not _number(g["momentum"], "Invalid momentum", "momentum") >= 0.0:
            raise ValueError(f"momentum should be >= 0 but is: {g['momentum']}")
        if not _number(g["weight_decay"], "Invalid weight_decay", "weight_decay") >= 0.0:
            raise ValueError(f"weight decay should be >= 0 but is: {g['weight_decay']}")
        if g["adjust_lr_fn"] is not None and g["adjust_lr_fn"] not in ("original", "match_rms_adamw"):
            raise ValueError(f"Adjust learning rate function {g['adjust_lr_fn']} is not supported")
        if int(g["ns_steps"]) >= 100:
            raise ValueError("Number of steps must be less than 100 for computational efficiency")
        if len(g["ns_coefficients"]) != 3:
            raise ValueError("Coefficients must be a tuple of exactly 3 values")

    def _update(self, group: dict, slot, grad: np.ndarray) -> None:
        p, state = slot.data, slot.state
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = np.zeros_like(p)
        momentum, lr, wd = float(group["momentum"]), float(group["lr"]), float(group["weight_decay"])
        _lerp(buf, grad, 1 - momentum, out=buf)
        update = _lerp(grad, buf, momentum) if group["nesterov"] else buf
        ortho = newton_schulz(update, group["ns_coefficients"], int(group["ns_steps"]), float(group["eps"]))
        p *= p.dtype.type(1 - lr * wd)
        p += p.dtype.type(-_adjust_lr(lr, group["adjust_lr_fn"], p.shape)) * ortho.astype(p.dtype)


class MuonWithAdamW:
    """Muon on the 2-D parameters and AdamW on the others, as one optimizer (what torch's Muon docs
    build by hand with two): step, zero_grad, param_groups (Muon's groups, then AdamW's),
    state_dict / load_state_dict ({"muon": ..., "adamw": ...}); gf.train.fit takes it.
    step(grads): one gradient per parameter in the order the parameters were given."""

    def __init__(self, muon: Muon, adamw: Optimizer | None, order: list):
        self.muon, self.adamw, self._order = muon, adamw, order

    @property
    def param_groups(self) -> list:
        return self.muon.param_groups + (self.adamw.param_groups if self.adamw else [])

    def step(self, grads=None, closure=None):
        loss = closure() if closure is not None else None
        split = [None, None] if grads is None else [[], []]
        if grads is not None:
            grads = list(grads)
            if len(grads) != len(self._order):
                raise ValueError(f"step(): got {len(grads)} gradients for {len(self._order)} parameters")
            for which, g in zip(self._order, grads):
                split[which].append(g)
        self.muon.step(split[0])
        if self.adamw is not None:
            self.adamw.step(split[1])
        return loss if closure is not None else True

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in (self.muon, self.adamw):
            if opt is not None:
                opt.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict() if self.adamw else None}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        if self.adamw is not None:
            self.adamw.load_state_dict(state_dict["adamw"])


def muon_with_adamw(
    params,
    *,
    lr=1e-3,
    weight_decay=0.1,
    adamw_lr=None,
    adamw_betas=(0.9, 0.999),
    adamw_weight_decay=0.01,
    **muon_kwargs,
) -> MuonWithAdamW:
    """Muon for the 2-D parameters, AdamW for the rest (biases, norms), as torch's Muon docs
    suggest, in one MuonWithAdamW (its .muon, .adamw: None when every parameter is 2-D).
    adamw_lr: AdamW's learning rate (None: lr); muon_kwargs: Muon's other arguments."""
    params = list(params)
    order = [0 if np.ndim(p.data if isinstance(p, Parameter) else p) == 2 else 1 for p in params]
    matrices = [p for p, which in zip(params, order) if which == 0]
    rest = [p for p, which in zip(params, order) if which == 1]
    if not matrices:
        raise ValueError("muon_with_adamw: no 2-D parameter to give to Muon")
    muon = Muon(matrices, lr=lr, weight_decay=weight_decay, **muon_kwargs)
    adamw_lr = lr if adamw_lr is None else adamw_lr
    adamw = AdamW(rest, lr=adamw_lr, betas=adamw_betas, weight_decay=adamw_weight_decay) if rest else None
    return MuonWithAdamW(muon, adamw, order)


__all__ = ["Adafactor", "Muon", "MuonWithAdamW", "muon_with_adamw", "newton_schulz"]
