"""Sequential as Keras and torch users meet it: layer sizes checked when the model is built, one
seed for the whole model, predict_proba / predict_classes, and inputs cast to the model's dtype
at the predict boundary (never in the kernels)."""

from __future__ import annotations

import numpy as np
import pytest

import gradfuse as gf
from gradfuse.nn import (
    GELU,
    BatchNorm,
    Dense,
    DropConnect,
    Dropout,
    Flatten,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    Standardize,
)

# ---- layer sizes chain when the model is built -------------------------------------------------------------


def test_dense_layers_that_do_not_chain_are_refused_at_construction_naming_both():
    with pytest.raises(ValueError) as info:
        Sequential([Dense(30, 16), Dense(32, 2)])
    assert str(info.value) == (
        "Sequential: layers[1] Dense(32, 2, bias=True) takes 32 input features, but layers[0] "
        "Dense(30, 16, bias=True) outputs shape (None, 16)"
    )


@pytest.mark.parametrize(
    "layers, bad, source",
    [
        ([Dense(30, 16), ReLU(), BatchNorm(16), Dropout(0.1), Dense(32, 2)], 4, 0),  # through shape-keeping layers
        ([Dense(30, 16), BatchNorm(8)], 1, 0),
        ([Standardize().adapt(np.ones((4, 7))), Dense(6, 2)], 1, 0),
        ([Dense(3, 4), Flatten(), DropConnect(5, 2)], 2, 0),
        ([BatchNorm(16), ReLU(), Dense(16, 4), GELU(), Dense(5, 1)], 4, 2),
        ([Standardize(axis=(1, 2)).adapt(np.ones((4, 2, 3))), Dense(6, 2)], 1, 0),  # 3-D into Dense: Flatten
    ],
)
def test_sizes_are_followed_through_the_built_in_layers(layers, bad, source):
    with pytest.raises(ValueError, match=rf"layers\[{bad}\] .* but layers\[{source}\] "):
        Sequential(layers)


def test_unknown_shapes_are_skipped_not_guessed():
    class Custom(Module):  # its output shape is unknown: what follows is not checked against it
        def forward(self, x, training=None):
            return np.concatenate([x, x], axis=1)

        def backward(self, dy, *, accumulate=False, need_input_grad=True):
            n = dy.shape[1] // 2
            return dy[:, :n] + dy[:, n:]

    model = Sequential([Dense(3, 4), Custom(), Dense(8, 2)])
    assert model.predict(np.ones((2, 3), np.float32)).shape == (2, 2)
    Sequential([Standardize(), Dense(8, 2)])  # not adapted yet: any width
    images = Sequential([BatchNorm(4), Flatten(), Dense(64, 2)])  # BatchNorm over (N, 4, 4, 4) images
    rows = images.summary().splitlines()
    assert "?" in rows[2] and "(None, 2)" in rows[4]


def test_summary_prints_plausible_shapes():
    for first, shape in [
        (Dense(7, 5), "(None, 5)"),
        (BatchNorm(5), "(None, 5)"),
        (Standardize().adapt(np.ones((3, 5))), "(None, 5)"),
    ]:
        rows = Sequential([first, ReLU()] + ([] if isinstance(first, Dense) else [Dense(5, 5)])).summary()
        assert shape in rows.splitlines()[2], rows  # the first layer's row
    text = Sequential([Flatten(), Dense(12, 2)]).summary(input_shape=(None, 3, 4))
    assert "(None, 12)" in text and "(None, 2)" in text
    with pytest.raises(ValueError, match="takes 12 input features"):
        Sequential([Flatten(), Dense(12, 2)]).summary(input_shape=(None, 3, 5))


# ---- one seed reproduces the whole model -------------------------------------------------------------------


def seeded(seed, **dense):
    return Sequential(
        [Dense(6, 8, activation="relu", **dense), Dropout(0.5), Dense(8, 8), Dense(8, 8), DropConnect(8, 3, p=0.2)],
        seed=seed,
    )


def run(model, x):
    return [model.forward(x, training=True) for _ in range(3)]


def test_one_seed_reproduces_every_initialization_and_dropout_stream():
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    a, b, c = seeded(0), seeded(0), seeded(1)
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key], err_msg=key)
    for ya, yb in zip(run(a, x), run(b, x)):
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0].weight.data, c[0].weight.data)
    assert not np.array_equal(a[2].weight.data, a[3].weight.data)  # same shape, different weights
    assert a[1]._masks.seed != a[4]._masks.seed and a[1]._masks.seed != c[1]._masks.seed


