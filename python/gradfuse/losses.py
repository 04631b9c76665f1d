"""Losses: each returns (loss value, gradient with respect to its first argument), computed in one
fused pass by the loss kernels (gf.ops). Functions, and torch-style classes for fit().

    loss, dlogits = gf.losses.cross_entropy(logits, labels)
    model.backward(dlogits)
"""
from __future__ import annotations

import numpy as np

from . import ops
from .nn.module import check_input

__all__ = ["cross_entropy", "mse", "sum_of_squares", "hinge", "bce_with_logits", "Loss", "CrossEntropyLoss",
           "MSELoss", "SumOfSquaresLoss", "HingeLoss", "BCEWithLogitsLoss", "get_loss"]


def _labels(fn: str, labels) -> np.ndarray:
    """Class labels as the int64 array the kernels take (a read-only input: converting is safe)."""
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{fn}: labels must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{fn}: labels hold a value over the int64 range")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _targets(fn: str, name: str, t, dtype) -> np.ndarray:
    """Targets converted to the predictions' dtype (a read-only input: converting is safe)."""
    arr = np.asarray(t)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: {name} must be numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def cross_entropy(logits, labels, *, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Softmax cross-entropy from logits (N, K) and integer labels (N,): (loss, dlogits)."""
    labels = _labels("cross_entropy", labels)
    grad = np.empty_like(check_input("cross_entropy", "logits", logits))
    loss = ops.softmax_cross_entropy(logits, labels, grad, reduction=reduction, ignore_index=ignore_index,
                                     label_smoothing=label_smoothing)
    return loss, grad


def mse(pred, target, *, reduction="mean"):
    """Mean squared error: (mean((pred - target)^2), gradient)."""
    grad = np.empty_like(check_input("mse", "pred", pred))
    return ops.mse_loss(pred, _targets("mse", "target", target, pred.dtype), grad, reduction=reduction), grad


def sum_of_squares(pred, target):
    """The seeds' L2 loss, sum over every element of (pred - target)^2: (loss, gradient)."""
    grad = np.empty_like(check_input("sum_of_squares", "pred", pred))
    return ops.sum_of_squares_loss(pred, _targets("sum_of_squares", "target", target, pred.dtype), grad), grad


def hinge(scores, labels, *, margin=1.0, p=1, reduction="mean"):
    """The multiclass hinge (SVM) loss, torch's multi_margin_loss: (loss, dscores)."""
    labels = _labels("hinge", labels)
    grad = np.empty_like(check_input("hinge", "scores", scores))
    return ops.multi_margin_loss(scores, labels, grad, p=p, margin=margin, reduction=reduction), grad


def bce_with_logits(logits, targets, *, reduction="mean", pos_weight=None):
    """Binary cross-entropy from logits (stable): (loss, dlogits)."""
    grad = np.empty_like(check_input("bce_with_logits", "logits", logits))
    targets = _targets("bce_with_logits", "targets", targets, logits.dtype)
    loss = ops.bce_with_logits(logits, targets, grad, reduction=reduction, pos_weight=pos_weight)
    return loss, grad


class Loss:
    """A loss for fit(): loss(pred, target) -> (value, gradient). `classification` tells fit to
    report accuracy; predictions(pred) gives the predicted labels."""

    classification = False

    def __call__(self, pred, target):
        raise NotImplementedError

    def predictions(self, pred):
        return np.argmax(pred, axis=-1)

    def __repr__(self):
        return f"{type(self).__name__}()"


class CrossEntropyLoss(Loss):
    classification = True

    def __init__(self, reduction="mean", ignore_index=-100, label_smoothing=0.0):
        self.reduction, self.ignore_index, self.label_smoothing = reduction, ignore_index, label_smoothing

    def __call__(self, logits, labels):
        return cross_entropy(logits, labels, reduction=self.reduction, ignore_index=self.ignore_index,
                             label_smoothing=self.label_smoothing)


class HingeLoss(Loss):
    classification = True

    def __init__(self, margin=1.0, p=1, reduction="mean"):
        self.margin, self.p, self.reduction = margin, p, reduction

    def __call__(self, scores, labels):
        return hinge(scores, labels, margin=self.margin, p=self.p, reduction=self.reduction)


class BCEWithLogitsLoss(Loss):
    classification = True

    def __init__(self, reduction="mean", pos_weight=None):
        self.reduction, self.pos_weight = reduction, pos_weight

    def __call__(self, logits, targets):
        return bce_with_logits(logits, targets, reduction=self.reduction, pos_weight=self.pos_weight)

    def predictions(self, pred):
        return (pred > 0).astype(np.int64)


class MSELoss(Loss):
    def __init__(self, reduction="mean"):
        self.reduction = reduction

    def __call__(self, pred, target):
        return mse(pred, target, reduction=self.reduction)


class SumOfSquaresLoss(Loss):
    def __call__(self, pred, target):
        return sum_of_squares(pred, target)


_NAMES = {"cross_entropy": CrossEntropyLoss, "categorical_crossentropy": CrossEntropyLoss,
          "sparse_categorical_crossentropy": CrossEntropyLoss, "mse": MSELoss, "mean_squared_error": MSELoss,
          "sum_of_squares": SumOfSquaresLoss, "hinge": HingeLoss, "multi_margin": HingeLoss,
          "bce_with_logits": BCEWithLogitsLoss, "binary_crossentropy": BCEWithLogitsLoss}


def get_loss(loss) -> Loss:
    """A Loss from a Loss, a name ("cross_entropy", "mse", ...) or a callable(pred, target) ->
    (value, gradient)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        if loss not in _NAMES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(_NAMES)}")
        return _NAMES[loss]()
    if callable(loss):
        return _CallableLoss(loss)
    raise TypeError(f"loss must be a gradfuse.losses.Loss, a name or a callable, got {type(loss).__name__}")


class _CallableLoss(Loss):
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, pred, target):
        return self.fn(pred, target)
