"""The training loop: fit, evaluate, History, callbacks.

    history = gf.train.fit(model, "cross_entropy", opt, x, y, epochs=20, batch_size=64,
                           validation_split=0.1, schedule=sched,
                           callbacks=[gf.train.EarlyStopping(patience=3, restore_best_weights=True)])

fit arranges the fused kernels: per batch one forward, one loss kernel (value and gradient in one
pass), one backward, optionally a penalty pass over the arena, the gradient norm (and clipping), and
one optimizer step. It keeps per epoch: the training and validation loss, accuracy for
classification losses, the learning rate and the mean gradient norm (before clipping).

Everything random is seeded (the batch order from (seed, epoch), dropout masks from each layer's
seed and call counter), so a run resumed from a checkpoint (model, optimizer, schedule, callbacks,
epoch: see ModelCheckpoint and resume_state) continues bitwise like an uninterrupted one.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import time

import numpy as np

from . import data as _data
from . import memory
from .checkpoint import save
from .losses import get_loss
from .nn.layers import Sequential
from .optim import ModelClosure, clip_grad_norm_, clip_grad_value_, grad_norm, lr_scheduler
from .optim.schedulefree import eval_weights, holding_eval_weights, train_weights

__all__ = [
    "fit",
    "evaluate",
    "History",
    "Callback",
    "EarlyStopping",
    "ReduceLROnPlateau",
    "ModelCheckpoint",
    "TerminateOnNaN",
    "LearningRateScheduler",
    "BatchLogger",
    "resume_state",
]


# ---- History ----------------------------------------------------------------------------------------------
class History:
    """Per-epoch logs: history["loss"], history["val_loss"], history["accuracy"], history["lr"],
    history["grad_norm"], ... (one value per epoch), and the epoch numbers in history.epoch."""

    def __init__(self):
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, [math.nan] * (len(self.epoch) - 1)).append(float(value))
        for key, values in self.history.items():
            if len(values) < len(self.epoch):
                values.append(math.nan)

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def keys(self):
        return self.history.keys()

    def state_dict(self) -> dict:
        return {"epoch": list(self.epoch), "history": {k: list(v) for k, v in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = [int(e) for e in state["epoch"]]
        self.history = {k: [float(x) for x in v] for k, v in state["history"].items()}

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


# ---- callbacks --------------------------------------------------------------------------------------------
class Callback:
    """Hooks called by fit. self.trainer (set before on_train_begin) has .model, .optimizer,
    .history, .epoch and .stop_training (set it True to stop after this epoch)."""

    trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_batch_begin(self, batch, logs=None): ...
    def on_batch_end(self, batch, logs=None): ...

    def state_dict(self) -> dict:
        """What a resumed run needs (counters, best values); numbers and strings only."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def _say(self, message: str, verbose=None) -> None:
        """Print a message to stderr (where fit's lines go) when `verbose`, or, when it is None,
        fit's verbose, asks for it."""
        level = getattr(self.trainer, "verbose", 0) if verbose is None else verbose
        if level:
            print(message, file=sys.stderr, flush=True)


