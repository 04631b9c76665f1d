"""The seeds' second-order methods, for models with an explicit backward (gf.nn) or any closure:
a line search (backtracking Armijo, strong Wolfe), nonlinear conjugate gradients, Newton's method
and Hessian-free optimization (Martens 2010), with linear CG as their solver.

They take torch's closure contract: opt.step(closure), where closure() computes the loss, writes
each p.grad (gf.nn.Parameter) and returns the loss. gf.optim.ModelClosure(model, loss, x, y) is
that closure for a gf.nn model on a (full) batch; it also gives the Gauss-Newton products
HessianFree needs (a forward-mode pass, Module.jvp, then the loss's Hessian, then the backward).
The arithmetic runs in float64 over the parameters concatenated into one vector (these methods
are for small and medium models, where a step costs many closure calls, not one kernel).

Every step is bounded: a line search stops after max_evaluations closure calls, CG after
max_iter products, and a NaN or Inf loss ends a step with the parameters unchanged and
`opt.status` saying why; step() never loops forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..losses import get_loss
from ..nn.parameter import Parameter
from .clip import grad_norm

__all__ = [
    "LineSearchResult",
    "line_search",
    "CGResult",
    "linear_cg",
    "ModelClosure",
    "ConjugateGradient",
    "Newton",
    "HessianFree",
]


# ---- line search ------------------------------------------------------------------------------------
@dataclass
class LineSearchResult:
    """What a line search found. step: the accepted step length (0.0 when none was accepted, with
    x unchanged); loss / grad: f and its gradient at x + step * direction (at x when step is 0);
    evaluations: calls of f_and_grad; steps: every step length tried, in order; armijo / curvature:
    whether the sufficient-decrease and the (strong) curvature condition hold at the accepted step;
    status: "converged" (the method's conditions hold), "not_descent" (direction . grad >= 0:
    nothing tried), "nonfinite" (f(x) or its gradient is NaN/Inf), "max_evaluations" (the budget ran
    out: the best Armijo point found, if any, is returned)."""

    step: float
    loss: float
    grad: np.ndarray
    evaluations: int
    status: str
    armijo: bool = False
    curvature: bool = False
    steps: list = field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.status == "converged"


def _finite(value, grad) -> bool:
    return math.isfinite(value) and bool(np.all(np.isfinite(grad)))


def _cubic_min(a, fa, ga, b, fb, gb):
    """The minimizer of the cubic through (a, fa, ga), (b, fb, gb), kept inside [a, b]'s middle
    (bisection where the cubic has none): Nocedal & Wright (3.59), safeguarded."""
    lo, hi = min(a, b), max(a, b)
    d1 = ga + gb - 3 * (fa - fb) / (a - b)
    square = d1 * d1 - ga * gb
    if square >= 0:
        d2 = math.copysign(math.sqrt(square), b - a)
        denom = gb - ga + 2 * d2
        if denom != 0:
            t = b - (b - a) * (gb + d2 - d1) / denom
            margin = 0.1 * (hi - lo)  # never at an end: the bracket must shrink
            if lo + margin <= t <= hi - margin:
                return t
    return 0.5 * (lo + hi)


def line_search(
    f_and_grad,
    x,
    direction,
    *,
    loss=None,
    grad=None,
    step=1.0,
    method="armijo",
    c1=1e-4,
    c2=0.9,
    shrink=0.5,
    max_step=1e10,
    max_evaluations=25,
) -> LineSearchResult:
    """A step length along `direction` from x, for f_and_grad(x) -> (loss, gradient).

    method="armijo": backtracking from `step`, multiplying by `shrink` until the sufficient
    decrease f(x + a d) <= f(x) + c1 a g.d holds. method="strong_wolfe": Nocedal & Wright's
    Algorithm 3.5/3.6 (bracketing by doubling up to max_step, then zooming with safeguarded cubic
    interpolation) for the strong Wolfe conditions: sufficient decrease and |g(x + a d).d| <= c2 |g.d|.

    loss, grad: f and its gradient at x when known (else one evaluation computes them). x is not
    changed; f_and_grad gets float64 vectors of x's size. Never more than max_evaluations calls."""
    if method not in ("armijo", "strong_wolfe"):
        raise ValueError(f"line_search: method must be 'armijo' or 'strong_wolfe', got {method!r}")
    if not 0 < c1 < 1 or not (method == "armijo" or c1 < c2 < 1):
        raise ValueError(f"line_search: need 0 < c1 < c2 < 1 (strong Wolfe: c2 is used too), got c1={c1}, c2={c2}")
    if not 0 < shrink < 1:
        raise ValueError(f"line_search: shrink must be in (0, 1), got {shrink}")
    if not (math.isfinite(step) and step > 0) or not max_step >= step:
        raise ValueError(f"line_search: need 0 < step <= max_step (finite), got step={step}, max_step={max_step}")
    if int(max_evaluations) < 1:
        raise ValueError(f"line_search: max_evaluations must be >= 1, got {max_evaluations}")
    x = np.asarray(x, dtype=np.float64).ravel()
    d = np.asarray(direction, dtype=np.float64).ravel()
    if d.shape != x.shape:
        raise ValueError(f"line_search: direction has {d.size} elements, x has {x.size}")
    count = 0
    if loss is None or grad is None:
        loss, grad = f_and_grad(x.copy())
        count = 1
    loss, grad = float(loss), np.asarray(grad, dtype=np.float64).ravel()
    tried: list = []

    def result(status, a=0.0, fa=loss, ga=grad, armijo=False, curvature=False):
        return LineSearchResult(float(a), float(fa), ga, count, status, armijo, curvature, tried)

    if not _finite(loss, grad) or not np.all(np.isfinite(d)):
        return result("nonfinite")
    slope0 = float(grad @ d)
    if not slope0 < 0:
        return result("not_descent")

    def phi(a):
        nonlocal count
        count += 1
        tried.append(float(a))
        fa, ga = f_and_grad(x + a * d)
        ga = np.asarray(ga, dtype=np.float64).ravel()
        return float(fa), ga, float(ga @ d)

    def armijo(a, fa):
        return fa <= loss + c1 * a * slope0

    def curvature(sa):
        return abs(sa) <= -c2 * slope0

    if method == "armijo":
        a = float(step)
        while count < max_evaluations:
            fa, ga, sa = phi(a)
            if _finite(fa, ga) and armijo(a, fa):
                return result("converged", a, fa, ga, True, curvature(sa))
            a *= shrink  # a NaN or Inf trial: the step was too long, shrink it as well
        return result("max_evaluations")

    # strong Wolfe: bracket, then zoom (the ends are (step, f, slope) triples)
    best = None  # the lowest Armijo point seen, returned when the budget runs out
    prev = (0.0, loss, slope0, grad)
    a = float(step)
    bracket = None
    while count < max_evaluations:
        fa, ga, sa = phi(a)
        if not _finite(fa, ga):  # too long a step: look between the last good one and here
            a = 0.5 * (prev[0] + a)
            continue
        if armijo(a, fa) and (best is None or fa < best[1]):
            best = (a, fa, sa, ga)
        if not armijo(a, fa) or (len(tried) > 1 and fa >= prev[1]):
            bracket = (prev, (a, fa, sa, ga))
            break
        if curvature(sa):
            return result("converged", a, fa, ga, True, True)
        if sa >= 0:
            bracket = ((a, fa, sa, ga), prev)
            break
        if a >= max_step:
            break
        prev, a = (a, fa, sa, ga), min(2.0 * a, max_step)
    if bracket is not None:
        lo, hi = bracket
        while count < max_evaluations:
            a = _cubic_min(lo[0], lo[1], lo[2], hi[0], hi[1], hi[2])
            fa, ga, sa = phi(a)
            if not _finite(fa, ga):
                hi = (a, math.inf, 0.0, None)
                continue
            if not armijo(a, fa) or fa >= lo[1]:
                hi = (a, fa, sa, ga)
                continue
            if best is None or fa < best[1]:
                best = (a, fa, sa, ga)
            if curvature(sa):
                return result("converged", a, fa, ga, True, True)
            if sa * (hi[0] - lo[0]) >= 0:
                hi = lo
            lo = (a, fa, sa, ga)
            if abs(hi[0] - lo[0]) <= 1e-12 * max(1.0, lo[0]):
                break
    if best is not None:
        return result("max_evaluations", best[0], best[1], best[3], True, curvature(best[2]))
    return result("max_evaluations")


