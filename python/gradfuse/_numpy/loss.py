"""NumPy twins of the loss kernels (cpp/src/loss.cpp): softmax, the losses, the penalties.

The math only: gf.ops checks every argument against the kernel table first (gradfuse.table); a
twin checks only what the table cannot say (class labels in range). The contract (formulas,
shapes, empty batches, precision) is at the top of cpp/include/gradfuse/loss.hpp. Outputs are
written in place; a loss returns its value as a Python float and writes its gradient when `grad`
is given.

The math is torch.nn.functional's (softmax, log_softmax, cross_entropy, multi_margin_loss, mse_loss,
binary_cross_entropy_with_logits). Sums are taken in float64, element-wise results in the arrays'
dtype, with the kernels' operation order. The results agree with the C++ kernels to rounding (exp,
log and the order of summation differ); the mse / sum-of-squares gradient and the penalty's
gradient update are element-wise IEEE arithmetic and bitwise equal to the kernels'.
"""

from __future__ import annotations

import numpy as np

from .._checks import fail
from ._common import quiet, torch_sign


def _check_label_range(fn: str, labels, classes: int, ignore_index=None) -> None:
    """Each label in [0, K), unless it is ignore_index (when there is one); the first bad one is named."""
    bad = (labels < 0) | (labels >= classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bad.any():
        i = int(np.argmax(bad))
        fail(fn, "labels", f"{{arg}} = {int(labels[i])} is out of range [0, {classes})", index=i)


def _divide(total: float, denom: float) -> float:
    """total / denom; the mean over nothing is NaN (0 / 0), as torch gives."""
    return float(np.float64(total) / np.float64(denom))


# ---- softmax ---------------------------------------------------------------------------------------


def _exp_sum(x):
    """max over the last axis, exp(x - max) and its sum (float64) over the last axis."""
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    return m, e, e.sum(axis=-1, keepdims=True, dtype=np.float64)


@quiet
def softmax_forward(*, x, y):
    if x.size == 0:
        return
    _, e, s = _exp_sum(x)
    y[...] = e * (1.0 / s).astype(x.dtype)


@quiet
def log_softmax_forward(*, x, y):
    if x.size == 0:
        return
    m, _, s = _exp_sum(x)
    y[...] = (x - m) - np.log(s).astype(x.dtype)


@quiet
def softmax_backward(*, y, dy, dx):
    if y.size == 0:
        return
    s = (dy * y).sum(axis=-1, keepdims=True, dtype=np.float64).astype(y.dtype)
    dx[...] = y * (dy - s)


@quiet
def log_softmax_backward(*, y, dy, dx):
    if y.size == 0:
        return
    s = dy.sum(axis=-1, keepdims=True, dtype=np.float64).astype(y.dtype)
    dx[...] = dy - np.exp(y) * s


# ---- losses over classes ---------------------------------------------------------------------------


@quiet
def softmax_cross_entropy(*, logits, labels, grad, reduction, ignore_index, label_smoothing):
    _check_label_range("softmax_cross_entropy", labels, logits.shape[1], ignore_index)
    dtype = logits.dtype.type
    k = logits.shape[1]
    rows = np.flatnonzero(labels != ignore_index)  # the rows that count
    denom = float(rows.size) if reduction == "mean" else 1.0
    eps = label_smoothing
    x, y = logits[rows], labels[rows]
    picked = np.arange(rows.size)
    total = 0.0
    if rows.size:
        m, e, s = _exp_sum(x)
        log_s = np.log(s[:, 0])
        loss = (m[:, 0].astype(np.float64) - x[picked, y].astype(np.float64)) + log_s  # lse - x_y
        if eps > 0:  # sum_j (lse - x_j) = sum_j (max - x_j) + K log s
            spread = (m - x).sum(axis=-1, dtype=np.float64)
            loss = (1.0 - eps) * loss + eps / k * (spread + k * log_s)
        total = loss.sum()
    if grad is not None:
        grad[...] = 0  # ignored rows
        if rows.size:
            g = e * (1.0 / (s * denom)).astype(dtype)
            if eps > 0:
                g = g - dtype(eps / (k * denom))
            g[picked, y] -= dtype((1.0 - eps) / denom)
            grad[rows] = g
    return _divide(total, denom)


@quiet
def multi_margin_loss(*, scores, labels, grad, p, margin, reduction):
    _check_label_range("multi_margin_loss", labels, scores.shape[1])
    dtype = scores.dtype.type
    n, k = scores.shape
    denom = float(n) if reduction == "mean" else 1.0
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


def _squared_error(pred, target, grad, mean: bool) -> float:
    denom = float(pred.size) if mean else 1.0
    d = pred - target
    total = np.square(d.astype(np.float64)).sum()
    if grad is not None and d.size:
        grad[...] = pred.dtype.type(2.0 / denom) * d  # torch: norm * (input - target)
    return _divide(total, denom)


@quiet
def mse_loss(*, pred, target, grad, reduction):
    return _squared_error(pred, target, grad, reduction == "mean")


@quiet
def sum_of_squares_loss(*, pred, target, grad):
    return _squared_error(pred, target, grad, False)


@quiet
def bce_with_logits(*, logits, targets, grad, reduction, pos_weight):
    x, t, pw = logits, targets, pos_weight
    dtype = x.dtype.type
    denom = float(x.size) if reduction == "mean" else 1.0
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


@quiet
def penalty(*, params, grads, l1, l2):
    abs_sum = sum((np.abs(w).sum(dtype=np.float64) for w in params), 0.0)
    sq_sum = sum((np.square(w.astype(np.float64)).sum() for w in params), 0.0)
    if grads is not None and (l1 != 0 or l2 != 0):
        for w, g in zip(params, grads):
            if l1 != 0 and l2 != 0:
                g += l1 * torch_sign(w) + l2 * w
            elif l1 != 0:
                g += l1 * torch_sign(w)
            else:
                g += l2 * w
    value = 0.0
    if l1 != 0:
        value += l1 * float(abs_sum)
    if l2 != 0:
        value += 0.5 * l2 * float(sq_sum)
    return value