def _monitor_mode(monitor: str, mode: str) -> str:
    """The direction of improvement, "min" or "max"; "auto" maximizes accuracies and AUCs."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
    return mode


class _Monitor:
    """Tracks the best value of a logged quantity ("val_loss", "accuracy", ...)."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        self.monitor, self.mode, self.min_delta = monitor, _monitor_mode(monitor, mode), abs(float(min_delta))
        self.best = math.inf if self.mode == "min" else -math.inf

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def value(self, logs) -> float | None:
        if logs is None or self.monitor not in logs:
            return None
        return float(logs[self.monitor])


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs;
    restore_best_weights puts back the model (parameters and buffers) of the best epoch at the end
    of training, as Keras does. best_epoch and stopped_epoch count from 0, as Keras's; the messages
    ("Epoch 7: early stopping", "Restoring model weights from the end of the best epoch: 4.") count
    from 1, as Keras's. verbose: None (the default) prints them when fit prints (its verbose > 0),
    0 never, 1 always; Keras's default is 0."""

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0.0,
        patience=0,
        mode="auto",
        restore_best_weights=False,
        start_from_epoch=0,
        verbose=None,
    ):
        self.tracker = _Monitor(monitor, mode, min_delta)
        self.patience, self.restore_best_weights = int(patience), bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self.verbose = verbose
        self.wait, self.stopped_epoch, self.best_epoch = 0, None, None
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = self.tracker.value(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        if self.tracker.improved(value) or self.best_epoch is None:
            self.tracker.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.trainer.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:  # Keras: patience epochs without improvement
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch is not None:
            self._say(
                f"Epoch {self.stopped_epoch + 1}: early stopping ({self.tracker.monitor} did not improve "
                f"for {self.wait} epoch{'s' if self.wait != 1 else ''})",
                self.verbose,
            )
        if self.restore_best_weights and self.best_weights is not None and self.best_epoch is not None:
            self._say(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.", self.verbose)
            self.trainer.model.load_state_dict(self.best_weights)

    def state_dict(self):
        return {
            "best": self.tracker.best,
            "wait": self.wait,
            "best_epoch": -1 if self.best_epoch is None else self.best_epoch,
        }

    def load_state_dict(self, state):
        self.tracker.best, self.wait = float(state["best"]), int(state["wait"])
        self.best_epoch = None if int(state["best_epoch"]) < 0 else int(state["best_epoch"])


class ReduceLROnPlateau(Callback):
    """Multiply every group's lr by `factor` when `monitor` has not improved (by more than
    min_delta) for `patience` epochs (then wait `cooldown` epochs), never below min_lr: Keras'
    callback.

    The work is done by gf.optim.lr_scheduler.ReduceLROnPlateau (self.scheduler, built on fit's
    optimizer), stepped with the monitored value at the end of each epoch. It counts as torch does:
    it reduces after MORE than `patience` bad epochs, and the epoch that ends a cooldown does not
    count, where Keras' does; so it is given patience - 1 and cooldown - 1 (at least 0), which
    gives Keras' lr sequence exactly. One difference from Keras: an lr already below min_lr is left
    as it is, not raised to min_lr. The state dict keeps Keras' counters (best, wait,
    cooldown_left), so checkpoints written before this delegation still resume."""

    def __init__(
        self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4, cooldown=0, min_lr=0.0
    ):
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.monitor = monitor
        self.factor, self.patience, self.cooldown, self.min_lr = float(factor), int(patience), int(cooldown), min_lr
        mode = _monitor_mode(monitor, mode)
        self._scheduler_args = dict(
            mode=mode,
            factor=self.factor,
            patience=max(self.patience - 1, 0),
            threshold=abs(float(min_delta)),
            threshold_mode="abs",
            cooldown=max(self.cooldown - 1, 0),
            min_lr=min_lr,
            eps=0.0,
        )
        self.scheduler = None  # built by set_trainer: the optimizer is fit's
        # the counters until then (fit loads a resumed run's state before it sets the trainer)
        self._state = {"best": math.inf if mode == "min" else -math.inf, "wait": 0, "cooldown_left": 0}

    def set_trainer(self, trainer):
        super().set_trainer(trainer)
        state = self.state_dict()  # the counters so far: a resumed run's, or those of an earlier fit
        self.scheduler = lr_scheduler.ReduceLROnPlateau(trainer.optimizer, **self._scheduler_args)
        self.load_state_dict(state)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.monitor in logs:
            self.scheduler.step(float(logs[self.monitor]))

    def state_dict(self):
        s = self.scheduler
        if s is None:
            return dict(self._state)
        # Keras' cooldown_left runs one ahead of the scheduler's counter (Keras' 1 and 0 act alike)
        return {
            "best": s.best,
            "wait": s.num_bad_epochs,
            "cooldown_left": s.cooldown_counter + 1 if s.cooldown_counter else 0,
        }

    def load_state_dict(self, state):
        best, wait, cooldown_left = float(state["best"]), int(state["wait"]), int(state["cooldown_left"])
        if self.scheduler is None:
            self._state = {"best": best, "wait": wait, "cooldown_left": cooldown_left}
            return
        self.scheduler.best, self.scheduler.num_bad_epochs = best, wait
        self.scheduler.cooldown_counter = max(cooldown_left - 1, 0)


class TerminateOnNaN(Callback):
    """Stop as soon as a batch's loss is NaN or infinite."""

    def on_batch_end(self, batch, logs=None):
        if logs is not None and not math.isfinite(logs.get("loss", 0.0)):
            self.trainer.stop_training = True
            self.trainer.stop_now = True


class LearningRateScheduler(Callback):
    """Steps a scheduler (gf.optim.lr_scheduler) per "epoch" or per "batch", or sets every group's
    lr to fn(epoch) for a function."""

    def __init__(self, schedule, per="epoch"):
        if per not in ("epoch", "batch"):
            raise ValueError(f"per must be 'epoch' or 'batch', got {per!r}")
        self.schedule, self.per = schedule, per

    def _step(self, logs):
        if getattr(self.schedule, "takes_metrics", False):  # ReduceLROnPlateau (or warmup around one)
            self.schedule.step(logs.get("val_loss", logs.get("loss")))
        else:
            self.schedule.step()

    def on_epoch_begin(self, epoch, logs=None):
        if not hasattr(self.schedule, "step"):  # a function of the epoch
            for group in self.trainer.optimizer.param_groups:
                group["lr"] = float(self.schedule(epoch))

    def on_batch_end(self, batch, logs=None):
        if self.per == "batch" and hasattr(self.schedule, "step"):
            self._step(logs or {})

    def on_epoch_end(self, epoch, logs=None):
        if self.per == "epoch" and hasattr(self.schedule, "step"):
            self._step(logs or {})

    def state_dict(self):
        return self.schedule.state_dict() if hasattr(self.schedule, "state_dict") else {}

    def load_state_dict(self, state):
        if state and hasattr(self.schedule, "load_state_dict"):
            self.schedule.load_state_dict(state)


class BatchLogger(Callback):
    """Keeps every batch's logs (fit's: loss, lr, grad_norm before clipping): logger["grad_norm"] is
    a list with one value per batch, logger.epochs / logger.batches say which. gf.viz draws them."""

    def __init__(self):
        self.logs: dict[str, list] = {}
        self.epochs: list[int] = []
        self.batches: list[int] = []

    def on_batch_end(self, batch, logs=None):
        self.epochs.append(self.trainer.epoch)
        self.batches.append(int(batch))
        for key, value in (logs or {}).items():
            self.logs.setdefault(key, []).append(float(value))

    def __getitem__(self, key):
        return self.logs[key]

    def __contains__(self, key):
        return key in self.logs

    def epoch_position(self) -> np.ndarray:
        """Each batch's end in epochs (epoch e's last batch at e + 1), to draw beside a History."""
        epochs, batches = np.asarray(self.epochs), np.asarray(self.batches)
        per_epoch = {e: batches[epochs == e].max() + 1 for e in np.unique(epochs)}
        return np.array([e + (b + 1) / per_epoch[e] for e, b in zip(epochs, batches)], dtype=np.float64)


class ModelCheckpoint(Callback):
    """Save a checkpoint (gf.save: model, optimizer, callbacks and schedule state, history, epoch)
    at the end of every epoch, or only when `monitor` improves (save_best_only). filepath may hold
    "{epoch}" and any logged key, e.g. "ckpt-{epoch:03d}-{val_loss:.3f}.gfz"; {epoch} counts from 1,
    as Keras formats it: the file written after the first epoch is "ckpt-001-...". The state in the
    file resumes at the next epoch (its "epoch" entry is that same number)."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto", every=1):
        self.filepath = os.fspath(filepath)
        self.tracker = _Monitor(monitor, mode, 0.0)
        self.save_best_only, self.every = bool(save_best_only), int(every)
        self.saved: list[str] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self.tracker.value(logs)
            if value is None or not self.tracker.improved(value):
                return
            self.tracker.best = value
        elif (epoch + 1) % self.every:
            return
        path = self.filepath.format(epoch=epoch + 1, **logs)
        save(resume_state(self.trainer, epoch + 1), path)
        self.saved.append(path)

    def state_dict(self):
        return {"best": self.tracker.best}

    def load_state_dict(self, state):
        self.tracker.best = float(state["best"])


def resume_state(trainer, next_epoch: int) -> dict:
    """Everything fit needs to continue from next_epoch: pass it to fit(..., resume=state).
    A schedule-free optimizer's model is saved with its eval weights x (fit's next epoch moves
    them back to y)."""
    with holding_eval_weights(trainer.optimizer):
        return {
            "format": "gradfuse-fit",
            "epoch": int(next_epoch),
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "callbacks": [cb.state_dict() for cb in trainer.callbacks],
            "history": trainer.history.state_dict(),
        }


# ---- fit / evaluate ---------------------------------------------------------------------------------------
class _Trainer:
    def __init__(self, model, loss, optimizer, callbacks, verbose=0):
        self.model, self.loss, self.optimizer, self.callbacks = model, loss, optimizer, callbacks
        self.verbose = verbose
        self.history = History()
        self.stop_training = False
        self.stop_now = False
        self.epoch = 0


# ---- the API boundary: what fit and evaluate accept, converted or refused before anything changes -------
def _model_dtype(model):
    """The dtype of the model's parameters (None for a model without any)."""
    params = model.parameters()
    return params[0].dtype if params else None


def _inputs(x, dtype, where: str) -> np.ndarray:
    """x as a C-contiguous array of the model's dtype, as Keras casts at its boundary (the kernels
    never convert: they refuse). Numbers of any dtype and nested lists of them are converted; a list
    of arrays (a multi-input model), strings, objects and ragged lists are refused, naming what x is."""
    if isinstance(x, dict) or (
        isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(a, np.ndarray) and a.ndim >= 1 for a in x)
    ):
        what = f"a dict of {len(x)} arrays" if isinstance(x, dict) else f"a list of {len(x)} arrays"
        raise TypeError(
            f"{where} is {what}, as for a multi-input model; gradfuse's models take one array of "
            f"shape (N, features): join the inputs (np.concatenate(x, axis=1)), or train a "
            f"multi-input module with your own loop of model.forward / loss / model.backward / "
            f"optimizer.step"
        )
    try:
        arr = np.asarray(x)
    except ValueError:  # NumPy refuses ragged nested lists
        raise ValueError(
            f"{where} is a nested list whose rows have different lengths; give an array of shape (N, features)"
        ) from None
    if arr.dtype.kind not in "biuf":
        what = "strings" if arr.dtype.kind in "US" else f"{arr.dtype} values"
        raise TypeError(f"{where} must hold numbers, got {what} (a {type(x).__name__} of dtype {arr.dtype})")
    if dtype is None:  # no parameters to follow: floats stay, the rest becomes float32
        dtype = arr.dtype if arr.dtype.kind == "f" else np.float32
    return np.ascontiguousarray(arr, dtype=dtype)


