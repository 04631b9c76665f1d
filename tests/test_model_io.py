"""Saving a model, not just its weights: model.save(path) / gf.load_model(path) keep the architecture
with the weights (gf.save's checksummed, pickle-free format); loading weights into a model of
another architecture is refused, naming the difference; custom modules are refused with the way
out, or saved once their class is registered."""

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
    Identity,
    LeakyReLU,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    Standardize,
    Tanh,
)


def trained_model(activation="relu", dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5)).astype(dtype) * 3 + 1
    model = Sequential(
        [
            Standardize().adapt(x),
            Dense(5, 16, activation=activation, dtype=dtype),
            BatchNorm(16, momentum=None, dtype=dtype),
            Dropout(0.2),
            LeakyReLU(0.1),
            DropConnect(16, 8, p=0.3, activation="gelu_tanh", dtype=dtype),
            GELU(approximate="tanh"),
            Tanh(),
            Identity(),
            Flatten(),
            Dense(8, 3, dtype=dtype),
            Sigmoid(),
        ],
        seed=0,
    )
    opt = gf.optim.Adam(model.parameters(), lr=0.01)
    for i in range(0, 64, 16):  # weights, running statistics and dropout counters away from their start
        out = model.forward(x[i : i + 16], training=True)
        model.backward(out - 0.5)
        opt.step()
    return model, x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_saved_model_loads_with_bitwise_equal_predictions(tmp_path, dtype):
    model, x = trained_model(dtype=dtype)
    model.save(tmp_path / "model.gfm")
    loaded = gf.load_model(tmp_path / "model.gfm")
    assert repr(loaded) == repr(model)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value, err_msg=key)
    np.testing.assert_array_equal(loaded.forward(x, training=True), model.forward(x, training=True))  # same masks
    assert loaded.arena is not None and loaded[1].weight.dtype == dtype


def test_the_file_is_a_checkpoint_with_the_architecture(tmp_path):
    model, _ = trained_model()
    model.save(tmp_path / "model.gfm")
    saved = gf.load(tmp_path / "model.gfm")  # gf.save's format: readable without pickle
    assert saved["format"] == "gradfuse.model" and saved["version"] == 1
    assert [layer["class"] for layer in saved["architecture"]["config"]["layers"]][:3] == [
        "Standardize",
        "Dense",
        "BatchNorm",
    ]
    assert saved["architecture"]["config"]["layers"][1]["config"]["activation"] == "relu"


def test_weights_of_another_architecture_are_refused_naming_the_difference(tmp_path):
    model, x = trained_model("relu")
    model.save(tmp_path / "model.gfm")
    rebuilt, _ = trained_model(activation=None)  # rebuilt without activation="relu"
    before = rebuilt.state_dict()
    message = r"model \(Sequential\)\.layers\[1\] \(Dense\)\.activation is 'relu' in the file, 'none' here"
    with pytest.raises(ValueError, match=message):
        rebuilt.load_weights(tmp_path / "model.gfm")
    with pytest.raises(ValueError, match=message):
        rebuilt.load_state_dict(gf.load(tmp_path / "model.gfm"))
    for key, value in rebuilt.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)  # nothing loaded
    same, _ = trained_model("relu")
    same.load_weights(tmp_path / "model.gfm")
    np.testing.assert_array_equal(same.predict(x), model.predict(x))


@pytest.mark.parametrize(
    "other, difference",
    [
        (lambda: Sequential([Dense(4, 3), ReLU()]), "model (Sequential).layers has 3 entries in the file, 2 here"),
        (
            lambda: Sequential([Dense(4, 3), Tanh(), Dense(3, 2)]),
            "model (Sequential).layers[1] is a ReLU in the file, a Tanh here",
        ),
        (
            lambda: Sequential([Dense(4, 3, bias=False), ReLU(), Dense(3, 2)]),
            "layers[0] (Dense).bias is True in the file, False here",
        ),
    ],
)
def test_each_kind_of_difference_is_named(tmp_path, other, difference):
    Sequential([Dense(4, 3), ReLU(), Dense(3, 2)]).save(tmp_path / "m.gfm")
    with pytest.raises(ValueError) as info:
        other().load_weights(tmp_path / "m.gfm")
    assert difference in str(info.value)


def test_a_plain_checkpoint_is_not_a_model_file(tmp_path):
    gf.save({"0.weight": np.zeros((2, 2), np.float32)}, tmp_path / "weights.gfc")
    with pytest.raises(gf.CheckpointError, match="not a model file.*load_state_dict"):
        gf.load_model(tmp_path / "weights.gfc")


class Residual(Module):
    def __init__(self, n):
        super().__init__()
        self.n = n
        self.fc = Dense(n, n, seed=0)

    def forward(self, x, training=None):
        return x + self.fc.forward(x, training)

    def backward(self, dy, *, accumulate=False, need_input_grad=True):
        return self.fc.backward(dy, accumulate=accumulate) + dy


def test_a_custom_module_is_refused_with_the_way_out(tmp_path):
    model = Sequential([Dense(3, 4), Residual(4)])
    with pytest.raises(TypeError) as info:
        model.save(tmp_path / "m.gfm")
    message = str(info.value)
    assert "layers[1] is a " in message and "Residual" in message
    assert "@gf.nn.register_serializable" in message and "gf.save(model.state_dict(), path)" in message
    assert not list(tmp_path.iterdir())  # no file written


def test_a_registered_custom_module_round_trips(tmp_path):
    @gf.nn.register_serializable
    class SavedResidual(Residual):
        pass

    model = Sequential([Dense(3, 4, seed=1), SavedResidual(4)])
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    model[1].fc.weight.data[...] += 1  # not the constructor's weights: they come from the state_dict
    model.save(tmp_path / "m.gfm")
    loaded = gf.load_model(tmp_path / "m.gfm")
    assert type(loaded[1]) is SavedResidual and loaded[1].n == 4
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
