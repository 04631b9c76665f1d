"""NumPy twins of the loss kernels (cpp/src/loss.cpp): softmax, the losses, the penalties.

Same names, signatures, checks and messages as gradfuse._core; the contract (formulas, shapes,
empty batches, precision) is at the top of cpp/include/gradfuse/loss.hpp. Outputs are written in
place; a loss returns its value as a Python float and writes its gradient when `grad` is given.

The math is torch.nn.functional's (softmax, log_softmax, cross_entropy, multi_margin_loss, mse_loss,
binary_cross_entropy_with_logits). Sums are taken in float64, element-wise results in the arrays'
dtype, with the kernels' operation order. The results agree with the C++ kernels to rounding (exp,
log and the order of summation differ); the mse / sum-of-squares gradient and the penalty's
gradient update are element-wise IEEE arithmetic and bitwise equal to the kernels'.
"""
from __future__ import annotations

import numpy as np

from . import _checks as check

KERNELS: tuple[str, ...] = (
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
    "softmax_cross_entropy", "multi_margin_loss", "mse_loss", "sum_of_squares_loss", "bce_with_logits",
    "penalty",
)


# ---- shared checks ---------------------------------------------------------------------------------


def _quiet():
    """The C++ kernels never warn: inf - inf, 0 / 0 and overflow give NaN / inf silently."""
    return np.errstate(all="ignore")


def _reduction(fn: str, reduction) -> bool:
    """'mean' -> True, 'sum' -> False."""
    if not isinstance(reduction, str):
        raise TypeError(f"{fn}: reduction must be a str, got {type(reduction).__name__}")
    if reduction == "mean":
        return True
    if reduction == "sum":
        return False
    raise ValueError(f"{fn}: reduction must be 'mean' or 'sum', got '{reduction}'")


def _same_memory(a, b) -> bool:
    """The output is the input itself (allowed for the softmax kernels: in place)."""
    return (a is not None and b is not None and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.nbytes == b.nbytes)


def _check_labels(s: check.ArgSet, name: str, scores, labels) -> None:
    """(N, K) scores and (N,) labels."""
    if scores.ndim != 2:
        s.fail(f"{name} must be 2-D (N, K), got shape {check.shape_str(scores.shape)}")
    s.require_shape("labels", labels, (scores.shape[0],), "must be (N,) =")