def _output_layer(model):
    """The layer that makes a Sequential's output (looking through Identity, Flatten and Dropout,
    which pass it on), or the model itself."""
    if isinstance(model, Sequential):
        for layer in reversed(model.layers):
            if not layer._passes_output:
                return _output_layer(layer)
        return None
    return model


def _check_output_layer(model, loss, given, fn: str) -> None:
    """Refuse a probability loss on a model whose last layer gives logits, and a logits loss after a
    Sigmoid / Softmax (which would apply it twice): each gives a plausible loss and a wrong model."""
    takes = getattr(loss, "takes", None)
    layer = _output_layer(model)
    probabilities = None if layer is None else layer.gives_probabilities()
    if takes is None or probabilities is None:
        return
    name = f"'{given}' ({loss!r})" if isinstance(given, str) else repr(loss)
    act = loss.activation
    if takes == "probabilities" and not probabilities:
        end = "Sigmoid() (or give the last Dense activation='sigmoid')" if act == "sigmoid" else "Softmax()"
        raise ValueError(
            f"{fn}: the loss {name} takes probabilities, but the model's last layer {layer!r} gives "
            f"unbounded values (logits). End the model with {end}, or use {loss.counterpart}, which "
            f"takes logits"
        )
    if takes == "logits" and probabilities:
        raise ValueError(
            f"{fn}: the loss {name} takes logits and applies the {act} itself, but the model's last "
            f"layer {layer!r} already gives probabilities (the {act} would be applied twice). Remove "
            f"the final sigmoid / softmax, or use {loss.counterpart}, which takes probabilities"
        )


