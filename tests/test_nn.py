"""Layers and Sequential: the same network in torch (weights copied) gives the same outputs, loss,
gradients and running statistics; dropout masks, DropConnect, freezing, accumulation, state_dict,
predict, summary, the parameter arena."""

from __future__ import annotations

import numpy as np
import pytest

import gradfuse as gf
from gradfuse.nn import BatchNorm, Dense, DropConnect, Dropout, Sequential

TOL = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=2e-4, atol=2e-5)}


def normal_init(scale=1.0):
    def init(w, rng, **_):
        w[...] = rng.standard_normal(w.shape) * scale / np.sqrt(w.shape[0])

    return init


def keep_indicators(mask: np.ndarray, shape) -> np.ndarray:
    n = int(np.prod(shape))
    return np.unpackbits(mask, bitorder="little")[:n].reshape(shape).astype(bool)


def build(dtype, p=0.0):
    layers = [
        Dense(20, 32, activation="relu", init=normal_init(), seed=1, dtype=dtype),
        BatchNorm(32, dtype=dtype),
        Dropout(p, seed=7),
        Dense(32, 16, activation="tanh", init=normal_init(), seed=2, dtype=dtype),
        BatchNorm(16, momentum=None, dtype=dtype),
        Dense(16, 5, init=normal_init(), seed=3, dtype=dtype),
    ]
    for i, layer in enumerate(layers):  # non-trivial biases and affine parameters
        for j, prm in enumerate(layer.parameters()):
            if prm.name == "bias" or isinstance(layer, BatchNorm):
                prm.data[...] += np.random.default_rng(10 * i + j).standard_normal(prm.shape) * 0.1
    return Sequential(layers)


def torch_twin(torch, model, dtype):
    """The same network in torch, weights copied (gradfuse's Dense weight is torch's weight.T)."""
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    mods = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            lin = torch.nn.Linear(layer.in_features, layer.out_features, dtype=tdtype)
            with torch.no_grad():
                lin.weight.copy_(torch.tensor(layer.weight.data.T))
                lin.bias.copy_(torch.tensor(layer.bias.data))
            mods.append(lin)
            if layer.activation != "none":
                mods.append({"relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh()}[layer.activation])
        elif isinstance(layer, BatchNorm):
            bn = torch.nn.BatchNorm1d(layer.num_features, momentum=layer.momentum, dtype=tdtype)
            with torch.no_grad():
                bn.weight.copy_(torch.tensor(layer.weight.data))
                bn.bias.copy_(torch.tensor(layer.bias.data))
            mods.append(bn)
        elif isinstance(layer, Dropout):
            mods.append(torch.nn.Identity())  # dropout off; the masked case is tested below
    return torch.nn.Sequential(*mods)


def torch_grads(tmodel):
    out = []
    for m in tmodel:
        if isinstance(m, torch_module().nn.Linear):
            out += [m.weight.grad.numpy().T, m.bias.grad.numpy()]
        elif isinstance(m, torch_module().nn.BatchNorm1d):
            out += [m.weight.grad.numpy(), m.bias.grad.numpy()]
    return out


def torch_module():
    import torch

    return torch


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mlp_matches_torch_on_a_first_batch(torch, backend, dtype):
    model = build(dtype)
    tmodel = torch_twin(torch, model, dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 20)).astype(dtype)
    labels = rng.integers(0, 5, 48)
    logits = model.forward(x, training=True)
    loss, dlogits = gf.losses.cross_entropy(logits, labels)
    model.backward(dlogits)
    tx = torch.tensor(x)
    tlogits = tmodel(tx)
    tloss = torch.nn.functional.cross_entropy(tlogits, torch.tensor(labels))
    tloss.backward()
    np.testing.assert_allclose(logits, tlogits.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(loss, tloss.item(), **TOL[dtype])
    for ours, theirs in zip([p.grad for p in model.parameters()], torch_grads(tmodel)):
        np.testing.assert_allclose(ours, theirs, **TOL[dtype])
    bns = [m for m in tmodel if isinstance(m, torch.nn.BatchNorm1d)]
    for ours, theirs in zip([layer for layer in model.layers if isinstance(layer, BatchNorm)], bns):
        np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), **TOL[dtype])
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), **TOL[dtype])
    # eval mode uses the running statistics, like torch's
    np.testing.assert_allclose(model.predict(x), tmodel.eval()(tx).detach().numpy(), **TOL[dtype])


def test_dropout_inside_the_model_matches_torch_with_the_same_mask(torch, backend):
    model = build(np.float64, p=0.4)
    tmodel = torch_twin(torch, model, np.float64)
    x = np.random.default_rng(1).standard_normal((16, 20))
    logits = model.forward(x, training=True)
    drop = model.layers[2]
    keep = torch.tensor(keep_indicators(drop._mask, (16, 32)))
    dlogits = np.random.default_rng(2).standard_normal(logits.shape)
    model.backward(dlogits)
    h = tmodel[2](tmodel[1](tmodel[0](torch.tensor(x))))  # Linear, ReLU, BatchNorm
    h = h * keep / (1 - 0.4)
    out = h
    for m in list(tmodel)[4:]:
        out = m(out)
    out.backward(torch.tensor(dlogits))
    np.testing.assert_allclose(logits, out.detach().numpy(), rtol=1e-10)
    for ours, theirs in zip([p.grad for p in model.parameters()], torch_grads(tmodel)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11)