def _check_label_range(s: check.ArgSet, labels, classes: int, ignore_index=None) -> None:
    """Each label in [0, K), unless it is ignore_index (when there is one)."""
    bad = (labels < 0) | (labels >= classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bad.any():
        i = int(np.argmax(bad))
        s.fail(f"labels[{i}] = {int(labels[i])} is out of range [0, {classes})")


def _divide(total: float, denom: float) -> float:
    """total / denom; the mean over nothing is NaN (0 / 0), as torch gives."""
    with _quiet():
        return float(np.float64(total) / np.float64(denom))


# ---- softmax ---------------------------------------------------------------------------------------


def _softmax_forward_checks(fn, x, y):
    s = check.ArgSet(fn)
    x = s.floating("x", x, False)
    y = s.floating("y", y, True)
    if x.ndim < 1:
        s.fail("x must have at least one axis (the last is normalised), got shape ()")
    s.require_shape("y", y, x.shape, "must have x's shape")
    if not _same_memory(x, y):  # y may be x itself (in place), nothing in between
        s.check_aliasing()
    return x, y


def _exp_sum(x):
    """max over the last axis, exp(x - max) and its sum (float64) over the last axis."""
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    return m, e, e.sum(axis=-1, keepdims=True, dtype=np.float64)


def softmax_forward(x, y):
    """y = softmax(x) over the last axis (max-subtracted: stable). y may be x itself (in place)."""
    x, y = _softmax_forward_checks("softmax_forward", x, y)
    if x.size == 0:
        return
    with _quiet():
        _, e, s = _exp_sum(x)
        y[...] = e * (1.0 / s).astype(x.dtype)


def log_softmax_forward(x, y):
    """y = log_softmax(x) = (x - max) - log(sum(exp(x - max))) over the last axis. y may be x itself."""
    x, y = _softmax_forward_checks("log_softmax_forward", x, y)
    if x.size == 0:
        return
    with _quiet():
        m, _, s = _exp_sum(x)
        y[...] = (x - m) - np.log(s).astype(x.dtype)


def _softmax_backward_checks(fn, y, dy, dx):
    s = check.ArgSet(fn)
    y = s.floating("y", y, False)
    dy = s.floating("dy", dy, False)
    dx = s.floating("dx", dx, True)
    if y.ndim < 1:
        s.fail("y must have at least one axis (the last is normalised), got shape ()")
    s.require_shape("dy", dy, y.shape, "must have y's shape")
    s.require_shape("dx", dx, y.shape, "must have y's shape")
    if _same_memory(dx, dy):  # dx may be dy itself (in place); it must still not overlap y
        pair = check.ArgSet(fn)
        pair.floating("y", y, False)
        pair.floating("dx", dx, True)
        pair.check_aliasing()
    else:
        s.check_aliasing()
    return y, dy, dx


def softmax_backward(y, dy, dx):
    """dx = y * (dy - sum(dy * y, last axis)), y = softmax(x). dx may be dy itself (in place)."""
    y, dy, dx = _softmax_backward_checks("softmax_backward", y, dy, dx)
    if y.size == 0:
        return
    with _quiet():
        s = (dy * y).sum(axis=-1, keepdims=True, dtype=np.float64).astype(y.dtype)
        dx[...] = y * (dy - s)


def log_softmax_backward(y, dy, dx):
    """dx = dy - exp(y) * sum(dy, last axis), y = log_softmax(x). dx may be dy itself (in place)."""
    y, dy, dx = _softmax_backward_checks("log_softmax_backward", y, dy, dx)
    if y.size == 0:
        return
    with _quiet():
        s = dy.sum(axis=-1, keepdims=True, dtype=np.float64).astype(y.dtype)
        dx[...] = dy - np.exp(y) * s


# ---- losses over classes ---------------------------------------------------------------------------


def softmax_cross_entropy(logits, labels, grad=None, *, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Softmax cross-entropy of (N, K) logits and (N,) int64 labels, as torch.nn.functional.cross_entropy;
    writes d loss / d logits into grad when given. Returns the loss."""
    fn = "softmax_cross_entropy"
    mean = _reduction(fn, reduction)
    check.closed_unit(fn, "label_smoothing", label_smoothing)
    ignore_index = check.integer(fn, "ignore_index", ignore_index)
    s = check.ArgSet(fn)
    logits = s.floating("logits", logits, False)
    labels = s.typed("labels", labels, False, "i", 8, "int64")
    grad = s.floating("grad", grad, True, optional=True)
    _check_labels(s, "logits", logits, labels)
    s.require_shape("grad", grad, logits.shape, "must have logits' shape")
    s.check_aliasing()
    _check_label_range(s, labels, logits.shape[1], ignore_index)

    dtype = logits.dtype.type
    k = logits.shape[1]
    rows = np.flatnonzero(labels != ignore_index)  # the rows that count
    denom = float(rows.size) if mean else 1.0
    eps = float(label_smoothing)
    with _quiet():
        x, y = logits[rows], labels[rows]
        picked = np.arange(rows.size)
        total = 0.0
        if rows.size:
            m, e, s_ = _exp_sum(x)
            log_s = np.log(s_[:, 0])
            loss = (m[:, 0].astype(np.float64) - x[picked, y].astype(np.float64)) + log_s  # lse - x_y
            if eps > 0:  # sum_j (lse - x_j) = sum_j (max - x_j) + K log s
                spread = (m - x).sum(axis=-1, dtype=np.float64)
                loss = (1.0 - eps) * loss + eps / k * (spread + k * log_s)
            total = loss.sum()
        if grad is not None:
            grad[...] = 0  # ignored rows
            if rows.size:
                g = e * (1.0 / (s_ * denom)).astype(dtype)
                if eps > 0:
                    g = g - dtype(eps / (k * denom))
                g[picked, y] -= dtype((1.0 - eps) / denom)
                grad[rows] = g
    return _divide(total, denom)


def multi_margin_loss(scores, labels, grad=None, *, p=1, margin=1.0, reduction="mean"):
    """Multiclass hinge loss of (N, K) scores and (N,) int64 labels, as torch.nn.functional.multi_margin_loss
    (divided by K); writes d loss / d scores into grad when given. Returns the loss."""
    fn = "multi_margin_loss"
    p = check.integer(fn, "p", p)
    if p not in (1, 2):
        raise ValueError(f"{fn}: p must be 1 or 2, got {p}")
    check.finite(fn, "margin", margin)
    mean = _reduction(fn, reduction)
    s = check.ArgSet(fn)
    scores = s.floating("scores", scores, False)
    labels = s.typed("labels", labels, False, "i", 8, "int64")
    grad = s.floating("grad", grad, True, optional=True)
    _check_labels(s, "scores", scores, labels)
    s.require_shape("grad", grad, scores.shape, "must have scores' shape")
    s.check_aliasing()
    _check_label_range(s, labels, scores.shape[1])

    dtype = scores.dtype.type
    n, k = scores.shape
    denom = float(n) if mean else 1.0
    with _quiet():
        rows = np.arange(n)
        z = (dtype(margin) - scores[rows, labels])[:, None] + scores  # margin - x_y + x_j
        positive = z > 0
        positive[rows, labels] = False  # j != y
        h = z if p == 1 else z * z
        total = (np.where(positive, h, 0).sum(axis=-1, dtype=np.float64) / k).sum()
        if grad is not None and n:
            g1 = dtype(1.0 / (k * denom))  # torch: g, and 2 * g * z
            g = np.where(positive, g1 if p == 1 else (dtype(2) * g1) * z, dtype(0)).astype(dtype)
            g[rows, labels] = (0.0 - g.sum(axis=-1, dtype=np.float64)).astype(dtype)
            grad[...] = g
    return _divide(total, denom)


# ---- element-wise losses ---------------------------------------------------------------------------


def _squared_error(fn, pred, target, grad, mean):
    s = check.ArgSet(fn)
    pred = s.floating("pred", pred, False)
    target = s.floating("target", target, False)
    grad = s.floating("grad", grad, True, optional=True)
    s.require_shape("target", target, pred.shape, "must have pred's shape")
    s.require_shape("grad", grad, pred.shape, "must have pred's shape")
    s.check_aliasing()
    denom = float(pred.size) if mean else 1.0
    with _quiet():
        d = pred - target
        total = np.square(d.astype(np.float64)).sum()
        if grad is not None and d.size:
            grad[...] = pred.dtype.type(2.0 / denom) * d  # torch: norm * (input - target)
    return _divide(total, denom)


def mse_loss(pred, target, grad=None, *, reduction="mean"):
    """Mean (or summed) squared error, as torch.nn.functional.mse_loss; grad = 2 (pred - target) / n
    (no / n for 'sum') when given. Returns the loss."""
    fn = "mse_loss"
    mean = _reduction(fn, reduction)
    return _squared_error(fn, pred, target, grad, mean)


def sum_of_squares_loss(pred, target, grad=None):
    """The seeds' L2 loss L = sum_i (pred_i - target_i)^2 (= mse_loss(reduction='sum')); grad = 2 (pred - target)
    when given. Returns the loss."""
    return _squared_error("sum_of_squares_loss", pred, target, grad, False)


def bce_with_logits(logits, targets, grad=None, *, reduction="mean", pos_weight=None):
    """Binary cross-entropy with logits, as torch.nn.functional.binary_cross_entropy_with_logits
    (pos_weight: (C,) over the last axis); grad = ((pw t + 1 - t) sigmoid(x) - pw t) / n when given.
    Returns the loss."""
    fn = "bce_with_logits"
    mean = _reduction(fn, reduction)
    s = check.ArgSet(fn)
    x = s.floating("logits", logits, False)
    t = s.floating("targets", targets, False)
    grad = s.floating("grad", grad, True, optional=True)
    pw = s.floating("pos_weight", pos_weight, False, optional=True)
    s.require_shape("targets", t, x.shape, "must have logits' shape")
    s.require_shape("grad", grad, x.shape, "must have logits' shape")
    if pw is not None:
        if x.ndim < 1:
            s.fail("pos_weight needs logits with a class axis (the last), got shape ()")
        s.require_shape("pos_weight", pw, (x.shape[-1],), "must be (C,) =")
    s.check_aliasing()

    dtype = x.dtype.type
    denom = float(x.size) if mean else 1.0
    with _quiet():
        e = np.exp(-np.abs(x))
        log1p_e = np.log1p(e)
        w = 1 if pw is None else 1 + (pw - 1) * t  # the positive class's weight
        loss = (1 - t) * x + w * (log1p_e - np.minimum(x, 0))
        total = loss.sum(dtype=np.float64)
        if grad is not None and x.size:
            r = 1 / (1 + e)
            sig = np.where(x < 0, e * r, r)  # sigmoid(x), never exp of a positive number
            if pw is None:
                d = sig - t
            else:
                pt = pw * t
                d = ((pt + 1) - t) * sig - pt
            grad[...] = d * dtype(1.0 / denom)
    return _divide(total, denom)


# ---- penalties -------------------------------------------------------------------------------------


def _torch_sign(x: np.ndarray) -> np.ndarray:
    """torch.sign: +1, -1, 0, and 0 for NaN."""
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


def penalty(params, grads=None, *, l1=0.0, l2=0.0):
    """L1 / L2 / elastic-net penalty over a list of parameters (or an arena) in one pass: returns
    l1 sum|w| + (l2/2) sum w^2 and, when grads are given, adds l1 sign(w) + l2 w to them in place."""
    fn = "penalty"
    check.nonneg(fn, "l1", l1)
    check.nonneg(fn, "l2", l2)
    ws, gs = check.tensor_lists(fn, ("params", params, False), ("grads", grads, True, False))
    abs_sum = sum((np.abs(w).sum(dtype=np.float64) for w in ws), 0.0)
    sq_sum = sum((np.square(w.astype(np.float64)).sum() for w in ws), 0.0)
    if gs is not None and (l1 != 0 or l2 != 0):
        with _quiet():
            for w, g in zip(ws, gs):
                if l1 != 0 and l2 != 0:
                    g += l1 * _torch_sign(w) + l2 * w
                elif l1 != 0:
                    g += l1 * _torch_sign(w)
                else:
                    g += l2 * w
    value = 0.0
    if l1 != 0:
        value += l1 * float(abs_sum)
    if l2 != 0:
        value += 0.5 * l2 * float(sq_sum)
    return value