def test_an_explicit_layer_seed_wins():
    model = Sequential([Dense(6, 8, seed=5), Dropout(0.5, seed=9), Dense(8, 2)], seed=0)
    np.testing.assert_array_equal(model[0].weight.data, Dense(6, 8, seed=5).weight.data)
    assert model[1]._masks.seed == 9
    inner = Sequential([Dense(4, 4)], seed=3)
    kept = inner[0].weight.data.copy()
    Sequential([inner, Dense(4, 2)], seed=0)  # the inner model's own seed wins too
    np.testing.assert_array_equal(inner[0].weight.data, kept)


def test_weights_set_before_the_model_is_built_are_kept():
    pretrained = Dense(6, 8)
    pretrained.load_state_dict({"weight": np.full((6, 8), 0.25, np.float32), "bias": np.zeros(8, np.float32)})
    model = Sequential([pretrained, Dense(8, 2)], seed=0)
    assert np.all(model[0].weight.data == 0.25)


def test_the_seed_reaches_layers_inside_custom_blocks():
    class Block(Module):
        def __init__(self):
            super().__init__()
            self.fc = Dense(4, 4)
            self.drop = Dropout(0.5)

    a, b = (Sequential([Dense(3, 4), Block()], seed=7) for _ in range(2))
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key], err_msg=key)


# ---- predict_proba and predict_classes --------------------------------------------------------------------


def logits_model(outputs):
    return Sequential([Dense(4, 6, activation="tanh", seed=0), Dense(6, outputs, seed=1)])


def test_predict_proba_is_the_softmax_of_the_logits_and_classes_their_argmax():
    model = logits_model(3)
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    logits = model.predict(x)
    probs = model.predict_proba(x)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(axis=1, keepdims=True), rtol=1e-6)
    classes = model.predict_classes(x)
    assert classes.dtype == np.int64 and classes.shape == (10,)
    np.testing.assert_array_equal(classes, logits.argmax(axis=1))


def test_one_output_is_a_probability_of_class_one():
    model = logits_model(1)
    x = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    logits = model.predict(x)
    np.testing.assert_allclose(model.predict_proba(x), 1 / (1 + np.exp(-logits)), rtol=1e-6)
    np.testing.assert_array_equal(model.predict_classes(x), (logits[:, 0] > 0).astype(np.int64))


@pytest.mark.parametrize("last", ["Sigmoid", "dense-sigmoid", "Softmax"])
def test_a_model_that_ends_in_probabilities_is_not_squashed_twice(last):
    layers = {
        "Sigmoid": [Dense(4, 1, seed=0), Sigmoid()],
        "dense-sigmoid": [Dense(4, 1, activation="sigmoid")],
        "Softmax": [Dense(4, 3, seed=0), gf.nn.Softmax()],
    }[last]
    model = Sequential(layers)
    x = np.random.default_rng(2).standard_normal((20, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict_proba(x), model.predict(x))
    expected = model.predict(x).argmax(axis=1) if last == "Softmax" else (model.predict(x)[:, 0] > 0.5)
    np.testing.assert_array_equal(model.predict_classes(x), expected.astype(np.int64))


# ---- inputs at the predict boundary --------------------------------------------------------------------------


def test_predict_casts_float64_int_and_list_inputs_to_the_model_dtype():
    model = logits_model(3)
    x = np.random.default_rng(3).standard_normal((6, 4))  # float64, as scikit-learn gives it
    expected = model.predict(x.astype(np.float32))
    np.testing.assert_array_equal(model.predict(x), expected)
    np.testing.assert_array_equal(model.predict(np.asfortranarray(x)), expected)
    np.testing.assert_array_equal(model.predict_proba(x.tolist()), model.predict_proba(x.astype(np.float32)))
    ints = np.arange(24).reshape(6, 4) % 3
    np.testing.assert_array_equal(model.predict_classes(ints), model.predict_classes(ints.astype(np.float32)))
    with pytest.raises(TypeError, match="float64"):
        model.forward(x)  # the layers themselves still refuse what they would have to copy


@pytest.mark.parametrize(
    "bad",
    [[["a", "b", "c", "d"]], [[1, 2, 3, 4], [1, 2]], np.array([[1 + 2j] * 4])],
    ids=["strings", "ragged", "complex"],
)
def test_impossible_input_names_the_layer_and_the_fix(bad):
    model = logits_model(3)
    with pytest.raises(TypeError) as info:
        model.predict(bad)
    message = str(info.value)
    assert "layers[0] Dense(4, 6" in message and "np.asarray(x, dtype=np.float32)" in message
    assert "float64" not in message


def test_a_wrong_feature_count_names_the_layer():
    with pytest.raises(ValueError, match=r"predict: x has shape \(2, 5\): .*layers\[0\] Dense\(4, 6.* takes 4 input"):
        logits_model(3).predict([[1, 2, 3, 4, 5]] * 2)
