"""L-BFGS with torch.optim.LBFGS's API, defaults, iterations and state keys.

The closure: for gf.nn.Parameter objects, closure() computes the loss, writes each p.grad and
returns the loss (torch's contract); for plain ndarrays (which have no .grad), closure() returns
(loss, grads), grads one array per parameter (a Parameter closure may return that too).

Where it differs from torch's code (not from its iterates):
- The direction -H g comes from the compact form of the L-BFGS matrix (Byrd, Nocedal & Schnabel
  1994) instead of the two-loop recursion: the same vector in exact arithmetic, from one GEMM that
  reads the history once (every s_i . g, y_i . g, s_i . y, y_i . y together) and one that forms
  the direction, where the two-loop recursion makes 2 * history dependent passes of dot + axpy.
  The history is one (2 history_size, n) buffer, the pairs as rows.
- Parameters that are one run of a ParameterArena are the flat vector itself (no gather, no
  scatter); otherwise the gradients are gathered into one vector per evaluation, as torch does.
- A loss or gradient that is NaN/Inf stops the step: the parameters go back to the last finite
  point, and last_status says "nonfinite" (torch goes on with NaN). Every step ends: its loops are
  bounded by max_iter, max_eval and the line search's max_ls.

last_status after a step: "tolerance_grad" (max |g| <= tolerance_grad), "tolerance_change" (the
step, the loss change or the directional derivative fell below tolerance_change), "max_iter",
"max_eval", or "nonfinite".
"""

from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..nn.parameter import Parameter
from .optimizer import Optimizer, _ArenaRuns

_HISTORY_KEYS = ("old_dirs", "old_stps", "ro", "al")
_ARRAY_KEYS = ("d", "prev_flat_grad")
_SCALAR_KEYS = ("t", "H_diag", "prev_loss", "n_iter", "func_evals")


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """torch's minimiser of the cubic through two points with their derivatives, within bounds."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """torch's strong Wolfe line search along d from x (bracketing, then zoom by cubic
    interpolation). Returns (loss, gradient, step length, evaluations)."""
    d_norm = np.abs(d).max()
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = g_new.dot(d)
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


class _NonFinite(Exception):
    """A line-search evaluation gave a NaN/Inf loss or gradient."""


class _History:
    """The (s, y) pairs as rows 2i, 2i+1 of one buffer (a ring of history_size slots), with their
    inner products s_i . y_j and y_i . y_j (float64, by slot) and the slots from oldest to newest."""

    def __init__(self, size: int, n: int, dtype):
        self.rows = np.empty((2 * size, n), dtype)  # untouched pages cost no memory
        self.sy = np.zeros((size, size))
        self.yy = np.zeros((size, size))
        self.ys = np.zeros(size, dtype)
        self.order: list = []
        self.size = size

    def __len__(self):
        return len(self.order)

    def used(self) -> np.ndarray:
        return self.rows[: 2 * max(self.order, default=-1) + 2]

    def add(self, s: np.ndarray, y: np.ndarray, ys) -> int:
        if len(self.order) == self.size:
            slot = self.order.pop(0)
        else:
            slot = len(self.order)
        self.rows[2 * slot] = s
        self.rows[2 * slot + 1] = y
        self.ys[slot] = ys
        self.order.append(slot)
        return slot

    def products(self, vectors: list) -> np.ndarray:
        """Every used row . each vector: shape (used rows, len(vectors)), one GEMM."""
        used = self.used()
        out = np.empty((used.shape[0], len(vectors)), used.dtype)
        ops.matmul(used, np.stack(vectors), out, trans_b=True)
        return out

    def record(self, slot: int, with_y: np.ndarray) -> None:
        """Store s_i . y and y_i . y of the newest pair y (slot), from products() with it."""
        s_dot, y_dot = with_y[0::2], with_y[1::2]
        used = len(s_dot)
        self.sy[:used, slot] = s_dot
        self.yy[:used, slot] = y_dot
        self.yy[slot, :used] = y_dot

    def direction(self, g: np.ndarray, with_g: np.ndarray, h_diag) -> np.ndarray:
        """-H g for the L-BFGS matrix H of these pairs and initial scaling h_diag (compact form)."""
        order = self.order
        gamma = float(h_diag)
        p, q = with_g[0::2][order].astype(np.float64), with_g[1::2][order].astype(np.float64)
        sy = self.sy[np.ix_(order, order)]
        r = np.triu(sy)
        u = np.linalg.solve(r, p)
        a = np.linalg.solve(r.T, np.diag(sy) * u + gamma * (self.yy[np.ix_(order, order)] @ u) - gamma * q)
        w = np.zeros(2 * (max(order) + 1))
        w[0::2][order] = a
        w[1::2][order] = -gamma * u
        used = self.used()
        out = np.empty((1, g.size), g.dtype)
        ops.matmul(w.astype(g.dtype)[None, :], used, out)
        d = out.reshape(-1)
        d += g.dtype.type(h_diag) * g
        np.negative(d, out=d)
        return d

    def lists(self) -> tuple[list, list, list]:
        """torch's old_dirs (y), old_stps (s) and ro (1 / y.s), oldest first: views, not copies."""
        return (
            [self.rows[2 * i + 1] for i in self.order],
            [self.rows[2 * i] for i in self.order],
            [self.ys.dtype.type(1.0) / self.ys[i] for i in self.order],
        )