def _check_optimizer(model, optimizer) -> None:
    """The optimizer must step every trainable parameter of the model: one built over another
    model's parameters would leave this one untouched (a constant loss) without a sound."""
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        return
    stepped = {id(p) for group in groups for p in group["params"]}
    trainable = [(name, p) for name, p in model.named_parameters() if p.trainable]
    missing = [name for name, p in trainable if id(p) not in stepped]
    if missing:
        shown = ", ".join(missing[:6]) + (", ..." if len(missing) > 6 else "")
        raise ValueError(
            f"fit: the optimizer does not step {len(missing)} of the model's {len(trainable)} "
            f"trainable parameters ({shown}): build it over this model's parameters, e.g. "
            f"gf.optim.Adam(model.parameters()) or model.parameter_groups(...)"
        )


def _check_data(model, loss, x, y, where: str, dtype):
    """Convert and check training or validation data before fit changes anything: x to the model's
    dtype (see _inputs); x and y of different lengths, or empty; for the losses over class labels,
    labels that are not integers, not 1-D, or outside [0, K); for the losses whose target has the
    output's shape, a target of another shape ((N,) is accepted for a (N, 1) output, as in Keras) or,
    for the cross-entropies, outside [0, 1]. K and the output's shape come from an eval-mode forward
    of one sample, which also checks x's shape against the first layer. Returns (x, y)."""
    x = _inputs(x, dtype, f"fit: {where} x")
    try:
        y = np.asarray(y)
    except ValueError:
        raise ValueError(f"fit: {where} y is a nested list whose rows have different lengths") from None
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"fit: {where} x and y must hold samples along axis 0, got shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"fit: {where} x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError(
            f"fit: {where} x is empty (0 samples): there is nothing to "
            f"{'train on' if where == 'training' else 'validate on'}"
        )
    outputs = model.forward(x[:1], training=False)  # eval mode: no state changes
    kind, lossname = getattr(loss, "target_kind", None), type(loss).__name__
    if kind == "labels":
        if y.dtype.kind not in "iu":
            raise TypeError(f"fit: {where} y must hold integer class labels for {lossname}, got dtype {y.dtype}")
        if y.ndim != 1:
            raise ValueError(f"fit: {where} y must be 1-D class labels for {lossname}, got shape {y.shape}")
        classes = np.shape(outputs)[-1]
        ignored = getattr(loss, "ignore_index", None)
        bad = (y < 0) | (y >= classes)
        if ignored is not None:
            bad &= y != ignored
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"fit: {where} y[{i}] = {int(y[i])} is not a class id of the model's {classes} "
                f"outputs (expected 0 <= y < {classes})"
            )
    elif kind == "values":
        if y.dtype.kind not in "biuf":
            raise TypeError(f"fit: {where} y must hold numbers for {lossname}, got dtype {y.dtype}")
        want = tuple(np.shape(outputs)[1:])
        got = (1,) if (y.ndim == 1 and want == (1,)) else y.shape[1:]
        if got != want:
            hint = ""
            if y.ndim == 1 and y.dtype.kind in "iu":
                hint = (
                    ": y looks like integer class labels, which go with 'sparse_categorical_crossentropy' "
                    "(probabilities) or 'cross_entropy' (logits); or one-hot encode y"
                )
            raise ValueError(
                f"fit: {where} y has shape {y.shape}, but the model's output for each sample has "
                f"shape {want}, which {lossname} compares y with{hint}"
            )
        if getattr(loss, "unit_targets", False):
            bad = (y < 0) | (y > 1)
            if bad.any():
                i = tuple(int(k) for k in np.unravel_index(int(np.argmax(bad)), y.shape))
                raise ValueError(
                    f"fit: {where} y[{', '.join(map(str, i))}] = {y[i]} is outside [0, 1]: {lossname} "
                    f"takes 0/1 labels (or probabilities)"
                )
    return x, y


