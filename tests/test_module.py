"""gf.nn.Module the torch way: attributes register themselves (children, parameters, buffers) with
dotted state-dict names; a residual block inside a Sequential trains, is checked against finite
differences and torch's autograd, saves and loads. And the rule for a pending backward: predict
leaves it alone, forward(training=False) replaces it, a dy of the wrong shape is refused."""

from __future__ import annotations

import numpy as np
import pytest

import gradfuse as gf
from gradfuse.nn import BatchNorm, Dense, Dropout, Module, Parameter, ReLU, Sequential

nn = gf.nn


class Residual(Module):
    """y = x + fc2(relu(fc1(x)))"""

    def __init__(self, n, dtype=np.float64):
        super().__init__()
        self.n = n
        self.fc1 = Dense(n, n, dtype=dtype)
        self.act = ReLU()
        self.fc2 = Dense(n, n, dtype=dtype)

    def forward(self, x, training=None):
        return x + self.fc2.forward(self.act.forward(self.fc1.forward(x, training), training), training)

    def backward(self, dy, *, accumulate=False, need_input_grad=True):
        dh = self.act.backward(self.fc2.backward(dy, accumulate=accumulate))
        return self.fc1.backward(dh, accumulate=accumulate) + dy


def res_model(seed=0):
    return Sequential(
        [
            Dense(5, 6, activation="tanh", dtype=np.float64),
            Residual(6),
            BatchNorm(6, dtype=np.float64),
            Dense(6, 3, dtype=np.float64),
        ],
        seed=seed,
    )


def test_attributes_register_themselves_with_dotted_names():
    model = res_model()
    block = model[1]
    assert [name for name, _ in block.named_children()] == ["fc1", "act", "fc2"]
    assert [name for name, _ in block.named_parameters()] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert [name for name, _ in model.named_modules()] == ["", "0", "1", "1.fc1", "1.act", "1.fc2", "2", "3"]
    assert list(model.state_dict()) == [
        "0.weight",
        "0.bias",
        "1.fc1.weight",
        "1.fc1.bias",
        "1.fc2.weight",
        "1.fc2.bias",
        "2.weight",
        "2.bias",
        "3.weight",
        "3.bias",
        "2.running_mean",
        "2.running_var",
        "2.num_batches_tracked",
    ]
    assert len(model.parameters()) == 10 and model.num_parameters() == 5 * 6 + 6 + 2 * (36 + 6) + 12 + 6 * 3 + 3

    class Net(Module):  # a custom model holding the block under a name
        def __init__(self):
            super().__init__()
            self.res = Residual(4)

    assert list(Net().state_dict()) == ["res.fc1.weight", "res.fc1.bias", "res.fc2.weight", "res.fc2.bias"]


def test_the_block_joins_the_arena_and_the_optimizer():
    model = res_model()
    arena = model.arena
    assert arena is not None and arena.size == model.num_parameters()
    for p in model[1].parameters():
        assert np.shares_memory(p.data, arena.data)
    opt = gf.optim.SGD(model.parameters(), lr=0.1)
    before = model[1].fc1.weight.data.copy()
    x = np.random.default_rng(0).standard_normal((8, 5))
    y = model.forward(x, training=True)
    model.backward(np.ones_like(y))
    opt.step()
    assert not np.array_equal(model[1].fc1.weight.data, before)


