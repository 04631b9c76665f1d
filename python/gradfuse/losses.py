"""Losses: each returns (loss value, gradient with respect to its first argument). Functions, and
classes for fit(); every one is called as loss(pred, target), torch's order (Keras's functions take
y_true first), and returns (value, gradient).

    loss, dlogits = gf.losses.cross_entropy(logits, labels)
    model.backward(dlogits)

Which loss takes what (fit refuses a probability loss on a model whose last layer gives logits, and a
logits loss after a Sigmoid / Softmax):

    name (get_loss / fit)              class                                 pred           target
    "cross_entropy"                    CrossEntropyLoss (torch)              logits (N, K)  int labels (N,)
    "sparse_categorical_crossentropy"  SparseCategoricalCrossentropy (Keras) probs (N, K)   int labels (N,)
    "categorical_crossentropy"         CategoricalCrossentropy (Keras)       probs (N, K)   one-hot (N, K)
    "binary_crossentropy"              BinaryCrossentropy (Keras)            probs (N, C)   0/1 (N, C)
    "bce"                              BCELoss (torch)                       probs (N, C)   0/1 (N, C)
    "bce_with_logits"                  BCEWithLogitsLoss (torch)             logits (N, C)  0/1 (N, C)
    "mse", "sum_of_squares"            MSELoss, SumOfSquaresLoss             values         same shape
    "hinge"                            HingeLoss (torch's multi_margin_loss) scores (N, K)  int labels (N,)

The Keras classes take from_logits=True for logits, as in Keras. A target of shape (N,) is accepted
for an output of shape (N, 1) by the classes with same-shape targets, as Keras accepts it.

The losses over logits and the squared errors are fused kernels (gf.ops); the probability losses
(Keras's and torch's BCELoss) are NumPy over the model's small output, summed in float64.
"""

from __future__ import annotations

import numpy as np

from . import ops
from ._checks import is_bfloat16
from .nn.module import check_input

__all__ = [
    "cross_entropy",
    "mse",
    "sum_of_squares",
    "hinge",
    "bce_with_logits",
    "binary_cross_entropy",
    "Loss",
    "CrossEntropyLoss",
    "MSELoss",
    "SumOfSquaresLoss",
    "HingeLoss",
    "BCEWithLogitsLoss",
    "BCELoss",
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "get_loss",
    "EPSILON",
]

# Keras's backend.epsilon(): its probability losses clip probabilities to [EPSILON, 1 - EPSILON]
EPSILON = 1e-7