# ---- linear conjugate gradients ----------------------------------------------------------------------
@dataclass
class CGResult:
    """x: the solution; iterations: matrix-vector products used; residual_norm: ||b - A x||;
    status: "converged", "max_iter", "not_positive_definite" (p^T A p <= 0: x is the last iterate
    before it), "nonfinite"; iterates: (iteration, x, residual) at the saved iterations (HessianFree's
    CG backtracking); quadratic: the model value x^T A x / 2 - b^T x after each iteration."""

    x: np.ndarray
    iterations: int
    residual_norm: float
    status: str
    iterates: list = field(default_factory=list)
    quadratic: list = field(default_factory=list)


def linear_cg(
    matvec, b, x0=None, *, tol=1e-10, max_iter=None, preconditioner=None, save_at=(), progress_tol=None
) -> CGResult:
    """Solve A x = b for a symmetric positive definite A given by matvec(v) -> A v (float64 vectors),
    by (preconditioned) conjugate gradients: exact in at most n iterations, and in k for an A with k
    distinct eigenvalues (in exact arithmetic). Stops when ||r|| <= tol * ||b||.

    preconditioner: callable r -> M^{-1} r, or an array (the diagonal of M). save_at: the
    iterations whose x to keep in `iterates` (the last one is always kept). progress_tol: Martens'
    relative-progress stop: after iteration i > k = max(10, i/10), stop when the quadratic model
    improved by less than progress_tol * k relative to its value k iterations earlier."""
    b = np.asarray(b, dtype=np.float64).ravel()
    n = b.size
    max_iter = n if max_iter is None else int(max_iter)
    if max_iter < 0:
        raise ValueError(f"linear_cg: max_iter must be >= 0, got {max_iter}")
    if isinstance(preconditioner, np.ndarray):
        diagonal = preconditioner.astype(np.float64).ravel()
        if diagonal.shape != b.shape or not np.all(diagonal > 0):
            raise ValueError("linear_cg: a diagonal preconditioner must be positive and of b's size")
        preconditioner = lambda r: r / diagonal  # noqa: E731
    x = np.zeros(n) if x0 is None else np.array(x0, dtype=np.float64).ravel()
    if x.shape != b.shape:
        raise ValueError(f"linear_cg: x0 has {x.size} elements, b has {n}")
    r = b - matvec(x) if x.any() else b.copy()
    z = preconditioner(r) if preconditioner is not None else r
    p = z.copy()
    rz = float(r @ z)
    target = tol * max(float(np.linalg.norm(b)), 1e-300)
    saved, quadratic = set(save_at), []
    out = CGResult(x, 0, float(np.linalg.norm(r)), "max_iter")
    if not np.isfinite(out.residual_norm):
        out.status = "nonfinite"
        return out
    if out.residual_norm <= target:
        out.status = "converged"
    i = 0
    while out.status == "max_iter" and i < max_iter:
        ap = matvec(p)
        pap = float(p @ ap)
        if not math.isfinite(pap):
            out.status = "nonfinite"
            break
        if pap <= 0:
            out.status = "not_positive_definite"
            break
        alpha = rz / pap
        x = x + alpha * p
        r = r - alpha * ap
        i += 1
        quadratic.append(-0.5 * float(x @ (b + r)))  # x^T A x / 2 - b^T x with A x = b - r
        if i in saved:
            out.iterates.append((i, x, r))
        if float(np.linalg.norm(r)) <= target:
            out.status = "converged"
            break
        k = max(10, i // 10)
        if progress_tol is not None and i > k and quadratic[-1] < 0:
            if (quadratic[-1] - quadratic[-1 - k]) / quadratic[-1] < k * progress_tol:
                out.status = "converged"
                break
        z = preconditioner(r) if preconditioner is not None else r
        rz, rz_old = float(r @ z), rz
        p = z + (rz / rz_old) * p
    out.x, out.iterations, out.residual_norm, out.quadratic = x, i, float(np.linalg.norm(r)), quadratic
    if not out.iterates or out.iterates[-1][0] != i:
        out.iterates.append((i, x, r))
    return out


# ---- the closure of a gf.nn model --------------------------------------------------------------------
class ModelClosure:
    """The closure of a gf.nn model on one batch: closure() runs a training forward of x, the loss
    against y and the backward, so every p.grad holds the gradient, and returns the loss (a float).

    gauss_newton_product(v) -> G v for the last call's forward, with G = J^T H_L J (J the Jacobian of
    the model's output in its parameters, H_L the loss's Hessian in the output): a forward-mode pass
    (Module.jvp), the loss's hessian_product, then the backward. v and the result are lists aligned
    with model.parameters(). The p.grad arrays are left as the closure set them.

    training: the mode of the forward (True: batch statistics and dropout, whose masks then change
    with every call; full-batch second-order training is usually run without dropout)."""

    def __init__(self, model, loss, x, y, *, training=True):
        self.model, self.loss, self.y = model, get_loss(loss), y
        self.training = bool(training)
        self.params = [p for p in model.parameters() if p.trainable]
        dtypes = {p.data.dtype for p in model.parameters()}
        # x in the model's dtype, as fit converts it (float32 data into a float64 model)
        self.x = np.ascontiguousarray(x, dtypes.pop()) if len(dtypes) == 1 else x
        self.pred = None
        self.first_pred = None  # the first call's output and gradient norm (fit reports them)
        self.first_grad_norm = math.nan
        self.calls = 0

    def __call__(self):
        self.pred = self.model.forward(self.x, training=self.training)
        value, dpred = self.loss(self.pred, self.y)
        self.model.backward(dpred)
        if self.calls == 0:
            self.first_pred = self.pred
            self.first_grad_norm = float(grad_norm(self.params))
        self.calls += 1
        return float(value)

    def gauss_newton_product(self, v):
        if self.pred is None:
            raise RuntimeError("ModelClosure.gauss_newton_product: call the closure first (it runs the forward)")
        hessian = getattr(self.loss, "hessian_product", None)
        if hessian is None:
            raise TypeError(
                f"{type(self.loss).__name__} has no hessian_product: Gauss-Newton products need the loss's "
                "Hessian in the output (cross_entropy and mse have one)"
            )
        if len(v) != len(self.params):
            raise ValueError(f"gauss_newton_product: {len(v)} vectors for {len(self.params)} parameters")
        tangents = {p: np.asarray(vi, p.data.dtype).reshape(p.data.shape) for p, vi in zip(self.params, v)}
        dout = self.model.jvp(None, tangents)
        hv = hessian(self.pred, self.y, dout).astype(self.pred.dtype, copy=False)
        saved = [None if p.grad is None else p.grad.copy() for p in self.params]
        self.model.backward(hv)
        out = [np.array(p.grad, dtype=np.float64) for p in self.params]
        for p, g in zip(self.params, saved):
            if g is None:
                p.grad = None
            else:
                p.grad[...] = g
        return out


# ---- the closure-driven optimizers ---------------------------------------------------------------------
class _ClosureOptimizer:
    """A closure-driven optimizer over gf.nn.Parameter objects, working on their concatenation as
    one float64 vector. status says how the last step ended ("ok", or why it did not move)."""

    needs_closure = True  # fit passes a ModelClosure of the batch to step()

    def __init__(self, params, defaults: dict):
        if isinstance(params, (np.ndarray, Parameter)):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Parameters, "
                f"but got {type(params).__name__}"
            )
        params = list(params)
        if params and isinstance(params[0], dict):
            if len(params) != 1:
                raise ValueError(f"{type(self).__name__} doesn't support per-parameter options (parameter groups)")
            params = list(params[0]["params"])
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"{type(self).__name__}: params[{i}] is a {type(p).__name__}; closure-driven optimizers "
                    "take gf.nn.Parameter objects (the closure writes p.grad): wrap an array as gf.nn.Parameter(a)"
                )
        self.defaults = dict(defaults)
        self.param_groups = [{"params": params, **defaults}]
        self.state: dict = {}
        self.status = "not started"
        self.history: list = []  # one dict per step: loss, step length, evaluations, status

    @property
    def _params(self):
        return self.param_groups[0]["params"]

    @property
    def last_status(self) -> str:
        """status under gf.optim.LBFGS's name."""
        return self.status

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params:
            p.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        state = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self.state.items()}  # a snapshot
        return {"state": state, "param_groups": [dict(group, params=list(range(len(self._params))))]}

    def load_state_dict(self, state_dict) -> None:
        group = dict(state_dict["param_groups"][0])
        group.pop("params", None)
        self.param_groups[0].update(group)
        self.state = dict(state_dict["state"])

    def _get(self) -> np.ndarray:
        return np.concatenate([p.data.ravel().astype(np.float64) for p in self._params])

    def _set(self, x) -> None:
        at = 0
        for p in self._params:
            p.data[...] = x[at : at + p.data.size].reshape(p.data.shape)
            at += p.data.size

    def _grad(self) -> np.ndarray:
        out = []
        for p in self._params:
            if p.grad is None:
                if p.trainable:
                    raise RuntimeError(
                        f"{type(self).__name__}: the closure left parameter {p.name!r} without a gradient: "
                        "it must compute the loss, write each p.grad (e.g. model.backward) and return the loss"
                    )
                out.append(np.zeros(p.data.size))
            else:
                out.append(p.grad.ravel().astype(np.float64))
        return np.concatenate(out)

    def _evaluate(self, closure, x=None):
        """(loss, gradient) of the closure at x (default: the current parameters)."""
        if x is not None:
            self._set(x)
        loss = closure()
        if loss is None:
            raise TypeError(f"{type(self).__name__}.step: the closure returned None; it must return the loss")
        return float(loss), self._grad()

    def _check_closure(self, closure):
        if closure is None or not callable(closure):
            raise TypeError(
                f"{type(self).__name__}.step needs a closure: opt.step(closure), where closure() computes the "
                "loss, writes each p.grad and returns the loss (gf.optim.ModelClosure(model, loss, x, y) is one)"
            )

    def _finish(self, x, loss, status, **record):
        """Record how the step ended (the parameters are already at x, the gradients x's)."""
        self.status = status
        self.history.append(dict(loss=loss, status=status, **record))


