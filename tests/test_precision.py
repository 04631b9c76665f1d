"""Mixed precision in the training API: Sequential(..., precision="bf16"), fit(..., precision=...),
Module.set_precision. float32 masters and optimizer state; bf16 compute copies written by the
optimizer's fused step (no cast pass before a forward); bf16 activations between layers; float32
statistics, biases, loss values; predict/evaluate in either precision; checkpoints hold the masters."""

from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import pytest

import gradfuse as gf
from gradfuse.nn.parameter import Parameter

nn = gf.nn
BF16 = np.dtype(ml_dtypes.bfloat16)


def mlp(precision=None, seed=3, dtype=np.float32):
    layers = [
        nn.Dense(64, 96, seed=1, dtype=dtype),
        nn.BatchNorm(96, dtype=dtype) if dtype == np.float32 else nn.ReLU(),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Dense(96, 10, seed=2, dtype=dtype),
    ]
    return nn.Sequential(layers, seed=seed, precision=precision)


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, _, _, x_test, y_test = gf.data.load_digits_split(0)
    scaler = gf.data.Standardizer("zscore")
    return (
        scaler.fit_transform(x_train).astype(np.float32),
        y_train,
        scaler.transform(x_test).astype(np.float32),
        y_test,
    )


def bits(a):
    return a.view(np.uint16)


def copies_match(model):
    for layer in model.modules():
        for p in layer._compute_parameters():
            assert p.bf16 is not None and p.bf16.dtype == BF16
            np.testing.assert_array_equal(bits(p.bf16), bits(p.data.astype(BF16)))


def test_bf16_model_keeps_float32_masters_and_computes_in_bf16(digits):
    x, y, *_ = digits
    model = mlp("bf16")
    assert model.precision == "bf16" and all(m.precision == "bf16" for m in model.modules())
    assert all(p.dtype == np.float32 for p in model.parameters())
    copies_match(model)
    # (in the model's arena every parameter has a copy, one bf16 arena the step writes in its one
    # call; batch norm and the biases read their float32 masters all the same)
    out = model.forward(x[:32], training=True)
    assert out.dtype == BF16
    assert model.layers[0]._cache[0].dtype == BF16  # the input rounded once, by the first Dense
    assert model.layers[1]._cache[1].dtype == np.float32  # batch norm's statistics stay float32
    dx = model.backward(gf.losses.cross_entropy(out, y[:32])[1], need_input_grad=True)
    assert dx.dtype == BF16
    for p in model.parameters():
        assert p.grad is not None and p.grad.dtype == np.float32


def test_forward_agrees_with_fp32_to_bf16_precision(digits):
    x = digits[0][:64]
    ref = mlp().predict(x)
    got = mlp("bf16").predict(x)
    assert got.dtype == np.float32  # predict returns float32 in either precision
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


def test_the_optimizer_writes_the_copies_and_no_cast_pass_runs(digits, monkeypatch):
    x, y, *_ = digits
    model = mlp("bf16")
    opt = gf.optim.Adam(model.parameters(), lr=3e-3)

    def no_cast(*args, **kwargs):
        raise AssertionError("a cast pass ran during training")

    monkeypatch.setattr(Parameter, "refresh_bf16", no_cast)
    monkeypatch.setattr(Parameter, "make_bf16_copy", no_cast)
    gf.train.fit(model, "cross_entropy", opt, x, y, epochs=2, batch_size=64, verbose=0)
    monkeypatch.undo()
    copies_match(model)  # after every step: the fused pass wrote them


def test_bf16_trains_as_well_as_fp32(digits):
    x, y, xt, yt = digits
    accuracy = {}
    for precision in ("fp32", "bf16"):
        model = mlp(precision)
        opt = gf.optim.Adam(model.parameters(), lr=3e-3)
        gf.train.fit(model, "cross_entropy", opt, x, y, epochs=12, batch_size=64, verbose=0, seed=1)
        accuracy[precision] = float((model.predict_classes(xt) == yt).mean())
        if precision == "bf16":
            copies_match(model)
            assert gf.train.evaluate(model, "cross_entropy", xt, yt)["accuracy"] == pytest.approx(accuracy["bf16"])
    assert accuracy["fp32"] > 0.93
    assert abs(accuracy["bf16"] - accuracy["fp32"]) <= 0.02, accuracy


@pytest.mark.parametrize("name", ["bf16", "bfloat16", "mixed_bfloat16", "bf16-mixed"])
def test_fit_precision_and_the_names_users_know(digits, name):
    x, y, *_ = digits
    model = mlp()
    assert model.precision == "fp32" and model.layers[0].weight.bf16 is None
    opt = gf.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gf.train.fit(model, "cross_entropy", opt, x[:256], y[:256], epochs=1, batch_size=64, verbose=0, precision=name)
    assert model.precision == "bf16"
    copies_match(model)  # the optimizer built before the switch writes the copies too