def _labels(fn: str, labels) -> np.ndarray:
    """Class labels as the int64 array the kernels take (a read-only input: converting is safe)."""
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{fn}: labels must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{fn}: labels hold a value over the int64 range")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _targets(fn: str, name: str, t, dtype) -> np.ndarray:
    """Targets converted to the predictions' dtype, float32 beside bfloat16 predictions (the kernels'
    "wide" targets: data, kept in float32) (a read-only input: converting is safe)."""
    dtype = np.float32 if is_bfloat16(np.dtype(dtype)) else dtype
    arr = np.asarray(t)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: {name} must be numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def cross_entropy(logits, labels, *, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Softmax cross-entropy from logits (N, K) and integer labels (N,): (loss, dlogits)."""
    labels = _labels("cross_entropy", labels)
    grad = np.empty_like(check_input("cross_entropy", "logits", logits))
    loss = ops.softmax_cross_entropy(
        logits, labels, grad, reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing
    )
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


# ---- losses over probabilities (NumPy over the model's output; float64 inside) ----------------------------
def _probabilities(fn: str, probs) -> np.ndarray:
    """probs as given (a float ndarray), after checking every value is in [0, 1]: logits here
    would give a plausible loss and a wrong model. NaN passes (it propagates, as in the kernels)."""
    check_input(fn, "pred", probs)
    if probs.dtype.kind != "f":
        raise TypeError(f"{fn}: pred must be float probabilities, got dtype {probs.dtype}")
    bad = (probs < 0) | (probs > 1)
    if bad.any():
        i = _first(bad)
        raise ValueError(
            f"{fn}: pred must be probabilities in [0, 1] (a Sigmoid's or Softmax's output), but "
            f"pred[{i}] = {probs.flat[np.argmax(bad)]:g}: for logits use from_logits=True or a "
            f"*_with_logits loss"
        )
    return probs


def _first(bad: np.ndarray) -> str:
    """The index of the first True of bad, as "2, 0"."""
    return ", ".join(str(int(k)) for k in np.unravel_index(int(np.argmax(bad)), bad.shape))


def _unit_targets(fn: str, targets, like: np.ndarray) -> np.ndarray:
    """Targets in [0, 1] with like's shape, as float64 (a (N,) target for a (N, 1) like is reshaped)."""
    t = _targets(fn, "target", targets, np.float64)
    t = _like_output(t, like)
    if t.shape != like.shape:
        raise ValueError(f"{fn}: target has shape {t.shape} but pred has shape {like.shape}")
    bad = (t < 0) | (t > 1)
    if bad.any():
        raise ValueError(
            f"{fn}: target must be in [0, 1] (0/1 labels or probabilities), but "
            f"target[{_first(bad)}] = {t.flat[np.argmax(bad)]:g}"
        )
    return t


def _like_output(t: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """A (N,) target for a (N, 1) prediction as (N, 1), as Keras accepts it; anything else as it is."""
    if t.ndim == 1 and pred.ndim == 2 and pred.shape[1] == 1 and len(t) == len(pred):
        return t.reshape(-1, 1)
    return t


def _mean(total: float, count: int) -> float:
    return float(total / count) if count else float("nan")  # the mean over nothing is NaN, as torch's


def binary_cross_entropy(probs, targets, *, reduction="mean"):
    """torch.nn.functional.binary_cross_entropy: probabilities in [0, 1] (a Sigmoid's output) and
    0/1 targets of the same shape: (loss, dprobs). Each log is clamped at -100 and the gradient
    (p - t) / max(p (1 - p), 1e-12) / n is torch's, so a saturated output stays finite."""
    fn = "binary_cross_entropy"
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{fn}: reduction must be 'mean' or 'sum', got {reduction!r}")
    p = _probabilities(fn, probs)
    t = _unit_targets(fn, targets, p)
    q = p.astype(np.float64)
    with np.errstate(divide="ignore"):
        value = -(t * np.maximum(np.log(q), -100.0) + (1 - t) * np.maximum(np.log1p(-q), -100.0)).sum()
    n = p.size if reduction == "mean" else 1
    grad = ((q - t) / np.maximum(q * (1 - q), 1e-12) / max(n, 1)).astype(p.dtype)
    return (_mean(value, p.size) if reduction == "mean" else float(value)), grad


def _keras_binary(probs, targets):
    """Keras's binary_crossentropy on probabilities: p clipped to [EPSILON, 1 - EPSILON], the mean
    of -(t log p + (1 - t) log(1 - p)) over every element. The gradient (p - t) / (p (1 - p)) / n
    uses the clipped p: the slope at the clip's edge where Keras's clip would give 0, so a saturated
    Sigmoid is still pushed back (through a Sigmoid the chain gives (p - t) / n)."""
    fn = "BinaryCrossentropy"
    p = _probabilities(fn, probs)
    t = _unit_targets(fn, targets, p)
    q = np.clip(p.astype(np.float64), EPSILON, 1 - EPSILON)
    value = -(t * np.log(q) + (1 - t) * np.log1p(-q)).sum()
    grad = ((q - t) / (q * (1 - q)) / max(p.size, 1)).astype(p.dtype)
    return _mean(value, p.size), grad


def _keras_categorical(probs, onehot, fn):
    """Keras's categorical_crossentropy on probabilities (N, K) and target distributions (N, K):
    q = p / sum(p) per row, clipped to [EPSILON, 1 - EPSILON]; the mean over rows of -sum t log q.
    The gradient (sum(t) - t / q) / sum(p) / N, with the clipped q (as in _keras_binary); through
    a Softmax it is (p - t) / N."""
    p = _probabilities(fn, probs)
    if p.ndim != 2:
        raise ValueError(f"{fn}: pred must be (N, K) class probabilities, got shape {p.shape}")
    t = onehot
    p64 = p.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # an all-zero row gives NaN, as in Keras
        total = p64.sum(axis=-1, keepdims=True)
        q = np.clip(p64 / total, EPSILON, 1 - EPSILON)
        value = -(t * np.log(q)).sum()
        grad = ((t.sum(axis=-1, keepdims=True) - t / q) / total / max(len(p), 1)).astype(p.dtype)
    return _mean(value, len(p)), grad


def _keras_categorical_logits(logits, onehot, fn):
    """-sum t log_softmax(z) per row, mean over rows; the gradient (softmax(z) sum(t) - t) / N."""
    z = check_input(fn, "pred", logits)
    if z.ndim != 2:
        raise ValueError(f"{fn}: pred must be (N, K) logits, got shape {z.shape}")
    log_p = np.empty_like(z)
    ops.log_softmax_forward(z, log_p)
    value = -(onehot * log_p).sum(dtype=np.float64)
    grad = ((np.exp(log_p.astype(np.float64)) * onehot.sum(axis=-1, keepdims=True) - onehot) / max(len(z), 1)).astype(
        z.dtype
    )
    return _mean(value, len(z)), grad


def _distribution_targets(fn: str, targets, pred) -> np.ndarray:
    """One-hot (or probability) targets of pred's (N, K) shape, float64; integer labels are refused
    with the loss that takes them."""
    t = np.asarray(targets)
    if t.dtype.kind in "iu" and t.ndim == 1:
        raise ValueError(
            f"{fn}: target holds integer class labels of shape {t.shape}, but this loss takes "
            f"one-hot targets of pred's shape {np.shape(pred)}: use SparseCategoricalCrossentropy "
            f"('sparse_categorical_crossentropy') for labels, or one-hot encode them"
        )
    return _unit_targets(fn, t, check_input(fn, "pred", pred))


def _one_hot(fn: str, labels, pred) -> np.ndarray:
    """(N,) integer labels in [0, K) as (N, K) float64 one-hot rows."""
    labels = _labels(fn, labels)
    pred = check_input(fn, "pred", pred)
    if pred.ndim != 2 or labels.shape != (pred.shape[0],):
        raise ValueError(f"{fn}: labels must be (N,) for pred of shape (N, K), got {labels.shape} and {pred.shape}")
    k = pred.shape[1]
    bad = (labels < 0) | (labels >= k)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{fn}: labels[{i}] = {int(labels[i])} is out of range [0, {k})")
    out = np.zeros(pred.shape, np.float64)
    out[np.arange(len(labels)), labels] = 1.0
    return out


class Loss:
    """A loss for fit(): loss(pred, target) -> (value, gradient with respect to pred).

    What fit reads: `classification` (report accuracy: predictions(pred) against labels(target));
    `takes`, "logits" or "probabilities" (fit refuses a mismatch with the model's last layer; None:
    no check), with `activation` ("sigmoid" / "softmax": what turns the logits into probabilities)
    and `counterpart` (the loss that takes the other kind) for its message; `target_kind`, "labels"
    (1-D integer class ids in [0, K)) or "values" (pred's shape, or (N,) for a (N, 1) pred), and
    `unit_targets` (targets in [0, 1]), which fit checks before training (None / False: no check)."""

    classification = False
    takes = None
    activation = None
    counterpart = None
    target_kind = None
    unit_targets = False

    def __call__(self, pred, target):
        raise NotImplementedError

    def predictions(self, pred):
        """The predicted class of each sample (or of each output, for binary losses)."""
        return np.argmax(pred, axis=-1)

    def labels(self, target):
        """The target as what predictions() is compared with."""
        return np.asarray(target)

    def __repr__(self):
        return f"{type(self).__name__}()"


class CrossEntropyLoss(Loss):
    """torch.nn.CrossEntropyLoss, "cross_entropy": softmax cross-entropy from LOGITS.

    pred: (N, K) float logits (the model must not end in a Softmax: this loss applies it).
    target: (N,) integer class ids in [0, K) (any integer dtype; ignore_index skips a sample).
    The fused kernel: value and gradient (softmax(z) - onehot) / N in one stable pass."""

    classification = True
    takes, activation, counterpart = "logits", "softmax", "'sparse_categorical_crossentropy'"
    target_kind = "labels"

    def __init__(self, reduction="mean", ignore_index=-100, label_smoothing=0.0):
        self.reduction, self.ignore_index, self.label_smoothing = reduction, ignore_index, label_smoothing

    def hessian_product(self, logits, labels, v):
        """(d^2 loss / d logits^2) v: per sample (diag(p) - p p^T) v_i, p = softmax(logits_i), over
        the counted samples (mean: divided by their number). Label smoothing does not change it."""
        z = logits.astype(np.float64)
        p = np.exp(z - z.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        hv = p * v - p * (p * v).sum(axis=-1, keepdims=True)
        counted = np.asarray(labels) != self.ignore_index
        hv[~counted] = 0
        if self.reduction == "mean":
            hv /= max(int(counted.sum()), 1)
        elif self.reduction != "sum":
            raise ValueError(f"CrossEntropyLoss.hessian_product: no Hessian for reduction={self.reduction!r}")
        return hv.astype(logits.dtype)

    def __call__(self, logits, labels):
        return cross_entropy(
            logits,
            labels,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


class HingeLoss(Loss):
    """The multiclass hinge (SVM) loss, torch's multi_margin_loss, "hinge".

    pred: (N, K) float scores (unbounded). target: (N,) integer class ids in [0, K), any integer
    dtype. Not Keras's
    "hinge", which takes (N, 1) scores and -1/+1 targets."""

    classification = True
    target_kind = "labels"

    def __init__(self, margin=1.0, p=1, reduction="mean"):
        self.margin, self.p, self.reduction = margin, p, reduction

    def __call__(self, scores, labels):
        return hinge(scores, labels, margin=self.margin, p=self.p, reduction=self.reduction)


class BCEWithLogitsLoss(Loss):
    """torch.nn.BCEWithLogitsLoss, "bce_with_logits": binary cross-entropy from LOGITS (stable).

    pred: (N, C) float logits (the model must not end in a Sigmoid: this loss applies it).
    target: 0/1 labels or probabilities of pred's shape, any number dtype; (N,) for a (N, 1) pred.
    Accuracy counts logit > 0 as class 1."""

    classification = True
    takes, activation, counterpart = "logits", "sigmoid", "'binary_crossentropy'"
    target_kind, unit_targets = "values", True

    def __init__(self, reduction="mean", pos_weight=None):
        self.reduction, self.pos_weight = reduction, pos_weight

    def __call__(self, logits, targets):
        targets = _like_output(np.asarray(targets), logits)
        return bce_with_logits(logits, targets, reduction=self.reduction, pos_weight=self.pos_weight)

    def predictions(self, pred):
        return (pred > 0).astype(np.int64)


class BCELoss(Loss):
    """torch.nn.BCELoss, "bce": binary cross-entropy from PROBABILITIES (a Sigmoid's output).

    pred: (N, C) float probabilities in [0, 1] (anything else is refused). target: 0/1 labels or
    probabilities in [0, 1] of pred's shape, any number dtype; (N,) for a (N, 1) pred. torch's
    clamping (log >= -100) and gradient. Accuracy counts p > 0.5 as class 1."""

    classification = True
    takes, activation, counterpart = "probabilities", "sigmoid", "'bce_with_logits'"
    target_kind, unit_targets = "values", True

    def __init__(self, reduction="mean"):
        self.reduction = reduction

    def __call__(self, probs, targets):
        return binary_cross_entropy(probs, targets, reduction=self.reduction)

    def predictions(self, pred):
        return (pred > 0.5).astype(np.int64)


class BinaryCrossentropy(Loss):
    """keras.losses.BinaryCrossentropy, "binary_crossentropy": PROBABILITIES by default.

    pred: (N, C) float probabilities in [0, 1], the output of a Sigmoid (or Dense(...,
    activation="sigmoid")); with from_logits=True, logits (then it is BCEWithLogitsLoss's kernel).
    target: 0/1 labels or probabilities in [0, 1] of pred's shape, any number dtype; (N,) for a
    (N, 1) pred. Keras's math: p clipped to [1e-7, 1 - 1e-7], the mean over every element.
    Accuracy (Keras's binary_accuracy) counts p > 0.5 (logit > 0) as class 1."""

    classification = True
    activation, target_kind, unit_targets = "sigmoid", "values", True

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)
        self.takes = "logits" if self.from_logits else "probabilities"
        self.counterpart = (
            f"BinaryCrossentropy(from_logits={not self.from_logits}) "
            f"('{'binary_crossentropy' if self.from_logits else 'bce_with_logits'}')"
        )

    def __call__(self, pred, target):
        if self.from_logits:
            return bce_with_logits(pred, _like_output(np.asarray(target), pred))
        return _keras_binary(pred, target)

    def predictions(self, pred):
        return (pred > (0 if self.from_logits else 0.5)).astype(np.int64)

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class CategoricalCrossentropy(Loss):
    """keras.losses.CategoricalCrossentropy, "categorical_crossentropy": PROBABILITIES by default.

    pred: (N, K) float class probabilities, a Softmax's output (each row is normalised to sum 1,
    then clipped to [1e-7, 1 - 1e-7], as Keras does); with from_logits=True, logits.
    target: ONE-HOT (N, K) rows (or probability distributions), any number dtype; integer labels
    (N,) are refused: they are SparseCategoricalCrossentropy's. Accuracy compares the argmaxes."""

    classification = True
    activation, target_kind, unit_targets = "softmax", "values", True

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)
        self.takes = "logits" if self.from_logits else "probabilities"
        self.counterpart = f"CategoricalCrossentropy(from_logits={not self.from_logits})"

    def __call__(self, pred, target):
        onehot = _distribution_targets(type(self).__name__, target, pred)
        if self.from_logits:
            return _keras_categorical_logits(pred, onehot, type(self).__name__)
        return _keras_categorical(pred, onehot, type(self).__name__)

    def labels(self, target):
        return np.argmax(target, axis=-1)

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class SparseCategoricalCrossentropy(Loss):
    """keras.losses.SparseCategoricalCrossentropy, "sparse_categorical_crossentropy": PROBABILITIES
    by default.

    pred: (N, K) float class probabilities, a Softmax's output (normalised and clipped as in
    CategoricalCrossentropy); with from_logits=True, logits (then it is CrossEntropyLoss's kernel).
    target: (N,) integer class ids in [0, K), any integer dtype."""

    classification = True
    activation, target_kind = "softmax", "labels"

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)
        self.takes = "logits" if self.from_logits else "probabilities"
        self.counterpart = (
            "'sparse_categorical_crossentropy'"
            if self.from_logits
            else "'cross_entropy' (or SparseCategoricalCrossentropy(from_logits=True))"
        )

    def __call__(self, pred, labels):
        if self.from_logits:
            return cross_entropy(pred, labels)
        return _keras_categorical(pred, _one_hot(type(self).__name__, labels, pred), type(self).__name__)

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class MSELoss(Loss):
    """torch.nn.MSELoss, "mse" / "mean_squared_error" (Keras's too): the mean of (pred - target)^2.

    pred: any float shape, unbounded. target: pred's shape, any number dtype (converted to pred's);
    (N,) for a (N, 1) pred, as Keras accepts it."""

    target_kind = "values"

    def __init__(self, reduction="mean"):
        self.reduction = reduction

    def hessian_product(self, pred, target, v):
        """(d^2 loss / d pred^2) v = 2 v (/ pred.size for the mean)."""
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"MSELoss.hessian_product: no Hessian for reduction={self.reduction!r}")
        return (2.0 / (pred.size if self.reduction == "mean" else 1)) * v

    def __call__(self, pred, target):
        return mse(pred, _like_output(np.asarray(target), pred), reduction=self.reduction)