def _positive(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"Invalid {name}: {value!r} (expected a number, got {type(value).__name__})")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"Invalid {name}: {value}")
    return float(value)


class ConjugateGradient(_ClosureOptimizer):
    """Nonlinear conjugate gradients: d = -g + beta d_prev, then a line search along d.

    variant: "PR+" (Polak-Ribiere, beta = max(0, g.(g - g_prev) / |g_prev|^2): a restart whenever
    it would be negative) or "FR" (Fletcher-Reeves, beta = |g|^2 / |g_prev|^2). Restarts (d = -g)
    also every `restart` iterations (default: the number of parameters), and whenever d is not a
    descent direction. line_search: "strong_wolfe" (c2=0.1 by default, as CG needs) or "armijo".
    lr: the first iteration's trial step is lr / |g|_inf; later ones start from the previous step
    scaled by the ratio of slopes (Nocedal & Wright 3.60). max_iter iterations per step() call.

    step(closure) returns the loss before the step; status: "ok", "converged" (max |g| <= tolerance_grad,
    or the loss changed by at most tolerance_change relative to max(1, |loss|)),
    "line_search_failed" (no acceptable step: the parameters are left where they were and the next
    iteration restarts from -g), "nonfinite" (the loss or gradient at the start is NaN/Inf)."""

    def __init__(
        self,
        params,
        lr=1.0,
        variant="PR+",
        line_search="strong_wolfe",
        c1=1e-4,
        c2=0.1,
        max_iter=1,
        max_evaluations=25,
        restart=None,
        tolerance_grad=1e-10,
        tolerance_change=1e-12,
    ):
        if variant not in ("PR+", "FR"):
            raise ValueError(f"ConjugateGradient: variant must be 'PR+' or 'FR', got {variant!r}")
        if line_search not in ("strong_wolfe", "armijo"):
            raise ValueError(f"ConjugateGradient: line_search must be 'strong_wolfe' or 'armijo', got {line_search!r}")
        super().__init__(
            params,
            dict(
                lr=_positive("learning rate", lr),
                variant=variant,
                line_search=line_search,
                c1=float(c1),
                c2=float(c2),
                max_iter=int(max_iter),
                max_evaluations=int(max_evaluations),
                restart=restart,
                tolerance_grad=_positive("tolerance_grad", tolerance_grad, allow_zero=True),
                tolerance_change=_positive("tolerance_change", tolerance_change, allow_zero=True),
            ),
        )
        if int(max_iter) < 1 or int(max_evaluations) < 1:
            raise ValueError("ConjugateGradient: max_iter and max_evaluations must be >= 1")

    def step(self, closure=None):
        self._check_closure(closure)
        g_ = self.param_groups[0]
        loss, grad = self._evaluate(closure)
        first_loss = loss
        x = self._get()
        restart = g_["restart"] or x.size
        for _ in range(g_["max_iter"]):
            if not _finite(loss, grad):
                self._finish(x, loss, "nonfinite")
                return first_loss
            if float(np.abs(grad).max(initial=0.0)) <= g_["tolerance_grad"]:
                self._finish(x, loss, "converged", step=0.0, evaluations=0)
                return first_loss
            st = self.state
            d, beta = -grad, 0.0
            if "direction" in st and st["iteration"] % restart != 0:
                prev_g, prev_d = st["prev_grad"], st["direction"]
                denom = float(prev_g @ prev_g)
                if g_["variant"] == "FR":
                    beta = float(grad @ grad) / denom
                else:
                    beta = max(0.0, float(grad @ (grad - prev_g)) / denom)
                d = -grad + beta * prev_d
                if not float(grad @ d) < 0:  # lost descent (FR with an inexact search): restart
                    d, beta = -grad, 0.0
            slope = float(grad @ d)
            if "step_size" in st and beta != 0.0:  # the previous step times the ratio of slopes
                trial = st["step_size"] * st["prev_slope"] / slope
            else:
                trial = g_["lr"] / max(float(np.abs(grad).max()), 1e-300)
            result = line_search(
                lambda z: self._evaluate(closure, z),
                x,
                d,
                loss=loss,
                grad=grad,
                step=trial,
                method=g_["line_search"],
                c1=g_["c1"],
                c2=max(g_["c2"], g_["c1"] * 1.0001),
                max_evaluations=g_["max_evaluations"],
            )
            st["iteration"] = st.get("iteration", 0) + 1
            if result.step == 0.0:
                self._set(x)
                self._evaluate(closure)  # the gradients back at x
                st.pop("direction", None)  # restart from -g next time
                self._finish(x, loss, "line_search_failed", step=0.0, evaluations=result.evaluations, beta=beta)
                return first_loss
            x = x + result.step * d
            self._set(x)
            if result.steps[-1] != result.step:  # the closure last ran at another point: re-run it here
                result.loss, result.grad = self._evaluate(closure)
            st.update(
                direction=d,
                prev_grad=grad,
                prev_slope=slope,
                step_size=result.step,
            )
            converged = abs(loss - result.loss) <= g_["tolerance_change"] * max(1.0, abs(loss))
            loss, grad = result.loss, result.grad
            status = "converged" if converged else "ok"
            self._finish(x, loss, status, step=result.step, evaluations=result.evaluations, beta=beta)
            if converged:
                break
        return first_loss


