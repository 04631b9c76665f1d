"""gf.train.fit as Keras and torch users call it (issue 11): the loss must match the model's last
layer (item 1), inputs that would train on garbage are refused and change nothing (item 5), inputs
are cast to the model's dtype at the boundary (item 6), 1-D targets (item 7b), what fit prints
(item 8), multi-input x (item 11)."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import gradfuse as gf

nn = gf.nn


def data(n=24, features=4, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, features)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def mlp(*head, out=3, seed=0):
    return nn.Sequential(
        [nn.Dense(4, 8, activation="relu", seed=seed), nn.Dense(8, out, seed=seed + 1), *head], seed=seed
    )


def snapshot(model, opt):
    return model.state_dict(), opt.state_dict()


def assert_unchanged(before, model, opt):
    state, opt_state = before
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    assert repr(opt.state_dict()) == repr(opt_state)


def refused(model, opt, exc, match, *args, **kwargs):
    """fit(model, ..., opt, ...) raises exc matching `match`, and the model and optimizer are unchanged."""
    before = snapshot(model, opt)
    with pytest.raises(exc, match=match) as info:
        gf.train.fit(model, *args, **{"verbose": 0, **kwargs})
    assert_unchanged(before, model, opt)
    return str(info.value)


# ---- item 1: the loss and the last layer ---------------------------------------------------------------
MISMATCHES = {  # loss, the model's head (after Dense(8, out)), out -> text the message must hold
    "binary_crossentropy-on-logits": (
        "binary_crossentropy",
        [],
        1,
        ["'binary_crossentropy'", "Dense(8, 1", "Sigmoid()", "from_logits=True"],
    ),
    "bce-on-relu": ("bce", [nn.ReLU()], 1, ["'bce'", "ReLU()", "Sigmoid()", "'bce_with_logits'"]),
    "categorical-on-logits": ("categorical_crossentropy", [], 3, ["Softmax()", "from_logits=True"]),
    "sparse-on-logits": ("sparse_categorical_crossentropy", [], 3, ["Softmax()", "'cross_entropy'"]),
    "cross_entropy-after-softmax": (
        "cross_entropy",
        [nn.Softmax()],
        3,
        ["takes logits", "Softmax()", "'sparse_categorical_crossentropy'"],
    ),
    "bce_with_logits-after-sigmoid": (
        "bce_with_logits",
        [nn.Sigmoid()],
        1,
        ["applied twice", "Sigmoid()", "'binary_crossentropy'"],
    ),
    "keras-from_logits-after-sigmoid": (
        gf.losses.BinaryCrossentropy(from_logits=True),
        [nn.Sigmoid()],
        1,
        ["applied twice", "BinaryCrossentropy(from_logits=False)"],
    ),
}


@pytest.mark.parametrize("case", MISMATCHES)
def test_fit_refuses_a_loss_that_does_not_match_the_last_layer(case):
    loss, head, out, texts = MISMATCHES[case]
    model = mlp(*head, out=out)
    opt = gf.optim.Adam(model.parameters())
    x, y = data()
    if "categorical_crossentropy" in str(loss):
        y = np.eye(3)[y]
    message = refused(model, opt, ValueError, "last layer", loss, opt, x, y)
    for text in texts:
        assert text in message, message
    with pytest.raises(ValueError, match="last layer"):
        gf.train.evaluate(model, loss, x, y)


def test_a_dense_with_a_sigmoid_activation_gives_probabilities():
    model = nn.Sequential([nn.Dense(4, 1, activation="sigmoid", seed=0)])
    x, y = data()
    gf.train.fit(model, "binary_crossentropy", gf.optim.Adam(model.parameters()), x, y, verbose=0)
    with pytest.raises(ValueError, match="applied twice"):
        gf.train.fit(model, "bce_with_logits", gf.optim.Adam(model.parameters()), x, y, verbose=0)


def test_a_custom_last_module_is_not_judged_but_the_loss_still_checks_its_values():
    class Scale(nn.Module):
        def forward(self, x, training=None):
            return x * 3

        def backward(self, dy, *, accumulate=False, need_input_grad=True):
            return dy * 3

    model = nn.Sequential([nn.Dense(4, 1, seed=0), Scale()])
    x, y = data()
    gf.train.fit(model, "bce_with_logits", gf.optim.Adam(model.parameters()), x, y, verbose=0)
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        gf.train.fit(model, "binary_crossentropy", gf.optim.Adam(model.parameters()), x, y, verbose=0)


# ---- item 5: inputs that train on garbage ----------------------------------------------------------------
def test_empty_x_is_refused():
    model = mlp()
    opt = gf.optim.Adam(model.parameters())
    x, y = data()
    refused(model, opt, ValueError, "empty", "cross_entropy", opt, x[:0], y[:0])
    refused(model, opt, ValueError, "validation x is empty", "cross_entropy", opt, x, y, validation_data=(x[:0], y[:0]))


@pytest.mark.parametrize("epochs,exc", [(-1, ValueError), (2.5, TypeError), (True, TypeError)])
def test_negative_or_non_integer_epochs_are_refused(epochs, exc):
    model = mlp()
    opt = gf.optim.Adam(model.parameters())
    refused(model, opt, exc, "epochs", "cross_entropy", opt, *data(), epochs=epochs)


def test_zero_epochs_trains_nothing():
    model = mlp()
    opt = gf.optim.Adam(model.parameters())
    before = snapshot(model, opt)
    history = gf.train.fit(model, "cross_entropy", opt, *data(), epochs=0, verbose=1)
    assert history.epoch == [] and history.history == {}
    assert_unchanged(before, model, opt)


def test_an_optimizer_over_another_models_parameters_is_refused():
    model, other = mlp(seed=0), mlp(seed=5)
    opt = gf.optim.Adam(other.parameters())
    message = refused(model, opt, ValueError, "does not step 4 of the model's 4", "cross_entropy", opt, *data())
    assert "0.weight" in message and "model.parameters()" in message
    part = gf.optim.Adam(model.layers[1].parameters())  # the head only: the rest would never train
    assert "(0.weight, 0.bias)" in refused(model, part, ValueError, "does not step 2", "cross_entropy", part, *data())


def test_frozen_parameters_need_not_be_in_the_optimizer():
    model = mlp()
    model.layers[0].freeze()
    gf.train.fit(model, "cross_entropy", gf.optim.Adam(model.layers[1].parameters()), *data(), verbose=0)


def test_schedule_per_without_a_schedule_is_refused():
    model = mlp()
    opt = gf.optim.Adam(model.parameters())
    refused(
        model,
        opt,
        ValueError,
        "schedule_per='batch' was given without a schedule",
        "cross_entropy",
        opt,
        *data(),
        schedule_per="batch",
    )


# ---- item 6: dtype at the boundary -----------------------------------------------------------------------
def test_float64_int_and_list_inputs_are_cast_to_the_models_dtype():
    x, y = data()
    xi = np.round(x * 4).astype(np.int64)
    histories = []
    for given in (xi.astype(np.float32), xi, xi.astype(np.float64), xi.tolist()):
        model = mlp()
        validation = (given[:8], y[:8])
        histories.append(
            gf.train.fit(
                model,
                "cross_entropy",
                gf.optim.Adam(model.parameters()),
                given,
                y,
                epochs=2,
                batch_size=8,
                validation_data=validation,
                verbose=0,
            ).history
        )
        assert gf.train.evaluate(model, "cross_entropy", given, y)["loss"] == pytest.approx(
            gf.train.evaluate(model, "cross_entropy", xi.astype(np.float32), y)["loss"], rel=0, abs=0
        )
    assert all(h == histories[0] for h in histories)  # bitwise the same run


def test_a_float64_model_keeps_float64():
    model = nn.Sequential([nn.Dense(4, 2, seed=0, dtype=np.float64)])
    x, y = data()
    gf.train.fit(model, "cross_entropy", gf.optim.Adam(model.parameters()), x, y, verbose=0)  # float32 x cast up
    assert model.parameters()[0].dtype == np.float64


@pytest.mark.parametrize(
    "bad,exc,text",
    [
        ([["a", "b", "c", "d"]] * 24, TypeError, "strings"),
        ([[1, 2, 3, 4]] * 23 + [[1, 2]], ValueError, "different lengths"),
        (np.array([object()] * 24), TypeError, "must hold numbers"),
    ],
)
def test_impossible_inputs_are_named_without_float64(bad, exc, text):
    model = mlp()
    opt = gf.optim.Adam(model.parameters())
    message = refused(model, opt, exc, text, "cross_entropy", opt, bad, data()[1])
    assert "float64" not in message


def test_int_input_of_the_wrong_width_does_not_say_float64():
    model = mlp()
    opt = gf.optim.Adam(model.parameters())
    before = snapshot(model, opt)
    with pytest.raises(ValueError) as info:
        gf.train.fit(model, "cross_entropy", opt, np.ones((24, 5), np.int64), data()[1], verbose=0)
    assert "float64" not in str(info.value)
    assert_unchanged(before, model, opt)


def test_fit_documents_the_cast():
    assert "model's dtype" in gf.train.fit.__doc__ and "float64" in gf.train.fit.__doc__


# ---- item 7b: 1-D targets --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "loss,head",
    [
        ("mse", []),
        ("sum_of_squares", []),
        ("bce_with_logits", []),
        ("binary_crossentropy", [nn.Sigmoid()]),
        ("bce", [nn.Sigmoid()]),
    ],
)
def test_1d_targets_for_an_n_by_1_output(loss, head):
    x, y = data()
    runs = []
    for target in (y, y.reshape(-1, 1)):
        model = mlp(*head, out=1)
        runs.append(
            gf.train.fit(
                model,
                loss,
                gf.optim.Adam(model.parameters()),
                x,
                target,
                epochs=2,
                batch_size=8,
                validation_data=(x[:8], target[:8]),
                verbose=0,
            ).history
        )
    assert runs[0] == runs[1]


def test_targets_of_the_wrong_shape_or_range_are_refused_before_training():
    x, y = data()
    model = mlp(out=2)
    opt = gf.optim.Adam(model.parameters())
    refused(model, opt, ValueError, "y has shape \\(24,\\)", "mse", opt, x, y)
    soft = mlp(nn.Softmax())
    soft_opt = gf.optim.Adam(soft.parameters())
    refused(soft, soft_opt, ValueError, "sparse_categorical_crossentropy", "categorical_crossentropy", soft_opt, x, y)
    single = mlp(nn.Sigmoid(), out=1)
    single_opt = gf.optim.Adam(single.parameters())
    refused(single, single_opt, ValueError, "outside \\[0, 1\\]", "binary_crossentropy", single_opt, x, y + 1)


def test_multi_label_accuracy_is_a_fraction():
    x, _ = data()
    y = (x[:, :3] > 0).astype(np.float32)
    model = mlp(out=3)
    history = gf.train.fit(
        model, "bce_with_logits", gf.optim.Adam(model.parameters(), lr=0.05), x, y, epochs=30, verbose=0
    )
    assert 0.8 < history["accuracy"][-1] <= 1.0


# ---- item 11: multi-input models -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make", [lambda x: [x[:, :2], x[:, 2:]], lambda x: (x[:, :2], x[:, 2:]), lambda x: {"a": x[:, :2], "b": x[:, 2:]}]
)
def test_a_list_of_arrays_is_refused_with_how_to_do_it(make):
    model = mlp()
    opt = gf.optim.Adam(model.parameters())
    x, y = data()
    message = refused(model, opt, TypeError, "multi-input", "cross_entropy", opt, make(x), y)
    assert "np.concatenate" in message and "model.backward" in message


# ---- item 8: what fit prints -----------------------------------------------------------------------------
LINE = re.compile(
    r"^Epoch (\d+)/(\d+) - [\d.]+s - loss: [\d.e+-]+ - accuracy: [\d.]+ - val_loss: [\d.e+-]+ - "
    r"val_accuracy: [\d.]+( - lr: [\d.e+-]+)?$"
)


def run(verbose, epochs=3, callbacks=(), **kwargs):
    x, y = data(64)
    model = mlp(out=2)
    opt = gf.optim.Adam(model.parameters(), lr=0.01)
    return gf.train.fit(
        model,
        "cross_entropy",
        opt,
        x,
        y,
        epochs=epochs,
        batch_size=16,
        verbose=verbose,
        validation_data=(x[:16], y[:16]),
        callbacks=list(callbacks),
        **kwargs,
    ), opt


def epoch_lines(err):
    return [line for line in err.replace("\r", "\n").splitlines() if LINE.match(line)]


@pytest.mark.parametrize("verbose", [1, 2])
def test_one_line_per_epoch_numbered_from_1_when_stderr_is_not_a_terminal(capsys, verbose):
    run(verbose)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = epoch_lines(captured.err)
    assert [LINE.match(line).group(1, 2) for line in lines] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert "\r" not in captured.err  # no bar in a log


def test_verbose_0_is_silent(capsys):
    run(0, callbacks=[gf.train.EarlyStopping(monitor="loss", patience=0, restore_best_weights=True)])
    assert capsys.readouterr() == ("", "")


def test_verbose_1_on_a_terminal_shows_a_live_bar_and_the_lines(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    run(1)
    err = capsys.readouterr().err
    assert "\r" in err and "Epoch 1/3:" in err and "/4 [" in err  # tqdm's bar: 4 batches per epoch
    assert len(epoch_lines(err)) == 3
    run(2)  # verbose=2: the lines, no bar, even on a terminal
    err = capsys.readouterr().err
    assert "\r" not in err and len(epoch_lines(err)) == 3


def test_verbose_1_in_a_notebook_uses_tqdm_auto(capsys, monkeypatch):
    """In a notebook stderr is no terminal, but tqdm.auto's widget is a live bar: fit uses it."""
    pytest.importorskip("tqdm")
    from tqdm import auto, autonotebook

    made = []

    class Widget(auto.tqdm):  # stands for tqdm.notebook's class, which tqdm.auto picks in a notebook
        def __init__(self, *args, **kwargs):
            made.append(kwargs["desc"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(autonotebook, "tqdm", Widget)
    monkeypatch.setattr(auto, "tqdm", Widget)
    run(1)
    assert made == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    assert len(epoch_lines(capsys.readouterr().err)) == 3


def test_the_lr_is_shown_once_it_changes(capsys):
    x, y = data(64)
    model = mlp(out=2)
    opt = gf.optim.Adam(model.parameters(), lr=0.01)
    sched = gf.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    gf.train.fit(
        model,
        "cross_entropy",
        opt,
        x,
        y,
        epochs=4,
        batch_size=16,
        validation_data=(x[:16], y[:16]),
        schedule=sched,
        verbose=2,
    )
    lines = epoch_lines(capsys.readouterr().err)
    assert ["lr: " in line for line in lines] == [False, False, True, True]
    assert lines[2].endswith("lr: 0.001")


def test_early_stopping_says_when_it_stops_and_restores(capsys):
    stopper = gf.train.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    x, y = data(64)
    model = mlp(out=2)
    opt = gf.optim.SGD(model.parameters(), lr=50.0)  # diverges: the validation loss soon gets worse
    history = gf.train.fit(
        model,
        "cross_entropy",
        opt,
        x,
        y,
        epochs=30,
        batch_size=16,
        validation_data=(x[:16], y[:16]),
        callbacks=[stopper],
        verbose=2,
    )
    err = capsys.readouterr().err
    assert stopper.stopped_epoch == len(history.epoch) - 1  # counted from 0, as Keras's attributes
    assert f"Epoch {stopper.stopped_epoch + 1}: early stopping" in err
    assert f"Restoring model weights from the end of the best epoch: {stopper.best_epoch + 1}." in err
    assert err.index("early stopping") > err.index(f"Epoch {len(history.epoch)}/30")


def test_early_stopping_verbose_overrides_fit(capsys):
    run(0, callbacks=[gf.train.EarlyStopping(monitor="loss", patience=0, restore_best_weights=True, verbose=1)])
    assert "Restoring model weights from the end of the best epoch" in capsys.readouterr().err
    run(2, callbacks=[gf.train.EarlyStopping(monitor="loss", patience=0, restore_best_weights=True, verbose=0)])
    assert "Restoring" not in capsys.readouterr().err


def test_model_checkpoint_numbers_epochs_from_1_as_keras(tmp_path):
    checkpoint = gf.train.ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.gfz"), save_best_only=False)
    run(0, callbacks=[checkpoint])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-01.gfz", "ckpt-02.gfz", "ckpt-03.gfz"]
    assert gf.load(str(tmp_path / "ckpt-02.gfz"))["epoch"] == 2  # resumes after 2 epochs