class SumOfSquaresLoss(Loss):
    """ "sum_of_squares": the seeds' L2 loss, the SUM over every element of (pred - target)^2.

    pred: any float shape. target: pred's shape, any number dtype; (N,) for a (N, 1) pred."""

    target_kind = "values"

    def __call__(self, pred, target):
        return sum_of_squares(pred, _like_output(np.asarray(target), pred))


# Keras's names have Keras's meaning (probabilities in); torch's names torch's (BCELoss: probabilities,
# the *_with_logits and cross_entropy: logits).
_NAMES = {
    "cross_entropy": CrossEntropyLoss,
    "softmax_cross_entropy": CrossEntropyLoss,
    "bce_with_logits": BCEWithLogitsLoss,
    "binary_cross_entropy_with_logits": BCEWithLogitsLoss,
    "bce": BCELoss,
    "binary_cross_entropy": BCELoss,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "mse": MSELoss,
    "mean_squared_error": MSELoss,
    "sum_of_squares": SumOfSquaresLoss,
    "hinge": HingeLoss,
    "multi_margin": HingeLoss,
}


def get_loss(loss) -> Loss:
    """A Loss from a Loss, a name ("cross_entropy", "binary_crossentropy", "mse", ...: the table in
    this module's docstring) or a callable(pred, target) -> (value, gradient)."""
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

    def __repr__(self):
        return getattr(self.fn, "__name__", repr(self.fn))