class Newton(_ClosureOptimizer):
    """Newton's method for small models: solve (H + damping I) p = -g, then x += lr p.

    hessian="finite_difference": H from central differences of the closure's gradients,
    column j = (g(x + eps e_j) - g(x - eps e_j)) / (2 eps), eps = fd_step * max(1, |x_j|), then
    symmetrized (2n closure calls a step). hessian="gauss_newton": G from the closure's
    gauss_newton_product (a gf.optim.ModelClosure), n products, positive semi-definite.
    When H + damping I is not positive definite, the damping grows tenfold (Levenberg-Marquardt)
    until it is (status says so). line_search: None (the full step times lr) or "armijo" /
    "strong_wolfe" along p. max_parameters bounds n: H has n^2 entries. status "converged": max |g|
    <= tolerance_grad (the step does not move)."""

    def __init__(
        self,
        params,
        lr=1.0,
        damping=0.0,
        hessian="finite_difference",
        fd_step=1e-5,
        line_search=None,
        max_parameters=4096,
        tolerance_grad=1e-10,
    ):
        if hessian not in ("finite_difference", "gauss_newton"):
            raise ValueError(f"Newton: hessian must be 'finite_difference' or 'gauss_newton', got {hessian!r}")
        if line_search not in (None, "armijo", "strong_wolfe"):
            raise ValueError(f"Newton: line_search must be None, 'armijo' or 'strong_wolfe', got {line_search!r}")
        super().__init__(
            params,
            dict(
                lr=_positive("learning rate", lr),
                damping=_positive("damping", damping, allow_zero=True),
                hessian=hessian,
                fd_step=_positive("fd_step", fd_step),
                line_search=line_search,
                tolerance_grad=_positive("tolerance_grad", tolerance_grad, allow_zero=True),
            ),
        )
        n = sum(p.data.size for p in self._params)
        if n > max_parameters:
            raise ValueError(
                f"Newton: {n} parameters make a {n}x{n} Hessian; it is for small models (max_parameters="
                f"{max_parameters}): use gf.optim.HessianFree, which never forms it"
            )

    def hessian(self, closure, x):
        """The Hessian (or Gauss-Newton matrix) at x, for the current settings."""
        n, g_ = x.size, self.param_groups[0]
        h = np.empty((n, n))
        if g_["hessian"] == "gauss_newton":
            products = getattr(closure, "gauss_newton_product", None)
            if products is None:
                raise TypeError(
                    "Newton(hessian='gauss_newton') needs a closure with gauss_newton_product (ModelClosure)"
                )
            self._evaluate(closure, x)
            sizes = np.cumsum([p.data.size for p in self._params])[:-1]
            for j in range(n):
                e = np.zeros(n)
                e[j] = 1.0
                h[:, j] = np.concatenate([v.ravel() for v in products(np.split(e, sizes))])
            return h
        for j in range(n):
            eps = g_["fd_step"] * max(1.0, abs(x[j]))
            e = np.zeros(n)
            e[j] = eps
            _, gp = self._evaluate(closure, x + e)
            _, gm = self._evaluate(closure, x - e)
            h[:, j] = (gp - gm) / (2 * eps)
        return 0.5 * (h + h.T)

    def step(self, closure=None):
        self._check_closure(closure)
        g_ = self.param_groups[0]
        loss, grad = self._evaluate(closure)
        x = self._get()
        if not _finite(loss, grad):
            self._finish(x, loss, "nonfinite")
            return loss
        if float(np.abs(grad).max(initial=0.0)) <= g_["tolerance_grad"]:
            self._finish(x, loss, "converged", step=0.0, evaluations=0)
            return loss
        h = self.hessian(closure, x)
        self._set(x)
        if not np.all(np.isfinite(h)):
            self._evaluate(closure)
            self._finish(x, loss, "nonfinite")
            return loss
        damping, status = g_["damping"], "ok"
        scale = max(1.0, float(np.abs(np.diag(h)).max(initial=0.0)))
        for _ in range(40):
            try:
                factor = np.linalg.cholesky(h + damping * np.eye(x.size))
                break
            except np.linalg.LinAlgError:
                damping, status = max(10.0 * damping, 1e-8 * scale), "damping_increased"
        else:
            self._evaluate(closure)
            self._finish(x, loss, "not_positive_definite")
            return loss
        p = -np.linalg.solve(factor.T, np.linalg.solve(factor, grad))
        step, evaluations = g_["lr"], 0
        if g_["line_search"] is not None:
            result = line_search(
                lambda z: self._evaluate(closure, z),
                x,
                p,
                loss=loss,
                grad=grad,
                step=g_["lr"],
                method=g_["line_search"],
            )
            step, evaluations = result.step, result.evaluations
            if step == 0.0:
                status = "line_search_failed"
        x = x + step * p
        self._set(x)
        self._evaluate(closure)  # the gradients at the new point, as a closure-driven step leaves them
        self.state["damping"] = damping
        self._finish(x, loss, status, step=step, evaluations=evaluations, damping=damping)
        return loss