def test_eval_and_train_reach_every_child():
    model = res_model()
    model.eval()
    assert all(not m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def loss_and_grads(model, x, target):
    """0.5 * sum((model(x) - target)^2), and its gradients (parameters, then x)."""
    out = model.forward(x, training=True)
    dx = model.backward(out - target, need_input_grad=True)
    return 0.5 * float(np.sum((out - target) ** 2)), [p.grad.copy() for p in model.parameters()], dx


def test_residual_gradients_match_finite_differences():
    model = res_model()
    rng = np.random.default_rng(1)
    x, target = rng.standard_normal((7, 5)), rng.standard_normal((7, 3))
    _, grads, dx = loss_and_grads(model, x, target)
    eps = 1e-6
    block = [(p, g) for p, g in zip(model.parameters(), grads) if any(p is q for q in model[1].parameters())]
    assert len(block) == 4
    for p, g in block:
        for index in [(0,) * p.ndim, tuple(s - 1 for s in p.shape)]:
            keep = p.data[index]
            p.data[index] = keep + eps
            up = loss_and_grads(model, x, target)[0]
            p.data[index] = keep - eps
            down = loss_and_grads(model, x, target)[0]
            p.data[index] = keep
            assert (up - down) / (2 * eps) == pytest.approx(g[index], rel=1e-5, abs=1e-7)
    x2 = x.copy()
    x2[3, 2] += eps
    up = loss_and_grads(model, x2, target)[0]
    x2[3, 2] -= 2 * eps
    down = loss_and_grads(model, x2, target)[0]
    assert (up - down) / (2 * eps) == pytest.approx(dx[3, 2], rel=1e-5)


def test_residual_gradients_match_torch_autograd():
    torch = pytest.importorskip("torch")
    model = res_model()
    rng = np.random.default_rng(2)
    x, target = rng.standard_normal((9, 5)), rng.standard_normal((9, 3))
    loss, grads, dx = loss_and_grads(model, x, target)
    t = {name: torch.tensor(p.data, requires_grad=True) for name, p in model.named_parameters()}
    tx = torch.tensor(x, requires_grad=True)
    h = torch.tanh(tx @ t["0.weight"] + t["0.bias"])
    h = h + torch.relu(h @ t["1.fc1.weight"] + t["1.fc1.bias"]) @ t["1.fc2.weight"] + t["1.fc2.bias"]
    h = torch.nn.functional.batch_norm(h, None, None, t["2.weight"], t["2.bias"], training=True, eps=1e-5)
    out = h @ t["3.weight"] + t["3.bias"]
    tloss = 0.5 * ((out - torch.tensor(target)) ** 2).sum()
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    for (name, tp), g in zip(t.items(), grads):
        np.testing.assert_allclose(g, tp.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_a_model_with_the_block_trains():
    model = res_model()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 5))
    target = np.tanh(x @ rng.standard_normal((5, 3)))
    opt = gf.optim.Adam(model.parameters(), lr=0.01)
    first, before = loss_and_grads(model, x, target)[0], model.state_dict()
    for _ in range(100):
        loss_and_grads(model, x, target)
        opt.step()
    assert loss_and_grads(model, x, target)[0] < 0.2 * first
    assert not np.array_equal(model.state_dict()["1.fc2.weight"], before["1.fc2.weight"])


def test_state_dict_round_trip_with_the_block(tmp_path):
    model = res_model(seed=0)
    x = np.random.default_rng(4).standard_normal((6, 5))
    model.forward(x, training=True)  # running statistics
    gf.save(model.state_dict(), tmp_path / "res.gfc")
    other = res_model(seed=1)
    assert not np.array_equal(other.predict(x), model.predict(x))
    other.load_state_dict(gf.load(tmp_path / "res.gfc"))
    np.testing.assert_array_equal(other.predict(x), model.predict(x))


def test_add_module_register_parameter_and_buffers():
    class Scale(Module):
        def __init__(self):
            super().__init__()
            self.register_parameter("gain", Parameter(np.ones(3)))
            self.register_buffer("count", np.zeros(1))
            self.register_buffer("scratch", np.zeros(3), persistent=False)
            self.add_module("inner", Dense(3, 3))

    m = Scale()
    assert [n for n, _ in m.named_parameters()] == ["gain", "inner.weight", "inner.bias"]
    assert [n for n, _ in m.named_buffers()] == ["count", "scratch"]
    assert list(m.state_dict()) == ["gain", "inner.weight", "inner.bias", "count"]  # not the non-persistent one
    state = m.state_dict()
    state["count"] = np.array([5.0])
    m.load_state_dict(state)
    assert m.count[0] == 5.0
    with pytest.raises(ValueError, match="count has shape"):
        m.load_state_dict(dict(state, count=np.zeros(2)))
    m.inner = None  # as torch: the name stays, with nothing in it
    assert [n for n, _ in m.named_parameters()] == ["gain"]
    with pytest.raises(TypeError, match="cannot assign int as module 'inner'"):
        m.inner = 3
    with pytest.raises(TypeError, match="cannot assign int as buffer 'count'"):
        m.count = 3
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("gain", np.zeros(1))
    del m.gain
    assert [n for n, _ in m.named_parameters()] == []


def test_assigning_a_module_before_init_is_an_error_not_a_silent_miss():
    class Forgot(Module):
        def __init__(self):
            self.fc = Dense(2, 2)  # super().__init__() forgotten

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Forgot()


def test_the_old_way_of_listing_children_still_works():
    class Old(Module):
        def __init__(self):
            super().__init__()
            self.blocks = [Dense(2, 2), Dense(2, 2)]
            self.own = Parameter(np.zeros(2), name="own")

        def children(self):
            return self.blocks

        def _local_parameters(self):
            return {"own": self.own}

    assert [n for n, _ in Old().named_parameters()] == ["own", "0.weight", "0.bias", "1.weight", "1.bias"]


