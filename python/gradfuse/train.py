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
import os
import sys

import numpy as np

from . import data as _data
from .checkpoint import save
from .losses import CrossEntropyLoss, HingeLoss, get_loss
from .optim import clip_grad_norm_, clip_grad_value_, grad_norm, lr_scheduler

__all__ = ["fit", "evaluate", "History", "Callback", "EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint",
           "TerminateOnNaN", "LearningRateScheduler", "BatchLogger", "resume_state"]


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
    restore_best_weights puts back the model (parameters and buffers) of the best epoch."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto", restore_best_weights=False,
                 start_from_epoch=0):
        self.tracker = _Monitor(monitor, mode, min_delta)
        self.patience, self.restore_best_weights = int(patience), bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
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
        if self.restore_best_weights and self.best_weights is not None and self.best_epoch is not None:
            self.trainer.model.load_state_dict(self.best_weights)

    def state_dict(self):
        return {"best": self.tracker.best, "wait": self.wait, "best_epoch": -1 if self.best_epoch is None else
                self.best_epoch}

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

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4, cooldown=0,
                 min_lr=0.0):
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.monitor = monitor
        self.factor, self.patience, self.cooldown, self.min_lr = float(factor), int(patience), int(cooldown), min_lr
        mode = _monitor_mode(monitor, mode)
        self._scheduler_args = dict(mode=mode, factor=self.factor, patience=max(self.patience - 1, 0),
                                    threshold=abs(float(min_delta)), threshold_mode="abs",
                                    cooldown=max(self.cooldown - 1, 0), min_lr=min_lr, eps=0.0)
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
        return {"best": s.best, "wait": s.num_bad_epochs,
                "cooldown_left": s.cooldown_counter + 1 if s.cooldown_counter else 0}

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
    "{epoch}" and any logged key, e.g. "ckpt-{epoch:03d}-{val_loss:.3f}.gfz"."""

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
        path = self.filepath.format(epoch=epoch, **logs)
        save(resume_state(self.trainer, epoch + 1), path)
        self.saved.append(path)

    def state_dict(self):
        return {"best": self.tracker.best}

    def load_state_dict(self, state):
        self.tracker.best = float(state["best"])


def resume_state(trainer, next_epoch: int) -> dict:
    """Everything fit needs to continue from next_epoch: pass it to fit(..., resume=state)."""
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
    def __init__(self, model, loss, optimizer, callbacks):
        self.model, self.loss, self.optimizer, self.callbacks = model, loss, optimizer, callbacks
        self.history = History()
        self.stop_training = False
        self.stop_now = False
        self.epoch = 0


def _accuracy_count(loss, pred, target) -> int:
    labels = np.asarray(target)
    guess = loss.predictions(pred)
    return int(np.count_nonzero(guess.reshape(labels.shape) == labels))


def evaluate(model, loss, x, y, batch_size: int | None = 1024) -> dict:
    """Mean loss (and accuracy for classification losses) over (x, y), in eval mode."""
    loss = get_loss(loss)
    n = len(x)
    if n == 0:
        return {"loss": math.nan}
    total, correct = 0.0, 0
    step = n if batch_size is None else int(batch_size)
    for i in range(0, n, step):
        pred = model.forward(x[i:i + step], training=False)
        value, _ = loss(pred, y[i:i + step])
        total += value * len(pred)
        if loss.classification:
            correct += _accuracy_count(loss, pred, y[i:i + step])
    out = {"loss": total / n}
    if loss.classification:
        out["accuracy"] = correct / n
    return out


def _check_data(model, loss, x, y, where: str):
    """Refuse bad training or validation data before fit changes anything: x and y of different
    lengths; for the losses over class labels, labels that are not integers, not 1-D, or outside
    [0, K) (K: the model's outputs, from an eval-mode forward of one sample, which also checks x's
    dtype and shape against the first layer). Returns (x, y) as arrays."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"fit: {where} x and y must hold samples along axis 0, got shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"fit: {where} x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        return x, y
    outputs = model.forward(x[:1], training=False)  # eval mode: no state changes
    if not isinstance(loss, (CrossEntropyLoss, HingeLoss)):
        return x, y
    if y.dtype.kind not in "iu":
        raise TypeError(f"fit: {where} y must hold integer class labels for {type(loss).__name__}, got dtype "
                        f"{y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"fit: {where} y must be 1-D class labels for {type(loss).__name__}, got shape {y.shape}")
    classes = np.shape(outputs)[-1]
    ignored = getattr(loss, "ignore_index", None)
    bad = (y < 0) | (y >= classes)
    if ignored is not None:
        bad &= y != ignored
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"fit: {where} y[{i}] = {int(y[i])} is not a class id of the model's {classes} outputs "
                         f"(expected 0 <= y < {classes})")
    return x, y