def _current_lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def _accuracy_count(loss, pred, target) -> float:
    """Correct predictions in a batch, counted in samples: with several outputs per sample (multi-label
    binary cross-entropy) each sample counts its fraction of correct outputs, as Keras's
    binary_accuracy averages them."""
    labels = np.asarray(loss.labels(target))
    if pred.dtype.kind == "V":  # bf16 outputs (precision="bf16"): compared as float32, exactly
        pred = pred.astype(np.float32)
    guess = np.asarray(loss.predictions(pred)).reshape(labels.shape)
    per_sample = labels.size / max(len(labels), 1)
    return float(np.count_nonzero(guess == labels)) / per_sample


def _evaluate(model, loss, x, y, batch_size) -> dict:
    n = len(x)
    if n == 0:
        return {"loss": math.nan}
    total, correct = 0.0, 0.0
    step = n if batch_size is None else int(batch_size)
    for i in range(0, n, step):
        pred = model.predict(x[i : i + step], batch_size=None)  # leaves a pending backward's state alone
        value, _ = loss(pred, y[i : i + step])
        total += value * len(pred)
        if loss.classification:
            correct += _accuracy_count(loss, pred, y[i : i + step])
    out = {"loss": total / n}
    if loss.classification:
        out["accuracy"] = correct / n
    return out