def test_state_dict_keys_of_the_built_in_layers_are_unchanged():
    """Checkpoints written before modules registered their attributes still load: the keys are
    the old ones (taken from the code before that change)."""
    model = nn.Sequential(
        [
            nn.Standardize().adapt(np.random.rand(10, 4)),
            nn.Dense(4, 8, activation="relu"),
            nn.BatchNorm(8),
            nn.Dropout(0.2),
            nn.DropConnect(8, 3, p=0.1),
            nn.Tanh(),
        ]
    )
    assert list(model.state_dict()) == [
        "1.weight",
        "1.bias",
        "2.weight",
        "2.bias",
        "4.weight",
        "4.bias",
        "0.standardizer.mode",
        "0.standardizer.axis",
        "0.standardizer.ndim",
        "0.standardizer.n_samples",
        "0.standardizer.mean",
        "0.standardizer.std",
        "0.standardizer.scale",
        "2.running_mean",
        "2.running_var",
        "2.num_batches_tracked",
        "3.seed",
        "3.counter",
        "4.seed",
        "4.counter",
    ]


# ---- a pending backward -----------------------------------------------------------------------------------


def mlp(dtype=np.float32):
    return Sequential(
        [
            Dense(4, 8, activation="relu", seed=0, dtype=dtype),
            BatchNorm(8, dtype=dtype),
            Dropout(0.3, seed=1),
            Dense(8, 3, seed=2, dtype=dtype),
        ]
    )


def grads_of(model):
    return [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("n_predict", [8, 5])
def test_predict_between_forward_and_backward_leaves_the_backward_alone(n_predict):
    rng = np.random.default_rng(0)
    xa, xb, g = rng.standard_normal((8, 4)), rng.standard_normal((n_predict, 4)), rng.standard_normal((8, 3))
    xa, xb, g = (a.astype(np.float32) for a in (xa, xb, g))
    reference = mlp()
    reference.forward(xa, training=True)
    dx_ref = reference.backward(g, need_input_grad=True)

    model = mlp()
    model.forward(xa, training=True)
    state = model.state_dict()
    model.predict(xb)
    model.predict_proba(xb)
    for name, value in model.state_dict().items():  # no state changes: statistics, counters
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    dx = model.backward(g, need_input_grad=True)
    for a, b in zip(grads_of(model), grads_of(reference)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(dx, dx_ref)


def test_predict_keeps_each_module_in_its_own_mode():
    model = mlp()
    model[1].eval()  # a frozen batch norm in a training model
    model.predict(np.ones((2, 4), np.float32))
    assert [m.training for m in model.modules()] == [True, True, False, True, True]


def test_a_backward_with_a_dy_of_another_shape_names_the_last_forward():
    model = mlp()
    with pytest.raises(RuntimeError, match="no forward to take the gradients of"):
        model.backward(np.ones((8, 3), np.float32))
    model.forward(np.ones((8, 4), np.float32), training=True)
    with pytest.raises(ValueError, match=r"dy has shape \(5, 3\), but the last forward returned shape \(8, 3\)"):
        model.backward(np.ones((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy has shape \(3, 8\)"):  # the same size, transposed
        model.backward(np.ones((3, 8), np.float32))
    with pytest.raises(ValueError):
        model.forward(np.ones((8, 5), np.float32), training=True)  # a forward that raises: no backward pending
    with pytest.raises(RuntimeError, match="the last one raised"):
        model.backward(np.ones((8, 3), np.float32))


def test_forward_in_eval_mode_is_the_last_forward_and_backward_gives_eval_gradients():
    """forward(x, training=False) replaces a pending backward (it is the last forward): backward then
    computes the eval-mode gradients (running statistics, no dropout), as torch's autograd does."""
    torch = pytest.importorskip("torch")
    model = mlp(np.float64)
    rng = np.random.default_rng(5)
    model.forward(rng.standard_normal((16, 4)), training=True)  # running statistics away from 0 and 1
    model.forward(rng.standard_normal((16, 4)), training=True)  # a pending training backward, then:
    x, g = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    model.forward(x, training=False)
    with pytest.raises(ValueError, match="last forward returned shape"):
        model.backward(np.ones((16, 3)))  # the training forward's dy no longer fits
    dx = model.backward(g, need_input_grad=True)

    t = {name: torch.tensor(p.data, requires_grad=True) for name, p in model.named_parameters()}
    tx = torch.tensor(x, requires_grad=True)
    h = torch.relu(tx @ t["0.weight"] + t["0.bias"])
    h = torch.nn.functional.batch_norm(
        h,
        torch.tensor(model[1].running_mean),
        torch.tensor(model[1].running_var),
        t["1.weight"],
        t["1.bias"],
        training=False,
        eps=1e-5,
    )
    out = h @ t["3.weight"] + t["3.bias"]
    out.backward(torch.tensor(g))
    for (name, tp), grad in zip(t.items(), grads_of(model)):
        np.testing.assert_allclose(grad, tp.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
