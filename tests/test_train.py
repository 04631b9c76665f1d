"""The training loop: convergence on digits, both backends, resume determinism, callbacks,
schedules in fit, frozen parameters, History, clipping, regularization, the demo."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import gradfuse as gf
from gradfuse import demo
from gradfuse.data import load_digits_split

sklearn = pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits():
    return load_digits_split(0)


def small_model(x_train, seed=0, dropout=0.2):
    nn = gf.nn
    return nn.Sequential(
        [
            nn.Standardize().adapt(x_train),
            nn.Dense(64, 64, init="he_normal", seed=seed),
            nn.BatchNorm(64),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Dense(64, 10, seed=seed + 1),
        ],
        seed=seed,
    )


def train(digits, epochs=6, seed=0, callbacks=(), verbose=0, **kw):
    x_train, y_train, x_val, y_val, _, _ = digits
    model = small_model(x_train, seed)
    opt = gf.optim.Adam(model.parameters(), lr=3e-3)
    history = gf.train.fit(
        model,
        "cross_entropy",
        opt,
        x_train,
        y_train,
        epochs=epochs,
        batch_size=64,
        validation_data=(x_val, y_val),
        seed=seed,
        verbose=verbose,
        callbacks=list(callbacks),
        **kw,
    )
    return model, opt, history


def test_the_demo_converges_on_digits_and_plots(tmp_path):
    out = tmp_path / "curves.png"
    result = demo.run(backend="cpp", seed=0, out=str(out), verbose=0)
    # 97.8-99.4% over 12 seeds on the reference machine; other CPUs round a little differently
    assert result["test_accuracy"] >= 0.965
    assert out.stat().st_size > 20_000
    history = result["history"]
    assert history["val_accuracy"][result["best_epoch"]] >= 0.95
    assert history["loss"][-1] < history["loss"][0] / 3  # label smoothing 0.1 floors the loss near 0.5


def test_cpp_and_numpy_backends_give_the_same_loss_curve(digits):
    curves = {}
    for backend in ("cpp", "numpy"):
        with gf.use_backend(backend):
            _, _, history = train(digits, epochs=4)
        curves[backend] = history
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose(curves["cpp"][key], curves["numpy"][key], rtol=2e-3, atol=2e-3, err_msg=key)


def test_history_has_every_per_epoch_quantity(digits):
    _, opt, history = train(digits, epochs=3)
    assert set(history.keys()) == {"loss", "accuracy", "lr", "grad_norm", "val_loss", "val_accuracy"}
    assert history.epoch == [0, 1, 2]
    assert all(len(v) == 3 for v in history.history.values())
    assert history["lr"] == [3e-3] * 3 and all(g > 0 for g in history["grad_norm"])
    assert history["val_accuracy"][-1] > 0.8


def test_resume_from_a_checkpoint_continues_bitwise(digits, tmp_path):
    """6 epochs straight == 3 epochs, a checkpoint, fresh objects loaded from it, 3 more epochs."""
    x_train, y_train, x_val, y_val, _, _ = digits

    def objects(seed=0):
        model = small_model(x_train, seed)
        opt = gf.optim.AdamW(model.parameter_groups(weight_decay=1e-2), lr=3e-3)
        sched = gf.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6 * 20)
        return model, opt, sched

    kw = dict(batch_size=64, validation_data=(x_val, y_val), seed=5, verbose=0, schedule_per="batch")
    model, opt, sched = objects()
    straight = gf.train.fit(model, "cross_entropy", opt, x_train, y_train, epochs=6, schedule=sched, **kw)
    path = tmp_path / "ckpt-{epoch}.gfz"
    m2, o2, s2 = objects()  # the same start as the straight run
    first = gf.train.fit(
        m2,
        "cross_entropy",
        o2,
        x_train,
        y_train,
        epochs=3,
        schedule=s2,
        callbacks=[gf.train.ModelCheckpoint(str(path), save_best_only=False)],
        **kw,
    )
    m3, o3, s3 = objects(seed=2)  # other weights and dropout seeds: everything must come from the file
    state = gf.load(str(path).format(epoch=3))  # the file after the 3rd epoch: Keras numbers from 1
    resumed = gf.train.fit(
        m3,
        "cross_entropy",
        o3,
        x_train,
        y_train,
        epochs=6,
        schedule=s3,
        resume=state,
        callbacks=[gf.train.ModelCheckpoint(str(path), save_best_only=False)],
        **kw,
    )
    assert len(first.epoch) == 3 and resumed.epoch == [0, 1, 2, 3, 4, 5]
    for key in straight.keys():
        assert resumed[key] == straight[key], key  # bitwise: == on floats
    for a, b in zip(m3.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(m3.state_dict()[key], value)


def test_early_stopping_restores_the_best_weights(digits):
    x_train, y_train, x_val, y_val, _, _ = digits
    snapshots = {}

    class Snapshot(gf.train.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots[epoch] = self.trainer.model.state_dict()

    stopper = gf.train.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    model = small_model(x_train)
    opt = gf.optim.SGD(model.parameters(), lr=2.0)  # far too large: the validation loss gets worse
    history = gf.train.fit(
        model,
        "cross_entropy",
        opt,
        x_train,
        y_train,
        epochs=30,
        batch_size=64,
        validation_data=(x_val, y_val),
        callbacks=[Snapshot(), stopper],
        verbose=0,
    )
    best = int(np.argmin(history["val_loss"]))
    assert stopper.best_epoch == best
    assert len(history.epoch) == best + 3 < 30  # stopped after `patience` epochs without improvement
    for key, value in snapshots[best].items():
        np.testing.assert_array_equal(model.state_dict()[key], value, err_msg=key)


def test_reduce_lr_on_plateau_lowers_the_learning_rate(digits):
    x_train, y_train, x_val, y_val, _, _ = digits
    plateau = gf.train.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=10.0)
    model = small_model(x_train)
    opt = gf.optim.Adam(model.parameters(), lr=1e-2)
    history = gf.train.fit(
        model,
        "cross_entropy",
        opt,
        x_train,
        y_train,
        epochs=4,
        batch_size=128,
        validation_data=(x_val, y_val),
        callbacks=[plateau],
        verbose=0,
    )
    # min_delta=10 means no epoch ever counts as an improvement after the first
    assert history["lr"][:2] == [1e-2, 1e-2]
    assert opt.param_groups[0]["lr"] < 1e-2 and history["lr"][-1] < history["lr"][0]


def keras_plateau_lrs(values, lr, factor, patience, cooldown, min_delta, min_lr, mode):
    """Keras' ReduceLROnPlateau (the callback's own code before it delegated to the scheduler)."""
    best, wait, cooldown_left, lrs = (math.inf if mode == "min" else -math.inf), 0, 0, []
    for value in values:
        if cooldown_left > 0:
            cooldown_left -= 1
            wait = 0
        if (value < best - min_delta) if mode == "min" else (value > best + min_delta):
            best, wait = value, 0
        elif cooldown_left == 0:
            wait += 1
            if wait >= patience:
                lr = max(lr * factor, min_lr)
                cooldown_left, wait = cooldown, 0
        lrs.append(lr)
    return lrs


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
@pytest.mark.parametrize("cooldown", [0, 1, 2, 3])
@pytest.mark.parametrize("monitor", ["val_loss", "val_accuracy"])
def test_reduce_lr_on_plateau_callback_follows_keras(patience, cooldown, monitor):
    """The callback delegates to gf.optim.lr_scheduler.ReduceLROnPlateau and gives Keras' lr sequence,
    also when its state goes through state_dict / load_state_dict into a new callback every epoch."""
    values = np.random.default_rng(patience * 4 + cooldown).integers(0, 6, 80).astype(float)  # many plateaus
    settings = dict(factor=0.5, patience=patience, cooldown=cooldown, min_delta=0.5, min_lr=0.02)
    mode = "max" if "acc" in monitor else "min"
    expected = keras_plateau_lrs(values, 1.0, **settings, mode=mode)
    assert min(expected) == 0.02  # the case reduces, down to min_lr

    def callback(lr, state=None):
        opt = gf.optim.SGD([np.zeros(1, np.float32)], lr=lr)
        cb = gf.train.ReduceLROnPlateau(monitor=monitor, **settings)
        if state is not None:
            cb.load_state_dict(state)  # as fit does on resume: before set_trainer
        cb.set_trainer(gf.train._Trainer(None, None, opt, [cb]))
        return cb, opt

    for resume_every_epoch in (False, True):
        lrs = []
        cb, opt = callback(1.0)
        for epoch, value in enumerate(values):
            if resume_every_epoch and epoch > 0:
                cb, opt = callback(lrs[-1], cb.state_dict())
            cb.on_epoch_end(epoch, {monitor: value, "loss": 1.0})
            lrs.append(opt.param_groups[0]["lr"])
        assert lrs == expected


def test_schedule_per_batch_and_per_epoch(digits):
    x_train, y_train = digits[0], digits[1]
    for per, expected_steps in (("batch", 3 * math.ceil(len(x_train) / 100)), ("epoch", 3)):
        model = small_model(x_train)
        opt = gf.optim.SGD(model.parameters(), lr=0.1)
        sched = gf.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        gf.train.fit(
            model,
            "cross_entropy",
            opt,
            x_train,
            y_train,
            epochs=3,
            batch_size=100,
            schedule=sched,
            schedule_per=per,
            verbose=0,
        )
        assert sched.last_epoch == expected_steps
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**expected_steps)


def test_frozen_parameters_are_unchanged_after_training(digits):
    x_train, y_train = digits[0], digits[1]
    model = small_model(x_train)
    model[1].freeze()
    before = model[1].weight.data.copy()
    other = model[5].weight.data.copy()
    gf.train.fit(
        model, "cross_entropy", gf.optim.Adam(model.parameters(), lr=1e-2), x_train, y_train, epochs=2, verbose=0
    )
    np.testing.assert_array_equal(model[1].weight.data, before)
    assert not np.array_equal(model[5].weight.data, other)


def test_clipping_caps_the_update_and_logs_the_norm(digits):
    x_train, y_train = digits[0], digits[1]
    runs = {}
    for clip in (None, 1e-3):
        model = small_model(x_train)
        opt = gf.optim.SGD(model.parameters(), lr=0.5)
        runs[clip] = gf.train.fit(
            model, "cross_entropy", opt, x_train, y_train, epochs=3, batch_size=len(x_train), clip_norm=clip, verbose=0
        )  # one batch per epoch
    free, clipped = runs[None], runs[1e-3]
    assert clipped["grad_norm"][0] == free["grad_norm"][0]  # the first batch's norm, measured before clipping
    assert clipped["grad_norm"][0] > 1e-3
    assert clipped["loss"][2] > free["loss"][2]  # steps of norm 1e-3 learn far more slowly


def test_regularizer_adds_to_the_loss(digits):
    _, _, plain = train(digits, epochs=1)
    _, _, penalized = train(digits, epochs=1, regularizer=gf.regularizers.L2(1.0))
    assert penalized["loss"][0] > plain["loss"][0] + 0.1


def test_terminate_on_nan(digits):
    x_train, y_train = digits[0], digits[1]
    model = small_model(x_train)
    opt = gf.optim.SGD(model.parameters(), lr=1e30)  # blows up at once
    history = gf.train.fit(
        model, "cross_entropy", opt, x_train, y_train, epochs=5, callbacks=[gf.train.TerminateOnNaN()], verbose=0
    )
    assert len(history.epoch) == 1 and not math.isfinite(history["loss"][0])


def test_validation_split_takes_the_last_fraction(digits):
    x_train, y_train = digits[0], digits[1]
    model = small_model(x_train)
    history = gf.train.fit(
        model,
        "cross_entropy",
        gf.optim.Adam(model.parameters()),
        x_train,
        y_train,
        epochs=1,
        validation_split=0.25,
        verbose=0,
    )
    n_val = len(x_train) - int(len(x_train) * 0.75)
    expected = gf.train.evaluate(model, "cross_entropy", x_train[-n_val:], y_train[-n_val:])
    assert history["val_loss"][0] == pytest.approx(expected["loss"], rel=1e-12)


def test_verbose_levels(digits, capsys):
    train(digits, epochs=2, verbose=2)
    assert capsys.readouterr().err.count("Epoch ") == 2  # Keras's "Epoch 1/2 - ..." lines
    train(digits, epochs=2, verbose=0)
    assert capsys.readouterr().err == ""


def test_evaluate_and_predict(digits):
    x_train, y_train, x_val, y_val, _, _ = digits
    model, _, _ = train(digits, epochs=3)
    scores = gf.train.evaluate(model, "cross_entropy", x_val, y_val, batch_size=50)
    pred = model.predict(x_val)
    assert scores["accuracy"] == pytest.approx(np.mean(pred.argmax(1) == y_val))
    assert scores["loss"] == pytest.approx(gf.losses.cross_entropy(pred, y_val)[0], rel=1e-5)


def test_model_checkpoint_best_only(digits, tmp_path):
    path = tmp_path / "best.gfz"
    cb = gf.train.ModelCheckpoint(str(path), monitor="val_accuracy", save_best_only=True)
    _, _, history = train(digits, epochs=4, callbacks=[cb])
    assert os.path.exists(path) and 1 <= len(cb.saved) <= 4
    state = gf.load(str(path))
    assert state["format"] == "gradfuse-fit"
    assert state["epoch"] == int(np.argmax(history["val_accuracy"])) + 1