@memory.scoped
def evaluate(model, loss, x, y, batch_size: int | None = 1024) -> dict:
    """Mean loss (and accuracy for classification losses) over (x, y), in eval mode. x is converted
    to the model's dtype as in fit (scikit-learn's float64, integers, lists)."""
    given, loss = loss, get_loss(loss)
    _check_output_layer(model, loss, given, "evaluate")
    x = _inputs(x, _model_dtype(model), "evaluate: x")
    return _evaluate(model, loss, x, np.asarray(y), batch_size)


# ---- what fit prints ----------------------------------------------------------------------------------------
def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _bar_class():
    """tqdm.auto's bar where a live bar can be shown: on a terminal, or in a notebook (where tqdm.auto
    gives its widget). None in logs and pipes, or without tqdm."""
    try:
        from tqdm import auto, autonotebook, std  # auto first: it imports autonotebook without its warning
    except ImportError:
        return None
    if autonotebook.tqdm is not std.tqdm or _isatty(sys.stderr):
        return auto.tqdm
    return None


def _number(value) -> str:
    """A metric as Keras's progress bar writes it."""
    return f"{value:.4f}" if abs(value) > 1e-3 or value == 0 else f"{value:.4e}"


def _epoch_line(epoch, epochs, seconds, logs, show_lr) -> str:
    parts = [f"Epoch {epoch + 1}/{epochs}", f"{seconds:.2f}s"]
    parts += [f"{k}: {_number(v)}" for k, v in logs.items() if k not in ("lr", "grad_norm")]
    if show_lr:
        parts.append(f"lr: {logs['lr']:.4g}")
    return " - ".join(parts)