def test_bad_precisions_change_nothing(digits):
    with pytest.raises(ValueError, match="precision must be one of"):
        mlp("fp16")
    model = mlp()
    with pytest.raises(ValueError, match="precision must be one of"):
        model.set_precision("half")
    float64 = mlp(dtype=np.float64)
    before = [p.data.copy() for p in float64.parameters()]
    opt = gf.optim.Adam(float64.parameters())
    x, y, *_ = digits
    with pytest.raises(TypeError, match="'0.weight' is float64"):
        gf.train.fit(float64, "cross_entropy", opt, x[:64], y[:64], precision="bf16", verbose=0)
    assert float64.precision == "fp32" and all(m.precision == "fp32" for m in float64.modules())
    for a, b in zip(float64.parameters(), before):
        np.testing.assert_array_equal(a.data, b)
        assert a.bf16 is None


def test_back_to_fp32_drops_the_copies_and_trains_on(digits):
    x, y, *_ = digits
    model = mlp("bf16")
    opt = gf.optim.Adam(model.parameters(), lr=1e-3)
    gf.train.fit(model, "cross_entropy", opt, x[:128], y[:128], epochs=1, batch_size=64, verbose=0)
    model.set_precision("fp32")
    assert all(p.bf16 is None for p in model.parameters())
    gf.train.fit(model, "cross_entropy", opt, x[:128], y[:128], epochs=1, batch_size=64, verbose=0)
    assert model.forward(x[:4], training=False).dtype == np.float32


def test_checkpoints_hold_the_float32_masters(tmp_path, digits):
    x, y, *_ = digits
    model = mlp("bf16")
    opt = gf.optim.Adam(model.parameters(), lr=3e-3)
    gf.train.fit(model, "cross_entropy", opt, x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    state = model.state_dict()
    assert all(not isinstance(v, np.ndarray) or v.dtype != BF16 for v in state.values())
    path = tmp_path / "m.gfm"
    model.save(path)
    loaded = gf.load_model(path)
    assert loaded.precision == "bf16"
    for a, b in zip(loaded.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    copies_match(loaded)
    np.testing.assert_array_equal(loaded.predict(x[:16]), model.predict(x[:16]))
    # loading other weights into a bf16 model refreshes its copies
    other = mlp(seed=11)
    model.load_state_dict(other.state_dict())
    copies_match(model)


def test_a_float32_loss_gradient_into_a_bf16_model(digits):
    """A user's own loss in float32 (of the bf16 output cast up): backward takes it and gives the
    gradients of its bf16 rounding."""
    x, y, *_ = digits
    a, b = mlp("bf16"), mlp("bf16")
    out_a = a.forward(x[:32], training=True)
    out_b = b.forward(x[:32], training=True)
    _, grad = gf.losses.cross_entropy(out_a.astype(np.float32), y[:32])
    assert grad.dtype == np.float32
    a.backward(grad)
    b.backward(grad.astype(BF16))
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    del out_b


def test_layers_of_both_precisions_in_one_model(digits):
    x, y, *_ = digits
    first = nn.Dense(64, 32, activation="relu", seed=1).set_precision("bf16")
    last = nn.Dense(32, 10, seed=2)  # float32: takes the bf16 activations back to float32
    model = nn.Sequential([first, last])
    assert model.precision == "fp32" and first.precision == "bf16"
    out = model.forward(x[:8], training=True)
    assert out.dtype == np.float32 and first._cache[2].dtype == BF16
    dx = model.backward(np.ones_like(out), need_input_grad=True)
    assert dx.dtype == BF16 and first.weight.grad.dtype == np.float32


def test_custom_modules_and_dropconnect_follow(digits):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Dense(64, 32, activation="relu", seed=1)
            self.fc2 = nn.DropConnect(32, 10, p=0.2, seed=2)

        def forward(self, x, training=None):
            return self.fc2.forward(self.fc1.forward(x, training), training)

        def backward(self, dy, *, accumulate=False, need_input_grad=True):
            return self.fc1.backward(self.fc2.backward(dy, accumulate=accumulate), accumulate=accumulate)

    block = Block().set_precision("bf16")
    assert block.fc1.precision == "bf16" and block.fc1.weight.bf16 is not None
    x, y, *_ = digits
    out = block.forward(x[:16], training=True)
    assert out.dtype == BF16
    block.backward(gf.losses.cross_entropy(out, y[:16])[1])
    assert block.fc2.weight.grad.dtype == np.float32


def test_a_cpu_without_bf16_units_is_told_once(monkeypatch):
    """Where the bf16 GEMMs fall back to the float32 units, precision='bf16' warns once (as Keras's
    policy does on a GPU without fast float16); on the oneDNN path it does not."""
    from gradfuse._ext import _core
    from gradfuse.nn import module

    saved = _core._get_gemm_bf16()
    try:
        for path, warns in (("fallback", True), ("onednn", False)):
            if path == "onednn" and not _core._build_info()["onednn"]:
                continue
            _core._set_gemm_bf16(path)
            monkeypatch.setattr(module, "_WARNED", [])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                nn.Dense(4, 4).set_precision("bf16")
                nn.Dense(4, 4).set_precision("bf16")
            said = [w for w in caught if "without bf16 units" in str(w.message)]
            assert len(said) == (1 if warns else 0), (path, [str(w.message) for w in caught])
    finally:
        _core._set_gemm_bf16(saved)