class LBFGS(Optimizer):
    """L-BFGS as torch.optim.LBFGS (one parameter group). step(closure) runs up to max_iter
    iterations and returns the closure's first loss; see the module docstring for the closure and
    for last_status."""

    needs_closure = True  # fit passes a ModelClosure of each batch to step()

    def __init__(
        self,
        params,
        lr=1,
        max_iter=20,
        max_eval=None,
        tolerance_grad=1e-7,
        tolerance_change=1e-9,
        history_size=100,
        line_search_fn=None,
    ):
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = dict(
            lr=lr,
            max_iter=max_iter,
            max_eval=max_eval,
            tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change,
            history_size=history_size,
            line_search_fn=line_search_fn,
        )
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params = self.param_groups[0]["params"]
        dtypes = {p.dtype for p in map(_data, self._params)}
        if len(dtypes) != 1:
            raise TypeError(f"LBFGS: every parameter must have one dtype, got {sorted(map(str, dtypes))}")
        self._dtype = dtypes.pop()
        self._sizes = [_data(p).size for p in self._params]
        self._numel = sum(self._sizes)
        runs = _ArenaRuns.of(self._params)
        self._runs = runs if runs is not None and len(runs.bounds) == 1 else None
        self._history: _History | None = None
        self.last_status: str | None = None

    def _validate(self, g: dict) -> dict:
        lr = g["lr"]
        if isinstance(lr, (str, bytes, bool)) or not hasattr(type(lr), "__float__"):
            raise TypeError(f"Invalid learning rate: {lr!r} (expected a number, got {type(lr).__name__})")
        if not float(lr) >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if g["line_search_fn"] not in (None, "strong_wolfe"):
            raise ValueError("only 'strong_wolfe' is supported")
        for key in ("max_iter", "max_eval", "history_size"):
            if not (isinstance(g[key], (int, np.integer)) and not isinstance(g[key], bool) and g[key] >= 1):
                raise ValueError(f"LBFGS: {key} must be an int >= 1, got {g[key]!r}")
        for key in ("tolerance_grad", "tolerance_change"):
            value = g[key]
            if not hasattr(type(value), "__float__") or isinstance(value, (str, bytes)) or not float(value) >= 0:
                raise ValueError(f"LBFGS: {key} must be a number >= 0, got {value!r}")
        return {}

    # ---- flat views of the parameters and gradients ---------------------------------------------
    def _flat_params(self) -> np.ndarray | None:
        """The parameters as one vector without a copy, when they are one arena run."""
        runs = self._runs
        if runs is not None and all(p.data is v for p, v in zip(runs.objs, runs.data_views)):
            return runs.params[0]
        return None

    def _evaluate(self, closure) -> tuple[float, np.ndarray]:
        """Run the closure: (loss as a float, the flat gradient: the arena's own gradient run when
        the gradients are its views, else a fresh vector)."""
        out = closure()
        if isinstance(out, tuple) and len(out) == 2:
            loss, grads = out
            grads = list(grads)
            if len(grads) != len(self._params):
                raise ValueError(
                    f"LBFGS: the closure returned {len(grads)} gradients for {len(self._params)} parameters"
                )
        else:
            loss = out
            if not all(isinstance(p, Parameter) for p in self._params):
                raise TypeError(
                    "LBFGS: with plain ndarray parameters the closure must return (loss, grads); "
                    "with gf.nn.Parameter objects it may return the loss and write each p.grad"
                )
            runs = self._runs
            if runs is not None and runs.intact([p.grad for p in self._params]):
                return float(loss), runs.grads[0]
            grads = [p.grad for p in self._params]
        flat = np.empty(self._numel, self._dtype)
        pos = 0
        for p, g, size in zip(self._params, grads, self._sizes):
            if g is None:
                flat[pos : pos + size] = 0
            else:
                g = np.asarray(g)
                if g.size != size:
                    raise ValueError(f"LBFGS: a gradient of shape {g.shape} for a parameter of shape {_data(p).shape}")
                flat[pos : pos + size] = g.reshape(-1)
            pos += size
        return float(loss), flat

    def _add_grad(self, step_size, update: np.ndarray) -> None:
        alpha = self._dtype.type(step_size)
        flat = self._flat_params()
        if flat is not None:
            flat += alpha * update
            return
        pos = 0
        for p, size in zip(self._params, self._sizes):
            data = _data(p)
            data += alpha * update[pos : pos + size].reshape(data.shape)
            pos += size

    def _clone_param(self) -> list:
        return [_data(p).copy() for p in self._params]

    def _set_param(self, saved: list) -> None:
        for p, s in zip(self._params, saved):
            _data(p)[...] = s

    def _directional_evaluate(self, closure, x, t, d):
        self._add_grad(t, d)
        loss, flat_grad = self._evaluate(closure)
        flat_grad = flat_grad.copy()  # the next evaluation may write the arena's gradient again
        self._set_param(x)
        if not (math.isfinite(loss) and np.isfinite(flat_grad).all()):
            raise _NonFinite  # ends the line search at once, the parameters back at x
        return loss, flat_grad

    # ---- the step ---------------------------------------------------------------------------------
    def step(self, closure=None):  # noqa: C901 - torch's loop, kept in its order to follow its iterates
        """Up to max_iter L-BFGS iterations; returns the closure's first loss."""
        if closure is None:
            raise TypeError(
                "LBFGS.step needs a closure (it evaluates the loss several times); gf.train.fit steps "
                "without one: drive LBFGS with a loop of opt.step(closure) (README, LBFGS)"
            )
        group = self.param_groups[0]
        self._validate(group)
        lr = float(group["lr"])
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = float(group["tolerance_grad"]), float(group["tolerance_change"])
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]
        slot = self._slot_by_id[id(self._params[0])]
        state = slot.state
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        hist = self._history
        if hist is None or hist.size != history_size:
            hist = self._history = self._rebuild(state, history_size)

        with self._lock:
            loss, flat_grad = self._evaluate(closure)
            orig_loss = loss
            current_evals = 1
            state["func_evals"] += 1
            if not (math.isfinite(loss) and np.isfinite(flat_grad).all()):
                self.last_status = "nonfinite"
                return orig_loss
            if np.abs(flat_grad).max() <= tolerance_grad:
                self.last_status = "tolerance_grad"
                return orig_loss
            d, t = state.get("d"), state.get("t")
            h_diag = state.get("H_diag")
            prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
            status = "max_iter"
            n_iter = 0
            while n_iter < max_iter:
                n_iter += 1
                state["n_iter"] += 1
                if state["n_iter"] == 1:
                    d = -flat_grad
                    hist.order.clear()
                    h_diag = 1
                else:
                    y = flat_grad - prev_flat_grad
                    s = d * t
                    ys = y.dot(s)
                    vectors = [flat_grad]
                    if ys > 1e-10:
                        new = hist.add(s, y, ys)
                        vectors = [y, flat_grad]
                    products = hist.products(vectors)
                    if ys > 1e-10:
                        hist.record(new, products[:, 0])
                        h_diag = ys / products[2 * new + 1, 0]  # y.s / y.y
                    d = hist.direction(flat_grad, products[:, -1], h_diag) if len(hist) else -flat_grad * h_diag
                if prev_flat_grad is None:
                    prev_flat_grad = flat_grad.copy()
                else:
                    prev_flat_grad[...] = flat_grad
                prev_loss = loss
                if state["n_iter"] == 1:
                    t = min(1.0, 1.0 / np.abs(flat_grad).sum()) * lr
                else:
                    t = lr
                gtd = flat_grad.dot(d)
                if gtd > -tolerance_change:
                    status = "tolerance_change"
                    break
                ls_func_evals = 0
                if line_search_fn is not None:
                    x_init = self._clone_param()
                    try:
                        loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                            lambda x, t, d: self._directional_evaluate(closure, x, t, d),
                            x_init,
                            t,
                            d,
                            loss,
                            flat_grad,
                            gtd,
                            max_ls=max_eval - current_evals,
                        )
                    except _NonFinite:
                        state["func_evals"] += 1
                        status = "nonfinite"
                        break
                    self._add_grad(t, d)
                    opt_cond = np.abs(flat_grad).max() <= tolerance_grad
                else:
                    self._add_grad(t, d)
                    opt_cond = False
                    if n_iter != max_iter:
                        loss, flat_grad = self._evaluate(closure)
                        opt_cond = np.abs(flat_grad).max() <= tolerance_grad
                        ls_func_evals = 1
                current_evals += ls_func_evals
                state["func_evals"] += ls_func_evals
                if not (math.isfinite(loss) and np.isfinite(flat_grad).all()):
                    self._add_grad(-t, d)  # back to the last finite point (up to rounding)
                    loss, flat_grad = prev_loss, prev_flat_grad
                    status = "nonfinite"
                    break
                if n_iter == max_iter:
                    break
                if current_evals >= max_eval:
                    status = "max_eval"
                    break
                if opt_cond:
                    status = "tolerance_grad"
                    break
                if np.abs(d * t).max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                    status = "tolerance_change"
                    break
            old_dirs, old_stps, ro = hist.lists()
            state.update(
                d=d,
                t=t,
                old_dirs=old_dirs,
                old_stps=old_stps,
                ro=ro,
                H_diag=h_diag,
                prev_flat_grad=prev_flat_grad,
                prev_loss=prev_loss,
            )
            self.last_status = status
        return orig_loss

    # ---- state --------------------------------------------------------------------------------------
    def _rebuild(self, state: dict, history_size: int) -> _History:
        """The history buffer from state's old_stps / old_dirs (a loaded state dict, or a new
        history_size), the newest history_size pairs."""
        hist = _History(history_size, self._numel, self._dtype)
        pairs = list(zip(state.get("old_stps", []), state.get("old_dirs", [])))[-history_size:]
        for s, y in pairs:
            s, y = np.asarray(s, self._dtype).reshape(-1), np.asarray(y, self._dtype).reshape(-1)
            slot = hist.add(s, y, y.dot(s))
        if pairs:
            for slot in hist.order:
                hist.record(slot, hist.products([hist.rows[2 * slot + 1]])[:, 0])
        return hist

    def _stage_entry(self, entry, slot, index) -> tuple[dict, dict]:
        """torch's LBFGS state (tensors or arrays) as arrays of the parameters' dtype."""
        if not entry:
            return {}, {}
        out = {}
        for key, value in entry.items():
            if key in _ARRAY_KEYS:
                out[key] = None if value is None else np.array(np.asarray(value), self._dtype).reshape(-1)
            elif key in _HISTORY_KEYS:
                out[key] = [None if v is None else np.array(np.asarray(v), self._dtype) for v in value]
            elif key in _SCALAR_KEYS:
                out[key] = value if value is None or isinstance(value, (int, float)) else np.asarray(value)[()]
            else:
                raise ValueError(f"state of parameter {index}: unknown key {key!r} for LBFGS")
        return {}, out

    def state_dict(self) -> dict:
        """As Optimizer.state_dict, the history lists copied too (their arrays are views into the
        history buffer, which later steps overwrite)."""
        sd = super().state_dict()
        for entry in sd["state"].values():
            for key in _HISTORY_KEYS:
                if key in entry:
                    entry[key] = [v.copy() if isinstance(v, np.ndarray) else v for v in entry[key]]
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._history = None  # rebuilt from the loaded old_stps / old_dirs at the next step


def _data(p) -> np.ndarray:
    return p.data if isinstance(p, Parameter) else p


__all__ = ["LBFGS"]