class HessianFree(_ClosureOptimizer):
    """Hessian-free optimization (Martens 2010): each step solves (G + damping I) p = -g with linear
    CG, G the Gauss-Newton matrix, using only products G v from the closure's gauss_newton_product
    (gf.optim.ModelClosure: a forward-mode pass through the layers, the loss's Hessian, the
    backward). As in the paper: CG starts from the previous step's solution times cg_decay, stops
    on relative progress (progress_tol), CG backtracking keeps the saved iterate with the lowest
    loss, the damping follows Levenberg-Marquardt (reduction ratio rho < 1/4: damping * 3/2;
    rho > 3/4: damping * 2/3), and a backtracking Armijo search scales the step.

    preconditioner: None or "jacobi" (Martens' diagonal (diag(G)-estimate + damping)^0.75, here from
    the squared gradient: the paper's per-example form needs per-example gradients).
    step(closure) returns the loss before the step; status: "ok", "rejected" (no decrease: the
    parameters stay, the damping grows), "nonfinite", "converged" (zero gradient)."""

    def __init__(
        self,
        params,
        lr=1.0,
        damping=1.0,
        max_cg_iter=50,
        cg_decay=0.95,
        progress_tol=5e-4,
        preconditioner=None,
        min_damping=1e-8,
        max_evaluations=12,
    ):
        if preconditioner not in (None, "jacobi"):
            raise ValueError(f"HessianFree: preconditioner must be None or 'jacobi', got {preconditioner!r}")
        super().__init__(
            params,
            dict(
                lr=_positive("learning rate", lr),
                damping=_positive("damping", damping),
                max_cg_iter=int(max_cg_iter),
                cg_decay=_positive("cg_decay", cg_decay, allow_zero=True),
                progress_tol=_positive("progress_tol", progress_tol, allow_zero=True),
                preconditioner=preconditioner,
                min_damping=_positive("min_damping", min_damping, allow_zero=True),
                max_evaluations=int(max_evaluations),
            ),
        )
        if int(max_cg_iter) < 1:
            raise ValueError(f"HessianFree: max_cg_iter must be >= 1, got {max_cg_iter}")

    def step(self, closure=None):
        self._check_closure(closure)
        products = getattr(closure, "gauss_newton_product", None)
        if products is None:
            raise TypeError(
                "HessianFree.step needs a closure with gauss_newton_product(v) (Gauss-Newton products): "
                "gf.optim.ModelClosure(model, loss, x, y)"
            )
        g_ = self.param_groups[0]
        loss, grad = self._evaluate(closure)
        x = self._get()
        if not _finite(loss, grad):
            self._finish(x, loss, "nonfinite")
            return loss
        if not grad.any():
            self._finish(x, loss, "converged")
            return loss
        damping = g_["damping"]
        sizes = np.cumsum([p.data.size for p in self._params])[:-1]

        def gv(v):  # G v at x: the closure's forward is x's until the first evaluation below
            return np.concatenate([u.ravel() for u in products(np.split(v, sizes))])

        pre = None
        if g_["preconditioner"] == "jacobi":
            pre = (grad * grad * x.size + damping) ** 0.75
        x0 = self.state.get("cg_init")
        save_at = sorted({int(math.ceil(1.3**k)) for k in range(40) if math.ceil(1.3**k) <= g_["max_cg_iter"]})
        cg = linear_cg(
            lambda v: gv(v) + damping * v,
            -grad,
            None if x0 is None else g_["cg_decay"] * x0,
            max_iter=g_["max_cg_iter"],
            preconditioner=pre,
            save_at=save_at,
            progress_tol=g_["progress_tol"] or None,
        )
        # the undamped model's reduction for each saved iterate: p^T G p = p^T (-g - r) - damping |p|^2
        candidates = [
            (p, float(grad @ p) + 0.5 * (float(p @ (-grad - r)) - damping * float(p @ p))) for _, p, r in cg.iterates
        ]
        # CG backtracking: from the last saved iterate back, while an earlier one has a lower loss
        evaluations, best = 0, None
        for p, model_change in reversed(candidates):
            value, _ = self._evaluate(closure, x + p)
            evaluations += 1
            if best is not None and not value < best[1]:
                break
            best = (p, value, model_change)
        p, value, model_change = best
        rho = (value - loss) / model_change if model_change < 0 and math.isfinite(value) else -math.inf
        if rho < 0.25:
            damping *= 1.5
        elif rho > 0.75:
            damping = max(damping * 2 / 3, g_["min_damping"])
        g_["damping"] = damping
        self.state["cg_init"] = p
        step = g_["lr"]
        if not (math.isfinite(value) and value <= loss + 1e-2 * step * float(grad @ p)):
            result = line_search(
                lambda z: self._evaluate(closure, z),
                x,
                p,
                loss=loss,
                grad=grad,
                step=0.8 * step,
                method="armijo",
                c1=1e-2,
                shrink=0.8,
                max_evaluations=g_["max_evaluations"],
            )
            step, evaluations = result.step, evaluations + result.evaluations
        if step == 0.0:
            self._set(x)
            self._evaluate(closure)
            g_["damping"] = damping * 1.5 if rho >= 0.25 else damping
            self.state.pop("cg_init", None)
            self._finish(x, loss, "rejected", step=0.0, cg_iterations=cg.iterations, damping=g_["damping"], rho=rho)
            return loss
        x = x + step * p
        self._set(x)
        self._evaluate(closure)  # the gradients (and the forward) at the new point
        self._finish(
            x, loss, "ok", step=step, evaluations=evaluations, cg_iterations=cg.iterations, damping=damping, rho=rho
        )
        return loss