def _current_lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def _progress(total, desc, verbose):
    if verbose != 1 or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def fit(model, loss, optimizer, x, y, *, epochs=1, batch_size=32, validation_data=None, validation_split=0.0,
        schedule=None, schedule_per="epoch", callbacks=(), clip_norm=None, clip_value=None, regularizer=None,
        shuffle=True, seed=0, verbose=1, initial_epoch=0, resume=None, drop_last=False) -> History:
    """Train `model` with `loss` and `optimizer` on (x, y) for `epochs` epochs of mini-batches.

    validation_data=(xv, yv) or validation_split (the LAST fraction of x/y, before shuffling, like
    Keras); schedule: a gf.optim.lr_scheduler scheduler stepped per "epoch" or per "batch"
    (ReduceLROnPlateau steps on the monitored validation loss); clip_norm / clip_value: gradient
    clipping by global L2 norm / by value; regularizer: a gf.regularizers penalty; verbose: 0
    silent, 1 a progress bar on a terminal, 2 one line per epoch. resume: a state from
    resume_state / ModelCheckpoint (gf.load(path)) to continue a run exactly.

    The data is checked before anything changes (model, optimizer, callbacks): x and y of different
    lengths, and for the class-label losses (cross_entropy, hinge) labels that are not 1-D integers
    in [0, K), K the model's outputs, raise ValueError / TypeError naming y; so does x that does not
    fit the model (an eval-mode forward of one sample, which changes no state, checks it).
    """
    loss = get_loss(loss)
    callbacks = list(callbacks)
    if schedule is not None:
        callbacks.append(LearningRateScheduler(schedule, per=schedule_per))
    if validation_data is None and validation_split:
        (x, y), validation_data = _data.train_val_split(x, y, validation_split)
    # every argument is checked before anything changes (the model, the optimizer, the callbacks)
    x, y = _check_data(model, loss, x, y, "training")
    if validation_data is not None:
        validation_data = _check_data(model, loss, *validation_data, "validation")
    batches = _data.MiniBatches(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
    trainer = _Trainer(model, loss, optimizer, callbacks)
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
    bar = _progress(max(0, epochs - start) * len(batches), "fit", verbose)
    for epoch in range(start, epochs):
        trainer.epoch = epoch
        for cb in callbacks:
            cb.on_epoch_begin(epoch, {})
        model.train()
        batches.set_epoch(epoch)
        seen, total_loss, correct, norms = 0, 0.0, 0, []
        for b, (xb, yb) in enumerate(batches):
            for cb in callbacks:
                cb.on_batch_begin(b, {})
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
                bar.set_postfix(epoch=epoch, loss=f"{total_loss / seen:.4f}", refresh=False)
                bar.update(1)
            if trainer.stop_now:
                break
        logs = {"loss": total_loss / max(seen, 1)}
        if loss.classification:
            logs["accuracy"] = correct / max(seen, 1)
        logs["lr"] = _current_lr(optimizer)
        logs["grad_norm"] = float(np.mean(norms)) if norms else math.nan
        if validation_data is not None:
            val = evaluate(model, loss, validation_data[0], validation_data[1])
            logs.update({f"val_{k}": v for k, v in val.items()})
        trainer.history.append(epoch, logs)
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)
        if verbose == 2 or (verbose == 1 and bar is None and sys.stderr.isatty()):
            print(f"epoch {epoch + 1}/{epochs} " + " ".join(f"{k}={v:.4g}" for k, v in logs.items()),
                  file=sys.stderr)
        if trainer.stop_training:
            break
    if bar is not None:
        bar.close()
    for cb in callbacks:
        cb.on_train_end({})
    model.train()
    return trainer.history