@memory.scoped
def fit(
    model,
    loss,
    optimizer,
    x,
    y,
    *,
    epochs=1,
    batch_size=32,
    validation_data=None,
    validation_split=0.0,
    schedule=None,
    schedule_per=None,
    callbacks=(),
    clip_norm=None,
    clip_value=None,
    regularizer=None,
    shuffle=True,
    seed=0,
    verbose=1,
    initial_epoch=0,
    resume=None,
    drop_last=False,
    precision=None,
) -> History:
    """Train `model` with `loss` and `optimizer` on (x, y) for `epochs` epochs of mini-batches.

    loss: a gf.losses.Loss or a name: "cross_entropy" (logits, integer labels), Keras's
    "sparse_categorical_crossentropy" / "categorical_crossentropy" / "binary_crossentropy"
    (probabilities: the model ends in Softmax / Sigmoid), "bce_with_logits", "mse", ... (the table
    in gf.losses). validation_data=(xv, yv) or validation_split (the LAST fraction of x/y, before
    shuffling, like Keras); epochs: 0 trains nothing (as in Keras); schedule: a gf.optim.lr_scheduler
    scheduler stepped per "epoch" (default) or per "batch" (schedule_per; ReduceLROnPlateau steps on
    the monitored validation loss); clip_norm / clip_value: gradient clipping by global L2 norm / by
    value; regularizer: a gf.regularizers penalty; resume: a state from resume_state /
    ModelCheckpoint (gf.load(path)) to continue a run exactly. precision: "bf16" (or "fp32") sets
    the model's precision for this fit and after it (model.set_precision: float32 masters and
    optimizer state, bf16 activations and GEMMs); None keeps the model's.

    verbose (to stderr): 0 silent; 1 a live progress bar per epoch (tqdm.auto: on a terminal, and
    as a widget in a notebook) and one line per epoch with the metrics ("Epoch 3/20 - 0.41s -
    loss: 0.2031 - accuracy: 0.9412 - val_loss: ... - val_accuracy: ...", the lr once it has changed),
    the lines also where no bar can be shown (logs, pipes); 2 the lines only. Epochs are numbered
    from 1 in everything printed; History.epoch and the callbacks' epoch arguments count from 0, as
    Keras's do.

    Inputs, as Keras takes them: x (and validation x) is converted to a C-contiguous array of the
    model's dtype (scikit-learn's float64, integers, nested lists: float32 for a float32 model) at this
    boundary; the kernels themselves never convert. One array only: a list of arrays (a multi-input
    model) is refused with how to do it. y: integer labels (N,) for the label losses; for the others
    the output's shape, or (N,) for an output of shape (N, 1) (1-D regression and binary targets).

    Everything is checked before anything changes (model, optimizer, callbacks), with a ValueError /
    TypeError naming the argument: x and y of different lengths or empty; labels that are not 1-D
    integers in [0, K), K the model's outputs; targets of the wrong shape, or outside [0, 1] for the
    cross-entropies; x that does not fit the model (an eval-mode forward of one sample, which changes
    no state, checks it); a loss that does not match the model's last layer (a probability loss
    without a final Sigmoid / Softmax, a logits loss after one); an optimizer that does not step
    every trainable parameter of the model; epochs < 0; schedule_per without a schedule.
    """
    given, loss = loss, get_loss(loss)
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral):
        raise TypeError(f"fit: epochs must be an integer, got {type(epochs).__name__}")
    if epochs < 0:
        raise ValueError(f"fit: epochs must be >= 0 (0 trains nothing), got {epochs}")
    if schedule is None and schedule_per is not None:
        raise ValueError(
            f"fit: schedule_per={schedule_per!r} was given without a schedule: pass schedule=... "
            f"(a gf.optim.lr_scheduler scheduler), or leave schedule_per out"
        )
    _check_output_layer(model, loss, given, "fit")
    _check_optimizer(model, optimizer)
    closure_driven = getattr(optimizer, "needs_closure", False)
    if closure_driven and (clip_norm is not None or clip_value is not None or regularizer is not None):
        raise ValueError(
            f"fit: {type(optimizer).__name__} steps with a closure (several loss and gradient evaluations "
            "per step): clip_norm, clip_value and regularizer do not apply to it"
        )
    callbacks = list(callbacks)
    if schedule is not None:
        callbacks.append(LearningRateScheduler(schedule, per=schedule_per or "epoch"))
    dtype = _model_dtype(model)
    if validation_data is None and validation_split:
        x, y = _inputs(x, dtype, "fit: training x"), np.asarray(y)
        (x, y), validation_data = _data.train_val_split(x, y, validation_split)
    # every argument is checked before anything changes (the model, the optimizer, the callbacks)
    x, y = _check_data(model, loss, x, y, "training", dtype)
    if validation_data is not None:
        validation_data = _check_data(model, loss, *validation_data, "validation", dtype)
    batches = _data.MiniBatches(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
    if precision is not None:  # the last check (a float64 model refuses bf16), and the first change
        model.set_precision(precision)
    trainer = _Trainer(model, loss, optimizer, callbacks, verbose)
    start = int(initial_epoch)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        for cb, state in zip(callbacks, resume["callbacks"]):
            cb.load_state_dict(state)
        trainer.history.load_state_dict(resume["history"])
        start = int(resume["epoch"])
    for cb in callbacks:
        cb.set_trainer(trainer)
    params = model.parameters()
    for cb in callbacks:
        cb.on_train_begin({})
    bar_class = _bar_class() if verbose == 1 else None
    first_lr, show_lr = _current_lr(optimizer), False
    for epoch in range(start, epochs):
        began = time.perf_counter()
        trainer.epoch = epoch
        for cb in callbacks:
            cb.on_epoch_begin(epoch, {})
        model.train()
        train_weights(optimizer)  # schedule-free: the parameters step at y
        batches.set_epoch(epoch)
        bar = None
        if bar_class is not None:  # Keras's "Epoch 3/20" bar; it gives way to the epoch's line
            bar = bar_class(
                total=len(batches),
                desc=f"Epoch {epoch + 1}/{epochs}",
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
                unit="batch",
            )
        seen, total_loss, correct, norms = 0, 0.0, 0.0, []
        try:
            for b, (xb, yb) in enumerate(batches):
                for cb in callbacks:
                    cb.on_batch_begin(b, {})
                if closure_driven:  # the optimizer evaluates the batch itself; loss and pred: before the step
                    closure = ModelClosure(model, loss, xb, yb)
                    value = float(optimizer.step(closure))
                    pred = closure.first_pred
                    norms.append(closure.first_grad_norm)
                else:
                    pred = model.forward(xb, training=True)
                    value, dpred = loss(pred, yb)
                    model.backward(dpred)
                    if regularizer is not None:
                        value += regularizer(params)
                    if clip_norm is not None:
                        norms.append(clip_grad_norm_(params, clip_norm))
                    else:
                        norms.append(grad_norm(params))
                    if clip_value is not None:
                        clip_grad_value_(params, clip_value)
                    optimizer.step()
                seen += len(xb)
                total_loss += value * len(xb)
                if loss.classification:
                    correct += _accuracy_count(loss, pred, yb)
                batch_logs = {"loss": value, "lr": _current_lr(optimizer), "grad_norm": norms[-1]}
                for cb in callbacks:
                    cb.on_batch_end(b, batch_logs)
                if bar is not None:
                    bar.set_postfix_str(f"loss: {_number(total_loss / seen)}", refresh=False)
                    bar.update(1)
                if trainer.stop_now:
                    break
        finally:
            if bar is not None:
                bar.close()
        # schedule-free: validation, the epoch-end callbacks (checkpoints, early stopping's best
        # weights) and the model fit returns see the averaged weights x
        eval_weights(optimizer)
        logs = {"loss": total_loss / max(seen, 1)}
        if loss.classification:
            logs["accuracy"] = correct / max(seen, 1)
        logs["lr"] = _current_lr(optimizer)
        logs["grad_norm"] = float(np.mean(norms)) if norms else math.nan
        if validation_data is not None:
            val = _evaluate(model, loss, validation_data[0], validation_data[1], 1024)
            logs.update({f"val_{k}": v for k, v in val.items()})
        trainer.history.append(epoch, logs)
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)
        if verbose in (1, 2):
            show_lr = show_lr or logs["lr"] != first_lr
            print(_epoch_line(epoch, epochs, time.perf_counter() - began, logs, show_lr), file=sys.stderr, flush=True)
        if trainer.stop_training:
            break
    for cb in callbacks:
        cb.on_train_end({})
    model.train()
    return trainer.history