def test_dropout_layer_is_identity_in_eval_and_reproducible(backend):
    x = np.ones((100, 50), np.float32)
    a, b = Dropout(0.5, seed=3), Dropout(0.5, seed=3)
    assert a.forward(x, training=False) is x
    ya, yb = a.forward(x, training=True), b.forward(x, training=True)
    np.testing.assert_array_equal(ya, yb)
    assert set(np.unique(ya)) == {0.0, 2.0}
    assert not np.array_equal(a.forward(x, training=True), ya)  # the counter moved on
    assert a.state_dict() == {"seed": 3, "counter": 2}
    dx = a.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx != 0, a.forward(x, training=False) * 0 + (dx != 0))


def test_dropconnect_matches_torch_with_the_same_weight_mask(torch, backend):
    layer = DropConnect(12, 7, activation="relu", p=0.3, init=normal_init(), seed=5, dtype=np.float64)
    x = np.random.default_rng(4).standard_normal((9, 12))
    y = layer.forward(x, training=True)
    keep = torch.tensor(keep_indicators(layer._mask, (12, 7)))
    dy = np.random.default_rng(5).standard_normal(y.shape)
    dx = layer.backward(dy)
    tw = torch.tensor(layer.weight.data, requires_grad=True)
    tb = torch.tensor(layer.bias.data, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.relu(tx @ (tw * keep / 0.7) + tb)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.weight.grad, tw.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.bias.grad, tb.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(
        layer.forward(x, training=False), np.maximum(x @ layer.weight.data + layer.bias.data, 0)
    )


def test_frozen_layers_get_no_gradient_and_are_not_stepped(backend):
    model = build(np.float32)
    model.layers[0].freeze()
    before = model.layers[0].weight.data.copy()
    opt = gf.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        x = np.random.default_rng(0).standard_normal((8, 20)).astype(np.float32)
        out = model.forward(x)
        model.backward(np.ones_like(out))
        opt.step()
    np.testing.assert_array_equal(model.layers[0].weight.data, before)
    assert not model.layers[0].weight.trainable
    assert "frozen" in model.summary()
    assert not np.array_equal(model.layers[3].weight.data, build(np.float32).layers[3].weight.data)


def test_accumulate_adds_gradients(backend):
    model = build(np.float64)
    x = np.random.default_rng(0).standard_normal((8, 20))
    out = model.forward(x)
    model.backward(np.ones_like(out))
    once = [p.grad.copy() for p in model.parameters()]
    out = model.forward(x)  # batch-norm statistics are those of the same batch: same gradients
    model.backward(np.ones_like(out), accumulate=True)
    for g, g1 in zip([p.grad for p in model.parameters()], once):
        np.testing.assert_allclose(g, 2 * g1, rtol=1e-12, atol=1e-14)


def test_state_dict_round_trip_and_strictness(backend):
    model = build(np.float32, p=0.2)
    x = np.random.default_rng(0).standard_normal((8, 20)).astype(np.float32)
    model.forward(x)
    state = model.state_dict()
    other = build(np.float32, p=0.2)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    np.testing.assert_array_equal(other.forward(x, training=True), model.forward(x, training=True))  # same masks
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({k: v for k, v in state.items() if k != "0.weight"})
    bad = dict(state, **{"0.weight": np.zeros((3, 3), np.float32)})
    before = other.layers[0].weight.data.copy()
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(bad)
    np.testing.assert_array_equal(other.layers[0].weight.data, before)


def test_sequential_keeps_every_parameter_in_one_arena():
    model = build(np.float32)
    arena = model.arena
    assert arena is not None and arena.size == model.num_parameters()
    for p in model.parameters():
        assert np.shares_memory(p.data, arena.data) and np.shares_memory(p.grad, arena.grad)
    x = np.ones((4, 20), np.float32)
    out = model.forward(x)
    model.backward(np.ones_like(out))
    assert all(p.grad is p._arena_grad for p in model.parameters())  # written in place


def test_predict_in_batches_equals_one_pass(backend):
    model = build(np.float64)
    model.forward(np.random.default_rng(0).standard_normal((32, 20)))  # running statistics
    x = np.random.default_rng(1).standard_normal((50, 20))
    np.testing.assert_allclose(model.predict(x, batch_size=7), model.predict(x, batch_size=None), rtol=1e-13)
    assert model.training  # restored


def test_parameter_groups_split_weights_from_biases_and_norms():
    model = build(np.float32)
    decay, rest = model.parameter_groups(weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert all(p.name == "weight" and p.ndim == 2 for p in decay["params"])
    assert len(decay["params"]) == 3 and len(rest["params"]) == 3 + 4


def test_summary_lists_layers_shapes_and_counts():
    text = build(np.float32).summary()
    assert "Dense(20, 32, activation='relu'" in text and "(None, 5)" in text
    assert f"total parameters: {build(np.float32).num_parameters():,}" in text


def test_losses_match_torch(torch):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 6)
    loss, grad = gf.losses.cross_entropy(logits, labels.astype(np.int32))
    t = torch.tensor(logits, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-12)
    assert gf.losses.get_loss("mse")(np.ones(3), np.zeros(3))[0] == pytest.approx(1.0)
    with pytest.raises(TypeError, match="integers"):
        gf.losses.cross_entropy(logits, labels.astype(np.float64))


def test_l2_regularizer_adds_value_and_gradient():
    model = build(np.float64)
    for p in model.parameters():
        p.grad[...] = 0
    value = gf.regularizers.L2(0.5)(model.parameters())
    weights = [p for p in model.parameters() if p.regularize]
    assert value == pytest.approx(0.25 * sum(float((p.data**2).sum()) for p in weights), rel=1e-12)
    for p in model.parameters():
        np.testing.assert_allclose(p.grad, 0.5 * p.data if p.regularize else 0, rtol=1e-14)
